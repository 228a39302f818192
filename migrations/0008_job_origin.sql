-- Where a job came from: the request id (and trace context) of the request that enqueued it, so
-- its logs and spans join the request's.
ALTER TABLE jobs ADD COLUMN origin jsonb;
