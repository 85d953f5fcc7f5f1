//! [`TokenValidator`]: every configured issuer's policy and keys, the checks of an access
//! token in order (see [`super`]), and the bounded cache of validated tokens, keyed by the
//! token's SHA-256 and kept until the token's `exp` (or `token_cache.max_ttl`, or for an
//! introspected token `introspection.cache_ttl`). A token that is not a compact JWS goes to
//! the issuer that introspects, when one does; a JWT always goes the JWT way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::claims::{check_claims, parse_claims, typ_accepted};
use super::introspection::Introspector;
use super::{MAX_TOKEN_BYTES, TokenError, TokenMemo, ValidatedToken};
use crate::auth::jwks::{IssuerKeys, KeyError};
use crate::config::{Issuer, TokenCacheSettings};
use crate::jose::{self, CompactJws, JwsError};
use crate::metrics::ResultLabels;

/// A cache entry: the validated token and how long it may stay cached.
#[derive(Clone)]
struct Cached {
    token: Arc<ValidatedToken>,
    ttl: Duration,
    /// Unix seconds at which the entry expires (insertion time + `ttl`).
    valid_until: i64,
}

/// Validator generations: each compiled configuration gets its own.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Moka expiry: each entry lives for the TTL computed at insertion.
struct PerEntryTtl;

impl moka::Expiry<[u8; 32], Cached> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Cached,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Validates access tokens for every configured issuer, with a cache of results.
pub struct TokenValidator {
    issuers: HashMap<String, (Issuer, Arc<IssuerKeys>)>,
    cache: Cache<[u8; 32], Cached>,
    max_ttl: Duration,
    /// `token_cache_lookups{result="hit"|"miss"}`, looked up once.
    hits: Counter,
    misses: Counter,
    /// Which [`TokenMemo`]s belong to this validator.
    generation: u64,
    /// Where tokens that are not JWTs are checked, when an issuer introspects.
    introspector: Option<Arc<Introspector>>,
}

impl TokenValidator {
    pub fn new(issuers: Vec<(Issuer, Arc<IssuerKeys>)>, settings: &TokenCacheSettings) -> Self {
        let cache = Cache::builder().max_capacity(settings.max_entries).expire_after(PerEntryTtl).build();
        TokenValidator {
            issuers: issuers.into_iter().map(|(i, k)| (i.issuer.clone(), (i, k))).collect(),
            cache,
            max_ttl: settings.max_ttl,
            hits: Counter::default(),
            misses: Counter::default(),
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            introspector: None,
        }
    }

    /// Opaque tokens (anything but a compact JWS) go to `introspector`.
    pub fn introspecting(mut self, introspector: Option<Arc<Introspector>>) -> Self {
        self.introspector = introspector;
        self
    }

    /// Counts cache look-ups (hit or miss) into `family`.
    pub fn counting(mut self, family: Family<ResultLabels, Counter>) -> Self {
        self.hits = family.get_or_create(&ResultLabels { result: "hit" }).clone();
        self.misses = family.get_or_create(&ResultLabels { result: "miss" }).clone();
        self
    }

    /// The key caches of all issuers.
    pub fn issuer_keys(&self) -> impl Iterator<Item = &Arc<IssuerKeys>> {
        self.issuers.values().map(|(_, keys)| keys)
    }

