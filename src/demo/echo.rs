//! The demo's upstream: it answers every request with what reached it (the method, the
//! path, the identity headers, whether a client certificate, an `Authorization` scheme, a
//! DPoP proof or a cookie came), and serves the login story's single-page app at `/app/`
//! (`app/index.html`, `app/app.js`), which the gateway's `app` route passes through.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const APP_PAGE: &str = include_str!("app/index.html");
const APP_SCRIPT: &str = include_str!("app/app.js");

/// Serves the echo upstream on `listener` until the process ends.
pub fn serve(listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(answer(&request))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
}

fn answer<B>(request: &hyper::Request<B>) -> hyper::Response<Full<Bytes>> {
    let path = request.uri().path();
    match path {
        "/app" | "/app/" | "/app/index.html" => asset(APP_PAGE, "text/html; charset=utf-8"),
        "/app/app.js" => asset(APP_SCRIPT, "text/javascript; charset=utf-8"),
        _ => echo(request),
    }
}

fn echo<B>(request: &hyper::Request<B>) -> hyper::Response<Full<Bytes>> {
    let headers = request.headers();
    let seen = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    let present = |n: &str| if headers.contains_key(n) { "present" } else { "-" };
    // The scheme only: the token itself is not echoed back.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map_or("-", |v| v.split(' ').next().unwrap_or("-"));
    let body = serde_json::json!({
        "upstream": "echo",
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "x-fapi-subject": seen("x-fapi-subject"),
        "x-fapi-client-id": seen("x-fapi-client-id"),
        "x-fapi-scopes": seen("x-fapi-scopes"),
        "client-cert": present("client-cert"),
        "authorization": authorization,
        "dpop": present("dpop"),
        "cookie": present("cookie"),
    });
    let mut response = hyper::Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn asset(text: &'static str, content_type: &'static str) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(response: hyper::Response<Full<Bytes>>) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn it_says_what_came_without_echoing_the_token() {
        let request = hyper::Request::get("/app/api/accounts/1")
            .header("authorization", "DPoP eyJ.secret.token")
            .header("dpop", "eyJ.proof.sig")
            .body(())
            .unwrap();
        let text = body(answer(&request)).await;
        let seen: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (seen["authorization"].as_str(), seen["dpop"].as_str(), seen["cookie"].as_str()),
            (Some("DPoP"), Some("present"), Some("-"))
        );
        assert!(!text.contains("secret"), "{text}");
    }

    #[tokio::test]
    async fn the_app_is_served_with_a_strict_policy() {
        let page = answer(&hyper::Request::get("/app/").body(()).unwrap());
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert!(page.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'self'"));
        assert!(body(page).await.contains("<script src=\"/app/app.js\"></script>"));
        let script = answer(&hyper::Request::get("/app/app.js").body(()).unwrap());
        assert!(body(script).await.contains("'X-CSRF': '1'"));
    }
}
