//! The decision pipeline for one payment: validate → features → rules → decision record.
//!
//! `Engine` is single-threaded on purpose (`&mut self`): the server runs it on one
//! dedicated thread and the offline commands call it directly, so both see payments in
//! the same order through the same code. It never reads the clock; callers pass `now_ms`.

mod accounts;
mod cases;
mod redecide;
mod rule_admin;

pub use accounts::{format_time, set_by};
pub use redecide::{Redecided, Redecider, Scratch};
pub use rule_admin::RulesChanged;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::accounts::{AccountStore, Statuses};
use crate::config::{Config, Limits};
use crate::decision;
use crate::features::presence::{key_hash, Presence};
use crate::features::{
    CacheStats, FeatureError, FeatureFileError, FeatureSet, FeatureStore, StoreOptions,
};
use crate::journal::{self, Journal, JournalError};
use crate::model::{ModelArtifact, Scorer};
use crate::payment::{OutcomeKind, Payment};
use crate::proto::{self, Decision, ScoreRequest, ScoreResponse};
use crate::request::{payment_from_request, InvalidField};
use crate::rules::{Hit, Mode, RuleErrors, RuleSet, Schema};
use crate::store::{payment_key, DecisionStore, LogEntry, StoreError, PAYMENT_PREFIX};
use crate::telemetry::{RuleLabels, Telemetry};
use crate::units::Lang;
use crate::vars;
use crate::writer::Tail;

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
    #[error(transparent)]
    Features(#[from] FeatureError),
    #[error("features file: {0}")]
    FeatureFile(#[from] FeatureFileError),
    #[error("rules in `{dir}` do not compile:\n{errors}")]
    Rules { dir: PathBuf, errors: RuleErrors },
    #[error("cannot open the data dir `{path}`: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("no appeal `{0}`")]
    UnknownAppeal(String),
    #[error("no case `{0}`")]
    UnknownCase(String),
    #[error("{0}")]
    CaseState(String),
    #[error("{0}")]
    AppealState(String),
    /// Rule files that cannot be shipped or promoted as asked.
    #[error("{0}")]
    RuleFiles(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("model `{path}`: {source}")]
    Model {
        path: PathBuf,
        source: crate::model::ModelError,
    },
}

impl EngineError {
    /// True for failures of the store itself (disk full, I/O), not of the request.
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            EngineError::Store(_)
                | EngineError::Features(_)
                | EngineError::Open { .. }
                | EngineError::Journal(_)
        )
    }
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

/// The result of a rules reload.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloaded {
    pub version: String,
    pub rules: usize,
    pub shadow_rules: usize,
    pub changed: bool,
    /// Rule ids in the new set and not the old one, and the other way round.
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

pub struct Engine {
    db: sled::Db,
    decisions: DecisionStore,
    accounts: AccountStore,
    /// Accounts not NORMAL and suppressions, mirrored from `accounts` for the hot path.
    statuses: Statuses,
    features: FeatureStore,
    feature_set_version: String,
    schema: Schema,
    rules: Arc<RuleSet>,
    model: Option<LoadedModel>,
    config: Config,
    telemetry: Arc<Telemetry>,
    // Reused between payments so the hot path does not allocate them.
    values: Vec<f64>,
    hits: Vec<Hit>,
    /// Hits of the payment scored last that an appeal suppressed.
    suppressed: Vec<Hit>,
    /// Per failing rule: when its error was last logged (server ms) and how many since.
    rule_error_log: std::collections::HashMap<Arc<str>, (i64, u64)>,
    contributions: Vec<f64>,
    /// The model's features in its own order, when it was trained on another list.
    model_input: Vec<f64>,
    factors: Vec<(usize, f64)>,
    last_probability: f64,
    /// Feature cache counts already reported to telemetry.
    cache_seen: CacheStats,

    /// Sequence number of the next log entry.
    next_seq: u64,
    /// Log entries since the feature store's last checkpoint.
    since_checkpoint: usize,
    /// Whether the last write went only where the journal covers it (see `take_journaled`).
    journaled: bool,
    /// Payment ids that may have a record, so scoring a new payment skips the sled read of
    /// the idempotency check (~10% of a Score), for ~1.5-3 bytes of memory per stored
    /// payment. Only this thread writes records.
    payments: Presence,
}

impl Engine {
    /// Loads the features file, rules and model (configured paths, or what the binary
    /// carries), then opens (or creates) the sled database in `config.data_dir`: a bad
    /// input is reported before anything is created. A second process on the same folder
    /// fails here at once: sled holds an exclusive lock on it.
    pub fn open(config: &Config) -> Result<Engine, EngineError> {
        let inputs = Inputs::load(config)?;
        let db = open_db(&config.data_dir, config.sled_cache_mib)?;
        Engine::assemble(db, config, inputs)
    }

    fn assemble(db: sled::Db, config: &Config, inputs: Inputs) -> Result<Engine, EngineError> {
        let Inputs {
            set,
            schema,
            rules,
            model,
        } = inputs;
        let feature_set_version = format!("{:016x}", set.file_hash());
        let options = StoreOptions {
            cache_capacity: config.feature_cache_entities,
            ..StoreOptions::default()
        };
        let features = FeatureStore::open(&db, set, options)?;
        let decisions = DecisionStore::open(&db)?;
        restore_journal(&db, &decisions, &config.data_dir)?;
        decisions.register_feature_set(&feature_set_version, features.set().names())?;
        let accounts = AccountStore::new(decisions.tree().clone());
        let statuses = accounts.load_statuses()?;
        let next_seq = decisions.last_seq()?.map_or(0, |s| s + 1);
        let payments = Presence::open(decisions.tree(), PAYMENT_PREFIX);
        let mut engine = Engine {
            decisions,
            accounts,
            statuses,
            db,
            features,
            feature_set_version,
            schema,
            rules: Arc::new(rules),
            model,
            config: config.clone(),
            telemetry: Arc::default(),
            values: Vec::new(),
            hits: Vec::new(),
            suppressed: Vec::new(),
            rule_error_log: std::collections::HashMap::new(),
            contributions: Vec::new(),
            model_input: Vec::new(),
            factors: Vec::new(),
            last_probability: 0.0,
            cache_seen: CacheStats::default(),
            next_seq,
            since_checkpoint: 0,
            journaled: false,
            payments,
        };
        let replayed = engine.recover()?;
        if replayed > 0 {
            tracing::info!(replayed, "feature windows rebuilt from the decision log");
            engine.checkpoint()?;
        }
        Ok(engine)
    }

