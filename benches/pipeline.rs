//! The whole in-process decision for one payment, as the engine thread runs it: validation,
//! features, model, the bundled rules and the decision record with its log entry (sled
//! applied, not flushed: the flush is shared by a group and measured by the load generator).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// As the server binary (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use fengkong::config::Config;
use fengkong::engine::Engine;
use fengkong::request::request_from_payment;
use fengkong::simulate::{simulate_events, SimConfig};

fn bench_pipeline(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let mut engine = Engine::open(&config).unwrap();
    // Realistic traffic; the first half warms the windows, the rest is measured.
    let sim = SimConfig {
        payments: 400_000,
        seed: 9,
        ..SimConfig::default()
    };
    let (events, _) = simulate_events(&sim).unwrap();
    let requests: Vec<_> = events
        .iter()
        .map(|e| request_from_payment(&e.event.payment))
        .collect();
    let (warm, measured) = requests.split_at(requests.len() / 2);
    for req in warm {
        engine.score(req, req.event_time_ms).unwrap();
    }
    let mut next = measured.iter().cycle();
    c.bench_function("score_one_payment_in_process", |b| {
        b.iter_batched(
            || next.next().unwrap().clone(),
            // A payment id seen before is answered from its record; only the first pass
            // over `measured` scores fresh payments, which is what criterion's short
            // run covers (200k payments available).
            |req| engine.score(&req, req.event_time_ms).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);
