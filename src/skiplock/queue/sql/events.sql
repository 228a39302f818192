-- Every statement on job_events.

-- name: event_list
SELECT job_id, seq, at, kind, data FROM job_events
WHERE job_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3

-- name: event_since_many
-- For each (job, after) pair: that job's events after seq `after`, in order.
SELECT e.job_id, e.seq, e.at, e.kind, e.data
FROM unnest($1::bigint[], $2::int[]) AS w(job_id, after)
JOIN job_events AS e ON e.job_id = w.job_id AND e.seq > w.after
ORDER BY e.job_id, e.seq

-- name: event_get_many
-- Exactly the referenced events, with their job's queue and task (for filtered streams).
SELECT e.job_id, e.seq, e.at, e.kind, e.data, j.queue, j.task
FROM unnest($1::bigint[], $2::int[]) AS r(job_id, seq)
JOIN job_events AS e ON e.job_id = r.job_id AND e.seq = r.seq
JOIN jobs AS j ON j.id = e.job_id
ORDER BY e.job_id, e.seq

-- name: event_write_many
-- Progress and log events of running jobs, in the order given; each job's seqs follow on from
-- its event_seq under the row lock this UPDATE takes. The job row keeps the latest progress.
-- Data arrives as JSON text (see job_finish_many).
WITH input AS (
    SELECT job_id, kind, data, ord
    FROM unnest($1::bigint[], $2::text[], $3::text[]::jsonb[]) WITH ORDINALITY AS i(job_id, kind, data, ord)
), per_job AS (
    SELECT job_id, count(*) AS n,
           (array_agg(data ORDER BY ord DESC) FILTER (WHERE kind = 'progress'))[1] AS last_progress
    FROM input
    GROUP BY job_id
), bumped AS (
    UPDATE jobs AS j
    SET event_seq = j.event_seq + p.n, progress = coalesce(p.last_progress, j.progress)
    FROM per_job AS p
    WHERE j.id = p.job_id AND j.state = 'running'
    RETURNING j.id, j.event_seq - p.n AS base
)
INSERT INTO job_events (job_id, seq, kind, data)
SELECT i.job_id, b.base + row_number() OVER (PARTITION BY i.job_id ORDER BY i.ord), i.kind, i.data
FROM input AS i
JOIN bumped AS b ON b.id = i.job_id
