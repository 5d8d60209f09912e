//! The model file: its JSON layout, content-hash version, atomic save and the validating load.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::infer::Scorer;
use super::train::{Algo, TrainParams};
use super::ModelError;

/// The only layout this build reads; bump it whenever a field changes meaning.
/// 2: gradient-boosted trees, Platt calibration, categorical encodings, candidate table,
/// forest node values as probabilities.
pub const FORMAT_VERSION: u32 = 2;

/// A model file larger than this is refused before parsing: a 100-tree unpruned forest on a
/// million rows is well under it, so anything bigger is a wrong path or a runaway export.
const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// More nodes than this in one tree cannot come from `train` (a tree has fewer leaves than
/// training rows) and would only waste memory at load.
const MAX_NODES_PER_TREE: usize = 1 << 22;

/// Marks a leaf in [`TreeArrays::feature`].
pub(crate) const LEAF: i64 = -1;

/// Everything needed to score and to audit a trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    pub format_version: u32,
    /// `"<algo>-<first 12 hex of sha256 of the canonical JSON with this field empty>"`.
    pub version: String,
    /// The learner this file holds (with `params.algo` = None, the one `train` picked).
    pub algo: Algo,
    pub params: TrainParams,
    /// Ordered: position `i` is the `i`-th value of the engine's feature vector.
    pub feature_names: Vec<String>,
    pub training_period: TrainingPeriod,
    /// sha256 over feature names, the matrix (f64 little-endian, row-major) and labels.
    pub data_sha256: String,
    /// Rows the learner was fitted on: the training period minus its holdout.
    pub train_rows: u64,
    pub train_positives: u64,
    /// The holdout: the last `validation_fraction` of the training period, in time order. It
    /// chose the learner, its hyper-parameters and early stopping, and fitted the calibration.
    pub validation_rows: u64,
    pub validation_positives: u64,
    /// The chosen model on the holdout: average_precision, roc_auc, log_loss, brier,
    /// base_rate, mean_score (all after calibration).
    #[serde(deserialize_with = "de_map_f64")]
    pub validation_metrics: BTreeMap<String, f64>,
    /// Every learner tried, on the same holdout, in the order tried.
    pub candidates: Vec<Candidate>,
    /// Metrics on a later period the model never saw (`fengkong train`: after `--train-to`).
    pub test: Option<PeriodMetrics>,
    pub created_at_ms: i64,
    /// Applied to the learner's raw log-odds; see [`Platt`].
    pub calibration: Platt,
    /// Categorical columns, each replaced by its learned encoding before the learner sees it.
    pub categorical: Vec<CategoryEncoding>,
    pub body: ModelBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingPeriod {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// One learner's result on the holdout, after its own calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub algo: Algo,
    #[serde(deserialize_with = "de_f64")]
    pub average_precision: f64,
    #[serde(deserialize_with = "de_f64")]
    pub roc_auc: f64,
    #[serde(deserialize_with = "de_f64")]
    pub log_loss: f64,
    /// What was fitted, in words ("100 trees, 41,213 nodes").
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodMetrics {
    pub from_ms: i64,
    pub to_ms: i64,
    pub rows: u64,
    pub positives: u64,
    #[serde(deserialize_with = "de_map_f64")]
    pub metrics: BTreeMap<String, f64>,
}

/// `calibrated = a · raw + b` on the learner's raw log-odds, fitted on the holdout. Being
/// affine in log-odds it keeps explanations additive: every contribution is scaled by `a` and
/// the base value becomes `a · base + b`, so the reasons still add up to the score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    #[serde(deserialize_with = "de_f64")]
    pub a: f64,
    #[serde(deserialize_with = "de_f64")]
    pub b: f64,
}

impl Platt {
    pub const IDENTITY: Platt = Platt { a: 1.0, b: 0.0 };
}

