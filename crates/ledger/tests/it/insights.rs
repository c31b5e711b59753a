//! The insights read model (`InsightsPort`), run on `InMemoryLedger`, SQLite and PostgreSQL: keyset
//! pages return exactly the summaries of the records a window covers, in order, and the figures
//! folded from them are the same on every backend. The figures a ledger answers from its
//! pre-aggregated counts (`InsightsPort::insights`; the SQL ledger's day counts, migration 0006)
//! equal folding the summaries, over windows of every shape, as records finish after they were
//! read, change after they were counted, and lose their personal data.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use handoff_domain::insights::{collect_insights, HandoffSummary, InsightsBuilder, InsightsFilter, Outcome};
use handoff_domain::ports::{Begin, InsightsPort, LedgerPort};
use handoff_domain::{
    AdviceDecision, Confirmation, ConversationId, GuestId, HandoffKey, HandoffMode, HandoffReason, HandoffRecord,
    HandoffRequest, OpaqueIds, QueueId, Stage, StoredAnswer, Unconfirmed,
};
use serde_json::json;

macro_rules! insights_suite {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&handoff_domain::InMemoryLedger::new()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::support::on_sqlite(async |db| super::$case(&db.ledger).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::support::on_postgres(async |db| super::$case(&db.ledger).await).await;
                }
            )*
        }
    };
}

insights_suite!(
    summary_pages_cover_the_window_in_order_without_gaps_or_repeats,
    the_reason_filter_keeps_only_that_reason,
    outcomes_and_times_read_back_as_the_domain_decides_them,
    counted_figures_equal_the_fold_for_windows_of_every_shape,
    records_finishing_after_a_read_are_counted_once,
    a_counted_record_whose_outcome_changes_is_counted_under_its_new_outcome,
    erasure_and_the_purge_leave_the_figures_unchanged,
);

const LEASE: Duration = Duration::from_secs(30);

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

fn queue(n: u8) -> QueueId {
    QueueId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02x}")).unwrap()
}

/// A record created at `t(created)` for `reason`, with the guest's name and e-mail set, finished as
/// `how` at `t(created + took)`, saved.
async fn seed<L: LedgerPort>(ledger: &L, created: i64, reason: &str, how: &str, took: i64) -> HandoffRecord {
    seed_at(ledger, t(created), reason, how, TimeDelta::seconds(took)).await
}

/// [`seed`] at any instant, finished `took` later.
async fn seed_at<L: LedgerPort>(
    ledger: &L,
    created: DateTime<Utc>,
    reason: &str,
    how: &str,
    took: TimeDelta,
) -> HandoffRecord {
    let conversation = crate::support::platform_id::<ConversationId>("conv");
    let request = HandoffRequest::from_json(
        &json!({
            "conversationId": conversation.to_string(),
            "guestInfo": { "id": "guest-1", "name": "Jane Doe", "email": "jane.doe@example.com" },
            "handoffReason": reason,
            "customContext": { "order": "secret-order-42" },
        }),
        &OpaqueIds,
    )
    .unwrap();
    let key = HandoffKey::new(conversation, None);
    let Begin::Fresh(mut record) =
        ledger.begin(&key, &request, created, LEASE, Duration::from_secs(600), HandoffMode::Transfer).await.unwrap()
    else {
        panic!("expected a fresh record")
    };
    let done = created + took;
    let q = queue(1);
    match how {
        "transferred" => {
            record.queue = Some(q);
            record.advance(Stage::TransferPending, done, "transfer requested").unwrap();
            record.advance(Stage::Transferred, done, "transfer accepted").unwrap();
            record.answer = Some(StoredAnswer::Transferred { queue: q });
        }
        "after_deferral" => {
            record.queue = Some(q);
            record.defer_until = Some(created + TimeDelta::seconds(300));
            record.advance(Stage::Deferred, created, "no capacity").unwrap();
            record.advance(Stage::Transferred, done, "capacity").unwrap();
            record.answer = Some(StoredAnswer::Transferred { queue: q });
        }
        "deferred" => {
            record.queue = Some(q);
            record.defer_until = Some(created + TimeDelta::seconds(300));
            record.next_check_at = Some(created + TimeDelta::seconds(15));
            record.advance(Stage::Deferred, done, "no capacity").unwrap();
            record.answer = Some(StoredAnswer::Deferred { queue: q, retry_after: Duration::from_secs(15) });
        }
        "failed" => {
            record.advance(Stage::Failed, done, "gone").unwrap();
            record.answer = Some(StoredAnswer::Failed {
                status: 404,
                code: "conversation_not_found".into(),
                message: "no such conversation".into(),
            });
        }
        "advised" => {
            record.queue = Some(q);
            record.advance(Stage::Advised, done, "advised").unwrap();
            record.answer = Some(StoredAnswer::Advised {
                queue: q,
                decision: AdviceDecision::Transfer,
                confirmation: Some(Confirmation::Unconfirmed { why: Unconfirmed::StillWithFlow }),
            });
        }
        "advised_open" => {
            record.queue = Some(q);
            record.advance(Stage::Advised, done, "advised").unwrap();
            record.answer =
                Some(StoredAnswer::Advised { queue: q, decision: AdviceDecision::Transfer, confirmation: None });
        }
        "confirmed" => {
            record.queue = Some(q);
            record.advance(Stage::Advised, done, "advised").unwrap();
            let after = Duration::from_millis(u64::try_from(took.num_milliseconds()).unwrap() / 2);
            record.answer = Some(StoredAnswer::Advised {
                queue: q,
                decision: AdviceDecision::Transfer,
                confirmation: Some(Confirmation::Confirmed { queue: q, after }),
            });
        }
        "abandoned" => {
            record.advance(Stage::Abandoned, done, "nobody waited").unwrap();
        }
        other => panic!("unknown kind {other}"),
    }
    ledger.save(&record, None, &[]).await.unwrap();
    record
}

