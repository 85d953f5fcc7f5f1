//! The exchange: everything the phases learn about one request and its answer, in one
//! typed value that goes through them in order — the connection's facts, the request's id
//! and start, the canonical host, the route, the principal, the timings and the notes the
//! response phase needs (a fresh DPoP nonce, the credential the log fingerprints).
//!
//! Its `Debug` is safe to print: it holds no token, proof or cookie (the credential kept
//! for the log's fingerprint is a [`Secret`]).

use std::fmt;
use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, USER_AGENT};
use http::{HeaderValue, Method, Request};

use super::request_id::request_id;
use super::{ConnectionInfo, ServedRoute};
use crate::principal::Principal;
use crate::secret::Secret;

/// One request on its way through the pipeline.
pub struct Exchange<'s> {
    pub conn: &'s ConnectionInfo,
    /// `X-Request-Id`: the client's when sane, else generated.
    pub request_id: HeaderValue,
    pub started: Instant,
    pub method: Method,
    /// Whether the access log writes this request (decided once, at the start).
    pub logging: bool,
    /// The path as sent, without the query — kept only when logging.
    pub path: String,
    /// The client's `User-Agent` — kept only when logging.
    pub user_agent: Option<HeaderValue>,
    /// The canonical host the request named (canonicalise).
    pub host: Option<Box<str>>,
    /// Behind a trusted proxy: the client's certificate from `Client-Cert` (RFC 9440).
    pub forwarded_cert: Option<super::connection::ClientCertificate>,
    /// The route that matched (route).
    pub route: Option<&'s ServedRoute>,
    /// Who the request was admitted as (admit).
    pub principal: Option<Principal>,
    /// How long the upstream took to send its response head (forward).
    pub upstream_time: Option<Duration>,
    pub notes: Notes,
}

/// What the admit phase leaves for the response phase.
#[derive(Debug, Default)]
pub struct Notes {
    /// A new `DPoP-Nonce` for the client, when its nonce is ageing (RFC 9449 §8.2).
    pub fresh_nonce: Option<String>,
    /// The client's `Authorization` header, kept when logging, to fingerprint the token of
    /// a refused request. Never written anywhere as it is.
    pub credential: Option<Secret<HeaderValue>>,
    /// On a session route: signs a second upstream proof if the upstream asks for a nonce.
    pub upstream_proofs: Option<crate::login::UpstreamProofs>,
    /// On a route with `cors:`: the request's `Origin`, when the route allows it.
    pub cors_origin: Option<HeaderValue>,
    /// A preflight the upstream answered (`preflight: upstream`): its CORS headers stand.
    pub cors_passthrough: bool,
}

impl<'s> Exchange<'s> {
    /// The client's certificate: the connection's, or behind a trusted proxy the one it
    /// forwarded for this request (never the proxy's own).
    pub fn client_cert(&self) -> Option<&super::connection::ClientCertificate> {
        if self.conn.via_trusted_proxy { self.forwarded_cert.as_ref() } else { self.conn.client_cert.as_ref() }
    }

    /// Starts the exchange of `request` on `conn`.
    pub fn begin<B>(conn: &'s ConnectionInfo, request: &Request<B>) -> Self {
        let logging = tracing::enabled!(target: "access", tracing::Level::INFO);
        let (path, credential, user_agent) = if logging {
            let credential = request.headers().get(AUTHORIZATION).cloned().map(Secret::new);
            (request.uri().path().to_owned(), credential, request.headers().get(USER_AGENT).cloned())
        } else {
            (String::new(), None, None)
        };
        Exchange {
            conn,
            request_id: request_id(request.headers()),
            started: Instant::now(),
            method: request.method().clone(),
            logging,
            path,
            user_agent,
            host: None,
            forwarded_cert: None,
            route: None,
            principal: None,
            upstream_time: None,
            notes: Notes { credential, ..Notes::default() },
        }
    }
}

impl fmt::Debug for Exchange<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("conn", self.conn)
            .field("request_id", &self.request_id)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("host", &self.host)
            .field("route", &self.route.map(|r| r.spec.name.as_str()))
            .field("principal", &self.principal)
            .field("elapsed", &self.started.elapsed())
            .field("upstream_time", &self.upstream_time)
            .field("notes", &self.notes)
            .finish()
    }
}
