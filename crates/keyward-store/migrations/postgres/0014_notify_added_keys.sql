-- An inserted key changes no key a node has cached: it can only make a
-- hash known that a node remembered as unknown. Its notification says so
-- (`<account_id> <ms> added`), and nodes then drop their negative cache
-- instead of every cached key of the account: a platform issuing a key
-- per new customer no longer sends every hot key of its account back to
-- the store after each issue. Everything else is as in `0002`; a node
-- that predates this reads the tail as an unreadable time and drops the
-- account, as before.
CREATE OR REPLACE FUNCTION keyward_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
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
            || CASE WHEN TG_OP = 'INSERT' AND TG_TABLE_NAME = 'api_keys' THEN ' added' ELSE '' END
    );
    RETURN NULL;
END
$$;
