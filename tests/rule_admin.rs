//! `RuleAdmin.RuleStats`, `Backtest`, `ShipRules` and `PromoteRules` end to end over gRPC,
//! on a real server with its own copy of the rule pack: stats read from the indexes with
//! outcomes reported since; a backtest of a lowered threshold on the stored traffic finds
//! that rule's extra hits and the payments it newly stops; a shipped shadow rule's hits show
//! in the stats, and promoting it makes it active, both in the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{collection, daytime_hour_ms, payment, with_key, TestServer};
use fengkong::auth::{add_key, Role};
use fengkong::proto::{
    self, audit_client::AuditClient, rule_admin_client::RuleAdminClient, Action,
    ListAuditEntriesRequest, OutcomeKind,
};
use tonic::transport::Channel;
use tonic::Code;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

struct Keys {
    gateway: String,
    analyst: String,
    analyst_id: String,
    merchant: String,
}

fn keys(dir: &std::path::Path) -> Keys {
    let (_, gateway) = add_key(dir, Role::Gateway, None, 0).unwrap();
    let (record, analyst) = add_key(dir, Role::Analyst, None, 0).unwrap();
    let (_, merchant) = add_key(dir, Role::Merchant, Some("code-a".into()), 0).unwrap();
    Keys {
        gateway,
        analyst,
        analyst_id: record.id,
        merchant,
    }
}

