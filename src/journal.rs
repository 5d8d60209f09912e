//! Write-ahead journal of decision writes: one append and one `fdatasync` make a batch of
//! decisions durable, so acknowledging a Score needs no sled write at all. For the last
//! seconds the journal, not sled, is the source of truth.
//!
//! Why not `sled::Db::flush`: in sled 0.34 every flush seals the log buffer and hands the
//! write to sled's I/O pool, which wakes all seven of its idle threads; under load that
//! was a quarter of the server's CPU. The journal is written by the group committer alone.
//!
//! The engine appends each decision here and keeps it in memory (`crate::writer::Tail`);
//! the sled writer applies it to sled once it is durable here. The journal is a series of
//! files; a background flush retires the current file and, once every entry appended
//! before has been applied to sled and sled flushed, deletes the retired ones, without
//! holding up the syncs that answer callers. On open, the journal is applied to sled before
//! anything is served: the entries sled has not got, or lost in a crash, are written (see
//! `DecisionStore::restore`).
//!
//! Each entry is framed as `len: u32 LE | crc32(payload): u32 LE | payload`. A crash can
//! only tear the last entry, which was never acknowledged; a bad entry with more after it
//! is corruption and is reported, never skipped. Entries are also counted (`appended`,
//! `synced`), so the committer can tell the writer which entries are durable.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Files in the data folder are named this, then `.` and a zero-padded generation.
const PREFIX: &str = "decisions.journal.";

/// Appends from the engine thread go to memory; the committer writes and syncs them.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    next_generation: AtomicU64,
    pending: Mutex<Vec<u8>>,
    /// Entries appended so far (changed under `pending`'s lock).
    appended: AtomicU64,
    /// Entries written and synced to a file so far.
    synced: AtomicU64,
    file: Mutex<Written>,
}

struct Written {
    file: File,
    path: PathBuf,
    generation: u64,
    len: u64,
    spare: Vec<u8>,
}

