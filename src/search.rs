//! Decision search: the secondary indexes of the decision store and the paging over them
//! (`RiskEngine.ListDecisions`, and the latest flagged decisions an explanation shows).
//!
//! Three indexes, in the decisions tree, each ordered by event time then log position, so a
//! page is one range scan backwards from a position, never a scan of the records:
//! - `i/<account, length-prefixed><time><seq>` for the payer and the payee of every
//!   decision (the `n/` index of non-ALLOW decisions before it; `DecisionStore::open` moves
//!   a store from that one to these once);
//! - `j/<rule id, length-prefixed><time><seq>` for every rule that fired, active or shadow;
//! - `T/<time><seq>` for every decision.
//!
//! `<time>` is the event time with its sign bit flipped, big-endian, so keys sort by time;
//! `<seq>` is the decision's log position (big-endian). Every value is three bytes: the
//! action, the risk score and which side the account was on (1 payer, 2 payee, 3 both; 0 in
//! the other indexes), so action, score and side filters never read a record. The entries are
//! written with the record (by `DecisionStore`) and restored from the journal with it.

use crate::proto::{Action, Decision, ReasonSource};
use crate::store::StoreError;

const ACCOUNT: &[u8] = b"i/";
const RULE: &[u8] = b"j/";
const TIME: &[u8] = b"T/";

pub const SIDE_PAYER: u8 = 1;
pub const SIDE_PAYEE: u8 = 2;

/// Most index entries one query looks at: past it the page ends early with a token at the
/// position reached, so a filter that rarely matches costs a client more calls, never one
/// unbounded one.
pub const MAX_EXAMINED: usize = 20_000;
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

fn named(prefix: &[u8], name: &str) -> Vec<u8> {
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    [prefix, &len.to_be_bytes()[..], name.as_bytes()].concat()
}

