//! DPoP replay protection (RFC 9449 §11.1): each (`jkt`, `jti`) pair is accepted once while
//! a proof carrying it could still pass the `iat` window.
//!
//! [`MemoryReplayStore`] is a fail-closed bounded set. Keys are fixed-size SHA-256 hashes in
//! eight time slices per window per shard: a key is remembered for at least one window and
//! at most one window and a slice. When a shard is full, new proofs are **refused** (the caller answers 503) rather
//! than evicting live entries — an LRU or TinyLFU cache flooded with fresh proofs would
//! forget unexpired keys and let a replay through. Old entries leave only with their slice,
//! so the store recovers by itself about one window after a flood.
//!
//! Fairness: one DPoP key may have at most `per_key_limit` proofs remembered at once (within
//! the window). Beyond that its proofs are refused with [`ReplayError::KeyOverQuota`] (the
//! caller answers 429 with `Retry-After`) while every other key's proofs are unaffected, so
//! one flooding client cannot fill the store and make everybody's proofs answer 503.
//!
//! The [`ReplayStore`] trait lets a shared store (Redis) replace it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The future a [`ReplayStore`] returns.
pub type ReplayFuture<'a> = Pin<Box<dyn Future<Output = Result<Freshness, ReplayError>> + Send + 'a>>;

/// Whether a proof's key was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// First use: remembered now.
    Fresh,
    /// Seen before within the window: a replay.
    Replayed,
}

/// The store cannot take the proof; the request must be refused (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("the DPoP replay store is full")]
    Full,
    #[error("the DPoP replay store is unavailable")]
    Unavailable,
    /// This DPoP key has `per_key_limit` proofs remembered already; the oldest leaves
    /// after `retry_after`.
    #[error("this DPoP key has too many proofs in the replay window")]
    KeyOverQuota { retry_after: Duration },
}

/// Remembers proof keys for the acceptance window, atomically.
pub trait ReplayStore: Send + Sync {
    /// Inserts `key` (of a proof by the key whose thumbprint is `jkt`) unless present.
    /// Atomic: of two concurrent calls with the same key, exactly one sees
    /// [`Freshness::Fresh`]. A key of a `jkt` over its quota is not inserted.
    fn insert_if_absent(&self, key: [u8; 32], jkt: [u8; 32], now: Instant) -> ReplayFuture<'_>;

    /// How many keys are remembered (for metrics).
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key remembered for a proof: SHA-256 over the key thumbprint and the `jti`.
pub fn replay_key(jkt: &[u8; 32], jti: &str) -> [u8; 32] {
    let mut input = Vec::with_capacity(32 + jti.len());
    input.extend_from_slice(jkt);
    input.extend_from_slice(jti.as_bytes());
    crate::jose::sha256(&input)
}

const SHARDS: usize = 16;

/// The in-memory, fail-closed replay store of one gateway instance.
pub struct MemoryReplayStore {
    shards: Vec<Mutex<Shard>>,
    window: Duration,
    per_shard_capacity: usize,
    quota: KeyQuota,
}

/// How many proofs each DPoP key has remembered, in the same time slices as the keys.
struct KeyQuota {
    limit: u32,
    shards: Vec<Mutex<QuotaShard>>,
}

type CountMap = HashMap<[u8; 32], u32, BuildHasherDefault<PrefixHasher>>;

#[derive(Default)]
struct QuotaShard {
    slices: VecDeque<(Instant, CountMap)>,
    totals: CountMap,
}

impl KeyQuota {
    fn new(limit: u32) -> KeyQuota {
        KeyQuota { limit: limit.max(1), shards: (0..SHARDS).map(|_| Mutex::new(QuotaShard::default())).collect() }
    }

