//! The `fapi-gateway` command: run the gateway (default; SIGHUP reloads, SIGTERM/SIGINT
//! drain and stop), `check-config FILE`, `demo [--once] [--dir DIR]`, `dev-as`, or
//! `healthcheck [--address ADDR]`. `--help` lists signals, exit codes and environment.
//!
//! Exit codes: 0 success; 1 the gateway failed to start or stopped with an error; 2 the
//! configuration is invalid.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fapi_gateway::config::{Config, KeySource, RoutePolicy};

/// mimalloc instead of the system allocator: a request allocates and frees many small
/// buffers (header maps, TLS records, futures), and glibc's malloc/free/consolidate cost a
/// measurable share of each request (see BENCHMARKS.md). Only the binary sets it; the
/// library leaves the choice to whoever embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--version`: the crate version and the git revision it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FAPI_GATEWAY_GIT_REVISION"), ")");

const AFTER_HELP: &str = "\
Without a subcommand the gateway runs on --config until stopped.

Signals (run mode):
  SIGHUP           re-read --config and apply it; an invalid file is logged and the running
                   configuration keeps serving
  SIGTERM, SIGINT  drain: /readyz answers 503, new connections are served for
                   limits.shutdown_delay, then in-flight requests get limits.shutdown_grace

Exit codes:
  0  stopped cleanly (check-config: the file is valid; healthcheck: healthy)
  1  failed to start or stopped with an error (healthcheck: unhealthy; demo: a scenario
     ended unexpectedly)
  2  invalid configuration or usage

Environment:
  FAPI_GATEWAY_CONFIG          the configuration file (--config)
  FAPI_GATEWAY_ADMIN_ADDRESS   overrides admin.address (--admin-address)
  FAPI_GATEWAY_WORKERS         worker threads (--workers)
  FAPI_GATEWAY_LOG             log filter, e.g. info,fapi_gateway=debug (default info);
                               tokens, proofs and keys are never logged
  NO_COLOR                     no colours in pretty logs (they are off when stderr is not
                               a terminal anyway)
  FAPI_GATEWAY_WRITE_BATCH     0: write each response at once instead of at the end of the
                               worker's round of ready connections (default 1; see README)

Docs: README.md (configuration, troubleshooting, deployment) and gateway.yaml, where every
key is explained.";

#[derive(Parser)]
#[command(
    name = "fapi-gateway",
    version = VERSION,
    about = "A reverse proxy that enforces sender-constrained OAuth access tokens",
    long_about = "A reverse proxy that terminates TLS in front of your APIs and enforces \
                  sender-constrained OAuth access tokens: mTLS certificate-bound (RFC 8705) and \
                  DPoP-bound (RFC 9449) JWT access tokens (RFC 9068), per-route scopes.",
    after_help = AFTER_HELP
)]
struct Cli {
    /// The configuration file.
    #[arg(long, short, env = "FAPI_GATEWAY_CONFIG", default_value = "gateway.yaml", global = true)]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty, global = true)]
    log_format: LogFormat,
    /// Worker threads (default: one per CPU core).
    #[arg(long, env = "FAPI_GATEWAY_WORKERS", global = true)]
    workers: Option<usize>,
    /// The admin listener's address, `ip:port`, instead of `admin.address` of the
    /// configuration (e.g. 0.0.0.0:9901 in a container, for scraping /metrics).
    #[arg(long, env = "FAPI_GATEWAY_ADMIN_ADDRESS", global = true)]
    admin_address: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print a summary; nothing listens.
    CheckConfig {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
    },
    /// Exit 0 when the admin listener's /healthz answers 200 (for container health checks,
    /// where no curl is installed). Probes --admin-address, else `admin.address` of
    /// --config, unless --address is given.
    Healthcheck {
        /// The admin listener's address, `host:port` (default: see above).
        #[arg(long)]
        address: Option<String>,
    },
    /// Start a development authorization server, an echo upstream and the gateway, play the
    /// stolen-token scenarios, then keep running. Uses gateway.yaml and certs/ of the
    /// current folder when it has a gateway.yaml (the repository), else the bundled
    /// gateway.yaml in --dir or in the data folder ($XDG_DATA_HOME/fapi-gateway/demo or
    /// ~/.local/share/fapi-gateway/demo); missing development certificates are generated
    /// into certs/ beside the configuration.
    Demo {
        /// Exit after the scenarios (non-zero if any ended unexpectedly).
        #[arg(long)]
        once: bool,
        /// The folder for the demo's gateway.yaml and certs/ (created when missing).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout, e.g.
    /// `fapi-gateway completions bash > /etc/bash_completion.d/fapi-gateway`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout, e.g. `fapi-gateway manpage | man -l -`.
    Manpage,
    /// Run only the development authorization server (NOT FOR PRODUCTION): GET /jwks and a
    /// client-credentials token endpoint, POST /token, that binds each token to the
    /// client's TLS certificate or DPoP key. For a compose file or a gateway run separately.
    DevAs {
        /// Where to listen (HTTPS).
        #[arg(long, default_value = "127.0.0.1:9443")]
        address: std::net::SocketAddr,
        /// The folder of the development certificates and issuer key (generated when
        /// missing).
        #[arg(long)]
        dir: PathBuf,
        /// Extra names for a generated server certificate (e.g. the compose service names).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// The tokens' `aud`.
        #[arg(long, default_value = "https://localhost:8443")]
        audience: String,
        /// The issuer identifier: the tokens' `iss` and the metadata's `issuer`.
        #[arg(long, default_value = "https://localhost:9443")]
        issuer: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of `main`: dropping it writes the last buffered lines.
    let _log_flush = init_tracing(cli.log_format);
    let overrides = Overrides { admin_address: cli.admin_address };
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file.unwrap_or(cli.config), overrides),
        Some(Command::Demo { once, dir }) => demo(&cli.config, dir.as_deref(), once, cli.workers),
        Some(Command::DevAs { address, dir, hosts, issuer, audience }) => {
            dev_as(address, &dir, &hosts, &issuer, &audience)
        }
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "fapi-gateway",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Some(Command::Manpage) => {
            match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the manual page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Healthcheck { address }) => {
            let address = match (address, overrides.admin_address) {
                (None, Some(admin)) => Ok(admin),
                (address, _) => healthcheck_address(address, &cli.config),
            };
            match address {
                Ok(address) => healthcheck(address),
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::from(2)
                }
            }
        }
        None => run(&cli.config, cli.workers, overrides),
    }
}

