//! The offline commands as an analyst runs them (simulate, replay, backtest, rules check and
//! test), and parity: replay computes exactly the features the live server computes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::TestServer;
use fengkong::events::{read_events, ReadOptions};
use fengkong::proto::{get_decision_request::Key, GetDecisionRequest};
use fengkong::replay::{replay, scratch_engine, ReplayOptions};
use fengkong::request::request_from_payment;

fn fengkong(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fengkong"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rules_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

fn model_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default.json")
}

#[test]
fn simulate_replay_and_backtest_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.csv");
    let out = dir.path().join("features.csv");
    let (ok, _, err) = fengkong(&[
        "simulate",
        "--payments",
        "3000",
        "--seed",
        "5",
        "--out",
        events.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");

    let (ok, _, err) = fengkong(&[
        "replay",
        "--events",
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("replayed 3000 payments"), "{err}");
    let mut reader = csv::Reader::from_path(&out).unwrap();
    let header = reader.headers().unwrap().clone();
    assert_eq!(&header[0], "payment_id");
    assert_eq!(&header[1], "label");
    assert!(header.iter().any(|h| h == "payee.distinct_payers_1h"));
    assert_eq!(header.iter().next_back(), Some("event_time"));
    assert!(header.iter().any(|h| h == "action"));
    assert!(
        !header.iter().any(|h| h == "score"),
        "no model, no score column"
    );
    assert_eq!(reader.records().count(), 3000);

    let (ok, report, err) = fengkong(&[
        "backtest",
        "--rules",
        "rules",
        "--baseline",
        "rules",
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    for expected in [
        "reviewed or blocked",
        "precision",
        "rent_code_many_payers",
        "against baseline",
        "newly allowed: 0 payments",
        "every rule has the same hits as in the baseline",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }
    assert_eq!(
        err.matches("rules: 3000/3000").count(),
        1,
        "progress is shown, the last line once: {err}"
    );
}

#[test]
fn features_list_shows_every_name_with_its_description_and_labels() {
    let (ok, out, err) = fengkong(&["features", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "payee.distinct_payers_1h  [count]\n    distinct payers paying this payee in the last hour\n    \
             label: different payers in the last hour\n    label_zh: 过去1小时内的不同付款人\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("payee.kind  [text]"),
        "request fields too: {out}"
    );
    let schema = fengkong::vars::schema(&fengkong::features::FeatureSet::defaults());
    assert_eq!(out.matches("label_zh: ").count(), schema.len());
}

#[test]
fn a_bad_row_stops_the_run_with_its_line_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.csv");
    std::fs::write(
        &events,
        "payment_id,event_time,payer_id,payee_id,amount_fen,label\n\
         p1,2026-03-01T10:00:00Z,a,b,100,0\n\
         p2,2026-03-01T10:01:00Z,a,b,-5,0\n\
         p3,2026-03-01T10:02:00Z,a,b,200,1\n",
    )
    .unwrap();
    let out = dir.path().join("out.csv");
    let (ok, _, err) = fengkong(&[
        "replay",
        "--events",
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("line 3") && err.contains("amount_fen"),
        "{err}"
    );
    let (ok, _, err) = fengkong(&[
        "replay",
        "--events",
        events.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--skip-bad-rows",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("skipped 1 bad rows"), "{err}");
    assert_eq!(csv::Reader::from_path(&out).unwrap().records().count(), 2);
}

#[test]
fn rules_check_lists_every_error_and_rules_test_runs_the_cases() {
    let (ok, out, err) = fengkong(&["rules", "check", "rules"]);
    assert!(ok, "{err}");
    assert!(out.contains("rules compiled"), "{out}");
    let (ok, out, err) = fengkong(&["rules", "test", "rules"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 failed"), "{out}");
    assert!(
        out.ends_with("untested rules\n"),
        "ends with a newline: {out:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[rule]]\nid = \"a\"\ndescription = \"a\"\nwhen = \"payee.distinct_payer_1h > 3\"\naction = \"review\"\nreason_code = \"A\"\nmessage = \"a\"\n\n\
         [[rule]]\nid = \"b\"\ndescription = \"b\"\nwhen = \"payee.kind > 3\"\naction = \"review\"\nreason_code = \"B\"\nmessage = \"b\"\n",
    )
    .unwrap();
    let (ok, _, err) = fengkong(&["rules", "check", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bad.toml:4:9"), "{err}");
    assert!(
        err.contains("payee.distinct_payers_1h"),
        "a hint names the right feature: {err}"
    );
    assert!(
        err.contains("bad.toml:12:"),
        "the second error is listed too: {err}"
    );
}

/// The same payments through the live gRPC server and through `replay` give identical
/// features: there is one code path, so there is no train/serve skew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_features_equal_the_live_server_features() {
    let dir = tempfile::tempdir().unwrap();
    let events_path = dir.path().join("events.csv");
    let config = fengkong::simulate::SimConfig {
        payments: 400,
        seed: 11,
        // Recent enough that the server accepts the event times (they must not be in the future).
        start_ms: common::now_ms() - 10 * 86_400_000,
        days: 5,
        ..Default::default()
    };
    fengkong::simulate::simulate_to_file(&config, &events_path).unwrap();
    let mut events = read_events(&events_path, &ReadOptions::default())
        .unwrap()
        .events;
    // Labels off: outcome timing is covered by the feature store's own tests.
    for e in &mut events {
        e.label = None;
    }

    let (_tmp, mut engine) = scratch_engine(Some(&rules_dir()), None, Some(&model_path())).unwrap();
    let names = engine.feature_names().to_vec();
    let mut offline = Vec::new();
    let options = ReplayOptions {
        label_delay_ms: 0,
        has_label_reported_at: true,
    };
    replay(&mut engine, &events, &options, &mut |_, _| {}, |row| {
        offline.push((
            row.event.payment.payment_id.clone(),
            row.features.to_vec(),
            row.response.clone(),
        ));
        Ok(())
    })
    .unwrap();

    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path()).await;
    let mut client = server.client().await;
    for event in &events {
        client
            .score(request_from_payment(&event.payment))
            .await
            .unwrap();
    }
    for (payment_id, features, offline_response) in offline {
        let stored = client
            .get_decision(GetDecisionRequest {
                key: Some(Key::PaymentId(payment_id.clone())),
            })
            .await
            .unwrap()
            .into_inner();
        let live: Vec<f64> = stored.features.iter().map(|f| f.value).collect();
        let live_names: Vec<&str> = stored.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            live_names,
            names.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(live, features, "features differ for {payment_id}");
        let live_response = stored.response.unwrap();
        assert_eq!(
            live_response.action, offline_response.action,
            "action differs for {payment_id}"
        );
        assert_eq!(
            live_response.risk_score, offline_response.risk_score,
            "risk differs for {payment_id}"
        );
        assert_eq!(
            live_response.reasons, offline_response.reasons,
            "reasons differ for {payment_id}"
        );
        assert_eq!(live_response.model_version, offline_response.model_version);
    }
    server.stop().await;
}
