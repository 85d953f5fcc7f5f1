//! Access-token validation — JWTs (RFC 9068 §4, FAPI 2.0 §5.3.4 and §5.4) and opaque
//! tokens by introspection (RFC 7662) — the types a validation gives and its errors. The
//! work is split by job:
//!
//! - [`validator`]: [`TokenValidator`] — the checks in order and the cache of results;
//! - [`claims`]: the claim checks after the signature, as pure functions of the claims,
//!   the issuer's policy and the time;
//! - [`introspection`]: [`introspection::Introspector`], the issuer's answer about a token
//!   that is not a JWT, held to the same claim checks;
//! - [`memo`]: [`TokenMemo`], one connection's memory of its last validated token.
//!
//! Order of checks for a token not yet in the cache: size cap, compact-JWS syntax, `alg`
//! (`none`/HMAC are unrepresentable; `crit` refused), `typ`, the issuer (untrusted `iss`
//! selects which issuer's policy and keys apply), the issuer's algorithm allow-list, the key
//! (by `kid`, type matched to `alg`), the signature — and only then the claims: `iss` exact,
//! `aud`, `exp` with leeway, `nbf`/`iat` not too far ahead, `cnf`. A validated token is
//! cached under its SHA-256 until its `exp` (or the configured maximum), so its signature is
//! checked once; a hit costs one hash and one look-up.

pub mod claims;
pub mod introspection;
pub mod memo;
pub mod validator;

use std::sync::Arc;

use crate::principal::Identity;
pub use memo::TokenMemo;
pub use validator::TokenValidator;

/// Access tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 12 * 1024;

/// A token whose signature and claims were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedToken {
    /// Issuer, subject, client, scopes, `jti`: what the principal carries on (shared, so
    /// that admitting a cached token copies nothing).
    pub identity: Arc<Identity>,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
    pub cnf: Confirmation,
}

impl ValidatedToken {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.identity.has_scope(scope)
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
/// [`TokenError::KeysUnavailable`] and [`TokenError::IntrospectionUnavailable`], which are
/// the gateway's problem, not the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token is too large")]
    TooLarge,
    #[error("the access token is not a well-formed JWT")]
    Malformed,
    /// `alg` as the token names it (shortened, printable); `allowed`: the issuer's
    /// `algorithms`, when the issuer is known at that point.
    #[error("{}", alg_not_allowed(.alg, .allowed.as_deref()))]
    AlgorithmNotAllowed { alg: Box<str>, allowed: Option<Box<str>> },
    #[error("the access token has a critical header the gateway does not understand")]
    CriticalHeader,
    /// The `typ` the token carries (shortened, printable; `None`: none) and the issuer's
    /// accepted values.
    #[error("{}", wrong_type(.seen.as_deref(), .accepted))]
    WrongType { seen: Option<Box<str>>, accepted: Box<str> },
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
    /// The introspection answer's `token_type` is no access token's (shortened, printable).
    #[error("the introspected token is not an access token (token_type `{0}`)")]
    NotAccessToken(Box<str>),
    /// The issuer's introspection endpoint says the (opaque) token is not active.
    #[error("the access token is not active (revoked, expired or unknown to its issuer)")]
    Inactive,
    /// The introspection endpoint gave no usable answer; the token might be fine.
    #[error("the token issuer's introspection endpoint cannot be reached")]
    IntrospectionUnavailable,
}

fn alg_not_allowed(alg: &str, allowed: Option<&str>) -> String {
    match allowed {
        Some(allowed) => {
            format!("the access token's algorithm `{alg}` is not accepted (this issuer's `algorithms` are {allowed})")
        }
        None => {
            format!("the access token's algorithm `{alg}` is not accepted (none, HMAC and unknown names never are)")
        }
    }
}

fn wrong_type(seen: Option<&str>, accepted: &str) -> String {
    match seen {
        Some(seen) => {
            format!("the access token's typ `{seen}` is not accepted (this issuer's `typ` values are {accepted})")
        }
        None => format!("the access token has no typ header (this issuer's `typ` values are {accepted})"),
    }
}

/// A value taken from a token or proof, as an error message may show it: at most 64
/// characters; anything but printable ASCII becomes `?`.
pub fn shown(value: &str) -> Box<str> {
    let mut out: String =
        value.chars().take(64).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    if value.chars().count() > 64 {
        out.push_str("...");
    }
    out.into_boxed_str()
}

impl TokenError {
    /// Stable reason code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "token_too_large",
            TokenError::Malformed => "token_malformed",
            TokenError::AlgorithmNotAllowed { .. } => "token_alg_not_allowed",
            TokenError::CriticalHeader => "token_crit_header",
            TokenError::WrongType { .. } => "token_wrong_typ",
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
            TokenError::NotAccessToken(_) => "token_not_access_token",
            TokenError::Inactive => "token_inactive",
            TokenError::IntrospectionUnavailable => "introspection_unavailable",
        }
    }
}

#[cfg(test)]
mod tests;
