//! The shared DPoP replay store: Redis (or Valkey), so that a proof accepted by one gateway
//! instance is refused by every other.
//!
//! One round trip per proof: a Lua script (`EVALSHA`, `EVAL` once when Redis lost it) that
//! runs atomically, so of two instances racing with the same proof exactly one sees it
//! fresh. It checks `<prefix>{<hex jkt>}:<hex key>` (the proof) and the DPoP key's counter
//! for the current fixed window, `<prefix>{<hex jkt>}:q:<window number>` (one hash tag per
//! key: both in one slot); a key with `per_key_limit` remembered proofs in the window is
//! refused with [`ReplayError::KeyOverQuota`] until the next one, and stores nothing. The
//! connection ([`crate::auth::redis_link`]: one server, a Redis Cluster — one slot per
//! script, by the hash tag — or the primary Sentinel names) is opened lazily, so the
//! gateway starts while Redis is down. Any error or a reply slower than `timeout` fails
//! closed ([`ReplayError::Unavailable`]: the request gets 503) unless `on_error: local`,
//! which falls back to this instance's in-memory store — weaker, since a proof could then be
//! replayed against another instance. The URL's password never appears in logs or errors.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::replay::{Freshness, MemoryReplayStore, ReplayError, ReplayFuture, ReplayStore};

/// Why the Redis store could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    #[error("dpop.replay.url `{url}` is not a usable redis:// or rediss:// URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("dpop.replay.ca: cannot read {path}: {reason}")]
    Ca { path: String, reason: String },
}

/// Atomically: a replay (`-1`) if the proof's key exists; else over quota (`-2`) if the DPoP
/// key has `ARGV[2]` proofs in this window; else remembers the proof for `ARGV[1]` ms and
/// counts it (the counter lives `ARGV[3]` ms) and returns the count. Only remembered proofs
/// count, so replays cannot lock a key out, and a key over quota stores nothing.
const INSERT_SCRIPT: &str = "if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end \
local count = tonumber(redis.call('GET', KEYS[2]) or '0') \
if count >= tonumber(ARGV[2]) then return -2 end \
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) \
redis.call('INCR', KEYS[2]) \
redis.call('PEXPIRE', KEYS[2], ARGV[3]) \
return count + 1";
const REPLAYED: i64 = -1;
const OVER_QUOTA: i64 = -2;

/// A replay store shared through Redis.
pub struct RedisReplayStore {
    link: crate::auth::redis_link::RedisLink,
    /// The target without credentials, for logs.
    redacted_url: String,
    key_prefix: String,
    window: Duration,
    timeout: Duration,
    per_key_limit: u32,
    /// Replicas that must acknowledge a fresh proof (`WAIT`) before it is accepted.
    wait_for_replicas: u32,
    /// SHA-1 of [`INSERT_SCRIPT`], for `EVALSHA`.
    script_sha1: String,
    /// With `on_error: local`: where proofs go while Redis cannot answer.
    fallback: Option<Arc<MemoryReplayStore>>,
    errors: AtomicU64,
    /// Errors are logged at most every few seconds: while Redis is down, every DPoP
    /// request fails the same way (`errors` counts them all).
    error_log: crate::diagnostics::LogThrottle,
}

