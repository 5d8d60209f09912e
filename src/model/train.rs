//! Offline training with linfa: logistic regression or a class-balanced random forest, turned
//! into a [`ModelArtifact`] with validation metrics on a time-ordered holdout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use linfa::prelude::*;
use linfa::DatasetBase;
use linfa_logistic::LogisticRegression;
use linfa_trees::{DecisionTree, SplitQuality, TreeNode};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::artifact::{
    FeatureScaling, ForestBody, LogisticBody, ModelArtifact, ModelBody, Sampling, TrainingPeriod,
    TreeArrays, FORMAT_VERSION, LEAF,
};
use super::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algo {
    Logistic,
    Forest,
}

/// An automatic positive-class weight above this mostly amplifies label noise in the few
/// positives; 50 already makes a 1% fraud rate count as ~1/3 of the loss.
const MAX_AUTO_CLASS_WEIGHT: f64 = 50.0;

/// Training knobs plus the provenance recorded verbatim in the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    pub algo: Algo,
    pub seed: u64,
    /// Logistic: L2 penalty `alpha/2 · |w|²` on the summed (not averaged) log-loss.
    pub l2: f64,
    pub max_iter: u64,
    /// Forest: number of trees.
    pub trees: usize,
    pub max_depth: usize,
    pub min_samples_leaf: usize,
    /// Fraction of features each tree may split on (linfa subsamples per tree, not per split).
    pub feature_fraction: f64,
    /// Forest: rows drawn (with replacement) per tree; bounds training time on big matrices.
    pub max_samples_per_tree: usize,
    /// Forest: negatives drawn per positive drawn, i.e. the balanced bootstrap's class mix.
    pub negatives_per_positive: f64,
    /// Weight of a positive row relative to a negative one. None = auto: negatives/positives
    /// (in each tree's sample for the forest, overall for logistic), capped at 50.
    pub class_weight_positive: Option<f64>,
    /// The last (most recent) fraction of rows is held out for validation metrics and not
    /// trained on; 0 disables validation.
    pub validation_fraction: f64,
    /// Worker threads for the forest; 0 = all cores.
    pub threads: usize,
    pub training_period: TrainingPeriod,
    pub created_at_ms: i64,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            algo: Algo::Forest,
            seed: 42,
            l2: 1.0,
            max_iter: 200,
            trees: 100,
            max_depth: 8,
            min_samples_leaf: 20,
            feature_fraction: 0.5,
            max_samples_per_tree: 20_000,
            negatives_per_positive: 3.0,
            class_weight_positive: None,
            validation_fraction: 0.2,
            threads: 0,
            training_period: TrainingPeriod {
                from_ms: 0,
                to_ms: 0,
            },
            created_at_ms: 0,
        }
    }
}

impl TrainParams {
    fn check(&self) -> Result<(), ModelError> {
        let bad = |m: &str| Err(ModelError::InvalidParams(m.to_string()));
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad("l2 must be finite and >= 0");
        }
        if self.max_iter == 0 {
            return bad("max_iter must be >= 1");
        }
        if self.trees == 0 || self.trees > 10_000 {
            return bad("trees must be in 1..=10000");
        }
        if self.max_depth == 0 || self.max_depth > 30 {
            return bad("max_depth must be in 1..=30");
        }
        if self.min_samples_leaf == 0 {
            return bad("min_samples_leaf must be >= 1");
        }
        if !(self.feature_fraction > 0.0 && self.feature_fraction <= 1.0) {
            return bad("feature_fraction must be in (0, 1]");
        }
        if self.max_samples_per_tree < 2 {
            return bad("max_samples_per_tree must be >= 2");
        }
        if !(self.negatives_per_positive.is_finite() && self.negatives_per_positive > 0.0) {
            return bad("negatives_per_positive must be finite and > 0");
        }
        if let Some(w) = self.class_weight_positive {
            if !(w.is_finite() && w > 0.0) {
                return bad("class_weight_positive must be finite and > 0");
            }
        }
        if !(0.0..0.9).contains(&self.validation_fraction) {
            return bad("validation_fraction must be in [0, 0.9)");
        }
        Ok(())
    }
}