/// Logs to stderr through the batching writer (`log_writer`), colours only on a terminal and
/// without `NO_COLOR`. Without a writer thread (it could not be started) lines go to stderr
/// directly.
fn init_tracing(format: LogFormat) -> Option<fapi_gateway::log_writer::FlushGuard> {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FAPI_GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour);
    let (writer, guard) = match fapi_gateway::log_writer::LogWriter::spawn(std::io::stderr()) {
        Ok((writer, guard)) => {
            // The plain format, uncoloured: access lines may skip the formatter (same bytes).
            if matches!(format, LogFormat::Pretty) && !colour {
                fapi_gateway::log_writer::install_plain_access_sink(writer.clone());
            }
            (tracing_subscriber::fmt::writer::BoxMakeWriter::new(writer), Some(guard))
        }
        Err(_) => (tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr), None),
    };
    let builder = builder.with_writer(writer);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

/// Command-line settings that replace keys of the configuration file (at start and on
/// every reload).
#[derive(Clone, Copy)]
struct Overrides {
    admin_address: Option<std::net::SocketAddr>,
}

impl Overrides {
    fn apply(self, mut config: Config) -> Config {
        if let Some(admin) = self.admin_address {
            config.admin = Some(admin);
        }
        config
    }
}

fn load(path: &std::path::Path, overrides: Overrides) -> Result<Config, ExitCode> {
    Config::load(path).map(|c| overrides.apply(c)).map_err(|e| {
        print_config_error(&e);
        ExitCode::from(2)
    })
}

/// An error about a file the configuration names, prefixed with the `file:line:col: key`
/// that names it (or the configuration file alone).
fn file_error(config: &Config, path: &std::path::Path, message: &str) -> String {
    match config.locate_file(message) {
        Some(place) => format!("{place}: {message}"),
        None if message.contains(&path.display().to_string()) => message.to_string(),
        None => format!("{}: {message}", path.display()),
    }
}

/// One `error:` line per problem, then how many there were when more than one.
fn print_config_error(e: &fapi_gateway::config::ConfigError) {
    for line in e.to_string().lines() {
        eprintln!("error: {line}");
    }
    if e.count() > 1 {
        eprintln!("{} problems: fix them all, then run check-config again", e.count());
    }
}

