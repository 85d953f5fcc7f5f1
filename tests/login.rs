//! The browser login mode against a real FAPI 2.0 authorization server (panva's
//! oidc-provider, `tests/as/`): PAR with `private_key_jwt`, PKCE and `dpop_jkt`; the JARM
//! callback; a DPoP-bound token redeemed with nonces; the session cookie; the session route
//! forwarding the session's token with a fresh proof; session info and logout; and the
//! refusals — forged, replayed and foreign callbacks, CSRF, bad `return_to` — each with
//! what the browser got and that no session was made.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::oidc_provider::{AsClient, AsOptions, OidcProvider, query_param, unverified_claims};
use common::*;
use fapi_gateway::config::Config;
use fapi_gateway::jose::{Alg, CompactJws, PublicKey, SigningKey, b64url_encode, sha256};
use serde_json::{Value, json};

const CLIENT_ID: &str = "web-bff";

/// What a [`Setup`] differs in.
#[derive(Clone, Copy)]
struct Variant {
    chained: bool,
    access_token_ttl: u64,
    rs_nonce: bool,
    as_requires_jar: bool,
    jar: bool,
    mtls: bool,
    query_mode: bool,
    /// Sessions in a real Redis, and a second gateway instance sharing them.
    redis: bool,
}

impl Default for Variant {
    fn default() -> Self {
        Variant {
            chained: false,
            access_token_ttl: AsOptions::default().access_token_ttl,
            rs_nonce: false,
            as_requires_jar: false,
            jar: false,
            mtls: false,
            query_mode: false,
            redis: false,
        }
    }
}

struct Setup {
    pki: TestPki,
    provider: OidcProvider,
    upstream: Upstream,
    gateway: fapi_gateway::GatewayHandle,
    port: u16,
    /// With [`Setup::chained`]: the resource server in front of the upstream — another
    /// fapi-gateway with a `binding: dpop` route for the AS's tokens.
    resource_server: Option<(fapi_gateway::GatewayHandle, u16)>,
    /// With `Variant::redis`: the shared store and the second instance (and its port).
    redis: Option<common::redis::RedisServer>,
    twin: Option<(fapi_gateway::GatewayHandle, u16)>,
}

impl Setup {
    async fn start() -> Setup {
        Self::start_with(false, AsOptions::default().access_token_ttl, false).await
    }

    /// The session route's upstream is a fapi-gateway resource server (`binding: dpop`,
    /// the AS's tokens) in front of the recording upstream.
    async fn chained() -> Setup {
        Self::start_with(true, AsOptions::default().access_token_ttl, false).await
    }

    /// `rs_nonce`: the resource server's route demands DPoP nonces.
    async fn start_with(chained: bool, access_token_ttl: u64, rs_nonce: bool) -> Setup {
        Self::start_full(Variant { chained, access_token_ttl, rs_nonce, ..Variant::default() }).await
    }

