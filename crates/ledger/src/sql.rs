//! The SQL text, written once where SQLite and PostgreSQL agree and split where they do not.
//!
//! Both dialects take `$n` placeholders (sqlx binds SQLite's `$n` by number), `ON CONFLICT … DO
//! UPDATE` with `excluded`, and `RETURNING`. They differ in locking: PostgreSQL claims rows with
//! `FOR UPDATE SKIP LOCKED` so instances never wait on each other, SQLite has one writer and runs
//! every write inside `BEGIN IMMEDIATE`, so a plain subquery is already exclusive.

/// Every `handoffs` column read back into a record, in [`crate::codec::RecordColumns`] order,
/// then `lease_until`.
macro_rules! record_columns {
    () => {
        "id, key, conversation_id, idempotency_key, reason, request, stage, queue_id, holder, customer, answer, \
         attempts, created_at, updated_at, next_check_at, defer_until, last_error, correlation_ids, history, \
         lease_until"
    };
}

/// The stages `claim_due` treats as unfinished work (a crashed holder if their lease expired).
macro_rules! unfinished {
    () => {
        "('received', 'context_written', 'transfer_pending')"
    };
}

/// The stages whose records still need their personal data (the retention purge leaves them
/// alone): everything that is not finished. Written as the unfinished list so a new terminal stage
/// is purged without a change here.
macro_rules! keeps_personal_data {
    () => {
        "('received', 'deferred', 'context_written', 'transfer_pending')"
    };
}

/// Inserts a record ($1..$19 in column order, $20 its lease, $21 and $22 its outcome and time to
/// queue in ms, decided by the domain: `codec::RecordColumns`) or, for an existing id, replaces
/// every column that can change and sets the lease to $20 — only while the stored `attempts` still
/// equal the caller's (the fence: a record resumed or claimed by someone else since is not
/// overwritten, and no row is affected). The columns fixed at creation (key, conversation,
/// idempotency key, reason, request, created_at) are left alone, so the indexes on them are not
/// rewritten by every save.
pub(crate) const UPSERT_RECORD: &str =
    "INSERT INTO handoffs (id, key, conversation_id, idempotency_key, reason, request, stage, queue_id, holder, \
     customer, answer, attempts, created_at, updated_at, next_check_at, defer_until, last_error, correlation_ids, \
     history, lease_until, outcome, to_queue_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22) \
     ON CONFLICT (id) DO UPDATE SET \
     stage = excluded.stage, queue_id = excluded.queue_id, \
     holder = excluded.holder, customer = excluded.customer, answer = excluded.answer, attempts = excluded.attempts, \
     updated_at = excluded.updated_at, next_check_at = excluded.next_check_at, \
     defer_until = excluded.defer_until, last_error = excluded.last_error, \
     correlation_ids = excluded.correlation_ids, history = excluded.history, \
     lease_until = excluded.lease_until, outcome = excluded.outcome, to_queue_ms = excluded.to_queue_ms \
     WHERE handoffs.attempts = excluded.attempts";

/// PostgreSQL: `begin` for a key seen for the first time, in one statement: claims the key for
/// the new record ($1..$22 as in [`UPSERT_RECORD`], $23 the key) and inserts the record only if
/// the key was new. No row is inserted when the key exists (or another instance is claiming it
/// right now: the insert waits for that one to commit, then does nothing); the caller then takes
/// the locking path. The key's foreign key is checked at the end of the statement, when the record
/// exists.
pub(crate) const PG_BEGIN_NEW_KEY: &str = "WITH k AS (\
       INSERT INTO handoff_keys (key, handoff_id) VALUES ($23, $1) ON CONFLICT (key) DO NOTHING \
       RETURNING handoff_id) \
     INSERT INTO handoffs (id, key, conversation_id, idempotency_key, reason, request, stage, queue_id, holder, \
     customer, answer, attempts, created_at, updated_at, next_check_at, defer_until, last_error, correlation_ids, \
     history, lease_until, outcome, to_queue_ms) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22 \
     FROM k";

