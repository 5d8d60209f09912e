//! Offline training: logistic regression (linfa), a random forest and gradient-boosted trees
//! (forust-ml), each fitted on the training rows minus a time-ordered holdout, calibrated on
//! that holdout, and compared on it; the winner is then fitted again on every training row
//! with the hyper-parameters the holdout chose. The result is a [`ModelArtifact`].

use std::collections::BTreeMap;

use linfa::prelude::*;
use linfa::DatasetBase;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::artifact::{
    Candidate, CategoryEncoding, FeatureScaling, ForestBody, LogisticBody, ModelArtifact,
    ModelBody, Platt, TrainingPeriod, FORMAT_VERSION,
};
use super::forest::{fit_forest, ForestPlan};
use super::gbdt::{fit_gbdt, refit_gbdt, GbdtParams};
use super::infer::Scorer;
use super::{categorical, ModelError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algo {
    Logistic,
    Forest,
    Gbdt,
}

impl Algo {
    pub const ALL: [Algo; 3] = [Algo::Logistic, Algo::Forest, Algo::Gbdt];

    pub fn name(self) -> &'static str {
        match self {
            Algo::Logistic => "logistic",
            Algo::Forest => "forest",
            Algo::Gbdt => "gbdt",
        }
    }
}

/// An automatic positive-class weight above this mostly amplifies label noise in the few
/// positives; 50 already makes a 1% fraud rate count as ~1/3 of the loss.
const MAX_AUTO_CLASS_WEIGHT: f64 = 50.0;

/// Training knobs plus the provenance recorded verbatim in the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// None: train every learner and keep the one with the best holdout average precision.
    pub algo: Option<Algo>,
    pub seed: u64,
    /// Feature indices whose values are category codes (see [`CategoryEncoding`]).
    pub categorical: Vec<usize>,
    /// Logistic: L2 penalty `alpha/2 · |w|²` on the summed (not averaged) log-loss.
    pub l2: f64,
    pub max_iter: u64,
    /// Logistic: weight of a positive row relative to a negative one. None = auto:
    /// negatives/positives, capped at 50.
    pub class_weight_positive: Option<f64>,
    /// Forest: number of trees.
    pub trees: usize,
    /// Forest: None grows every tree until its leaves are pure (scikit-learn's default).
    pub max_depth: Option<usize>,
    pub min_samples_leaf: usize,
    /// Forest: features drawn at each split; 0 = sqrt(features), scikit-learn's default.
    pub features_per_split: usize,
    /// Forest: bootstrap rows per tree; 0 = as many as there are fitting rows.
    pub samples_per_tree: usize,
    pub gbdt: GbdtParams,
    /// The last (most recent) fraction of rows is the holdout: it picks the learner and its
    /// hyper-parameters, stops the boosting and fits the calibration.
    pub validation_fraction: f64,
    /// Fit the chosen learner again on every training row, holdout included, with the
    /// hyper-parameters (tree depth, number of boosted trees) and calibration the holdout
    /// chose. The holdout holds the most recent weeks, which say most about the weeks to
    /// come: on the card generator, scikit-learn's forest fitted without them loses 0.06
    /// average precision on the test week (`benches/model_parity`).
    #[serde(default = "yes")]
    pub refit: bool,
    /// Worker threads; 0 = all cores. Not recorded: the model does not depend on it.
    #[serde(skip)]
    pub threads: usize,
    pub training_period: TrainingPeriod,
    /// An input like the others (`fengkong train` uses the newest event time in its data
    /// file), so the same data and parameters give the same bytes.
    pub created_at_ms: i64,
    /// sha256 of the file the rows were replayed from, when there is one.
    pub data_file_sha256: Option<String>,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            algo: None,
            seed: 42,
            categorical: Vec::new(),
            l2: 1.0,
            max_iter: 200,
            class_weight_positive: None,
            trees: 100,
            max_depth: None,
            min_samples_leaf: 1,
            features_per_split: 0,
            samples_per_tree: 0,
            gbdt: GbdtParams::default(),
            validation_fraction: 0.2,
            refit: true,
            threads: 0,
            training_period: TrainingPeriod {
                from_ms: 0,
                to_ms: 0,
            },
            created_at_ms: 0,
            data_file_sha256: None,
        }
    }
}

