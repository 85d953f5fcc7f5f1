//! A whole test environment: PKI, HTTPS JWKS server, recording upstream and a running
//! gateway configured from YAML, plus helpers to mint tokens and call the gateway.

use std::net::SocketAddr;
use std::path::Path;

use fapi_gateway::GatewayHandle;
use fapi_gateway::config::Config;
use serde_json::{Value, json};

use super::{ClientCert, JwksServer, Signer, TestPki, Upstream, claims, client, gateway_url};

pub const AUDIENCE: &str = "https://api.test";

/// Knobs for [`Env::start_with`].
pub struct Options {
    /// Extra lines appended under the issuer entry (indented by 4 spaces).
    pub issuer_extra: String,
    /// `client_auth` of the listener.
    pub client_auth: &'static str,
    /// Extra YAML at the end of the listener's `tls` mapping (indented by 4 spaces);
    /// `{client_ca}` stands for the test PKI's client CA file.
    pub tls_extra: String,
    /// `limits` mapping body (indented by 2 spaces).
    pub limits: String,
    /// Replaces the issuer's `jwks_uri: …` line (e.g. `discovery: true`); `{jwks_uri}`
    /// stands for the JWKS server's key URL.
    pub key_source: Option<String>,
    /// Text after the route list (YAML): a top-level section such as `dpop:`, or more
    /// routes (indented by 2 spaces); `{up}` stands for the upstream's URL.
    pub dpop: String,
    /// Extra keys of the `listen` mapping (indented by 2 spaces).
    pub listen_extra: String,
    /// Start the admin listener on an ephemeral loopback port.
    pub admin: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            issuer_extra: String::new(),
            client_auth: "optional",
            tls_extra: String::new(),
            limits: "  max_body_bytes: 1024\n".into(),
            key_source: None,
            dpop: String::new(),
            listen_extra: String::new(),
            admin: false,
        }
    }
}

pub struct Env {
    pub pki: TestPki,
    pub jwks: JwksServer,
    pub upstream: Upstream,
    pub signer: Signer,
    pub gateway: Option<GatewayHandle>,
    pub addr: SocketAddr,
    /// The configuration the gateway was started with.
    pub yaml: String,
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Env {
        super::init();
        let pki = TestPki::new();
        let signer = Signer::es256("key-1");
        let jwks = JwksServer::start(&pki, vec![signer.public_jwk()]).await;
        let upstream = Upstream::start().await;
        let yaml = config_yaml(&pki, &jwks, &upstream, &options);
        let config = Config::from_yaml(&yaml, "test.yaml", pki.dir()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let gateway = fapi_gateway::start(config).await.expect("gateway starts");
        let addr = gateway.local_addr();
        Env { pki, jwks, upstream, signer, gateway: Some(gateway), addr, yaml }
    }

    /// A second gateway instance from the same configuration (same issuer, upstream,
    /// certificates), as behind a load balancer.
    pub async fn start_twin(&self) -> GatewayHandle {
        let config = Config::from_yaml(&self.yaml, "test.yaml", self.pki.dir()).expect("config");
        fapi_gateway::start(config).await.expect("twin starts")
    }

    /// Like [`Env::send_dpop`] but to another instance at `addr`.
    pub async fn send_dpop_to(&self, addr: SocketAddr, path: &str, token: &str, proof: &str) -> reqwest::Response {
        client(&self.pki, addr, None, false)
            .get(gateway_url(addr, path))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .send()
            .await
            .expect("request completes")
    }

    pub fn issuer(&self) -> String {
        self.jwks.issuer()
    }

    /// Valid RFC 9068 claims for this environment's issuer and audience.
    pub fn claims(&self) -> Value {
        claims(&self.issuer(), AUDIENCE)
    }

    /// A token signed by the environment's signer with `claims`.
    pub fn token(&self, claims: &Value) -> String {
        self.signer.jwt(claims)
    }

    /// An unbound token.
    pub fn bearer_token(&self) -> String {
        self.token(&self.claims())
    }

    /// A token bound to `cert` (RFC 8705 `cnf.x5t#S256`).
    pub fn bound_token(&self, cert: &ClientCert) -> String {
        let mut c = self.claims();
        c["cnf"] = json!({ "x5t#S256": cert.x5t_s256 });
        self.token(&c)
    }

    /// A token bound to `key` (RFC 9449 `cnf.jkt`).
    pub fn dpop_token(&self, key: &Signer) -> String {
        let mut c = self.claims();
        c["cnf"] = json!({ "jkt": key.jwk_thumbprint() });
        self.token(&c)
    }

    /// `method path` with `Authorization: DPoP <token>` and a fresh proof by `key` for
    /// the URL the client calls.
    pub async fn dpop_request(&self, method: &str, path: &str, key: &Signer, token: &str) -> reqwest::Response {
        let proof = key.dpop_proof(method, &self.public_url(path), Some(token));
        self.send_dpop(method, path, token, &proof).await
    }

    /// `method path` with `Authorization: DPoP <token>` and `DPoP: <proof>` as given.
    pub async fn send_dpop(&self, method: &str, path: &str, token: &str, proof: &str) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.client(None)
            .request(method, self.url(path))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .send()
            .await
            .expect("request completes")
    }

