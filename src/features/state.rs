//! Per-entity state: all series of one entity in one flat buffer (bucketed counters,
//! exact/approximate distinct sets, seen values, outcome reports), and its binary encoding.
//!
//! One buffer, because a payment touches six entities and the store is far larger than the
//! CPU cache: with a separate allocation per series, each series was a cache miss of its own
//! on a chain of pointers; one buffer is a few neighbouring lines the CPU fetches together.
//!
//! Every series is kept sorted so that the encoding is canonical: equal histories give equal
//! bytes, whatever the cache did in between.

use std::ops::Range;

use bytemuck::{Pod, Zeroable};

use super::spec::SeriesKind;
use super::FeatureError;

/// Registers of the sliding HyperLogLog (2^14): standard error 1.04/sqrt(16384) = 0.81%, so
/// about 99% of estimates are within 2%. 4,096 registers (1.6%) missed 2% too often.
pub(crate) const HLL_P: u32 = 14;
const HLL_M: usize = 1 << HLL_P;
/// 2 added `covers`; version 1 states (covers 0) are still read.
const VERSION: u8 = 2;

/// Set in a series' end offset when the series is a distinct set kept as a sketch.
const SKETCH: u64 = 1 << 63;

/// One time bucket of a counter series.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct Bucket {
    pub idx: i64,
    pub count: u64,
    pub sum: i64,
    pub max: i64,
}

/// A value's hash and the last bucket it was seen in (exact distinct sets, seen values).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct Mark {
    pub hash: u64,
    pub idx: i64,
}

/// One (register, bucket, rank) entry of a sliding HyperLogLog; per register, entries are
/// sorted by bucket and ranks strictly decrease, so only entries that can still be a
/// register's maximum in some future window are kept (Chabchoub & Hebrail's LFPM list).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct HllEntry {
    pub idx: i64,
    pub reg: u16,
    pub rank: u8,
    pad: [u8; 5],
}

impl HllEntry {
    fn new(reg: u16, rank: u8, idx: i64) -> HllEntry {
        HllEntry {
            idx,
            reg,
            rank,
            pad: [0; 5],
        }
    }
}

/// Outcome reports received in one bucket.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct Report {
    pub idx: i64,
    pub count: u64,
}

/// Bad outcomes of payments made in bucket `paid`, reported in bucket `reported`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct Label {
    pub paid: i64,
    pub reported: i64,
    pub count: u64,
}

/// All state kept for one entity key. Series `i` has the kind of the entity's series `i`
/// in the feature set; the caller passes those kinds where the state needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntityState {
    pub first_ms: Option<i64>,
    /// How many of the caller's log entries the state includes (the first `covers`
    /// positions), set as each event is applied: a checkpoint writes states one by one, so
    /// a replay after a crash part-way through skips what a stored state already holds.
    /// 0: unknown/none.
    pub covers: u64,
    /// `words[i]` for each series `i`: where its data ends in `words` (with `SKETCH`), then
    /// the data of every series in order, sorted within each series.
    words: Vec<u64>,
    /// How many series.
    n: usize,
}

fn stride<T: Pod>() -> usize {
    size_of::<T>() / size_of::<u64>()
}

impl EntityState {
    pub fn new(series: usize) -> EntityState {
        // Room for the first payment: a bucket (or two smaller items) per series. Most
        // entities are seen once (a payer→payee pair); growing their buffer then would cost
        // a copy, a fresh allocation and half its size in slack.
        let mut words = Vec::with_capacity(series * (1 + stride::<Bucket>()));
        words.resize(series, series as u64);
        EntityState {
            first_ms: None,
            covers: 0,
            words,
            n: series,
        }
    }

    fn span(&self, i: usize) -> Range<usize> {
        let start = if i == 0 {
            self.n
        } else {
            (self.words[i - 1] & !SKETCH) as usize
        };
        start..(self.words[i] & !SKETCH) as usize
    }

    fn seg<T: Pod>(&self, i: usize) -> &[T] {
        bytemuck::cast_slice(&self.words[self.span(i)])
    }

    fn seg_mut<T: Pod>(&mut self, i: usize) -> &mut [T] {
        let span = self.span(i);
        bytemuck::cast_slice_mut(&mut self.words[span])
    }

    /// Moves the ends of series `i` and after by `delta` words.
    fn shift(&mut self, i: usize, delta: i64) {
        let n = self.n;
        for e in &mut self.words[i..n] {
            *e = e.wrapping_add_signed(delta);
        }
    }

