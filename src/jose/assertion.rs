//! `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect Core §9): a JWT
//! signed with the client's key, `iss` = `sub` = the client id, `aud` = the authorization
//! server's issuer identifier **as a string** (FAPI 2.0 §5.3.3.1-5; the conformance suite
//! checks it), a fresh `jti`, and a lifetime of 60 s. Used by the login mode's calls to the
//! AS and by token introspection.

use serde_json::json;

use super::{SignError, SigningKey, b64url_encode, unix_now};

/// `client_assertion_type` for `private_key_jwt`.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const LIFETIME_SECS: i64 = 60;

/// Why an assertion could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("the system's random number generator failed")]
    Random,
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// A client assertion for `client_id` at the AS `issuer`, signed by `key` (named `kid` when
/// given). `typ` sets the JOSE header's `typ` (draft-ietf-oauth-rfc7523bis names
/// `client-authentication+jwt`); `None` leaves it out.
pub fn client_assertion(
    key: &SigningKey,
    kid: Option<&str>,
    client_id: &str,
    issuer: &str,
    typ: Option<&str>,
) -> Result<String, AssertionError> {
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| AssertionError::Random)?;
    let now = unix_now();
    let claims = json!({
        "iss": client_id, "sub": client_id, "aud": issuer,
        "jti": b64url_encode(&jti), "iat": now, "nbf": now, "exp": now + LIFETIME_SECS,
    });
    let mut header = json!({});
    if let Some(typ) = typ {
        header["typ"] = json!(typ);
    }
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    Ok(key.sign_compact(&header, &claims)?)
}
