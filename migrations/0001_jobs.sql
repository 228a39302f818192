-- The job table, its claim index, and per-queue state shared by every replica.

CREATE TYPE job_state AS ENUM ('queued', 'running', 'succeeded', 'failed', 'cancelled');

CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue            text        NOT NULL DEFAULT 'default' CHECK (length(queue) BETWEEN 1 AND 100),
    task             text        NOT NULL CHECK (length(task) BETWEEN 1 AND 200),
    args             jsonb       NOT NULL DEFAULT '{}',
    state            job_state   NOT NULL DEFAULT 'queued',
    priority         smallint    NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_s        double precision CHECK (timeout_s > 0),
    unique_key       text        CHECK (length(unique_key) BETWEEN 1 AND 200),
    lease_owner      text,
    lease_expires_at timestamptz,
    cancel_requested boolean     NOT NULL DEFAULT false,
    progress         jsonb,
    result           jsonb,
    errors           jsonb       NOT NULL DEFAULT '[]',
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);

-- Serves exactly the claim: state = 'queued' AND queue = $1 ORDER BY priority DESC, run_at, id.
CREATE INDEX jobs_claim_idx ON jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';

-- One live job per unique_key; a finished job frees its key.
CREATE UNIQUE INDEX jobs_unique_live_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');

-- The rescuer's scan of expired leases.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state = 'running';

-- Listing by state, newest first (GET /jobs?state=…).
CREATE INDEX jobs_state_id_idx ON jobs (state, id DESC);

CREATE TABLE queues (
    name       text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    paused     boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Wake the workers of a queue when due jobs arrive, from the inserting transaction itself
-- (so INSERT, enqueue on a caller's transaction and COPY all notify, and only on commit).
CREATE FUNCTION skiplock_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('skiplock', 'queued:' || due.queue)
    FROM (SELECT DISTINCT queue FROM new_jobs WHERE run_at <= now()) AS due;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION skiplock_notify_inserted();
