//! Group commit: many writers wait on one sled flush, so durability costs one fsync per
//! batch of decisions instead of one per decision.
//!
//! A writer applies its changes to sled, takes a ticket, and awaits it; a dedicated thread
//! flushes whatever has been written and releases every ticket the flush covered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("storage flush failed: {0}")]
    Flush(String),
    #[error("the committer has stopped")]
    Stopped,
}

#[derive(Debug, Clone, Default)]
struct Progress {
    flushed: u64,
    /// Tickets up to here were in a flush that failed.
    failed_through: u64,
    last_error: Option<String>,
}

struct Shared {
    requested: AtomicU64,
    wake: Mutex<bool>,
    wake_cv: Condvar,
    progress: watch::Sender<Progress>,
}

/// Handle shared by writers and waiters; `stop` flushes once more and joins the thread.
#[derive(Clone)]
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl GroupCommit {
    /// Starts the flushing thread. `gather` is how long it lingers after being woken so that
    /// more writes join the same flush; zero means flush at once.
    pub fn start(db: sled::Db, gather: Duration) -> std::io::Result<GroupCommit> {
        let (progress, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            requested: AtomicU64::new(0),
            wake: Mutex::new(false),
            wake_cv: Condvar::new(),
            progress,
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fengkong-commit".into())
            .spawn(move || flush_loop(&db, &thread_shared, gather))?;
        Ok(GroupCommit {
            shared,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Call after a write has been applied to sled; the ticket is durable once `wait` returns.
    pub fn ticket(&self) -> u64 {
        let ticket = self.shared.requested.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(mut pending) = self.shared.wake.lock() {
            *pending = true;
            self.shared.wake_cv.notify_one();
        }
        ticket
    }

    /// Resolves once a flush that started after the ticket was taken has finished.
    pub async fn wait(&self, ticket: u64) -> Result<(), CommitError> {
        let mut rx = self.shared.progress.subscribe();
        let progress = rx
            .wait_for(|p| p.flushed >= ticket || p.failed_through >= ticket)
            .await
            .map_err(|_| CommitError::Stopped)?
            .clone();
        if progress.flushed >= ticket {
            Ok(())
        } else {
            Err(CommitError::Flush(progress.last_error.unwrap_or_default()))
        }
    }

    /// Blocking form of `wait`, for callers outside the async runtime.
    pub fn wait_blocking(&self, ticket: u64) -> Result<(), CommitError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| CommitError::Flush(e.to_string()))?;
        rt.block_on(self.wait(ticket))
    }

    /// Flushes what is pending and stops the thread. Safe to call more than once.
    pub fn stop(&self) {
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            // u64::MAX asks the loop for one last flush that releases every ticket, then exit.
            self.shared.requested.store(u64::MAX, Ordering::SeqCst);
            if let Ok(mut pending) = self.shared.wake.lock() {
                *pending = true;
                self.shared.wake_cv.notify_one();
            }
            let _ = handle.join();
        }
    }
}

fn flush_loop(db: &sled::Db, shared: &Shared, gather: Duration) {
    let mut done = 0u64;
    loop {
        {
            let Ok(mut pending) = shared.wake.lock() else {
                return;
            };
            while !*pending {
                pending = match shared.wake_cv.wait(pending) {
                    Ok(p) => p,
                    Err(_) => return,
                };
            }
            *pending = false;
        }
        if !gather.is_zero() {
            std::thread::sleep(gather);
        }
        let target = shared.requested.load(Ordering::SeqCst);
        if target <= done {
            continue;
        }
        let result = db.flush();
        shared.progress.send_modify(|p| match &result {
            Ok(_) => p.flushed = target,
            Err(e) => {
                p.failed_through = target;
                p.last_error = Some(e.to_string());
            }
        });
        if let Err(e) = &result {
            tracing::error!(error = %e, "sled flush failed; waiting writers get an error");
        }
        done = target;
        if target == u64::MAX {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_resolve_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let gc = GroupCommit::start(db.clone(), Duration::ZERO).unwrap();
        db.insert("k", "v").unwrap();
        let t1 = gc.ticket();
        let t2 = gc.ticket();
        gc.wait(t2).await.unwrap();
        gc.wait(t1).await.unwrap();
        gc.stop();
        gc.stop();
        assert!(matches!(
            gc.wait(t2 + 5).await,
            Ok(()) | Err(CommitError::Stopped)
        ));
    }
}
