//! A real FAPI 2.0 authorization server for the login-mode tests: panva's `oidc-provider`
//! (npm, pinned in `tests/as/package.json`) run by `tests/as/server.mjs` on an ephemeral
//! loopback port, over HTTPS with the [`TestPki`] server certificate.
//!
//! - [`OidcProvider::start`]: `npm ci` once per test binary (when `tests/as/node_modules` lacks
//!   the pinned version), writes the JSON configuration into the PKI's temp dir, starts
//!   `node tests/as/server.mjs cfg.json`, waits for `listening PORT`, fetches the discovery
//!   document and the JWKS once. Drop kills the process (it also exits when its stdin closes).
//! - FAPI 2.0 profile: PAR required, PKCE S256 required, JARM (`response_mode=jwt`), DPoP
//!   (optionally with mandatory nonces), `private_key_jwt` (and `tls_client_auth` on the
//!   `mtls_endpoint_aliases` listener when [`AsOptions::mtls`]), JWT access tokens for one
//!   resource ([`AsOptions::resource`]), rotating refresh tokens, revocation, RP-initiated logout.
//! - Interactions: with [`AsOptions::auto_interaction`] the AS logs in [`AsOptions::account`] and
//!   grants what was asked without a page; otherwise oidc-provider's development login and
//!   consent forms are served, which [`Browser`] also fills in (any password is accepted).
//! - Client-side helpers: [`client_assertion`], [`dpop_proof`], [`pkce_pair`], [`form`],
//!   [`OidcProvider::post_form`] (DPoP `use_dpop_nonce` retry), [`OidcProvider::verify_jwt`].
//!
//! Node's stderr (oidc-provider's notices, one line per error event, never tokens) goes to
//! `oidc-provider-PORT.log` in the PKI dir; [`OidcProvider::log`] reads it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use fapi_gateway::jose::{Alg, CompactJws, PublicKey};
use reqwest::Url;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Map, Value, json};

use super::{ClientCert, Signer, TestPki, b64, now, random_id};

/// `tests/as`: package.json, package-lock.json, server.mjs.
pub const AS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/as");

/// The resource (API audience) JWT access tokens are issued for by default; the same
/// audience the gateway tests configure ([`super::AUDIENCE`]).
pub const DEFAULT_RESOURCE: &str = super::AUDIENCE;

/// How long to wait for `listening` (the first start also loads oidc-provider from disk).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How a registered client authenticates at the token, PAR and revocation endpoints.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// RFC 7523 client assertion signed with a key of the client's `jwks`.
    PrivateKeyJwt,
    /// RFC 8705 PKI mutual TLS (only on the `mtls_endpoint_aliases`), matched by subject DN,
    /// e.g. `CN=client-1`.
    TlsClientAuth { subject_dn: String },
}

/// One client registered at the AS.
#[derive(Clone, Debug)]
pub struct AsClient {
    pub client_id: String,
    /// Public JWKs (`private_key_jwt` keys).
    pub jwks: Vec<Value>,
    pub auth: ClientAuth,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// `scope` metadata (the scopes it may ask for), when set.
    pub scope: Option<String>,
    /// More client metadata, applied last (e.g. `tls_client_certificate_bound_access_tokens`).
    pub extra: Map<String, Value>,
}

impl AsClient {
    /// A `private_key_jwt` client with one public JWK and one redirect URI.
    pub fn private_key_jwt(client_id: &str, public_jwk: Value, redirect_uri: &str) -> AsClient {
        AsClient {
            client_id: client_id.to_owned(),
            jwks: vec![public_jwk],
            auth: ClientAuth::PrivateKeyJwt,
            redirect_uris: vec![redirect_uri.to_owned()],
            post_logout_redirect_uris: Vec::new(),
            scope: None,
            extra: Map::new(),
        }
    }

    /// A `tls_client_auth` client, e.g. subject `CN=client-1` of [`TestPki::ca_signed_client`]
    /// (registering one turns [`AsOptions::mtls`] on).
    pub fn tls_client_auth(client_id: &str, subject_dn: &str, redirect_uri: &str) -> AsClient {
        AsClient {
            auth: ClientAuth::TlsClientAuth { subject_dn: subject_dn.to_owned() },
            jwks: Vec::new(),
            ..AsClient::private_key_jwt(client_id, Value::Null, redirect_uri)
        }
    }

