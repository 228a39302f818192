-- Every statement on the schedules table, and the insert of scheduled jobs.
-- Insert, declare and update take a schedule's stored values in one order, from $2:
-- cron, timezone, task, args, queue, priority, enabled, misfire, next_run_at.

-- name: schedule_insert
INSERT INTO schedules (name, cron, timezone, task, args, queue, priority, enabled, misfire, next_run_at, source)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'api')
RETURNING *

-- name: schedule_upsert_declared
-- A schedule declared in code: created, or updated if code created it; never one made over the API.
INSERT INTO schedules (name, cron, timezone, task, args, queue, priority, enabled, misfire, next_run_at, source)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'code')
ON CONFLICT (name) DO UPDATE
SET cron = excluded.cron, timezone = excluded.timezone, task = excluded.task, args = excluded.args,
    queue = excluded.queue, priority = excluded.priority, misfire = excluded.misfire,
    next_run_at = CASE WHEN schedules.cron = excluded.cron AND schedules.timezone = excluded.timezone
                       THEN schedules.next_run_at ELSE excluded.next_run_at END,
    updated_at = now()
WHERE schedules.source = 'code'
RETURNING *

-- name: schedule_get
SELECT * FROM schedules WHERE id = $1

-- name: schedule_list
SELECT * FROM schedules ORDER BY name

-- name: schedule_update
UPDATE schedules
SET cron = $2, timezone = $3, task = $4, args = $5, queue = $6, priority = $7, enabled = $8,
    misfire = $9, next_run_at = $10, updated_at = now()
WHERE id = $1
RETURNING *

-- name: schedule_delete
DELETE FROM schedules WHERE id = $1 RETURNING id

-- name: schedule_claim_due
-- Due schedules, locked for this transaction; other schedulers skip them. $2 pins the clock in tests.
SELECT s.*, coalesce($2::timestamptz, now()) AS db_now
FROM schedules AS s
WHERE s.enabled AND s.next_run_at <= coalesce($2::timestamptz, now())
ORDER BY s.next_run_at
LIMIT $1
FOR UPDATE SKIP LOCKED

-- name: schedule_claim_one
-- One due schedule, locked (a batch that failed for one bad row is fired a schedule at a time).
SELECT s.*, coalesce($2::timestamptz, now()) AS db_now
FROM schedules AS s
WHERE s.id = $1 AND s.enabled AND s.next_run_at <= coalesce($2::timestamptz, now())
FOR UPDATE SKIP LOCKED

-- name: schedule_advance
UPDATE schedules
SET next_run_at = $2, last_run_at = coalesce($3, last_run_at), last_job_id = coalesce($4, last_job_id)
WHERE id = $1

-- name: schedule_next_due
SELECT extract(epoch FROM min(next_run_at) - now()) FROM schedules WHERE enabled

-- name: job_insert_scheduled_many
-- A batch of ticks' jobs at once (args as JSON text); ticks that have their job already are skipped:
-- a live one by the conflict (with jobs_schedule_tick_idx, the live table's: jobs is partitioned, so
-- no conflict target can name it through jobs, and a tick's job has no unique_key), an ended one by
-- the history's own index (migration 0028). Each in its queue's shard (skiplock_shard, migration 0027).
INSERT INTO jobs (queue, task, args, priority, max_attempts, timeout_s, schedule_id, scheduled_for, shard)
SELECT queue, task, args::jsonb, priority, max_attempts, timeout_s, schedule_id, scheduled_for,
       skiplock_shard(queue)
FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::int[], $6::float8[], $7::bigint[],
            $8::timestamptz[])
    AS t(queue, task, args, priority, max_attempts, timeout_s, schedule_id, scheduled_for)
WHERE NOT EXISTS (
    SELECT 1 FROM jobs_done AS d WHERE d.schedule_id = t.schedule_id AND d.scheduled_for = t.scheduled_for
)
ON CONFLICT DO NOTHING
RETURNING id, schedule_id

-- name: schedule_advance_many
UPDATE schedules AS s
SET next_run_at = u.next_run_at,
    last_run_at = coalesce(u.last_run_at, s.last_run_at),
    last_job_id = coalesce(u.last_job_id, s.last_job_id)
FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::bigint[])
    AS u(id, next_run_at, last_run_at, last_job_id)
WHERE s.id = u.id
