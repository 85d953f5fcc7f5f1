//! Where the login mode keeps what the browser must never hold: login transactions (PKCE
//! verifier, nonce, the session's DPoP key, where to return) and sessions (tokens and DPoP
//! key). Both live in memory here, bounded and expiring; the browser gets only cookies:
//!
//! - a transaction cookie per login in progress, named after its `state`
//!   (`__Host-fapi-login-<10 chars>`), so several tabs can log in at once; its value is a
//!   random secret whose hash the transaction keeps, which binds the PKCE verifier to this
//!   browser (FAPI 2.0 §5.3.3.2-4);
//! - the session cookie: a random 256-bit id and an HMAC tag under the session secret
//!   (`<id>.<tag>`), compared in constant time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::hmac;

use serde::{Deserialize, Serialize};

use super::pkce::{RandomError, random_token};
use super::redis_store::{RedisLoginStore, StoreError};
use crate::jose::{SigningKey, b64url_decode, b64url_encode, constant_time_eq, sha256, unix_now};
use crate::secret::Secret;

/// At most this many logins in progress at once (each costs a PAR call): more are refused
/// with 503 until some finish or expire.
pub const MAX_TRANSACTIONS: usize = 10_000;
/// A login must come back within this long (`request_uri` lives < 600 s: FAPI 2.0 AS
/// §5.3.2.2-12).
pub const TRANSACTION_TTL_SECS: i64 = 600;
/// At most this many sessions per login.
pub const MAX_SESSIONS: usize = 100_000;

/// A login in progress, keyed by its `state`.
pub struct Transaction {
    pub code_verifier: Secret<String>,
    pub nonce: Option<String>,
    pub dpop_key: Arc<SigningKey>,
    pub return_to: String,
    /// SHA-256 of the transaction cookie's value.
    pub cookie_hash: [u8; 32],
    pub created: i64,
}

/// The start of every login-transaction cookie's name.
pub const TRANSACTION_COOKIE_PREFIX: &str = "__Host-fapi-login-";

/// The transaction cookie's name for `state`.
pub fn transaction_cookie_name(state: &str) -> String {
    let digest = b64url_encode(&sha256(state.as_bytes()));
    format!("{TRANSACTION_COOKIE_PREFIX}{}", &digest[..10])
}

/// Logins in progress: in memory, or in the shared Redis store.
#[derive(Default)]
pub struct Transactions {
    open: Mutex<HashMap<String, Transaction>>,
    redis: Option<Arc<RedisLoginStore>>,
}

/// A transaction as the Redis store keeps it.
#[derive(Serialize, Deserialize)]
struct StoredTransaction {
    verifier: String,
    nonce: Option<String>,
    /// The DPoP key, PKCS#8 PEM (the record is sealed).
    key: String,
    return_to: String,
    cookie_hash: String,
    created: i64,
}

impl Transactions {
    pub fn new(redis: Option<Arc<RedisLoginStore>>) -> Transactions {
        Transactions { open: Mutex::default(), redis }
    }

    /// Records a transaction under `state`; `false` when too many are open.
    pub async fn insert(&self, state: String, transaction: Transaction) -> Result<bool, StoreError> {
        if let Some(redis) = &self.redis {
            let stored = StoredTransaction {
                verifier: transaction.code_verifier.expose().clone(),
                nonce: transaction.nonce,
                key: transaction.dpop_key.to_pkcs8_pem().map_err(|_| StoreError::Sealed)?,
                return_to: transaction.return_to,
                cookie_hash: b64url_encode(&transaction.cookie_hash),
                created: transaction.created,
            };
            let json = serde_json::to_vec(&stored).map_err(|_| StoreError::Sealed)?;
            let ttl = std::time::Duration::from_secs(TRANSACTION_TTL_SECS.unsigned_abs());
            redis.put(&redis.key("tx", state.as_bytes()), &json, ttl).await?;
            return Ok(true);
        }
        let Ok(mut open) = self.open.lock() else { return Ok(false) };
        let now = unix_now();
        open.retain(|_, t| now - t.created < TRANSACTION_TTL_SECS);
        if open.len() >= MAX_TRANSACTIONS {
            return Ok(false);
        }
        open.insert(state, transaction);
        Ok(true)
    }

