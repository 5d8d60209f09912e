//! Per-payment inference cost with top factors, over 50 features: logistic, the default
//! (unpruned, 100-tree) forest and the default gradient-boosted trees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/model_support/mod.rs"]
mod model_support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fengkong::model::{train, Algo, ModelArtifact, TrainParams};
use model_support::{names, synthetic};

const COLS: usize = 50;

fn bench(c: &mut Criterion) {
    let (x, y) = synthetic(100_000, COLS, 11);
    let rows: Vec<Vec<f64>> = x
        .rows()
        .into_iter()
        .take(4096)
        .map(|r| r.to_vec())
        .collect();
    for algo in Algo::ALL {
        let p = TrainParams {
            algo: Some(algo),
            ..TrainParams::default()
        };
        let a = train(&x, &y, &names(COLS), &p, &mut |_| {}).unwrap();
        let json = serde_json::to_vec(&a).unwrap().len();
        eprintln!(
            "{algo:?}: {} ({} bytes of JSON)",
            a.candidates[0].summary, json
        );
        let s = a.scorer();
        let mut contrib = vec![0.0; COLS];
        let mut top = Vec::with_capacity(5);
        let mut i = 0;
        c.bench_function(&format!("{algo:?}/score+top5"), |b| {
            b.iter(|| {
                i = (i + 1) % rows.len();
                let p = s.score(black_box(&rows[i]), &mut contrib);
                s.top_factors(&contrib, 5, &mut top);
                black_box((p, top.len()))
            })
        });
    }

    // The bundled model (144 boosted trees of depth 3 on the 106 default features): a tree of
    // depth d costs at most d node visits whatever the row, so any rows measure its cost.
    let names = fengkong::features::FeatureSet::defaults().names().to_vec();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/default.json");
    let bundled = ModelArtifact::load(path, &names).unwrap();
    let (x, _) = synthetic(4096, names.len(), 12);
    let rows: Vec<Vec<f64>> = x.rows().into_iter().map(|r| r.to_vec()).collect();
    let s = bundled.scorer();
    let mut contrib = vec![0.0; names.len()];
    let mut top = Vec::with_capacity(5);
    let mut i = 0;
    c.bench_function(&format!("bundled {}/score+top5", bundled.version()), |b| {
        b.iter(|| {
            i = (i + 1) % rows.len();
            let p = s.score(black_box(&rows[i]), &mut contrib);
            s.top_factors(&contrib, 5, &mut top);
            black_box((p, top.len()))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
