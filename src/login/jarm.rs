//! Verifying a JWT-secured authorization response (JARM §2.4, FAPI 2.0 Message Signing
//! §5.4.2): the `response` parameter is a JWS whose signature, `iss`, `aud` and `exp` are
//! checked before anything else in it is read — an error the AS reports (`error`) is
//! believed only after the same checks. `alg` comes from an allow-list (`none` and HMAC
//! cannot be represented); keys come from the AS's key set, by `kid`.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::auth::jwks::{IssuerKeys, KeyError};
use crate::jose::{Alg, CompactJws, JwsError, numeric_date, strict_json_object};

/// A JARM response larger than this is refused unread.
const MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// Tolerance on `exp` for clock skew.
const LEEWAY_SECS: i64 = 5;

/// Why an authorization response was refused. Each names the first check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JarmError {
    #[error("the authorization response is not a well-formed JWT")]
    Malformed,
    #[error("the authorization response's algorithm is not accepted")]
    AlgorithmNotAllowed,
    #[error("the authorization response names another issuer than the one this login went to")]
    WrongIssuer,
    #[error("the authorization server's signing keys are unavailable")]
    KeysUnavailable,
    #[error("no signing key of the authorization server matches the authorization response")]
    UnknownKey,
    #[error("the authorization response's signature is invalid")]
    BadSignature,
    #[error("the authorization response is not addressed to this client (aud)")]
    WrongAudience,
    #[error("the authorization response has no exp")]
    MissingExp,
    #[error("the authorization response has expired")]
    Expired,
    #[error("the authorization response has no state")]
    MissingState,
    #[error("the authorization response has neither a code nor an error")]
    MissingCode,
}

impl JarmError {
    /// Stable reason code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            JarmError::Malformed => "jarm_malformed",
            JarmError::AlgorithmNotAllowed => "jarm_alg_not_allowed",
            JarmError::WrongIssuer => "jarm_wrong_iss",
            JarmError::KeysUnavailable => "jarm_keys_unavailable",
            JarmError::UnknownKey => "jarm_unknown_kid",
            JarmError::BadSignature => "jarm_bad_signature",
            JarmError::WrongAudience => "jarm_wrong_aud",
            JarmError::MissingExp => "jarm_missing_exp",
            JarmError::Expired => "jarm_expired",
            JarmError::MissingState => "jarm_missing_state",
            JarmError::MissingCode => "jarm_missing_code",
        }
    }
}

/// A verified authorization response: a code, or the AS's own signed error.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizationResponse {
    pub state: String,
    pub outcome: Outcome,
}

/// What the AS answered.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    Code(String),
    /// `error` (and `error_description`) of a signed error response (RFC 6749 §4.1.2.1).
    Error {
        error: String,
        description: Option<String>,
    },
}

impl std::fmt::Debug for AuthorizationResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = match &self.outcome {
            Outcome::Code(_) => "code <redacted>".to_string(),
            Outcome::Error { error, .. } => format!("error {error}"),
        };
        f.debug_struct("AuthorizationResponse").field("state", &"<redacted>").field("outcome", &outcome).finish()
    }
}

/// What a response must match.
pub struct Expected<'a> {
    /// The issuer identifier this login's transaction went to (mix-up defence).
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// Accepted signature algorithms (the client's `authorization_signed_response_alg`).
    pub algorithms: &'a [Alg],
}

/// Verifies `response` (the `response` parameter of the redirect) as of `now`.
pub async fn verify(
    response: &str,
    expected: &Expected<'_>,
    keys: &Arc<IssuerKeys>,
    now: i64,
) -> Result<AuthorizationResponse, JarmError> {
    let jws = CompactJws::parse(response, MAX_RESPONSE_BYTES).map_err(|_| JarmError::Malformed)?;
    let alg = jws.alg().map_err(|e| match e {
        JwsError::UnsupportedAlg(_) => JarmError::AlgorithmNotAllowed,
        _ => JarmError::Malformed,
    })?;
    if !expected.algorithms.contains(&alg) {
        return Err(JarmError::AlgorithmNotAllowed);
    }
    let claims = strict_json_object(jws.payload()).map_err(|_| JarmError::Malformed)?;
    // The issuer first: a response from another AS never makes us fetch keys.
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(JarmError::WrongIssuer);
    }
    let kid = jws.header_str("kid");
    let set = keys.key_set(kid, alg).await.map_err(|e| match e {
        KeyError::Unavailable => JarmError::KeysUnavailable,
        KeyError::NoMatchingKey => JarmError::UnknownKey,
    })?;
    if !set.candidates(kid, alg).any(|key| jws.verify_with(alg, key).is_ok()) {
        return Err(JarmError::BadSignature);
    }
    // The signature holds: the claims are the AS's.
    if !audience_has(&claims, expected.client_id) {
        return Err(JarmError::WrongAudience);
    }
    let exp = claims.get("exp").and_then(Value::as_number).and_then(numeric_date).ok_or(JarmError::MissingExp)?;
    if exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(JarmError::Expired);
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let state = text("state").filter(|s| !s.is_empty()).ok_or(JarmError::MissingState)?;
    let outcome = match (text("code"), text("error")) {
        (_, Some(error)) => Outcome::Error { error, description: text("error_description") },
        (Some(code), None) if !code.is_empty() => Outcome::Code(code),
        _ => return Err(JarmError::MissingCode),
    };
    Ok(AuthorizationResponse { state, outcome })
}

