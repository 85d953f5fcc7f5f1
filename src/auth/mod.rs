//! The authentication decision for one request: credentials in, a validated token (or a
//! [`Rejection`]) out. Steps, in order: extract the credential, validate the token (cached),
//! check its binding, check the route's scopes.

pub mod binding;
pub mod credentials;
pub mod jwks;
pub mod jwks_fetch;
pub mod token;

use std::sync::Arc;

use http::HeaderMap;

use crate::config::RoutePolicy;
use crate::rejection::{AuthDenial, AuthErrorCode, Rejection};
use token::{TokenError, TokenValidator, ValidatedToken};

/// What a request proved about its caller.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A public route: nothing was checked.
    Public,
    /// The token was valid, bound as required and carried the route's scopes.
    Authorized(Arc<ValidatedToken>),
}

/// Decides whether a request may pass `policy`. `client_cert` is the SHA-256 thumbprint of
/// the connection's client certificate, `now` Unix seconds.
pub async fn authorize(
    validator: &TokenValidator,
    policy: &RoutePolicy,
    headers: &HeaderMap,
    query: Option<&str>,
    client_cert: Option<&[u8; 32]>,
    now: i64,
) -> Result<Outcome, Rejection> {
    let (binding, scopes) = match policy {
        RoutePolicy::Public => return Ok(Outcome::Public),
        RoutePolicy::Protected { binding, scopes } => (*binding, scopes),
    };
    let credential =
        credentials::extract(headers, query)?.ok_or_else(AuthDenial::missing_credentials)?;
    let token = validator
        .validate(credential.token(), now)
        .await
        .map_err(token_rejection)?;
    binding::check_binding(binding, &token.cnf, &credential, client_cert)?;
    if let Some(missing) = scopes.iter().find(|s| !token.has_scope(s)) {
        let mut denial = AuthDenial::new(
            AuthErrorCode::InsufficientScope,
            "insufficient_scope",
            format!("the access token lacks the scope `{missing}`"),
        );
        denial.scope = Some(scopes.join(" "));
        return Err(denial.into());
    }
    Ok(Outcome::Authorized(token))
}

fn token_rejection(error: TokenError) -> Rejection {
    match error {
        TokenError::KeysUnavailable => Rejection::KeysUnavailable,
        other => AuthDenial::new(
            AuthErrorCode::InvalidToken,
            other.reason(),
            other.to_string(),
        )
        .into(),
    }
}
