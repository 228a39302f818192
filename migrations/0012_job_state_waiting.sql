-- A workflow step whose dependencies have not all finished: 'waiting', never claimed (every claim
-- reads 'queued' only). Its own migration: a new enum value can be used only once it is committed.
ALTER TYPE job_state ADD VALUE IF NOT EXISTS 'waiting' BEFORE 'queued';