/// Points a key at its latest record.
pub(crate) const SET_KEY: &str = "INSERT INTO handoff_keys (key, handoff_id) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET handoff_id = excluded.handoff_id";

/// The latest record id of a key (SQLite: inside `BEGIN IMMEDIATE`).
pub(crate) const SELECT_KEY: &str = "SELECT handoff_id FROM handoff_keys WHERE key = $1";

/// PostgreSQL: makes sure the key row exists, so it can be locked even for a new key.
pub(crate) const PG_ENSURE_KEY: &str =
    "INSERT INTO handoff_keys (key, handoff_id) VALUES ($1, NULL) ON CONFLICT (key) DO NOTHING";

/// PostgreSQL: the latest record id of a key, locking the key row until commit.
pub(crate) const PG_LOCK_KEY: &str = "SELECT handoff_id FROM handoff_keys WHERE key = $1 FOR UPDATE";

/// One record by id.
pub(crate) const SELECT_RECORD: &str = concat!("SELECT ", record_columns!(), " FROM handoffs WHERE id = $1");

/// PostgreSQL: one record by id, locked against a concurrent claim until commit, with whether its
/// lease's holder is gone (`orphaned`: its heartbeat is stale, so the lease counts as lapsed).
pub(crate) const PG_LOCK_RECORD: &str = concat!(
    "SELECT ",
    record_columns!(),
    ", handoff_lease_orphaned(lease_owner) AS orphaned FROM handoffs WHERE id = $1 FOR UPDATE"
);

/// PostgreSQL: registers an instance ($1 id, $2 seconds without a beat before it counts as gone,
/// $3 its advisory lock key) and forgets instances gone for a day.
pub(crate) const PG_REGISTER_INSTANCE: &str = "WITH gone AS (\
       DELETE FROM ledger_instances WHERE heartbeat_at + stale_after < now() - interval '1 day') \
     INSERT INTO ledger_instances (id, started_at, heartbeat_at, stale_after, lock_key) \
     VALUES ($1, now(), now(), make_interval(secs => $2), $3) \
     ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stale_after = excluded.stale_after, \
     lock_key = excluded.lock_key";

/// PostgreSQL: takes the instance's session advisory lock ($1) on its heartbeat connection.
pub(crate) const PG_LOCK_INSTANCE: &str = "SELECT pg_advisory_lock($1)";

/// PostgreSQL: one heartbeat of instance $1 (no row: it was deleted; re-register).
pub(crate) const PG_HEARTBEAT: &str = "UPDATE ledger_instances SET heartbeat_at = now() WHERE id = $1";

/// PostgreSQL: a clean shutdown ends the leases instance $1 holds ($2 now) ...
pub(crate) const PG_END_OWN_LEASES: &str =
    "UPDATE handoffs SET lease_until = $2 WHERE lease_owner = $1 AND lease_until > $2";

/// ... and deregisters it.
pub(crate) const PG_DEREGISTER_INSTANCE: &str = "DELETE FROM ledger_instances WHERE id = $1";

/// `begin` resumed a record: a new lease ($2), its attempts count ($3, one more than before) and
/// its answer ($4: the advisory mark when an advisory delivery resumed it).
pub(crate) const RESUME_RECORD: &str = "UPDATE handoffs SET lease_until = $2, attempts = $3, answer = $4 WHERE id = $1";

/// Every record of a conversation, newest first.
pub(crate) const SELECT_BY_CONVERSATION: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM handoffs WHERE conversation_id = $1 ORDER BY created_at DESC, id DESC"
);

/// The stages whose records are due at `next_check_at`: a deferral's capacity check, an advice's
/// confirmation read.
macro_rules! scheduled {
    () => {
        "('deferred', 'advised')"
    };
}

