//! `RuleAdmin.RuleStats` and `RuleAdmin.Backtest` on a store of payments scored by the real
//! engine (bundled rules and model): the stats of every rule over the whole period, and a
//! backtest of the pack with one threshold lowered, which decides every stored payment
//! again under the candidate and the live set. `RULE_ADMIN_PAYMENTS` (default 50,000) sets
//! how many payments are stored; the backtest's rate (decisions per second) is
//! `RULE_ADMIN_PAYMENTS` divided by the time printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use fengkong::config::Config;
use fengkong::engine::Engine;
use fengkong::proto::{self, ScoreRequest};
use fengkong::rule_backtest::{backtest, Bounds};
use fengkong::rule_stats::{rule_stats, Period};

const START: i64 = 1_764_000_000_000;

fn request(n: u64) -> ScoreRequest {
    let personal = n.is_multiple_of(5);
    ScoreRequest {
        payment_id: format!("pay-{n}"),
        // One payment every 50 ms: 50,000 payments cover 42 minutes.
        event_time_ms: START + n as i64 * 50,
        channel: proto::Channel::WechatPay as i32,
        scene: if personal {
            proto::Scene::PersonalCodeCollection
        } else {
            proto::Scene::MerchantScansPayer
        } as i32,
        payer: Some(proto::Payer {
            account_id: format!("payer-{}", n % 20_000),
            real_name_verified: true,
            registered_at_ms: START - 400 * 86_400_000,
        }),
        payee: Some(proto::Payee {
            account_id: format!("payee-{}", n % 500),
            kind: if personal {
                proto::PayeeKind::Personal
            } else {
                proto::PayeeKind::Merchant
            } as i32,
            merchant_category: if personal { "" } else { "5812" }.into(),
        }),
        amount_fen: 1_000 + (n % 20_000) as i64,
        currency: "CNY".into(),
        funding: proto::Funding::Balance as i32,
        device_id: format!("dev-{}", n % 20_000),
        ip: format!("198.51.{}.{}", n % 200, n % 250),
        ..ScoreRequest::default()
    }
}

fn rule_admin(c: &mut Criterion) {
    let count: u64 = std::env::var("RULE_ADMIN_PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::open(&Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    })
    .unwrap();
    let filled = Instant::now();
    for n in 0..count {
        let req = request(n);
        engine.score(&req, req.event_time_ms).unwrap();
    }
    eprintln!("{count} payments scored in {:?}", filled.elapsed());
    let store = engine.decisions();
    let rules = engine.ruleset();
    let redecider = engine.redecider();
    let (name, text) = fengkong::bundled::RULE_FILES
        .iter()
        .find(|(name, _)| *name == "00_ruleset.toml")
        .unwrap();
    let lowered = text.replace(
        "rent_code_payers_1h = { value = 30,",
        "rent_code_payers_1h = { value = 5,",
    );
    assert_ne!(&lowered, text);
    let candidate = redecider.compile(&[(name.to_string(), lowered)]).unwrap();
    let period = Period::resolve(store.tree(), START, START + count as i64 * 50).unwrap();

    let mut group = c.benchmark_group(format!("rule_admin_of_{count}"));
    group.sample_size(10);
    group.bench_function("rule_stats", |b| {
        b.iter(|| {
            let stats = rule_stats(&store, &rules, period).unwrap();
            assert_eq!(stats.decisions, count);
        })
    });
    group.bench_function("backtest", |b| {
        b.iter(|| {
            let bounds = Bounds {
                until: Instant::now() + Duration::from_secs(600),
                max_decisions: usize::MAX,
            };
            let report = backtest(&store, &redecider, &candidate, period, bounds).unwrap();
            assert_eq!(report.decisions, count);
        })
    });
    group.finish();
}

criterion_group!(benches, rule_admin);
criterion_main!(benches);
