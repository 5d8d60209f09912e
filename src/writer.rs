//! The sled writer: applies committed journal entries to sled behind the scoring thread.
//!
//! With a journal, the scoring thread writes a decision to memory and the journal only
//! (`DecisionStore::insert_payment`): the entry goes into the [`Tail`], a bounded in-memory
//! list of what is journaled and not yet in sled, and every read of a decision looks there
//! before sled. Once the group committer has synced the journal it marks the entries
//! durable (`Tail::mark_durable`); the writer thread wakes once per committed batch and
//! applies them to sled in log order as plain inserts (log entries, record, search index,
//! opened case: the order `remove_torn_tail` relies on), many entries per wakeup, then drops
//! them from the tail.
//!
//! Anything that needs sled itself complete calls [`Tail::apply`] first, on its own thread:
//! a direct sled batch of the engine (account changes, cases, appeals), a search over the
//! indexes, a feature checkpoint (which must never be in sled ahead of the log entries it
//! covers), the journal's retirement. One lock orders every application, so entries reach
//! sled exactly once and in log order whoever applies them. An entry applied before it is
//! durable is harmless: it is as if sled had been written first, as it was before this
//! module; the journal still decides what was acknowledged.
//!
//! The tail is bounded (`sled_tail_max_entries`): when it is full, the scoring thread
//! applies the oldest run itself before adding more (backpressure: it slows to sled's speed
//! and loses nothing). `fengkong_sled_tail_entries` shows the lag, and
//! `fengkong_sled_tail_full_total` how often the bound was hit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::telemetry::Telemetry;

/// Most entries one run of the writer applies before it lets the others at the tail.
const RUN: usize = 4096;
/// After a failed sled write the writer tries again this much later (entries stay in the
/// tail meanwhile, reads go on finding them there).
const RETRY: Duration = Duration::from_millis(100);

/// One journal entry as sled will hold it: its writes, in the order they must land.
pub(crate) struct Entry {
    /// Log position of the first log entry (the log entries are the first `logs` writes).
    pub seq: u64,
    pub logs: usize,
    pub payment_id: String,
    /// `s/` keys, then the record (`p/`), then search index and case keys.
    pub writes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The encoded record this entry writes.
    pub fn record(&self) -> Option<&[u8]> {
        self.writes.get(self.logs).map(|(_, v)| &v[..])
    }

    /// The encoded log entry at position `seq`, if this entry writes it.
    pub fn log_entry(&self, seq: u64) -> Option<&[u8]> {
        let at = usize::try_from(seq.checked_sub(self.seq)?).ok()?;
        (at < self.logs).then(|| &self.writes[at].1[..])
    }
}

#[derive(Default)]
struct State {
    /// Entries not yet applied to sled, oldest first; `entries[0]` is number `first` of all
    /// the entries ever pushed.
    entries: VecDeque<Arc<Entry>>,
    first: u64,
    /// Entries before this number are durable in the journal.
    durable: u64,
    /// The newest entry of each payment in the tail, and the entry of each log position.
    by_payment: HashMap<String, Arc<Entry>>,
    by_seq: HashMap<u64, Arc<Entry>>,
    stopping: bool,
}

/// Shared by the decision store (reads, pushes), the committer (durable marks) and the
/// writer thread.
pub struct Tail {
    state: Mutex<State>,
    /// Wakes the writer: entries became durable, or it is time to stop.
    work: Condvar,
    /// Held while applying, so applications never interleave.
    applying: Mutex<()>,
    bound: usize,
    telemetry: Arc<Telemetry>,
}

impl Tail {
    pub fn new(bound: usize, telemetry: Arc<Telemetry>) -> Arc<Tail> {
        Arc::new(Tail {
            state: Mutex::default(),
            work: Condvar::new(),
            applying: Mutex::new(()),
            bound: bound.max(1),
            telemetry,
        })
    }

