-- name: session_settings
-- The given settings as the server's configuration (role, database, server) sets them for a new
-- session: through a transaction pooler, a client cannot set its own at connect.
SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[]) ORDER BY name
