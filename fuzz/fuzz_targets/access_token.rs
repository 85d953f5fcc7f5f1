//! Fuzzes compact-JWS and JWK parsing used for access tokens: no input may panic.
#![no_main]

use fapi_gateway::jose::{CompactJws, PublicKey, strict_json_object};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(jws) = CompactJws::parse(text, 16 * 1024) {
            let _ = jws.alg();
        }
    }
    if let Ok(object) = strict_json_object(data) {
        let _ = PublicKey::from_jwk(&object);
    }
});
