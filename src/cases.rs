//! The review queue: one case per decision that asked for review or froze or limited an
//! account, kept in sled beside the decision that opened it.
//!
//! A case is opened by the decision's own write (`DecisionStore` writes `open_keys` with
//! the record and restores them from the journal like its other indexes), so it costs the
//! Score path two small inserts and only for the decisions that open one; everything after
//! (assigning, resolving) is written by the engine thread (`crate::engine`). Keys, in the
//! decisions tree:
//! - `c/<seq u64 BE>` → the `Case` (its id is `c-` and the decision's log position, so one
//!   decision can never open two);
//! - `q/<seq u64 BE>` → "" while it is open: the queue, oldest first, never holds the
//!   resolved ones.

use prost::Message;

use crate::proto::{self, case, Action, Case, Decision, ReasonSource};
use crate::store::StoreError;

const CASE_PREFIX: &[u8] = b"c/";
const OPEN_PREFIX: &[u8] = b"q/";

/// Most cases one list call decodes while looking for matches of its filters; past it, the
/// page ends early with a token at the position reached, so a rare filter costs a client
/// more calls but never one unbounded one.
const MAX_EXAMINED: usize = 20_000;
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// `c-` and twenty decimal digits: the position of the decision that opened the case.
pub fn case_id(seq: u64) -> String {
    format!("c-{seq:020}")
}

fn seq_of_case(case_id: &str) -> Option<u64> {
    let digits = case_id.strip_prefix("c-")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn key(prefix: &[u8], seq: u64) -> Vec<u8> {
    [prefix, &seq.to_be_bytes()].concat()
}

/// The case `decision` opens, if it opens one: it asked for review, or a rule or the model
/// froze or limited an account with it.
pub fn opened_by(decision: &Decision, seq: u64) -> Option<Case> {
    let response = decision.response.as_ref()?;
    if response.action() != Action::Review && decision.account_changes.is_empty() {
        return None;
    }
    let request = decision.request.clone().unwrap_or_default();
    let payer = request.payer.map(|p| p.account_id).unwrap_or_default();
    let payee = request.payee.map(|p| p.account_id).unwrap_or_default();
    let rule_reasons = response
        .reasons
        .iter()
        .filter(|r| matches!(r.source(), ReasonSource::Rule | ReasonSource::List));
    let rule_ids: Vec<String> = rule_reasons.clone().map(|r| r.id.clone()).collect();
    let named_side = rule_reasons.map(|r| r.account_action()).find_map(|a| {
        use proto::AccountAction as A;
        match a {
            A::LimitPayee | A::FreezePayee => Some(payee.clone()),
            A::LimitPayer | A::FreezePayer => Some(payer.clone()),
            A::Unspecified => None,
        }
    });
    let account_id = decision
        .account_changes
        .first()
        .map(|c| c.account_id.clone())
        .or(named_side)
        .unwrap_or_else(|| payer.clone());
    Some(Case {
        case_id: case_id(seq),
        decision_id: response.decision_id.clone(),
        account_id,
        amount_fen: request.amount_fen,
        rule_ids,
        opened_at_ms: response.evaluated_at_ms,
        status: case::CaseStatus::Open as i32,
        payment_id: response.payment_id.clone(),
        action: response.action,
        risk_score: response.risk_score,
        event_time_ms: request.event_time_ms,
        payer_account_id: payer,
        payee_account_id: payee,
        ..Case::default()
    })
}

/// The keys and values that open `case`: its record and its place in the queue.
pub fn open_keys(case: &Case) -> Option<[(Vec<u8>, Vec<u8>); 2]> {
    let seq = seq_of_case(&case.case_id)?;
    Some([
        (key(CASE_PREFIX, seq), case.encode_to_vec()),
        (key(OPEN_PREFIX, seq), Vec::new()),
    ])
}

/// The key of `case_id`'s record, for restoring it only where it is missing.
pub fn record_key(case_id: &str) -> Option<Vec<u8>> {
    seq_of_case(case_id).map(|seq| key(CASE_PREFIX, seq))
}

/// What to list: `ListCasesRequest` checked.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    pub status: Option<case::CaseStatus>,
    pub account_id: Option<String>,
    pub rule_id: Option<String>,
    pub page_size: usize,
    /// List cases after this position.
    pub after: Option<u64>,
}

