//! What the engine lends to work done off its thread: today's model, the live rules and
//! the variables rules read, so a backtest decides stored decisions again without holding
//! the thread that scores payments. Nothing here writes or touches a window.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{load_rules, stored_payment, Engine, EngineError};
use crate::decision;
use crate::model::Scorer;
use crate::proto::{self, Decision, ReasonSource};
use crate::rules::{Hit, Mode, RuleSet, Schema};
use crate::vars;

/// A copy of what deciding needs, taken on the engine thread (a clone of the model and
/// schema, a pointer to the live rules), used on any other.
pub struct Redecider {
    pub live: Arc<RuleSet>,
    pub model_version: String,
    model: Option<(Scorer, Option<Vec<usize>>)>,
    schema: Schema,
    feature_names: Vec<String>,
    model_weight: f64,
    rules_dir: Option<PathBuf>,
}

/// One stored decision decided again under one rule set.
#[derive(Debug, Clone, PartialEq)]
pub struct Redecided {
    pub action: proto::Action,
    pub risk_score: u32,
    /// Rules (and lists) that fired, active and shadow, in rule order.
    pub fired: Vec<(Arc<str>, Mode)>,
}

/// Buffers reused from one decision to the next.
#[derive(Default)]
pub struct Scratch {
    values: Vec<f64>,
    contributions: Vec<f64>,
    model_input: Vec<f64>,
    hits: Vec<Hit>,
}

impl Engine {
    /// What `Redecider` needs, as it is now.
    pub fn redecider(&self) -> Redecider {
        Redecider {
            live: Arc::clone(&self.rules),
            model_version: self.model_version().to_owned(),
            model: self
                .model
                .as_ref()
                .map(|m| (m.scorer.clone(), m.slots.clone())),
            schema: self.schema.clone(),
            feature_names: self.features.set().names().to_vec(),
            model_weight: self.config.model_weight,
            rules_dir: self.config.rules_dir.clone(),
        }
    }
}

impl Redecider {
    pub fn rules_dir(&self) -> Option<&std::path::Path> {
        self.rules_dir.as_deref()
    }

    /// The rules directory with `files` written over it, compiled as a reload compiles it
    /// (the same errors, file:line:column); over the bundled pack when there is no
    /// directory.
    pub fn compile(&self, files: &[(String, String)]) -> Result<RuleSet, EngineError> {
        compile_over(self.rules_dir.as_deref(), files, &self.schema)
    }

    /// Decides `stored` again from its request and feature snapshot under each of `sets`,
    /// with today's model. A payment blocked for its account's status stays blocked, and
    /// rules an appeal suppressed for it stay suppressed, as on the day. The flag is true
    /// when the snapshot lacks a feature of today's set (it reads as 0).
    pub fn decide(
        &self,
        stored: &Decision,
        sets: &[&RuleSet],
        scratch: &mut Scratch,
    ) -> Result<(Vec<Redecided>, bool), EngineError> {
        let request = stored.request.clone().unwrap_or_default();
        let payment = stored_payment(&request)?;
        let snapshot: HashMap<&str, f64> = stored
            .features
            .iter()
            .map(|f| (f.name.as_str(), f.value))
            .collect();
        let mut missing = false;
        scratch.values.clear();
        for name in &self.feature_names {
            scratch.values.push(match snapshot.get(name.as_str()) {
                Some(&v) => v,
                None => {
                    missing = true;
                    0.0
                }
            });
        }
        let probability = match &self.model {
            None => 0.0,
            Some((scorer, None)) => {
                scratch.contributions.resize(scratch.values.len(), 0.0);
                scorer.score(&scratch.values, &mut scratch.contributions)
            }
            Some((scorer, Some(slots))) => {
                scratch.model_input.clear();
                let values = &scratch.values;
                scratch
                    .model_input
                    .extend(slots.iter().map(|&s| values.get(s).copied().unwrap_or(0.0)));
                scratch.contributions.resize(slots.len(), 0.0);
                scorer.score(&scratch.model_input, &mut scratch.contributions)
            }
        };
        let response = stored.response.as_ref();
        let status_blocked = response.is_some_and(|r| {
            r.reasons
                .iter()
                .any(|x| x.source() == ReasonSource::AccountStatus)
        });
        let suppressed: Vec<&str> = stored
            .suppressed_reasons
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        let mut vars = Vec::with_capacity(self.schema.len());
        vars::fill(&payment, &scratch.values, &mut vars);
        let mut out = Vec::with_capacity(sets.len());
        for set in sets {
            scratch.hits.clear();
            set.evaluate(&vars, payment.event_time_ms, &mut scratch.hits);
            scratch
                .hits
                .retain(|h| !(h.counts() && suppressed.contains(&&*h.id)));
            let mut verdict = set.decide(&scratch.hits, probability * self.model_weight);
            if status_blocked {
                verdict.action = crate::rules::Action::Block;
            }
            out.push(Redecided {
                action: decision::action(verdict.action),
                risk_score: verdict.risk_score.clamp(0.0, 100.0).round() as u32,
                fired: scratch
                    .hits
                    .iter()
                    .filter(|h| h.fired())
                    .map(|h| (Arc::clone(&h.id), h.mode))
                    .collect(),
            });
        }
        Ok((out, missing))
    }
}

/// `dir` with `files` written over it, compiled as a reload compiles it; the bundled pack
/// when there is no directory.
pub fn compile_over(
    dir: Option<&std::path::Path>,
    files: &[(String, String)],
    schema: &Schema,
) -> Result<RuleSet, EngineError> {
    if files.is_empty() {
        return load_rules(dir, schema);
    }
    let (rules, dir) = match dir {
        Some(dir) => (RuleSet::load_dir_with(dir, files, schema), dir.to_owned()),
        None => {
            let mut all: Vec<(String, String)> = crate::bundled::RULE_FILES
                .iter()
                .filter(|(name, _)| !files.iter().any(|(n, _)| n == name))
                .map(|(name, text)| (name.to_string(), text.to_string()))
                .collect();
            all.extend(files.iter().cloned());
            (
                RuleSet::from_sources(&all, schema),
                PathBuf::from(crate::bundled::RULES_NAME),
            )
        }
    };
    rules.map_err(|errors| EngineError::Rules { dir, errors })
}
