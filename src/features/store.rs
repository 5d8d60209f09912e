//! The feature store: cache of entity states over a sled tree, reading and recording payments.

use std::collections::HashMap;
use std::sync::Arc;

use crate::payment::{OutcomeKind, Payment};

use super::presence::{key_hash, Presence};
use super::spec::{
    category_code, fnv64, hour_of, is_night, is_weekend, year_start_day, Aggregate, EntityPlan,
    FeatureDef, FeatureSet, Reader, SeriesKind, Window, AMOUNT_BINS_PER_OCTAVE, DAY_MS,
    LAST_BUCKET_MS, ROBUST_Z_MIN_HISTORY,
};
use super::state::{Bucket, EntityState};
use super::FeatureError;

/// Keys come from requests, so the hash is seeded per process (foldhash's `RandomState`);
/// std's SipHash on these short keys was 2.7% of the scoring thread in an in-memory replay.
type Cache = HashMap<Key, Cached, foldhash::fast::RandomState>;

/// An entity key, kept inline up to 24 bytes (most keys): probing the cache then compares
/// the key in the table itself instead of following a pointer to one more cold line.
type Key = smallvec::SmallVec<[u8; 24]>;

const WATERMARK_KEY: &[u8] = b"\xff\xffwatermark";
/// The caller's position in its own event log at the last checkpoint (see `checkpoint`).
const CHECKPOINT_KEY: &[u8] = b"\xff\xffcheckpoint";

/// Runtime knobs that do not change feature values.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Entity states kept in memory (besides those touched since the last commit).
    pub cache_capacity: usize,
    /// The sled tree holding all feature state.
    pub tree_name: String,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity: 100_000,
            tree_name: "features.v1".to_string(),
        }
    }
}

/// What happened to one observed payment besides its feature values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Older than watermark - lateness: scored from current state, not recorded.
    pub late: bool,
    /// The store's watermark after this event (whole seconds).
    pub watermark_ms: i64,
}

impl Observation {
    /// A stable reason code for metrics and decision records, when the event was not recorded.
    pub fn reason(&self) -> Option<&'static str> {
        self.late.then_some("late_beyond_lateness")
    }
}

/// How often an entity state was found in memory rather than read from sled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// Progress of one [`FeatureStore::sweep`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Stored keys walked, cached ones included.
    pub visited: usize,
    pub rewritten: usize,
    pub deleted: usize,
    /// The walk reached the end of the tree and starts over next call.
    pub wrapped: bool,
}

struct Cached {
    /// Shared with a running checkpoint's writer, which encodes it; a state changed while
    /// that runs is copied first (`Arc::make_mut`).
    state: Arc<EntityState>,
    tick: u64,
    /// Changed since the last checkpoint: must be written before it may be evicted.
    dirty: bool,
    /// Index of its entity in the feature set.
    entity: usize,
}

struct EntityMeta {
    kinds: Vec<SeriesKind>,
    sigs: Vec<u64>,
}

/// Sliding-window feature state for one engine thread.
pub struct FeatureStore {
    set: FeatureSet,
    /// Shared with the checkpoint writer, which encodes states.
    meta: Arc<[EntityMeta]>,
    tree: sled::Tree,
    cache: Cache,
    capacity: usize,
    tick: u64,
    watermark: Option<i64>,
    stats: CacheStats,
    /// Entity states changed since the last checkpoint (marked `dirty` in the cache).
    dirty_count: usize,
    /// The last checkpoint's write, running on its own thread.
    pending: Option<std::thread::JoinHandle<Result<Spare, sled::Error>>>,
    /// The last checkpoint's lists, emptied, for the next one: fresh lists of tens of
    /// thousands of entries cost the scoring thread tens of ms of page faults.
    spare: Spare,
    /// The caller's log position of the event being applied (see `set_position`).
    position: Option<u64>,
    key: Vec<u8>,
    enc: Vec<u8>,
    sweep_cursor: Vec<u8>,
    /// Keys that may be stored: a miss on any other key needs no sled read.
    presence: Presence,
    /// (bad, payments) of each smoothed rate in this payment, until its prior is read.
    smooth_parts: Vec<(f64, f64)>,
}

fn bucket(t: i64, w: i64, tz: i64) -> i64 {
    t.saturating_add(tz).div_euclid(w)
}

fn load_watermark(tree: &sled::Tree) -> Result<Option<i64>, FeatureError> {
    match tree.get(WATERMARK_KEY)? {
        Some(v) => {
            let a: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| FeatureError::Corrupt("bad watermark".into()))?;
            Ok(Some(i64::from_le_bytes(a)))
        }
        None => Ok(None),
    }
}

