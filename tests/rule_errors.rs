//! Issue 17: a rule that fails at run time never fails open quietly. The decision carries a
//! RULE_ERROR reason with the rule id and the error, the error is counted per rule, and
//! `[policy] on_rule_error` decides: "review" (the default) holds the payment for a
//! person, "ignore" decides without the rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{payment, TestServer};
use fengkong::proto::{self, rule_admin_client::RuleAdminClient, ReloadRulesRequest};

const BROKEN: &str = r#"
[[rule]]
id = "test_average_of_earlier_payments"
description = "test rule: far above the payer's earlier payments (divides by zero on a first payment)"
when = "payment.amount_fen / (payer.count_30d - 1) > 1000000"
action = "block"
score = 90
reason_code = "TEST_AVERAGE"
message = "far above earlier payments"
"#;

fn first_payment(id: &str) -> proto::ScoreRequest {
    let mut p = payment(id);
    p.payer.as_mut().unwrap().account_id = format!("payer-{id}");
    p.device_id = format!("device-{id}");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_block_rule_holds_the_payment_for_review_and_says_why() {
    let data = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_rule_copy(data.path(), rules.path()).await;
    std::fs::write(rules.path().join("60_broken.toml"), BROKEN).unwrap();
    let mut admin = RuleAdminClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let reloaded = admin
        .reload_rules(ReloadRulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reloaded.added_rules,
        vec!["test_average_of_earlier_payments".to_string()]
    );
    let mut client = server.client().await;

    let scored = client
        .score(first_payment("err-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scored.action(), proto::Action::Review, "{scored:#?}");
    let reason = scored
        .reasons
        .iter()
        .find(|r| r.code == "RULE_ERROR")
        .unwrap_or_else(|| panic!("no RULE_ERROR reason: {scored:#?}"));
    assert_eq!(reason.id, "test_average_of_earlier_payments");
    assert_eq!(reason.action(), proto::Action::Review);
    let error = reason
        .evidence
        .iter()
        .find(|e| e.name == "rule_error")
        .expect("the error is in the evidence");
    assert_eq!(error.text, "division by zero");
    // Merchants read plain words, not the rule id or the expression.
    common::assert_no_raw_names(&reason.message, "a RULE_ERROR reason");
    assert!(
        !reason.message.contains("test_average"),
        "{}",
        reason.message
    );
    assert!(!reason.message_zh.is_empty());

    let (_, metrics) = common::http_get(server.metrics_addr, "/metrics").await;
    assert!(
        metrics
            .contains(r#"fengkong_rule_errors_total{rule="test_average_of_earlier_payments"} 1"#),
        "{metrics}"
    );

    // The same payer's second payment divides by 1: the rule runs and (here) does not fire.
    let mut second = first_payment("err-1");
    second.payment_id = "err-2".into();
    let scored = client.score(second).await.unwrap().into_inner();
    assert!(
        scored.reasons.iter().all(|r| r.code != "RULE_ERROR"),
        "{scored:#?}"
    );

    // "ignore": decided without the rule, and the reason is still there.
    let ruleset = rules.path().join("00_ruleset.toml");
    let text = std::fs::read_to_string(&ruleset).unwrap();
    let text = text.replacen("[policy]\n", "[policy]\non_rule_error = \"ignore\"\n", 1);
    std::fs::write(&ruleset, text).unwrap();
    admin.reload_rules(ReloadRulesRequest {}).await.unwrap();
    let scored = client
        .score(first_payment("err-3"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scored.action(), proto::Action::Allow, "{scored:#?}");
    let reason = scored
        .reasons
        .iter()
        .find(|r| r.code == "RULE_ERROR")
        .expect("ignored errors are still shown");
    assert_eq!(reason.action(), proto::Action::Unspecified);
    server.stop().await;
}