fn yes() -> bool {
    true
}

impl TrainParams {
    fn check(&self, cols: usize) -> Result<(), ModelError> {
        let bad = |m: &str| Err(ModelError::InvalidParams(m.to_string()));
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad("l2 must be finite and >= 0");
        }
        if self.max_iter == 0 {
            return bad("max_iter must be >= 1");
        }
        if let Some(w) = self.class_weight_positive {
            if !(w.is_finite() && w > 0.0) {
                return bad("class_weight_positive must be finite and > 0");
            }
        }
        if self.trees == 0 || self.trees > 10_000 {
            return bad("trees must be in 1..=10000");
        }
        if self.max_depth.is_some_and(|d| d == 0 || d > 200) {
            return bad("max_depth must be in 1..=200");
        }
        if self.min_samples_leaf == 0 {
            return bad("min_samples_leaf must be >= 1");
        }
        if self.features_per_split > cols {
            return bad("features_per_split must not exceed the number of features");
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 0.9) {
            return bad(
                "validation_fraction must be in (0, 0.9): the holdout calibrates the model",
            );
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(&c) = self
            .categorical
            .iter()
            .find(|&&c| c >= cols || !seen.insert(c))
        {
            return Err(ModelError::InvalidParams(format!(
                "categorical column {c} is out of range 0..{cols} or repeated"
            )));
        }
        self.gbdt.check()
    }

    fn threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            t => t,
        }
    }
}