/// Builds `<entity> 0x00 <values joined by 0x1f>`; false when a field is absent.
fn build_key(plan: &EntityPlan, p: &Payment, key: &mut Vec<u8>) -> bool {
    key.clear();
    key.extend_from_slice(plan.name.as_bytes());
    key.push(0);
    for (i, f) in plan.fields.iter().enumerate() {
        let Some(v) = f.value(p) else { return false };
        if i > 0 {
            key.push(0x1f);
        }
        key.extend_from_slice(v.as_bytes());
    }
    true
}

#[allow(clippy::too_many_arguments)]
fn load<'c>(
    cache: &'c mut Cache,
    stats: &mut CacheStats,
    tree: &sled::Tree,
    presence: &mut Presence,
    key: &[u8],
    entity: usize,
    meta: &EntityMeta,
    tick: u64,
) -> Result<&'c mut Cached, FeatureError> {
    if cache.contains_key(key) {
        stats.hits += 1;
    } else {
        stats.misses += 1;
        presence.poll();
        let stored = if presence.may_contain(key_hash(key)) {
            tree.get(key)?
        } else {
            None
        };
        let state = match stored {
            Some(v) => EntityState::decode(&v, &meta.sigs, &meta.kinds)?,
            None => EntityState::new(meta.kinds.len()),
        };
        cache.insert(
            Key::from_slice(key),
            Cached {
                state: Arc::new(state),
                tick,
                dirty: false,
                entity,
            },
        );
    }
    let c = cache
        .get_mut(key)
        .ok_or_else(|| FeatureError::Corrupt("cache lost an entry".into()))?;
    c.tick = tick;
    Ok(c)
}

/// Drops what no accepted event can read any more, given the watermark.
fn compact(
    plan: &EntityPlan,
    st: &mut EntityState,
    watermark: Option<i64>,
    lateness: i64,
    tz: i64,
) {
    let Some(wm) = watermark else { return };
    for (i, spec) in plan.series.iter().enumerate() {
        let oldest = wm
            .saturating_sub(lateness)
            .saturating_sub(spec.retention_ms);
        st.compact(i, &spec.kind, bucket(oldest, spec.bucket_ms, tz));
    }
    if st.is_empty() {
        st.first_ms = None;
    }
}

/// (count, sum, max) over buckets lo..=hi.
fn counter_read(v: &[Bucket], lo: i64, hi: i64) -> (u64, i64, i64) {
    let start = v.partition_point(|b| b.idx < lo);
    let (mut c, mut s, mut m) = (0u64, 0i64, i64::MIN);
    for b in v[start..].iter().take_while(|b| b.idx <= hi) {
        c += b.count;
        s = s.saturating_add(b.sum);
        m = m.max(b.max);
    }
    (c, s, if c == 0 { 0 } else { m })
}

/// Inclusive bucket range a windowed feature reads at time `t`.
fn range(window: Window, w: i64, t: i64, tz: i64) -> (i64, i64) {
    match window {
        Window::Sliding { len_ms, lag_ms, .. } => {
            let hi = bucket(t.saturating_sub(lag_ms), w, tz);
            (hi - len_ms / w + 1, hi)
        }
        Window::CalendarDay => {
            let d = bucket(t, DAY_MS, tz);
            (d, d)
        }
        Window::CalendarYear => {
            let d = bucket(t, DAY_MS, tz);
            (year_start_day(d), d)
        }
        Window::None => (i64::MIN, i64::MAX),
    }
}

/// The log2 amount bin of a robust z-score histogram (amounts below 1 fen share bin 0).
pub(crate) fn amount_bin(amount_fen: i64) -> i64 {
    ((amount_fen.max(1) as f64).log2() * AMOUNT_BINS_PER_OCTAVE).floor() as i64
}

/// Bins an i64 amount can fall in (log2 < 63).
const AMOUNT_BINS: usize = 64 * AMOUNT_BINS_PER_OCTAVE as usize;

/// The lower weighted median of a histogram holding `n` items.
fn median_bin(hist: &[u64; AMOUNT_BINS], n: u64) -> usize {
    let mut seen = 0;
    for (bin, &c) in hist.iter().enumerate() {
        seen += c;
        if 2 * seen >= n {
            return bin;
        }
    }
    AMOUNT_BINS - 1
}

