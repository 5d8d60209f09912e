//! Memory while 1M distinct payers are scored: the whole engine (features, model, rules,
//! durable decision records in sled) with the default config, one payment per payer, to
//! a Zipf-skewed set of payees. Prints the process RSS every 100k payments; the figure
//! must level off (the feature cache and sled's page cache are bounded) instead of growing
//! with the number of payers. `MEMORY_PAYERS` changes the count (default 1,000,000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// As the server binary (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::Instant;

use fengkong::config::Config;
use fengkong::engine::Engine;
use fengkong::proto;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn request(n: u64, at: i64) -> proto::ScoreRequest {
    // A cheap, fixed-seed mix: payee index ~ 20_000^u is hot at the low end.
    let u = ((n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64) / (1u64 << 53) as f64;
    let payee = (20_000f64.powf(u) as u64).saturating_sub(1);
    proto::ScoreRequest {
        payment_id: format!("m-{n}"),
        event_time_ms: at,
        channel: proto::Channel::Aggregator as i32,
        scene: proto::Scene::MerchantStaticCode as i32,
        payer: Some(proto::Payer {
            account_id: format!("payer-{n}"),
            real_name_verified: true,
            registered_at_ms: at - 90 * 86_400_000,
        }),
        payee: Some(proto::Payee {
            account_id: format!("merchant-{payee}"),
            kind: proto::PayeeKind::Merchant as i32,
            merchant_category: "5812".into(),
        }),
        amount_fen: 100 + (n % 50_000) as i64,
        currency: "CNY".into(),
        funding: proto::Funding::Balance as i32,
        card_fingerprint: None,
        device_id: format!("dev-{n}"),
        ip: format!("10.{}.{}.{}", n % 200, (n / 200) % 250, n % 250),
        city_code: Some("310000".into()),
        attributes: Default::default(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and only wants
    // to know it still builds and runs.
    let payers: u64 = match std::env::args().any(|a| a == "--bench") {
        true => std::env::var("MEMORY_PAYERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000),
        false => 2_000,
    };
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let mut engine = Engine::open(&config).unwrap();
    let t0 = 1_767_225_600_000;
    let started = Instant::now();
    println!("payers_scored,rss_mib,payments_per_s");
    println!("0,{:.0},", rss_mib());
    let step = (payers / 10).max(1);
    let mut last = Instant::now();
    for n in 1..=payers {
        // 30 days of event time across the run.
        let at = t0 + (n as i64) * 2_592_000_000 / payers as i64;
        engine.score(&request(n, at), at).unwrap();
        if n % step == 0 {
            let rate = step as f64 / last.elapsed().as_secs_f64();
            println!("{n},{:.0},{rate:.0}", rss_mib());
            last = Instant::now();
        }
    }
    let disk = dir_size(dir.path());
    println!(
        "# {payers} payers in {:.0} s; data dir {:.0} MiB",
        started.elapsed().as_secs_f64(),
        disk as f64 / (1 << 20) as f64
    );
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
