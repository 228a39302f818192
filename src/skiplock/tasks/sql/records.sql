-- The records fetch_api stores: staged by COPY, upserted in one statement, read by keyset.

-- name: records_stage
-- Dropped at commit: each fetch stages in its own transaction.
CREATE TEMP TABLE records_stage (external_id text NOT NULL, payload jsonb NOT NULL) ON COMMIT DROP

-- name: records_upsert_staged
WITH upserted AS (
    INSERT INTO records (source, external_id, payload, fetched_at)
    SELECT $1, external_id, payload, now() FROM records_stage
    ON CONFLICT (source, external_id)
        DO UPDATE SET payload = excluded.payload, fetched_at = excluded.fetched_at
    RETURNING (xmax = 0) AS inserted  -- xmax is 0 on a freshly inserted row version
)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
FROM upserted

-- name: records_page
SELECT id, source, external_id, payload, fetched_at
FROM records
WHERE ($1::text IS NULL OR source = $1) AND id > $2
ORDER BY id
LIMIT $3
