-- Cron schedules as rows. Every process runs a scheduler; SKIP LOCKED on due rows and a unique
-- (schedule_id, scheduled_for) on jobs make each tick fire exactly once.

CREATE TABLE schedules (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    cron         text        NOT NULL CHECK (length(cron) BETWEEN 1 AND 200),
    timezone     text        NOT NULL DEFAULT 'UTC',
    task         text        NOT NULL,
    args         jsonb       NOT NULL DEFAULT '{}',
    queue        text,                       -- null: the task's queue
    priority     smallint    CHECK (priority BETWEEN -100 AND 100),  -- null: the task's priority
    enabled      boolean     NOT NULL DEFAULT true,
    misfire      text        NOT NULL DEFAULT 'skip' CHECK (misfire IN ('skip', 'catch_up')),
    source       text        NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'code')),
    next_run_at  timestamptz NOT NULL,
    last_run_at  timestamptz,
    last_job_id  bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE enabled;

ALTER TABLE jobs
    ADD COLUMN schedule_id bigint REFERENCES schedules (id) ON DELETE SET NULL,
    ADD COLUMN scheduled_for timestamptz;

-- The second guard: one job per schedule and tick. Also serves GET /jobs?schedule_id=.
CREATE UNIQUE INDEX jobs_schedule_tick_idx ON jobs (schedule_id, scheduled_for DESC)
    WHERE schedule_id IS NOT NULL;

-- Schedulers sleep until the earliest next_run_at; a change wakes them at once.
CREATE FUNCTION skiplock_notify_schedules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('skiplock', 'schedules:');
    RETURN NULL;
END
$$;

CREATE TRIGGER schedules_notify AFTER INSERT OR UPDATE OF cron, timezone, enabled, next_run_at OR DELETE
    ON schedules FOR EACH STATEMENT EXECUTE FUNCTION skiplock_notify_schedules();
