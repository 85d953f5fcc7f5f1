//! JWT minting: signing keys (ES256, ES384, PS256, EdDSA) built on aws-lc-rs, their
//! public JWKs and RFC 7638 thumbprints, and a valid RFC 9068 claim set.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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

enum Key {
    /// Key pair, JWK `crv`.
    Ec(EcdsaKeyPair, &'static str),
    Rsa(RsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A JWS signing key with a `kid`.
pub struct Signer {
    kid: String,
    alg: &'static str,
    key: Key,
}

impl Signer {
    pub fn es256(kid: &str) -> Signer {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
        Signer::new(kid, "ES256", Key::Ec(key, "P-256"))
    }

    pub fn es384(kid: &str) -> Signer {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).expect("P-384 key");
        Signer::new(kid, "ES384", Key::Ec(key, "P-384"))
    }

    /// RSA 2048 with RSASSA-PSS / SHA-256.
    pub fn ps256(kid: &str) -> Signer {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        Signer::new(kid, "PS256", Key::Rsa(key))
    }

    /// Ed25519.
    pub fn eddsa(kid: &str) -> Signer {
        let key = Ed25519KeyPair::generate().expect("Ed25519 key");
        Signer::new(kid, "EdDSA", Key::Ed(key))
    }

    fn new(kid: &str, alg: &'static str, key: Key) -> Signer {
        Signer { kid: kid.to_owned(), alg, key }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// JWS `alg`: "ES256", "ES384", "PS256" or "EdDSA".
    pub fn alg(&self) -> &'static str {
        self.alg
    }

    /// The RFC 7638 required public members, as (name, value) pairs in lexicographic order.
    fn required_members(&self) -> Vec<(&'static str, String)> {
        match &self.key {
            Key::Ec(key, crv) => {
                // Uncompressed point: 0x04 || x || y.
                let point = key.public_key().as_ref();
                let coord = (point.len() - 1) / 2;
                vec![
                    ("crv", (*crv).to_owned()),
                    ("kty", "EC".to_owned()),
                    ("x", b64(&point[1..=coord])),
                    ("y", b64(&point[1 + coord..])),
                ]
            }
            Key::Rsa(key) => {
                let public = key.public_key();
                vec![
                    ("e", b64(public.exponent().big_endian_without_leading_zero())),
                    ("kty", "RSA".to_owned()),
                    ("n", b64(public.modulus().big_endian_without_leading_zero())),
                ]
            }
            Key::Ed(key) => {
                vec![("crv", "Ed25519".to_owned()), ("kty", "OKP".to_owned()), ("x", b64(key.public_key().as_ref()))]
            }
        }
    }

    /// The bare public JWK (only the RFC 7638 required members), e.g. for a DPoP `jwk`
    /// header.
    pub fn bare_public_jwk(&self) -> Value {
        let map: serde_json::Map<String, Value> =
            self.required_members().into_iter().map(|(k, v)| (k.to_owned(), Value::String(v))).collect();
        Value::Object(map)
    }

    /// The public JWK as published in a JWKS: key members plus `kid`, `alg`, `use`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = self.bare_public_jwk();
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(self.alg);
        jwk["use"] = json!("sig");
        jwk
    }

    /// RFC 7638 JWK SHA-256 thumbprint, base64url.
    pub fn jwk_thumbprint(&self) -> String {
        // Built by hand: member order must be lexicographic whatever serde_json's
        // `preserve_order` feature says.
        let members: Vec<String> =
            self.required_members().into_iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
        let canonical = format!("{{{}}}", members.join(","));
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// Raw JWS signature over `input` (for ECDSA the fixed-width `r || s` form).
    pub fn sign_bytes(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.key {
            Key::Ec(key, _) => key.sign(&rng, input).expect("ECDSA sign").as_ref().to_vec(),
            Key::Rsa(key) => {
                let mut sig = vec![0u8; key.public_modulus_len()];
                key.sign(&signature::RSA_PSS_SHA256, &rng, input, &mut sig).expect("RSA sign");
                sig
            }
            Key::Ed(key) => key.sign(input).as_ref().to_vec(),
        }
    }

    /// Compact JWS `b64(header).b64(claims).b64(sig)`, with `header` used exactly as
    /// given (so tests can forge `alg`, `kid`, `typ`, …).
    pub fn sign_compact(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(serde_json::to_vec(header).expect("header JSON")),
            b64(serde_json::to_vec(claims).expect("claims JSON"))
        );
        let sig = self.sign_bytes(input.as_bytes());
        format!("{input}.{}", b64(sig))
    }

    /// The default access-token header `{"alg", "typ": "at+jwt", "kid"}`.
    pub fn header(&self) -> Value {
        json!({"alg": self.alg, "typ": "at+jwt", "kid": self.kid})
    }

    /// An access token with the default header.
    pub fn jwt(&self, claims: &Value) -> String {
        self.sign_compact(&self.header(), claims)
    }

    /// An RFC 9449 DPoP proof for `htm`/`htu`, with `ath` when `access_token` is given.
    pub fn dpop_proof(&self, htm: &str, htu: &str, access_token: Option<&str>) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": self.alg, "jwk": self.bare_public_jwk()});
        let mut claims = json!({"jti": random_id(), "htm": htm, "htu": htu, "iat": now()});
        if let Some(token) = access_token {
            let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
            claims["ath"] = json!(b64(hash.as_ref()));
        }
        self.sign_compact(&header, &claims)
    }
}
