//! Backtest: what a rule set would have caught and cost on labeled history, rule by rule,
//! and what changes against a baseline set, through the same replay as `fengkong replay`.

use std::fmt;
use std::path::Path;

use crate::engine::EngineError;
use crate::events::LabeledEvent;
use crate::payment::format_yuan;
use crate::proto::Action;
use crate::replay::{replay, scratch_engine, ReplayError, ReplayOptions};
use crate::rules::Mode;

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// Hits of one rule over the whole replay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleStats {
    pub id: String,
    pub shadow: bool,
    pub hits: u64,
    pub fraud_hits: u64,
    pub genuine_hits: u64,
    pub caught_fen: i64,
}

impl RuleStats {
    /// Share of labeled hits that were fraud; None without labeled hits.
    pub fn precision(&self) -> Option<f64> {
        let labeled = self.fraud_hits + self.genuine_hits;
        (labeled > 0).then(|| self.fraud_hits as f64 / labeled as f64)
    }
}

/// A group of payments and what is in it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub payments: u64,
    pub fraud: u64,
    pub genuine: u64,
    pub amount_fen: i64,
    pub fraud_amount_fen: i64,
}

impl Totals {
    fn add(&mut self, event: &LabeledEvent) {
        self.payments += 1;
        self.amount_fen += event.payment.amount_fen;
        match event.label {
            Some(true) => {
                self.fraud += 1;
                self.fraud_amount_fen += event.payment.amount_fen;
            }
            Some(false) => self.genuine += 1,
            None => {}
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    pub baseline_version: String,
    /// Reviewed or blocked now, allowed or challenged by the baseline.
    pub newly_stopped: Totals,
    /// Allowed now, not by the baseline.
    pub newly_allowed: Totals,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BacktestReport {
    pub version: String,
    pub all: Totals,
    /// Payments the set reviewed or blocked.
    pub stopped: Totals,
    pub rules: Vec<RuleStats>,
    pub comparison: Option<Comparison>,
    pub payments_per_second: f64,
}

fn stops(action: Action) -> bool {
    matches!(action, Action::Review | Action::Block)
}

/// Replays `events` through `rules_dir` (and `baseline_dir`, if given) on fresh stores.
pub fn backtest(
    events: &[LabeledEvent],
    rules_dir: &Path,
    baseline_dir: Option<&Path>,
    features_file: Option<&Path>,
    options: &ReplayOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<BacktestReport, BacktestError> {
    let (_dir, mut engine) = scratch_engine(rules_dir, features_file, None)?;
    let ruleset = engine.ruleset();
    let mut rules: Vec<RuleStats> = ruleset
        .rules()
        .iter()
        .map(|r| RuleStats {
            id: r.id.to_string(),
            shadow: r.mode == Mode::Shadow,
            ..RuleStats::default()
        })
        .collect();
    let mut report = BacktestReport {
        version: ruleset.version().to_owned(),
        ..BacktestReport::default()
    };
    let mut actions = Vec::with_capacity(events.len());
    let stats = replay(
        &mut engine,
        events,
        options,
        &mut |done, total| progress("rules", done, total),
        |row| {
            report.all.add(row.event);
            let action = row.response.action();
            if stops(action) {
                report.stopped.add(row.event);
            }
            actions.push(action);
            for hit in row.hits.iter().filter(|h| h.fired()) {
                if let Some(stats) = rules.get_mut(hit.rule_index) {
                    stats.hits += 1;
                    match row.event.label {
                        Some(true) => {
                            stats.fraud_hits += 1;
                            stats.caught_fen += row.event.payment.amount_fen;
                        }
                        Some(false) => stats.genuine_hits += 1,
                        None => {}
                    }
                }
            }
            Ok(())
        },
    )?;
    report.payments_per_second = stats.per_second();
    report.rules = rules;

    if let Some(baseline_dir) = baseline_dir {
        let (_dir, mut baseline) = scratch_engine(baseline_dir, features_file, None)?;
        let mut comparison = Comparison {
            baseline_version: baseline.ruleset().version().to_owned(),
            ..Comparison::default()
        };
        let mut i = 0;
        replay(
            &mut baseline,
            events,
            options,
            &mut |done, total| progress("baseline", done, total),
            |row| {
                let now = actions.get(i).copied().unwrap_or(Action::Allow);
                let before = row.response.action();
                if stops(now) && !stops(before) {
                    comparison.newly_stopped.add(row.event);
                }
                if now == Action::Allow && before != Action::Allow {
                    comparison.newly_allowed.add(row.event);
                }
                i += 1;
                Ok(())
            },
        )?;
        report.comparison = Some(comparison);
    }
    Ok(report)
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn totals_line(name: &str, t: &Totals) -> String {
    format!(
        "{name}: {} payments ({} fraud, {} genuine), {} CNY of which {} CNY fraud",
        t.payments,
        t.fraud,
        t.genuine,
        format_yuan(t.amount_fen),
        format_yuan(t.fraud_amount_fen)
    )
}

impl fmt::Display for BacktestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ruleset {}", self.version)?;
        writeln!(f, "{}", totals_line("replayed", &self.all))?;
        writeln!(
            f,
            "{}  (recall {}, false-positive rate {})",
            totals_line("reviewed or blocked", &self.stopped),
            pct(ratio(self.stopped.fraud, self.all.fraud)),
            pct(ratio(self.stopped.genuine, self.all.genuine)),
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<34} {:>6} {:>8} {:>9} {:>7} {:>16} {:>8}",
            "rule", "mode", "hits", "precision", "recall", "caught CNY", "FP rate"
        )?;
        let mut rules: Vec<&RuleStats> = self.rules.iter().collect();
        rules.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.id.cmp(&b.id)));
        for r in rules {
            writeln!(
                f,
                "{:<34} {:>6} {:>8} {:>9} {:>7} {:>16} {:>8}",
                r.id,
                if r.shadow { "shadow" } else { "active" },
                r.hits,
                pct(r.precision()),
                pct(ratio(r.fraud_hits, self.all.fraud)),
                format_yuan(r.caught_fen),
                pct(ratio(r.genuine_hits, self.all.genuine)),
            )?;
        }
        if let Some(c) = &self.comparison {
            writeln!(f)?;
            writeln!(f, "against baseline {}", c.baseline_version)?;
            writeln!(
                f,
                "{}",
                totals_line("newly reviewed or blocked", &c.newly_stopped)
            )?;
            writeln!(f, "{}", totals_line("newly allowed", &c.newly_allowed))?;
        }
        Ok(())
    }
}
