//! A replay store that is down refuses every DPoP request (503): the outage must show in the
//! logs once per period with a count of what was held back — not one warning per request.
//! (A test binary of its own: it counts lines in the process-wide log capture.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[tokio::test]
async fn a_replay_store_outage_is_logged_once_per_period() {
    capture_logs();
    // Nothing listens on port 1: every insert fails.
    let dpop = "dpop:\n  replay:\n    store: redis\n    url: redis://127.0.0.1:1/0\n    timeout: 200ms\n".to_string();
    let env = Env::start_with(Options { dpop, ..Default::default() }).await;
    let key = Signer::es256("k");
    let token = env.dpop_token(&key);
    for _ in 0..6 {
        assert_eq!(env.dpop_request("GET", "/dpop/x", &key, &token).await.status(), 503, "fails closed");
    }
    let logs = captured_logs();
    let refusals = logs.matches("DPoP replay store refused an insert").count();
    assert_eq!(refusals, 1, "six refusals within the period give one line: {logs}");
    let store_errors =
        logs.matches("DPoP replay store error").count() + logs.matches("DPoP replay store timed out").count();
    assert!(store_errors <= 1, "the store's own warning is throttled too: {logs}");
    assert_eq!(env.upstream.hits(), 0);
}
