//! Unit tests for the JOSE module: RFC vectors, aws-lc-rs round trips, rejections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use serde_json::{Map, Value, json};

const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
const RFC9449_X: &str = "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs";
const RFC9449_Y: &str = "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA";
/// RFC 9449 §4.1 Figure 2, signature as published in the RFC.
const RFC9449_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn rfc9449_jwk() -> Map<String, Value> {
    obj(json!({"kty": "EC", "crv": "P-256", "x": RFC9449_X, "y": RFC9449_Y}))
}

/// Builds `b64(header).b64(payload).b64(sig)` with `sign` over the signing input.
fn token(header: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64url_encode(header.to_string().as_bytes()), b64url_encode(b"{\"sub\":\"x\"}"));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64url_encode(&sig))
}

fn flip_last_sig_byte(tok: &str) -> String {
    let (input, s) = tok.rsplit_once('.').unwrap();
    let mut sig = b64url_decode(s).unwrap();
    *sig.last_mut().unwrap() ^= 0x01;
    format!("{input}.{}", b64url_encode(&sig))
}

/// The verifier's key for `key`, parsed from its public JWK.
fn jwk_of(key: &SigningKey) -> PublicKey {
    PublicKey::from_jwk(&obj(key.public_jwk())).unwrap()
}

/// Signs, verifies, then checks tampering and the alg/key table for one key.
fn round_trip(alg: Alg, key: &PublicKey, sign: impl Fn(&[u8]) -> Vec<u8>) {
    let tok = token(json!({"alg": alg.name(), "typ": "JWT"}), sign);
    let jws = CompactJws::parse(&tok, 16 * 1024).unwrap();
    assert_eq!(jws.alg().unwrap(), alg);
    assert_eq!(jws.payload(), b"{\"sub\":\"x\"}");
    assert!(key.fits(alg));
    assert_eq!(jws.verify_with(alg, key), Ok(()));

    let bad = flip_last_sig_byte(&tok);
    let jws_bad = CompactJws::parse(&bad, 16 * 1024).unwrap();
    assert_eq!(jws_bad.verify_with(alg, key), Err(JwsError::BadSignature));

    for other in Alg::ALL {
        if !key.fits(other) {
            assert_eq!(jws.verify_with(other, key), Err(JwsError::KeyAlgMismatch));
        }
    }
}

