//! The decision record store: every decision with its evidence and outcomes, in sled, and
//! the ordered log of what changed the feature windows.
//!
//! One tree holds every key, so a decision can land in one atomic batch with its log entry
//! and any account change (a plain Score writes the two in order instead: see
//! `insert_payment`): `p/<payment_id>` → encoded `StoredDecision`,
//! `s/<seq, big-endian u64>` → log entry (a decision's id is its payment's log position, so
//! finding it needs no index of its own; records from before that have `d/<decision_id>` →
//! payment id), `i/`, `j/`, `T/` → the search indexes by account, rule and time
//! (`crate::search`; what Explain shows for a NORMAL account and ListDecisions pages),
//! `c/`, `q/` → the review case a decision opens and the open queue (`crate::cases`),
//! `f/<feature set version>` → the feature names
//! (JSON), once per version: a decision stores only its feature values, which keeps the
//! record (and its write, the largest step of a Score) a fraction of the size. The feature
//! store checkpoints its state now and then; the log lets it replay what came after its
//! last checkpoint.
//!
//! In the server, Scores and outcomes do not touch sled on the scoring thread: their log
//! entries, records and index keys go to the journal (`crate::journal`, what makes them
//! durable, and the source of truth for the last seconds) and to the in-memory tail of the
//! sled writer (`crate::writer`), which applies them to sled behind the committer. Every
//! read here looks in the tail before sled; whatever reads sled directly (`tree`, the
//! searches) first has the tail applied, so it sees every decision made so far.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prost::Message;

use crate::journal::Journal;
use crate::proto::{Decision, DecisionSummary, Evidence, ReasonSource, StoredDecision};
use crate::writer::{Entry, Tail};

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
    /// Feature names by feature-set version, read from `f/` keys on first use.
    names: Arc<RwLock<HashMap<String, Arc<[String]>>>>,
    /// Where a server's writes of Score and ReportOutcome go instead of sled (see
    /// `crate::journal`, `crate::writer`).
    journal: Option<(Journal, Arc<Tail>)>,
}

/// Decision records are under this prefix, then the payment id.
pub(crate) const PAYMENT_PREFIX: &[u8] = b"p/";

pub(crate) fn payment_key(payment_id: &str) -> Vec<u8> {
    [PAYMENT_PREFIX, payment_id.as_bytes()].concat()
}

/// Field numbers of `StoredDecision` (proto/fengkong/v1/storage.proto).
const STORED_DECISION_FIELD: u32 = 15;
const STORED_VALUES_FIELD: u32 = 16;

fn legacy_decision_key(decision_id: &str) -> Vec<u8> {
    [b"d/", decision_id.as_bytes()].concat()
}

/// The id of the decision whose payment is log entry `seq`. Twenty decimal digits, so it
/// can never equal an older id (sixteen hex digits, from `d/` index days).
pub fn decision_id(seq: u64) -> String {
    format!("d-{seq:020}")
}

