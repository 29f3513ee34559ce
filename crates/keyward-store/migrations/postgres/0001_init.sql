-- Keyward's schema for PostgreSQL. Keep it column-for-column in step with
-- ../sqlite/0001_init.sql: one set of queries serves both, so types stay
-- within what sqlx's Any driver decodes (TEXT, BIGINT) — JSON is TEXT here
-- too, and times are BIGINT Unix milliseconds.
--
-- Every table holding tenant data has `account_id`, and references between
-- tenant tables include it (composite foreign keys onto `UNIQUE (account_id,
-- id)`), so the database itself refuses a row pointing into another account.
-- Unqualified names: the tables go to the connection's search_path.

CREATE TABLE accounts (
    id         TEXT   NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

-- Users are people, shared between the accounts they are members of.
CREATE TABLE users (
    id            TEXT   NOT NULL PRIMARY KEY,
    email         TEXT   NOT NULL UNIQUE,
    password_hash TEXT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE members (
    id          TEXT   NOT NULL PRIMARY KEY,
    account_id  TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    user_id     TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT   NOT NULL,
    permissions TEXT   NOT NULL, -- JSON array of account permission names
    created_at  BIGINT NOT NULL,
    UNIQUE (account_id, id),
    UNIQUE (account_id, user_id)
);
CREATE INDEX members_user ON members (user_id);

CREATE TABLE management_tokens (
    id           TEXT   NOT NULL PRIMARY KEY,
    account_id   TEXT   NOT NULL,
    member_id    TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    hash         TEXT   NOT NULL UNIQUE, -- SHA-256 of the token, hex
    hint         TEXT   NOT NULL,
    permissions  TEXT   NOT NULL, -- JSON array of account permission names
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    UNIQUE (account_id, id),
    FOREIGN KEY (account_id, member_id) REFERENCES members (account_id, id) ON DELETE CASCADE
);
CREATE INDEX management_tokens_member ON management_tokens (account_id, member_id, id);

CREATE TABLE workspaces (
    id         TEXT   NOT NULL PRIMARY KEY,
    account_id TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name       TEXT   NOT NULL, -- not unique: names are labels
    created_at BIGINT NOT NULL,
    UNIQUE (account_id, id)
);

CREATE TABLE environments (
    id           TEXT   NOT NULL PRIMARY KEY,
    account_id   TEXT   NOT NULL,
    workspace_id TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    tag          TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (account_id, id),
    UNIQUE (workspace_id, name),
    UNIQUE (workspace_id, tag),
    FOREIGN KEY (account_id, workspace_id) REFERENCES workspaces (account_id, id) ON DELETE CASCADE
);
CREATE INDEX environments_workspace ON environments (account_id, workspace_id);

-- Each account's catalog of the permissions its API keys may carry.
CREATE TABLE permissions (
    account_id  TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        TEXT   NOT NULL,
    description TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, name)
);

CREATE TABLE api_keys (
    id                TEXT   NOT NULL PRIMARY KEY,
    account_id        TEXT   NOT NULL,
    workspace_id      TEXT   NOT NULL,
    environment_id    TEXT   NOT NULL,
    kind              TEXT   NOT NULL,
    name              TEXT   NOT NULL,
    hash              TEXT   NOT NULL UNIQUE, -- SHA-256 of the secret, hex
    hint              TEXT   NOT NULL,
    status            TEXT   NOT NULL,
    permissions       TEXT   NOT NULL, -- JSON array of catalog permission names
    customer_id       TEXT,
    rate_limit_limit  BIGINT, -- both set or both NULL
    rate_limit_window BIGINT,
    allowed_ips       TEXT   NOT NULL, -- JSON array of CIDR strings
    expires_at        BIGINT,
    meta              TEXT   NOT NULL, -- JSON object
    created_at        BIGINT NOT NULL,
    created_by        TEXT,
    updated_at        BIGINT NOT NULL,
    last_used_at      BIGINT,
    last_used_ip      TEXT,
    UNIQUE (account_id, workspace_id, name),
    FOREIGN KEY (account_id, workspace_id) REFERENCES workspaces (account_id, id) ON DELETE CASCADE,
    FOREIGN KEY (account_id, environment_id) REFERENCES environments (account_id, id) ON DELETE CASCADE
);
CREATE INDEX api_keys_account ON api_keys (account_id, id);
CREATE INDEX api_keys_workspace ON api_keys (account_id, workspace_id, id);
CREATE INDEX api_keys_environment ON api_keys (account_id, environment_id);

CREATE TABLE ip_allowlist (
    id          TEXT   NOT NULL PRIMARY KEY,
    account_id  TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    cidr        TEXT   NOT NULL,
    description TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (account_id, id)
);

CREATE TABLE ip_allowlist_grants (
    account_id   TEXT NOT NULL,
    entry_id     TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    PRIMARY KEY (entry_id, workspace_id),
    FOREIGN KEY (account_id, entry_id) REFERENCES ip_allowlist (account_id, id) ON DELETE CASCADE,
    FOREIGN KEY (account_id, workspace_id) REFERENCES workspaces (account_id, id) ON DELETE CASCADE
);
CREATE INDEX ip_allowlist_grants_workspace ON ip_allowlist_grants (account_id, workspace_id);

CREATE TABLE idempotency_keys (
    account_id      TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key             TEXT   NOT NULL,
    fingerprint     TEXT   NOT NULL,
    status          TEXT   NOT NULL, -- 'pending' or 'done'
    response_status BIGINT,
    response_body   TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);
