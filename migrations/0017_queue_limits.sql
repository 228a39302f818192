-- Limits of a queue that hold across every replica, kept on its queues row: a per-process
-- concurrency that overrides the workers' configured one, a global concurrency (jobs of the queue
-- running in all processes at once) and a rate limit (at most rate_limit starts in any window of
-- rate_period_s seconds, a sliding window), with the ring of the starts still inside that window.
-- Replicas of the previous release claim a limited queue's jobs as if it had none: limits hold
-- once every replica runs this release.
ALTER TABLE queues
    ADD COLUMN concurrency integer CHECK (concurrency BETWEEN 1 AND 10000),
    ADD COLUMN global_concurrency integer CHECK (global_concurrency BETWEEN 0 AND 100000),
    ADD COLUMN rate_limit integer CHECK (rate_limit BETWEEN 1 AND 10000),
    ADD COLUMN rate_period_s double precision CHECK (rate_period_s > 0 AND rate_period_s <= 86400),
    ADD COLUMN starts timestamptz[] NOT NULL DEFAULT '{}',
    -- What the claim of a queue without limits checks, beside paused, in the same row it reads now.
    ADD COLUMN limited boolean NOT NULL GENERATED ALWAYS AS (global_concurrency IS NOT NULL OR rate_limit IS NOT NULL) STORED,
    ADD CONSTRAINT queues_rate_whole CHECK ((rate_limit IS NULL) = (rate_period_s IS NULL));

-- How many of $wanted jobs a claim of a limited queue may take now, the clock it starts them at,
-- and, when the rate limit holds it back, when the next start is allowed. Called by the claim of
-- a limited queue only (job_claim_limited), never by that of a queue without limits.
-- It locks the queue's row first: claims of one limited queue take turns, each seeing every start
-- and every claim committed before its turn. A function because its statements each read a fresh
-- snapshot: a count in the claim statement itself would read the snapshot taken before it waited
-- for the lock, and miss the jobs the claim it waited for took.
-- Running jobs are counted on jobs_lease_expiry_idx (a lease is set exactly while a job runs):
-- an index of running jobs by queue would cost every claim and outcome of every queue a write.
CREATE FUNCTION skiplock_claim_budget(queue_name text, wanted integer)
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
    IF q.paused THEN
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
