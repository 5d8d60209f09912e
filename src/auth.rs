//! API keys and who may call what: gateways score, merchants see and appeal only their own
//! account, analysts read and resolve everything.
//!
//! Keys live in `<data-dir>/keys.json`, outside sled, so `fengkong keys add` works while the
//! server runs (sled locks its folder); the server re-reads the file when it changes. Only
//! a SHA-256 of each key is stored: a key is shown once, when it is made.

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
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not a valid keys file: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a merchant key needs --account (the merchant's own account id)")]
    MerchantWithoutAccount,
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
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| KeyError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeysFile::default()),
        Err(source) => Err(KeyError::Read {
            path: path.to_owned(),
            source,
        }),
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
}

#[derive(Default)]
struct Snapshot {
    modified: Option<SystemTime>,
    keys: Vec<KeyRecord>,
}

impl Keys {
    pub fn open(data_dir: &Path) -> Result<Keys, KeyError> {
        let keys = Keys {
            path: keys_path(data_dir),
            state: Arc::default(),
        };
        keys.refresh()?;
        Ok(keys)
    }

    /// Re-reads the file if it changed. A broken file keeps the keys already loaded.
    pub fn refresh(&self) -> Result<bool, KeyError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let unchanged = self
            .state
            .read()
            .map(|s| s.modified == modified)
            .unwrap_or(false);
        if unchanged {
            return Ok(false);
        }
        let file = read_file(&self.path)?;
        if let Ok(mut state) = self.state.write() {
            *state = Snapshot {
                modified,
                keys: file.keys,
            };
        }
        Ok(true)
    }

    /// True when no key exists at all: the server runs open.
    pub fn is_open(&self) -> bool {
        self.state
            .read()
            .map(|s| s.keys.is_empty())
            .unwrap_or(false)
    }

    /// Identifies the caller from the `authorization` metadata value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let state = self.state.read().map_err(|_| AuthError::Unknown)?;
        if state.keys.is_empty() {
            return Ok(Caller::Open);
        }
        let secret = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
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
        let keys = Keys::open(dir.path()).unwrap();
        assert!(keys.is_open());
        assert_eq!(keys.authenticate(None), Ok(Caller::Open));

        let (record, secret) = add_key(dir.path(), Role::Merchant, Some("m-1".into()), 5).unwrap();
        let stored = std::fs::read_to_string(dir.path().join(KEYS_FILE)).unwrap();
        assert!(
            !stored.contains(&secret),
            "the secret itself is never stored"
        );
        assert!(keys.refresh().unwrap());
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
        assert!(matches!(
            add_key(dir.path(), Role::Merchant, None, 0),
            Err(KeyError::MerchantWithoutAccount)
        ));
    }

    #[test]
    fn a_broken_keys_file_keeps_the_loaded_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (_, secret) = add_key(dir.path(), Role::Gateway, None, 1).unwrap();
        let keys = Keys::open(dir.path()).unwrap();
        std::fs::write(dir.path().join(KEYS_FILE), "{ not json").unwrap();
        assert!(keys.refresh().is_err());
        assert!(keys.authenticate(Some(&format!("Bearer {secret}"))).is_ok());
    }
}