fn seq_of_decision(decision_id: &str) -> Option<u64> {
    let digits = decision_id.strip_prefix("d-")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl DecisionStore {
    pub fn open(db: &sled::Db) -> Result<DecisionStore, StoreError> {
        let store = DecisionStore {
            tree: db.open_tree("decisions")?,
            names: Arc::default(),
            journal: None,
        };
        store.index_once()?;
        Ok(store)
    }

    /// From now on, `insert_payment` and `update_after_log` write to `journal` and `tail`
    /// instead of sled; the sled writer applies the tail to sled. The tail must be new (it
    /// counts entries from the journal's first).
    pub fn set_journal(&mut self, journal: Journal, tail: Arc<Tail>) {
        self.journal = Some((journal, tail));
    }

    /// The tail of writes not yet in sled, with a journal.
    pub fn tail(&self) -> Option<&Arc<Tail>> {
        self.journal.as_ref().map(|(_, tail)| tail)
    }

    /// Applies every write of the tail to sled, so that sled alone holds every decision
    /// made so far (before a direct sled write or a read of sled's indexes).
    pub fn catch_up(&self) -> Result<(), StoreError> {
        if let Some(tail) = self.tail().filter(|t| !t.is_empty()) {
            tail.apply_all(&self.tree)?;
        }
        Ok(())
    }

    pub fn journaled(&self) -> bool {
        self.journal.is_some()
    }

    /// Writes again what a journal entry holds and sled lost in a crash: its log entries
    /// where missing, and its record unless sled's copy already has it (it exists, with at
    /// least as many outcomes). sled recovers a prefix of its writes, so a record missing
    /// this entry's write has no later write either, and the journal's copy is the newest.
    /// Returns whether anything was written.
    pub fn restore(&self, payload: &[u8]) -> Result<bool, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: "journal entry".into(),
            reason: reason.into(),
        };
        let Journaled {
            seq,
            entries,
            payment_id,
            record,
        } = decode_journal(payload).ok_or_else(|| corrupt("cannot be decoded"))?;
        let mut restored = false;
        for (seq, entry) in (seq..).zip(entries) {
            if !self.tree.contains_key(log_key(seq))? {
                self.tree.insert(&log_key(seq)[..], entry)?;
                restored = true;
            }
        }
        let key = payment_key(payment_id);
        let decision = decode_record(record).ok_or_else(|| corrupt("record cannot be decoded"))?;
        let held = match self.tree.get(&key)? {
            Some(bytes) => decode_record(&bytes).map(|d| d.outcomes.len()),
            None => None,
        };
        if held.is_none_or(|held| held < decision.outcomes.len()) {
            self.tree.insert(key, record)?;
            restored = true;
        }
        for (key, value) in index_keys(&decision) {
            restored |= self.tree.insert(key, &value[..])?.is_none();
        }
        // Only a case never written is opened again: one sled kept may be resolved since.
        if let Some(case) = opened_case(&decision) {
            let present = crate::cases::record_key(&case.case_id)
                .map(|key| self.tree.contains_key(key))
                .transpose()?
                .unwrap_or(false);
            if !present {
                for (key, value) in crate::cases::open_keys(&case).into_iter().flatten() {
                    self.tree.insert(key, value)?;
                }
                restored = true;
            }
        }
        Ok(restored)
    }

    /// Records the feature names of a feature-set version (idempotent); decisions of that
    /// version may then be stored with their values only.
    pub fn register_feature_set(&self, version: &str, names: &[String]) -> Result<(), StoreError> {
        let json = serde_json::to_vec(names).map_err(|e| StoreError::Corrupt {
            key: version.to_owned(),
            reason: e.to_string(),
        })?;
        self.tree
            .compare_and_swap(names_key(version), None as Option<&[u8]>, Some(json))?
            .ok();
        Ok(())
    }

    fn feature_names(&self, version: &str) -> Result<Arc<[String]>, StoreError> {
        if let Some(names) = self.names.read().ok().and_then(|m| m.get(version).cloned()) {
            return Ok(names);
        }
        let corrupt = |reason: String| StoreError::Corrupt {
            key: format!("f/{version}"),
            reason,
        };
        let bytes = self
            .tree
            .get(names_key(version))?
            .ok_or_else(|| corrupt("no feature names for this feature set".into()))?;
        let names: Arc<[String]> = serde_json::from_slice::<Vec<String>>(&bytes)
            .map_err(|e| corrupt(e.to_string()))?
            .into();
        if let Ok(mut cache) = self.names.write() {
            cache.insert(version.to_owned(), Arc::clone(&names));
        }
        Ok(names)
    }

    pub fn by_payment(&self, payment_id: &str) -> Result<Option<Decision>, StoreError> {
        if let Some(entry) = self.tail().and_then(|t| t.record(payment_id)) {
            let record = entry.record().unwrap_or_default();
            return self.decode(payment_id, record).map(Some);
        }
        match self.tree.get(payment_key(payment_id))? {
            Some(bytes) => self.decode(payment_id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// A stored record as the API shows it, feature names included.
    fn decode(&self, key: &str, bytes: &[u8]) -> Result<Decision, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.to_owned(),
            reason,
        };
        let stored = StoredDecision::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
        let Some(mut decision) = stored.decision else {
            // Written before feature values were packed: a bare Decision.
            return Decision::decode(bytes).map_err(|e| corrupt(e.to_string()));
        };
        let names = self.feature_names(&decision.feature_set_version)?;
        if names.len() != stored.feature_values.len() {
            return Err(corrupt(format!(
                "{} feature values for {} feature names",
                stored.feature_values.len(),
                names.len()
            )));
        }
        decision.features = names
            .iter()
            .zip(&stored.feature_values)
            .map(|(name, &value)| Evidence {
                name: name.clone(),
                value,
                ..Evidence::default()
            })
            .collect();
        Ok(decision)
    }

    pub fn by_decision_id(&self, decision_id: &str) -> Result<Option<Decision>, StoreError> {
        if let Some(seq) = seq_of_decision(decision_id) {
            let Some(payment_id) = self.payment_at(seq)? else {
                return Ok(None);
            };
            let decision = self.by_payment(&payment_id)?;
            return Ok(decision.filter(|d| ids(d).1 == decision_id));
        }
        match self.tree.get(legacy_decision_key(decision_id))? {
            Some(payment_id) => {
                let payment_id = String::from_utf8_lossy(&payment_id).into_owned();
                self.by_payment(&payment_id)
            }
            None => Ok(None),
        }
    }

    /// Adds a decision to `batch`; the caller applies it with the payment's log entry, at
    /// the position its decision id names. `decision.features` is left empty:
    /// `feature_values` are the values of the feature set `decision.feature_set_version`,
    /// registered beforehand.
    pub fn stage_insert(
        &self,
        batch: &mut sled::Batch,
        decision: &Decision,
        feature_values: &[f64],
    ) {
        batch.insert(
            payment_key(ids(decision).0),
            encode_record(decision, feature_values),
        );
        for (key, value) in index_keys(decision) {
            batch.insert(key, &value[..]);
        }
        if let Some(case) = opened_case(decision) {
            for (key, value) in crate::cases::open_keys(&case).into_iter().flatten() {
                batch.insert(key, value);
            }
        }
    }

    /// Writes a payment's decision (as `stage_insert`) and its log entry `seq` without a sled
    /// batch. sled 0.34 writes and syncs its log buffer twice for every batch (before and
    /// after it), which cost more than the rest of a Score; plain inserts cost none of that.
    /// The log entry goes first: sled recovers a prefix of its log, so a crash between the
    /// writes can only leave the last log entry without its record, which
    /// `remove_torn_tail` takes away before anything reads the log. With a journal, the
    /// writes go to the journal and the tail, and the sled writer makes them in that order.
    pub fn insert_payment(
        &self,
        seq: u64,
        decision: &Decision,
        feature_values: &[f64],
    ) -> Result<(), StoreError> {
        let entry = LogEntry::Payment {
            payment_id: ids(decision).0.to_owned(),
        };
        // After the record, so a crash never leaves a key pointing at nothing; one lost with
        // sled's unflushed writes is written again from the journal with the record.
        let mut after: Vec<(Vec<u8>, Vec<u8>)> = index_keys(decision)
            .into_iter()
            .map(|(key, value)| (key, value.to_vec()))
            .collect();
        if let Some(case) = opened_case(decision) {
            after.extend(crate::cases::open_keys(&case).into_iter().flatten());
        }
        self.log_then_record(
            seq,
            &[entry],
            decision,
            encode_record(decision, feature_values),
            after,
        )
    }
    /// The latest `limit` decisions involving `account` (as payer or payee) that did more
    /// than allow the payment, newest first (by event time).
    pub fn flagged(&self, account: &str, limit: usize) -> Result<Vec<Decision>, StoreError> {
        self.catch_up()?;
        let mut out = Vec::new();
        for seq in crate::search::flagged(&self.tree, account, limit)? {
            out.extend(self.by_decision_id(&decision_id(seq))?);
        }
        Ok(out)
    }

    /// One page of `ListDecisions` (see `crate::search`), newest first.
    pub fn list(
        &self,
        query: &crate::search::Query,
    ) -> Result<(Vec<DecisionSummary>, Option<crate::search::Position>), StoreError> {
        // The indexes of the decisions in the tail are written with them: applied first.
        self.catch_up()?;
        let mut loaded: HashMap<u64, Decision> = HashMap::new();
        let found = crate::search::find(&self.tree, query, |seq| {
            let Some(decision) = self.record_at(seq)? else {
                return Ok(false);
            };
            let rule = query.rule_id.as_deref();
            let fired = crate::search::fired_rules(&decision).any(|r| Some(r) == rule);
            if fired {
                loaded.insert(seq, decision);
            }
            Ok(fired)
        })?;
        let mut out = Vec::with_capacity(found.seqs.len());
        for seq in found.seqs {
            let decision = match loaded.remove(&seq) {
                Some(d) => Some(d),
                None => self.record_at(seq)?,
            };
            out.extend(decision.as_ref().map(summary));
        }
        Ok((out, found.next))
    }

    /// The payment whose log entry is at `seq`, if that entry is a payment's.
    fn payment_at(&self, seq: u64) -> Result<Option<String>, StoreError> {
        let entry = match self.tail().and_then(|t| t.at_seq(seq)) {
            Some(entry) => entry.log_entry(seq).and_then(LogEntry::decode),
            None => self
                .tree
                .get(log_key(seq))?
                .as_deref()
                .and_then(LogEntry::decode),
        };
        Ok(match entry {
            Some(LogEntry::Payment { payment_id }) => Some(payment_id),
            _ => None,
        })
    }

    /// The record of the decision at log position `seq`, feature values left packed.
    pub fn record_at(&self, seq: u64) -> Result<Option<Decision>, StoreError> {
        let Some(payment_id) = self.payment_at(seq)? else {
            return Ok(None);
        };
        let bytes = match self.tail().and_then(|t| t.record(&payment_id)) {
            Some(entry) => entry.record().unwrap_or_default().to_vec(),
            None => match self.tree.get(payment_key(&payment_id))? {
                Some(bytes) => bytes.to_vec(),
                None => return Ok(None),
            },
        };
        decode_record(&bytes)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                key: payment_id,
                reason: "record cannot be decoded".into(),
            })
    }

    /// Writes the search indexes of every record once (a store from before them had only
    /// the `n/` index of flagged decisions, which they replace): one pass over the records,
    /// the first time a store opens with this version.
    fn index_once(&self) -> Result<(), StoreError> {
        if self.tree.contains_key(crate::search::INDEXED_MARKER)? {
            return Ok(());
        }
        let mut indexed = 0usize;
        for item in self.tree.scan_prefix(PAYMENT_PREFIX) {
            let (_, bytes) = item?;
            let Some(decision) = decode_record(&bytes) else {
                continue;
            };
            for (key, value) in index_keys(&decision) {
                self.tree.insert(key, &value[..])?;
            }
            indexed += 1;
        }
        for key in self
            .tree
            .scan_prefix(crate::search::LEGACY_FLAGGED_PREFIX)
            .keys()
        {
            self.tree.remove(key?)?;
        }
        self.tree.insert(crate::search::INDEXED_MARKER, &[][..])?;
        if indexed > 0 {
            tracing::info!(
                indexed,
                "decision search indexes written for stored decisions"
            );
        }
        Ok(())
    }

    /// Removes the entries at the end of the log whose record was never written (a crash
    /// or failure inside `insert_payment` or `update_after_log`): a payment without its
    /// record, an outcome its record does not hold. Returns the first position removed.
    pub fn remove_torn_tail(&self) -> Result<Option<u64>, StoreError> {
        let mut removed = None;
        while let Some(seq) = self.last_seq()? {
            let entry = self.tree.get(log_key(seq))?;
            let recorded = match entry.as_deref().and_then(LogEntry::decode) {
                Some(LogEntry::Payment { payment_id }) => {
                    self.tree.contains_key(payment_key(&payment_id))?
                }
                Some(LogEntry::Outcome {
                    payment_id,
                    outcome,
                    reported_at_ms,
                }) => self.by_payment(&payment_id)?.is_some_and(|d| {
                    d.outcomes
                        .iter()
                        .any(|o| o.outcome == outcome && o.reported_at_ms == reported_at_ms)
                }),
                // Not ours to judge: recovery reports it.
                None => true,
            };
            if recorded {
                break;
            }
            self.tree.remove(&log_key(seq)[..])?;
            removed = Some(seq);
        }
        Ok(removed)
    }

    /// Replaces a stored decision, as read from this store (e.g. with an outcome added);
    /// its ids never change.
    pub fn stage_update(&self, batch: &mut sled::Batch, decision: &Decision) {
        batch.insert(payment_key(ids(decision).0), self.encode_update(decision));
    }

    /// Writes log `entries` from position `seq` on and then replaces the stored decision, as
    /// `stage_update`, without a sled batch (see `insert_payment`): a crash in between
    /// leaves only log entries the record does not know, which `remove_torn_tail` removes.
    pub fn update_after_log(
        &self,
        seq: u64,
        entries: &[LogEntry],
        decision: &Decision,
    ) -> Result<(), StoreError> {
        let record = self.encode_update(decision);
        self.log_then_record(seq, entries, decision, record, Vec::new())
    }

    /// Log entries from `seq` on, then `decision`'s record, then `after`, as plain inserts in
    /// that order: into sled, or with a journal into the journal and the sled writer's tail.
    fn log_then_record(
        &self,
        seq: u64,
        entries: &[LogEntry],
        decision: &Decision,
        record: Vec<u8>,
        after: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let encoded: Vec<Vec<u8>> = entries.iter().map(LogEntry::encode).collect();
        let payment_id = ids(decision).0;
        if let Some((journal, tail)) = &self.journal {
            let payload = encode_journal(seq, &encoded, payment_id, &record);
            let mut writes = Vec::with_capacity(encoded.len() + 1 + after.len());
            writes.extend(
                (seq..)
                    .zip(encoded)
                    .map(|(seq, entry)| (log_key(seq).to_vec(), entry)),
            );
            writes.push((payment_key(payment_id), record));
            writes.extend(after);
            // Into the tail first: the journal's count of an entry never runs ahead of the
            // tail's (see `crate::commit`).
            tail.push(
                &self.tree,
                Entry {
                    seq,
                    logs: entries.len(),
                    payment_id: payment_id.to_owned(),
                    writes,
                },
            );
            journal.append(&payload);
            return Ok(());
        }
        let written = (seq..).zip(&encoded).try_for_each(|(seq, entry)| {
            self.tree.insert(&log_key(seq)[..], &entry[..]).map(|_| ())
        });
        let written = written.and_then(|()| {
            self.tree
                .insert(payment_key(payment_id), &record[..])
                .map(|_| ())
        });
        let written = written.and_then(|()| {
            after
                .into_iter()
                .try_for_each(|(key, value)| self.tree.insert(key, value).map(|_| ()))
        });
        if let Err(e) = written {
            // Best effort; should this fail too, the next recovery removes them.
            for seq in seq..seq + entries.len() as u64 {
                let _ = self.tree.remove(&log_key(seq)[..]);
            }
            return Err(e.into());
        }
        Ok(())
    }

    fn encode_update(&self, decision: &Decision) -> Vec<u8> {
        let mut decision = decision.clone();
        if self.feature_names(&decision.feature_set_version).is_err() {
            // A record from before packing: its own names become the version's.
            let names: Vec<String> = decision.features.iter().map(|f| f.name.clone()).collect();
            let _ = self.register_feature_set(&decision.feature_set_version, &names);
        }
        let values: Vec<f64> = decision.features.drain(..).map(|f| f.value).collect();
        encode_record(&decision, &values)
    }

    /// For callers that read or write the tree directly (cases, audit, accounts, decisions
    /// inside a multi-tree batch): the tail is applied first, so sled holds every decision
    /// made so far. Should that fail, the failure is logged and the tree returned as it is
    /// (the sled writer keeps trying; the journal holds the writes).
    pub fn tree(&self) -> &sled::Tree {
        if let Err(e) = self.catch_up() {
            tracing::warn!(error = %e, "cannot apply the journaled tail to sled before a direct read");
        }
        &self.tree
    }

    /// The tree as it is, tail not applied (for who adds the tail's keys themselves).
    pub(crate) fn sled_tree(&self) -> &sled::Tree {
        &self.tree
    }

    pub fn apply(&self, batch: sled::Batch) -> Result<(), StoreError> {
        Ok(self.tree.apply_batch(batch)?)
    }

    pub fn len(&self) -> usize {
        self.tree().scan_prefix(b"p/").count()
    }

    pub fn is_empty(&self) -> bool {
        self.tree().scan_prefix(b"p/").next().is_none()
    }
}

