//! Malformed request bodies are the client's fault (issue 15.3): bad chunk sizes, a bare LF
//! in a chunk line, a chunk size that overflows, are answered 400 and never counted or
//! logged as upstream failures — a client must not be able to fake an upstream outage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

async fn metrics(env: &Env) -> String {
    let addr = env.gateway.as_ref().unwrap().admin_addr().expect("admin listener");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn malformed_chunked_bodies_are_400_and_not_upstream_errors() {
    capture_logs();
    let env = Env::start_with(Options { admin: true, ..Default::default() }).await;
    let head = format!("POST /public/upload HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
    for body in
        ["zz\r\nabc\r\n0\r\n\r\n", "3\nabc\r\n0\r\n\r\n", "fffffffffffffffffff\r\nabc\r\n0\r\n\r\n", "3\r\nabcdef"]
    {
        let request = format!("{head}{body}");
        let response = raw_exchange(&env, request.as_bytes()).await;
        // A body cut off by the client (the last case) may see the connection end first.
        if let Some(response) = response {
            response.assert_gateway_error(400, "invalid_request");
            assert_eq!(response.json()["error_description"], "the request body is malformed or ended early");
        } else {
            assert_eq!(body, "3\r\nabcdef", "no answer to {body:?}");
        }
    }
    let text = metrics(&env).await;
    // Every route's upstream-error series exists from the start, at 0: none may have moved.
    let upstream_errors: Vec<&str> = text.lines().filter(|l| l.contains("upstream_errors_total{")).collect();
    assert!(!upstream_errors.is_empty(), "{text}");
    assert!(upstream_errors.iter().all(|l| l.ends_with(" 0")), "{text}");
    assert!(
        text.contains(r#"fapi_gateway_requests_total{route="public",status="400",reason="bad_request_body"}"#),
        "{text}"
    );
    let logs = captured_logs();
    assert!(!logs.contains("upstream request failed"), "a client's body was logged as an upstream failure");
}
