-- Key lifecycle: rotation with a grace period, publishable keys, integrations.

-- The secret a rotation replaced, accepted until previous_expires_at so that
-- clients can move to the new one; its last use is tracked on its own so a
-- user can see when nothing uses it any more.
ALTER TABLE api_keys ADD COLUMN previous_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_hint TEXT;
ALTER TABLE api_keys ADD COLUMN previous_expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN previous_last_used_at INTEGER;
CREATE UNIQUE INDEX api_keys_previous_hash ON api_keys (previous_hash);

-- Publishable keys only: the origins that may use the key (JSON array), and
-- the key itself, which is public by design (embedded in web pages) and so,
-- unlike every other kind, kept in the clear to render snippets.
ALTER TABLE api_keys ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN public_value TEXT;

-- A named consumer of a workspace's credentials (seeds 000, 002).
CREATE TABLE integrations (
    id           TEXT    NOT NULL PRIMARY KEY,
    account_id   TEXT    NOT NULL,
    workspace_id TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    -- NULL once a forced delete removed the key it used.
    key_id       TEXT    REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (account_id, id),
    UNIQUE (account_id, workspace_id, name),
    FOREIGN KEY (account_id, workspace_id) REFERENCES workspaces (account_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX integrations_workspace ON integrations (account_id, workspace_id, id);
CREATE INDEX integrations_key ON integrations (key_id);
