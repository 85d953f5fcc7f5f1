//! DPoP proof checking at a resource server (RFC 9449 §4.3, §7).
//!
//! [`verify_proof`] is a pure function of the proof, the request, the token's binding, the
//! settings and the time; it runs the checks of §4.3 in a fixed order — size cap, JWS
//! syntax, `typ`, `alg`, `jwk` (public, of the type the `alg` needs), the signature — and
//! only then trusts the claims: `jti`, `htm`, `htu`, `iat`, `ath`, and finally the key
//! binding (`jkt` = `cnf.jkt`). Nonces ([`nonce`]) and replay ([`replay`]) are checked by
//! the caller after the proof passes, so a rejected proof never consumes replay memory.

pub mod nonce;
pub mod replay;
pub mod replay_redis;

use crate::config::DpopSettings;
use crate::jose::{self, Alg, JwsError, PublicKey};

/// Proofs longer than this are refused before any decoding.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// `jti` values longer than this are refused (RFC 9449 §11.1: no unnecessarily large `jti`).
pub const MAX_JTI_BYTES: usize = 256;

/// The request a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    pub method: &'a str,
    /// The normalised URL the client called (see [`crate::uri::request_url`]).
    pub url: &'a str,
    /// SHA-256 of the access token (what `ath` must encode).
    pub token_hash: &'a [u8; 32],
    /// The token's `cnf.jkt`, decoded.
    pub bound_jkt: &'a [u8; 32],
    /// Unix seconds.
    pub now: i64,
}

/// A proof that passed every check of [`verify_proof`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint of the proof key (equal to the token's `cnf.jkt`).
    pub jkt: [u8; 32],
    pub jti: String,
    pub nonce: Option<String>,
    /// The proof's `iat`, in seconds since the epoch.
    pub iat: i64,
}

/// Why a proof was refused, one variant per check, in the order they run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the DPoP proof is too large")]
    TooLarge,
    #[error("the DPoP proof is not a well-formed JWT")]
    Malformed,
    #[error("the DPoP proof's typ must be dpop+jwt")]
    WrongType,
    #[error("the DPoP proof's algorithm is not accepted")]
    AlgorithmNotAllowed,
    #[error("the DPoP proof has no usable public jwk")]
    BadKey,
    #[error("the DPoP proof's jwk contains a private key")]
    PrivateKey,
    #[error("the DPoP proof's jwk does not fit its algorithm")]
    KeyAlgorithmMismatch,
    #[error("the DPoP proof's signature is invalid")]
    BadSignature,
    #[error("the DPoP proof has no valid jti")]
    BadJti,
    #[error("the DPoP proof's htm does not match the request method")]
    HtmMismatch,
    /// `got`: the proof's `htu` as it came (shortened, printable; empty when absent);
    /// `expected`: the URL the gateway checks it against (the public URL plus the path).
    #[error("the DPoP proof's htu `{got}` does not match the request URL `{expected}`")]
    HtuMismatch { got: Box<str>, expected: Box<str> },
    #[error("the DPoP proof has no iat")]
    MissingIat,
    #[error("the DPoP proof is too old")]
    TooOld,
    #[error("the DPoP proof's iat is in the future")]
    IssuedInFuture,
    #[error("the DPoP proof's ath does not match the access token")]
    AthMismatch,
    #[error("the DPoP proof key does not match the key the access token is bound to")]
    KeyBindingMismatch,
}

