//! API keys over gRPC: open mode without keys; with keys, every call needs the right one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{payment, TestServer};
use fengkong::auth::{add_key, revoke_key, Role};
use fengkong::proto::{self, get_decision_request::Key, GetDecisionRequest};
use tonic::Code;

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

#[tokio::test]
async fn keys_decide_who_may_call_what() {
    let dir = tempfile::tempdir().unwrap();
    let (_, gateway) = add_key(dir.path(), Role::Gateway, None, 0).unwrap();
    let (_, merchant) =
        add_key(dir.path(), Role::Merchant, Some("merchant-001".into()), 0).unwrap();
    let (analyst_record, analyst) = add_key(dir.path(), Role::Analyst, None, 0).unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;

    let err = client.score(payment("a-1")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .score(with_key(payment("a-1"), "fk_bogus"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .score(with_key(payment("a-1"), &merchant))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("merchant"), "{}", err.message());

    let scored = client
        .score(with_key(payment("a-1"), &gateway))
        .await
        .unwrap()
        .into_inner();
    let lookup = GetDecisionRequest {
        key: Some(Key::PaymentId("a-1".into())),
    };
    let read = client
        .get_decision(with_key(lookup.clone(), &analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.response, Some(scored));
    let err = client
        .get_decision(with_key(lookup.clone(), &merchant))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let outcome = proto::ReportOutcomeRequest {
        payment_id: "a-1".into(),
        outcome: proto::OutcomeKind::Genuine as i32,
        reported_at_ms: common::now_ms() + 10,
    };
    client
        .report_outcome(with_key(outcome, &analyst))
        .await
        .unwrap();

    // Revoking takes effect while the server runs.
    revoke_key(dir.path(), &analyst_record.id).unwrap();
    let mut refused = false;
    for _ in 0..50 {
        match client
            .get_decision(with_key(lookup.clone(), &analyst))
            .await
        {
            Err(e) if e.code() == Code::Unauthenticated => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(refused, "a revoked key kept working");
    server.stop().await;
}
