//! DPoP replay protection (RFC 9449 §11.1): each (`jkt`, `jti`) pair is accepted once while
//! a proof carrying it could still pass the `iat` window.
//!
//! [`MemoryReplayStore`] is a fail-closed bounded set. Keys are fixed-size SHA-256 hashes in
//! two rotating time buckets per shard: a key is remembered for at least one window and at
//! most two. When a shard is full, new proofs are **refused** (the caller answers 503) rather
//! than evicting live entries — an LRU or TinyLFU cache flooded with fresh proofs would
//! forget unexpired keys and let a replay through. Old entries leave only by rotation, so
//! the store recovers by itself one to two windows after a flood.
//!
//! The [`ReplayStore`] trait lets a shared store (Redis) replace it.

use std::collections::HashSet;
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

/// The store cannot decide; the request must be refused (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("the DPoP replay store is full")]
    Full,
    #[error("the DPoP replay store is unavailable")]
    Unavailable,
}

/// Remembers proof keys for the acceptance window, atomically.
pub trait ReplayStore: Send + Sync {
    /// Inserts `key` unless present. Atomic: of two concurrent calls with the same key,
    /// exactly one sees [`Freshness::Fresh`].
    fn insert_if_absent(&self, key: [u8; 32], now: Instant) -> ReplayFuture<'_>;

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
}

type KeySet = HashSet<[u8; 32], BuildHasherDefault<PrefixHasher>>;

struct Shard {
    current: KeySet,
    previous: KeySet,
    current_started: Instant,
}

impl MemoryReplayStore {
    /// A store remembering keys for at least `window`, holding at most about `max_entries`.
    pub fn new(window: Duration, max_entries: usize, now: Instant) -> Self {
        let per_shard_capacity = max_entries.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard { current: KeySet::default(), previous: KeySet::default(), current_started: now })
            })
            .collect();
        MemoryReplayStore { shards, window, per_shard_capacity }
    }

    /// The synchronous insert behind [`ReplayStore::insert_if_absent`].
    pub fn insert(&self, key: [u8; 32], now: Instant) -> Result<Freshness, ReplayError> {
        let shard = &self.shards[usize::from(key[0]) % SHARDS];
        let mut shard = shard.lock().map_err(|_| ReplayError::Unavailable)?;
        let age = now.saturating_duration_since(shard.current_started);
        if age >= self.window {
            if age >= self.window * 2 {
                shard.previous.clear();
                shard.current.clear();
            } else {
                shard.previous = std::mem::take(&mut shard.current);
            }
            shard.current_started = now;
        }
        if shard.current.contains(&key) || shard.previous.contains(&key) {
            return Ok(Freshness::Replayed);
        }
        if shard.current.len() + shard.previous.len() >= self.per_shard_capacity {
            return Err(ReplayError::Full);
        }
        shard.current.insert(key);
        Ok(Freshness::Fresh)
    }
}

impl ReplayStore for MemoryReplayStore {
    fn insert_if_absent(&self, key: [u8; 32], now: Instant) -> ReplayFuture<'_> {
        Box::pin(std::future::ready(self.insert(key, now)))
    }

    fn len(&self) -> usize {
        self.shards.iter().filter_map(|s| s.lock().ok().map(|s| s.current.len() + s.previous.len())).sum()
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

    fn key(i: u32) -> [u8; 32] {
        crate::jose::sha256(&i.to_be_bytes())
    }

    #[test]
    fn a_key_is_accepted_once() {
        let t0 = Instant::now();
        let store = MemoryReplayStore::new(Duration::from_secs(60), 1000, t0);
        assert_eq!(store.insert(key(1), t0), Ok(Freshness::Fresh));
        assert_eq!(store.insert(key(1), t0), Ok(Freshness::Replayed));
        assert_eq!(store.insert(key(2), t0), Ok(Freshness::Fresh));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn keys_are_remembered_for_at_least_one_window() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let store = MemoryReplayStore::new(w, 1000, t0);
        store.insert(key(1), t0 + Duration::from_secs(59)).unwrap();
        // Rotation at 60 s moves it to `previous`; still remembered just before 2 windows.
        assert_eq!(store.insert(key(1), t0 + Duration::from_secs(118)), Ok(Freshness::Replayed));
        // Two full windows later it is gone.
        assert_eq!(store.insert(key(1), t0 + Duration::from_secs(240)), Ok(Freshness::Fresh));
    }

    #[test]
    fn a_full_store_refuses_instead_of_forgetting() {
        let t0 = Instant::now();
        let store = MemoryReplayStore::new(Duration::from_secs(60), SHARDS * 4, t0);
        let mut accepted = Vec::new();
        let mut refused = 0;
        for i in 0..10_000 {
            match store.insert(key(i), t0) {
                Ok(Freshness::Fresh) => accepted.push(i),
                Ok(Freshness::Replayed) => unreachable!(),
                Err(ReplayError::Full) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused > 9_000);
        // Every accepted key is still remembered after the flood: no replay window reopens.
        for i in accepted {
            assert_eq!(store.insert(key(i), t0), Ok(Freshness::Replayed));
        }
        // After two windows the store has room again.
        assert_eq!(store.insert(key(99_999), t0 + Duration::from_secs(121)), Ok(Freshness::Fresh));
    }
}
