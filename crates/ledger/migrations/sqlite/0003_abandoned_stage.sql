-- 0003: the terminal stage `abandoned` (a handoff the worker finished without a transfer because
-- nobody waited for it any more).
--
-- SQLite cannot alter a CHECK constraint. The migration's hook (`allow_new_stages` in
-- `src/sqlite/schema.rs`) widens the `stage` CHECK of `handoffs` to accept 'abandoned' (and
-- 'advised', added by another change) by editing the table's stored definition, SQLite's documented
-- procedure for loosening a constraint: no row is rewritten. Nothing else changes here.

