-- The per-minute rollup (migration 0023): written by queue/_rollup.py, read by queue/stats.py.

-- name: stats_window
-- The rollup's turn: job_stats_progress's row locked (no row: another replica rolls now, this one
-- skips), and the minutes it recomputes: from the minute $2 seconds before where the last run got
-- (late commits: a job's finished_at is its transaction's start), or $3 seconds back on a first
-- run, never more than $4 seconds back; up to $5 seconds of them a turn. $1: the clock (null: now).
SELECT s.start, least(s.start + make_interval(secs => $5), s.now) AS until, s.now
FROM (
    SELECT date_trunc('minute', greatest(
               coalesce(p.rolled_to - make_interval(secs => $2), n.now - make_interval(secs => $3)),
               n.now - make_interval(secs => $4))) AS start,
           n.now
    FROM job_stats_progress AS p, (SELECT coalesce($1::timestamptz, now()) AS now) AS n
    FOR UPDATE OF p SKIP LOCKED
) AS s

-- name: stats_roll
-- The minutes of [$1, $2) recomputed from the jobs that finished in them (jobs_finished_at_idx's
-- range, nothing else of jobs), their rows replaced, so a rerun writes the same numbers; a minute
-- of the range with no finished job left (retried, deleted or pruned since) reads 0 again, its depth
-- sample kept. A wait is run_at → started_at of the attempt that finished the job (none for a job
-- cancelled unstarted). $1 is a minute's start.
WITH finished AS (
    SELECT queue, date_trunc('minute', finished_at) AS minute, state,
           CASE WHEN started_at IS NOT NULL THEN skiplock_wait_bucket(started_at - run_at) END AS bucket
    FROM jobs_done  -- only ended jobs have a finished_at; the live table is not read at all
    WHERE finished_at >= $1 AND finished_at < $2
),
outcomes AS (
    SELECT queue, minute,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled
    FROM finished GROUP BY queue, minute
),
waits AS (
    SELECT queue, minute, array_agg(bucket ORDER BY bucket) AS buckets, array_agg(n ORDER BY bucket) AS counts
    FROM (SELECT queue, minute, bucket, count(*)::integer AS n FROM finished
          WHERE bucket IS NOT NULL GROUP BY queue, minute, bucket) AS b
    GROUP BY queue, minute
),
emptied AS (
    UPDATE job_stats_minutes AS s
    SET succeeded = 0, failed = 0, cancelled = 0, wait_buckets = '{}', wait_counts = '{}'
    WHERE s.minute >= $1 AND s.minute < $2
      AND (s.succeeded + s.failed + s.cancelled) > 0
      AND NOT EXISTS (SELECT 1 FROM outcomes AS o WHERE o.queue = s.queue AND o.minute = s.minute)
)
INSERT INTO job_stats_minutes AS s (queue, minute, succeeded, failed, cancelled, wait_buckets, wait_counts)
SELECT o.queue, o.minute, o.succeeded, o.failed, o.cancelled, coalesce(w.buckets, '{}'), coalesce(w.counts, '{}')
FROM outcomes AS o LEFT JOIN waits AS w USING (queue, minute)
ON CONFLICT (minute, queue) DO UPDATE SET
    succeeded = excluded.succeeded, failed = excluded.failed, cancelled = excluded.cancelled,
    wait_buckets = excluded.wait_buckets, wait_counts = excluded.wait_counts

-- name: stats_sample_depth
-- Every queue's depth (its queued jobs, counted on jobs_claim_idx) as the sample of minute $1: the
-- queues with queued jobs, a row in queues, or a row in the minute before (their depth went to 0).
WITH counted AS (
    SELECT queue, count(*) AS n FROM jobs WHERE state = 'queued' GROUP BY queue
),
named AS (
    SELECT queue FROM counted
    UNION SELECT name FROM queues
    UNION SELECT queue FROM job_stats_minutes WHERE minute = $1::timestamptz - interval '1 minute'
)
INSERT INTO job_stats_minutes AS s (queue, minute, queued)
SELECT named.queue, $1::timestamptz, coalesce(counted.n, 0)
FROM named LEFT JOIN counted USING (queue)
ON CONFLICT (minute, queue) DO UPDATE SET queued = excluded.queued

-- name: stats_advance
-- Where this run got: its clock.
UPDATE job_stats_progress SET rolled_to = $1

-- name: stats_prune
-- Minutes older than $1 seconds ($2: the clock, null: now).
DELETE FROM job_stats_minutes
WHERE minute < coalesce($2::timestamptz, now()) - make_interval(secs => $1)

-- name: stats_timeout
-- The dashboard read's statement_timeout, for the rest of its transaction ($1 in milliseconds).
SELECT set_config('statement_timeout', $1::int::text, true)

-- name: stats_series
-- The minutes of [$1, $2) of queue $3 (null: every queue) in steps of $4 seconds: jobs finished by
-- outcome and their waits' buckets added up, and the depth (the queues' depths added per minute,
-- the step's largest). Reads job_stats_minutes on its primary key only.
WITH m AS (
    SELECT to_timestamp(floor(extract(epoch FROM minute) / $4) * $4) AS step, minute,
           succeeded, failed, cancelled, queued, wait_buckets, wait_counts
    FROM job_stats_minutes
    WHERE minute >= $1 AND minute < $2 AND ($3::text IS NULL OR queue = $3)
)
SELECT c.step, c.succeeded, c.failed, c.cancelled, d.queued,
       coalesce(w.buckets, '{}') AS wait_buckets, coalesce(w.counts, '{}') AS wait_counts
FROM (
    SELECT step, sum(succeeded)::bigint AS succeeded, sum(failed)::bigint AS failed,
           sum(cancelled)::bigint AS cancelled
    FROM m GROUP BY step
) AS c
LEFT JOIN (
    SELECT step, max(queued)::bigint AS queued
    FROM (SELECT step, sum(queued) AS queued FROM m GROUP BY step, minute) AS per_minute
    GROUP BY step
) AS d USING (step)
LEFT JOIN (
    SELECT step, array_agg(b ORDER BY b) AS buckets, array_agg(n ORDER BY b) AS counts
    FROM (SELECT step, b, sum(n)::bigint AS n FROM m, unnest(m.wait_buckets, m.wait_counts) AS u(b, n)
          GROUP BY step, b) AS per_bucket
    GROUP BY step
) AS w USING (step)
ORDER BY c.step
