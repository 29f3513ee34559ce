-- Request logs: one row per verification outcome, written in batches by the
-- server (never one write per request). Keep in step with
-- ../sqlite/0002_request_logs.sql.
--
-- No foreign keys on purpose: logs outlive the keys, workspaces and
-- environments they mention (a deleted key's history stays queryable), and a
-- batch must never fail because one row names an object deleted since.
-- `account_id` scopes every query like every other tenant table.
CREATE TABLE request_logs (
    id           TEXT   NOT NULL PRIMARY KEY, -- `log_<ulid>`: sorts by time
    account_id   TEXT   NOT NULL,
    at           BIGINT NOT NULL,
    key_id       TEXT,             -- NULL when the key was not found
    workspace_id TEXT,
    environment  TEXT,             -- the key's environment, else the one asked for
    client_ip    TEXT,
    permissions  TEXT   NOT NULL, -- JSON array of the permissions asked for
    code         TEXT   NOT NULL, -- the verification code
    latency_us   BIGINT NOT NULL
);
CREATE INDEX request_logs_account ON request_logs (account_id, id);
CREATE INDEX request_logs_key ON request_logs (account_id, key_id, id);
CREATE INDEX request_logs_workspace ON request_logs (account_id, workspace_id, id);
-- The retention purge deletes by time across accounts.
CREATE INDEX request_logs_at ON request_logs (at);

-- Change notifications for the verification caches of every node sharing
-- this database: any committed change to a row that verification or
-- management-token authentication reads sends NOTIFY on `keyward_changes`
-- with the payload `<account_id> <commit-ish time in Unix ms>`, and each
-- node drops what it cached for that account. NOTIFY is delivered at commit
-- and identical payloads within one transaction are sent once, so a
-- workspace delete cascading over thousands of keys is one notification
-- (`now()` is the transaction's start, constant within it). The time lets
-- nodes measure the invalidation lag.
--
-- Last-used bookkeeping (written every second by every node) is not a
-- change: an update touching only those columns sends nothing.
CREATE FUNCTION keyward_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := to_jsonb(OLD);
    ELSE
        changed := to_jsonb(NEW);
    END IF;
    IF TG_OP = 'UPDATE' AND
       (to_jsonb(OLD) - 'last_used_at' - 'last_used_ip' - 'previous_last_used_at')
       = (changed - 'last_used_at' - 'last_used_ip' - 'previous_last_used_at') THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify(
        'keyward_changes',
        (changed ->> 'account_id') || ' ' || floor(extract(epoch FROM now()) * 1000)::bigint
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION keyward_notify_change();
CREATE TRIGGER environments_notify AFTER UPDATE OR DELETE ON environments
    FOR EACH ROW EXECUTE FUNCTION keyward_notify_change();
CREATE TRIGGER workspaces_notify AFTER UPDATE OR DELETE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION keyward_notify_change();
CREATE TRIGGER ip_allowlist_notify AFTER INSERT OR UPDATE OR DELETE ON ip_allowlist
    FOR EACH ROW EXECUTE FUNCTION keyward_notify_change();
CREATE TRIGGER ip_allowlist_grants_notify AFTER INSERT OR UPDATE OR DELETE ON ip_allowlist_grants
    FOR EACH ROW EXECUTE FUNCTION keyward_notify_change();
CREATE TRIGGER members_notify AFTER UPDATE OR DELETE ON members
    FOR EACH ROW EXECUTE FUNCTION keyward_notify_change();
CREATE TRIGGER management_tokens_notify AFTER UPDATE OR DELETE ON management_tokens
    FOR EACH ROW EXECUTE FUNCTION keyward_notify_change();
