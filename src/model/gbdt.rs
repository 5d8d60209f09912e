//! Gradient-boosted trees: forust-ml fits them, early stopping and the tree depth are chosen on
//! the time-ordered holdout, and the fitted trees become our own [`TreeArrays`], so scoring
//! stays ours (allocation-free, Saabas path attribution) and the artifact does not depend on
//! forust's serialisation.

use forust_ml::gradientbooster::GradientBooster;
use forust_ml::metric::Metric;
use forust_ml::objective::ObjectiveType;
use forust_ml::tree::Tree;
use forust_ml::Matrix;
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::artifact::{GbdtBody, GbdtTrial, ModelBody, Platt, TreeArrays, LEAF};
use super::infer::Scorer;
use super::ModelError;

/// Boosting knobs; the tree depth is searched over `max_depths`, the number of trees by early
/// stopping, both on the holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbdtParams {
    pub learning_rate: f64,
    /// Upper bound on trees; early stopping usually ends well before.
    pub max_trees: usize,
    /// Stop after this many trees without a better holdout log loss.
    pub early_stopping_rounds: usize,
    pub max_depths: Vec<usize>,
    /// Minimum hessian (≈ p(1-p) per row) in a leaf.
    pub min_leaf_weight: f64,
    pub l2: f64,
}

impl Default for GbdtParams {
    fn default() -> Self {
        GbdtParams {
            learning_rate: 0.1,
            max_trees: 500,
            early_stopping_rounds: 30,
            max_depths: vec![3, 5, 7],
            min_leaf_weight: 1.0,
            l2: 1.0,
        }
    }
}

impl GbdtParams {
    pub(super) fn check(&self) -> Result<(), ModelError> {
        let bad = |m: &str| Err(ModelError::InvalidParams(format!("gbdt: {m}")));
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning_rate must be in (0, 1]");
        }
        if self.max_trees == 0 || self.max_trees > 10_000 {
            return bad("max_trees must be in 1..=10000");
        }
        if self.early_stopping_rounds == 0 {
            return bad("early_stopping_rounds must be >= 1");
        }
        if self.max_depths.is_empty() || self.max_depths.iter().any(|&d| d == 0 || d > 16) {
            return bad("max_depths must be a non-empty list of depths in 1..=16");
        }
        if !(self.min_leaf_weight.is_finite() && self.min_leaf_weight >= 0.0) {
            return bad("min_leaf_weight must be finite and >= 0");
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad("l2 must be finite and >= 0");
        }
        Ok(())
    }
}

/// Column-major copy of `x` restricted to `cols`, as forust reads it.
fn column_major(x: ArrayView2<f64>, cols: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.nrows() * cols.len());
    for &c in cols {
        out.extend(x.column(c).iter());
    }
    out
}