/// Trains on `x` (rows = payments in time order, columns = `feature_names`) and labels `y`.
/// Non-finite values are trained as 0, matching [`super::Scorer::score`]. The most recent
/// `validation_fraction` of rows is the holdout; with `params.algo` None every learner is
/// trained and the best holdout average precision wins.
pub fn train(
    x: &Array2<f64>,
    y: &[bool],
    feature_names: &[String],
    params: &TrainParams,
    progress: &mut dyn FnMut(&str),
) -> Result<ModelArtifact, ModelError> {
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
    params.check(cols)?;
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
    let count = |y: &[bool]| y.iter().filter(|&&b| b).count();
    let (fit_pos, val_pos) = (count(y_fit), count(y_val));
    if fit_pos == 0 || fit_pos == n_fit {
        return Err(ModelError::InvalidInput(format!(
            "fitting rows ({n_fit}) have {fit_pos} positives; both classes are needed"
        )));
    }
    if val_pos == 0 || val_pos == n_val {
        return Err(ModelError::InvalidInput(format!(
            "the holdout (last {n_val} rows) has {val_pos} positives; both classes are needed \
             to calibrate and compare models (train on a longer period)"
        )));
    }
    progress(&format!(
        "fitting on {n_fit} rows ({fit_pos} fraud); holdout for choice and calibration: the last {n_val} rows ({val_pos} fraud)"
    ));
    let (encodings, x_fit_enc) = categorical::fit(x_fit, y_fit, &params.categorical);
    if !encodings.is_empty() {
        let codes: usize = encodings.iter().map(|e| e.codes.len()).sum();
        progress(&format!(
            "categorical: {} columns, {codes} codes encoded as smoothed fraud log-odds",
            encodings.len()
        ));
    }
    let x_val_enc = categorical::apply(x_val, &encodings);
    let fit = (x_fit_enc.view(), y_fit);
    let val = (x_val, x_val_enc.view(), y_val);

    let algos = params.algo.map_or(Algo::ALL.to_vec(), |a| vec![a]);
    let mut best: Option<(Candidate, ModelBody, Platt, BTreeMap<String, f64>)> = None;
    let mut candidates = Vec::new();
    for algo in algos {
        let body = fit_body(algo, fit, val, params, progress)?;
        let (candidate, platt, metrics) = judge(algo, &body, &encodings, val, cols)?;
        progress(&format!(
            "{}: holdout average precision {:.4}, ROC AUC {:.4}, log loss {:.5} ({})",
            algo.name(),
            candidate.average_precision,
            candidate.roc_auc,
            candidate.log_loss,
            candidate.summary
        ));
        candidates.push(candidate.clone());
        if best
            .as_ref()
            .is_none_or(|(b, ..)| candidate.average_precision > b.average_precision)
        {
            best = Some((candidate, body, platt, metrics));
        }
    }
    let (chosen, body, calibration, validation_metrics) =
        best.ok_or_else(|| ModelError::Fit("no learner was trained".into()))?;
    if candidates.len() > 1 {
        progress(&format!(
            "chose {}: best holdout average precision",
            chosen.algo.name()
        ));
    }
    let (body, encodings, train_rows, train_positives) = if params.refit {
        progress(&format!(
            "{}: fitting again on all {rows} training rows ({} fraud) with the chosen settings",
            chosen.algo.name(),
            fit_pos + val_pos
        ));
        let (encodings, x_enc) = categorical::fit(x.view(), y, &params.categorical);
        let body = refit(&body, (x_enc.view(), y), params, progress)?;
        (body, encodings, rows, fit_pos + val_pos)
    } else {
        (body, encodings, n_fit, fit_pos)
    };
    let mut artifact = ModelArtifact {
        format_version: FORMAT_VERSION,
        version: String::new(),
        algo: chosen.algo,
        params: params.clone(),
        feature_names: feature_names.to_vec(),
        training_period: params.training_period,
        data_sha256,
        train_rows: train_rows as u64,
        train_positives: train_positives as u64,
        validation_rows: n_val as u64,
        validation_positives: val_pos as u64,
        validation_metrics,
        candidates,
        test: None,
        created_at_ms: params.created_at_ms,
        calibration,
        categorical: encodings,
        body,
    };
    artifact.validate()?;
    artifact.version = artifact.compute_version()?;
    Ok(artifact)
}

/// Fitting rows (encoded) and their labels.
type FitRows<'a> = (ArrayView2<'a, f64>, &'a [bool]);
/// Holdout rows (as the engine sends them, and encoded) and their labels.
type Holdout<'a> = (ArrayView2<'a, f64>, ArrayView2<'a, f64>, &'a [bool]);

fn fit_body(
    algo: Algo,
    (x_fit, y_fit): FitRows,
    (_, x_val_enc, y_val): Holdout,
    params: &TrainParams,
    progress: &mut dyn FnMut(&str),
) -> Result<ModelBody, ModelError> {
    let threads = params.threads();
    Ok(match algo {
        Algo::Logistic => ModelBody::Logistic(train_logistic(x_fit, y_fit, params, progress)?),
        Algo::Forest => forest(x_fit, y_fit, params, progress)?,
        Algo::Gbdt => ModelBody::Gbdt(fit_gbdt(
            x_fit,
            y_fit,
            x_val_enc,
            y_val,
            &params.gbdt,
            params.seed,
            threads,
            progress,
        )?),
    })
}