/// Trains on `x` (rows = payments in time order, columns = `feature_names`) and labels `y`.
/// Non-finite values are trained as 0, matching [`super::Scorer::score`]. The most recent
/// `validation_fraction` of rows is held out and scored for `validation_metrics`.
pub fn train(
    x: &Array2<f64>,
    y: &[bool],
    feature_names: &[String],
    params: &TrainParams,
    progress: &mut dyn FnMut(&str),
) -> Result<ModelArtifact, ModelError> {
    params.check()?;
    let (rows, cols) = x.dim();
    if rows != y.len() {
        return Err(ModelError::InvalidInput(format!(
            "{rows} rows but {} labels",
            y.len()
        )));
    }
    if cols != feature_names.len() || cols == 0 {
        return Err(ModelError::InvalidInput(format!(
            "{cols} columns but {} feature names",
            feature_names.len()
        )));
    }
    if cols > u32::MAX as usize - 1 {
        return Err(ModelError::InvalidInput("too many features".into()));
    }
    progress(&format!("hashing {rows} x {cols} training matrix"));
    let data_sha256 = hash_data(x.view(), y, feature_names);

    let mut x = x.to_owned();
    let non_finite = x.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        x.mapv_inplace(|v| if v.is_finite() { v } else { 0.0 });
        progress(&format!("{non_finite} non-finite values trained as 0"));
    }
    let n_val = (rows as f64 * params.validation_fraction).floor() as usize;
    let n_fit = rows - n_val;
    let (x_fit, x_val) = x.view().split_at(Axis(0), n_fit);
    let (y_fit, y_val) = y.split_at(n_fit);
    let fit_pos = y_fit.iter().filter(|&&b| b).count();
    if fit_pos == 0 || fit_pos == n_fit {
        return Err(ModelError::InvalidInput(format!(
            "training split of {n_fit} rows has {fit_pos} positives; both classes are needed"
        )));
    }
    progress(&format!(
        "training {:?} on {n_fit} rows ({fit_pos} positives), validating on {n_val}",
        params.algo
    ));

    let body = match params.algo {
        Algo::Logistic => ModelBody::Logistic(train_logistic(x_fit, y_fit, params, progress)?),
        Algo::Forest => ModelBody::Forest(train_forest(x_fit, y_fit, params, progress)?),
    };
    let mut artifact = ModelArtifact {
        format_version: FORMAT_VERSION,
        version: String::new(),
        algo: params.algo,
        params: params.clone(),
        feature_names: feature_names.to_vec(),
        training_period: params.training_period,
        data_sha256,
        train_rows: n_fit as u64,
        train_positives: fit_pos as u64,
        validation_rows: n_val as u64,
        validation_positives: y_val.iter().filter(|&&b| b).count() as u64,
        validation_metrics: BTreeMap::new(),
        created_at_ms: params.created_at_ms,
        body,
    };
    artifact.validate()?;
    if n_val > 0 {
        progress("scoring validation rows");
        artifact.validation_metrics = validation_metrics(&artifact, x_val, y_val);
    }
    artifact.version = artifact.compute_version()?;
    progress(&format!("done: {}", artifact.version));
    Ok(artifact)
}

