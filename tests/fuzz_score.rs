//! Arbitrary requests against the real server: every one gets an answer (a decision or a
//! clear client error), none crashes it, and it keeps scoring afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{now_ms, payment, TestServer};
use fengkong::proto;
use proptest::prelude::*;
use tonic::Code;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,20}",
        ".{0,40}",
        "[a-z]{120,140}",
        Just("\u{0}\u{7}".to_string()),
        Just("1.2.3.4".to_string()),
        Just("::1".to_string()),
    ]
}

fn any_request() -> impl Strategy<Value = proto::ScoreRequest> {
    let now = now_ms();
    (
        (
            text(),
            prop_oneof![
                Just(now),
                any::<i64>(),
                (now - 1_000_000)..(now + 1_000_000)
            ],
        ),
        (-2..10i32, -2..10i32, -2..6i32, -2..6i32),
        proptest::option::of((text(), any::<bool>(), any::<i64>())),
        proptest::option::of((text(), text())),
        prop_oneof![any::<i64>(), 1..100_000_000i64],
        (text(), text(), text(), proptest::option::of(text())),
        proptest::collection::btree_map(text(), text(), 0..4),
    )
        .prop_map(
            |(
                (id, t),
                (channel, scene, kind, funding),
                payer,
                payee,
                amount,
                (cur, dev, ip, card),
                attrs,
            )| {
                proto::ScoreRequest {
                    payment_id: id,
                    event_time_ms: t,
                    channel,
                    scene,
                    payer: payer.map(|(account_id, real_name_verified, registered_at_ms)| {
                        proto::Payer {
                            account_id,
                            real_name_verified,
                            registered_at_ms,
                        }
                    }),
                    payee: payee.map(|(account_id, merchant_category)| proto::Payee {
                        account_id,
                        kind,
                        merchant_category,
                    }),
                    amount_fen: amount,
                    currency: cur,
                    funding,
                    card_fingerprint: card,
                    device_id: dev,
                    ip,
                    city_code: None,
                    attributes: attrs,
                }
            },
        )
}

#[test]
fn arbitrary_requests_get_an_answer_and_the_server_stays_up() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = runtime.block_on(TestServer::start(dir.path()));
    let client = runtime.block_on(server.client());

    let config = ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(req in any_request())| {
        let mut client = client.clone();
        let result = runtime.block_on(client.score(req));
        if let Err(status) = result {
            prop_assert!(
                matches!(status.code(), Code::InvalidArgument | Code::AlreadyExists),
                "unexpected status {:?}", status
            );
            prop_assert!(!status.message().is_empty());
        }
    });

    let mut client = client.clone();
    let ok = runtime
        .block_on(client.score(payment("after-fuzz")))
        .unwrap()
        .into_inner();
    assert_eq!(ok.payment_id, "after-fuzz");
    runtime.block_on(server.stop());
}
