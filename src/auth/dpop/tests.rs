//! Proof checks of RFC 9449 §4.3, one test per refusal, with proofs signed here and an
//! injected clock; the RFC's own example proof runs through every check up to `ath`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::*;

use crate::jose::{SigningKey, b64url_encode};

const NOW: i64 = 1_700_000_000;
const TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
const URL: &str = "https://api.test/accounts/1";

fn settings() -> DpopSettings {
    DpopSettings::default()
}

/// A DPoP key: [`SigningKey`] signing headers exactly as given (tests forge `alg`, `jwk`, …).
struct Key {
    key: SigningKey,
}

impl Key {
    fn new() -> Key {
        Key { key: SigningKey::generate(Alg::Es256).unwrap() }
    }

    fn jwk(&self) -> Value {
        self.key.public_jwk()
    }

    fn jkt(&self) -> [u8; 32] {
        *self.key.thumbprint()
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        self.key.sign_compact_raw(header.to_string().as_bytes(), claims.to_string().as_bytes()).unwrap()
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()})
    }
}

fn claims() -> Value {
    json!({"jti": "e1j3V_bKic8-LAEB", "htm": "GET", "htu": URL, "iat": NOW, "ath": b64url_encode(&jose::sha256(TOKEN.as_bytes()))})
}

fn check(key: &Key, header: &Value, claims: &Value) -> Result<VerifiedProof, ProofError> {
    check_as(key.jkt(), &key.sign(header, claims))
}

fn check_as(bound: [u8; 32], proof: &str) -> Result<VerifiedProof, ProofError> {
    let hash = jose::sha256(TOKEN.as_bytes());
    let request = ProofRequest { method: "GET", url: URL, token_hash: &hash, bound_jkt: &bound, now: NOW };
    verify_proof(proof, &request, &settings(), &ProofKeyCache::new(16))
}

fn with(key: &str, value: Value) -> Value {
    let mut c = claims();
    c[key] = value;
    c
}

