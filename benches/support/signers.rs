//! Signing keys for the benchmarks: one `jose::SigningKey` per algorithm family the gateway
//! accepts (ES256, PS256, EdDSA), so that tokens and proofs can be minted before the
//! measured loops.
#![allow(dead_code, clippy::unwrap_used)]

use fapi_gateway::jose::{Alg, SigningKey};
use serde_json::Value;

pub fn signers() -> Vec<SigningKey> {
    [Alg::Es256, Alg::Ps256, Alg::EdDsa].into_iter().map(|alg| SigningKey::generate(alg).unwrap()).collect()
}

/// A compact JWS of `header` and `claims` signed by `signer` (the header names its `alg`).
pub fn compact(signer: &SigningKey, header: &Value, claims: &Value) -> String {
    signer.sign_compact(header, claims).unwrap()
}
