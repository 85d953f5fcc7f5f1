//! The claim checks of RFC 9068 §4 once the signature is verified: pure functions of the
//! claims, the issuer's policy and the time (no clock, network or cache here), so the
//! RFC's cases drop straight into unit tests.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Confirmation, TokenError, ValidatedToken};
use crate::config::{Issuer, normalise_typ};
use crate::jose;
use crate::principal::Identity;

/// The claims the gateway reads. Types are strict: a string `exp` is malformed, not absent.
#[derive(Debug, Deserialize)]
pub(super) struct Claims {
    pub(super) iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    iat: Option<serde_json::Number>,
    jti: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    scp: Option<Scp>,
    /// Present-but-null is kept as `Some(Null)`: a token that mentions `cnf` is held to it.
    #[serde(default, deserialize_with = "present")]
    cnf: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scp {
    List(Vec<String>),
    Text(String),
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

pub(super) fn parse_claims(payload: &[u8]) -> Result<Claims, TokenError> {
    let object = jose::strict_json_object(payload).map_err(|_| TokenError::Malformed)?;
    serde_json::from_value(serde_json::Value::Object(object)).map_err(|_| TokenError::Malformed)
}

/// `typ` must be one of the issuer's accepted values, compared as media types.
pub(super) fn typ_accepted(accepted: &[String], typ: Option<&str>) -> bool {
    typ.is_some_and(|t| {
        let t = normalise_typ(t);
        accepted.contains(&t)
    })
}

/// A NumericDate as whole seconds ([`jose::numeric_date`]); anything else is malformed.
fn seconds(n: &serde_json::Number) -> Result<i64, TokenError> {
    jose::numeric_date(n).ok_or(TokenError::Malformed)
}

/// The claim checks of RFC 9068 §4 after the signature is verified: a pure function of the
/// claims, the issuer's policy and the time.
pub(super) fn check_claims(claims: Claims, issuer: &Issuer, now: i64) -> Result<ValidatedToken, TokenError> {
    if claims.iss.as_deref() != Some(issuer.issuer.as_str()) {
        return Err(TokenError::UnknownIssuer);
    }
    let audience_ok = match &claims.aud {
        Some(Audience::One(a)) => issuer.audiences.contains(a),
        Some(Audience::Many(list)) => list.iter().any(|a| issuer.audiences.contains(a)),
        None => false,
    };
    if !audience_ok {
        return Err(TokenError::WrongAudience);
    }
    for claim in &issuer.required_claims {
        let present = match claim.as_str() {
            "sub" => claims.sub.is_some(),
            "client_id" => claims.client_id.is_some(),
            "iat" => claims.iat.is_some(),
            "jti" => claims.jti.is_some(),
            _ => true,
        };
        if !present {
            return Err(TokenError::MissingClaim(claim.clone()));
        }
    }
    let leeway = secs(issuer.leeway);
    let max_future = secs(issuer.max_future);
    let exp = seconds(claims.exp.as_ref().ok_or(TokenError::MissingExpiry)?)?;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = &claims.nbf
        && seconds(nbf)? > now.saturating_add(max_future)
    {
        return Err(TokenError::NotYetValid);
    }
    if let Some(iat) = &claims.iat
        && seconds(iat)? > now.saturating_add(max_future)
    {
        return Err(TokenError::IssuedInFuture);
    }
    let cnf = confirmation(claims.cnf.as_ref())?;
    let scopes = match (claims.scope, claims.scp) {
        (Some(scope), _) => scope.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        (None, Some(Scp::List(list))) => list,
        (None, Some(Scp::Text(text))) => text.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        (None, None) => Vec::new(),
    };
    let identity = Identity {
        issuer: issuer.issuer.clone(),
        subject: claims.sub,
        client_id: claims.client_id,
        scopes,
        jti: claims.jti,
    };
    Ok(ValidatedToken { identity: Arc::new(identity), expires_at: exp.saturating_add(leeway), cnf })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Reads `cnf`. A malformed `x5t#S256` is an error, not "unbound": a token that tries to be
/// bound must never pass as a bearer token.
fn confirmation(cnf: Option<&serde_json::Value>) -> Result<Confirmation, TokenError> {
    let cnf = match cnf {
        None => return Ok(Confirmation::default()),
        Some(serde_json::Value::Object(map)) if !map.is_empty() => map,
        Some(_) => return Err(TokenError::BadConfirmation),
    };
    let mut out = Confirmation::default();
    for (name, value) in cnf {
        match name.as_str() {
            "x5t#S256" => {
                let text = value.as_str().ok_or(TokenError::BadConfirmation)?;
                let bytes = jose::b64url_decode(text).map_err(|_| TokenError::BadConfirmation)?;
                out.x5t_s256 = Some(bytes.try_into().map_err(|_| TokenError::BadConfirmation)?);
            }
            "jkt" => {
                let text = value.as_str().ok_or(TokenError::BadConfirmation)?;
                let bytes = jose::b64url_decode(text).map_err(|_| TokenError::BadConfirmation)?;
                out.jkt = Some(bytes.try_into().map_err(|_| TokenError::BadConfirmation)?);
            }
            _ => out.unknown_method = true,
        }
    }
    Ok(out)
}
