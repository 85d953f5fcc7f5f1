//! Unit tests of [`SigningKey`]: every algorithm against the crate's own verifier, the
//! header `alg` policy, PKCS#8 DER/PEM round trips, thumbprints and a redacted `Debug`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::*;
use crate::jose::{CompactJws, JwsError, b64url_decode, sha256};

/// RFC 8037 Appendix A.1: the Ed25519 private key `d` and public key `x`.
const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
/// RFC 8037 Appendix A.3: the thumbprint of that key.
const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
/// RFC 8037 Appendix A.4: `{"alg":"EdDSA"}` over "Example of Ed25519 signing".
const RFC8037_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

/// One key per algorithm; the four RSA algorithms share one generated key (reloaded from
/// its PKCS#8 DER), as RSA key generation is slow in debug builds.
fn keys() -> Vec<SigningKey> {
    let rsa = SigningKey::generate(Alg::Ps256).unwrap();
    let der = rsa.to_pkcs8_der().unwrap();
    let mut keys = vec![
        SigningKey::generate(Alg::Es256).unwrap(),
        SigningKey::generate(Alg::Es384).unwrap(),
        SigningKey::generate(Alg::EdDsa).unwrap(),
    ];
    for alg in [Alg::Ps384, Alg::Ps512, Alg::Rs256] {
        keys.push(SigningKey::from_pkcs8_der(alg, der.secret_pkcs8_der()).unwrap());
    }
    keys.push(rsa);
    keys
}

fn signature_len(alg: Alg) -> usize {
    match alg {
        Alg::Es256 | Alg::EdDsa => 64,
        Alg::Es384 => 96,
        Alg::Ps256 | Alg::Ps384 | Alg::Ps512 | Alg::Rs256 => 256,
    }
}

fn claims() -> Value {
    json!({"iss": "https://as.test", "sub": "alice", "iat": 1_700_000_000})
}

/// The verifier's key for `key`, parsed from the published JWK (not the cached one).
fn verifier_key(key: &SigningKey) -> PublicKey {
    PublicKey::from_jwk(key.public_jwk().as_object().unwrap()).unwrap()
}

/// Replaces part `index` (0 header, 1 payload, 2 signature) of a compact JWS.
fn with_part(token: &str, index: usize, part: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = part;
    parts.join(".")
}

