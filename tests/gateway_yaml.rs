//! The bundled `gateway.yaml` is documentation users copy: it must stay valid.

use std::path::Path;

use fapi_gateway::config::{Binding, Config, RoutePolicy};

#[test]
fn bundled_gateway_yaml_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen.public_url, "https://localhost:8443/");
    assert!(config.listen.tls.cert.ends_with("certs/server.pem"));
    assert_eq!(config.issuers.len(), 1);
    assert_eq!(config.admin, Some("127.0.0.1:9901".parse().unwrap()));
    let accounts = config.routes.iter().find(|r| r.name == "accounts").expect("accounts route");
    assert_eq!(
        accounts.policy,
        RoutePolicy::Protected { binding: Binding::Mtls, scopes: vec!["accounts:read".into()] }
    );
    let payments = config.routes.iter().find(|r| r.name == "payments").expect("payments route");
    assert_eq!(
        payments.policy,
        RoutePolicy::Protected { binding: Binding::Dpop, scopes: vec!["payments:write".into()] }
    );
    assert!(payments.nonce_required);
    assert_eq!(config.dpop.algs_challenge, "ES256 PS256 EdDSA");
    // The bundled certificate and key load and fit together.
    fapi_gateway::tls::server::server_config(&config.listen.tls).unwrap_or_else(|e| panic!("{e}"));
}
