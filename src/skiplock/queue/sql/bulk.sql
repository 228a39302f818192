-- Bulk actions (retry, cancel, delete) on the jobs a filter matches or a list names: the jobs
-- matched when asked, then a batch at a time, each batch one transaction guarded by state.

-- name: bulk_match
-- The newest $8 jobs matching the filter (job_list's and job_search's fields): how many, and the
-- id range they span, which the bulk job walks. A read of at most $8 ids (jobs_state_id_idx for
-- a state, else the primary key), under the caller's statement_timeout.
SELECT count(*)::int AS matched, coalesce(max(id), 0) AS top, coalesce(min(id), 0) AS bottom
FROM (
    SELECT id FROM jobs
    WHERE ($1::job_state IS NULL OR state = $1)
      AND ($2::text IS NULL OR queue = $2)
      AND ($3::text IS NULL OR task = $3)
      AND ($4::bigint IS NULL OR schedule_id = $4)
      AND ($5::bigint IS NULL OR workflow_id = $5)
      AND ($6::jsonb IS NULL OR args @> $6)
      AND ($7::text IS NULL OR EXISTS (
            SELECT 1 FROM jsonb_array_elements(errors) AS e
            WHERE e ->> 'message' ILIKE $7 OR e ->> 'type' ILIKE $7))
    ORDER BY id DESC
    LIMIT $8
) AS matched

-- name: bulk_asked_at
-- When a bulk action was asked (after its jobs were counted): its writes take only jobs finished
-- (retry, delete) or created (cancel) by then, so a run again (a rescued lease) does not retry
-- again a job it retried that failed since, nor act on one that finished after the request.
SELECT clock_timestamp() AS asked_at

-- name: bulk_queue_paused
-- Whether the bulk job's queue ($1) is paused: its job would wait there until a resume.
SELECT coalesce((SELECT paused FROM queues WHERE name = $1), false) AS paused

-- name: bulk_page
-- The next batch of a bulk job's walk: up to $10 ids matching the filter in [$8, $9), newest first.
SELECT id FROM jobs
WHERE id >= $8 AND id < $9
  AND ($1::job_state IS NULL OR state = $1)
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::text IS NULL OR task = $3)
  AND ($4::bigint IS NULL OR schedule_id = $4)
  AND ($5::bigint IS NULL OR workflow_id = $5)
  AND ($6::jsonb IS NULL OR args @> $6)
  AND ($7::text IS NULL OR EXISTS (
        SELECT 1 FROM jsonb_array_elements(errors) AS e
        WHERE e ->> 'message' ILIKE $7 OR e ->> 'type' ILIKE $7))
ORDER BY id DESC
LIMIT $10

-- name: bulk_lock_rows
-- A batch's rows and every step of their workflows, in id order, as a single cancel locks its
-- workflow's steps first (workflow_lock_steps): a bulk cancel and the step-ended trigger, or two
-- bulk actions, never wait on each other in a circle. Returns the workflows, for
-- workflow_lock_many.
WITH locked AS (
    -- Ids by the primary key and jobs_workflow_idx: an OR of the two would be a scan of jobs.
    SELECT id, workflow_id FROM jobs
    WHERE id IN (
        SELECT unnest($1::bigint[])
        UNION
        SELECT s.id FROM jobs AS s
        WHERE s.workflow_id IN (
            SELECT workflow_id FROM jobs WHERE id = ANY($1::bigint[]) AND workflow_id IS NOT NULL)
    )
    ORDER BY id
    FOR NO KEY UPDATE
)
SELECT coalesce(array_agg(DISTINCT workflow_id) FILTER (WHERE workflow_id IS NOT NULL), '{}') AS workflows
FROM locked

-- name: bulk_cancel
-- job_cancel for many: waiting and queued jobs cancelled outright, running ones flagged for their
-- workers (the caller notifies them); the rest left as they are, and jobs created after $2 (the
-- request). The rows are locked already (bulk_lock_rows).
WITH previous AS (
    SELECT id, state FROM jobs
    WHERE id = ANY($1::bigint[]) AND state IN ('waiting', 'queued', 'running') AND NOT cancel_requested
      AND created_at <= $2
), changed AS (
    UPDATE jobs AS j
    SET state = CASE WHEN j.state = 'running' THEN j.state ELSE 'cancelled'::job_state END,
        cancel_requested = (j.state = 'running'),
        finished_at = CASE WHEN j.state = 'running' THEN j.finished_at ELSE now() END,
        event_seq = j.event_seq + (j.state <> 'running')::int
    FROM previous AS p
    WHERE j.id = p.id AND j.state IN ('waiting', 'queued', 'running')
    RETURNING j.id, j.state, j.event_seq, j.attempts
), events AS (
    INSERT INTO job_events (job_id, seq, kind, data)
    SELECT c.id, c.event_seq, 'state', skiplock_state_event(c.state, p.state, c.attempts, NULL)
    FROM changed AS c JOIN previous AS p ON p.id = c.id
    WHERE c.state = 'cancelled'
)
SELECT id, state FROM changed

-- name: bulk_notify_cancel
SELECT pg_notify('skiplock', 'cancel:' || id) FROM unnest($1::bigint[]) AS id

-- name: bulk_retry
-- job_retry for many: failed and cancelled jobs that are no workflow's step go back to their
-- queues, those that finished by $2 (the request: not one retried already that failed again since);
-- the rest are left as they are. Rows locked in id order.
WITH previous AS (
    SELECT id, state FROM jobs
    WHERE id = ANY($1::bigint[]) AND state IN ('failed', 'cancelled') AND workflow_id IS NULL
      AND (finished_at IS NULL OR finished_at <= $2)
    ORDER BY id
    FOR NO KEY UPDATE
), changed AS (
    UPDATE jobs AS j
    SET state = 'queued', run_at = now(), finished_at = NULL, result = NULL, cancel_requested = false,
        max_attempts = greatest(j.max_attempts, j.attempts + 1), expires_at = NULL,
        event_seq = j.event_seq + 1
    FROM previous AS p
    WHERE j.id = p.id AND j.state IN ('failed', 'cancelled')
    RETURNING j.id, j.queue, j.event_seq, j.attempts
), events AS (
    INSERT INTO job_events (job_id, seq, kind, data)
    SELECT c.id, c.event_seq, 'state', skiplock_state_event('queued', p.state, c.attempts, NULL)
    FROM changed AS c JOIN previous AS p ON p.id = c.id
)
SELECT id, queue FROM changed

-- name: bulk_delete
-- Finished jobs deleted (their events and edges go with them: jobs_deleted_events). A workflow's
-- step only once its workflow has ended, as the pruner does: until then its dependents read its
-- result and a retry its state. Waiting, queued and running jobs are left: cancel them first; and
-- jobs that finished after $2 (the request).
DELETE FROM jobs
WHERE id IN (
    SELECT id FROM jobs
    WHERE id = ANY($1::bigint[]) AND state IN ('succeeded', 'failed', 'cancelled')
      AND (finished_at IS NULL OR finished_at <= $2)
      AND (workflow_id IS NULL
           OR EXISTS (SELECT 1 FROM workflows AS w WHERE w.id = workflow_id AND w.finished_at IS NOT NULL))
    ORDER BY id
    FOR UPDATE
)
RETURNING id