#[test]
fn every_algorithm_signs_a_compact_jws_the_verifier_accepts() {
    let keys = keys();
    assert_eq!(keys.len(), Alg::ALL.len());
    for alg in Alg::ALL {
        assert!(keys.iter().any(|k| k.alg() == alg), "{alg} has a key");
    }
    for key in &keys {
        let alg = key.alg();
        let token = key.sign_compact(&json!({"typ": "JWT", "kid": "k1"}), &claims()).unwrap();
        let jws = CompactJws::parse(&token, 16 * 1024).unwrap();
        assert_eq!(jws.alg(), Ok(alg), "the key's alg is put in the header");
        assert_eq!(jws.header_str("typ"), Some("JWT"));
        assert_eq!(jws.header_str("kid"), Some("k1"));
        assert_eq!(serde_json::from_slice::<Value>(jws.payload()).unwrap(), claims());
        assert_eq!(jws.signature().len(), signature_len(alg), "{alg}");
        let public = verifier_key(key);
        assert_eq!(jws.verify_with(alg, &public), Ok(()), "{alg}");
        assert_eq!(jws.verify_with(alg, key.public_key()), Ok(()), "{alg}");
        for other in Alg::ALL {
            if other != alg && public.fits(other) {
                assert_eq!(jws.verify_with(other, &public), Err(JwsError::BadSignature), "{alg} as {other}");
            }
        }

        // Tampering: a flipped signature bit, another payload, another header.
        let mut signature = jws.signature().to_vec();
        signature[0] ^= 0x01;
        let forged = [
            with_part(&token, 2, &b64url_encode(&signature)),
            with_part(&token, 1, &b64url_encode(br#"{"iss":"https://as.test","sub":"mallory","iat":1700000000}"#)),
            with_part(&token, 0, &b64url_encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes())),
        ];
        for bad in &forged {
            let jws = CompactJws::parse(bad, 16 * 1024).unwrap();
            assert_eq!(jws.verify_with(alg, &public), Err(JwsError::BadSignature), "{alg}: {bad}");
        }
        // Another key of the same algorithm does not verify it either.
        let other = if matches!(alg, Alg::Ps256 | Alg::Ps384 | Alg::Ps512 | Alg::Rs256) {
            None
        } else {
            Some(SigningKey::generate(alg).unwrap())
        };
        if let Some(other) = other {
            assert_eq!(jws.verify_with(alg, other.public_key()), Err(JwsError::BadSignature), "{alg}");
        }
    }
}

#[test]
fn sign_gives_jws_signatures_over_the_input() {
    for key in keys() {
        let input = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0";
        let signature = key.sign(input).unwrap();
        assert_eq!(signature.len(), signature_len(key.alg()));
        assert_eq!(key.public_key().verify(key.alg(), input, &signature), Ok(()));
        assert_eq!(key.public_key().verify(key.alg(), b"another input", &signature), Err(JwsError::BadSignature));
    }
}

#[test]
fn rfc8037_ed25519_known_answer() {
    // PKCS#8 v1 of the RFC's seed: the fixed Ed25519 prefix, then the 32 bytes of `d`.
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(&b64url_decode(RFC8037_D).unwrap());
    let key = SigningKey::from_pkcs8_der(Alg::EdDsa, &der).unwrap();
    assert_eq!(key.public_jwk(), json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}));
    assert_eq!(key.thumbprint_b64(), RFC8037_THUMBPRINT);
    // Ed25519 is deterministic: the RFC's JWS byte for byte.
    assert_eq!(key.sign_compact_raw(br#"{"alg":"EdDSA"}"#, b"Example of Ed25519 signing").unwrap(), RFC8037_JWS);
    assert_eq!(key.sign_compact(&json!({}), &json!("x")).unwrap().split('.').next(), Some("eyJhbGciOiJFZERTQSJ9"));
}

#[test]
fn header_alg_is_the_keys() {
    let key = SigningKey::generate(Alg::Es256).unwrap();
    let header_of = |token: &str| -> Value {
        serde_json::from_slice(&b64url_decode(token.split('.').next().unwrap()).unwrap()).unwrap()
    };
    let added = key.sign_compact(&json!({"typ": "dpop+jwt", "jwk": key.public_jwk()}), &claims()).unwrap();
    assert_eq!(header_of(&added), json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": key.public_jwk()}));
    let given = key.sign_compact(&json!({"alg": "ES256", "typ": "at+jwt"}), &claims()).unwrap();
    assert_eq!(header_of(&given), json!({"alg": "ES256", "typ": "at+jwt"}));

    for alg in [json!("ES384"), json!("none"), json!("HS256"), json!("es256"), json!(null), json!(256)] {
        let header = json!({"alg": alg, "typ": "JWT"});
        assert_eq!(key.sign_compact(&header, &claims()), Err(SignError::HeaderAlg(Alg::Es256)), "{header}");
    }
    for header in [json!([]), json!("ES256"), json!(null)] {
        assert_eq!(key.sign_compact(&header, &claims()), Err(SignError::HeaderNotObject), "{header}");
    }

    // The raw form signs whatever it is given, a forged `alg` and duplicate members included.
    let raw = key.sign_compact_raw(br#"{"alg":"none","alg":"ES256"}"#, b"not json").unwrap();
    let parts: Vec<&str> = raw.split('.').collect();
    assert_eq!(b64url_decode(parts[0]).unwrap(), br#"{"alg":"none","alg":"ES256"}"#);
    assert_eq!(b64url_decode(parts[1]).unwrap(), b"not json");
    let input = format!("{}.{}", parts[0], parts[1]);
    let signature = b64url_decode(parts[2]).unwrap();
    assert_eq!(key.public_key().verify(Alg::Es256, input.as_bytes(), &signature), Ok(()));
}

#[test]
fn pkcs8_pem_and_der_round_trip() {
    for key in keys() {
        let alg = key.alg();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{alg}");
        assert!(pem.ends_with("\n-----END PRIVATE KEY-----\n"), "{alg}");
        assert!(pem.lines().all(|l| l.len() <= 64), "{alg}: 64 characters a line");
        let from_pem = SigningKey::from_pkcs8_pem(alg, pem.as_bytes()).unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let from_der = SigningKey::from_pkcs8_der(alg, der.secret_pkcs8_der()).unwrap();
        for reloaded in [&from_pem, &from_der] {
            assert_eq!(reloaded.alg(), alg);
            assert_eq!(reloaded.public_jwk(), key.public_jwk(), "{alg}");
            assert_eq!(reloaded.thumbprint(), key.thumbprint(), "{alg}");
            // The reloaded private key signs for the original public key.
            let token = reloaded.sign_compact(&json!({}), &claims()).unwrap();
            let jws = CompactJws::parse(&token, 16 * 1024).unwrap();
            assert_eq!(jws.verify_with(alg, key.public_key()), Ok(()), "{alg}");
        }
        assert_eq!(from_pem.to_pkcs8_der().unwrap().secret_pkcs8_der(), der.secret_pkcs8_der(), "{alg}");
        // A PEM file with a certificate before the key, as some tools write it.
        let bundle = format!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{pem}");
        assert_eq!(SigningKey::from_pkcs8_pem(alg, bundle.as_bytes()).unwrap().thumbprint(), key.thumbprint());
    }
}

#[test]
fn pem_file_loading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.key");
    let key = SigningKey::generate(Alg::Es256).unwrap();
    std::fs::write(&path, key.to_pkcs8_pem().unwrap()).unwrap();
    assert_eq!(SigningKey::from_pkcs8_pem_file(Alg::Es256, &path).unwrap().thumbprint(), key.thumbprint());

    let error = SigningKey::from_pkcs8_pem_file(Alg::Es384, &path).unwrap_err();
    let SignError::KeyFile { path: named, reason } = &error else { panic!("{error:?}") };
    assert_eq!(named, &path);
    assert!(reason.contains("ES384"), "{reason}");
    assert!(error.to_string().contains("client.key"), "{error}");

    let missing = dir.path().join("missing.key");
    let error = SigningKey::from_pkcs8_pem_file(Alg::Es256, &missing).unwrap_err();
    assert!(matches!(&error, SignError::KeyFile { path, .. } if path == &missing), "{error:?}");
}

#[test]
fn keys_of_another_kind_are_refused() {
    let p256 = SigningKey::generate(Alg::Es256).unwrap().to_pkcs8_der().unwrap();
    let ed25519 = SigningKey::generate(Alg::EdDsa).unwrap().to_pkcs8_der().unwrap();
    for (alg, der) in [
        (Alg::Es384, p256.secret_pkcs8_der()),
        (Alg::Ps256, p256.secret_pkcs8_der()),
        (Alg::EdDsa, p256.secret_pkcs8_der()),
        (Alg::Es256, ed25519.secret_pkcs8_der()),
        (Alg::Rs256, ed25519.secret_pkcs8_der()),
        (Alg::Es256, b"not DER at all"),
        (Alg::EdDsa, &[]),
    ] {
        let error = SigningKey::from_pkcs8_der(alg, der).unwrap_err();
        assert!(matches!(error, SignError::KeyRejected { alg: a, .. } if a == alg), "{alg}: {error:?}");
    }
    let garbage = [
        "",
        "no PEM here",
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEA",
        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    ];
    for pem in garbage {
        let error = SigningKey::from_pkcs8_pem(Alg::Es256, pem.as_bytes()).unwrap_err();
        assert!(matches!(error, SignError::Pem(_)), "{pem:?}: {error:?}");
        assert!(!error.to_string().contains("!!!!") && !error.to_string().contains("MIGH"), "{error}");
    }
}

#[test]
fn thumbprint_is_the_one_jose_computes_from_the_public_jwk() {
    for key in keys() {
        let jwk = key.public_jwk();
        let members = jwk.as_object().unwrap();
        // Only the RFC 7638 required members, and no private ones.
        let names: Vec<&str> = members.keys().map(String::as_str).collect();
        let want: &[&str] = match key.alg() {
            Alg::Es256 | Alg::Es384 => &["crv", "kty", "x", "y"],
            Alg::EdDsa => &["crv", "kty", "x"],
            _ => &["e", "kty", "n"],
        };
        assert_eq!(names, want, "{}", key.alg());
        let public = PublicKey::from_jwk(members).unwrap();
        assert_eq!(public.thumbprint(), key.thumbprint());
        assert_eq!(public.thumbprint_b64(), key.thumbprint_b64());
        assert_eq!(key.thumbprint_b64(), b64url_encode(key.thumbprint()));

        // And independently, the RFC 7638 canonical form hashed by hand.
        let m = |name: &str| members[name].as_str().unwrap().to_owned();
        let canonical = match key.alg() {
            Alg::Es256 | Alg::Es384 => {
                format!(r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#, m("crv"), m("x"), m("y"))
            }
            Alg::EdDsa => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, m("x")),
            _ => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, m("e"), m("n")),
        };
        assert_eq!(key.thumbprint(), &sha256(canonical.as_bytes()), "{}", key.alg());
        match key.alg() {
            Alg::Es256 => assert_eq!(m("crv"), "P-256"),
            Alg::Es384 => assert_eq!(m("crv"), "P-384"),
            Alg::EdDsa => {}
            _ => assert_eq!(m("e"), "AQAB"),
        }
    }
}

#[test]
fn debug_shows_the_algorithm_and_thumbprint_only() {
    for key in keys() {
        let debug = format!("{key:?}");
        assert_eq!(
            debug,
            format!("SigningKey {{ alg: {:?}, thumbprint: {:?}, .. }}", key.alg().name(), key.thumbprint_b64())
        );
        let alternate = format!("{key:#?}");
        assert!(!alternate.contains("PRIVATE") && alternate.len() < 120, "{alternate}");
        // Nothing of the private key: no run of its PKCS#8 bytes in any encoding.
        let der = key.to_pkcs8_der().unwrap();
        let secret = der.secret_pkcs8_der();
        let tail = &secret[secret.len() - 16..];
        for encoded in [b64url_encode(tail), STANDARD.encode(tail), format!("{tail:?}")] {
            assert!(!debug.contains(&encoded) && !alternate.contains(&encoded));
        }
        assert_eq!(format!("{der:?}"), "PrivatePkcs8KeyDer(\"[secret key elided]\")");
    }
}

#[test]
fn errors_name_no_key_material() {
    let shown = [
        SignError::Generate(Alg::Ps256).to_string(),
        SignError::KeyRejected { alg: Alg::Es256, reason: "WrongAlgorithm" }.to_string(),
        SignError::HeaderAlg(Alg::EdDsa).to_string(),
        SignError::PublicKey(JwkError::RsaKeySize(1024)).to_string(),
    ];
    assert_eq!(shown[1], "not a PKCS#8 private key for ES256: WrongAlgorithm");
    assert_eq!(shown[2], "JWS header \"alg\" is not EdDSA, the signing key's algorithm");
    assert!(shown[3].contains("1024"));
}

#[test]
fn signing_keys_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<SigningKey>();
}
