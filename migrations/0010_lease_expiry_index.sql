-- The rescuer's index keyed on the lease itself, not on state = 'running'.
-- A partial index WHERE state = 'running' is a trap for every statement that updates a few running
-- jobs by id (outcomes, heartbeats, events, releases): their state guard matches its predicate, and
-- when the statistics are older than a surge of running jobs (autovacuum's 10 % threshold on a big
-- table takes long to trip) the planner believes that index holds a few rows and scans all of it
-- per batch, or per row of the batch, instead of looking the ids up in the primary key. A lease is
-- set exactly while a job runs, and `lease_expires_at < $t` implies the predicate below, so the
-- rescue is served as before while nothing else can be lured onto it.
CREATE INDEX jobs_lease_expiry_idx ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
DROP INDEX jobs_lease_idx;
