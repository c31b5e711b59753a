-- Personal data has a lifetime (issue 13): guest erasure and the retention purge.
--
-- Both columns are computed from `request` (STORED generated columns: nothing for the insert and
-- upsert statements to fill; adding them rewrites the table once). Personal data is removed by
-- rewriting `request` without `guestInfo.name`, `guestInfo.email` and with an empty
-- `customContext`; `guestInfo.id` stays, so the guest's records can still be found.
--
-- An UPDATE leaves the old row version in the table file until VACUUM reclaims it (and in the
-- WAL, its archive and backups): see docs/operations.md, "Privacy".

-- erase_guest: `WHERE guest_id = $1 AND has_personal_data`.
ALTER TABLE handoffs ADD COLUMN guest_id text
    GENERATED ALWAYS AS (request -> 'guestInfo' ->> 'id') STORED;
CREATE INDEX handoffs_guest_idx ON handoffs (guest_id);

-- purge_personal_data: `WHERE has_personal_data AND updated_at < $1 AND stage is finished`;
-- partial, so records already purged (the bulk of an old ledger) cost nothing.
ALTER TABLE handoffs ADD COLUMN has_personal_data boolean
    GENERATED ALWAYS AS ((request -> 'guestInfo') ? 'name'
                         OR (request -> 'guestInfo') ? 'email'
                         OR COALESCE(request -> 'customContext', '{}'::jsonb) <> '{}'::jsonb) STORED;
CREATE INDEX handoffs_personal_data_idx ON handoffs (updated_at) WHERE has_personal_data;
