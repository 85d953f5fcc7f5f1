//! Bounded property tests of DPoP proof checking (CI runs them on every change; the
//! open-ended fuzzer lives in `fuzz/`): whatever bytes arrive, `verify_proof` answers with
//! an error instead of panicking, and no change to a valid proof still verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fapi_gateway::auth::dpop::{ProofKeyCache, ProofRequest, verify_proof};
use fapi_gateway::config::DpopSettings;
use fapi_gateway::jose::{Alg, SigningKey, b64url_encode, sha256};
use proptest::prelude::*;
use serde_json::json;

const NOW: i64 = 1_700_000_000;
const URL: &str = "https://api.test/x";

fn settings() -> DpopSettings {
    DpopSettings::default()
}

/// A valid proof for `URL` and the token "token", and the key's thumbprint.
fn valid_proof() -> (String, [u8; 32]) {
    let key = SigningKey::generate(Alg::Es256).unwrap();
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()});
    let claims = json!({"jti": "j1", "htm": "GET", "htu": URL, "iat": NOW, "ath": b64url_encode(&sha256(b"token"))});
    (key.sign_compact(&header, &claims).unwrap(), *key.thumbprint())
}

fn check(proof: &str, jkt: &[u8; 32]) -> bool {
    let hash = sha256(b"token");
    let request = ProofRequest { method: "GET", url: URL, token_hash: &hash, bound_jkt: jkt, now: NOW };
    verify_proof(proof, &request, &settings(), &ProofKeyCache::new(16)).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_are_refused_without_panic(input in ".{0,600}") {
        prop_assert!(!check(&input, &[0; 32]));
    }

    #[test]
    fn arbitrary_three_part_tokens_are_refused_without_panic(
        a in "[A-Za-z0-9_-]{0,200}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,120}"
    ) {
        let token = format!("{a}.{b}.{c}");
        prop_assert!(!check(&token, &[0; 32]));
    }

    #[test]
    fn any_single_character_change_breaks_a_valid_proof(position in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_.-]") {
        let (proof, jkt) = valid_proof();
        prop_assert!(check(&proof, &jkt));
        let i = position.index(proof.len());
        let mut changed = proof.clone();
        changed.replace_range(i..=i, &replacement);
        if changed != proof {
            // A change in the last character of a base64url part may leave the decoded bytes
            // equal only if it touches unused bits, which the strict decoder refuses.
            let verified = check(&changed, &jkt);
            prop_assert!(!verified, "changed at {}: {}", i, changed);
        }
    }
}