    /// Re-applies to the feature windows every logged payment and outcome after the feature
    /// store's last checkpoint, in log order: the windows end up exactly as they were when
    /// the last decision was written, whatever happened to the process in between.
    fn recover(&mut self) -> Result<usize, EngineError> {
        // The log is read from sled: the journaled tail goes there first.
        self.decisions.catch_up()?;
        if let Some(seq) = self.decisions.remove_torn_tail()? {
            tracing::warn!(
                seq,
                "removed log entries from here on: their records were never written, so they \
                 were not acknowledged"
            );
            self.next_seq = seq;
        }
        self.features.discard_cache();
        let marker = self.features.checkpoint_marker()?;
        let after = match marker.as_deref() {
            None => None,
            Some(bytes) => Some(u64::from_be_bytes(bytes.try_into().map_err(|_| {
                FeatureError::Corrupt("feature checkpoint marker is not a sequence number".into())
            })?)),
        };
        let mut scratch = Vec::new();
        let mut replayed = 0;
        for item in self.decisions.log_after(after) {
            let (seq, entry) = item?;
            self.features.set_position(seq);
            let payment_id = match &entry {
                LogEntry::Payment { payment_id } | LogEntry::Outcome { payment_id, .. } => {
                    payment_id
                }
            };
            let decision = self
                .decisions
                .by_payment(payment_id)?
                .ok_or_else(|| EngineError::UnknownPayment(payment_id.clone()))?;
            let payment = stored_payment(&decision.request.unwrap_or_default())?;
            match entry {
                LogEntry::Payment { .. } => {
                    self.features.observe(&payment, &mut scratch)?;
                }
                LogEntry::Outcome {
                    outcome,
                    reported_at_ms,
                    ..
                } => {
                    self.features.record_outcome(
                        &payment,
                        outcome_kind(outcome)?,
                        reported_at_ms,
                    )?;
                }
            }
            replayed += 1;
        }
        self.since_checkpoint = replayed;
        Ok(replayed)
    }

    /// After a failure that may have left the in-memory windows ahead of the log, rebuilds
    /// them from the log; returns the original error.
    fn rebuild_after(&mut self, error: EngineError) -> EngineError {
        if let Err(recovery) = self.recover() {
            tracing::error!(error = %recovery, "cannot rebuild feature windows after a failure");
        }
        error
    }