async fn channel(server: &TestServer) -> Channel {
    server.client().await;
    Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Twelve collections into personal code `code`, one a minute from `at`, each from a new
/// payer: `payee.distinct_payers_1h` is 1, 2, ... 12.
async fn collections(
    client: &mut proto::risk_engine_client::RiskEngineClient<Channel>,
    gateway: &str,
    code: &str,
    at: i64,
) -> Vec<proto::ScoreResponse> {
    let mut out = Vec::new();
    for n in 0..12 {
        let id = format!("{code}-{n:02}");
        let req = collection(code, &id, n, at + n as i64 * MINUTE);
        out.push(
            client
                .score(with_key(req, gateway))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    out
}

fn stat<'a>(stats: &'a proto::RuleStatsResponse, id: &str) -> &'a proto::RuleStat {
    stats
        .rules
        .iter()
        .find(|r| r.rule_id == id)
        .unwrap_or_else(|| panic!("no stats for `{id}`: {stats:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_stats_count_hits_actions_amounts_and_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let server = TestServer::start_with_rule_copy(dir.path(), rules_dir.path()).await;
    let mut client = server.client().await;
    let channel = channel(&server).await;
    let mut admin = RuleAdminClient::new(channel);

    // Hour 0: six ordinary payments; hour 1: two with a card on the block list.
    let start = daytime_hour_ms();
    for n in 0..6 {
        let mut req = payment(&format!("plain-{n}"));
        req.event_time_ms = start + n * MINUTE;
        client.score(with_key(req, &keys.gateway)).await.unwrap();
    }
    for n in 0..2 {
        let mut req = payment(&format!("stolen-{n}"));
        req.event_time_ms = start + HOUR + n * MINUTE;
        req.amount_fen = 10_000 + n * 1_000;
        req.funding = proto::Funding::CreditCard as i32;
        req.card_fingerprint = Some("card-fp-stolen-01".into());
        let blocked = client
            .score(with_key(req, &keys.gateway))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(blocked.action(), Action::Block);
    }
    // One stolen-card payment and one ordinary payment turn out fraud; the other stolen-card
    // payment genuine.
    for (id, outcome) in [
        ("stolen-0", OutcomeKind::Fraud),
        ("plain-3", OutcomeKind::Chargeback),
        ("stolen-1", OutcomeKind::Genuine),
    ] {
        let req = proto::ReportOutcomeRequest {
            payment_id: id.into(),
            outcome: outcome as i32,
            reported_at_ms: start + 2 * HOUR,
        };
        client
            .report_outcome(with_key(req, &keys.gateway))
            .await
            .unwrap();
    }

    let period = proto::RuleStatsRequest {
        from_ms: start,
        to_ms: start + 3 * HOUR,
    };
    let stats = admin
        .rule_stats(with_key(period, &keys.analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.decisions, 8);
    assert_eq!(stats.frauds, 2);
    assert!(!stats.truncated, "{stats:?}");
    assert_eq!(stats.hours.len(), 3);
    assert_eq!(
        stats.hours.iter().map(|h| h.decisions).collect::<Vec<_>>(),
        [6, 2, 0]
    );
    assert_eq!(stats.hours[1].blocked, 2);
    assert_eq!(stats.risk_score_histogram.iter().sum::<u64>(), 8);

    let card = stat(&stats, "blocked_card");
    assert_eq!(card.mode, "active");
    assert_eq!(card.hits, 2);
    assert_eq!(card.share, 0.25);
    assert_eq!(
        card.actions,
        [proto::ActionCount {
            action: Action::Block as i32,
            count: 2
        }]
    );
    assert_eq!((card.amount_fen, card.amount_hits), (21_000, 2));
    assert_eq!((card.frauds_caught, card.genuine_hits), (1, 1));
    assert_eq!(card.precision, 0.5);
    assert_eq!(card.frauds_missed, 1);
    assert_eq!(card.hourly_hits, [0, 2, 0]);
    // Every rule of the set is listed, shadow ones too, fired or not.
    let shadow = stat(&stats, "personal_code_business_use");
    assert_eq!((shadow.mode.as_str(), shadow.hits), ("shadow", 0));
    assert_eq!(shadow.frauds_missed, 2);

    // The period ends just after the newest decision unless given.
    let default = admin
        .rule_stats(with_key(proto::RuleStatsRequest::default(), &keys.analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default.to_ms, start + HOUR + MINUTE + 1);
    assert_eq!(default.decisions, 8);

    let too_long = proto::RuleStatsRequest {
        from_ms: start - 40 * 24 * HOUR,
        to_ms: start,
    };
    let refused = admin
        .rule_stats(with_key(too_long, &keys.analyst))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    for key in [&keys.gateway, &keys.merchant] {
        let denied = admin
            .rule_stats(with_key(proto::RuleStatsRequest::default(), key))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    server.stop().await;
}

/// `00_ruleset.toml` of the pack with `rent_code_payers_1h` (30) set to `payers`.
fn lowered_threshold(rules_dir: &std::path::Path, payers: u32) -> (String, String) {
    let text = std::fs::read_to_string(rules_dir.join("00_ruleset.toml")).unwrap();
    let old = "rent_code_payers_1h = { value = 30,";
    assert!(text.contains(old), "the pack's threshold moved");
    let new = format!("rent_code_payers_1h = {{ value = {payers},");
    ("00_ruleset.toml".to_string(), text.replace(old, &new))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_of_a_lowered_threshold_finds_its_extra_hits_and_newly_stopped_payments() {
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    // The model still scores every payment (live and in the backtest), at a tenth of its
    // usual weight, so the rules decide these collections.
    common::copy_rules(rules_dir.path());
    let server = TestServer::start_with(fengkong::config::Config {
        data_dir: dir.path().to_owned(),
        rules_dir: Some(rules_dir.path().to_owned()),
        watch_rules: false,
        model_weight: 10.0,
        ..fengkong::config::Config::default()
    })
    .await;
    let mut client = server.client().await;
    let mut admin = RuleAdminClient::new(channel(&server).await);

    let start = daytime_hour_ms();
    let live = collections(&mut client, &keys.gateway, "code-a", start).await;
    let fraud = proto::ReportOutcomeRequest {
        payment_id: "code-a-11".into(),
        outcome: OutcomeKind::Fraud as i32,
        reported_at_ms: start + HOUR,
    };
    client
        .report_outcome(with_key(fraud, &keys.gateway))
        .await
        .unwrap();

    let candidate = lowered_threshold(rules_dir.path(), 5);
    let req = proto::BacktestRequest {
        files: [candidate.clone()].into(),
        from_ms: start,
        to_ms: start + HOUR,
    };
    let report = admin
        .backtest(with_key(req, &keys.analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.decisions, 12);
    assert!(!report.truncated, "{report:?}");
    assert_ne!(report.candidate_version, report.live_version);
    let rule = report
        .rules
        .iter()
        .find(|r| r.rule_id == "rent_code_many_payers")
        .unwrap();
    // More than 5 distinct payers from the 6th collection on: collections 6 to 12.
    assert_eq!((rule.hits, rule.live_hits), (7, 0), "{rule:?}");
    assert_eq!((rule.fraud_hits, rule.genuine_hits), (1, 0));
    assert_eq!(rule.precision, 1.0);
    assert_eq!(rule.recall, 1.0);
    assert_eq!(rule.amount_caught_fen, 20_000);
    // The rule asks for review: each of the 7 the live set let through is newly stopped.
    let stopped_live =
        |r: &proto::ScoreResponse| matches!(r.action(), Action::Review | Action::Block);
    let newly: Vec<&str> = live[5..]
        .iter()
        .filter(|r| !stopped_live(r))
        .map(|r| r.payment_id.as_str())
        .collect();
    assert!(
        !newly.is_empty(),
        "the live set already stopped them all: {live:?}"
    );
    let change = report.newly_stopped.as_ref().unwrap();
    assert_eq!(change.payments, newly.len() as u64, "{change:?}");
    assert_eq!(change.amount_fen, 20_000 * newly.len() as i64);
    assert_eq!(change.frauds, u64::from(newly.contains(&"code-a-11")));
    let mut sampled: Vec<&str> = change
        .sample
        .iter()
        .map(|p| p.payment_id.as_str())
        .collect();
    sampled.reverse();
    assert_eq!(sampled, newly, "newest first");
    assert!(change.sample.iter().all(|p| {
        [Action::Review as i32, Action::Block as i32].contains(&p.candidate_action)
            && p.rule_ids.contains(&"rent_code_many_payers".to_string())
    }));
    assert_eq!(
        report.newly_allowed.as_ref().unwrap().payments,
        0,
        "{report:?}"
    );
    // The same from the command line, as an analyst's laptop would run it: the candidate
    // folder's files go to the server, the report comes back as text.
    let candidates = tempfile::tempdir().unwrap();
    common::copy_rules(candidates.path());
    std::fs::write(candidates.path().join(&candidate.0), &candidate.1).unwrap();
    let (addr, key) = (server.addr.to_string(), keys.analyst.clone());
    let folder = candidates.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fengkong"))
            .args(["backtest", "--server", &addr, "--key", &key, "--rules"])
            .arg(&folder)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("12 stored decisions"), "{printed}");
    let line = printed
        .lines()
        .find(|l| l.starts_with("rent_code_many_payers "))
        .unwrap_or_else(|| panic!("no line for the rule: {printed}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[1..5], ["active", "7", "0", "1"], "{line}");
    let newly_line = format!("newly stopped: {} payments", newly.len());
    assert!(printed.contains(&newly_line), "{printed}");
    let denied = std::process::Command::new(env!("CARGO_BIN_EXE_fengkong"))
        .args(["backtest", "--server", &server.addr.to_string(), "--rules"])
        .arg(candidates.path())
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("UNAUTHENTICATED"));

    // Nothing live changed: a payment scored now is decided by the live threshold.
    let after = collections(&mut client, &keys.gateway, "code-b", start + 2 * HOUR).await;
    assert!(after[5..]
        .iter()
        .all(|r| !r.reasons.iter().any(|x| x.id == "rent_code_many_payers")));

    // A candidate that does not compile: the errors a reload gives for the same file.
    let broken = (
        "90_broken.toml".to_string(),
        "[[rule]]\nid = \"broken\"\nwhen = \"payee.no_such_feature > 3\"\naction = \"review\"\nscore = 10\nreason_code = \"X\"\nmessage = \"x\"\n".to_string(),
    );
    let req = proto::BacktestRequest {
        files: [broken.clone()].into(),
        ..Default::default()
    };
    let refused = admin
        .backtest(with_key(req, &keys.analyst))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let position = format!("{}:3:", rules_dir.path().join("90_broken.toml").display());
    assert!(
        refused.message().contains(&position),
        "{}",
        refused.message()
    );
    std::fs::write(rules_dir.path().join(&broken.0), &broken.1).unwrap();
    let reload = admin
        .reload_rules(with_key(proto::ReloadRulesRequest {}, &keys.analyst))
        .await
        .unwrap_err();
    assert_eq!(reload.message(), refused.message());
    std::fs::remove_file(rules_dir.path().join(&broken.0)).unwrap();

    let denied = admin
        .backtest(with_key(proto::BacktestRequest::default(), &keys.merchant))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    server.stop().await;
}

const CANDIDATE: &str = r#"# A stricter code-renting check, tried in shadow first.
[[rule]]
id = "rent_code_five_payers"
description = "more than five payers into a personal code in an hour"
when = '''payee.kind == "PERSONAL" && payee.distinct_payers_1h > 5'''
action = "review"
score = 30
reason_code = "RENT_CODE"
message = "{payee.distinct_payers_1h} payers in an hour"
message_zh = "1小时内 {payee.distinct_payers_1h} 个付款人"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipped_shadow_rule_shows_its_hits_and_is_promoted_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let server = TestServer::start_with_rule_copy(dir.path(), rules_dir.path()).await;
    let mut client = server.client().await;
    let channel = channel(&server).await;
    let mut admin = RuleAdminClient::new(channel.clone());
    let mut audit = AuditClient::new(channel);

    let ship = proto::ShipRulesRequest {
        files: [("90_candidates.toml".to_string(), CANDIDATE.to_string())].into(),
        note: "stricter code renting, watch for a week".into(),
    };
    let shipped = admin
        .ship_rules(with_key(ship.clone(), &keys.analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shipped.rule_ids, ["rent_code_five_payers"]);
    let written = std::fs::read_to_string(rules_dir.path().join("90_candidates.toml")).unwrap();
    assert!(written.contains("mode = \"shadow\""), "{written}");
    assert!(written.starts_with("# A stricter code-renting check"));

    let start = daytime_hour_ms();
    let decided = collections(&mut client, &keys.gateway, "code-s", start).await;
    // In shadow: recorded, never deciding.
    assert!(decided
        .iter()
        .all(|r| !r.reasons.iter().any(|x| x.id == "rent_code_five_payers")));
    let period = proto::RuleStatsRequest {
        from_ms: start,
        to_ms: start + HOUR,
    };
    let stats = admin
        .rule_stats(with_key(period, &keys.analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.ruleset_version, shipped.ruleset_version);
    let candidate = stat(&stats, "rent_code_five_payers");
    assert_eq!((candidate.mode.as_str(), candidate.hits), ("shadow", 7));
    assert_eq!(candidate.amount_fen, 7 * 20_000);
    assert_eq!(candidate.hourly_hits, [7]);

    // A backtest of the live set itself decides every stored payment as it was decided,
    // with the model at full weight: nothing newly stopped or allowed.
    let same = proto::BacktestRequest {
        from_ms: start,
        to_ms: start + HOUR,
        ..Default::default()
    };
    let report = admin
        .backtest(with_key(same, &keys.analyst))
        .await
        .unwrap()
        .into_inner();
    let stopped = decided
        .iter()
        .filter(|r| matches!(r.action(), Action::Review | Action::Block))
        .count() as u64;
    assert_eq!(report.candidate_version, report.live_version);
    assert_eq!((report.decisions, report.live_stopped), (12, stopped));
    assert_eq!(report.candidate_stopped, stopped);
    assert_eq!(report.newly_stopped.unwrap().payments, 0);
    assert_eq!(report.newly_allowed.unwrap().payments, 0);
    let shadow = report
        .rules
        .iter()
        .find(|r| r.rule_id == "rent_code_five_payers")
        .unwrap();
    assert_eq!(
        (shadow.mode.as_str(), shadow.hits, shadow.live_hits),
        ("shadow", 7, 7)
    );

    // A file with active rules is never overwritten by a ship.
    let over = proto::ShipRulesRequest {
        files: [("20_code_renting.toml".to_string(), CANDIDATE.to_string())].into(),
        note: "x".into(),
    };
    let refused = admin
        .ship_rules(with_key(over, &keys.analyst))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let unnoted = proto::PromoteRulesRequest {
        rule_ids: vec!["rent_code_five_payers".into()],
        note: String::new(),
    };
    let refused = admin
        .promote_rules(with_key(unnoted, &keys.analyst))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    let promote = proto::PromoteRulesRequest {
        rule_ids: vec!["rent_code_five_payers".into()],
        note: "a week in shadow: 7 of 7 hits were code renting".into(),
    };
    let promoted = admin
        .promote_rules(with_key(promote, &keys.analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoted.files, ["90_candidates.toml"]);
    let written = std::fs::read_to_string(rules_dir.path().join("90_candidates.toml")).unwrap();
    assert!(written.contains("mode = \"active\""), "{written}");
    let later = collections(&mut client, &keys.gateway, "code-t", start + 2 * HOUR).await;
    assert!(later[5..]
        .iter()
        .all(|r| r.reasons.iter().any(|x| x.id == "rent_code_five_payers")));

    let entries = audit
        .list_audit_entries(with_key(ListAuditEntriesRequest::default(), &keys.analyst))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let by = format!("analyst:{}", keys.analyst_id);
    let of = |action: &str| {
        entries
            .iter()
            .find(|e| e.action == action)
            .unwrap_or_else(|| panic!("no `{action}` entry: {entries:?}"))
    };
    let ship_entry = of("rules_shipped");
    assert_eq!(ship_entry.by, by);
    assert_eq!(ship_entry.ruleset_version, shipped.ruleset_version);
    assert_eq!(ship_entry.note, ship.note);
    assert_eq!(ship_entry.rule_ids, ["rent_code_five_payers"]);
    let promote_entry = of("rules_promoted");
    assert_eq!(promote_entry.by, by);
    assert_eq!(promote_entry.ruleset_version, promoted.ruleset_version);
    assert_ne!(promoted.ruleset_version, shipped.ruleset_version);

    let denied = admin
        .ship_rules(with_key(ship, &keys.merchant))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    server.stop().await;
}
