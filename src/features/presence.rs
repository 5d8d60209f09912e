//! Which keys may be stored in a sled tree, so looking up a brand-new key costs no sled
//! read: a cache miss on a new entity (most misses: new payer→payee pairs, new devices), or
//! the engine's idempotency check of a new payment id.
//!
//! Blocked Bloom filters over a 64-bit hash of the key: never a false negative, ~1% false
//! positives (which only cost the sled read they would have cost anyway). The set is the keys
//! found by a scan of the tree plus every key the store has changed (and so will write)
//! since that scan started.
//! Until the first scan has finished, every key "may be stored". Deleted keys stay in the
//! filter until the next scan, which runs in the background once the keys written since the
//! last one outnumber the keys it found (and at least [`RESCAN_MIN`]), so memory stays
//! proportional to the keys on disk: ~1.5 bytes per key, twice that at worst.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::spec::mix64;

/// Bits per key; with 6 probes in a 512-bit block, ~1% false positives.
const BITS_PER_KEY: usize = 12;
const PROBES: u32 = 6;
/// Capacity of the first filter for keys written since a scan; each next one doubles.
const FIRST_CAPACITY: usize = 1 << 16;
/// Keys written since the last scan before a rescan is considered.
const RESCAN_MIN: usize = 1 << 22;

/// A 64-bit hash of an entity key (FNV-1a, then mixed).
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

struct Bloom {
    blocks: Vec<[u64; 8]>,
    len: usize,
    capacity: usize,
}

impl Bloom {
    fn with_capacity(capacity: usize) -> Bloom {
        let n = (capacity.max(64) * BITS_PER_KEY).div_ceil(512);
        Bloom {
            blocks: vec![[0u64; 8]; n],
            len: 0,
            capacity,
        }
    }

    fn locate(&self, h: u64) -> (usize, u64) {
        let block = ((u128::from(h) * self.blocks.len() as u128) >> 64) as usize;
        (block, mix64(h ^ 0x9e37_79b9_7f4a_7c15))
    }