    /// Takes the transaction of `state` out (single use), if it is open and not expired.
    pub async fn take(&self, state: &str) -> Result<Option<Transaction>, StoreError> {
        let transaction = match &self.redis {
            Some(redis) => {
                let Some(json) = redis.take(&redis.key("tx", state.as_bytes())).await? else { return Ok(None) };
                let stored: StoredTransaction = serde_json::from_slice(&json).map_err(|_| StoreError::Sealed)?;
                let key = SigningKey::from_pkcs8_pem(crate::jose::Alg::Es256, stored.key.as_bytes())
                    .map_err(|_| StoreError::Sealed)?;
                let cookie_hash: [u8; 32] = b64url_decode(&stored.cookie_hash)
                    .ok()
                    .and_then(|h| h.try_into().ok())
                    .ok_or(StoreError::Sealed)?;
                Transaction {
                    code_verifier: Secret::new(stored.verifier),
                    nonce: stored.nonce,
                    dpop_key: Arc::new(key),
                    return_to: stored.return_to,
                    cookie_hash,
                    created: stored.created,
                }
            }
            None => match self.open.lock().ok().and_then(|mut open| open.remove(state)) {
                Some(transaction) => transaction,
                None => return Ok(None),
            },
        };
        Ok((unix_now() - transaction.created < TRANSACTION_TTL_SECS).then_some(transaction))
    }
}

/// The tokens of a session; replaced together by a refresh.
#[derive(Clone)]
pub struct SessionTokens {
    pub access_token: Secret<String>,
    pub refresh_token: Option<Secret<String>>,
    /// When the access token expires (`None`: the AS did not say).
    pub access_expires_at: Option<i64>,
}

/// One browser session.
pub struct Session {
    pub sub: Option<String>,
    pub scope: Option<String>,
    tokens: Mutex<SessionTokens>,
    /// Held while a refresh runs: one refresh per session at a time (single flight).
    pub refreshing: tokio::sync::Mutex<()>,
    pub dpop_key: Arc<SigningKey>,
    pub created: i64,
    last_seen: AtomicI64,
    /// The last `DPoP-Nonce` an upstream asked for (RFC 9449 §8.2: used in later proofs).
    upstream_nonce: Mutex<Option<String>>,
    /// The session's id, once stored.
    pub id: Option<[u8; 32]>,
}

impl Session {
    pub fn new(
        sub: Option<String>,
        scope: Option<String>,
        tokens: SessionTokens,
        dpop_key: Arc<SigningKey>,
    ) -> Session {
        let now = unix_now();
        Session {
            sub,
            scope,
            tokens: Mutex::new(tokens),
            refreshing: tokio::sync::Mutex::new(()),
            dpop_key,
            created: now,
            last_seen: AtomicI64::new(now),
            upstream_nonce: Mutex::new(None),
            id: None,
        }
    }

    fn with_id(mut self, id: [u8; 32]) -> Session {
        self.id = Some(id);
        self
    }

    /// The upstream's last nonce, if any.
    pub fn upstream_nonce(&self) -> Option<String> {
        self.upstream_nonce.lock().ok().and_then(|n| n.clone())
    }

    pub fn set_upstream_nonce(&self, nonce: &str) {
        if let Ok(mut kept) = self.upstream_nonce.lock() {
            *kept = Some(nonce.to_string());
        }
    }

    /// The current tokens.
    pub fn tokens(&self) -> Option<SessionTokens> {
        self.tokens.lock().ok().map(|t| t.clone())
    }