/// SQLite: claims due deferrals, due confirmation reads, crashed work, and work released after a
/// retryable error whose `next_check_at` (the caller's time to come back) has passed ($1 now, $2
/// new lease end, $3 limit).
pub(crate) const SQLITE_CLAIM_DUE: &str = concat!(
    "UPDATE handoffs SET lease_until = $2, attempts = attempts + 1 WHERE id IN (\
       SELECT id FROM handoffs \
       WHERE (stage IN ",
    scheduled!(),
    " AND next_check_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)) \
          OR (stage IN ",
    unfinished!(),
    " AND (lease_until <= $1 OR (lease_until IS NULL AND next_check_at <= $1))) \
       ORDER BY COALESCE(next_check_at, updated_at), id LIMIT $3) \
     RETURNING ",
    record_columns!()
);

/// PostgreSQL: the same claim in one statement. Each branch locks its candidates with `SKIP
/// LOCKED` (rows another instance is claiming or beginning are passed over), both are ordered like
/// `InMemoryLedger` and cut to the limit, and the union is cut again. A lease whose holder's
/// heartbeat is stale counts as lapsed (`handoff_lease_orphaned`, migration 0003).
pub(crate) const PG_CLAIM_DUE: &str = concat!(
    "WITH deferred AS (\
       SELECT id, next_check_at AS due FROM handoffs \
       WHERE stage IN ",
    scheduled!(),
    " AND next_check_at <= $1 \
         AND (lease_until IS NULL OR lease_until <= $1 OR handoff_lease_orphaned(lease_owner)) \
       ORDER BY next_check_at, id LIMIT $3 FOR UPDATE SKIP LOCKED), \
     crashed AS (\
       SELECT id, COALESCE(next_check_at, updated_at) AS due FROM handoffs \
       WHERE stage IN ",
    unfinished!(),
    " AND (lease_until <= $1 OR (lease_until IS NULL AND next_check_at <= $1) \
              OR (lease_until > $1 AND handoff_lease_orphaned(lease_owner))) \
       ORDER BY COALESCE(next_check_at, updated_at), id LIMIT $3 FOR UPDATE SKIP LOCKED), \
     picked AS (\
       SELECT id FROM (SELECT id, due FROM deferred UNION ALL SELECT id, due FROM crashed) AS c \
       ORDER BY due, id LIMIT $3) \
     UPDATE handoffs AS h SET lease_until = $2, attempts = h.attempts + 1 \
     FROM picked WHERE h.id = picked.id \
     RETURNING h.id, h.key, h.conversation_id, h.idempotency_key, h.reason, h.request, h.stage, h.queue_id, \
     h.holder, h.customer, h.answer, h.attempts, h.created_at, h.updated_at, h.next_check_at, h.defer_until, \
     h.last_error, h.correlation_ids, h.history, h.lease_until"
);

/// Adds an event to the outbox ($1 handoff id, $2 event, $3 due and created).
pub(crate) const INSERT_OUTBOX: &str =
    "INSERT INTO outbox (handoff_id, event, attempts, due_at, created_at) VALUES ($1, $2, 0, $3, $3)";

/// SQLite: claims due outbox entries in id order ($1 now, $2 lease end, $3 limit).
pub(crate) const SQLITE_CLAIM_OUTBOX: &str = "UPDATE outbox SET due_at = $2, attempts = attempts + 1 WHERE id IN (\
       SELECT id FROM outbox WHERE delivered_at IS NULL AND due_at <= $1 ORDER BY id LIMIT $3) \
     RETURNING id, event, attempts";

/// PostgreSQL: the same, skipping entries another instance is claiming.
pub(crate) const PG_CLAIM_OUTBOX: &str = "WITH picked AS (\
       SELECT id FROM outbox WHERE delivered_at IS NULL AND due_at <= $1 ORDER BY id LIMIT $3 \
       FOR UPDATE SKIP LOCKED) \
     UPDATE outbox AS o SET due_at = $2, attempts = o.attempts + 1 FROM picked WHERE o.id = picked.id \
     RETURNING o.id, o.event, o.attempts";

/// Marks an undelivered entry delivered ($1 id, $2 when, $3 last error).
pub(crate) const OUTBOX_DELIVERED: &str =
    "UPDATE outbox SET delivered_at = $2, last_error = $3 WHERE id = $1 AND delivered_at IS NULL";