    fn insert<T: Pod>(&mut self, i: usize, pos: usize, item: T) {
        let at = self.span(i).start + pos * stride::<T>();
        let item: &[u64] = bytemuck::cast_slice(std::slice::from_ref(&item));
        self.words.splice(at..at, item.iter().copied());
        self.shift(i, stride::<T>() as i64);
    }

    fn remove<T: Pod>(&mut self, i: usize, items: Range<usize>) {
        if items.is_empty() {
            return;
        }
        let start = self.span(i).start;
        let w = stride::<T>();
        self.words
            .drain(start + items.start * w..start + items.end * w);
        self.shift(i, -((items.len() * w) as i64));
    }

    /// Keeps the items of series `i` for which `keep` holds, in order.
    fn retain<T: Pod>(&mut self, i: usize, keep: impl Fn(&T) -> bool) {
        let v = self.seg_mut::<T>(i);
        let len = v.len();
        let kept = keep_in_place(v, keep);
        self.remove::<T>(i, kept..len);
    }

    pub fn is_sketch(&self, i: usize) -> bool {
        self.words[i] & SKETCH != 0
    }

    fn set_sketch(&mut self, i: usize, on: bool) {
        self.words[i] = if on {
            self.words[i] | SKETCH
        } else {
            self.words[i] & !SKETCH
        };
    }

    pub fn is_empty(&self) -> bool {
        self.words.len() == self.n
    }

    fn series_empty(&self, i: usize) -> bool {
        self.span(i).is_empty()
    }

    /// Drops everything of series `i` in buckets below `floor`; no reader can look there any
    /// more.
    pub fn compact(&mut self, i: usize, kind: &SeriesKind, floor: i64) {
        match kind {
            SeriesKind::Counter => self.drop_below::<Bucket>(i, |b| b.idx, floor),
            SeriesKind::Reports(_) => self.drop_below::<Report>(i, |r| r.idx, floor),
            SeriesKind::Distinct(_) if self.is_sketch(i) => {
                self.retain::<HllEntry>(i, |e| e.idx >= floor);
                if self.series_empty(i) {
                    self.set_sketch(i, false);
                }
            }
            SeriesKind::Distinct(_) | SeriesKind::Seen(_) | SeriesKind::Last => {
                self.retain::<Mark>(i, |m| m.idx >= floor)
            }
            // Sorted by (paid, ...): the expired ones are a prefix.
            SeriesKind::Labels(_) | SeriesKind::Amounts => {
                self.drop_below::<Label>(i, |l| l.paid, floor)
            }
        }
    }

    fn drop_below<T: Pod>(&mut self, i: usize, key: impl Fn(&T) -> i64, floor: i64) {
        let cut = self.seg::<T>(i).partition_point(|e| key(e) < floor);
        self.remove::<T>(i, 0..cut);
    }

    pub fn counter(&self, i: usize) -> &[Bucket] {
        self.seg(i)
    }

    pub fn counter_add(&mut self, i: usize, idx: i64, amount: i64) {
        let v = self.seg_mut::<Bucket>(i);
        match v.binary_search_by_key(&idx, |b| b.idx) {
            Ok(j) => {
                let b = &mut v[j];
                b.count += 1;
                b.sum = b.sum.saturating_add(amount);
                b.max = b.max.max(amount);
            }
            Err(j) => self.insert(
                i,
                j,
                Bucket {
                    idx,
                    count: 1,
                    sum: amount,
                    max: amount,
                },
            ),
        }
    }

    /// Records value `hash` as seen in bucket `idx` (keeps the latest bucket per value).
    pub fn seen_insert(&mut self, i: usize, hash: u64, idx: i64) {
        let v = self.seg_mut::<Mark>(i);
        match v.binary_search_by_key(&hash, |m| m.hash) {
            Ok(j) => v[j].idx = v[j].idx.max(idx),
            Err(j) => self.insert(i, j, Mark { hash, idx }),
        }
    }

    pub fn seen_lookup(&self, i: usize, hash: u64) -> Option<i64> {
        let v = self.seg::<Mark>(i);
        v.binary_search_by_key(&hash, |m| m.hash)
            .ok()
            .map(|j| v[j].idx)
    }

