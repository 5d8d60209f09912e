//! Benchmarks of the feature store: per-payment observe with the default set (with the
//! engine's checkpoint cadence, and with a checkpoint after every payment), and a 1M-payment
//! replay (printed as payments/s, outside criterion because one run takes seconds).
#![allow(clippy::unwrap_used)]

// As the server binary (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::time::Instant;

use criterion::{criterion_group, Criterion};
use fengkong::features::{FeatureSet, FeatureStore, StoreOptions};
use fengkong::payment::{Channel, Funding, Payee, PayeeKind, Payer, Payment, Scene};

const T0: i64 = 1_767_225_600_000;

/// Synthetic traffic: 100k payers, 5k payees (2% of traffic to 10 big merchants),
/// one payment every ~2.6 s of event time (1M payments over 30 days).
struct Gen {
    x: u64,
    t: i64,
    n: u64,
}

impl Gen {
    fn new() -> Gen {
        Gen {
            x: 0x9e37_79b9_7f4a_7c15,
            t: T0,
            n: 0,
        }
    }
    fn next(&mut self) -> Payment {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        let r = self.x;
        self.n += 1;
        self.t += (r % 5_200) as i64;
        let payer = r % 100_000;
        let payee = if r.is_multiple_of(50) {
            (r >> 20) % 10
        } else {
            (r >> 20) % 5_000
        };
        Payment {
            payment_id: format!("p{}", self.n),
            event_time_ms: self.t,
            channel: Channel::ALL[(r >> 33) as usize % Channel::ALL.len()],
            scene: Scene::ALL[(r >> 36) as usize % Scene::ALL.len()],
            payer: Payer {
                account_id: format!("u{payer}"),
                real_name_verified: true,
                registered_at_ms: 0,
            },
            payee: Payee {
                account_id: format!("m{payee}"),
                kind: PayeeKind::Merchant,
                merchant_category: "5411".into(),
            },
            amount_fen: 100 + ((r >> 40) % 200_000) as i64,
            currency: "CNY".into(),
            funding: Funding::ALL[(r >> 52) as usize % Funding::ALL.len()],
            card_fingerprint: r.is_multiple_of(3).then(|| format!("c{}", payer % 50_000)),
            device_id: format!(
                "d{}",
                if r.is_multiple_of(20) {
                    (r >> 44) % 1000
                } else {
                    payer
                }
            ),
            ip: format!("10.{}.{}.{}", (r >> 24) % 20, (r >> 28) % 100, payer % 10),
            city_code: None,
            attributes: BTreeMap::new(),
        }
    }
}

/// The bundled features as they were before the amount-profile, outcome and category
/// families (55 features), to measure what those cost in the same run.
const FEATURES_2026_11: &str = include_str!("../src/features/testdata/format_features.toml");

fn setup(warm: usize) -> (tempfile::TempDir, sled::Db, FeatureStore, Gen) {
    setup_with(warm, FeatureSet::defaults())
}

fn setup_with(warm: usize, set: FeatureSet) -> (tempfile::TempDir, sled::Db, FeatureStore, Gen) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(256 << 20)
        .mode(sled::Mode::HighThroughput)
        .open()
        .unwrap();
    let mut store = FeatureStore::open(
        &db,
        set,
        StoreOptions {
            cache_capacity: 200_000,
            ..Default::default()
        },
    )
    .unwrap();
    let mut g = Gen::new();
    let mut out = Vec::new();
    for i in 0..warm {
        store.observe(&g.next(), &mut out).unwrap();
        if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
            store.checkpoint(b"").unwrap();
        }
    }
    store.checkpoint(b"").unwrap();
    (dir, db, store, g)
}

