//! Fuzzes DPoP proof parsing and checking: any input must be refused without panicking.
#![no_main]

use std::time::Duration;

use fapi_gateway::auth::dpop::{ProofKeyCache, ProofRequest, verify_proof};
use fapi_gateway::config::{DpopSettings, NonceMode, NonceSecret, ReplayStoreKind};
use fapi_gateway::jose::Alg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(proof) = std::str::from_utf8(data) else { return };
    let settings = DpopSettings {
        algorithms: vec![Alg::Es256, Alg::Ps256, Alg::EdDsa],
        algs_challenge: String::new(),
        max_age: Duration::from_secs(60),
        max_future: Duration::from_secs(10),
        replay_store: ReplayStoreKind::Memory,
        replay_max_entries: 1,
        nonce: NonceMode::Off,
        nonce_secret: NonceSecret::Random,
        nonce_step: Duration::from_secs(30),
        nonce_window: 1,
    };
    let request =
        ProofRequest { method: "GET", url: "https://api.test/x", token_hash: &[0; 32], bound_jkt: &[0; 32], now: 0 };
    let _ = verify_proof(proof, &request, &settings, &ProofKeyCache::new(4));
    let _ = fapi_gateway::auth::dpop::htu::normalise(proof);
});
