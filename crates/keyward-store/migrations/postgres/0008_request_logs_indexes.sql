-- Request logs with one index fewer per row, compared byte by byte. Keep in
-- step with ../sqlite/0008_request_logs_indexes.sql.
--
-- Every row written costs one insert into each index, and the server
-- writes one row per verification. 0002 indexed `id` alone (the primary
-- key) besides `(account_id, id)`; no query needs the former: every read is
-- scoped by account, so `(account_id, id)` finds a log by id and pages an
-- account's logs in id order. It is now the primary key; ids are still
-- unique (`log_<ulid>`, made by the store alone).
--
-- The id columns are compared in the "C" collation (bytes), as SQLite
-- compares all text. They hold ASCII ids, which sort the same in any
-- collation, so no order or result changes; but under a linguistic default
-- (say `en_US.UTF-8`) each comparison calls the C library's `strcoll`, and
-- the index inserts, which compare a few times per level of each tree, spent
-- a measurable share of the database's time there. The listing's
-- comparisons take the column's collation, so they still use the indexes.
--
-- Each remaining index serves one query: the account's logs (the primary
-- key), one key's (`request_logs_key`), one workspace's
-- (`request_logs_workspace`), each newest first by id, and the retention
-- purge by time (`request_logs_at`, unchanged). The indexes on the columns
-- whose collation changes are dropped first and built once, afterwards;
-- the table itself is not rewritten.
ALTER TABLE request_logs DROP CONSTRAINT request_logs_pkey;
DROP INDEX request_logs_account;
DROP INDEX request_logs_key;
DROP INDEX request_logs_workspace;
ALTER TABLE request_logs
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN account_id TYPE TEXT COLLATE "C",
    ALTER COLUMN key_id TYPE TEXT COLLATE "C",
    ALTER COLUMN workspace_id TYPE TEXT COLLATE "C",
    ADD PRIMARY KEY (account_id, id);
CREATE INDEX request_logs_key ON request_logs (account_id, key_id, id);
CREATE INDEX request_logs_workspace ON request_logs (account_id, workspace_id, id);
