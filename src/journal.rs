//! Write-ahead journal of decision writes: one append and one `fdatasync` make a batch of
//! decisions durable, so acknowledging a Score does not need a sled flush.
//!
//! Why not `sled::Db::flush`: in sled 0.34 every flush seals the log buffer and hands the
//! write to sled's I/O pool, which wakes all seven of its idle threads; under load that
//! was a quarter of the server's CPU. The journal is written by the group committer alone.
//!
//! The engine writes each decision to sled first and then appends the same bytes here, so
//! once sled has been flushed everything in the journal is in sled too and the file can be
//! emptied. On open, entries sled lost in a crash are written again (see
//! `DecisionStore::restore`).
//!
//! Each entry is framed as `len: u32 LE | crc32(payload): u32 LE | payload`. A crash can
//! only tear the last entry, which was never acknowledged; a bad entry with more after it
//! is corruption and is reported, never skipped.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "journal {path} is corrupt at byte {offset} with {after} more bytes after the bad \
         entry; refusing to guess which acknowledged decisions it held (move the file away \
         to start without it)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        after: u64,
    },
}

/// The file name inside the data folder.
pub const FILE_NAME: &str = "decisions.journal";

/// Appends from the engine thread go to memory; the committer writes and syncs them.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    pending: Mutex<Vec<u8>>,
    file: Mutex<Written>,
}

struct Written {
    file: File,
    len: u64,
    spare: Vec<u8>,
}

impl Journal {
    /// Creates an empty journal at `path`, replacing any old one (recover from it first).
    pub fn create(path: &Path) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        // Append mode: after `reset` or a failed write cuts the file back, the next write
        // lands at the new end rather than at a stale offset.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        file.set_len(0).and_then(|()| file.sync_all()).map_err(io)?;
        // The file's directory entry must be durable before anything relies on the file.
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(Journal {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                pending: Mutex::new(Vec::new()),
                file: Mutex::new(Written {
                    file,
                    len: 0,
                    spare: Vec::new(),
                }),
            }),
        })
    }

    /// Queues one entry; it is durable after the next successful `sync`.
    pub fn append(&self, payload: &[u8]) {
        let mut pending = lock(&self.inner.pending);
        pending.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        pending.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        pending.extend_from_slice(payload);
    }

    /// Writes and syncs what was appended so far. On failure the file is cut back to its
    /// last synced length, so a later sync never writes after a torn entry.
    pub fn sync(&self) -> Result<(), JournalError> {
        let mut written = lock(&self.inner.file);
        let Written { file, len, spare } = &mut *written;
        std::mem::swap(&mut *lock(&self.inner.pending), spare);
        if spare.is_empty() {
            return Ok(());
        }
        let result = file.write_all(spare).and_then(|()| file.sync_data());
        match result {
            Ok(()) => {
                *len += spare.len() as u64;
                spare.clear();
                Ok(())
            }
            Err(source) => {
                spare.clear();
                let _ = file.set_len(*len);
                Err(self.io(source))
            }
        }
    }

    /// Empties the journal; call only once sled holds every entry synced so far.
    pub fn reset(&self) -> Result<(), JournalError> {
        let mut written = lock(&self.inner.file);
        written
            .file
            .set_len(0)
            .and_then(|()| written.file.sync_data())
            .map_err(|e| self.io(e))?;
        written.len = 0;
        Ok(())
    }

    /// Bytes synced since the last reset.
    pub fn len(&self) -> u64 {
        lock(&self.inner.file).len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn io(&self, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.inner.path.clone(),
            source,
        }
    }
}

/// The entries of the journal at `path` in order (none if there is no file), without a
/// torn last entry.
pub fn read(path: &Path) -> Result<Vec<Vec<u8>>, JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(io)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut entries = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let entry = (rest.len() >= HEADER)
            .then(|| {
                let len = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
                let crc = u32::from_le_bytes(rest[4..8].try_into().ok()?);
                let payload = rest.get(HEADER..HEADER + len)?;
                (crc32fast::hash(payload) == crc).then_some(payload)
            })
            .flatten();
        match entry {
            Some(payload) => {
                entries.push(payload.to_vec());
                at += HEADER + payload.len();
            }
            None => {
                let after = tail_after_bad_entry(rest);
                if after > 0 {
                    return Err(JournalError::Corrupt {
                        path: path.to_owned(),
                        offset: at as u64,
                        after,
                    });
                }
                tracing::warn!(
                    path = %path.display(),
                    offset = at,
                    "journal ends in a torn entry (a crash mid-write); it was never \
                     acknowledged and is dropped"
                );
                break;
            }
        }
    }
    Ok(entries)
}

/// How many bytes follow a bad entry that starts `rest`. A torn write is the last thing in
/// the file: its claimed length reaches past the end, or nothing follows it.
fn tail_after_bad_entry(rest: &[u8]) -> u64 {
    if rest.len() < HEADER {
        return 0;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    rest.len().saturating_sub(HEADER.saturating_add(len)) as u64
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these leaves only bytes behind: still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_with(entries: &[&[u8]]) -> (tempfile::TempDir, PathBuf, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let journal = Journal::create(&path).unwrap();
        for e in entries {
            journal.append(e);
        }
        journal.sync().unwrap();
        (dir, path, journal)
    }

    #[test]
    fn synced_entries_read_back_in_order() {
        let (_dir, path, journal) = journal_with(&[b"one", b"", b"three"]);
        assert_eq!(
            read(&path).unwrap(),
            vec![b"one".to_vec(), vec![], b"three".to_vec()]
        );
        assert_eq!(journal.len(), 3 * HEADER as u64 + 8);
        journal.append(b"four");
        assert_eq!(read(&path).unwrap().len(), 3, "not durable before sync");
        journal.reset().unwrap();
        assert!(read(&path).unwrap().is_empty());
        journal.sync().unwrap();
        assert_eq!(read(&path).unwrap(), vec![b"four".to_vec()]);
    }

    #[test]
    fn a_missing_journal_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join(FILE_NAME)).unwrap().is_empty());
    }

    #[test]
    fn a_torn_last_entry_is_dropped() {
        let (_dir, path, _journal) = journal_with(&[b"kept", b"torn entry"]);
        let full = std::fs::read(&path).unwrap();
        for cut in [full.len() - 1, full.len() - 5, HEADER + 4 + 3] {
            std::fs::write(&path, &full[..cut]).unwrap();
            assert_eq!(read(&path).unwrap(), vec![b"kept".to_vec()], "cut at {cut}");
        }
        // A torn write that left garbage in the payload, nothing after it.
        let mut garbled = full.clone();
        *garbled.last_mut().unwrap() ^= 0xff;
        std::fs::write(&path, &garbled).unwrap();
        assert_eq!(read(&path).unwrap(), vec![b"kept".to_vec()]);
    }

    #[test]
    fn a_bad_entry_in_the_middle_is_an_error() {
        let (_dir, path, _journal) = journal_with(&[b"first", b"second", b"third"]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 5 + HEADER] ^= 0xff; // first byte of "second"
        std::fs::write(&path, &bytes).unwrap();
        let err = read(&path).unwrap_err();
        assert!(
            matches!(
                err,
                JournalError::Corrupt {
                    offset: 13,
                    after: 13,
                    ..
                }
            ),
            "{err}"
        );
    }
}