    /// Keeps at most `cap` values, evicting the least recently seen (ties: smallest hash).
    pub fn seen_cap(&mut self, i: usize, cap: usize) {
        let v = self.seg::<Mark>(i);
        if v.len() <= cap {
            return;
        }
        let mut order: Vec<(i64, u64)> = v.iter().map(|m| (m.idx, m.hash)).collect();
        order.sort_unstable();
        let cutoff = order[v.len() - cap - 1];
        self.retain::<Mark>(i, |m| (m.idx, m.hash) > cutoff);
    }

    /// Adds `hash` to distinct set `i`; past `exact_limit` values the set becomes a sketch.
    pub fn distinct_insert(&mut self, i: usize, hash: u64, idx: i64, exact_limit: usize) {
        if self.is_sketch(i) {
            self.hll_insert(i, hash, idx);
            return;
        }
        self.seen_insert(i, hash, idx);
        if self.seg::<Mark>(i).len() > exact_limit {
            let marks = self.seg::<Mark>(i).to_vec();
            self.remove::<Mark>(i, 0..marks.len());
            self.set_sketch(i, true);
            for m in marks {
                self.hll_insert(i, m.hash, m.idx);
            }
        }
    }

    /// Distinct values of set `i` last seen at bucket >= lo.
    pub fn distinct_count(&self, i: usize, lo: i64) -> f64 {
        if self.is_sketch(i) {
            hll_estimate(self.seg(i), lo)
        } else {
            self.seg::<Mark>(i).iter().filter(|m| m.idx >= lo).count() as f64
        }
    }

    fn hll_insert(&mut self, i: usize, hash: u64, idx: i64) {
        let (reg, rank) = hll_split(hash);
        let v = self.seg_mut::<HllEntry>(i);
        let start = v.partition_point(|e| e.reg < reg);
        let end = start + v[start..].partition_point(|e| e.reg == reg);
        // Dominated: some entry is at least as recent and at least as high.
        if v[start..end].iter().any(|e| e.idx >= idx && e.rank >= rank) {
            return;
        }
        // Drop the entries the new one dominates, keeping the rest in order.
        let k = start + keep_in_place(&mut v[start..end], |e| !(e.idx <= idx && e.rank <= rank));
        let pos = start + v[start..k].partition_point(|e| e.idx < idx);
        self.remove::<HllEntry>(i, k..end);
        self.insert(i, pos, HllEntry::new(reg, rank, idx));
    }

    pub fn reports(&self, i: usize) -> &[Report] {
        self.seg(i)
    }

    pub fn report_add(&mut self, i: usize, idx: i64) {
        let v = self.seg_mut::<Report>(i);
        match v.binary_search_by_key(&idx, |r| r.idx) {
            Ok(j) => v[j].count += 1,
            Err(j) => self.insert(i, j, Report { idx, count: 1 }),
        }
    }

    pub fn labels(&self, i: usize) -> &[Label] {
        self.seg(i)
    }

    pub fn label_add(&mut self, i: usize, paid: i64, reported: i64) {
        let v = self.seg_mut::<Label>(i);
        match v.binary_search_by_key(&(paid, reported), |l| (l.paid, l.reported)) {
            Ok(j) => v[j].count += 1,
            Err(j) => self.insert(
                i,
                j,
                Label {
                    paid,
                    reported,
                    count: 1,
                },
            ),
        }
    }

    /// Payments of series `i` by (time bucket, amount bin), in the `Label` layout: `paid` is
    /// the time bucket, `reported` the bin.
    pub fn amounts(&self, i: usize) -> &[Label] {
        self.seg(i)
    }

    pub fn amount_add(&mut self, i: usize, idx: i64, bin: i64) {
        self.label_add(i, idx, bin);
    }

    /// The latest time recorded in `Last` series `i` (a single mark under hash 0).
    pub fn last(&self, i: usize) -> Option<i64> {
        self.seen_lookup(i, 0)
    }

    pub fn last_set(&mut self, i: usize, idx: i64) {
        self.seen_insert(i, 0, idx);
    }

