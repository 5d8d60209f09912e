//! Fraud model: offline training, the versioned artifact on disk, and allocation-free scoring.
//!
//! ```text
//! train.rs        feature matrix + labels ─▶ holdout split ─▶ each learner ─▶ Platt ─▶ best AP
//! forest.rs       random forest as scikit-learn grows it (per-split feature draws, unpruned)
//! gbdt.rs         gradient-boosted trees (forust-ml), depth and early stopping on the holdout
//! categorical.rs  category codes ─▶ smoothed fraud log-odds learned from the fitting rows
//! artifact.rs     ModelArtifact ⇄ JSON file (atomic save, validating load, content-hash version)
//! infer.rs        ModelArtifact ─▶ Scorer: probability + per-feature contributions, no allocation
//! ```
//!
//! Every model's raw output is in log-odds, and `base_value + Σ contributions = raw`, so the
//! reasons shown to an analyst add up exactly to the score they explain. Trees are explained
//! by Saabas path attribution (each split credits its feature with the change in the node
//! value along the payment's path), which telescopes to exactly leaf − root per tree. TreeSHAP
//! would also add up, but costs `O(leaves · depth²)` per tree against Saabas's `O(depth)`:
//! for a few hundred boosted trees that is milliseconds, not the microseconds a Score call has.
//!
//! Probabilities are calibrated by Platt scaling on a time-ordered holdout (the most recent
//! part of the training period): affine in log-odds, it scales contributions and shifts the
//! base value, so explanations stay additive, and `model_weight × probability` is weight ×
//! a real fraud rate.
//!
//! **Why forust-ml for boosting.** It is pure Rust on stable, implements XGBoost's algorithm
//! (histogram splits, L2-regularised Newton leaves, early stopping on an evaluation set), and
//! is maintained (0.8.0, October 2026). Its training is deterministic: gradient statistics
//! are summed per feature and per node in a fixed order whatever the number of rayon threads
//! (`tests/model.rs` checks the bytes). `perpetual`, the better-known successor by the same
//! lineage, has native categorical splits but every stable release (0.10 to 2.3) declares
//! `#![feature]` and builds only on nightly; its one stable-buildable version is a 3.0 release
//! candidate, and its budget-driven self-generalisation does not expose the early-stopping
//! and depth choices we record. `gbdt` (gbdt-rs) was last released in 2024 and is
//! single-threaded with no evaluation-set early stopping. forust-ml has no categorical splits,
//! so category codes are encoded (categorical.rs) for every learner alike. linfa has no
//! boosting; it fits the logistic regression. The forest is ours (forest.rs says why linfa's
//! trees could not be made to match scikit-learn's).
//!
//! ```no_run
//! use fengkong::model::{train, Algo, ModelArtifact, TrainParams};
//! # fn demo(x: ndarray::Array2<f64>, y: Vec<bool>, names: Vec<String>) -> Result<(), fengkong::model::ModelError> {
//! let params = TrainParams { algo: Some(Algo::Gbdt), ..TrainParams::default() };
//! let artifact = train(&x, &y, &names, &params, &mut |msg| eprintln!("{msg}"))?;
//! artifact.save("models/fraud.json")?;
//!
//! let loaded = ModelArtifact::load("models/fraud.json", &names)?; // refuses a mismatched schema
//! let scorer = loaded.scorer(); // build once, share across threads
//! let mut contributions = vec![0.0; names.len()]; // reuse per thread
//! let mut top = Vec::with_capacity(3);
//! let p = scorer.score(x.row(0).as_slice().unwrap_or(&[]), &mut contributions);
//! scorer.top_factors(&contributions, 3, &mut top);
//! for (i, c) in &top {
//!     println!("{p:.3} {} {c:+.2} log-odds", names[*i]);
//! }
//! # Ok(()) }
//! ```

mod artifact;
mod categorical;
mod forest;
mod gbdt;
mod infer;
mod train;

pub use artifact::{
    candidates_table, Candidate, CategoryEncoding, FeatureScaling, ForestBody, GbdtBody, GbdtTrial,
    LogisticBody, ModelArtifact, ModelBody, PeriodMetrics, Platt, TrainingPeriod, TreeArrays,
    FORMAT_VERSION,
};
pub use gbdt::GbdtParams;
pub use infer::Scorer;
pub use train::{train, Algo, TrainParams};

use std::path::PathBuf;

/// Everything that can go wrong training, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot {op} model file `{path}`: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model file is too large ({size} bytes, limit {limit})")]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error("model file is truncated: {0}")]
    Truncated(String),
    #[error("model file is not a valid model artifact: {0}")]
    Corrupt(String),
    #[error("unsupported model format_version {found} (this build reads {supported})")]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error("non-finite number in {0}")]
    NonFinite(String),
    #[error("tree {tree} node {node} is invalid: {reason}")]
    BadTree {
        tree: usize,
        node: usize,
        reason: String,
    },
    #[error("model shape is invalid: {0}")]
    BadShape(String),
    #[error("{}", describe_mismatch(.missing, .extra, .out_of_order))]
    FeatureMismatch {
        /// Expected by the engine but absent from the model.
        missing: Vec<String>,
        /// In the model but not produced by the engine.
        extra: Vec<String>,
        /// Present in both but at a different position: (name, model position, engine position).
        out_of_order: Vec<(String, usize, usize)>,
    },
    #[error(
        "model content does not match its version `{stored}` (content hashes to `{computed}`)"
    )]
    VersionMismatch { stored: String, computed: String },
    #[error("invalid training input: {0}")]
    InvalidInput(String),
    #[error("invalid training parameters: {0}")]
    InvalidParams(String),
    #[error("training failed: {0}")]
    Fit(String),
    #[error("cannot serialize model: {0}")]
    Serialize(String),
}

fn describe_mismatch(
    missing: &[String],
    extra: &[String],
    out_of_order: &[(String, usize, usize)],
) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing from model: {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("unknown to engine: {}", extra.join(", ")));
    }
    if !out_of_order.is_empty() {
        let moved: Vec<String> = out_of_order
            .iter()
            .map(|(n, m, e)| format!("{n} (model #{m}, engine #{e})"))
            .collect();
        parts.push(format!("out of order: {}", moved.join(", ")));
    }
    format!(
        "model features do not match the engine's: {}",
        parts.join("; ")
    )
}
