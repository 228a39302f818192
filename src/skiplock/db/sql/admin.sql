-- Database-level statements (tests, benchmarks). Identifiers cannot be parameters: {name} and
-- {template} are filled in by skiplock.db.admin after checking them against a strict pattern.

-- name: drop_database
DROP DATABASE IF EXISTS {name} WITH (FORCE)

-- name: create_database
CREATE DATABASE {name}

-- name: create_database_from
CREATE DATABASE {name} TEMPLATE {template}
