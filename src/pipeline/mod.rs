//! The request pipeline: where every request is decided. [`GatewayState::handle`] runs the
//! phases in request order over one typed [`Exchange`]; each phase is a function with a
//! written contract, and a refusal short-circuits with `?` to the response phase.
//!
//! 1. **canonicalise** ([`canonical`]): the host the request names, checked against the
//!    TLS SNI (421), and the path in its one canonical spelling (400);
//! 2. **route** ([`route`]): the most specific route (404, 405 when only the method
//!    differs), in the same letter case as its prefix (400);
//! 3. **admit** ([`admit`]): the route's policy — body limit (413), token, binding, scopes
//!    (400/401/403/503) — gives a [`Principal`] or an [`Answer`] (a refusal, or a response
//!    the gateway makes itself);
//! 4. **forward**: the principal's request goes upstream ([`crate::proxy`]) and the answer
//!    streams back (502/504 on failure);
//! 5. **finish** ([`finish`]): sees the exchange and the response — DPoP nonce headers,
//!    `X-Request-Id`, metrics and the access log.
//!
//! A new phase goes between two of these as one more function over the exchange: a
//! request-side check between admit and forward (e.g. verifying a request signature), a
//! response-side step in finish (e.g. signing the response). Side data travels in the
//! [`Exchange`], never back through response extensions.

pub mod access_line;
pub mod admit;
pub mod as_edge;
pub mod canonical;
pub mod connection;
pub mod cors;
pub mod exchange;
pub mod finish;
pub mod forwarded_cert;
pub mod request_id;
pub mod route;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::answer::{Answer, Rejection};
use crate::auth::DpopRuntime;
use crate::auth::token::TokenValidator;
use crate::body::ProxyBody;
use crate::config::{Config, Route};
use crate::metrics::{Metrics, RouteMetrics};
use crate::principal::Principal;
use crate::proxy::{ForwardContext, Upstream, Upstreamed};
use crate::router::Router;
pub use connection::{ClientCertificate, ConnectionInfo};
pub use exchange::Exchange;
pub use request_id::X_REQUEST_ID;

/// What serves requests now; replaced whole by a configuration reload.
pub struct Live {
    pub state: Arc<GatewayState>,
    /// TLS for new connections (the certificate rotates on reload).
    pub server_tls: Arc<rustls::ServerConfig>,
}

/// Everything compiled from one configuration that requests read.
pub struct GatewayState {
    pub config: Config,
    pub router: Router,
    pub validator: TokenValidator,
    pub dpop: DpopRuntime,
    /// The routes as served, in `config.routes` order (the router's indices).
    pub routes: Vec<ServedRoute>,
    /// Metric handles of requests that matched no route (`route="-"`).
    pub unrouted: RouteMetrics,
    pub metrics: Arc<Metrics>,
    /// The `login:` entries, running, in `config.logins` order.
    pub logins: Vec<Arc<crate::login::LoginRuntime>>,
    /// Their session cookies' names: with the login-transaction cookies, the gateway's own
    /// cookies, which no upstream gets (empty without `login:`).
    pub login_cookies: Vec<String>,
    /// The RFC 9728 documents, with `resource_metadata:`.
    pub resource_metadata: Option<crate::answer::resource_metadata::ResourceMetadata>,
}

/// One route with what serving it takes: its upstream and its metric handles.
pub struct ServedRoute {
    pub spec: Route,
    pub upstream: Upstream,
    pub metrics: RouteMetrics,
}