    /// `as_requires_jar`: the AS refuses pushed requests without a signed request object;
    /// `jar`: the login sends one.
    async fn start_full(variant: Variant) -> Setup {
        let Variant { chained, access_token_ttl, rs_nonce, as_requires_jar, jar, mtls, query_mode, redis } = variant;
        init();
        let pki = TestPki::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let redirect_uri = format!("https://{GATEWAY_HOST}:{port}/auth/callback");
        let client_key = SigningKey::generate(Alg::Es256).unwrap();
        let mut jwk = client_key.public_jwk();
        jwk["kid"] = json!("bff-1");
        let key_path = write_file(pki.dir(), "bff.key", &client_key.to_pkcs8_pem().unwrap());
        let options = AsOptions {
            require_nonce: true,
            access_token_ttl,
            require_signed_request_object: as_requires_jar,
            mtls,
            ..AsOptions::default()
        };
        // tls_client_auth: a certificate of the test client CA, matched by its subject.
        let (options, client_auth) = if mtls {
            let cert = pki.ca_signed_client("gateway-bff");
            let cert_path = write_file(pki.dir(), "bff-client.pem", &cert.cert_pem);
            let cert_key = write_file(pki.dir(), "bff-client.key", &cert.key_pem);
            (
                options.client(AsClient::tls_client_auth(CLIENT_ID, "CN=gateway-bff", &redirect_uri)),
                format!(
                    "    client_auth: tls_client_auth\n    client_cert: {}\n    client_cert_key: {}\n",
                    cert_path.display(),
                    cert_key.display()
                ),
            )
        } else {
            (
                options.client(
                    AsClient::private_key_jwt(CLIENT_ID, jwk, &redirect_uri)
                        .post_logout_redirect_uri(&format!("https://{GATEWAY_HOST}:{port}/bye")),
                ),
                format!("    client_key: {}\n    client_key_id: bff-1\n", key_path.display()),
            )
        };
        let provider = OidcProvider::start(&pki, options).await;
        let upstream = Upstream::start().await;
        let resource_server = match chained {
            false => None,
            true => Some(start_resource_server(&pki, &provider, &upstream, rs_nonce).await),
        };
        let (route_upstream, upstream_ca) = match &resource_server {
            None => (upstream.url(), String::new()),
            Some((_, rs_port)) => {
                (format!("https://localhost:{rs_port}"), format!("    upstream_ca: {}\n", pki.ca_pem_path().display()))
            }
        };
        let redis_server = match redis {
            true => Some(common::redis::RedisServer::start().await),
            false => None,
        };
        let session = match &redis_server {
            None => String::new(),
            Some(server) => {
                let secret = write_file(pki.dir(), "session.key", "a session secret every instance shares, 32+ bytes");
                format!(
                    "    session:\n      store: redis\n      redis: {{ url: \"{}\" }}\n      secret_file: {}\n",
                    server.url(),
                    secret.display()
                )
            }
        };
        let yaml = format!(
            r#"
listen:
  address: 127.0.0.1:{port}
  public_url: https://{GATEWAY_HOST}:{port}
  tls:
    cert: {cert}
    key: {key}
admin:
  address: 127.0.0.1:0
login:
  - name: web
    issuer: {issuer}
    ca: {ca}
    client_id: {CLIENT_ID}
{client_auth}    redirect_uri: {redirect_uri}
    scopes: [openid, accounts:read]
    resource: [https://api.test]
    return_to: [/app/]
    post_logout_redirect_uri: https://{GATEWAY_HOST}:{port}/bye
    request_object: {request_object}
    response_mode: {response_mode}
{session}
routes:
  - name: app-api
    match: {{ path_prefix: /app/api }}
    upstream: {route_upstream}
{upstream_ca}    auth: session
    login: web
  - name: site
    match: {{ path_prefix: /site }}
    upstream: {site_upstream}
    auth: none
"#,
            site_upstream = upstream.url(),
            cert = pki.server_cert_path().display(),
            key = pki.server_key_path().display(),
            issuer = provider.issuer(),
            ca = pki.ca_pem_path().display(),
            request_object = if jar { "signed" } else { "none" },
            response_mode = if query_mode { "query" } else { "jwt" },
        );
        let config = Config::from_yaml(&yaml, "login.yaml", pki.dir()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let gateway = fapi_gateway::start(config).await.expect("gateway starts");
        let twin = match redis {
            false => None,
            true => {
                let twin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
                let yaml =
                    yaml.replace(&format!("address: 127.0.0.1:{port}"), &format!("address: 127.0.0.1:{twin_port}"));
                let config = Config::from_yaml(&yaml, "twin.yaml", pki.dir()).unwrap();
                Some((fapi_gateway::start(config).await.expect("twin starts"), twin_port))
            }
        };
        Setup { pki, provider, upstream, gateway, port, resource_server, redis: redis_server, twin }
    }

    /// A browser-like client of the gateway that does not follow redirects.
    fn browser(&self) -> reqwest::Client {
        let tls = self.pki.rustls_client_config(None, &[b"http/1.1"]);
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .resolve(GATEWAY_HOST, self.gateway.local_addr())
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://{GATEWAY_HOST}:{}{path}", self.port)
    }

    /// A browser-like client of the second instance, and its URL for `path`.
    fn twin(&self, path: &str) -> (reqwest::Client, String) {
        let (twin, port) = self.twin.as_ref().expect("a twin");
        let tls = self.pki.rustls_client_config(None, &[b"http/1.1"]);
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .resolve(GATEWAY_HOST, twin.local_addr())
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap();
        (client, format!("https://{GATEWAY_HOST}:{port}{path}"))
    }

    /// Starts a login: the 303 and its transaction cookie (`name=value`).
    async fn begin(&self, return_to: &str) -> (String, String) {
        let response =
            self.browser().get(self.url(&format!("/auth/login?return_to={return_to}"))).send().await.unwrap();
        assert_eq!(response.status(), 303, "{:?}", response.text().await);
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let cookie = set_cookies(&response).into_iter().find(|c| c.starts_with("__Host-fapi-login-")).unwrap();
        (location, cookie.split(';').next().unwrap().to_string())
    }

    /// The AS's redirect back to the gateway, as path and query.
    async fn authorize(&self, location: &str) -> String {
        let callback = self.provider.walk_authorization(location).await;
        callback.strip_prefix(&self.url("")).unwrap_or_else(|| panic!("not our callback: {callback}")).to_string()
    }

    /// A whole login: the session cookie (`name=value`).
    async fn login(&self) -> String {
        let (location, tx_cookie) = self.begin("/app/home").await;
        let callback = self.authorize(&location).await;
        let response = self.browser().get(self.url(&callback)).header("cookie", tx_cookie).send().await.unwrap();
        assert_eq!(response.status(), 303, "{:?}", response.text().await);
        let session = set_cookies(&response).into_iter().find(|c| c.starts_with("__Host-fapi-session=")).unwrap();
        session.split(';').next().unwrap().to_string()
    }
}

/// A fapi-gateway protecting the recording upstream with the AS's DPoP-bound tokens.
async fn start_resource_server(
    pki: &TestPki,
    provider: &OidcProvider,
    upstream: &Upstream,
    nonce: bool,
) -> (fapi_gateway::GatewayHandle, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = format!(
        r#"
listen:
  address: 127.0.0.1:{port}
  public_url: https://localhost:{port}
  tls:
    cert: {cert}
    key: {key}
issuers:
  - issuer: {issuer}
    discovery: true
    ca: {ca}
    audiences: [https://api.test]
    algorithms: [ES256]
routes:
  - name: api
    match: {{ path_prefix: /app/api }}
    upstream: {upstream}
    binding: dpop
    scopes: [accounts:read]
    identity_headers: true
    nonce: {nonce}
"#,
        nonce = if nonce { "required" } else { "off" },
        cert = pki.server_cert_path().display(),
        key = pki.server_key_path().display(),
        issuer = provider.issuer(),
        ca = pki.ca_pem_path().display(),
        upstream = upstream.url(),
    );
    let config = Config::from_yaml(&yaml, "rs.yaml", pki.dir()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    (fapi_gateway::start(config).await.expect("resource server starts"), port)
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
}

#[tokio::test]
async fn a_browser_logs_in_calls_the_api_through_its_session_and_logs_out() {
    let s = Setup::start().await;

    // 1. Login: PAR, then only client_id and request_uri in the front channel.
    let (location, tx_cookie) = s.begin("/app/home").await;
    let authorization_endpoint = s.provider.endpoint("authorization_endpoint");
    assert!(location.starts_with(&format!("{authorization_endpoint}?")), "{location}");
    let query = location.split_once('?').unwrap().1;
    let names: Vec<String> = form_urlencoded::parse(query.as_bytes()).map(|(k, _)| k.into_owned()).collect();
    assert_eq!(names, ["client_id", "request_uri"]);
    assert!(query_param(&location, "request_uri").unwrap().starts_with("urn:ietf:params:oauth:request_uri:"));

    // 2. The AS sends the browser back with a JARM response only.
    let callback = s.authorize(&location).await;
    assert!(callback.starts_with("/auth/callback?response="), "{callback}");

    // 3. The callback: a new session cookie, the transaction cookie cleared, a clean 303.
    let response = s.browser().get(s.url(&callback)).header("cookie", &tx_cookie).send().await.unwrap();
    assert_eq!(response.status(), 303, "{:?}", response.text().await);
    assert_eq!(response.headers()["location"], "/app/home");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let cookies = set_cookies(&response);
    let session_cookie = cookies.iter().find(|c| c.starts_with("__Host-fapi-session=")).unwrap();
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(session_cookie.contains(attribute), "{attribute} missing: {session_cookie}");
    }
    let tx_name = tx_cookie.split('=').next().unwrap();
    assert!(cookies.iter().any(|c| c.starts_with(&format!("{tx_name}=;")) && c.contains("Max-Age=0")), "{cookies:?}");
    let session = session_cookie.split(';').next().unwrap().to_string();
    // The cookie is an id and a tag: no token in it.
    assert!(session.len() < 120 && !session.contains("eyJ"), "{session}");

    // 4. The API through the session: the upstream gets the DPoP-bound token and a fresh proof.
    let api = s.browser().get(s.url("/app/api/accounts?x=1")).header("cookie", format!("{session}; theme=dark"));
    let response = api.header("x-csrf", "1").send().await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let seen = s.upstream.last().unwrap();
    let authorization = seen.headers["authorization"].to_str().unwrap();
    let token = authorization.strip_prefix("DPoP ").expect("DPoP scheme");
    let proof = seen.headers["dpop"].to_str().unwrap();
    let jws = CompactJws::parse(proof, 8192).unwrap();
    let jwk = PublicKey::from_jwk(jws.header()["jwk"].as_object().unwrap()).unwrap();
    assert_eq!(jws.verify_with(Alg::Es256, &jwk), Ok(()));
    let proof_claims: Value = serde_json::from_slice(jws.payload()).unwrap();
    assert_eq!(proof_claims["htm"], "GET");
    assert_eq!(proof_claims["htu"], format!("{}/app/api/accounts", s.upstream.url()));
    assert_eq!(proof_claims["ath"], b64url_encode(&sha256(token.as_bytes())));
    let access = s.provider.verify_jwt(token);
    assert_eq!(access["cnf"]["jkt"], jwk.thumbprint_b64(), "the token is bound to the session's key");
    assert_eq!(access["sub"], s.provider.account());
    assert_eq!(seen.headers["cookie"], "theme=dark", "the session cookie stays at the gateway");
    assert!(seen.headers.get("x-csrf").is_none());
    // On any other route too: the gateway's cookies are its own (a public page's upstream
    // could replay the session cookie otherwise); other cookies and headers pass.
    let page = s.browser().get(s.url("/site/index.html")).header("cookie", format!("{session}; theme=dark"));
    let response = page.header("x-csrf", "1").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.headers["cookie"], "theme=dark", "no session cookie upstream of a public route");
    assert_eq!(seen.headers["x-csrf"], "1", "a public route's upstream may use the header");
    assert!(seen.headers.get("authorization").is_none());
    // Nor may an upstream plant (or end) a session: its Set-Cookie for the gateway's
    // cookies is dropped, others pass.
    let planted = s
        .browser()
        .get(s.url("/site/x"))
        .header("x-reply-header", "set-cookie: __Host-fapi-session=planted.tag; Path=/; Secure")
        .send()
        .await
        .unwrap();
    assert_eq!(planted.status(), 200);
    assert!(set_cookies(&planted).is_empty(), "{:?}", set_cookies(&planted));
    let other =
        s.browser().get(s.url("/site/x")).header("x-reply-header", "set-cookie: theme=dark").send().await.unwrap();
    assert_eq!(set_cookies(&other), ["theme=dark"]);

    // The AS was discovered: the instance is ready.
    let admin = s.gateway.admin_addr().unwrap();
    let (status, ready) = json_of(reqwest::get(format!("http://{admin}/readyz")).await.unwrap()).await;
    assert_eq!((status, &ready["login_as_discovered"]), (200, &json!(true)), "{ready}");

    // 5. Session info: who, never a token.
    let response = s.browser().get(s.url("/auth/session")).header("cookie", &session).header("x-csrf", "1");
    let (status, body) = json_of(response.send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["sub"], s.provider.account());
    assert!(!body.to_string().contains("eyJ"), "{body}");

    // 6. Logout: the session ends and the cookie is cleared.
    let response = s.browser().post(s.url("/auth/logout")).header("cookie", &session).header("x-csrf", "1");
    let response = response.send().await.unwrap();
    let cleared = set_cookies(&response);
    let (status, body) = json_of(response).await;
    assert_eq!((status, &body["logged_out"]), (200, &json!(true)), "{body}");
    let end_session = body["end_session_url"].as_str().unwrap();
    assert!(end_session.starts_with(&s.provider.endpoint("end_session_endpoint")), "{body}");
    assert_eq!(query_param(end_session, "client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(query_param(end_session, "post_logout_redirect_uri"), Some(s.url("/bye")));
    assert!(query_param(end_session, "id_token_hint").is_none(), "no ID token in the address bar");
    assert!(cleared.iter().any(|c| c.starts_with("__Host-fapi-session=;") && c.contains("Max-Age=0")));
    let hits = s.upstream.hits();
    let after = s.browser().get(s.url("/app/api/accounts")).header("cookie", &session).header("x-csrf", "1");
    let (status, body) = json_of(after.send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("login_required")), "{body}");
    assert_eq!(body["login_url"], "/auth/login");
    assert_eq!(s.upstream.hits(), hits, "nothing reached the upstream");
}

#[tokio::test]
async fn forged_replayed_and_foreign_callbacks_make_no_session() {
    let s = Setup::start().await;
    let (location, tx_cookie) = s.begin("/app/home").await;
    let callback = s.authorize(&location).await;
    let response_jwt = query_param(&s.url(&callback), "response").unwrap();

    // Without the browser's transaction cookie (a planted callback): refused, and spent.
    let foreign = s.browser().get(s.url(&callback)).send().await.unwrap();
    assert!(set_cookies(&foreign).is_empty());
    let (status, body) = json_of(foreign).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("login_other_browser")), "{body}");
    let again = s.browser().get(s.url(&callback)).header("cookie", &tx_cookie).send().await.unwrap();
    let (status, body) = json_of(again).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("login_unknown_state")), "{body}");

    // A response re-signed by another key, or altered: refused before the state is looked at.
    let mut claims = unverified_claims(&response_jwt);
    claims["code"] = json!("attacker-code");
    let forger = SigningKey::generate(Alg::Es256).unwrap();
    let kid = CompactJws::parse(&response_jwt, 8192).unwrap().header_str("kid").unwrap().to_string();
    let forged = forger.sign_compact(&json!({"kid": kid}), &claims).unwrap();
    let none_alg = format!(
        "{}.{}.",
        b64url_encode(json!({"alg": "none"}).to_string().as_bytes()),
        b64url_encode(claims.to_string().as_bytes())
    );
    for (response, reason) in
        [(forged.as_str(), "jarm_bad_signature"), (none_alg.as_str(), "jarm_malformed"), ("garbage", "jarm_malformed")]
    {
        let url = s.url(&format!("/auth/callback?response={response}"));
        let answer = s.browser().get(url).header("cookie", &tx_cookie).send().await.unwrap();
        assert!(set_cookies(&answer).is_empty(), "no cookie on a refusal");
        let (status, body) = json_of(answer).await;
        assert_eq!((status, body["error"].as_str()), (400, Some(reason)), "{body}");
    }
    let missing = s.browser().get(s.url("/auth/callback")).send().await.unwrap();
    let (status, body) = json_of(missing).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("login_no_response")), "{body}");
    // A browser navigating gets a page saying the same, escaped, with a way back.
    let page =
        s.browser().get(s.url("/auth/callback?response=x")).header("accept", "text/html,*/*").send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    assert!(html.contains("the authorization response is not a well-formed JWT"), "{html}");
    assert!(html.contains("<code>jarm_malformed</code>") && html.contains("href=\"/auth/login\""), "{html}");
}

