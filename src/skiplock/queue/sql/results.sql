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
