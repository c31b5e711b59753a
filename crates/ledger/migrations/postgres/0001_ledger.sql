-- The handoff ledger, PostgreSQL dialect (several instances share it).
--
-- Times are timestamptz (UTC, microsecond precision). Ids are uuid, JSON is jsonb.

CREATE TABLE handoffs (
    id              uuid        NOT NULL PRIMARY KEY,  -- HandoffId
    key             text        NOT NULL,              -- HandoffKey as text: `{conversationId}` or `{conversationId}#{key}`
    conversation_id uuid        NOT NULL,
    idempotency_key text,
    reason          text        NOT NULL,              -- copy of request.handoffReason, for /handoffs/stats
    request         jsonb       NOT NULL,              -- HandoffRequest::to_json, re-validated on read
    stage           text        NOT NULL CHECK (stage IN ('received', 'deferred', 'context_written',
                                                          'transfer_pending', 'transferred', 'failed')),
    queue_id        uuid,
    holder          uuid,
    customer        uuid,
    answer          jsonb,                             -- StoredAnswer
    attempts        bigint      NOT NULL CHECK (attempts >= 0),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    next_check_at   timestamptz,
    defer_until     timestamptz,
    last_error      text,
    correlation_ids jsonb       NOT NULL DEFAULT '[]', -- array of strings
    history         jsonb       NOT NULL DEFAULT '[]', -- array of {at, stage, note}
    lease_until     timestamptz                        -- NULL: nobody holds it
);

-- The latest record of each key. `begin` inserts the key row if absent, locks it with
-- `SELECT … FOR UPDATE` and moves the pointer in the same transaction, so concurrent callers of
-- one key queue on that row lock and exactly one of them creates or resumes the record.
-- `handoff_id` is NULL only inside the transaction that creates the key. Its primary key serves
-- `begin`'s key lookup.
CREATE TABLE handoff_keys (
    key        text NOT NULL PRIMARY KEY,
    handoff_id uuid REFERENCES handoffs (id)
);

-- Analytics events written in the same transaction as the record that produced them.
CREATE TABLE outbox (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handoff_id   uuid        NOT NULL,
    event        jsonb       NOT NULL,                 -- HandoffEvent
    attempts     bigint      NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    due_at       timestamptz NOT NULL,                 -- next delivery, or the end of the current claim
    delivered_at timestamptz,                          -- NULL until delivered
    last_error   text,
    created_at   timestamptz NOT NULL
);

-- find_by_conversation: `WHERE conversation_id = $1 ORDER BY created_at DESC, id DESC`.
CREATE INDEX handoffs_conversation_idx ON handoffs (conversation_id, created_at DESC);

-- claim_due, deferred branch: `stage = 'deferred' AND next_check_at <= now … FOR UPDATE SKIP LOCKED`.
CREATE INDEX handoffs_stage_next_check_idx ON handoffs (stage, next_check_at);

-- claim_due, crashed-work branch: `stage IN (unfinished) AND lease_until <= now … FOR UPDATE SKIP LOCKED`.
CREATE INDEX handoffs_stage_lease_idx ON handoffs (stage, lease_until);

-- stats: `WHERE created_at >= since GROUP BY reason, queue_id, stage`.
CREATE INDEX handoffs_created_idx ON handoffs (created_at);

-- claim_outbox (`delivered_at IS NULL AND due_at <= now ORDER BY id … SKIP LOCKED`) and
-- outbox_backlog (`delivered_at IS NULL`): partial, so delivered rows, the bulk of the table,
-- cost nothing.
CREATE INDEX outbox_pending_idx ON outbox (due_at, id) WHERE delivered_at IS NULL;
