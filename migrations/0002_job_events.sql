-- Job events: every state change, progress report and task log line, kept in order per job.
-- The table is the truth; NOTIFY carries only references ('ev:<job>.<seq>,…') so an event of any
-- size arrives whole and a subscriber reads exactly what it has not seen (seq > last).

-- Seq of the job's latest event; 0 until its first transition. Creation is not an event: the
-- row (and a subscriber's first message, the job itself) says it; a bulk load stays one COPY.
ALTER TABLE jobs ADD COLUMN event_seq integer NOT NULL DEFAULT 0;

CREATE TABLE job_events (
    job_id bigint      NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq    integer     NOT NULL,
    at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind   text        NOT NULL CHECK (kind IN ('state', 'progress', 'log')),
    data   jsonb       NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Every state change takes the next seq, under the row lock its UPDATE holds: no gaps, no twins.
CREATE FUNCTION skiplock_next_event_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.event_seq := OLD.event_seq + 1;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_state_event_seq BEFORE UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION skiplock_next_event_seq();

-- One INSERT per statement for all the state events it caused.
CREATE FUNCTION skiplock_state_events_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_events (job_id, seq, kind, data)
    SELECT n.id, n.event_seq, 'state', jsonb_strip_nulls(jsonb_build_object(
        'state', n.state, 'previous', o.state, 'attempt', n.attempts,
        'error', CASE WHEN jsonb_array_length(n.errors) > jsonb_array_length(o.errors)
                      THEN n.errors -> -1 END))
    FROM new_jobs AS n JOIN old_jobs AS o ON o.id = n.id
    WHERE n.state IS DISTINCT FROM o.state;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_state_events_updated AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION skiplock_state_events_updated();

-- References to new events, in chunks under NOTIFY's 8000-byte payload limit.
CREATE FUNCTION skiplock_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('skiplock', 'ev:' || string_agg(ref, ','))
    FROM (
        SELECT job_id || '.' || seq AS ref, (row_number() OVER (ORDER BY job_id, seq) - 1) / 200 AS chunk  -- 200 × ≤ 31 bytes
        FROM new_events
    ) AS refs
    GROUP BY chunk;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION skiplock_notify_events();
