//! `fapi-gateway demo`: the whole story on loopback in one command. It starts a
//! development authorization server ([`dev_as`]), an echo upstream and the gateway on the
//! bundled `gateway.yaml` and `certs/`, then plays, as real clients over real TLS:
//! a legitimate mTLS client, a thief with the stolen token and another certificate, a
//! legitimate DPoP client (with the server nonce), a replayed proof, a thief with the
//! stolen DPoP token and its own key, and the DPoP token downgraded to `Bearer`. It prints
//! what each got, then (unless `--once`) ready-to-paste commands — `curl` with a token from
//! the development AS's token endpoint, and a standard DPoP client — and serves until
//! Ctrl-C. Outside the repository it runs on the bundled `gateway.yaml` in a folder of its
//! own ([`DemoFolder`]); it writes nothing before its configuration and ports are checked.
//! Development only.

pub mod browser;
pub mod dev_as;
pub mod dev_as_flow;
pub mod dev_as_server;
pub mod dev_certs;
pub mod echo;
pub mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::config::{Config, LoginAuth};
use dev_as::{DevIssuer, dpop_proof};
use dev_as_flow::{CodeFlow, LoginClient};
use dev_as_server::DevServer;
use http::{DemoHttp, Identity, Outgoing, Reply};

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] crate::StartError),
    #[error(transparent)]
    Key(#[from] crate::jose::SignError),
}

/// One played scenario.
pub struct Scenario {
    pub name: &'static str,
    pub expected: u16,
    pub got: u16,
    /// What came back beside the status: the `WWW-Authenticate` challenge, or for the login
    /// story what the browser saw.
    pub challenge: String,
    /// What else went wrong although the status was the expected one.
    pub surprise: Option<String>,
}

impl Scenario {
    fn new(name: &'static str, expected: u16, answer: &Reply) -> Scenario {
        Scenario { name, expected, got: answer.status, challenge: answer.header("www-authenticate"), surprise: None }
    }

    /// Whether it ended as the story says.
    pub fn ended_as_expected(&self) -> bool {
        self.expected == self.got && self.surprise.is_none()
    }
}

fn load_identity(cert: &Path, key: &Path) -> Result<Identity, DemoError> {
    let read = |p: &Path, e: String| DemoError::Setup(format!("cannot read {}: {e}", p.display()));
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| read(cert, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, e.to_string()))?;
    Ok(Identity { chain, key })
}

/// The legitimate clients and thieves of the resource story: GET requests to the gateway.
struct Client<'a> {
    http: &'a DemoHttp,
    gateway: SocketAddr,
    host: String,
}

impl Client<'_> {
    async fn send(
        &self,
        path: &str,
        identity: Option<&Identity>,
        headers: &[(&str, String)],
    ) -> Result<Reply, DemoError> {
        let request = Outgoing { method: "GET", host: &self.host, target: path, headers, body: None };
        self.http.send(self.gateway, identity, request).await
    }
}

/// The bundled `gateway.yaml`, for a demo run outside the repository.
pub const BUNDLED_CONFIG: &str = include_str!("../../gateway.yaml");

/// Where a demo run keeps its configuration and development certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoFolder {
    /// The configuration file; written from [`BUNDLED_CONFIG`] when `write_config`.
    pub config: PathBuf,
    /// `certs/` beside it: missing development files are generated there.
    pub certs: PathBuf,
    pub write_config: bool,
}

