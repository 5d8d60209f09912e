//! Offline replay: labeled payments in event-time order through the same engine as the
//! server (features, rules, decision records), each label fed back as a FRAUD outcome at the
//! moment it became known. `replay`, `backtest` and `train` all stand on this, so what they
//! measure is what the server would have done.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineError};
use crate::events::LabeledEvent;
use crate::proto::{self, ScoreResponse};
use crate::request::request_from_payment;
use crate::rules::Hit;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// When the file has no `label_reported_at` column, labels are taken as known this long
    /// after the payment.
    pub label_delay_ms: i64,
    /// Whether the events carry their own report times (`ReadReport::has_label_reported_at`).
    pub has_label_reported_at: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("line {line}: payment `{payment_id}`: {source}")]
    Score {
        line: u64,
        payment_id: String,
        source: Box<EngineError>,
    },
    #[error("{0}")]
    Output(String),
}

/// One scored payment, as the server saw it.
pub struct Row<'a> {
    pub event: &'a LabeledEvent,
    pub features: &'a [f64],
    pub hits: &'a [Hit],
    pub response: &'a ScoreResponse,
    /// The model's fraud probability, when the engine has a model.
    pub score: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct ReplayStats {
    pub payments: usize,
    /// Fraud labels fed back before some later payment was scored.
    pub outcomes: usize,
    pub elapsed: Duration,
}

impl ReplayStats {
    pub fn per_second(&self) -> f64 {
        self.payments as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Scores `events` (sorted by event time, as `read_events` returns them) one by one. Before
/// each payment, every fraud label reported up to its event time is fed to the engine, so a
/// feature never sees a label from its future. Genuine labels carry no window signal and
/// are not fed.
pub fn replay(
    engine: &mut Engine,
    events: &[LabeledEvent],
    options: &ReplayOptions,
    progress: &mut dyn FnMut(usize, usize),
    mut each: impl FnMut(Row<'_>) -> Result<(), ReplayError>,
) -> Result<ReplayStats, ReplayError> {
    let started = Instant::now();
    let mut pending: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    let mut stats = ReplayStats::default();
    for (i, event) in events.iter().enumerate() {
        let now = event.payment.event_time_ms;
        while let Some(&Reverse((reported_at, j))) = pending.peek() {
            if reported_at > now {
                break;
            }
            pending.pop();
            let report = proto::ReportOutcomeRequest {
                payment_id: events[j].payment.payment_id.clone(),
                outcome: proto::OutcomeKind::Fraud as i32,
                reported_at_ms: reported_at,
            };
            engine
                .report_outcome(&report, reported_at)
                .map_err(|source| score_error(&events[j], source))?;
            stats.outcomes += 1;
        }
        let request = request_from_payment(&event.payment);
        let scored = engine
            .score(&request, now)
            .map_err(|source| score_error(event, source))?;
        each(Row {
            event,
            features: engine.last_features(),
            hits: engine.last_hits(),
            response: &scored.response,
            score: (!engine.model_version().is_empty()).then(|| engine.last_model_score()),
        })?;
        if event.label == Some(true) {
            let known_at = if options.has_label_reported_at {
                event.label_reported_at_ms
            } else {
                Some(now.saturating_add(options.label_delay_ms))
            };
            if let Some(at) = known_at {
                pending.push(Reverse((at, i)));
            }
        }
        stats.payments += 1;
        if reports_progress(stats.payments, events.len()) {
            progress(stats.payments, events.len());
        }
    }
    if events.is_empty() {
        progress(0, 0);
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// Progress is shown every 1% (at least 10,000 payments apart) and at the end, each line once.
fn reports_progress(done: usize, total: usize) -> bool {
    let step = (total / 100).max(10_000);
    done.is_multiple_of(step) || done == total
}

fn score_error(event: &LabeledEvent, source: EngineError) -> ReplayError {
    ReplayError::Score {
        line: event.line,
        payment_id: event.payment.payment_id.clone(),
        source: Box::new(source),
    }
}

/// Writes replay rows as CSV: `payment_id`, `label`, every feature by name, `score` (the
/// model's fraud probability, when there is a model), `risk_score`, `action`, and
/// `event_time` (epoch ms, for `fengkong eval --from/--to`).
pub struct RowWriter<W: std::io::Write> {
    out: csv::Writer<W>,
    buf: Vec<String>,
    with_score: bool,
}

impl<W: std::io::Write> RowWriter<W> {
    pub fn new(
        out: W,
        feature_names: &[String],
        with_score: bool,
    ) -> Result<RowWriter<W>, ReplayError> {
        let mut out = csv::Writer::from_writer(out);
        let score: &[&str] = if with_score { &["score"] } else { &[] };
        let header = ["payment_id", "label"]
            .into_iter()
            .chain(feature_names.iter().map(String::as_str))
            .chain(score.iter().copied())
            .chain(["risk_score", "action", "event_time"]);
        out.write_record(header).map_err(output)?;
        Ok(RowWriter {
            out,
            buf: Vec::new(),
            with_score,
        })
    }

    pub fn write(&mut self, row: &Row<'_>) -> Result<(), ReplayError> {
        self.buf.clear();
        self.buf.push(row.event.payment.payment_id.clone());
        self.buf.push(match row.event.label {
            Some(true) => "1".into(),
            Some(false) => "0".into(),
            None => String::new(),
        });
        self.buf.extend(row.features.iter().map(|v| v.to_string()));
        if self.with_score {
            self.buf.push(row.score.unwrap_or(0.0).to_string());
        }
        self.buf.push(row.response.risk_score.to_string());
        self.buf
            .push(row.response.action().as_str_name().to_owned());
        self.buf.push(row.event.payment.event_time_ms.to_string());
        self.out.write_record(&self.buf).map_err(output)
    }

    pub fn finish(mut self) -> Result<(), ReplayError> {
        self.out
            .flush()
            .map_err(|e| ReplayError::Output(e.to_string()))
    }
}

fn output(e: csv::Error) -> ReplayError {
    ReplayError::Output(e.to_string())
}

/// An engine on a fresh temporary store, for offline runs; no rules folder means the bundled
/// pack. Keep the `TempDir` alive as long as the engine.
pub fn scratch_engine(
    rules_dir: Option<&std::path::Path>,
    features_file: Option<&std::path::Path>,
    model: Option<&std::path::Path>,
) -> Result<(tempfile::TempDir, Engine), EngineError> {
    let dir = tempfile::tempdir().map_err(|e| EngineError::Open {
        path: std::env::temp_dir(),
        reason: e.to_string(),
    })?;
    let config = crate::config::Config {
        data_dir: dir.path().to_owned(),
        rules_dir: rules_dir.map(ToOwned::to_owned),
        features_file: features_file.map(ToOwned::to_owned),
        model_path: model.map(ToOwned::to_owned),
        model_enabled: model.is_some(),
        // The store is thrown away after the run: windows stay in memory, never checkpointed.
        feature_checkpoint_every: usize::MAX,
        ..crate::config::Config::default()
    };
    let engine = Engine::open(&config)?;
    Ok((dir, engine))
}

#[cfg(test)]
mod tests {
    use super::reports_progress;

    #[test]
    fn each_progress_line_is_shown_once_and_the_last_one_always() {
        let shown = |total| {
            (1..=total)
                .filter(|&d| reports_progress(d, total))
                .collect::<Vec<_>>()
        };
        assert_eq!(shown(20_000), [10_000, 20_000]);
        assert_eq!(shown(3_000), [3_000]);
        assert_eq!(shown(25_000), [10_000, 20_000, 25_000]);
    }
}