/// Ten records over an hour: every outcome, two reasons, one before and one after the window.
async fn seed_all<L: LedgerPort>(ledger: &L) -> Vec<HandoffRecord> {
    let plan = [
        (-10, "billing", "transferred", 3),
        (0, "billing", "transferred", 2),
        (0, "billing", "failed", 1),
        (60, "refund", "after_deferral", 120),
        (120, "billing", "deferred", 0),
        (600, "refund", "advised", 1),
        (900, "refund", "transferred", 5),
        (1200, "billing", "transferred", 7),
        (1800, "refund", "failed", 2),
        (3600, "billing", "transferred", 1),
    ];
    let mut records = Vec::new();
    for (created, reason, how, took) in plan {
        records.push(seed(ledger, created, reason, how, took).await);
    }
    records
}

/// Every summary of `filter`, `page` at a time.
async fn all_pages<L: InsightsPort>(ledger: &L, filter: &InsightsFilter, page: usize) -> Vec<HandoffSummary> {
    let mut out: Vec<HandoffSummary> = Vec::new();
    let mut after = None;
    for _ in 0..100 {
        let got = ledger.summaries(filter, after, page).await.unwrap();
        assert!(got.len() <= page, "a page is at most its limit");
        out.extend(got.iter().cloned());
        match got.last() {
            Some(last) if got.len() == page => after = Some(last.cursor()),
            _ => return out,
        }
    }
    panic!("paging did not end");
}

fn expected(records: &[HandoffRecord], filter: &InsightsFilter) -> Vec<HandoffSummary> {
    let mut want: Vec<HandoffSummary> = records.iter().map(HandoffSummary::of).filter(|s| filter.covers(s)).collect();
    want.sort_by_key(HandoffSummary::cursor);
    want
}

pub(crate) async fn summary_pages_cover_the_window_in_order_without_gaps_or_repeats<L>(ledger: &L)
where
    L: LedgerPort + InsightsPort,
{
    // Arrange
    let records = seed_all(ledger).await;
    let filter = InsightsFilter::new(t(0), t(3600), None).unwrap();

    // Act: pages of 3 (the window holds 8), and one big page.
    let paged = all_pages(ledger, &filter, 3).await;
    let whole = ledger.summaries(&filter, None, 1000).await.unwrap();

    // Assert
    let want = expected(&records, &filter);
    assert_eq!(want.len(), 8, "the window is [t(0), t(3600))");
    assert_eq!(paged, want);
    assert_eq!(whole, want);
    let mut fold = InsightsBuilder::new(filter.clone());
    want.iter().for_each(|s| fold.add(s));
    assert_eq!(collect_insights(ledger, &filter, 3).await.unwrap(), fold.finish());
}

pub(crate) async fn the_reason_filter_keeps_only_that_reason<L>(ledger: &L)
where
    L: LedgerPort + InsightsPort,
{
    let records = seed_all(ledger).await;
    let filter = InsightsFilter::new(t(-3600), t(7200), Some(HandoffReason::parse("refund").unwrap())).unwrap();

    let got = all_pages(ledger, &filter, 2).await;

    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|s| s.reason == "refund"));
    assert_eq!(got, expected(&records, &filter));
}

