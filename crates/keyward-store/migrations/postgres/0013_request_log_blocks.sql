-- Request logs in blocks. Keep in step with
-- ../sqlite/0013_request_log_blocks.sql, which says why.
--
-- The id columns are compared in the "C" collation (bytes), as in 0008.
CREATE TABLE request_log_blocks (
    id           TEXT COLLATE "C" NOT NULL, -- the block's first entry's id
    last_id      TEXT COLLATE "C" NOT NULL, -- and its last entry's
    batch_id     TEXT COLLATE "C" NOT NULL, -- `log_<ulid>`: entry n of the batch is this + n
    account_id   TEXT COLLATE "C" NOT NULL,
    key_id       TEXT COLLATE "C",          -- NULL when the key was not found
    workspace_id TEXT COLLATE "C",
    environment  TEXT,                      -- the key's environment, else the one asked for
    entry_count  BIGINT NOT NULL,
    first_at     BIGINT NOT NULL,           -- the earliest and latest `at` of its entries
    last_at      BIGINT NOT NULL,
    codes        BIGINT NOT NULL,           -- a bit per code among its entries (see sql/request_logs.rs)
    -- JSON: [[offset in the batch, at, client_ip, [permissions asked for],
    --         code, latency_us, method, path], …] in offset order
    entries      TEXT   NOT NULL,
    CONSTRAINT request_log_blocks_account PRIMARY KEY (account_id, last_id)
);
-- Every log written so far becomes a batch of one, keeping its id; its
-- `codes` has every bit set, as if it could hold any code.
INSERT INTO request_log_blocks (id, last_id, batch_id, account_id, key_id, workspace_id, environment,
                                entry_count, first_at, last_at, codes, entries)
    SELECT id, id, id, account_id, key_id, workspace_id, environment, 1, at, at, -1,
           json_build_array(json_build_array(0, at, client_ip, permissions::json, code,
                                             latency_us, method, path))::text
    FROM request_logs;
DROP TABLE request_logs;
-- One key's logs and one workspace's, by the newest entry of each block
-- (the primary key serves the account's); the retention purge, by the
-- oldest.
CREATE INDEX request_log_blocks_key ON request_log_blocks (account_id, key_id, last_id);
CREATE INDEX request_log_blocks_workspace ON request_log_blocks (account_id, workspace_id, last_id);
CREATE INDEX request_log_blocks_first_at ON request_log_blocks (first_at);
