//! DPoP proofs the gateway signs as a client (RFC 9449 §4.2): at the authorization server's
//! PAR and token endpoints, and towards upstreams on session routes. Each has a fresh `jti`.

use serde_json::json;

use super::pkce::{RandomError, random_token};
use crate::jose::{SignError, SigningKey, b64url_encode, sha256, unix_now};

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProofBuildError {
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// A proof by `key` for `method url`; `access_token` adds `ath` (resource requests),
/// `nonce` a server nonce (RFC 9449 §8, §9).
pub fn dpop_proof(
    key: &SigningKey,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    nonce: Option<&str>,
) -> Result<String, ProofBuildError> {
    let mut claims = json!({ "jti": random_token(16)?, "htm": method, "htu": url, "iat": unix_now() });
    if let Some(token) = access_token {
        claims["ath"] = json!(b64url_encode(&sha256(token.as_bytes())));
    }
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    Ok(key.sign_compact(&json!({ "typ": "dpop+jwt", "jwk": key.public_jwk() }), &claims)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::jose::{Alg, CompactJws, PublicKey};

    #[test]
    fn a_proof_names_its_request_and_verifies_with_its_own_jwk() {
        let key = SigningKey::generate(Alg::Es256).unwrap();
        let proof = dpop_proof(&key, "POST", "https://as.test/token", None, Some("n1")).unwrap();
        let jws = CompactJws::parse(&proof, 8192).unwrap();
        let jwk = jws.header()["jwk"].as_object().unwrap();
        assert_eq!(jws.verify_with(Alg::Es256, &PublicKey::from_jwk(jwk).unwrap()), Ok(()));
        let claims: serde_json::Value = serde_json::from_slice(jws.payload()).unwrap();
        assert_eq!((claims["htm"].as_str(), claims["htu"].as_str()), (Some("POST"), Some("https://as.test/token")));
        assert_eq!(claims["nonce"], "n1");
        assert!(claims.get("ath").is_none());
        let other = dpop_proof(&key, "GET", "https://api.test/x", Some("tok"), None).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(CompactJws::parse(&other, 8192).unwrap().payload()).unwrap();
        assert_eq!(claims["ath"], b64url_encode(&sha256(b"tok")));
        let first: serde_json::Value =
            serde_json::from_slice(CompactJws::parse(&proof, 8192).unwrap().payload()).unwrap();
        assert_ne!(first["jti"], claims["jti"], "a fresh jti each time");
    }
}
