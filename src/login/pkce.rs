//! PKCE (RFC 7636) with S256 only (FAPI 2.0 §5.3.3.2-3), and the other random values of a
//! login: `state` and `nonce`, each 128 bits or more from the system's CSPRNG.

use crate::jose::{b64url_encode, sha256};

/// A fresh code verifier: 32 random bytes, base64url (43 characters, RFC 7636 §4.1's
/// recommendation), and its S256 challenge.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Result<Pkce, RandomError> {
        let verifier = random_token(32)?;
        let challenge = b64url_encode(&sha256(verifier.as_bytes()));
        Ok(Pkce { verifier, challenge })
    }
}

/// The system's random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system's random number generator failed")]
pub struct RandomError;

/// `bytes` random bytes as base64url without padding (`state`, `nonce`, `jti`).
pub fn random_token(bytes: usize) -> Result<String, RandomError> {
    let mut buffer = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buffer).map_err(|_| RandomError)?;
    Ok(b64url_encode(&buffer))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(b64url_encode(&sha256(verifier.as_bytes())), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn verifiers_are_fresh_and_well_formed() {
        let (a, b) = (Pkce::new().unwrap(), Pkce::new().unwrap());
        assert_ne!(a.verifier, b.verifier);
        assert_eq!(a.verifier.len(), 43);
        assert!(a.verifier.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(a.challenge, b64url_encode(&sha256(a.verifier.as_bytes())));
        assert_eq!(random_token(16).unwrap().len(), 22);
    }
}
