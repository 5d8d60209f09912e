//! Server configuration: embedded defaults, an optional TOML file, and command-line overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the server can be told. Every field has a default, so `fengkong serve`
/// runs with no file at all; unknown keys in a file are an error that names the key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC address.
    pub listen: SocketAddr,
    /// HTTP address of the merchant and analyst page (nothing operational is served
    /// there); `http_listen = ""` is not accepted: use `http_enabled = false` to turn it off.
    pub http_listen: SocketAddr,
    pub http_enabled: bool,
    /// Address of `/metrics` and `/healthz`, for operators only: rule names and hit counts
    /// are not for merchants, so they get their own listener (port 0 picks a free one).
    pub metrics_listen: SocketAddr,
    /// Folder of the sled database (decisions, windows, accounts).
    pub data_dir: PathBuf,
    /// Folder of rule files (`*.toml`, with `lists/` and `tests/`); none means the rule pack
    /// built into the binary.
    pub rules_dir: Option<PathBuf>,
    /// The trained model file; none means the model built into the binary.
    pub model_path: Option<PathBuf>,
    /// False scores with rules alone (no model at all).
    pub model_enabled: bool,
    /// Risk points the model adds per unit of fraud probability (100: a probability of 0.6
    /// adds 60 points, enough for review under the default policy).
    pub model_weight: f64,
    /// Reload the rules when a file in `rules_dir` changes, and the model when its file does.
    /// The bundled ones cannot change, so only configured paths are watched.
    pub watch_rules: bool,
    /// Features file; none means the bundled default set.
    pub features_file: Option<PathBuf>,
    /// Entity states the feature store keeps in memory.
    pub feature_cache_entities: usize,
    /// sled's page cache, in MiB (sled's own default is 1 GiB).
    pub sled_cache_mib: u64,
    /// Payments (and outcomes) between two checkpoints of the feature windows. Fewer means
    /// more writing; more means a longer replay of the decision log after a crash.
    pub feature_checkpoint_every: usize,
    pub limits: Limits,
    /// Caps and timeouts of every listener (`[connections]`).
    pub connections: crate::connections::ConnectionLimits,
    /// How long the group committer may wait to gather more writes into one flush.
    /// Zero flushes as soon as a write is waiting.
    pub commit_delay_us: u64,
    /// Most journaled decision writes kept in memory while the sled writer has not applied
    /// them (`crate::writer`). Past it the scoring thread applies the oldest ones itself
    /// (slower, nothing lost); `fengkong_sled_tail_entries` shows the lag.
    pub sled_tail_max_entries: usize,
    /// Drill setting, zero in production: the sled writer holds back each run this many ms
    /// after its entries became durable, so the journal runs far ahead of sled (crash
    /// drills: kill -9 then and every acknowledged decision must come back from the
    /// journal). Reads, searches and checkpoints stay correct meanwhile.
    pub sled_writer_delay_ms: u64,
    /// Carry out the account actions of rules (and the model's thresholds): limit and freeze
    /// accounts. Off, the actions are only recorded with the decisions' reasons, e.g. while a
    /// new rule pack is being trusted.
    pub enforce_account_actions: bool,
    /// While an account is LIMITED, what it may collect (as payee) or pay (as payer) in 24
    /// hours, in fen; past it, payments are blocked. Withdrawals are held outright.
    pub limited_daily_cap_fen: i64,
    /// How long an overturned appeal keeps the rules that caused it quiet for the account,
    /// unless the analyst sets an end.
    pub appeal_suppression_days: u32,
    /// Account actions the model takes on its own when its fraud probability reaches a
    /// threshold, e.g. `[[model_account_actions]] probability_at = 0.97,
    /// account_action = "limit_payee"`. None by default: rules decide freezes.
    pub model_account_actions: Vec<ModelAccountAction>,
    /// On SIGTERM/ctrl-c, how long in-flight calls and idle clients get before connections
    /// are closed.
    pub shutdown_grace_ms: u64,
    /// Below this much free space (MiB) on the data dir's filesystem every write is refused
    /// with UNAVAILABLE, before sled meets a full disk; reads go on, and writes resume by
    /// themselves once space is back.
    pub min_free_disk_mib: u64,
    /// Longest a Score or ReportOutcome may wait for the engine (measured service time x
    /// queue); past it, or past the caller's deadline, it is refused at once with
    /// RESOURCE_EXHAUSTED and a retry-after hint.
    pub max_queue_wait_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            http_enabled: true,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            data_dir: PathBuf::from("data"),
            rules_dir: None,
            model_path: None,
            model_enabled: true,
            model_weight: 100.0,
            watch_rules: true,
            features_file: None,
            feature_cache_entities: 100_000,
            sled_cache_mib: 256,
            feature_checkpoint_every: 5_000,
            limits: Limits::default(),
            connections: crate::connections::ConnectionLimits::default(),
            commit_delay_us: 0,
            sled_tail_max_entries: 20_000,
            sled_writer_delay_ms: 0,
            enforce_account_actions: true,
            limited_daily_cap_fen: 200_000,
            appeal_suppression_days: 30,
            model_account_actions: Vec::new(),
            shutdown_grace_ms: 10_000,
            min_free_disk_mib: 64,
            max_queue_wait_ms: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelAccountAction {
    pub probability_at: f64,
    pub account_action: crate::rules::AccountAction,
}

/// What a request may contain; anything outside is INVALID_ARGUMENT.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest amount accepted for one payment, in fen.
    pub max_amount_fen: i64,
    /// How far an event time may lie ahead of the server clock.
    pub max_clock_skew_ms: i64,
    /// Longest id (payment, account, device, card) in bytes.
    pub max_id_bytes: usize,
    /// Most gateway attributes on one request.
    pub max_attributes: usize,
    /// Longest attribute key or value in bytes.
    pub max_attribute_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // 10 million CNY: above any consumer QR payment, below i64 trouble.
            max_amount_fen: 1_000_000_000,
            max_clock_skew_ms: 5 * 60 * 1000,
            max_id_bytes: 128,
            max_attributes: 64,
            max_attribute_bytes: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file `{path}`: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    /// Reads a config file; keys it does not set keep their defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = Config::parse("[limits]\nmax_amount_fen = 100\n").unwrap();
        assert_eq!(c.limits.max_amount_fen, 100);
        assert_eq!(c.limits.max_id_bytes, 128);
        assert_eq!(c.listen, Config::default().listen);
    }

    #[test]
    fn configured_paths_replace_what_the_binary_carries() {
        let defaults = Config::default();
        assert_eq!((defaults.rules_dir, defaults.model_path), (None, None));
        assert!(defaults.model_enabled);
        let c = Config::parse("rules_dir = \"r\"\nmodel_path = \"m.json\"\n").unwrap();
        assert_eq!(c.rules_dir, Some(PathBuf::from("r")));
        assert_eq!(c.model_path, Some(PathBuf::from("m.json")));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[limits]\nmax_amount = 100\n").unwrap_err();
        assert!(err.contains("max_amount"), "{err}");
        let err = Config::parse("listn = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.contains("listn"), "{err}");
    }
}