    /// Adds an entry (the caller journals it next). When the tail is full, first applies
    /// the oldest run to `tree` on the caller's thread. Should sled refuse that write, the
    /// entry is kept all the same, past the bound: memory is the only copy until the
    /// journal has it, and the writer keeps trying.
    pub(crate) fn push(&self, tree: &sled::Tree, entry: Entry) {
        if self.len() >= self.bound {
            self.telemetry.sled_tail_full.inc();
            let first = lock(&self.state).first;
            if let Err(e) = self.apply(tree, first.saturating_add(RUN as u64)) {
                tracing::warn!(error = %e, "sled refused the tail's oldest writes; keeping them in memory past the bound");
            }
        }
        let entry = Arc::new(entry);
        let mut state = lock(&self.state);
        state
            .by_payment
            .insert(entry.payment_id.clone(), Arc::clone(&entry));
        for seq in (entry.seq..).take(entry.logs) {
            state.by_seq.insert(seq, Arc::clone(&entry));
        }
        state.entries.push_back(entry);
        self.telemetry
            .sled_tail_entries
            .set(state.entries.len() as i64);
    }

    /// Entries pushed so far (a count over the tail's life, as the journal counts them).
    pub fn pushed(&self) -> u64 {
        let state = lock(&self.state);
        state.first + state.entries.len() as u64
    }

    /// Entries applied to sled so far.
    pub fn applied(&self) -> u64 {
        lock(&self.state).first
    }

