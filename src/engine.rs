//! The decision pipeline for one payment: validate → assess → record.
//!
//! `Engine` is single-threaded on purpose (`&mut self`): the server runs it on one
//! dedicated thread and the offline commands call it directly, so both see payments in
//! the same order through the same code. It never reads the clock; callers pass `now_ms`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::payment::OutcomeKind;
use crate::policy;
use crate::proto::{self, Decision, ScoreRequest, ScoreResponse};
use crate::request::{payment_from_request, InvalidField};
use crate::store::{DecisionStore, StoreError};
use crate::telemetry::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error("payment `{0}` was already scored with a different request")]
    Conflict(String),
    #[error("no decision for payment `{0}`")]
    UnknownPayment(String),
    #[error("no decision with id `{0}`")]
    UnknownDecision(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot open the data dir `{path}`: {reason}")]
    Open { path: PathBuf, reason: String },
}

impl From<sled::Error> for EngineError {
    fn from(e: sled::Error) -> Self {
        EngineError::Store(StoreError::Sled(e))
    }
}

/// What `score` produced; `replayed` is true when an earlier identical request was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub response: ScoreResponse,
    pub replayed: bool,
}

pub struct Engine {
    db: sled::Db,
    decisions: DecisionStore,
    config: Config,
    telemetry: Arc<Telemetry>,
}

impl Engine {
    /// Opens (or creates) the sled database in `config.data_dir`. A second process on the
    /// same folder fails here at once: sled holds an exclusive lock on it.
    pub fn open(config: &Config) -> Result<Engine, EngineError> {
        let db = open_db(&config.data_dir)?;
        Engine::with_db(db, config)
    }

    pub fn with_db(db: sled::Db, config: &Config) -> Result<Engine, EngineError> {
        Ok(Engine {
            decisions: DecisionStore::open(&db)?,
            db,
            config: config.clone(),
            telemetry: Arc::default(),
        })
    }

