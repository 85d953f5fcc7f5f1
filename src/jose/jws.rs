//! Compact JWS (RFC 7515 §7.1) parsing and the closed set of accepted algorithms.
//!
//! [`CompactJws::parse`] only splits and decodes; nothing is trusted until
//! [`CompactJws::verify_with`] succeeds. [`Alg`] lists the asymmetric algorithms
//! FAPI 2.0 deployments use; `none` and the HMAC family have no variant, so no
//! code path can select them.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::jwk::PublicKey;
use super::{b64url_decode, strict_json_object};

/// Longest attacker-supplied algorithm name echoed back in an error.
const MAX_ECHOED_ALG_LEN: usize = 32;

/// A JWS signature algorithm this gateway is willing to verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA on P-256 with SHA-256, 64-byte `r || s` signature.
    Es256,
    /// ECDSA on P-384 with SHA-384, 96-byte `r || s` signature.
    Es384,
    /// RSASSA-PSS with SHA-256 (MGF1 SHA-256, 32-byte salt).
    Ps256,
    /// RSASSA-PSS with SHA-384 (MGF1 SHA-384, 48-byte salt).
    Ps384,
    /// RSASSA-PSS with SHA-512 (MGF1 SHA-512, 64-byte salt).
    Ps512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (not FAPI 2.0 compliant; policy decides).
    Rs256,
    /// EdDSA, restricted to Ed25519 keys.
    EdDsa,
}

impl Alg {
    /// Every supported algorithm.
    pub const ALL: [Alg; 7] = [Alg::Es256, Alg::Es384, Alg::Ps256, Alg::Ps384, Alg::Ps512, Alg::Rs256, Alg::EdDsa];

    /// Maps an exact, case-sensitive JOSE `alg` name to an [`Alg`].
    ///
    /// `"none"`, `"HS256"` and every name not listed on [`Alg`] give `None`.
    pub fn from_name(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::Es256),
            "ES384" => Some(Alg::Es384),
            "PS256" => Some(Alg::Ps256),
            "PS384" => Some(Alg::Ps384),
            "PS512" => Some(Alg::Ps512),
            "RS256" => Some(Alg::Rs256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }

    /// The JOSE name of the algorithm (e.g. `"ES256"`, `"EdDSA"`).
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Rs256 => "RS256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

impl FromStr for Alg {
    type Err = JwsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Alg::from_name(s).ok_or_else(|| JwsError::UnsupportedAlg(truncate(s)))
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a compact JWS was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// The token is longer than the caller's limit; nothing was decoded.
    #[error("JWS exceeds the maximum accepted length")]
    TooLarge,
    /// Structural problem: part count, empty part, base64url, or header JSON.
    #[error("malformed JWS: {0}")]
    Malformed(&'static str),
    /// The protected header has no `alg` member.
    #[error("JWS header has no \"alg\"")]
    MissingAlg,
    /// `alg` names an algorithm that is not an [`Alg`] (`none`, `HS*`, unknown).
    /// Carries the name, truncated to 32 characters.
    #[error("unsupported JWS algorithm {0:?}")]
    UnsupportedAlg(String),
    /// The header has a `crit` member. No extension is understood here, so
    /// RFC 7515 §4.1.11 requires rejecting the JWS.
    #[error("JWS header declares critical extensions (\"crit\"), none are supported")]
    CriticalHeader,
    /// The key's type or curve does not fit the algorithm (e.g. an RSA key for ES256).
    #[error("key type does not fit the JWS algorithm")]
    KeyAlgMismatch,
    /// The signature does not verify (includes signatures of the wrong length).
    #[error("JWS signature verification failed")]
    BadSignature,
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_ECHOED_ALG_LEN).collect()
}

/// A compact JWS split and decoded, nothing verified yet.
#[derive(Clone)]
pub struct CompactJws<'a> {
    signing_input: &'a str,
    header: Map<String, Value>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl<'a> CompactJws<'a> {
    /// Splits and decodes a compact JWS.
    ///
    /// Caps `token.len()` at `max_len` BEFORE any decoding; requires exactly
    /// three dot-separated, non-empty parts in unpadded base64url; the header
    /// must be a JSON object without duplicate members and without `crit`.
    pub fn parse(token: &'a str, max_len: usize) -> Result<Self, JwsError> {
        if token.len() > max_len {
            return Err(JwsError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwsError::Malformed("expected three dot-separated parts"));
        };
        if h.is_empty() || p.is_empty() || s.is_empty() {
            return Err(JwsError::Malformed("empty part"));
        }
        let signing_input = token.get(..h.len() + 1 + p.len()).ok_or(JwsError::Malformed("signing input"))?;

        let header_bytes = b64url_decode(h).map_err(|_| JwsError::Malformed("header is not base64url"))?;
        let header =
            strict_json_object(&header_bytes).map_err(|_| JwsError::Malformed("header is not a JSON object"))?;
        if header.contains_key("crit") {
            return Err(JwsError::CriticalHeader);
        }
        let payload = b64url_decode(p).map_err(|_| JwsError::Malformed("payload is not base64url"))?;
        let signature = b64url_decode(s).map_err(|_| JwsError::Malformed("signature is not base64url"))?;

        Ok(CompactJws { signing_input, header, payload, signature })
    }

    /// The decoded protected header.
    pub fn header(&self) -> &Map<String, Value> {
        &self.header
    }

    /// A header member, if present and a JSON string.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// The header's `alg`, restricted to [`Alg`].
    ///
    /// Missing → [`JwsError::MissingAlg`]; `none`, `HS*` or unknown →
    /// [`JwsError::UnsupportedAlg`]; not a string → [`JwsError::Malformed`].
    pub fn alg(&self) -> Result<Alg, JwsError> {
        match self.header.get("alg") {
            None => Err(JwsError::MissingAlg),
            Some(Value::String(s)) => s.parse(),
            Some(_) => Err(JwsError::Malformed("\"alg\" is not a string")),
        }
    }

    /// The decoded payload (unverified until [`Self::verify_with`] succeeds).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// `BASE64URL(header) || '.' || BASE64URL(payload)`, exactly as received.
    pub fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    /// The decoded signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Verifies the signature with `key` for `alg`; fails with
    /// [`JwsError::KeyAlgMismatch`] when the key type/curve does not fit the alg.
    ///
    /// `alg` is the caller's decision (normally [`Self::alg`] checked against an
    /// allow-list); it is not re-read from the header here.
    pub fn verify_with(&self, alg: Alg, key: &PublicKey) -> Result<(), JwsError> {
        key.verify(alg, self.signing_input(), &self.signature)
    }
}

impl fmt::Debug for CompactJws<'_> {
    /// Prints the header and sizes only; claims stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompactJws")
            .field("header", &self.header)
            .field("payload_len", &self.payload.len())
            .field("signature_len", &self.signature.len())
            .finish()
    }
}