impl ProofError {
    /// Stable reason code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ProofError::TooLarge => "dpop_too_large",
            ProofError::Malformed => "dpop_malformed",
            ProofError::WrongType => "dpop_wrong_typ",
            ProofError::AlgorithmNotAllowed => "dpop_alg_not_allowed",
            ProofError::BadKey => "dpop_bad_jwk",
            ProofError::PrivateKey => "dpop_private_jwk",
            ProofError::KeyAlgorithmMismatch => "dpop_jwk_alg_mismatch",
            ProofError::BadSignature => "dpop_bad_signature",
            ProofError::BadJti => "dpop_bad_jti",
            ProofError::HtmMismatch => "dpop_htm_mismatch",
            ProofError::HtuMismatch { .. } => "dpop_htu_mismatch",
            ProofError::MissingIat => "dpop_missing_iat",
            ProofError::TooOld => "dpop_too_old",
            ProofError::IssuedInFuture => "dpop_iat_in_future",
            ProofError::AthMismatch => "dpop_ath_mismatch",
            ProofError::KeyBindingMismatch => "dpop_jkt_mismatch",
        }
    }

    /// RFC 9449 §7.1 shows a key-binding mismatch as `invalid_token`; every other failure
    /// is about the proof itself (`invalid_dpop_proof`).
    pub fn is_token_error(&self) -> bool {
        matches!(self, ProofError::KeyBindingMismatch)
    }
}

/// The claims a proof must carry; others are ignored (RFC 9449 §4.2).
struct ProofClaims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<serde_json::Number>,
    ath: Option<String>,
    nonce: Option<String>,
}

impl ProofClaims {
    /// Reads the claims from the parsed payload; a claim of the wrong JSON type is malformed.
    fn from_object(mut object: serde_json::Map<String, serde_json::Value>) -> Result<Self, ProofError> {
        let mut text = |name: &str| match object.remove(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ProofError::Malformed),
        };
        let (jti, htm, htu, ath, nonce) = (text("jti")?, text("htm")?, text("htu")?, text("ath")?, text("nonce")?);
        let iat = match object.remove("iat") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => Some(n),
            Some(_) => return Err(ProofError::Malformed),
        };
        Ok(ProofClaims { jti, htm, htu, iat, ath, nonce })
    }
}

/// Checked proof headers, keyed by the SHA-256 of the encoded JOSE header. A client sends
/// the same header (same `typ`, `alg`, `jwk`) with every proof, so after its first request
/// the header is neither decoded nor checked again, and its key not re-imported — for RSA
/// that import costs as much as the signature check. Only headers that passed every header
/// check are cached (the checks depend on nothing but the header and the settings, which
/// are fixed for the cache's lifetime). Bounded; a miss only costs a parse.
pub struct ProofKeyCache {
    headers: moka::sync::Cache<[u8; 32], (Alg, PublicKey)>,
}

impl ProofKeyCache {
    pub fn new(max_entries: u64) -> Self {
        let headers = moka::sync::Cache::builder()
            .max_capacity(max_entries)
            .time_to_idle(std::time::Duration::from_secs(600))
            .build();
        ProofKeyCache { headers }
    }

    /// The algorithm and key of a proof header that passes the `typ`, `alg` and `jwk` checks.
    fn header(&self, segment: &str, settings: &DpopSettings) -> Result<(Alg, PublicKey), ProofError> {
        let id = jose::sha256(segment.as_bytes());
        if let Some(hit) = self.headers.get(&id) {
            // Re-checked on every hit, so the cache can never outlive a narrower allow-list.
            if !settings.algorithms.contains(&hit.0) {
                return Err(ProofError::AlgorithmNotAllowed);
            }
            return Ok(hit);
        }
        let checked = check_header(segment, settings)?;
        self.headers.insert(id, checked.clone());
        Ok(checked)
    }
}

