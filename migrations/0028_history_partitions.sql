-- History out of the claim's table: jobs becomes a table partitioned by state. What is queued,
-- waiting or running lives in jobs_live, the table every claim, heartbeat and outcome reads, with
-- the hot path's indexes; what has ended lives in jobs_done, partitioned by finished_at into
-- ranges that retention drops whole (skiplock_history_maintain, below), so no large DELETE ever
-- runs and the live table's size follows the backlog, not the history. Events are partitioned by
-- time the same way and dropped with the same retention.
--
-- The move is PostgreSQL's own: an UPDATE that ends a job (an outcome, a cancel, an expiry, a
-- rescue) moves its row from jobs_live to jobs_done in the same statement, and a retry moves it
-- back, so an outcome and its move are one transaction and a crash leaves each job in exactly one
-- partition. Every statement keeps reading and writing jobs; a state constant in a statement
-- (the claim's state = 'queued', the heartbeat's state = 'running') prunes it to jobs_live when it
-- is planned. A writer that waited on a row another transaction moved gets a serialization
-- failure ("tuple to be locked was already moved to another partition"): the engine retries those
-- (skiplock.db.moved).
--
-- Not compatible with a replica of an earlier release still running: its enqueue names a unique
-- index as its conflict target, which no index of the partitioned table can be. Stop every
-- replica before applying this migration. The rows are copied once (the README says how long).

ALTER TABLE jobs RENAME TO jobs_old;
ALTER SEQUENCE jobs_id_seq RENAME TO jobs_old_id_seq;
-- Its argument is the old table's row type; re-created for the new one below, unchanged (0027's).
DROP FUNCTION skiplock_waiting_on(jobs_old);

CREATE TABLE jobs (LIKE jobs_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)
    PARTITION BY LIST (state);
SELECT setval('jobs_id_seq', last_value, is_called) FROM jobs_old_id_seq;

-- fillfactor and autovacuum as 0022 set them for jobs: the live table is the one that churns.
CREATE TABLE jobs_live PARTITION OF jobs FOR VALUES IN ('queued', 'waiting', 'running') WITH (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 2000
);
CREATE TABLE jobs_done PARTITION OF jobs FOR VALUES IN ('succeeded', 'failed', 'cancelled')
    PARTITION BY RANGE (finished_at);
-- What no range holds: a job that ended before any range was made (or while none was, if the
-- maintainers stopped for longer than their ranges ahead), and a workflow's steps kept past their
-- range's drop because their workflow has not been over for the retention yet. Pruned row by row.
CREATE TABLE jobs_done_default PARTITION OF jobs_done DEFAULT WITH (
    autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05
);

-- The time ranges made so far, by the maintainer below (bounds read back from the catalog would
-- have to be parsed out of text).
CREATE TABLE history_partitions (
    name       text PRIMARY KEY,
    parent     text        NOT NULL CHECK (parent IN ('jobs_done', 'job_events')),
    lower      timestamptz NOT NULL,
    upper      timestamptz NOT NULL CHECK (upper > lower)
);

-- The history already there goes into day ranges, dropped whole like the maintainer's, up to the
-- end of the newest row's day (so what ends before the first maintainer's round has a range too;
-- the maintainer goes on from there at its own width): none of it is left to the default
-- partition's row-by-row pruning. For jobs here, for events below.
CREATE FUNCTION pg_temp.history_days(tree text, first timestamptz, last timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    day timestamptz := date_trunc('day', first, 'UTC');
    upper timestamptz;
    range_name text;
BEGIN
    WHILE day < last LOOP
        upper := least(day + interval '1 day', last);
        range_name := tree || '_' || to_char(day AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISSUS');
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)'
                       ' WITH (autovacuum_vacuum_insert_scale_factor = 0.05)', range_name, tree, day, upper);
        INSERT INTO history_partitions (name, parent, lower, upper) VALUES (range_name, tree, day, upper);
        day := upper;
    END LOOP;
