-- Which tasks a live worker process can run (rolling deploys: an older replica lacks newer tasks).
-- Each worker upserts one row per task it registered at start and pushes expires_at forward on a
-- beat; a row whose expires_at has passed belongs to a process that is gone. A queued job whose
-- task has no live row waits for a worker that knows it (GET /queues counts them).
CREATE TABLE task_registrations (
    task       text        NOT NULL CHECK (length(task) BETWEEN 1 AND 200),
    owner      text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (task, owner)
);

CREATE INDEX task_registrations_owner_idx ON task_registrations (owner);