/// (amount bin - median bin) / (1.4826 · MAD in bins, at least one bin) over the entity's
/// payments in buckets lo..=hi: a z-score that a few outliers in the history do not move,
/// on log amounts, where "twice the usual" is the same step for every payer.
fn robust_z(bins: &[super::state::Label], lo: i64, hi: i64, amount_fen: i64) -> f64 {
    let mut hist = [0u64; AMOUNT_BINS];
    let mut n = 0;
    let start = bins.partition_point(|e| e.paid < lo);
    for e in bins[start..].iter().take_while(|e| e.paid <= hi) {
        hist[(e.reported.max(0) as usize).min(AMOUNT_BINS - 1)] += e.count;
        n += e.count;
    }
    if n < ROBUST_Z_MIN_HISTORY {
        return 0.0;
    }
    let median = median_bin(&hist, n);
    let mut deviations = [0u64; AMOUNT_BINS];
    for (bin, &c) in hist.iter().enumerate() {
        deviations[bin.abs_diff(median)] += c;
    }
    let mad = median_bin(&deviations, n).max(1);
    (amount_bin(amount_fen) - median as i64) as f64 / (1.4826 * mad as f64)
}

/// The last counter read of an entity: (series, lo, hi) and its (count, sum, max).
/// Features come in pairs over one window (count and sum), which then read the buckets once.
type CounterMemo = Option<((usize, i64, i64), (u64, i64, i64))>;

fn read_one(
    def: &FeatureDef,
    r: &Reader,
    plan: &EntityPlan,
    st: &EntityState,
    p: &Payment,
    tz: i64,
    memo: &mut CounterMemo,
) -> f64 {
    let t = p.event_time_ms;
    let spec = &plan.series[r.series];
    let w = spec.bucket_ms;
    match def.aggregate {
        Aggregate::Count
        | Aggregate::Sum
        | Aggregate::Avg
        | Aggregate::Max
        | Aggregate::AmountVsAvg
        | Aggregate::AmountVsPriorAvg
        | Aggregate::AmountAbovePriorMax => {
            let (lo, hi) = range(def.window, w, t, tz);
            let (c, s, m) = match *memo {
                Some((at, v)) if at == (r.series, lo, hi) => v,
                _ => {
                    let v = counter_read(st.counter(r.series), lo, hi);
                    *memo = Some(((r.series, lo, hi), v));
                    v
                }
            };
            let avg = if c == 0 { 0.0 } else { s as f64 / c as f64 };
            match def.aggregate {
                Aggregate::Count => c as f64,
                Aggregate::Sum => s as f64,
                Aggregate::Max => m as f64,
                Aggregate::Avg => avg,
                // Read before this payment is recorded: (c, s, m) are its history.
                Aggregate::AmountVsPriorAvg if avg > 0.0 => p.amount_fen as f64 / avg,
                Aggregate::AmountVsPriorAvg => 1.0,
                Aggregate::AmountAbovePriorMax if c > 0 => p.amount_fen.saturating_sub(m) as f64,
                Aggregate::AmountAbovePriorMax => 0.0,
                _ if avg > 0.0 => p.amount_fen as f64 / avg,
                _ => 0.0,
            }
        }
        Aggregate::AmountRobustZ => {
            let (lo, hi) = range(def.window, w, t, tz);
            robust_z(st.amounts(r.series), lo, hi, p.amount_fen)
        }
        Aggregate::SincePrevious => {
            let (lo, _) = range(def.window, w, t, tz);
            let len_s = match def.window {
                Window::Sliding { len_ms, .. } => len_ms as f64 / 1000.0,
                _ => 0.0,
            };
            match st.last(r.series) {
                // Bucket = local ms (1 ms wide): back to event time.
                Some(last) if last >= lo => {
                    (t.saturating_sub(last.saturating_sub(tz)).max(0) as f64 / 1000.0).min(len_s)
                }
                _ => len_s,
            }
        }
        Aggregate::Distinct => {
            let (lo, _) = range(def.window, w, t, tz);
            st.distinct_count(r.series, lo)
        }
        Aggregate::NewValue => {
            let Some(val) = def.of.as_ref().and_then(|f| f.value(p)) else {
                return 0.0;
            };
            let (lo, _) = range(def.window, w, t, tz);
            match st.seen_lookup(r.series, fnv64(val.as_bytes())) {
                Some(last) if last >= lo => 0.0,
                _ => 1.0,
            }
        }
        Aggregate::DaysSinceFirst => st
            .first_ms
            .map_or(0.0, |f| (t.saturating_sub(f)).max(0) as f64 / DAY_MS as f64),
        Aggregate::BadReports => {
            let (lo, hi) = range(def.window, w, t, tz);
            let hi = hi.min(bucket(t, w, tz) - 1);
            st.reports(r.series)
                .iter()
                .filter(|e| e.idx >= lo && e.idx <= hi)
                .map(|e| e.count)
                .sum::<u64>() as f64
        }
        Aggregate::BadRate => {
            let (bad, total) = rate_parts(def, r, plan, st, t, tz);
            if total == 0.0 {
                0.0
            } else {
                (bad / total).min(1.0)
            }
        }
        Aggregate::BadCount => {
            let (lo, hi) = range(def.window, w, t, tz);
            known_bad(st, r.series, lo, hi, bucket(t, w, tz)) as f64
        }
        _ => 0.0,
    }
}

