//! `RuleAdmin.Backtest`: candidate rules tried on the traffic we stored. Every decision of
//! the period is decided again from its stored request and feature snapshot, with today's
//! model, under the candidate set and under the live set (`engine::Redecider`), newest
//! first, until the period or the time budget ends. Reads only; the CSV backtest of
//! labeled files is `crate::backtest`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::engine::{EngineError, Redecided, Redecider, Scratch};
use crate::proto::{self, Action};
use crate::rule_stats::{label, latest_outcome, Period};
use crate::rules::{Mode, RuleSet};
use crate::search;
use crate::store::{decision_id, DecisionStore};

/// Most decisions one backtest decides again.
pub const MAX_DECISIONS: usize = 1_000_000;
/// Payments shown of each change.
pub const SAMPLE: usize = 20;

/// Where a backtest stops: the end of its time budget, and a number of decisions.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub until: Instant,
    pub max_decisions: usize,
}

fn stops(action: Action) -> bool {
    matches!(action, Action::Review | Action::Block)
}

#[derive(Default)]
struct Tally {
    hits: u64,
    fraud: u64,
    genuine: u64,
    amount_caught_fen: i64,
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Active => "active",
        Mode::Shadow => "shadow",
    }
}

/// `candidate` against the live set over the stored decisions of `period`.
pub fn backtest(
    store: &DecisionStore,
    redecider: &Redecider,
    candidate: &RuleSet,
    period: Period,
    bounds: Bounds,
) -> Result<proto::BacktestResponse, EngineError> {
    let live = std::sync::Arc::clone(&redecider.live);
    let mut out = proto::BacktestResponse {
        candidate_version: candidate.version().to_owned(),
        live_version: live.version().to_owned(),
        model_version: redecider.model_version.clone(),
        from_ms: period.from_ms,
        to_ms: period.to_ms,
        newly_stopped: Some(proto::BacktestChange::default()),
        newly_allowed: Some(proto::BacktestChange::default()),
        ..Default::default()
    };
    let mut tallies: BTreeMap<String, (Mode, Tally)> = candidate
        .rules()
        .iter()
        .map(|r| (r.id.to_string(), (r.mode, Tally::default())))
        .collect();
    let mut live_hits: HashMap<String, u64> = HashMap::new();
    let mut changes = [
        proto::BacktestChange::default(),
        proto::BacktestChange::default(),
    ];
    let mut scratch = Scratch::default();
    let sets = [candidate, &*live];
    for entry in search::in_period(store.tree(), period.from_ms, period.to_ms).rev() {
        let entry = entry?;
        if out.decisions as usize >= bounds.max_decisions {
            out.truncated = true;
            out.truncated_reason = format!(
                "decided the most one backtest decides ({})",
                bounds.max_decisions
            );
            break;
        }
        // The clock is read only every 64 decisions: about a millisecond of work.
        if out.decisions.is_multiple_of(64) && Instant::now() >= bounds.until {
            out.truncated = true;
            out.truncated_reason = "the time budget ran out; the newest decisions of the \
                                    period were decided again, the older ones not"
                .into();
            break;
        }
        let id = decision_id(entry.position.seq);
        let Some(stored) = store.by_decision_id(&id)? else {
            continue;
        };
        let (decided, missing) = redecider.decide(&stored, &sets, &mut scratch)?;
        let [now, was]: [Redecided; 2] = match decided.try_into() {
            Ok(pair) => pair,
            Err(_) => continue,
        };
        out.decisions += 1;
        out.missing_features += u64::from(missing);
        let labeled = label(&stored);
        match labeled {
            Some(true) => out.frauds += 1,
            Some(false) => out.genuine += 1,
            None => {}
        }
        let amount = stored.request.as_ref().map_or(0, |r| r.amount_fen);
        for (rule, mode) in &now.fired {
            let (_, t) = tallies
                .entry(rule.to_string())
                .or_insert_with(|| (*mode, Tally::default()));
            t.hits += 1;
            match labeled {
                Some(true) => {
                    t.fraud += 1;
                    t.amount_caught_fen += amount;
                }
                Some(false) => t.genuine += 1,
                None => {}
            }
        }
        for (rule, _) in &was.fired {
            *live_hits.entry(rule.to_string()).or_default() += 1;
        }
        out.candidate_stopped += u64::from(stops(now.action));
        out.live_stopped += u64::from(stops(was.action));
        let change = if stops(now.action) && !stops(was.action) {
            Some(&mut changes[0])
        } else if now.action == Action::Allow && was.action != Action::Allow {
            Some(&mut changes[1])
        } else {
            None
        };
        if let Some(change) = change {
            change.payments += 1;
            change.amount_fen += amount;
            match labeled {
                Some(true) => change.frauds += 1,
                Some(false) => change.genuine += 1,
                None => {}
            }
            if change.sample.len() < SAMPLE {
                let request = stored.request.clone().unwrap_or_default();
                change.sample.push(proto::BacktestPayment {
                    decision_id: id,
                    payment_id: request.payment_id,
                    event_time_ms: request.event_time_ms,
                    amount_fen: amount,
                    live_action: was.action as i32,
                    candidate_action: now.action as i32,
                    live_risk_score: was.risk_score,
                    candidate_risk_score: now.risk_score,
                    rule_ids: now
                        .fired
                        .iter()
                        .filter(|(_, m)| *m == Mode::Active)
                        .map(|(r, _)| r.to_string())
                        .collect(),
                    outcome: latest_outcome(&stored) as i32,
                });
            }
        }
    }
    let [stopped, allowed] = changes;
    out.newly_stopped = Some(stopped);
    out.newly_allowed = Some(allowed);
    let ratio = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let mut rules: Vec<proto::BacktestRule> = tallies
        .into_iter()
        .map(|(id, (mode, t))| proto::BacktestRule {
            mode: mode_name(mode).to_owned(),
            hits: t.hits,
            live_hits: live_hits.get(&id).copied().unwrap_or(0),
            fraud_hits: t.fraud,
            genuine_hits: t.genuine,
            precision: ratio(t.fraud, t.fraud + t.genuine),
            recall: ratio(t.fraud, out.frauds),
            amount_caught_fen: t.amount_caught_fen,
            false_positive_rate: ratio(t.genuine, out.genuine),
            rule_id: id,
        })
        .collect();
    rules.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.rule_id.cmp(&b.rule_id)));
    out.rules = rules;
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot read the candidate rules `{path}`: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` holds no `*.toml` rule file")]
    Empty(std::path::PathBuf),
    #[error("cannot reach the server `{addr}`: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("the key is not a valid header value")]
    Key,
    #[error("{}: {}", crate::grpc::code_name(.0.code()), .0.message())]
    Call(tonic::Status),
}

/// The rule files of `dir` as a backtest sends them: every `*.toml` directly in it and
/// every file under `lists/`, named as in the directory.
pub fn read_candidates(dir: &std::path::Path) -> Result<Vec<(String, String)>, RemoteError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|source| RemoteError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let entries = |path: &std::path::Path| {
        std::fs::read_dir(path).map_err(|source| RemoteError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let mut files = Vec::new();
    for entry in entries(dir)? {
        let path = entry
            .map_err(|source| RemoteError::Read {
                path: dir.to_owned(),
                source,
            })?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_file() && name.ends_with(".toml") && !name.starts_with('.') {
            files.push((name.to_owned(), read(&path)?));
        }
    }
    if files.is_empty() {
        return Err(RemoteError::Empty(dir.to_owned()));
    }
    let lists = dir.join("lists");
    if lists.is_dir() {
        for entry in entries(&lists)? {
            let path = entry
                .map_err(|source| RemoteError::Read {
                    path: lists.clone(),
                    source,
                })?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_file() && !name.starts_with('.') {
                files.push((format!("lists/{name}"), read(&path)?));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `RuleAdmin.Backtest` on the server at `addr` (`host:port` or a URL).
pub async fn remote(
    addr: &str,
    key: Option<&str>,
    request: proto::BacktestRequest,
) -> Result<proto::BacktestResponse, RemoteError> {
    let url = match addr.contains("://") {
        true => addr.to_owned(),
        false => format!("http://{addr}"),
    };
    let connect = |source| RemoteError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let channel = tonic::transport::Endpoint::from_shared(url)
        .map_err(connect)?
        .connect()
        .await
        .map_err(connect)?;
    let mut request = tonic::Request::new(request);
    if let Some(key) = key {
        let value = format!("Bearer {key}")
            .parse()
            .map_err(|_| RemoteError::Key)?;
        request.metadata_mut().insert("authorization", value);
    }
    proto::rule_admin_client::RuleAdminClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .backtest(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(RemoteError::Call)
}

/// A backtest's answer for a terminal.
pub fn format_report(r: &proto::BacktestResponse) -> String {
    use crate::payment::format_yuan;
    use std::fmt::Write;
    let mut out = String::new();
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let _ = writeln!(
        out,
        "candidate {} vs live {} (model {}), {} stored decisions from {} to {}{}",
        r.candidate_version,
        r.live_version,
        r.model_version,
        r.decisions,
        crate::engine::format_time(r.from_ms),
        crate::engine::format_time(r.to_ms),
        if r.truncated {
            format!(" (TRUNCATED: {})", r.truncated_reason)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "labeled: {} fraud, {} genuine; stopped: candidate {}, live {}",
        r.frauds, r.genuine, r.candidate_stopped, r.live_stopped
    );
    let _ = writeln!(
        out,
        "{:<40} {:>7} {:>7} {:>6} {:>6} {:>9} {:>7} {:>14} {:>7}",
        "rule", "mode", "hits", "live", "fraud", "precision", "recall", "caught (CNY)", "FPR"
    );
    for rule in r.rules.iter().filter(|x| x.hits > 0 || x.live_hits > 0) {
        let _ = writeln!(
            out,
            "{:<40} {:>7} {:>7} {:>6} {:>6} {:>9} {:>7} {:>14} {:>7}",
            rule.rule_id,
            rule.mode,
            rule.hits,
            rule.live_hits,
            rule.fraud_hits,
            pct(rule.precision),
            pct(rule.recall),
            format_yuan(rule.amount_caught_fen),
            pct(rule.false_positive_rate)
        );
    }
    for (what, change) in [
        ("newly stopped", &r.newly_stopped),
        ("newly allowed", &r.newly_allowed),
    ] {
        let c = change.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "{what}: {} payments, {} CNY, {} fraud, {} genuine",
            c.payments,
            format_yuan(c.amount_fen),
            c.frauds,
            c.genuine
        );
        for p in &c.sample {
            let _ = writeln!(
                out,
                "  {} {} {} CNY: live {} ({}) -> candidate {} ({}) {}",
                p.payment_id,
                crate::engine::format_time(p.event_time_ms),
                format_yuan(p.amount_fen),
                p.live_action().as_str_name(),
                p.live_risk_score,
                p.candidate_action().as_str_name(),
                p.candidate_risk_score,
                p.rule_ids.join(",")
            );
        }
    }
    if r.missing_features > 0 {
        let _ = writeln!(
            out,
            "{} decisions were stored without a feature today's set has (read as 0)",
            r.missing_features
        );
    }
    out
}
