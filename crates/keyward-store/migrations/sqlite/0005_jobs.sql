-- Background jobs (seed 004): durable, so that work survives a restart.
CREATE TABLE jobs (
    id              TEXT    NOT NULL PRIMARY KEY,
    -- NULL for the deployment's own scheduled work (the expiry sweep).
    account_id      TEXT    REFERENCES accounts (id) ON DELETE CASCADE,
    kind            TEXT    NOT NULL,
    params          TEXT    NOT NULL, -- JSON object
    status          TEXT    NOT NULL, -- queued, running, succeeded, failed
    progress_done   INTEGER NOT NULL DEFAULT 0,
    progress_total  INTEGER,
    result          TEXT,             -- JSON object, once finished
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_by      TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    heartbeat_at    INTEGER,
    finished_at     INTEGER
) STRICT;
CREATE INDEX jobs_account ON jobs (account_id, id);
CREATE INDEX jobs_status ON jobs (status, id);
