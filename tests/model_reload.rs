//! Swapping the model without a restart: by RPC and on file change; a corrupt file or one
//! trained on other features is refused and the current model stays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{payment, TestServer};
use fengkong::config::Config;
use fengkong::engine::Engine;
use fengkong::features::FeatureSet;
use fengkong::model::ModelArtifact;
use fengkong::proto::{model_admin_client::ModelAdminClient, ReloadModelRequest};
use tonic::Code;

fn bundled() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_rpc_and_file_change_with_bad_files_refused() {
    let data = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let path = models.path().join("model.json");
    std::fs::copy(bundled(), &path).unwrap();
    let server = TestServer::start_with(Config {
        data_dir: data.path().to_owned(),
        model_path: Some(path.clone()),
        ..Config::default()
    })
    .await;
    let mut client = server.client().await;
    let mut admin = ModelAdminClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();

    let first = client.score(payment("m-1")).await.unwrap().into_inner();
    let same = admin
        .reload_model(ReloadModelRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!same.changed);
    assert_eq!(same.model_version, first.model_version);

    // A truncated file is refused, by RPC and by the watcher alike.
    let text = std::fs::read(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let err = admin.reload_model(ReloadModelRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("truncated"), "{}", err.message());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = client.score(payment("m-2")).await.unwrap().into_inner();
    assert_eq!(still.model_version, first.model_version);

    // A new valid model is picked up from the file within about a second.
    let names = FeatureSet::defaults().names().to_vec();
    let (mut artifact, _) = ModelArtifact::from_slice_bound(&text, &names).unwrap();
    artifact.created_at_ms += 1;
    artifact.version = artifact.compute_version().unwrap();
    artifact.save(&path).unwrap();
    let mut swapped = None;
    for i in 0..50 {
        let resp = client
            .score(payment(&format!("m-w-{i}")))
            .await
            .unwrap()
            .into_inner();
        if resp.model_version != first.model_version {
            swapped = Some(resp.model_version);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(swapped.as_deref(), Some(artifact.version()));
    server.stop().await;
}

#[test]
fn a_model_trained_on_other_features_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read(bundled()).unwrap();
    let names = FeatureSet::defaults().names().to_vec();
    let (mut artifact, _) = ModelArtifact::from_slice_bound(&text, &names).unwrap();
    artifact.feature_names[0] = "payer.count_2h".into();
    artifact.version = artifact.compute_version().unwrap();
    let path = dir.path().join("other.json");
    artifact.save(&path).unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        model_path: Some(path),
        ..Config::default()
    };
    let err = Engine::open(&config)
        .err()
        .expect("mismatched model must be refused")
        .to_string();
    // Models bind to features by name: the one the engine does not compute is named.
    assert!(err.contains("payer.count_2h"), "{err}");
}

/// Issue 17: a FIFO in place of the model file is refused at once; scoring never waits on it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_place_of_the_model_is_refused_without_stalling_scores() {
    let data = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let path = models.path().join("model.json");
    std::fs::copy(bundled(), &path).unwrap();
    let server = TestServer::start_with(Config {
        data_dir: data.path().to_owned(),
        model_path: Some(path.clone()),
        watch_rules: false,
        ..Config::default()
    })
    .await;
    let mut client = server.client().await;
    let mut admin = ModelAdminClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        admin.reload_model(ReloadModelRequest {}),
    )
    .await
    .expect("the model reload waited on the FIFO")
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("not a regular file"),
        "{}",
        err.message()
    );
    tokio::time::timeout(Duration::from_secs(5), client.score(payment("fifo-m")))
        .await
        .expect("Score stalled behind the FIFO")
        .unwrap();
    server.stop().await;
}
