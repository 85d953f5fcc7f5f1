//! Signing keys for the benchmarks: one per algorithm the gateway accepts, with its public
//! JWK, so that tokens and proofs can be minted before the measured loops.
#![allow(dead_code, clippy::unwrap_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PSS_SHA256, RsaKeyPair,
};
use fapi_gateway::jose::b64url_encode;
use serde_json::{Value, json};

pub enum Signer {
    Es256(EcdsaKeyPair),
    Ps256(RsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl Signer {
    pub fn alg(&self) -> &'static str {
        match self {
            Signer::Es256(_) => "ES256",
            Signer::Ps256(_) => "PS256",
            Signer::EdDsa(_) => "EdDSA",
        }
    }

    pub fn jwk(&self) -> Value {
        match self {
            Signer::Es256(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "x": b64url_encode(&p[1..33]), "y": b64url_encode(&p[33..65])})
            }
            Signer::Ps256(k) => {
                let c = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty": "RSA", "n": b64url_encode(&c.n), "e": b64url_encode(&c.e)})
            }
            Signer::EdDsa(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(k.public_key().as_ref())}),
        }
    }

    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Es256(k) => k.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Ps256(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PSS_SHA256, &rng, input, &mut sig).unwrap();
                sig
            }
            Signer::EdDsa(k) => k.sign(input).as_ref().to_vec(),
        }
    }
}

pub fn signers() -> Vec<Signer> {
    let rng = SystemRandom::new();
    let es = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    vec![
        Signer::Es256(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, es.as_ref()).unwrap()),
        Signer::Ps256(RsaKeyPair::generate(KeySize::Rsa2048).unwrap()),
        Signer::EdDsa(Ed25519KeyPair::from_pkcs8(ed.as_ref()).unwrap()),
    ]
}

/// A compact JWS of `header` and `claims` signed by `signer`.
pub fn compact(signer: &Signer, header: &Value, claims: &Value) -> String {
    let input =
        format!("{}.{}", b64url_encode(header.to_string().as_bytes()), b64url_encode(claims.to_string().as_bytes()));
    format!("{input}.{}", b64url_encode(&signer.sign(input.as_bytes())))
}