#[tokio::test]
async fn session_requests_need_the_csrf_header_a_same_origin_and_a_session() {
    let s = Setup::start().await;
    let session = s.login().await;
    let get = |headers: &[(&str, &str)]| {
        let mut request = s.browser().get(s.url("/app/api/x"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let origin = s.url("");
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let cases: [Case<'_>; 5] = [
        (&[("cookie", &session)], 403, "session_csrf"),
        (&[("cookie", &session), ("x-csrf", "1"), ("origin", "https://evil.test")], 403, "session_csrf"),
        (&[("x-csrf", "1")], 401, "login_required"),
        (&[("cookie", "__Host-fapi-session=AAAA.BBBB"), ("x-csrf", "1")], 401, "login_required"),
        (&[("authorization", "Bearer stolen"), ("x-csrf", "1")], 401, "login_required"),
    ];
    for (headers, status, error) in cases {
        let (got, body) = json_of(get(headers).await.unwrap()).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(error)), "{headers:?}: {body}");
    }
    assert_eq!(s.upstream.hits(), 0, "no refused request reached the upstream");
    let ok = get(&[("cookie", &session), ("x-csrf", "1"), ("origin", &origin)]).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(s.upstream.hits(), 1);
}

#[tokio::test]
async fn return_to_must_be_an_allowed_relative_path() {
    let s = Setup::start().await;
    for bad in
        ["https://evil.test/app/", "//evil.test/app/", "/%5Cevil.test", "/app/%2e%2e/admin", "/other", "/app/%09x"]
    {
        let response = s.browser().get(s.url(&format!("/auth/login?return_to={bad}"))).send().await.unwrap();
        assert!(set_cookies(&response).is_empty());
        let (status, body) = json_of(response).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("login_bad_return_to")), "{bad}: {body}");
    }
    // A good one starts a login.
    let response = s.browser().get(s.url("/auth/login?return_to=/app/ok%3Fx%3D1")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(set_cookies(&response).len(), 1, "one transaction cookie");
}

