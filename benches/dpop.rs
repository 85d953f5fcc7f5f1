//! DPoP proof verification next to the raw signature verify of the same algorithm: the
//! gap is the cost of everything `verify_proof` does besides the signature (parsing, JWK
//! import and thumbprint, claim checks, htu normalisation).
//!
//! Run: `cargo bench --bench dpop`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "support/signers.rs"]
mod signers;

use criterion::{Criterion, criterion_group, criterion_main};
use fapi_gateway::auth::dpop::{ProofKeyCache, ProofRequest, verify_proof};
use fapi_gateway::config::DpopSettings;
use fapi_gateway::jose::{CompactJws, PublicKey, b64url_encode, sha256};
use serde_json::json;
use signers::{compact, signers};

const URL: &str = "https://api.test/accounts/1";

fn settings() -> DpopSettings {
    DpopSettings::default()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn proof_verification(c: &mut Criterion) {
    let settings = settings();
    let token_hash = sha256(b"an access token");
    let cache = ProofKeyCache::new(1000);
    for signer in signers() {
        let jwk = signer.public_jwk();
        let key = PublicKey::from_jwk(jwk.as_object().unwrap()).unwrap();
        let jkt = *key.thumbprint();
        let header = json!({"typ": "dpop+jwt", "alg": signer.alg().name(), "jwk": jwk});
        let claims =
            json!({"jti": "Fh8sAq9tN2xv", "htm": "GET", "htu": URL, "iat": now(), "ath": b64url_encode(&token_hash)});
        let proof = compact(&signer, &header, &claims);
        let alg = signer.alg();
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
