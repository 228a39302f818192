-- CSV imports: storing the upload, loading it batch by batch, and reading the outcome.

-- name: import_insert
INSERT INTO imports (filename) VALUES ($1) RETURNING id

-- name: import_set_job
UPDATE imports SET job_id = $2, bytes = $3, filename = $4 WHERE id = $1

-- name: import_list
-- Imports newest first: one ($1), or a keyset page ($2: ids below it), optionally only those with
-- failed rows ($3). The job's state until both have a final one (queued, running, retrying, cancelled, or failed
-- after its last attempt); the import's own once both do, or once the job is pruned. The import records its outcome
-- a moment before the job does, and the job's last progress arrives with the job's outcome: read earlier, the
-- import's final state would come with a stale progress.
SELECT i.id, i.job_id, i.filename, i.bytes,
       CASE WHEN j.id IS NULL THEN i.state
            WHEN i.state IN ('succeeded', 'failed') AND j.state IN ('succeeded', 'failed', 'cancelled') THEN i.state
            ELSE j.state::text END AS state,
       i.rows, i.loaded, i.failed,
       coalesce(i.error, CASE WHEN j.state <> 'succeeded' THEN j.errors -> -1 ->> 'message' END) AS error,
       j.progress, i.created_at, coalesce(i.finished_at, j.finished_at) AS finished_at
FROM imports i
LEFT JOIN jobs j ON j.id = i.job_id
WHERE ($1::bigint IS NULL OR i.id = $1)
  AND ($2::bigint IS NULL OR i.id < $2)
  AND (NOT $3::boolean OR i.failed > 0)
ORDER BY i.id DESC
LIMIT $4

-- name: import_exists
SELECT EXISTS (SELECT FROM imports WHERE id = $1)

-- name: import_failed_rows
SELECT line_no, raw, reason
FROM failed_rows
WHERE import_id = $1 AND line_no > $2
ORDER BY line_no
LIMIT $3

-- name: import_run_state
SELECT state, bytes, created_at, rows, loaded, failed, error FROM imports WHERE id = $1 FOR UPDATE

-- name: import_begin_run
-- A run starts from the first chunk, so the counters start from zero; rows a killed run already
-- loaded are upserted again with the same values.
UPDATE imports SET state = 'running', rows = 0, loaded = 0, failed = 0, error = NULL WHERE id = $1

-- name: import_chunk_batch
SELECT seq, data FROM import_chunks WHERE import_id = $1 AND seq > $2 ORDER BY seq LIMIT $3

-- name: import_staging_create
-- Per session and emptied by every commit: each batch is one transaction, which creates it if its
-- session has none (a no-op after the first; through a transaction pooler, sessions vary). varchar, not text: the
-- staged values are storable already (rows.py fails a record with a NUL or bytes that are not
-- UTF-8, and escapes its raw text), so COPY sends them through the driver's own varchar codec
-- instead of the storable text codec, which would cost ~0.2 us a value (8 a row).
CREATE TEMP TABLE IF NOT EXISTS import_staging (
    line_no    integer NOT NULL,
    raw        varchar NOT NULL,
    reason     varchar,
    sku        varchar,
    name       varchar,
    category   varchar,
    price      varchar,
    quantity   varchar,
    updated_at varchar,
    plain      boolean NOT NULL  -- rows.py found price, quantity and updated_at storable as they are
) ON COMMIT DELETE ROWS

-- name: import_staging_drop
DROP TABLE IF EXISTS pg_temp.import_staging

-- name: import_batch_settings
-- Times without a zone are UTC and dates read month first whatever the server's defaults, so an
-- import means the same everywhere; a batch's checked rows stay in memory rather than a temp file.
-- A batch's commit does not wait for its WAL to reach disk (3-6 ms of ~150 a batch): a batch lost
-- in a crash is loaded again by the re-run, which starts from the first chunk, and the import's
-- outcome commits synchronously, flushing every batch before it.
SELECT set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO, MDY', true),
       set_config('work_mem', '64MB', true), set_config('synchronous_commit', 'off', true)

