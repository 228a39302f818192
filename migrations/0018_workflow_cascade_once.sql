-- The cascade below a failed step walks the graph once. Each step it cancels fires this trigger
-- again (one level down), and each of those walked all of its own descendants again: a 10,000-step
-- chain whose first step failed took longer than the engine's statement limit to write the outcome
-- (the completer retried it for ever, every later outcome of the process behind it), and a
-- workflow's cancel of 4,000 steps took 15 s. A step cancelled by the cascade (trigger depth 2) or
-- by its workflow's cancel (which cancels every step at once) has nothing left below to walk.
-- Otherwise the function is 0016's.

CREATE OR REPLACE FUNCTION skiplock_workflow_step_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    policy text;
    passed boolean;
    woken integer;
    finished boolean;
    cancelled_by_hand boolean;
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
    RETURNING w.on_failure, w.succeeded + w.failed + w.cancelled = w.steps, w.state = 'cancelled'
    INTO policy, finished, cancelled_by_hand;
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
    ELSIF pg_trigger_depth() = 1 AND NOT cancelled_by_hand THEN
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
