//! Claim checks of RFC 9068 §4 and FAPI 2.0 clock-skew rules, as pure functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;

use super::claims::{check_claims, parse_claims, typ_accepted};
use super::*;
use crate::config::Issuer;
use crate::config::{JwksCacheSettings, KeySource};
use crate::jose::{self, Alg};

const NOW: i64 = 1_700_000_000;

fn issuer() -> Issuer {
    Issuer {
        issuer: "https://as.test".into(),
        keys: KeySource::File("unused".into()),
        ca: None,
        audiences: vec!["https://api.test".into()],
        algorithms: vec![Alg::Es256],
        typ: vec!["at+jwt".into()],
        required_claims: vec!["sub".into(), "client_id".into(), "iat".into(), "jti".into()],
        leeway: Duration::from_secs(5),
        max_future: Duration::from_secs(10),
        jwks_cache: JwksCacheSettings {
            default_ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            stale_if_error: Duration::from_secs(3600),
            refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        },
        introspection: None,
    }
}

fn check(claims: serde_json::Value) -> Result<ValidatedToken, TokenError> {
    let parsed = parse_claims(claims.to_string().as_bytes())?;
    check_claims(parsed, &issuer(), NOW)
}

fn valid() -> serde_json::Value {
    json!({"iss": "https://as.test", "aud": "https://api.test", "exp": NOW + 60, "iat": NOW, "sub": "u", "client_id": "c", "jti": "j", "scope": "a b"})
}

fn with(key: &str, value: serde_json::Value) -> serde_json::Value {
    let mut c = valid();
    c[key] = value;
    c
}

#[test]
fn valid_claims_pass_and_scopes_are_read() {
    let t = check(valid()).unwrap();
    assert_eq!(t.identity.scopes, vec!["a", "b"]);
    assert_eq!(t.identity.subject.as_deref(), Some("u"));
    assert!(!t.cnf.is_bound());
    let t = check(
        json!({"iss": "https://as.test", "aud": ["x", "https://api.test"], "exp": NOW + 60, "iat": NOW, "sub": "u", "client_id": "c", "jti": "j", "scp": ["s1", "s2"]}),
    )
    .unwrap();
    assert_eq!(t.identity.scopes, vec!["s1", "s2"]);
}

#[test]
fn expiry_is_required_and_enforced_with_leeway() {
    let mut c = valid();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(check(c).unwrap_err(), TokenError::MissingExpiry);
    assert!(check(with("exp", json!(NOW - 4))).is_ok(), "within the 5 s leeway");
    assert_eq!(check(with("exp", json!(NOW - 5))).unwrap_err(), TokenError::Expired);
    assert_eq!(check(with("exp", json!(NOW - 3600))).unwrap_err(), TokenError::Expired);
}

#[test]
fn exp_of_the_wrong_type_is_malformed() {
    assert_eq!(check(with("exp", json!("9999999999"))).unwrap_err(), TokenError::Malformed);
}

#[test]
fn iat_and_nbf_may_be_slightly_in_the_future() {
    assert!(check(with("iat", json!(NOW + 10))).is_ok());
    assert!(check(with("nbf", json!(NOW + 8))).is_ok());
    assert_eq!(check(with("iat", json!(NOW + 61))).unwrap_err(), TokenError::IssuedInFuture);
    assert_eq!(check(with("nbf", json!(NOW + 61))).unwrap_err(), TokenError::NotYetValid);
    assert_eq!(check(with("iat", json!(NOW + 11))).unwrap_err(), TokenError::IssuedInFuture);
}

#[test]
fn audience_must_contain_a_configured_value() {
    assert_eq!(check(with("aud", json!("https://other.test"))).unwrap_err(), TokenError::WrongAudience);
    assert_eq!(check(with("aud", json!(["a", "b"]))).unwrap_err(), TokenError::WrongAudience);
    let mut c = valid();
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(check(c).unwrap_err(), TokenError::WrongAudience);
}

#[test]
fn issuer_must_match_exactly() {
    assert_eq!(check(with("iss", json!("https://as.test/"))).unwrap_err(), TokenError::UnknownIssuer);
}

#[test]
fn cnf_is_parsed_strictly() {
    let x5t = "A4DtL2JmUMhAsvJj5tKyn64SqzmuXbMrJa0n761y5v0";
    let t = check(with("cnf", json!({"x5t#S256": x5t}))).unwrap();
    assert_eq!(t.cnf.x5t_s256.map(|b| jose::b64url_encode(&b)).as_deref(), Some(x5t));
    assert_eq!(check(with("cnf", json!({"x5t#S256": "short"}))).unwrap_err(), TokenError::BadConfirmation);
    assert_eq!(check(with("cnf", json!({"x5t#S256": 5}))).unwrap_err(), TokenError::BadConfirmation);
    let t = check(with("cnf", json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}))).unwrap();
    assert!(t.cnf.jkt.is_some());
    let t = check(with("cnf", json!({"jwk": {}}))).unwrap();
    assert!(t.cnf.unknown_method && t.cnf.is_bound());
}

#[test]
fn rfc9068_required_claims_are_enforced() {
    for claim in ["sub", "client_id", "iat", "jti"] {
        let mut c = valid();
        c.as_object_mut().unwrap().remove(claim);
        assert_eq!(check(c).unwrap_err(), TokenError::MissingClaim(claim.into()), "{claim}");
    }
}

#[test]
fn present_but_empty_cnf_is_refused() {
    assert_eq!(check(with("cnf", json!(null))).unwrap_err(), TokenError::BadConfirmation);
    assert_eq!(check(with("cnf", json!({}))).unwrap_err(), TokenError::BadConfirmation);
    assert_eq!(check(with("cnf", json!("x"))).unwrap_err(), TokenError::BadConfirmation);
}

#[test]
fn duplicate_claims_are_malformed() {
    let text =
        format!(r#"{{"iss":"https://as.test","aud":"https://api.test","exp":{},"exp":{}}}"#, NOW + 60, NOW + 6000);
    assert!(matches!(parse_claims(text.as_bytes()), Err(TokenError::Malformed)));
}

#[test]
fn typ_is_compared_as_a_media_type() {
    let accepted = vec!["at+jwt".to_string()];
    assert!(typ_accepted(&accepted, Some("at+jwt")));
    assert!(typ_accepted(&accepted, Some("application/AT+JWT")));
    assert!(typ_accepted(&accepted, Some("at+JWT")));
    assert!(!typ_accepted(&accepted, Some("JWT")));
    assert!(!typ_accepted(&accepted, None));
}
