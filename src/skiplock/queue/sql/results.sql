-- Waiting for jobs to finish (queue/results.py).

-- name: job_outcome_many
-- Where each of these jobs is: its state and, once final, its result and its last attempt's error
-- (null when that attempt succeeded). A waiter's round reads every watched job it was told about
-- in this one statement, found by id alone.
SELECT id, state,
       CASE WHEN state IN ('succeeded', 'failed', 'cancelled') THEN result END AS result,
       -- Compared as JSON, not cast: an error object that is not as expected must not fail the read
       -- (every waiter of the round shares it).
       CASE WHEN state IN ('failed', 'cancelled') AND errors -> -1 -> 'attempt' = to_jsonb(attempts)
            THEN errors -> -1 END AS error
FROM jobs
WHERE id = ANY($1::bigint[])

-- name: workflow_outcome_many
-- Where each of these workflows is (from its own row) and, once final (finished_at set, the
-- trigger of migration 0016 then sends 'wf:<id>'), its result: the steps nothing depends on, in
-- id order, each its result or, if it did not succeed, {state, error}; and for one that did not
-- succeed, its first failed step (else its first cancelled one) with that step's last error.
-- Both are read once per finished workflow (the gates stop them for a running one).
SELECT w.id, w.state, w.finished_at IS NOT NULL AND w.state <> 'running' AS final,
       leaves.names AS leaf_names, leaves.results AS leaf_results,
       failure.step AS failed_step, failure.job_id AS failed_job_id,
       failure.state AS failed_state, failure.error AS failed_error
FROM workflows AS w
LEFT JOIN LATERAL (
    SELECT array_agg(j.step ORDER BY j.id) AS names,
           jsonb_agg(CASE WHEN j.state = 'succeeded' THEN j.result
                          ELSE jsonb_build_object('state', j.state, 'error', j.errors -> -1) END
                     ORDER BY j.id) AS results
    FROM jobs AS j
    WHERE w.finished_at IS NOT NULL AND w.state <> 'running'
      AND j.workflow_id = w.id
      AND NOT EXISTS (SELECT 1 FROM job_deps AS d WHERE d.upstream_id = j.id)
) AS leaves ON true
LEFT JOIN LATERAL (
    SELECT j.step, j.id AS job_id, j.state::text AS state,
           CASE WHEN j.errors -> -1 -> 'attempt' = to_jsonb(j.attempts) THEN j.errors -> -1 END AS error
    FROM jobs AS j
    WHERE w.finished_at IS NOT NULL AND w.state IN ('failed', 'cancelled')
      AND j.workflow_id = w.id AND j.state IN ('failed', 'cancelled')
    ORDER BY j.state = 'failed' DESC, j.id
    LIMIT 1
) AS failure ON true
WHERE w.id = ANY($1::bigint[])
