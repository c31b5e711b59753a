-- The platform's ids become opaque text (issue 14, ADR 0004 §1).
--
-- Conversation, queue and participant ids are the contact-center platform's, not ours: UUIDs for
-- Genesys, 24-character hexadecimal ids for Sunshine, 1-64 URL-safe characters in general. The
-- columns that hold them become text. `uuid::text` is the lower-case hyphenated form, exactly what
-- the service wrote and reads back, so every existing row keeps its value (and the `key` column,
-- `{conversationId}[#{key}]`, already text, stays consistent with `conversation_id`).
--
-- One statement, so PostgreSQL rewrites `handoffs` once (not once per column) and rebuilds the
-- indexes on these columns (`handoffs_conversation_idx`, `handoffs_insights_idx`) after it. The
-- rewrite holds an ACCESS EXCLUSIVE lock on `handoffs` for its duration: docs/operations.md
-- ("Upgrading to migration 0007") says how long to expect and how to plan for it.
--
-- Our own ids stay uuid: `handoffs.id`, `handoff_keys.handoff_id`, `outbox.handoff_id`,
-- `handoffs.lease_owner`, `ledger_instances.id`. The outbox keeps its events as JSON, where ids
-- were always strings.
ALTER TABLE handoffs
    ALTER COLUMN conversation_id TYPE text USING conversation_id::text,
    ALTER COLUMN queue_id TYPE text USING queue_id::text,
    ALTER COLUMN holder TYPE text USING holder::text,
    ALTER COLUMN customer TYPE text USING customer::text;
