//! Fairness in the in-memory DPoP replay store (`dpop.replay.per_key_limit`): one DPoP key
//! flooding the gateway with fresh proofs gets 429 with `Retry-After` once it has its share
//! of the store, while another client's proofs still pass; replays are still replays.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[tokio::test]
async fn a_flooding_key_gets_429_and_another_client_is_unaffected() {
    let env = Env::start_with(Options {
        dpop: "dpop:\n  replay:\n    max_entries: 1000\n    per_key_limit: 20\n".into(),
        admin: true,
        ..Options::default()
    })
    .await;
    let flooder = Signer::es256("flooder");
    let token = env.dpop_token(&flooder);
    for i in 0..20 {
        assert_eq!(env.dpop_request("GET", "/dpop/x", &flooder, &token).await.status(), 200, "proof {i}");
    }
    let mut refused = 0;
    for _ in 0..50 {
        let response = env.dpop_request("GET", "/dpop/x", &flooder, &token).await;
        assert_eq!(response.status(), 429);
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((60..=90).contains(&retry_after), "when its oldest proofs leave the window: {retry_after}");
        refused += 1;
    }
    assert_eq!(refused, 50);
    // The flooder's proofs were not remembered: the store holds its 20, not 70.
    let admin = env.gateway.as_ref().unwrap().admin_addr().unwrap();
    let metrics = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("fapi_gateway_dpop_replay_entries 20"), "{metrics}");
    assert!(metrics.contains(r#"fapi_gateway_dpop_replay_refusals_total{reason="key_over_quota"} 50"#), "{metrics}");
    assert!(metrics.contains(r#"reason="dpop_key_over_quota""#), "counted by reason: {metrics}");

    // Another client: served.
    let other = Signer::es256("other");
    let other_token = env.dpop_token(&other);
    assert_eq!(env.dpop_request("GET", "/dpop/x", &other, &other_token).await.status(), 200);
    assert_eq!(env.upstream.hits(), 21, "no refused proof reached the upstream");

    // A replay of one of the flooder's accepted proofs is still a replay (401), not 429.
    let proof = flooder.dpop_proof("GET", &env.public_url("/dpop/y"), Some(&token));
    assert_eq!(env.send_dpop("GET", "/dpop/y", &token, &proof).await.status(), 429);
    let body = env.send_dpop("GET", "/dpop/y", &token, &proof).await;
    assert_eq!(body.status(), 429, "a refused proof was never remembered, so it is not a replay either");
}

#[test]
fn the_default_is_half_of_the_store() {
    let pki = TestPki::new();
    let yaml = |replay: &str| {
        format!(
            "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {}, key: {} }} }}\n\
             dpop:\n  replay:\n{replay}\
             routes:\n  - {{ name: r, match: {{ path_prefix: /r }}, upstream: http://127.0.0.1:9, auth: none }}\n",
            pki.server_cert_path().display(),
            pki.server_key_path().display()
        )
    };
    let load = |replay: &str| fapi_gateway::config::Config::from_yaml(&yaml(replay), "t.yaml", pki.dir()).unwrap();
    assert_eq!(load("    max_entries: 5000\n").dpop.replay_per_key_limit, 2_500);
    assert_eq!(load("    store: memory\n").dpop.replay_per_key_limit, 500_000);
    assert_eq!(load("    per_key_limit: 7\n").dpop.replay_per_key_limit, 7);
}