END
$$;
SELECT pg_temp.history_days('jobs_done', min(finished_at), date_trunc('day', max(finished_at), 'UTC') + interval '1 day')
FROM jobs_old WHERE state IN ('succeeded', 'failed', 'cancelled');

INSERT INTO jobs SELECT * FROM jobs_old;
DROP TABLE jobs_old;

-- The live table's indexes (led by the shard where 0027's were): the claim's, the rescuer's, the
-- limits', and the unique ones, which a partitioned table could only have with state in them. A live job's unique_key, child key and
-- schedule tick are unique among live jobs by these; the insert statements check the history
-- themselves (queue/sql/jobs.sql, schedules.sql).
ALTER TABLE jobs_live ADD PRIMARY KEY (id);
CREATE INDEX jobs_claim_idx ON jobs_live (shard, queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE UNIQUE INDEX jobs_unique_live_idx ON jobs_live (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');
CREATE INDEX jobs_expiry_idx ON jobs_live (expires_at)
    WHERE expires_at IS NOT NULL AND state = 'queued' AND attempts = 0;
CREATE INDEX jobs_key_queued_idx ON jobs_live (shard, queue, concurrency_key, priority DESC, run_at, id)
    WHERE state = 'queued' AND concurrency_key IS NOT NULL;
CREATE INDEX jobs_key_running_idx ON jobs_live (shard, queue, concurrency_key)
    WHERE state = 'running' AND concurrency_key IS NOT NULL;
CREATE UNIQUE INDEX jobs_child_idx ON jobs_live (parent_id, child_key) WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX jobs_schedule_tick_idx ON jobs_live (schedule_id, scheduled_for DESC)
    WHERE schedule_id IS NOT NULL;

-- History's: by id (GET /jobs/{id}), and the child and tick lookups the inserts make.
CREATE INDEX jobs_done_id_idx ON jobs_done (id);
CREATE INDEX jobs_done_child_idx ON jobs_done (parent_id, child_key) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_done_schedule_tick_idx ON jobs_done (schedule_id, scheduled_for DESC)
    WHERE schedule_id IS NOT NULL;

-- Every partition's: lists by state and by workflow, the dashboard's finished-since, and leases
-- (an ended job's lease is not always cleared).
CREATE INDEX jobs_state_id_idx ON jobs (state, id DESC);
CREATE INDEX jobs_workflow_idx ON jobs (workflow_id, id) WHERE workflow_id IS NOT NULL;
CREATE INDEX jobs_finished_at_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_lease_expiry_idx ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

ALTER TABLE jobs ADD CONSTRAINT jobs_schedule_id_fkey
    FOREIGN KEY (schedule_id) REFERENCES schedules (id) ON DELETE SET NULL;

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
            WHERE r.state = 'running' AND r.shard = j.shard AND r.queue = j.queue
              AND r.concurrency_key = j.concurrency_key
        ) >= q.key_concurrency THEN 'key_concurrency'
    END
    FROM (SELECT) AS one LEFT JOIN queues AS q ON q.name = j.queue
$$;

-- Triggers as before, on the new table (every insert goes through jobs: no conflict target can
-- name the live table's unique indexes through it, so the inserts say ON CONFLICT DO NOTHING).
CREATE TRIGGER jobs_notify_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION skiplock_notify_inserted();
CREATE TRIGGER jobs_deleted_events AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION skiplock_events_of_deleted_jobs();
-- 0011's, for a state change by a statement that writes no event of its own (an operator's UPDATE):
-- a BEFORE UPDATE row trigger fires on the row's partition before the row moves.
CREATE TRIGGER jobs_state_event_compat BEFORE UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND OLD.event_seq = NEW.event_seq)
    EXECUTE FUNCTION skiplock_state_event_compat();

-- A step's end moves its row from jobs_live to jobs_done, and PostgreSQL fires no AFTER UPDATE row
-- trigger for a row an UPDATE moved to another partition: it fires the source's AFTER DELETE and
-- the destination's AFTER INSERT row triggers instead. A step's end is its row leaving the live
-- table for the history, so the step-ended trigger is now jobs_live's AFTER DELETE one, and reads
-- the ended row from the history (a move within the history, such as the maintainer's of kept
-- steps, is no step's end, nor is a live row deleted outright). Like every AFTER trigger it runs
-- once its statement has written all its rows, so a statement that ends a step and a dependent of
-- it together (a bulk cancel) still finds the dependent ended. Otherwise the function is 0018's.
CREATE OR REPLACE FUNCTION skiplock_workflow_step_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    policy text;
    passed boolean;
    woken integer;
    finished boolean;
    cancelled_by_hand boolean;
BEGIN
    -- The step as its end left it: the row the statement moved, in the history now (visible to
    -- an AFTER trigger, which runs once the statement's rows are all written). None: the row was
    -- deleted outright, which ends no step (nor did it before).
    SELECT * INTO NEW FROM jobs_done AS d WHERE d.id = OLD.id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
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

CREATE TRIGGER jobs_workflow_step_ended AFTER DELETE ON jobs_live
    FOR EACH ROW WHEN (OLD.workflow_id IS NOT NULL)
    EXECUTE FUNCTION skiplock_workflow_step_ended();

-- Events, partitioned by when they happened, with the ranges and the retention of the jobs'.
-- Every event is written while its job's row is locked, so (job_id, seq) stays unique without a
-- key (a partitioned table's key would need the time in it).
ALTER TABLE job_events RENAME TO job_events_old;
CREATE TABLE job_events (LIKE job_events_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (at);
CREATE TABLE job_events_default PARTITION OF job_events DEFAULT WITH (
    autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05
);
SELECT pg_temp.history_days('job_events', min(at), date_trunc('day', max(at), 'UTC') + interval '1 day')
FROM job_events_old;
INSERT INTO job_events SELECT * FROM job_events_old;
DROP TABLE job_events_old;
CREATE INDEX job_events_job_seq_idx ON job_events (job_id, seq);
CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION skiplock_notify_events();

-- The history's ranges, kept by the pruner in two steps, each its own transaction, so that neither
-- holds a lock the engine's writers wait for while it waits for one they hold: make the ranges
-- ahead, then drop the expired ones one at a time. One maintainer at a time (the others return at
-- once: it is done for them); every lock is waited for at most lock_ms, and a step that cannot get
-- one gives up (the next round tries again) rather than queue the engine's statements behind it.

-- Make the ranges up to `ahead` widths of width_s past `at`: from the last range's end, or, when
-- there is none (or none for a while), from the current boundary, after what the default
-- partition holds. Returns how many it made. Attaching takes a SHARE UPDATE EXCLUSIVE lock on the
-- parent, which no reader or writer of jobs or events conflicts with (and the default partition's
-- ACCESS EXCLUSIVE, to check it holds nothing of the new range: only reads by id wait for that).
CREATE FUNCTION skiplock_history_make(width_s integer, ahead integer, lock_ms integer, at timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    until constant timestamptz := at + make_interval(secs => width_s * ahead);
    -- Rows arrive (a job's end, an event) and leave with their range: vacuum for the inserts, so
    -- the visibility map stays current; the dead rows are only a retry's or a delete's.
    history_options constant text := 'autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05';
    tree text;
    start timestamptz;
    upper timestamptz;
    newest timestamptz;
    range_name text;
    made integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('skiplock.history_maintain')) THEN
        RETURN 0;
    END IF;
    PERFORM set_config('lock_timeout', lock_ms || 'ms', true);
    FOREACH tree IN ARRAY ARRAY['jobs_done', 'job_events'] LOOP
        SELECT max(p.upper) INTO start FROM history_partitions AS p WHERE p.parent = tree;
        IF start IS NULL OR start <= at THEN
            -- None yet, or none for a while: what ended meanwhile is in the default partition,
            -- which a range must not overlap; the first range starts after its newest row (read
            -- by an index for jobs; the events' default partition holds only what came before
            -- any range, and is read only here).
            -- Locked first against new rows (SHARE ROW EXCLUSIVE: outcomes and events routed
            -- there wait, readers do not), or one written after the read would make the attach
            -- below fail; attaching takes a stronger lock on it anyway.
            EXECUTE format('LOCK TABLE %I IN SHARE ROW EXCLUSIVE MODE', tree || '_default');
            EXECUTE format('SELECT max(%I) FROM %I', CASE tree WHEN 'jobs_done' THEN 'finished_at' ELSE 'at' END,
                           tree || '_default')
            INTO newest;
            start := greatest(coalesce(start, to_timestamp(floor(extract(epoch FROM at) / width_s) * width_s)),
                              newest + interval '1 microsecond');
        END IF;
        WHILE start < until LOOP
            -- To the next boundary of width_s (a first range, or one after a change of width, may
            -- be shorter: the next ones are aligned).
            upper := to_timestamp((floor(extract(epoch FROM start) / width_s) + 1) * width_s);
            range_name := tree || '_' || to_char(start AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISSUS');
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS) WITH (%s)',
                           range_name, tree, history_options);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           tree, range_name, start, upper);
            INSERT INTO history_partitions (name, parent, lower, upper) VALUES (range_name, tree, start, upper);
            made := made + 1;
            start := upper;
        END LOOP;
    END LOOP;
    RETURN made;
END
$$;

-- Drop the oldest range that ended longer than retention_s before `at`, whole: its workflow steps
-- whose workflow has not been over for the retention are kept first, moved into
-- jobs_done_default (the pruner deletes them row by row later). No row: nothing to drop (or
-- another maintainer at it). Else the range, how many steps it kept, and its rows as the
-- statistics counted them (a count would read every row of what is about to go). Detaching takes
-- an ACCESS EXCLUSIVE lock on the range's parent for the rest of this transaction (milliseconds):
-- the engine's statements on jobs_live and its reads wait that long; none of them holds a lock on
-- the parent while it waits for one of jobs_live's.
CREATE FUNCTION skiplock_history_drop(retention_s double precision, lock_ms integer, at timestamptz)
RETURNS TABLE (name text, parent text, kept bigint, estimate bigint) LANGUAGE plpgsql AS $$
DECLARE
    cutoff constant timestamptz := at - make_interval(secs => retention_s);
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('skiplock.history_maintain')) THEN
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', lock_ms || 'ms', true);
    SELECT p.name, p.parent, 0, greatest(c.reltuples, 0)::bigint
    INTO name, parent, kept, estimate
    FROM history_partitions AS p LEFT JOIN pg_class AS c ON c.oid = to_regclass(p.name)
    WHERE p.upper <= cutoff ORDER BY p.lower LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', parent, name);
    IF parent = 'jobs_done' THEN
        EXECUTE format(
            'INSERT INTO jobs_done SELECT * FROM %I AS j WHERE j.workflow_id IS NOT NULL AND NOT EXISTS ('
            'SELECT 1 FROM workflows AS w WHERE w.id = j.workflow_id AND w.finished_at < $1)', name)
        USING cutoff;
        GET DIAGNOSTICS kept = ROW_COUNT;
        -- The edges of the steps that go (the pruner's DELETE took them by a trigger; a DROP
        -- fires none): every step of the range whose workflow ended before the cutoff.
        EXECUTE format(
            'DELETE FROM job_deps AS d USING %I AS j WHERE d.job_id = j.id AND j.workflow_id IS NOT NULL'
            ' AND EXISTS (SELECT 1 FROM workflows AS w WHERE w.id = j.workflow_id AND w.finished_at < $1)', name)
        USING cutoff;
    END IF;
    EXECUTE format('DROP TABLE %I', name);
    DELETE FROM history_partitions AS p WHERE p.name = skiplock_history_drop.name;
    RETURN NEXT;
END
$$;
