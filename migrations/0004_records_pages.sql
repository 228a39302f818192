-- What the fetch_api and scrape tasks store.

-- One row per (source, external id): a re-fetch updates it in place.
CREATE TABLE records (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       text        NOT NULL CHECK (length(source) BETWEEN 1 AND 200),
    external_id  text        NOT NULL,
    payload      jsonb       NOT NULL,
    fetched_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);

-- GET /records?source=: one source's records in id order.
CREATE INDEX records_source_id_idx ON records (source, id);

-- One row per requested URL: a re-scrape updates it.
CREATE TABLE pages (
    url          text        PRIMARY KEY,
    final_url    text        NOT NULL,
    status       smallint    NOT NULL,
    content_type text        NOT NULL,
    title        text,
    description  text,
    headings     jsonb       NOT NULL DEFAULT '[]',
    links        jsonb       NOT NULL DEFAULT '[]',
    scraped_at   timestamptz NOT NULL DEFAULT now()
);