    /// Counts one more proof of `jkt`, or says how long until it may have one.
    fn take(&self, jkt: &[u8; 32], now: Instant, window: Duration, slice: Duration) -> Result<(), ReplayError> {
        let mut shard = self.shards[usize::from(jkt[0]) % SHARDS].lock().map_err(|_| ReplayError::Unavailable)?;
        let shard = &mut *shard;
        while let Some((start, counts)) = shard.slices.front() {
            if now.saturating_duration_since(*start) < slice + window {
                break;
            }
            for (key, count) in counts {
                if let Some(total) = shard.totals.get_mut(key) {
                    *total = total.saturating_sub(*count);
                    if *total == 0 {
                        shard.totals.remove(key);
                    }
                }
            }
            shard.slices.pop_front();
        }
        if shard.totals.get(jkt).is_some_and(|total| *total >= self.limit) {
            let oldest = shard.slices.iter().find(|(_, counts)| counts.contains_key(jkt)).map(|(start, _)| *start);
            let leaves = oldest.map_or(slice, |start| (start + slice + window).saturating_duration_since(now));
            return Err(ReplayError::KeyOverQuota { retry_after: leaves.max(Duration::from_secs(1)) });
        }
        let needs_slice = shard.slices.back().is_none_or(|(start, _)| now.saturating_duration_since(*start) >= slice);
        if needs_slice {
            shard.slices.push_back((now, CountMap::default()));
        }
        if let Some((_, counts)) = shard.slices.back_mut() {
            *counts.entry(*jkt).or_default() += 1;
            *shard.totals.entry(*jkt).or_default() += 1;
        }
        Ok(())
    }
}

type KeySet = HashSet<[u8; 32], BuildHasherDefault<PrefixHasher>>;

/// One shard: time slices of `window / SLICES` each, newest last. A slice is dropped once
/// every key in it has been remembered for a whole window, so live memory is about
/// `rate × (window + window / SLICES)` — not two windows, as with two big buckets.
struct Shard {
    slices: VecDeque<(Instant, KeySet)>,
    len: usize,
}

/// Slices per window.
const SLICES: u32 = 8;

impl MemoryReplayStore {
    /// A store remembering keys for at least `window`, holding at most about `max_entries`,
    /// at most `per_key_limit` of them for one DPoP key.
    pub fn new(window: Duration, max_entries: usize, per_key_limit: u32, _now: Instant) -> Self {
        let per_shard_capacity = max_entries.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { slices: VecDeque::new(), len: 0 })).collect();
        MemoryReplayStore { shards, window, per_shard_capacity, quota: KeyQuota::new(per_key_limit) }
    }

    /// The synchronous insert behind [`ReplayStore::insert_if_absent`].
    pub fn insert(&self, key: [u8; 32], jkt: [u8; 32], now: Instant) -> Result<Freshness, ReplayError> {
        let slice = (self.window / SLICES).max(Duration::from_millis(1));
        let shard = &self.shards[usize::from(key[0]) % SHARDS];
        let mut shard = shard.lock().map_err(|_| ReplayError::Unavailable)?;
        // The newest key of the oldest slice arrived before `start + slice`: once a window
        // has passed since then, the whole slice may go.
        while let Some((start, keys)) = shard.slices.front() {
            if now.saturating_duration_since(*start) < slice + self.window {
                break;
            }
            let dropped = keys.len();
            shard.slices.pop_front();
            shard.len -= dropped;
        }
        if shard.slices.iter().any(|(_, keys)| keys.contains(&key)) {
            return Ok(Freshness::Replayed);
        }
        if shard.len >= self.per_shard_capacity {
            return Err(ReplayError::Full);
        }
        // Under the shard's lock, so that a proof is counted only when it is remembered.
        self.quota.take(&jkt, now, self.window, slice)?;
        let needs_slice = shard.slices.back().is_none_or(|(start, _)| now.saturating_duration_since(*start) >= slice);
        if needs_slice {
            shard.slices.push_back((now, KeySet::default()));
        }
        if let Some((_, keys)) = shard.slices.back_mut() {
            keys.insert(key);
            shard.len += 1;
        }
        Ok(Freshness::Fresh)
    }
}

impl ReplayStore for MemoryReplayStore {
    fn insert_if_absent(&self, key: [u8; 32], jkt: [u8; 32], now: Instant) -> ReplayFuture<'_> {
        Box::pin(std::future::ready(self.insert(key, jkt, now)))
    }

    fn len(&self) -> usize {
        self.shards.iter().filter_map(|s| s.lock().ok().map(|s| s.len)).sum()
    }
}