/// `aud` is the client id, or an array holding it (JARM §2.1).
fn audience_has(claims: &Map<String, Value>, client_id: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(aud)) => aud == client_id,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::config::{Issuer, JwksCacheSettings, KeySource};
    use crate::jose::{SigningKey, unix_now};

    const ISSUER: &str = "https://as.test";

    /// The AS's key in a JWKS file, as [`IssuerKeys`] loads it.
    fn keys_of(key: &SigningKey, dir: &std::path::Path) -> Arc<IssuerKeys> {
        let mut jwk = key.public_jwk();
        jwk["kid"] = json!("as-1");
        let path = dir.join("jwks.json");
        std::fs::write(&path, json!({ "keys": [jwk] }).to_string()).unwrap();
        let issuer = Issuer {
            issuer: ISSUER.into(),
            keys: KeySource::File(path),
            ca: None,
            audiences: vec!["web".into()],
            algorithms: vec![Alg::Es256],
            typ: vec!["at+jwt".into()],
            required_claims: vec![],
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
        };
        Arc::new(IssuerKeys::new(&issuer).unwrap())
    }

    fn claims() -> Value {
        json!({"iss": ISSUER, "aud": "web", "exp": unix_now() + 60, "state": "s-1", "code": "c-1"})
    }

    fn signed(key: &SigningKey, claims: &Value) -> String {
        key.sign_compact(&json!({"kid": "as-1"}), claims).unwrap()
    }

    async fn check(response: &str, keys: &Arc<IssuerKeys>) -> Result<AuthorizationResponse, JarmError> {
        let expected = Expected { issuer: ISSUER, client_id: "web", algorithms: &[Alg::Es256] };
        verify(response, &expected, keys, unix_now()).await
    }

    fn with(name: &str, value: Value) -> Value {
        let mut c = claims();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(name);
        } else {
            c[name] = value;
        }
        c
    }

    #[tokio::test]
    async fn a_good_response_gives_its_code_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(Alg::Es256).unwrap();
        let keys = keys_of(&key, dir.path());
        let ok = check(&signed(&key, &claims()), &keys).await.unwrap();
        assert_eq!(ok.state, "s-1");
        assert!(ok.outcome == Outcome::Code("c-1".into()));
        let array_aud = check(&signed(&key, &with("aud", json!(["other", "web"]))), &keys).await.unwrap();
        assert_eq!(array_aud.state, "s-1");
        assert!(!format!("{ok:?}").contains("c-1") && !format!("{ok:?}").contains("s-1"), "Debug redacts");
    }

    #[tokio::test]
    async fn each_check_refuses_with_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(Alg::Es256).unwrap();
        let keys = keys_of(&key, dir.path());
        let other = SigningKey::generate(Alg::Es256).unwrap();
        let now = unix_now();
        let cases = [
            (signed(&key, &with("iss", json!("https://evil.test"))), JarmError::WrongIssuer),
            (signed(&key, &with("iss", Value::Null)), JarmError::WrongIssuer),
            (signed(&key, &with("aud", json!("someone-else"))), JarmError::WrongAudience),
            (signed(&key, &with("aud", Value::Null)), JarmError::WrongAudience),
            (signed(&key, &with("exp", Value::Null)), JarmError::MissingExp),
            (signed(&key, &with("exp", json!(now - 60))), JarmError::Expired),
            (signed(&key, &with("state", Value::Null)), JarmError::MissingState),
            (signed(&key, &with("code", Value::Null)), JarmError::MissingCode),
            (signed(&other, &claims()), JarmError::BadSignature),
            ("not.a.jwt".to_string(), JarmError::Malformed),
        ];
        for (response, expected) in cases {
            assert_eq!(check(&response, &keys).await.unwrap_err(), expected);
        }
        // alg none, an HMAC and an algorithm outside the allow-list.
        let body = crate::jose::b64url_encode(claims().to_string().as_bytes());
        for header in [json!({"alg": "none"}), json!({"alg": "HS256"})] {
            let forged = format!("{}.{body}.AAAA", crate::jose::b64url_encode(header.to_string().as_bytes()));
            assert_eq!(check(&forged, &keys).await.unwrap_err(), JarmError::AlgorithmNotAllowed);
        }
        let ps = SigningKey::generate(Alg::Ps256).unwrap();
        assert_eq!(check(&signed(&ps, &claims()), &keys).await.unwrap_err(), JarmError::AlgorithmNotAllowed);
        // A corrupted signature.
        let good = signed(&key, &claims());
        let corrupted = format!("{}AAAA", &good[..good.len() - 4]);
        assert_eq!(check(&corrupted, &keys).await.unwrap_err(), JarmError::BadSignature);
    }

    #[tokio::test]
    async fn a_signed_error_is_reported_only_after_the_checks() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(Alg::Es256).unwrap();
        let keys = keys_of(&key, dir.path());
        let error = with("code", Value::Null);
        let mut error = error.as_object().unwrap().clone();
        error.insert("error".into(), json!("access_denied"));
        error.insert("error_description".into(), json!("the user said no"));
        let answer = check(&signed(&key, &Value::Object(error.clone())), &keys).await.unwrap();
        assert!(
            answer.outcome
                == Outcome::Error { error: "access_denied".into(), description: Some("the user said no".into()) }
        );
        // The same error from a forger is a bad signature, not an AS error.
        let other = SigningKey::generate(Alg::Es256).unwrap();
        assert_eq!(check(&signed(&other, &Value::Object(error)), &keys).await.unwrap_err(), JarmError::BadSignature);
    }
}
