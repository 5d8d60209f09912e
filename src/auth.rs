//! API keys and who may call what: gateways score, merchants see and appeal only their own
//! account, analysts read and resolve everything.
//!
//! Keys live in `<data-dir>/keys.json`, outside sled, so `fengkong keys add` works while the
//! server runs (sled locks its folder); the server re-reads the file when it changes. Only
//! a SHA-256 of each key is stored: a key is shown once, when it is made.
//!
//! Once a data dir has had keys, the server remembers it in sled (the `auth` tree): from
//! then on a missing, empty or unreadable keys file closes the server (every call refused,
//! logged at ERROR) instead of opening it, so moving the file away never lets anyone in.
//! Open mode is only for a data dir that never had keys, or `--insecure-no-keys`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const KEYS_FILE: &str = "keys.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Gateway,
    Merchant,
    Analyst,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Merchant => "merchant",
            Role::Analyst => "analyst",
        }
    }
}

/// One stored key: its public id, what it may do, and the hash of the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub role: Role,
    /// The merchant's own account; merchants may act only on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub sha256: String,
    pub created_at_ms: i64,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Read(crate::files::FileError),
    #[error("`{path}` is not a valid keys file: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a merchant key needs --account (the merchant's own account id, not empty)")]
    MerchantWithoutAccount,
    #[error("cannot record that this data dir has keys: {0}")]
    Marker(#[from] sled::Error),
    #[error("no key with id `{0}`")]
    UnknownId(String),
}

/// Why a call was refused. Messages never say whether another account exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send `authorization: Bearer <key>`")]
    Missing,
    #[error("unknown or revoked key")]
    Unknown,
    #[error("a {role} key may not {action}")]
    Forbidden {
        role: &'static str,
        action: &'static str,
    },
    /// The data dir has had keys but the keys file is gone or broken: nobody is let in.
    #[error("this server requires API keys but cannot read them ({0}); every call is refused until the keys file is restored")]
    Closed(String),
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No keys exist: local development, everything allowed.
    Open,
    Key {
        id: String,
        role: Role,
        account: Option<String>,
    },
}

impl Caller {
    /// Requires one of `roles`; `action` names the call in the refusal.
    pub fn require(&self, roles: &[Role], action: &'static str) -> Result<(), AuthError> {
        match self {
            Caller::Open => Ok(()),
            Caller::Key { role, .. } if roles.contains(role) => Ok(()),
            Caller::Key { role, .. } => Err(AuthError::Forbidden {
                role: role.as_str(),
                action,
            }),
        }
    }

    /// Merchants may only act on their own account; analysts (and open mode) on any.
    pub fn require_account(&self, account_id: &str, action: &'static str) -> Result<(), AuthError> {
        match self {
            Caller::Open => Ok(()),
            Caller::Key {
                role: Role::Analyst,
                ..
            } => Ok(()),
            Caller::Key {
                role: Role::Merchant,
                account: Some(own),
                ..
            } if own == account_id => Ok(()),
            Caller::Key { role, .. } => Err(AuthError::Forbidden {
                role: role.as_str(),
                action,
            }),
        }
    }

    /// A merchant's own account.
    pub fn own_account(&self) -> Option<&str> {
        match self {
            Caller::Key {
                role: Role::Merchant,
                account,
                ..
            } => account.as_deref(),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Caller::Open => "open-mode".into(),
            Caller::Key { id, role, .. } => format!("{}:{id}", role.as_str()),
        }
    }
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn keys_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEYS_FILE)
}

