-- API keys and the installation's secret.

-- name: key_insert
INSERT INTO api_keys (name, prefix, key_hash, scopes) VALUES ($1, $2, $3, $4)
RETURNING id, name, prefix, scopes, created_at, last_used_at, revoked_at

-- name: key_list
SELECT id, name, prefix, scopes, created_at, last_used_at, revoked_at FROM api_keys ORDER BY id

-- name: key_find
-- A live key by its prefix; the hash is compared in Python, in constant time.
SELECT id, name, key_hash, scopes FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL

-- name: key_revoke
UPDATE api_keys SET revoked_at = now()
WHERE (name = $1 OR prefix = $1) AND revoked_at IS NULL
RETURNING id, name, prefix, scopes, created_at, last_used_at, revoked_at

-- name: key_touch
-- At most once a minute per key: a busy key should not write on every request.
UPDATE api_keys SET last_used_at = now()
WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')

-- name: key_live_count
SELECT count(*) FROM api_keys WHERE revoked_at IS NULL

-- name: instance_secret
SELECT secret FROM instance_secret
