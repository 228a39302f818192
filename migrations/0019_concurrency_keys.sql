-- Per-key limits: a job's concurrency key (computed from its args at enqueue, by its task's
-- concurrency_key) and, on its queue's row, a concurrency and a sliding-window rate per key value,
-- held across every process by the claim of a keyed queue (skiplock_claim_keyed), which serves the
-- keys round-robin from a cursor kept on the queue's row.
-- NULL for a job whose task declares no key: nothing stored, and no index entry, for it.
ALTER TABLE jobs ADD COLUMN concurrency_key text;

-- The keys of a queue's queued jobs, walked one key at a time from the cursor, and each key's
-- jobs in claim order. Partial: only keyed jobs pay for it.
CREATE INDEX jobs_key_queued_idx ON jobs (queue, concurrency_key, priority DESC, run_at, id)
    WHERE state = 'queued' AND concurrency_key IS NOT NULL;
-- A key's running jobs, counted by the claim for its per-key concurrency.
CREATE INDEX jobs_key_running_idx ON jobs (queue, concurrency_key)
    WHERE state = 'running' AND concurrency_key IS NOT NULL;

ALTER TABLE queues
    ADD COLUMN key_concurrency integer CHECK (key_concurrency BETWEEN 1 AND 100000),
    ADD COLUMN key_rate_limit integer CHECK (key_rate_limit BETWEEN 1 AND 10000),
    ADD COLUMN key_rate_period_s double precision CHECK (key_rate_period_s > 0 AND key_rate_period_s <= 86400),
    -- The last key a claim served: the next claim starts after it (round-robin).
    ADD COLUMN key_cursor text,
    -- No job without a key was found at the last look: the next look is not before this.
    ADD COLUMN unkeyed_look_at timestamptz,
    ADD CONSTRAINT queues_key_rate_whole CHECK ((key_rate_limit IS NULL) = (key_rate_period_s IS NULL)),
    DROP COLUMN limited;
ALTER TABLE queues
    ADD COLUMN limited boolean NOT NULL GENERATED ALWAYS AS (
        global_concurrency IS NOT NULL OR rate_limit IS NOT NULL
        OR key_concurrency IS NOT NULL OR key_rate_limit IS NOT NULL
    ) STORED,
    ADD COLUMN keyed boolean NOT NULL GENERATED ALWAYS AS (
        key_concurrency IS NOT NULL OR key_rate_limit IS NOT NULL
    ) STORED;

-- Each key's starts still inside its rate window (a key's ring, as queues.starts is the queue's).
-- Written only by the claim of a keyed queue, in the queue's turn; rows whose every start left
-- the window are pruned by the claim that walks the key, or by the pruner.
CREATE TABLE queue_key_starts (
    queue  text NOT NULL,
    key    text NOT NULL,
    starts timestamptz[] NOT NULL,
    last_start timestamptz NOT NULL,
    PRIMARY KEY (queue, key)
);
CREATE INDEX queue_key_starts_last_idx ON queue_key_starts (last_start);

-- skiplock_claim_budget, as in 0017, and refusing a keyed queue to a claim that does not hold its
-- per-key limits (keyed false: job_claim_limited, from a process that has not heard of them yet,
-- or of a previous release): it takes nothing rather than too much.
DROP FUNCTION skiplock_claim_budget(text, integer);
CREATE FUNCTION skiplock_claim_budget(queue_name text, wanted integer, keyed boolean DEFAULT false)
    RETURNS TABLE (budget integer, clock timestamptz, next_at timestamptz)
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    q queues%ROWTYPE;
    running integer;
    recent integer;
BEGIN
    SELECT * INTO q FROM queues WHERE name = queue_name FOR UPDATE;
    clock := clock_timestamp();  -- taken in turn: never earlier than a start recorded before
    budget := wanted;
    IF NOT FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    IF q.paused OR (q.keyed AND NOT skiplock_claim_budget.keyed) THEN
        budget := 0;
    END IF;
    IF q.global_concurrency IS NOT NULL THEN
        SELECT count(*) INTO running FROM jobs
        WHERE lease_expires_at IS NOT NULL AND jobs.queue = queue_name AND state = 'running';
        budget := least(budget, greatest(q.global_concurrency - running, 0));
    END IF;
    IF q.rate_limit IS NOT NULL THEN
        SELECT count(*) INTO recent FROM unnest(q.starts) AS s
        WHERE s >= clock - make_interval(secs => q.rate_period_s);
        IF recent >= q.rate_limit THEN
            budget := 0;
            -- The start whose leaving the window frees one place of the budget.
            SELECT s + make_interval(secs => q.rate_period_s) INTO next_at FROM unnest(q.starts) AS s
            WHERE s >= clock - make_interval(secs => q.rate_period_s)
            ORDER BY s OFFSET recent - q.rate_limit LIMIT 1;
        ELSE
            budget := least(budget, q.rate_limit - recent);
        END IF;
    END IF;
    RETURN NEXT;
