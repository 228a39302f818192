-- name: lock
SELECT pg_advisory_lock(hashtext('skiplock_migrations'))

-- name: unlock
SELECT pg_advisory_unlock(hashtext('skiplock_migrations'))

-- name: create_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: applied
SELECT version, name FROM schema_migrations ORDER BY version

-- name: record
INSERT INTO schema_migrations (version, name) VALUES ($1, $2)

