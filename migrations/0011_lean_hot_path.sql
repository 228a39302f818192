-- The hot path's own work only: state events written by the statements that change a job's state
-- (not by triggers), the state index kept off enqueues and claims, and side-by-side enqueues
-- notified once, after their commits.
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

-- No foreign key: its check ran once per event row (two per job) and took a share lock on the
-- job it had just updated. Every event row is inserted by a statement that holds its job's row
-- lock (so the job exists), and job_prune_finished deletes a job's events with the job.
ALTER TABLE job_events DROP CONSTRAINT job_events_job_id_fkey;

-- Listing by state: an index of finished jobs only. The full (state, id DESC) index took an entry
-- at every state change; now neither an enqueue nor a claim takes one, only an outcome. Queued
-- jobs are listed through jobs_claim_idx or the primary key (the planner picks by how many there
-- are), running ones through jobs_lease_expiry_idx (a running job always holds a lease, and
-- job_list says so); the pruner finds old finished jobs by jobs_finished_at_idx.
DROP INDEX jobs_state_id_idx;
CREATE INDEX jobs_finished_state_id_idx ON jobs (state, id DESC) WHERE state IN ('succeeded', 'failed', 'cancelled');

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
