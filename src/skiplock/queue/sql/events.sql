-- Every statement on job_events.

-- name: event_list
-- One page of a job's history; data as JSON text, as in event_since_many.
SELECT job_id, seq, at, kind, data::text AS data FROM job_events
WHERE job_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3

-- name: event_since_many
-- For each read (job, after, limit): up to `limit` of that job's events after seq `after`, in order,
-- tagged with the read's place in the arrays; each read is one short range scan of the primary key.
-- Data comes as JSON text: the hub passes it on as it is, so no value can fail to decode.
SELECT w.read, e.job_id, e.seq, e.at, e.kind, e.data
FROM unnest($1::bigint[], $2::int[], $3::int[]) WITH ORDINALITY AS w(job_id, after, max_rows, read)
CROSS JOIN LATERAL (
    SELECT x.job_id, x.seq, x.at, x.kind, x.data::text AS data
    FROM job_events AS x
    WHERE x.job_id = w.job_id AND x.seq > w.after
    ORDER BY x.seq
    LIMIT w.max_rows
) AS e
ORDER BY w.read, e.seq

-- name: event_get_many
-- Exactly the referenced events, with their job's queue and task (for filtered streams); data as
-- JSON text, as in event_since_many.
SELECT e.job_id, e.seq, e.at, e.kind, e.data::text AS data, j.queue, j.task
FROM unnest($1::bigint[], $2::int[]) AS r(job_id, seq)
JOIN job_events AS e ON e.job_id = r.job_id AND e.seq = r.seq
JOIN jobs AS j ON j.id = e.job_id
ORDER BY e.job_id, e.seq

-- name: event_write_many
-- Progress and log events of running jobs, in the order given; each job's seqs follow on from
-- its event_seq under the row lock this UPDATE takes. The job row keeps the latest progress.
-- Only while the job is still ours: running, at the attempt given ($4, beside $1), under owner
-- $5; a run that lost its lease writes nothing into the next attempt's stream.
-- Data arrives as JSON text (see job_finish_many).
-- Rows locked in id order first (see job_heartbeat in jobs.sql).
WITH locked AS (
    SELECT id FROM jobs WHERE id = ANY($1::bigint[]) AND state = 'running' ORDER BY id FOR NO KEY UPDATE
), input AS (
    SELECT job_id, attempt, kind, data, ord
    FROM unnest($1::bigint[], $2::text[], $3::text[]::jsonb[], $4::int[])
        WITH ORDINALITY AS i(job_id, kind, data, attempt, ord)
), per_job AS (
    SELECT job_id, attempt, count(*) AS n,
           (array_agg(data ORDER BY ord DESC) FILTER (WHERE kind = 'progress'))[1] AS last_progress
    FROM input
    GROUP BY job_id, attempt
), bumped AS (
    UPDATE jobs AS j
    SET event_seq = j.event_seq + p.n, progress = coalesce(p.last_progress, j.progress)
    FROM per_job AS p
    WHERE j.id = ANY(ARRAY(SELECT id FROM locked)) AND j.id = p.job_id  -- ANY: never more rows than the batch's jobs
      AND j.attempts = p.attempt AND j.state = 'running' AND j.lease_owner = $5
    RETURNING j.id, p.attempt, j.event_seq - p.n AS base
)
INSERT INTO job_events (job_id, seq, kind, data)
SELECT i.job_id, b.base + row_number() OVER (PARTITION BY i.job_id ORDER BY i.ord), i.kind, i.data
FROM input AS i
JOIN bumped AS b ON b.id = i.job_id AND b.attempt = i.attempt
