-- Request logs with one b-tree fewer per row. Keep in step with
-- ../postgres/0008_request_logs_indexes.sql.
--
-- Every row written costs one insert into the table and one into each
-- index, and the server writes one row per verification. 0002 declared
-- `id TEXT PRIMARY KEY`, which on a rowid table is an index of its own (six
-- b-trees per row) that no query needs: every read is scoped by account, so
-- the `(account_id, id)` index finds a log by id and pages an account's
-- logs in id order. That index is now the unique one; ids are still unique
-- (`log_<ulid>`, made by the store alone). The table keeps its rowid, which
-- grows with every insert, so rows are appended at the table's end.
--
-- A WITHOUT ROWID table clustered on `(account_id, id)` would be one b-tree
-- fewer still, but measured slower with one key and no faster with many:
-- its rows are keyed by text, and every index entry then carries that key
-- instead of an 8-byte rowid.
--
-- Each remaining index serves one query: the account's logs
-- (`request_logs_account`), one key's (`request_logs_key`), one
-- workspace's (`request_logs_workspace`), each newest first by id, and the
-- retention purge by time (`request_logs_at`). A primary key cannot be
-- dropped in SQLite: the table is rebuilt (once; this copies every log).
CREATE TABLE request_logs_rebuilt (
    id           TEXT    NOT NULL, -- `log_<ulid>`: sorts by time
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
INSERT INTO request_logs_rebuilt (id, account_id, at, key_id, workspace_id, environment,
                                  client_ip, permissions, code, latency_us)
    SELECT id, account_id, at, key_id, workspace_id, environment, client_ip, permissions,
           code, latency_us
    FROM request_logs;
DROP TABLE request_logs;
ALTER TABLE request_logs_rebuilt RENAME TO request_logs;
CREATE UNIQUE INDEX request_logs_account ON request_logs (account_id, id);
CREATE INDEX request_logs_key ON request_logs (account_id, key_id, id);
CREATE INDEX request_logs_workspace ON request_logs (account_id, workspace_id, id);
-- The retention purge deletes by time across accounts.
CREATE INDEX request_logs_at ON request_logs (at);
