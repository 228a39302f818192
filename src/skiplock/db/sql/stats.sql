-- What an operator reads to see a sick database (GET /metrics), from PostgreSQL's statistics.

-- name: db_horizon
-- What holds back vacuum and NOTIFY, in one row (0 where nothing does):
-- transaction_age_s: seconds since the oldest open transaction of a client in this database began;
-- xmin_age: transactions since the oldest snapshot any session of this database holds (or a
--   standby's feedback through its walsender): vacuum removes no row version dead after it;
-- slot_xmin_age: the same for the oldest replication slot's xmin or catalog_xmin (a slot whose
--   standby or subscriber is gone keeps it forever);
-- notify_usage: the fraction of the NOTIFY queue in use (a listener in a long transaction fills
--   it; at 1 every NOTIFY fails).
-- Without pg_monitor (or pg_read_all_stats), other roles' sessions show no xact_start or xmin.
SELECT
    (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(xact_start)), 0)::float8
     FROM pg_stat_activity
     WHERE datname = current_database() AND backend_type = 'client backend'
       AND xact_start IS NOT NULL AND pid <> pg_backend_pid()) AS transaction_age_s,
    (SELECT coalesce(max(age(backend_xmin)), 0)::bigint
     FROM pg_stat_activity
     WHERE (datname = current_database() OR backend_type = 'walsender')
       AND pid <> pg_backend_pid()) AS xmin_age,
    (SELECT coalesce(max(greatest(age(xmin), age(catalog_xmin))), 0)::bigint
     FROM pg_replication_slots) AS slot_xmin_age,
    pg_notification_queue_usage() AS notify_usage

-- name: db_table_tuples
-- Live and dead row versions of the given tables in the current schema (the statistics system's
-- estimates, updated as transactions end and by vacuum and analyze), and when autovacuum last
-- finished on each (null: never since the statistics were reset). A partitioned table's are its
-- partitions' summed (pg_partition_tree's leaves; a plain table has none), its last autovacuum
-- their latest.
SELECT t.name, sum(s.n_live_tup)::bigint AS live, sum(s.n_dead_tup)::bigint AS dead,
       extract(epoch FROM max(s.last_autovacuum))::float8 AS last_autovacuum
FROM unnest($1::text[]) AS t(name)
JOIN pg_stat_user_tables AS s
  ON s.schemaname = current_schema()
 AND (s.relname = t.name
      OR s.relid IN (SELECT p.relid FROM pg_partition_tree(to_regclass(t.name)) AS p WHERE p.isleaf))
GROUP BY t.name
ORDER BY t.name
