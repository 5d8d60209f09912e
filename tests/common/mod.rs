//! Shared test harness: the real server on 127.0.0.1:0 with a real sled dir.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fengkong::config::Config;
use fengkong::engine::Engine;
use fengkong::proto;
use fengkong::proto::risk_engine_client::RiskEngineClient;
use fengkong::server::{Listeners, ServeOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    /// `/metrics` and `/healthz`.
    pub metrics_addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(data_dir: &Path) -> TestServer {
        Self::start_with(Config {
            data_dir: data_dir.to_owned(),
            ..Config::default()
        })
        .await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let metrics_addr = metrics.local_addr().unwrap();
        let engine = Engine::open(&config).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            grpc,
            http: Some(http),
            metrics: Some(metrics),
        };
        let options = ServeOptions {
            shutdown_grace: Duration::from_secs(5),
            ..ServeOptions::from_config(&config)
        };
        let task = tokio::spawn(async move {
            fengkong::server::run(listeners, engine, options, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            http_addr,
            metrics_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The server on `data_dir` with its own copy of the rule pack in `rules_dir` (see
    /// `copy_rules`), reloaded only when asked: for tests that edit the rules.
    pub async fn start_with_rule_copy(data_dir: &Path, rules_dir: &Path) -> TestServer {
        copy_rules(rules_dir);
        Self::start_with(Config {
            data_dir: data_dir.to_owned(),
            rules_dir: Some(rules_dir.to_owned()),
            watch_rules: false,
            ..Config::default()
        })
        .await
    }

    pub async fn client(&self) -> RiskEngineClient<Channel> {
        let endpoint = format!("http://{}", self.addr);
        for _ in 0..100 {
            if let Ok(c) = RiskEngineClient::connect(endpoint.clone()).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server at {endpoint} never accepted a connection");
    }

    /// Graceful stop: waits until the server has flushed and released the data dir.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The start of the latest 10:00 in China (02:00 UTC) at least two hours ago. Scenarios
/// that count payments over an hour start there, so the bundled night-time rules (00:00-05:00
/// local) stay out of them whatever the time of day the tests run.
pub fn daytime_hour_ms() -> i64 {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    let now = now_ms();
    let today = now / DAY * DAY + 2 * HOUR;
    if today <= now - 2 * HOUR {
        today
    } else {
        today - DAY
    }
}

/// A small, ordinary payment: a verified payer at a merchant's static code.
pub fn payment(id: &str) -> proto::ScoreRequest {
    proto::ScoreRequest {
        payment_id: id.into(),
        event_time_ms: now_ms(),
        channel: proto::Channel::WechatPay as i32,
        scene: proto::Scene::MerchantScansPayer as i32,
        payer: Some(proto::Payer {
            account_id: "payer-001".into(),
            real_name_verified: true,
            registered_at_ms: now_ms() - 400 * 86_400_000,
        }),
        payee: Some(proto::Payee {
            account_id: "merchant-001".into(),
            kind: proto::PayeeKind::Merchant as i32,
            merchant_category: "5812".into(),
        }),
        amount_fen: 3_800,
        currency: "CNY".into(),
        funding: proto::Funding::Balance as i32,
        card_fingerprint: None,
        device_id: "device-001".into(),
        ip: "203.0.113.7".into(),
        city_code: Some("310000".into()),
        attributes: [("terminal".to_string(), "T-9".to_string())].into(),
    }
}

/// A plain HTTP/1.1 GET on loopback; returns (status line, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The gRPC address a `fengkong serve` child announces on its first stdout line.
pub fn announced_addr(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("fengkong listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned()
}

/// A copy of the bundled rule pack that a test may edit.
pub fn copy_rules(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    for sub in ["", "lists", "tests"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for entry in std::fs::read_dir(from.join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), to.join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
}

/// `message` with `authorization: Bearer KEY` metadata.
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// One collection into personal code `code` from payer `n` (its own device and IP).
pub fn collection(code: &str, id: &str, n: usize, at: i64) -> proto::ScoreRequest {
    let mut req = payment(id);
    req.event_time_ms = at;
    req.scene = proto::Scene::PersonalCodeCollection as i32;
    req.amount_fen = 20_000;
    let payer = req.payer.as_mut().unwrap();
    payer.account_id = format!("payer-{n}");
    let payee = req.payee.as_mut().unwrap();
    payee.account_id = code.into();
    payee.kind = proto::PayeeKind::Personal as i32;
    payee.merchant_category.clear();
    req.device_id = format!("dev-{n}");
    req.ip = format!("198.51.100.{}", n % 250);
    req
}

/// Names a merchant must never read: every feature and dotted request field
/// (`payee.distinct_payers_1h`, `payer.account_id`), `params.`, and every param and rule id of
/// the bundled pack.
pub fn raw_names() -> Vec<String> {
    let schema = fengkong::vars::schema(&fengkong::features::FeatureSet::defaults());
    let rules = fengkong::bundled::rules(&schema).unwrap();
    let mut names: Vec<String> = schema
        .vars()
        .iter()
        .map(|v| v.name.clone())
        .filter(|n| n.contains('.'))
        .collect();
    names.push("params.".into());
    names.extend(rules.params().iter().map(|(n, _)| n.clone()));
    names.extend(rules.rules().iter().map(|r| r.id.to_string()));
    names
}

/// Panics naming every raw name found in `text`, a merchant's view of `what`.
pub fn assert_no_raw_names(text: &str, what: &str) {
    let found: Vec<String> = raw_names()
        .into_iter()
        .filter(|n| text.contains(n.as_str()))
        .collect();
    assert!(
        found.is_empty(),
        "{what} shows {found:?} to a merchant:\n{text}"
    );
}

/// Every word of an explanation that reaches a merchant: summaries, reasons, remedies,
/// evidence labels and model factors, in both languages.
pub fn merchant_words(x: &proto::Explanation) -> String {
    let mut out = vec![x.summary.clone(), x.summary_zh.clone()];
    for d in &x.decisions {
        for r in d.reasons.iter().chain(&d.model_factors) {
            out.extend([r.message.clone(), r.message_zh.clone()]);
            for m in &r.remedies {
                out.extend([m.message.clone(), m.message_zh.clone()]);
            }
            for e in &r.evidence {
                out.extend([e.label.clone(), e.label_zh.clone()]);
            }
        }
    }
    out.join("\n")
}