    /// Registers a `post_logout_redirect_uri`.
    pub fn post_logout_redirect_uri(mut self, uri: &str) -> AsClient {
        self.post_logout_redirect_uris.push(uri.to_owned());
        self
    }

    /// Sets one more metadata member.
    pub fn with(mut self, name: &str, value: Value) -> AsClient {
        self.extra.insert(name.to_owned(), value);
        self
    }

    /// The oidc-provider client metadata (server.mjs adds grant/response types, DPoP binding
    /// and the ID-token / JARM algs unless given here).
    pub fn metadata(&self) -> Value {
        let mut m = json!({
            "client_id": self.client_id,
            "redirect_uris": self.redirect_uris,
            "post_logout_redirect_uris": self.post_logout_redirect_uris,
        });
        let keys: Vec<&Value> = self.jwks.iter().filter(|k| !k.is_null()).collect();
        if !keys.is_empty() {
            m["jwks"] = json!({ "keys": keys });
        }
        match &self.auth {
            ClientAuth::PrivateKeyJwt => m["token_endpoint_auth_method"] = json!("private_key_jwt"),
            ClientAuth::TlsClientAuth { subject_dn } => {
                m["token_endpoint_auth_method"] = json!("tls_client_auth");
                m["tls_client_auth_subject_dn"] = json!(subject_dn);
            }
        }
        if let Some(scope) = &self.scope {
            m["scope"] = json!(scope);
        }
        for (k, v) in &self.extra {
            m[k] = v.clone();
        }
        m
    }
}

/// Knobs for [`OidcProvider::start`].
#[derive(Clone, Debug)]
pub struct AsOptions {
    pub clients: Vec<AsClient>,
    /// `features.dPoP.requireNonce`: every DPoP proof must carry a server nonce.
    pub require_nonce: bool,
    /// Log in [`Self::account`] and grant consent without forms (default `true`).
    pub auto_interaction: bool,
    /// The end-user (`sub`) auto interaction and [`Browser`]'s form filling log in.
    pub account: String,
    /// The AS signing key: `"ES256"` (default) or `"PS256"`; ID tokens, JARM responses and
    /// JWT access tokens all use it.
    pub signing_alg: &'static str,
    /// Resource indicator and `aud` of the JWT access tokens.
    pub resource: String,
    /// Scopes of that resource.
    pub resource_scope: String,
    /// Access-token lifetime for the resource, seconds.
    pub access_token_ttl: u64,
    /// Opaque (reference) access tokens for the resource instead of JWTs: a resource server
    /// learns about them only by introspection.
    pub opaque_access_tokens: bool,
    /// A second listener for `mtls_endpoint_aliases` that asks for a client certificate
    /// (verified against the PKI's client CA): `tls_client_auth` and certificate-bound tokens.
    pub mtls: bool,
    /// Rotate the refresh token on every refresh (default `true`, as the conformance suite).
    pub rotate_refresh_tokens: bool,
    /// Refuse pushed requests without a signed request object (JAR).
    pub require_signed_request_object: bool,
    /// Behind a gateway's AS edge: the client's certificate is the RFC 9440 `Client-Cert`
    /// header (it must chain to the PKI's client CA), not the TLS connection's.
    pub cert_from_header: bool,
}

impl Default for AsOptions {
    fn default() -> Self {
        AsOptions {
            clients: Vec::new(),
            require_nonce: false,
            auto_interaction: true,
            account: "alice".to_owned(),
            signing_alg: "ES256",
            resource: DEFAULT_RESOURCE.to_owned(),
            resource_scope: "accounts:read payments:write".to_owned(),
            access_token_ttl: 300,
            opaque_access_tokens: false,
            mtls: false,
            rotate_refresh_tokens: true,
            require_signed_request_object: false,
            cert_from_header: false,
        }
    }
}

impl AsOptions {
    /// Registers a client (builder style).
    pub fn client(mut self, client: AsClient) -> AsOptions {
        self.clients.push(client);
        self
    }
}

/// An answer of the AS to a back-channel request. Its `Display` / `Debug` show the status,
/// `error`, `error_description` and the names of the other members, never token values.
pub struct AsResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// The JSON body (`Value::Null` when empty or not JSON).
    pub body: Value,
    /// Whether the first attempt got `use_dpop_nonce` and the request was sent again.
    pub retried_for_nonce: bool,
}

