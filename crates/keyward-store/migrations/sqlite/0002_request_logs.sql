-- Request logs: one row per verification outcome, written in batches by the
-- server (never one write per request). Keep in step with
-- ../postgres/0002_request_logs.sql.
--
-- No foreign keys on purpose: logs outlive the keys, workspaces and
-- environments they mention (a deleted key's history stays queryable), and a
-- batch must never fail because one row names an object deleted since.
-- `account_id` scopes every query like every other tenant table.
CREATE TABLE request_logs (
    id           TEXT    NOT NULL PRIMARY KEY, -- `log_<ulid>`: sorts by time
    account_id   TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    key_id       TEXT,             -- NULL when the key was not found
    workspace_id TEXT,
    environment  TEXT,             -- the key's environment, else the one asked for
    client_ip    TEXT,
    permissions  TEXT    NOT NULL, -- JSON array of the permissions asked for
    code         TEXT    NOT NULL, -- the verification code
    latency_us   INTEGER NOT NULL
) STRICT;
CREATE INDEX request_logs_account ON request_logs (account_id, id);
CREATE INDEX request_logs_key ON request_logs (account_id, key_id, id);
CREATE INDEX request_logs_workspace ON request_logs (account_id, workspace_id, id);
-- The retention purge deletes by time across accounts.
CREATE INDEX request_logs_at ON request_logs (at);
