//! JWS signing keys: the one signing primitive of the crate, on aws-lc-rs.
//!
//! A [`SigningKey`] holds a private key for one [`Alg`] (every algorithm the verifier
//! accepts: ES256, ES384, PS256, PS384, PS512, RS256 and EdDSA/Ed25519), its public JWK and
//! that JWK's RFC 7638 thumbprint, and signs JWS signing inputs (ECDSA in the fixed-width
//! `r || s` form of RFC 7518 §3.4) and whole compact JWSs.
//!
//! What it is for: the keys the gateway's own side of the story signs with — the demo's
//! development authorization server (access tokens, its JWKS) and its demo clients' DPoP
//! keys, the tests and benchmarks that mint tokens and proofs, and the coming login mode's
//! `private_key_jwt` client assertions (RFC 7523, key from a PKCS#8 file such as
//! `secrets/web-bff.key`) and DPoP proofs (RFC 9449).
//!
//! What it is not: not a JWT library (no claims are added or checked: `iat`, `exp`, `jti`
//! and `kid` are the caller's), not a verifier (use [`CompactJws`](super::CompactJws) and
//! [`PublicKey`]), not a key store (no rotation, no HSM, no encrypted PKCS#8) and not for
//! symmetric keys (`HS*`, `none` have no [`Alg`]). Private key material never leaves a
//! [`SigningKey`] except through the explicit PKCS#8 exports, and `Debug` prints only the
//! algorithm and the thumbprint.
//!
//! The public half goes through the verifier's own JWK parser ([`PublicKey::from_jwk`])
//! when a key is built, so a key this module accepts is one the verifier accepts (an RSA
//! modulus outside 2048..=8192 bits is refused here too), and the thumbprint is the one the
//! verifier computes for a DPoP `jkt` or a token's `cnf`.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der};
use aws_lc_rs::error::KeyRejected;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self as sig, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _, RsaEncoding, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::{self, PemObject as _};
use serde_json::{Map, Value};

use super::b64url_encode;
use super::jwk::{JwkError, PublicKey};
use super::jws::Alg;

/// Why a signing key could not be made, loaded or exported, or a JWS not signed.
///
/// No variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// aws-lc-rs could not generate a key.
    #[error("cannot generate a {0} key")]
    Generate(Alg),
    /// The DER is not an unencrypted PKCS#8 private key of the kind `alg` needs (e.g. a
    /// P-256 key for ES384, an EC key for PS256, or no key at all).
    #[error("not a PKCS#8 private key for {alg}: {reason}")]
    KeyRejected {
        /// The algorithm the key was loaded for.
        alg: Alg,
        /// aws-lc-rs's reason (e.g. `"WrongAlgorithm"`, `"InvalidEncoding"`).
        reason: &'static str,
    },
    /// The PEM input holds no usable `PRIVATE KEY` (PKCS#8) section.
    #[error("no PKCS#8 private key in the PEM input: {0}")]
    Pem(&'static str),
    /// A key file could not be read or held no acceptable key.
    #[error("key file {}: {reason}", path.display())]
    KeyFile {
        /// The file named by the caller.
        path: PathBuf,
        /// The I/O error or the [`SignError`] of its contents, as text.
        reason: String,
    },
    /// The public half is not a key the verifier accepts (e.g. an RSA modulus outside
    /// 2048..=8192 bits).
    #[error("the key's public half is not acceptable to the verifier: {0}")]
    PublicKey(JwkError),
    /// [`SigningKey::sign_compact`] got a header that is not a JSON object.
    #[error("JWS header is not a JSON object")]
    HeaderNotObject,
    /// [`SigningKey::sign_compact`] got a header whose `alg` is not the key's algorithm
    /// (carried here).
    #[error("JWS header \"alg\" is not {0}, the signing key's algorithm")]
    HeaderAlg(Alg),
    /// aws-lc-rs failed to sign.
    #[error("JWS signing failed")]
    Signing,
    /// aws-lc-rs failed to serialise the key as PKCS#8.
    #[error("cannot export the key as PKCS#8")]
    Export,
}

