//! Issue 17: an outcome's `reported_at_ms` is bounded by the server clock like an event time
//! (a report "from the year 9999" used to be accepted and hide the true report from
//! `payee.bad_reports_30d`), and a repeated report of the same kind keeps the earliest time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{now_ms, payment, TestServer};
use fengkong::proto::{self, get_decision_request::Key, GetDecisionRequest, ReportOutcomeRequest};
use tonic::Code;

fn fraud(payment_id: &str, at: i64) -> ReportOutcomeRequest {
    ReportOutcomeRequest {
        payment_id: payment_id.into(),
        outcome: proto::OutcomeKind::Fraud as i32,
        reported_at_ms: at,
    }
}

#[tokio::test]
async fn a_report_from_the_far_future_is_refused_and_cannot_mask_the_true_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    // Reports count from the day after they arrive (1-day buckets of the 30-day window):
    // the paid payment and its report two days ago, the next payment now.
    const DAY: i64 = 86_400_000;
    let mut first = payment("o-1");
    first.event_time_ms = now_ms() - 2 * DAY;
    first.payee.as_mut().unwrap().account_id = "payee-reported".into();
    client.score(first.clone()).await.unwrap();

    let year_9999 = 253_402_300_799_000;
    let err = client
        .report_outcome(fraud("o-1", year_9999))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("reported_at_ms"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("ahead of the server clock"),
        "{}",
        err.message()
    );

    client
        .report_outcome(fraud("o-1", now_ms() - 2 * DAY + 60_000))
        .await
        .unwrap();
    let mut second = first.clone();
    second.payment_id = "o-2".into();
    second.event_time_ms = now_ms();
    client.score(second).await.unwrap();
    let stored = client
        .get_decision(GetDecisionRequest {
            key: Some(Key::PaymentId("o-2".into())),
        })
        .await
        .unwrap()
        .into_inner();
    let reports = stored
        .features
        .iter()
        .find(|f| f.name == "payee.bad_reports_30d")
        .expect("payee.bad_reports_30d stored");
    assert_eq!(reports.value, 1.0, "the true report counts");
    server.stop().await;
}

#[tokio::test]
async fn a_repeated_report_keeps_the_earliest_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;
    let mut p = payment("e-1");
    p.event_time_ms = now_ms() - 60_000;
    client.score(p.clone()).await.unwrap();
    let later = now_ms() + 60_000;
    let earlier = now_ms() - 30_000;
    client.report_outcome(fraud("e-1", later)).await.unwrap();
    let answer = client
        .report_outcome(fraud("e-1", earlier))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.outcomes.len(), 1, "{answer:?}");
    assert_eq!(answer.outcomes[0].reported_at_ms, earlier);
    // A later repeat (a retry, a duplicate feed) changes nothing.
    let answer = client
        .report_outcome(fraud("e-1", later))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.outcomes.len(), 1);
    assert_eq!(answer.outcomes[0].reported_at_ms, earlier);
    server.stop().await;
}