/// A forest grown on `x`/`y` as `params` say (scikit-learn's defaults unless overridden).
fn forest(
    x: ArrayView2<f64>,
    y: &[bool],
    params: &TrainParams,
    progress: &mut dyn FnMut(&str),
) -> Result<ModelBody, ModelError> {
    let cols = x.ncols();
    let plan = ForestPlan {
        trees: params.trees,
        features_per_split: match params.features_per_split {
            0 => ((cols as f64).sqrt() as usize).max(1),
            k => k,
        },
        samples_per_tree: match params.samples_per_tree {
            0 => y.len(),
            k => k,
        },
        max_depth: params.max_depth,
        min_samples_leaf: params.min_samples_leaf,
        seed: params.seed,
        threads: params.threads(),
    };
    progress(&format!(
        "forest: {} trees, {} of {cols} features per split, {} bootstrap rows per tree, {}",
        plan.trees,
        plan.features_per_split,
        plan.samples_per_tree,
        plan.max_depth
            .map_or("grown until pure".to_string(), |d| format!("depth <= {d}"))
    ));
    Ok(ModelBody::Forest(ForestBody {
        features_per_split: plan.features_per_split,
        samples_per_tree: plan.samples_per_tree,
        trees: fit_forest(x, y, &plan, progress)?,
    }))
}

/// The chosen learner fitted again on `all` rows: the same parameters, and for boosted trees
/// the depth and number of trees the holdout chose (nothing is left to stop early on).
fn refit(
    chosen: &ModelBody,
    (x, y): FitRows,
    params: &TrainParams,
    progress: &mut dyn FnMut(&str),
) -> Result<ModelBody, ModelError> {
    Ok(match chosen {
        ModelBody::Logistic(_) => ModelBody::Logistic(train_logistic(x, y, params, progress)?),
        ModelBody::Forest(_) => forest(x, y, params, progress)?,
        ModelBody::Gbdt(g) => ModelBody::Gbdt(refit_gbdt(
            x,
            y,
            g,
            &params.gbdt,
            params.seed,
            params.threads(),
        )?),
    })
}

/// Calibrates a fitted body on the holdout and scores it there as production will.
fn judge(
    algo: Algo,
    body: &ModelBody,
    encodings: &[CategoryEncoding],
    (x_val, _, y_val): Holdout,
    cols: usize,
) -> Result<(Candidate, Platt, BTreeMap<String, f64>), ModelError> {
    let uncalibrated = Scorer::build(cols, body, Platt::IDENTITY, encodings);
    let raw = raw_rows(&uncalibrated, x_val);
    let platt = fit_platt(&raw, y_val);
    let p: Vec<f64> = raw
        .iter()
        .map(|&r| sigmoid(platt.a * r + platt.b))
        .collect();
    let ap = average_precision(&p, y_val)?;
    let auc = crate::quality::roc_auc(&p, y_val).map_err(|e| ModelError::Fit(e.to_string()))?;
    let ll = log_loss(&p, y_val);
    let n = y_val.len().max(1) as f64;
    let metrics = BTreeMap::from([
        ("average_precision".to_string(), ap),
        ("roc_auc".to_string(), auc),
        ("log_loss".to_string(), ll),
        (
            "brier".to_string(),
            p.iter()
                .zip(y_val)
                .map(|(&q, &l)| (q - f64::from(u8::from(l))).powi(2))
                .sum::<f64>()
                / n,
        ),
        (
            "base_rate".to_string(),
            y_val.iter().filter(|&&l| l).count() as f64 / n,
        ),
        ("mean_score".to_string(), p.iter().sum::<f64>() / n),
    ]);
    let candidate = Candidate {
        algo,
        average_precision: ap,
        roc_auc: auc,
        log_loss: ll,
        summary: summary(body),
    };
    Ok((candidate, platt, metrics))
}

