//! The random forest, grown as scikit-learn's `RandomForestClassifier()` grows it: a bootstrap
//! of as many rows as the training set per tree, `sqrt(features)` candidate features drawn
//! afresh at every split, Gini impurity, trees grown until their leaves are pure.
//!
//! Why not linfa-trees: it draws one feature subset per tree (linfa-ensemble too), not per
//! split, which is what decorrelates a forest's trees; every node scans every training row
//! (`O(rows)` per node, so an unpruned tree costs `O(nodes · rows)`); it merges sibling leaves
//! that predict the same class, throwing away the fractions a score needs; and it sums class
//! weights through a `HashMap`, so float rounding (and then tie-breaks between splits) varies
//! from run to run. There is no option for any of these, so the tree grower is here, small:
//! split candidates are the midpoints between distinct values (at most 256 bins per feature,
//! by quantile beyond that, like scikit-learn's histogram learners), each node's rows are
//! partitioned in place, and every tree draws from its own random stream seeded by the forest
//! seed and the tree's index, so the forest is the same whatever the number of threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use ndarray::ArrayView2;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::artifact::{TreeArrays, LEAF};
use super::ModelError;

/// Distinct values beyond this are grouped into quantile bins.
const MAX_BINS: usize = 256;

/// Split candidates of one feature: `x <= cuts[k]` is bin `<= k`.
struct Cuts(Vec<f64>);

impl Cuts {
    fn of(column: impl Iterator<Item = f64>) -> Cuts {
        let mut v: Vec<f64> = column.collect();
        v.sort_unstable_by(f64::total_cmp);
        let mut distinct: Vec<(f64, usize)> = Vec::new();
        for x in v {
            match distinct.last_mut() {
                Some((last, n)) if *last == x => *n += 1,
                _ => distinct.push((x, 1)),
            }
        }
        let midpoint = |lo: f64, hi: f64| {
            let m = lo + (hi - lo) / 2.0;
            // Adjacent floats: the midpoint rounds to `hi`, which would send `hi` left.
            if m >= hi {
                lo
            } else {
                m
            }
        };
        if distinct.len() <= MAX_BINS {
            return Cuts(
                distinct
                    .windows(2)
                    .map(|w| midpoint(w[0].0, w[1].0))
                    .collect(),
            );
        }
        // Quantiles by row count: a cut after the distinct value where each 1/MAX_BINS of
        // the rows is reached.
        let total: usize = distinct.iter().map(|d| d.1).sum();
        let mut cuts = Vec::with_capacity(MAX_BINS - 1);
        let mut seen = 0;
        let mut next = 1;
        for w in distinct.windows(2) {
            seen += w[0].1;
            if seen * MAX_BINS >= next * total {
                cuts.push(midpoint(w[0].0, w[1].0));
                while seen * MAX_BINS >= next * total {
                    next += 1;
                }
            }
        }
        Cuts(cuts)
    }

    fn bin(&self, x: f64) -> u8 {
        self.0.partition_point(|&c| c < x) as u8
    }
}

/// The training matrix as bins, column-major so a node's histogram reads one column.
struct Binned {
    rows: usize,
    bins: Vec<u8>,
    cuts: Vec<Cuts>,
}

impl Binned {
    fn new(x: ArrayView2<f64>) -> Binned {
        let (rows, cols) = x.dim();
        let mut bins = Vec::with_capacity(rows * cols);
        let mut cuts = Vec::with_capacity(cols);
        for col in x.columns() {
            let c = Cuts::of(col.iter().copied());
            bins.extend(col.iter().map(|&v| c.bin(v)));
            cuts.push(c);
        }
        Binned { rows, bins, cuts }
    }

    #[inline]
    fn column(&self, f: usize) -> &[u8] {
        &self.bins[f * self.rows..(f + 1) * self.rows]
    }
}

pub(super) struct ForestPlan {
    pub trees: usize,
    pub features_per_split: usize,
    pub samples_per_tree: usize,
    pub max_depth: Option<usize>,
    pub min_samples_leaf: usize,
    pub seed: u64,
    pub threads: usize,
}

