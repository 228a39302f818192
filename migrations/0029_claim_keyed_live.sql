-- The keyed claim's update planned onto jobs_live alone: since 0028 jobs is partitioned by state,
-- and `id = ANY(picked)` alone names no partition, so each claim probed every partition's id
-- index (the history's ranges among them) for rows that can only be live. A list of the live
-- states prunes it when planned (not state = 'queued': that would let jobs_claim_idx serve the
-- ids). Otherwise the function is 0027's, whole.

CREATE OR REPLACE FUNCTION skiplock_claim_keyed(
    queue_name text, wanted integer, claimer text, lease_s double precision, pinned timestamptz,
    known text[], skipped bigint[], shard_key smallint
)
    RETURNS TABLE (id bigint, queue text, task text, args jsonb, attempts integer, max_attempts integer,
                   timeout_s double precision, priority smallint, origin jsonb, run_at timestamptz,
                   started_at timestamptz, workflow_id bigint, shard smallint, budget integer,
                   clock timestamptz, next_at timestamptz, held boolean)
    LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    b record;
    q queues%ROWTYPE;
    due timestamptz := coalesce(pinned, now());
    room integer;
    picked bigint[] := '{}';
    taken bigint[];
    k text;  -- the turn walked: a key, '' for the jobs without a key, NULL before the first
    next_key text;
    wrapped boolean := false;
    visited integer := 0;
    cap integer := greatest(4 * wanted, 64);
    spare integer;
    running integer;
    ring timestamptz[];
    recent integer;
    key_next timestamptz;
    key_held boolean := false;
    looked boolean := false;
    look_at timestamptz;
BEGIN
    SELECT * INTO b FROM skiplock_claim_budget(queue_name, wanted, true);
    SELECT * INTO q FROM queues AS qq WHERE qq.name = queue_name;  -- locked by the budget
    room := coalesce(b.budget, 0);
    held := b.budget < wanted AND b.next_at IS NULL AND q.global_concurrency IS NOT NULL;
    k := q.key_cursor;
    -- The ring: '' (the jobs without a key) then the keys in order; a walk starts after the cursor
    -- and goes round once (ending on the cursor's own turn), visiting at most cap turns.
    WHILE room > 0 LOOP
        IF visited >= cap THEN
            key_held := true;  -- turns left unvisited: claimed again on an outcome or at the poll
            EXIT;
        END IF;
        IF k IS NULL THEN
            next_key := '';
        ELSE
            -- The next key of the queue's queued jobs after k, in key order (one index probe).
            SELECT j.concurrency_key INTO next_key FROM jobs AS j
            WHERE j.state = 'queued' AND j.shard = shard_key AND j.queue = queue_name AND j.concurrency_key > k
            ORDER BY j.concurrency_key LIMIT 1;
            IF FOUND THEN
                EXIT WHEN wrapped AND next_key > q.key_cursor;  -- round once
            ELSE
                EXIT WHEN wrapped OR q.key_cursor IS NULL;  -- (NULL: the unkeyed turn came first)
                wrapped := true;
                next_key := '';
            END IF;
        END IF;
        k := next_key;
        visited := visited + 1;
        IF k = '' THEN
            -- The jobs without a key, as one key without a limit; looked for at most once a second
            -- while the queue has none due (not: none this process can run).
            CONTINUE WHEN q.unkeyed_look_at > b.clock;
            looked := true;
            taken := ARRAY(
                SELECT j.id FROM jobs AS j
                WHERE j.state = 'queued' AND j.shard = shard_key AND j.queue = queue_name AND j.concurrency_key IS NULL
                  AND j.run_at <= due AND j.task = ANY(known) AND j.id <> ALL(skipped)
                  AND (j.expires_at IS NULL OR j.expires_at > due OR j.attempts > 0)
                ORDER BY j.priority DESC, j.run_at, j.id
                LIMIT room
                FOR UPDATE SKIP LOCKED
            );
            picked := picked || taken;
            room := room - cardinality(taken);
            look_at := NULL;
            -- None taken: any due job without a key, whoever can run it? (The first in claim order.)
            IF cardinality(taken) = 0 THEN
                PERFORM FROM (
                    SELECT j.id FROM jobs AS j
                    WHERE j.state = 'queued' AND j.shard = shard_key AND j.queue = queue_name AND j.concurrency_key IS NULL
                      AND j.run_at <= due
                    ORDER BY j.priority DESC, j.run_at, j.id
                    LIMIT 1
                ) AS first;
                IF NOT FOUND THEN
                    look_at := b.clock + interval '1 second';
                END IF;
            END IF;
            CONTINUE;
        END IF;
        spare := room;
        IF q.key_concurrency IS NOT NULL THEN
            SELECT count(*) INTO running FROM jobs AS j
            WHERE j.state = 'running' AND j.shard = shard_key AND j.queue = queue_name AND j.concurrency_key = k;
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
                WHERE j.state = 'queued' AND j.shard = shard_key AND j.queue = queue_name AND j.concurrency_key = k
                  AND j.run_at <= due AND j.task = ANY(known) AND j.id <> ALL(skipped)
                  AND (j.expires_at IS NULL OR j.expires_at > due OR j.attempts > 0)
                ORDER BY j.priority DESC, j.run_at, j.id
                LIMIT spare
                FOR UPDATE SKIP LOCKED
            );
            IF cardinality(taken) > 0 THEN
                picked := picked || taken;
                room := room - cardinality(taken);
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
    -- The cursor is the last turn walked: the next claim starts after it.
    IF visited > 0 AND k IS DISTINCT FROM q.key_cursor
        OR looked AND look_at IS DISTINCT FROM q.unkeyed_look_at
        OR q.rate_limit IS NOT NULL AND cardinality(picked) > 0 THEN
        UPDATE queues AS qq
        SET key_cursor = CASE WHEN visited > 0 THEN k ELSE qq.key_cursor END,
            unkeyed_look_at = CASE WHEN looked THEN look_at ELSE qq.unkeyed_look_at END,
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
        WHERE j.id = ANY(picked) AND j.state IN ('queued', 'waiting', 'running')
        RETURNING j.id, j.queue, j.task, j.args, j.attempts, j.max_attempts, j.timeout_s, j.priority,
                  j.origin, j.run_at, j.started_at, j.event_seq, j.workflow_id, j.shard
    ), events AS (
        INSERT INTO job_events (job_id, seq, kind, data)
        SELECT c.id, c.event_seq, 'state',
               skiplock_state_event('running', 'queued', c.attempts, NULL) || jsonb_build_object('worker', claimer)
        FROM claimed AS c
    )
    SELECT c.id, c.queue, c.task, c.args, c.attempts, c.max_attempts, c.timeout_s, c.priority, c.origin,
           c.run_at, c.started_at, c.workflow_id, c.shard, b.budget, b.clock, next_at, held
    FROM claimed AS c;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::jsonb, NULL::integer, NULL::integer,
            NULL::float8, NULL::smallint, NULL::jsonb, NULL::timestamptz, NULL::timestamptz, NULL::bigint,
            NULL::smallint, b.budget, b.clock, next_at, held;
    END IF;
END
$$;