    /// Validates `token` at `now` (Unix seconds). A cached result is returned while the
    /// token has not expired.
    pub async fn validate(&self, token: &str, now: i64) -> Result<Arc<ValidatedToken>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        self.validate_hashed(token, jose::sha256(token.as_bytes()), now).await
    }

    /// [`TokenValidator::validate`] when the caller already has the token's SHA-256 (DPoP
    /// needs it for `ath` too: it is computed once per request).
    pub async fn validate_hashed(
        &self,
        token: &str,
        key: [u8; 32],
        now: i64,
    ) -> Result<Arc<ValidatedToken>, TokenError> {
        self.validate_hashed_until(token, key, now).await.map(|(token, _)| token)
    }

    /// [`TokenValidator::validate_hashed`], and until when (Unix seconds) the result may be
    /// reused: the cache entry's expiry.
    async fn validate_hashed_until(
        &self,
        token: &str,
        key: [u8; 32],
        now: i64,
    ) -> Result<(Arc<ValidatedToken>, i64), TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        if let Some(hit) = self.cache.get(&key)
            && now < hit.token.expires_at
        {
            self.hits.inc();
            return Ok((hit.token, hit.valid_until));
        }
        self.misses.inc();
        let (validated, cache_cap) = match &self.introspector {
            Some(introspector) if !looks_like_jws(token) => {
                // Boxed: a network call on a cache miss only, and its future is deep (the
                // request future's layout would otherwise pass the compiler's depth limit).
                (Box::pin(introspector.introspect(token, &key, now)).await?, introspector.cache_ttl())
            }
            _ => (self.validate_uncached(token, now).await?, self.max_ttl),
        };
        let validated = Arc::new(validated);
        let remaining = u64::try_from(validated.expires_at.saturating_sub(now)).unwrap_or(0);
        let ttl = Duration::from_secs(remaining).min(self.max_ttl).min(cache_cap);
        let valid_until = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        if !ttl.is_zero() {
            self.cache.insert(key, Cached { token: validated.clone(), ttl, valid_until });
        }
        Ok((validated, valid_until))
    }

    /// Validates `token` for a request on a connection whose [`TokenMemo`] is `memo`:
    /// the same token as the connection's previous request is answered from the memo.
    /// Returns the validated token and the token's SHA-256 (DPoP's `ath` needs it).
    pub async fn validate_remembered(
        &self,
        token: &str,
        memo: Option<&TokenMemo>,
        now: i64,
    ) -> Result<(Arc<ValidatedToken>, [u8; 32]), TokenError> {
        if let Some(hit) = memo.and_then(|m| m.recall(self.generation, token, now)) {
            self.hits.inc();
            return Ok(hit);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let hash = jose::sha256(token.as_bytes());
        let (validated, valid_until) = self.validate_hashed_until(token, hash, now).await?;
        if let Some(memo) = memo {
            memo.remember(self.generation, token, hash, validated.clone(), valid_until);
        }
        Ok((validated, hash))
    }

    /// Full validation (signature and claims) without the cache: what a cache miss costs.
    pub async fn validate_uncached(&self, token: &str, now: i64) -> Result<ValidatedToken, TokenError> {
        let jws = CompactJws::parse(token, MAX_TOKEN_BYTES).map_err(|e| match e {
            JwsError::TooLarge => TokenError::TooLarge,
            JwsError::CriticalHeader => TokenError::CriticalHeader,
            _ => TokenError::Malformed,
        })?;
        let alg = jws.alg().map_err(|e| match e {
            JwsError::UnsupportedAlg(name) => {
                TokenError::AlgorithmNotAllowed { alg: super::shown(&name), allowed: None }
            }
            JwsError::CriticalHeader => TokenError::CriticalHeader,
            _ => TokenError::Malformed,
        })?;
        let claims = parse_claims(jws.payload())?;
        let iss = claims.iss.as_deref().ok_or(TokenError::UnknownIssuer)?;
        let (issuer, keys) = self.issuers.get(iss).ok_or(TokenError::UnknownIssuer)?;
        if !typ_accepted(&issuer.typ, jws.header_str("typ")) {
            return Err(TokenError::WrongType {
                seen: jws.header_str("typ").map(super::shown),
                accepted: issuer.typ.join(" ").into(),
            });
        }
        if !issuer.algorithms.contains(&alg) {
            let allowed = issuer.algorithms.iter().map(|a| a.name()).collect::<Vec<_>>().join(" ");
            return Err(TokenError::AlgorithmNotAllowed { alg: alg.name().into(), allowed: Some(allowed.into()) });
        }
        let kid = jws.header_str("kid");
        let set = keys.key_set(kid, alg).await.map_err(|e| match e {
            KeyError::Unavailable => TokenError::KeysUnavailable,
            KeyError::NoMatchingKey => TokenError::UnknownKey,
        })?;
        if !set.candidates(kid, alg).any(|key| jws.verify_with(alg, key).is_ok()) {
            return Err(TokenError::BadSignature);
        }
        check_claims(claims, issuer, now)
    }
}

/// A compact JWS has exactly three dot-separated parts; anything else is an opaque token.
fn looks_like_jws(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}
