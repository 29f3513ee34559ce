-- The web console's sign-in: server-side sessions and invitations.
-- Both store only SHA-256 hashes of the secrets handed to the browser or
-- the invitee, like every other credential.

CREATE TABLE console_sessions (
    id           TEXT    NOT NULL PRIMARY KEY,
    hash         TEXT    NOT NULL UNIQUE, -- SHA-256 of the cookie's secret, hex
    account_id   TEXT    NOT NULL,
    member_id    TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ip           TEXT,
    user_agent   TEXT,
    -- Removing a member ends their sessions.
    FOREIGN KEY (account_id, member_id) REFERENCES members (account_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
CREATE INDEX console_sessions_member ON console_sessions (account_id, member_id);

-- A member added without a password sets one through a one-time link.
CREATE TABLE invitations (
    id          TEXT    NOT NULL PRIMARY KEY,
    hash        TEXT    NOT NULL UNIQUE, -- SHA-256 of the link's secret, hex
    account_id  TEXT    NOT NULL,
    member_id   TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    FOREIGN KEY (account_id, member_id) REFERENCES members (account_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX invitations_member ON invitations (account_id, member_id);