/// A private key for one JWS algorithm, with its public JWK and RFC 7638 thumbprint.
///
/// `Send + Sync`; not `Clone` (load or generate another one instead).
pub struct SigningKey {
    alg: Alg,
    pair: Pair,
    /// The RFC 7638 required members only (no `kid`, `alg`, `use`).
    jwk: Map<String, Value>,
    /// `jwk` parsed by the verifier: its thumbprint and a verifying key.
    public: PublicKey,
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    /// The encoding (PSS or PKCS#1 v1.5, and the digest) follows from the [`Alg`].
    Rsa(RsaKeyPair, &'static dyn RsaEncoding),
    Ed25519(Ed25519KeyPair),
}

impl SigningKey {
    /// Generates a fresh key for `alg`: P-256 for ES256, P-384 for ES384, Ed25519 for
    /// EdDSA, and a 2048-bit RSA key (e = 65537) for PS256, PS384, PS512 and RS256.
    pub fn generate(alg: Alg) -> Result<Self, SignError> {
        let fail = |_| SignError::Generate(alg);
        let pair = match (ecdsa_alg(alg), rsa_encoding(alg)) {
            (Some(ec), _) => Pair::Ecdsa(EcdsaKeyPair::generate(ec).map_err(fail)?),
            (None, Some(encoding)) => Pair::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).map_err(fail)?, encoding),
            (None, None) => Pair::Ed25519(Ed25519KeyPair::generate().map_err(fail)?),
        };
        Self::new(alg, pair)
    }

    /// Loads an unencrypted PKCS#8 private key (DER) for `alg`.
    ///
    /// The algorithm is the caller's: a PKCS#8 RSA key does not say whether it signs PS256
    /// or RS256. A key of another kind than `alg` needs (another curve, RSA for ES256, …)
    /// gives [`SignError::KeyRejected`]. EC keys are PKCS#8 v1 (RFC 5208) as aws-lc, rcgen
    /// and `openssl genpkey` write them; Ed25519 keys may be v1 or v2 (RFC 5958).
    pub fn from_pkcs8_der(alg: Alg, der: &[u8]) -> Result<Self, SignError> {
        let rejected = |e: KeyRejected| SignError::KeyRejected { alg, reason: e.description_() };
        let pair = match (ecdsa_alg(alg), rsa_encoding(alg)) {
            (Some(ec), _) => Pair::Ecdsa(EcdsaKeyPair::from_pkcs8(ec, der).map_err(rejected)?),
            (None, Some(encoding)) => Pair::Rsa(RsaKeyPair::from_pkcs8(der).map_err(rejected)?, encoding),
            (None, None) => Pair::Ed25519(Ed25519KeyPair::from_pkcs8(der).map_err(rejected)?),
        };
        Self::new(alg, pair)
    }

    /// Loads the first `-----BEGIN PRIVATE KEY-----` (PKCS#8) section of `pem` for `alg`;
    /// other sections (certificates, …) are skipped. SEC1 (`EC PRIVATE KEY`) and PKCS#1
    /// (`RSA PRIVATE KEY`) sections are not accepted: convert them with
    /// `openssl pkcs8 -topk8 -nocrypt`.
    pub fn from_pkcs8_pem(alg: Alg, pem: &[u8]) -> Result<Self, SignError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(pem_error)?;
        Self::from_pkcs8_der(alg, der.secret_pkcs8_der())
    }

    /// [`Self::from_pkcs8_pem`] on the contents of the file at `path`. Every failure is a
    /// [`SignError::KeyFile`] naming the file.
    pub fn from_pkcs8_pem_file(alg: Alg, path: &Path) -> Result<Self, SignError> {
        let in_file = |reason: String| SignError::KeyFile { path: path.to_path_buf(), reason };
        let pem = std::fs::read(path).map_err(|e| in_file(e.to_string()))?;
        Self::from_pkcs8_pem(alg, &pem).map_err(|e| in_file(e.to_string()))
    }

    fn new(alg: Alg, pair: Pair) -> Result<Self, SignError> {
        let jwk = public_jwk(alg, &pair)?;
        let public = PublicKey::from_jwk(&jwk).map_err(SignError::PublicKey)?;
        Ok(SigningKey { alg, pair, jwk, public })
    }

    /// The JWS algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public JWK with the RFC 7638 required members only (`crv`/`kty`/`x`/`y`,
    /// `e`/`kty`/`n` or `crv`/`kty`/`x`), e.g. for a DPoP `jwk` header. A JWKS entry adds
    /// `kid`, `alg` and `use` to it.
    pub fn public_jwk(&self) -> Value {
        Value::Object(self.jwk.clone())
    }

    /// The public key as the verifier parsed it from [`Self::public_jwk`].
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// RFC 7638 SHA-256 thumbprint of the public JWK (computed by [`PublicKey`]).
    pub fn thumbprint(&self) -> &[u8; 32] {
        self.public.thumbprint()
    }

    /// The thumbprint in unpadded base64url (the DPoP `jkt` form).
    pub fn thumbprint_b64(&self) -> String {
        self.public.thumbprint_b64()
    }

    /// Signs a JWS signing input (`BASE64URL(header) '.' BASE64URL(payload)`) and returns
    /// the JWS signature: `r || s` of fixed width for ECDSA (64 bytes for ES256, 96 for
    /// ES384), the modulus length for RSA, 64 bytes for Ed25519.
    pub fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Ecdsa(pair) => {
                pair.sign(&rng, signing_input).map(|s| s.as_ref().to_vec()).map_err(|_| SignError::Signing)
            }
            Pair::Rsa(pair, encoding) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(*encoding, &rng, signing_input, &mut signature).map_err(|_| SignError::Signing)?;
                Ok(signature)
            }
            Pair::Ed25519(pair) => {
                pair.try_sign(signing_input).map(|s| s.as_ref().to_vec()).map_err(|_| SignError::Signing)
            }
        }
    }

    /// A compact JWS of `header` and `claims`, both serialised as compact JSON.
    ///
    /// The header's `alg` comes from the key: when `header` has no `alg` the key's is
    /// added; when it has one it must be the key's ([`SignError::HeaderAlg`] otherwise), so
    /// a JWS made here always says truthfully how it was signed. `header` must be a JSON
    /// object ([`SignError::HeaderNotObject`]); its other members (`typ`, `kid`, `jwk`, …)
    /// are kept as given. `claims` may be any JSON value. To sign a header exactly as given
    /// (a test forging `alg`, duplicate members, …) use [`Self::sign_compact_raw`].
    pub fn sign_compact(&self, header: &Value, claims: &Value) -> Result<String, SignError> {
        let Value::Object(members) = header else { return Err(SignError::HeaderNotObject) };
        let header = match members.get("alg") {
            None => {
                let mut members = members.clone();
                members.insert("alg".to_owned(), Value::String(self.alg.name().to_owned()));
                Value::Object(members).to_string()
            }
            Some(Value::String(alg)) if alg == self.alg.name() => header.to_string(),
            Some(_) => return Err(SignError::HeaderAlg(self.alg)),
        };
        self.sign_compact_raw(header.as_bytes(), claims.to_string().as_bytes())
    }

    /// A compact JWS `BASE64URL(header).BASE64URL(payload).BASE64URL(signature)` of the
    /// bytes exactly as given: nothing is parsed or checked, so the header may name another
    /// `alg` than the key signs with. For tests that forge headers and for callers holding
    /// serialised bytes; [`Self::sign_compact`] is the checked form.
    pub fn sign_compact_raw(&self, header: &[u8], payload: &[u8]) -> Result<String, SignError> {
        let input = format!("{}.{}", b64url_encode(header), b64url_encode(payload));
        let signature = self.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", b64url_encode(&signature)))
    }

    /// The private key as unencrypted PKCS#8 v1 DER (RFC 5208), the form
    /// [`Self::from_pkcs8_der`] loads. Secret: the returned value's `Debug` is redacted,
    /// but it is not zeroised on drop.
    pub fn to_pkcs8_der(&self) -> Result<PrivatePkcs8KeyDer<'static>, SignError> {
        let der = match &self.pair {
            Pair::Ecdsa(pair) => pair.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
            Pair::Rsa(pair, _) => pair.as_der().map(|d: Pkcs8V1Der<'static>| d.as_ref().to_vec()),
            Pair::Ed25519(pair) => pair.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| SignError::Export)?;
        Ok(PrivatePkcs8KeyDer::from(der))
    }

    /// The private key as a `-----BEGIN PRIVATE KEY-----` PEM document (PKCS#8 v1, 64
    /// base64 characters a line, final newline), the form [`Self::from_pkcs8_pem`] loads
    /// and the demo keeps in `certs/dev-issuer.key`. Secret, and a plain `String`: write it
    /// to a file, never to a log.
    pub fn to_pkcs8_pem(&self) -> Result<String, SignError> {
        let der = self.to_pkcs8_der()?;
        let body = STANDARD.encode(der.secret_pkcs8_der());
        let mut pem = String::with_capacity(body.len() + body.len() / 64 + 64);
        pem.push_str("-----BEGIN PRIVATE KEY-----\n");
        for (i, c) in body.chars().enumerate() {
            if i > 0 && i % 64 == 0 {
                pem.push('\n');
            }
            pem.push(c);
        }
        pem.push_str("\n-----END PRIVATE KEY-----\n");
        Ok(pem)
    }
}

