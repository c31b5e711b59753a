-- Pre-aggregated insights (issue 15): the page, the export's totals and `handoff report` on a
-- year of handoffs without folding every one of them. See the SQLite migration of the same number
-- for the design; this is the same schema in PostgreSQL's types.
--
-- 1. Every record carries its outcome (stable name) and time to queue (whole ms), decided by the
--    domain whenever the ledger writes the record; older rows are filled in at connect.
ALTER TABLE handoffs ADD COLUMN outcome text;
ALTER TABLE handoffs ADD COLUMN to_queue_ms bigint;

-- 2. Counts of finished handoffs per UTC day of creation × reason × queue × outcome, each record
--    counted once (`rolled_up`, set in the same transaction). Instances roll up disjoint batches
--    (`FOR UPDATE SKIP LOCKED`); a read takes one REPEATABLE READ snapshot of the counts and of
--    the records not rolled up yet, so a batch committed by another instance is seen either in the
--    counts or in the records, never in both.
ALTER TABLE handoffs ADD COLUMN rolled_up boolean NOT NULL DEFAULT false;

CREATE TABLE insights_rollup (
    day      bigint NOT NULL,  -- UTC day of created_at: floor(epoch seconds / 86 400)
    reason   text   NOT NULL,
    queue_id text   NOT NULL,  -- '' when no queue was chosen
    outcome  text   NOT NULL,
    handoffs bigint NOT NULL CHECK (handoffs >= 0),
    PRIMARY KEY (day, reason, queue_id, outcome)
);

-- The records still to roll up, and the read of those in a window.
CREATE INDEX handoffs_unrolled_idx ON handoffs (created_at) WHERE NOT rolled_up;

-- Should a counted record's outcome or queue ever change (no transition does that today), it
-- leaves its row and is counted again by the next roll-up.
-- (The queue comparison is in the function body, not in the trigger's WHEN: a column a trigger
-- definition names cannot change its type, and migration 0007 turns queue_id into text. Every save
-- sets `outcome`, so `UPDATE OF outcome` sees queue changes too.)
CREATE FUNCTION handoffs_unroll() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.outcome IS DISTINCT FROM OLD.outcome OR NEW.queue_id IS DISTINCT FROM OLD.queue_id THEN
        UPDATE insights_rollup SET handoffs = handoffs - 1
        WHERE day = floor(extract(epoch FROM OLD.created_at) / 86400)::bigint AND reason = OLD.reason
          AND queue_id = COALESCE(OLD.queue_id::text, '') AND outcome = OLD.outcome;
        NEW.rolled_up := false;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER handoffs_unroll BEFORE UPDATE OF outcome ON handoffs
FOR EACH ROW WHEN (OLD.rolled_up)
EXECUTE FUNCTION handoffs_unroll();

-- 3. The covering index of 0005 also carries the two new columns.
DROP INDEX handoffs_insights_idx;
CREATE INDEX handoffs_insights_idx
    ON handoffs (created_at, id)
    INCLUDE (reason, queue_id, stage, defer_until, updated_at, attempts, conversation_id, outcome, to_queue_ms);
