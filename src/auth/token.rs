//! JWT access-token validation (RFC 9068 §4, FAPI 2.0 §5.3.4 and §5.4) and the cache of
//! validated tokens.
//!
//! Order of checks for a token not yet in the cache: size cap, compact-JWS syntax, `alg`
//! (`none`/HMAC are unrepresentable; `crit` refused), `typ`, the issuer (untrusted `iss`
//! selects which issuer's policy and keys apply), the issuer's algorithm allow-list, the key
//! (by `kid`, type matched to `alg`), the signature — and only then the claims: `iss` exact,
//! `aud`, `exp` with leeway, `nbf`/`iat` not too far ahead, `cnf`. A validated token is
//! cached under its SHA-256 until its `exp` (or the configured maximum), so its signature is
//! checked once; a hit costs one hash and one look-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;

use super::jwks::{IssuerKeys, KeyError};
use crate::config::{Issuer, TokenCacheSettings, normalise_typ};
use crate::jose::{self, CompactJws, JwsError};
use crate::metrics::ResultLabels;

/// Access tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 12 * 1024;

/// A token whose signature and claims were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedToken {
    pub issuer: String,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub jti: Option<String>,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
    pub cnf: Confirmation,
}

impl ValidatedToken {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// The token's `cnf` claim (RFC 7800), as far as the gateway enforces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confirmation {
    /// `x5t#S256`, decoded: SHA-256 of the client certificate (RFC 8705 §3.1).
    pub x5t_s256: Option<[u8; 32]>,
    /// `jkt`, decoded: RFC 7638 thumbprint of the DPoP key (RFC 9449 §6.1).
    pub jkt: Option<[u8; 32]>,
    /// `cnf` held a confirmation method the gateway does not know: never honoured as bearer.
    pub unknown_method: bool,
}

impl Confirmation {
    /// Whether the token is sender-constrained at all.
    pub fn is_bound(&self) -> bool {
        self.x5t_s256.is_some() || self.jkt.is_some() || self.unknown_method
    }
}

/// Why a token was refused. Every variant maps to `invalid_token`, except
/// [`TokenError::KeysUnavailable`], which is the gateway's problem, not the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token is too large")]
    TooLarge,
    #[error("the access token is not a well-formed JWT")]
    Malformed,
    #[error("the access token's algorithm is not accepted")]
    AlgorithmNotAllowed,
    #[error("the access token has a critical header the gateway does not understand")]
    CriticalHeader,
    #[error("the access token's typ is not accepted (expected at+jwt)")]
    WrongType,
    #[error("the access token's issuer is not trusted")]
    UnknownIssuer,
    #[error("no signing key of the issuer matches the access token")]
    UnknownKey,
    #[error("the issuer's signing keys are unavailable")]
    KeysUnavailable,
    #[error("the access token's signature is invalid")]
    BadSignature,
    #[error("the access token has no exp claim")]
    MissingExpiry,
    #[error("the access token has no {0} claim")]
    MissingClaim(String),
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet")]
    NotYetValid,
    #[error("the access token was issued in the future")]
    IssuedInFuture,
    #[error("the access token is not meant for this resource (aud)")]
    WrongAudience,
    #[error("the access token's cnf claim is malformed")]
    BadConfirmation,
}

impl TokenError {
    /// Stable reason code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "token_too_large",
            TokenError::Malformed => "token_malformed",
            TokenError::AlgorithmNotAllowed => "token_alg_not_allowed",
            TokenError::CriticalHeader => "token_crit_header",
            TokenError::WrongType => "token_wrong_typ",
            TokenError::UnknownIssuer => "token_unknown_issuer",
            TokenError::UnknownKey => "token_unknown_kid",
            TokenError::KeysUnavailable => "keys_unavailable",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::MissingExpiry => "token_missing_exp",
            TokenError::MissingClaim(_) => "token_missing_claim",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::IssuedInFuture => "token_iat_in_future",
            TokenError::WrongAudience => "token_wrong_audience",
            TokenError::BadConfirmation => "token_bad_cnf",
        }
    }
}

/// A cache entry: the validated token and how long it may stay cached.
#[derive(Clone)]
struct Cached {
    token: Arc<ValidatedToken>,
    ttl: Duration,
    /// Unix seconds at which the entry expires (insertion time + `ttl`).
    valid_until: i64,
}

/// The last access token one connection presented and what validating it gave, so that the
/// next request with the very same token skips hashing it and the cache look-up. It never
/// outlives the validated-token cache entry it came from (same expiry), belongs to one
/// compiled configuration (`generation`: a reload starts afresh), and is matched by
/// comparing the whole token, so it can only ever answer for a token that was validated.
/// (The comparison is not constant-time: both sides came from this one connection.)
#[derive(Debug, Default)]
pub struct TokenMemo(std::sync::Mutex<Option<Memo>>);

#[derive(Debug)]
struct Memo {
    generation: u64,
    token: Box<str>,
    hash: [u8; 32],
    validated: Arc<ValidatedToken>,
    valid_until: i64,
}

