-- What the dashboard reads besides counts: jobs finished in the last hour (throughput), which the
-- pruner's age check also uses.
CREATE INDEX jobs_finished_at_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