/// Bad labels of payments made in buckets lo..=hi, counting only reports whose bucket ended
/// before bucket `now` (so never a label from the payment's future).
fn known_bad(st: &EntityState, series: usize, lo: i64, hi: i64, now: i64) -> u64 {
    let v = st.labels(series);
    let start = v.partition_point(|e| e.paid < lo);
    v[start..]
        .iter()
        .take_while(|e| e.paid <= hi)
        .filter(|e| e.reported < now)
        .map(|e| e.count)
        .sum()
}

/// (known bad labels, payments) of a `bad_rate` feature's window.
fn rate_parts(
    def: &FeatureDef,
    r: &Reader,
    plan: &EntityPlan,
    st: &EntityState,
    t: i64,
    tz: i64,
) -> (f64, f64) {
    let w = plan.series[r.series].bucket_ms;
    let (lo, hi) = range(def.window, w, t, tz);
    let (total, _, _) = counter_read(st.counter(r.aux), lo, hi);
    let bad = known_bad(st, r.series, lo, hi, bucket(t, w, tz));
    (bad as f64, total as f64)
}

impl FeatureStore {
    pub fn open(
        db: &sled::Db,
        set: FeatureSet,
        options: StoreOptions,
    ) -> Result<FeatureStore, FeatureError> {
        let tree = db.open_tree(options.tree_name.as_bytes())?;
        let capacity = options.cache_capacity.max(1);
        let watermark = load_watermark(&tree)?;
        let presence = Presence::open(&tree, b"");
        let meta = set
            .entities
            .iter()
            .map(|e| EntityMeta {
                kinds: e.series.iter().map(|s| s.kind.clone()).collect(),
                sigs: e.series.iter().map(|s| s.sig).collect(),
            })
            .collect();
        Ok(FeatureStore {
            set,
            meta,
            tree,
            // Sized for what checkpoints let it keep (they evict above capacity + 1/4), so
            // the table does not rehash on the engine thread while the cache warms up.
            cache: Cache::with_capacity_and_hasher(
                capacity + capacity / 4,
                foldhash::fast::RandomState::default(),
            ),
            capacity,
            tick: 0,
            watermark,
            dirty_count: 0,
            pending: None,
            spare: Spare::default(),
            position: None,
            stats: CacheStats::default(),
            key: Vec::new(),
            enc: Vec::new(),
            sweep_cursor: Vec::new(),
            presence,
            smooth_parts: Vec::new(),
        })
    }

    pub fn set(&self) -> &FeatureSet {
        &self.set
    }

    /// The tree holding the checkpointed state, for inspection (sizes, tests).
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The marker stored by the last `checkpoint`; `None` before the first.
    pub fn checkpoint_marker(&self) -> Result<Option<Vec<u8>>, FeatureError> {
        Ok(self.tree.get(CHECKPOINT_KEY)?.map(|v| v.to_vec()))
    }

    /// Entity states changed since the last checkpoint.
    pub fn dirty_entities(&self) -> usize {
        self.dirty_count
    }

    pub fn watermark_ms(&self) -> Option<i64> {
        self.watermark
    }

    pub fn cached_entities(&self) -> usize {
        self.cache.len()
    }

    /// Entity states found in memory and read from sled since the store was opened.
    pub fn cache_stats(&self) -> CacheStats {
        self.stats
    }

    /// Says which entry of the caller's log the next `observe` or `record_outcome` applies
    /// (0, 1, 2, ... in log order). A caller that does this for every event gets checkpoints
    /// written state by state, which never take sled's process-wide batch lock; after a
    /// crash part-way through one, replaying from the last marker skips, per entity, the
    /// events its stored state already holds. Without positions every checkpoint is one
    /// atomic batch.
    pub fn set_position(&mut self, position: u64) {
        self.position = Some(position);
    }