impl DemoFolder {
    /// `--dir DIR`: `DIR/gateway.yaml` (the bundled one unless present) and `DIR/certs/`.
    /// Without it: `config` and `certs/` beside it when `config` exists (the repository's
    /// own files); else, when `config` is the default `gateway.yaml`, the user's data folder
    /// (`$XDG_DATA_HOME/fapi-gateway/demo`, or `~/.local/share/fapi-gateway/demo`), never the
    /// current folder. A `--config` that does not exist is an error.
    pub fn resolve(config: &Path, dir: Option<&Path>) -> Result<DemoFolder, DemoError> {
        let in_dir = |dir: &Path| {
            let config = dir.join("gateway.yaml");
            DemoFolder { write_config: !config.exists(), certs: dir.join("certs"), config }
        };
        if let Some(dir) = dir {
            return Ok(in_dir(dir));
        }
        if config.exists() {
            let base = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            return Ok(DemoFolder { config: config.to_path_buf(), certs: base.join("certs"), write_config: false });
        }
        if config != Path::new("gateway.yaml") {
            return Err(DemoError::Setup(format!(
                "{} does not exist: give an existing configuration, or leave out --config to run the demo on the bundled one (in --dir, or the data folder)",
                config.display()
            )));
        }
        let data = match (std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()), std::env::var_os("HOME")) {
            (Some(xdg), _) => PathBuf::from(xdg),
            (None, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".local/share"),
            _ => {
                return Err(DemoError::Setup(
                    "no gateway.yaml here and neither XDG_DATA_HOME nor HOME is set: give --dir DIR for the demo's files".into(),
                ));
            }
        };
        Ok(in_dir(&data.join("fapi-gateway").join("demo")))
    }
}

/// Options of `fapi-gateway demo`.
pub struct DemoOptions {
    pub folder: DemoFolder,
    /// Exit after the scenarios instead of serving until Ctrl-C.
    pub once: bool,
}

/// Checks that `address` can be bound now (the listener is dropped at once).
fn check_free(address: SocketAddr, what: &str) -> Result<(), DemoError> {
    std::net::TcpListener::bind(address).map(drop).map_err(|e| {
        DemoError::Setup(format!("cannot listen on {address} for {what}: {e} (is something else using it?)"))
    })
}