/// One event that changed feature state, in the order the engine applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    Payment {
        payment_id: String,
    },
    Outcome {
        payment_id: String,
        /// `proto::OutcomeKind` number.
        outcome: i32,
        reported_at_ms: i64,
    },
}

fn log_key(seq: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[..2].copy_from_slice(b"s/");
    key[2..].copy_from_slice(&seq.to_be_bytes());
    key
}

impl LogEntry {
    fn encode(&self) -> Vec<u8> {
        match self {
            LogEntry::Payment { payment_id } => [b"P", payment_id.as_bytes()].concat(),
            LogEntry::Outcome {
                payment_id,
                outcome,
                reported_at_ms,
            } => [
                &b"O"[..],
                &outcome.to_le_bytes(),
                &reported_at_ms.to_le_bytes(),
                payment_id.as_bytes(),
            ]
            .concat(),
        }
    }

    fn decode(bytes: &[u8]) -> Option<LogEntry> {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        match bytes.split_first()? {
            (b'P', id) => Some(LogEntry::Payment {
                payment_id: text(id)?,
            }),
            (b'O', rest) if rest.len() >= 12 => Some(LogEntry::Outcome {
                outcome: i32::from_le_bytes(rest[..4].try_into().ok()?),
                reported_at_ms: i64::from_le_bytes(rest[4..12].try_into().ok()?),
                payment_id: text(&rest[12..])?,
            }),
            _ => None,
        }
    }
}