/// The header checks of RFC 9449 §4.3, in order: JSON object, `typ`, `alg`, `jwk` (public,
/// of the type the algorithm needs).
fn check_header(segment: &str, settings: &DpopSettings) -> Result<(Alg, PublicKey), ProofError> {
    let bytes = jose::b64url_decode(segment).map_err(|_| ProofError::Malformed)?;
    let header = jose::strict_json_object(&bytes).map_err(|_| ProofError::Malformed)?;
    let typ = header.get("typ").and_then(|t| t.as_str()).map(crate::config::normalise_typ);
    if typ.as_deref() != Some("dpop+jwt") {
        return Err(ProofError::WrongType);
    }
    if header.contains_key("crit") {
        // No extension is understood, so a critical one can never be honoured (RFC 7515 §4.1.11).
        return Err(ProofError::Malformed);
    }
    let alg = header.get("alg").and_then(|a| a.as_str()).ok_or(ProofError::Malformed)?;
    let alg = Alg::from_name(alg).filter(|a| settings.algorithms.contains(a)).ok_or(ProofError::AlgorithmNotAllowed)?;
    let jwk = header.get("jwk").and_then(|v| v.as_object()).ok_or(ProofError::BadKey)?;
    let key = PublicKey::from_jwk(jwk).map_err(|e| match e {
        jose::JwkError::PrivateKey => ProofError::PrivateKey,
        _ => ProofError::BadKey,
    })?;
    if !key.fits(alg) {
        return Err(ProofError::KeyAlgorithmMismatch);
    }
    Ok((alg, key))
}

/// Checks `proof` against the request it came with (RFC 9449 §4.3 and §7.1). `keys` caches
/// checked headers; it never changes the outcome, only the cost.
pub fn verify_proof(
    proof: &str,
    request: &ProofRequest<'_>,
    settings: &DpopSettings,
    keys: &ProofKeyCache,
) -> Result<VerifiedProof, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::TooLarge);
    }
    let mut parts = proof.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Malformed);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(ProofError::Malformed);
    }
    let (alg, key) = keys.header(header, settings)?;
    let signature = jose::b64url_decode(signature).map_err(|_| ProofError::Malformed)?;
    let signing_input = &proof.as_bytes()[..header.len() + 1 + payload.len()];
    key.verify(alg, signing_input, &signature).map_err(|e| match e {
        JwsError::KeyAlgMismatch => ProofError::KeyAlgorithmMismatch,
        _ => ProofError::BadSignature,
    })?;
    let payload = jose::b64url_decode(payload).map_err(|_| ProofError::Malformed)?;

    // The signature holds: the claims are the key holder's.
    let object = jose::strict_json_object(&payload).map_err(|_| ProofError::Malformed)?;
    let claims = ProofClaims::from_object(object)?;
    let jti = claims.jti.filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES).ok_or(ProofError::BadJti)?;
    if claims.htm.as_deref() != Some(request.method) {
        return Err(ProofError::HtmMismatch);
    }
    let htu = claims.htu.as_deref().unwrap_or_default();
    if crate::uri::normalise(htu).ok().as_deref() != Some(request.url) {
        return Err(ProofError::HtuMismatch { got: crate::auth::token::shown(htu), expected: request.url.into() });
    }
    let iat = claims.iat.as_ref().ok_or(ProofError::MissingIat)?;
    let iat = jose::numeric_date(iat).ok_or(ProofError::Malformed)?;
    let max_age = i64::try_from(settings.max_age.as_secs()).unwrap_or(i64::MAX);
    let max_future = i64::try_from(settings.max_future.as_secs()).unwrap_or(i64::MAX);
    if iat < request.now.saturating_sub(max_age) {
        return Err(ProofError::TooOld);
    }
    if iat > request.now.saturating_add(max_future) {
        return Err(ProofError::IssuedInFuture);
    }
    let ath = claims.ath.as_deref().and_then(|a| jose::b64url_decode(a).ok()).ok_or(ProofError::AthMismatch)?;
    if !jose::constant_time_eq(&ath, request.token_hash) {
        return Err(ProofError::AthMismatch);
    }
    if !jose::constant_time_eq(key.thumbprint(), request.bound_jkt) {
        return Err(ProofError::KeyBindingMismatch);
    }
    Ok(VerifiedProof { jkt: *key.thumbprint(), jti, nonce: claims.nonce, iat })
}

#[cfg(test)]
mod tests;