    /// Encodes series with their signatures so that a changed features file keeps the
    /// series that still exist and drops the rest.
    pub fn encode(&self, sigs: &[u64], kinds: &[SeriesKind], out: &mut Vec<u8>) {
        out.clear();
        out.push(VERSION);
        put_u(out, self.covers);
        match self.first_ms {
            Some(t) => {
                out.push(1);
                put_i(out, t);
            }
            None => out.push(0),
        }
        let live = (0..kinds.len()).filter(|&i| !self.series_empty(i)).count();
        put_u(out, live as u64);
        for (i, kind) in kinds.iter().enumerate() {
            if self.series_empty(i) {
                continue;
            }
            out.extend_from_slice(&sigs[i].to_le_bytes());
            let tag = tag_of(kind, self.is_sketch(i));
            out.push(tag);
            match tag {
                1 => {
                    let v = self.counter(i);
                    put_u(out, v.len() as u64);
                    let mut prev = 0i64;
                    for b in v {
                        put_i(out, b.idx.wrapping_sub(prev));
                        prev = b.idx;
                        put_u(out, b.count);
                        put_i(out, b.sum);
                        put_i(out, b.max);
                    }
                }
                2 | 4 | 7 => {
                    let v = self.seg::<Mark>(i);
                    put_u(out, v.len() as u64);
                    let base = v.iter().map(|m| m.idx).min().unwrap_or(0);
                    put_i(out, base);
                    for m in v {
                        out.extend_from_slice(&m.hash.to_le_bytes());
                        put_u(out, m.idx.wrapping_sub(base) as u64);
                    }
                }
                3 => {
                    let v = self.seg::<HllEntry>(i);
                    put_u(out, v.len() as u64);
                    let base = v.iter().map(|e| e.idx).min().unwrap_or(0);
                    put_i(out, base);
                    let mut prev_reg = 0u16;
                    for e in v {
                        put_u(out, u64::from(e.reg - prev_reg));
                        prev_reg = e.reg;
                        out.push(e.rank);
                        put_u(out, e.idx.wrapping_sub(base) as u64);
                    }
                }
                5 => {
                    let v = self.reports(i);
                    put_u(out, v.len() as u64);
                    for r in v {
                        put_i(out, r.idx);
                        put_u(out, r.count);
                    }
                }
                // 6 and 8: labels and amount bins share the layout.
                _ => {
                    let v = self.labels(i);
                    put_u(out, v.len() as u64);
                    for l in v {
                        put_i(out, l.paid);
                        put_i(out, l.reported);
                        put_u(out, l.count);
                    }
                }
            }
        }
    }

    pub fn decode(
        bytes: &[u8],
        sigs: &[u64],
        kinds: &[SeriesKind],
    ) -> Result<EntityState, FeatureError> {
        let mut r = Reader { b: bytes, i: 0 };
        let covers = match r.byte()? {
            1 => 0,
            VERSION => r.u64()?,
            _ => return Err(FeatureError::Corrupt("unknown state version".into())),
        };
        let first_ms = match r.byte()? {
            0 => None,
            _ => Some(r.i64()?),
        };
        // Stored series may come in another order than the features file's (or be gone
        // from it): decode into scratch, then lay out the ones still declared.
        let mut scratch: Vec<u64> = Vec::new();
        let mut found: Vec<Option<(Range<usize>, bool)>> = vec![None; kinds.len()];
        let n = r.u64()?;
        for _ in 0..n {
            let sig = u64::from_le_bytes(r.take8()?);
            let tag = r.byte()?;
            let len = r.len()?;
            let start = scratch.len();
            let mut push = |item: &[u64]| scratch.extend_from_slice(item);
            match tag {
                1 => {
                    let mut prev = 0i64;
                    for _ in 0..len {
                        let idx = prev.wrapping_add(r.i64()?);
                        prev = idx;
                        let b = Bucket {
                            idx,
                            count: r.u64()?,
                            sum: r.i64()?,
                            max: r.i64()?,
                        };
                        push(bytemuck::cast_slice(&[b]));
                    }
                }
                2 | 4 | 7 => {
                    let base = r.i64()?;
                    for _ in 0..len {
                        let hash = u64::from_le_bytes(r.take8()?);
                        let idx = base.wrapping_add(r.u64()? as i64);
                        push(bytemuck::cast_slice(&[Mark { hash, idx }]));
                    }
                }
                3 => {
                    let base = r.i64()?;
                    let mut reg = 0u16;
                    for _ in 0..len {
                        reg = reg.wrapping_add(r.u64()? as u16);
                        let rank = r.byte()?;
                        let idx = base.wrapping_add(r.u64()? as i64);
                        push(bytemuck::cast_slice(&[HllEntry::new(reg, rank, idx)]));
                    }
                }
                5 => {
                    for _ in 0..len {
                        let rep = Report {
                            idx: r.i64()?,
                            count: r.u64()?,
                        };
                        push(bytemuck::cast_slice(&[rep]));
                    }
                }
                6 | 8 => {
                    for _ in 0..len {
                        let l = Label {
                            paid: r.i64()?,
                            reported: r.i64()?,
                            count: r.u64()?,
                        };
                        push(bytemuck::cast_slice(&[l]));
                    }
                }
                _ => return Err(FeatureError::Corrupt(format!("unknown series tag {tag}"))),
            }
            let Some(i) = sigs.iter().position(|&x| x == sig) else {
                continue;
            };
            if tag_of(&kinds[i], tag == 3) == tag {
                found[i] = Some((start..scratch.len(), tag == 3));
            }
        }
        let mut st = EntityState::new(kinds.len());
        for (i, f) in found.into_iter().enumerate() {
            let mut sketch = false;
            if let Some((span, s)) = f {
                st.words.extend_from_slice(&scratch[span]);
                sketch = s;
            }
            st.words[i] = st.words.len() as u64;
            st.set_sketch(i, sketch);
        }
        st.first_ms = first_ms;
        st.covers = covers;
        Ok(st)
    }
}

