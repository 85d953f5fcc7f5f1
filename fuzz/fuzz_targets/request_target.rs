//! Fuzzes what the canonicalise and route phases read from a request: the path check, URL
//! normalisation (DPoP `htu`) and the host parser. No input may panic, and the checks must
//! agree with each other: the URL the gateway expects for a canonical path is what a client
//! that normalises the same URL would send, and a host `request_host` accepts is lower
//! case, portless and safe to copy into a header.
#![no_main]

use fapi_gateway::uri::{check_path, normalise, request_host, request_url};
use http::{HeaderMap, HeaderValue, Uri, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (host, path) = text.split_once('\n').unwrap_or((text, "/"));
    if check_path(path).is_ok() {
        if let Ok(url) = request_url("https://gateway.test", path) {
            // Expected and presented `htu` are normalised alike.
            if !path.contains(['?', '#']) {
                assert_eq!(normalise(&format!("https://gateway.test{path}")).ok().as_ref(), Some(&url), "{path:?}");
            }
        }
    }
    let _ = normalise(text);
    if let Ok(value) = HeaderValue::from_str(host) {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, value);
        if let Ok(Some(canonical)) = request_host(&Uri::from_static("/"), Version::HTTP_11, &headers) {
            assert!(!canonical.is_empty() && canonical.len() <= 255);
            assert!(!canonical.bytes().any(|b| b.is_ascii_uppercase() || matches!(b, b'"' | b',' | b';' | b' ')));
            assert!(HeaderValue::from_str(&canonical).is_ok());
        }
    }
});