fn check_config(path: &std::path::Path, overrides: Overrides) -> ExitCode {
    let config = match load(path, overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = fapi_gateway::check_files(&config) {
        eprintln!("error: {}", file_error(&config, path, &e.to_string()));
        return ExitCode::from(2);
    }
    println!("{}: OK", path.display());
    let tls = &config.listen.tls;
    println!("listener  {} (public URL {})", config.listen.address, config.listen.public_url);
    println!(
        "          client certificates: {}{}",
        format!("{:?}", tls.client_auth).to_lowercase(),
        tls.client_ca.as_ref().map_or(" (any certificate, bound by thumbprint)".to_string(), |ca| format!(
            " (must chain to {})",
            ca.display()
        ))
    );
    if let Some(trusted) = &config.listen.trusted_proxies {
        let addresses: Vec<String> = trusted.addresses.iter().map(|n| format!("{}/{}", n.address, n.prefix)).collect();
        println!(
            "          RFC 9440 Client-Cert from trusted proxies: addresses {}; certificates {}; from others: {}",
            if addresses.is_empty() { "any".to_string() } else { addresses.join(" ") },
            if trusted.certificates.is_empty() { "any".to_string() } else { trusted.certificates.len().to_string() },
            if trusted.reject_from_others { "reject" } else { "strip" }
        );
    }
    if let Some(admin) = config.admin {
        println!("admin     {admin}");
    }
    for issuer in &config.issuers {
        let keys = match &issuer.keys {
            KeySource::JwksUri(uri) => format!("jwks_uri {uri}"),
            KeySource::Discovery => "discovery".to_string(),
            KeySource::File(p) => format!("jwks_file {}", p.display()),
        };
        let algs: Vec<&str> = issuer.algorithms.iter().map(|a| a.name()).collect();
        println!(
            "issuer    {} ({keys}; algorithms {}; audiences {})",
            issuer.issuer,
            algs.join(" "),
            issuer.audiences.join(" ")
        );
        if let Some(introspection) = &issuer.introspection {
            let endpoint = introspection.endpoint.as_ref().map_or("from discovery".to_string(), |u| u.to_string());
            let auth = match &introspection.client_auth {
                fapi_gateway::config::IntrospectionAuth::PrivateKeyJwt { .. } => "private_key_jwt",
                fapi_gateway::config::IntrospectionAuth::TlsClientAuth { .. } => "tls_client_auth",
                fapi_gateway::config::IntrospectionAuth::ClientSecretBasic { .. } => "client_secret_basic",
            };
            let answers = match introspection.format {
                fapi_gateway::config::IntrospectionFormat::Json => "json",
                fapi_gateway::config::IntrospectionFormat::Jwt => "jwt (RFC 9701)",
            };
            println!(
                "          opaque tokens: introspection {endpoint} as {} ({auth}; answers {answers}; cached {}s, inactive {}s)",
                introspection.client_id,
                introspection.cache_ttl.as_secs(),
                introspection.inactive_cache_ttl.as_secs()
            );
        }
    }
    let dpop = &config.dpop;
    let store = match &dpop.replay_store {
        fapi_gateway::config::ReplayBackend::Memory => format!("memory ({} entries)", dpop.replay_max_entries),
        fapi_gateway::config::ReplayBackend::Redis { target, on_error, .. } => {
            format!("redis {target} (on error: {})", format!("{on_error:?}").to_lowercase())
        }
    };
    println!(
        "dpop      algorithms {}; iat window -{}s/+{}s; replay store {store}",
        dpop.algs_challenge,
        dpop.max_age.as_secs(),
        dpop.max_future.as_secs(),
    );
    for login in &config.logins {
        println!(
            "login     {} (issuer {}; client {}; redirect_uri {}; scopes {}; paths {} {} {})",
            login.name,
            login.issuer,
            login.client_id,
            login.redirect_uri,
            login.scopes.join(" "),
            login.paths.login,
            login.paths.session,
            login.paths.logout
        );
    }
    for route in &config.routes {
        let methods = route
            .methods
            .as_ref()
            .map_or("*".to_string(), |m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","));
        let policy = match &route.policy {
            RoutePolicy::Public => "auth: none (public)".to_string(),
            RoutePolicy::Session { login, upstream_origin } => format!(
                "auth: session (login {}; upstream DPoP htu {upstream_origin})",
                config.logins.get(*login).map_or("?", |l| l.name.as_str())
            ),
            RoutePolicy::Protected { binding, scopes } => {
                let binding = format!("{binding:?}").to_lowercase();
                if scopes.is_empty() {
                    format!("binding: {binding}")
                } else {
                    format!("binding: {binding}, scopes: {}", scopes.join(" "))
                }
            }
        };
        let cors = route.cors.as_ref().map(|c| format!(", cors: {}", c.allowed_origins.join(" "))).unwrap_or_default();
        println!(
            "route     {:<16} {}{}/ [{methods}] -> {}  {policy}{}{cors}",
            route.name,
            route.host.as_deref().unwrap_or(""),
            route.path_prefix,
            route.upstream,
            if route.nonce_required && matches!(route.policy, RoutePolicy::Protected { .. }) {
                ", dpop nonce: required"
            } else {
                ""
            }
        );
    }
    if let Some(metadata) = &config.resource_metadata {
        println!(
            "metadata  RFC 9728 at /.well-known/oauth-protected-resource[/<prefix>]; authorization servers {}",
            if metadata.authorization_servers.is_empty() {
                "-".to_string()
            } else {
                metadata.authorization_servers.join(" ")
            }
        );
    }
    ExitCode::SUCCESS
}

