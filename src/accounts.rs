//! Account status (NORMAL / LIMITED / FROZEN), its append-only audit log, rule suppressions
//! and appeals, in sled.
//!
//! The keys share the decisions tree, so a status change lands in the same atomic batch as
//! the decision that caused it. `<acct>` below is the account id prefixed by its length
//! (u16, big-endian), so one account's keys never prefix another's:
//! - `a/<acct>` → the account's latest `AccountStatusChange` (its current status);
//! - `h/<acct><seq u64>` → every change, never rewritten (the audit log);
//! - `x/<acct><rule id>` → a `Suppression` of that rule for that account;
//! - `A/<appeal id>` → an `Appeal`; `B/<acct><appeal id>` → "" (an account's appeals).

use std::collections::HashMap;

use prost::Message;

use crate::proto::{AccountStatus, AccountStatusChange, Appeal, Suppression};
use crate::store::StoreError;

/// Reads and stages account records; cheap to clone, shared by every thread.
#[derive(Clone)]
pub struct AccountStore {
    tree: sled::Tree,
}

fn account_key(prefix: &[u8], account: &str) -> Vec<u8> {
    let len = u16::try_from(account.len()).unwrap_or(u16::MAX);
    [prefix, &len.to_be_bytes(), account.as_bytes()].concat()
}

