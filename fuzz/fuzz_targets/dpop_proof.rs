//! Fuzzes DPoP proof parsing and checking: any input must be refused without panicking.
#![no_main]


use fapi_gateway::auth::dpop::{ProofKeyCache, ProofRequest, verify_proof};
use fapi_gateway::config::DpopSettings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(proof) = std::str::from_utf8(data) else { return };
    let settings = DpopSettings::default();
    let request =
        ProofRequest { method: "GET", url: "https://api.test/x", token_hash: &[0; 32], bound_jkt: &[0; 32], now: 0 };
    let _ = verify_proof(proof, &request, &settings, &ProofKeyCache::new(4));
    let _ = fapi_gateway::uri::normalise(proof);
});