/// Grows `plan.trees` trees on `x` (clean values) and labels `y`; trees come back in index
/// order whatever thread grew them.
pub(super) fn fit_forest(
    x: ArrayView2<f64>,
    y: &[bool],
    plan: &ForestPlan,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<TreeArrays>, ModelError> {
    progress(&format!(
        "forest: binning {} x {} matrix",
        x.nrows(),
        x.ncols()
    ));
    let binned = Binned::new(x);
    let threads = plan.threads.clamp(1, plan.trees);
    let next = AtomicUsize::new(0);
    let mut trees: Vec<Option<TreeArrays>> = vec![None; plan.trees];
    let (tx, rx) = mpsc::channel::<(usize, TreeArrays)>();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, binned) = (&next, &binned);
            s.spawn(move || loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                if t >= plan.trees {
                    break;
                }
                if tx.send((t, grow(binned, y, plan, t))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut done = 0;
        let mut nodes = 0;
        for (t, tree) in rx {
            done += 1;
            nodes += tree.feature.len();
            if done % 10 == 0 || done == plan.trees {
                progress(&format!(
                    "forest: {done}/{} trees ({nodes} nodes so far)",
                    plan.trees
                ));
            }
            if let Some(slot) = trees.get_mut(t) {
                *slot = Some(tree);
            }
        }
    });
    let trees: Vec<TreeArrays> = trees.into_iter().flatten().collect();
    if trees.len() != plan.trees {
        return Err(ModelError::Fit("a forest worker stopped early".into()));
    }
    Ok(trees)
}

/// Class weights of a set of rows: (fraud, all).
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    pos: f64,
    all: f64,
    /// Distinct rows, for `min_samples_leaf`.
    rows: usize,
}

impl Tally {
    fn add(&mut self, positive: bool, w: f64) {
        self.pos += if positive { w } else { 0.0 };
        self.all += w;
        self.rows += 1;
    }

    fn minus(self, o: Tally) -> Tally {
        Tally {
            pos: self.pos - o.pos,
            all: self.all - o.all,
            rows: self.rows - o.rows,
        }
    }

    /// Σ over classes of weight² / total: larger is purer (Gini impurity × total, negated,
    /// up to a constant).
    fn purity(self) -> f64 {
        if self.all <= 0.0 {
            return 0.0;
        }
        let neg = self.all - self.pos;
        (self.pos * self.pos + neg * neg) / self.all
    }
}

