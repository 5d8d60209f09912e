//! Issue 17: the data dir on a small tmpfs, filled up while the server runs. Writes are
//! refused with a clear UNAVAILABLE before sled meets the full disk, everything acknowledged
//! stays readable, health says NOT_SERVING, and once space is freed writes resume by
//! themselves. Needs root (to mount the tmpfs); skipped with a notice otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{payment, TestServer};
use fengkong::config::Config;
use fengkong::proto::{get_decision_request::Key, GetDecisionRequest};
use tonic::Code;
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

/// A tmpfs mounted for the test, unmounted however it ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_mib: u64) -> Option<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

async fn serving(server: &TestServer) -> ServingStatus {
    let channel = tonic::transport::Endpoint::new(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    answer.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself() {
    let root = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = Tmpfs::mount(root.path(), 64) else {
        eprintln!("SKIPPED a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself: cannot mount a tmpfs (needs root)");
        return;
    };
    let data = root.path().join("data");
    let server = TestServer::start_with(Config {
        data_dir: data.clone(),
        sled_cache_mib: 8,
        min_free_disk_mib: 16,
        ..Config::default()
    })
    .await;
    let mut client = server.client().await;
    for i in 0..20 {
        client.score(payment(&format!("full-{i}"))).await.unwrap();
    }
    assert_eq!(serving(&server).await, ServingStatus::Serving);

    // Fill the disk to below the 16 MiB threshold.
    let ballast = root.path().join("ballast");
    {
        let mut file = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while fengkong::health::free_bytes(root.path()).unwrap() > 8 << 20 {
            file.write_all(&chunk).unwrap();
        }
        file.sync_all().unwrap();
    }
    let mut refused = None;
    for i in 0..40 {
        match client.score(payment(&format!("while-full-{i}"))).await {
            Err(e) if e.code() == Code::Unavailable => {
                refused = Some(e);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let refused = refused.expect("writes were never refused on a full disk");
    assert!(
        refused.message().contains("min_free_disk_mib"),
        "{}",
        refused.message()
    );
    // Every acknowledged decision is still readable.
    for i in 0..20 {
        let id = format!("full-{i}");
        let read = client
            .get_decision(GetDecisionRequest {
                key: Some(Key::PaymentId(id.clone())),
            })
            .await
            .unwrap_or_else(|e| panic!("{id} unreadable while the disk is full: {e:?}"));
        assert_eq!(read.into_inner().response.unwrap().payment_id, id);
    }
    assert_eq!(serving(&server).await, ServingStatus::NotServing);
    let (status, body) = common::http_get(server.metrics_addr, "/healthz").await;
    assert!(
        status.contains("503") && body.contains("min_free_disk_mib"),
        "{status} {body}"
    );
    let (_, metrics) = common::http_get(server.metrics_addr, "/metrics").await;
    assert!(metrics.contains("fengkong_writes_refused 1"), "{metrics}");

    // Space comes back: writes resume without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let mut resumed = false;
    for i in 0..40 {
        if client.score(payment(&format!("after-{i}"))).await.is_ok() {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "writes never resumed after space was freed");
    assert_eq!(serving(&server).await, ServingStatus::Serving);
    let (status, _) = common::http_get(server.metrics_addr, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    server.stop().await;
}