fn read_file(path: &Path) -> Result<KeysFile, KeyError> {
    match crate::files::read_regular_text(path, crate::files::MAX_SMALL_FILE_BYTES) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| KeyError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        Err(e) if e.is_not_found() => Ok(KeysFile::default()),
        Err(e) => Err(KeyError::Read(e)),
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
fn write_file(path: &Path, file: &KeysFile) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(file).map_err(|e| err(std::io::Error::other(e)))?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// Makes a key, stores its hash, and returns (record, secret). The secret is not kept.
pub fn add_key(
    data_dir: &Path,
    role: Role,
    account: Option<String>,
    now_ms: i64,
) -> Result<(KeyRecord, String), KeyError> {
    // An empty account would name no merchant, and `Some("")` would match an empty
    // account id in a request.
    let account = account.filter(|a| !a.trim().is_empty());
    if role == Role::Merchant && account.is_none() {
        return Err(KeyError::MerchantWithoutAccount);
    }
    let path = keys_path(data_dir);
    let mut file = read_file(&path)?;
    let mut rng = rand::rng();
    let id = hex::encode(rng.random::<[u8; 4]>());
    let secret = format!("fk_{}_{}", id, hex::encode(rng.random::<[u8; 24]>()));
    let record = KeyRecord {
        id,
        role,
        account,
        sha256: hash(&secret),
        created_at_ms: now_ms,
        revoked: false,
    };
    file.keys.push(record.clone());
    write_file(&path, &file)?;
    Ok((record, secret))
}

pub fn list_keys(data_dir: &Path) -> Result<Vec<KeyRecord>, KeyError> {
    Ok(read_file(&keys_path(data_dir))?.keys)
}

pub fn revoke_key(data_dir: &Path, id: &str) -> Result<(), KeyError> {
    let path = keys_path(data_dir);
    let mut file = read_file(&path)?;
    let record = file
        .keys
        .iter_mut()
        .find(|k| k.id == id)
        .ok_or_else(|| KeyError::UnknownId(id.to_owned()))?;
    record.revoked = true;
    write_file(&path, &file)
}

/// The server's view of the keys file, refreshed when the file changes.
#[derive(Clone)]
pub struct Keys {
    path: PathBuf,
    state: Arc<RwLock<Snapshot>>,
    /// Where "this data dir has had keys" is remembered; none in tests of the file alone.
    marker: Option<sled::Tree>,
    /// `--insecure-no-keys`: a missing or empty keys file opens the server even after keys.
    insecure_no_keys: bool,
}

const HAD_KEYS: &[u8] = b"had_keys";

/// What tells a changed keys file from the one last read: its modification time alone
/// misses two writes within one tick of the file system's clock (a key added right after
/// the file was emptied), so its length and (on Unix) its inode count too; `keys add`
/// replaces the file by rename, which always gives a new inode.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: SystemTime,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp {
            modified: meta.modified().ok()?,
            len: meta.len(),
            inode,
        })
    }
}

#[derive(Default)]
struct Snapshot {
    /// The file's stamp when it was read; `None` when it was missing.
    modified: Option<FileStamp>,
    /// False until the first read: the first refresh always reads.
    read: bool,
    keys: Vec<KeyRecord>,
    /// Why every call is refused, when it is.
    closed: Option<String>,
}

/// What a refresh found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    Unchanged,
    /// The file was read again and its keys are in force.
    Reloaded,
    /// Every call is refused from now on; the reason says why.
    Closed(String),
}

impl Keys {
    /// The keys of `data_dir`, remembering in `db` once there have been any.
    pub fn open(data_dir: &Path, db: &sled::Db, insecure_no_keys: bool) -> Result<Keys, KeyError> {
        let keys = Keys {
            path: keys_path(data_dir),
            state: Arc::default(),
            marker: Some(db.open_tree("auth")?),
            insecure_no_keys,
        };
        keys.refresh()?;
        Ok(keys)
    }

    /// The keys file alone, with nothing remembered between processes.
    pub fn from_file(data_dir: &Path) -> Result<Keys, KeyError> {
        let keys = Keys {
            path: keys_path(data_dir),
            state: Arc::default(),
            marker: None,
            insecure_no_keys: false,
        };
        keys.refresh()?;
        Ok(keys)
    }

    fn had_keys(&self) -> Result<bool, KeyError> {
        let in_memory = self
            .state
            .read()
            .map(|s| !s.keys.is_empty())
            .unwrap_or(true);
        let stored = match &self.marker {
            Some(tree) => tree.contains_key(HAD_KEYS)?,
            None => false,
        };
        Ok(in_memory || stored)
    }

