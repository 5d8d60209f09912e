//! Group commit: many writers wait on one sync, so durability costs one fsync per batch of
//! decisions instead of one per decision.
//!
//! A writer leaves a callback after its write; a dedicated thread makes whatever has been
//! written durable and then calls every callback that covered. Writes the journal holds
//! (Scores, outcomes) need only the journal synced; the committer then tells the sled
//! writer (`crate::writer`) which entries are durable, and the writer applies them to sled
//! behind it. Any other write (a direct sled batch) needs a sled flush. Another thread,
//! every second, off the answering path, starts a new journal file and, once every entry
//! appended before it has been applied to sled, flushes sled and deletes the older files:
//! until then they are the only durable copy of the entries sled has not got.
//!
//! Should the journal fail, the entries it could not take are applied to sled and sled is
//! flushed before anyone is answered, as without a journal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::journal::Journal;
use crate::writer::Tail;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("storage flush failed: {0}")]
    Flush(String),
    #[error("the committer has stopped")]
    Stopped,
}

/// How often sled is flushed so journal files can go: the journal stays small and a
/// restart has little to restore.
const SLED_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Called on the committer thread once the write is durable (or cannot be made so).
pub type Done = Box<dyn FnOnce(Result<(), CommitError>) + Send>;

#[derive(Default)]
struct Queue {
    /// Writes not yet durable, oldest first.
    waiting: VecDeque<Done>,
    /// Whether one of them needs sled flushed (its write is not in the journal).
    flush_sled: bool,
    stopping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Wakes the background flusher early, to stop.
    stop_flusher: Condvar,
    /// The committer is between rounds, waiting for work: only then does it need waking.
    idle: AtomicBool,
}

/// The journal's entries that sled may not have yet, and the tree they go to.
#[derive(Clone)]
pub struct Behind {
    pub tail: Arc<Tail>,
    pub tree: sled::Tree,
}

