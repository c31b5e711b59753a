-- The insights page, the CSV export and `handoff report` (issue 15).
--
-- They read handoff summaries of a window, by keyset pages:
--   SELECT id, conversation_id, reason, queue_id, stage, defer_until IS NOT NULL, created_at,
--          updated_at, attempts FROM handoffs
--   WHERE (created_at, id) > (?, ?) AND created_at < ? [AND reason = ?]
--   ORDER BY created_at, id LIMIT ?
-- This index holds every column of that query, so a page is a range scan of the index alone
-- (no lookup of the wide rows with their request and history JSON); the reason filter is applied
-- inside the index. docs/insights.md shows the plans.
CREATE INDEX handoffs_insights_idx
    ON handoffs (created_at, id, reason, queue_id, stage, defer_until, updated_at, attempts, conversation_id);

-- Its prefix serves stats (`WHERE created_at >= since`) as the old single-column index did.
DROP INDEX handoffs_created_idx;