/// Reschedules an undelivered entry ($1 id, $2 next attempt, $3 last error).
pub(crate) const OUTBOX_RETRY: &str =
    "UPDATE outbox SET due_at = $2, last_error = $3 WHERE id = $1 AND delivered_at IS NULL";

/// Undelivered outbox entries.
pub(crate) const OUTBOX_BACKLOG: &str = "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL";

/// Records created since $1 by reason × queue × stage.
pub(crate) const STATS: &str = "SELECT reason, queue_id, stage, COUNT(*) AS n FROM handoffs \
     WHERE created_at >= $1 GROUP BY reason, queue_id, stage";

/// Ends every lease still running at $1 (sets it to $1, so it has lapsed): at the start of the
/// sole owner of a SQLite ledger, and at a clean close.
pub(crate) const END_LEASES: &str = "UPDATE handoffs SET lease_until = $1 WHERE lease_until > $1";

/// What the outcome of each record created since $1 depends on (`OutcomeFacts`).
pub(crate) const OUTCOMES: &str = "SELECT reason, queue_id, stage, answer, defer_until, created_at, updated_at \
     FROM handoffs WHERE created_at >= $1";

/// The columns of a [`HandoffSummary`](handoff_domain::insights::HandoffSummary), all in
/// `handoffs_insights_idx` so a page is read from the index alone (the answer of a failed record
/// is fetched by id, [`SUMMARY_ANSWER`]).
const SUMMARY_COLUMNS: &str =
    "id, conversation_id, reason, queue_id, stage, defer_until IS NOT NULL AS was_deferred, created_at, updated_at, attempts";

/// A keyset page of summaries: created before $3, strictly after ($1 created_at, $2 id), at most
/// $4, in `(created_at, id)` order. The first page starts after `(since, nil UUID)`.
pub(crate) static SUMMARIES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {SUMMARY_COLUMNS} FROM handoffs WHERE (created_at, id) > ($1, $2) AND created_at < $3 \
         ORDER BY created_at, id LIMIT $4"
    )
});

/// [`SUMMARIES`] of one reason ($5).
pub(crate) static SUMMARIES_OF_REASON: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {SUMMARY_COLUMNS} FROM handoffs WHERE (created_at, id) > ($1, $2) AND created_at < $3 \
         AND reason = $5 ORDER BY created_at, id LIMIT $4"
    )
});

/// The stored answer of a record ($1 id): read for failed summaries only (the failure cause).
pub(crate) const SUMMARY_ANSWER: &str = "SELECT answer FROM handoffs WHERE id = $1";

/// The stored answers of records ($1 an array of ids; PostgreSQL): one round trip per page.
pub(crate) const SUMMARY_ANSWERS: &str = "SELECT id, answer FROM handoffs WHERE id = ANY($1)";

/// Records written before migration 0006, whose outcome is still to be filled in (at most $1).
pub(crate) const OUTCOMES_TO_FILL: &str = "SELECT id, stage, answer, defer_until, created_at, updated_at \
     FROM handoffs WHERE outcome IS NULL LIMIT $1";

/// Fills in the outcome ($2) and time to queue ($3) of record $1, unless a save did meanwhile.
pub(crate) const FILL_OUTCOME: &str =
    "UPDATE handoffs SET outcome = $2, to_queue_ms = $3 WHERE id = $1 AND outcome IS NULL";

/// SQLite: the next batch of finished records to roll up (at most $1), oldest first. Run twice in
/// one write transaction (no other writer in between), it names the same records both times. Ordered
/// by `created_at` alone, the order of `handoffs_unrolled_idx`, so the plan walks that small partial
/// index (with `, id` SQLite walked the whole covering index instead).
macro_rules! sqlite_roll_up_batch {
    () => {
        "SELECT id FROM handoffs WHERE rolled_up = 0 AND outcome <> 'in_progress' ORDER BY created_at LIMIT $1"
    };
}

