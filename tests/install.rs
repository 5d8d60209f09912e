//! The newcomer's path: the `fengkong` binary copied out of the repository, as
//! `cargo install --path .` leaves it, run from an empty folder, serves with the rules,
//! features and model it carries; `--rules-dir`, `--model` and `--features` replace them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::payment;
use fengkong::proto::risk_engine_client::RiskEngineClient;

/// The built binary, copied into `dir/bin`: nothing of the repository is next to it.
fn installed(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let to = bin.join("fengkong");
    std::fs::copy(env!("CARGO_BIN_EXE_fengkong"), &to).unwrap();
    to
}

/// `fengkong serve` in `cwd` on free ports; returns the process and its gRPC address.
fn serve(binary: &Path, cwd: &Path, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(binary)
        .current_dir(cwd)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(cwd.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let addr = common::announced_addr(&mut child);
    (child, addr)
}

fn stop(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

async fn score_one(addr: &str) -> fengkong::proto::ScoreResponse {
    let mut client = RiskEngineClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    client
        .score(payment("install-1"))
        .await
        .unwrap()
        .into_inner()
}

fn bundled_ruleset_version() -> String {
    let schema = fengkong::vars::schema(&fengkong::features::FeatureSet::defaults());
    fengkong::bundled::rules(&schema)
        .unwrap()
        .version()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_binary_serves_from_an_empty_folder_on_what_it_carries() {
    let install = tempfile::tempdir().unwrap();
    let binary = installed(install.path());
    let cwd = tempfile::tempdir().unwrap();
    let (server, addr) = serve(&binary, cwd.path(), &[]);
    let scored = score_one(&addr).await;
    stop(server);
    assert_eq!(scored.ruleset_version, bundled_ruleset_version());
    let schema = fengkong::features::FeatureSet::defaults();
    let (model, _) = fengkong::bundled::model(schema.names()).unwrap();
    assert_eq!(scored.model_version, model.version());
    assert!(
        cwd.path().join("data").is_dir(),
        "data goes to ./data by default"
    );
    // A log written to a file has no terminal colour codes.
    let log = std::fs::read_to_string(cwd.path().join("stderr.log")).unwrap();
    assert!(log.contains("NO API KEYS"), "{log}");
    assert!(!log.contains('\x1b'), "ANSI codes in a log file: {log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_model_and_features_flags_replace_the_bundled_ones() {
    let install = tempfile::tempdir().unwrap();
    let binary = installed(install.path());
    let cwd = tempfile::tempdir().unwrap();
    let rules = cwd.path().join("my-rules");
    common::copy_rules(&rules);
    let ruleset = rules.join("00_ruleset.toml");
    let text = std::fs::read_to_string(&ruleset).unwrap();
    std::fs::write(
        &ruleset,
        text.replace("label = \"default-2026-11\"", "label = \"mine\""),
    )
    .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = cwd.path().join("model.json");
    std::fs::copy(root.join("models/default.json"), &model).unwrap();
    let features = cwd.path().join("features.toml");
    std::fs::copy(root.join("src/features/default_features.toml"), &features).unwrap();
    let flags = [
        "--rules-dir",
        "my-rules",
        "--model",
        "model.json",
        "--features",
        "features.toml",
    ];
    let (server, addr) = serve(&binary, cwd.path(), &flags);
    let scored = score_one(&addr).await;
    stop(server);
    assert!(
        scored.ruleset_version.starts_with("mine@"),
        "{}",
        scored.ruleset_version
    );
    assert!(!scored.model_version.is_empty());

    // A flag naming a file that is not there is an error naming it, before any data dir
    // is created.
    let output = Command::new(&binary)
        .current_dir(cwd.path())
        .args(["serve", "--data-dir", "fresh", "--model", "missing.json"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing.json"), "{stderr}");
    assert!(!cwd.path().join("fresh").exists());
}