fn hash_data(x: ArrayView2<f64>, y: &[bool], names: &[String]) -> String {
    let mut h = Sha256::new();
    for n in names {
        h.update((n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
    }
    let mut buf = Vec::with_capacity(x.ncols() * 8);
    for row in x.rows() {
        buf.clear();
        row.iter()
            .for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
        h.update(&buf);
    }
    let labels: Vec<u8> = y.iter().map(|&b| b as u8).collect();
    h.update(&labels);
    hex::encode(h.finalize())
}

/// Log loss, Brier score and base rate on the holdout; ranking metrics (AP, AUC) are left to
/// the caller's `quality` module so there is one implementation of each.
fn validation_metrics(a: &ModelArtifact, x: ArrayView2<f64>, y: &[bool]) -> BTreeMap<String, f64> {
    let scorer = a.scorer();
    let mut contrib = vec![0.0; a.feature_names.len()];
    let (mut ll, mut brier, mut pos, mut sum_p) = (0.0, 0.0, 0.0, 0.0);
    for (row, &label) in x.rows().into_iter().zip(y) {
        let p = match row.as_slice() {
            Some(s) => scorer.score(s, &mut contrib),
            None => scorer.score(&row.to_vec(), &mut contrib),
        };
        let t = if label { 1.0 } else { 0.0 };
        let pc = p.clamp(1e-15, 1.0 - 1e-15);
        ll -= t * pc.ln() + (1.0 - t) * (1.0 - pc).ln();
        brier += (p - t) * (p - t);
        pos += t;
        sum_p += p;
    }
    let n = y.len().max(1) as f64;
    BTreeMap::from([
        ("log_loss".to_string(), ll / n),
        ("brier".to_string(), brier / n),
        ("base_rate".to_string(), pos / n),
        ("mean_score".to_string(), sum_p / n),
    ])
}

fn auto_weight(params: &TrainParams, neg: f64, pos: f64) -> f64 {
    params
        .class_weight_positive
        .unwrap_or_else(|| (neg / pos.max(1.0)).clamp(1.0, MAX_AUTO_CLASS_WEIGHT))
}

fn train_logistic(
    x: ArrayView2<f64>,
    y: &[bool],
    params: &TrainParams,
    progress: &mut dyn FnMut(&str),
) -> Result<LogisticBody, ModelError> {
    let (rows, cols) = x.dim();
    let scaling: Vec<FeatureScaling> = x.columns().into_iter().map(fit_scaling).collect();
    let pos = y.iter().filter(|&&b| b).count();
    // linfa-logistic has no sample weights, so an integer class weight is applied by feeding
    // each positive row that many times and later taking ln(k) off the bias.
    let k = auto_weight(params, (rows - pos) as f64, pos as f64)
        .round()
        .clamp(1.0, MAX_AUTO_CLASS_WEIGHT) as usize;
    let total = rows + pos * (k - 1);
    progress(&format!(
        "logistic: standardising, positives repeated {k}x ({total} rows)"
    ));
    let mut z = Array2::<f64>::zeros((total, cols));
    let mut target = Vec::with_capacity(total);
    let mut r = 0;
    for (row, &label) in x.rows().into_iter().zip(y) {
        for _ in 0..if label { k } else { 1 } {
            for (j, (v, s)) in row.iter().zip(&scaling).enumerate() {
                z[(r, j)] = standardise(*v, s);
            }
            target.push(label);
            r += 1;
        }
    }
    progress(&format!(
        "logistic: fitting (l2 {}, max {} iterations)",
        params.l2, params.max_iter
    ));
    let dataset = DatasetBase::new(z, Array1::from(target));
    let fitted = LogisticRegression::default()
        .alpha(params.l2)
        .max_iterations(params.max_iter)
        // linfa's loss is a sum over rows, so a fixed gradient tolerance gets stricter as the
        // data grows; this asks for a mean per-row gradient norm below 1e-5.
        .gradient_tolerance(1e-5 * total as f64)
        .fit(&dataset)
        .map_err(|e| ModelError::Fit(e.to_string()))?;
    // linfa's "positive" class is the more frequent label (usually `false`), so its
    // coefficients are flipped into fraud log-odds when needed.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok(LogisticBody {
        scaling,
        weights: fitted.params().iter().map(|w| sign * w).collect(),
        bias: sign * fitted.intercept() - (k as f64).ln(),
        positive_replication: k as u32,
    })
}

