//! Public JWK parsing (RFC 7517/7518/8037) into prepared aws-lc-rs verifying keys.
//!
//! A [`PublicKey`] is built once (per JWKS fetch, or per DPoP proof) and then
//! verifies without re-parsing key material: every aws-lc-rs key is an
//! [`aws_lc_rs::signature::ParsedPublicKey`]. Parsing is strict: private members,
//! symmetric keys, unknown curves, wrong coordinate lengths and RSA moduli
//! outside 2048..=8192 bits are rejected. The RFC 7638 thumbprint is computed
//! at parse time from the members' original strings.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use serde_json::{Map, Value};

use super::jws::{Alg, JwsError};
use super::{b64url_decode, b64url_encode, sha256};

/// JWK members that only private (or symmetric) keys carry.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;
/// Longest attacker-supplied `kty`/`crv` echoed back in an error.
const MAX_ECHOED_LEN: usize = 32;

/// Why a JWK was not accepted as a public verification key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// The JWK carries private or symmetric key material (`d`, `p`, `q`, `dp`,
    /// `dq`, `qi`, `oth` or `k`).
    #[error("JWK contains private key material")]
    PrivateKey,
    /// `kty` is not `RSA`, `EC` or `OKP` (`oct` included). Carries the value, truncated.
    #[error("unsupported JWK key type {0:?}")]
    UnsupportedKeyType(String),
    /// `crv` is not `P-256`/`P-384` (EC) or `Ed25519` (OKP). Carries the value, truncated.
    #[error("unsupported JWK curve {0:?}")]
    UnsupportedCurve(String),
    /// A required member is absent.
    #[error("JWK member {0:?} is missing")]
    MissingMember(&'static str),
    /// A member is not a string, not base64url, or has the wrong length/value.
    #[error("JWK member {0:?} is invalid")]
    InvalidMember(&'static str),
    /// The RSA modulus size (in bits) is outside 2048..=8192.
    #[error("RSA modulus of {0} bits is outside 2048..=8192")]
    RsaKeySize(usize),
    /// aws-lc-rs rejected the key (e.g. an EC point not on the curve).
    #[error("JWK is not a valid public key")]
    InvalidKey,
}

/// A parsed public JWK, ready to verify; cheap to clone (shared inner state).
#[derive(Clone)]
pub struct PublicKey {
    inner: Arc<Inner>,
}

struct Inner {
    material: Material,
    kid: Option<String>,
    key_use: Option<String>,
    alg: Option<String>,
    thumbprint: [u8; 32],
}

enum Material {
    P256(ParsedPublicKey),
    P384(ParsedPublicKey),
    /// One prepared key per RSA algorithm: aws-lc-rs binds the padding/digest
    /// to the `ParsedPublicKey`, so all four are built up front.
    Rsa {
        ps256: ParsedPublicKey,
        ps384: ParsedPublicKey,
        ps512: ParsedPublicKey,
        rs256: ParsedPublicKey,
    },
    Ed25519(ParsedPublicKey),
}

impl PublicKey {
    /// Parses a public JWK object.
    ///
    /// Rejects private members (d, p, q, dp, dq, qi, oth, k) with
    /// [`JwkError::PrivateKey`], kty `oct` (and anything but RSA/EC/OKP) with
    /// [`JwkError::UnsupportedKeyType`], wrong coordinate lengths, RSA moduli
    /// outside 2048..=8192 bits, and unknown curves. Supported: RSA, EC P-256,
    /// EC P-384, OKP Ed25519. `kid`, `use` and `alg`, when present, must be strings.
    pub fn from_jwk(jwk: &Map<String, Value>) -> Result<Self, JwkError> {
        if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
            return Err(JwkError::PrivateKey);
        }
        let kid = opt_str(jwk, "kid")?.map(str::to_owned);
        let key_use = opt_str(jwk, "use")?.map(str::to_owned);
        let alg = opt_str(jwk, "alg")?.map(str::to_owned);

        let (material, canonical) = match req_str(jwk, "kty")? {
            "EC" => parse_ec(jwk)?,
            "RSA" => parse_rsa(jwk)?,
            "OKP" => parse_okp(jwk)?,
            other => return Err(JwkError::UnsupportedKeyType(truncate(other))),
        };
        Ok(PublicKey {
            inner: Arc::new(Inner { material, kid, key_use, alg, thumbprint: sha256(canonical.as_bytes()) }),
        })
    }

    /// The JWK `kid`, if present.
    pub fn kid(&self) -> Option<&str> {
        self.inner.kid.as_deref()
    }

    /// The JWK `use`, if present.
    pub fn key_use(&self) -> Option<&str> {
        self.inner.key_use.as_deref()
    }

    /// The JWK `alg`, if present, as given (not enforced by [`Self::verify`]).
    pub fn alg(&self) -> Option<&str> {
        self.inner.alg.as_deref()
    }

    /// The key type: `"EC"`, `"RSA"` or `"OKP"`.
    pub fn kty(&self) -> &'static str {
        match self.inner.material {
            Material::P256(_) | Material::P384(_) => "EC",
            Material::Rsa { .. } => "RSA",
            Material::Ed25519(_) => "OKP",
        }
    }

    /// The curve, for EC and OKP keys.
    pub fn crv(&self) -> Option<&'static str> {
        match self.inner.material {
            Material::P256(_) => Some("P-256"),
            Material::P384(_) => Some("P-384"),
            Material::Rsa { .. } => None,
            Material::Ed25519(_) => Some("Ed25519"),
        }
    }

    /// RFC 7638 SHA-256 thumbprint over the required members only.
    pub fn thumbprint(&self) -> &[u8; 32] {
        &self.inner.thumbprint
    }

    /// The thumbprint in unpadded base64url (the DPoP `jkt` form).
    pub fn thumbprint_b64(&self) -> String {
        b64url_encode(&self.inner.thumbprint)
    }

    /// Whether the key type/curve fits `alg`: ES256↔EC P-256, ES384↔EC P-384,
    /// PS256/PS384/PS512/RS256↔RSA, EdDSA↔OKP Ed25519.
    pub fn fits(&self, alg: Alg) -> bool {
        self.prepared(alg).is_some()
    }

    /// [`Self::fits`], and additionally the JWK's own `alg` (if any) equals `alg`.
    pub fn allows(&self, alg: Alg) -> bool {
        self.fits(alg) && self.alg().is_none_or(|a| a == alg.name())
    }

    /// Verifies `signature` over `message` for `alg`.
    ///
    /// [`JwsError::KeyAlgMismatch`] if the key does not [`fit`](Self::fits)
    /// `alg`; [`JwsError::BadSignature`] otherwise on any failure.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> Result<(), JwsError> {
        let key = self.prepared(alg).ok_or(JwsError::KeyAlgMismatch)?;
        key.verify_sig(message, signature).map_err(|_| JwsError::BadSignature)
    }

    fn prepared(&self, alg: Alg) -> Option<&ParsedPublicKey> {
        match (&self.inner.material, alg) {
            (Material::P256(k), Alg::Es256)
            | (Material::P384(k), Alg::Es384)
            | (Material::Ed25519(k), Alg::EdDsa)
            | (Material::Rsa { ps256: k, .. }, Alg::Ps256)
            | (Material::Rsa { ps384: k, .. }, Alg::Ps384)
            | (Material::Rsa { ps512: k, .. }, Alg::Ps512)
            | (Material::Rsa { rs256: k, .. }, Alg::Rs256) => Some(k),
            _ => None,
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kty", &self.kty())
            .field("crv", &self.crv())
            .field("kid", &self.kid())
            .field("thumbprint", &self.thumbprint_b64())
            .finish()
    }
}