#[test]
fn rfc9449_ath_vector() {
    assert_eq!(b64url_encode(&jose::sha256(TOKEN.as_bytes())), "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
}

#[test]
fn rfc9449_jkt_vector() {
    let jwk = json!({"kty": "EC", "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs", "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA", "crv": "P-256"});
    let key = PublicKey::from_jwk(jwk.as_object().unwrap()).unwrap();
    assert_eq!(key.thumbprint_b64(), "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
}

#[test]
fn rfc9449_example_proof_passes_every_check_up_to_ath() {
    // RFC 9449 §4.1: a proof for the token endpoint (no `ath`), checked at its own time.
    let proof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
    let hash = jose::sha256(TOKEN.as_bytes());
    let jkt = jose::b64url_decode("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I").unwrap().try_into().unwrap();
    let request = ProofRequest {
        method: "POST",
        url: "https://server.example.com/token",
        token_hash: &hash,
        bound_jkt: &jkt,
        now: 1_562_262_616,
    };
    assert_eq!(verify_proof(proof, &request, &settings(), &ProofKeyCache::new(16)), Err(ProofError::AthMismatch));
    // An hour later the same proof is refused as too old, before ath is looked at.
    let later = ProofRequest { now: 1_562_262_616 + 3600, ..request };
    assert_eq!(verify_proof(proof, &later, &settings(), &ProofKeyCache::new(16)), Err(ProofError::TooOld));
}

#[test]
fn a_valid_proof_passes() {
    let key = Key::new();
    let verified = check(&key, &key.header(), &claims()).unwrap();
    assert_eq!(verified.jkt, key.jkt());
    assert_eq!(verified.jti, "e1j3V_bKic8-LAEB");
    assert_eq!(verified.nonce, None);
}

#[test]
fn tolerances_of_the_fapi_conformance_suite_pass() {
    let key = Key::new();
    assert!(check(&key, &key.header(), &with("iat", json!(NOW + 8))).is_ok(), "iat 8 s ahead");
    assert!(check(&key, &key.header(), &with("iat", json!(NOW - 10))).is_ok(), "iat 10 s behind");
    assert!(check(&key, &key.header(), &with("htu", json!("https://API.test:443/accounts/1?x=1#f"))).is_ok());
    let mut extra = claims();
    extra["unknown_claim"] = json!({"a": 1});
    extra["exp"] = json!(NOW - 1000);
    extra["nbf"] = json!(NOW + 1000);
    let mut header = key.header();
    header["kid"] = json!("ignored");
    header["x-custom"] = json!(true);
    assert!(check(&key, &header, &extra).is_ok(), "unknown claims, exp/nbf and header parameters are ignored");
}

#[test]
fn oversized_and_malformed_proofs_are_refused() {
    let key = Key::new();
    assert_eq!(check_as(key.jkt(), &"a".repeat(MAX_PROOF_BYTES + 1)), Err(ProofError::TooLarge));
    for junk in ["a.b", "a.b.c.d", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"] {
        assert!(matches!(check_as(key.jkt(), junk), Err(ProofError::Malformed | ProofError::WrongType)), "{junk}");
    }
}

#[test]
fn typ_must_be_dpop_jwt() {
    let key = Key::new();
    for typ in [json!("JWT"), json!("at+jwt"), Value::Null] {
        let mut header = key.header();
        header["typ"] = typ;
        assert_eq!(check(&key, &header, &claims()), Err(ProofError::WrongType));
    }
}

#[test]
fn none_hmac_and_unlisted_algorithms_are_refused() {
    let key = Key::new();
    for alg in ["none", "HS256", "ES384", "RS256"] {
        let mut header = key.header();
        header["alg"] = json!(alg);
        assert_eq!(check(&key, &header, &claims()), Err(ProofError::AlgorithmNotAllowed), "{alg}");
    }
}

#[test]
fn symmetric_private_and_missing_keys_are_refused() {
    let key = Key::new();
    let mut header = key.header();
    header["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"});
    assert_eq!(check(&key, &header, &claims()), Err(ProofError::PrivateKey), "a symmetric key is secret material");
    header["jwk"] = json!({"kty": "oct"});
    assert_eq!(check(&key, &header, &claims()), Err(ProofError::BadKey));
    let mut header = key.header();
    header["jwk"]["d"] = json!("AAAA");
    assert_eq!(check(&key, &header, &claims()), Err(ProofError::PrivateKey));
    let mut header = key.header();
    header.as_object_mut().unwrap().remove("jwk");
    assert_eq!(check(&key, &header, &claims()), Err(ProofError::BadKey));
}

#[test]
fn key_type_must_fit_the_algorithm() {
    let key = Key::new();
    let mut header = key.header();
    header["alg"] = json!("PS256");
    assert_eq!(check(&key, &header, &claims()), Err(ProofError::KeyAlgorithmMismatch));
}

#[test]
fn signature_by_another_key_is_refused() {
    let key = Key::new();
    let other = Key::new();
    // Header names `key`, signature made by `other`.
    let proof = other.sign(&key.header(), &claims());
    assert_eq!(check_as(key.jkt(), &proof), Err(ProofError::BadSignature));
}

#[test]
fn jti_is_required_and_bounded() {
    let key = Key::new();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("jti");
    assert_eq!(check(&key, &key.header(), &c), Err(ProofError::BadJti));
    assert_eq!(check(&key, &key.header(), &with("jti", json!(""))), Err(ProofError::BadJti));
    assert_eq!(check(&key, &key.header(), &with("jti", json!("x".repeat(MAX_JTI_BYTES + 1)))), Err(ProofError::BadJti));
    assert_eq!(check(&key, &key.header(), &with("jti", json!(5))), Err(ProofError::Malformed));
}

#[test]
fn htm_and_htu_must_match_the_request() {
    let key = Key::new();
    assert_eq!(check(&key, &key.header(), &with("htm", json!("POST"))), Err(ProofError::HtmMismatch));
    assert_eq!(check(&key, &key.header(), &with("htm", json!("get"))), Err(ProofError::HtmMismatch));
    for htu in [
        "https://api.test/accounts/2",
        "http://api.test/accounts/1",
        "https://evil.test/accounts/1",
        "https://api.test:8443/accounts/1",
        "not a url",
    ] {
        let refused = check(&key, &key.header(), &with("htu", json!(htu))).unwrap_err();
        // Both URLs are named: what a client behind a load balancer needs to see.
        assert_eq!(refused, ProofError::HtuMismatch { got: htu.into(), expected: URL.into() }, "{htu}");
        assert_eq!(refused.to_string(), format!("the DPoP proof's htu `{htu}` does not match the request URL `{URL}`"));
    }
    let mut no_htu = claims();
    no_htu.as_object_mut().unwrap().remove("htu");
    let missing = check(&key, &key.header(), &no_htu).unwrap_err();
    assert_eq!(missing.to_string(), format!("the DPoP proof's htu `` does not match the request URL `{URL}`"));
    // What the client sent is shown shortened and printable only.
    let long = format!("https://api.test/{}\u{7}", "a".repeat(100));
    let ProofError::HtuMismatch { got, .. } = check(&key, &key.header(), &with("htu", json!(long))).unwrap_err() else {
        panic!("htu mismatch expected");
    };
    assert_eq!(got.len(), 67, "{got}");
    assert!(got.ends_with("...") && got.is_ascii(), "{got}");
}

#[test]
fn iat_outside_the_window_is_refused() {
    let key = Key::new();
    assert_eq!(check(&key, &key.header(), &with("iat", json!(NOW - 3600))), Err(ProofError::TooOld));
    assert_eq!(check(&key, &key.header(), &with("iat", json!(NOW + 3600))), Err(ProofError::IssuedInFuture));
    assert_eq!(check(&key, &key.header(), &with("iat", json!(NOW + 11))), Err(ProofError::IssuedInFuture));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iat");
    assert_eq!(check(&key, &key.header(), &c), Err(ProofError::MissingIat));
}

#[test]
fn ath_must_hash_the_presented_token() {
    let key = Key::new();
    assert_eq!(
        check(&key, &key.header(), &with("ath", json!(b64url_encode(&jose::sha256(b"other"))))),
        Err(ProofError::AthMismatch)
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("ath");
    assert_eq!(check(&key, &key.header(), &c), Err(ProofError::AthMismatch));
}

#[test]
fn proof_key_must_be_the_bound_key() {
    let key = Key::new();
    let thief = Key::new();
    let proof = thief.sign(&thief.header(), &claims());
    assert_eq!(check_as(key.jkt(), &proof), Err(ProofError::KeyBindingMismatch));
    assert!(ProofError::KeyBindingMismatch.is_token_error());
}

#[test]
fn the_key_cache_serves_the_same_header_only() {
    let cache = ProofKeyCache::new(16);
    let hash = jose::sha256(TOKEN.as_bytes());
    let key = Key::new();
    let thief = Key::new();
    let bound = key.jkt();
    let request = ProofRequest { method: "GET", url: URL, token_hash: &hash, bound_jkt: &bound, now: NOW };
    assert!(verify_proof(&key.sign(&key.header(), &claims()), &request, &settings(), &cache).is_ok());
    assert!(verify_proof(&key.sign(&key.header(), &claims()), &request, &settings(), &cache).is_ok(), "cached");
    // Another key in the header is another cache entry: the binding check still fails.
    let stolen = thief.sign(&thief.header(), &claims());
    assert_eq!(verify_proof(&stolen, &request, &settings(), &cache), Err(ProofError::KeyBindingMismatch));
    // Same header, signature by another key: the cached key verifies nothing it should not.
    let forged = thief.sign(&key.header(), &claims());
    assert_eq!(verify_proof(&forged, &request, &settings(), &cache), Err(ProofError::BadSignature));
    // A private-key header is refused every time (errors are not cached).
    let mut private = key.header();
    private["jwk"]["d"] = json!("AAAA");
    for _ in 0..2 {
        assert_eq!(
            verify_proof(&key.sign(&private, &claims()), &request, &settings(), &cache),
            Err(ProofError::PrivateKey)
        );
    }
}

#[test]
fn duplicate_claims_are_refused() {
    let key = Key::new();
    let payload = format!(r#"{{"jti":"a","htm":"GET","htm":"POST","htu":"{URL}","iat":{NOW}}}"#);
    let proof = key.key.sign_compact_raw(key.header().to_string().as_bytes(), payload.as_bytes()).unwrap();
    assert_eq!(check_as(key.jkt(), &proof), Err(ProofError::Malformed));
}

#[test]
fn a_cached_header_is_held_to_the_current_allow_list() {
    let cache = ProofKeyCache::new(16);
    let key = Key::new();
    let hash = jose::sha256(TOKEN.as_bytes());
    let bound = key.jkt();
    let request = ProofRequest { method: "GET", url: URL, token_hash: &hash, bound_jkt: &bound, now: NOW };
    assert!(verify_proof(&key.sign(&key.header(), &claims()), &request, &settings(), &cache).is_ok());
    let narrower = DpopSettings { algorithms: vec![crate::jose::Alg::Ps256], ..settings() };
    let proof = key.sign(&key.header(), &claims());
    assert_eq!(verify_proof(&proof, &request, &narrower, &cache), Err(ProofError::AlgorithmNotAllowed));
}

#[test]
fn critical_header_parameters_are_refused() {
    let key = Key::new();
    let mut header = key.header();
    header["crit"] = json!(["exp"]);
    assert_eq!(check(&key, &header, &claims()), Err(ProofError::Malformed));
}
