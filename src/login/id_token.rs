//! The ID token of a login (OpenID Connect Core §3.1.3.7): signed by the AS with an allowed
//! algorithm (`none` and HMAC cannot be represented), `iss` exact, `aud` holding the client
//! (with an `azp` equal to it when there are several audiences), not expired, and carrying
//! the transaction's `nonce`. Only its `sub` is kept.

use std::sync::Arc;

use serde_json::Value;

use crate::auth::jwks::{IssuerKeys, KeyError};
use crate::jose::{Alg, CompactJws, numeric_date, strict_json_object};

const LEEWAY_SECS: i64 = 5;

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is not a well-formed JWT")]
    Malformed,
    #[error("the ID token's algorithm is not accepted")]
    AlgorithmNotAllowed,
    #[error("the ID token names another issuer")]
    WrongIssuer,
    #[error("the authorization server's signing keys are unavailable")]
    KeysUnavailable,
    #[error("the ID token's signature is invalid")]
    BadSignature,
    #[error("the ID token is not addressed to this client (aud/azp)")]
    WrongAudience,
    #[error("the ID token has no exp or has expired")]
    Expired,
    #[error("the ID token's nonce is not this login's")]
    WrongNonce,
}

/// Verifies `id_token` and returns its `sub`.
pub async fn verify(
    id_token: &str,
    issuer: &str,
    client_id: &str,
    nonce: Option<&str>,
    algorithms: &[Alg],
    keys: &Arc<IssuerKeys>,
    now: i64,
) -> Result<Option<String>, IdTokenError> {
    let jws = CompactJws::parse(id_token, 16 * 1024).map_err(|_| IdTokenError::Malformed)?;
    let alg = jws.alg().map_err(|_| IdTokenError::AlgorithmNotAllowed)?;
    if !algorithms.contains(&alg) {
        return Err(IdTokenError::AlgorithmNotAllowed);
    }
    let claims = strict_json_object(jws.payload()).map_err(|_| IdTokenError::Malformed)?;
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(IdTokenError::WrongIssuer);
    }
    let kid = jws.header_str("kid");
    let set = keys.key_set(kid, alg).await.map_err(|e| match e {
        KeyError::Unavailable => IdTokenError::KeysUnavailable,
        KeyError::NoMatchingKey => IdTokenError::BadSignature,
    })?;
    if !set.candidates(kid, alg).any(|key| jws.verify_with(alg, key).is_ok()) {
        return Err(IdTokenError::BadSignature);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == client_id,
        Some(Value::Array(list)) => {
            list.iter().any(|a| a.as_str() == Some(client_id))
                && (list.len() == 1 || claims.get("azp").and_then(Value::as_str) == Some(client_id))
        }
        _ => false,
    };
    if !audience_ok {
        return Err(IdTokenError::WrongAudience);
    }
    let exp = claims.get("exp").and_then(Value::as_number).and_then(numeric_date).ok_or(IdTokenError::Expired)?;
    if exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(IdTokenError::Expired);
    }
    if let Some(nonce) = nonce
        && claims.get("nonce").and_then(Value::as_str) != Some(nonce)
    {
        return Err(IdTokenError::WrongNonce);
    }
    Ok(claims.get("sub").and_then(Value::as_str).map(str::to_string))
}