impl AsResponse {
    /// `body[name]` as a string, panicking with [`Self::summary`] when absent.
    pub fn str(&self, name: &str) -> &str {
        self.body[name].as_str().unwrap_or_else(|| panic!("no string {name:?} in {self}"))
    }

    /// Status, `error`, `error_description` and the other member names (no values: tokens).
    pub fn summary(&self) -> String {
        let mut out = format!("HTTP {}", self.status);
        if let Some(error) = self.body["error"].as_str() {
            out += &format!(" error={error:?}");
        }
        if let Some(description) = self.body["error_description"].as_str() {
            out += &format!(" error_description={description:?}");
        }
        if let Some(members) = self.body.as_object() {
            let names: Vec<&str> = members.keys().map(String::as_str).filter(|k| !k.starts_with("error")).collect();
            out += &format!(" members={names:?}");
        }
        if let Some(www) = self.headers.get("www-authenticate").and_then(|v| v.to_str().ok()) {
            out += &format!(" www-authenticate={www:?}");
        }
        out
    }
}

impl std::fmt::Display for AsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

impl std::fmt::Debug for AsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

/// A running oidc-provider.
pub struct OidcProvider {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    issuer: String,
    metadata: Value,
    jwks: Value,
    signing_alg: Alg,
    http: reqwest::Client,
    ca_pem: String,
    log: PathBuf,
    account: String,
    dpop_nonce: Mutex<Option<String>>,
    browser: Browser,
}

