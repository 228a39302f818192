-- CSV imports: the upload kept in chunks until its job has run, the items it loads, and the rows it
-- could not load.

CREATE TABLE imports (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key: finished jobs are pruned, and the import keeps its own outcome.
    job_id      bigint,
    filename    text CHECK (length(filename) <= 1000),
    bytes       bigint      NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    -- The import's own record of its run; GET /imports/{id} prefers the job's state while it lives.
    state       text        NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    rows        integer     NOT NULL DEFAULT 0 CHECK (rows >= 0),
    loaded      integer     NOT NULL DEFAULT 0 CHECK (loaded >= 0),
    failed      integer     NOT NULL DEFAULT 0 CHECK (failed >= 0),
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

CREATE TABLE import_chunks (
    import_id bigint  NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
    seq       integer NOT NULL CHECK (seq >= 0),
    data      bytea   NOT NULL,
    PRIMARY KEY (import_id, seq)
);

-- CSV text compresses well but costs CPU on every upload; chunks live only until their job has run.
ALTER TABLE import_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE items (
    sku        text PRIMARY KEY CHECK (sku <> ''),
    name       text          NOT NULL,
    category   text,
    price      numeric(12,2) NOT NULL CHECK (price >= 0),
    quantity   integer       NOT NULL CHECK (quantity >= 0),
    updated_at timestamptz   NOT NULL
);

CREATE TABLE failed_rows (
    import_id bigint  NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
    line_no   integer NOT NULL CHECK (line_no >= 1),
    raw       text    NOT NULL,
    reason    text    NOT NULL,
    PRIMARY KEY (import_id, line_no)
);
