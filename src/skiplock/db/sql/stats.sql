-- What an operator reads to see a sick database (GET /metrics), from PostgreSQL's statistics.

-- name: db_oldest_transaction_age
-- Seconds since the oldest open transaction of a client in this database began (0 when none):
-- while it stays open, vacuum can remove no row version that became dead after it started.
SELECT coalesce(extract(epoch FROM clock_timestamp() - min(xact_start)), 0)::float8 AS age_s
FROM pg_stat_activity
WHERE datname = current_database()
  AND backend_type = 'client backend'
  AND xact_start IS NOT NULL
  AND pid <> pg_backend_pid()

-- name: db_table_tuples
-- Live and dead row versions of the given tables in the current schema (the statistics system's
-- estimates, updated as transactions end and by vacuum and analyze).
SELECT relname AS name, n_live_tup AS live, n_dead_tup AS dead
FROM pg_stat_user_tables
WHERE schemaname = current_schema() AND relname = ANY($1::text[])
ORDER BY relname