/// The address to probe: `--address` (a `host:port`; of a name's addresses the first that
/// accepts a connection), else the admin listener of the configuration file.
fn healthcheck_address(address: Option<String>, config: &std::path::Path) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    if let Some(address) = address {
        let candidates: Vec<_> = address
            .to_socket_addrs()
            .map_err(|e| format!("--address {address}: {e} (expected host:port, e.g. 127.0.0.1:9901)"))?
            .collect();
        let reachable = candidates
            .iter()
            .find(|a| std::net::TcpStream::connect_timeout(a, std::time::Duration::from_secs(1)).is_ok());
        return reachable
            .or(candidates.first())
            .copied()
            .ok_or_else(|| format!("--address {address}: the name has no address"));
    }
    let loaded = Config::load(config).map_err(|e| format!("{e} (or give --address host:port)"))?;
    loaded.admin.ok_or_else(|| {
        format!("{} has no admin listener (`admin.address`) to probe; add one or give --address", config.display())
    })
}

fn healthcheck(address: std::net::SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    // A listener on 0.0.0.0 or [::] (a container's admin address) is probed on loopback.
    let address = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => (std::net::Ipv4Addr::LOCALHOST, address.port()).into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => (std::net::Ipv6Addr::LOCALHOST, address.port()).into(),
        _ => address,
    };
    let attempt = || -> std::io::Result<bool> {
        let timeout = std::time::Duration::from_secs(2);
        let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    match attempt() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("unhealthy: {address}/healthz did not answer 200");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {address}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers.max(1));
    }
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn demo(config: &std::path::Path, dir: Option<&std::path::Path>, once: bool, workers: Option<usize>) -> ExitCode {
    use fapi_gateway::demo::{DemoFolder, DemoOptions};
    let folder = match DemoFolder::resolve(config, dir) {
        Ok(folder) => folder,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime(workers) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(fapi_gateway::demo::run(DemoOptions { folder, once })) {
        Ok(played) if played.iter().all(fapi_gateway::demo::Scenario::ended_as_expected) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dev_as(
    address: std::net::SocketAddr,
    dir: &std::path::Path,
    hosts: &[String],
    issuer: &str,
    audience: &str,
) -> ExitCode {
    let runtime = match runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(fapi_gateway::demo::run_dev_as(address, dir, hosts, issuer, audience)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, workers: Option<usize>, overrides: Overrides) -> ExitCode {
    let config = match load(path, overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match runtime(workers) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let located = config.clone();
        let handle = match fapi_gateway::start(config).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {}", file_error(&located, path, &e.to_string()));
                return ExitCode::FAILURE;
            }
        };
        serve_until_stopped(&handle, path, overrides).await;
        tracing::info!("shutting down: draining in-flight requests");
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Waits for SIGTERM or SIGINT; on SIGHUP re-reads `path` and reloads it (an invalid file
/// is logged and the running configuration keeps serving).
async fn serve_until_stopped(handle: &fapi_gateway::GatewayHandle, path: &std::path::Path, overrides: Overrides) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {
                tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration");
                match Config::load(path) {
                    Err(e) => {
                        tracing::error!(error = %e, "reload refused: the configuration is invalid; the running one keeps serving");
                        handle.record_reload_failure();
                    }
                    Ok(config) => {
                        if let Err(e) = handle.reload(overrides.apply(config)).await {
                            tracing::error!(error = %e, "reload refused; the running configuration keeps serving");
                        }
                    }
                }
            }
        }
    }
}
