-- The fleet: one row per process boot (skiplock serve, skiplock worker, an API-only replica), written
-- at its start and beaten every heartbeat_s by the process itself (queue/_presence.py). Its id is the
-- lease owner of the jobs it runs (jobs.lease_owner): its running jobs are the leases it holds.
-- A row whose beat is more than three heartbeats old, or whose process said it stopped, is offline
-- (derived on the database's clock, never stored); the pruner deletes offline rows after retention.
-- quiet, stop_requested and concurrency are what an operator asks for (the API writes them and sends
-- 'worker:<id>'); the process applies them on the notification or at its next beat, and writes the
-- state it is in (online, quiet: claiming nothing, stopping: shutting down).
CREATE TABLE workers (
    id                text        PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 300),
    host              text        NOT NULL,
    pid               integer     NOT NULL,
    version           text        NOT NULL,
    role              text        NOT NULL CHECK (role IN ('serve', 'worker', 'api')),
    -- queue → this process's limit for it ('*': every queue, see SKIPLOCK_QUEUES)
    queues            jsonb       NOT NULL DEFAULT '{}',
    concurrency       integer     NOT NULL CHECK (concurrency BETWEEN 0 AND 10000),
    heartbeat_s       double precision NOT NULL CHECK (heartbeat_s > 0),
    state             text        NOT NULL DEFAULT 'online' CHECK (state IN ('online', 'quiet', 'stopping')),
    quiet             boolean     NOT NULL DEFAULT false,
    stop_requested    boolean     NOT NULL DEFAULT false,
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz
);

CREATE INDEX workers_last_heartbeat_idx ON workers (last_heartbeat_at);

-- Whether a worker's row is offline: its process said it stopped, or missed three beats.
CREATE FUNCTION skiplock_worker_offline(stopped_at timestamptz, last_heartbeat_at timestamptz,
                                        heartbeat_s double precision)
    RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT stopped_at IS NOT NULL OR last_heartbeat_at < now() - make_interval(secs => 3 * heartbeat_s)
$$;
