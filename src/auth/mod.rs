//! The authentication decision for one request: credentials in, a validated token (or a
//! [`Rejection`]) out. Steps, in order: extract the credential, validate the token (cached),
//! check its binding — the connection's certificate, or a DPoP proof, its nonce and its
//! freshness — and the route's scopes.
//!
//! Called by the pipeline's admit phase, which turns the [`Outcome`] into a
//! [`crate::principal::Principal`]. This module never imports the listener, the pipeline or
//! the proxy; it fetches keys over [`crate::tls::client`].

pub mod binding;
pub mod credentials;
pub mod dpop;
pub mod jwks;
pub mod jwks_fetch;
pub mod redis_link;
pub mod token;

use std::sync::Arc;
use std::time::Instant;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method};

use crate::answer::{AuthDenial, AuthErrorCode, Rejection};
use crate::config::{Binding, DpopSettings, ForwardToken, RestartGuard, Route, RoutePolicy};
use crate::metrics::ReasonLabels;
use crate::principal::UpstreamCredential;
use crate::secret::Secret;
use binding::BindingCheck;
use credentials::Credential;
use dpop::nonce::{NonceIssuer, NonceStatus};
use dpop::replay::{Freshness, ReplayStore, replay_key};
use dpop::{ProofRequest, VerifiedProof};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use token::{TokenError, TokenValidator, ValidatedToken};

/// DPoP state shared by all requests: settings, nonce keys and the replay store.
pub struct DpopRuntime {
    pub settings: DpopSettings,
    /// The `algs` challenge parameter.
    pub algs: Arc<str>,
    pub nonces: Arc<NonceIssuer>,
    /// Proof keys already parsed, by proof header.
    pub keys: dpop::ProofKeyCache,
    pub replay: Arc<dyn ReplayStore>,
    /// The Redis store behind `replay`, when replay state is shared (for readiness checks).
    pub shared_replay: Option<Arc<dpop::replay_redis::RedisReplayStore>>,
    /// With the in-memory store: when it began to remember (seconds since the epoch). A
    /// proof older than that may have been accepted by the process before this one.
    pub replay_memory_since: Option<i64>,
    /// Counts proofs refused by the replay store, by reason.
    pub replay_refusals: Family<ReasonLabels, Counter>,
    /// The replay store's refusals are logged at most every few seconds (an outage
    /// refuses every DPoP request).
    pub refusal_log: Arc<crate::diagnostics::LogThrottle>,
}

/// How often a failing replay store is logged.
pub const REFUSAL_LOG_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// What the authentication step reads from a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    /// The path as the client sent it (before any rewrite).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// SHA-256 of the connection's client certificate.
    pub client_cert: Option<&'a [u8; 32]>,
    /// Unix seconds.
    pub now: i64,
    /// The connection's memo of its last validated token, if it keeps one.
    pub token_memo: Option<&'a token::TokenMemo>,
}

/// What a request proved about its caller.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A public route: nothing was checked.
    Public,
    /// The token was valid, bound as required and carried the route's scopes.
    Authorized {
        token: Arc<ValidatedToken>,
        /// The verified DPoP key thumbprint, for DPoP requests.
        dpop_jkt: Option<[u8; 32]>,
        /// A new `DPoP-Nonce` for the client, when its nonce is ageing.
        fresh_nonce: Option<String>,
    },
}

/// Decides whether a request may pass `route`'s policy. An authentication refusal offers
/// the challenges of the route's binding.
pub async fn authorize(
    validator: &TokenValidator,
    dpop: &DpopRuntime,
    route: &Route,
    request: RequestFacts<'_>,
) -> Result<Outcome, Rejection> {
    let (binding, scopes) = match &route.policy {
        RoutePolicy::Public => return Ok(Outcome::Public),
        RoutePolicy::Protected { binding, scopes } => (*binding, scopes.as_slice()),
        // Session routes are admitted by the login mode, never here: fail closed.
        RoutePolicy::Session { .. } => return Err(Rejection::Auth(AuthDenial::missing_credentials())),
    };
    authorize_protected(validator, dpop, route, binding, scopes, &request)
        .await
        .map_err(|rejection| rejection.offering(binding, &dpop.algs, route.resource_metadata_url.as_ref()))
}