impl OidcProvider {
    /// Starts the AS with `options`; the issuer is `https://localhost:PORT`.
    pub async fn start(pki: &TestPki, options: AsOptions) -> OidcProvider {
        super::init();
        node_packages();
        let mtls = options.mtls || options.clients.iter().any(|c| matches!(c.auth, ClientAuth::TlsClientAuth { .. }));
        let config = json!({
            "host": "127.0.0.1",
            "port": 0,
            "issuer": "https://localhost:{port}",
            "tls": {
                "cert": pki.server_cert_path(),
                "key": pki.server_key_path(),
                "ca": pki.client_ca_pem_path(),
            },
            "mtls": mtls,
            "signing_alg": options.signing_alg,
            "resource": {
                "identifier": options.resource,
                "scope": options.resource_scope,
                "access_token_ttl": options.access_token_ttl,
                "opaque": options.opaque_access_tokens,
            },
            "dpop": { "require_nonce": options.require_nonce },
            "account": options.account,
            "auto_interaction": options.auto_interaction,
            "rotate_refresh_tokens": options.rotate_refresh_tokens,
            "require_signed_request_object": options.require_signed_request_object,
            "cert_from_header": options.cert_from_header,
            "clients": options.clients.iter().map(AsClient::metadata).collect::<Vec<_>>(),
        });
        let cfg_path = pki.dir().join(format!("oidc-provider-{}.json", random_id()));
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&config).expect("config JSON")).expect("write AS config");
        let log = cfg_path.with_extension("log");
        let stderr = std::fs::File::create(&log).expect("AS log file");

        let mut child = Command::new("node")
            .arg(Path::new(AS_DIR).join("server.mjs"))
            .arg(&cfg_path)
            .current_dir(AS_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node ({e}): {NODE_MISSING}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("node stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // The first line is `listening PORT`; keep draining so node never sees EPIPE.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = tokio::task::spawn_blocking(move || rx.recv_timeout(START_TIMEOUT)).await.expect("join");
        let port = match line.as_deref().ok().and_then(|l| l.strip_prefix("listening ")) {
            Some(p) => p.trim().parse::<u16>().expect("port number"),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let logged = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("oidc-provider did not start (stdout: {line:?}); its stderr:\n{logged}");
            }
        };
        let issuer = format!("https://localhost:{port}");
        let http = http_client(pki.ca_pem(), None);
        let mut provider = OidcProvider {
            child,
            stdin,
            port,
            issuer: issuer.clone(),
            metadata: Value::Null,
            jwks: Value::Null,
            signing_alg: Alg::from_name(options.signing_alg).expect("signing alg"),
            http: http.clone(),
            ca_pem: pki.ca_pem().to_owned(),
            log,
            account: options.account.clone(),
            dpop_nonce: Mutex::new(None),
            browser: Browser::new(pki.ca_pem(), &issuer, &options.account),
        };
        let url = format!("{issuer}/.well-known/openid-configuration");
        let metadata = provider.get_json(&url).await;
        assert_eq!(metadata["issuer"], issuer, "discovery issuer");
        let jwks = provider.get_json(metadata["jwks_uri"].as_str().expect("jwks_uri")).await;
        provider.metadata = metadata;
        provider.jwks = jwks;
        provider
    }

    async fn get_json(&self, url: &str) -> Value {
        let resp = self.http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}\n{}", self.log()));
        assert_eq!(resp.status(), 200, "GET {url}");
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("JSON body")
    }

    /// `https://localhost:PORT`, exactly as in the discovery document.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The discovery document (`/.well-known/openid-configuration`), fetched at start.
    pub fn metadata(&self) -> &Value {
        &self.metadata
    }

    /// The AS's JWKS (public keys), fetched at start.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// A discovery member that is an URL, e.g. `"token_endpoint"`.
    pub fn endpoint(&self, name: &str) -> String {
        self.metadata[name].as_str().unwrap_or_else(|| panic!("no {name} in the AS metadata")).to_owned()
    }

    /// An `mtls_endpoint_aliases` member (with [`AsOptions::mtls`]).
    pub fn mtls_endpoint(&self, name: &str) -> String {
        self.metadata["mtls_endpoint_aliases"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no mtls_endpoint_aliases.{name}: start with AsOptions::mtls"))
            .to_owned()
    }

    /// The end-user auto interaction logs in.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// A client of the AS that trusts only the test CA, follows no redirect, no proxy.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Like [`Self::http`], presenting `identity` (for the mTLS aliases).
    pub fn http_with_identity(&self, identity: &ClientCert) -> reqwest::Client {
        http_client(&self.ca_pem, Some(identity))
    }

    /// What node wrote to stderr so far (notices and one line per error event).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The front-channel URL for a pushed request: only `client_id` and `request_uri`.
    pub fn authorization_url(&self, client_id: &str, request_uri: &str) -> String {
        let mut url = Url::parse(&self.endpoint("authorization_endpoint")).expect("authorization_endpoint");
        url.query_pairs_mut().append_pair("client_id", client_id).append_pair("request_uri", request_uri);
        url.into()
    }

    /// The last `DPoP-Nonce` the AS sent ([`Self::post_form`] keeps it).
    pub fn dpop_nonce(&self) -> Option<String> {
        self.dpop_nonce.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// POSTs `body()` (form-encoded) to `url` with `http`. With `dpop`, sends a fresh DPoP
    /// proof (`htu` = `url`, `ath` of the access token when given, the last known AS nonce)
    /// and, on `400 use_dpop_nonce` with a `DPoP-Nonce` header, retries once with a new proof
    /// carrying it. Any `DPoP-Nonce` in an answer is remembered for the next call.
    ///
    /// `body` is called once per attempt: oidc-provider has already consumed the client
    /// assertion's `jti` when it answers `use_dpop_nonce`, so the retry needs a new assertion
    /// (reusing it gets `invalid_client`).
    pub async fn post_form(
        &self,
        http: &reqwest::Client,
        url: &str,
        body: &dyn Fn() -> String,
        dpop: Option<(&Signer, Option<&str>)>,
    ) -> AsResponse {
        let mut retried = false;
        loop {
            let mut req = http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .body(body());
            if let Some((signer, token)) = dpop {
                let nonce = self.dpop_nonce();
                req = req.header("DPoP", dpop_proof(signer, "POST", url, nonce.as_deref(), token));
            }
            let resp = req.send().await.unwrap_or_else(|e| panic!("POST {url}: {e}\n{}", self.log()));
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            if let Some(nonce) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) {
                *self.dpop_nonce.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(nonce.to_owned());
            }
            let bytes = resp.bytes().await.expect("body");
            let body_json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if dpop.is_some() && !retried && status == 400 && body_json["error"] == "use_dpop_nonce" {
                assert!(headers.contains_key("dpop-nonce"), "use_dpop_nonce without a DPoP-Nonce header");
                retried = true;
                continue;
            }
            return AsResponse { status, headers, body: body_json, retried_for_nonce: retried };
        }
    }

    /// Verifies a JWS the AS signed (JARM response, ID token, JWT access token) against its
    /// JWKS: `alg` must be the AS's signing alg and `kid` one of its keys. Returns the claims.
    pub fn verify_jwt(&self, token: &str) -> Value {
        let jws = CompactJws::parse(token, 16 * 1024).expect("compact JWS");
        let alg = jws.alg().expect("JWS alg");
        assert_eq!(alg, self.signing_alg, "signed with the AS's alg");
        let kid = jws.header_str("kid").expect("JWS kid");
        let jwk = self.jwks["keys"]
            .as_array()
            .expect("JWKS keys")
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap_or_else(|| panic!("kid {kid} not in the AS JWKS"));
        let key = PublicKey::from_jwk(jwk.as_object().expect("JWK object")).expect("AS public JWK");
        jws.verify_with(alg, &key).expect("signature of the AS");
        serde_json::from_slice(jws.payload()).expect("JWT claims")
    }

    /// The harness's own user agent (keeps its cookies, so a second authorization is SSO).
    pub fn browser(&self) -> &Browser {
        &self.browser
    }

    /// A fresh user agent (no cookies: a new login).
    pub fn new_browser(&self) -> Browser {
        Browser::new(&self.ca_pem, &self.issuer, &self.account)
    }

    /// Follows `authorization_url` through the AS (auto interaction, or the development
    /// login and consent forms) with [`Self::browser`] until a redirect leaves the AS, and
    /// returns that redirect (the client's `redirect_uri?response=<JARM JWT>` for
    /// `response_mode=jwt`) without following it. Panics if the AS answers with a page.
    pub async fn walk_authorization(&self, authorization_url: &str) -> String {
        self.browser.walk(authorization_url).await.unwrap_or_else(|e| panic!("{e}\nAS log:\n{}", self.log()))
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to install Node.js where it is missing.
pub const NODE_MISSING: &str = "the oidc-provider tests need Node.js 20+ and npm: `apt-get install -y nodejs npm` \
     (.ci/run installs them)";

/// Makes sure `tests/as/node_modules` holds the pinned packages: `npm ci` once per test
/// binary when the installed oidc-provider is not the version package.json pins.
pub fn node_packages() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        match Command::new("node").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("node --version failed: {}", String::from_utf8_lossy(&out.stderr))),
            Err(e) => return Err(format!("cannot run node ({e}): {NODE_MISSING}")),
        }
        let dir = Path::new(AS_DIR);
        let version = |path: PathBuf, pointer: &str| -> Option<String> {
            let text = std::fs::read_to_string(path).ok()?;
            let value: Value = serde_json::from_str(&text).ok()?;
            value.pointer(pointer)?.as_str().map(str::to_owned)
        };
        let pinned = version(dir.join("package.json"), "/dependencies/oidc-provider");
        let installed = version(dir.join("node_modules/oidc-provider/package.json"), "/version");
        if pinned.is_some() && pinned == installed {
            return Ok(());
        }
        let out = Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .output()
            .map_err(|e| format!("cannot run npm ({e}): {NODE_MISSING}"))?;
        if !out.status.success() {
            return Err(format!("npm ci in tests/as failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A reqwest client trusting only the test CA (PEM), `localhost` pinned to 127.0.0.1, no
/// proxy, 10 s timeout, no redirects followed.
fn http_client(ca_pem: &str, identity: Option<&ClientCert>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM");
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .tls_certs_only([ca]);
    if let Some(id) = identity {
        builder = builder.identity(id.identity());
    }
    builder.build().expect("reqwest client")
}

// ---------------------------------------------------------------------------------------
// Client-side helpers
// ---------------------------------------------------------------------------------------

/// An RFC 7523 `private_key_jwt` client assertion: `iss` = `sub` = `client_id`, `aud` =
/// `aud` as a string (FAPI 2.0: the issuer identifier), fresh `jti`, `iat`/`nbf` now, `exp`
/// in 60 s; header `alg` + `kid` of `signer`.
pub fn client_assertion(signer: &Signer, client_id: &str, aud: &str) -> String {
    let now = now();
    let header = json!({ "alg": signer.alg(), "kid": signer.kid() });
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "jti": random_id(),
        "iat": now,
        "nbf": now,
        "exp": now + 60,
    });
    signer.sign_compact(&header, &claims)
}

/// The form members of `private_key_jwt` client authentication.
pub fn client_assertion_params(signer: &Signer, client_id: &str, aud: &str) -> [(&'static str, String); 3] {
    [
        ("client_id", client_id.to_owned()),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned()),
        ("client_assertion", client_assertion(signer, client_id, aud)),
    ]
}

/// An RFC 9449 DPoP proof for `htm` `htu` with a fresh `jti`, the server `nonce` and the
/// `ath` of `access_token` when given.
pub fn dpop_proof(signer: &Signer, htm: &str, htu: &str, nonce: Option<&str>, access_token: Option<&str>) -> String {
    let header = json!({ "typ": "dpop+jwt", "alg": signer.alg(), "jwk": signer.bare_public_jwk() });
    let mut claims = json!({ "jti": random_id(), "htm": htm, "htu": htu, "iat": now() });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    if let Some(token) = access_token {
        claims["ath"] = json!(b64(fapi_gateway::jose::sha256(token.as_bytes())));
    }
    signer.sign_compact(&header, &claims)
}

/// A PKCE pair: a 43-character verifier (32 random bytes) and its S256 challenge.
pub fn pkce_pair() -> (String, String) {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    let verifier = b64(bytes);
    let challenge = b64(fapi_gateway::jose::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k.as_ref(), v.as_ref());
    }
    out.finish()
}

