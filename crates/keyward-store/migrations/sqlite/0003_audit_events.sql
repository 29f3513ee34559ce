-- The audit log: one row per admin action, append-only. Rows are never
-- updated or deleted by Keyward; `seq` numbers each account's events 1, 2, …
-- so the hash chain's order is explicit, and `hash` = SHA-256(prev_hash ||
-- canonical form of the event) makes an edited or removed row detectable
-- (`keyward audit verify`). No foreign keys onto the objects: the history of
-- a deleted key or workspace stays.
CREATE TABLE audit_events (
    id              TEXT    NOT NULL PRIMARY KEY,
    account_id      TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    actor_member_id TEXT,
    actor_token_id  TEXT,
    actor_ip        TEXT,
    action          TEXT    NOT NULL,
    object_type     TEXT    NOT NULL,
    object_id       TEXT    NOT NULL,
    before_state    TEXT, -- JSON, or NULL
    after_state     TEXT, -- JSON, or NULL
    prev_hash       TEXT    NOT NULL, -- hex; 64 zeros for an account's first event
    hash            TEXT    NOT NULL, -- hex
    UNIQUE (account_id, seq)
) STRICT;
CREATE INDEX audit_events_object ON audit_events (account_id, object_id, seq);
