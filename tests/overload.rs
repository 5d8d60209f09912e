//! Issue 17: admission control. A burst the engine cannot serve within the queue bound is
//! refused at once with RESOURCE_EXHAUSTED and a retry-after hint (counted in metrics)
//! instead of queueing every caller past its deadline; once the burst is over, calls are
//! served normally again by themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{payment, TestServer};
use fengkong::config::Config;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_queue_bound_is_refused_fast_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(Config {
        data_dir: dir.path().to_owned(),
        // A bound one Score's work long: any real queue exceeds it.
        max_queue_wait_ms: 1,
        ..Config::default()
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.client().await);
    }
    // A few calls one at a time, so the service time is measured.
    for i in 0..20 {
        clients[0]
            .score(payment(&format!("warm-{i}")))
            .await
            .unwrap();
    }

    let mut burst = tokio::task::JoinSet::new();
    for i in 0..600 {
        let mut client = clients[i % clients.len()].clone();
        burst.spawn(async move {
            let mut request = tonic::Request::new(payment(&format!("burst-{i}")));
            request.set_timeout(Duration::from_secs(30));
            client.score(request).await
        });
    }
    let (mut served, mut refused, mut other) = (0, 0, Vec::new());
    while let Some(answer) = burst.join_next().await {
        match answer.unwrap() {
            Ok(_) => served += 1,
            Err(status) if status.code() == Code::ResourceExhausted => {
                refused += 1;
                let hint = fengkong::grpc::retry_after(&status)
                    .unwrap_or_else(|| panic!("no retry-after hint in {status:?}"));
                assert!(
                    hint > Duration::ZERO && hint < Duration::from_secs(30),
                    "{hint:?}"
                );
                assert!(status.metadata().get("retry-after-ms").is_some());
                assert!(
                    status.message().contains("overloaded"),
                    "{}",
                    status.message()
                );
            }
            Err(status) => other.push(status),
        }
    }
    assert!(other.is_empty(), "only decisions or refusals: {other:?}");
    assert!(
        refused > 0,
        "600 at once past a 1 ms bound, and nothing was refused"
    );
    assert!(served > 0, "admission must not refuse everything");

    let (_, metrics) = common::http_get(server.metrics_addr, "/metrics").await;
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fengkong_overload_refusals_total "))
        .expect("refusals exported")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(counted, refused);
    assert!(
        metrics.contains(
            r#"fengkong_calls_total{method="Score",code="RESOURCE_EXHAUSTED",action=""}"#
        ),
        "{metrics}"
    );

    // The burst is over: a call is served again, without any restart or reset.
    for i in 0..5 {
        clients[0]
            .score(payment(&format!("after-{i}")))
            .await
            .unwrap();
    }
    server.stop().await;
}