    /// Reads all features of `p` into `out` (one per slot) and records `p` in memory; the
    /// change reaches disk at the next `checkpoint`.
    pub fn observe(
        &mut self,
        p: &Payment,
        out: &mut Vec<f64>,
    ) -> Result<Observation, FeatureError> {
        let t = p.event_time_ms;
        let lateness = self.set.lateness_ms;
        let tz = self.set.tz_offset_ms;
        let late = matches!(self.watermark, Some(w) if t < w.saturating_sub(lateness));
        if !late {
            // Whole seconds, so the watermark is written at most once per second of event
            // time instead of once per payment; lateness is thus measured from the second.
            let tq = t.saturating_sub(t.rem_euclid(1000));
            let wm = self.watermark.map_or(tq, |w| w.max(tq));
            if self.watermark != Some(wm) {
                self.watermark = Some(wm);
            }
        }
        out.clear();
        out.resize(self.set.names.len(), 0.0);
        for &slot in &self.set.payment_slots {
            let def = &self.set.defs[slot];
            out[slot] = match def.aggregate {
                Aggregate::AmountFen => p.amount_fen as f64,
                Aggregate::Hour => hour_of(t, tz) as f64,
                Aggregate::IsNight => f64::from(u8::from(is_night(t, tz))),
                Aggregate::IsWeekend => f64::from(u8::from(is_weekend(t, tz))),
                Aggregate::IsRound => f64::from(u8::from(
                    p.amount_fen != 0 && p.amount_fen % def.round_unit_fen == 0,
                )),
                Aggregate::Code => def.code_text(p).map_or(0.0, category_code),
                _ => 0.0,
            };
        }
        let FeatureStore {
            set,
            meta,
            tree,
            cache,
            tick,
            watermark,
            dirty_count,
            stats,
            key,
            presence,
            position,
            smooth_parts,
            ..
        } = self;
        smooth_parts.clear();
        smooth_parts.resize(set.smoothed.len(), (0.0, 0.0));
        for (ei, plan) in set.entities.iter().enumerate() {
            if !build_key(plan, p, key) {
                continue;
            }
            *tick += 1;
            let c = load(cache, stats, tree, presence, key, ei, &meta[ei], *tick)?;
            let st = Arc::make_mut(&mut c.state);
            compact(plan, st, *watermark, lateness, tz);
            let record = !late && !covered(*position, st);
            let mut memo = None;
            for r in &plan.readers {
                if set.defs[r.slot].aggregate.reads_before() {
                    out[r.slot] = read_one(&set.defs[r.slot], r, plan, st, p, tz, &mut memo);
                }
            }
            if record {
                st.first_ms = Some(st.first_ms.map_or(t, |f| f.min(t)));
                for (i, spec) in plan.series.iter().enumerate() {
                    if !spec.filter.matches(p, tz) {
                        continue;
                    }
                    let idx = bucket(t, spec.bucket_ms, tz);
                    match &spec.kind {
                        SeriesKind::Counter => st.counter_add(i, idx, p.amount_fen),
                        SeriesKind::Distinct(f) => {
                            if let Some(val) = f.value(p) {
                                st.distinct_insert(i, fnv64(val.as_bytes()), idx, set.exact_limit);
                            }
                        }
                        SeriesKind::Seen(f) => {
                            if let Some(val) = f.value(p) {
                                st.seen_insert(i, fnv64(val.as_bytes()), idx);
                                st.seen_cap(i, set.exact_limit);
                            }
                        }
                        SeriesKind::Last => {
                            st.last_set(i, bucket(t, LAST_BUCKET_MS, tz));
                        }
                        SeriesKind::Amounts => st.amount_add(i, idx, amount_bin(p.amount_fen)),
                        SeriesKind::Reports(_) | SeriesKind::Labels(_) => {}
                    }
                }
                stamp(st, *position);
            }
            let mut memo = None;
            for r in &plan.readers {
                let def = &set.defs[r.slot];
                if def.aggregate.reads_before() {
                    continue;
                }
                if def.smooth.is_some() {
                    // Its prior may belong to an entity not read yet: finished below.
                    if let Some(k) = set.smoothed.iter().position(|&s| s == r.slot) {
                        smooth_parts[k] = rate_parts(def, r, plan, st, t, tz);
                    }
                    continue;
                }
                out[r.slot] = read_one(def, r, plan, st, p, tz, &mut memo);
            }
            if record && !c.dirty {
                c.dirty = true;
                *dirty_count += 1;
                presence.insert(key_hash(key));
            }
        }
        // A smoothed rate with nothing of its own (no such category yet, or its field
        // absent) reads the prior: the best guess, not a misleading 0.
        for (&slot, &(bad, total)) in set.smoothed.iter().zip(smooth_parts.iter()) {
            if let Some(sm) = &set.defs[slot].smooth {
                let prior = out[sm.toward_slot];
                out[slot] = ((bad + sm.weight * prior) / (total + sm.weight)).min(1.0);
            }
        }
        Ok(Observation {
            late,
            watermark_ms: self.watermark.unwrap_or(t),
        })
    }

