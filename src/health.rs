//! Whether the server can take writes, and saying so: free disk space on the data dir's
//! filesystem is checked every `CHECK_EVERY`, and below `min_free_disk_mib` every write is
//! refused (UNAVAILABLE, with the reason) before it reaches sled, while reads of what was
//! acknowledged keep being answered.
//!
//! Refusing early is the point: sled 0.34 latches the first I/O error it meets (ENOSPC
//! included) and fails every later call, reads too, until the process restarts. Kept away
//! from that error, the server resumes by itself once space returns. A failed durable write
//! (flush or journal error) also refuses writes until the next check finds enough space and
//! a trial flush succeeds. While writes are refused the gRPC health service says
//! NOT_SERVING, `/healthz` answers 503 with the reason, and `fengkong_writes_refused` is 1.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Status;

use crate::telemetry::Telemetry;

/// How often free space is measured.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Shared view of whether writes are taken; cheap to read on every call.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    min_free_bytes: u64,
    refusing: AtomicBool,
    /// Why writes are refused (for the status message and `/healthz`).
    reason: Mutex<Option<String>>,
    /// A durable write failed: stays refused until a check succeeds with a trial flush.
    write_failed: AtomicBool,
    telemetry: Arc<Telemetry>,
    changed: tokio::sync::watch::Sender<bool>,
}

impl Health {
    pub fn new(data_dir: &Path, min_free_disk_mib: u64, telemetry: Arc<Telemetry>) -> Health {
        let (changed, _) = tokio::sync::watch::channel(true);
        Health {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_owned(),
                min_free_bytes: min_free_disk_mib.saturating_mul(1 << 20),
                refusing: AtomicBool::new(false),
                reason: Mutex::new(None),
                write_failed: AtomicBool::new(false),
                telemetry,
                changed,
            }),
        }
    }

    /// Ok when writes are taken; otherwise the UNAVAILABLE status to answer at once.
    pub fn check_write(&self) -> Result<(), Status> {
        if !self.inner.refusing.load(Ordering::Acquire) {
            return Ok(());
        }
        let reason = self.reason().unwrap_or_default();
        Err(Status::unavailable(format!(
            "writes refused: {reason}; reads still work, retry once space is freed"
        )))
    }

    /// Why writes are refused, if they are.
    pub fn reason(&self) -> Option<String> {
        self.inner.reason.lock().ok().and_then(|r| r.clone())
    }

    /// Follows serving (true) / not serving (false).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.changed.subscribe()
    }

    /// A durable write failed: refuse writes until a check finds the store writable again.
    pub fn write_failed(&self, error: &str) {
        self.inner.write_failed.store(true, Ordering::Release);
        self.set(Some(format!("the last durable write failed ({error})")));
    }

    fn set(&self, reason: Option<String>) {
        let refusing = reason.is_some();
        let was = self.inner.refusing.swap(refusing, Ordering::AcqRel);
        if let Ok(mut r) = self.inner.reason.lock() {
            *r = reason.clone();
        }
        self.inner.telemetry.writes_refused.set(i64::from(refusing));
        if was != refusing {
            match &reason {
                Some(reason) => {
                    tracing::error!(%reason, "refusing writes; reads are still answered")
                }
                None => tracing::warn!("writes accepted again"),
            }
            self.inner.changed.send_replace(!refusing);
        }
    }

    /// One check: free space, and after a failed write a trial flush of `db`. Blocking.
    pub fn check(&self, db: &sled::Db) {
        let free = match free_bytes(&self.inner.data_dir) {
            Ok(free) => free,
            Err(e) => {
                tracing::debug!(error = %e, "cannot measure free disk space");
                return;
            }
        };
        self.inner
            .telemetry
            .disk_free_bytes
            .set(i64::try_from(free).unwrap_or(i64::MAX));
        if free < self.inner.min_free_bytes {
            return self.set(Some(format!(
                "{} MiB free on the data dir's disk, below min_free_disk_mib = {}",
                free >> 20,
                self.inner.min_free_bytes >> 20
            )));
        }
        if self.inner.write_failed.load(Ordering::Acquire) {
            if let Err(e) = db.flush() {
                return self.set(Some(format!("the store cannot be written ({e})")));
            }
            self.inner.write_failed.store(false, Ordering::Release);
        }
        self.set(None);
    }

    /// Checks every `CHECK_EVERY` until the task is dropped.
    pub async fn watch(self, db: sled::Db) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (health, db) = (self.clone(), db.clone());
            let _ = tokio::task::spawn_blocking(move || health.check(&db)).await;
        }
    }
}

/// Bytes available to this process on the filesystem holding `dir`.
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid NUL-terminated string and `stat` is written by the call
    // before it is read (only when it returns 0).
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // Both are u64 on 64-bit Linux but narrower elsewhere; widen without a lint per platform.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Ok(blocks.saturating_mul(size))
}

#[cfg(not(unix))]
pub fn free_bytes(_dir: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_above_the_free_space_refuses_writes_and_below_accepts_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let refusing = Health::new(dir.path(), u64::MAX >> 21, Arc::default());
        refusing.check(&db);
        let err = refusing.check_write().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(
            err.message().contains("min_free_disk_mib"),
            "{}",
            err.message()
        );

        let fine = Health::new(dir.path(), 0, Arc::default());
        fine.write_failed("disk full");
        assert!(fine.check_write().is_err());
        fine.check(&db);
        assert!(
            fine.check_write().is_ok(),
            "a successful trial flush clears it"
        );
    }
}
