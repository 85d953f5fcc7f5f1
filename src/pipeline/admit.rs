//! Phase 3, admit: the route's policy decides who the request comes from — a
//! [`Principal`] — or answers it itself.
//!
//! Today the policy is a body-size limit and the route's `auth`: public, or a bound access
//! token with scopes ([`crate::auth`]). The login mode's session routes and its own
//! endpoints (which answer with redirects and cookies) will be decided here too.

use http::Request;
use http::header::CONTENT_LENGTH;

use super::{Exchange, GatewayState, ServedRoute};
use crate::answer::{Answer, Rejection};
use crate::auth::{self, Outcome, RequestFacts};
use crate::principal::{Principal, ProvenBinding};

/// Returns the request's principal: anonymous on a public route, else the token's identity,
/// the binding it proved and the credential the upstream gets (`forward_token`).
///
/// Answers with 413 when the declared body exceeds `limits.max_body_bytes`, and with the
/// authentication refusal (400/401/403, or 503 when keys or the replay store are
/// unavailable). A fresh DPoP nonce is left in the exchange's notes.
pub async fn admit<B: hyper::body::Body>(
    state: &GatewayState,
    exchange: &mut Exchange<'_>,
    route: &ServedRoute,
    request: &Request<B>,
) -> Result<Principal, Answer> {
    let declared =
        request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.config.limits.max_body_bytes) {
        return Err(Rejection::PayloadTooLarge.into());
    }
    if let Some(edge) = &route.spec.as_edge {
        super::as_edge::check(edge, request)?;
    }
    if let crate::config::RoutePolicy::Session { login, upstream_origin } = &route.spec.policy {
        let runtime = state.logins.get(*login).ok_or(Rejection::NotFound)?;
        let htu =
            format!("{upstream_origin}{}{}", route.spec.upstream.path().trim_end_matches('/'), request.uri().path());
        let (proofs, credential) = runtime.admit(request.method(), &htu, request.headers()).await?;
        exchange.notes.upstream_proofs = Some(proofs);
        return Ok(Principal {
            identity: None,
            binding: ProvenBinding { certificate: false, dpop_jkt: None },
            upstream_credential: credential,
        });
    }
    let conn = exchange.conn;
    let facts = RequestFacts {
        method: request.method(),
        path: request.uri().path(),
        query: request.uri().query(),
        headers: request.headers(),
        client_cert: exchange.client_cert().map(|c| &c.thumbprint),
        now: crate::jose::unix_now(),
        token_memo: Some(&conn.token_memo),
    };
    match auth::authorize(&state.validator, &state.dpop, &route.spec, facts).await? {
        Outcome::Public => Ok(Principal::anonymous()),
        Outcome::Authorized { token, dpop_jkt, fresh_nonce } => {
            exchange.notes.fresh_nonce = fresh_nonce;
            Ok(Principal {
                identity: Some(token.identity.clone()),
                binding: ProvenBinding { certificate: token.cnf.x5t_s256.is_some(), dpop_jkt },
                upstream_credential: auth::upstream_credential(request.headers(), route.spec.forward_token),
            })
        }
    }
}