/// Runs the demo. Everything that can fail without writing — the configuration, every
/// port — is checked before a file is written. Returns the scenarios played; with `once`
/// it returns right after them, else it serves until Ctrl-C.
pub async fn run(options: DemoOptions) -> Result<Vec<Scenario>, DemoError> {
    let DemoOptions { folder, once } = options;
    let base = folder.config.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let text = if folder.write_config {
        BUNDLED_CONFIG.to_string()
    } else {
        std::fs::read_to_string(&folder.config)
            .map_err(|e| DemoError::Setup(format!("cannot read {}: {e}", folder.config.display())))?
    };
    let planned = Config::from_yaml(&text, &folder.config.display().to_string(), &base)?;
    let audience =
        planned.issuers.first().and_then(|i| i.audiences.first()).cloned().unwrap_or_else(|| origin_of(&planned));
    let issuer_id = planned.issuers.first().map_or(dev_as::ISSUER, |i| i.issuer.as_str()).to_string();
    let upstream: SocketAddr = planned
        .routes
        .first()
        .and_then(|r| r.upstream.authority())
        .and_then(|a| a.as_str().parse().ok())
        .ok_or_else(|| DemoError::Setup("the first route's upstream must be an IP:port for the demo".into()))?;
    let as_address: SocketAddr = dev_as::ADDRESS.parse().map_err(|_| DemoError::Setup("bad address".into()))?;
    let as_listener = dev_as::bind(as_address).await?;
    let echo_listener = tokio::net::TcpListener::bind(upstream).await.map_err(|e| {
        DemoError::Setup(format!(
            "cannot listen on {upstream} for the echo upstream: {e} (is something else using it?)"
        ))
    })?;
    check_free(planned.listen.address, "the gateway")?;
    if let Some(admin) = planned.admin {
        check_free(admin, "the gateway's admin listener")?;
    }

    // Only now: the files.
    if folder.write_config {
        std::fs::create_dir_all(&base)
            .and_then(|()| std::fs::write(&folder.config, BUNDLED_CONFIG))
            .map_err(|e| DemoError::Setup(format!("cannot write {}: {e}", folder.config.display())))?;
        println!("demo folder {}: wrote the bundled gateway.yaml", base.display());
    }
    let certs = &folder.certs;
    let generated = dev_certs::ensure(certs, &[])?;
    if !generated.is_empty() {
        println!("generated development certificates in {}: {}", certs.display(), generated.join(", "));
    }
    let config = Config::load(&folder.config)?;
    let origin = origin_of(&config);

    // 1. The development authorization server and the echo upstream.
    let issuer = Arc::new(DevIssuer::new(&certs.join("dev-issuer.key"), &issuer_id, &audience)?);
    let login = config.logins.first().filter(|l| l.issuer == issuer_id).cloned();
    let flow = match &login {
        Some(login) => Some(CodeFlow::new(issuer.clone(), login_client(login)?)?),
        None => None,
    };
    dev_as_server::serve(Arc::new(DevServer { issuer: issuer.clone(), flow }), as_listener, dev_as_tls(certs)?);
    echo::serve(echo_listener);
    let api_path = config
        .routes
        .iter()
        .find(|r| matches!(r.policy, crate::config::RoutePolicy::Session { login: 0, .. }))
        .map(|r| format!("{}/accounts/1", r.path_prefix));

    // 2. The gateway, on the configuration.
    let gateway = crate::start(config).await?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.join("ca.pem"))
        .map_err(|e| DemoError::Setup(format!("cannot read {}: {e}", certs.join("ca.pem").display())))?
        .flatten()
    {
        roots.add(cert).map_err(|e| DemoError::Setup(e.to_string()))?;
    }
    let http = DemoHttp::new(roots);
    let host = format!("localhost:{}", gateway.local_addr().port());
    let client = Client { http: &http, gateway: gateway.local_addr(), host: host.clone() };

    // 3. The resource story.
    let legit = load_identity(&certs.join("client.pem"), &certs.join("client.key"))?;
    let thief = load_identity(&certs.join("thief.pem"), &certs.join("thief.key"))?;
    let mut played = Vec::new();
    let mut play =
        |name: &'static str, expected: u16, answer: &Reply| played.push(Scenario::new(name, expected, answer));
    let mtls_token = issuer.mtls_token("accounts:read", legit.chain.first().map_or(&[], |c| c.as_ref()))?;
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    play(
        "mTLS client with its own certificate",
        200,
        &client.send("/accounts/1", Some(&legit), &bearer(&mtls_token)).await?,
    );
    play(
        "stolen mTLS token, thief's certificate",
        401,
        &client.send("/accounts/1", Some(&thief), &bearer(&mtls_token)).await?,
    );

    let dpop_key = dev_as::generate_key()?;
    let dpop_token = issuer.dpop_token("payments:write", &dpop_key)?;
    let url = format!("{origin}/payments/1");
    let dpop = |proof: String| vec![("authorization", format!("DPoP {dpop_token}")), ("dpop", proof)];
    // The payments route requires a server nonce: the first try fetches it.
    let first = client.send("/payments/1", None, &dpop(dpop_proof(&dpop_key, "GET", &url, &dpop_token, None)?)).await?;
    let nonce = first.headers.get("dpop-nonce").and_then(|v| v.to_str().ok()).map(str::to_string);
    let proof = dpop_proof(&dpop_key, "GET", &url, &dpop_token, nonce.as_deref())?;
    play("DPoP client (after use_dpop_nonce)", 200, &client.send("/payments/1", None, &dpop(proof.clone())).await?);
    play("the same DPoP proof replayed", 401, &client.send("/payments/1", None, &dpop(proof)).await?);
    let thief_key = dev_as::generate_key()?;
    let stolen = dpop_proof(&thief_key, "GET", &url, &dpop_token, nonce.as_deref())?;
    play("stolen DPoP token, thief's own key", 401, &client.send("/payments/1", None, &dpop(stolen)).await?);
    play("DPoP token downgraded to Bearer", 401, &client.send("/payments/1", None, &bearer(&dpop_token)).await?);

    print_table("scenario", &played);

    // 4. The login story, when the configuration has a login at the development AS.
    let mut login_url = None;
    if let (Some(login), Some(api_path)) = (&login, &api_path) {
        let sites = browser::Sites {
            gateway: gateway.local_addr(),
            gateway_host: &host,
            authorization_server: as_address,
            login,
            api_path,
        };
        let story = browser::play(&http, &sites).await?;
        print_table("login story (a scripted browser)", &story);
        played.extend(story);
        login_url = Some(format!("https://{host}{}?return_to=/app/", login.paths.login));
    } else {
        println!(
            "\n(no login story: {} has no `login:` entry for the development authorization server {issuer_id} with an `auth: session` route; the bundled gateway.yaml has one: move this file away, or give another --dir, to get it)",
            folder.config.display(),
        );
    }
    let failed = played.iter().filter(|s| !s.ended_as_expected()).count();
    if failed == 0 {
        println!("\nEvery scenario ended as expected: stolen tokens are useless.");
    } else {
        println!("\n{failed} scenario(s) did not end as expected (marked !).");
    }
    if once {
        gateway.shutdown().await;
        return Ok(played);
    }
    print_hints(&gateway, certs, as_address.port(), login_url.as_deref());
    let _ = tokio::signal::ctrl_c().await;
    gateway.shutdown().await;
    Ok(played)
}

