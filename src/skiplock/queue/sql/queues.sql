-- Every statement on the queues table, per-queue counts, and the tasks live workers can run.

-- name: queue_set_paused
INSERT INTO queues (name, paused) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
RETURNING name, paused

-- name: queue_set_limits
-- PATCH /queues/{name}: per-process concurrency ($2), global concurrency ($3), the rate limit ($4
-- starts per $5 seconds), the per-key concurrency ($9) and per-key rate ($10 starts per $11
-- seconds), each written only when its flag ($6, $7, $8, $12, $13) is true (a null then clears
-- it). Every producer of the queue reads them again at once: 'limits:<name>', sent at the commit.
WITH changed AS (
    INSERT INTO queues (name, concurrency, global_concurrency, rate_limit, rate_period_s, key_concurrency,
                        key_rate_limit, key_rate_period_s)
    VALUES ($1, CASE WHEN $6::boolean THEN $2::integer END, CASE WHEN $7::boolean THEN $3::integer END,
            CASE WHEN $8::boolean THEN $4::integer END, CASE WHEN $8::boolean THEN $5::float8 END,
            CASE WHEN $12::boolean THEN $9::integer END,
            CASE WHEN $13::boolean THEN $10::integer END, CASE WHEN $13::boolean THEN $11::float8 END)
    ON CONFLICT (name) DO UPDATE SET
        concurrency = CASE WHEN $6::boolean THEN excluded.concurrency ELSE queues.concurrency END,
        global_concurrency = CASE WHEN $7::boolean THEN excluded.global_concurrency
                                  ELSE queues.global_concurrency END,
        rate_limit = CASE WHEN $8::boolean THEN excluded.rate_limit ELSE queues.rate_limit END,
        rate_period_s = CASE WHEN $8::boolean THEN excluded.rate_period_s ELSE queues.rate_period_s END,
        key_concurrency = CASE WHEN $12::boolean THEN excluded.key_concurrency ELSE queues.key_concurrency END,
        key_rate_limit = CASE WHEN $13::boolean THEN excluded.key_rate_limit ELSE queues.key_rate_limit END,
        key_rate_period_s = CASE WHEN $13::boolean THEN excluded.key_rate_period_s
                                 ELSE queues.key_rate_period_s END,
        updated_at = now()
    RETURNING name
)
SELECT pg_notify('skiplock', 'limits:' || name) FROM changed

-- name: queue_declare_limits
-- Limits declared in a worker's configuration or on its tasks ($2 … $5, $9 … $11 as in
-- queue_set_limits, $6 … $8, $12, $13 saying which it declares), written at its start only where
-- the queue has none of that kind yet: a limit set at runtime (PATCH) outlives the restarts of
-- workers that declare another, until cleared.
WITH changed AS (
    INSERT INTO queues (name, concurrency, global_concurrency, rate_limit, rate_period_s, key_concurrency,
                        key_rate_limit, key_rate_period_s)
    VALUES ($1, CASE WHEN $6::boolean THEN $2::integer END, CASE WHEN $7::boolean THEN $3::integer END,
            CASE WHEN $8::boolean THEN $4::integer END, CASE WHEN $8::boolean THEN $5::float8 END,
            CASE WHEN $12::boolean THEN $9::integer END,
            CASE WHEN $13::boolean THEN $10::integer END, CASE WHEN $13::boolean THEN $11::float8 END)
    ON CONFLICT (name) DO UPDATE SET
        global_concurrency = coalesce(queues.global_concurrency, excluded.global_concurrency),
        rate_limit = CASE WHEN queues.rate_limit IS NULL THEN excluded.rate_limit ELSE queues.rate_limit END,
        rate_period_s = CASE WHEN queues.rate_limit IS NULL THEN excluded.rate_period_s
                             ELSE queues.rate_period_s END,
        key_concurrency = coalesce(queues.key_concurrency, excluded.key_concurrency),
        key_rate_limit = CASE WHEN queues.key_rate_limit IS NULL THEN excluded.key_rate_limit
                              ELSE queues.key_rate_limit END,
        key_rate_period_s = CASE WHEN queues.key_rate_limit IS NULL THEN excluded.key_rate_period_s
                                 ELSE queues.key_rate_period_s END
    WHERE ($7::boolean AND queues.global_concurrency IS NULL) OR ($8::boolean AND queues.rate_limit IS NULL)
       OR ($12::boolean AND queues.key_concurrency IS NULL) OR ($13::boolean AND queues.key_rate_limit IS NULL)
    RETURNING name
)
SELECT pg_notify('skiplock', 'limits:' || name) FROM changed

-- name: queue_limits
-- The limits of queues $1 that have a row: what their producers claim by.
SELECT name, concurrency, global_concurrency, rate_limit, rate_period_s, key_concurrency, key_rate_limit,
       key_rate_period_s
FROM queues WHERE name = ANY($1::text[])

-- name: queue_shards
-- The shard of each of queues $1 (skiplock_shard, migration 0027): where a producer claims its jobs.
SELECT q AS name, skiplock_shard(q) AS shard FROM unnest($1::text[]) AS q