fn bench_observe(c: &mut Criterion) {
    let (_dir, _db, mut store, mut g) = setup(100_000);
    let mut out = Vec::with_capacity(64);
    // What the engine does: observe every payment at its log position, start a background
    // checkpoint every CHECKPOINT_EVERY (written state by state; the next one waits for it).
    let mut n = 0usize;
    c.bench_function("observe_default_set_checkpointed", |b| {
        b.iter_batched(
            || g.next(),
            |p| {
                store.set_position(n as u64);
                store.observe(&p, &mut out).unwrap();
                n += 1;
                if n.is_multiple_of(CHECKPOINT_EVERY) {
                    store.start_checkpoint(b"").unwrap();
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // The same with the 55 features of 2026-11, for the cost of what was added since.
    let (_old_dir, _old_db, mut old, mut old_gen) = setup_with(
        100_000,
        FeatureSet::parse(FEATURES_2026_11, "2026-11").unwrap(),
    );
    let mut m = 0usize;
    c.bench_function("observe_2026_11_set_checkpointed", |b| {
        b.iter_batched(
            || old_gen.next(),
            |p| {
                old.set_position(m as u64);
                old.observe(&p, &mut out).unwrap();
                m += 1;
                if m.is_multiple_of(CHECKPOINT_EVERY) {
                    old.start_checkpoint(b"").unwrap();
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // The worst case: every payment's state written to sled at once.
    c.bench_function("observe_default_set_checkpoint_each", |b| {
        b.iter_batched(
            || g.next(),
            |p| {
                store.observe(&p, &mut out).unwrap();
                store.checkpoint(b"").unwrap();
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

/// `REPLAY_COMMIT=never`: the windows stay in memory, as in `fengkong replay`.
const NEVER: usize = usize::MAX;

/// The engine's default `feature_checkpoint_every`.
const CHECKPOINT_EVERY: usize = 5_000;

/// CPU seconds used so far by the whole process and by the calling thread (utime + stime,
/// from /proc; 0 where /proc is unavailable).
fn cpu_secs() -> (f64, f64) {
    fn read(path: &str) -> f64 {
        let Ok(text) = std::fs::read_to_string(path) else {
            return 0.0;
        };
        let Some(rest) = text.rsplit(')').next() else {
            return 0.0;
        };
        // Fields after the command: state is field 3, utime 14, stime 15 (clock ticks).
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11..13).map_or(0.0, |v| {
            v.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
        });
        ticks / 100.0
    }
    (read("/proc/self/stat"), read("/proc/thread-self/stat"))
}

/// Replays `n` generated payments, checkpointing every `commit_every` like the engine does
/// (`start_checkpoint`: the sled write runs on its own thread while scoring goes on), or,
/// with `REPLAY_SYNC=1`, waiting for each checkpoint. `commit_every` 0: one checkpoint at
/// the end; `NEVER`: none at all, as `fengkong replay` keeps its windows.
fn replay(n: usize, commit_every: usize) {
    let sync = std::env::var("REPLAY_SYNC").is_ok_and(|v| v == "1");
    let (_dir, db, mut store, mut g) = setup(0);
    // Payments are generated on the fly (1M would take ~0.5 GB); their cost is measured apart.
    let gen_start = Instant::now();
    let mut g2 = Gen::new();
    for _ in 0..n {
        std::hint::black_box(g2.next());
    }
    let gen_secs = gen_start.elapsed().as_secs_f64();
    let mut out = Vec::new();
    let (cpu0, main0) = cpu_secs();
    let start = Instant::now();
    for i in 0..n {
        let p = g.next();
        store.set_position(i as u64);
        store.observe(&p, &mut out).unwrap();
        if commit_every != 0 && commit_every != NEVER && i % commit_every == commit_every - 1 {
            if sync {
                store.checkpoint(b"").unwrap();
            } else {
                store.start_checkpoint(b"").unwrap();
            }
        }
    }
    if commit_every != NEVER {
        store.checkpoint(b"").unwrap();
    }
    let secs = start.elapsed().as_secs_f64() - gen_secs;
    let (cpu1, main1) = cpu_secs();
    let (cpu, main) = (cpu1 - cpu0 - gen_secs, main1 - main0 - gen_secs);
    let (mut keys, mut bytes, mut biggest) = (0usize, 0usize, 0usize);
    for kv in db
        .open_tree(StoreOptions::default().tree_name)
        .unwrap()
        .iter()
    {
        let (_, v) = kv.unwrap();
        keys += 1;
        bytes += v.len();
        biggest = biggest.max(v.len());
    }
    println!(
        "  stored {keys} entities, {bytes} bytes (avg {} B, max {biggest} B); cache {} entities, {:?}",
        bytes / keys.max(1),
        store.cached_entities(),
        store.cache_stats()
    );
    println!(
        "  CPU: {:.2} µs/payment in all threads, {:.2} µs/payment on the scoring thread ({:.0} payments per CPU-second)",
        cpu * 1e6 / n as f64,
        main * 1e6 / n as f64,
        n as f64 / cpu.max(1e-9)
    );
    let how = match (commit_every, sync) {
        (NEVER, _) => "never checkpointed".to_string(),
        (_, true) => format!("checkpoint (waited) every {commit_every}"),
        _ => format!("start_checkpoint every {commit_every}"),
    };
    println!(
        "replay {n} payments, {how}: {secs:.2} s (excluding {gen_secs:.2} s generating), {:.0} payments/s",
        n as f64 / secs,
    );
}

/// The floor set by sled itself: `n` single-key batches of 100-byte values, random keys.
fn sled_raw(n: usize, keys_per_batch: usize) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(256 << 20)
        .open()
        .unwrap();
    let tree = db.open_tree("raw").unwrap();
    let mut x: u64 = 1;
    let start = Instant::now();
    for _ in 0..n / keys_per_batch {
        let mut b = sled::Batch::default();
        for _ in 0..keys_per_batch {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.insert(
                &format!("payer\0u{}", x % 1_000_000).into_bytes()[..],
                &[7u8; 100][..],
            );
        }
        tree.apply_batch(b).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sled alone: {n} inserts in batches of {keys_per_batch}: {:.0} inserts/s",
        n as f64 / secs
    );
}

/// Disk per active account for a year of history: `accounts` payers, each paying `per_day`
/// times a day (to one of its 20 usual payees, one of 50 merchants shared by everybody, from
/// its own device and IP, a card on every third) for 365 days, in event-time order, with the
/// engine's checkpoint cadence; then one full sweep. Reports stored bytes (keys + values of the
/// features tree) and sled's size on disk, per account.
fn year_of_accounts(accounts: u64, per_day: u64) {
    const DAY: i64 = 86_400_000;
    let (dir, db, mut store, _) = setup(0);
    let mut out = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut n = 0usize;
    for day in 0..365i64 {
        for slot in 0..per_day {
            for a in 0..accounts {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let t = T0 + day * DAY + (slot * (DAY as u64 / per_day) + a) as i64;
                let usual = (a * 7 + x % 20) % 20;
                let payee = if x.is_multiple_of(4) {
                    format!("m{}", x % 50)
                } else {
                    format!("p{a}_{usual}")
                };
                let p = Payment {
                    payment_id: format!("y{n}"),
                    event_time_ms: t,
                    channel: Channel::ALL[(x >> 33) as usize % Channel::ALL.len()],
                    scene: Scene::ALL[(x >> 36) as usize % Scene::ALL.len()],
                    payer: Payer {
                        account_id: format!("u{a}"),
                        real_name_verified: true,
                        registered_at_ms: 0,
                    },
                    payee: Payee {
                        account_id: payee,
                        kind: PayeeKind::Merchant,
                        merchant_category: "5411".into(),
                    },
                    amount_fen: 100 + ((x >> 40) % 200_000) as i64,
                    currency: "CNY".into(),
                    funding: Funding::ALL[(x >> 52) as usize % Funding::ALL.len()],
                    card_fingerprint: a.is_multiple_of(3).then(|| format!("c{a}")),
                    device_id: format!("d{a}"),
                    ip: format!("10.0.{}.{}", a / 250, a % 250),
                    city_code: None,
                    attributes: BTreeMap::new(),
                };
                store.observe(&p, &mut out).unwrap();
                n += 1;
                if n.is_multiple_of(CHECKPOINT_EVERY) {
                    store.start_checkpoint(b"").unwrap();
                }
            }
        }
    }
    store.checkpoint(b"").unwrap();
    // What the engine's incremental sweep converges to: expired state deleted.
    store.discard_cache();
    loop {
        if store.sweep(i64::MAX, 100_000).unwrap().wrapped {
            break;
        }
    }
    db.flush().unwrap();
    let (mut keys, mut bytes) = (0usize, 0usize);
    for kv in store.tree().iter() {
        let (k, v) = kv.unwrap();
        keys += 1;
        bytes += k.len() + v.len();
    }
    let on_disk = db.size_on_disk().unwrap();
    drop(dir);
    println!(
        "year: {accounts} accounts x {per_day}/day x 365 days = {n} payments: {keys} keys, {bytes} bytes stored = {} B per account; sled size on disk {} B per account",
        bytes as u64 / accounts,
        on_disk / accounts
    );
}

criterion_group!(benches, bench_observe);

fn main() {
    if let Ok(v) = std::env::var("YEAR_ACCOUNTS") {
        let accounts = v.parse().unwrap_or(1_000);
        let rates: Vec<u64> = std::env::var("YEAR_PER_DAY")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 4]);
        for r in rates {
            year_of_accounts(accounts, r);
        }
        return;
    }
    if std::env::var("SLED_RAW").is_ok() {
        sled_raw(700_000, 7);
        return;
    }
    benches();
    let n = std::env::var("REPLAY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let modes: Vec<usize> = std::env::var("REPLAY_COMMIT")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|x| {
                    if x == "never" {
                        Some(NEVER)
                    } else {
                        x.parse().ok()
                    }
                })
                .collect()
        })
        .unwrap_or_else(|| vec![CHECKPOINT_EVERY]);
    for m in modes {
        replay(n, m);
    }
    Criterion::default().configure_from_args().final_summary();
}