#[test]
fn rfc7638_rsa_thumbprint() {
    let key = PublicKey::from_jwk(&obj(json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB"}))).unwrap();
    assert_eq!(key.thumbprint_b64(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    let with_extras = json!({
        "kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29", "use": "sig"
    });
    let key2 = PublicKey::from_jwk(&obj(with_extras)).unwrap();
    assert_eq!(key2.thumbprint(), key.thumbprint());
    assert_eq!(key2.kid(), Some("2011-04-29"));
    assert_eq!(key2.key_use(), Some("sig"));
    assert_eq!(key2.alg(), Some("RS256"));
    assert!(key2.allows(Alg::Rs256) && !key2.allows(Alg::Ps256) && key.allows(Alg::Ps256));
    assert_eq!(key.kty(), "RSA");
    for alg in Alg::ALL {
        let rsa = matches!(alg, Alg::Ps256 | Alg::Ps384 | Alg::Ps512 | Alg::Rs256);
        assert_eq!(key.fits(alg), rsa, "{alg}");
    }
}

#[test]
fn rfc9449_ec_thumbprint() {
    let key = PublicKey::from_jwk(&rfc9449_jwk()).unwrap();
    assert_eq!(key.thumbprint_b64(), "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
    assert_eq!(key.crv(), Some("P-256"));
    let dbg = format!("{key:?}");
    assert!(dbg.contains("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I") && dbg.contains("EC"));
}

#[test]
fn sha256_ath_vector() {
    let ath = b64url_encode(&sha256(b"Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"));
    assert_eq!(ath, "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
}

#[test]
fn helpers() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
    assert_eq!(b64url_decode("AQAB").unwrap(), vec![1, 0, 1]);
    assert!(b64url_decode("AQ==").is_err());
    assert!(b64url_decode("AR").is_err(), "non-canonical trailing bits");
    assert!(b64url_decode("a+b/").is_err(), "standard alphabet");
    assert_eq!(b64url_encode(&[0xfb, 0xff]), "-_8");
}

#[test]
fn rfc9449_dpop_proof_verifies_with_embedded_jwk() {
    let jws = CompactJws::parse(RFC9449_PROOF, 8192).unwrap();
    assert_eq!(jws.header_str("typ"), Some("dpop+jwt"));
    let alg = jws.alg().unwrap();
    assert_eq!(alg, Alg::Es256);
    let jwk = jws.header().get("jwk").and_then(Value::as_object).unwrap();
    let key = PublicKey::from_jwk(jwk).unwrap();
    assert_eq!(key.thumbprint_b64(), "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
    assert_eq!(jws.signature().len(), 64);
    assert_eq!(jws.verify_with(alg, &key), Ok(()));
    let claims: Value = serde_json::from_slice(jws.payload()).unwrap();
    assert_eq!(claims["htm"], "POST");
    assert_eq!(claims["iat"], 1_562_262_616);
    assert_eq!(jws.verify_with(Alg::Es384, &key), Err(JwsError::KeyAlgMismatch));
    let tampered = flip_last_sig_byte(RFC9449_PROOF);
    let bad = CompactJws::parse(&tampered, 8192).unwrap();
    assert_eq!(bad.verify_with(alg, &key), Err(JwsError::BadSignature));
}

#[test]
fn ecdsa_round_trips() {
    let p256 = SigningKey::generate(Alg::Es256).unwrap();
    let key = jwk_of(&p256);
    assert_eq!(key.crv(), Some("P-256"));
    round_trip(Alg::Es256, &key, |m| {
        let s = p256.sign(m).unwrap();
        assert_eq!(s.len(), 64);
        s
    });
    let p384 = SigningKey::generate(Alg::Es384).unwrap();
    let key = jwk_of(&p384);
    assert_eq!(key.crv(), Some("P-384"));
    round_trip(Alg::Es384, &key, |m| {
        let s = p384.sign(m).unwrap();
        assert_eq!(s.len(), 96);
        s
    });
}

#[test]
fn rsa_round_trips() {
    // One RSA key signing for all four algorithms (loaded once per algorithm).
    let ps256 = SigningKey::generate(Alg::Ps256).unwrap();
    let der = ps256.to_pkcs8_der().unwrap();
    let load = |alg: Alg| SigningKey::from_pkcs8_der(alg, der.secret_pkcs8_der()).unwrap();
    let (ps384, ps512, rs256) = (load(Alg::Ps384), load(Alg::Ps512), load(Alg::Rs256));
    let key = jwk_of(&ps256);
    round_trip(Alg::Ps256, &key, |m| ps256.sign(m).unwrap());
    round_trip(Alg::Ps384, &key, |m| ps384.sign(m).unwrap());
    round_trip(Alg::Ps512, &key, |m| ps512.sign(m).unwrap());
    round_trip(Alg::Rs256, &key, |m| rs256.sign(m).unwrap());
    // A PKCS#1 v1.5 signature is not a PSS signature and vice versa.
    let tok = token(json!({"alg": "RS256"}), |m| rs256.sign(m).unwrap());
    let jws = CompactJws::parse(&tok, 4096).unwrap();
    assert_eq!(jws.verify_with(Alg::Ps256, &key), Err(JwsError::BadSignature));
}

#[test]
fn ed25519_round_trip() {
    let ed25519 = SigningKey::generate(Alg::EdDsa).unwrap();
    let key = jwk_of(&ed25519);
    assert_eq!(key.kty(), "OKP");
    round_trip(Alg::EdDsa, &key, |m| ed25519.sign(m).unwrap());
}

#[test]
fn alg_names() {
    for alg in Alg::ALL {
        assert_eq!(Alg::from_name(alg.name()), Some(alg));
        assert_eq!(alg.name().parse::<Alg>(), Ok(alg));
        assert_eq!(alg.to_string(), alg.name());
    }
    for bad in ["none", "None", "HS256", "HS384", "HS512", "es256", "EDDSA", "ES512", ""] {
        assert_eq!(Alg::from_name(bad), None, "{bad}");
        assert_eq!(bad.parse::<Alg>(), Err(JwsError::UnsupportedAlg(bad.to_owned())));
    }
}

#[test]
fn header_alg_rejections() {
    let unsigned = |h: Value| format!("{}.e30.AAAA", b64url_encode(h.to_string().as_bytes()));
    for (h, want) in [
        (json!({"alg": "none"}), JwsError::UnsupportedAlg("none".into())),
        (json!({"alg": "HS256"}), JwsError::UnsupportedAlg("HS256".into())),
        (json!({"typ": "JWT"}), JwsError::MissingAlg),
        (json!({"alg": 256}), JwsError::Malformed("\"alg\" is not a string")),
    ] {
        let tok = unsigned(h);
        assert_eq!(CompactJws::parse(&tok, 1024).unwrap().alg(), Err(want));
    }
    let crit = unsigned(json!({"alg": "ES256", "crit": ["b64"], "b64": false}));
    assert_eq!(CompactJws::parse(&crit, 1024).unwrap_err(), JwsError::CriticalHeader);
}

#[test]
fn structural_rejections() {
    let h = b64url_encode(br#"{"alg":"ES256"}"#);
    let malformed = |t: &str| matches!(CompactJws::parse(t, 4096), Err(JwsError::Malformed(_)));
    assert!(CompactJws::parse(&format!("{h}.e30.AAAA"), 4096).is_ok());
    assert!(malformed(&format!("{h}.e30")), "2 parts");
    assert!(malformed(&format!("{h}.e30.AAAA.AAAA")), "4 parts");
    assert!(malformed(&format!("{h}..AAAA")), "empty payload");
    assert!(malformed(&format!("{h}.e30.")), "empty signature");
    assert!(malformed(".e30.AAAA"), "empty header");
    assert!(malformed(&format!("{h}.e30.AA==")), "padded signature");
    let h16 = b64url_encode(b"{\"alg\":\"ES256\"} ");
    assert!(CompactJws::parse(&format!("{h16}.e30.AAAA"), 4096).is_ok());
    assert!(malformed(&format!("{h16}==.e30.AAAA")), "padded header");
    assert!(malformed(&format!("{h}.e30=.AAAA")), "padded payload");
    assert!(malformed(&format!("{}.e30.AAAA", b64url_encode(b"[1]"))), "array header");
    assert!(malformed(&format!("{}.e30.AAAA", b64url_encode(b"\"x\""))), "string header");
    let dup = b64url_encode(br#"{"alg":"ES256","alg":"none"}"#);
    assert!(malformed(&format!("{dup}.e30.AAAA")), "duplicate alg");
    let nested = b64url_encode(br#"{"alg":"ES256","jwk":{"x":"a","x":"b"}}"#);
    assert!(malformed(&format!("{nested}.e30.AAAA")), "duplicate nested member");

    let deep = format!("{{\"alg\":\"ES256\",\"a\":{}{}}}", "[".repeat(500), "]".repeat(500));
    let deep = b64url_encode(deep.as_bytes());
    assert!(malformed(&format!("{deep}.e30.AAAA")), "nesting limit");

    // The length cap applies before decoding: garbage over the cap is TooLarge.
    let long = "!".repeat(5000);
    assert_eq!(CompactJws::parse(&long, 4096).unwrap_err(), JwsError::TooLarge);
    assert_eq!(CompactJws::parse(RFC9449_PROOF, 100).unwrap_err(), JwsError::TooLarge);
    let exact = format!("{h}.e30.AAAA");
    assert!(CompactJws::parse(&exact, exact.len()).is_ok());
}

#[test]
fn jwk_rejections() {
    let with = |k: &str, v: Value| {
        let mut m = rfc9449_jwk();
        m.insert(k.to_owned(), v);
        PublicKey::from_jwk(&m)
    };
    for m in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        assert_eq!(with(m, json!("AAAA")).unwrap_err(), JwkError::PrivateKey, "{m}");
    }
    let oct = obj(json!({"kty": "oct", "k": "AAAA"}));
    assert_eq!(PublicKey::from_jwk(&oct).unwrap_err(), JwkError::PrivateKey);
    let oct = obj(json!({"kty": "oct"}));
    assert_eq!(PublicKey::from_jwk(&oct).unwrap_err(), JwkError::UnsupportedKeyType("oct".into()));
    assert_eq!(with("crv", json!("P-521")).unwrap_err(), JwkError::UnsupportedCurve("P-521".into()));
    assert_eq!(with("crv", json!("secp256k1")).unwrap_err(), JwkError::UnsupportedCurve("secp256k1".into()));
    let x31 = b64url_encode(&b64url_decode(RFC9449_X).unwrap()[1..]);
    assert_eq!(with("x", json!(x31)).unwrap_err(), JwkError::InvalidMember("x"));
    assert_eq!(with("y", json!(RFC9449_X)).unwrap_err(), JwkError::InvalidKey, "off curve");
    assert_eq!(with("kid", json!(7)).unwrap_err(), JwkError::InvalidMember("kid"));
    let mut no_y = rfc9449_jwk();
    no_y.remove("y");
    assert_eq!(PublicKey::from_jwk(&no_y).unwrap_err(), JwkError::MissingMember("y"));
    let x448 = obj(json!({"kty": "OKP", "crv": "X25519", "x": RFC9449_X}));
    assert_eq!(PublicKey::from_jwk(&x448).unwrap_err(), JwkError::UnsupportedCurve("X25519".into()));

    let rsa = |n: &[u8], e: &str| PublicKey::from_jwk(&obj(json!({"kty": "RSA", "n": b64url_encode(n), "e": e})));
    let mut n1024 = vec![0xC3u8; 128];
    n1024[127] = 0xC5;
    assert_eq!(rsa(&n1024, "AQAB").unwrap_err(), JwkError::RsaKeySize(1024));
    let mut n2047 = vec![0x7Fu8; 256];
    n2047[255] = 0x01;
    assert_eq!(rsa(&n2047, "AQAB").unwrap_err(), JwkError::RsaKeySize(2047));
    let n = b64url_decode(RFC7638_N).unwrap();
    assert_eq!(rsa(&n, "AQ").unwrap_err(), JwkError::InvalidMember("e"), "e = 1");
    assert_eq!(rsa(&n, "AQAA").unwrap_err(), JwkError::InvalidMember("e"), "even e");
    let mut padded = vec![0u8];
    padded.extend_from_slice(&n);
    assert!(rsa(&padded, "AQAB").unwrap().fits(Alg::Ps256), "leading zero octet tolerated");
}