/// A categorical column's values are category codes (stable non-negative integers); the
/// learners see instead the smoothed fraud log-odds of the code in the fitting rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryEncoding {
    pub feature: usize,
    /// Codes seen in the fitting rows, ascending.
    #[serde(deserialize_with = "de_vec_f64")]
    pub codes: Vec<f64>,
    /// `ln((fraud + m·prior) / (genuine + m·(1 - prior)))` per code, `m` = `prior_weight`.
    #[serde(deserialize_with = "de_vec_f64")]
    pub values: Vec<f64>,
    /// For a code never seen in training: the prior log-odds.
    #[serde(deserialize_with = "de_f64")]
    pub unseen: f64,
    #[serde(deserialize_with = "de_f64")]
    pub prior_weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelBody {
    Logistic(LogisticBody),
    Forest(ForestBody),
    Gbdt(GbdtBody),
}

/// `raw = bias + Σ weight_i · z_i` with `z_i = (t(x_i) - mean_i) / std_i`, `t` = log1p or identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticBody {
    pub scaling: Vec<FeatureScaling>,
    #[serde(deserialize_with = "de_vec_f64")]
    pub weights: Vec<f64>,
    /// Already corrected for positive-row replication (class weight).
    #[serde(deserialize_with = "de_f64")]
    pub bias: f64,
    /// Each positive row was fed to the optimiser this many times (integer class weight).
    pub positive_replication: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureScaling {
    /// Money and count features are heavy-tailed; log1p keeps one huge payment from
    /// dominating the linear score.
    pub log1p: bool,
    #[serde(deserialize_with = "de_f64")]
    pub mean: f64,
    #[serde(deserialize_with = "de_f64")]
    pub std: f64,
}

/// A random forest as scikit-learn grows it: `p = mean over trees of the reached leaf's
/// fraud fraction`, `raw = logit(p)` (clamped to [1e-6, 1 - 1e-6]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForestBody {
    /// Features drawn at random for each split.
    pub features_per_split: usize,
    /// Bootstrap rows drawn (with replacement) for each tree.
    pub samples_per_tree: usize,
    /// Node values are the fraction of fraud among the tree's bootstrap rows at the node.
    pub trees: Vec<TreeArrays>,
}

/// Gradient-boosted trees (forust-ml): `raw = base_score + Σ over trees of the reached
/// leaf's value`. Internal node values are the hessian-weighted mean of their children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbdtBody {
    #[serde(deserialize_with = "de_f64")]
    pub base_score: f64,
    #[serde(deserialize_with = "de_f64")]
    pub learning_rate: f64,
    pub max_depth: usize,
    /// Every depth tried, with the number of trees early stopping kept and its holdout scores.
    pub search: Vec<GbdtTrial>,
    pub trees: Vec<TreeArrays>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbdtTrial {
    pub max_depth: usize,
    pub trees: usize,
    #[serde(deserialize_with = "de_f64")]
    pub log_loss: f64,
    #[serde(deserialize_with = "de_f64")]
    pub average_precision: f64,
}

/// One tree as parallel arrays; node 0 is the root and children always have larger indices,
/// which is what makes a load-time cycle check a simple comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeArrays {
    /// Feature index tested at the node, or -1 for a leaf.
    pub feature: Vec<i64>,
    /// Go left when `x[feature] <= threshold`.
    #[serde(deserialize_with = "de_vec_f64")]
    pub threshold: Vec<f64>,
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    /// The node's prediction (forest: fraud fraction; gbdt: log-odds increment); at an
    /// internal node, what the tree predicts before the split (the path attribution's base).
    #[serde(deserialize_with = "de_vec_f64")]
    pub value: Vec<f64>,
}

// serde_json writes non-finite floats as `null`; reading them back as NaN lets validation name
// the offending field instead of failing with a generic type error.
fn de_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn de_vec_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v = Vec::<Option<f64>>::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

fn de_map_f64<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let m = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// The learners `train` compared, one line each, the chosen one marked.
pub fn candidates_table(a: &ModelArtifact) -> String {
    let mut out = format!(
        "holdout: last {} rows of the training period ({} fraud)\n  {:<10} {:>8} {:>8} {:>9}  fitted\n",
        a.validation_rows, a.validation_positives, "learner", "avg prec", "ROC AUC", "log loss"
    );
    for c in &a.candidates {
        let mark = if c.algo == a.algo { "*" } else { " " };
        out.push_str(&format!(
            "{mark} {:<10} {:>8.4} {:>8.4} {:>9.5}  {}\n",
            c.algo.name(),
            c.average_precision,
            c.roc_auc,
            c.log_loss,
            c.summary
        ));
    }
    out
}

