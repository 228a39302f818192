-- Workflows (migration 0013). A step is a job; its rows are written by COPY (queue/_workflow_store.py)
-- upstream first, so a step's id is above its dependencies' ids. Whatever changes several steps of
-- a workflow locks them in id order first (workflow_lock_steps), then the workflow's row: the
-- order the step-ended trigger takes (a step's row, its workflow's, its dependents').

-- name: workflow_insert
INSERT INTO workflows (name, on_failure, steps, origin) VALUES ($1, $2, $3, $4)
RETURNING *

-- name: workflow_get
SELECT * FROM workflows WHERE id = $1

-- name: workflow_list
-- Newest first; $2 is the keyset cursor (the last id of the previous page).
SELECT * FROM workflows
WHERE ($1::text IS NULL OR state = $1) AND ($2::bigint IS NULL OR id < $2)
ORDER BY id DESC
LIMIT $3

-- name: workflow_steps
-- A workflow's steps in id order (dependencies first), each with the names of those it runs after.
-- One pass over its edges, joined by hash: a subquery per step, planned on a table analysed before
-- the workflow was written, read the edge table once per step (10,000 steps: 18 s).
SELECT j.id, j.step, j.task, j.state::text AS state, coalesce(a.after, '{}') AS after
FROM jobs AS j
LEFT JOIN (
    SELECT d.job_id, array_agg(u.step ORDER BY d.position) AS after
    FROM jobs AS u JOIN job_deps AS d ON d.upstream_id = u.id
    WHERE u.workflow_id = $1
    GROUP BY d.job_id
) AS a ON a.job_id = j.id
WHERE j.workflow_id = $1
ORDER BY j.id

-- name: workflow_lock_steps
SELECT id FROM jobs WHERE workflow_id = $1 ORDER BY id FOR NO KEY UPDATE

-- name: workflow_of_job
SELECT workflow_id FROM jobs WHERE id = $1

-- name: workflow_lock_many
-- The workflows of a batch of ending steps, locked in id order after the steps' rows and before
-- the step-ended trigger takes them in whatever order the batch's rows are updated: two batches
-- ending steps of the same two workflows never wait on each other in a circle.
SELECT id FROM workflows WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE

-- name: workflow_cancel
-- A running workflow is cancelled: its waiting and queued steps at once, its running ones flagged
-- for their workers (cancel:<id> sent to them). Its steps are locked first (workflow_lock_steps).
WITH wf AS (
    UPDATE workflows SET state = 'cancelled' WHERE id = $1 AND state = 'running' RETURNING id
), previous AS (
    SELECT id, state FROM jobs
    WHERE workflow_id = $1 AND state IN ('waiting', 'queued', 'running') AND EXISTS (SELECT 1 FROM wf)
), stopped AS (
    UPDATE jobs AS j
    SET state = (CASE WHEN p.state = 'running' THEN 'running' ELSE 'cancelled' END)::job_state,
        cancel_requested = (p.state = 'running'),
        finished_at = CASE WHEN p.state = 'running' THEN j.finished_at ELSE now() END,
        event_seq = j.event_seq + (p.state <> 'running')::int
    FROM previous AS p
    WHERE j.id = p.id
    RETURNING j.id, j.state, j.event_seq, j.attempts, p.state AS previous
), events AS (
    INSERT INTO job_events (job_id, seq, kind, data)
    SELECT id, event_seq, 'state', skiplock_state_event(state, previous, attempts, NULL)
    FROM stopped WHERE state = 'cancelled'
)
SELECT (SELECT count(*) FROM wf) AS cancelled,
       (SELECT count(pg_notify('skiplock', 'cancel:' || id)) FROM stopped WHERE state = 'running') AS running

-- name: workflow_retry
-- A failed or cancelled workflow whose steps have all ended: its failed and cancelled steps and
-- everything downstream of them run again (succeeded ones upstream are not), each waiting for its
-- dependencies among them. Its steps are locked first (workflow_lock_steps).
-- Never one the pruner has begun to delete (a step missing: its dependents would lose its result).
WITH RECURSIVE wf AS (
    SELECT id FROM workflows AS w
    WHERE id = $1 AND state IN ('failed', 'cancelled') AND finished_at IS NOT NULL
      AND (SELECT count(*) FROM jobs AS j WHERE j.workflow_id = w.id) = w.steps
    FOR NO KEY UPDATE
), again(id) AS (
    SELECT j.id FROM jobs AS j
    WHERE j.workflow_id = $1 AND j.state IN ('failed', 'cancelled') AND EXISTS (SELECT 1 FROM wf)
    UNION
    SELECT d.job_id FROM job_deps AS d JOIN again AS a ON d.upstream_id = a.id
), pending AS (  -- per step run again, its dependencies that run again too (joins: no subquery per step)
    SELECT d.job_id, count(*) AS n FROM job_deps AS d JOIN again AS a ON a.id = d.upstream_id GROUP BY d.job_id
), previous AS (
    SELECT j.id, j.state, coalesce(p.n, 0) AS pending
    FROM jobs AS j JOIN again AS a ON a.id = j.id LEFT JOIN pending AS p ON p.job_id = j.id
), changed AS (
    UPDATE jobs AS j
    SET state = (CASE WHEN p.pending = 0 THEN 'queued' ELSE 'waiting' END)::job_state,
        deps_pending = p.pending, run_at = now(), finished_at = NULL, result = NULL,
        cancel_requested = false, max_attempts = greatest(j.max_attempts, j.attempts + 1),
        event_seq = j.event_seq + 1
    FROM previous AS p
    WHERE j.id = p.id
    RETURNING j.id, j.queue, j.state, j.event_seq, j.attempts, p.state AS previous
), events AS (
    INSERT INTO job_events (job_id, seq, kind, data)
    SELECT id, event_seq, 'state', skiplock_state_event(state, previous, attempts, NULL) FROM changed
), counted AS (
    UPDATE workflows AS w
    SET state = 'running', finished_at = NULL,
        succeeded = w.succeeded - (SELECT count(*) FROM previous WHERE state = 'succeeded'),
        failed = w.failed - (SELECT count(*) FROM previous WHERE state = 'failed'),
        cancelled = w.cancelled - (SELECT count(*) FROM previous WHERE state = 'cancelled')
    WHERE w.id IN (SELECT id FROM wf) AND EXISTS (SELECT 1 FROM changed)
    RETURNING w.id
)
SELECT (SELECT count(*) FROM counted) AS retried,
       (SELECT count(pg_notify('skiplock', 'queued:' || due.queue))
        FROM (SELECT DISTINCT queue FROM changed WHERE state = 'queued') AS due) AS woken

-- name: workflow_upstream
-- What a step sees of its dependencies, in the order of its `after`.
SELECT u.step, u.state::text AS state, u.result, u.errors -> -1 AS error
FROM job_deps AS d JOIN jobs AS u ON u.id = d.upstream_id
WHERE d.job_id = $1
ORDER BY d.position

-- name: workflow_leaves
-- The steps nothing depends on, in id order: what the workflow's result is made of.
SELECT j.step, j.state::text AS state, j.result, j.errors -> -1 AS error
FROM jobs AS j
WHERE j.workflow_id = $1 AND NOT EXISTS (SELECT 1 FROM job_deps AS d WHERE d.upstream_id = j.id)
ORDER BY j.id

-- name: workflow_prune_finished
-- Finished workflows older than $1 seconds whose steps the pruner has deleted, a batch at a time.
DELETE FROM workflows
WHERE id IN (
    SELECT w.id FROM workflows AS w
    WHERE w.finished_at < coalesce($3::timestamptz, now()) - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.workflow_id = w.id)
    ORDER BY w.finished_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