/// Moves the items of `v` for which `keep` holds to its front, in order; returns how many.
fn keep_in_place<T: Copy>(v: &mut [T], keep: impl Fn(&T) -> bool) -> usize {
    let mut k = 0;
    for j in 0..v.len() {
        if keep(&v[j]) {
            v[k] = v[j];
            k += 1;
        }
    }
    k
}

/// The stored tag of a series of `kind` (a distinct set has two, exact and sketch).
fn tag_of(kind: &SeriesKind, sketch: bool) -> u8 {
    match kind {
        SeriesKind::Counter => 1,
        SeriesKind::Distinct(_) if sketch => 3,
        SeriesKind::Distinct(_) => 2,
        SeriesKind::Seen(_) => 4,
        SeriesKind::Reports(_) => 5,
        SeriesKind::Labels(_) => 6,
        SeriesKind::Last => 7,
        SeriesKind::Amounts => 8,
    }
}

fn hll_split(h: u64) -> (u16, u8) {
    let reg = (h >> (64 - HLL_P)) as u16;
    let rest = (h << HLL_P) | (1u64 << (HLL_P - 1));
    (reg, rest.leading_zeros() as u8 + 1)
}

/// 2^-r, so the estimate is a table lookup per register.
const INV_POW2: [f64; 64] = {
    let mut t = [0.0; 64];
    let mut i = 0;
    let mut v = 1.0;
    while i < 64 {
        t[i] = v;
        v /= 2.0;
        i += 1;
    }
    t
};

fn hll_estimate(v: &[HllEntry], lo: i64) -> f64 {
    // One pass over the entries (sorted by register) instead of a dense array of all
    // registers: an empty register adds 2^0 = 1, so only the set ones need visiting.
    let mut sum = 0.0;
    let mut set = 0usize;
    for run in v.chunk_by(|a, b| a.reg == b.reg) {
        let rank = run.iter().filter(|e| e.idx >= lo).map(|e| e.rank).max();
        if let Some(rank) = rank {
            sum += INV_POW2[rank as usize & 63];
            set += 1;
        }
    }
    let m = HLL_M as f64;
    let zeros = HLL_M - set;
    sum += zeros as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let raw = alpha * m * m / sum;
    if raw <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        raw
    }
}

fn put_u(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i(out: &mut Vec<u8>, v: i64) {
    put_u(out, ((v << 1) ^ (v >> 63)) as u64);
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, FeatureError> {
        let v = *self.b.get(self.i).ok_or_else(truncated)?;
        self.i += 1;
        Ok(v)
    }
    fn take8(&mut self) -> Result<[u8; 8], FeatureError> {
        let s = self.b.get(self.i..self.i + 8).ok_or_else(truncated)?;
        self.i += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64, FeatureError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(FeatureError::Corrupt("varint too long".into()))
    }
    fn i64(&mut self) -> Result<i64, FeatureError> {
        let u = self.u64()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    /// A length, checked against the bytes left so corrupt input cannot trigger huge allocations.
    fn len(&mut self) -> Result<usize, FeatureError> {
        let n = self.u64()?;
        if n > (self.b.len() - self.i) as u64 {
            return Err(truncated());
        }
        Ok(n as usize)
    }
}

fn truncated() -> FeatureError {
    FeatureError::Corrupt("truncated state".into())
}