/// `fapi-gateway dev-as`: the development authorization server alone (for a compose file or
/// a gateway started separately), with its certificates in `dir`.
/// It registers the bundled `gateway.yaml`'s login client ([`dev_as::DEMO_LOGIN`]) with the
/// key `dir/login-client.key`.
pub async fn run_dev_as(
    address: SocketAddr,
    dir: &Path,
    hosts: &[String],
    issuer: &str,
    audience: &str,
) -> Result<(), DemoError> {
    let listener = dev_as::bind(address).await?;
    let generated = dev_certs::ensure(dir, hosts)?;
    if !generated.is_empty() {
        println!("generated development certificates in {}: {}", dir.display(), generated.join(", "));
    }
    let dev_issuer = Arc::new(DevIssuer::new(&dir.join("dev-issuer.key"), issuer, audience)?);
    let key = crate::jose::SigningKey::from_pkcs8_pem_file(dev_as::ALG, &dir.join("login-client.key"))?;
    let demo = dev_as::DEMO_LOGIN;
    let client = LoginClient {
        client_id: demo.client_id.into(),
        key: key.public_key().clone(),
        redirect_uri: demo.redirect_uri.into(),
        post_logout_redirect_uri: Some(demo.post_logout_redirect_uri.into()),
    };
    let flow = CodeFlow::new(dev_issuer.clone(), client)?;
    dev_as_server::serve(Arc::new(DevServer { issuer: dev_issuer, flow: Some(flow) }), listener, dev_as_tls(dir)?);
    println!(
        "development authorization server (NOT FOR PRODUCTION) on https://{address}: GET /jwks, POST /token (grant_type=client_credentials; a client certificate or a DPoP proof binds the token), and the login flow for client `{}` (POST /par, /authorize, /revoke, /logout); issuer {issuer}, audience {audience}",
        demo.client_id
    );
    wait_for_stop().await;
    Ok(())
}

async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The development AS's TLS: the demo's server certificate; client certificates optional and
/// accepted whatever their issuer (they only bind tokens), HTTP/1.1.
fn dev_as_tls(certs: &Path) -> Result<Arc<rustls::ServerConfig>, DemoError> {
    let tls = crate::tls::server::server_config(&crate::config::ServerTls {
        cert: certs.join("server.pem"),
        key: certs.join("server.key"),
        client_auth: crate::config::ClientAuth::Optional,
        client_ca: None,
    })
    .map_err(|e| DemoError::Setup(e.to_string()))?;
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

fn origin_of(config: &Config) -> String {
    config.listen.public_url.to_string().trim_end_matches('/').to_string()
}

/// A path as the user should type it: relative when under the current folder.
fn shown(path: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match std::env::current_dir().ok().and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_path_buf)) {
        Some(relative) => relative.display().to_string(),
        None => path.display().to_string(),
    }
}

