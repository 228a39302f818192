-- What the dashboard's charts read (never the jobs table): per queue and minute, the jobs that
-- finished by outcome, their waits (due → started: run_at → started_at of the attempt that finished
-- them) as counts in fixed log buckets, and the queue's depth (its queued jobs) as sampled in that
-- minute. Written by every process's rollup (queue/_rollup.py), one at a time (job_stats_progress's
-- row lock), each run recomputing its minutes from jobs_finished_at_idx and replacing their rows:
-- running it twice, or on two replicas at once, writes the same numbers. Pruned after
-- SKIPLOCK_STATS_RETENTION_S.
--
-- Waits in buckets, not percentiles: a p50 or p95 of an hour or a day cannot be made from the
-- minutes' own p50s and p95s, but bucket counts add up. Bucket b holds waits of
-- [2^(b/4), 2^((b+1)/4)) ms (bucket 0 also holds anything under 1 ms), up to 2^30 ms (12 days):
-- a percentile read from them is within 9% of the exact one. Sparse: the buckets a minute used
-- (wait_buckets, ascending) and their counts beside them (wait_counts).
CREATE TABLE job_stats_minutes (
    queue        text        NOT NULL,
    minute       timestamptz NOT NULL CHECK (minute = date_trunc('minute', minute)),
    succeeded    integer     NOT NULL DEFAULT 0,
    failed       integer     NOT NULL DEFAULT 0,
    cancelled    integer     NOT NULL DEFAULT 0,
    wait_buckets smallint[]  NOT NULL DEFAULT '{}',
    wait_counts  integer[]   NOT NULL DEFAULT '{}',
    queued       integer,    -- the queue's depth at the minute's last sample (null: none taken)
    PRIMARY KEY (minute, queue)
);

-- One row: the minute the last rollup reached (null: it never ran). Its row lock elects the writer.
CREATE TABLE job_stats_progress (
    one       boolean     PRIMARY KEY DEFAULT true CHECK (one),
    rolled_to timestamptz
);
INSERT INTO job_stats_progress DEFAULT VALUES;

-- A wait's bucket (see above).
CREATE FUNCTION skiplock_wait_bucket(wait interval) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(120, floor(4 * log(2.0, greatest(extract(epoch FROM wait) * 1000, 1)::numeric)))::smallint
$$;
