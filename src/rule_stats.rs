//! `RuleAdmin.RuleStats`: what every rule did over a period, read from the search indexes.
//!
//! The `T/` index gives the period's traffic by hour, action and risk score, the `j/` index
//! each rule's hits by hour and action, both without reading a record. Records are read
//! only where the index cannot answer: a rule's hits, for their amounts and outcomes, and
//! the payments reported fraud, found through the log's outcome entries after the period's
//! first decision (the log holds a payment's first bad outcome, not GENUINE ones), so the
//! frauds a rule missed cost one read per fraud, not one per decision. Every walk is
//! bounded; the answer says when a bound cut it short.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::proto::{self, Action, Decision, OutcomeKind};
use crate::rules::{Mode, RuleSet};
use crate::search;
use crate::store::{DecisionStore, LogEntry, StoreError};

pub const HOUR_MS: i64 = 3_600_000;
/// The longest period one call covers: 31 days of hourly buckets.
pub const MAX_HOURS: i64 = 31 * 24;
/// Index entries (and log entries) one call reads at most.
pub const MAX_INDEX_ENTRIES: usize = 2_000_000;
/// Records one call reads at most (amounts of hits, labeled payments).
pub const MAX_RECORDS: usize = 100_000;
/// Rule ids taken from the `j/` index at most (beyond the set's own).
pub const MAX_RULES: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("{0}")]
    Period(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A period of event time, `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Period {
    /// The period a request names: `to_ms` 0 is just after the newest stored decision (the
    /// store's own time, not the server clock), `from_ms` 0 is 24 hours before `to_ms`.
    pub fn resolve(tree: &sled::Tree, from_ms: i64, to_ms: i64) -> Result<Period, StatsError> {
        let to_ms = match (to_ms, search::newest_time(tree)?) {
            (0, Some(newest)) => newest.saturating_add(1),
            // An empty store: a day from `from_ms`, or the day before the epoch's start.
            (0, None) => from_ms.saturating_add(24 * HOUR_MS) * i64::from(from_ms != 0),
            (t, _) => t,
        };
        let from_ms = match from_ms {
            0 => to_ms.saturating_sub(24 * HOUR_MS),
            f => f,
        };
        if from_ms >= to_ms {
            return Err(StatsError::Period(format!(
                "from_ms: must be before to_ms ({from_ms} >= {to_ms})"
            )));
        }
        if to_ms.saturating_sub(from_ms) > MAX_HOURS * HOUR_MS {
            return Err(StatsError::Period(format!(
                "the period is longer than {} days",
                MAX_HOURS / 24
            )));
        }
        Ok(Period { from_ms, to_ms })
    }

    pub fn hours(&self) -> usize {
        let span = self.to_ms.saturating_sub(self.from_ms).max(0);
        (span.saturating_add(HOUR_MS - 1) / HOUR_MS) as usize
    }

    pub fn hour_of(&self, time_ms: i64) -> usize {
        (time_ms.saturating_sub(self.from_ms).max(0) / HOUR_MS) as usize
    }

    pub fn contains(&self, time_ms: i64) -> bool {
        (self.from_ms..self.to_ms).contains(&time_ms)
    }
}

/// The label of a decision from its latest reported outcome: `Some(true)` for FRAUD,
/// CHARGEBACK or COMPLAINT, `Some(false)` for GENUINE, `None` without one.
pub fn label(decision: &Decision) -> Option<bool> {
    let latest = decision.outcomes.iter().max_by_key(|o| o.reported_at_ms)?;
    match OutcomeKind::try_from(latest.outcome).ok()? {
        OutcomeKind::Genuine => Some(false),
        OutcomeKind::Fraud | OutcomeKind::Chargeback | OutcomeKind::Complaint => Some(true),
        OutcomeKind::Unspecified => None,
    }
}

/// The latest reported outcome of a decision, unspecified without one.
pub fn latest_outcome(decision: &Decision) -> OutcomeKind {
    decision
        .outcomes
        .iter()
        .max_by_key(|o| o.reported_at_ms)
        .and_then(|o| OutcomeKind::try_from(o.outcome).ok())
        .unwrap_or(OutcomeKind::Unspecified)
}

/// What one call may still read; the first bound reached is the answer's `truncated_reason`.
struct Budget {
    entries: usize,
    records: usize,
    reason: Option<String>,
}

impl Budget {
    fn entry(&mut self) -> bool {
        if self.entries == 0 {
            self.reason.get_or_insert_with(|| {
                format!("read the most index and log entries one call reads ({MAX_INDEX_ENTRIES})")
            });
            return false;
        }
        self.entries -= 1;
        true
    }

    fn record(&mut self) -> bool {
        if self.records == 0 {
            self.reason.get_or_insert_with(|| {
                format!("read the most records one call reads ({MAX_RECORDS})")
            });
            return false;
        }
        self.records -= 1;
        true
    }
}

#[derive(Default)]
struct Tally {
    hits: u64,
    actions: BTreeMap<u8, u64>,
    amount_fen: i64,
    amount_hits: u64,
    frauds: u64,
    genuine: u64,
    hourly: Vec<u64>,
}

fn mode_name(rules: &RuleSet, id: &str) -> &'static str {
    match rules.rules().iter().find(|r| &*r.id == id) {
        Some(r) if r.mode == Mode::Shadow => "shadow",
        Some(_) => "active",
        None if rules.lists().iter().any(|l| l.name == id) => "list",
        None => "retired",
    }
}

/// The stats of every rule of `rules` (and of every other id in the `j/` index) over
/// `period`.
pub fn rule_stats(
    store: &DecisionStore,
    rules: &RuleSet,
    period: Period,
) -> Result<proto::RuleStatsResponse, StatsError> {
    let tree = store.tree();
    let hours = period.hours();
    let mut budget = Budget {
        entries: MAX_INDEX_ENTRIES,
        records: MAX_RECORDS,
        reason: None,
    };
    let mut response = proto::RuleStatsResponse {
        from_ms: period.from_ms,
        to_ms: period.to_ms,
        ruleset_version: rules.version().to_owned(),
        hours: (0..hours)
            .map(|h| proto::TrafficHour {
                hour_start_ms: period.from_ms + h as i64 * HOUR_MS,
                ..Default::default()
            })
            .collect(),
        risk_score_histogram: vec![0; 10],
        ..Default::default()
    };

    // The period's traffic, from the `T/` index alone.
    let mut first_seq: Option<u64> = None;
    for entry in search::in_period(tree, period.from_ms, period.to_ms) {
        if !budget.entry() {
            break;
        }
        let entry = entry?;
        response.decisions += 1;
        first_seq = Some(first_seq.map_or(entry.position.seq, |s| s.min(entry.position.seq)));
        let bucket = usize::from(entry.risk_score / 10).min(9);
        response.risk_score_histogram[bucket] += 1;
        if let Some(hour) = response
            .hours
            .get_mut(period.hour_of(entry.position.time_ms))
        {
            hour.decisions += 1;
            match Action::try_from(i32::from(entry.action)) {
                Ok(Action::Challenge) => hour.challenged += 1,
                Ok(Action::Review) => hour.reviewed += 1,
                Ok(Action::Block) => hour.blocked += 1,
                _ => {}
            }
        }
    }

    // Labels: the payments with outcomes logged after the period's first decision.
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    fn tally<'a>(
        tallies: &'a mut BTreeMap<String, Tally>,
        id: &str,
        hours: usize,
    ) -> &'a mut Tally {
        tallies.entry(id.to_owned()).or_insert_with(|| Tally {
            hourly: vec![0; hours],
            ..Tally::default()
        })
    }
    if let Some(first) = first_seq {
        let mut labeled: HashSet<String> = HashSet::new();
        for item in store.log_after(first.checked_sub(1)) {
            if !budget.entry() {
                break;
            }
            if let (_, LogEntry::Outcome { payment_id, .. }) = item? {
                labeled.insert(payment_id);
            }
        }
        let mut labeled: Vec<String> = labeled.into_iter().collect();
        labeled.sort_unstable();
        for payment_id in labeled {
            if !budget.record() {
                break;
            }
            let Some(decision) = store.by_payment(&payment_id)? else {
                continue;
            };
            let at = decision
                .request
                .as_ref()
                .map_or(i64::MIN, |r| r.event_time_ms);
            if period.contains(at) && label(&decision) == Some(true) {
                response.frauds += 1;
            }
        }
    }

    // Each rule's hits, from the `j/` index; amounts from the records.
    let mut ids: Vec<String> = rules.rules().iter().map(|r| r.id.to_string()).collect();
    for id in search::indexed_rules(tree, MAX_RULES)? {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    // A decision several rules fired on is read once (records are read without their
    // feature names: only the amount and the outcomes are wanted).
    let mut read_hits: HashMap<u64, (i64, Option<bool>)> = HashMap::new();
    for id in &ids {
        let t = tally(&mut tallies, id, hours);
        for entry in search::rule_hits(tree, id, period.from_ms, period.to_ms) {
            if !budget.entry() {
                break;
            }
            let entry = entry?;
            t.hits += 1;
            *t.actions.entry(entry.action).or_default() += 1;
            if let Some(h) = t.hourly.get_mut(period.hour_of(entry.position.time_ms)) {
                *h += 1;
            }
            let seq = entry.position.seq;
            let read = match read_hits.get(&seq) {
                Some(&read) => Some(read),
                None if budget.record() => {
                    let read = store
                        .record_at(seq)?
                        .map(|d| (d.request.as_ref().map_or(0, |r| r.amount_fen), label(&d)));
                    if let Some(read) = read {
                        read_hits.insert(seq, read);
                    }
                    read
                }
                None => None,
            };
            if let Some((amount_fen, labeled)) = read {
                t.amount_fen += amount_fen;
                t.amount_hits += 1;
                match labeled {
                    Some(true) => t.frauds += 1,
                    Some(false) => t.genuine += 1,
                    None => {}
                }
            }
        }
    }

    let decisions = response.decisions.max(1) as f64;
    let frauds = response.frauds;
    let mut out: Vec<proto::RuleStat> = tallies
        .into_iter()
        .filter(|(id, t)| t.hits > 0 || ids.contains(id))
        .map(|(id, t)| proto::RuleStat {
            mode: mode_name(rules, &id).to_owned(),
            share: t.hits as f64 / decisions,
            actions: t
                .actions
                .iter()
                .map(|(&action, &count)| proto::ActionCount {
                    action: i32::from(action),
                    count,
                })
                .collect(),
            precision: match t.frauds + t.genuine {
                0 => 0.0,
                labeled => t.frauds as f64 / labeled as f64,
            },
            frauds_missed: frauds.saturating_sub(t.frauds),
            frauds_caught: t.frauds,
            genuine_hits: t.genuine,
            hits: t.hits,
            amount_fen: t.amount_fen,
            amount_hits: t.amount_hits,
            hourly_hits: t.hourly,
            rule_id: id,
        })
        .collect();
    out.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.rule_id.cmp(&b.rule_id)));
    response.rules = out;
    if let Some(reason) = budget.reason {
        response.truncated = true;
        response.truncated_reason = reason;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_defaults_from_the_newest_decision_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("t").unwrap();
        assert_eq!(
            Period::resolve(&tree, 0, 0).unwrap(),
            Period {
                from_ms: -24 * HOUR_MS,
                to_ms: 0
            }
        );
        assert_eq!(
            Period::resolve(&tree, 7, 0).unwrap().to_ms,
            7 + 24 * HOUR_MS
        );
        let p = Period::resolve(&tree, 0, 100 * HOUR_MS).unwrap();
        assert_eq!(p.from_ms, 76 * HOUR_MS);
        assert_eq!(p.hours(), 24);
        assert_eq!(p.hour_of(77 * HOUR_MS + 5), 1);
        assert!(Period::resolve(&tree, 5, 5).is_err());
        assert!(Period::resolve(&tree, 0, 32 * 24 * HOUR_MS + 1)
            .map(|p| p.from_ms)
            .is_ok());
        assert!(Period::resolve(&tree, 1, 32 * 24 * HOUR_MS).is_err());
        assert_eq!(
            Period {
                from_ms: 0,
                to_ms: HOUR_MS + 1
            }
            .hours(),
            2
        );
    }

    #[test]
    fn the_latest_outcome_is_the_label() {
        let outcome = |kind: OutcomeKind, at| proto::Outcome {
            outcome: kind as i32,
            reported_at_ms: at,
            ..Default::default()
        };
        let mut d = Decision::default();
        assert_eq!(label(&d), None);
        d.outcomes = vec![outcome(OutcomeKind::Chargeback, 5)];
        assert_eq!(label(&d), Some(true));
        d.outcomes.push(outcome(OutcomeKind::Genuine, 9));
        assert_eq!(label(&d), Some(false));
        assert_eq!(latest_outcome(&d), OutcomeKind::Genuine);
    }
}
