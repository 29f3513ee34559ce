-- Request-log exports (`export_logs` jobs). Keep in step with
-- ../postgres/0010_job_exports.sql.
--
-- An export is written as numbered parts, each a complete gzip member of
-- about a megabyte of rendered rows: the parts, concatenated in order, are
-- one valid gzip file, so a download streams them one at a time and no
-- node ever holds a whole export in memory. They live in the store, not on
-- a node's disk, so any node can serve the download. A resumed job deletes
-- its parts and writes them again; the retention purge deletes parts a
-- week old.
CREATE TABLE job_export_parts (
    job_id      TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    part        INTEGER NOT NULL, -- 0, 1, …: the order of the download
    account_id  TEXT    NOT NULL,
    data        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (job_id, part)
) STRICT;
CREATE INDEX job_export_parts_created ON job_export_parts (created_at);
