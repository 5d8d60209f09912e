//! The audit log of what analysts did that changes no account status (assigning and
//! resolving cases, shipping and promoting rules): append-only, in sled.
//!
//! Status changes keep their own per-account log (`crate::accounts`); this one is global,
//! keyed `u/<seq u64 BE>` in the decisions tree, so an entry lands in the same atomic batch
//! as what it records. `seq` comes from `sled::Db::generate_id`, as the account log's does.

use prost::Message;

use crate::proto::AuditEntry;
use crate::store::StoreError;

const PREFIX: &[u8] = b"u/";

fn key(seq: u64) -> Vec<u8> {
    [PREFIX, &seq.to_be_bytes()].concat()
}

/// Reads and stages audit entries; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tree: sled::Tree,
}

impl AuditLog {
    pub fn new(tree: sled::Tree) -> AuditLog {
        AuditLog { tree }
    }

    pub fn stage(&self, batch: &mut sled::Batch, entry: &AuditEntry) {
        batch.insert(key(entry.seq), entry.encode_to_vec());
    }

    /// Up to `limit` entries before position `before` (all for `None`), newest first, and
    /// whether older ones remain.
    pub fn newest(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), StoreError> {
        let end = key(before.unwrap_or(u64::MAX));
        let mut out = Vec::new();
        for item in self.tree.range(key(0)..end).rev() {
            let (k, v) = item?;
            if out.len() >= limit {
                return Ok((out, true));
            }
            out.push(AuditEntry::decode(&v[..]).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: e.to_string(),
            })?);
        }
        Ok((out, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_newest_first_in_pages() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let log = AuditLog::new(tree.clone());
        let mut batch = sled::Batch::default();
        for seq in [1, 4, 300] {
            let entry = AuditEntry {
                seq,
                action: "case_resolved".into(),
                ..AuditEntry::default()
            };
            log.stage(&mut batch, &entry);
        }
        tree.apply_batch(batch).unwrap();
        let (page, more) = log.newest(None, 2).unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [300, 4]);
        assert!(more);
        let (page, more) = log.newest(Some(4), 2).unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
        assert!(!more);
    }
}