#[tokio::test]
async fn the_session_token_passes_a_fapi_gateway_resource_server_with_its_proof() {
    // The chain the login mode exists for: browser -> login-mode gateway (session) ->
    // resource-server gateway (binding: dpop, the AS's tokens) -> upstream.
    let s = Setup::chained().await;
    let session = s.login().await;
    let call = |path: &str| s.browser().get(s.url(path)).header("cookie", &session).header("x-csrf", "1").send();
    let response = call("/app/api/accounts/1").await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let seen = s.upstream.last().unwrap();
    // The resource server validated the token and its proof, and says who called.
    assert_eq!(seen.headers["x-fapi-subject"], s.provider.account());
    assert_eq!(seen.headers["x-fapi-client-id"], CLIENT_ID);
    assert!(seen.headers.contains_key("x-fapi-dpop-jkt"));
    assert!(seen.headers.get("cookie").is_none());
    // Each request gets a proof of its own: a second call passes the replay check too.
    assert_eq!(call("/app/api/accounts/2").await.unwrap().status(), 200);
    assert_eq!(s.upstream.hits(), 2);
    let (_, rs_port) = s.resource_server.as_ref().unwrap();
    assert_ne!(*rs_port, s.port);
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_once_per_session_with_rotation() {
    // Access tokens live 5 s (under the 10 s refresh margin): every API call refreshes, and
    // the AS rotates the refresh token each time and kills the grant if an old one is reused.
    let s = Setup::start_with(false, 5, false).await;
    let session = s.login().await;
    let call = || s.browser().get(s.url("/app/api/x")).header("cookie", &session).header("x-csrf", "1").send();
    let token_seen = || {
        let seen = s.upstream.last().unwrap();
        seen.headers["authorization"].to_str().unwrap().to_string()
    };
    assert_eq!(call().await.unwrap().status(), 200);
    let first = token_seen();
    assert_eq!(call().await.unwrap().status(), 200);
    let second = token_seen();
    assert_ne!(first, second, "a refreshed token");
    // Concurrent calls share one refresh at a time: none reuses a rotated refresh token
    // (which would end the grant and make every later call fail).
    let results = futures_like_join(vec![call(), call(), call(), call()]).await;
    for response in results {
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(call().await.unwrap().status(), 200, "the grant is still alive");
    // Counted: every call refreshed, one session is open.
    let admin = s.gateway.admin_addr().unwrap();
    let metrics = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    let value = |series: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("{series}:\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value(r#"fapi_gateway_login_refreshes_total{login="web",result="ok"}"#) >= 7.0, "{metrics}");
    assert_eq!(value(r#"fapi_gateway_login_refreshes_total{login="web",result="refused"}"#), 0.0);
    assert_eq!(value(r#"fapi_gateway_login_sessions{login="web"}"#), 1.0);
    let token = second.strip_prefix("DPoP ").unwrap();
    assert_eq!(s.provider.verify_jwt(token)["sub"], s.provider.account());
}

/// Runs the futures concurrently on this task.
async fn futures_like_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut handles = Vec::new();
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, future) in pinned.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => outputs[i] = Some(out),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    handles.extend(outputs.into_iter().flatten());
    handles
}

#[tokio::test]
async fn a_real_browser_logs_in_calls_the_api_and_logs_out() {
    // Headless Chromium over WebDriver: the redirects, cookies and same-origin fetches are
    // the browser's own, not a test client's imitation of them.
    let s = Setup::start().await;
    let browser = common::webdriver::Browser::start(&[GATEWAY_HOST]).await;
    browser.go(&s.url("/auth/login?return_to=/app/home")).await;
    // Gateway -> AS (PAR'd request, automatic login and consent) -> callback -> /app/home.
    assert_eq!(browser.current_url().await, s.url("/app/home"));
    let cookies = browser.run("return document.cookie").await;
    assert!(!cookies.as_str().unwrap_or_default().contains("fapi"), "HttpOnly cookies only: {cookies}");

    let fetch = |method: &str, path: &str| {
        format!(
            "fetch('{path}', {{method: '{method}', headers: {{'X-CSRF': '1'}}}})\
             .then(r => r.text().then(t => done([r.status, t]))).catch(e => done([0, String(e)]))"
        )
    };
    let api = browser.run_async(&fetch("GET", "/app/api/accounts")).await;
    assert_eq!(api[0], 200, "{api}");
    let seen = s.upstream.last().unwrap();
    let token = seen.headers["authorization"].to_str().unwrap().strip_prefix("DPoP ").unwrap().to_string();
    assert_eq!(s.provider.verify_jwt(&token)["sub"], s.provider.account());
    assert!(seen.headers.contains_key("dpop"));
    // The browser's origin is the application's: its fetches carry it and pass.
    let session = browser.run_async(&fetch("GET", "/auth/session")).await;
    assert_eq!(session[0], 200, "{session}");
    assert!(session[1].as_str().unwrap().contains(s.provider.account()), "{session}");
    // Without the CSRF header the same browser is refused.
    let bare =
        browser.run_async("fetch('/app/api/accounts').then(r => done(r.status)).catch(e => done(String(e)))").await;
    assert_eq!(bare, 403);

    let logout = browser.run_async(&fetch("POST", "/auth/logout")).await;
    assert_eq!(logout[0], 200, "{logout}");
    let after = browser.run_async(&fetch("GET", "/app/api/accounts")).await;
    assert_eq!(after[0], 401, "{after}");
    assert!(after[1].as_str().unwrap().contains("login_required"), "{after}");
}

#[tokio::test]
async fn no_token_code_state_or_cookie_reaches_the_logs() {
    capture_logs();
    let s = Setup::start().await;
    let (location, tx_cookie) = s.begin("/app/home").await;
    let request_uri = query_param(&location, "request_uri").unwrap();
    let callback = s.authorize(&location).await;
    let jarm = query_param(&s.url(&callback), "response").unwrap();
    let claims = unverified_claims(&jarm);
    let response = s.browser().get(s.url(&callback)).header("cookie", &tx_cookie).send().await.unwrap();
    assert_eq!(response.status(), 303);
    let session = set_cookies(&response).into_iter().find(|c| c.starts_with("__Host-fapi-session=")).unwrap();
    let session = session.split(';').next().unwrap().to_string();
    let api = s.browser().get(s.url("/app/api/x")).header("cookie", &session).header("x-csrf", "1");
    assert_eq!(api.send().await.unwrap().status(), 200);
    let access_token = s.upstream.last().unwrap().headers["authorization"].to_str().unwrap().to_string();
    let proof = s.upstream.last().unwrap().headers["dpop"].to_str().unwrap().to_string();
    // A refused callback with the same secrets in it, and a logout.
    let _ = s.browser().get(s.url(&callback)).header("cookie", &tx_cookie).send().await.unwrap();
    let logout = s.browser().post(s.url("/auth/logout")).header("cookie", &session).header("x-csrf", "1");
    assert_eq!(logout.send().await.unwrap().status(), 200);

    let logs = captured_logs();
    assert!(logs.contains("login completed"), "the login was logged");
    let value = |cookie: &str| cookie.split_once('=').unwrap().1.to_string();
    for (what, secret) in [
        ("session cookie", value(&session)),
        ("transaction cookie", value(&tx_cookie)),
        ("request_uri", request_uri),
        ("JARM response", jarm.clone()),
        ("code", claims["code"].as_str().unwrap().to_string()),
        ("state", claims["state"].as_str().unwrap().to_string()),
        ("access token", access_token.trim_start_matches("DPoP ").to_string()),
        ("upstream proof", proof),
    ] {
        assert!(!logs.contains(&secret), "the {what} reached the logs");
        let tail = &secret[secret.len().saturating_sub(16)..];
        assert!(!logs.contains(tail), "part of the {what} reached the logs");
    }
}

#[tokio::test]
async fn an_upstream_nonce_is_answered_for_the_session_and_kept() {
    // The resource server demands DPoP nonces (as the FAPI conformance suite's does): the
    // first proof gets `use_dpop_nonce`; the gateway signs again with it and the browser
    // sees only the answer. Later requests carry the nonce from the start.
    let s = Setup::start_with(true, AsOptions::default().access_token_ttl, true).await;
    let session = s.login().await;
    let call = |path: &str| s.browser().get(s.url(path)).header("cookie", &session).header("x-csrf", "1").send();
    let response = call("/app/api/a").await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(s.upstream.hits(), 1);
    let response = call("/app/api/b").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(s.upstream.hits(), 2);
    // A body cannot be sent twice: a POST gets the answer as it is, and keeps the nonce.
    let post = s.browser().post(s.url("/app/api/c")).header("cookie", &session).header("x-csrf", "1").body("x=1");
    assert_eq!(post.send().await.unwrap().status(), 200, "the kept nonce was still good");
}

#[tokio::test]
async fn readiness_waits_for_the_authorization_server_and_logins_say_it_is_down() {
    // An AS that does not answer: /readyz says so, and a login is 503, not a hang or a 500.
    init();
    let pki = TestPki::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let key = SigningKey::generate(Alg::Es256).unwrap();
    let key_path = write_file(pki.dir(), "bff.key", &key.to_pkcs8_pem().unwrap());
    let yaml = format!(
        "listen:\n  address: 127.0.0.1:0\n  public_url: https://{GATEWAY_HOST}\n  tls:\n    cert: {}\n    key: {}\nadmin:\n  address: 127.0.0.1:0\nlogin:\n  - name: web\n    issuer: https://localhost:{closed}\n    ca: {}\n    client_id: c\n    client_key: {}\n    redirect_uri: https://{GATEWAY_HOST}/auth/callback\n    scopes: [openid]\n    return_to: [/app/]\n    timeout: 2s\nroutes:\n  - name: app\n    match: {{ path_prefix: /app/api }}\n    upstream: http://127.0.0.1:9\n    auth: session\n    login: web\n",
        pki.server_cert_path().display(),
        pki.server_key_path().display(),
        pki.ca_pem_path().display(),
        key_path.display(),
    );
    let config = Config::from_yaml(&yaml, "t.yaml", pki.dir()).unwrap_or_else(|e| panic!("{e}"));
    let gateway = fapi_gateway::start(config).await.unwrap();
    let admin = gateway.admin_addr().unwrap();
    let readyz = reqwest::get(format!("http://{admin}/readyz")).await.unwrap();
    let (status, body) = json_of(readyz).await;
    assert_eq!((status, &body["login_as_discovered"]), (503, &json!(false)), "{body}");
    let http = client(&pki, gateway.local_addr(), None, false);
    let login = http.get(gateway_url(gateway.local_addr(), "/auth/login")).send().await.unwrap();
    let (status, body) = json_of(login).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("login_as_unavailable")), "{body}");
}

#[tokio::test]
async fn a_signed_request_object_carries_the_login_to_an_as_that_requires_it() {
    // FAPI 2.0 Message Signing: the PAR holds a JAR (RFC 9101) signed with the client key,
    // and the AS refuses plain parameters.
    let s = Setup::start_full(Variant { as_requires_jar: true, jar: true, ..Variant::default() }).await;
    let session = s.login().await;
    let api = s.browser().get(s.url("/app/api/x")).header("cookie", &session).header("x-csrf", "1");
    assert_eq!(api.send().await.unwrap().status(), 200);
    // Such an AS refuses a login without one: 502, no transaction cookie.
    let plain = Setup::start_full(Variant { as_requires_jar: true, ..Variant::default() }).await;
    let response = plain.browser().get(plain.url("/auth/login")).send().await.unwrap();
    assert!(set_cookies(&response).is_empty());
    let (status, body) = json_of(response).await;
    assert_eq!((status, body["error"].as_str()), (502, Some("login_par_failed")), "{body}");
}

#[tokio::test]
async fn tls_client_auth_logs_in_over_the_mtls_aliases() {
    // RFC 8705 §2.1 client authentication: PAR and the token request on the AS's
    // mtls_endpoint_aliases with the client certificate, no client assertion.
    let s = Setup::start_full(Variant { mtls: true, ..Variant::default() }).await;
    let session = s.login().await;
    let api = s.browser().get(s.url("/app/api/x")).header("cookie", &session).header("x-csrf", "1");
    assert_eq!(api.send().await.unwrap().status(), 200);
    let token = s.upstream.last().unwrap().headers["authorization"].to_str().unwrap().to_string();
    let claims = s.provider.verify_jwt(token.strip_prefix("DPoP ").unwrap());
    assert_eq!(claims["client_id"], CLIENT_ID);
    assert!(claims["cnf"]["jkt"].is_string(), "still DPoP-bound: {claims}");
}

#[tokio::test]
async fn a_new_login_ends_the_session_the_browser_had() {
    // Session fixation: the callback mints a new session and the old cookie stops working.
    let s = Setup::start().await;
    let old = s.login().await;
    let (location, tx_cookie) = s.begin("/app/home").await;
    let callback = s.authorize(&location).await;
    let response =
        s.browser().get(s.url(&callback)).header("cookie", format!("{tx_cookie}; {old}")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    let new = set_cookies(&response).into_iter().find(|c| c.starts_with("__Host-fapi-session=")).unwrap();
    let new = new.split(';').next().unwrap().to_string();
    assert_ne!(new, old);
    let with = |cookie: &str| {
        s.browser().get(s.url("/app/api/x")).header("cookie", cookie.to_string()).header("x-csrf", "1").send()
    };
    assert_eq!(with(&old).await.unwrap().status(), 401, "the old session ended");
    assert_eq!(with(&new).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_plain_query_response_needs_the_right_iss() {
    // response_mode: query (RFC 9207): code, state and iss in the query; iss must be exact.
    let s = Setup::start_full(Variant { query_mode: true, ..Variant::default() }).await;
    let (location, tx_cookie) = s.begin("/app/home").await;
    let callback = s.authorize(&location).await;
    let url = s.url(&callback);
    assert!(query_param(&url, "code").is_some() && query_param(&url, "response").is_none(), "{callback}");
    assert_eq!(query_param(&url, "iss").as_deref(), Some(s.provider.issuer()));
    // A forged iss, or none: refused, and no session.
    for forged in [callback.replace("iss=", "iss=x"), callback.replace("iss=", "was=")] {
        let response = s.browser().get(s.url(&forged)).header("cookie", &tx_cookie).send().await.unwrap();
        assert!(set_cookies(&response).is_empty());
        let (status, body) = json_of(response).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("login_wrong_iss")), "{body}");
    }
    let response = s.browser().get(s.url(&callback)).header("cookie", &tx_cookie).send().await.unwrap();
    assert_eq!(response.status(), 303, "{:?}", response.text().await);
    assert!(set_cookies(&response).iter().any(|c| c.starts_with("__Host-fapi-session=")));
}

#[tokio::test]
async fn with_the_redis_store_a_login_and_its_session_span_instances() {
    // Two gateway instances sharing login state in a real Redis: a login started on A
    // completes on B, the session works on both, and a logout on A ends it on B.
    if common::redis::missing() {
        return;
    }
    let mut s = Setup::start_full(Variant { redis: true, ..Variant::default() }).await;
    let readyz = |s: &Setup| {
        let admin = s.gateway.admin_addr().unwrap();
        async move { json_of(reqwest::get(format!("http://{admin}/readyz")).await.unwrap()).await }
    };
    let (_, ready) = readyz(&s).await;
    assert_eq!(ready["login_store_reachable"], json!(true), "{ready}");
    let (location, tx_cookie) = s.begin("/app/home").await;
    let callback = s.authorize(&location).await;
    let (b, b_url) = s.twin(&callback);
    let response = b.get(b_url).header("cookie", &tx_cookie).send().await.unwrap();
    assert_eq!(response.status(), 303, "{:?}", response.text().await);
    let session = set_cookies(&response).into_iter().find(|c| c.starts_with("__Host-fapi-session=")).unwrap();
    let session = session.split(';').next().unwrap().to_string();
    // The callback is single use on every instance.
    let (b, b_url) = s.twin(&callback);
    let again = b.get(b_url).header("cookie", &tx_cookie).send().await.unwrap();
    assert_eq!(json_of(again).await.1["error"], "login_unknown_state");
    let (b, b_api) = s.twin("/app/api/x");
    let on_b = b.get(&b_api).header("cookie", &session).header("x-csrf", "1").send().await.unwrap();
    assert_eq!(on_b.status(), 200);
    let on_a = s.browser().get(s.url("/app/api/x")).header("cookie", &session).header("x-csrf", "1");
    assert_eq!(on_a.send().await.unwrap().status(), 200);
    assert_eq!(s.upstream.hits(), 2);
    let logout = s.browser().post(s.url("/auth/logout")).header("cookie", &session).header("x-csrf", "1");
    assert_eq!(logout.send().await.unwrap().status(), 200);
    let after = b.get(&b_api).header("cookie", &session).header("x-csrf", "1").send().await.unwrap();
    let (status, body) = json_of(after).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("login_required")), "{body}");
    assert_eq!(s.upstream.hits(), 2);

    // Redis gone: /readyz takes the instance out of rotation, and a login is 503, not a 500.
    s.redis.as_mut().unwrap().kill();
    let (status, ready) = readyz(&s).await;
    assert_eq!((status, &ready["login_store_reachable"]), (503, &json!(false)), "{ready}");
    let login = s.browser().get(s.url("/auth/login?return_to=/app/home")).send().await.unwrap();
    let (status, body) = json_of(login).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("session_store_unavailable")), "{body}");
}

#[test]
fn redis_server_is_installed() {
    assert!(common::redis::installed(), "{}", common::redis::MISSING);
}