impl DecisionStore {
    /// Adds log entry `seq` to `batch`.
    pub fn stage_log(&self, batch: &mut sled::Batch, seq: u64, entry: &LogEntry) {
        batch.insert(&log_key(seq)[..], entry.encode());
    }

    /// The highest sequence number in the log (the tail's included).
    pub fn last_seq(&self) -> Result<Option<u64>, StoreError> {
        let in_sled = match self.tree.scan_prefix(b"s/").next_back() {
            Some(item) => {
                let (key, _) = item?;
                seq_of(&key)
            }
            None => None,
        };
        Ok(in_sled.max(self.tail().and_then(|t| t.last_seq())))
    }

    /// Log entries after `seq` (all of them for `None`), in order.
    pub fn log_after(
        &self,
        seq: Option<u64>,
    ) -> impl Iterator<Item = Result<(u64, LogEntry), StoreError>> + '_ {
        let start = seq.map_or(log_key(0), |s| log_key(s.saturating_add(1)));
        self.tree
            .range(start..)
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(b"s/")))
            .map(|item| {
                let (key, value) = item?;
                let corrupt = || StoreError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "not a log entry".into(),
                };
                let seq = seq_of(&key).ok_or_else(corrupt)?;
                let entry = LogEntry::decode(&value).ok_or_else(corrupt)?;
                Ok((seq, entry))
            })
    }
}