/// The first query parameter `name` of `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The claims of a JWT, signature not checked.
pub fn unverified_claims(token: &str) -> Value {
    let jws = CompactJws::parse(token, 64 * 1024).expect("compact JWS");
    serde_json::from_slice(jws.payload()).expect("JWT claims")
}

// ---------------------------------------------------------------------------------------
// Browser: a cookie-keeping user agent for the front channel
// ---------------------------------------------------------------------------------------

/// Why [`Browser::walk`] stopped on the AS.
#[derive(Debug)]
pub struct WalkError {
    /// The URL last requested.
    pub url: String,
    pub status: u16,
    /// The page (HTML error page of oidc-provider, at most 4 KiB).
    pub body: String,
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the AS answered {} at {} instead of redirecting:\n{}", self.status, self.url, self.body)
    }
}

#[derive(Clone, Debug)]
struct Cookie {
    name: String,
    value: String,
    path: String,
}

/// A user agent on the AS's origin: keeps cookies (name, path; `Max-Age=0`/past `Expires`
/// delete), follows redirects while they stay on the AS, fills in the development forms.
pub struct Browser {
    http: reqwest::Client,
    origin: String,
    account: String,
    jar: Mutex<Vec<Cookie>>,
}

impl Browser {
    fn new(ca_pem: &str, issuer: &str, account: &str) -> Browser {
        let origin = Url::parse(issuer).expect("issuer URL").origin().ascii_serialization();
        Browser { http: http_client(ca_pem, None), origin, account: account.to_owned(), jar: Mutex::new(Vec::new()) }
    }

