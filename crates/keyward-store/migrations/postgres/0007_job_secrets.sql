-- Bulk rotation (`rotate_keys` jobs): one row per key a job rotated, written
-- in the same transaction as the rotation itself, so that a job resumed after
-- its worker died skips the keys it already rotated instead of rotating them
-- twice (which would cut their original secret off at once).
--
-- The new secret is never stored in the clear: `ciphertext` is the secret
-- encrypted by the server to the public key the caller gave when starting
-- the job (an ASCII-armored age file); only the caller can open it.
-- No foreign key to api_keys: a record outlives a key deleted later, like
-- request logs do.
CREATE TABLE job_secrets (
    job_id                 TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    key_id                 TEXT    NOT NULL,
    account_id             TEXT    NOT NULL,
    key_name               TEXT    NOT NULL,
    hint                   TEXT    NOT NULL, -- the new secret's hint
    ciphertext             TEXT    NOT NULL,
    old_secret_expires_at  BIGINT  NOT NULL,
    created_at             BIGINT  NOT NULL,
    PRIMARY KEY (job_id, key_id)
);