/// SQLite: adds the batch to the counts ...
pub(crate) const SQLITE_ROLL_UP_COUNT: &str = concat!(
    "INSERT INTO insights_rollup (day, reason, queue_id, outcome, handoffs) \
     SELECT created_at / 86400000000, reason, COALESCE(queue_id, ''), outcome, COUNT(*) FROM handoffs \
     WHERE id IN (",
    sqlite_roll_up_batch!(),
    ") GROUP BY 1, 2, 3, 4 \
     ON CONFLICT (day, reason, queue_id, outcome) DO UPDATE SET handoffs = handoffs + excluded.handoffs"
);

/// ... and marks it counted.
pub(crate) const SQLITE_ROLL_UP_MARK: &str =
    concat!("UPDATE handoffs SET rolled_up = 1 WHERE id IN (", sqlite_roll_up_batch!(), ")");

/// PostgreSQL: the same in one statement, passing over records another instance is rolling up or
/// writing; answers how many records it counted.
pub(crate) const PG_ROLL_UP: &str = "WITH picked AS (\
       SELECT id FROM handoffs WHERE NOT rolled_up AND outcome <> 'in_progress' \
       ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
     marked AS (\
       UPDATE handoffs AS h SET rolled_up = true FROM picked WHERE h.id = picked.id \
       RETURNING h.created_at, h.reason, h.queue_id, h.outcome), \
     counted AS (\
       INSERT INTO insights_rollup (day, reason, queue_id, outcome, handoffs) \
       SELECT floor(extract(epoch FROM created_at) / 86400)::bigint, reason, COALESCE(queue_id::text, ''), \
              outcome, COUNT(*) FROM marked GROUP BY 1, 2, 3, 4 \
       ON CONFLICT (day, reason, queue_id, outcome) \
       DO UPDATE SET handoffs = insights_rollup.handoffs + excluded.handoffs) \
     SELECT COUNT(*) FROM marked";

/// The counts of days [$1, $2) (UTC day numbers), of every reason ...
pub(crate) const ROLLUP_DAYS: &str = "SELECT day, reason, queue_id, outcome, handoffs FROM insights_rollup \
     WHERE day >= $1 AND day < $2 AND handoffs > 0";

/// ... or of reason $3.
pub(crate) const ROLLUP_DAYS_OF_REASON: &str = "SELECT day, reason, queue_id, outcome, handoffs FROM insights_rollup \
     WHERE day >= $1 AND day < $2 AND reason = $3 AND handoffs > 0";

/// What a record adds to the counts, for the records created in [$1, $2) (from
/// `handoffs_insights_idx` alone) ...
macro_rules! counted_rows {
    () => {
        "SELECT created_at, reason, queue_id, outcome FROM handoffs WHERE created_at >= $1 AND created_at < $2"
    };
}

/// Every record of the window's edges (the hours outside whole days, or a window of hours).
pub(crate) const COUNT_ROWS: &str = counted_rows!();

/// [`COUNT_ROWS`] of reason $3.
pub(crate) const COUNT_ROWS_OF_REASON: &str = concat!(counted_rows!(), " AND reason = $3");

/// SQLite: the records of whole days not rolled up yet (from `handoffs_unrolled_idx`) ...
pub(crate) const SQLITE_UNROLLED_ROWS: &str = concat!(counted_rows!(), " AND rolled_up = 0");

/// ... of reason $3.
pub(crate) const SQLITE_UNROLLED_ROWS_OF_REASON: &str = concat!(counted_rows!(), " AND rolled_up = 0 AND reason = $3");

/// PostgreSQL: the same.
pub(crate) const PG_UNROLLED_ROWS: &str = concat!(counted_rows!(), " AND NOT rolled_up");

/// ... of reason $3.
pub(crate) const PG_UNROLLED_ROWS_OF_REASON: &str = concat!(counted_rows!(), " AND NOT rolled_up AND reason = $3");