/// Fits one booster per depth (on `x_fit`, early-stopped on `x_val`), and keeps the one with
/// the best holdout average precision. `x_*` are already encoded and clean.
#[allow(clippy::too_many_arguments)]
pub(super) fn fit_gbdt(
    x_fit: ArrayView2<f64>,
    y_fit: &[bool],
    x_val: ArrayView2<f64>,
    y_val: &[bool],
    params: &GbdtParams,
    seed: u64,
    threads: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<GbdtBody, ModelError> {
    let cols = varying_columns(x_fit)?;
    let fit_data = column_major(x_fit, &cols);
    let val_data = column_major(x_val, &cols);
    let target = |y: &[bool]| -> Vec<f64> { y.iter().map(|&b| f64::from(u8::from(b))).collect() };
    let (t_fit, t_val) = (target(y_fit), target(y_val));
    let (w_fit, w_val) = (vec![1.0; y_fit.len()], vec![1.0; y_val.len()]);

    let mut best: Option<(f64, GbdtBody)> = None;
    let mut search = Vec::new();
    for &depth in &params.max_depths {
        progress(&format!(
            "gbdt: fitting depth {depth} (learning rate {}, up to {} trees, early stopping after {} without progress)",
            params.learning_rate, params.max_trees, params.early_stopping_rounds
        ));
        let mut booster = booster(params, depth, params.max_trees, seed, threads)
            .set_evaluation_metric(Some(Metric::LogLoss))
            .set_early_stopping_rounds(Some(params.early_stopping_rounds));
        let fit_m = Matrix::new(&fit_data, y_fit.len(), cols.len());
        let val_m = Matrix::new(&val_data, y_val.len(), cols.len());
        booster
            .fit(&fit_m, &t_fit, &w_fit, Some(vec![(val_m, &t_val, &w_val)]))
            .map_err(|e| ModelError::Fit(format!("gbdt depth {depth}: {e}")))?;
        let keep = booster
            .best_iteration
            .map_or(booster.trees.len(), |i| i + 1);
        let trees: Vec<TreeArrays> = booster.trees[..keep.min(booster.trees.len())]
            .iter()
            .map(|t| convert(t, &cols))
            .collect::<Result<_, _>>()?;
        let body = GbdtBody {
            base_score: booster.base_score,
            learning_rate: params.learning_rate,
            max_depth: depth,
            search: Vec::new(),
            trees,
        };
        let (log_loss, ap) = holdout_scores(&body, x_val, y_val)?;
        progress(&format!(
            "gbdt: depth {depth}: kept {keep} trees, holdout log loss {log_loss:.5}, average precision {ap:.4}"
        ));
        search.push(GbdtTrial {
            max_depth: depth,
            trees: keep,
            log_loss,
            average_precision: ap,
        });
        // Ties go to the shallower model (tried first).
        if best.as_ref().is_none_or(|(b, _)| ap > *b) {
            best = Some((ap, body));
        }
    }
    let (_, mut body) = best.ok_or_else(|| ModelError::Fit("no gbdt depth was tried".into()))?;
    body.search = search;
    Ok(body)
}

/// forust's booster with our fixed choices: log loss, no missing-value branches (the engine
/// sends no missing values), seeded.
fn booster(
    params: &GbdtParams,
    depth: usize,
    trees: usize,
    seed: u64,
    threads: usize,
) -> GradientBooster {
    GradientBooster::default()
        .set_objective_type(ObjectiveType::LogLoss)
        .set_iterations(trees)
        .set_learning_rate(params.learning_rate as f32)
        .set_max_depth(depth)
        .set_min_leaf_weight(params.min_leaf_weight as f32)
        .set_l2(params.l2 as f32)
        .set_seed(seed)
        .set_allow_missing_splits(false)
        .set_create_missing_branch(false)
        .set_parallel(threads > 1)
        .set_num_threads(Some(threads))
}

/// `chosen`'s depth and number of trees, boosted again on `x`/`y` (all the training rows):
/// the search that chose them is kept in the body.
pub(super) fn refit_gbdt(
    x: ArrayView2<f64>,
    y: &[bool],
    chosen: &GbdtBody,
    params: &GbdtParams,
    seed: u64,
    threads: usize,
) -> Result<GbdtBody, ModelError> {
    let cols = varying_columns(x)?;
    let data = column_major(x, &cols);
    let target: Vec<f64> = y.iter().map(|&b| f64::from(u8::from(b))).collect();
    let trees = chosen.trees.len().max(1);
    let mut booster = booster(params, chosen.max_depth, trees, seed, threads);
    booster
        .fit(
            &Matrix::new(&data, y.len(), cols.len()),
            &target,
            &vec![1.0; y.len()],
            None,
        )
        .map_err(|e| ModelError::Fit(format!("gbdt depth {}: {e}", chosen.max_depth)))?;
    Ok(GbdtBody {
        base_score: booster.base_score,
        learning_rate: params.learning_rate,
        max_depth: chosen.max_depth,
        search: chosen.search.clone(),
        trees: booster
            .trees
            .iter()
            .map(|t| convert(t, &cols))
            .collect::<Result<_, _>>()?,
    })
}

/// The columns with more than one value: forust refuses a column without variance, and such
/// a column cannot split anyway.
fn varying_columns(x: ArrayView2<f64>) -> Result<Vec<usize>, ModelError> {
    let cols: Vec<usize> = (0..x.ncols())
        .filter(|&c| {
            let col = x.column(c);
            col.iter().any(|&v| v != col[0])
        })
        .collect();
    if cols.is_empty() {
        return Err(ModelError::InvalidInput(
            "every feature is constant in the training rows".into(),
        ));
    }
    Ok(cols)
}

/// Uncalibrated holdout log loss and average precision of a body, scored by our own scorer.
fn holdout_scores(
    body: &GbdtBody,
    x_val: ArrayView2<f64>,
    y_val: &[bool],
) -> Result<(f64, f64), ModelError> {
    let body = ModelBody::Gbdt(body.clone());
    let scorer = Scorer::build(x_val.ncols(), &body, Platt::IDENTITY, &[]);
    let p = super::train::score_rows(&scorer, x_val);
    Ok((
        super::train::log_loss(&p, y_val),
        super::train::average_precision(&p, y_val)?,
    ))
}

/// forust's nodes (go left when `x < split_value`) as our arrays (left when `x <= threshold`),
/// pre-order, with internal values recomputed as the hessian-weighted mean of their children,
/// so a Saabas path attribution credits each split with the change in expected prediction.
fn convert(tree: &Tree, cols: &[usize]) -> Result<TreeArrays, ModelError> {
    let mut out = TreeArrays {
        feature: Vec::new(),
        threshold: Vec::new(),
        left: Vec::new(),
        right: Vec::new(),
        value: Vec::new(),
    };
    let mut cover = Vec::new();
    // (forust node, our parent, is right child); children are filled in when they are pushed.
    let mut stack = vec![(0usize, usize::MAX, false)];
    while let Some((n, parent, right)) = stack.pop() {
        let node = tree
            .nodes
            .get(n)
            .ok_or_else(|| ModelError::Fit(format!("gbdt tree refers to missing node {n}")))?;
        let i = out.feature.len();
        if parent != usize::MAX {
            if right {
                out.right[parent] = i as u32;
            } else {
                out.left[parent] = i as u32;
            }
        }
        out.left.push(0);
        out.right.push(0);
        out.value.push(f64::from(node.weight_value));
        cover.push(f64::from(node.hessian_sum).max(0.0));
        if node.is_leaf {
            out.feature.push(LEAF);
            out.threshold.push(0.0);
            continue;
        }
        let feature = *cols.get(node.split_feature).ok_or_else(|| {
            ModelError::Fit(format!(
                "gbdt split on unknown column {}",
                node.split_feature
            ))
        })?;
        out.feature.push(feature as i64);
        // `x < s` is `x <= the float just below s`.
        out.threshold.push(node.split_value.next_down());
        // Pushed right first so the left subtree is laid out first (pre-order).
        stack.push((node.right_child, i, true));
        stack.push((node.left_child, i, false));
    }
    // Children come after their parent, so one backward pass fills internal values bottom-up.
    for i in (0..out.feature.len()).rev() {
        if out.feature[i] == LEAF {
            continue;
        }
        let (l, r) = (out.left[i] as usize, out.right[i] as usize);
        let (cl, cr) = (cover[l], cover[r]);
        cover[i] = cl + cr;
        out.value[i] = if cl + cr > 0.0 {
            (cl * out.value[l] + cr * out.value[r]) / (cl + cr)
        } else {
            0.5 * (out.value[l] + out.value[r])
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// Our arrays score exactly what forust predicts, including on split values themselves
    /// (the `<` versus `<=` conversion), and internal values do not change any prediction.
    #[test]
    fn converted_trees_predict_what_forust_predicts() {
        let n = 3_000;
        let x = Array2::from_shape_fn((n, 3), |(i, j)| ((i * (j + 7) * 31) % 97) as f64);
        let y: Vec<bool> = (0..n)
            .map(|i| (x[(i, 0)] + 2.0 * x[(i, 1)]) % 50.0 < 9.0)
            .collect();
        let t: Vec<f64> = y.iter().map(|&b| f64::from(u8::from(b))).collect();
        let cols = [0, 1, 2];
        let data = column_major(x.view(), &cols);
        let mut booster = GradientBooster::default()
            .set_iterations(20)
            .set_max_depth(4)
            .set_allow_missing_splits(false)
            .set_parallel(false);
        booster
            .fit(&Matrix::new(&data, n, 3), &t, &vec![1.0; n], None)
            .unwrap_or_else(|e| panic!("{e}"));
        let expected = booster.predict(&Matrix::new(&data, n, 3), false);
        let body = ModelBody::Gbdt(GbdtBody {
            base_score: booster.base_score,
            learning_rate: 0.3,
            max_depth: 4,
            search: Vec::new(),
            trees: booster
                .trees
                .iter()
                .map(|t| convert(t, &cols))
                .collect::<Result<_, _>>()
                .unwrap_or_default(),
        });
        let scorer = Scorer::build(3, &body, Platt::IDENTITY, &[]);
        let mut c = [0.0; 3];
        for (i, want) in expected.iter().enumerate() {
            let row = [x[(i, 0)], x[(i, 1)], x[(i, 2)]];
            let got = scorer.raw_score(&row, &mut c);
            assert!((got - want).abs() < 1e-9, "row {i}: {got} vs {want}");
            let sum = scorer.base_value() + c.iter().sum::<f64>();
            assert!((got - sum).abs() < 1e-9, "row {i}: Saabas adds up");
        }
    }
}