impl GatewayState {
    /// Handles one request. Never fails: every answer becomes a response, and [`finish`]
    /// counts and logs it.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>, conn: Arc<ConnectionInfo>) -> Response<ProxyBody> {
        let mut exchange = Exchange::begin(&conn, &request);
        let outcome = self.decide(&mut exchange, request).await;
        finish::finish(&self, exchange, outcome)
    }

    /// Phases 1–4: the response of the upstream, or the gateway's own answer.
    async fn decide<'s>(
        &'s self,
        exchange: &mut Exchange<'s>,
        mut request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Answer> {
        request.headers_mut().insert(X_REQUEST_ID, exchange.request_id.clone());
        exchange.host = canonical::canonicalise(&request, exchange.conn)?;
        exchange.forwarded_cert = forwarded_cert::resolve(&self.config.listen, exchange.conn, request.headers())?;
        // The gateway's own endpoints come before any route: RFC 9728 metadata, the login
        // mode's pages.
        if let Some(metadata) = &self.resource_metadata
            && let Some(answer) = metadata.answer(request.method(), exchange.host.as_deref(), request.uri().path())
        {
            return Err(answer);
        }
        for login in &self.logins {
            if let Some(endpoint) = login.endpoint(request.method(), request.uri().path()) {
                return Err(login.answer(endpoint, request.uri().query(), request.headers()).await);
            }
        }
        // A CORS preflight is about the method it names: answered (or passed on) before
        // authentication, which it could never pass.
        if let Some((preflight, route)) = cors::preflight(self, exchange.host.as_deref(), &request) {
            exchange.route = Some(route);
            if let Some(cors) = &route.spec.cors {
                exchange.notes.cors_origin = cors::allowed_origin(cors, request.headers());
            }
            match preflight {
                cors::Preflight::Answer(answer) => return Err(answer),
                cors::Preflight::Forward(route) => {
                    exchange.notes.cors_passthrough = true;
                    if let Some(edge) = &route.spec.as_edge {
                        as_edge::check(edge, &request)?;
                    }
                    // Unauthenticated: whatever credential the client sent stays here.
                    exchange.principal = Some(crate::principal::Principal {
                        upstream_credential: crate::principal::UpstreamCredential::Strip,
                        ..crate::principal::Principal::anonymous()
                    });
                    let upstreamed = self.forward(exchange, route, request).await?;
                    exchange.upstream_time = Some(upstreamed.upstream_time);
                    return Ok(upstreamed.response);
                }
            }
        }
        let route = route::route(self, exchange.host.as_deref(), &request)?;
        exchange.route = Some(route);
        if let Some(cors) = &route.spec.cors {
            exchange.notes.cors_origin = cors::allowed_origin(cors, request.headers());
        }
        exchange.principal = Some(admit::admit(self, exchange, route, &request).await?);
        let upstreamed = self.forward(exchange, route, request).await?;
        exchange.upstream_time = Some(upstreamed.upstream_time);
        Ok(upstreamed.response)
    }

    /// Phase 4: sends the admitted request upstream as the exchange's principal.
    async fn forward(
        &self,
        exchange: &Exchange<'_>,
        route: &ServedRoute,
        request: Request<Incoming>,
    ) -> Result<Upstreamed, Rejection> {
        static ANONYMOUS: Principal = Principal::anonymous();
        let principal = exchange.principal.as_ref().unwrap_or(&ANONYMOUS);
        let conn = exchange.conn;
        let ctx = ForwardContext {
            forwarded: &conn.forwarded,
            host: exchange.host.as_deref(),
            client_cert_der: exchange.client_cert().map(|c| c.der.as_slice()),
            // Behind a proxy the gateway did not check the chain itself.
            // An AS edge passes any client certificate: the AS checks it against the
            // client's registration (tls_client_auth, self_signed_tls_client_auth).
            client_cert_trusted: (self.config.listen.tls.client_ca.is_some() && !conn.via_trusted_proxy)
                || principal.binding.certificate
                || route.spec.as_edge.is_some(),
            principal,
            max_body_bytes: self.config.limits.max_body_bytes,
            strip_headers: &self.config.listen.strip_headers,
            login_cookies: &self.login_cookies,
            session_route: matches!(route.spec.policy, crate::config::RoutePolicy::Session { .. }),
            upstream_proofs: exchange.notes.upstream_proofs.as_ref(),
        };
        route.upstream.forward(request, &route.spec, ctx).await
    }
}