pub(crate) async fn outcomes_and_times_read_back_as_the_domain_decides_them<L>(ledger: &L)
where
    L: LedgerPort + InsightsPort,
{
    seed_all(ledger).await;
    let filter = InsightsFilter::new(t(0), t(3600), None).unwrap();

    let got = ledger.summaries(&filter, None, 100).await.unwrap();

    let outcomes: Vec<String> = got.iter().map(|s| s.outcome.to_string()).collect();
    assert_eq!(
        outcomes,
        [
            // created t(0): a transferred and a failed one, in id order
            got[0].outcome.to_string(),
            got[1].outcome.to_string(),
            "transferred_after_deferral".into(),
            "in_progress".into(),
            "unconfirmed".into(),
            "transferred".into(),
            "transferred".into(),
            "failed:not_found".into(),
        ]
    );
    let mut first_two = [got[0].outcome.clone(), got[1].outcome.clone()];
    first_two.sort();
    assert_eq!(first_two, [Outcome::Transferred, Outcome::Failed { cause: "not_found".into() }]);
    assert_eq!(got[2].to_queue, Some(Duration::from_secs(120)));
    assert_eq!(got[3].finished_at, None);
    assert_eq!(got[5].to_queue, Some(Duration::from_secs(5)));
    assert_eq!(got[5].finished_at, Some(t(905)));
    assert!(got.iter().all(|s| s.attempts == 1));
}

/// Midnight (UTC) before `t(0)`.
fn midnight() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap()
}

/// Asserts that the ledger's figures of `filter` equal folding its summaries.
async fn assert_counts_equal_the_fold<L: InsightsPort>(ledger: &L, filter: &InsightsFilter) {
    let counted = ledger.insights(filter).await.unwrap();
    let folded = collect_insights(ledger, filter, 7).await.unwrap();
    assert_eq!(counted, folded, "{filter:?}");
}

/// Eighty records over ten days from `midnight()`, in pairs a minute apart (so day counts hold
/// more than one): every outcome, three reasons, a queue or none, times to queue with
/// milliseconds, some created exactly at midnight.
async fn seed_days<L: LedgerPort>(ledger: &L) -> Vec<HandoffRecord> {
    let hows =
        ["transferred", "after_deferral", "failed", "advised", "confirmed", "deferred", "advised_open", "abandoned"];
    let reasons = ["billing", "refund", "password_reset"];
    let mut records = Vec::new();
    for i in 0..40_i64 {
        // Every 6 h 7 min 13.5 s, so records fall on both sides of midnights and on whole hours.
        let created = if i % 9 == 0 {
            midnight() + TimeDelta::days(i / 4)
        } else {
            midnight() + TimeDelta::milliseconds(i * 22_033_500)
        };
        let how = hows[usize::try_from(i).unwrap() % hows.len()];
        let reason = reasons[usize::try_from(i).unwrap() % reasons.len()];
        let took = TimeDelta::milliseconds(1_000 + (i * 7_919) % 60_000);
        records.push(seed_at(ledger, created, reason, how, took).await);
        records.push(seed_at(ledger, created + TimeDelta::minutes(1), reason, how, took).await);
    }
    records
}

pub(crate) async fn counted_figures_equal_the_fold_for_windows_of_every_shape<L>(ledger: &L)
where
    L: LedgerPort + InsightsPort,
{
    // Arrange
    seed_days(ledger).await;
    let m = midnight();
    let refund = || Some(HandoffReason::parse("refund").unwrap());
    let windows = [
        // a day of hour buckets, aligned and not
        (m, m + TimeDelta::days(1), None),
        (m + TimeDelta::minutes(90), m + TimeDelta::hours(25), None),
        // whole days only
        (m, m + TimeDelta::days(7), None),
        (m - TimeDelta::days(30), m + TimeDelta::days(30), None),
        // whole days and edges on both sides, with and without a reason
        (m + TimeDelta::hours(5), m + TimeDelta::days(6) + TimeDelta::minutes(17), None),
        (m + TimeDelta::hours(5), m + TimeDelta::days(6) + TimeDelta::minutes(17), refund()),
        (m + TimeDelta::seconds(1), m + TimeDelta::days(9), refund()),
        // one whole day between two edges
        (m + TimeDelta::hours(23), m + TimeDelta::hours(73), None),
        // nothing in it
        (m - TimeDelta::days(20), m - TimeDelta::days(10), None),
    ];

    // Act + Assert
    for (since, until, reason) in windows {
        let filter = InsightsFilter::new(since, until, reason).unwrap();
        assert_counts_equal_the_fold(ledger, &filter).await;
    }
    let all = InsightsFilter::new(m - TimeDelta::days(1), m + TimeDelta::days(11), None).unwrap();
    let figures = ledger.insights(&all).await.unwrap();
    assert_eq!(figures.total, 80);
    assert!(figures.to_queue.count > 0 && figures.deferral_wait.count > 0);
    assert_eq!(figures.confirmation.confirmed, 10);
}