impl Journal {
    /// Starts an empty journal in `dir`, deleting any journal files there (restore from
    /// them first).
    pub fn create(dir: &Path) -> Result<Journal, JournalError> {
        remove_all(dir)?;
        let (file, path) = new_file(dir, 1)?;
        Ok(Journal {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                next_generation: AtomicU64::new(2),
                pending: Mutex::new(Vec::new()),
                appended: AtomicU64::new(0),
                synced: AtomicU64::new(0),
                file: Mutex::new(Written {
                    file,
                    path,
                    generation: 1,
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
        self.inner.appended.fetch_add(1, Ordering::SeqCst);
    }

    /// How many entries have been appended, and how many of the first ones are durable.
    pub fn appended(&self) -> u64 {
        self.inner.appended.load(Ordering::SeqCst)
    }

    pub fn synced(&self) -> u64 {
        self.inner.synced.load(Ordering::SeqCst)
    }

    /// Writes and syncs what was appended so far. On failure the file is cut back to its
    /// last synced length, so a later sync never writes after a torn entry.
    pub fn sync(&self) -> Result<(), JournalError> {
        let mut written = lock(&self.inner.file);
        let Written {
            file,
            path,
            len,
            spare,
            ..
        } = &mut *written;
        let through = {
            let mut pending = lock(&self.inner.pending);
            std::mem::swap(&mut *pending, spare);
            self.inner.appended.load(Ordering::SeqCst)
        };
        if spare.is_empty() {
            return Ok(());
        }
        let result = file.write_all(spare).and_then(|()| file.sync_data());
        match result {
            Ok(()) => {
                *len += spare.len() as u64;
                spare.clear();
                self.inner.synced.fetch_max(through, Ordering::SeqCst);
                Ok(())
            }
            Err(source) => {
                spare.clear();
                let _ = file.set_len(*len);
                Err(io_error(path)(source))
            }
        }
    }

    /// Drops what was appended and not yet synced (the caller made it durable otherwise).
    pub fn discard(&self) {
        lock(&self.inner.pending).clear();
    }

    pub fn generation(&self) -> u64 {
        lock(&self.inner.file).generation
    }

    /// Sends later syncs to a new file and returns its generation: once sled has been
    /// flushed, every file before it can go (`remove_before`). Also the way past a file
    /// whose tail a failed write may have torn.
    pub fn rotate(&self) -> Result<u64, JournalError> {
        // The new file is made (two fsyncs) before taking the lock the syncs need.
        let generation = self.inner.next_generation.fetch_add(1, Ordering::SeqCst);
        let (file, path) = new_file(&self.inner.dir, generation)?;
        let mut written = lock(&self.inner.file);
        if generation < written.generation {
            // A concurrent rotation got further; entries must stay in generation order.
            let current = written.generation;
            drop(written);
            let _ = std::fs::remove_file(&path);
            return Ok(current);
        }
        *written = Written {
            file,
            path,
            generation,
            len: 0,
            spare: std::mem::take(&mut written.spare),
        };
        Ok(generation)
    }

    /// Deletes the files before `generation`.
    pub fn remove_before(&self, generation: u64) -> Result<(), JournalError> {
        remove_files(&self.inner.dir, generation)
    }

    /// Bytes synced to the current file.
    pub fn len(&self) -> u64 {
        lock(&self.inner.file).len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn new_file(dir: &Path, generation: u64) -> Result<(File, PathBuf), JournalError> {
    let path = dir.join(format!("{PREFIX}{generation:020}"));
    let io = io_error(&path);
    // Append mode: after a failed write cuts the file back, the next write lands at the
    // new end rather than at a stale offset.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    file.set_len(0).and_then(|()| file.sync_all()).map_err(io)?;
    // The file's directory entry must be durable before anything relies on the file.
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok((file, path))
}

/// The journal files in `dir`, oldest first.
fn files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let io = io_error(dir);
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let generation = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|g| g.parse::<u64>().ok());
        if let Some(generation) = generation {
            found.push((generation, path));
        }
    }
    found.sort();
    Ok(found)
}

fn remove_files(dir: &Path, before: u64) -> Result<(), JournalError> {
    for (_, path) in files(dir)?.into_iter().filter(|(g, _)| *g < before) {
        std::fs::remove_file(&path).map_err(io_error(&path))?;
    }
    Ok(())
}

/// The entries of the journal in `dir` in order (none if there is none), without the torn
/// last entry a crash may leave in a file.
pub fn read(dir: &Path) -> Result<Vec<Vec<u8>>, JournalError> {
    let mut entries = Vec::new();
    for (_, path) in files(dir)? {
        read_file(&path, &mut entries)?;
    }
    Ok(entries)
}

/// Deletes every journal file in `dir`.
pub fn remove_all(dir: &Path) -> Result<(), JournalError> {
    remove_files(dir, u64::MAX)
}

fn read_file(path: &Path, entries: &mut Vec<Vec<u8>>) -> Result<(), JournalError> {
    let io = io_error(path);
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io)?;
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
    Ok(())
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

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> JournalError + Copy + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these leaves only bytes behind: still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_with(entries: &[&[u8]]) -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::create(dir.path()).unwrap();
        for e in entries {
            journal.append(e);
        }
        journal.sync().unwrap();
        (dir, journal)
    }

    fn only_file(dir: &Path) -> PathBuf {
        let files = files(dir).unwrap();
        assert_eq!(files.len(), 1);
        files[0].1.clone()
    }

    #[test]
    fn synced_entries_read_back_in_order_across_files() {
        let (dir, journal) = journal_with(&[b"one", b"", b"three"]);
        let read_back = || read(dir.path()).unwrap();
        assert_eq!(
            read_back(),
            vec![b"one".to_vec(), vec![], b"three".to_vec()]
        );
        assert_eq!(journal.len(), 3 * HEADER as u64 + 8);
        journal.append(b"four");
        assert_eq!(read_back().len(), 3, "not durable before sync");
        let generation = journal.rotate().unwrap();
        assert!(journal.is_empty());
        journal.sync().unwrap();
        assert_eq!(read_back().len(), 4, "the old file still counts");
        journal.remove_before(generation).unwrap();
        assert_eq!(read_back(), vec![b"four".to_vec()]);
        let restarted = Journal::create(dir.path()).unwrap();
        assert!(read_back().is_empty(), "a new journal starts empty");
        drop(restarted);
        remove_all(dir.path()).unwrap();
        assert!(files(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn no_journal_files_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_torn_last_entry_is_dropped() {
        let (dir, _journal) = journal_with(&[b"kept", b"torn entry"]);
        let path = only_file(dir.path());
        let full = std::fs::read(&path).unwrap();
        for cut in [full.len() - 1, full.len() - 5, HEADER + 4 + 3] {
            std::fs::write(&path, &full[..cut]).unwrap();
            assert_eq!(
                read(dir.path()).unwrap(),
                vec![b"kept".to_vec()],
                "cut at {cut}"
            );
        }
        // A torn write that left garbage in the payload, nothing after it.
        let mut garbled = full.clone();
        *garbled.last_mut().unwrap() ^= 0xff;
        std::fs::write(&path, &garbled).unwrap();
        assert_eq!(read(dir.path()).unwrap(), vec![b"kept".to_vec()]);
    }

    #[test]
    fn a_bad_entry_in_the_middle_is_an_error() {
        let (dir, _journal) = journal_with(&[b"first", b"second", b"third"]);
        let path = only_file(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 5 + HEADER] ^= 0xff; // first byte of "second"
        std::fs::write(&path, &bytes).unwrap();
        let err = read(dir.path()).unwrap_err();
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
