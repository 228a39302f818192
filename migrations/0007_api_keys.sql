-- API keys: only a hash and a short prefix are kept; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    prefix       text        NOT NULL UNIQUE,       -- shown in lists, finds the row for a presented key
    key_hash     bytea       NOT NULL,              -- sha256 of the whole key (keys are 192 random bits)
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- One secret per installation, shared by every replica (it signs the dashboard's CSRF tokens).
CREATE TABLE instance_secret (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    secret   text    NOT NULL
);
INSERT INTO instance_secret (secret)
VALUES (encode(sha256((gen_random_uuid()::text || gen_random_uuid()::text)::bytea), 'hex'));
