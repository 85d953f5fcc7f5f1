//! JWT minting: test signers (ES256, ES384, PS256, EdDSA) over `jose::SigningKey`, their
//! public JWKs and RFC 7638 thumbprints, and a valid RFC 9068 claim set.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fapi_gateway::jose::{Alg, SigningKey};
use serde_json::{Value, json};

/// base64url without padding.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Current time in unix seconds.
pub fn now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(since.as_secs()).expect("time fits i64")
}

/// 16 random bytes, base64url.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    b64(bytes)
}

/// A valid RFC 9068 access-token claim set (expires in 300 s).
pub fn claims(issuer: &str, audience: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer,
        "aud": audience,
        "sub": "user-1",
        "client_id": "client-1",
        "iat": now,
        "exp": now + 300,
        "jti": random_id(),
        "scope": "accounts:read",
    })
}

/// A JWS signing key with a `kid`: a [`SigningKey`] plus the test conveniences (JWKS
/// entry, access-token and DPoP-proof shapes, headers signed exactly as given).
pub struct Signer {
    kid: String,
    key: SigningKey,
}

impl Signer {
    pub fn es256(kid: &str) -> Signer {
        Signer::new(kid, Alg::Es256)
    }

    pub fn es384(kid: &str) -> Signer {
        Signer::new(kid, Alg::Es384)
    }

    /// RSA 2048 with RSASSA-PSS / SHA-256.
    pub fn ps256(kid: &str) -> Signer {
        Signer::new(kid, Alg::Ps256)
    }

    /// Ed25519.
    pub fn eddsa(kid: &str) -> Signer {
        Signer::new(kid, Alg::EdDsa)
    }

    fn new(kid: &str, alg: Alg) -> Signer {
        let key = SigningKey::generate(alg).unwrap_or_else(|e| panic!("{alg} key: {e}"));
        Signer { kid: kid.to_owned(), key }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// JWS `alg`: "ES256", "ES384", "PS256" or "EdDSA".
    pub fn alg(&self) -> &'static str {
        self.key.alg().name()
    }

    /// The bare public JWK (only the RFC 7638 required members), e.g. for a DPoP `jwk`
    /// header.
    pub fn bare_public_jwk(&self) -> Value {
        self.key.public_jwk()
    }

    /// The public JWK as published in a JWKS: key members plus `kid`, `alg`, `use`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = self.bare_public_jwk();
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(self.alg());
        jwk["use"] = json!("sig");
        jwk
    }

    /// RFC 7638 JWK SHA-256 thumbprint, base64url (jose's; `harness_selfcheck` checks it
    /// against one computed by hand).
    pub fn jwk_thumbprint(&self) -> String {
        self.key.thumbprint_b64()
    }

    /// Raw JWS signature over `input` (for ECDSA the fixed-width `r || s` form).
    pub fn sign_bytes(&self, input: &[u8]) -> Vec<u8> {
        self.key.sign(input).expect("JWS signature")
    }

    /// Compact JWS `b64(header).b64(claims).b64(sig)`, with `header` used exactly as
    /// given (so tests can forge `alg`, `kid`, `typ`, …).
    pub fn sign_compact(&self, header: &Value, claims: &Value) -> String {
        let header = serde_json::to_vec(header).expect("header JSON");
        let claims = serde_json::to_vec(claims).expect("claims JSON");
        self.key.sign_compact_raw(&header, &claims).expect("compact JWS")
    }

    /// The default access-token header `{"alg", "typ": "at+jwt", "kid"}`.
    pub fn header(&self) -> Value {
        json!({"alg": self.alg(), "typ": "at+jwt", "kid": self.kid})
    }

    /// An access token with the default header.
    pub fn jwt(&self, claims: &Value) -> String {
        self.sign_compact(&self.header(), claims)
    }

    /// An RFC 9449 DPoP proof for `htm`/`htu`, with `ath` when `access_token` is given.
    pub fn dpop_proof(&self, htm: &str, htu: &str, access_token: Option<&str>) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.bare_public_jwk()});
        let mut claims = json!({"jti": random_id(), "htm": htm, "htu": htu, "iat": now()});
        if let Some(token) = access_token {
            let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            claims["ath"] = json!(b64(hash.as_ref()));
        }
        self.sign_compact(&header, &claims)
    }
}
