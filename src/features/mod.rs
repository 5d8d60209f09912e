//! Durable, exact sliding-window feature store on sled, in event time.
//!
//! # Model
//! A features file (see [`spec`] for the format, `default_features.toml` for the defaults)
//! declares *entities* (keys made of payment fields: payer, payee, device, ip, card,
//! payer→payee pair, ...) and *features*, each an aggregate of one entity's payments over a
//! window. [`FeatureStore::observe`] reads every feature for a payment into a `Vec<f64>` in
//! [`FeatureSet::names`] order and records the payment.
//!
//! # Time and windows
//! All times are the payment's event time (`event_time_ms`), never the server clock. Local
//! time is UTC + `tz_offset_minutes` (default +480, China). Bucket index of time `t` with
//! width `w` is `b(t) = floor((t + tz_offset) / w)`, so day buckets start at local midnight.
//! A sliding window of length `W` (bucket `w` = the largest of 1s, 10s, 1m, 10m, 1h, 6h, 1d
//! that is at most `W/60` and divides `W`) and lag `L` counts exactly the payments whose
//! bucket lies in `[b(t-L) - W/w + 1, b(t-L)]`, i.e. event times in
//! `[(b(t-L) - W/w + 1)·w - tz, (b(t-L) + 1)·w - tz)`: the window is `W` rounded outward to the
//! bucket grid at its end (it may reach up to `w` past `t - L`, never earlier than
//! `t - L - W`). `calendar_day` counts the local day of `t`, `calendar_year` the local
//! calendar year of `t` (January 1st to `t`'s day, on day buckets).
//!
//! Windows include the current payment (the store updates, then reads), except `new_value`
//! ("first seen" facts), which is read before the update. Filters decide which payments are
//! *recorded* in a series; a feature is always read, whatever the current payment looks like.
//!
//! Distinct counts and `new_value` keep, per value, the latest bucket in which it was seen,
//! and count values whose latest bucket is `>=` the window start. For in-order events this
//! is exactly the window; for an accepted out-of-order event it also counts values seen after
//! it (up to the latest event). Distinct counts are exact (modulo 64-bit hash collisions) up
//! to `distinct_exact_limit` values (default 1,000) per entity and series, then switch to a
//! sliding HyperLogLog with 16,384 registers, each keeping (bucket, rank) pairs that can still
//! be its maximum in a future window: standard error 1.04/sqrt(16384) = 0.81%, so ~99% of
//! estimates are within 2% (tested at 100k values, whole and sliding window, 5 seeds; 4,096
//! registers gave 2.7% on one seed). A sketch costs ~4 bytes per pair, ~100-160 KB at 100k
//! values, rewritten on every payment to that entity: fine for a few hot merchants, not for
//! millions. It reverts to exact once every pair has expired. `new_value` keeps at most
//! `distinct_exact_limit` values, evicting the least recently seen (an evicted value reads as
//! new again). Distinct sets of one entity and filter share one map across window lengths.
//!
//! Outcomes ([`FeatureStore::record_outcome`]): `bad_reports` counts bad reports by report
//! time; `bad_rate` divides bad labels by payments, both by payment time, over the (lagged)
//! window. Both only use reports whose report bucket is *complete* before the current
//! payment's bucket (`b(reported_at) < b(t)`), so a label from the future, or from later in the
//! current bucket, is never used; the price is a delay of up to one bucket (6h for a 30d
//! window) before a fresh report counts. Each `record_outcome` call adds one label (the
//! caller should send one bad outcome per payment); `bad_rate` is capped at 1. Outcome kinds
//! counted default to FRAUD, CHARGEBACK and COMPLAINT (`outcomes = [...]` per feature).
//! `bad_count` is `bad_rate`'s numerator under the same rule. A smoothed `bad_rate` (a
//! category's, pulled towards the overall rate of an entity with no fields) is finished after
//! every entity is read, since its prior may come from an entity read later.
//!
//! # Lateness
//! The store keeps a watermark = the largest event time observed, rounded down to the whole
//! second (so it is persisted at most once per second of event time). An event with
//! `t < watermark - lateness` (default 10m) is *late*: it is scored from the current state
//! (buckets older than the retention floor read as empty) but not recorded, and
//! [`Observation::late`] is set. Events within lateness go into their own buckets.
//!
//! # Durability, atomicity and memory
//! State lives in one sled tree (default `features.v1`): one blob per entity key
//! (`<entity name> 0x00 <field values joined by 0x1f>`) plus the watermark under
//! `0xFF 0xFF "watermark"` and the checkpoint marker. `observe`/`record_outcome` change the
//! in-memory cache only; [`FeatureStore::checkpoint`] (or `start_checkpoint`, which writes
//! on its own thread) writes every changed state, then the caller's `marker`: how far into
//! the caller's durable log (fengkong's decision log) the written state reaches. After a
//! crash the caller re-observes its log after the marker and gets identical features.
//!
//! A caller that gives each event its log position ([`FeatureStore::set_position`]) gets
//! states stamped with the position they cover and checkpoints written state by state, marker
//! last; re-observing skips, per entity, the events a stored state already holds, so a
//! checkpoint cut off part-way is harmless. Without positions a checkpoint is one atomic sled
//! batch (which takes sled's process-wide batch lock: the engine always gives positions).
//!
//! Cache: changed states stay in memory until a finished checkpoint has written them; once
//! the cache exceeds 1.25 × `cache_capacity`, only states touched in the last
//! `cache_capacity` touches are kept (the checkpoint writer frees the rest).
//! Evicted states are re-read from sled. A Bloom filter of the keys stored in the tree (built
//! by a background scan at open, fed with every key changed since, rebuilt in the background
//! once written keys outnumber scanned ones; ~1.5 bytes per stored key) lets a miss on a key
//! never written (a new payer→payee pair, a new device) skip the sled read. Buckets below the
//! retention floor `b(watermark - lateness - (W + L + w))` are dropped whenever an entity is
//! touched; an entity with nothing left is deleted, as is any found by the incremental
//! [`FeatureStore::sweep`], which also rewrites a cold entity once dropping its expired
//! buckets halves its stored bytes (so stored state stays within twice the live state
//! without a write per entity per sweep). Because nothing readable is ever dropped, features
//! are identical whether or not the store was reopened, evicted or swept between events.
//!
//! Disk per entity is bounded by buckets, not payments: a counter bucket costs ~6-12 bytes
//! (varints), a seen value 9-11 bytes. A payer paying once a day for a year with the default
//! set stores 2,755 bytes (test `bytes_for_daily_account_year`: 30 daily-ish 6h buckets for
//! 30d windows, 365 day buckets for the calendar year, 10 payees seen); the worst case for one
//! payer series is its bucket count: W/w, between 60 and 600 per sliding window, 367 for
//! calendar_year. `days_since_first` is forgotten when an entity's whole state expires
//! (longest default retention: the calendar year).
//!
//! # Cost
//! Per payment with the default set (55 features, ~5.3 entity writes): ~10-15 µs of CPU for
//! reading and recording, plus sled: one insert per changed entity key per checkpoint. Most
//! entities are touched once per checkpoint (new payer→payee pairs above all), so sled's
//! inserts, on the checkpoint thread, dominate (see `benches/README.md`).

pub(crate) mod presence;
pub mod spec;
mod state;
mod store;

#[cfg(test)]
mod tests;

pub use spec::{Aggregate, FeatureDef, FeatureSet, Field, Filter, Window};
pub use store::{CacheStats, FeatureStore, Observation, StoreOptions, SweepStats};

/// A features file could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum FeatureFileError {
    #[error("{file}: {reason}")]
    Io { file: String, reason: String },
    #[error("{file}:{line}:{col}: {reason}")]
    Invalid {
        file: String,
        line: usize,
        col: usize,
        reason: String,
    },
}

/// The store failed at runtime.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("feature store: sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("feature store: corrupt state: {0}")]
    Corrupt(String),
}
