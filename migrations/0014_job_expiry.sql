-- A job may expire: not started by expires_at, it is never claimed (the claims say so), and the
-- rescuer's round cancels it with an error of type 'expired' (job_expire_queued). Once started, a
-- job's expiry no longer applies (its retries run); NULL for every job without one.
ALTER TABLE jobs ADD COLUMN expires_at timestamptz;

-- The sweep's scan: queued jobs never started that carry an expiry, soonest first. Its predicate
-- names expires_at (see 0010's warning): only a statement that says expires_at IS NOT NULL, or a
-- comparison on it, with state = 'queued' AND attempts = 0 can be served by it; no statement that
-- updates jobs by id (a claim, an outcome, a cancel) implies that, so none can be lured onto it.
-- A job leaves it as it leaves 'queued' (claimed, cancelled, expired).
CREATE INDEX jobs_expiry_idx ON jobs (expires_at) WHERE expires_at IS NOT NULL AND state = 'queued' AND attempts = 0;
