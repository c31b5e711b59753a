-- Pre-aggregated insights (issue 15): the page, the export's totals and `handoff report` on a
-- year of handoffs without folding every one of them.
--
-- 1. Every record carries its outcome and time to queue, decided by the domain
--    (`insights::Outcome::of_record`) whenever the ledger writes the record, so no read decodes an
--    answer again. `outcome` is the outcome's stable name (`transferred`, `failed:not_found`, …);
--    `to_queue_ms` the whole milliseconds from receipt (or advice) to the queue, NULL unless it
--    reached one. Rows written before this migration are filled in by the ledger at connect
--    (`backfill_outcomes`), before it serves anything.
ALTER TABLE handoffs ADD COLUMN outcome TEXT;
ALTER TABLE handoffs ADD COLUMN to_queue_ms INTEGER;

-- 2. Counts of finished handoffs (any outcome but `in_progress`, which is the only one that can
--    still change) per UTC day of creation × reason × queue × outcome. A record is counted once:
--    `rolled_up` marks it, in the same transaction that adds it to its row here. The hot path
--    never writes this table: records are rolled up in batches by the insights read itself
--    (`SqlLedger::roll_up_insights`). A read adds the records not rolled up yet (few: the ones in
--    progress and the ones finished since the last read) from their rows, so the figures are
--    exact whatever the state of the roll-up.
ALTER TABLE handoffs ADD COLUMN rolled_up INTEGER NOT NULL DEFAULT 0 CHECK (rolled_up IN (0, 1));

-- (Dropped first: should this migration run again over a rebuilt `handoffs`, every record is
-- counted afresh.)
DROP TABLE IF EXISTS insights_rollup;
CREATE TABLE insights_rollup (
    day      INTEGER NOT NULL,  -- UTC day of created_at: created_at / 86 400 000 000 (µs)
    reason   TEXT    NOT NULL,
    queue_id TEXT    NOT NULL,  -- '' when no queue was chosen
    outcome  TEXT    NOT NULL,
    handoffs INTEGER NOT NULL CHECK (handoffs >= 0),
    PRIMARY KEY (day, reason, queue_id, outcome)
) STRICT, WITHOUT ROWID;

-- The records still to roll up, and the read of those in a window:
--   WHERE rolled_up = 0 AND created_at >= ? AND created_at < ?
-- Partial, so the rolled-up bulk costs nothing; keyed by a column no save changes, so a save does
-- not touch it.
CREATE INDEX handoffs_unrolled_idx ON handoffs (created_at) WHERE rolled_up = 0;

-- Should a counted record's outcome or queue ever change (no transition does that today), it
-- leaves its row here and is counted again by the next roll-up.
CREATE TRIGGER handoffs_unroll AFTER UPDATE OF outcome, queue_id ON handoffs
WHEN OLD.rolled_up = 1 AND (NEW.outcome IS NOT OLD.outcome OR NEW.queue_id IS NOT OLD.queue_id)
BEGIN
    UPDATE insights_rollup SET handoffs = handoffs - 1
    WHERE day = OLD.created_at / 86400000000 AND reason = OLD.reason
      AND queue_id = COALESCE(OLD.queue_id, '') AND outcome = OLD.outcome;
    UPDATE handoffs SET rolled_up = 0 WHERE id = NEW.id;
END;

-- 3. The covering index of 0005 also carries the two new columns: the edge hours of a window and
--    the times to queue of the percentiles are read from it alone.
DROP INDEX handoffs_insights_idx;
CREATE INDEX handoffs_insights_idx
    ON handoffs (created_at, id, reason, queue_id, stage, defer_until, updated_at, attempts, conversation_id,
                 outcome, to_queue_ms);