impl TokenMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Memo>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets the token (an idle, parked connection should not hold it).
    pub fn clear(&self) {
        *self.lock() = None;
    }

    fn recall(&self, generation: u64, token: &str, now: i64) -> Option<(Arc<ValidatedToken>, [u8; 32])> {
        let memo = self.lock();
        let memo = memo.as_ref()?;
        (memo.generation == generation
            && now < memo.valid_until
            && now < memo.validated.expires_at
            && *memo.token == *token)
            .then(|| (memo.validated.clone(), memo.hash))
    }
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
        }
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
        if let Some(hit) = self.cache.get(&key) {
            if now < hit.token.expires_at {
                self.hits.inc();
                return Ok((hit.token, hit.valid_until));
            }
        }
        self.misses.inc();
        let validated = Arc::new(self.validate_uncached(token, now).await?);
        let remaining = u64::try_from(validated.expires_at.saturating_sub(now)).unwrap_or(0);
        let ttl = Duration::from_secs(remaining).min(self.max_ttl);
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
            *memo.lock() = Some(Memo {
                generation: self.generation,
                token: token.into(),
                hash,
                validated: validated.clone(),
                valid_until,
            });
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
            JwsError::UnsupportedAlg(_) => TokenError::AlgorithmNotAllowed,
            JwsError::CriticalHeader => TokenError::CriticalHeader,
            _ => TokenError::Malformed,
        })?;
        let claims = parse_claims(jws.payload())?;
        let iss = claims.iss.as_deref().ok_or(TokenError::UnknownIssuer)?;
        let (issuer, keys) = self.issuers.get(iss).ok_or(TokenError::UnknownIssuer)?;
        if !typ_accepted(&issuer.typ, jws.header_str("typ")) {
            return Err(TokenError::WrongType);
        }
        if !issuer.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed);
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

/// The claims the gateway reads. Types are strict: a string `exp` is malformed, not absent.
#[derive(Debug, Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    iat: Option<serde_json::Number>,
    jti: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    scp: Option<Scp>,
    /// Present-but-null is kept as `Some(Null)`: a token that mentions `cnf` is held to it.
    #[serde(default, deserialize_with = "present")]
    cnf: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scp {
    List(Vec<String>),
    Text(String),
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

fn parse_claims(payload: &[u8]) -> Result<Claims, TokenError> {
    let object = jose::strict_json_object(payload).map_err(|_| TokenError::Malformed)?;
    serde_json::from_value(serde_json::Value::Object(object)).map_err(|_| TokenError::Malformed)
}

/// `typ` must be one of the issuer's accepted values, compared as media types.
fn typ_accepted(accepted: &[String], typ: Option<&str>) -> bool {
    typ.is_some_and(|t| {
        let t = normalise_typ(t);
        accepted.contains(&t)
    })
}

/// A NumericDate as whole seconds; fractions are truncated.
fn seconds(n: &serde_json::Number) -> Result<i64, TokenError> {
    n.as_i64()
        .or_else(|| n.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f as i64))
        .ok_or(TokenError::Malformed)
}

/// The claim checks of RFC 9068 §4 after the signature is verified: a pure function of the
/// claims, the issuer's policy and the time.
fn check_claims(claims: Claims, issuer: &Issuer, now: i64) -> Result<ValidatedToken, TokenError> {
    if claims.iss.as_deref() != Some(issuer.issuer.as_str()) {
        return Err(TokenError::UnknownIssuer);
    }
    let audience_ok = match &claims.aud {
        Some(Audience::One(a)) => issuer.audiences.contains(a),
        Some(Audience::Many(list)) => list.iter().any(|a| issuer.audiences.contains(a)),
        None => false,
    };
    if !audience_ok {
        return Err(TokenError::WrongAudience);
    }
    for claim in &issuer.required_claims {
        let present = match claim.as_str() {
            "sub" => claims.sub.is_some(),
            "client_id" => claims.client_id.is_some(),
            "iat" => claims.iat.is_some(),
            "jti" => claims.jti.is_some(),
            _ => true,
        };
        if !present {
            return Err(TokenError::MissingClaim(claim.clone()));
        }
    }
    let leeway = secs(issuer.leeway);
    let max_future = secs(issuer.max_future);
    let exp = seconds(claims.exp.as_ref().ok_or(TokenError::MissingExpiry)?)?;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = &claims.nbf {
        if seconds(nbf)? > now.saturating_add(max_future) {
            return Err(TokenError::NotYetValid);
        }
    }
    if let Some(iat) = &claims.iat {
        if seconds(iat)? > now.saturating_add(max_future) {
            return Err(TokenError::IssuedInFuture);
        }
    }
    let cnf = confirmation(claims.cnf.as_ref())?;
    let scopes = match (claims.scope, claims.scp) {
        (Some(scope), _) => scope.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        (None, Some(Scp::List(list))) => list,
        (None, Some(Scp::Text(text))) => text.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        (None, None) => Vec::new(),
    };
    Ok(ValidatedToken {
        issuer: issuer.issuer.clone(),
        subject: claims.sub,
        client_id: claims.client_id,
        scopes,
        jti: claims.jti,
        expires_at: exp.saturating_add(leeway),
        cnf,
    })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Reads `cnf`. A malformed `x5t#S256` is an error, not "unbound": a token that tries to be
/// bound must never pass as a bearer token.
fn confirmation(cnf: Option<&serde_json::Value>) -> Result<Confirmation, TokenError> {
    let cnf = match cnf {
        None => return Ok(Confirmation::default()),
        Some(serde_json::Value::Object(map)) if !map.is_empty() => map,
        Some(_) => return Err(TokenError::BadConfirmation),
    };
    let mut out = Confirmation::default();
    for (name, value) in cnf {
        match name.as_str() {
            "x5t#S256" => {
                let text = value.as_str().ok_or(TokenError::BadConfirmation)?;
                let bytes = jose::b64url_decode(text).map_err(|_| TokenError::BadConfirmation)?;
                out.x5t_s256 = Some(bytes.try_into().map_err(|_| TokenError::BadConfirmation)?);
            }
            "jkt" => {
                let text = value.as_str().ok_or(TokenError::BadConfirmation)?;
                let bytes = jose::b64url_decode(text).map_err(|_| TokenError::BadConfirmation)?;
                out.jkt = Some(bytes.try_into().map_err(|_| TokenError::BadConfirmation)?);
            }
            _ => out.unknown_method = true,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
