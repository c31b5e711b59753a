-- 0003: instance heartbeats (restart recovery) and the terminal stage `abandoned`.

-- The stage `abandoned`: a handoff the worker finished without a transfer because nobody waited
-- for it any more. `advised` (added by another change) is allowed too, so either migration may run
-- first; the constraint is the one 0001 created for the column.
ALTER TABLE handoffs DROP CONSTRAINT IF EXISTS handoffs_stage_check;
ALTER TABLE handoffs ADD CONSTRAINT handoffs_stage_check CHECK (stage IN ('received', 'deferred',
    'context_written', 'transfer_pending', 'transferred', 'failed', 'advised', 'abandoned'));

-- Every running instance registers itself at connect and beats every `HANDOFF_HEARTBEAT_SECS`
-- (`heartbeat_at = now()`, the database's clock, so hosts' clocks never matter), on a connection
-- of its own that also holds the session advisory lock `lock_key`. An instance is alive while
-- `heartbeat_at + stale_after > now()` (each instance states its own `stale_after`, three beats,
-- so instances with different settings agree) AND its advisory lock is held. The lock goes the
-- moment the server sees the connection close, so a process killed with SIGKILL is seen gone at
-- once; the heartbeat catches a process that hangs with its connection open. A clean shutdown
-- deletes the row.
CREATE TABLE ledger_instances (
    id           uuid        NOT NULL PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    stale_after  interval    NOT NULL,
    lock_key     bigint      NOT NULL CHECK (lock_key >= 0)
);

-- Who holds a record's lease: the instance whose connection last set `lease_until` (the trigger
-- below fills it from the session setting `handoff.instance_id`, which every connection of an
-- instance's pool sets). NULL when nobody holds it, or when the writer did not say (then the
-- lease lapses by its time only).
ALTER TABLE handoffs ADD COLUMN lease_owner uuid;

CREATE FUNCTION handoff_set_lease_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.lease_until IS NULL THEN
        NEW.lease_owner := NULL;
    ELSE
        NEW.lease_owner := nullif(current_setting('handoff.instance_id', true), '')::uuid;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER handoffs_lease_owner BEFORE INSERT OR UPDATE ON handoffs
    FOR EACH ROW EXECUTE FUNCTION handoff_set_lease_owner();

-- Whether a lease's holder is gone: it named an instance, and that instance has no fresh heartbeat
-- or no longer holds its advisory lock (it was killed, lost the database, hangs, or shut down).
-- `begin` and `claim_due` treat such a lease as lapsed, whatever its `lease_until`. A bigint
-- advisory key k >= 0 shows in pg_locks as classid = k >> 32, objid = k & 0xffffffff.
CREATE FUNCTION handoff_lease_orphaned(owner uuid) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT owner IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM ledger_instances i
        WHERE i.id = owner AND i.heartbeat_at + i.stale_after > now()
          AND EXISTS (
              SELECT 1 FROM pg_locks l
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND ((l.classid::bigint << 32) | l.objid::bigint) = i.lock_key))
$$;

-- claim_due, released-after-a-503 branch: `stage IN (unfinished) AND lease_until IS NULL AND
-- next_check_at <= now` is served by handoffs_stage_next_check_idx (stage, next_check_at).
-- close: `lease_owner = me AND lease_until > now`.
CREATE INDEX handoffs_lease_owner_idx ON handoffs (lease_owner) WHERE lease_owner IS NOT NULL;