    pub fn client(&self, cert: Option<&ClientCert>) -> reqwest::Client {
        client(&self.pki, self.addr, cert, false)
    }

    pub fn h2_client(&self, cert: Option<&ClientCert>) -> reqwest::Client {
        client(&self.pki, self.addr, cert, true)
    }

    /// The URL clients believe they call (`listen.public_url` + path, query dropped): what
    /// DPoP `htu` must name. The listener's real port stays behind it, as behind a load
    /// balancer.
    pub fn public_url(&self, path: &str) -> String {
        format!("https://gateway.test{}", path.split('?').next().unwrap_or_default())
    }

    pub fn url(&self, path: &str) -> String {
        gateway_url(self.addr, path)
    }

    /// GET `path` with `Authorization: Bearer <token>`.
    pub async fn get(&self, path: &str, cert: Option<&ClientCert>, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client(cert).get(self.url(path));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send().await.expect("request completes")
    }
}

/// The `WWW-Authenticate` header of a response, or "".
pub fn challenge(response: &reqwest::Response) -> String {
    response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

/// Every `WWW-Authenticate` value of a response, in order.
pub fn challenges(response: &reqwest::Response) -> Vec<String> {
    response.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

/// Asserts status, the one exact challenge and JSON `error`, and returns the body.
pub async fn assert_rejected(response: reqwest::Response, status: u16, www_authenticate: &str, error: &str) -> Value {
    assert_rejected_with(response, status, &[www_authenticate], error).await
}

/// Asserts status, the exact list of challenges and JSON `error`, and returns the body.
pub async fn assert_rejected_with(response: reqwest::Response, status: u16, expected: &[&str], error: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let got = challenges(&response);
    let want: Vec<String> = if expected == [""] { vec![] } else { expected.iter().map(|s| s.to_string()).collect() };
    assert_eq!(got, want, "WWW-Authenticate");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let text = response.text().await.expect("body");
    let body: Value = serde_json::from_str(&text).expect("JSON body");
    assert_eq!(body["error"], error, "error in body: {body}");
    assert!(body["error_description"].is_string(), "{body}");
    body
}

fn config_yaml(pki: &TestPki, jwks: &JwksServer, upstream: &Upstream, o: &Options) -> String {
    let up = upstream.url();
    let refused = Upstream::refused_url();
    let ca = pki.ca_pem_path();
    format!(
        r#"
listen:
  address: 127.0.0.1:0
  public_url: https://gateway.test
{listen_extra}  tls:
    cert: {cert}
    key: {key}
    client_auth: {client_auth}
{tls_extra}
{admin}limits:
{limits}
issuers:
  - issuer: {issuer}
    {key_source}
    ca: {ca}
    audiences: [{AUDIENCE}]
    algorithms: [ES256, PS256, EdDSA]
{issuer_extra}
routes:
  - name: mtls
    match: {{ path_prefix: /mtls }}
    upstream: {up}
    binding: mtls
    scopes: [accounts:read]
  - name: any
    match: {{ path_prefix: /any }}
    upstream: {up}
    binding: any
  - name: bearer
    match: {{ path_prefix: /bearer }}
    upstream: {up}
    binding: bearer
  - name: scoped
    match: {{ path_prefix: /scoped }}
    upstream: {up}
    binding: mtls
    scopes: [accounts:read, payments:write]
  - name: identity
    match: {{ path_prefix: /identity }}
    upstream: {up}
    binding: mtls
    forward_client_cert: true
    identity_headers: true
  - name: public
    match: {{ path_prefix: /public }}
    upstream: {up}
    auth: none
  - name: public-cert
    match: {{ path_prefix: /open-cert }}
    upstream: {up}
    auth: none
    forward_client_cert: true
  - name: echo
    match: {{ path_prefix: /echo, methods: [POST, PUT] }}
    upstream: {up}
    auth: none
  - name: slow
    match: {{ path_prefix: /slow }}
    upstream: {up}
    timeout: 1s
    auth: none
  - name: status
    match: {{ path_prefix: /status }}
    upstream: {up}
    auth: none
  - name: refused
    match: {{ path_prefix: /refused }}
    upstream: {refused}
    auth: none
  - name: partner
    match: {{ host: partner.test, path_prefix: /public }}
    upstream: {up}
    binding: mtls
  - name: dpop
    match: {{ path_prefix: /dpop }}
    upstream: {up}
    binding: dpop
    scopes: [accounts:read]
    identity_headers: true
  - name: dpop-nonce
    match: {{ path_prefix: /nonce }}
    upstream: {up}
    binding: dpop
    nonce: required
  - name: dpop-as-is
    match: {{ path_prefix: /as-is }}
    upstream: {up}
    binding: dpop
    forward_token: as_is
  - name: dpop-strip
    match: {{ path_prefix: /strip }}
    upstream: {up}
    binding: dpop
    forward_token: strip
  - name: dpop-scoped
    match: {{ path_prefix: /dpop-pay }}
    upstream: {up}
    binding: dpop
    scopes: [payments:write]
  - name: dpop-behind-lb
    match: {{ path_prefix: /lb }}
    upstream: {up}
    binding: dpop
    public_url: https://API.example.com:443
{dpop}"#,
        cert = pki.server_cert_path().display(),
        key = pki.server_key_path().display(),
        client_auth = o.client_auth,
        tls_extra = o.tls_extra.replace("{client_ca}", &pki.client_ca_pem_path().display().to_string()),
        limits = o.limits,
        issuer = jwks.issuer(),
        key_source = o.key_source.as_deref().unwrap_or("jwks_uri: {jwks_uri}").replace("{jwks_uri}", &jwks.jwks_uri()),
        ca = ca.display(),
        issuer_extra = o.issuer_extra,
        dpop = o.dpop.replace("{up}", &up),
        listen_extra = o.listen_extra,
        admin = if o.admin { "admin:\n  address: 127.0.0.1:0\n" } else { "" },
    )
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// Starts a gateway with one issuer (given as a YAML flow mapping) and one catch-all
/// `binding: bearer` route to `upstream`.
pub async fn start_minimal(pki: &TestPki, issuer: &str, upstream: &Upstream) -> GatewayHandle {
    super::init();
    let yaml = format!(
        "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {}, key: {} }} }}\n\
         issuers:\n  - {issuer}\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: {}, binding: bearer }}\n",
        pki.server_cert_path().display(),
        pki.server_key_path().display(),
        upstream.url()
    );
    let config = Config::from_yaml(&yaml, "t.yaml", pki.dir()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    fapi_gateway::start(config).await.expect("gateway starts")
}
