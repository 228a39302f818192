-- The hot path's own work only: state events written by the statements that change a job's state
-- (not by triggers), and side-by-side enqueues notified once, after their commits. Safe beside
-- replicas of the previous release still running (a rolling deploy): see the compatibility trigger.
-- A row trigger that bumped event_seq and a statement trigger that read the old and new rows of
-- every UPDATE on jobs (transition tables of whole rows, args and errors included) cost the
-- claim and the outcome more than their own work; each state-changing statement in
-- queue/sql/jobs.sql now takes the next seq in its own SET and inserts its event in the same
-- statement (tests/integration/test_state_events.py holds every one of them to that).
DROP TRIGGER jobs_state_events_updated ON jobs;
DROP FUNCTION skiplock_state_events_updated();
DROP TRIGGER jobs_state_event_seq ON jobs;
DROP FUNCTION skiplock_next_event_seq();

-- An event's data, as the trigger built it: the state, the one before, the attempt and, when the
-- change recorded one, its error. A plain SQL expression, inlined where it is called: STABLE as
-- jsonb_build_object is (declared IMMUTABLE, it would run as a function call per row).
CREATE FUNCTION skiplock_state_event(state job_state, previous job_state, attempt integer, error jsonb)
    RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'state', state, 'previous', previous, 'attempt', attempt, 'error', error))
$$;

-- For replicas of the previous release, whose statements change states without writing events:
-- a row trigger that does it for them, only when the statement did not take the seq itself (a
-- WHEN clause evaluated without calling the function, so this release's statements pay nothing).
-- Dropped by a later migration, once no replica of the previous release can be running.
CREATE FUNCTION skiplock_state_event_compat() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.event_seq := OLD.event_seq + 1;
    INSERT INTO job_events (job_id, seq, kind, data)
    VALUES (NEW.id, NEW.event_seq, 'state', skiplock_state_event(NEW.state, OLD.state, NEW.attempts,
            CASE WHEN jsonb_array_length(NEW.errors) > jsonb_array_length(OLD.errors) THEN NEW.errors -> -1 END));
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_state_event_compat BEFORE UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND OLD.event_seq = NEW.event_seq)
    EXECUTE FUNCTION skiplock_state_event_compat();

-- No foreign key: its check ran once per event row (two per job) and took a share lock on the
-- job it had just updated; every event row is inserted by a statement that holds its job's row
-- lock, so the job exists. A deleted job's events go with it by a statement trigger instead of
-- the key's cascade (whoever deletes: the pruner, either release's, or an operator).
ALTER TABLE job_events DROP CONSTRAINT job_events_job_id_fkey;

CREATE FUNCTION skiplock_events_of_deleted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_events WHERE job_id IN (SELECT id FROM deleted_jobs);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_deleted_events AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION skiplock_events_of_deleted_jobs();

-- Wake workers from the inserting transaction unless it says its caller will, after the commit
-- (skiplock.wake = 'later', set by job_insert): a NOTIFY holds a database-wide lock from commit to
-- WAL flush, so single enqueues that each notified committed one at a time; see queue/_waker.py.
CREATE OR REPLACE FUNCTION skiplock_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('skiplock.wake', true) = 'later' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('skiplock', 'queued:' || due.queue)
    FROM (SELECT DISTINCT queue FROM new_jobs WHERE run_at <= now()) AS due;
    RETURN NULL;
END
$$;
