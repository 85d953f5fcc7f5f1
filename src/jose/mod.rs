//! Strict JOSE primitives for the gateway: compact JWS parsing and signature
//! verification with aws-lc-rs, public JWK parsing with RFC 7638 thumbprints, and the
//! signing keys of everything in the crate that signs.
//!
//! This module serves two callers with one strict table: JWT access tokens (keys
//! from the authorization server's JWKS) and DPoP proofs (key taken from the
//! attacker-controllable `jwk` header). Only asymmetric algorithms exist here:
//! `none` and HMAC (`HS*`) are not representable as an [`Alg`], and a JWK of
//! `kty: "oct"` or with private members never becomes a [`PublicKey`].
//!
//! - [`jws`]: [`CompactJws`] (split + decode, nothing verified) and [`Alg`].
//! - [`jwk`]: [`PublicKey`], an aws-lc-rs verifying key prepared once at parse time.
//! - [`sign`]: [`SigningKey`], the crate's one JWS signer (demo issuer, tests, benches,
//!   client assertions and DPoP proofs), with its public JWK and thumbprint.
//! - Helpers shared with the DPoP and token code: strict base64url, SHA-256,
//!   constant-time comparison and duplicate-rejecting JSON object parsing.

pub mod assertion;
pub mod jwk;
pub mod jws;
pub mod sign;
mod strict_json;
mod time;

pub use jwk::{JwkError, PublicKey};
pub use jws::{Alg, CompactJws, JwsError};
pub use sign::{SignError, SigningKey};
pub use strict_json::strict_json_object;
pub use time::{numeric_date, unix_now};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

/// Decodes unpadded base64url (RFC 4648 §5, as required by RFC 7515).
///
/// Rejects `=` padding, characters outside the URL-safe alphabet and
/// non-canonical encodings (non-zero trailing bits).
pub fn b64url_decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(s)
}

/// Encodes `bytes` as unpadded base64url.
pub fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of `data` (aws-lc-rs).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    for (o, i) in out.iter_mut().zip(digest.as_ref()) {
        *o = *i;
    }
    out
}

/// Compares two byte strings in time independent of their contents.
///
/// Slices of different lengths compare unequal (the length itself is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests;