/// Keys are already SHA-256 outputs: their first eight bytes are a good hash.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const JKT: [u8; 32] = [7; 32];

    fn key(i: u32) -> [u8; 32] {
        crate::jose::sha256(&i.to_be_bytes())
    }

    #[test]
    fn a_key_is_accepted_once() {
        let t0 = Instant::now();
        let store = MemoryReplayStore::new(Duration::from_secs(60), 1000, u32::MAX, t0);
        assert_eq!(store.insert(key(1), JKT, t0), Ok(Freshness::Fresh));
        assert_eq!(store.insert(key(1), JKT, t0), Ok(Freshness::Replayed));
        assert_eq!(store.insert(key(2), JKT, t0), Ok(Freshness::Fresh));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn keys_are_remembered_for_at_least_one_window() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let store = MemoryReplayStore::new(w, 1000, u32::MAX, t0);
        store.insert(key(1), JKT, t0 + Duration::from_secs(59)).unwrap();
        // Still remembered a whole window after it arrived…
        assert_eq!(store.insert(key(1), JKT, t0 + Duration::from_secs(59 + 60)), Ok(Freshness::Replayed));
        // …and gone about a slice (7.5 s) later.
        assert_eq!(store.insert(key(1), JKT, t0 + Duration::from_secs(59 + 60 + 8)), Ok(Freshness::Fresh));
    }

    #[test]
    fn a_steady_rate_needs_about_one_window_of_capacity() {
        // 100 keys/s for five windows into a store sized for 1.25 windows: never full.
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let store = MemoryReplayStore::new(window, 100 * 60 * 5 / 4 + SHARDS * 50, u32::MAX, t0);
        for i in 0..(100 * 60 * 5) {
            let now = t0 + Duration::from_millis(u64::from(i) * 10);
            assert_eq!(store.insert(key(i), JKT, now), Ok(Freshness::Fresh), "refused at {}s", i / 100);
        }
        assert!(store.len() <= 100 * 68, "{} entries", store.len());
    }

    #[test]
    fn one_key_over_its_quota_is_refused_while_others_pass() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let store = MemoryReplayStore::new(window, 10_000, 100, t0);
        let flooder = [1u8; 32];
        for i in 0..100 {
            assert_eq!(store.insert(key(i), flooder, t0), Ok(Freshness::Fresh));
        }
        let over = store.insert(key(100), flooder, t0 + Duration::from_secs(1));
        let Err(ReplayError::KeyOverQuota { retry_after }) = over else { panic!("{over:?}") };
        // Its oldest proofs leave a window and a slice after they came: about 66.5 s from now.
        assert!(retry_after > Duration::from_secs(60) && retry_after <= Duration::from_secs(68), "{retry_after:?}");
        // The refused proof was not remembered, and replays are still replays.
        assert_eq!(store.insert(key(0), flooder, t0), Ok(Freshness::Replayed));
        assert_eq!(store.len(), 100);
        // Another key is unaffected.
        for i in 1000..1100 {
            assert_eq!(store.insert(key(i), JKT, t0), Ok(Freshness::Fresh));
        }
        // Once its proofs have left, the flooder may send again.
        assert_eq!(store.insert(key(200), flooder, t0 + window + Duration::from_secs(8)), Ok(Freshness::Fresh));
    }

    #[test]
    fn a_full_store_refuses_instead_of_forgetting() {
        let t0 = Instant::now();
        let store = MemoryReplayStore::new(Duration::from_secs(60), SHARDS * 4, u32::MAX, t0);
        let mut accepted = Vec::new();
        let mut refused = 0;
        for i in 0..10_000 {
            match store.insert(key(i), JKT, t0) {
                Ok(Freshness::Fresh) => accepted.push(i),
                Ok(Freshness::Replayed) => unreachable!(),
                Err(ReplayError::Full) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused > 9_000);
        // Every accepted key is still remembered after the flood: no replay window reopens.
        for i in accepted {
            assert_eq!(store.insert(key(i), JKT, t0), Ok(Freshness::Replayed));
        }
        // A window and a slice later the store has room again.
        assert_eq!(store.insert(key(99_999), JKT, t0 + Duration::from_secs(68)), Ok(Freshness::Fresh));
    }
}