/// [`authorize`] on a protected route; refusals do not name the route's challenges yet.
async fn authorize_protected(
    validator: &TokenValidator,
    dpop: &DpopRuntime,
    route: &Route,
    binding: Binding,
    scopes: &[String],
    request: &RequestFacts<'_>,
) -> Result<Outcome, Rejection> {
    let credential =
        credentials::extract(request.headers, request.query)?.ok_or_else(AuthDenial::missing_credentials)?;
    let (token, token_hash) = validator
        .validate_remembered(credential.token(), request.token_memo, request.now)
        .await
        .map_err(|e| token_rejection(e, &credential))?;
    let check = binding::check_binding(binding, &token.cnf, &credential, request.client_cert)?;
    let (dpop_jkt, fresh_nonce) = match check {
        BindingCheck::Satisfied => (None, None),
        BindingCheck::NeedsDpopProof(jkt) => {
            let (proof, fresh_nonce) = check_dpop(dpop, route, request, &token_hash, &jkt).await?;
            (Some(proof.jkt), fresh_nonce)
        }
    };
    if let Some(missing) = scopes.iter().find(|s| !token.has_scope(s)) {
        let description = format!("the access token lacks the scope `{missing}`");
        let mut denial = match credential {
            Credential::Bearer(_) => {
                AuthDenial::new(AuthErrorCode::InsufficientScope, "insufficient_scope", description)
            }
            Credential::Dpop(_) => {
                AuthDenial::dpop(AuthErrorCode::InsufficientScope, "insufficient_scope", description)
            }
        };
        denial.scope = Some(scopes.join(" ").into());
        return Err(denial.into());
    }
    Ok(Outcome::Authorized { token, dpop_jkt, fresh_nonce })
}

/// What the upstream gets in place of the client's credential headers on a protected
/// route (`forward_token`): `bearer` rewrites a `DPoP` scheme to `Bearer` (the upstream
/// need not know DPoP) and drops the proof; a `Bearer` header is passed on as it came.
pub fn upstream_credential(headers: &HeaderMap, mode: ForwardToken) -> UpstreamCredential {
    match mode {
        ForwardToken::AsIs => UpstreamCredential::AsSent,
        ForwardToken::Strip => UpstreamCredential::Strip,
        ForwardToken::Bearer => {
            let Some(sent) = headers.get(AUTHORIZATION) else {
                return UpstreamCredential::Strip;
            };
            let rewritten = sent
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| !scheme.eq_ignore_ascii_case("bearer"))
                .and_then(|(_, token)| HeaderValue::from_str(&format!("Bearer {}", token.trim_start())).ok());
            let authorization = Secret::new(rewritten.unwrap_or_else(|| sent.clone()));
            UpstreamCredential::Replace { authorization, dpop: None }
        }
    }
}

/// The DPoP part: the proof (RFC 9449 §4.3), the server nonce (§9) and replay (§11.1).
/// Returns the verified proof and, when the client's nonce is ageing, a fresh one.
async fn check_dpop(
    dpop: &DpopRuntime,
    route: &Route,
    request: &RequestFacts<'_>,
    token_hash: &[u8; 32],
    jkt: &[u8; 32],
) -> Result<(VerifiedProof, Option<String>), Rejection> {
    let proof = credentials::dpop_proof(request.headers)?;
    let url = crate::uri::request_url(&route.public_origin, request.path).map_err(|_| {
        AuthDenial::dpop(AuthErrorCode::InvalidDpopProof, "dpop_htu_mismatch", "the request URL cannot be matched")
    })?;
    let proof_request =
        ProofRequest { method: request.method.as_str(), url: &url, token_hash, bound_jkt: jkt, now: request.now };
    let verified = dpop::verify_proof(proof, &proof_request, &dpop.settings, &dpop.keys).map_err(|e| {
        let code = if e.is_token_error() { AuthErrorCode::InvalidToken } else { AuthErrorCode::InvalidDpopProof };
        AuthDenial::dpop(code, e.reason(), e.to_string())
    })?;
    let mut fresh_nonce = None;
    if route.nonce_required {
        let status = verified.nonce.as_deref().map_or(NonceStatus::Invalid, |n| dpop.nonces.check(n, request.now));
        match status {
            NonceStatus::Current => {}
            NonceStatus::Aging => fresh_nonce = Some(dpop.nonces.issue(request.now)),
            NonceStatus::Invalid => {
                let description = if verified.nonce.is_some() {
                    "the DPoP proof's nonce is invalid or expired; use the new DPoP-Nonce"
                } else {
                    "this resource requires a server-provided nonce in the DPoP proof"
                };
                let mut denial = AuthDenial::dpop(AuthErrorCode::UseDpopNonce, "dpop_nonce_required", description);
                denial.nonce = Some(dpop.nonces.issue(request.now).into());
                return Err(denial.into());
            }
        }
    }
    restart_guard(dpop, &verified, request.now)?;
    match dpop.replay.insert_if_absent(replay_key(&verified.jkt, &verified.jti), verified.jkt, Instant::now()).await {
        Ok(Freshness::Fresh) => Ok((verified, fresh_nonce)),
        Ok(Freshness::Replayed) => {
            dpop.replay_refusals.get_or_create(&ReasonLabels { reason: "replayed" }).inc();
            Err(AuthDenial::dpop(AuthErrorCode::InvalidDpopProof, "dpop_replayed", "the DPoP proof was already used")
                .into())
        }
        Err(dpop::replay::ReplayError::KeyOverQuota { retry_after }) => {
            dpop.replay_refusals.get_or_create(&ReasonLabels { reason: "key_over_quota" }).inc();
            // Rounded up: a client retrying on time must not be early.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            Err(Rejection::DpopKeyOverQuota { retry_after_secs: secs.max(1) })
        }
        Err(e) => {
            let reason = match e {
                dpop::replay::ReplayError::Full => "full",
                dpop::replay::ReplayError::Unavailable | dpop::replay::ReplayError::KeyOverQuota { .. } => {
                    "unavailable"
                }
            };
            dpop.replay_refusals.get_or_create(&ReasonLabels { reason }).inc();
            if let Some(held_back) = dpop.refusal_log.allow() {
                tracing::warn!(error = %e, held_back, "DPoP replay store refused an insert; failing closed");
            }
            Err(Rejection::ReplayStoreUnavailable)
        }
    }
}

