//! The insights read model (`InsightsPort`), run on `InMemoryLedger`, SQLite and PostgreSQL: keyset
//! pages return exactly the summaries of the records a window covers, in order, and the figures
//! folded from them are the same on every backend.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use handoff_domain::insights::{collect_insights, HandoffSummary, InsightsBuilder, InsightsFilter, Outcome};
use handoff_domain::ports::{Begin, InsightsPort, LedgerPort};
use handoff_domain::{
    AdviceDecision, Confirmation, ConversationId, HandoffKey, HandoffMode, HandoffReason, HandoffRecord,
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
        ledger.begin(&key, &request, t(created), LEASE, Duration::from_secs(600), HandoffMode::Transfer).await.unwrap()
    else {
        panic!("expected a fresh record")
    };
    let done = t(created + took);
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
            record.defer_until = Some(t(created + 300));
            record.advance(Stage::Deferred, t(created), "no capacity").unwrap();
            record.advance(Stage::Transferred, done, "capacity").unwrap();
            record.answer = Some(StoredAnswer::Transferred { queue: q });
        }
        "deferred" => {
            record.queue = Some(q);
            record.defer_until = Some(t(created + 300));
            record.next_check_at = Some(t(created + 15));
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
