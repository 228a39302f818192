-- Every statement on the queues table and per-queue counts.

-- name: queue_set_paused
INSERT INTO queues (name, paused) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
RETURNING name, paused

-- name: queue_overview
-- Counts per state for every queue that has jobs or a row in queues; the oldest due queued job
-- (jobs_claim_idx) and the jobs finished in the last hour (jobs_finished_at_idx), per queue.
SELECT o.*,
       (SELECT min(run_at) FROM jobs
        WHERE state = 'queued' AND queue = o.name AND run_at <= now()) AS oldest_queued_at,
       (SELECT count(*) FROM jobs
        WHERE finished_at > now() - interval '1 hour' AND queue = o.name) AS finished_last_hour
FROM (
    SELECT coalesce(c.queue, q.name) AS name,
           coalesce(q.paused, false) AS paused,
           coalesce(c.counts, '{}'::jsonb) AS counts
    FROM (
        SELECT queue, jsonb_object_agg(state, n) AS counts
        FROM (SELECT queue, state, count(*) AS n FROM jobs GROUP BY queue, state) AS per_state
        GROUP BY queue
    ) AS c
    FULL JOIN queues AS q ON q.name = c.queue
) AS o
ORDER BY o.name