fn grow(binned: &Binned, y: &[bool], plan: &ForestPlan, t: usize) -> TreeArrays {
    let mut rng =
        SmallRng::seed_from_u64(plan.seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let n = binned.rows;
    // Bootstrap as counts per row, like scikit-learn's sample weights.
    let mut count = vec![0u32; n];
    for _ in 0..plan.samples_per_tree {
        count[rng.random_range(0..n)] += 1;
    }
    let mut rows: Vec<u32> = (0..n as u32).filter(|&r| count[r as usize] > 0).collect();
    let mut root = Tally::default();
    for &r in &rows {
        root.add(y[r as usize], f64::from(count[r as usize]));
    }
    let mut tree = TreeArrays {
        feature: vec![LEAF],
        threshold: vec![0.0],
        left: vec![0],
        right: vec![0],
        value: vec![root.pos / root.all.max(f64::MIN_POSITIVE)],
    };
    let n_features = binned.cuts.len();
    let mut order: Vec<usize> = (0..n_features).collect();
    let mut hist = vec![Tally::default(); MAX_BINS];
    // (node, rows range, its tally, depth)
    let mut stack = vec![(0usize, 0usize, rows.len(), root, 0usize)];
    while let Some((node, start, end, tally, depth)) = stack.pop() {
        let pure = tally.pos <= 0.0 || tally.pos >= tally.all;
        if pure
            || tally.rows < 2 * plan.min_samples_leaf
            || plan.max_depth.is_some_and(|d| depth >= d)
        {
            continue;
        }
        let here = &rows[start..end];
        // Draw features until `features_per_split` non-constant ones have been tried; like
        // scikit-learn, keep drawing past that until some split is valid.
        let mut tried = 0;
        let mut best: Option<(f64, usize, usize)> = None; // (purity, feature, bin)
        for i in 0..n_features {
            if tried >= plan.features_per_split && best.is_some() {
                break;
            }
            let j = rng.random_range(i..n_features);
            order.swap(i, j);
            let f = order[i];
            let col = binned.column(f);
            let n_bins = binned.cuts[f].0.len() + 1;
            hist[..n_bins].fill(Tally::default());
            for &r in here {
                hist[col[r as usize] as usize].add(y[r as usize], f64::from(count[r as usize]));
            }
            if hist[..n_bins].iter().filter(|h| h.rows > 0).count() < 2 {
                continue; // constant here: does not count as tried
            }
            tried += 1;
            let mut left = Tally::default();
            for (k, h) in hist[..n_bins - 1].iter().enumerate() {
                left.pos += h.pos;
                left.all += h.all;
                left.rows += h.rows;
                if h.rows == 0 {
                    continue;
                }
                let right = tally.minus(left);
                if left.rows < plan.min_samples_leaf || right.rows < plan.min_samples_leaf {
                    continue;
                }
                let p = left.purity() + right.purity();
                if best.is_none_or(|(b, _, _)| p > b + 1e-12) {
                    best = Some((p, f, k));
                }
            }
        }
        let Some((gain, f, k)) = best else {
            continue;
        };
        if gain <= tally.purity() * (1.0 + 1e-12) {
            continue; // no split reduces impurity
        }
        // Partition the node's rows: bin <= k first.
        let col = binned.column(f);
        let seg = &mut rows[start..end];
        let mut mid = 0;
        for i in 0..seg.len() {
            if col[seg[i] as usize] as usize <= k {
                seg.swap(i, mid);
                mid += 1;
            }
        }
        let (mut lt, mut rt) = (Tally::default(), Tally::default());
        for (i, &r) in seg.iter().enumerate() {
            let side = if i < mid { &mut lt } else { &mut rt };
            side.add(y[r as usize], f64::from(count[r as usize]));
        }
        let li = tree.feature.len();
        for t in [lt, rt] {
            tree.feature.push(LEAF);
            tree.threshold.push(0.0);
            tree.left.push(0);
            tree.right.push(0);
            tree.value.push(t.pos / t.all);
        }
        tree.feature[node] = f as i64;
        tree.threshold[node] = binned.cuts[f].0[k];
        tree.left[node] = li as u32;
        tree.right[node] = li as u32 + 1;
        stack.push((li + 1, start + mid, end, rt, depth + 1));
        stack.push((li, start, start + mid, lt, depth + 1));
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_put_each_distinct_value_in_its_own_bin_and_match_the_threshold_rule() {
        let c = Cuts::of([3.0, 1.0, 2.0, 2.0, 10.0].into_iter());
        assert_eq!(c.0, vec![1.5, 2.5, 6.5]);
        for (x, b) in [
            (0.0, 0),
            (1.0, 0),
            (1.5, 0),
            (2.0, 1),
            (3.0, 2),
            (10.0, 3),
            (99.0, 3),
        ] {
            assert_eq!(c.bin(x), b, "{x}");
            // `x <= cuts[k]` exactly when bin(x) <= k: what inference tests.
            for (k, &cut) in c.0.iter().enumerate() {
                assert_eq!(x <= cut, usize::from(c.bin(x)) <= k);
            }
        }
    }

    #[test]
    fn many_distinct_values_are_grouped_into_at_most_256_bins() {
        let c = Cuts::of((0..100_000).map(|i| f64::from(i) * 0.5));
        assert!(c.0.len() < MAX_BINS && c.0.len() > 200, "{}", c.0.len());
        assert!(c.0.windows(2).all(|w| w[0] < w[1]));
    }
}
