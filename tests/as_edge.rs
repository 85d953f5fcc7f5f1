//! The gateway in front of an authorization server (`routes[].as_edge`), tested against a
//! real oidc-provider that reads the client's certificate from RFC 9440 `Client-Cert`: a
//! `tls_client_auth` client pushes its request through the gateway (its certificate reaches
//! the AS only as the gateway forwards it), and on the authorization endpoint only
//! `client_id` + `request_uri` pass — anything else is refused before the AS sees it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::oidc_provider::{AsClient, AsOptions, OidcProvider, form, pkce_pair};
use common::*;

const CLIENT: &str = "edge-client";
const REDIRECT: &str = "https://app.test/cb";

struct Edge {
    pki: TestPki,
    provider: OidcProvider,
    gateway: fapi_gateway::GatewayHandle,
}

impl Edge {
    async fn start() -> Edge {
        let pki = TestPki::new();
        let client = AsClient::tls_client_auth(CLIENT, &format!("CN={CLIENT}"), REDIRECT);
        let provider =
            OidcProvider::start(&pki, AsOptions { cert_from_header: true, ..AsOptions::default() }.client(client))
                .await;
        let authorization_path = path_of(&provider.endpoint("authorization_endpoint"));
        let yaml = format!(
            "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {cert}, key: {key} }} }}\n\
             routes:\n\
             \x20 - name: as\n    match: {{ path_prefix: / }}\n    upstream: https://localhost:{port}\n    upstream_ca: {ca}\n    auth: none\n    as_edge:\n      authorization_paths: [{authorization_path}]\n",
            cert = pki.server_cert_path().display(),
            key = pki.server_key_path().display(),
            port = provider.port(),
            ca = pki.ca_pem_path().display(),
        );
        let config = fapi_gateway::config::Config::from_yaml(&yaml, "edge.yaml", pki.dir())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let gateway = fapi_gateway::start(config).await.expect("gateway starts");
        Edge { pki, provider, gateway }
    }

    /// A client of the gateway presenting `cert`, following no redirect.
    fn client(&self, cert: Option<&ClientCert>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.pki.ca_pem().as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .resolve(GATEWAY_HOST, self.gateway.local_addr())
            .tls_certs_only([ca]);
        if let Some(cert) = cert {
            builder = builder.identity(cert.identity());
        }
        builder.build().unwrap()
    }

    fn url(&self, endpoint: &str) -> String {
        gateway_url(self.gateway.local_addr(), &path_of(&self.provider.endpoint(endpoint)))
    }

    /// PAR through the gateway; the AS's status and answer.
    async fn push(&self, cert: Option<&ClientCert>, extra: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let (_, challenge) = pkce_pair();
        let mut pairs = vec![
            ("client_id", CLIENT.to_string()),
            ("response_type", "code".into()),
            ("redirect_uri", REDIRECT.into()),
            ("scope", "openid".into()),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256".into()),
        ];
        pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let mut request = self
            .client(cert)
            .post(self.url("pushed_authorization_request_endpoint"))
            .header("content-type", "application/x-www-form-urlencoded");
        for (name, value) in extra.iter().filter(|(k, _)| k.starts_with("header:")) {
            request = request.header(name.trim_start_matches("header:"), *value);
        }
        pairs.retain(|(k, _)| !k.starts_with("header:"));
        let response = request.body(form(pairs)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, serde_json::from_str(&response.text().await.unwrap()).unwrap_or_default())
    }
}

fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest[rest.find('/').unwrap_or(rest.len())..].to_string()
}

#[tokio::test]
async fn a_tls_client_auth_client_pushes_through_the_gateway_with_its_certificate() {
    let edge = Edge::start().await;
    let cert = edge.pki.ca_signed_client(CLIENT);
    let (status, body) = edge.push(Some(&cert), &[]).await;
    assert_eq!(status, 201, "{body}\n{}", edge.provider.log());
    assert!(body["request_uri"].as_str().unwrap().starts_with("urn:ietf:params:oauth:request_uri:"));

    // Without a certificate the AS cannot authenticate the client — and a forged header
    // naming the client's certificate is removed by the gateway before the AS sees it.
    let forged = format!(":{}:", base64_standard(&cert.der));
    let (status, body) = edge.push(None, &[("header:client-cert", forged.as_str())]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    // Another certificate (self-signed, same subject): the AS refuses it.
    let impostor = edge.pki.self_signed_client(CLIENT);
    let (status, _) = edge.push(Some(&impostor), &[]).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn only_pushed_requests_reach_the_authorization_endpoint() {
    let edge = Edge::start().await;
    let cert = edge.pki.ca_signed_client(CLIENT);
    let (_, body) = edge.push(Some(&cert), &[]).await;
    let request_uri = body["request_uri"].as_str().unwrap().to_string();
    let authorize = edge.url("authorization_endpoint");
    let browser = edge.client(None);
    // Extra parameters beside the pushed request: refused by the gateway. The AS never saw
    // them: the request_uri (single use) still works afterwards.
    for extra in ["&scope=openid%20admin", "&redirect_uri=https%3A%2F%2Fevil.test%2Fcb", "&response_type=token"] {
        let url = format!("{authorize}?client_id={CLIENT}&request_uri={}{extra}", urlencode(&request_uri));
        let response = browser.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 400, "{extra}");
        let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert!(body["error_description"].as_str().unwrap().contains("PAR"), "{body}");
    }
    // A classic (unpushed) authorization request: refused too.
    let classic = format!("{authorize}?client_id={CLIENT}&response_type=code&redirect_uri={}", urlencode(REDIRECT));
    assert_eq!(browser.get(&classic).send().await.unwrap().status(), 400);
    let post = browser.post(format!("{authorize}?client_id={CLIENT}&request_uri={}", urlencode(&request_uri)));
    assert_eq!(post.body("x=1").send().await.unwrap().status(), 400);

    // The pushed request itself: the AS answers (it redirects to its login interaction).
    let pushed = format!("{authorize}?client_id={CLIENT}&request_uri={}", urlencode(&request_uri));
    let response = browser.get(&pushed).send().await.unwrap();
    assert_eq!(response.status(), 303, "{}", edge.provider.log());
    assert!(response.headers()["location"].to_str().unwrap().contains("/interaction/"));
}

#[test]
fn as_edge_settings_are_checked() {
    let pki = TestPki::new();
    let error = |route: &str| {
        let yaml = format!(
            "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {}, key: {} }} }}\n\
             issuers:\n  - {{ issuer: https://as.test, jwks_file: {}, audiences: [a] }}\n\
             routes:\n  - name: as\n    match: {{ path_prefix: /oauth }}\n    upstream: https://as.internal\n{route}",
            pki.server_cert_path().display(),
            pki.server_key_path().display(),
            write_file(pki.dir(), "jwks.json", r#"{"keys":[]}"#).display()
        );
        fapi_gateway::config::Config::from_yaml(&yaml, "t.yaml", pki.dir()).unwrap_err().to_string()
    };
    let e = error("    binding: mtls\n    as_edge: { authorization_paths: [/oauth/authorize] }\n");
    assert!(e.contains("routes[0].as_edge") && e.contains("auth: none"), "{e}");
    let e = error("    auth: none\n    as_edge: { authorization_paths: [/authorize] }\n");
    assert!(e.contains("is not a path under this route's path_prefix"), "{e}");
    let e = error("    auth: none\n    as_edge: { authorization_paths: [] }\n");
    assert!(e.contains("authorization endpoint"), "{e}");
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn urlencode(text: &str) -> String {
    form([("v", text)]).trim_start_matches("v=").to_string()
}
