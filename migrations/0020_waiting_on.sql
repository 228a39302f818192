-- Why a job that is not running has not started yet, computed when it is read (GET /jobs, the
-- dashboard): 'dependencies' (a workflow step whose upstream has not all succeeded), 'run_at'
-- (due later), 'paused' (its queue), 'unknown_task' (no live worker registered its task),
-- 'rate_limit' (its queue's window, or its key's, is full), 'global_concurrency' (its queue runs
-- as many as it may across every process), 'key_concurrency' (its key does); NULL when it runs or
-- ended, or is simply next in line. The first that applies, in that order. Cheap: a running or
-- ended job reads nothing; a queued one reads its queue's row and at most one indexed count of
-- running jobs per limit its queue has (the ones the claim itself counts).
CREATE FUNCTION skiplock_waiting_on(j jobs) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN j.state = 'waiting' THEN 'dependencies'
        WHEN j.state <> 'queued' THEN NULL
        WHEN j.run_at > now() THEN 'run_at'
        WHEN q.paused THEN 'paused'
        WHEN NOT EXISTS (
            SELECT 1 FROM task_registrations AS r WHERE r.task = j.task AND r.expires_at > now()
        ) THEN 'unknown_task'
        WHEN q.rate_limit IS NOT NULL AND (
            SELECT count(*) FROM unnest(q.starts) AS s WHERE s >= now() - make_interval(secs => q.rate_period_s)
        ) >= q.rate_limit THEN 'rate_limit'
        WHEN q.global_concurrency IS NOT NULL AND (
            SELECT count(*) FROM jobs AS r
            WHERE r.lease_expires_at IS NOT NULL AND r.queue = j.queue AND r.state = 'running'
        ) >= q.global_concurrency THEN 'global_concurrency'
        WHEN j.concurrency_key IS NOT NULL AND q.key_rate_limit IS NOT NULL AND (
            SELECT count(*) FROM queue_key_starts AS k, unnest(k.starts) AS s
            WHERE k.queue = j.queue AND k.key = j.concurrency_key
              AND s >= now() - make_interval(secs => q.key_rate_period_s)
        ) >= q.key_rate_limit THEN 'rate_limit'
        WHEN j.concurrency_key IS NOT NULL AND q.key_concurrency IS NOT NULL AND (
            SELECT count(*) FROM jobs AS r
            WHERE r.state = 'running' AND r.queue = j.queue AND r.concurrency_key = j.concurrency_key
        ) >= q.key_concurrency THEN 'key_concurrency'
    END
    FROM (SELECT) AS one LEFT JOIN queues AS q ON q.name = j.queue
$$;
