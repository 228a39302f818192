-- A workflow whose last step has ended tells its waiters: 'wf:<id>' on the skiplock channel, sent
-- in the transaction that makes its row final (finished_at set), whichever statement ended that
-- step: an outcome, a rescue, a step's or the workflow's cancel, the cascade below a failure.
-- Each step is counted once per move into a final state, so the count reaches the workflow's
-- steps once per run (a retry starts the count again, and its end is told again).
-- GET /workflows/{id}/result?wait= and Client.wait_for_workflow wait on it (queue/results.py).
-- Otherwise the function is 0013's.

CREATE OR REPLACE FUNCTION skiplock_workflow_step_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    policy text;
    passed boolean;
    woken integer;
    finished boolean;
BEGIN
    UPDATE workflows AS w
    SET succeeded = w.succeeded + (NEW.state = 'succeeded')::int,
        failed = w.failed + (NEW.state = 'failed')::int,
        cancelled = w.cancelled + (NEW.state = 'cancelled')::int,
        state = CASE WHEN w.state <> 'running' OR w.succeeded + w.failed + w.cancelled + 1 < w.steps THEN w.state
                     WHEN w.failed + w.cancelled = 0 AND NEW.state = 'succeeded' THEN 'succeeded'
                     ELSE 'failed' END,
        finished_at = CASE WHEN w.succeeded + w.failed + w.cancelled + 1 >= w.steps THEN now()
                           ELSE w.finished_at END
    WHERE w.id = NEW.workflow_id
    RETURNING w.on_failure, w.succeeded + w.failed + w.cancelled = w.steps INTO policy, finished;
    IF finished THEN  -- sent at commit, once the workflow's row says it is final
        PERFORM pg_notify('skiplock', 'wf:' || NEW.workflow_id);
    END IF;
    passed := NEW.state = 'succeeded' OR policy = 'continue';
    IF passed THEN
        WITH promoted AS (
            UPDATE jobs AS j
            SET deps_pending = j.deps_pending - 1,
                state = (CASE WHEN j.deps_pending = 1 THEN 'queued' ELSE 'waiting' END)::job_state,
                run_at = CASE WHEN j.deps_pending = 1 THEN now() ELSE j.run_at END,
                event_seq = j.event_seq + (j.deps_pending = 1)::int
            WHERE j.id IN (SELECT d.job_id FROM job_deps AS d WHERE d.upstream_id = NEW.id)
              AND j.state = 'waiting'
            RETURNING j.id, j.queue, j.state, j.event_seq, j.attempts
        ), events AS (
            INSERT INTO job_events (job_id, seq, kind, data)
            SELECT id, event_seq, 'state', skiplock_state_event(state, 'waiting', attempts, NULL)
            FROM promoted WHERE state = 'queued'
        )
        SELECT count(pg_notify('skiplock', 'queued:' || due.queue)) INTO woken
        FROM (SELECT DISTINCT queue FROM promoted WHERE state = 'queued') AS due;
    ELSE
        WITH RECURSIVE below(id) AS (
            SELECT d.job_id FROM job_deps AS d WHERE d.upstream_id = NEW.id
            UNION
            SELECT d.job_id FROM job_deps AS d JOIN below AS b ON d.upstream_id = b.id
        ), cancelled AS (
            UPDATE jobs AS j
            SET state = 'cancelled', finished_at = now(), event_seq = j.event_seq + 1,
                errors = j.errors || jsonb_build_array(jsonb_build_object(
                    'attempt', j.attempts, 'type', 'UpstreamFailed', 'at', now(),
                    'message', 'not run: step ' || NEW.step || ' ended ' || NEW.state))
            WHERE j.id IN (SELECT id FROM below) AND j.state = 'waiting'
            RETURNING j.id, j.event_seq, j.attempts, j.errors -> -1 AS error
        )
        INSERT INTO job_events (job_id, seq, kind, data)
        SELECT id, event_seq, 'state', skiplock_state_event('cancelled', 'waiting', attempts, error)
        FROM cancelled;
    END IF;
    RETURN NULL;
END
$$;