fn print_hints(gateway: &crate::GatewayHandle, certs: &Path, as_port: u16, login_url: Option<&str>) {
    let port = gateway.local_addr().port();
    let (ca, cert, key) =
        (shown(&certs.join("ca.pem")), shown(&certs.join("client.pem")), shown(&certs.join("client.key")));
    let (thief_cert, thief_key) = (shown(&certs.join("thief.pem")), shown(&certs.join("thief.key")));
    println!(
        "\nThe gateway keeps running on https://localhost:{port} (admin: {}); the development authorization server on https://localhost:{as_port}. Try it:\n",
        gateway.admin_addr().map_or("-".into(), |a| a.to_string())
    );
    println!("  # a certificate-bound token from the development AS (client credentials, RFC 8705):");
    println!(
        "  TOKEN=$(curl -s --cacert {ca} --cert {cert} --key {key} \\\n       -d grant_type=client_credentials -d scope=accounts:read https://localhost:{as_port}/token \\\n       | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')"
    );
    println!(
        "  curl --cacert {ca} --cert {cert} --key {key} \\\n       -H \"Authorization: Bearer $TOKEN\" https://localhost:{port}/accounts/1\n"
    );
    println!("  # the same token from another certificate is refused:");
    println!(
        "  curl -i --cacert {ca} --cert {thief_cert} --key {thief_key} \\\n       -H \"Authorization: Bearer $TOKEN\" https://localhost:{port}/accounts/1\n"
    );
    println!("  curl -i --cacert {ca} https://localhost:{port}/public/hello\n");
    println!("  # DPoP with a standard client (openid-client 6 on Node.js 20; in the repository):");
    println!(
        "  (cd examples/dpop-client && npm ci --silent && NODE_EXTRA_CA_CERTS={} node dpop-client.mjs)",
        std::path::absolute(certs.join("ca.pem")).unwrap_or_else(|_| certs.join("ca.pem")).display()
    );
    if let Some(url) = login_url {
        println!("\n  # the login mode in a real browser (accept the development certificate, twice:");
        println!("  # the gateway's and the authorization server's), then Allow on the consent page:");
        println!("  {url}");
    }
    println!("\nCtrl-C stops everything.");
}

fn print_table(title: &str, played: &[Scenario]) {
    let last = if title == "scenario" { "WWW-Authenticate" } else { "what the browser saw" };
    println!("\n{title:<40} {:>8} {:>4}  {last}", "expected", "got");
    println!("{}", "-".repeat(110));
    for s in played {
        let mark = if s.ended_as_expected() { " " } else { "!" };
        let detail = if s.challenge.is_empty() { "-" } else { &s.challenge };
        println!("{:<40} {:>8} {:>4}{mark} {detail}", s.name, s.expected, s.got);
        if let Some(surprise) = &s.surprise {
            println!("{:<40} {:>14}  but: {surprise}", "", "");
        }
    }
}

/// The development AS's registration of the `login:` entry: its id, redirect URIs and the
/// public half of its `private_key_jwt` key.
fn login_client(login: &crate::config::LoginSettings) -> Result<LoginClient, DemoError> {
    let LoginAuth::PrivateKeyJwt { key, .. } = &login.client_auth else {
        return Err(DemoError::Setup(format!(
            "login `{}`: the development authorization server knows only private_key_jwt clients",
            login.name
        )));
    };
    let key = crate::jose::SigningKey::from_pkcs8_pem_file(dev_as::ALG, key)?;
    Ok(LoginClient {
        client_id: login.client_id.clone(),
        key: key.public_key().clone(),
        redirect_uri: login.redirect_uri.clone(),
        post_logout_redirect_uri: login.post_logout_redirect_uri.clone(),
    })
}
