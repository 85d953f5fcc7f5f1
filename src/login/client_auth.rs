//! The login mode's signed client messages: the `private_key_jwt` client assertion
//! ([`crate::jose::assertion`], shared with token introspection) and the signed request
//! object (JAR) inside the PAR.

use serde_json::json;

use super::proof::ProofBuildError;
use crate::jose::{SigningKey, unix_now};

pub use crate::jose::assertion::ASSERTION_TYPE;

/// [`crate::jose::assertion::client_assertion`], with the login mode's error type.
pub fn client_assertion(
    key: &SigningKey,
    kid: Option<&str>,
    client_id: &str,
    issuer: &str,
    typ: Option<&str>,
) -> Result<String, ProofBuildError> {
    crate::jose::assertion::client_assertion(key, kid, client_id, issuer, typ).map_err(|e| match e {
        crate::jose::assertion::AssertionError::Random => ProofBuildError::Random(super::pkce::RandomError),
        crate::jose::assertion::AssertionError::Sign(e) => ProofBuildError::Sign(e),
    })
}

/// A signed request object (RFC 9101 §4; FAPI 2.0 Message Signing §5.3.1): the
/// authorization parameters as claims, with `iss` = `client_id`, `aud` = the issuer (a
/// string), `exp` 5 minutes ahead (at most 60: FAPI 2.0), `nbf`, `iat` and a fresh `jti`;
/// header `typ: oauth-authz-req+jwt`.
pub fn request_object(
    key: &SigningKey,
    kid: Option<&str>,
    client_id: &str,
    issuer: &str,
    params: &[(&str, &str)],
) -> Result<String, ProofBuildError> {
    let now = unix_now();
    let mut claims = json!({
        "iss": client_id, "aud": issuer, "client_id": client_id,
        "jti": super::pkce::random_token(16)?, "iat": now, "nbf": now, "exp": now + 300,
    });
    for (name, value) in params {
        if *name == "resource" {
            // RFC 8707: several values are an array.
            match claims.get_mut("resource") {
                Some(serde_json::Value::Array(list)) => list.push(json!(value)),
                _ => claims["resource"] = json!([value]),
            }
        } else {
            claims[*name] = json!(value);
        }
    }
    let mut header = json!({ "typ": "oauth-authz-req+jwt" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    Ok(key.sign_compact(&header, &claims)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::jose::{Alg, CompactJws};

    #[test]
    fn the_audience_is_the_issuer_as_a_string() {
        let key = SigningKey::generate(Alg::Es256).unwrap();
        let jwt = client_assertion(&key, Some("k1"), "web-bff", "https://as.test", None).unwrap();
        let jws = CompactJws::parse(&jwt, 8192).unwrap();
        assert_eq!(jws.verify_with(Alg::Es256, key.public_key()), Ok(()));
        assert_eq!((jws.header_str("typ"), jws.header_str("kid")), (None, Some("k1")));
        let claims: serde_json::Value = serde_json::from_slice(jws.payload()).unwrap();
        assert_eq!(claims["aud"], json!("https://as.test"), "a string, not an array");
        assert_eq!((claims["iss"].as_str(), claims["sub"].as_str()), (Some("web-bff"), Some("web-bff")));
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 60);
        let typed = client_assertion(&key, None, "c", "https://as.test", Some("client-authentication+jwt")).unwrap();
        assert_eq!(CompactJws::parse(&typed, 8192).unwrap().header_str("typ"), Some("client-authentication+jwt"));
    }
}