impl ModelArtifact {
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn scorer(&self) -> Scorer {
        Scorer::new(self)
    }

    /// The version this content should carry: hashing with `version` blanked makes it a pure
    /// function of everything else, so two files with the same version score identically.
    pub fn compute_version(&self) -> Result<String, ModelError> {
        let mut blank = self.clone();
        blank.version = String::new();
        let json = serde_json::to_vec(&blank).map_err(|e| ModelError::Serialize(e.to_string()))?;
        let digest = hex::encode(Sha256::digest(&json));
        Ok(format!("{}-{}", self.algo.name(), &digest[..12]))
    }

    /// Writes to a temporary file in the same directory, fsyncs it, then renames over `path`,
    /// so a crash leaves either the old model or the new one, never half of one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        let path = path.as_ref();
        self.validate()?;
        let json =
            serde_json::to_vec_pretty(self).map_err(|e| ModelError::Serialize(e.to_string()))?;
        let io = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| ModelError::Io {
                op,
                path: p,
                source,
            }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".to_string());
        // Unique per process and per call, so concurrent saves never share a temp file.
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let write = || -> Result<(), ModelError> {
            let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
            f.write_all(&json).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("fsync", &tmp))?;
            std::fs::rename(&tmp, path).map_err(io("rename into", path))
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename is durable only once the directory entry is; not every platform can
        // open a directory, so failure here is not an error.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Reads and fully validates a model; `expected_features` is the engine's ordered list.
    pub fn load(
        path: impl AsRef<Path>,
        expected_features: &[String],
    ) -> Result<ModelArtifact, ModelError> {
        Self::from_slice(&Self::read(path.as_ref())?, expected_features)
    }

    /// Reads and validates a model whose features the engine computes, maybe among others
    /// and in another order; returns it with [`ModelArtifact::bind`]'s slots.
    pub fn load_bound(
        path: impl AsRef<Path>,
        engine_features: &[String],
    ) -> Result<(ModelArtifact, Vec<usize>), ModelError> {
        Self::from_slice_bound(&Self::read(path.as_ref())?, engine_features)
    }

    /// [`ModelArtifact::load_bound`] without the file system.
    pub fn from_slice_bound(
        bytes: &[u8],
        engine_features: &[String],
    ) -> Result<(ModelArtifact, Vec<usize>), ModelError> {
        let artifact = Self::parse(bytes)?;
        let slots = artifact.bind(engine_features)?;
        Ok((artifact, slots))
    }

    /// Where the engine computes each of the model's features: `engine_features[slots[i]]`
    /// is the model's feature `i`. A features file that gained features (or reordered them)
    /// keeps its models working on the features they were trained on; a model feature the
    /// engine does not compute is a [`ModelError::FeatureMismatch`] naming it.
    pub fn bind(&self, engine_features: &[String]) -> Result<Vec<usize>, ModelError> {
        let engine_pos: HashMap<&str, usize> = engine_features
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let slots: Vec<Option<usize>> = self
            .feature_names
            .iter()
            .map(|n| engine_pos.get(n.as_str()).copied())
            .collect();
        if slots.iter().all(Option::is_some) {
            return Ok(slots.into_iter().flatten().collect());
        }
        Err(ModelError::FeatureMismatch {
            missing: Vec::new(),
            extra: self
                .feature_names
                .iter()
                .zip(&slots)
                .filter(|(_, s)| s.is_none())
                .map(|(n, _)| n.clone())
                .collect(),
            out_of_order: Vec::new(),
        })
    }