/// The bytes of a `StoredDecision`, written field by field so the hot path copies neither
/// the decision nor the values into one first.
fn encode_record(decision: &Decision, feature_values: &[f64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(decision.encoded_len() + 8 * feature_values.len() + 16);
    prost::encoding::message::encode(STORED_DECISION_FIELD, decision, &mut bytes);
    prost::encoding::double::encode_packed(STORED_VALUES_FIELD, feature_values, &mut bytes);
    bytes
}

/// `seq | entry count | (len, entry)... | payment id len, payment id | record`, lengths as
/// u32 LE.
fn encode_journal(seq: u64, entries: &[Vec<u8>], payment_id: &str, record: &[u8]) -> Vec<u8> {
    let parts = entries.iter().map(|e| 4 + e.len()).sum::<usize>();
    let mut out = Vec::with_capacity(16 + parts + payment_id.len() + record.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for part in entries
        .iter()
        .map(|e| &e[..])
        .chain([payment_id.as_bytes()])
    {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(record);
    out
}

/// A decoded journal entry: what `log_then_record` wrote.
struct Journaled<'a> {
    seq: u64,
    entries: Vec<&'a [u8]>,
    payment_id: &'a str,
    record: &'a [u8],
}

fn decode_journal(bytes: &[u8]) -> Option<Journaled<'_>> {
    let (seq, rest) = bytes.split_at_checked(8)?;
    let (count, mut rest) = rest.split_at_checked(4)?;
    let mut part = || {
        let (len, tail) = rest.split_at_checked(4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let (part, tail) = tail.split_at_checked(len)?;
        rest = tail;
        Some(part)
    };
    let count = u32::from_le_bytes(count.try_into().ok()?);
    let entries = (0..count).map(|_| part()).collect::<Option<Vec<_>>>()?;
    let payment_id = std::str::from_utf8(part()?).ok()?;
    Some(Journaled {
        seq: u64::from_le_bytes(seq.try_into().ok()?),
        entries,
        payment_id,
        record: rest,
    })
}

/// Outcomes only ever get added to a record, so their number orders its versions.
/// A stored record as written (feature values left packed).
fn decode_record(record: &[u8]) -> Option<Decision> {
    let stored = StoredDecision::decode(record).ok()?;
    match stored.decision {
        Some(decision) => Some(decision),
        None => Decision::decode(record).ok(),
    }
}

/// The search index entries of a decision (`crate::search`).
fn index_keys(decision: &Decision) -> Vec<(Vec<u8>, [u8; 3])> {
    let seq = decision
        .response
        .as_ref()
        .and_then(|r| seq_of_decision(&r.decision_id));
    seq.map_or_else(Vec::new, |seq| crate::search::entries(decision, seq))
}

/// What a decision search shows of a record.
fn summary(d: &Decision) -> DecisionSummary {
    let response = d.response.clone().unwrap_or_default();
    let request = d.request.clone().unwrap_or_default();
    let rules = |reasons: &[crate::proto::Reason]| -> Vec<String> {
        reasons
            .iter()
            .filter(|r| matches!(r.source(), ReasonSource::Rule | ReasonSource::List))
            .map(|r| r.id.clone())
            .collect()
    };
    DecisionSummary {
        rule_ids: rules(&response.reasons),
        shadow_rule_ids: rules(&d.shadow_reasons),
        decision_id: response.decision_id,
        payment_id: response.payment_id,
        event_time_ms: request.event_time_ms,
        payer_account_id: request.payer.map(|p| p.account_id).unwrap_or_default(),
        payee_account_id: request.payee.map(|p| p.account_id).unwrap_or_default(),
        amount_fen: request.amount_fen,
        action: response.action,
        risk_score: response.risk_score,
        model_probability: response.model_probability,
        outcomes: d.outcomes.iter().map(|o| o.outcome).collect(),
        scene: request.scene,
    }
}

/// The review case a decision opens (see `crate::cases`), written with its record.
fn opened_case(decision: &Decision) -> Option<crate::proto::Case> {
    let seq = seq_of_decision(&decision.response.as_ref()?.decision_id)?;
    crate::cases::opened_by(decision, seq)
}

fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        key.strip_prefix(b"s/")?.try_into().ok()?,
    ))
}