    fn remember_keys(&self) -> Result<(), KeyError> {
        if let Some(tree) = &self.marker {
            if !tree.contains_key(HAD_KEYS)? {
                tree.insert(HAD_KEYS, &[1u8])?;
                tree.flush()?;
            }
        }
        Ok(())
    }

    /// Re-reads the file if it changed (or was never read). A file with keys puts them in
    /// force; a missing or empty one opens the server only if this data dir never had keys
    /// (or `--insecure-no-keys`); an unreadable one always closes it.
    pub fn refresh(&self) -> Result<Refreshed, KeyError> {
        let modified = FileStamp::of(&self.path);
        let unchanged = self
            .state
            .read()
            .map(|s| s.read && s.modified == modified)
            .unwrap_or(false);
        if unchanged {
            return Ok(Refreshed::Unchanged);
        }
        let closed = match read_file(&self.path) {
            Ok(file) if !file.keys.is_empty() => {
                self.remember_keys()?;
                self.set(modified, file.keys, None);
                return Ok(Refreshed::Reloaded);
            }
            Ok(_) if self.insecure_no_keys || !self.had_keys()? => {
                self.set(modified, Vec::new(), None);
                return Ok(Refreshed::Reloaded);
            }
            Ok(_) => match modified {
                None => format!("`{}` is missing", self.path.display()),
                Some(_) => format!("`{}` holds no keys", self.path.display()),
            },
            Err(e) => e.to_string(),
        };
        self.set(modified, Vec::new(), Some(closed.clone()));
        Ok(Refreshed::Closed(closed))
    }

    fn set(&self, modified: Option<FileStamp>, keys: Vec<KeyRecord>, closed: Option<String>) {
        if let Ok(mut state) = self.state.write() {
            *state = Snapshot {
                modified,
                read: true,
                keys,
                closed,
            };
        }
    }

    /// True when no key exists at all and the server is not closed: the server runs open.
    pub fn is_open(&self) -> bool {
        self.state
            .read()
            .map(|s| s.keys.is_empty() && s.closed.is_none())
            .unwrap_or(false)
    }

    /// Why every call is refused, if it is.
    pub fn closed_reason(&self) -> Option<String> {
        self.state.read().ok().and_then(|s| s.closed.clone())
    }

