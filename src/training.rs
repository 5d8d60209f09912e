//! `fengkong train` and `fengkong eval`: the model is trained on exactly the features the
//! server computes, because the training rows come out of the same replay, and judged on a
//! later period it never saw.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array2;

use crate::engine::EngineError;
use crate::events::LabeledEvent;
use crate::model::{self, ModelArtifact, ModelError, TrainParams};
use crate::quality::{self, MetricsError};
use crate::replay::{replay, scratch_engine, ReplayError, ReplayOptions};

/// Days for precision at k: calendar days in China time, as the analysts' queues are.
pub const UTC_OFFSET_MINUTES: i32 = 480;
/// "If analysts review 100 alerts a day, how many are fraud."
pub const ALERTS_PER_DAY: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
    #[error("no labeled payments in the {0} period")]
    Empty(&'static str),
}

/// Ranking quality of scores against labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub rows: usize,
    pub positives: usize,
    pub roc_auc: f64,
    pub average_precision: f64,
    pub precision_at_100_per_day: f64,
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} payments ({} fraud): ROC AUC {:.4}, average precision {:.4}, precision at top {} a day {:.4}",
            self.rows, self.positives, self.roc_auc, self.average_precision, ALERTS_PER_DAY, self.precision_at_100_per_day
        )
    }
}

/// Metrics of `(event_time_ms, score, label)` rows.
pub fn metrics(rows: &[(i64, f64, bool)]) -> Result<Metrics, MetricsError> {
    let scores: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let labels: Vec<bool> = rows.iter().map(|r| r.2).collect();
    let by_day: Vec<(i64, f64, bool)> = rows
        .iter()
        .map(|&(t, s, l)| (quality::day_index(t, UTC_OFFSET_MINUTES), s, l))
        .collect();
    Ok(Metrics {
        rows: rows.len(),
        positives: labels.iter().filter(|&&l| l).count(),
        roc_auc: quality::roc_auc(&scores, &labels)?,
        average_precision: quality::average_precision(&scores, &labels)?,
        precision_at_100_per_day: quality::precision_at_k_per_day(&by_day, ALERTS_PER_DAY)?.mean,
    })
}

/// What `train` made.
pub struct Trained {
    pub artifact: ModelArtifact,
    pub validation: Metrics,
}

/// Replays all of `events` (so windows see all history before the training period), trains
/// on the labeled payments in `[from_ms, to_ms)` (whose last part is the holdout that picks and
/// calibrates the model) and tests on those from `to_ms` on (`Trained::validation`, and the
/// artifact's `test`).
pub fn train(
    events: &[LabeledEvent],
    rules_dir: Option<&Path>,
    features_file: Option<&Path>,
    options: &ReplayOptions,
    (from_ms, to_ms): (i64, i64),
    mut params: TrainParams,
    progress: &mut dyn FnMut(&str),
) -> Result<Trained, TrainError> {
    let (_dir, mut engine) = scratch_engine(rules_dir, features_file, None)?;
    let names = engine.feature_names().to_vec();
    // The features file says which columns are category codes (aggregate `code`); the caller
    // may name more, never fewer.
    for slot in engine.feature_set().categorical_slots() {
        if !params.categorical.contains(&slot) {
            params.categorical.push(slot);
        }
    }
    params.categorical.sort_unstable();
    let (mut train_x, mut train_y) = (Vec::new(), Vec::new());
    let mut validation: Vec<(i64, Vec<f64>, bool)> = Vec::new();
    replay(
        &mut engine,
        events,
        options,
        &mut |done, total| progress(&format!("replay: {done}/{total} payments")),
        |row| {
            let t = row.event.payment.event_time_ms;
            if let Some(label) = row.event.label {
                if (from_ms..to_ms).contains(&t) {
                    train_x.extend_from_slice(row.features);
                    train_y.push(label);
                } else if t >= to_ms {
                    validation.push((t, row.features.to_vec(), label));
                }
            }
            Ok(())
        },
    )?;
    if train_y.is_empty() {
        return Err(TrainError::Empty("training"));
    }
    if validation.is_empty() {
        return Err(TrainError::Empty("validation (after --train-to)"));
    }
    progress(&format!(
        "replayed: {} labeled payments ({} fraud) in the training period, {} after it to test on",
        train_y.len(),
        train_y.iter().filter(|&&l| l).count(),
        validation.len()
    ));
    let x = Array2::from_shape_vec((train_y.len(), names.len()), train_x)
        .map_err(|e| ModelError::BadShape(e.to_string()))?;
    params.training_period = model::TrainingPeriod { from_ms, to_ms };
    let mut artifact = model::train(&x, &train_y, &names, &params, &mut |m| progress(m))?;

    let scorer = artifact.scorer();
    let mut contributions = vec![0.0; names.len()];
    let scored: Vec<(i64, f64, bool)> = validation
        .iter()
        .map(|(t, features, label)| (*t, scorer.score(features, &mut contributions), *label))
        .collect();
    let validation = metrics(&scored)?;
    artifact.test = Some(model::PeriodMetrics {
        from_ms: to_ms,
        to_ms: validation_end(&scored),
        rows: validation.rows as u64,
        positives: validation.positives as u64,
        metrics: BTreeMap::from([
            ("roc_auc".to_owned(), validation.roc_auc),
            ("average_precision".to_owned(), validation.average_precision),
            (
                "precision_at_100_per_day".to_owned(),
                validation.precision_at_100_per_day,
            ),
        ]),
    });
    artifact.version = artifact.compute_version()?;
    Ok(Trained {
        artifact,
        validation,
    })
}

/// Just past the newest scored payment.
fn validation_end(scored: &[(i64, f64, bool)]) -> i64 {
    scored.iter().map(|r| r.0).max().map_or(0, |t| t + 1)
}
