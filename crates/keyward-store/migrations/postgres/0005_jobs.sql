-- Background jobs (seed 004): durable, so that work survives a restart.
CREATE TABLE jobs (
    id              TEXT    NOT NULL PRIMARY KEY,
    -- NULL for the deployment's own scheduled work (the expiry sweep).
    account_id      TEXT    REFERENCES accounts (id) ON DELETE CASCADE,
    kind            TEXT    NOT NULL,
    params          TEXT    NOT NULL, -- JSON object
    status          TEXT    NOT NULL, -- queued, running, succeeded, failed
    progress_done   BIGINT NOT NULL DEFAULT 0,
    progress_total  BIGINT,
    result          TEXT,             -- JSON object, once finished
    error           TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_by      TEXT,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    heartbeat_at    BIGINT,
    finished_at     BIGINT
);
CREATE INDEX jobs_account ON jobs (account_id, id);
CREATE INDEX jobs_status ON jobs (status, id);