/// SQLite: the times to queue of the window [$1, $2), and whether each waited for a deferral
/// first; the ledger takes the nearest-rank percentiles of them (`handoffs_insights_idx` alone).
pub(crate) const SQLITE_TIMES: &str = "SELECT to_queue_ms, outcome = 'transferred_after_deferral' FROM handoffs \
     WHERE created_at >= $1 AND created_at < $2 AND to_queue_ms IS NOT NULL";

/// ... of reason $3.
pub(crate) const SQLITE_TIMES_OF_REASON: &str = "SELECT to_queue_ms, outcome = 'transferred_after_deferral' \
     FROM handoffs WHERE created_at >= $1 AND created_at < $2 AND to_queue_ms IS NOT NULL AND reason = $3";

/// PostgreSQL: the nearest-rank percentiles in the database. `percentile_disc(p)` is the value at
/// position ⌈p·n⌉ of the ordered values, the nearest rank of `outcome::Percentiles` (docs/insights.md).
macro_rules! pg_times {
    () => {
        "SELECT COUNT(to_queue_ms), \
           percentile_disc(0.5) WITHIN GROUP (ORDER BY to_queue_ms), \
           percentile_disc(0.95) WITHIN GROUP (ORDER BY to_queue_ms), \
           COUNT(to_queue_ms) FILTER (WHERE outcome = 'transferred_after_deferral'), \
           percentile_disc(0.5) WITHIN GROUP (ORDER BY to_queue_ms) FILTER (WHERE outcome = 'transferred_after_deferral'), \
           percentile_disc(0.95) WITHIN GROUP (ORDER BY to_queue_ms) FILTER (WHERE outcome = 'transferred_after_deferral') \
         FROM handoffs WHERE created_at >= $1 AND created_at < $2 AND to_queue_ms IS NOT NULL"
    };
}

/// PostgreSQL: the window's time-to-queue percentiles (count, p50, p95; then of deferrals) ...
pub(crate) const PG_TIMES: &str = pg_times!();

/// ... of reason $3.
pub(crate) const PG_TIMES_OF_REASON: &str = concat!(pg_times!(), " AND reason = $3");

/// SQLite: `request` without personal data (guest name and e-mail removed, context emptied).
macro_rules! sqlite_without_personal_data {
    () => {
        "json_set(json_remove(request, '$.guestInfo.name', '$.guestInfo.email'), '$.customContext', json('{}'))"
    };
}

/// PostgreSQL: `request` without personal data.
macro_rules! pg_without_personal_data {
    () => {
        "jsonb_set(request #- '{guestInfo,name}' #- '{guestInfo,email}', '{customContext}', '{}'::jsonb)"
    };
}

/// SQLite: erases the personal data of guest $1 from every record of theirs that holds some.
pub(crate) const SQLITE_ERASE_GUEST: &str = concat!(
    "UPDATE handoffs SET request = ",
    sqlite_without_personal_data!(),
    " WHERE guest_id = $1 AND has_personal_data"
);

/// PostgreSQL: the same.
pub(crate) const PG_ERASE_GUEST: &str = concat!(
    "UPDATE handoffs SET request = ",
    pg_without_personal_data!(),
    " WHERE guest_id = $1 AND has_personal_data"
);

/// SQLite: purges the personal data of at most $2 finished records last updated before $1.
pub(crate) const SQLITE_PURGE_PERSONAL_DATA: &str = concat!(
    "UPDATE handoffs SET request = ",
    sqlite_without_personal_data!(),
    " WHERE id IN (SELECT id FROM handoffs WHERE has_personal_data AND updated_at < $1 AND stage NOT IN ",
    keeps_personal_data!(),
    " ORDER BY updated_at LIMIT $2)"
);

/// PostgreSQL: the same, passing over rows another instance holds locked.
pub(crate) const PG_PURGE_PERSONAL_DATA: &str = concat!(
    "UPDATE handoffs SET request = ",
    pg_without_personal_data!(),
    " WHERE id IN (SELECT id FROM handoffs WHERE has_personal_data AND updated_at < $1 AND stage NOT IN ",
    keeps_personal_data!(),
    " ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
);

/// Whether the store answers.
pub(crate) const PING: &str = "SELECT 1";