fn decode<M: Message + Default>(key: &[u8], bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

impl AccountStore {
    /// `tree` is the decisions tree (see the module comment for why).
    pub fn new(tree: sled::Tree) -> AccountStore {
        AccountStore { tree }
    }

    fn get<M: Message + Default>(&self, key: &[u8]) -> Result<Option<M>, StoreError> {
        match self.tree.get(key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn scan<M: Message + Default>(&self, prefix: &[u8]) -> Result<Vec<M>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|item| {
                let (key, value) = item?;
                decode(&key, &value)
            })
            .collect()
    }

    /// The account's latest change; `None` for an account never changed (NORMAL).
    pub fn current(&self, account: &str) -> Result<Option<AccountStatusChange>, StoreError> {
        self.get(&account_key(b"a/", account))
    }

    /// Every change of the account, oldest first.
    pub fn history(&self, account: &str) -> Result<Vec<AccountStatusChange>, StoreError> {
        self.scan(&account_key(b"h/", account))
    }

    pub fn stage_change(&self, batch: &mut sled::Batch, change: &AccountStatusChange) {
        let bytes = change.encode_to_vec();
        let mut history = account_key(b"h/", &change.account_id);
        history.extend_from_slice(&change.seq.to_be_bytes());
        batch.insert(history, bytes.clone());
        batch.insert(account_key(b"a/", &change.account_id), bytes);
    }

    pub fn suppressions(&self, account: &str) -> Result<Vec<Suppression>, StoreError> {
        self.scan(&account_key(b"x/", account))
    }

    pub fn stage_suppression(&self, batch: &mut sled::Batch, suppression: &Suppression) {
        let mut key = account_key(b"x/", &suppression.account_id);
        key.extend_from_slice(suppression.rule_id.as_bytes());
        batch.insert(key, suppression.encode_to_vec());
    }

    pub fn appeal(&self, appeal_id: &str) -> Result<Option<Appeal>, StoreError> {
        self.get(&[b"A/", appeal_id.as_bytes()].concat())
    }

    /// Appeals of one account, or all of them; newest first.
    pub fn appeals(&self, account: Option<&str>) -> Result<Vec<Appeal>, StoreError> {
        let mut appeals = match account {
            None => self.scan(b"A/")?,
            Some(account) => {
                let prefix = account_key(b"B/", account);
                let mut out = Vec::new();
                for item in self.tree.scan_prefix(&prefix) {
                    let (key, _) = item?;
                    let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                    out.extend(self.appeal(&id)?);
                }
                out
            }
        };
        appeals.sort_by(|a, b| (b.filed_at_ms, &b.appeal_id).cmp(&(a.filed_at_ms, &a.appeal_id)));
        Ok(appeals)
    }

    /// `ap-0000000000000001` for the first appeal, then one more than the highest id so
    /// far (sixteen hex digits, so ids sort in filing order). Appeals are never deleted and
    /// only the engine thread files them, so an id is never given twice.
    pub fn next_appeal_id(&self) -> Result<String, StoreError> {
        let last = match self.tree.scan_prefix(b"A/ap-").next_back() {
            Some(item) => {
                let (key, _) = item?;
                std::str::from_utf8(&key[b"A/ap-".len()..])
                    .ok()
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                    .unwrap_or(0)
            }
            None => 0,
        };
        Ok(format!("ap-{:016x}", last + 1))
    }

    pub fn stage_appeal(&self, batch: &mut sled::Batch, appeal: &Appeal) {
        batch.insert(
            [b"A/", appeal.appeal_id.as_bytes()].concat(),
            appeal.encode_to_vec(),
        );
        let mut index = account_key(b"B/", &appeal.account_id);
        index.extend_from_slice(appeal.appeal_id.as_bytes());
        batch.insert(index, &[][..]);
    }

    /// What the engine keeps in memory: every account not NORMAL, every suppression.
    pub fn load_statuses(&self) -> Result<Statuses, StoreError> {
        let mut statuses = Statuses::default();
        for change in self.scan::<AccountStatusChange>(b"a/")? {
            statuses.apply(change);
        }
        for suppression in self.scan::<Suppression>(b"x/")? {
            statuses.add_suppression(suppression);
        }
        Ok(statuses)
    }
}

/// The engine's in-memory view of non-NORMAL accounts and suppressions: the Score path
/// looks every payment's two accounts up here, never on disk. The engine thread is the
/// only writer, and it updates this after the sled write succeeded.
#[derive(Debug, Default)]
pub struct Statuses {
    restricted: HashMap<String, AccountStatusChange>,
    suppressions: HashMap<String, Vec<Suppression>>,
}

impl Statuses {
    /// The change that set the account's current status, unless it is NORMAL.
    pub fn restriction(&self, account: &str) -> Option<&AccountStatusChange> {
        self.restricted.get(account)
    }

    pub fn status(&self, account: &str) -> AccountStatus {
        self.restriction(account)
            .map_or(AccountStatus::Normal, |c| c.to())
    }

    pub fn apply(&mut self, change: AccountStatusChange) {
        if change.to() == AccountStatus::Normal {
            self.restricted.remove(&change.account_id);
        } else {
            self.restricted.insert(change.account_id.clone(), change);
        }
    }

    pub fn add_suppression(&mut self, suppression: Suppression) {
        let list = self
            .suppressions
            .entry(suppression.account_id.clone())
            .or_default();
        list.retain(|s| s.rule_id != suppression.rule_id);
        list.push(suppression);
    }

    /// True when `rule_id` is suppressed for `account` at event time `at_ms`.
    pub fn suppressed(&self, account: &str, rule_id: &str, at_ms: i64) -> bool {
        self.suppressions.get(account).is_some_and(|list| {
            list.iter()
                .any(|s| s.rule_id == rule_id && at_ms < s.until_ms)
        })
    }

    pub fn has_suppressions(&self, account: &str) -> bool {
        self.suppressions.contains_key(account)
    }
}

/// NORMAL < LIMITED < FROZEN: a rule may only tighten a status.
pub fn severity(status: AccountStatus) -> u8 {
    match status {
        AccountStatus::Unspecified | AccountStatus::Normal => 0,
        AccountStatus::Limited => 1,
        AccountStatus::Frozen => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(account: &str, seq: u64, to: AccountStatus) -> AccountStatusChange {
        AccountStatusChange {
            account_id: account.into(),
            to: to as i32,
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn history_is_per_account_even_when_one_id_prefixes_another() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = AccountStore::new(db.open_tree("t").unwrap());
        let mut batch = sled::Batch::default();
        store.stage_change(&mut batch, &change("shop", 1, AccountStatus::Limited));
        store.stage_change(&mut batch, &change("shop2", 2, AccountStatus::Frozen));
        store.stage_change(&mut batch, &change("shop", 3, AccountStatus::Frozen));
        store.stage_change(&mut batch, &change("shop", 4, AccountStatus::Normal));
        db.open_tree("t").unwrap().apply_batch(batch).unwrap();
        let seqs: Vec<u64> = store
            .history("shop")
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(seqs, [1, 3, 4]);
        assert_eq!(store.current("shop").unwrap().unwrap().seq, 4);
        let statuses = store.load_statuses().unwrap();
        assert_eq!(statuses.status("shop"), AccountStatus::Normal);
        assert_eq!(statuses.status("shop2"), AccountStatus::Frozen);
        assert_eq!(statuses.status("nobody"), AccountStatus::Normal);
    }

    #[test]
    fn appeal_ids_count_from_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = AccountStore::new(db.open_tree("t").unwrap());
        // Other ids the database hands out (audit log positions) do not move them.
        db.generate_id().unwrap();
        assert_eq!(store.next_appeal_id().unwrap(), "ap-0000000000000001");
        let appeal = |id: &str| Appeal {
            appeal_id: id.into(),
            account_id: "shop".into(),
            ..Default::default()
        };
        let mut batch = sled::Batch::default();
        store.stage_appeal(&mut batch, &appeal("ap-0000000000000001"));
        store.stage_appeal(&mut batch, &appeal("ap-00000000000000ff"));
        db.open_tree("t").unwrap().apply_batch(batch).unwrap();
        assert_eq!(store.next_appeal_id().unwrap(), "ap-0000000000000100");
    }

    #[test]
    fn suppression_holds_until_it_expires() {
        let mut statuses = Statuses::default();
        statuses.add_suppression(Suppression {
            rule_id: "r".into(),
            account_id: "a".into(),
            until_ms: 100,
            appeal_id: "ap".into(),
        });
        assert!(statuses.suppressed("a", "r", 99));
        assert!(!statuses.suppressed("a", "r", 100));
        assert!(!statuses.suppressed("a", "other", 0));
        assert!(!statuses.suppressed("b", "r", 0));
    }
}