fn parse_ec(jwk: &Map<String, Value>) -> Result<(Material, String), JwkError> {
    let crv = req_str(jwk, "crv")?;
    let (len, alg): (usize, &'static sig::EcdsaVerificationAlgorithm) = match crv {
        "P-256" => (32, &sig::ECDSA_P256_SHA256_FIXED),
        "P-384" => (48, &sig::ECDSA_P384_SHA384_FIXED),
        other => return Err(JwkError::UnsupportedCurve(truncate(other))),
    };
    let (x_s, x) = coordinate(jwk, "x", len)?;
    let (y_s, y) = coordinate(jwk, "y", len)?;
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let key = ParsedPublicKey::new(alg, &point).map_err(|_| JwkError::InvalidKey)?;
    let material = if len == 32 { Material::P256(key) } else { Material::P384(key) };
    // crv is one of two fixed names; x/y are validated base64url: no escaping needed.
    let canonical = format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x_s}","y":"{y_s}"}}"#);
    Ok((material, canonical))
}

fn parse_rsa(jwk: &Map<String, Value>) -> Result<(Material, String), JwkError> {
    let n_s = req_str(jwk, "n")?;
    let e_s = req_str(jwk, "e")?;
    let n_raw = b64url_decode(n_s).map_err(|_| JwkError::InvalidMember("n"))?;
    let e_raw = b64url_decode(e_s).map_err(|_| JwkError::InvalidMember("e"))?;
    // Tolerate superfluous leading zero octets (value-preserving); the
    // thumbprint still uses the strings as given.
    let n = strip_leading_zeros(&n_raw);
    let e = strip_leading_zeros(&e_raw);

    let bits = match n.first() {
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(JwkError::RsaKeySize(bits));
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err(JwkError::InvalidMember("n"));
    }
    // Public exponent: odd, at least 3, at most 32 bits (aws-lc caps at 33).
    let e_odd = e.last().is_some_and(|b| b & 1 == 1);
    if e.is_empty() || e.len() > 4 || !e_odd || e == [1] {
        return Err(JwkError::InvalidMember("e"));
    }

    let components = RsaPublicKeyComponents { n, e };
    let prep =
        |params: &'static sig::RsaParameters| components.to_parsed_public_key(params).map_err(|_| JwkError::InvalidKey);
    let material = Material::Rsa {
        ps256: prep(&sig::RSA_PSS_2048_8192_SHA256)?,
        ps384: prep(&sig::RSA_PSS_2048_8192_SHA384)?,
        ps512: prep(&sig::RSA_PSS_2048_8192_SHA512)?,
        rs256: prep(&sig::RSA_PKCS1_2048_8192_SHA256)?,
    };
    let canonical = format!(r#"{{"e":"{e_s}","kty":"RSA","n":"{n_s}"}}"#);
    Ok((material, canonical))
}

fn parse_okp(jwk: &Map<String, Value>) -> Result<(Material, String), JwkError> {
    match req_str(jwk, "crv")? {
        "Ed25519" => {}
        other => return Err(JwkError::UnsupportedCurve(truncate(other))),
    }
    let (x_s, x) = coordinate(jwk, "x", 32)?;
    let key = ParsedPublicKey::new(&sig::ED25519, &x).map_err(|_| JwkError::InvalidKey)?;
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x_s}"}}"#);
    Ok((Material::Ed25519(key), canonical))
}

/// A required base64url member of exactly `len` decoded bytes: (original string, bytes).
fn coordinate<'j>(jwk: &'j Map<String, Value>, name: &'static str, len: usize) -> Result<(&'j str, Vec<u8>), JwkError> {
    let s = req_str(jwk, name)?;
    let bytes = b64url_decode(s).map_err(|_| JwkError::InvalidMember(name))?;
    if bytes.len() != len {
        return Err(JwkError::InvalidMember(name));
    }
    Ok((s, bytes))
}

fn req_str<'j>(jwk: &'j Map<String, Value>, name: &'static str) -> Result<&'j str, JwkError> {
    opt_str(jwk, name)?.ok_or(JwkError::MissingMember(name))
}

fn opt_str<'j>(jwk: &'j Map<String, Value>, name: &'static str) -> Result<Option<&'j str>, JwkError> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwkError::InvalidMember(name)),
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_ECHOED_LEN).collect()
}