    /// Writes the feature windows' changed state to sled, marked with the last log entry it
    /// includes. Runs every `feature_checkpoint_every` log entries and at shutdown.
    pub fn checkpoint(&mut self) -> Result<(), EngineError> {
        if let Some(last) = self.next_seq.checked_sub(1) {
            let first = self.log_in_sled_first();
            self.features.checkpoint_after(&last.to_be_bytes(), first)?;
        }
        self.since_checkpoint = 0;
        Ok(())
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Starts the journal that makes Scores and outcomes durable without a sled write (the
    /// server's group committer syncs it; its sled writer applies the tail, see
    /// `crate::writer`). Flushes sled first, so everything written before, such as the
    /// feature names that records refer to, is durable without it.
    pub fn start_journal(&mut self) -> Result<Journal, EngineError> {
        self.db.flush()?;
        let journal = Journal::create(&self.config.data_dir)?;
        let tail = Tail::new(self.config.sled_tail_max_entries, self.telemetry());
        self.decisions.set_journal(journal.clone(), tail);
        Ok(journal)
    }

    /// What a feature checkpoint runs on its own thread before it writes: the log entries
    /// pushed so far (all it covers) applied to sled, if the sled writer has not yet.
    fn log_in_sled_first(&self) -> impl FnOnce() -> Result<(), sled::Error> + Send + 'static {
        let tail = self.decisions.tail().cloned();
        let until = tail.as_ref().map_or(0, |t| t.pushed());
        let tree = self.decisions.sled_tree().clone();
        move || match tail {
            Some(tail) => tail.apply(&tree, until).map(drop),
            None => Ok(()),
        }
    }

    /// True when everything written since the last call is in the journal, so syncing it
    /// is enough to make the writes durable; false when sled must be flushed.
    pub fn take_journaled(&mut self) -> bool {
        std::mem::take(&mut self.journaled)
    }

    pub fn telemetry(&self) -> Arc<Telemetry> {
        Arc::clone(&self.telemetry)
    }

    /// A read handle for other threads.
    pub fn decisions(&self) -> DecisionStore {
        self.decisions.clone()
    }

    /// A read handle on account status, history and appeals for other threads.
    pub fn accounts(&self) -> AccountStore {
        self.accounts.clone()
    }

    pub fn ruleset(&self) -> Arc<RuleSet> {
        Arc::clone(&self.rules)
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn feature_names(&self) -> &[String] {
        self.features.set().names()
    }

    /// The compiled features file the engine computes.
    pub fn feature_set(&self) -> &FeatureSet {
        self.features.set()
    }

    /// Feature values of the payment scored last (in `feature_names` order).
    pub fn last_features(&self) -> &[f64] {
        &self.values
    }

    /// Every rule hit (active, shadow, failed) of the payment scored last.
    pub fn last_hits(&self) -> &[Hit] {
        &self.hits
    }

    /// The model's version, or "" without a model.
    pub fn model_version(&self) -> &str {
        self.model.as_ref().map_or("", |m| m.artifact.version())
    }

    /// Fraud probability of the payment scored last (0 without a model).
    pub fn last_model_score(&self) -> f64 {
        self.last_probability
    }

    /// Loads the model file (or the bundled model) again and swaps it in; on any error the
    /// current model stays.
    pub fn reload_model(&mut self) -> Result<(String, bool), EngineError> {
        let Some(model) = load_model(&self.config, self.features.set().names())? else {
            return Ok((String::new(), false));
        };
        let changed = model.artifact.version() != self.model_version();
        if changed {
            tracing::info!(
                from = self.model_version(),
                to = model.artifact.version(),
                "model reloaded"
            );
            self.model = Some(model);
        }
        Ok((self.model_version().to_owned(), changed))
    }

    /// Compiles the rules directory (or the bundled pack) again and swaps it in. On any
    /// error the current set stays; payments already scored are unaffected either way.
    pub fn reload_rules(&mut self) -> Result<Reloaded, EngineError> {
        let rules = load_rules(self.config.rules_dir.as_deref(), &self.schema)?;
        let changed = rules.version() != self.rules.version();
        let ids = |set: &RuleSet| -> std::collections::BTreeSet<String> {
            set.rules().iter().map(|r| r.id.to_string()).collect()
        };
        let (old_ids, new_ids) = (ids(&self.rules), ids(&rules));
        let added: Vec<String> = new_ids.difference(&old_ids).cloned().collect();
        let removed: Vec<String> = old_ids.difference(&new_ids).cloned().collect();
        if changed {
            if added.is_empty() && removed.is_empty() {
                tracing::info!(
                    from = self.rules.version(),
                    to = rules.version(),
                    rules = rules.rules().len(),
                    "rules reloaded"
                );
            } else {
                // Rules coming and going change what is blocked: never a quiet INFO line.
                tracing::warn!(
                    from = self.rules.version(),
                    to = rules.version(),
                    rules_before = self.rules.rules().len(),
                    rules = rules.rules().len(),
                    added = ?added,
                    removed = ?removed,
                    "rules reloaded; the set of rules changed"
                );
            }
            self.rules = Arc::new(rules);
        }
        let shadow_rules = self
            .rules
            .rules()
            .iter()
            .filter(|r| r.mode == Mode::Shadow)
            .count();
        Ok(Reloaded {
            version: self.rules.version().to_owned(),
            rules: self.rules.rules().len(),
            shadow_rules,
            changed,
            added,
            removed,
        })
    }

    /// Scores one payment and records the decision after its log entry (applied to sled and
    /// appended to the journal if there is one, not yet durable: the caller makes it durable
    /// before answering).
    pub fn score(&mut self, req: &ScoreRequest, now_ms: i64) -> Result<Scored, EngineError> {
        // A retry is answered from the record even if rules changed since: the gateway
        // must see the same decision for the same payment, and windows count it once.
        self.payments.poll();
        let key = key_hash(&payment_key(&req.payment_id));
        let stored = match self.payments.may_contain(key) {
            true => self.decisions.by_payment(&req.payment_id)?,
            false => None,
        };
        if let Some(stored) = stored {
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

        // Everything that can fail comes before the windows change or in `write`, which
        // rebuilds them from the log on failure: memory never counts an unlogged payment.
        let decision_id = crate::store::decision_id(self.next_seq);
        self.features.set_position(self.next_seq);
        let observation = match self.features.observe(&payment, &mut self.values) {
            Ok(observation) => observation,
            Err(e) => return Err(self.rebuild_after(e.into())),
        };
        if observation.late {
            self.telemetry.late_events.inc();
        }
        let stats = self.features.cache_stats();
        self.telemetry
            .cache_hits
            .inc_by(stats.hits - self.cache_seen.hits);
        self.telemetry
            .cache_misses
            .inc_by(stats.misses - self.cache_seen.misses);
        self.cache_seen = stats;
        let features_done = Instant::now();
        self.telemetry.stage("features", features_done - started);

        let model_reasons = self.run_model(&payment);
        if self.model.is_some() {
            self.telemetry.model_score.observe(self.last_probability);
        }
        let model_done = Instant::now();
        self.telemetry.stage("model", model_done - features_done);

        let mut vars = Vec::with_capacity(self.schema.len());
        vars::fill(&payment, &self.values, &mut vars);
        self.hits.clear();
        self.rules
            .evaluate(&vars, payment.event_time_ms, &mut self.hits);
        self.set_aside_suppressed(&payment);
        let model_points = self.last_probability * self.config.model_weight;
        let mut verdict = self.rules.decide(&self.hits, model_points);
        let status_reasons = self.status_reasons(&payment);
        if !status_reasons.is_empty() {
            verdict.action = crate::rules::Action::Block;
        }
        let account_changes = self.account_changes(&payment, &verdict, &decision_id, now_ms)?;
        let rules_done = Instant::now();
        self.telemetry.stage("rules", rules_done - model_done);

        self.count_rule_errors(now_ms);
        let reason = |hit: &Hit| match hit.error {
            None => decision::reason(&self.rules, &self.schema, hit, &vars),
            Some(_) => {
                let asks = self.rules.policy().error_action(std::slice::from_ref(hit));
                decision::rule_error_reason(&self.rules, &self.schema, hit, &vars, asks)
            }
        };
        let mut reasons = status_reasons;
        reasons.extend(verdict.reasons.iter().map(|&i| reason(&self.hits[i])));
        // A rule that could not be evaluated is on the decision, never silently dropped.
        reasons.extend(
            self.hits
                .iter()
                .filter(|h| h.error.is_some() && h.mode == Mode::Active)
                .map(reason),
        );
        reasons.extend(model_reasons);
        let suppressed_reasons = self.suppressed.iter().map(reason).collect();
        let shadow_reasons = self
            .hits
            .iter()
            .filter(|h| h.mode == Mode::Shadow)
            .map(reason)
            .collect();
        for hit in self.hits.iter().filter(|h| h.fired()) {
            let mode = if hit.mode == Mode::Shadow {
                "shadow"
            } else {
                "active"
            };
            self.telemetry
                .rule_hits
                .get_or_create(&RuleLabels {
                    rule: hit.id.to_string(),
                    mode,
                })
                .inc();
        }
        let response = ScoreResponse {
            decision_id,
            payment_id: payment.payment_id.clone(),
            action: decision::action(verdict.action) as i32,
            risk_score: verdict.risk_score.clamp(0.0, 100.0).round() as u32,
            reasons,
            ruleset_version: self.rules.version().to_owned(),
            model_version: self.model_version().to_owned(),
            evaluated_at_ms: now_ms,
            late_event: observation.late,
            model_probability: self.last_probability,
        };
        let mut record = Decision {
            response: Some(response),
            request: Some(req.clone()),
            // Stored as bare values: see `DecisionStore::stage_insert`.
            features: Vec::new(),
            shadow_reasons,
            outcomes: Vec::new(),
            feature_set_version: self.feature_set_version.clone(),
            late_event: observation.late,
            account_changes,
            suppressed_reasons,
        };
        self.payments.insert(key);
        if record.account_changes.is_empty() {
            let written = self
                .decisions
                .insert_payment(self.next_seq, &record, &self.values);
            self.logged(written.map_err(EngineError::from), 1)?;
            self.journaled = self.decisions.journaled();
        } else {
            // Status changes are rare and must land with their decision: one sled batch.
            let mut batch = sled::Batch::default();
            for change in &record.account_changes {
                self.accounts.stage_change(&mut batch, change);
            }
            self.decisions
                .stage_insert(&mut batch, &record, &self.values);
            let entry = LogEntry::Payment {
                payment_id: payment.payment_id.clone(),
            };
            self.write(batch, &[entry])?;
        }
        self.apply_changes(std::mem::take(&mut record.account_changes));
        self.telemetry.stage("record", rules_done.elapsed());
        Ok(Scored {
            response: record.response.take().unwrap_or_default(),
            replayed: false,
        })
    }

    /// Counts every rule that failed to evaluate on the payment scored last
    /// (`fengkong_rule_errors_total{rule}`) and logs it, at most once per rule per
    /// `RULE_ERROR_LOG_EVERY_MS` of server time (with how many were not logged).
    fn count_rule_errors(&mut self, now_ms: i64) {
        for hit in self.hits.iter().filter(|h| h.error.is_some()) {
            self.telemetry
                .rule_errors
                .get_or_create(&crate::telemetry::RuleErrorLabels {
                    rule: hit.id.to_string(),
                })
                .inc();
            let logged = self
                .rule_error_log
                .entry(hit.id.clone())
                .or_insert((i64::MIN, 0));
            if now_ms.saturating_sub(logged.0) >= RULE_ERROR_LOG_EVERY_MS {
                tracing::warn!(
                    rule = %hit.id,
                    error = %hit.error.map(|e| e.to_string()).unwrap_or_default(),
                    not_logged_since = logged.1,
                    "rule failed to evaluate"
                );
                *logged = (now_ms, 0);
            } else {
                logged.1 += 1;
            }
        }
    }

    /// Scores the current feature values with the model, if there is one, and returns its
    /// top factors as MODEL reasons: each feature in the words a merchant reads, with its
    /// value and its signed log-odds contribution. The probability itself is on the response
    /// once (`model_probability`), not repeated on every factor. A category code is shown as
    /// the category itself (the merchant category, the channel), never as its number.
    fn run_model(&mut self, payment: &Payment) -> Vec<proto::Reason> {
        let Some(model) = &self.model else {
            self.last_probability = 0.0;
            return Vec::new();
        };
        let probability = match &model.slots {
            None => {
                self.contributions.resize(self.values.len(), 0.0);
                model.scorer.score(&self.values, &mut self.contributions)
            }
            Some(slots) => {
                self.model_input.clear();
                self.model_input.extend(
                    slots
                        .iter()
                        .map(|&s| self.values.get(s).copied().unwrap_or(0.0)),
                );
                self.contributions.resize(slots.len(), 0.0);
                model
                    .scorer
                    .score(&self.model_input, &mut self.contributions)
            }
        };
        model
            .scorer
            .top_factors(&self.contributions, TOP_FACTORS, &mut self.factors);
        self.last_probability = probability;
        let features = self.schema.vars().get(vars::REQUEST_FIELDS.len()..);
        let slots = model.slots.as_deref();
        self.factors
            .iter()
            .filter_map(|&(input, contribution)| {
                let slot = slots.map_or(Some(input), |s| s.get(input).copied())?;
                let var = features?.get(slot)?;
                let value = self.values.get(slot).copied().unwrap_or(0.0);
                let (raises, raises_zh) = match contribution >= 0.0 {
                    true => ("raises", "提高"),
                    false => ("lowers", "降低"),
                };
                let def = self.features.set().describe(slot);
                let (shown, shown_zh, evidence_value) = match def.code_text(payment) {
                    Some(text) => (
                        text.to_owned(),
                        text.to_owned(),
                        crate::rules::Value::Str(text),
                    ),
                    None if def.is_categorical() => (
                        "none".to_owned(),
                        "无".to_owned(),
                        crate::rules::Value::Str(""),
                    ),
                    None => (
                        var.unit.format(value, Lang::En),
                        var.unit.format(value, Lang::Zh),
                        crate::rules::Value::Num(value),
                    ),
                };
                Some(proto::Reason {
                    code: "MODEL_FACTOR".into(),
                    source: proto::ReasonSource::Model as i32,
                    id: var.name.clone(),
                    message: format!("{}: {shown} ({raises} the fraud probability)", var.label,),
                    message_zh: format!("{}：{shown_zh}（{raises_zh}欺诈概率）", var.label_zh),
                    contribution,
                    action: proto::Action::Unspecified as i32,
                    evidence: vec![decision::evidence(var, Some(evidence_value))],
                    ..Default::default()
                })
            })
            .collect()
    }

    /// Writes a decision record together with the log entry of its feature change in one
    /// atomic batch. The feature change itself is already in memory; should the write fail,
    /// the in-memory windows are rebuilt from the log, so they never count what the log
    /// does not hold.
    fn write(&mut self, mut batch: sled::Batch, entries: &[LogEntry]) -> Result<(), EngineError> {
        // The journaled tail is older than this batch: into sled before it, in log order.
        self.decisions.catch_up()?;
        for (seq, entry) in (self.next_seq..).zip(entries) {
            self.decisions.stage_log(&mut batch, seq, entry);
        }
        let written = self.decisions.apply(batch).map_err(EngineError::from);
        self.logged(written, entries.len())
    }

    /// Moves past `entries` log entries once they are written, checkpointing the feature
    /// windows when it is time; if the write failed, rebuilds the windows from the log.
    fn logged(
        &mut self,
        written: Result<(), EngineError>,
        entries: usize,
    ) -> Result<(), EngineError> {
        if let Err(e) = written {
            return Err(match entries {
                0 => e,
                _ => self.rebuild_after(e),
            });
        }
        if entries > 0 {
            self.next_seq += entries as u64;
            self.since_checkpoint += entries;
            let every = SWEEP_EVERY
                .min(self.config.feature_checkpoint_every as u64)
                .max(1);
            if self.next_seq / every != (self.next_seq - entries as u64) / every {
                // Cold entities are only compacted when touched; walk a slice of the stored
                // ones now and then, so state outside every window is deleted even if its
                // entity never pays again. Small slices: this runs on the scoring thread.
                let swept = self.features.sweep(i64::MAX, SWEEP_SLICE)?;
                if swept.deleted > 0 {
                    tracing::debug!(deleted = swept.deleted, "expired feature state removed");
                }
            }
            if self.since_checkpoint >= self.config.feature_checkpoint_every {
                // In the background: the log already makes these payments durable. Should the
                // last one have failed, states it marked clean were never written: rebuild
                // them from the log rather than let the cache drop them.
                let marker = (self.next_seq - 1).to_be_bytes();
                // A new scan of sled may miss the payments in the tail when it starts (taken
                // before it: one applied since is in sled for the scan to find).
                let in_tail = self.decisions.tail().map(|t| t.payment_ids());
                if self.payments.maintain(self.decisions.sled_tree()) {
                    for id in in_tail.unwrap_or_default() {
                        self.payments.insert(key_hash(&payment_key(&id)));
                    }
                }
                let first = self.log_in_sled_first();
                if let Err(e) = self.features.start_checkpoint_after(&marker, first) {
                    return Err(self.rebuild_after(e.into()));
                }
                self.since_checkpoint = 0;
            }
        }
        Ok(())
    }

    /// Stores delayed truth with the decision and feeds it to the outcome windows.
    /// Reporting the same outcome twice is a no-op, so gateways may retry.
    pub fn report_outcome(
        &mut self,
        req: &proto::ReportOutcomeRequest,
        now_ms: i64,
    ) -> Result<proto::ReportOutcomeResponse, EngineError> {
        if req.payment_id.is_empty() {
            return Err(invalid("payment_id", "must not be empty"));
        }
        if req.reported_at_ms <= 0 {
            return Err(invalid(
                "reported_at_ms",
                format!(
                    "is required: when the truth became known, in UTC epoch ms (got {})",
                    req.reported_at_ms
                ),
            ));
        }
        // Like event times: a time far ahead of the server clock would sit in every window
        // forever after and hide the true report behind it.
        let latest = now_ms.saturating_add(self.config.limits.max_clock_skew_ms);
        if req.reported_at_ms > latest {
            return Err(invalid(
                "reported_at_ms",
                format!(
                    "is {} ms ahead of the server clock; at most {} ms (limits.max_clock_skew_ms) \
                     is accepted (got {})",
                    req.reported_at_ms.saturating_sub(now_ms),
                    self.config.limits.max_clock_skew_ms,
                    req.reported_at_ms
                ),
            ));
        }
        let mut decision = self
            .decisions
            .by_payment(&req.payment_id)?
            .ok_or_else(|| EngineError::UnknownPayment(req.payment_id.clone()))?;
        if let Some(entries) = self.add_outcome(
            &mut decision,
            req.outcome,
            req.reported_at_ms,
            now_ms,
            self.next_seq,
        )? {
            let written = self
                .decisions
                .update_after_log(self.next_seq, &entries, &decision);
            self.logged(written.map_err(EngineError::from), entries.len())?;
            self.journaled = self.decisions.journaled();
        }
        Ok(proto::ReportOutcomeResponse {
            decision_id: decision.response.map(|r| r.decision_id).unwrap_or_default(),
            outcomes: decision.outcomes,
        })
    }

    /// Adds an outcome to `decision` (the caller writes it) and, for the payment's first bad
    /// one, to the outcome windows. `None` when that outcome is already stored; otherwise the
    /// log entries to write with the decision (empty when the windows did not change), the
    /// first at log `position`.
    fn add_outcome(
        &mut self,
        decision: &mut Decision,
        outcome: i32,
        reported_at_ms: i64,
        now_ms: i64,
        position: u64,
    ) -> Result<Option<Vec<LogEntry>>, EngineError> {
        let kind = outcome_kind(outcome)?;
        let request = decision.request.clone().unwrap_or_default();
        if reported_at_ms < request.event_time_ms {
            return Err(invalid(
                "reported_at_ms",
                format!(
                    "must not be before the payment's event time {} (got {reported_at_ms})",
                    request.event_time_ms
                ),
            ));
        }
        // One report per kind, at the earliest time any report of that kind gave: a retry
        // (or a later duplicate) changes nothing, an earlier one moves the time back.
        if let Some(same) = decision.outcomes.iter_mut().find(|o| o.outcome == outcome) {
            if same.reported_at_ms <= reported_at_ms {
                return Ok(None);
            }
            same.reported_at_ms = reported_at_ms;
            same.recorded_at_ms = now_ms;
            return Ok(Some(Vec::new()));
        }
        // Windows count one bad label per payment, whatever mix of fraud, chargeback and
        // complaint reports arrives for it.
        let first_bad = kind.is_bad()
            && !decision
                .outcomes
                .iter()
                .any(|o| outcome_kind(o.outcome).is_ok_and(OutcomeKind::is_bad));
        let mut entries = Vec::new();
        if first_bad {
            let payment = stored_payment(&request)?;
            self.features.set_position(position);
            if let Err(e) = self.features.record_outcome(&payment, kind, reported_at_ms) {
                return Err(self.rebuild_after(e.into()));
            }
            entries.push(LogEntry::Outcome {
                payment_id: request.payment_id,
                outcome,
                reported_at_ms,
            });
        }
        decision.outcomes.push(proto::Outcome {
            outcome,
            reported_at_ms,
            recorded_at_ms: now_ms,
        });
        Ok(Some(entries))
    }
}

/// Every `SWEEP_EVERY` log entries (or checkpoint, if sooner), `SWEEP_SLICE` stored feature
/// keys are examined for expiry (time is the store's own watermark).
const SWEEP_EVERY: u64 = 250;
const SWEEP_SLICE: usize = 100;

/// How many model factors each decision explains.
const TOP_FACTORS: usize = 3;
/// A failing rule is logged at most this often (server time), however many payments hit it.
const RULE_ERROR_LOG_EVERY_MS: i64 = 10_000;

/// A model ready to score: the artifact (for its version and description) and its scorer.
struct LoadedModel {
    artifact: ModelArtifact,
    scorer: Scorer,
    /// The engine slot of each model feature, when they are not simply the same list: a
    /// model trained before the features file grew scores on the features it knows.
    slots: Option<Vec<usize>>,
}

/// What an engine is built from besides its data: features, the variables rules see, rules
/// and model, each from its configured path or from the binary (`crate::bundled`).
struct Inputs {
    set: FeatureSet,
    schema: Schema,
    rules: RuleSet,
    model: Option<LoadedModel>,
}

impl Inputs {
    fn load(config: &Config) -> Result<Inputs, EngineError> {
        let set = match &config.features_file {
            Some(path) => FeatureSet::load(path)?,
            None => FeatureSet::defaults(),
        };
        let schema = vars::schema(&set);
        let rules = load_rules(config.rules_dir.as_deref(), &schema)?;
        let model = load_model(config, set.names())?;
        Ok(Inputs {
            set,
            schema,
            rules,
            model,
        })
    }
}

/// The configured model file, or the bundled model; `None` when the model is turned off.
fn load_model(
    config: &Config,
    feature_names: &[String],
) -> Result<Option<LoadedModel>, EngineError> {
    if !config.model_enabled {
        return Ok(None);
    }
    let (artifact, path) = match &config.model_path {
        Some(path) => (ModelArtifact::load_bound(path, feature_names), path.clone()),
        None => (
            crate::bundled::model(feature_names),
            PathBuf::from(crate::bundled::MODEL_NAME),
        ),
    };
    let (artifact, slots) = artifact.map_err(|source| EngineError::Model { path, source })?;
    let scorer = artifact.scorer();
    let identity =
        slots.len() == feature_names.len() && slots.iter().enumerate().all(|(i, &s)| i == s);
    Ok(Some(LoadedModel {
        artifact,
        scorer,
        slots: (!identity).then_some(slots),
    }))
}

/// The rules in `dir`, or the bundled pack.
fn load_rules(dir: Option<&Path>, schema: &Schema) -> Result<RuleSet, EngineError> {
    let (rules, dir) = match dir {
        Some(dir) => (RuleSet::load_dir(dir, schema), dir.to_owned()),
        None => (
            crate::bundled::rules(schema),
            PathBuf::from(crate::bundled::RULES_NAME),
        ),
    };
    rules.map_err(|errors| EngineError::Rules { dir, errors })
}

/// Rebuilds the payment of a stored request. It was valid when scored; limits may have
/// changed since, so only its shape is checked again.
fn stored_payment(req: &ScoreRequest) -> Result<Payment, EngineError> {
    let anything = Limits {
        max_amount_fen: i64::MAX,
        max_clock_skew_ms: i64::MAX,
        max_id_bytes: usize::MAX,
        max_attributes: usize::MAX,
        max_attribute_bytes: usize::MAX,
    };
    Ok(payment_from_request(req, &anything, req.event_time_ms)?)
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

/// Writes again what the journal in `dir` holds and sled lost in a crash, makes it durable
/// in sled and deletes the journal, so no entry is restored twice.
fn restore_journal(
    db: &sled::Db,
    decisions: &DecisionStore,
    dir: &Path,
) -> Result<(), EngineError> {
    let entries = journal::read(dir)?;
    let mut restored = 0usize;
    for entry in &entries {
        restored += usize::from(decisions.restore(entry)?);
    }
    if restored > 0 {
        tracing::warn!(
            restored,
            journaled = entries.len(),
            "restored decisions the database lost in a crash from the journal"
        );
    }
    if !entries.is_empty() {
        db.flush()?;
        journal::remove_all(dir)?;
    }
    Ok(())
}

pub fn open_db(path: &Path, cache_mib: u64) -> Result<sled::Db, EngineError> {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_mib.saturating_mul(1 << 20))
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
pub(crate) mod tests {
    use super::*;
    use crate::request::tests::{valid_request, NOW};

    /// The bundled rules and model.
    pub(crate) fn test_config(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_owned(),
            ..Config::default()
        }
    }

    fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&test_config(dir.path())).unwrap();
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
    fn decision_records_every_feature_and_the_versions() {
        let (_dir, mut engine) = engine();
        engine.score(&valid_request(), NOW).unwrap();
        let stored = engine.decisions().by_payment("pay-1").unwrap().unwrap();
        assert_eq!(stored.features.len(), engine.feature_names().len());
        let count = stored
            .features
            .iter()
            .find(|f| f.name == "payer.count_1h")
            .unwrap();
        assert_eq!(count.value, 1.0, "windows include the payment being scored");
        let response = stored.response.unwrap();
        assert_eq!(response.ruleset_version, engine.ruleset().version());
        assert!(!stored.feature_set_version.is_empty());
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
        let missing = proto::ReportOutcomeRequest {
            reported_at_ms: 0,
            ..req.clone()
        };
        let err = engine
            .report_outcome(&missing, NOW)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`reported_at_ms` is required"), "{err}");
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
    fn state_of_an_entity_that_never_pays_again_is_swept_away() {
        let dir = tempfile::tempdir().unwrap();
        // A tiny cache: the sweep walks stored states that are not held in memory.
        let config = Config {
            feature_checkpoint_every: 1,
            feature_cache_entities: 2,
            ..test_config(dir.path())
        };
        let mut engine = Engine::open(&config).unwrap();
        let mut old = valid_request();
        old.event_time_ms = NOW - 500 * 86_400_000;
        old.payer.as_mut().unwrap().account_id = "gone-payer".into();
        engine.score(&old, NOW).unwrap();
        let stored = |engine: &Engine| {
            engine
                .features
                .tree()
                .iter()
                .keys()
                .filter(|k| k.as_ref().unwrap().windows(10).any(|w| w == b"gone-payer"))
                .count()
        };
        engine.checkpoint().unwrap();
        assert!(stored(&engine) > 0);
        for i in 0..3 {
            let mut new = valid_request();
            new.payment_id = format!("new-{i}");
            new.event_time_ms = NOW - 100 * 86_400_000 + i;
            engine.score(&new, NOW).unwrap();
        }
        engine.features.wait_checkpoint().unwrap();
        assert_eq!(
            stored(&engine),
            0,
            "a year past every window, nothing is kept"
        );
    }

    #[test]
    fn model_threshold_limits_the_payee_and_the_status_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            model_account_actions: vec![crate::config::ModelAccountAction {
                probability_at: 0.0,
                account_action: crate::rules::AccountAction::LimitPayee,
            }],
            ..test_config(dir.path())
        };
        let payee = valid_request().payee.unwrap().account_id;
        {
            let mut engine = Engine::open(&config).unwrap();
            engine.score(&valid_request(), NOW).unwrap();
            let stored = engine.decisions().by_payment("pay-1").unwrap().unwrap();
            assert_eq!(stored.account_changes.len(), 1);
            let change = &stored.account_changes[0];
            assert_eq!(change.changed_by, "model");
            assert_eq!(change.account_id, payee);
            assert_eq!(change.to(), proto::AccountStatus::Limited);
            assert!(change.note.contains("fraud probability"), "{}", change.note);
        }
        let engine = Engine::open(&config).unwrap();
        assert_eq!(
            engine.statuses.status(&payee),
            proto::AccountStatus::Limited
        );
        assert_eq!(engine.accounts().history(&payee).unwrap().len(), 1);
    }

    #[test]
    fn a_log_entry_whose_record_was_never_written_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        {
            let mut engine = Engine::open(&config).unwrap();
            engine.score(&valid_request(), NOW).unwrap();
            // What a crash between `insert_payment`'s two inserts leaves behind.
            let mut batch = sled::Batch::default();
            let torn = LogEntry::Payment {
                payment_id: "never-recorded".into(),
            };
            engine.decisions().stage_log(&mut batch, 1, &torn);
            engine.decisions().apply(batch).unwrap();
        }
        let mut engine = Engine::open(&config).unwrap();
        assert_eq!(engine.decisions().last_seq().unwrap(), Some(0));
        let mut next = valid_request();
        next.payment_id = "pay-2".into();
        let scored = engine.score(&next, NOW).unwrap();
        assert_eq!(scored.response.decision_id, crate::store::decision_id(1));
        let stored = engine.decisions().by_payment("pay-2").unwrap().unwrap();
        let count = stored.features.iter().find(|f| f.name == "payer.count_1h");
        assert_eq!(count.unwrap().value, 2.0, "the torn entry is not counted");
        assert_eq!(
            engine
                .decisions()
                .by_decision_id(&crate::store::decision_id(1))
                .unwrap(),
            Some(stored)
        );
    }

