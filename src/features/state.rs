//! Per-entity state: bucketed series, exact/approximate distinct sets, and their binary encoding.
//!
//! Every series is kept sorted so that the encoding is canonical: equal histories give equal
//! bytes, whatever the cache did in between.

use super::spec::SeriesKind;
use super::FeatureError;

/// Registers of the sliding HyperLogLog (2^14): standard error 1.04/sqrt(16384) = 0.81%, so
/// about 99% of estimates are within 2%. 4,096 registers (1.6%) missed 2% too often.
pub(crate) const HLL_P: u32 = 14;
const HLL_M: usize = 1 << HLL_P;
/// 2 added `covers`; version 1 states (covers 0) are still read.
const VERSION: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub idx: i64,
    pub count: u64,
    pub sum: i64,
    pub max: i64,
}

/// One (register, bucket, rank) entry of a sliding HyperLogLog; per register, entries are
/// sorted by bucket and ranks strictly decrease, so only entries that can still be a
/// register's maximum in some future window are kept (Chabchoub & Hebrail's LFPM list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HllEntry {
    pub reg: u16,
    pub rank: u8,
    pub idx: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DistinctSet {
    /// (value hash, last bucket seen), sorted by hash.
    Exact(Vec<(u64, i64)>),
    /// Sorted by (reg, idx).
    Sketch(Vec<HllEntry>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SeriesState {
    /// Sorted by idx.
    Counter(Vec<Bucket>),
    Distinct(DistinctSet),
    /// (value hash, last bucket seen), sorted by hash; capped by evicting the oldest.
    Seen(Vec<(u64, i64)>),
    /// (report bucket, count), sorted.
    Reports(Vec<(i64, u64)>),
    /// (payment bucket, report bucket, count), sorted.
    Labels(Vec<(i64, i64, u64)>),
}

impl SeriesState {
    pub fn new(kind: &SeriesKind) -> SeriesState {
        match kind {
            SeriesKind::Counter => SeriesState::Counter(Vec::new()),
            SeriesKind::Distinct(_) => SeriesState::Distinct(DistinctSet::Exact(Vec::new())),
            SeriesKind::Seen(_) => SeriesState::Seen(Vec::new()),
            SeriesKind::Reports(_) => SeriesState::Reports(Vec::new()),
            SeriesKind::Labels(_) => SeriesState::Labels(Vec::new()),
        }
    }

    fn tag(&self) -> u8 {
        match self {
            SeriesState::Counter(_) => 1,
            SeriesState::Distinct(DistinctSet::Exact(_)) => 2,
            SeriesState::Distinct(DistinctSet::Sketch(_)) => 3,
            SeriesState::Seen(_) => 4,
            SeriesState::Reports(_) => 5,
            SeriesState::Labels(_) => 6,
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            SeriesState::Counter(v) => v.is_empty(),
            SeriesState::Distinct(DistinctSet::Exact(v)) | SeriesState::Seen(v) => v.is_empty(),
            SeriesState::Distinct(DistinctSet::Sketch(v)) => v.is_empty(),
            SeriesState::Reports(v) => v.is_empty(),
            SeriesState::Labels(v) => v.is_empty(),
        }
    }

    /// Drops everything in buckets below `floor`; no reader can look there any more.
    pub fn compact(&mut self, floor: i64) {
        match self {
            SeriesState::Counter(v) => drop_below(v, |b| b.idx, floor),
            SeriesState::Distinct(DistinctSet::Exact(v)) | SeriesState::Seen(v) => {
                v.retain(|e| e.1 >= floor)
            }
            SeriesState::Distinct(DistinctSet::Sketch(v)) => {
                v.retain(|e| e.idx >= floor);
                if v.is_empty() {
                    *self = SeriesState::Distinct(DistinctSet::Exact(Vec::new()));
                }
            }
            SeriesState::Reports(v) => drop_below(v, |e| e.0, floor),
            SeriesState::Labels(v) => v.retain(|e| e.0 >= floor),
        }
    }
}

fn drop_below<T>(v: &mut Vec<T>, key: impl Fn(&T) -> i64, floor: i64) {
    let cut = v.partition_point(|e| key(e) < floor);
    if cut > 0 {
        v.drain(..cut);
    }
}

pub(crate) fn counter_add(v: &mut Vec<Bucket>, idx: i64, amount: i64) {
    match v.binary_search_by_key(&idx, |b| b.idx) {
        Ok(i) => {
            let b = &mut v[i];
            b.count += 1;
            b.sum = b.sum.saturating_add(amount);
            b.max = b.max.max(amount);
        }
        Err(i) => v.insert(
            i,
            Bucket {
                idx,
                count: 1,
                sum: amount,
                max: amount,
            },
        ),
    }
}

/// (count, sum, max) over buckets lo..=hi.
pub(crate) fn counter_read(v: &[Bucket], lo: i64, hi: i64) -> (u64, i64, i64) {
    let start = v.partition_point(|b| b.idx < lo);
    let (mut c, mut s, mut m) = (0u64, 0i64, i64::MIN);
    for b in v[start..].iter().take_while(|b| b.idx <= hi) {
        c += b.count;
        s = s.saturating_add(b.sum);
        m = m.max(b.max);
    }
    (c, s, if c == 0 { 0 } else { m })
}

/// Records value `h` as seen in bucket `idx` (keeps the latest bucket per value).
pub(crate) fn seen_insert(v: &mut Vec<(u64, i64)>, h: u64, idx: i64) {
    match v.binary_search_by_key(&h, |e| e.0) {
        Ok(i) => v[i].1 = v[i].1.max(idx),
        Err(i) => v.insert(i, (h, idx)),
    }
}

pub(crate) fn seen_lookup(v: &[(u64, i64)], h: u64) -> Option<i64> {
    v.binary_search_by_key(&h, |e| e.0).ok().map(|i| v[i].1)
}

/// Keeps at most `cap` values, evicting the least recently seen (ties: smallest hash).
pub(crate) fn seen_cap(v: &mut Vec<(u64, i64)>, cap: usize) {
    if v.len() <= cap {
        return;
    }
    let mut idxs: Vec<(i64, u64)> = v.iter().map(|e| (e.1, e.0)).collect();
    idxs.sort_unstable();
    let cutoff = idxs[v.len() - cap - 1];
    v.retain(|e| (e.1, e.0) > cutoff);
}

impl DistinctSet {
    pub fn insert(&mut self, h: u64, idx: i64, exact_limit: usize) {
        match self {
            DistinctSet::Exact(v) => {
                seen_insert(v, h, idx);
                if v.len() > exact_limit {
                    let mut sketch = Vec::new();
                    for &(h, idx) in v.iter() {
                        hll_insert(&mut sketch, h, idx);
                    }
                    *self = DistinctSet::Sketch(sketch);
                }
            }
            DistinctSet::Sketch(v) => hll_insert(v, h, idx),
        }
    }

    /// Distinct values last seen at bucket >= lo.
    pub fn count(&self, lo: i64) -> f64 {
        match self {
            DistinctSet::Exact(v) => v.iter().filter(|e| e.1 >= lo).count() as f64,
            DistinctSet::Sketch(v) => hll_estimate(v, lo),
        }
    }
}

fn hll_split(h: u64) -> (u16, u8) {
    let reg = (h >> (64 - HLL_P)) as u16;
    let rest = (h << HLL_P) | (1u64 << (HLL_P - 1));
    (reg, rest.leading_zeros() as u8 + 1)
}

pub(crate) fn hll_insert(v: &mut Vec<HllEntry>, h: u64, idx: i64) {
    let (reg, rank) = hll_split(h);
    let start = v.partition_point(|e| e.reg < reg);
    let end = start + v[start..].partition_point(|e| e.reg == reg);
    // Dominated: some entry is at least as recent and at least as high.
    if v[start..end].iter().any(|e| e.idx >= idx && e.rank >= rank) {
        return;
    }
    let mut i = start;
    let mut end = end;
    while i < end {
        let e = v[i];
        if e.idx <= idx && e.rank <= rank {
            v.remove(i);
            end -= 1;
        } else {
            i += 1;
        }
    }
    let pos = start + v[start..end].partition_point(|e| e.idx < idx);
    v.insert(pos, HllEntry { reg, rank, idx });
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

pub(crate) fn hll_estimate(v: &[HllEntry], lo: i64) -> f64 {
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

/// All state kept for one entity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntityState {
    pub first_ms: Option<i64>,
    pub series: Vec<SeriesState>,
    /// How many of the caller's log entries the state includes (the first `covers`
    /// positions), set as each event is applied: a checkpoint writes states one by one, so
    /// a replay after a crash part-way through skips what a stored state already holds.
    /// 0: unknown/none.
    pub covers: u64,
}

impl EntityState {
    pub fn is_empty(&self) -> bool {
        self.series.iter().all(SeriesState::is_empty)
    }

    /// Encodes series with their signatures so that a changed features file keeps the
    /// series that still exist and drops the rest.
    pub fn encode(&self, sigs: &[u64], out: &mut Vec<u8>) {
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
        let live = self.series.iter().filter(|s| !s.is_empty()).count();
        put_u(out, live as u64);
        for (i, s) in self.series.iter().enumerate() {
            if s.is_empty() {
                continue;
            }
            out.extend_from_slice(&sigs[i].to_le_bytes());
            out.push(s.tag());
            match s {
                SeriesState::Counter(v) => {
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
                SeriesState::Distinct(DistinctSet::Exact(v)) | SeriesState::Seen(v) => {
                    put_u(out, v.len() as u64);
                    let base = v.iter().map(|e| e.1).min().unwrap_or(0);
                    put_i(out, base);
                    for &(h, idx) in v {
                        out.extend_from_slice(&h.to_le_bytes());
                        put_u(out, idx.wrapping_sub(base) as u64);
                    }
                }
                SeriesState::Distinct(DistinctSet::Sketch(v)) => {
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
                SeriesState::Reports(v) => {
                    put_u(out, v.len() as u64);
                    for &(idx, c) in v {
                        put_i(out, idx);
                        put_u(out, c);
                    }
                }
                SeriesState::Labels(v) => {
                    put_u(out, v.len() as u64);
                    for &(p, r, c) in v {
                        put_i(out, p);
                        put_i(out, r);
                        put_u(out, c);
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
        let mut st = EntityState {
            first_ms,
            series: kinds.iter().map(SeriesState::new).collect(),
            covers,
        };
        let n = r.u64()?;
        for _ in 0..n {
            let sig = u64::from_le_bytes(r.take8()?);
            let tag = r.byte()?;
            let len = r.len()?;
            let s = match tag {
                1 => {
                    let mut v = Vec::with_capacity(len);
                    let mut prev = 0i64;
                    for _ in 0..len {
                        let idx = prev.wrapping_add(r.i64()?);
                        prev = idx;
                        v.push(Bucket {
                            idx,
                            count: r.u64()?,
                            sum: r.i64()?,
                            max: r.i64()?,
                        });
                    }
                    SeriesState::Counter(v)
                }
                2 | 4 => {
                    let base = r.i64()?;
                    let mut v = Vec::with_capacity(len);
                    for _ in 0..len {
                        let h = u64::from_le_bytes(r.take8()?);
                        v.push((h, base.wrapping_add(r.u64()? as i64)));
                    }
                    if tag == 2 {
                        SeriesState::Distinct(DistinctSet::Exact(v))
                    } else {
                        SeriesState::Seen(v)
                    }
                }
                3 => {
                    let base = r.i64()?;
                    let mut v = Vec::with_capacity(len);
                    let mut reg = 0u16;
                    for _ in 0..len {
                        reg = reg.wrapping_add(r.u64()? as u16);
                        let rank = r.byte()?;
                        v.push(HllEntry {
                            reg,
                            rank,
                            idx: base.wrapping_add(r.u64()? as i64),
                        });
                    }
                    SeriesState::Distinct(DistinctSet::Sketch(v))
                }
                5 => {
                    let mut v = Vec::with_capacity(len);
                    for _ in 0..len {
                        v.push((r.i64()?, r.u64()?));
                    }
                    SeriesState::Reports(v)
                }
                6 => {
                    let mut v = Vec::with_capacity(len);
                    for _ in 0..len {
                        v.push((r.i64()?, r.i64()?, r.u64()?));
                    }
                    SeriesState::Labels(v)
                }
                _ => return Err(FeatureError::Corrupt(format!("unknown series tag {tag}"))),
            };
            if let Some(i) = sigs.iter().position(|&x| x == sig) {
                if st.series[i].tag() == s.tag()
                    || matches!(
                        (&st.series[i], &s),
                        (SeriesState::Distinct(_), SeriesState::Distinct(_))
                    )
                {
                    st.series[i] = s;
                }
            }
        }
        Ok(st)
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
