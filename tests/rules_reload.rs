//! Shipping a rule change safely: reload by RPC and on file change, broken sets refused with
//! file:line:column, shadow rules recorded but never acted on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{copy_rules, payment, TestServer};

/// The sample payment from a payer, device and IP of its own, so each is scored from the same
/// empty history and a change of action can only come from the rules (the model reads one
/// payer's repeated payments within seconds as card testing).
fn fresh(id: &str) -> fengkong::proto::ScoreRequest {
    let mut p = payment(id);
    if let Some(payer) = p.payer.as_mut() {
        payer.account_id = format!("payer-{id}");
    }
    p.device_id = format!("device-{id}");
    p.ip = format!("203.0.113.{}", id.bytes().map(u32::from).sum::<u32>() % 250);
    p
}
use fengkong::config::Config;
use fengkong::proto::{
    get_decision_request::Key, rule_admin_client::RuleAdminClient, GetDecisionRequest,
    ReloadRulesRequest,
};
use tonic::Code;

pub const BIG_TICKET: &str = r#"
[[rule]]
id = "test_big_ticket"
description = "test rule: any payment of 30 CNY or more"
when = "payment.amount_fen >= 3000"
action = "block"
score = 90
reason_code = "TEST_BIG"
message = "{payment.amount_fen:yuan} CNY is at least 30.00 CNY"
mode = "MODE"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_rpc_and_file_change_with_broken_sets_refused() {
    let data = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    copy_rules(rules.path());
    let server = TestServer::start_with(Config {
        data_dir: data.path().to_owned(),
        rules_dir: Some(rules.path().to_owned()),
        ..Config::default()
    })
    .await;
    let mut client = server.client().await;
    let mut admin = RuleAdminClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();

    let first = client.score(fresh("r-1")).await.unwrap().into_inner();
    let unchanged = admin
        .reload_rules(ReloadRulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!unchanged.changed);
    assert_eq!(unchanged.ruleset_version, first.ruleset_version);
    assert!(unchanged.rules >= 30);

    // A broken file never takes effect, and the error points at it.
    let broken = BIG_TICKET
        .replace(">= 3000", ">=")
        .replace("MODE", "active");
    std::fs::write(rules.path().join("90_test.toml"), broken).unwrap();
    let err = admin.reload_rules(ReloadRulesRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("90_test.toml:5:"),
        "{}",
        err.message()
    );
    let still = client.score(fresh("r-2")).await.unwrap().into_inner();
    assert_eq!(still.ruleset_version, first.ruleset_version);

    // A shadow rule is recorded on the decision but changes nothing.
    std::fs::write(
        rules.path().join("90_test.toml"),
        BIG_TICKET.replace("MODE", "shadow"),
    )
    .unwrap();
    let shadow = admin
        .reload_rules(ReloadRulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(shadow.changed);
    assert_eq!(shadow.shadow_rules, unchanged.shadow_rules + 1);
    let scored = client.score(fresh("r-3")).await.unwrap().into_inner();
    assert_eq!(scored.ruleset_version, shadow.ruleset_version);
    assert_eq!(
        scored.action, first.action,
        "a shadow rule never changes the action: {scored:#?}"
    );
    assert!(scored.reasons.iter().all(|r| r.id != "test_big_ticket"));
    let stored = client
        .get_decision(GetDecisionRequest {
            key: Some(Key::PaymentId("r-3".into())),
        })
        .await
        .unwrap()
        .into_inner();
    let hit = stored
        .shadow_reasons
        .iter()
        .find(|r| r.id == "test_big_ticket")
        .expect("shadow hit recorded");
    assert!(hit.message.contains("38.00 CNY"), "{}", hit.message);

    // Editing the file is enough: the watcher reloads within about a second.
    std::fs::write(
        rules.path().join("90_test.toml"),
        BIG_TICKET.replace("MODE", "active"),
    )
    .unwrap();
    let mut blocked = None;
    for i in 0..50 {
        let resp = client
            .score(payment(&format!("r-watch-{i}")))
            .await
            .unwrap()
            .into_inner();
        if resp.reasons.iter().any(|r| r.id == "test_big_ticket") {
            blocked = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let blocked = blocked.expect("the watcher never picked up the change");
    assert_eq!(blocked.action(), fengkong::proto::Action::Block);
    assert_ne!(blocked.ruleset_version, shadow.ruleset_version);
    server.stop().await;
}

/// Issue 17: an emptied rule file is refused (the code-renting freezes stay), a change in
/// the rule count is listed in the answer, and a FIFO in place of a list file is refused
/// at once instead of stalling every Score.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptied_files_and_fifos_are_refused_and_removed_rules_are_named() {
    let data = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_rule_copy(data.path(), rules.path()).await;
    let mut client = server.client().await;
    let mut admin = RuleAdminClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let before = admin
        .reload_rules(ReloadRulesRequest {})
        .await
        .unwrap()
        .into_inner();
    let renting = rules.path().join("20_code_renting.toml");
    let original = std::fs::read_to_string(&renting).unwrap();

    for emptied in ["", "# rules moved elsewhere\n\n# (nothing here)\n"] {
        std::fs::write(&renting, emptied).unwrap();
        let err = admin.reload_rules(ReloadRulesRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{emptied:?}: {err:?}");
        assert!(
            err.message().contains("20_code_renting.toml") && err.message().contains("no rules"),
            "{}",
            err.message()
        );
    }

    // Deleting rules is allowed, and the answer names what went.
    let without_first: String = {
        let second = original.match_indices("[[rule]]").nth(1).unwrap().0;
        original[second..].to_owned()
    };
    std::fs::write(&renting, &without_first).unwrap();
    let reloaded = admin
        .reload_rules(ReloadRulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reloaded.rules + 1, before.rules);
    assert_eq!(
        reloaded.removed_rules,
        vec!["rent_code_many_payers".to_string()]
    );
    assert!(reloaded.added_rules.is_empty());
    std::fs::write(&renting, &original).unwrap();
    let restored = admin
        .reload_rules(ReloadRulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        restored.added_rules,
        vec!["rent_code_many_payers".to_string()]
    );
    assert_eq!(restored.rules, before.rules);

    // A FIFO nobody writes to, in place of a list file.
    let list = rules.path().join("lists/blocked_devices.txt");
    std::fs::remove_file(&list).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&list)
        .status()
        .unwrap();
    assert!(made.success());
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        admin.reload_rules(ReloadRulesRequest {}),
    )
    .await
    .expect("the reload waited on the FIFO")
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("not a regular file"),
        "{}",
        refused.message()
    );
    // Scoring never stopped: the last good rules are in force.
    let scored = tokio::time::timeout(Duration::from_secs(5), client.score(fresh("fifo-1")))
        .await
        .expect("Score stalled behind the FIFO")
        .unwrap()
        .into_inner();
    assert_eq!(scored.ruleset_version, restored.ruleset_version);
    server.stop().await;
}
