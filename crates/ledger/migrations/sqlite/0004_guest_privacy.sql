-- Personal data has a lifetime (issue 13): guest erasure and the retention purge.
--
-- Both columns are computed from `request` (VIRTUAL: nothing stored, nothing for the insert and
-- upsert statements to fill), and indexed for the two statements that use them. Personal data is
-- removed by rewriting `request` without `guestInfo.name`, `guestInfo.email` and with an empty
-- `customContext`; `guestInfo.id` stays, so the guest's records can still be found.

-- erase_guest: `WHERE guest_id = ? AND has_personal_data`.
ALTER TABLE handoffs ADD COLUMN guest_id TEXT
    GENERATED ALWAYS AS (json_extract(request, '$.guestInfo.id')) VIRTUAL;
CREATE INDEX handoffs_guest_idx ON handoffs (guest_id);

-- purge_personal_data: `WHERE has_personal_data AND updated_at < ? AND stage is finished`;
-- partial, so records already purged (the bulk of an old ledger) cost nothing.
ALTER TABLE handoffs ADD COLUMN has_personal_data INTEGER
    GENERATED ALWAYS AS (json_extract(request, '$.guestInfo.name') IS NOT NULL
                         OR json_extract(request, '$.guestInfo.email') IS NOT NULL
                         OR json_extract(request, '$.customContext') <> '{}') VIRTUAL;
CREATE INDEX handoffs_personal_data_idx ON handoffs (updated_at) WHERE has_personal_data;
