//! Phase 1, canonicalise: what the request names, in the one form every later phase uses.
//!
//! The host comes from the HTTP/2 `:authority` or `Host` ([`crate::uri::request_host`]),
//! parsed once: the SNI check here, the router and the forwarding headers all use this
//! value. The path must be in its canonical spelling ([`crate::uri::check_path`]).

use http::Request;

use super::ConnectionInfo;
use crate::answer::Rejection;
use crate::uri::{check_path, request_host};

/// Returns the canonical host the request names (`None` when an HTTP/1.0 or HTTP/2 request
/// names none).
///
/// Refuses with 400 `invalid_host` an HTTP/1.1 request without `Host`, several `Host`
/// headers, and a host that is not a plain name or IP literal; with 421
/// a host that differs from the TLS server name the client asked for (RFC 9110 §15.5.20),
/// and with 400 `ambiguous_path` a path servers could read differently.
pub fn canonicalise<B>(request: &Request<B>, conn: &ConnectionInfo) -> Result<Option<Box<str>>, Rejection> {
    let host = request_host(request.uri(), request.version(), request.headers())
        .map_err(|e| Rejection::BadRequest { reason: "invalid_host", description: e.to_string().into() })?;
    if let (Some(sni), Some(host)) = (conn.sni.as_deref(), host.as_deref())
        && !sni.eq_ignore_ascii_case(host)
    {
        return Err(Rejection::Misdirected);
    }
    if let Err(e) = check_path(request.uri().path()) {
        return Err(Rejection::BadRequest { reason: "ambiguous_path", description: e.to_string().into() });
    }
    Ok(host)
}
