//! One connection's memory of the last access token it presented and what validating it
//! gave: the next request with the very same token skips hashing it and the cache look-up.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::ValidatedToken;
use crate::secret::Secret;

/// The last access token one connection presented and what validating it gave, so that the
/// next request with the very same token skips hashing it and the cache look-up. It never
/// outlives the validated-token cache entry it came from (same expiry), belongs to one
/// compiled configuration (`generation`: a reload starts afresh), and is matched by
/// comparing the whole token, so it can only ever answer for a token that was validated.
/// (The comparison is not constant-time: both sides came from this one connection.)
#[derive(Debug, Default)]
pub struct TokenMemo(Mutex<Option<Memo>>);

/// The token itself is a [`Secret`]: the memo sits in the connection's state, which may be
/// formatted with `{:?}`.
#[derive(Debug)]
struct Memo {
    generation: u64,
    token: Secret<Box<str>>,
    hash: [u8; 32],
    validated: Arc<ValidatedToken>,
    valid_until: i64,
}

impl TokenMemo {
    fn lock(&self) -> MutexGuard<'_, Option<Memo>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the token (an idle, parked connection should not hold it).
    pub fn clear(&self) {
        *self.lock() = None;
    }

    /// The remembered validation of `token`, if it is the very token remembered, by the
    /// same validator `generation`, and neither it nor its cache entry has expired.
    pub(super) fn recall(&self, generation: u64, token: &str, now: i64) -> Option<(Arc<ValidatedToken>, [u8; 32])> {
        let memo = self.lock();
        let memo = memo.as_ref()?;
        (memo.generation == generation
            && now < memo.valid_until
            && now < memo.validated.expires_at
            && **memo.token.expose() == *token)
            .then(|| (memo.validated.clone(), memo.hash))
    }

    /// Remembers `token`'s validation until `valid_until` (its cache entry's expiry).
    pub(super) fn remember(
        &self,
        generation: u64,
        token: &str,
        hash: [u8; 32],
        validated: Arc<ValidatedToken>,
        valid_until: i64,
    ) {
        *self.lock() = Some(Memo { generation, token: Secret::new(token.into()), hash, validated, valid_until });
    }
}
