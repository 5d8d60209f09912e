//! Fraud model: offline training (linfa), the versioned artifact on disk, and allocation-free scoring.
//!
//! ```text
//! train.rs     feature matrix + labels ──linfa──▶ ModelArtifact (logistic or random forest)
//! artifact.rs  ModelArtifact ⇄ JSON file (atomic save, validating load, content-hash version)
//! infer.rs     ModelArtifact ──▶ Scorer: probability + per-feature contributions, no allocation
//! ```
//!
//! Every model's raw output is in log-odds, and `base_value + Σ contributions = raw`, so the
//! reasons shown to an analyst add up exactly to the score they explain.
//!
//! ```no_run
//! use fengkong::model::{train, Algo, ModelArtifact, TrainParams};
//! # fn demo(x: ndarray::Array2<f64>, y: Vec<bool>, names: Vec<String>) -> Result<(), fengkong::model::ModelError> {
//! let params = TrainParams { algo: Algo::Forest, ..TrainParams::default() };
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
mod infer;
mod train;

pub use artifact::{
    FeatureScaling, ForestBody, LogisticBody, ModelArtifact, ModelBody, Sampling, TrainingPeriod,
    TreeArrays, FORMAT_VERSION,
};
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
