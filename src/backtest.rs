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
    /// The baseline's own rule hits, to set beside the set's.
    pub baseline_rules: Vec<RuleStats>,
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

/// One rule set replayed over the events: its version, per-rule hits, totals and every
/// payment's action in event order.
struct Run {
    version: String,
    rules: Vec<RuleStats>,
    all: Totals,
    stopped: Totals,
    actions: Vec<Action>,
    payments_per_second: f64,
}

fn run(
    rules_dir: &Path,
    features_file: Option<&Path>,
    events: &[LabeledEvent],
    options: &ReplayOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Run, BacktestError> {
    let (_dir, mut engine) = scratch_engine(Some(rules_dir), features_file, None)?;
    let ruleset = engine.ruleset();
    let mut run = Run {
        version: ruleset.version().to_owned(),
        rules: ruleset
            .rules()
            .iter()
            .map(|r| RuleStats {
                id: r.id.to_string(),
                shadow: r.mode == Mode::Shadow,
                ..RuleStats::default()
            })
            .collect(),
        all: Totals::default(),
        stopped: Totals::default(),
        actions: Vec::with_capacity(events.len()),
        payments_per_second: 0.0,
    };
    let stats = replay(&mut engine, events, options, progress, |row| {
        run.all.add(row.event);
        let action = row.response.action();
        if stops(action) {
            run.stopped.add(row.event);
        }
        run.actions.push(action);
        for hit in row.hits.iter().filter(|h| h.fired()) {
            if let Some(stats) = run.rules.get_mut(hit.rule_index) {
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
    })?;
    run.payments_per_second = stats.per_second();
    Ok(run)
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
    let set = run(
        rules_dir,
        features_file,
        events,
        options,
        &mut |done, total| progress("rules", done, total),
    )?;
    let comparison = match baseline_dir {
        None => None,
        Some(dir) => {
            let baseline = run(dir, features_file, events, options, &mut |done, total| {
                progress("baseline", done, total)
            })?;
            let mut comparison = Comparison {
                baseline_version: baseline.version,
                baseline_rules: baseline.rules,
                ..Comparison::default()
            };
            for ((event, &now), &before) in events.iter().zip(&set.actions).zip(&baseline.actions) {
                if stops(now) && !stops(before) {
                    comparison.newly_stopped.add(event);
                }
                if now == Action::Allow && before != Action::Allow {
                    comparison.newly_allowed.add(event);
                }
            }
            Some(comparison)
        }
    };
    Ok(BacktestReport {
        version: set.version,
        all: set.all,
        stopped: set.stopped,
        rules: set.rules,
        comparison,
        payments_per_second: set.payments_per_second,
    })
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
        // The rule column is as wide as the longest id, so every row lines up.
        let baseline = self.comparison.as_ref().map(|c| &c.baseline_rules[..]);
        let w = self
            .rules
            .iter()
            .chain(baseline.unwrap_or_default())
            .map(|r| r.id.chars().count())
            .max()
            .unwrap_or(0)
            .max("rule".len());
        writeln!(
            f,
            "{:<w$} {:>6} {:>8} {:>9} {:>7} {:>16} {:>8}",
            "rule", "mode", "hits", "precision", "recall", "caught CNY", "FP rate"
        )?;
        let mut rules: Vec<&RuleStats> = self.rules.iter().collect();
        rules.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.id.cmp(&b.id)));
        for r in rules {
            writeln!(
                f,
                "{:<w$} {:>6} {:>8} {:>9} {:>7} {:>16} {:>8}",
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
            let changed = rule_changes(&self.rules, &c.baseline_rules);
            if changed.is_empty() {
                writeln!(f, "every rule has the same hits as in the baseline")?;
            } else {
                if c.newly_stopped.payments == 0 && c.newly_allowed.payments == 0 {
                    writeln!(
                        f,
                        "(the hits below changed only on payments both sets review or block)"
                    )?;
                }
                writeln!(f)?;
                writeln!(
                    f,
                    "{:<w$} {:>8} {:>8} {:>8} {:>12} {:>12}",
                    "rule", "hits", "baseline", "change", "fraud hits", "genuine hits"
                )?;
                for d in changed {
                    writeln!(
                        f,
                        "{:<w$} {:>8} {:>8} {:>+8} {:>+12} {:>+12}",
                        d.id, d.hits, d.baseline_hits, d.change, d.fraud_change, d.genuine_change
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// One rule whose hits differ from the baseline's (or that only one of the sets has).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleChange {
    pub id: String,
    pub hits: u64,
    pub baseline_hits: u64,
    pub change: i64,
    pub fraud_change: i64,
    pub genuine_change: i64,
}

/// The rules whose hits changed, largest change first; a rule missing from one set counts
/// as zero hits there.
pub fn rule_changes(now: &[RuleStats], baseline: &[RuleStats]) -> Vec<RuleChange> {
    let find = |set: &[RuleStats], id: &str| set.iter().find(|r| r.id == id).cloned();
    let mut ids: Vec<&str> = now.iter().chain(baseline).map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out: Vec<RuleChange> = ids
        .into_iter()
        .map(|id| {
            let a = find(now, id).unwrap_or_default();
            let b = find(baseline, id).unwrap_or_default();
            let delta = |x: u64, y: u64| x as i64 - y as i64;
            RuleChange {
                id: id.to_owned(),
                hits: a.hits,
                baseline_hits: b.hits,
                change: delta(a.hits, b.hits),
                fraud_change: delta(a.fraud_hits, b.fraud_hits),
                genuine_change: delta(a.genuine_hits, b.genuine_hits),
            }
        })
        .filter(|d| d.change != 0 || d.fraud_change != 0 || d.genuine_change != 0)
        .collect();
    out.sort_by(|a, b| b.change.abs().cmp(&a.change.abs()).then(a.id.cmp(&b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(id: &str, hits: u64, fraud_hits: u64) -> RuleStats {
        RuleStats {
            id: id.into(),
            hits,
            fraud_hits,
            ..RuleStats::default()
        }
    }

    #[test]
    fn rule_changes_list_every_rule_whose_hits_moved_largest_first() {
        let now = [
            stats("rent_code_many_payers", 24, 24),
            stats("same", 5, 1),
            stats("new_rule", 2, 0),
        ];
        let baseline = [
            stats("rent_code_many_payers", 3, 3),
            stats("same", 5, 1),
            stats("gone", 7, 7),
        ];
        let ids: Vec<(String, i64)> = rule_changes(&now, &baseline)
            .into_iter()
            .map(|d| (d.id, d.change))
            .collect();
        assert_eq!(
            ids,
            [
                ("rent_code_many_payers".to_string(), 21),
                ("gone".to_string(), -7),
                ("new_rule".to_string(), 2)
            ]
        );
    }

    #[test]
    fn the_table_lines_up_for_long_rule_ids() {
        let report = BacktestReport {
            rules: vec![
                stats("a_rather_long_rule_id_of_fifty_characters_or_so_x", 1, 1),
                stats("b", 2, 0),
            ],
            ..BacktestReport::default()
        };
        let text = report.to_string();
        let widths: Vec<usize> = text
            .lines()
            .filter(|l| l.contains("active") || l.starts_with("rule "))
            .map(|l| l.chars().count())
            .collect();
        assert_eq!(widths.len(), 3, "{text}");
        assert!(widths.iter().all(|&w| w == widths[0]), "{text}");
    }
}
