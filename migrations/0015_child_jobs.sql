-- A job enqueued by a running job (ctx.enqueue) records its parent and a child key: the key the
-- call gave, or its place among the run's calls without one. One child per (parent, key), so a
-- parent run again (a retry, a rescue after a lost lease) gets the children it made before back
-- instead of making them twice. NULL for every other job: nothing stored, nothing indexed.
ALTER TABLE jobs
    ADD COLUMN parent_id bigint,
    ADD COLUMN child_key text CHECK (length(child_key) BETWEEN 1 AND 210);

-- Its predicate names parent_id (see 0010's warning): no statement that updates jobs by id says
-- parent_id IS NOT NULL, so none can be served by it.
CREATE UNIQUE INDEX jobs_child_idx ON jobs (parent_id, child_key) WHERE parent_id IS NOT NULL;
