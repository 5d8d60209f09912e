//! The decision record store: every decision with its evidence and outcomes, in sled.
//!
//! One tree holds both keys so a decision and its id index land in one atomic batch:
//! `p/<payment_id>` → encoded `Decision`, `d/<decision_id>` → payment id.

use prost::Message;

use crate::proto::Decision;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored decision for `{key}` cannot be decoded: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Cheap to clone; readers on any thread share the same tree.
#[derive(Clone)]
pub struct DecisionStore {
    tree: sled::Tree,
}

fn payment_key(payment_id: &str) -> Vec<u8> {
    [b"p/", payment_id.as_bytes()].concat()
}

fn decision_key(decision_id: &str) -> Vec<u8> {
    [b"d/", decision_id.as_bytes()].concat()
}

impl DecisionStore {
    pub fn open(db: &sled::Db) -> Result<DecisionStore, StoreError> {
        Ok(DecisionStore {
            tree: db.open_tree("decisions")?,
        })
    }

    pub fn by_payment(&self, payment_id: &str) -> Result<Option<Decision>, StoreError> {
        match self.tree.get(payment_key(payment_id))? {
            Some(bytes) => decode(payment_id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn by_decision_id(&self, decision_id: &str) -> Result<Option<Decision>, StoreError> {
        match self.tree.get(decision_key(decision_id))? {
            Some(payment_id) => {
                let payment_id = String::from_utf8_lossy(&payment_id).into_owned();
                self.by_payment(&payment_id)
            }
            None => Ok(None),
        }
    }

    /// Adds a new decision (with its id index) to `batch`; the caller applies the batch.
    pub fn stage_insert(&self, batch: &mut sled::Batch, decision: &Decision) {
        let (payment_id, decision_id) = ids(decision);
        batch.insert(payment_key(payment_id), decision.encode_to_vec());
        batch.insert(decision_key(decision_id), payment_id.as_bytes());
    }

    /// Replaces a stored decision (e.g. with an outcome added); its ids never change.
    pub fn stage_update(&self, batch: &mut sled::Batch, decision: &Decision) {
        let (payment_id, _) = ids(decision);
        batch.insert(payment_key(payment_id), decision.encode_to_vec());
    }

    /// For callers that write decisions inside a multi-tree transaction.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    pub fn apply(&self, batch: sled::Batch) -> Result<(), StoreError> {
        Ok(self.tree.apply_batch(batch)?)
    }

    pub fn len(&self) -> usize {
        self.tree.scan_prefix(b"p/").count()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.scan_prefix(b"p/").next().is_none()
    }
}

fn ids(decision: &Decision) -> (&str, &str) {
    decision
        .response
        .as_ref()
        .map(|r| (r.payment_id.as_str(), r.decision_id.as_str()))
        .unwrap_or(("", ""))
}

fn decode(key: &str, bytes: &[u8]) -> Result<Decision, StoreError> {
    Decision::decode(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ScoreResponse;

    #[test]
    fn insert_then_read_by_both_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = DecisionStore::open(&db).unwrap();
        let decision = Decision {
            response: Some(ScoreResponse {
                decision_id: "d-1".into(),
                payment_id: "p-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut batch = sled::Batch::default();
        store.stage_insert(&mut batch, &decision);
        store.apply(batch).unwrap();
        assert_eq!(store.by_payment("p-1").unwrap(), Some(decision.clone()));
        assert_eq!(store.by_decision_id("d-1").unwrap(), Some(decision));
        assert_eq!(store.by_payment("p-2").unwrap(), None);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn corrupt_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = DecisionStore::open(&db).unwrap();
        store
            .tree
            .insert(payment_key("p-x"), &[0xff, 0xff, 0xff][..])
            .unwrap();
        assert!(matches!(
            store.by_payment("p-x"),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
