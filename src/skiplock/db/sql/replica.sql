-- A read replica's health, read by the process that reads from it (skiplock.db.replica).

-- name: replica_lag
-- How far behind the server is, in seconds: 0 for a server that is not a standby (promoted, or the
-- primary itself), and for a standby streaming with all it received replayed; otherwise the age of
-- the last transaction it replayed (its commit time on the primary's clock): a standby whose
-- replay is paused or slow, or which lost its primary, falls behind by the time since.
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
         AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0
    ELSE coalesce(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 0)
END::float8 AS lag_s