fn fit_scaling(col: ndarray::ArrayView1<f64>) -> FeatureScaling {
    let min = col.iter().copied().fold(f64::INFINITY, f64::min);
    let max = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let n = col.len().max(1) as f64;
    let raw_mean = col.sum() / n;
    // Non-negative with a max far above the mean: fen amounts, counts. Flags and ratios
    // (max <= 1) stay linear.
    let log1p = min >= 0.0 && max > 1.0 && max > 10.0 * raw_mean;
    let t = |v: f64| if log1p { v.max(0.0).ln_1p() } else { v };
    let mean = col.iter().map(|&v| t(v)).sum::<f64>() / n;
    let var = col.iter().map(|&v| (t(v) - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    FeatureScaling {
        log1p,
        mean,
        std: if std.is_finite() && std > 1e-12 {
            std
        } else {
            1.0
        },
    }
}

fn standardise(v: f64, s: &FeatureScaling) -> f64 {
    let v = if s.log1p { v.max(0.0).ln_1p() } else { v };
    (v - s.mean) / s.std
}

struct TreePlan {
    n_pos: usize,
    n_neg: usize,
    n_cols: usize,
    weight: f64,
}

fn train_forest(
    x: ArrayView2<f64>,
    y: &[bool],
    params: &TrainParams,
    progress: &mut dyn FnMut(&str),
) -> Result<ForestBody, ModelError> {
    let pos_idx: Vec<usize> = (0..y.len()).filter(|&i| y[i]).collect();
    let neg_idx: Vec<usize> = (0..y.len()).filter(|&i| !y[i]).collect();
    let budget = params.max_samples_per_tree.min(y.len());
    let want_pos = (budget as f64 / (1.0 + params.negatives_per_positive)).ceil() as usize;
    let n_pos = want_pos.clamp(1, pos_idx.len());
    let n_neg = ((n_pos as f64 * params.negatives_per_positive).round() as usize)
        .clamp(1, neg_idx.len().min(budget.saturating_sub(n_pos).max(1)));
    let plan = TreePlan {
        n_pos,
        n_neg,
        n_cols: ((x.ncols() as f64 * params.feature_fraction).ceil() as usize).clamp(1, x.ncols()),
        weight: auto_weight(params, n_neg as f64, n_pos as f64),
    };
    let rate = (n_neg as f64 / neg_idx.len() as f64) / (n_pos as f64 / pos_idx.len() as f64);
    progress(&format!(
        "forest: {} trees, each on {n_pos} positives + {n_neg} negatives (negative rate {rate:.4} \
         relative to positives), {} of {} features, positive weight {:.2}",
        params.trees,
        plan.n_cols,
        x.ncols(),
        plan.weight
    ));

    let threads = match params.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    }
    .clamp(1, params.trees);
    let next = AtomicUsize::new(0);
    let mut trees: Vec<Option<TreeArrays>> = vec![None; params.trees];
    let (tx, rx) = mpsc::channel::<(usize, Result<TreeArrays, ModelError>)>();
    let mut first_err = None;
    std::thread::scope(|s| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, plan, pos_idx, neg_idx) = (&next, &plan, &pos_idx, &neg_idx);
            s.spawn(move || loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                if t >= params.trees {
                    break;
                }
                let r = fit_tree(x, pos_idx, neg_idx, plan, params, t);
                let failed = r.is_err();
                if tx.send((t, r)).is_err() || failed {
                    // Stop handing out work once anything failed.
                    next.store(params.trees, Ordering::Relaxed);
                    break;
                }
            });
        }
        drop(tx);
        let mut done = 0;
        for (t, r) in rx {
            match r {
                Ok(tree) => {
                    done += 1;
                    progress(&format!(
                        "forest: tree {done}/{} ({} nodes)",
                        params.trees,
                        tree.feature.len()
                    ));
                    if let Some(slot) = trees.get_mut(t) {
                        *slot = Some(tree);
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    let trees: Vec<TreeArrays> = trees.into_iter().flatten().collect();
    if trees.len() != params.trees {
        return Err(ModelError::Fit("a forest worker stopped early".into()));
    }
    progress("forest: calibrating the mean score to the base rate");
    let calibration = calibration_shift(x, y, &trees, rate.ln(), params.seed);
    Ok(ForestBody {
        sampling: Sampling {
            positives_per_tree: n_pos as u64,
            negatives_per_tree: n_neg as u64,
            rate,
            positive_weight: plan.weight,
        },
        calibration_shift: calibration,
        log_odds_shift: rate.ln() + calibration,
        trees,
    })
}

/// Averaging log-odds over trees (what keeps Saabas additive) is a geometric mean of odds,
/// which sits below the arithmetic mean, so after the sampling correction the forest still
/// under-predicts. One intercept fitted so the mean probability over (up to 200k) training
/// rows equals their fraud rate fixes the level without changing the ranking.
fn calibration_shift(
    x: ArrayView2<f64>,
    y: &[bool],
    trees: &[TreeArrays],
    shift: f64,
    seed: u64,
) -> f64 {
    const MAX_ROWS: usize = 200_000;
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xCA1B);
    let rows: Vec<usize> = if y.len() <= MAX_ROWS {
        (0..y.len()).collect()
    } else {
        (0..MAX_ROWS)
            .map(|_| rng.random_range(0..y.len()))
            .collect()
    };
    let inv = 1.0 / trees.len().max(1) as f64;
    let raw: Vec<f64> = rows
        .iter()
        .map(|&r| {
            let leaf_sum: f64 = trees
                .iter()
                .map(|t| {
                    let mut n = 0usize;
                    while let (Some(&f), Some(&thr)) = (t.feature.get(n), t.threshold.get(n)) {
                        if f == LEAF {
                            break;
                        }
                        let v = x[(r, f as usize)];
                        n = if v <= thr { t.left[n] } else { t.right[n] } as usize;
                    }
                    t.value.get(n).copied().unwrap_or(0.0)
                })
                .sum();
            shift + leaf_sum * inv
        })
        .collect();
    let target = rows.iter().filter(|&&r| y[r]).count() as f64 / rows.len().max(1) as f64;
    let mean_p = |s: f64| {
        raw.iter()
            .map(|&z| 1.0 / (1.0 + (-(z + s)).exp()))
            .sum::<f64>()
            / raw.len().max(1) as f64
    };
    // Mean probability is increasing in the shift: bisect.
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if mean_p(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// One tree: balanced bootstrap → linfa CART on a feature subset → our flat arrays, with node
/// values recomputed from the tree's own sample (linfa keeps only the modal class).
fn fit_tree(
    x: ArrayView2<f64>,
    pos_idx: &[usize],
    neg_idx: &[usize],
    plan: &TreePlan,
    params: &TrainParams,
    t: usize,
) -> Result<TreeArrays, ModelError> {
    // Seeded per tree so the forest does not depend on how trees land on threads.
    let mut rng =
        SmallRng::seed_from_u64(params.seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut rows = Vec::with_capacity(plan.n_pos + plan.n_neg);
    rows.extend((0..plan.n_pos).map(|_| pos_idx[rng.random_range(0..pos_idx.len())]));
    rows.extend((0..plan.n_neg).map(|_| neg_idx[rng.random_range(0..neg_idx.len())]));
    let mut cols: Vec<usize> =
        rand::seq::index::sample(&mut rng, x.ncols(), plan.n_cols).into_vec();
    cols.sort_unstable();

    let sub = x.select(Axis(0), &rows).select(Axis(1), &cols);
    let labels: Vec<bool> = (0..rows.len()).map(|i| i < plan.n_pos).collect();
    let weights: Array1<f32> = labels
        .iter()
        .map(|&l| if l { plan.weight as f32 } else { 1.0 })
        .collect();
    let dataset = DatasetBase::new(sub, Array1::from(labels.clone())).with_weights(weights);
    let leaf = params.min_samples_leaf as f32;
    let tree = DecisionTree::<f64, bool>::params()
        .split_quality(SplitQuality::Gini)
        .max_depth(Some(params.max_depth))
        .min_weight_leaf(leaf)
        .min_weight_split(2.0 * leaf)
        .fit(&dataset)
        .map_err(|e| ModelError::Fit(format!("tree {t}: {e}")))?;

    let mut arrays = TreeArrays {
        feature: Vec::new(),
        threshold: Vec::new(),
        left: Vec::new(),
        right: Vec::new(),
        value: Vec::new(),
    };
    flatten(tree.root_node(), &cols, &mut arrays);

    // Route the sample exactly as linfa's fit did (`<=` goes left) and count classes per node.
    let mut counts = vec![(0u64, 0u64); arrays.feature.len()];
    for (r, &label) in rows.iter().zip(&labels) {
        let mut n = 0usize;
        loop {
            let c = &mut counts[n];
            if label {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
            let f = arrays.feature[n];
            if f == LEAF {
                break;
            }
            n = if x[(*r, f as usize)] <= arrays.threshold[n] {
                arrays.left[n] as usize
            } else {
                arrays.right[n] as usize
            };
        }
    }
    // Half a count on each side keeps pure leaves finite (Jeffreys prior).
    arrays.value = counts
        .iter()
        .map(|&(p, n)| ((p as f64 + 0.5) / (n as f64 + 0.5)).ln())
        .collect();
    Ok(arrays)
}

/// Pre-order flattening, so every child's index is larger than its parent's.
fn flatten(node: &TreeNode<f64, bool>, cols: &[usize], out: &mut TreeArrays) -> usize {
    let i = out.feature.len();
    out.feature.push(LEAF);
    out.threshold.push(0.0);
    out.left.push(0);
    out.right.push(0);
    out.value.push(0.0);
    if node.is_leaf() {
        return i;
    }
    let children = node.children();
    let (Some(Some(l)), Some(Some(r))) = (children.first(), children.get(1)) else {
        return i;
    };
    let (f, threshold, _) = node.split();
    let Some(&col) = cols.get(f) else {
        return i;
    };
    let li = flatten(l, cols, out);
    let ri = flatten(r, cols, out);
    out.feature[i] = col as i64;
    out.threshold[i] = threshold;
    out.left[i] = li as u32;
    out.right[i] = ri as u32;
    i
}