    /// Stores refreshed tokens (the rotated refresh token with them, atomically).
    pub fn replace_tokens(&self, tokens: SessionTokens) {
        if let Ok(mut current) = self.tokens.lock() {
            *current = tokens;
        }
    }
}

/// A session as the Redis store keeps it.
#[derive(Serialize, Deserialize)]
struct StoredSession {
    sub: Option<String>,
    scope: Option<String>,
    access_token: String,
    refresh_token: Option<String>,
    expires_at: Option<i64>,
    /// The DPoP key, PKCS#8 PEM (the record is sealed).
    key: String,
    created: i64,
}

impl StoredSession {
    fn of(session: &Session) -> Option<StoredSession> {
        let tokens = session.tokens()?;
        Some(StoredSession {
            sub: session.sub.clone(),
            scope: session.scope.clone(),
            access_token: tokens.access_token.expose().clone(),
            refresh_token: tokens.refresh_token.map(|t| t.expose().clone()),
            expires_at: tokens.access_expires_at,
            key: session.dpop_key.to_pkcs8_pem().ok()?,
            created: session.created,
        })
    }
}

/// Why a session cookie was not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMiss {
    /// No cookie, a malformed one, or a tag no secret makes.
    NoSession,
    /// The session ended (logout, idle or lifetime limit).
    Ended,
    /// The shared store cannot answer now.
    Unavailable,
}

/// The sessions of one login, and the secrets their cookies are tagged with. With the Redis
/// store the records live there and `open` caches them (keeping each session's refresh
/// lock and upstream nonce on this instance).
pub struct Sessions {
    /// The first tags new cookies; every one verifies (rotation).
    secrets: Vec<hmac::Key>,
    open: Mutex<HashMap<[u8; 32], Arc<Session>>>,
    redis: Option<Arc<RedisLoginStore>>,
    idle_secs: i64,
    lifetime_secs: i64,
}

impl Sessions {
    /// `secrets` must not be empty.
    pub fn new(
        secrets: &[Vec<u8>],
        idle_secs: i64,
        lifetime_secs: i64,
        redis: Option<Arc<RedisLoginStore>>,
    ) -> Sessions {
        Sessions {
            secrets: secrets.iter().map(|s| hmac::Key::new(hmac::HMAC_SHA256, s)).collect(),
            open: Mutex::new(HashMap::new()),
            redis,
            idle_secs,
            lifetime_secs,
        }
    }

    /// Whether sessions are shared through Redis.
    pub fn shared(&self) -> Option<&Arc<RedisLoginStore>> {
        self.redis.as_ref()
    }