    /// The bytes of a model file. A FIFO or device here would stall the reload (on the
    /// engine thread): regular files only, bounded.
    fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
        Ok(crate::files::read_regular(path, MAX_FILE_BYTES)?)
    }

    /// [`ModelArtifact::load`] without the file system.
    pub fn from_slice(
        bytes: &[u8],
        expected_features: &[String],
    ) -> Result<ModelArtifact, ModelError> {
        let artifact = Self::parse(bytes)?;
        artifact.check_features(expected_features)?;
        Ok(artifact)
    }

    /// Parses and validates a model (format, structure, version hash), whatever its features.
    fn parse(bytes: &[u8]) -> Result<ModelArtifact, ModelError> {
        // Read the format version alone first, so a future layout is reported as such rather
        // than as whatever field it renamed.
        #[derive(Deserialize)]
        struct Head {
            format_version: u32,
        }
        let parse_err = |e: serde_json::Error| {
            if e.is_eof() {
                ModelError::Truncated(e.to_string())
            } else {
                ModelError::Corrupt(e.to_string())
            }
        };
        let head: Head = serde_json::from_slice(bytes).map_err(parse_err)?;
        if head.format_version != FORMAT_VERSION {
            return Err(ModelError::UnsupportedFormat {
                found: head.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let artifact: ModelArtifact = serde_json::from_slice(bytes).map_err(parse_err)?;
        artifact.validate()?;
        let computed = artifact.compute_version()?;
        if computed != artifact.version {
            return Err(ModelError::VersionMismatch {
                stored: artifact.version.clone(),
                computed,
            });
        }
        Ok(artifact)
    }

    /// Names missing, extra and moved features, in the engine's terms.
    pub fn check_features(&self, expected: &[String]) -> Result<(), ModelError> {
        if self.feature_names.as_slice() == expected {
            return Ok(());
        }
        let model_pos: HashMap<&str, usize> = self
            .feature_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let engine_pos: HashMap<&str, usize> = expected
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let missing = expected
            .iter()
            .filter(|n| !model_pos.contains_key(n.as_str()))
            .cloned()
            .collect();
        let extra = self
            .feature_names
            .iter()
            .filter(|n| !engine_pos.contains_key(n.as_str()))
            .cloned()
            .collect();
        let out_of_order = self
            .feature_names
            .iter()
            .enumerate()
            .filter_map(|(m, n)| match engine_pos.get(n.as_str()) {
                Some(&e) if e != m => Some((n.clone(), m, e)),
                _ => None,
            })
            .collect();
        Err(ModelError::FeatureMismatch {
            missing,
            extra,
            out_of_order,
        })
    }

    /// Structural checks that make [`Scorer`] safe and total: every number finite, every
    /// array the right length, every tree a tree.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.format_version != FORMAT_VERSION {
            return Err(ModelError::UnsupportedFormat {
                found: self.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let n = self.feature_names.len();
        if n == 0 {
            return Err(ModelError::BadShape("no features".into()));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.feature_names.iter().find(|f| !seen.insert(f.as_str())) {
            return Err(ModelError::BadShape(format!("duplicate feature `{dup}`")));
        }
        for (k, v) in &self.validation_metrics {
            finite(*v, || format!("validation_metrics.{k}"))?;
        }
        let Platt { a, b } = self.calibration;
        finite(a, || "calibration.a".into())?;
        finite(b, || "calibration.b".into())?;
        if a <= 0.0 {
            return Err(ModelError::BadShape(format!(
                "calibration.a must be positive (got {a})"
            )));
        }
        validate_categorical(&self.categorical, n)?;
        match (&self.body, self.algo) {
            (ModelBody::Logistic(b), Algo::Logistic) => validate_logistic(b, n),
            (ModelBody::Forest(b), Algo::Forest) => validate_trees("forest", &b.trees, n, true),
            (ModelBody::Gbdt(b), Algo::Gbdt) => {
                finite(b.base_score, || "gbdt.base_score".into())?;
                validate_trees("gbdt", &b.trees, n, false)
            }
            _ => Err(ModelError::BadShape(
                "algo does not match model body".into(),
            )),
        }
    }
}

fn validate_categorical(encodings: &[CategoryEncoding], n: usize) -> Result<(), ModelError> {
    let mut seen = std::collections::HashSet::new();
    for (i, e) in encodings.iter().enumerate() {
        if e.feature >= n || !seen.insert(e.feature) {
            return Err(ModelError::BadShape(format!(
                "categorical[{i}].feature {} is out of range or repeated",
                e.feature
            )));
        }
        if e.codes.len() != e.values.len() {
            return Err(ModelError::BadShape(format!(
                "categorical[{i}] has {} codes but {} values",
                e.codes.len(),
                e.values.len()
            )));
        }
        finite(e.unseen, || format!("categorical[{i}].unseen"))?;
        finite(e.prior_weight, || format!("categorical[{i}].prior_weight"))?;
        for (j, (c, v)) in e.codes.iter().zip(&e.values).enumerate() {
            finite(*c, || format!("categorical[{i}].codes[{j}]"))?;
            finite(*v, || format!("categorical[{i}].values[{j}]"))?;
        }
        // Lookup is a binary search.
        if e.codes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ModelError::BadShape(format!(
                "categorical[{i}].codes must be strictly ascending"
            )));
        }
    }
    Ok(())
}

fn finite(v: f64, field: impl FnOnce() -> String) -> Result<(), ModelError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(ModelError::NonFinite(field()))
    }
}

