-- unisync's store on PostgreSQL, version 2: every process that puts a contact in a ready
-- queue (a daemon accepting a PUT, the CLI replaying a dead letter or importing, a retry
-- falling due later) tells the daemons at once. The notification goes on channel
-- `unisync_queue.SCHEMA` with the connection's name as payload, when the transaction
-- commits; the connection's leader, which LISTENs on its node session, looks at its queue.
-- A coalesced edit of a contact already waiting changes no queue place and notifies nobody.

CREATE FUNCTION unisync_queue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.not_before IS NOT NULL
       AND (TG_OP = 'INSERT' OR OLD.not_before IS DISTINCT FROM NEW.not_before) THEN
        PERFORM pg_notify('unisync_queue.' || TG_TABLE_SCHEMA, coalesce(NEW.connection, ''));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER contacts_queue_notify
    AFTER INSERT OR UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION unisync_queue_notify();