fn ids(decision: &Decision) -> (&str, &str) {
    decision
        .response
        .as_ref()
        .map(|r| (r.payment_id.as_str(), r.decision_id.as_str()))
        .unwrap_or(("", ""))
}

fn names_key(version: &str) -> Vec<u8> {
    [b"f/", version.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Action, ScoreResponse};

    #[test]
    fn insert_then_read_by_both_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = DecisionStore::open(&db).unwrap();
        let decision = Decision {
            response: Some(ScoreResponse {
                decision_id: decision_id(7),
                payment_id: "p-1".into(),
                ..Default::default()
            }),
            feature_set_version: "fs1".into(),
            ..Default::default()
        };
        let names = ["payer.count_1h".to_string(), "payee.amount_24h".to_string()];
        store.register_feature_set("fs1", &names).unwrap();
        let mut batch = sled::Batch::default();
        store.stage_insert(&mut batch, &decision, &[3.0, 2_500.0]);
        let entry = LogEntry::Payment {
            payment_id: "p-1".into(),
        };
        store.stage_log(&mut batch, 7, &entry);
        store.apply(batch).unwrap();
        let read = store.by_payment("p-1").unwrap().unwrap();
        assert_eq!(read.features.len(), 2);
        assert_eq!(read.features[1].name, "payee.amount_24h");
        assert_eq!(read.features[1].value, 2_500.0);
        assert_eq!(
            Decision {
                features: Vec::new(),
                ..read.clone()
            },
            decision
        );
        assert_eq!(decision_id(7), "d-00000000000000000007");
        assert_eq!(
            store.by_decision_id(&decision_id(7)).unwrap(),
            Some(read.clone())
        );
        // Ids that name no payment, or another payment's log position, find nothing.
        assert_eq!(store.by_decision_id(&decision_id(8)).unwrap(), None);
        assert_eq!(store.by_decision_id("d-1").unwrap(), None);
        assert_eq!(store.by_payment("p-2").unwrap(), None);
        assert_eq!(store.len(), 1);

        // An update keeps the values and the names.
        let mut batch = sled::Batch::default();
        store.stage_update(&mut batch, &read);
        store.apply(batch).unwrap();
        assert_eq!(store.by_payment("p-1").unwrap(), Some(read));
    }

    #[test]
    fn a_record_written_before_packing_reads_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = DecisionStore::open(&db).unwrap();
        let legacy = Decision {
            response: Some(ScoreResponse {
                decision_id: "d-old".into(),
                payment_id: "p-old".into(),
                ..Default::default()
            }),
            features: vec![Evidence {
                name: "payer.count_1h".into(),
                value: 4.0,
                ..Evidence::default()
            }],
            feature_set_version: "old".into(),
            ..Default::default()
        };
        store
            .tree
            .insert(payment_key("p-old"), legacy.encode_to_vec())
            .unwrap();
        store
            .tree
            .insert(legacy_decision_key("d-old"), "p-old")
            .unwrap();
        assert_eq!(store.by_payment("p-old").unwrap(), Some(legacy.clone()));
        assert_eq!(store.by_decision_id("d-old").unwrap(), Some(legacy.clone()));
        let mut batch = sled::Batch::default();
        store.stage_update(&mut batch, &legacy);
        store.apply(batch).unwrap();
        assert_eq!(store.by_payment("p-old").unwrap(), Some(legacy));
    }

    #[test]
    fn log_entries_come_back_in_order_after_a_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = DecisionStore::open(&db).unwrap();
        let entries = [
            LogEntry::Payment {
                payment_id: "a".into(),
            },
            LogEntry::Outcome {
                payment_id: "a".into(),
                outcome: 1,
                reported_at_ms: -5,
            },
            LogEntry::Payment {
                payment_id: "b".into(),
            },
        ];
        let mut batch = sled::Batch::default();
        for (i, e) in entries.iter().enumerate() {
            store.stage_log(&mut batch, 255 + i as u64, e);
        }
        store.apply(batch).unwrap();
        assert_eq!(store.last_seq().unwrap(), Some(257));
        let all: Vec<_> = store.log_after(None).map(Result::unwrap).collect();
        assert_eq!(all.len(), 3);
        let after: Vec<_> = store.log_after(Some(255)).map(Result::unwrap).collect();
        assert_eq!(
            after,
            vec![(256, entries[1].clone()), (257, entries[2].clone())]
        );
    }

    /// With a journal, a decision is in the journal and the tail, not sled, until the sled
    /// writer applies it; every read finds it meanwhile, and a search applies it first.
    #[test]
    fn journaled_decisions_are_read_from_the_tail_before_sled_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let mut store = DecisionStore::open(&db).unwrap();
        store.register_feature_set("fs1", &[]).unwrap();
        let journal_dir = dir.path().join("journal");
        std::fs::create_dir(&journal_dir).unwrap();
        let journal = Journal::create(&journal_dir).unwrap();
        let tail = Tail::new(100, Arc::default());
        store.set_journal(journal.clone(), Arc::clone(&tail));
        let decision = Decision {
            response: Some(ScoreResponse {
                decision_id: decision_id(0),
                payment_id: "p-0".into(),
                action: Action::Review as i32,
                ..Default::default()
            }),
            request: Some(crate::proto::ScoreRequest {
                payment_id: "p-0".into(),
                event_time_ms: 1_000,
                payer: Some(crate::proto::Payer {
                    account_id: "payer".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            feature_set_version: "fs1".into(),
            ..Default::default()
        };
        store.insert_payment(0, &decision, &[]).unwrap();
        let raw = store.sled_tree();
        assert!(!raw.contains_key(payment_key("p-0")).unwrap());
        assert!(!raw.contains_key(log_key(0)).unwrap());
        assert_eq!(store.by_payment("p-0").unwrap().as_ref(), Some(&decision));
        assert_eq!(
            store.by_decision_id(&decision_id(0)).unwrap(),
            Some(decision.clone())
        );
        assert_eq!(store.last_seq().unwrap(), Some(0));
        assert_eq!(journal.appended(), 1);

        // An outcome: a newer record in the tail, read in place of the first.
        let mut reported = decision.clone();
        reported.outcomes.push(crate::proto::Outcome {
            outcome: 1,
            reported_at_ms: 2_000,
            recorded_at_ms: 2_000,
        });
        store.update_after_log(1, &[], &reported).unwrap();
        assert_eq!(store.by_payment("p-0").unwrap(), Some(reported.clone()));

        // A search needs sled's indexes: the tail is applied first, in order.
        let query = crate::search::Query {
            account: Some("payer".into()),
            page_size: 10,
            ..Default::default()
        };
        let (found, _) = store.list(&query).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].outcomes, vec![1]);
        assert!(tail.is_empty());
        assert!(raw.contains_key(log_key(0)).unwrap());
        assert_eq!(store.by_payment("p-0").unwrap(), Some(reported));
        // The journal holds both entries: what `restore` rewrites after a crash.
        journal.sync().unwrap();
        assert_eq!(crate::journal::read(&journal_dir).unwrap().len(), 2);
    }

    #[test]
    fn a_store_from_before_the_search_indexes_is_indexed_once_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = DecisionStore::open(&db).unwrap();
        store.register_feature_set("fs1", &[]).unwrap();
        let decision = Decision {
            response: Some(ScoreResponse {
                decision_id: decision_id(3),
                payment_id: "p-3".into(),
                action: Action::Review as i32,
                risk_score: 61,
                ..Default::default()
            }),
            request: Some(crate::proto::ScoreRequest {
                payment_id: "p-3".into(),
                event_time_ms: 5_000,
                payer: Some(crate::proto::Payer {
                    account_id: "payer".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            feature_set_version: "fs1".into(),
            ..Default::default()
        };
        store.insert_payment(3, &decision, &[]).unwrap();
        // What an older version left: the record, its log entry and an `n/` key only.
        for prefix in [&b"i/"[..], b"j/", b"T/"] {
            for key in store.tree.scan_prefix(prefix).keys() {
                store.tree.remove(key.unwrap()).unwrap();
            }
        }
        store.tree.remove(crate::search::INDEXED_MARKER).unwrap();
        store
            .tree
            .insert(b"n/\x00\x05payer\x00\x00\x00\x00\x00\x00\x00\x03", &[][..])
            .unwrap();
        let query = crate::search::Query {
            account: Some("payer".into()),
            page_size: 10,
            ..Default::default()
        };
        assert!(store.list(&query).unwrap().0.is_empty());

        let store = DecisionStore::open(&db).unwrap();
        let (found, next) = store.list(&query).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].payment_id.as_str(), found[0].risk_score),
            ("p-3", 61)
        );
        assert_eq!(next, None);
        assert_eq!(store.flagged("payer", 10).unwrap().len(), 1);
        assert_eq!(store.tree.scan_prefix(b"n/").count(), 0);
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
