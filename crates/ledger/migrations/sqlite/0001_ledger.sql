-- The handoff ledger, SQLite dialect (one instance; WAL, one writer at a time).
--
-- Times are INTEGER microseconds since the Unix epoch, UTC: they compare and sort correctly in SQL
-- and have the precision of PostgreSQL's timestamptz, so both backends keep the same values.
-- Ids are lower-case hyphenated UUID text, which sorts like the UUID bytes. JSON columns are TEXT.

CREATE TABLE handoffs (
    id              TEXT    NOT NULL PRIMARY KEY,  -- HandoffId
    key             TEXT    NOT NULL,              -- HandoffKey as text: `{conversationId}` or `{conversationId}#{key}`
    conversation_id TEXT    NOT NULL,
    idempotency_key TEXT,
    reason          TEXT    NOT NULL,              -- copy of request.handoffReason, for /handoffs/stats
    request         TEXT    NOT NULL,              -- HandoffRequest::to_json, re-validated on read
    stage           TEXT    NOT NULL CHECK (stage IN ('received', 'deferred', 'context_written',
                                                      'transfer_pending', 'transferred', 'failed')),
    queue_id        TEXT,
    holder          TEXT,
    customer        TEXT,
    answer          TEXT,                          -- StoredAnswer as JSON
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    next_check_at   INTEGER,
    defer_until     INTEGER,
    last_error      TEXT,
    correlation_ids TEXT    NOT NULL DEFAULT '[]', -- JSON array of strings
    history         TEXT    NOT NULL DEFAULT '[]', -- JSON array of {at, stage, note}
    lease_until     INTEGER                        -- NULL: nobody holds it
) STRICT;

-- The latest record of each key. `begin` reads and moves this pointer inside one write
-- transaction, so "latest record per key" changes atomically. Its primary key serves `begin`'s
-- key lookup.
CREATE TABLE handoff_keys (
    key        TEXT NOT NULL PRIMARY KEY,
    handoff_id TEXT REFERENCES handoffs (id)
) STRICT;

-- Analytics events written in the same transaction as the record that produced them.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused
    handoff_id   TEXT    NOT NULL,
    event        TEXT    NOT NULL,                   -- HandoffEvent as JSON
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    due_at       INTEGER NOT NULL,                   -- next delivery, or the end of the current claim
    delivered_at INTEGER,                            -- NULL until delivered
    last_error   TEXT,
    created_at   INTEGER NOT NULL
) STRICT;

-- find_by_conversation: `WHERE conversation_id = ? ORDER BY created_at DESC, id DESC`.
CREATE INDEX handoffs_conversation_idx ON handoffs (conversation_id, created_at DESC);

-- claim_due, deferred branch: `stage = 'deferred' AND next_check_at <= now`.
CREATE INDEX handoffs_stage_next_check_idx ON handoffs (stage, next_check_at);

-- claim_due, crashed-work branch: `stage IN (unfinished) AND lease_until <= now`.
CREATE INDEX handoffs_stage_lease_idx ON handoffs (stage, lease_until);

-- stats: `WHERE created_at >= since GROUP BY reason, queue_id, stage`.
CREATE INDEX handoffs_created_idx ON handoffs (created_at);

-- claim_outbox (`delivered_at IS NULL AND due_at <= now ORDER BY id`) and outbox_backlog
-- (`delivered_at IS NULL`): partial, so delivered rows, the bulk of the table, cost nothing.
CREATE INDEX outbox_pending_idx ON outbox (due_at, id) WHERE delivered_at IS NULL;