    /// Records a delayed outcome of payment `p`, reported at `reported_at_ms`.
    ///
    /// Bad reports count from the report's bucket on; labels count toward `bad_rate` in the
    /// payment's bucket, and only for payments scored after the report's bucket ended.
    pub fn record_outcome(
        &mut self,
        p: &Payment,
        outcome: OutcomeKind,
        reported_at_ms: i64,
    ) -> Result<(), FeatureError> {
        let lateness = self.set.lateness_ms;
        let tz = self.set.tz_offset_ms;
        let FeatureStore {
            set,
            meta,
            tree,
            cache,
            tick,
            watermark,
            dirty_count,
            stats,
            key,
            presence,
            position,
            ..
        } = self;
        for (ei, plan) in set.entities.iter().enumerate() {
            let wanted = plan.series.iter().any(|s| match &s.kind {
                SeriesKind::Reports(k) | SeriesKind::Labels(k) => {
                    k.contains(&outcome) && s.filter.matches(p, tz)
                }
                _ => false,
            });
            if !wanted || !build_key(plan, p, key) {
                continue;
            }
            *tick += 1;
            let c = load(cache, stats, tree, presence, key, ei, &meta[ei], *tick)?;
            let st = Arc::make_mut(&mut c.state);
            compact(plan, st, *watermark, lateness, tz);
            if covered(*position, st) {
                continue;
            }
            for (i, spec) in plan.series.iter().enumerate() {
                if !spec.filter.matches(p, tz) {
                    continue;
                }
                let floor = watermark.map_or(i64::MIN, |wm| {
                    bucket(
                        wm.saturating_sub(lateness)
                            .saturating_sub(spec.retention_ms),
                        spec.bucket_ms,
                        tz,
                    )
                });
                let r = bucket(reported_at_ms, spec.bucket_ms, tz);
                match &spec.kind {
                    SeriesKind::Reports(k) if k.contains(&outcome) && r >= floor => {
                        st.report_add(i, r)
                    }
                    SeriesKind::Labels(k) if k.contains(&outcome) => {
                        let pb = bucket(p.event_time_ms, spec.bucket_ms, tz);
                        if pb >= floor {
                            st.label_add(i, pb, r);
                        }
                    }
                    _ => {}
                }
            }
            stamp(st, *position);
            if !c.dirty {
                c.dirty = true;
                *dirty_count += 1;
                presence.insert(key_hash(key));
            }
        }
        Ok(())
    }

    /// Writes every changed entity state, the watermark and `marker`, and waits for it: in
    /// one atomic batch, or with positions (`set_position`) state by state and the marker
    /// last.
    ///
    /// Between checkpoints the state lives only in memory. The caller keeps its own durable
    /// log of what it observed (fengkong's decision records) and `marker` says how far into
    /// that log this checkpoint reaches; after a crash the caller re-observes the log from
    /// the marker on, and the features come out identical to an uninterrupted run.
    pub fn checkpoint(&mut self, marker: &[u8]) -> Result<usize, FeatureError> {
        self.checkpoint_after(marker, || Ok(()))
    }

    /// `checkpoint` with `first` run before it writes (see `start_checkpoint_after`).
    pub fn checkpoint_after(
        &mut self,
        marker: &[u8],
        first: impl FnOnce() -> Result<(), sled::Error> + Send + 'static,
    ) -> Result<usize, FeatureError> {
        let written = self.start_checkpoint_after(marker, first)?;
        self.wait_checkpoint()?;
        Ok(written)
    }

    /// Like `checkpoint`, but the sled write runs on its own thread so the caller goes on
    /// scoring; the next checkpoint (or `wait_checkpoint`) waits for it. States written by
    /// a checkpoint are evicted from the cache only after that write has finished, so a
    /// cache miss never reads an older state from disk.
    pub fn start_checkpoint(&mut self, marker: &[u8]) -> Result<usize, FeatureError> {
        self.start_checkpoint_after(marker, || Ok(()))
    }

    /// Like `start_checkpoint`, with `first` run on the checkpoint's thread before it
    /// writes anything: the caller's log must be in sled up to `marker` before a checkpoint
    /// that covers it (a crash keeps a prefix of sled's writes, so the states are then
    /// never in sled without the log entries they count).
    pub fn start_checkpoint_after(
        &mut self,
        marker: &[u8],
        first: impl FnOnce() -> Result<(), sled::Error> + Send + 'static,
    ) -> Result<usize, FeatureError> {
        self.wait_checkpoint()?;
        let (written, checkpoint) = self.prepare_checkpoint(marker);
        let tree = self.tree.clone();
        self.pending = Some(
            std::thread::Builder::new()
                .name("fengkong-checkpoint".into())
                .spawn(move || {
                    first()?;
                    checkpoint.apply(&tree, usize::MAX)
                })
                .map_err(|e| {
                    FeatureError::Corrupt(format!("cannot start checkpoint writer: {e}"))
                })?,
        );
        Ok(written)
    }