-- name: queue_key_starts_prune
-- Keys' rings whose last start is older than the longest rate window (a day): none of their
-- starts counts any more (the claim writes a key's ring anew when it serves the key again).
DELETE FROM queue_key_starts WHERE last_start < coalesce($1::timestamptz, now()) - interval '1 day'

-- name: queue_overview
-- Counts per state for every queue that has jobs or a row in queues; the oldest due queued job
-- (jobs_claim_idx), per queue; the jobs finished in the last hour and the queued jobs whose task no
-- live worker registered (they wait for one that knows it), counted in the same one scan of jobs as
-- the states: per queue, a bitmap scan of every finished job of the hour and one of every queued
-- job's heap row cost more than that scan itself (490 ms against 150 on a million jobs).
-- What holds its due queued jobs back (a job's waiting_on, counted per queue): the jobs due later
-- and the due ones of unknown tasks from the same scan; whether its rate window is full, whether it
-- runs its global concurrency (one indexed count), and the due jobs of keys at their concurrency
-- or with a full rate window (read for a queue with per-key limits only, on the keys' indexes).
-- The reads of jobs_claim_idx and the keys' indexes name the queue's shard (they lead with it).
SELECT o.name, o.paused, o.counts, q.concurrency AS limit_concurrency, q.global_concurrency, q.rate_limit,
       q.rate_period_s, q.key_concurrency, q.key_rate_limit, q.key_rate_period_s,
       (SELECT min(run_at) FROM jobs
        WHERE state = 'queued' AND shard = skiplock_shard(o.name) AND queue = o.name
          AND run_at <= now()) AS oldest_queued_at,
       o.waiting_for_unknown_task, o.finished_last_hour, o.later, o.unknown_due,
       CASE WHEN q.rate_limit IS NOT NULL THEN (
           SELECT count(*) FROM unnest(q.starts) AS s WHERE s >= now() - make_interval(secs => q.rate_period_s)
       ) >= q.rate_limit END AS rate_full,
       CASE WHEN q.global_concurrency IS NOT NULL THEN (
           SELECT count(*) FROM jobs AS r
           WHERE r.lease_expires_at IS NOT NULL AND r.queue = o.name AND r.state = 'running'
       ) >= q.global_concurrency END AS global_full,
       CASE WHEN q.key_concurrency IS NOT NULL THEN (
           SELECT count(*) FROM jobs AS j
           WHERE j.state = 'queued' AND j.shard = skiplock_shard(o.name) AND j.queue = o.name
             AND j.run_at <= now() AND j.concurrency_key IN (
               SELECT r.concurrency_key FROM jobs AS r
               WHERE r.state = 'running' AND r.shard = skiplock_shard(o.name) AND r.queue = o.name
                 AND r.concurrency_key IS NOT NULL
               GROUP BY 1 HAVING count(*) >= q.key_concurrency)
       ) END AS key_concurrency_waiting,
       CASE WHEN q.key_rate_limit IS NOT NULL THEN (
           SELECT count(*) FROM jobs AS j
           WHERE j.state = 'queued' AND j.shard = skiplock_shard(o.name) AND j.queue = o.name
             AND j.run_at <= now() AND j.concurrency_key IN (
               SELECT k.key FROM queue_key_starts AS k
               WHERE k.queue = o.name AND k.last_start >= now() - make_interval(secs => q.key_rate_period_s)
                 AND (SELECT count(*) FROM unnest(k.starts) AS s
                      WHERE s >= now() - make_interval(secs => q.key_rate_period_s)) >= q.key_rate_limit)
       ) END AS key_rate_waiting
FROM (
    SELECT coalesce(c.queue, q.name) AS name,
           coalesce(q.paused, false) AS paused,
           coalesce(c.counts, '{}'::jsonb) AS counts,
           coalesce(c.waiting_for_unknown_task, 0) AS waiting_for_unknown_task,
           coalesce(c.finished_last_hour, 0) AS finished_last_hour,
           coalesce(c.later, 0) AS later,
           coalesce(c.unknown_due, 0) AS unknown_due
    FROM (
        SELECT queue, jsonb_object_agg(state, n) AS counts,
               sum(unknown)::bigint AS waiting_for_unknown_task, sum(finished)::bigint AS finished_last_hour,
               coalesce(sum(later) FILTER (WHERE state = 'queued'), 0)::bigint AS later,
               coalesce(sum(unknown_due), 0)::bigint AS unknown_due
        FROM (
            SELECT queue, state, sum(n) AS n, sum(finished) AS finished, sum(later) AS later,
                   sum(n) FILTER (WHERE state = 'queued' AND NOT EXISTS (
                       SELECT 1 FROM task_registrations AS r WHERE r.task = t.task AND r.expires_at > now()
                   )) AS unknown,
                   sum(n - later) FILTER (WHERE state = 'queued' AND NOT EXISTS (
                       SELECT 1 FROM task_registrations AS r WHERE r.task = t.task AND r.expires_at > now()
                   )) AS unknown_due
            FROM (
                SELECT queue, state, task, count(*) AS n,
                       count(*) FILTER (WHERE finished_at > now() - interval '1 hour') AS finished,
                       count(*) FILTER (WHERE run_at > now()) AS later
                FROM jobs
                GROUP BY queue, state, task
            ) AS t
            GROUP BY queue, state
        ) AS per_state
        GROUP BY queue
    ) AS c
    FULL JOIN queues AS q ON q.name = c.queue
) AS o
LEFT JOIN queues AS q ON q.name = o.name
ORDER BY o.name

-- name: task_register
-- A worker's beat: its tasks ($1) live for $3 more seconds under owner $2. Rows of processes gone
-- for a day are dropped on the way (a small table; nothing else prunes it).
WITH gone AS (
    DELETE FROM task_registrations WHERE expires_at < now() - interval '1 day' AND owner <> $2
)
INSERT INTO task_registrations (task, owner, expires_at)
SELECT task, $2, now() + make_interval(secs => $3) FROM unnest($1::text[]) AS t(task)
ON CONFLICT (task, owner) DO UPDATE SET expires_at = excluded.expires_at

-- name: task_unregister
-- A worker that stops: its tasks no longer count as served by it.
DELETE FROM task_registrations WHERE owner = $1