    pub fn len(&self) -> usize {
        lock(&self.state).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `entries` entries are durable in the journal: the writer may apply them.
    pub fn mark_durable(&self, entries: u64) {
        let mut state = lock(&self.state);
        if entries > state.durable {
            state.durable = entries;
            self.work.notify_one();
        }
    }

    /// The newest tail entry of `payment_id`.
    pub(crate) fn record(&self, payment_id: &str) -> Option<Arc<Entry>> {
        lock(&self.state).by_payment.get(payment_id).cloned()
    }

    /// The tail entry that writes log position `seq`.
    pub(crate) fn at_seq(&self, seq: u64) -> Option<Arc<Entry>> {
        lock(&self.state).by_seq.get(&seq).cloned()
    }

    /// The highest log position in the tail.
    pub fn last_seq(&self) -> Option<u64> {
        let state = lock(&self.state);
        state
            .entries
            .iter()
            .rev()
            .find(|e| e.logs > 0)
            .map(|e| e.seq + e.logs as u64 - 1)
    }

    /// Payment ids with an entry in the tail.
    pub fn payment_ids(&self) -> Vec<String> {
        lock(&self.state).by_payment.keys().cloned().collect()
    }

    /// Applies to `tree`, in order, every entry numbered below `until` that is not in sled
    /// yet; returns how many this call applied.
    pub fn apply(&self, tree: &sled::Tree, until: u64) -> Result<usize, sled::Error> {
        let _applying = lock(&self.applying);
        let mut applied = 0;
        loop {
            // Copied out, so reads and pushes go on while sled is written.
            let run: Vec<Arc<Entry>> = {
                let state = lock(&self.state);
                let n = until.saturating_sub(state.first).min(RUN as u64) as usize;
                state.entries.iter().take(n).cloned().collect()
            };
            if run.is_empty() {
                return Ok(applied);
            }
            for entry in &run {
                for (key, value) in &entry.writes {
                    tree.insert(&key[..], &value[..])?;
                }
            }
            // Only now out of the tail: a reader that misses an entry there finds it in sled.
            let mut state = lock(&self.state);
            for entry in &run {
                state.entries.pop_front();
                state.first += 1;
                if state
                    .by_payment
                    .get(&entry.payment_id)
                    .is_some_and(|e| Arc::ptr_eq(e, entry))
                {
                    state.by_payment.remove(&entry.payment_id);
                }
                for seq in (entry.seq..).take(entry.logs) {
                    state.by_seq.remove(&seq);
                }
            }
            self.telemetry
                .sled_tail_entries
                .set(state.entries.len() as i64);
            drop(state);
            applied += run.len();
        }
    }

    /// Applies everything pushed so far.
    pub fn apply_all(&self, tree: &sled::Tree) -> Result<usize, sled::Error> {
        self.apply(tree, u64::MAX)
    }

    /// Tells the writer thread to apply what is left and exit.
    pub fn stop(&self) {
        lock(&self.state).stopping = true;
        self.work.notify_one();
    }
}

/// Starts the writer thread. `delay` holds each run back that long after its entries became
/// durable (`sled_writer_delay_ms`: a drill setting that lets the journal run far ahead of
/// sled; zero in production).
pub fn spawn(
    tree: sled::Tree,
    tail: Arc<Tail>,
    delay: Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fengkong-sled-writer".into())
        .spawn(move || write_loop(&tree, &tail, delay))
}

fn write_loop(tree: &sled::Tree, tail: &Tail, delay: Duration) {
    loop {
        let mut state = lock(&tail.state);
        while state.durable <= state.first && !state.stopping {
            state = tail.work.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.stopping {
            drop(state);
            // The committer has stopped: everything pushed is durable or was refused.
            if let Err(e) = tail.apply_all(tree) {
                tracing::error!(error = %e, "sled writer: last apply failed; the journal keeps the entries");
            }
            return;
        }
        if !delay.is_zero() {
            let (s, _) = tail
                .work
                .wait_timeout_while(state, delay, |s| !s.stopping)
                .unwrap_or_else(|p| p.into_inner());
            state = s;
            if state.stopping {
                continue;
            }
        }
        let until = state.durable;
        drop(state);
        if let Err(e) = tail.apply(tree, until) {
            tracing::warn!(error = %e, "sled writer: apply failed; retrying (the journal and the tail hold the entries)");
            std::thread::sleep(RETRY);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected data stays consistent: every change to it is a few plain assignments.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, payment: &str, record: &str) -> Entry {
        Entry {
            seq,
            logs: 1,
            payment_id: payment.into(),
            writes: vec![
                (format!("s/{seq}").into_bytes(), payment.as_bytes().to_vec()),
                (
                    format!("p/{payment}").into_bytes(),
                    record.as_bytes().to_vec(),
                ),
            ],
        }
    }

    #[test]
    fn entries_are_read_from_the_tail_until_applied_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let tail = Tail::new(100, Arc::default());
        tail.push(&tree, entry(0, "a", "a1"));
        tail.push(&tree, entry(1, "b", "b1"));
        // An outcome of `a`: a newer record, no log entry of its own.
        let mut update = entry(2, "a", "a2");
        update.logs = 0;
        update.writes.remove(0);
        tail.push(&tree, update);
        assert_eq!(tail.record("a").unwrap().record(), Some(&b"a2"[..]));
        assert_eq!(tail.at_seq(1).unwrap().log_entry(1), Some(&b"b"[..]));
        assert_eq!(tail.last_seq(), Some(1));
        assert!(tree.is_empty());

        assert_eq!(tail.apply(&tree, 1).unwrap(), 1);
        assert_eq!(tree.get("p/a").unwrap().unwrap(), b"a1"[..]);
        assert_eq!(
            tail.record("a").unwrap().record(),
            Some(&b"a2"[..]),
            "the newer version stays until it is applied too"
        );
        assert!(tail.at_seq(0).is_none());
        assert_eq!(tail.apply_all(&tree).unwrap(), 2);
        assert_eq!(tree.get("p/a").unwrap().unwrap(), b"a2"[..]);
        assert!(tail.record("a").is_none() && tail.is_empty());
        assert_eq!((tail.pushed(), tail.applied()), (3, 3));
    }

    #[test]
    fn a_full_tail_applies_its_oldest_run_before_taking_more() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let telemetry = Arc::new(Telemetry::default());
        let tail = Tail::new(2, Arc::clone(&telemetry));
        for i in 0..3 {
            tail.push(&tree, entry(i, &format!("p{i}"), "r"));
        }
        assert_eq!(tail.len(), 1);
        assert_eq!(tree.len(), 4, "two entries applied, two writes each");
        assert_eq!(telemetry.sled_tail_full.get(), 1);
    }

    #[test]
    fn the_writer_applies_durable_entries_only_and_everything_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let tail = Tail::new(100, Arc::default());
        let writer = spawn(tree.clone(), Arc::clone(&tail), Duration::ZERO).unwrap();
        tail.push(&tree, entry(0, "a", "a1"));
        tail.push(&tree, entry(1, "b", "b1"));
        tail.mark_durable(1);
        while tail.applied() < 1 {
            std::thread::yield_now();
        }
        assert!(tree.contains_key("p/a").unwrap());
        assert!(!tree.contains_key("p/b").unwrap(), "not durable yet");
        tail.stop();
        writer.join().unwrap();
        assert!(tree.contains_key("p/b").unwrap());
    }
}