impl fmt::Debug for SigningKey {
    /// The algorithm and the public thumbprint; never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg.name())
            .field("thumbprint", &self.public.thumbprint_b64())
            .finish_non_exhaustive()
    }
}

fn ecdsa_alg(alg: Alg) -> Option<&'static EcdsaSigningAlgorithm> {
    match alg {
        Alg::Es256 => Some(&sig::ECDSA_P256_SHA256_FIXED_SIGNING),
        Alg::Es384 => Some(&sig::ECDSA_P384_SHA384_FIXED_SIGNING),
        Alg::Ps256 | Alg::Ps384 | Alg::Ps512 | Alg::Rs256 | Alg::EdDsa => None,
    }
}

fn rsa_encoding(alg: Alg) -> Option<&'static dyn RsaEncoding> {
    match alg {
        Alg::Ps256 => Some(&sig::RSA_PSS_SHA256),
        Alg::Ps384 => Some(&sig::RSA_PSS_SHA384),
        Alg::Ps512 => Some(&sig::RSA_PSS_SHA512),
        Alg::Rs256 => Some(&sig::RSA_PKCS1_SHA256),
        Alg::Es256 | Alg::Es384 | Alg::EdDsa => None,
    }
}

/// The RFC 7638 required members of the key pair's public half.
fn public_jwk(alg: Alg, pair: &Pair) -> Result<Map<String, Value>, SignError> {
    let s = |v: &str| Value::String(v.to_owned());
    let mut jwk = Map::new();
    match pair {
        Pair::Ecdsa(pair) => {
            // Uncompressed point: 0x04 || x || y (the lengths are checked by the JWK parser).
            let Some((&0x04, xy)) = pair.public_key().as_ref().split_first() else {
                return Err(SignError::PublicKey(JwkError::InvalidKey));
            };
            let (x, y) = xy.split_at(xy.len() / 2);
            jwk.insert("crv".into(), s(if alg == Alg::Es384 { "P-384" } else { "P-256" }));
            jwk.insert("kty".into(), s("EC"));
            jwk.insert("x".into(), s(&b64url_encode(x)));
            jwk.insert("y".into(), s(&b64url_encode(y)));
        }
        Pair::Rsa(pair, _) => {
            let public = pair.public_key();
            jwk.insert("e".into(), s(&b64url_encode(public.exponent().big_endian_without_leading_zero())));
            jwk.insert("kty".into(), s("RSA"));
            jwk.insert("n".into(), s(&b64url_encode(public.modulus().big_endian_without_leading_zero())));
        }
        Pair::Ed25519(pair) => {
            jwk.insert("crv".into(), s("Ed25519"));
            jwk.insert("kty".into(), s("OKP"));
            jwk.insert("x".into(), s(&b64url_encode(pair.public_key().as_ref())));
        }
    }
    Ok(jwk)
}

/// Names the PEM problem without echoing any of the input (a base64 error would quote it).
fn pem_error(error: pem::Error) -> SignError {
    SignError::Pem(match error {
        pem::Error::NoItemsFound => {
            "no \"PRIVATE KEY\" section (SEC1 \"EC PRIVATE KEY\" and PKCS#1 \"RSA PRIVATE KEY\" are not accepted)"
        }
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "malformed BEGIN line",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "unreadable PEM",
    })
}

#[cfg(test)]
mod tests;
