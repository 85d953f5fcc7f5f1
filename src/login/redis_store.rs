//! The login mode's shared store in Redis, for several gateway instances behind a balancer:
//! a login started on one completes on another, a session works on all, a logout on one
//! ends it everywhere, and one refresh per session runs at a time across them (a lock with
//! a lease).
//!
//! Records (login transactions and sessions, DPoP private keys and tokens among them) are
//! sealed with AES-256-GCM under a key derived from the first session secret (HMAC-SHA256
//! as the KDF), so Redis holds nothing readable or forgeable without it. Keys are
//! `<key_prefix>tx:<SHA-256 of state>`, `<key_prefix>s:<SHA-256 of session id>` and
//! `<key_prefix>lock:<…>`; every record expires by itself (PX). Every command names one key,
//! so a Redis Cluster or a Sentinel-named primary serves as well as one server
//! ([`RedisLink`]).

use std::time::Duration;

use crate::auth::redis_link::RedisLink;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;

use crate::jose::{b64url_encode, sha256};

/// Why the store could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the login store (Redis) did not answer")]
    Unavailable,
    #[error("a login store record could not be opened (another session secret?)")]
    Sealed,
}

/// A Redis-backed store of sealed records.
pub struct RedisLoginStore {
    link: RedisLink,
    prefix: String,
    key: LessSafeKey,
}

impl RedisLoginStore {
    pub fn new(
        target: &crate::config::RedisTarget,
        ca: Option<&std::path::Path>,
        prefix: &str,
        timeout: Duration,
        secret: &[u8],
    ) -> Result<Self, String> {
        let link = RedisLink::new(target, ca, timeout).map_err(|e| e.to_string())?;
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), b"fapi-gateway login store v1");
        let key =
            UnboundKey::new(&AES_256_GCM, derived.as_ref()).map_err(|_| "cannot derive the store key".to_string())?;
        Ok(RedisLoginStore { link, prefix: prefix.to_string(), key: LessSafeKey::new(key) })
    }

    /// The Redis key of record `kind` named `name` (hashed: no secret in a key name).
    pub fn key(&self, kind: &str, name: &[u8]) -> String {
        format!("{}{kind}:{}", self.prefix, b64url_encode(&sha256(name)))
    }

    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, StoreError> {
        self.link.query::<T>(&command).await.map_err(|e| {
            tracing::warn!(url = %self.link.shown(), error = %e, "the login store failed");
            StoreError::Unavailable
        })
    }

    /// Whether Redis answers a PING within the timeout (for `/readyz`).
    pub async fn is_reachable(&self) -> bool {
        self.run::<String>(redis::cmd("PING")).await.is_ok()
    }

    /// Stores `plain` sealed under `key` for `ttl`.
    pub async fn put(&self, key: &str, plain: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let sealed = self.seal(key, plain)?;
        let mut command = redis::cmd("SET");
        command.arg(key).arg(sealed).arg("PX").arg(millis(ttl));
        self.run::<()>(command).await
    }

    /// The record under `key`, opened; `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(key);
        let sealed: Option<Vec<u8>> = self.run(command).await?;
        sealed.map(|s| self.open(key, s)).transpose()
    }

    /// Takes the record under `key` out (single use: `GETDEL`).
    pub async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut command = redis::cmd("GETDEL");
        command.arg(key);
        let sealed: Option<Vec<u8>> = self.run(command).await?;
        sealed.map(|s| self.open(key, s)).transpose()
    }

    /// Restarts the expiry of `key`.
    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut command = redis::cmd("PEXPIRE");
        command.arg(key).arg(millis(ttl));
        self.run::<i64>(command).await.map(drop)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut command = redis::cmd("DEL");
        command.arg(key);
        self.run::<i64>(command).await.map(drop)
    }

    /// Takes the lock `key` for `lease` unless someone holds it; `true` when taken.
    pub async fn lock(&self, key: &str, lease: Duration) -> Result<bool, StoreError> {
        let mut command = redis::cmd("SET");
        command.arg(key).arg(1).arg("NX").arg("PX").arg(millis(lease));
        let answer: Option<String> = self.run(command).await?;
        Ok(answer.is_some())
    }

    /// AES-256-GCM, a random nonce in front, the Redis key as associated data (a record
    /// moved to another key does not open).
    fn seal(&self, key: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| StoreError::Sealed)?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key.as_bytes()), &mut sealed)
            .map_err(|_| StoreError::Sealed)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, key: &str, mut sealed: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < NONCE_LEN {
            return Err(StoreError::Sealed);
        }
        let mut body = sealed.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&sealed).map_err(|_| StoreError::Sealed)?;
        let plain =
            self.key.open_in_place(nonce, Aad::from(key.as_bytes()), &mut body).map_err(|_| StoreError::Sealed)?;
        Ok(plain.to_vec())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store(secret: &[u8]) -> RedisLoginStore {
        let target = crate::config::RedisTarget::Single(crate::config::SecretUrl("redis://127.0.0.1:1/0".into()));
        RedisLoginStore::new(&target, None, "t:", Duration::from_secs(1), secret).unwrap()
    }

    #[test]
    fn records_open_only_with_their_secret_and_key() {
        let a = store(b"a secret of at least thirty-two bytes!!");
        let sealed = a.seal("t:s:1", b"tokens").unwrap();
        assert_eq!(a.open("t:s:1", sealed.clone()).unwrap(), b"tokens");
        assert!(!sealed.windows(6).any(|w| w == b"tokens"), "sealed, not readable");
        assert_eq!(a.open("t:s:2", sealed.clone()), Err(StoreError::Sealed), "bound to its key");
        let b = store(b"another secret of thirty-two bytes or more");
        assert_eq!(b.open("t:s:1", sealed), Err(StoreError::Sealed));
        assert_eq!(a.open("t:s:1", vec![1, 2, 3]), Err(StoreError::Sealed));
        assert_ne!(a.key("s", b"id-1"), a.key("s", b"id-2"));
        assert!(!a.key("s", b"id-1").contains("id-1"));
    }
}
