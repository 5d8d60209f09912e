//! `RiskEngine.ListDecisions` end to end over gRPC: an analyst pages through an account's
//! decisions (as payer and payee) while new ones arrive, filters by time, action, rule and
//! score; a merchant sees only its own collections, without rule ids; a gateway sees none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{now_ms, payment, with_key, TestServer};
use fengkong::auth::{add_key, Role};
use fengkong::proto::{self, Action, ListDecisionsRequest};
use tonic::transport::Channel;
use tonic::Code;

/// Ten minutes between two payments in event time.
const STEP: i64 = 600_000;

fn pay(id: &str, payer: &str, payee: &str, at: i64) -> proto::ScoreRequest {
    let mut req = payment(id);
    req.event_time_ms = at;
    req.payer.as_mut().unwrap().account_id = payer.into();
    req.payee.as_mut().unwrap().account_id = payee.into();
    req.device_id = format!("dev-{payer}");
    req
}

async fn page(
    client: &mut proto::risk_engine_client::RiskEngineClient<Channel>,
    key: &str,
    req: ListDecisionsRequest,
) -> Result<proto::ListDecisionsResponse, tonic::Status> {
    client
        .list_decisions(with_key(req, key))
        .await
        .map(|r| r.into_inner())
}

fn ids(resp: &proto::ListDecisionsResponse) -> Vec<String> {
    resp.decisions
        .iter()
        .map(|d| d.payment_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_is_paged_newest_first_while_decisions_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let key = |role, account: Option<&str>| {
        add_key(dir.path(), role, account.map(str::to_owned), 0)
            .unwrap()
            .1
    };
    let gateway = key(Role::Gateway, None);
    let merchant = key(Role::Merchant, Some("shop-a"));
    let analyst = key(Role::Analyst, None);
    let server = TestServer::start(dir.path()).await;
    let mut client = server.client().await;

    // alice pays shop-a 8 times and shop-b 4 times; bob pays shop-a 3 times; ten minutes
    // apart in event time.
    let start = now_ms() - 3 * 3_600_000;
    let mut alice = Vec::new();
    let mut n = 0;
    for (payer, payee, count) in [
        ("alice", "shop-a", 8),
        ("bob", "shop-a", 3),
        ("alice", "shop-b", 4),
    ] {
        for _ in 0..count {
            let id = format!("p-{n:02}");
            let req = pay(&id, payer, payee, start + n * STEP);
            client.score(with_key(req, &gateway)).await.unwrap();
            if payer == "alice" {
                alice.push(id);
            }
            n += 1;
        }
    }
    // One payment with a card on the block list.
    let mut stolen = pay("p-stolen", "alice", "shop-b", start + n * STEP);
    stolen.funding = proto::Funding::CreditCard as i32;
    stolen.card_fingerprint = Some("card-fp-stolen-01".into());
    let blocked = client
        .score(with_key(stolen, &gateway))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(blocked.action(), Action::Block);
    alice.push("p-stolen".into());
    alice.reverse();

    // Pages of five, newest first; two newer payments arrive after the first page and do
    // not shift the pages after it.
    let of_alice = |token: &str| ListDecisionsRequest {
        account_id: "alice".into(),
        page_size: 5,
        page_token: token.into(),
        ..ListDecisionsRequest::default()
    };
    let first = page(&mut client, &analyst, of_alice("")).await.unwrap();
    assert_eq!(ids(&first), alice[..5]);
    for i in 0..2 {
        let req = pay(&format!("p-new-{i}"), "alice", "shop-b", now_ms() + i);
        client.score(with_key(req, &gateway)).await.unwrap();
    }
    let mut seen = ids(&first);
    let mut token = first.next_page_token;
    while !token.is_empty() {
        let next = page(&mut client, &analyst, of_alice(&token)).await.unwrap();
        assert!(next.decisions.len() <= 5);
        seen.extend(ids(&next));
        token = next.next_page_token;
    }
    assert_eq!(seen, alice, "every decision once, in order");
    let fresh = page(&mut client, &analyst, of_alice("")).await.unwrap();
    assert_eq!(ids(&fresh)[..2], ["p-new-1", "p-new-0"]);

    let summary = &first.decisions[0];
    assert_eq!(summary.decision_id, blocked.decision_id);
    assert_eq!(
        (
            summary.payer_account_id.as_str(),
            summary.payee_account_id.as_str()
        ),
        ("alice", "shop-b")
    );
    assert_eq!(summary.amount_fen, 3_800);
    assert_eq!(summary.risk_score, blocked.risk_score);
    assert!(
        summary.rule_ids.contains(&"blocked_card".to_string()),
        "{summary:?}"
    );

    // The payee side, a time range, an action, a rule, a score.
    let everything = |f: &dyn Fn(&mut ListDecisionsRequest)| {
        let mut req = ListDecisionsRequest {
            page_size: 100,
            ..ListDecisionsRequest::default()
        };
        f(&mut req);
        req
    };
    let shop_a = page(
        &mut client,
        &analyst,
        everything(&|r| r.account_id = "shop-a".into()),
    )
    .await
    .unwrap();
    assert_eq!(shop_a.decisions.len(), 11);
    let window = everything(&|r| {
        r.account_id = "alice".into();
        r.from_ms = start + 2 * STEP;
        r.to_ms = start + 5 * STEP;
    });
    assert_eq!(
        ids(&page(&mut client, &analyst, window).await.unwrap()),
        ["p-04", "p-03", "p-02"]
    );
    // Whatever else the bundled rules and model stop, the filter finds exactly that.
    let of_alice_all = page(
        &mut client,
        &analyst,
        everything(&|r| r.account_id = "alice".into()),
    )
    .await
    .unwrap();
    let blocked_ids: Vec<String> = of_alice_all
        .decisions
        .iter()
        .filter(|d| d.action() == Action::Block)
        .map(|d| d.payment_id.clone())
        .collect();
    assert!(blocked_ids.contains(&"p-stolen".to_string()));
    let blocks = everything(&|r| {
        r.account_id = "alice".into();
        r.action = Action::Block as i32;
    });
    assert_eq!(
        ids(&page(&mut client, &analyst, blocks).await.unwrap()),
        blocked_ids
    );
    let by_rule = everything(&|r| r.rule_id = "blocked_card".into());
    assert_eq!(
        ids(&page(&mut client, &analyst, by_rule).await.unwrap()),
        ["p-stolen"]
    );
    let by_rule_and_account = everything(&|r| {
        r.rule_id = "blocked_card".into();
        r.account_id = "bob".into();
    });
    assert!(page(&mut client, &analyst, by_rule_and_account)
        .await
        .unwrap()
        .decisions
        .is_empty());
    let risky = everything(&|r| r.min_risk_score = blocked.risk_score);
    let risky = page(&mut client, &analyst, risky).await.unwrap();
    assert!(risky
        .decisions
        .iter()
        .all(|d| d.risk_score >= blocked.risk_score));
    assert!(ids(&risky).contains(&"p-stolen".to_string()));
    let all = page(&mut client, &analyst, everything(&|_| {}))
        .await
        .unwrap();
    assert_eq!(all.decisions.len(), 18);
    assert!(all
        .decisions
        .windows(2)
        .all(|w| w[0].event_time_ms >= w[1].event_time_ms));

    // A merchant sees its own collections only, without rule ids; nobody else's.
    let own = page(&mut client, &merchant, everything(&|_| {}))
        .await
        .unwrap();
    assert_eq!(own.decisions.len(), 11);
    assert!(own
        .decisions
        .iter()
        .all(|d| d.payee_account_id == "shop-a" && d.rule_ids.is_empty()));
    let err = page(
        &mut client,
        &merchant,
        everything(&|r| r.account_id = "alice".into()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = page(&mut client, &gateway, everything(&|_| {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = page(
        &mut client,
        &analyst,
        everything(&|r| r.page_token = "nope".into()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await;
}
