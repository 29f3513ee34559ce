-- Notifications of key rows say what changed, so that nodes drop no more
-- than that (PostgreSQL only: SQLite serves one node and has no feed):
--
-- - an inserted key (`<account_id> <ms> added`) changes no key a node has
--   cached; it can only make a hash known that a node remembered as
--   unknown, so nodes drop their negative cache;
-- - an updated or deleted key row (`<account_id> <ms> key <key_id>`)
--   changes that key only, so nodes drop what they cached for it.
--
-- Every other table's notifications stay `<account_id> <ms>`, and nodes
-- drop the account. A platform issuing, updating or disabling its
-- customers' keys all day no longer sends every hot key of its account
-- back to the store after each call. Identical payloads within one
-- transaction are still sent once; a bulk change of many keys sends one
-- per key. A node that predates this reads the tail as an unreadable time
-- and drops the account, as before.
CREATE OR REPLACE FUNCTION keyward_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed jsonb;
    scope text := '';
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
    IF TG_TABLE_NAME = 'api_keys' THEN
        IF TG_OP = 'INSERT' THEN
            scope := ' added';
        ELSE
            scope := ' key ' || (changed ->> 'id');
        END IF;
    END IF;
    PERFORM pg_notify(
        'keyward_changes',
        (changed ->> 'account_id') || ' ' || floor(extract(epoch FROM now()) * 1000)::bigint || scope
    );
    RETURN NULL;
END
$$;
