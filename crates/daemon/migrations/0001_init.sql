-- unisync's store on PostgreSQL, version 1. Applied once, in a transaction, under an advisory
-- lock (see crates/daemon/src/store/postgres.rs). Times are ms since the Unix epoch, by the
-- clock of the node that wrote them.

-- One row per unified contact: its whole entry (record, base, sync state) as JSON, and the
-- columns the queue is read by, kept equal to the entry by the engine.
CREATE TABLE contacts (
    id           text PRIMARY KEY,
    entry        jsonb NOT NULL,
    -- The connection the contact's edits go to (the entry's sync.connection).
    connection   text,
    -- Set while the contact waits in its connection's ready queue: when it may go, and its
    -- place among contacts that may go at the same time.
    not_before   bigint,
    queue_seq    bigint,
    -- Set while an edit of the contact is in flight: the node pushing it, and until when
    -- its lease holds; after that any node may claim the edit again.
    lease_owner  text,
    leased_until bigint,
    updated_ms   bigint NOT NULL,
    CHECK ((not_before IS NULL) = (queue_seq IS NULL)),
    CHECK ((lease_owner IS NULL) = (leased_until IS NULL))
);

-- The ready queue: each connection's contacts by when they may go, then by when queued.
CREATE INDEX contacts_ready ON contacts (connection, not_before, queue_seq)
    WHERE not_before IS NOT NULL;
-- Leases, for claiming the edits of nodes that stopped.
CREATE INDEX contacts_leased ON contacts (connection, leased_until)
    WHERE lease_owner IS NOT NULL;
-- The clock's floor at start (the latest time any node wrote).
CREATE INDEX contacts_updated ON contacts (updated_ms);

-- A CRM record (connection, its id there) is one unified contact.
CREATE TABLE source_index (
    connection text NOT NULL,
    source_id  text NOT NULL,
    contact_id text NOT NULL,
    PRIMARY KEY (connection, source_id)
);

CREATE TABLE dead_letters (
    id         text PRIMARY KEY,
    contact_id text NOT NULL,
    connection text NOT NULL,
    letter     jsonb NOT NULL
);

CREATE TABLE customers (
    id       text PRIMARY KEY,
    customer jsonb NOT NULL
);

-- Edit ids of backfill files already accepted.
CREATE TABLE seen_edits (
    edit_id text PRIMARY KEY
);

-- Values the daemon keeps for itself (rotated credentials).
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Acceptance order, queue places and dead letter ids, store-wide.
CREATE SEQUENCE store_seq;
