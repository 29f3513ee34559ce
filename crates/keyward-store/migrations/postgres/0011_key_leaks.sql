-- Secrets found in public (GitHub secret scanning). Keep in step with
-- ../sqlite/0011_key_leaks.sql.
--
-- `leaked_at` says the key's *current* secret has been reported public; a
-- rotation clears it, as the new secret has not been seen anywhere. Each
-- report is kept with what Keyward did about it, for the key's page; the
-- `key.leaked` audit event records the same in the account's chain.
ALTER TABLE api_keys ADD COLUMN leaked_at BIGINT;

CREATE TABLE key_leaks (
    id              TEXT    NOT NULL PRIMARY KEY,
    account_id      TEXT    NOT NULL,
    key_id          TEXT    NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    reported_at     BIGINT NOT NULL,
    reporter        TEXT    NOT NULL, -- 'github'
    location        TEXT,             -- the public URL it was found at, if given
    found_in        TEXT,             -- the reporter's kind of place: 'content', 'commit', …
    secret          TEXT    NOT NULL, -- 'current' or 'replaced' (by a rotation)
    action          TEXT    NOT NULL, -- 'revoked', 'grace_ended', 'flagged', 'none'
    reason          TEXT              -- why a key was only flagged
);
CREATE INDEX key_leaks_key ON key_leaks (account_id, key_id, reported_at);