    #[test]
    fn an_outcome_logged_without_its_record_update_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        let report = proto::ReportOutcomeRequest {
            payment_id: "pay-1".into(),
            outcome: proto::OutcomeKind::Fraud as i32,
            reported_at_ms: NOW + 1,
        };
        {
            let mut engine = Engine::open(&config).unwrap();
            engine.score(&valid_request(), NOW).unwrap();
            // What a crash inside `update_after_log` leaves: the entry, not the record's outcome.
            let mut batch = sled::Batch::default();
            let torn = LogEntry::Outcome {
                payment_id: "pay-1".into(),
                outcome: report.outcome,
                reported_at_ms: report.reported_at_ms,
            };
            engine.decisions().stage_log(&mut batch, 1, &torn);
            engine.decisions().apply(batch).unwrap();
        }
        let mut engine = Engine::open(&config).unwrap();
        assert_eq!(engine.decisions().last_seq().unwrap(), Some(0));
        // The gateway retries, as it got no answer: now it counts, once.
        let stored = engine.report_outcome(&report, NOW + 2).unwrap();
        assert_eq!(stored.outcomes.len(), 1);
        assert_eq!(engine.decisions().last_seq().unwrap(), Some(1));
        // A report counts once its (6 h) bucket of the 30-day window is complete.
        let mut next = valid_request();
        next.payment_id = "pay-2".into();
        next.event_time_ms = NOW + 86_400_000;
        engine.score(&next, next.event_time_ms).unwrap();
        let stored = engine.decisions().by_payment("pay-2").unwrap().unwrap();
        let reports = stored
            .features
            .iter()
            .find(|f| f.name == "payee.bad_reports_30d");
        assert_eq!(reports.unwrap().value, 1.0);
    }

    /// A Score and an outcome that the journal made durable, while sled lost its writes of
    /// them (a crash before sled flushed), are written again on open.
    #[test]
    fn writes_sled_lost_after_the_journal_synced_them_are_restored_on_open() {
        let report = proto::ReportOutcomeRequest {
            payment_id: "pay-1".into(),
            outcome: proto::OutcomeKind::Fraud as i32,
            reported_at_ms: NOW + 1,
        };
        let mut second = valid_request();
        second.payment_id = "pay-2".into();
        let mut third = valid_request();
        third.payment_id = "pay-3".into();
        third.event_time_ms = NOW + 86_400_000;
        let run = |engine: &mut Engine| {
            engine.score(&valid_request(), NOW).unwrap();
            let before_report = engine.decisions().tree().get(b"p/pay-1").unwrap().unwrap();
            engine.score(&second, NOW).unwrap();
            engine.report_outcome(&report, NOW + 2).unwrap();
            before_report
        };

        let reference_dir = tempfile::tempdir().unwrap();
        let mut reference = Engine::open(&test_config(reference_dir.path())).unwrap();
        run(&mut reference);
        reference.score(&third, third.event_time_ms).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        let expected = {
            let mut engine = Engine::open(&config).unwrap();
            let journal = engine.start_journal().unwrap();
            let before_report = run(&mut engine);
            assert!(engine.take_journaled());
            journal.sync().unwrap();
            let decisions = engine.decisions();
            let expected = ["pay-1", "pay-2"].map(|id| decisions.by_payment(id).unwrap());
            // What sled may lose: the second payment and the outcome, whole or in part.
            let tree = decisions.tree();
            tree.remove(b"p/pay-2").unwrap();
            for seq in [1u64, 2] {
                tree.remove([&b"s/"[..], &seq.to_be_bytes()].concat())
                    .unwrap();
            }
            tree.insert(b"p/pay-1", before_report).unwrap();
            engine.db().flush().unwrap();
            expected
        };
        let mut engine = Engine::open(&config).unwrap();
        let decisions = engine.decisions();
        assert_eq!(
            ["pay-1", "pay-2"].map(|id| decisions.by_payment(id).unwrap()),
            expected
        );
        assert_eq!(decisions.last_seq().unwrap(), Some(2));
        engine.score(&third, third.event_time_ms).unwrap();
        let features = |e: &Engine| e.decisions().by_payment("pay-3").unwrap().unwrap().features;
        assert_eq!(features(&engine), features(&reference));
        assert!(
            crate::journal::read(dir.path()).unwrap().is_empty(),
            "restored once, then deleted"
        );
    }

    /// The index behind a NORMAL account's explanation is written with a non-ALLOW decision
    /// and, when sled lost it, rebuilt from the journal.
    #[test]
    fn flagged_decisions_are_indexed_by_account_and_restored_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        let mut blocked = valid_request();
        blocked.payer.as_mut().unwrap().account_id = "acct-mule-0001".into();
        {
            let mut engine = Engine::open(&config).unwrap();
            let journal = engine.start_journal().unwrap();
            engine.score(&valid_request(), NOW).unwrap();
            blocked.payment_id = "pay-2".into();
            let scored = engine.score(&blocked, NOW).unwrap().response;
            assert_eq!(scored.action(), proto::Action::Block);
            let flagged = engine.decisions().flagged("acct-mule-0001", 10).unwrap();
            assert_eq!(flagged.len(), 1);
            journal.sync().unwrap();
            let tree = engine.decisions().tree().clone();
            for key in tree.scan_prefix(b"i/").keys() {
                tree.remove(key.unwrap()).unwrap();
            }
            engine.db().flush().unwrap();
        }
        let engine = Engine::open(&config).unwrap();
        let flagged = engine.decisions().flagged("acct-mule-0001", 10).unwrap();
        let ids: Vec<_> = flagged
            .iter()
            .map(|d| d.request.clone().unwrap().payment_id)
            .collect();
        assert_eq!(ids, ["pay-2"]);
    }

    #[test]
    fn a_journal_corrupt_in_the_middle_stops_the_open_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        drop(Engine::open(&config).unwrap());
        let journal = crate::journal::Journal::create(dir.path()).unwrap();
        journal.append(b"first");
        journal.append(b"second");
        journal.sync().unwrap();
        let path = dir.path().join("decisions.journal.00000000000000000001");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let err = Engine::open(&config)
            .err()
            .expect("a corrupt journal must not be skipped");
        assert!(
            matches!(
                err,
                EngineError::Journal(crate::journal::JournalError::Corrupt { offset: 0, .. })
            ),
            "{err}"
        );
    }

    #[test]
    fn retries_are_recognized_once_the_payment_filter_has_scanned_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        let request = |i: usize| ScoreRequest {
            payment_id: format!("pay-{i}"),
            ..valid_request()
        };
        let first: Vec<_> = {
            let mut engine = Engine::open(&config).unwrap();
            (0..30)
                .map(|i| engine.score(&request(i), NOW).unwrap().response)
                .collect()
        };
        let mut engine = Engine::open(&config).unwrap();
        let tree = engine.decisions().tree().clone();
        engine.payments.wait(&tree);
        for (i, response) in first.iter().enumerate() {
            let again = engine.score(&request(i), NOW).unwrap();
            assert!(again.replayed, "pay-{i} scored twice");
            assert_eq!(&again.response, response);
        }
        let mut changed = request(3);
        changed.amount_fen += 1;
        assert!(matches!(
            engine.score(&changed, NOW),
            Err(EngineError::Conflict(_))
        ));
        let fresh = engine.score(&request(30), NOW).unwrap();
        assert!(!fresh.replayed);
        assert!(engine.score(&request(30), NOW).unwrap().replayed);
    }

    #[test]
    fn second_open_of_the_same_dir_fails_fast() {
        let (dir, _engine) = engine();
        let err = Engine::open(&test_config(dir.path()))
            .err()
            .expect("second open must fail");
        assert!(err.to_string().contains("locked"), "{err}");
    }

    #[test]
    fn broken_rules_are_refused_at_reload_and_the_old_set_stays() {
        let data = tempfile::tempdir().unwrap();
        let rules = tempfile::tempdir().unwrap();
        let good = "[[rule]]\nid = \"big\"\ndescription = \"big\"\nwhen = \"payment.amount_fen > 100\"\naction = \"review\"\nscore = 60\nreason_code = \"BIG\"\nmessage = \"big\"\n";
        std::fs::write(rules.path().join("a.toml"), good).unwrap();
        let config = Config {
            rules_dir: Some(rules.path().to_owned()),
            ..test_config(data.path())
        };
        let mut engine = Engine::open(&config).unwrap();
        let before = engine.ruleset().version().to_owned();
        std::fs::write(
            rules.path().join("a.toml"),
            good.replace("amount_fen >", "amount_fen >>"),
        )
        .unwrap();
        let err = engine.reload_rules().unwrap_err().to_string();
        assert!(err.contains("a.toml:4:"), "{err}");
        assert_eq!(engine.ruleset().version(), before);
        let scored = engine.score(&valid_request(), NOW).unwrap().response;
        assert_eq!(scored.action(), proto::Action::Review);
    }
}