    /// A checkpoint cut off after `states` of its states, as by a crash.
    #[cfg(test)]
    pub(crate) fn torn_checkpoint(&mut self, marker: &[u8], states: usize) {
        let _ = self.wait_checkpoint();
        let (_, checkpoint) = self.prepare_checkpoint(marker);
        let _ = checkpoint.apply(&self.tree, states);
    }

    /// Takes every changed state out of the cache's dirty set into a checkpoint's writes.
    /// No write may be in flight.
    fn prepare_checkpoint(&mut self, marker: &[u8]) -> (usize, Checkpoint) {
        // No write is in flight here, as a new key scan requires. Changed keys went into the
        // filter when they changed; a scan starting now may miss the ones this checkpoint
        // is about to write, so they go into its filter too.
        let rescan = self.presence.maintain(&self.tree);
        let cap = self.capacity;
        let Spare {
            states,
            mut evicted,
        } = std::mem::take(&mut self.spare);
        if self.cache.len() > cap + cap / 4 {
            let keep_after = self.tick.saturating_sub(cap as u64);
            // Freeing tens of thousands of states took the scoring thread ~20 ms: the writer
            // frees them.
            evicted.extend(
                self.cache
                    .extract_if(|_, c| !c.dirty && c.tick <= keep_after),
            );
        }
        let written = self.dirty_count;
        self.dirty_count = 0;
        let mut checkpoint = Checkpoint {
            states,
            evicted,
            // Without stamped states only one atomic batch keeps marker and states in step.
            stamped: self.position.is_some(),
            meta: Arc::clone(&self.meta),
            ..Checkpoint::default()
        };
        // Walking the cache costs less than keeping a copy of every dirty key. This runs on
        // the scoring thread, so it touches no state: the writer encodes them.
        for (key, c) in self.cache.iter_mut().filter(|(_, c)| c.dirty) {
            c.dirty = false;
            if rescan {
                self.presence.insert(key_hash(key));
            }
            checkpoint
                .states
                .push((key.clone(), c.entity, Arc::clone(&c.state)));
        }
        if let Some(wm) = self.watermark {
            checkpoint.last.insert(WATERMARK_KEY, &wm.to_le_bytes()[..]);
        }
        checkpoint.last.insert(CHECKPOINT_KEY, marker);
        (written, checkpoint)
    }

    /// Waits for a checkpoint started by `start_checkpoint`.
    pub fn wait_checkpoint(&mut self) -> Result<(), FeatureError> {
        match self.pending.take().map(std::thread::JoinHandle::join) {
            None => Ok(()),
            Some(Ok(Ok(spare))) => {
                self.spare = spare;
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e.into()),
            Some(Err(_)) => Err(FeatureError::Corrupt("checkpoint writer panicked".into())),
        }
    }

    /// Drops all in-memory state, including changes not yet checkpointed, and reloads the
    /// watermark: the caller then re-observes its log from the checkpoint marker on.
    pub fn discard_cache(&mut self) {
        // The failed or finished write's outcome no longer matters: the caller recovers.
        let _ = self.wait_checkpoint();
        self.cache.clear();
        self.dirty_count = 0;
        // If even this read fails the next commit fails too; keep the last known value.
        if let Ok(w) = load_watermark(&self.tree) {
            self.watermark = w;
        }
    }

