-- Usage credits. Keep in step with ../postgres/0012_key_credits.sql.
--
-- A key with a row here is metered: each valid verification takes its cost
-- from `remaining` in one conditional UPDATE, so that concurrent draws on
-- any number of nodes never take more than there is. The balance lives
-- apart from `api_keys` on purpose: every draw writes it, and a write to
-- `api_keys` is a change that every node's verification cache drops (the
-- `keyward_changes` triggers), which a draw is not.
--
-- Refills are lazy: a draw finding `refilled_at` before the current
-- period's start (computed by the caller from `refill_interval` and
-- `refill_day`) first sets `remaining` to `refill_amount`.
CREATE TABLE key_credits (
    key_id          TEXT    NOT NULL PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    account_id      TEXT    NOT NULL,
    remaining       INTEGER  NOT NULL CHECK (remaining >= 0),
    refill_interval TEXT,             -- 'daily', 'monthly', or NULL: never refilled
    refill_amount   INTEGER,
    refill_day      INTEGER,           -- monthly only: 1–31
    refilled_at     INTEGER  NOT NULL  -- the last refill, or when the balance was set
);
