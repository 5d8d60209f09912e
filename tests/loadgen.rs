//! The load generator against the real server: it sends what it says and counts what came back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use fengkong::loadgen::{run, LoadConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_reports_rate_errors_and_percentiles() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let config = LoadConfig {
        addr: server.addr.to_string(),
        rate: 200,
        concurrency: 2,
        duration: Duration::from_millis(500),
        payers: 50,
        payees: 10,
        key: None,
        max_in_flight: 1_000,
        seed: 3,
        deadline: Duration::from_secs(10),
    };
    let report = run(&config).await.unwrap();
    assert_eq!(report.sent, 100);
    assert_eq!(report.ok + report.refused + report.errors, 100);
    // Refusals (admission control on a busy machine) are counted apart from errors, and
    // with a 10 s deadline every decision and refusal comes back within it.
    assert_eq!(report.answered_within_deadline, report.ok + report.refused);
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_code);
    // Open loop on a schedule: the last request is due at 495 ms, so the run cannot go faster
    // than the rate (a slow machine only makes it slower).
    assert!(report.achieved_rps <= 210.0, "{}", report.achieved_rps);
    assert!(report.latency_us.p50 > 0);
    assert!(report.latency_us.p50 <= report.latency_us.p99);
    assert!(report.latency_us.p99 <= report.latency_us.max);
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    for key in [
        "achieved_rps",
        "sent",
        "refused",
        "errors",
        "answered_within_deadline",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            json["latency_us"].get(key).is_some(),
            "{key} missing from {json}"
        );
    }
    server.stop().await;
}
