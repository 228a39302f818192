-- Autovacuum and fillfactor for the churn the engine makes. Storage parameters only: no table is
-- rewritten (a new fillfactor applies to the pages written from now on) and the lock taken is the
-- one autovacuum itself takes, so this applies under load.
--
-- jobs: every job is inserted, updated at its claim and at its outcome (heartbeats update running
-- ones), and deleted at retention, so the table turns over its whole live part again and again.
-- The default scale factor (0.2) lets dead tuples reach a fifth of a table that holds a week of
-- history before vacuum starts, and the claim's partial index carries their entries until then;
-- 2 % (plus 1,000 rows) starts it while they are a few per cent of the table. A 10x cost limit lets
-- each run finish before the next is due rather than crawl at the default 200. Inserts alone
-- (a bulk enqueue) start a vacuum at 5 %, so the visibility map stays current.
-- fillfactor 80: the claim, the outcome, the heartbeat and the rescue change indexed columns (state
-- is in jobs_state_id_idx and in the predicates of the claim, unique, expiry and concurrency-key
-- indexes; lease_expires_at in jobs_lease_expiry_idx; finished_at in jobs_finished_at_idx), so they
-- are never HOT; the event writer's progress update (event_seq, progress) and a cancel request
-- (cancel_requested) touch no indexed column and are HOT when the page has room. The room also
-- keeps a non-HOT update's new version on its page (heap_update tries that page first) instead of
-- the table's end. 20 % is the usual price; lower would cost space for the updates that are not HOT.
-- Measured on 20,000 jobs reporting progress, one worker: HOT updates 2.5 % -> 14.5 % of all, heap
-- 17.4 -> 16.0 MB after the drain; no-op jobs (no HOT update possible) the same size either way.
ALTER TABLE jobs SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 2000
);

-- job_events: inserted, never updated (fillfactor stays 100), deleted with their jobs at retention.
ALTER TABLE job_events SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_limit = 2000
);

-- Small tables updated all the time, whose updates touch no indexed column, so every one can be HOT
-- given room on the page: queues (a limited or keyed queue's claim rewrites its row's starts or its
-- key cursor), task
-- registrations (each worker's lease on its tasks, renewed every few seconds), workflows (a step's
-- end counts into succeeded / failed / cancelled; only a change of state is not HOT). Their default
-- thresholds (50 rows + 20 %) already start vacuum often.
ALTER TABLE queues SET (fillfactor = 50);
ALTER TABLE task_registrations SET (fillfactor = 50);
ALTER TABLE workflows SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);
-- schedules (each fire moves next_run_at, which schedules_due_idx holds), queue_key_starts (each
-- keyed start moves last_start, which queue_key_starts_last_idx holds) and workers (each beat moves
-- last_heartbeat_at, which workers_last_heartbeat_idx holds): no update is HOT and the tables are
-- small, so they keep the defaults.