/// Replay across a restart (the in-memory store starts empty): a proof made before the
/// store began to remember — or, with `restart_guard: skew`, within `max_future` (+ 5 s) of
/// it — passes only with a nonce minted by this process, which proves it was made since.
/// Otherwise `use_dpop_nonce` with such a nonce: a client retries once (RFC 9449 §8).
fn restart_guard(dpop: &DpopRuntime, verified: &VerifiedProof, now: i64) -> Result<(), Rejection> {
    let Some(since) = dpop.replay_memory_since else {
        return Ok(());
    };
    let first_safe_iat = match dpop.settings.restart_guard {
        RestartGuard::Start => since,
        RestartGuard::Skew => since + secs(dpop.settings.max_future) + RESTART_GUARD_MARGIN_SECS,
    };
    if verified.iat >= first_safe_iat || verified.nonce.as_deref().is_some_and(|n| dpop.nonces.minted_here(n, now)) {
        return Ok(());
    }
    let mut denial = AuthDenial::dpop(
        AuthErrorCode::UseDpopNonce,
        "dpop_nonce_after_restart",
        "the gateway restarted after this proof was made; send a new proof with the DPoP-Nonce",
    );
    denial.nonce = Some(dpop.nonces.issue_here(now).into());
    Err(denial.into())
}

/// Clock difference allowed between the process before a restart and the one after (the
/// replay window's margin too).
const RESTART_GUARD_MARGIN_SECS: i64 = 5;

fn secs(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

fn token_rejection(error: TokenError, credential: &Credential<'_>) -> Rejection {
    match error {
        TokenError::KeysUnavailable => return Rejection::KeysUnavailable,
        TokenError::IntrospectionUnavailable => return Rejection::IntrospectionUnavailable,
        _ => {}
    }
    let denial = match credential {
        Credential::Bearer(_) => AuthDenial::new(AuthErrorCode::InvalidToken, error.reason(), error.to_string()),
        Credential::Dpop(_) => AuthDenial::dpop(AuthErrorCode::InvalidToken, error.reason(), error.to_string()),
    };
    Rejection::Auth(denial)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn with_authorization(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static(value));
        h.insert(DPOP_HEADER, HeaderValue::from_static("proof"));
        h
    }

    const DPOP_HEADER: http::HeaderName = credentials::DPOP;

    fn replaced(credential: UpstreamCredential) -> (String, bool) {
        match credential {
            UpstreamCredential::Replace { authorization, dpop } => {
                (authorization.expose().to_str().unwrap().to_string(), dpop.is_some())
            }
            other => panic!("expected a replacement, got {other:?}"),
        }
    }

    #[test]
    fn forward_token_bearer_rewrites_the_dpop_scheme_and_drops_the_proof() {
        let dpop = with_authorization("DPoP  tok.en");
        assert_eq!(replaced(upstream_credential(&dpop, ForwardToken::Bearer)), ("Bearer tok.en".into(), false));
        // A Bearer header goes on as it came, whatever its case.
        let bearer = with_authorization("bearer tok.en");
        assert_eq!(replaced(upstream_credential(&bearer, ForwardToken::Bearer)), ("bearer tok.en".into(), false));
        assert!(matches!(upstream_credential(&dpop, ForwardToken::AsIs), UpstreamCredential::AsSent));
        assert!(matches!(upstream_credential(&dpop, ForwardToken::Strip), UpstreamCredential::Strip));
    }
}
