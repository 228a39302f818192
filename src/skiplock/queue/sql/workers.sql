-- The fleet (migration 0021): every process's row, its beat, the operators' requests, pruning.
-- A row is offline when its process said it stopped or its beat is more than three heartbeats old,
-- on the database's clock: skiplock_worker_offline below, the one place that rule is written.

-- name: worker_register
-- A process at its start (or again, should its row have been pruned during a long outage).
INSERT INTO workers (id, host, pid, version, role, queues, concurrency, heartbeat_s, state)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)
ON CONFLICT (id) DO UPDATE SET
    queues = excluded.queues, state = excluded.state, last_heartbeat_at = now(), stopped_at = NULL

-- name: worker_beat
-- A process's beat: it is alive, in state $2, serving queues $3 (a '*' worker adds the queues it
-- finds). Returns what operators asked of it; no row: its row was pruned, it registers again.
UPDATE workers SET last_heartbeat_at = now(), state = $2, queues = coalesce($3::jsonb, queues)
WHERE id = $1
RETURNING quiet, stop_requested, concurrency

-- name: worker_stopped
-- A process that stopped: offline at once (not three heartbeats later).
UPDATE workers SET stopped_at = now(), state = 'stopping', last_heartbeat_at = now() WHERE id = $1

-- name: worker_list
-- The fleet, newest boot first, or the one worker $1: each row with offline, its beat's age and
-- the jobs its leases hold (running jobs are found on jobs_lease_expiry_idx: a lease is set
-- exactly while a job runs), at most $2 rows.
SELECT w.id, w.host, w.pid, w.version, w.role, w.queues, w.concurrency, w.heartbeat_s, w.quiet,
       w.stop_requested, w.started_at, w.last_heartbeat_at, w.stopped_at,
       CASE WHEN skiplock_worker_offline(w.stopped_at, w.last_heartbeat_at, w.heartbeat_s) THEN 'offline'
            ELSE w.state END AS state,
       extract(epoch FROM now() - w.last_heartbeat_at)::float8 AS heartbeat_age_s,
       coalesce(r.ids, '{}') AS running
FROM workers AS w
LEFT JOIN (
    SELECT lease_owner, array_agg(id ORDER BY id) AS ids FROM jobs
    WHERE lease_expires_at IS NOT NULL AND state = 'running' AND ($1::text IS NULL OR lease_owner = $1)
    GROUP BY lease_owner
) AS r ON r.lease_owner = w.id
WHERE $1::text IS NULL OR w.id = $1
ORDER BY w.started_at DESC, w.id
LIMIT $2

-- name: worker_request
-- An operator's request to a live worker: quiet ($2, null: unchanged), stop ($3) or a concurrency
-- ($4, null: unchanged); the process hears 'worker:<id>' and applies it within a second. No row: the
-- worker is unknown or offline (worker_list says which).
WITH changed AS (
    UPDATE workers
    SET quiet = coalesce($2::boolean, quiet), stop_requested = stop_requested OR $3::boolean,
        concurrency = coalesce($4::integer, concurrency)
    WHERE id = $1 AND NOT skiplock_worker_offline(stopped_at, last_heartbeat_at, heartbeat_s)
    RETURNING id
)
SELECT pg_notify('skiplock', 'worker:' || id) FROM changed

-- name: worker_served_queues
-- How many live workers claim from each queue (quiet and stopping ones do not): the key '*' counts
-- the workers that serve every queue, and only there (they list the queues they found too, which
-- would count them twice). API-only processes serve none.
SELECT q.name, count(*)::int AS workers
FROM workers AS w CROSS JOIN LATERAL jsonb_object_keys(w.queues) AS q(name)
WHERE w.state = 'online' AND w.role <> 'api'
  AND (q.name = '*' OR NOT w.queues ? '*')
  AND NOT skiplock_worker_offline(w.stopped_at, w.last_heartbeat_at, w.heartbeat_s)
GROUP BY q.name

-- name: worker_counts
-- For /metrics: live workers by role and state, and the running jobs whose leases offline workers
-- hold (they run again once the rescuer takes them, a lease and its hold after their last renewal).
SELECT coalesce((
           SELECT jsonb_object_agg(role || ':' || state, n) FROM (
               SELECT role, state, count(*) AS n FROM workers
               WHERE NOT skiplock_worker_offline(stopped_at, last_heartbeat_at, heartbeat_s)
               GROUP BY role, state
           ) AS live
       ), '{}'::jsonb) AS live,
       (SELECT count(*) FROM jobs AS j JOIN workers AS w ON w.id = j.lease_owner
        WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running'
          AND skiplock_worker_offline(w.stopped_at, w.last_heartbeat_at, w.heartbeat_s))::bigint AS held_offline

-- name: worker_prune
-- Rows offline for longer than $1 seconds, at most $2 at a time.
DELETE FROM workers WHERE id IN (
    SELECT id FROM workers
    WHERE skiplock_worker_offline(stopped_at, last_heartbeat_at, heartbeat_s)
      AND coalesce(stopped_at, last_heartbeat_at) < now() - make_interval(secs => $1)
    LIMIT $2
)

-- name: job_queues_queued
-- The queues that have queued jobs, for a worker serving every queue ('*'): a loose scan of
-- jobs_claim_idx, one probe per (shard, queue) in the index's order, not a scan of the queued jobs.
WITH RECURSIVE found AS (
    (SELECT shard, queue FROM jobs WHERE state = 'queued' ORDER BY shard, queue LIMIT 1)
    UNION ALL
    SELECT next.shard, next.queue
    FROM found AS f, LATERAL (
        SELECT j.shard, j.queue FROM jobs AS j
        WHERE j.state = 'queued' AND (j.shard, j.queue) > (f.shard, f.queue)
        ORDER BY j.shard, j.queue LIMIT 1
    ) AS next
)
SELECT DISTINCT queue FROM found ORDER BY queue