fn validate_logistic(b: &LogisticBody, n: usize) -> Result<(), ModelError> {
    if b.weights.len() != n || b.scaling.len() != n {
        return Err(ModelError::BadShape(format!(
            "{n} features but {} weights and {} scalings",
            b.weights.len(),
            b.scaling.len()
        )));
    }
    finite(b.bias, || "logistic.bias".into())?;
    for (i, w) in b.weights.iter().enumerate() {
        finite(*w, || format!("logistic.weights[{i}]"))?;
    }
    for (i, s) in b.scaling.iter().enumerate() {
        finite(s.mean, || format!("logistic.scaling[{i}].mean"))?;
        finite(s.std, || format!("logistic.scaling[{i}].std"))?;
        if s.std <= 0.0 {
            return Err(ModelError::BadShape(format!(
                "logistic.scaling[{i}].std must be positive"
            )));
        }
    }
    Ok(())
}

/// `probabilities`: node values are fractions, so they must lie in [0, 1].
fn validate_trees(
    kind: &str,
    trees: &[TreeArrays],
    n: usize,
    probabilities: bool,
) -> Result<(), ModelError> {
    if trees.is_empty() {
        return Err(ModelError::BadShape(format!("{kind} has no trees")));
    }
    for (t, tree) in trees.iter().enumerate() {
        validate_tree(kind, t, tree, n)?;
        if probabilities {
            if let Some(i) = tree.value.iter().position(|v| !(0.0..=1.0).contains(v)) {
                return Err(ModelError::BadTree {
                    tree: t,
                    node: i,
                    reason: format!("value {} is not a fraction", tree.value[i]),
                });
            }
        }
    }
    Ok(())
}

fn validate_tree(
    kind: &str,
    t: usize,
    tree: &TreeArrays,
    n_features: usize,
) -> Result<(), ModelError> {
    let len = tree.feature.len();
    let bad = |node: usize, reason: String| ModelError::BadTree {
        tree: t,
        node,
        reason,
    };
    if len == 0 || len > MAX_NODES_PER_TREE {
        return Err(bad(0, format!("tree has {len} nodes")));
    }
    if tree.threshold.len() != len
        || tree.left.len() != len
        || tree.right.len() != len
        || tree.value.len() != len
    {
        return Err(bad(0, "node arrays differ in length".into()));
    }
    // Children strictly after their parent rules out cycles; one parent per node rules out
    // shared subtrees, which would double-count Saabas credit.
    let mut has_parent = vec![false; len];
    for i in 0..len {
        finite(tree.value[i], || format!("{kind}.trees[{t}].value[{i}]"))?;
        let f = tree.feature[i];
        if f == LEAF {
            continue;
        }
        if f < 0 || f as u64 >= n_features as u64 {
            return Err(bad(
                i,
                format!("feature index {f} out of range 0..{n_features}"),
            ));
        }
        finite(tree.threshold[i], || {
            format!("{kind}.trees[{t}].threshold[{i}]")
        })?;
        for child in [tree.left[i] as usize, tree.right[i] as usize] {
            if child <= i || child >= len {
                return Err(bad(
                    i,
                    format!("child index {child} must lie in {}..{len}", i + 1),
                ));
            }
            if std::mem::replace(&mut has_parent[child], true) {
                return Err(bad(child, "node has two parents".into()));
            }
        }
    }
    if let Some(orphan) = (1..len).find(|&i| !has_parent[i]) {
        return Err(bad(orphan, "node is unreachable from the root".into()));
    }
    Ok(())
}