impl RedisReplayStore {
    pub fn new(
        target: &crate::config::RedisTarget,
        ca: Option<&std::path::Path>,
        key_prefix: &str,
        window: Duration,
        timeout: Duration,
        per_key_limit: u32,
        fallback: Option<Arc<MemoryReplayStore>>,
    ) -> Result<Self, RedisConfigError> {
        let link = crate::auth::redis_link::RedisLink::new(target, ca, timeout).map_err(|e| match e {
            crate::auth::redis_link::RedisLinkError::BadUrl { url, reason } => RedisConfigError::BadUrl { url, reason },
            crate::auth::redis_link::RedisLinkError::Ca { path, reason } => RedisConfigError::Ca { path, reason },
        })?;
        let redacted_url = link.shown().to_string();
        Ok(RedisReplayStore {
            link,
            redacted_url,
            key_prefix: key_prefix.to_string(),
            window,
            timeout,
            per_key_limit: per_key_limit.max(1),
            wait_for_replicas: 0,
            script_sha1: aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
                INSERT_SCRIPT.as_bytes(),
            )
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
            fallback,
            errors: AtomicU64::new(0),
            error_log: crate::diagnostics::LogThrottle::new(crate::auth::REFUSAL_LOG_PERIOD),
        })
    }

    /// A fresh proof is accepted only once `replicas` replicas hold it (Redis `WAIT`, within
    /// the timeout), so that a failover to one of them cannot forget it.
    pub fn waiting_for_replicas(mut self, replicas: u32) -> Self {
        self.wait_for_replicas = replicas;
        self
    }

    /// The URL without credentials.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// Whether a Redis failure refuses DPoP requests (no local fallback).
    pub fn fails_closed(&self) -> bool {
        self.fallback.is_none()
    }

    /// Failed or timed-out round trips since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Whether Redis answers a `PING` within the timeout (for readiness checks).
    pub async fn is_reachable(&self) -> bool {
        self.link.query::<String>(&redis::cmd("PING")).await.is_ok()
    }

    async fn insert_remote(&self, key: &[u8; 32], jkt: &[u8; 32]) -> Result<Freshness, ReplayError> {
        let hex = |bytes: &[u8]| {
            let mut text = String::with_capacity(2 * bytes.len());
            for b in bytes {
                let _ = write!(text, "{b:02x}");
            }
            text
        };
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX).max(1);
        let now_ms = u64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis(),
        )
        .unwrap_or(u64::MAX);
        let window_number = now_ms / window_ms;
        // One hash tag per DPoP key: both keys in one slot (Redis Cluster runs the script).
        let tag = format!("{}{{{}}}", self.key_prefix, hex(jkt));
        let (proof_key, counter) = (format!("{tag}:{}", hex(key)), format!("{tag}:q:{window_number}"));
        let script = |command: &str, body: &str| {
            let mut cmd = redis::cmd(command);
            cmd.arg(body).arg(2).arg(&proof_key).arg(&counter);
            cmd.arg(window_ms).arg(self.per_key_limit).arg(window_ms.saturating_mul(2));
            cmd
        };
        let proof_key_ref = proof_key.as_str();
        let attempt = |command: &'static str, body: &str| {
            let eval = script("EVAL", INSERT_SCRIPT);
            let script = script(command, body);
            async move {
                if self.wait_for_replicas == 0 {
                    return self.link.query::<i64>(&script).await.map(|count| (count, u32::MAX));
                }
                // The script and WAIT back to back on one connection: WAIT counts exactly the
                // writes before it, the proof's among them. (EVAL, not EVALSHA: a pipeline
                // reports NOSCRIPT as a value, and a node new since the last call lacks it.)
                let timeout_ms = (u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX) / 2).max(1);
                let mut pipeline = redis::pipe();
                pipeline.add_command(eval).cmd("WAIT").arg(self.wait_for_replicas).arg(timeout_ms);
                self.link.query_pipeline::<(i64, u32)>(&pipeline, proof_key_ref).await
            }
        };
        let run = async {
            match attempt("EVALSHA", &self.script_sha1).await {
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    attempt("EVAL", INSERT_SCRIPT).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok((REPLAYED, _))) => Ok(Freshness::Replayed),
            Ok(Ok((OVER_QUOTA, _))) => {
                let next_window_ms = (window_number + 1).saturating_mul(window_ms).saturating_sub(now_ms);
                Err(ReplayError::KeyOverQuota {
                    retry_after: Duration::from_millis(next_window_ms).max(Duration::from_secs(1)),
                })
            }
            Ok(Ok((_, acknowledged))) if acknowledged >= self.wait_for_replicas => Ok(Freshness::Fresh),
            Ok(Ok((_, acknowledged))) => {
                if let Some(held_back) = self.error_log.allow() {
                    tracing::warn!(url = %self.redacted_url, acknowledged, wanted = self.wait_for_replicas, held_back, "DPoP replay store: too few replicas acknowledged a proof; refusing it");
                }
                Err(ReplayError::Unavailable)
            }
            Ok(Err(e)) => {
                if let Some(held_back) = self.error_log.allow() {
                    tracing::warn!(url = %self.redacted_url, error = %e, held_back, "DPoP replay store error");
                }
                Err(ReplayError::Unavailable)
            }
            Err(_) => {
                if let Some(held_back) = self.error_log.allow() {
                    tracing::warn!(url = %self.redacted_url, timeout_ms = self.timeout.as_millis() as u64, held_back, "DPoP replay store timed out");
                }
                Err(ReplayError::Unavailable)
            }
        }
    }
}

impl ReplayStore for RedisReplayStore {
    /// With a local fallback, every proof is also remembered locally, so that while Redis
    /// is down this instance still refuses replays of proofs it accepted through Redis, and
    /// after it comes back, of proofs it accepted alone.
    fn insert_if_absent(&self, key: [u8; 32], jkt: [u8; 32], now: Instant) -> ReplayFuture<'_> {
        Box::pin(async move {
            let local = self.fallback.as_ref().map(|store| store.insert(key, jkt, now));
            let remote = self.insert_remote(&key, &jkt).await;
            if matches!(remote, Err(ReplayError::Unavailable | ReplayError::Full)) {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            match (remote, local) {
                (_, Some(Ok(Freshness::Replayed))) => Ok(Freshness::Replayed),
                (Ok(freshness), _) => Ok(freshness),
                (Err(quota @ ReplayError::KeyOverQuota { .. }), _) => Err(quota),
                (Err(_), Some(local)) => local,
                (Err(e), None) => Err(e),
            }
        })
    }

    /// Entries live in Redis; only the local fallback's are counted here.
    fn len(&self) -> usize {
        self.fallback.as_ref().map_or(0, |f| f.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_do_not_leak_the_secret() {
        let e = RedisReplayStore::new(
            &crate::config::RedisTarget::Single(crate::config::SecretUrl("http://user:s3cr3t@host".into())),
            None,
            "p:",
            Duration::from_secs(1),
            Duration::from_secs(1),
            100,
            None,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("http://host"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
    }
}