    fn jar(&self) -> std::sync::MutexGuard<'_, Vec<Cookie>> {
        self.jar.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops every cookie (as a new browser profile).
    pub fn clear_cookies(&self) {
        self.jar().clear();
    }

    /// Names of the cookies held.
    pub fn cookie_names(&self) -> Vec<String> {
        self.jar().iter().map(|c| c.name.clone()).collect()
    }

    fn cookie_header(&self, url: &Url) -> Option<String> {
        let path = url.path();
        let jar = self.jar();
        let pairs: Vec<String> = jar
            .iter()
            .filter(|c| {
                path == c.path
                    || (path.starts_with(&c.path) && (c.path.ends_with('/') || path[c.path.len()..].starts_with('/')))
            })
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn store_cookies(&self, url: &Url, headers: &HeaderMap) {
        let mut jar = self.jar();
        for value in headers.get_all(SET_COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            let mut parts = value.split(';');
            let Some((name, val)) = parts.next().and_then(|nv| nv.split_once('=')) else { continue };
            let mut path = default_path(url);
            let mut delete = false;
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "path" => path = v.trim().to_owned(),
                    "max-age" => delete |= v.trim().parse::<i64>().is_ok_and(|s| s <= 0),
                    "expires" => delete |= v.contains("1970"),
                    _ => {}
                }
            }
            let name = name.trim().to_owned();
            jar.retain(|c| !(c.name == name && c.path == path));
            if !delete {
                jar.push(Cookie { name, value: val.trim().to_owned(), path });
            }
        }
    }

    async fn request(&self, method: reqwest::Method, url: &str, body: Option<String>) -> (u16, HeaderMap, String) {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("URL {url}: {e}"));
        let mut req = self.http.request(method, parsed.clone()).header("accept", "text/html");
        if let Some(cookies) = self.cookie_header(&parsed) {
            req = req.header("cookie", cookies);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/x-www-form-urlencoded").body(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.store_cookies(&parsed, &headers);
        let text = resp.text().await.unwrap_or_default();
        (status, headers, text)
    }

    /// Follows `url` (GET) and the redirects after it while they stay on the AS's origin;
    /// returns the first redirect that leaves it, not followed. On a development login or
    /// consent page, submits it (login = the configured account, any password).
    pub async fn walk(&self, url: &str) -> Result<String, WalkError> {
        let mut url = url.to_owned();
        let mut post: Option<String> = None;
        for _ in 0..20 {
            let method = if post.is_some() { reqwest::Method::POST } else { reqwest::Method::GET };
            let (status, headers, body) = self.request(method, &url, post.take()).await;
            if (300..400).contains(&status) {
                let location = headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
                let next = Url::parse(&url).and_then(|base| base.join(location)).expect("Location URL");
                if next.origin().ascii_serialization() != self.origin {
                    return Ok(next.into());
                }
                url = next.into();
                continue;
            }
            let on_interaction = Url::parse(&url).is_ok_and(|u| u.path().starts_with("/interaction/"));
            if status == 200 && on_interaction {
                if body.contains(r#"name="prompt" value="login""#) {
                    post = Some(form([("prompt", "login"), ("login", self.account.as_str()), ("password", "x")]));
                    continue;
                }
                if body.contains(r#"name="prompt" value="consent""#) {
                    post = Some(form([("prompt", "consent")]));
                    continue;
                }
            }
            let body = body.chars().take(4096).collect();
            return Err(WalkError { url, status, body });
        }
        Err(WalkError { url, status: 0, body: "more than 20 steps".into() })
    }

    /// RP-initiated logout: GETs `end_session_url` (with `id_token_hint`,
    /// `post_logout_redirect_uri`, `state` as the caller chose), confirms the sign-out form
    /// and returns the redirect leaving the AS (the `post_logout_redirect_uri`), or the AS's
    /// own URL when it ends on its success page.
    pub async fn logout(&self, end_session_url: &str) -> Result<String, WalkError> {
        let (status, _, body) = self.request(reqwest::Method::GET, end_session_url, None).await;
        let field = |start: &str| body.split_once(start).and_then(|(_, rest)| rest.split_once('"')).map(|(v, _)| v);
        let (Some(action), Some(xsrf)) = (field(r#"action=""#), field(r#"name="xsrf" value=""#)) else {
            return Err(WalkError { url: end_session_url.to_owned(), status, body: body.chars().take(4096).collect() });
        };
        let mut url = action.replace("&amp;", "&");
        let mut post = Some(form([("xsrf", xsrf), ("logout", "yes")]));
        for _ in 0..10 {
            let method = if post.is_some() { reqwest::Method::POST } else { reqwest::Method::GET };
            let (status, headers, body) = self.request(method, &url, post.take()).await;
            if (300..400).contains(&status) {
                let location = headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
                let next = Url::parse(&url).and_then(|base| base.join(location)).expect("Location URL");
                if next.origin().ascii_serialization() != self.origin {
                    return Ok(next.into());
                }
                url = next.into();
                continue;
            }
            if status == 200 {
                return Ok(url);
            }
            return Err(WalkError { url, status, body: body.chars().take(4096).collect() });
        }
        Err(WalkError { url, status: 0, body: "more than 10 steps".into() })
    }
}

/// RFC 6265 §5.1.4 default cookie path.
fn default_path(url: &Url) -> String {
    let path = url.path();
    match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => path[..i].to_owned(),
    }
}
