//! Reading the files the server loads while it runs (rules, lists, features, model, keys):
//! only regular files, never more than a limit, and never waiting on a reader-less FIFO.
//!
//! A FIFO or device in place of a list file or the model used to stall every Score: the
//! reload ran on the engine thread and `open` waited for a writer. Here the file is opened
//! non-blocking (so a FIFO's `open` returns at once), checked to be a regular file on the
//! open handle itself (no window between check and read), and read up to `limit + 1`
//! bytes. `libc` is there only for `O_NONBLOCK`, which std does not name.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not a regular file (a FIFO, device or socket is never read)")]
    NotRegular { path: PathBuf },
    #[error("`{path}` is larger than the limit of {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("`{path}` is not valid UTF-8")]
    NotUtf8 { path: PathBuf },
}

impl FileError {
    /// True when the file does not exist (callers that treat a missing file as empty).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Rule files, each.
pub const MAX_RULE_FILE_BYTES: u64 = 1 << 20;
/// Features and keys files.
pub const MAX_SMALL_FILE_BYTES: u64 = 4 << 20;
/// A model artifact (the bundled one is under 1 MiB).
pub const MAX_MODEL_BYTES: u64 = 256 << 20;

/// The bytes of `path` if it is a regular file of at most `limit` bytes.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_owned(),
        });
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: read one byte past the limit to notice.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

/// Like [`read_regular`], as UTF-8 text.
pub fn read_regular_text(path: &Path, limit: u64) -> Result<String, FileError> {
    String::from_utf8(read_regular(path, limit)?).map_err(|_| FileError::NotUtf8 {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_limit_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "hello").unwrap();
        assert_eq!(read_regular_text(&file, 5).unwrap(), "hello");
        assert!(matches!(
            read_regular(&file, 4),
            Err(FileError::TooLarge { .. })
        ));
        assert!(matches!(
            read_regular(dir.path(), 4),
            Err(FileError::NotRegular { .. })
        ));
        assert!(read_regular(&dir.path().join("missing"), 4)
            .unwrap_err()
            .is_not_found());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_at_once_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("list.txt");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(matches!(
            read_regular(&fifo, 1024),
            Err(FileError::NotRegular { .. })
        ));
    }
}
