-- What the testing kit reads and changes in a test's database (skiplock.testing).

-- name: kit_now
SELECT clock_timestamp()

-- name: kit_enqueued
-- Jobs not started yet (queued, or a workflow step waiting for its dependencies), oldest first;
-- $1: of this task only.
SELECT *, skiplock_waiting_on(jobs) AS waiting_on FROM jobs
WHERE state IN ('queued', 'waiting') AND ($1::text IS NULL OR task = $1)
ORDER BY id

-- name: kit_make_due
-- Jobs due by $1 made due now: the database's clock cannot be moved, so their run_at is.
UPDATE jobs SET run_at = now()
WHERE state = 'queued' AND run_at > now() AND run_at <= $1
RETURNING id

-- name: kit_next_tick
-- The earliest tick of an enabled schedule at or before $1 (null: none).
SELECT min(next_run_at) FROM schedules WHERE enabled AND next_run_at <= $1

-- name: kit_live_queues
-- Queues with jobs that may still run: a drain's engine serves each of them.
SELECT DISTINCT queue FROM jobs WHERE state IN ('queued', 'waiting', 'running') ORDER BY queue

-- name: kit_pending
-- What a drain waits for, by task: running jobs, and queued jobs due now in a queue not paused.
SELECT j.task, count(*) FILTER (WHERE j.state = 'running') AS running,
       count(*) FILTER (WHERE j.state = 'queued') AS due
FROM jobs AS j
WHERE j.state = 'running'
   OR (j.state = 'queued' AND j.run_at <= now()
       AND NOT EXISTS (SELECT 1 FROM queues AS q WHERE q.name = j.queue AND q.paused))
GROUP BY j.task
ORDER BY j.task

-- name: kit_touched
-- Jobs made, started or ended since $1, oldest first.
SELECT *, skiplock_waiting_on(jobs) AS waiting_on FROM jobs
WHERE created_at >= $1 OR started_at >= $1 OR finished_at >= $1
ORDER BY id
