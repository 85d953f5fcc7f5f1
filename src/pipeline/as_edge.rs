//! In front of an authorization server (`routes[].as_edge`): on its authorization endpoint
//! only pushed authorization requests pass — a `GET` whose query is exactly `client_id` and
//! `request_uri`, each once, and no body (FAPI 2.0 §5.3.2.2: the AS shall require PAR, so
//! nothing a browser carries can change the request). Everything else is 400
//! `as_edge_not_pushed` and never reaches the AS. The client's certificate goes to the AS
//! on every request of the route (RFC 9440 `Client-Cert`, see `proxy`).

use http::{Method, Request};
use hyper::body::Body;

use crate::answer::Rejection;
use crate::config::AsEdge;

/// Whether `path` is the authorization endpoint `endpoint` as an AS's router might see it:
/// in any letter case, with a trailing slash, or anything below it.
fn is_under(path: &str, endpoint: &str) -> bool {
    let endpoint = endpoint.trim_end_matches('/');
    path.len() >= endpoint.len()
        && path.as_bytes()[..endpoint.len()].eq_ignore_ascii_case(endpoint.as_bytes())
        && matches!(path.as_bytes().get(endpoint.len()), None | Some(b'/'))
}

/// Refuses what the authorization endpoint must not get.
pub fn check<B: Body>(edge: &AsEdge, request: &Request<B>) -> Result<(), Rejection> {
    let path = request.uri().path();
    if !edge.authorization_paths.iter().any(|endpoint| is_under(path, endpoint)) {
        return Ok(());
    }
    let refused = |description: &'static str| Rejection::BadRequest {
        reason: "as_edge_not_pushed",
        description: description.into(),
    };
    if *request.method() != Method::GET && *request.method() != Method::HEAD {
        return Err(refused("the authorization endpoint takes only GET with client_id and request_uri"));
    }
    // Over HTTP/2 a body needs neither header: ask the body itself too.
    let has_body = request.headers().contains_key(http::header::TRANSFER_ENCODING)
        || request.headers().get(http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
        || !request.body().is_end_stream();
    if has_body {
        return Err(refused("the authorization endpoint takes no request body"));
    }
    let query = request.uri().query().unwrap_or("");
    // Some stacks split parameters on `;` too: `request_uri=urn:x;scope=…` would smuggle one.
    if query.contains(';') {
        return Err(refused("the authorization endpoint's query may not contain `;`"));
    }
    let mut client_id = 0;
    let mut request_uri = 0;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "client_id" if !value.is_empty() => client_id += 1,
            "request_uri" if !value.is_empty() => request_uri += 1,
            _ => {
                return Err(refused(
                    "only client_id and request_uri may reach the authorization endpoint: push the other parameters (PAR)",
                ));
            }
        }
    }
    if client_id != 1 || request_uri != 1 {
        return Err(refused("the authorization endpoint needs client_id and request_uri, once each (PAR)"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn edge() -> AsEdge {
        AsEdge { authorization_paths: vec!["/oauth/authorize".into()] }
    }

    fn get(target: &str) -> Request<http_body_util::Empty<bytes::Bytes>> {
        Request::get(target).body(http_body_util::Empty::new()).unwrap()
    }

    #[test]
    fn only_pushed_requests_reach_the_authorization_endpoint() {
        let ok = "/oauth/authorize?client_id=c1&request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3Aabc";
        assert_eq!(check(&edge(), &get(ok)), Ok(()));
        for bad in [
            "/oauth/authorize",
            "/oauth/authorize?client_id=c1",
            "/oauth/authorize?request_uri=urn:x",
            "/oauth/authorize?client_id=c1&request_uri=urn:x&scope=openid",
            "/oauth/authorize?client_id=c1&request_uri=urn:x&redirect_uri=https://evil.test",
            "/oauth/authorize?client_id=c1&client_id=c2&request_uri=urn:x",
            "/oauth/authorize?client_id=&request_uri=urn:x",
            "/oauth/authorize?response_type=code&client_id=c1&redirect_uri=https://a/cb",
            // The same endpoint as another router may see it.
            "/oauth/authorize/?response_type=code&client_id=c1",
            "/OAuth/Authorize?scope=x&client_id=c1&request_uri=urn:x",
            "/oauth/authorize/x?scope=x",
            "/oauth/authorize?client_id=c1&request_uri=urn:x;scope=admin",
        ] {
            let refusal = check(&edge(), &get(bad)).unwrap_err();
            assert_eq!(refusal.reason(), "as_edge_not_pushed", "{bad}");
        }
        let post = Request::post(ok)
            .header("content-length", "10")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        assert!(check(&edge(), &post).is_err());
        let with_body =
            Request::get(ok).header("content-length", "3").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
        assert!(check(&edge(), &with_body).is_err());
        // An HTTP/2 body announces itself by neither header.
        let h2_body = Request::get(ok).body(http_body_util::Full::new(bytes::Bytes::from_static(b"scope=x"))).unwrap();
        assert!(check(&edge(), &h2_body).is_err());
        // Other endpoints of the AS are not the gateway's business.
        assert_eq!(check(&edge(), &get("/oauth/token?anything=1")), Ok(()));
        assert_eq!(check(&edge(), &get("/oauth/authorizer?x=1")), Ok(()), "another endpoint, not below it");
    }
}
