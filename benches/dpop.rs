//! DPoP proof verification next to the raw signature verify of the same algorithm: the
//! gap is the cost of everything `verify_proof` does besides the signature (parsing, JWK
//! import and thumbprint, claim checks, htu normalisation).
//!
//! Run: `cargo bench --bench dpop`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PSS_SHA256, RsaKeyPair,
};
use criterion::{Criterion, criterion_group, criterion_main};
use fapi_gateway::auth::dpop::{ProofKeyCache, ProofRequest, verify_proof};
use fapi_gateway::config::DpopSettings;
use fapi_gateway::jose::{Alg, CompactJws, PublicKey, b64url_encode, sha256};
use serde_json::{Value, json};

const URL: &str = "https://api.test/accounts/1";

fn settings() -> DpopSettings {
    DpopSettings::default()
}

enum Signer {
    Es256(EcdsaKeyPair),
    Ps256(RsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl Signer {
    fn alg(&self) -> &'static str {
        match self {
            Signer::Es256(_) => "ES256",
            Signer::Ps256(_) => "PS256",
            Signer::EdDsa(_) => "EdDSA",
        }
    }

    fn jwk(&self) -> Value {
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

    fn sign(&self, input: &[u8]) -> Vec<u8> {
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

fn signers() -> Vec<Signer> {
    let rng = SystemRandom::new();
    let es = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    vec![
        Signer::Es256(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, es.as_ref()).unwrap()),
        Signer::Ps256(RsaKeyPair::generate(KeySize::Rsa2048).unwrap()),
        Signer::EdDsa(Ed25519KeyPair::from_pkcs8(ed.as_ref()).unwrap()),
    ]
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn proof_verification(c: &mut Criterion) {
    let settings = settings();
    let token_hash = sha256(b"an access token");
    let cache = ProofKeyCache::new(1000);
    for signer in signers() {
        let jwk = signer.jwk();
        let key = PublicKey::from_jwk(jwk.as_object().unwrap()).unwrap();
        let jkt = *key.thumbprint();
        let header = json!({"typ": "dpop+jwt", "alg": signer.alg(), "jwk": jwk});
        let claims =
            json!({"jti": "Fh8sAq9tN2xv", "htm": "GET", "htu": URL, "iat": now(), "ath": b64url_encode(&token_hash)});
        let input = format!(
            "{}.{}",
            b64url_encode(header.to_string().as_bytes()),
            b64url_encode(claims.to_string().as_bytes())
        );
        let proof = format!("{input}.{}", b64url_encode(&signer.sign(input.as_bytes())));
        let alg = Alg::from_name(signer.alg()).unwrap();
        let jws = CompactJws::parse(&proof, 8192).unwrap();

        let mut group = c.benchmark_group(format!("dpop_{}", signer.alg()));
        group.measurement_time(Duration::from_secs(3));
        group.bench_function("raw_verify", |b| {
            b.iter(|| key.verify(alg, black_box(jws.signing_input()), jws.signature()).unwrap())
        });
        group.bench_function("full_proof", |b| {
            b.iter(|| {
                let request =
                    ProofRequest { method: "GET", url: URL, token_hash: &token_hash, bound_jkt: &jkt, now: now() };
                verify_proof(black_box(&proof), &request, &settings, &cache).unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, proof_verification);
criterion_main!(benches);