/// One page and the position to go on from.
#[derive(Debug, Clone, PartialEq)]
pub struct CasePage {
    pub cases: Vec<Case>,
    pub next: Option<u64>,
}

/// Reads and stages cases; cheap to clone, shared by every thread.
#[derive(Clone)]
pub struct CaseStore {
    tree: sled::Tree,
}

impl CaseStore {
    /// `tree` is the decisions tree: a case opens in the same write as its decision.
    pub fn new(tree: sled::Tree) -> CaseStore {
        CaseStore { tree }
    }

    pub fn get(&self, case_id: &str) -> Result<Option<Case>, StoreError> {
        let Some(seq) = seq_of_case(case_id) else {
            return Ok(None);
        };
        let key = key(CASE_PREFIX, seq);
        match self.tree.get(&key)? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Replaces a case (assigned or resolved): off the queue once it is resolved.
    pub fn stage_update(&self, batch: &mut sled::Batch, case: &Case) {
        let Some(seq) = seq_of_case(&case.case_id) else {
            return;
        };
        let mut stored = case.clone();
        stored.age_ms = 0;
        batch.insert(key(CASE_PREFIX, seq), stored.encode_to_vec());
        if case.status() == case::CaseStatus::Resolved {
            batch.remove(key(OPEN_PREFIX, seq));
        }
    }

    /// Cases in opening order after `filter.after`, matching every filter. Open cases are
    /// read through the queue, so resolved ones cost an open-only list nothing.
    pub fn list(&self, filter: &CaseFilter) -> Result<CasePage, StoreError> {
        let open_only = filter.status == Some(case::CaseStatus::Open);
        let prefix = if open_only { OPEN_PREFIX } else { CASE_PREFIX };
        let start = key(prefix, filter.after.map_or(0, |s| s.saturating_add(1)));
        let end = key(prefix, u64::MAX);
        let mut cases = Vec::new();
        let mut last = None;
        let mut examined = 0;
        for item in self.tree.range(start..=end) {
            let (k, v) = item?;
            let Some(seq) = k
                .get(prefix.len()..)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            if cases.len() >= filter.page_size || examined >= MAX_EXAMINED {
                return Ok(CasePage { cases, next: last });
            }
            examined += 1;
            last = Some(seq);
            let case = match open_only {
                true => match self.get(&case_id(seq))? {
                    Some(case) => case,
                    None => continue,
                },
                false => decode(&k, &v)?,
            };
            if filter.matches(&case) {
                cases.push(case);
            }
        }
        Ok(CasePage { cases, next: None })
    }
}

impl CaseFilter {
    fn matches(&self, case: &Case) -> bool {
        self.status.is_none_or(|s| case.status() == s)
            && self.account_id.as_ref().is_none_or(|a| {
                &case.account_id == a || &case.payer_account_id == a || &case.payee_account_id == a
            })
            && self
                .rule_id
                .as_ref()
                .is_none_or(|r| case.rule_ids.contains(r))
    }
}

/// A page token for position `seq`; and back. Tokens are positions, not offsets, so cases
/// opened while an analyst pages come at the end and never shift a page.
pub fn token(seq: Option<u64>) -> String {
    seq.map(|s| format!("c{s}")).unwrap_or_default()
}

pub fn parse_token(token: &str) -> Option<Option<u64>> {
    if token.is_empty() {
        return Some(None);
    }
    token.strip_prefix('c')?.parse().ok().map(Some)
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<Case, StoreError> {
    Case::decode(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Payee, Payer, Reason, ScoreRequest, ScoreResponse};

    fn decision(seq: u64, action: Action, account_action: proto::AccountAction) -> Decision {
        Decision {
            response: Some(ScoreResponse {
                decision_id: crate::store::decision_id(seq),
                payment_id: format!("p-{seq}"),
                action: action as i32,
                evaluated_at_ms: 1_000 + seq as i64,
                reasons: vec![Reason {
                    id: "big".into(),
                    source: ReasonSource::Rule as i32,
                    account_action: account_action as i32,
                    ..Reason::default()
                }],
                ..ScoreResponse::default()
            }),
            request: Some(ScoreRequest {
                amount_fen: 500,
                payer: Some(Payer {
                    account_id: "payer".into(),
                    ..Payer::default()
                }),
                payee: Some(Payee {
                    account_id: "payee".into(),
                    ..Payee::default()
                }),
                ..ScoreRequest::default()
            }),
            ..Decision::default()
        }
    }

    #[test]
    fn review_opens_a_case_about_the_side_the_rule_names_and_allow_opens_none() {
        let none = proto::AccountAction::Unspecified;
        assert_eq!(opened_by(&decision(1, Action::Allow, none), 1), None);
        assert_eq!(opened_by(&decision(1, Action::Block, none), 1), None);
        let case = opened_by(&decision(7, Action::Review, none), 7).unwrap();
        assert_eq!(case.case_id, "c-00000000000000000007");
        assert_eq!(case.decision_id, "d-00000000000000000007");
        assert_eq!((case.account_id.as_str(), case.amount_fen), ("payer", 500));
        assert_eq!(case.rule_ids, ["big"]);
        assert_eq!(case.status(), case::CaseStatus::Open);
        let limit = proto::AccountAction::LimitPayee;
        let case = opened_by(&decision(8, Action::Review, limit), 8).unwrap();
        assert_eq!(case.account_id, "payee");
    }

    #[test]
    fn the_queue_pages_oldest_first_and_drops_resolved_cases() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let store = CaseStore::new(tree.clone());
        let none = proto::AccountAction::Unspecified;
        for seq in [3, 5, 9, 12] {
            let case = opened_by(&decision(seq, Action::Review, none), seq).unwrap();
            for (k, v) in open_keys(&case).unwrap() {
                tree.insert(k, v).unwrap();
            }
        }
        let mut resolved = store.get(&case_id(5)).unwrap().unwrap();
        resolved.status = case::CaseStatus::Resolved as i32;
        let mut batch = sled::Batch::default();
        store.stage_update(&mut batch, &resolved);
        tree.apply_batch(batch).unwrap();

        let open = |after| CaseFilter {
            status: Some(case::CaseStatus::Open),
            page_size: 2,
            after,
            ..CaseFilter::default()
        };
        let first = store.list(&open(None)).unwrap();
        let ids: Vec<_> = first.cases.iter().map(|c| c.case_id.clone()).collect();
        assert_eq!(ids, [case_id(3), case_id(9)]);
        assert_eq!(first.next, Some(9));
        let second = store.list(&open(first.next)).unwrap();
        assert_eq!(second.cases.len(), 1);
        assert_eq!(second.next, None);
        let all = store
            .list(&CaseFilter {
                page_size: 10,
                ..CaseFilter::default()
            })
            .unwrap();
        assert_eq!(all.cases.len(), 4);
        let other_rule = store
            .list(&CaseFilter {
                page_size: 10,
                rule_id: Some("small".into()),
                ..CaseFilter::default()
            })
            .unwrap();
        assert!(other_rule.cases.is_empty());
        assert_eq!(parse_token(&token(Some(9))), Some(Some(9)));
        assert_eq!(parse_token("x"), None);
        assert_eq!(store.get("c-1").unwrap(), None);
    }
}