impl Behind {
    fn apply_all(&self) -> Result<(), String> {
        self.tail
            .apply_all(&self.tree)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Handle shared by writers; `stop` makes pending writes durable and joins the threads.
#[derive(Clone)]
pub struct GroupCommit {
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl GroupCommit {
    /// Starts the committer thread. `gather` is how long it lingers after being woken so
    /// that more writes join the same flush; zero means flush at once. Without a journal
    /// every write flushes sled. `behind` is the sled writer's tail of the journal's entries,
    /// when sled is written behind the journal.
    pub fn start(
        db: sled::Db,
        journal: Option<Journal>,
        behind: Option<Behind>,
        gather: Duration,
    ) -> std::io::Result<GroupCommit> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
            stop_flusher: Condvar::new(),
            idle: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        if let Some(journal) = journal.clone() {
            let (db, shared, behind) = (db.clone(), Arc::clone(&shared), behind.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("fengkong-flush".into())
                    .spawn(move || flush_loop(&db, &journal, behind.as_ref(), &shared))?,
            );
        }
        let thread_shared = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("fengkong-commit".into())
                .spawn(move || {
                    commit_loop(
                        &db,
                        journal.as_ref(),
                        behind.as_ref(),
                        &thread_shared,
                        gather,
                    )
                })?,
        );
        Ok(GroupCommit {
            shared,
            threads: Arc::new(Mutex::new(threads)),
        })
    }

    /// Call after a write has been applied to sled (and, if `journaled`, appended to the
    /// journal); `done` runs on the committer thread once the write is durable. Answering
    /// from there wakes the caller once per write instead of twice.
    pub fn when_durable(
        &self,
        journaled: bool,
        done: impl FnOnce(Result<(), CommitError>) + Send + 'static,
    ) {
        self.when_all_durable(vec![(journaled, Box::new(done))]);
    }

    /// `when_durable` for a batch of writes: one lock and at most one wakeup for all.
    pub fn when_all_durable(&self, writes: Vec<(bool, Done)>) {
        if writes.is_empty() {
            return;
        }
        let mut queue = lock(&self.shared.queue);
        if queue.stopping {
            drop(queue);
            for (_, done) in writes {
                done(Err(CommitError::Stopped));
            }
            return;
        }
        for (journaled, done) in writes {
            queue.waiting.push_back(done);
            queue.flush_sled |= !journaled;
        }
        drop(queue);
        if self.shared.idle.load(Ordering::SeqCst) {
            self.shared.wake.notify_one();
        }
    }

    /// Makes what is pending durable and stops the threads. Safe to call more than once.
    pub fn stop(&self) {
        let threads = std::mem::take(&mut *lock(&self.threads));
        lock(&self.shared.queue).stopping = true;
        self.shared.wake.notify_one();
        self.shared.stop_flusher.notify_one();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn commit_loop(
    db: &sled::Db,
    journal: Option<&Journal>,
    behind: Option<&Behind>,
    shared: &Shared,
    gather: Duration,
) {
    let mut durable = Durable {
        db,
        journal,
        behind,
        trusted: true,
    };
    loop {
        let mut queue = lock(&shared.queue);
        while queue.waiting.is_empty() && !queue.stopping {
            // `idle` is set under the lock a writer takes to queue, so no wakeup is lost.
            shared.idle.store(true, Ordering::SeqCst);
            queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
            shared.idle.store(false, Ordering::SeqCst);
        }
        if queue.waiting.is_empty() {
            return;
        }
        if !gather.is_zero() {
            drop(queue);
            std::thread::sleep(gather);
            queue = lock(&shared.queue);
        }
        // Every write these callers made is in sled (and the journal) by now.
        let batch = std::mem::take(&mut queue.waiting);
        let flush_sled = std::mem::take(&mut queue.flush_sled);
        drop(queue);
        let result = durable.make(flush_sled).map_err(|e| {
            tracing::error!(error = %e, "flush failed; waiting writers get an error");
            CommitError::Flush(e)
        });
        for done in batch {
            done(result.clone());
        }
    }
}

/// Every second: start a new journal file; once every entry appended before it is in sled
/// (applied by the sled writer), flush sled and delete the files before the new one. Until
/// then the retired files wait (a lagging writer only keeps more journal on disk). A
/// failure only postpones this.
fn flush_loop(db: &sled::Db, journal: &Journal, behind: Option<&Behind>, shared: &Shared) {
    // A retired generation and how many entries had been appended when it was retired.
    let mut retiring: Option<(u64, u64)> = None;
    loop {
        let queue = lock(&shared.queue);
        let (queue, _) = shared
            .stop_flusher
            .wait_timeout_while(queue, SLED_FLUSH_EVERY, |q| !q.stopping)
            .unwrap_or_else(|p| p.into_inner());
        if queue.stopping {
            return;
        }
        drop(queue);
        let (generation, appended) = match retiring {
            Some(retired) => retired,
            None => {
                let retired = match journal.is_empty() {
                    true => Ok(journal.generation()),
                    false => journal.rotate(),
                };
                // Counted after the rotation: every entry in an older file was appended
                // (and pushed to the tail) before it.
                match retired {
                    Ok(generation) => (generation, journal.appended()),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start a new journal file; the journal keeps its files");
                        continue;
                    }
                }
            }
        };
        if behind.is_some_and(|b| b.tail.applied() < appended) {
            retiring = Some((generation, appended));
            continue;
        }
        retiring = None;
        let flushed = db
            .flush()
            .map_err(|e| e.to_string())
            .and_then(|_| journal.remove_before(generation).map_err(|e| e.to_string()));
        if let Err(e) = flushed {
            tracing::warn!(error = %e, "background sled flush failed; the journal keeps its files");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected data stays consistent across a panicking callback.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Durable<'a> {
    db: &'a sled::Db,
    journal: Option<&'a Journal>,
    behind: Option<&'a Behind>,
    /// False after a journal write failed, until a new file is started: the old one's tail
    /// may hold a torn entry, and nothing may follow it.
    trusted: bool,
}

impl Durable<'_> {
    /// Makes every write so far durable: syncs the journal, and flushes sled when asked or
    /// when the journal cannot be used.
    fn make(&mut self, mut flush_sled: bool) -> Result<(), String> {
        let Some(journal) = self.journal else {
            return self.db.flush().map(drop).map_err(|e| e.to_string());
        };
        if !self.trusted {
            match journal.rotate() {
                Ok(_) => self.trusted = true,
                Err(e) => tracing::warn!(error = %e, "cannot start a new journal file"),
            }
        }
        if !self.trusted {
            journal.discard();
            flush_sled = true;
        } else if let Err(e) = journal.sync() {
            tracing::warn!(error = %e, "journal write failed; flushing sled instead");
            self.trusted = false;
            flush_sled = true;
        }
        if flush_sled {
            // The entries the journal could not take are only in the tail: into sled first.
            if let Some(behind) = self.behind {
                behind.apply_all()?;
            }
            self.db.flush().map_err(|e| e.to_string())?;
        } else if let Some(behind) = self.behind {
            behind.tail.mark_durable(journal.synced());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn durable(gc: &GroupCommit, journaled: bool) -> Result<(), CommitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        gc.when_durable(journaled, move |r| {
            let _ = tx.send(r);
        });
        rx.await.unwrap()
    }

    #[tokio::test]
    async fn writes_are_answered_once_flushed_and_after_stop_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let gc = GroupCommit::start(db.clone(), None, None, Duration::ZERO).unwrap();
        db.insert("k", "v").unwrap();
        let (a, b) = tokio::join!(durable(&gc, false), durable(&gc, true));
        a.unwrap();
        b.unwrap();
        gc.stop();
        gc.stop();
        assert!(matches!(
            durable(&gc, false).await,
            Err(CommitError::Stopped)
        ));
    }

    #[tokio::test]
    async fn journaled_writes_sync_the_journal_and_a_background_flush_retires_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let path = dir.path().join("journal");
        std::fs::create_dir(&path).unwrap();
        let journal = Journal::create(&path).unwrap();
        let gc =
            GroupCommit::start(db.clone(), Some(journal.clone()), None, Duration::ZERO).unwrap();
        db.insert("k", "v").unwrap();
        journal.append(b"k=v");
        durable(&gc, true).await.unwrap();
        assert_eq!(crate::journal::read(&path).unwrap(), vec![b"k=v".to_vec()]);
        db.insert("k2", "v2").unwrap();
        durable(&gc, false).await.unwrap();
        // The background flush retires the file within a second or so.
        let start = std::time::Instant::now();
        while !crate::journal::read(&path).unwrap().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "journal never retired"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gc.stop();
    }
}
