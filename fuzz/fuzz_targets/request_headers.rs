//! Fuzzes the forwarded request's header hygiene: arbitrary header names and values, split
//! from the input, go through `prepare_request`, the cookie-crumb join and the forwarding
//! headers. No input may panic, and nothing the gateway owns may survive the hygiene.
#![no_main]

use std::net::SocketAddr;

use fapi_gateway::proxy::headers::{ForwardedHeaders, join_cookie_crumbs, prepare_request};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(&line[colon + 1..]))
        else {
            continue;
        };
        headers.append(name, value);
    }
    join_cookie_crumbs(&mut headers);
    assert!(headers.get_all(http::header::COOKIE).iter().count() <= 1);
    prepare_request(&mut headers);
    for owned in ["client-cert", "x-fapi-subject", "x-forwarded-for", "forwarded", "host", "connection", "x-ssl-client-verify"] {
        assert!(!headers.contains_key(owned), "{owned} survived");
    }
    let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap_or_else(|_| unreachable!());
    ForwardedHeaders::new(peer).apply(&mut headers, Some("gateway.test"));
});
