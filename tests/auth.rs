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

fn freeze(account: &str) -> proto::SetAccountStatusRequest {
    proto::SetAccountStatusRequest {
        account_id: account.into(),
        status: proto::AccountStatus::Frozen as i32,
        note: "hardening test".into(),
    }
}

async fn admin(
    server: &TestServer,
) -> proto::account_admin_client::AccountAdminClient<tonic::transport::Channel> {
    proto::account_admin_client::AccountAdminClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap()
}

/// The attack of issue 17: moving `keys.json` away must close a server that had keys, not
/// open it, now and after a restart; putting a key back lets that key in again.
#[tokio::test]
async fn removing_the_keys_file_closes_the_server_instead_of_opening_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, analyst) = add_key(dir.path(), Role::Analyst, None, 0).unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut accounts = admin(&server).await;
    // The scheme is case-insensitive.
    let mut lower = tonic::Request::new(freeze("acct-1"));
    lower.metadata_mut().insert(
        "authorization",
        format!("bearer {analyst}").parse().unwrap(),
    );
    accounts.set_account_status(lower).await.unwrap();

    let keys_file = dir.path().join(fengkong::auth::KEYS_FILE);
    let moved = dir.path().join("keys.json.moved");
    std::fs::rename(&keys_file, &moved).unwrap();
    // Long enough for the server to notice (it polls every second), checking all along
    // that nothing is let in without a key.
    let mut closed = None;
    for _ in 0..30 {
        match accounts.set_account_status(freeze("acct-2")).await {
            Ok(_) => panic!("a no-key freeze was accepted after keys.json was removed"),
            Err(e) if e.code() == Code::Unavailable => {
                closed = Some(e);
                break;
            }
            Err(e) => assert_eq!(e.code(), Code::Unauthenticated, "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = closed.expect("the server never said it cannot read its keys");
    assert!(closed.message().contains("keys"), "{}", closed.message());
    // Even the right key is refused: the server cannot check it.
    let err = accounts
        .set_account_status(with_key(freeze("acct-2"), &analyst))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    server.stop().await;

    // A restart without the file stays closed.
    let server = TestServer::start(dir.path()).await;
    let mut accounts = admin(&server).await;
    let err = accounts
        .set_account_status(freeze("acct-3"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let mut client = server.client().await;
    let err = client.score(payment("closed-1")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    std::fs::rename(&moved, &keys_file).unwrap();
    let mut restored = false;
    for _ in 0..30 {
        if accounts
            .set_account_status(with_key(freeze("acct-3"), &analyst))
            .await
            .is_ok()
        {
            restored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(restored, "the restored keys file was not picked up");
    let err = accounts
        .set_account_status(freeze("acct-4"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    server.stop().await;
}