    /// Walks up to `max_entries` stored keys, compacting the entities not in the cache and
    /// deleting those with nothing left and entities no longer declared; continues where
    /// the last call stopped. Uses min(now_ms, watermark) so it never drops what an
    /// accepted event could read. A running checkpoint writes only cached entities, which
    /// the sweep leaves alone, so it need not wait for one.
    pub fn sweep(&mut self, now_ms: i64, max_entries: usize) -> Result<SweepStats, FeatureError> {
        let mut stats = SweepStats::default();
        let Some(wm) = self.watermark else {
            return Ok(stats);
        };
        let wm = Some(wm.min(now_ms));
        let lateness = self.set.lateness_ms;
        let tz = self.set.tz_offset_ms;
        let mut last: Option<Vec<u8>> = None;
        // Plain writes, not a batch: each is a compaction of a state no one else writes.
        let mut removals = Vec::new();
        let mut rewrites = Vec::new();
        let mut iter = self.tree.range(self.sweep_cursor.as_slice()..);
        loop {
            if stats.visited >= max_entries {
                break;
            }
            let Some(item) = iter.next() else {
                stats.wrapped = true;
                break;
            };
            let (k, v) = item?;
            last = Some(k.to_vec());
            // Cached keys count too: the walk, not only the work, must stay short.
            stats.visited += 1;
            if k.as_ref() == WATERMARK_KEY
                || k.as_ref() == CHECKPOINT_KEY
                || self.cache.contains_key(k.as_ref())
            {
                continue;
            }
            let name_end = k.iter().position(|&b| b == 0).unwrap_or(k.len());
            let Some(ei) = self
                .set
                .entities
                .iter()
                .position(|e| e.name.as_bytes() == &k[..name_end])
            else {
                removals.push(k);
                continue;
            };
            let plan = &self.set.entities[ei];
            let meta = &self.meta[ei];
            let mut st = EntityState::decode(&v, &meta.sigs, &meta.kinds)?;
            compact(plan, &mut st, wm, lateness, tz);
            if st.is_empty() {
                removals.push(k);
                continue;
            }
            // A cold state loses its short windows' buckets first; rewriting it for every
            // one would cost a write per entity per sweep. Rewrite once compaction frees at
            // least half its bytes: what is stored stays within twice what is live.
            st.encode(&meta.sigs, &meta.kinds, &mut self.enc);
            if self.enc.len() * 2 <= v.len() {
                rewrites.push((k, self.enc.clone()));
            }
        }
        stats.deleted = removals.len();
        stats.rewritten = rewrites.len();
        for k in removals {
            self.tree.remove(k)?;
        }
        for (k, v) in rewrites {
            self.tree.insert(k, v)?;
        }
        self.sweep_cursor = match (stats.wrapped, last) {
            (false, Some(mut k)) => {
                k.push(0);
                k
            }
            _ => Vec::new(),
        };
        Ok(stats)
    }
}

impl Drop for FeatureStore {
    /// A checkpoint still being written holds the tree, and so sled's lock on the data dir:
    /// let it finish, so the dir can be opened again as soon as the store is gone.
    fn drop(&mut self) {
        let _ = self.wait_checkpoint();
    }
}

/// Key, entity index and state of each changed entity.
type StateList = Vec<(Key, usize, Arc<EntityState>)>;
/// Entries dropped from the cache, freed by the writer instead of the scoring thread.
type Evicted = Vec<(Key, Cached)>;

/// A finished checkpoint's lists, emptied, capacity kept.
#[derive(Default)]
struct Spare {
    states: StateList,
    evicted: Evicted,
}

/// One checkpoint's writes: the states, then `last` (deletions, watermark and marker),
/// which makes the checkpoint count. The writer's thread encodes the states, so the engine
/// thread only collects them. With stamped states (`set_position`) each state is a plain
/// sled insert: sled's `apply_batch` holds a process-wide lock, so one batch of every
/// changed state (tens of thousands) stalled every decision write for hundreds of ms, and
/// it writes and syncs sled's log buffer twice, which made smaller batches no better.
#[derive(Default)]
struct Checkpoint {
    states: StateList,
    evicted: Evicted,
    /// Series signatures and kinds by entity index, for encoding.
    meta: Arc<[EntityMeta]>,
    stamped: bool,
    last: sled::Batch,
}

impl Checkpoint {
    /// Writes the first `max_states` states, and `last` if that was all of them; returns the
    /// emptied list.
    fn apply(self, tree: &sled::Tree, max_states: usize) -> Result<Spare, sled::Error> {
        let Checkpoint {
            mut states,
            mut evicted,
            meta,
            stamped,
            mut last,
        } = self;
        evicted.clear();
        // In key order, sled's inserts walk neighbouring leaves, warm from the last insert.
        states.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let complete = states.len() <= max_states;
        let mut enc = Vec::new();
        for (key, entity, state) in states.drain(..).take(max_states) {
            if state.is_empty() {
                // Deleted with the marker: an empty state carries no stamp to skip by.
                last.remove(&key[..]);
                continue;
            }
            let m = &meta[entity];
            state.encode(&m.sigs, &m.kinds, &mut enc);
            if stamped {
                tree.insert(key, enc.as_slice())?;
            } else {
                last.insert(&key[..], enc.as_slice());
            }
        }
        if complete {
            tree.apply_batch(last)?;
        }
        Ok(Spare { states, evicted })
    }
}

/// Records in `st` that it holds the caller's log up to `position`.
fn stamp(st: &mut EntityState, position: Option<u64>) {
    if let Some(p) = position {
        st.covers = p.saturating_add(1);
    }
}

/// Whether the event at `position` is already in `st` (written by a checkpoint that reached
/// past it, of which the marker was never written).
fn covered(position: Option<u64>, st: &EntityState) -> bool {
    position.is_some_and(|p| p < st.covers)
}
