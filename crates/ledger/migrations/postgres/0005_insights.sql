-- The insights page, the CSV export and `handoff report` (issue 15).
--
-- They read handoff summaries of a window, by keyset pages:
--   SELECT id, conversation_id, reason, queue_id, stage, defer_until IS NOT NULL, created_at,
--          updated_at, attempts FROM handoffs
--   WHERE (created_at, id) > ($1, $2) AND created_at < $3 [AND reason = $5]
--   ORDER BY created_at, id LIMIT $4
-- The key serves the keyset order and range; INCLUDE carries the other columns, so a page is an
-- index-only scan once autovacuum has marked the pages all-visible (no heap fetch of the wide rows
-- with their request and history JSON). docs/insights.md shows the plans.
CREATE INDEX handoffs_insights_idx
    ON handoffs (created_at, id) INCLUDE (reason, queue_id, stage, defer_until, updated_at, attempts, conversation_id);

-- Its prefix serves stats (`WHERE created_at >= since`) as the old single-column index did.
DROP INDEX handoffs_created_idx;