    /// Identifies the caller from the `authorization` metadata value. The scheme is
    /// case-insensitive (RFC 9110 section 11.1); the key itself is not.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let state = self
            .state
            .read()
            .map_err(|_| AuthError::Closed("the key table is poisoned".into()))?;
        if let Some(reason) = &state.closed {
            return Err(AuthError::Closed(reason.clone()));
        }
        if state.keys.is_empty() {
            return Ok(Caller::Open);
        }
        let secret = authorization
            .map(str::trim)
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret.trim())
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Missing)?;
        let digest = hash(secret);
        state
            .keys
            .iter()
            .find(|k| !k.revoked && k.sha256 == digest)
            .map(|k| Caller::Key {
                id: k.id.clone(),
                role: k.role,
                account: k.account.clone(),
            })
            .ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_checked_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::from_file(dir.path()).unwrap();
        assert!(keys.is_open());
        assert_eq!(keys.authenticate(None), Ok(Caller::Open));

        let (record, secret) = add_key(dir.path(), Role::Merchant, Some("m-1".into()), 5).unwrap();
        let stored = std::fs::read_to_string(dir.path().join(KEYS_FILE)).unwrap();
        assert!(
            !stored.contains(&secret),
            "the secret itself is never stored"
        );
        assert_eq!(keys.refresh().unwrap(), Refreshed::Reloaded);
        assert_eq!(keys.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            keys.authenticate(Some("Bearer nope")),
            Err(AuthError::Unknown)
        );
        let caller = keys
            .authenticate(Some(&format!("Bearer {secret}")))
            .unwrap();
        assert!(caller.require_account("m-1", "explain").is_ok());
        assert!(caller.require_account("m-2", "explain").is_err());
        assert!(caller.require(&[Role::Gateway], "score").is_err());

        revoke_key(dir.path(), &record.id).unwrap();
        keys.refresh().unwrap();
        assert_eq!(
            keys.authenticate(Some(&format!("Bearer {secret}"))),
            Err(AuthError::Unknown)
        );
        assert!(matches!(
            revoke_key(dir.path(), "zzz"),
            Err(KeyError::UnknownId(_))
        ));
        for account in [None, Some(String::new()), Some("  ".into())] {
            assert!(matches!(
                add_key(dir.path(), Role::Merchant, account, 0),
                Err(KeyError::MerchantWithoutAccount)
            ));
        }
    }

    #[test]
    fn the_scheme_is_case_insensitive_the_key_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (_, secret) = add_key(dir.path(), Role::Gateway, None, 1).unwrap();
        let keys = Keys::from_file(dir.path()).unwrap();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let header = format!("{scheme} {secret}");
            assert!(keys.authenticate(Some(&header)).is_ok(), "{header}");
        }
        let upper = format!("Bearer {}", secret.to_uppercase());
        assert_eq!(keys.authenticate(Some(&upper)), Err(AuthError::Unknown));
        let basic = format!("Basic {secret}");
        assert_eq!(keys.authenticate(Some(&basic)), Err(AuthError::Missing));
    }

    #[test]
    fn a_broken_keys_file_closes_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let (_, secret) = add_key(dir.path(), Role::Gateway, None, 1).unwrap();
        let keys = Keys::from_file(dir.path()).unwrap();
        std::fs::write(dir.path().join(KEYS_FILE), "{ not json").unwrap();
        assert!(matches!(keys.refresh().unwrap(), Refreshed::Closed(_)));
        let refused = keys.authenticate(Some(&format!("Bearer {secret}")));
        assert!(matches!(refused, Err(AuthError::Closed(_))), "{refused:?}");
        assert!(!keys.is_open());
    }

    #[test]
    fn a_data_dir_that_had_keys_stays_closed_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let keys = Keys::open(dir.path(), &db, false).unwrap();
        assert!(keys.is_open(), "a data dir that never had keys runs open");
        let (_, secret) = add_key(dir.path(), Role::Gateway, None, 1).unwrap();
        keys.refresh().unwrap();
        std::fs::remove_file(dir.path().join(KEYS_FILE)).unwrap();
        assert!(matches!(keys.refresh().unwrap(), Refreshed::Closed(_)));
        assert!(matches!(keys.authenticate(None), Err(AuthError::Closed(_))));

        // A new process on the same data dir remembers, from sled.
        drop(keys);
        let reopened = Keys::open(dir.path(), &db, false).unwrap();
        assert!(matches!(
            reopened.authenticate(None),
            Err(AuthError::Closed(_))
        ));
        std::fs::write(dir.path().join(KEYS_FILE), r#"{"keys": []}"#).unwrap();
        reopened.refresh().unwrap();
        assert!(
            matches!(reopened.authenticate(None), Err(AuthError::Closed(_))),
            "an emptied file closes it too"
        );
        // Restoring a key reopens it to that key only.
        let (_, again) = add_key(dir.path(), Role::Gateway, None, 2).unwrap();
        assert_eq!(reopened.refresh().unwrap(), Refreshed::Reloaded);
        assert!(reopened
            .authenticate(Some(&format!("Bearer {again}")))
            .is_ok());
        assert_eq!(
            reopened.authenticate(Some(&format!("Bearer {secret}"))),
            Err(AuthError::Unknown)
        );

        std::fs::remove_file(dir.path().join(KEYS_FILE)).unwrap();
        let insecure = Keys::open(dir.path(), &db, true).unwrap();
        assert!(insecure.is_open(), "--insecure-no-keys opens it on purpose");
    }
}