    fn insert(&mut self, h: u64) {
        let (b, bits) = self.locate(h);
        let block = &mut self.blocks[b];
        for i in 0..PROBES {
            let bit = (bits >> (9 * i)) & 511;
            block[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        self.len += 1;
    }

    fn contains(&self, h: u64) -> bool {
        let (b, bits) = self.locate(h);
        let block = &self.blocks[b];
        (0..PROBES).all(|i| {
            let bit = (bits >> (9 * i)) & 511;
            block[(bit >> 6) as usize] & (1 << (bit & 63)) != 0
        })
    }
}

/// Keys added one by one: a list of Bloom filters of doubling capacity.
#[derive(Default)]
struct Growing {
    blooms: Vec<Bloom>,
    len: usize,
}

impl Growing {
    fn insert(&mut self, h: u64) {
        let full = self.blooms.last().is_none_or(|b| b.len >= b.capacity);
        if full {
            let cap = self
                .blooms
                .last()
                .map_or(FIRST_CAPACITY, |b| b.capacity * 2);
            self.blooms.push(Bloom::with_capacity(cap));
        }
        if let Some(b) = self.blooms.last_mut() {
            b.insert(h);
        }
        self.len += 1;
    }

    fn contains(&self, h: u64) -> bool {
        self.blooms.iter().any(|b| b.contains(h))
    }
}

struct Scan {
    thread: JoinHandle<Result<Bloom, sled::Error>>,
    /// Set on drop: the scan holds the tree, and so sled's lock on the data dir.
    stop: Arc<AtomicBool>,
    /// Keys written since this scan started.
    written: Growing,
}

/// The set of keys under a prefix that may be in the tree.
pub(crate) struct Presence {
    prefix: Vec<u8>,
    /// The last finished scan and the keys written since it started.
    done: Option<(Bloom, Growing)>,
    running: Option<Scan>,
}

impl Presence {
    /// Starts the first scan of `tree`'s keys under `prefix` in the background.
    pub fn open(tree: &sled::Tree, prefix: &[u8]) -> Presence {
        let mut p = Presence {
            prefix: prefix.to_vec(),
            done: None,
            running: None,
        };
        p.start_scan(tree);
        p
    }

    fn start_scan(&mut self, tree: &sled::Tree) {
        let tree = tree.clone();
        let prefix = self.prefix.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("fengkong-keyscan".into())
            .spawn(move || {
                let mut hashes = Vec::new();
                for k in tree.scan_prefix(prefix).keys() {
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    hashes.push(key_hash(&k?));
                }
                let mut bloom = Bloom::with_capacity(hashes.len());
                for h in hashes {
                    bloom.insert(h);
                }
                Ok(bloom)
            });
        // Without a scan every key "may be stored": slower, still correct.
        if let Ok(thread) = spawned {
            self.running = Some(Scan {
                thread,
                stop,
                written: Growing::default(),
            });
        }
    }

    /// Whether `h` may be a stored key; `true` whenever in doubt.
    pub fn may_contain(&self, h: u64) -> bool {
        match &self.done {
            None => true,
            Some((scan, written)) => {
                scan.contains(h)
                    || written.contains(h)
                    || self.running.as_ref().is_some_and(|s| s.written.contains(h))
            }
        }
    }

    /// Records that `h` is about to be written to the tree.
    pub fn insert(&mut self, h: u64) {
        if let Some((_, written)) = &mut self.done {
            written.insert(h);
        }
        if let Some(s) = &mut self.running {
            s.written.insert(h);
        }
    }

    /// Collects a finished scan, if any (cheap when there is none).
    pub fn poll(&mut self) {
        if self
            .running
            .as_ref()
            .is_some_and(|s| s.thread.is_finished())
        {
            // On failure keep answering from what we had (it also holds every key written
            // since); a new scan starts below.
            if let Some(s) = self.running.take() {
                if let Ok(Ok(bloom)) = s.thread.join() {
                    self.done = Some((bloom, s.written));
                }
            }
        }
    }

    /// Collects a finished scan and starts a new one when deleted keys may have piled up;
    /// true when it started one.
    /// Call only when no write to the tree is in flight, so that a scan started here sees
    /// every key written before it.
    pub fn maintain(&mut self, tree: &sled::Tree) -> bool {
        self.poll();
        let stale = match &self.done {
            None => self.running.is_none(),
            Some((scan, written)) => written.len > scan.len.max(RESCAN_MIN),
        };
        if stale && self.running.is_none() {
            self.start_scan(tree);
            return true;
        }
        false
    }

    /// Waits for a running scan (tests, benches that want a settled state).
    #[cfg(test)]
    pub fn wait(&mut self, tree: &sled::Tree) {
        while self
            .running
            .as_ref()
            .is_some_and(|s| !s.thread.is_finished())
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.maintain(tree);
    }
}

impl Drop for Presence {
    /// Ends a running scan before the store goes, so the data dir can be opened again at once.
    fn drop(&mut self) {
        if let Some(scan) = self.running.take() {
            scan.stop.store(true, Ordering::Relaxed);
            let _ = scan.thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn no_false_negatives_few_false_positives() {
        let mut g = Growing::default();
        let n = 300_000u64;
        for i in 0..n {
            g.insert(key_hash(format!("pair\0u{i}\x1fm{}", i % 97).as_bytes()));
        }
        assert!(g.blooms.len() > 1, "grew past the first filter");
        for i in 0..n {
            assert!(g.contains(key_hash(format!("pair\0u{i}\x1fm{}", i % 97).as_bytes())));
        }
        let fp = (0..n)
            .filter(|i| g.contains(key_hash(format!("payer\0x{i}").as_bytes())))
            .count();
        // Each filter ~1%; a few filters answer together.
        assert!((fp as f64) < 0.04 * n as f64, "{fp} false positives");
    }

    #[test]
    fn scan_finds_stored_keys_and_writes_count() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        for i in 0..1000 {
            tree.insert(format!("k{i}"), &b"v"[..]).unwrap();
        }
        tree.insert("other", &b"v"[..]).unwrap();
        let mut p = Presence::open(&tree, b"k");
        assert!(
            p.may_contain(key_hash(b"nowhere")),
            "in doubt before the scan"
        );
        p.insert(key_hash(b"written"));
        p.wait(&tree);
        for i in 0..1000 {
            assert!(p.may_contain(key_hash(format!("k{i}").as_bytes())));
        }
        assert!(p.may_contain(key_hash(b"written")));
        let absent = (0..1000)
            .filter(|i| p.may_contain(key_hash(format!("a{i}").as_bytes())))
            .count();
        assert!(absent < 50, "{absent}");
        assert!(!p.may_contain(key_hash(b"other")), "outside the prefix");
    }
}