    pub fn telemetry(&self) -> Arc<Telemetry> {
        Arc::clone(&self.telemetry)
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// A read handle for other threads.
    pub fn decisions(&self) -> DecisionStore {
        self.decisions.clone()
    }

    /// Scores one payment and records the decision (applied to sled, not yet flushed:
    /// the caller makes it durable before answering).
    pub fn score(&mut self, req: &ScoreRequest, now_ms: i64) -> Result<Scored, EngineError> {
        // A retry is answered from the record even if limits changed since: the gateway
        // must see the same decision for the same payment.
        if let Some(stored) = self.decisions.by_payment(&req.payment_id)? {
            return match (stored.request.as_ref(), stored.response) {
                (Some(stored_req), Some(response)) if stored_req == req => Ok(Scored {
                    response,
                    replayed: true,
                }),
                _ => Err(EngineError::Conflict(req.payment_id.clone())),
            };
        }
        let started = Instant::now();
        let payment = payment_from_request(req, &self.config.limits, now_ms)?;
        let assessment = policy::assess(&self.config.policy, &payment);
        self.telemetry.stage("assess", started.elapsed());
        let recording = Instant::now();
        let response = ScoreResponse {
            decision_id: format!("d-{:016x}", self.db.generate_id()?),
            payment_id: payment.payment_id.clone(),
            action: assessment.action as i32,
            risk_score: assessment.risk_score,
            reasons: assessment.reasons,
            ruleset_version: policy::VERSION.to_owned(),
            model_version: String::new(),
            evaluated_at_ms: now_ms,
        };
        let decision = Decision {
            response: Some(response.clone()),
            request: Some(req.clone()),
            ..Default::default()
        };
        let mut batch = sled::Batch::default();
        self.decisions.stage_insert(&mut batch, &decision);
        self.decisions.apply(batch)?;
        self.telemetry.stage("record", recording.elapsed());
        Ok(Scored {
            response,
            replayed: false,
        })
    }

    /// Stores delayed truth with the decision. Reporting the same outcome twice is a no-op,
    /// so gateways may retry.
    pub fn report_outcome(
        &mut self,
        req: &proto::ReportOutcomeRequest,
        now_ms: i64,
    ) -> Result<proto::ReportOutcomeResponse, EngineError> {
        outcome_kind(req.outcome)?;
        if req.payment_id.is_empty() {
            return Err(invalid("payment_id", "must not be empty"));
        }
        let mut decision = self
            .decisions
            .by_payment(&req.payment_id)?
            .ok_or_else(|| EngineError::UnknownPayment(req.payment_id.clone()))?;
        let event_time_ms = decision.request.as_ref().map_or(0, |r| r.event_time_ms);
        if req.reported_at_ms < event_time_ms {
            return Err(invalid(
                "reported_at_ms",
                format!(
                    "must not be before the payment's event time {event_time_ms} (got {})",
                    req.reported_at_ms
                ),
            ));
        }
        let already = decision
            .outcomes
            .iter()
            .any(|o| o.outcome == req.outcome && o.reported_at_ms == req.reported_at_ms);
        if !already {
            decision.outcomes.push(proto::Outcome {
                outcome: req.outcome,
                reported_at_ms: req.reported_at_ms,
                recorded_at_ms: now_ms,
            });
            let mut batch = sled::Batch::default();
            self.decisions.stage_update(&mut batch, &decision);
            self.decisions.apply(batch)?;
        }
        Ok(proto::ReportOutcomeResponse {
            decision_id: decision.response.map(|r| r.decision_id).unwrap_or_default(),
            outcomes: decision.outcomes,
        })
    }
}

/// Looks a decision up by payment id or decision id.
pub fn get_decision(
    store: &DecisionStore,
    req: &proto::GetDecisionRequest,
) -> Result<Decision, EngineError> {
    use proto::get_decision_request::Key;
    match &req.key {
        Some(Key::PaymentId(id)) if !id.is_empty() => store
            .by_payment(id)?
            .ok_or_else(|| EngineError::UnknownPayment(id.clone())),
        Some(Key::DecisionId(id)) if !id.is_empty() => store
            .by_decision_id(id)?
            .ok_or_else(|| EngineError::UnknownDecision(id.clone())),
        _ => Err(invalid("key", "set payment_id or decision_id")),
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> EngineError {
    EngineError::Invalid(InvalidField {
        field,
        problem: problem.into(),
    })
}

fn outcome_kind(raw: i32) -> Result<OutcomeKind, EngineError> {
    use proto::OutcomeKind as P;
    match P::try_from(raw) {
        Ok(P::Fraud) => Ok(OutcomeKind::Fraud),
        Ok(P::Chargeback) => Ok(OutcomeKind::Chargeback),
        Ok(P::Complaint) => Ok(OutcomeKind::Complaint),
        Ok(P::Genuine) => Ok(OutcomeKind::Genuine),
        _ => Err(invalid(
            "outcome",
            format!("must be set to a known value (got {raw})"),
        )),
    }
}

pub fn open_db(path: &Path) -> Result<sled::Db, EngineError> {
    sled::Config::new()
        .path(path)
        // Durability comes from the group committer's explicit flushes; sled's own
        // timer flush only adds work.
        .flush_every_ms(None)
        .open()
        .map_err(|e| EngineError::Open {
            path: path.to_owned(),
            reason: match e {
                // sled reports the held file lock as an I/O error with this text.
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    "it is locked by another running fengkong (one server per data dir)".into()
                }
                other => other.to_string(),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::tests::{valid_request, NOW};

    fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let engine = Engine::open(&config).unwrap();
        (dir, engine)
    }

    #[test]
    fn retry_is_idempotent_and_conflict_is_refused() {
        let (_dir, mut engine) = engine();
        let first = engine.score(&valid_request(), NOW).unwrap();
        assert!(!first.replayed);
        let again = engine.score(&valid_request(), NOW + 5_000).unwrap();
        assert!(again.replayed);
        assert_eq!(again.response, first.response);
        let mut changed = valid_request();
        changed.amount_fen += 1;
        assert!(matches!(
            engine.score(&changed, NOW),
            Err(EngineError::Conflict(_))
        ));
        assert_eq!(engine.decisions().len(), 1);
    }

    #[test]
    fn outcome_is_stored_once_and_unknown_payment_is_reported() {
        let (_dir, mut engine) = engine();
        engine.score(&valid_request(), NOW).unwrap();
        let req = proto::ReportOutcomeRequest {
            payment_id: "pay-1".into(),
            outcome: proto::OutcomeKind::Fraud as i32,
            reported_at_ms: NOW + 1,
        };
        engine.report_outcome(&req, NOW + 2).unwrap();
        let resp = engine.report_outcome(&req, NOW + 3).unwrap();
        assert_eq!(resp.outcomes.len(), 1);
        let unknown = proto::ReportOutcomeRequest {
            payment_id: "nope".into(),
            ..req.clone()
        };
        assert!(matches!(
            engine.report_outcome(&unknown, NOW),
            Err(EngineError::UnknownPayment(_))
        ));
        let early = proto::ReportOutcomeRequest {
            reported_at_ms: NOW - 1,
            ..req
        };
        assert!(matches!(
            engine.report_outcome(&early, NOW),
            Err(EngineError::Invalid(_))
        ));
    }

    #[test]
    fn second_open_of_the_same_dir_fails_fast() {
        let (dir, _engine) = engine();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let err = Engine::open(&config).err().expect("second open must fail");
        assert!(err.to_string().contains("locked"), "{err}");
    }
}
