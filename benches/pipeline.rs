//! The whole in-process decision for one payment, as the server's engine thread runs it:
//! validation, features, model, the bundled rules and the decision record with its log entry
//! appended to the journal and the sled writer's tail, then handed to the group committer.
//! The committer (journal sync) and the sled writer run on their own threads, as in the
//! server; the time of the sync itself is measured by the load generator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// As the server binary (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use fengkong::commit::{Behind, GroupCommit};
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
    let journal = engine.start_journal().unwrap();
    let decisions = engine.decisions();
    let behind = Behind {
        tail: Arc::clone(decisions.tail().unwrap()),
        tree: decisions.tree().clone(),
    };
    // Runs until the process ends, as the committer does.
    let _writer = fengkong::writer::spawn(
        behind.tree.clone(),
        Arc::clone(&behind.tail),
        Duration::ZERO,
    )
    .unwrap();
    let commit = GroupCommit::start(
        engine.db().clone(),
        Some(journal),
        Some(behind.clone()),
        Duration::ZERO,
    )
    .unwrap();
    let score = move |engine: &mut Engine, req: &fengkong::proto::ScoreRequest| {
        let scored = engine.score(req, req.event_time_ms).unwrap();
        commit.when_durable(engine.take_journaled(), |_| ());
        scored
    };
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
        score(&mut engine, req);
    }
    let mut next = measured.iter().cycle();
    c.bench_function("score_one_payment_in_process", |b| {
        b.iter_batched(
            || next.next().unwrap().clone(),
            // A payment id seen before is answered from its record; only the first pass
            // over `measured` scores fresh payments, which is what criterion's short
            // run covers (200k payments available).
            |req| score(&mut engine, &req),
            criterion::BatchSize::SmallInput,
        )
    });
    // CPU time rather than wall time: on a shared box the scoring thread's own CPU per
    // payment is what stays comparable, and the process's shows what the other threads
    // (committer, sled writer, sled's own) add to it. Payments criterion has not scored.
    let fresh = PIPELINE_CPU_PAYMENTS.min(measured.len() / 4);
    let (thread, process) = (
        cpu(libc::CLOCK_THREAD_CPUTIME_ID),
        cpu(libc::CLOCK_PROCESS_CPUTIME_ID),
    );
    for req in measured.iter().rev().take(fresh) {
        score(&mut engine, req);
    }
    let per = |start: Duration, clock| (cpu(clock) - start).as_secs_f64() * 1e6 / fresh as f64;
    println!(
        "cpu per payment over {fresh} fresh payments: scoring thread {:.1} µs, whole process {:.1} µs",
        per(thread, libc::CLOCK_THREAD_CPUTIME_ID),
        per(process, libc::CLOCK_PROCESS_CPUTIME_ID),
    );
}

const PIPELINE_CPU_PAYMENTS: usize = 20_000;

fn cpu(clock: libc::clockid_t) -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(clock, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);