fn time_bytes(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_of(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

fn entry_key(mut prefix: Vec<u8>, time_ms: i64, seq: u64) -> Vec<u8> {
    prefix.extend_from_slice(&time_bytes(time_ms));
    prefix.extend_from_slice(&seq.to_be_bytes());
    prefix
}

/// Every index entry of `decision`, whose log position is `seq`.
pub fn entries(decision: &Decision, seq: u64) -> Vec<(Vec<u8>, [u8; 3])> {
    let (Some(response), Some(request)) = (&decision.response, &decision.request) else {
        return Vec::new();
    };
    let t = request.event_time_ms;
    let score = response.risk_score.min(255) as u8;
    let action = u8::try_from(response.action).unwrap_or(0);
    let payer = request.payer.as_ref().map(|p| p.account_id.as_str());
    let payee = request.payee.as_ref().map(|p| p.account_id.as_str());
    let mut out = Vec::with_capacity(5);
    let mut sides: Vec<(&str, u8)> = Vec::with_capacity(2);
    for (account, side) in [(payer, SIDE_PAYER), (payee, SIDE_PAYEE)] {
        let Some(account) = account.filter(|a| !a.is_empty()) else {
            continue;
        };
        match sides.iter_mut().find(|(a, _)| *a == account) {
            Some((_, s)) => *s |= side,
            None => sides.push((account, side)),
        }
    }
    for (account, side) in sides {
        out.push((
            entry_key(named(ACCOUNT, account), t, seq),
            [action, score, side],
        ));
    }
    let mut rules: Vec<&str> = fired_rules(decision).collect();
    rules.sort_unstable();
    rules.dedup();
    for rule in rules {
        out.push((entry_key(named(RULE, rule), t, seq), [action, score, 0]));
    }
    out.push((entry_key(TIME.to_vec(), t, seq), [action, score, 0]));
    out
}

/// Ids of the rules (and lists) that fired for `decision`, active or shadow.
pub fn fired_rules(decision: &Decision) -> impl Iterator<Item = &str> {
    let active = decision.response.iter().flat_map(|r| &r.reasons);
    active
        .chain(&decision.shadow_reasons)
        .filter(|r| matches!(r.source(), ReasonSource::Rule | ReasonSource::List))
        .map(|r| r.id.as_str())
}

/// Where a page ends: the event time and log position of the last entry looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub time_ms: i64,
    pub seq: u64,
}

impl Position {
    pub fn token(&self) -> String {
        format!("{}.{}", self.time_ms, self.seq)
    }

    pub fn parse(token: &str) -> Option<Position> {
        let (time, seq) = token.split_once('.')?;
        Some(Position {
            time_ms: time.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// What to look for; `ListDecisionsRequest` checked.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub account: Option<String>,
    /// Only decisions on which the account was the payee (merchants' own view).
    pub payee_only: bool,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub action: Option<Action>,
    pub rule_id: Option<String>,
    pub min_risk_score: u32,
    pub page_size: usize,
    /// Continue with decisions older than this.
    pub before: Option<Position>,
}

/// The log positions of one page, newest first, and where to go on from.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub seqs: Vec<u64>,
    pub next: Option<Position>,
}

/// Walks the narrowest index the query names backwards from its position. `accept` is asked
/// about entries that pass the index's own filters and decides what needs the record (the
/// rule, when the account index is walked).
pub fn find(
    tree: &sled::Tree,
    query: &Query,
    mut accept: impl FnMut(u64) -> Result<bool, StoreError>,
) -> Result<Found, StoreError> {
    let (prefix, rule_in_record) = match (&query.account, &query.rule_id) {
        (Some(account), rule) => (named(ACCOUNT, account), rule.is_some()),
        (None, Some(rule)) => (named(RULE, rule), false),
        (None, None) => (TIME.to_vec(), false),
    };
    let low = entry_key(prefix.clone(), query.from_ms.unwrap_or(i64::MIN), 0);
    let mut high = match query.to_ms {
        Some(to) => entry_key(prefix.clone(), to, 0),
        None => [&prefix[..], &[0xff; 16]].concat(),
    };
    if let Some(before) = query.before {
        high = high.min(entry_key(prefix.clone(), before.time_ms, before.seq));
    }
    let mut seqs = Vec::new();
    let mut examined = 0;
    let mut last = None;
    if low >= high {
        return Ok(Found { seqs, next: None });
    }
    for item in tree.range(low..high).rev() {
        let (key, value) = item?;
        let Some(position) = key
            .len()
            .checked_sub(16)
            .and_then(|at| key.get(at..))
            .and_then(|tail| {
                let time = tail.get(..8)?.try_into().ok()?;
                let seq = tail.get(8..)?.try_into().ok()?;
                Some(Position {
                    time_ms: time_of(time),
                    seq: u64::from_be_bytes(seq),
                })
            })
        else {
            continue;
        };
        if seqs.len() >= query.page_size || examined >= MAX_EXAMINED {
            return Ok(Found { seqs, next: last });
        }
        examined += 1;
        last = Some(position);
        let [action, score, side] = match value.as_ref() {
            [a, s, d] => [*a, *s, *d],
            _ => continue,
        };
        let passes = query.action.is_none_or(|a| i32::from(action) == a as i32)
            && u32::from(score) >= query.min_risk_score
            && (!query.payee_only || side & SIDE_PAYEE != 0);
        if passes && (!rule_in_record || accept(position.seq)?) {
            seqs.push(position.seq);
        }
    }
    Ok(Found { seqs, next: None })
}

/// One entry of an index: where it points and its three value bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub position: Position,
    pub action: u8,
    pub risk_score: u8,
}

fn parse_entry(key: &[u8], value: &[u8]) -> Option<Entry> {
    let tail = key.get(key.len().checked_sub(16)?..)?;
    let time = tail.get(..8)?.try_into().ok()?;
    let seq = tail.get(8..)?.try_into().ok()?;
    let (action, risk_score) = match value {
        [a, s, _] => (*a, *s),
        _ => return None,
    };
    Some(Entry {
        position: Position {
            time_ms: time_of(time),
            seq: u64::from_be_bytes(seq),
        },
        action,
        risk_score,
    })
}

fn range_of(
    tree: &sled::Tree,
    prefix: Vec<u8>,
    from_ms: i64,
    to_ms: i64,
) -> impl DoubleEndedIterator<Item = Result<Entry, StoreError>> {
    let low = entry_key(prefix.clone(), from_ms, 0);
    let high = entry_key(prefix, to_ms, 0);
    let range = if low < high {
        Some(tree.range(low..high))
    } else {
        None
    };
    range.into_iter().flatten().filter_map(|item| match item {
        Ok((key, value)) => parse_entry(&key, &value).map(Ok),
        Err(e) => Some(Err(e.into())),
    })
}

/// Every decision with event time in `[from_ms, to_ms)`, oldest first (the `T/` index).
pub fn in_period(
    tree: &sled::Tree,
    from_ms: i64,
    to_ms: i64,
) -> impl DoubleEndedIterator<Item = Result<Entry, StoreError>> {
    range_of(tree, TIME.to_vec(), from_ms, to_ms)
}

/// Every decision rule `rule` fired on (active or shadow) with event time in
/// `[from_ms, to_ms)`, oldest first (the `j/` index).
pub fn rule_hits(
    tree: &sled::Tree,
    rule: &str,
    from_ms: i64,
    to_ms: i64,
) -> impl DoubleEndedIterator<Item = Result<Entry, StoreError>> {
    range_of(tree, named(RULE, rule), from_ms, to_ms)
}

/// Event time of the newest decision in the `T/` index.
pub fn newest_time(tree: &sled::Tree) -> Result<Option<i64>, StoreError> {
    match tree.scan_prefix(TIME).next_back() {
        Some(item) => {
            let (key, value) = item?;
            Ok(parse_entry(&key, &value).map(|e| e.position.time_ms))
        }
        None => Ok(None),
    }
}

/// The ids of the rules with entries in the `j/` index, at most `limit` of them: one seek
/// per id (past all of its entries), never a walk over the entries.
pub fn indexed_rules(tree: &sled::Tree, limit: usize) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut from = RULE.to_vec();
    while out.len() < limit {
        let Some(item) = tree.range(from.clone()..).next() else {
            break;
        };
        let (key, _) = item?;
        let Some(rest) = key.strip_prefix(RULE) else {
            break;
        };
        let Some(len) = rest
            .get(..2)
            .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
        else {
            break;
        };
        let Some(name) = rest.get(2..2 + len) else {
            break;
        };
        out.push(String::from_utf8_lossy(name).into_owned());
        // Just past every key of this id: its prefix followed by the highest time and seq.
        from = [&key[..RULE.len() + 2 + len], &[0xff; 17][..]].concat();
    }
    Ok(out)
}

/// The latest `limit` decisions on which `account` was payer or payee that did more than
/// allow the payment, newest first (what an explanation of a NORMAL account shows).
pub fn flagged(tree: &sled::Tree, account: &str, limit: usize) -> Result<Vec<u64>, StoreError> {
    let prefix = named(ACCOUNT, account);
    let mut out = Vec::new();
    for item in tree.scan_prefix(&prefix).rev() {
        if out.len() >= limit {
            break;
        }
        let (key, value) = item?;
        let allowed = value
            .first()
            .is_some_and(|&a| i32::from(a) == Action::Allow as i32);
        let seq = key
            .len()
            .checked_sub(8)
            .and_then(|at| key.get(at..))
            .and_then(|s| s.try_into().ok())
            .map(u64::from_be_bytes);
        if let (false, Some(seq)) = (allowed, seq) {
            out.push(seq);
        }
    }
    Ok(out)
}

/// The keys of the index this module replaced (`n/`), for the one-time move.
pub const LEGACY_FLAGGED_PREFIX: &[u8] = b"n/";
/// Set once every record has its entries in these indexes.
pub const INDEXED_MARKER: &[u8] = b"meta/indexes-v1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_numbers_and_tokens_round_trip() {
        let mut times = [5_i64, -3, 0, i64::MIN, i64::MAX, 1_764_000_000_000];
        let mut keys: Vec<[u8; 8]> = times.iter().map(|&t| time_bytes(t)).collect();
        keys.sort();
        times.sort();
        assert_eq!(keys.iter().map(|&k| time_of(k)).collect::<Vec<_>>(), times);
        let p = Position {
            time_ms: -7,
            seq: 42,
        };
        assert_eq!(Position::parse(&p.token()), Some(p));
        assert_eq!(Position::parse("7"), None);
    }

    #[test]
    fn rule_ids_and_periods_are_read_from_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("t").unwrap();
        for (rule, t, seq) in [("b", 10, 1), ("a", 20, 2), ("b", 30, 3), ("ab", 5, 4)] {
            tree.insert(entry_key(named(RULE, rule), t, seq), &[3, 90, 0][..])
                .unwrap();
            tree.insert(entry_key(TIME.to_vec(), t, seq), &[3, 90, 0][..])
                .unwrap();
        }
        assert_eq!(indexed_rules(&tree, 10).unwrap(), ["a", "b", "ab"]);
        assert_eq!(indexed_rules(&tree, 2).unwrap(), ["a", "b"]);
        let hits: Vec<u64> = rule_hits(&tree, "b", 0, 31)
            .map(|e| e.unwrap().position.seq)
            .collect();
        assert_eq!(hits, [1, 3]);
        assert_eq!(rule_hits(&tree, "b", 11, 30).count(), 0);
        let period: Vec<i64> = in_period(&tree, 5, 30)
            .map(|e| e.unwrap().position.time_ms)
            .collect();
        assert_eq!(period, [5, 10, 20]);
        assert_eq!(newest_time(&tree).unwrap(), Some(30));
        assert_eq!(in_period(&tree, 30, 5).count(), 0);
    }
}