pub(crate) async fn records_finishing_after_a_read_are_counted_once<L>(ledger: &L)
where
    L: LedgerPort + InsightsPort,
{
    // Arrange: finished and unfinished records over three days, read once (the finished ones are
    // counted then).
    let m = midnight();
    let mut open = Vec::new();
    for day in 0..3 {
        let created = m + TimeDelta::days(day) + TimeDelta::hours(3);
        seed_at(ledger, created, "billing", "transferred", TimeDelta::seconds(4)).await;
        open.push(seed_at(ledger, created, "billing", "deferred", TimeDelta::zero()).await);
        open.push(seed_at(ledger, created, "refund", "advised_open", TimeDelta::seconds(1)).await);
    }
    let week = InsightsFilter::new(m - TimeDelta::days(1), m + TimeDelta::days(6), None).unwrap();
    let before = ledger.insights(&week).await.unwrap();
    assert_eq!(before.count(handoff_domain::insights::OutcomeKind::InProgress), 6);

    // Act: they finish, then are read (and counted) again, twice.
    for mut record in open {
        let at = record.updated_at + TimeDelta::seconds(30);
        if record.stage == Stage::Deferred {
            record.advance(Stage::Transferred, at, "capacity").unwrap();
            record.answer = Some(StoredAnswer::Transferred { queue: queue(1) });
        } else {
            record.updated_at = at;
            record.answer = Some(StoredAnswer::Advised {
                queue: queue(1),
                decision: AdviceDecision::Transfer,
                confirmation: Some(Confirmation::Confirmed { queue: queue(1), after: Duration::from_millis(2_500) }),
            });
        }
        ledger.save(&record, None, &[]).await.unwrap();
    }

    // Assert
    assert_counts_equal_the_fold(ledger, &week).await;
    assert_counts_equal_the_fold(ledger, &week).await;
    let after = ledger.insights(&week).await.unwrap();
    assert_eq!(after.total, 9);
    assert_eq!(after.count(handoff_domain::insights::OutcomeKind::InProgress), 0);
    assert_eq!(after.count(handoff_domain::insights::OutcomeKind::Confirmed), 3);
}

pub(crate) async fn a_counted_record_whose_outcome_changes_is_counted_under_its_new_outcome<L>(ledger: &L)
where
    L: LedgerPort + InsightsPort,
{
    // Arrange: advice given and found unconfirmed (a final outcome: counted by the first read).
    let m = midnight();
    let mut record = seed_at(ledger, m + TimeDelta::hours(2), "refund", "advised", TimeDelta::seconds(1)).await;
    seed_at(ledger, m + TimeDelta::hours(2), "refund", "transferred", TimeDelta::seconds(3)).await;
    let week = InsightsFilter::new(m - TimeDelta::days(2), m + TimeDelta::days(5), None).unwrap();
    assert_eq!(ledger.insights(&week).await.unwrap().confirmation.unconfirmed, 1);

    // Act: the stored answer changes after it was counted (and its queue with it).
    record.queue = Some(queue(2));
    record.answer = Some(StoredAnswer::Advised {
        queue: queue(2),
        decision: AdviceDecision::Transfer,
        confirmation: Some(Confirmation::Confirmed { queue: queue(2), after: Duration::from_secs(8) }),
    });
    ledger.save(&record, None, &[]).await.unwrap();

    // Assert
    assert_counts_equal_the_fold(ledger, &week).await;
    let figures = ledger.insights(&week).await.unwrap();
    assert_eq!((figures.confirmation.confirmed, figures.confirmation.unconfirmed, figures.total), (1, 0, 2));
}

pub(crate) async fn erasure_and_the_purge_leave_the_figures_unchanged<L>(ledger: &L)
where
    L: LedgerPort + InsightsPort,
{
    // Arrange
    seed_days(ledger).await;
    let m = midnight();
    let window = InsightsFilter::new(m + TimeDelta::hours(7), m + TimeDelta::days(8), None).unwrap();
    let before = ledger.insights(&window).await.unwrap();

    // Act
    ledger.erase_guest(&GuestId::parse("guest-1").unwrap()).await.unwrap();
    ledger.purge_personal_data(m + TimeDelta::days(30), 1_000).await.unwrap();

    // Assert
    assert_eq!(ledger.insights(&window).await.unwrap(), before);
    assert_counts_equal_the_fold(ledger, &window).await;
}
