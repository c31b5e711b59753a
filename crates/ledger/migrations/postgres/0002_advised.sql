-- Stage `advised` (issue 12): an advisory handoff (`?mode=advise`) ends in its own stage instead
-- of `failed`. Its confirmation (did the conversation reach a queue after an advice to transfer)
-- is kept in the `answer` document; `claim_due` takes advised records whose `next_check_at` is due
-- (the confirmation reads), served by `handoffs_stage_next_check_idx`.

ALTER TABLE handoffs DROP CONSTRAINT handoffs_stage_check;
ALTER TABLE handoffs ADD CONSTRAINT handoffs_stage_check CHECK (stage IN ('received', 'deferred', 'context_written',
    'transfer_pending', 'transferred', 'advised', 'failed'));

-- Advisory records stored before this migration: `failed` with an `advised` answer.
UPDATE handoffs SET stage = 'advised' WHERE stage = 'failed' AND answer ->> 'kind' = 'advised';
