-- Stage `advised` (issue 12): an advisory handoff (`?mode=advise`) ends in its own stage instead
-- of `failed`. Its confirmation (did the conversation reach a queue after an advice to transfer)
-- is kept in the `answer` document; `claim_due` takes advised records whose `next_check_at` is due
-- (the confirmation reads), served by `handoffs_stage_next_check_idx`.
--
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt (SQLite's documented
-- "generalized ALTER TABLE" procedure), and `handoff_keys` with it, so that the foreign key points
-- at the new table. Advisory records stored before (`failed` with an `advised` answer) move to
-- `advised` on the way. Runs inside the migration's transaction.

CREATE TABLE handoffs_new (
    id              TEXT    NOT NULL PRIMARY KEY,  -- HandoffId
    key             TEXT    NOT NULL,              -- HandoffKey as text: `{conversationId}` or `{conversationId}#{key}`
    conversation_id TEXT    NOT NULL,
    idempotency_key TEXT,
    reason          TEXT    NOT NULL,              -- copy of request.handoffReason, for /handoffs/stats
    request         TEXT    NOT NULL,              -- HandoffRequest::to_json, re-validated on read
    stage           TEXT    NOT NULL CHECK (stage IN ('received', 'deferred', 'context_written',
                                                      'transfer_pending', 'transferred', 'advised', 'failed')),
    queue_id        TEXT,
    holder          TEXT,
    customer        TEXT,
    answer          TEXT,                          -- StoredAnswer as JSON (an advice: with its confirmation)
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    next_check_at   INTEGER,                       -- deferred: next capacity check; advised: next confirmation read
    defer_until     INTEGER,
    last_error      TEXT,
    correlation_ids TEXT    NOT NULL DEFAULT '[]', -- JSON array of strings
    history         TEXT    NOT NULL DEFAULT '[]', -- JSON array of {at, stage, note}
    lease_until     INTEGER                        -- NULL: nobody holds it
) STRICT;

INSERT INTO handoffs_new (id, key, conversation_id, idempotency_key, reason, request, stage, queue_id, holder,
    customer, answer, attempts, created_at, updated_at, next_check_at, defer_until, last_error, correlation_ids,
    history, lease_until)
SELECT id, key, conversation_id, idempotency_key, reason, request,
    CASE WHEN stage = 'failed' AND json_extract(answer, '$.kind') = 'advised' THEN 'advised' ELSE stage END,
    queue_id, holder, customer, answer, attempts, created_at, updated_at, next_check_at, defer_until, last_error,
    correlation_ids, history, lease_until
FROM handoffs;

CREATE TABLE handoff_keys_new (
    key        TEXT NOT NULL PRIMARY KEY,
    handoff_id TEXT REFERENCES handoffs_new (id)
) STRICT;

INSERT INTO handoff_keys_new (key, handoff_id) SELECT key, handoff_id FROM handoff_keys;

DROP TABLE handoff_keys;
DROP TABLE handoffs;
-- Renaming also rewrites the foreign key of handoff_keys_new to name `handoffs`.
ALTER TABLE handoffs_new RENAME TO handoffs;
ALTER TABLE handoff_keys_new RENAME TO handoff_keys;

-- The indexes of 0001, dropped with the old table.
CREATE INDEX handoffs_conversation_idx ON handoffs (conversation_id, created_at DESC);
CREATE INDEX handoffs_stage_next_check_idx ON handoffs (stage, next_check_at);
CREATE INDEX handoffs_stage_lease_idx ON handoffs (stage, lease_until);
CREATE INDEX handoffs_created_idx ON handoffs (created_at);