-- name: import_load_batch
-- One batch, set-based: each staged row gets the first reason it is invalid (or none); invalid rows
-- go to failed_rows, valid ones are upserted by sku, the last in the file winning; the counters
-- grow by the batch. $1 import id, $2 the updated_at of rows without one, $3 upsert every row,
-- $4 trust the staged plain flags (false checks every value here: the retry should one be wrong).
-- A sku not yet in items is inserted plainly: an index probe and a plain insert cost about 0.5 us
-- a row (10 % of the statement) less than a speculative insert (ON CONFLICT). If another import
-- adds one of those skus meanwhile, the insert fails with unique_violation and the batch runs
-- again with $3 true.
WITH checked AS MATERIALIZED (
    SELECT s.line_no, s.raw, btrim(s.sku) AS sku, s.name, s.category, s.price, s.quantity,
           nullif(btrim(s.updated_at), '') AS updated_at,
           CASE
               WHEN s.reason IS NOT NULL THEN s.reason
               WHEN btrim(s.sku) = '' THEN 'empty sku'
               WHEN s.plain AND $4 THEN NULL
               WHEN NOT pg_input_is_valid(s.price, 'numeric(12,2)')
                   THEN 'bad price: ' || (pg_input_error_info(s.price, 'numeric(12,2)')).message
               WHEN s.price::numeric(12,2) = 'NaN' THEN 'bad price: not a number'
               WHEN s.price::numeric(12,2) < 0 THEN 'negative price'
               WHEN NOT pg_input_is_valid(s.quantity, 'integer')
                   THEN 'bad quantity: ' || (pg_input_error_info(s.quantity, 'integer')).message
               WHEN s.quantity::integer < 0 THEN 'negative quantity'
               WHEN lower(btrim(s.updated_at)) IN ('now', 'today', 'tomorrow', 'yesterday')
                   THEN 'bad updated_at: relative times are not allowed'
               WHEN btrim(s.updated_at) <> '' AND NOT pg_input_is_valid(s.updated_at, 'timestamptz')
                   THEN 'bad updated_at: ' || (pg_input_error_info(s.updated_at, 'timestamptz')).message
           END AS reason
    FROM import_staging s
),
rejected AS (
    INSERT INTO failed_rows (import_id, line_no, raw, reason)
    SELECT $1, line_no, rtrim(raw, E'\r\n'), reason FROM checked WHERE reason IS NOT NULL
    ON CONFLICT (import_id, line_no) DO NOTHING
),
valid AS MATERIALIZED (
    -- ON CONFLICT cannot touch a row twice in one statement: keep each sku's last row of the batch.
    SELECT DISTINCT ON (sku) sku, name, nullif(category, '') AS category, price::numeric(12,2) AS price,
           quantity::integer AS quantity, coalesce(updated_at::timestamptz, $2) AS updated_at,
           $3 OR EXISTS (SELECT FROM items it WHERE it.sku = checked.sku) AS stored
    FROM checked
    WHERE reason IS NULL
    ORDER BY sku, line_no DESC
),
replaced AS (
    INSERT INTO items AS it (sku, name, category, price, quantity, updated_at)
    SELECT sku, name, category, price, quantity, updated_at FROM valid WHERE stored
    ON CONFLICT (sku) DO UPDATE
        SET name = excluded.name, category = excluded.category, price = excluded.price,
            quantity = excluded.quantity, updated_at = excluded.updated_at
),
added AS (
    INSERT INTO items (sku, name, category, price, quantity, updated_at)
    SELECT sku, name, category, price, quantity, updated_at FROM valid WHERE NOT stored
),
counted AS (
    SELECT count(*) FILTER (WHERE reason IS NULL) AS loaded,
           count(*) FILTER (WHERE reason IS NOT NULL) AS failed
    FROM checked
)
UPDATE imports i
SET rows = i.rows + c.loaded + c.failed, loaded = i.loaded + c.loaded, failed = i.failed + c.failed
FROM counted c
WHERE i.id = $1
RETURNING i.rows, i.loaded, i.failed

-- name: import_finish
-- The upload is no longer needed once the import has an outcome that a re-run would only repeat.
WITH gone AS (DELETE FROM import_chunks WHERE import_id = $1)
UPDATE imports SET state = $2, error = $3, finished_at = now()
WHERE id = $1
RETURNING rows, loaded, failed
