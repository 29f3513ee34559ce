-- Request logs in blocks. Keep in step with
-- ../postgres/0013_request_log_blocks.sql.
--
-- A row per verification cost a table insert and four index inserts each,
-- once a second for every request of the second before (~6 µs of CPU a row
-- with one key, ~20 µs with a thousand keys in use; docs/PERFORMANCE.md).
-- Now a flush writes one row per block: the entries of one batch that share
-- an account, key, workspace and environment (at most 1,024), as one JSON
-- array. The store's `sql/request_logs.rs` says how ids and pages work.
CREATE TABLE request_log_blocks (
    id           TEXT    NOT NULL, -- the block's first entry's id
    last_id      TEXT    NOT NULL, -- and its last entry's
    batch_id     TEXT    NOT NULL, -- `log_<ulid>`: entry n of the batch is this + n
    account_id   TEXT    NOT NULL,
    key_id       TEXT,             -- NULL when the key was not found
    workspace_id TEXT,
    environment  TEXT,             -- the key's environment, else the one asked for
    entry_count  INTEGER NOT NULL,
    first_at     INTEGER NOT NULL, -- the earliest and latest `at` of its entries
    last_at      INTEGER NOT NULL,
    codes        INTEGER NOT NULL, -- a bit per code among its entries (see sql/request_logs.rs)
    -- JSON: [[offset in the batch, at, client_ip, [permissions asked for],
    --         code, latency_us, method, path], …] in offset order
    entries      TEXT    NOT NULL
) STRICT;
-- Every log written so far becomes a batch of one, keeping its id; its
-- `codes` has every bit set, as if it could hold any code.
INSERT INTO request_log_blocks (id, last_id, batch_id, account_id, key_id, workspace_id, environment,
                                entry_count, first_at, last_at, codes, entries)
    SELECT id, id, id, account_id, key_id, workspace_id, environment, 1, at, at, -1,
           json_array(json_array(0, at, client_ip, json(permissions), code, latency_us,
                                 method, path))
    FROM request_logs;
DROP TABLE request_logs;
-- The account's logs, one key's and one workspace's, by the newest entry of
-- each block; and the retention purge, by the oldest.
CREATE UNIQUE INDEX request_log_blocks_account ON request_log_blocks (account_id, last_id);
CREATE INDEX request_log_blocks_key ON request_log_blocks (account_id, key_id, last_id);
CREATE INDEX request_log_blocks_workspace ON request_log_blocks (account_id, workspace_id, last_id);
CREATE INDEX request_log_blocks_first_at ON request_log_blocks (first_at);
