//! Categorical columns (codes such as a merchant category or a channel) as the learners see
//! them: the smoothed fraud log-odds of the code, learned from the fitting rows only.
//!
//! forust-ml has no categorical splits, and a code is not a quantity a threshold can order, so
//! every learner gets the same encoding (it is also the natural scale for the linear model). A
//! rare code is pulled towards the overall rate (`prior_weight` pseudo-rows), an unseen one is
//! the overall rate. The fitting rows themselves are encoded out-of-fold (each row by a table
//! built without its fold), or a rare code's own label would leak into its value and trees
//! would learn to trust it; the holdout and production use the table of all fitting rows.

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView2};

use super::artifact::CategoryEncoding;

/// Pseudo-rows at the overall rate added to every code.
pub(super) const PRIOR_WEIGHT: f64 = 30.0;
const FOLDS: usize = 5;

/// Counts (fraud, genuine) per code, over the rows `keep` selects.
fn tally(
    col: impl Iterator<Item = f64>,
    y: &[bool],
    keep: impl Fn(usize) -> bool,
) -> BTreeMap<u64, (f64, f64)> {
    let mut m: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (i, (v, &label)) in col.zip(y).enumerate() {
        if keep(i) {
            let e = m.entry(v.to_bits()).or_default();
            if label {
                e.0 += 1.0;
            } else {
                e.1 += 1.0;
            }
        }
    }
    m
}

fn table(counts: &BTreeMap<u64, (f64, f64)>) -> CategoryEncoding {
    let (pos, neg) = counts
        .values()
        .fold((0.0, 0.0), |(p, n), &(a, b)| (p + a, n + b));
    let prior = (pos + 0.5) / (pos + neg + 1.0);
    let m = PRIOR_WEIGHT;
    let odds = |p: f64, n: f64| ((p + m * prior) / (n + m * (1.0 - prior))).ln();
    let mut pairs: Vec<(f64, f64)> = counts
        .iter()
        .map(|(&bits, &(p, n))| (f64::from_bits(bits), odds(p, n)))
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    CategoryEncoding {
        feature: 0,
        codes: pairs.iter().map(|p| p.0).collect(),
        values: pairs.iter().map(|p| p.1).collect(),
        unseen: odds(0.0, 0.0),
        prior_weight: m,
    }
}

/// The encodings of `columns` learned from `x`/`y` (clean values), and `x` with those columns
/// encoded out-of-fold.
pub(super) fn fit(
    x: ArrayView2<f64>,
    y: &[bool],
    columns: &[usize],
) -> (Vec<CategoryEncoding>, Array2<f64>) {
    let mut encoded = x.to_owned();
    let mut encodings = Vec::with_capacity(columns.len());
    for &c in columns {
        let col = x.column(c);
        let mut full = table(&tally(col.iter().copied(), y, |_| true));
        full.feature = c;
        // Interleaved folds: each covers the whole period, so no fold is all old or all new.
        for k in 0..FOLDS {
            let others = table(&tally(col.iter().copied(), y, |i| i % FOLDS != k));
            for i in (k..y.len()).step_by(FOLDS) {
                encoded[(i, c)] = others.encode(col[i]);
            }
        }
        encodings.push(full);
    }
    (encodings, encoded)
}

/// `x` with the categorical columns replaced by their encoding, as the scorer does it.
pub(super) fn apply(x: ArrayView2<f64>, encodings: &[CategoryEncoding]) -> Array2<f64> {
    let mut out = x.to_owned();
    for e in encodings {
        out.column_mut(e.feature).mapv_inplace(|v| e.encode(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risky_codes_get_high_log_odds_rare_ones_stay_near_the_prior() {
        // Code 7: 50% fraud over 200 rows; code 1: 1% over 2000; code 9: one fraud row alone.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..200 {
            x.push(7.0);
            y.push(i % 2 == 0);
        }
        for i in 0..2000 {
            x.push(1.0);
            y.push(i % 100 == 0);
        }
        x.push(9.0);
        y.push(true);
        let x = Array2::from_shape_vec((y.len(), 1), x).unwrap_or_default();
        let (enc, encoded) = fit(x.view(), &y, &[0]);
        let e = &enc[0];
        assert_eq!(e.codes, vec![1.0, 7.0, 9.0]);
        let (common, risky, rare) = (e.encode(1.0), e.encode(7.0), e.encode(9.0));
        assert!(risky > rare && rare > common, "{risky} {rare} {common}");
        assert!(
            (rare - e.unseen).abs() < 0.5,
            "one row barely moves a code off the prior"
        );
        assert_eq!(e.encode(42.0), e.unseen);
        // The lone fraud row of code 9 is encoded without its own label: as an unseen code.
        let last = encoded[(y.len() - 1, 0)];
        assert!(last < rare, "out-of-fold {last} vs in-sample {rare}");
    }
}
