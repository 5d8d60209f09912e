//! Synthetic payments for the model tests and benches: fraud depends on a few features nonlinearly.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ndarray::Array2;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Names of the first six (signal-bearing) columns; the rest are `noise_<i>`.
pub const SIGNAL: [&str; 6] = [
    "amount_fen",
    "count_1h",
    "distinct_payees_24h",
    "new_device",
    "night",
    "refund_ratio",
];

pub fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            SIGNAL
                .get(i)
                .map_or_else(|| format!("noise_{i}"), |s| s.to_string())
        })
        .collect()
}

fn normal(rng: &mut SmallRng) -> f64 {
    // Box-Muller: enough for test data, no extra dependency.
    let u1: f64 = rng.random_range(1e-12..1.0);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `n` rows of `cols` (>= 6) features and labels drawn from a nonlinear fraud model:
/// a mid-size amount band combined with a burst of payments, or a refund ratio near one half
/// (a band no monotone function captures), or a new device at night.
pub fn synthetic(n: usize, cols: usize, seed: u64) -> (Array2<f64>, Vec<bool>) {
    assert!(cols >= 6);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut x = Array2::zeros((n, cols));
    let mut y = Vec::with_capacity(n);
    for r in 0..n {
        let amount = (8.0 + 1.5 * normal(&mut rng)).exp().round();
        let count = (0.5 + normal(&mut rng)).exp().floor();
        let payees = (count * rng.random_range(0.3..1.0)).floor();
        let new_device = f64::from(u8::from(rng.random_bool(0.2)));
        let night = f64::from(u8::from(rng.random_bool(0.3)));
        let ratio: f64 = rng.random();
        let row = [amount, count, payees, new_device, night, ratio];
        for (c, v) in row.iter().enumerate() {
            x[(r, c)] = *v;
        }
        for c in 6..cols {
            x[(r, c)] = if c % 3 == 0 {
                (6.0 + normal(&mut rng)).exp().round()
            } else {
                normal(&mut rng)
            };
        }
        let band = (20_000.0..80_000.0).contains(&amount) && count >= 3.0;
        let mid = (ratio - 0.5).abs() < 0.08;
        let logit = -5.5
            + 4.0 * f64::from(u8::from(band))
            + 3.0 * f64::from(u8::from(mid))
            + 2.0 * new_device * night;
        let p = 1.0 / (1.0 + (-logit).exp());
        y.push(rng.random_bool(p));
    }
    (x, y)
}

/// Average precision as scikit-learn computes it (ties form one threshold); mirrors
/// `quality::average_precision` in the main crate.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let (mut tp, mut fp, mut ap) = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        let (mut p, mut q) = (0.0, 0.0);
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            if labels[idx[j]] {
                p += 1.0
            } else {
                q += 1.0
            }
            j += 1;
        }
        tp += p;
        fp += q;
        if p > 0.0 {
            ap += (p / pos) * (tp / (tp + fp));
        }
        i = j;
    }
    ap
}