    fn idle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.idle_secs.unsigned_abs())
    }

    /// Stores `session` under a new id and returns the cookie value, or `None` when full.
    pub async fn create(&self, session: Session) -> Result<Option<String>, StoreError> {
        let mut id = [0u8; 32];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| StoreError::Sealed)?;
        if let Some(redis) = &self.redis {
            let stored = StoredSession::of(&session).ok_or(StoreError::Sealed)?;
            let json = serde_json::to_vec(&stored).map_err(|_| StoreError::Sealed)?;
            redis.put(&redis.key("s", &id), &json, self.idle()).await?;
        }
        let Ok(mut open) = self.open.lock() else { return Ok(None) };
        if open.len() >= MAX_SESSIONS {
            let now = unix_now();
            open.retain(|_, s| self.alive(s, now));
            if open.len() >= MAX_SESSIONS && self.redis.is_none() {
                return Ok(None);
            }
            if open.len() >= MAX_SESSIONS {
                open.clear();
            }
        }
        open.insert(id, Arc::new(session.with_id(id)));
        let Some(key) = self.secrets.first() else { return Ok(None) };
        Ok(Some(format!("{}.{}", b64url_encode(&id), b64url_encode(&hmac::sign(key, &id).as_ref()[..16]))))
    }

    /// The session a cookie value names, refreshing its idle clock.
    pub async fn find(&self, cookie: &str) -> Result<Arc<Session>, SessionMiss> {
        let id = self.verify(cookie).ok_or(SessionMiss::NoSession)?;
        let now = unix_now();
        if let Some(redis) = &self.redis {
            let key = redis.key("s", &id);
            let Some(json) = redis.get(&key).await.map_err(|_| SessionMiss::Unavailable)? else {
                if let Ok(mut open) = self.open.lock() {
                    open.remove(&id);
                }
                return Err(SessionMiss::Ended);
            };
            let stored: StoredSession = serde_json::from_slice(&json).map_err(|_| SessionMiss::Unavailable)?;
            if now - stored.created >= self.lifetime_secs {
                let _ = redis.delete(&key).await;
                return Err(SessionMiss::Ended);
            }
            let _ = redis.touch(&key, self.idle()).await;
            let mut open = self.open.lock().map_err(|_| SessionMiss::Unavailable)?;
            // The cached session, when it is this record; else the record, cached.
            if let Some(cached) = open.get(&id)
                && cached.tokens().is_some_and(|t| *t.access_token.expose() == stored.access_token)
            {
                cached.last_seen.store(now, Ordering::Relaxed);
                return Ok(cached.clone());
            }
            let key = SigningKey::from_pkcs8_pem(crate::jose::Alg::Es256, stored.key.as_bytes())
                .map_err(|_| SessionMiss::Unavailable)?;
            let tokens = SessionTokens {
                access_token: Secret::new(stored.access_token),
                refresh_token: stored.refresh_token.map(Secret::new),
                access_expires_at: stored.expires_at,
            };
            let mut session = Session::new(stored.sub, stored.scope, tokens, Arc::new(key)).with_id(id);
            session.created = stored.created;
            let session = Arc::new(session);
            if open.len() >= MAX_SESSIONS {
                open.clear();
            }
            open.insert(id, session.clone());
            return Ok(session);
        }
        let mut open = self.open.lock().map_err(|_| SessionMiss::NoSession)?;
        let session = open.get(&id).cloned().ok_or(SessionMiss::Ended)?;
        if !self.alive(&session, now) {
            open.remove(&id);
            return Err(SessionMiss::Ended);
        }
        session.last_seen.store(now, Ordering::Relaxed);
        Ok(session)
    }

    /// Writes a session's refreshed tokens back to the shared store (nothing in memory mode).
    pub async fn save(&self, session: &Session) -> Result<(), StoreError> {
        let (Some(redis), Some(id)) = (&self.redis, session.id) else { return Ok(()) };
        let stored = StoredSession::of(session).ok_or(StoreError::Sealed)?;
        let json = serde_json::to_vec(&stored).map_err(|_| StoreError::Sealed)?;
        redis.put(&redis.key("s", &id), &json, self.idle()).await
    }

    /// Ends the session a cookie value names, on every instance; the session when there was
    /// one.
    pub async fn end(&self, cookie: &str) -> Option<Arc<Session>> {
        let id = self.verify(cookie)?;
        let local = self.open.lock().ok().and_then(|mut open| open.remove(&id));
        if let Some(redis) = &self.redis {
            let key = redis.key("s", &id);
            let remote = match local.clone() {
                Some(session) => Some(session),
                None => self.find_remote_for_end(redis, &key).await,
            };
            let _ = redis.delete(&key).await;
            return remote;
        }
        local
    }

    async fn find_remote_for_end(&self, redis: &RedisLoginStore, key: &str) -> Option<Arc<Session>> {
        let json = redis.get(key).await.ok()??;
        let stored: StoredSession = serde_json::from_slice(&json).ok()?;
        let dpop_key = SigningKey::from_pkcs8_pem(crate::jose::Alg::Es256, stored.key.as_bytes()).ok()?;
        let tokens = SessionTokens {
            access_token: Secret::new(stored.access_token),
            refresh_token: stored.refresh_token.map(Secret::new),
            access_expires_at: stored.expires_at,
        };
        Some(Arc::new(Session::new(stored.sub, stored.scope, tokens, Arc::new(dpop_key))))
    }

    /// Sessions open now on this instance (for the metric).
    pub fn len(&self) -> usize {
        self.open.lock().map_or(0, |o| o.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn alive(&self, session: &Session, now: i64) -> bool {
        now - session.created < self.lifetime_secs && now - session.last_seen.load(Ordering::Relaxed) < self.idle_secs
    }

    /// The id of a well-formed cookie value whose tag one of the secrets makes.
    fn verify(&self, cookie: &str) -> Option<[u8; 32]> {
        let (id, tag) = cookie.split_once('.')?;
        let id: [u8; 32] = b64url_decode(id).ok()?.try_into().ok()?;
        let tag = b64url_decode(tag).ok()?;
        self.secrets.iter().any(|key| constant_time_eq(&hmac::sign(key, &id).as_ref()[..16], &tag)).then_some(id)
    }
}

/// A fresh transaction cookie value and its hash.
pub fn transaction_secret() -> Result<(String, [u8; 32]), RandomError> {
    let value = random_token(32)?;
    let hash = sha256(value.as_bytes());
    Ok((value, hash))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::jose::Alg;

    fn session() -> Session {
        let key = Arc::new(SigningKey::generate(Alg::Es256).unwrap());
        let tokens =
            SessionTokens { access_token: Secret::new("at".into()), refresh_token: None, access_expires_at: None };
        Session::new(Some("alice".into()), None, tokens, key)
    }

    #[tokio::test]
    async fn cookies_name_their_session_and_forgeries_do_not() {
        let sessions = Sessions::new(&[b"a secret of at least thirty-two bytes!".to_vec()], 60, 3600, None);
        let cookie = sessions.create(session()).await.unwrap().unwrap();
        assert_eq!(sessions.find(&cookie).await.unwrap().sub.as_deref(), Some("alice"));
        let (id, tag) = cookie.split_once('.').unwrap();
        let mut forged_tag = b64url_decode(tag).unwrap();
        forged_tag[0] ^= 1;
        for forged in [
            format!("{id}.{}", b64url_encode(&forged_tag)),
            format!("{}.{tag}", b64url_encode(&[7u8; 32])),
            id.to_string(),
            String::new(),
            "x.y".into(),
        ] {
            assert_eq!(sessions.find(&forged).await.err(), Some(SessionMiss::NoSession), "{forged}");
        }
        // Another secret does not verify; a rotated list that still has it does.
        let other = Sessions::new(&[b"another secret of thirty-two bytes or more".to_vec()], 60, 3600, None);
        assert_eq!(other.find(&cookie).await.err(), Some(SessionMiss::NoSession));
        assert!(sessions.end(&cookie).await.is_some());
        assert_eq!(sessions.find(&cookie).await.err(), Some(SessionMiss::Ended));
    }

    #[tokio::test]
    async fn transactions_are_single_use() {
        let transactions = Transactions::default();
        let (_, hash) = transaction_secret().unwrap();
        let key = Arc::new(SigningKey::generate(Alg::Es256).unwrap());
        let t = Transaction {
            code_verifier: Secret::new("v".into()),
            nonce: None,
            dpop_key: key,
            return_to: "/app/".into(),
            cookie_hash: hash,
            created: unix_now(),
        };
        assert!(transactions.insert("s1".into(), t).await.unwrap());
        assert!(transactions.take("s1").await.unwrap().is_some());
        assert!(transactions.take("s1").await.unwrap().is_none(), "a state is good once");
        assert!(transaction_cookie_name("s1").starts_with("__Host-fapi-login-"));
        assert_ne!(transaction_cookie_name("s1"), transaction_cookie_name("s2"));
    }
}