END
$$;

-- The claim of a queue with per-key limits: up to $wanted due jobs of the queue's tasks in
-- `known`, never one in `skipped`, within the queue's budget (skiplock_claim_budget, which locks
-- the queue's row: claims of the queue take turns) and each key's: at most key_concurrency
-- running and key_rate_limit starts in any window of key_rate_period_s per key value.
-- Keys are served round-robin: the walk starts after the key the last claim served (the cursor)
-- and goes round once, each key giving its oldest, highest-priority jobs up to its spare places,
-- so one key's backlog never holds another key's job back by more than one claim. Jobs without a
-- key come after the keys (looked for at most once a second while none is found: without an index
-- of their own, a look walks the queue's keyed jobs).
-- A function: its statements each read a fresh snapshot, after the queue's lock (see 0017); it
-- starts the jobs itself, as a claim statement's snapshot, taken before the lock, might not see
-- a job picked after it.
-- Its rows: the claimed jobs, each with the budget, the clock, next_at (when a rate, the queue's or
-- a key's, allows the next start, if one held a job back) and held (a concurrency, the queue's or
-- a key's, held a job back); nothing claimed: one row of those alone, its id null.
CREATE FUNCTION skiplock_claim_keyed(
    queue_name text, wanted integer, claimer text, lease_s double precision, pinned timestamptz,
    known text[], skipped bigint[]
)
    RETURNS TABLE (id bigint, queue text, task text, args jsonb, attempts integer, max_attempts integer,
                   timeout_s double precision, priority smallint, origin jsonb, run_at timestamptz,
                   started_at timestamptz, workflow_id bigint, budget integer, clock timestamptz,
                   next_at timestamptz, held boolean)
    LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    b record;
    q queues%ROWTYPE;
    due timestamptz := coalesce(pinned, now());
    room integer;
    picked bigint[] := '{}';
    taken bigint[];
    k text;
    next_key text;
    wrapped boolean := false;
    last_served text;
    spare integer;
    running integer;
    ring timestamptz[];
    recent integer;
    key_next timestamptz;
    key_held boolean := false;
BEGIN
    SELECT * INTO b FROM skiplock_claim_budget(queue_name, wanted, true);
    SELECT * INTO q FROM queues AS qq WHERE qq.name = queue_name;  -- locked by the budget
    room := coalesce(b.budget, 0);
    held := b.budget < wanted AND b.next_at IS NULL AND q.global_concurrency IS NOT NULL;
    k := q.key_cursor;
    WHILE room > 0 LOOP
        -- The next key of the queue's queued jobs after k, in key order (one index probe).
        SELECT j.concurrency_key INTO next_key FROM jobs AS j
        WHERE j.state = 'queued' AND j.queue = queue_name AND j.concurrency_key > coalesce(k, '')
        ORDER BY j.concurrency_key LIMIT 1;
        IF NOT FOUND THEN
            EXIT WHEN wrapped OR q.key_cursor IS NULL;
            wrapped := true;
            k := NULL;
            CONTINUE;
        END IF;
        EXIT WHEN wrapped AND next_key > q.key_cursor;  -- round once
        k := next_key;
        spare := room;
        IF q.key_concurrency IS NOT NULL THEN
            SELECT count(*) INTO running FROM jobs AS j
            WHERE j.state = 'running' AND j.queue = queue_name AND j.concurrency_key = k;
            spare := least(spare, q.key_concurrency - running);
        END IF;
        IF q.key_rate_limit IS NOT NULL AND spare > 0 THEN
            SELECT s.starts INTO ring FROM queue_key_starts AS s WHERE s.queue = queue_name AND s.key = k;
            SELECT count(*) INTO recent FROM unnest(ring) AS s
            WHERE s >= b.clock - make_interval(secs => q.key_rate_period_s);
            IF recent >= q.key_rate_limit THEN
                spare := 0;
                key_next := least(key_next, (
                    SELECT s + make_interval(secs => q.key_rate_period_s) FROM unnest(ring) AS s
                    WHERE s >= b.clock - make_interval(secs => q.key_rate_period_s)
                    ORDER BY s OFFSET recent - q.key_rate_limit LIMIT 1));
            ELSE
                spare := least(spare, q.key_rate_limit - recent);
            END IF;
        END IF;
        IF spare > 0 THEN
            taken := ARRAY(
                SELECT j.id FROM jobs AS j
                WHERE j.state = 'queued' AND j.queue = queue_name AND j.concurrency_key = k
                  AND j.run_at <= due AND j.task = ANY(known) AND j.id <> ALL(skipped)
                  AND (j.expires_at IS NULL OR j.expires_at > due OR j.attempts > 0)
                ORDER BY j.priority DESC, j.run_at, j.id
                LIMIT spare
                FOR UPDATE SKIP LOCKED
            );
            IF cardinality(taken) > 0 THEN
                picked := picked || taken;
                room := room - cardinality(taken);
                last_served := k;
                IF q.key_rate_limit IS NOT NULL THEN
                    INSERT INTO queue_key_starts AS s (queue, key, starts, last_start)
                    VALUES (queue_name, k, array_fill(b.clock, ARRAY[cardinality(taken)]), b.clock)
                    ON CONFLICT (queue, key) DO UPDATE SET
                        starts = ARRAY(
                            SELECT t FROM unnest(s.starts) AS t
                            WHERE t >= b.clock - make_interval(secs => q.key_rate_period_s) ORDER BY t
                        ) || excluded.starts,
                        last_start = excluded.last_start;
                END IF;
            END IF;
        ELSIF q.key_concurrency IS NOT NULL AND running >= q.key_concurrency THEN
            key_held := true;
        END IF;
    END LOOP;
    IF room > 0 AND (q.unkeyed_look_at IS NULL OR q.unkeyed_look_at <= b.clock) THEN
        taken := ARRAY(
            SELECT j.id FROM jobs AS j
            WHERE j.state = 'queued' AND j.queue = queue_name AND j.concurrency_key IS NULL
              AND j.run_at <= due AND j.task = ANY(known) AND j.id <> ALL(skipped)
              AND (j.expires_at IS NULL OR j.expires_at > due OR j.attempts > 0)
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT room
            FOR UPDATE SKIP LOCKED
        );
        picked := picked || taken;
        UPDATE queues AS qq
        SET unkeyed_look_at = CASE WHEN cardinality(taken) = 0 THEN b.clock + interval '1 second' END
        WHERE qq.name = queue_name AND qq.unkeyed_look_at IS DISTINCT FROM
            (CASE WHEN cardinality(taken) = 0 THEN b.clock + interval '1 second' END);
    END IF;
    IF last_served IS NOT NULL OR (q.rate_limit IS NOT NULL AND cardinality(picked) > 0) THEN
        UPDATE queues AS qq
        SET key_cursor = coalesce(last_served, qq.key_cursor),
            starts = CASE WHEN qq.rate_limit IS NULL THEN qq.starts ELSE ARRAY(
                SELECT s FROM unnest(qq.starts) AS s
                WHERE s >= b.clock - make_interval(secs => qq.rate_period_s) ORDER BY s
            ) || array_fill(b.clock, ARRAY[cardinality(picked)]) END
        WHERE qq.name = queue_name;
    END IF;
    held := held OR key_held;
    next_at := CASE WHEN b.next_at IS NULL THEN key_next ELSE least(b.next_at, key_next) END;
    RETURN QUERY
    WITH claimed AS (
        UPDATE jobs AS j
        SET state = 'running', attempts = j.attempts + 1, started_at = b.clock, finished_at = NULL,
            lease_owner = claimer, lease_expires_at = now() + make_interval(secs => lease_s),
            event_seq = j.event_seq + 1
        WHERE j.id = ANY(picked)
        RETURNING j.id, j.queue, j.task, j.args, j.attempts, j.max_attempts, j.timeout_s, j.priority,
                  j.origin, j.run_at, j.started_at, j.event_seq, j.workflow_id
    ), events AS (
        INSERT INTO job_events (job_id, seq, kind, data)
        SELECT c.id, c.event_seq, 'state', skiplock_state_event('running', 'queued', c.attempts, NULL)
        FROM claimed AS c
    )
    SELECT c.id, c.queue, c.task, c.args, c.attempts, c.max_attempts, c.timeout_s, c.priority, c.origin,
           c.run_at, c.started_at, c.workflow_id, b.budget, b.clock, next_at, held
    FROM claimed AS c;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::jsonb, NULL::integer, NULL::integer,
            NULL::float8, NULL::smallint, NULL::jsonb, NULL::timestamptz, NULL::timestamptz, NULL::bigint,
            b.budget, b.clock, next_at, held;
    END IF;
END
$$;