fn summary(body: &ModelBody) -> String {
    let nodes = |t: &[super::TreeArrays]| t.iter().map(|t| t.feature.len()).sum::<usize>();
    match body {
        ModelBody::Logistic(l) => format!(
            "{} weights, positives repeated {}x",
            l.weights.len(),
            l.positive_replication
        ),
        ModelBody::Forest(f) => format!("{} trees, {} nodes", f.trees.len(), nodes(&f.trees)),
        ModelBody::Gbdt(g) => format!(
            "{} trees of depth <= {}, {} nodes",
            g.trees.len(),
            g.max_depth,
            nodes(&g.trees)
        ),
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Raw (uncalibrated unless the scorer is) log-odds of every row.
fn raw_rows(scorer: &Scorer, x: ArrayView2<f64>) -> Vec<f64> {
    let mut contrib = vec![0.0; x.ncols()];
    x.rows()
        .into_iter()
        .map(|row| match row.as_slice() {
            Some(s) => scorer.raw_score(s, &mut contrib),
            None => scorer.raw_score(&row.to_vec(), &mut contrib),
        })
        .collect()
}

pub(super) fn score_rows(scorer: &Scorer, x: ArrayView2<f64>) -> Vec<f64> {
    raw_rows(scorer, x).into_iter().map(sigmoid).collect()
}

pub(super) fn log_loss(p: &[f64], y: &[bool]) -> f64 {
    let sum: f64 = p
        .iter()
        .zip(y)
        .map(|(&q, &l)| {
            let q = q.clamp(1e-15, 1.0 - 1e-15);
            -if l { q.ln() } else { (1.0 - q).ln() }
        })
        .sum();
    sum / y.len().max(1) as f64
}

pub(super) fn average_precision(p: &[f64], y: &[bool]) -> Result<f64, ModelError> {
    crate::quality::average_precision(p, y).map_err(|e| ModelError::Fit(e.to_string()))
}

/// Platt scaling: `a, b` minimising the log loss of `sigmoid(a·raw + b)`, with Platt's
/// smoothed targets so a separable holdout does not send `a` to infinity. Newton's method on
/// two parameters, with step halving; `a` is kept positive (a model that ranks the holdout
/// backwards keeps its ranking and gets a tiny slope rather than being turned around).
fn fit_platt(raw: &[f64], y: &[bool]) -> Platt {
    let pos = y.iter().filter(|&&l| l).count() as f64;
    let neg = y.len() as f64 - pos;
    let (hi, lo) = ((pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0));
    let target: Vec<f64> = y.iter().map(|&l| if l { hi } else { lo }).collect();
    let loss = |a: f64, b: f64| -> f64 {
        raw.iter()
            .zip(&target)
            .map(|(&r, &t)| {
                let z = a * r + b;
                // log(1 + e^z) - t·z, stable for large |z|
                z.max(0.0) + (-z.abs()).exp().ln_1p() - t * z
            })
            .sum()
    };
    let (mut a, mut b) = (1.0, 0.0);
    let mut current = loss(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-12, 0.0, 1e-12);
        for (&r, &t) in raw.iter().zip(&target) {
            let p = sigmoid(a * r + b);
            let (d, w) = (p - t, p * (1.0 - p));
            ga += d * r;
            gb += d;
            haa += w * r * r;
            hab += w * r;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-300 {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        let mut step = 1.0;
        let mut improved = false;
        while step > 1e-10 {
            let (na, nb) = ((a - step * da).max(1e-6), b - step * db);
            let l = loss(na, nb);
            if l < current {
                (a, b, current) = (na, nb, l);
                improved = true;
                break;
            }
            step *= 0.5;
        }
        if !improved || (da.abs() < 1e-10 && db.abs() < 1e-10) {
            break;
        }
    }
    Platt { a, b }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_recovers_a_known_slope_and_intercept() {
        // Labels drawn (deterministically) with probability sigmoid(0.5·r - 2).
        let raw: Vec<f64> = (0..20_000)
            .map(|i| f64::from(i % 200) / 20.0 - 5.0)
            .collect();
        let y: Vec<bool> = raw
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let u = ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64
                    / (1u64 << 53) as f64;
                u < sigmoid(0.5 * r - 2.0)
            })
            .collect();
        let p = fit_platt(&raw, &y);
        assert!((p.a - 0.5).abs() < 0.05 && (p.b + 2.0).abs() < 0.1, "{p:?}");
    }
}
