//! Config parsing and validation: defaults, and one test per refusal naming key and line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use super::*;

const BASE: &str = r#"
listen:
  address: 127.0.0.1:8443
  public_url: https://gateway.test:8443
  tls:
    cert: certs/server.pem
    key: certs/server.key
issuers:
  - issuer: https://as.example.com
    jwks_uri: https://as.example.com/jwks
    audiences: [https://api.example.com]
routes:
  - name: accounts
    match: { path_prefix: /accounts/, methods: [GET] }
    upstream: http://127.0.0.1:8080
    binding: mtls
    scopes: [accounts:read]
  - name: public
    match: { path_prefix: /public }
    upstream: http://127.0.0.1:8080
    auth: none
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(text, "gateway.yaml", Path::new("/etc/fapi"))
}

fn error(text: &str) -> String {
    parse(text).expect_err("config must be refused").to_string()
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.listen.tls.client_auth, ClientAuth::Optional);
    assert_eq!(c.listen.tls.cert, Path::new("/etc/fapi/certs/server.pem"));
    assert_eq!(c.listen.handshake_timeout, Duration::from_secs(10));
    let issuer = &c.issuers[0];
    assert_eq!(issuer.algorithms, vec![Alg::Ps256, Alg::Es256, Alg::EdDsa]);
    assert_eq!(issuer.typ, vec!["at+jwt".to_string()]);
    assert_eq!(issuer.leeway, Duration::from_secs(5));
    assert_eq!(issuer.max_future, Duration::from_secs(10));
    assert_eq!(c.routes[0].path_prefix, "/accounts");
    assert_eq!(c.routes[0].methods, Some(vec![http::Method::GET]));
    assert_eq!(
        c.routes[0].policy,
        RoutePolicy::Protected { binding: Binding::Mtls, scopes: vec!["accounts:read".into()] }
    );
    assert_eq!(c.routes[1].policy, RoutePolicy::Public);
    assert_eq!(c.limits.max_header_bytes, 16 * 1024);
}

#[test]
fn unknown_key_is_refused_with_line_and_column() {
    let text = BASE.replace("    binding: mtls\n", "    binding: mtls\n    bindng: mtls\n");
    let e = error(&text);
    assert!(e.starts_with("gateway.yaml:17:5: routes[0].bindng: unknown key `bindng`: did you mean `binding`?"), "{e}");
}

#[test]
fn every_error_of_a_file_is_reported_in_file_order() {
    // Parse errors in three sections and two items of one list: all of them, each with its
    // key path and line, in the user's words.
    let text = BASE
        .replace("    binding: mtls\n", "    binding: mtls\n    bindng: mtls\n")
        .replace("    audiences:", "    leeway: 1x\n    audiences:")
        + "limits:\n  max_body_bytes: -1\n  max_connections: lots\n";
    let e = error(&text);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 4, "{e}");
    assert!(lines[0].contains(": issuers[0].leeway: duration `1x` has unknown unit `x`"), "{e}");
    assert!(lines[1].contains(": routes[0].bindng: unknown key `bindng`: did you mean `binding`?"), "{e}");
    assert!(lines[2].contains(": limits.max_body_bytes: expected a whole number"), "{e}");
    assert!(lines[3].contains(": limits.max_connections: expected a whole number"), "{e}");
    let line_of = |l: &str| l.split(':').nth(1).unwrap().parse::<usize>().unwrap();
    assert!(lines.windows(2).all(|w| line_of(w[0]) < line_of(w[1])), "{e}");
    for l in &lines {
        let line = line_of(l);
        let key = l.split(": ").nth(1).unwrap().rsplit('.').next().unwrap();
        assert!(text.lines().nth(line - 1).unwrap().contains(key), "{l} points at its key's line");
    }
}

#[test]
fn validation_errors_of_several_sections_are_all_reported() {
    let text = BASE.replace("public_url: https://", "public_url: http://")
        + "limits:\n  max_connections: 0\n  max_header_bytes: 5\n";
    let e = error(&text);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(lines[0].contains("listen.public_url: must be an https:// URL"), "{e}");
    assert!(lines[1].contains("limits.max_connections: must be at least 1"), "{e}");
    assert!(lines[2].contains("limits.max_header_bytes: must be between 8192 and 1048576"), "{e}");
    // Each on the line of its own key, not the line of `limits:`.
    let limits_line = text.lines().position(|l| l == "limits:").unwrap() + 1;
    assert!(lines[1].starts_with(&format!("gateway.yaml:{}:3:", limits_line + 1)), "{e}");
    assert!(lines[2].starts_with(&format!("gateway.yaml:{}:3:", limits_line + 2)), "{e}");
}

#[test]
fn parser_jargon_is_translated() {
    let cases = [
        (
            BASE.replace("audiences: [https://api.example.com]", "audiences: https://api.example.com"),
            "expected a list here",
        ),
        (BASE.replace("  - name: accounts", "  - name: [accounts]"), "expected a single value here (text)"),
        (
            BASE.replace("    audiences:", "    leeway: 5s\n    leeway: 6s\n    audiences:"),
            "`leeway` is given twice in this mapping: keep one",
        ),
        (BASE.replace("  address: 127.0.0.1:8443", "\taddress: 127.0.0.1:8443"), "not tabs"),
        (
            BASE.replace("    key: certs/server.key\n", "    key: certs/server.key\n    client_auth: optinal\n"),
            "did you mean `optional`?",
        ),
    ];
    for (text, expected) in cases {
        let e = error(&text);
        assert!(e.contains(expected), "{expected:?} not in {e}");
        for jargon in ["sequence start", "string scalar", "DuplicateKeyPolicy", "invalid u64", "unknown variant"] {
            assert!(!e.contains(jargon), "{jargon} in {e}");
        }
    }
}

#[test]
fn an_empty_file_says_so_once() {
    for text in ["", "\n\n", "# only a comment\n"] {
        let e = error(text);
        assert_eq!(e.matches("1:1").count(), 1, "{e}");
        assert!(e.contains("the file is empty"), "{e}");
    }
}

#[test]
fn bad_duration_names_its_line() {
    let text = BASE.replace("    audiences:", "    leeway: 5 seconds\n    audiences:");
    let e = error(&text);
    assert!(e.starts_with("gateway.yaml:11:13: issuers[0].leeway: duration"), "{e}");
    assert!(e.contains("unknown unit"), "{e}");
}

#[test]
fn bad_enum_value_is_refused() {
    let text = BASE.replace("    binding: mtls", "    binding: sometimes");
    let e = error(&text);
    assert!(e.starts_with("gateway.yaml:16:"), "{e}");
}

#[test]
fn hmac_and_none_algorithms_cannot_be_configured() {
    for alg in ["HS256", "none"] {
        let text = BASE.replace("    audiences:", &format!("    algorithms: [{alg}]\n    audiences:"));
        let e = error(&text);
        assert!(e.contains("is not allowed"), "{e}");
        assert!(e.starts_with("gateway.yaml:11:"), "{e}");
    }
}

#[test]
fn route_without_binding_or_auth_is_refused() {
    let text = BASE.replace("    binding: mtls\n    scopes: [accounts:read]\n", "");
    let e = error(&text);
    assert!(e.contains("routes[0].binding"), "{e}");
    assert!(e.starts_with("gateway.yaml:13:"), "{e}");
}

#[test]
fn route_with_both_binding_and_auth_none_is_refused() {
    let text = BASE.replace("    binding: mtls\n", "    binding: mtls\n    auth: none\n");
    assert!(error(&text).contains("not both"));
}

#[test]
fn http_jwks_uri_is_refused() {
    let text = BASE.replace("jwks_uri: https://", "jwks_uri: http://");
    let e = error(&text);
    assert!(e.contains("issuers[0].jwks_uri"), "{e}");
    assert!(e.contains("https://"), "{e}");
}

#[test]
fn two_key_sources_are_refused() {
    let text = BASE.replace("    audiences:", "    jwks_file: keys.json\n    audiences:");
    assert!(error(&text).contains("exactly one of"));
}

#[test]
fn max_future_above_sixty_seconds_is_refused() {
    let text = BASE.replace("    audiences:", "    max_future: 61s\n    audiences:");
    assert!(error(&text).contains("at most 60s"));
}

#[test]
fn public_url_must_be_https_origin() {
    let e = error(&BASE.replace("public_url: https://", "public_url: http://"));
    assert!(e.contains("listen.public_url"), "{e}");
    assert!(e.starts_with("gateway.yaml:4:"), "{e}");
    assert!(error(&BASE.replace(":8443\n  tls", ":8443/api\n  tls")).contains("origin"));
}

#[test]
fn duplicate_route_names_and_matches_are_refused() {
    let dup = BASE.replace("name: public", "name: accounts");
    assert!(error(&dup).contains("used twice"));
    let same = BASE.replace("path_prefix: /public }", "path_prefix: /accounts, methods: [GET] }");
    assert!(error(&same).contains("exactly the same"));
}

#[test]
fn protected_route_needs_an_issuer() {
    let start = BASE.find("issuers:").unwrap();
    let end = BASE.find("routes:").unwrap();
    let text = format!("{}{}", &BASE[..start], &BASE[end..]);
    assert!(error(&text).contains("needs at least one entry under `issuers`"));
}

#[test]
fn typ_values_are_normalised() {
    let text = BASE.replace("    audiences:", "    typ: [application/AT+JWT, JWT]\n    audiences:");
    assert_eq!(parse(&text).unwrap().issuers[0].typ, vec!["at+jwt", "jwt"]);
}

#[test]
fn lowercase_methods_are_refused() {
    assert!(error(&BASE.replace("methods: [GET]", "methods: [get]")).contains("upper-case"));
}

#[test]
fn prefixes_differing_only_in_case_are_refused() {
    let text = BASE.replace("path_prefix: /public }", "path_prefix: /Accounts }");
    assert!(error(&text).contains("differ only in letter case"), "{}", error(&text));
}

#[test]
fn non_canonical_prefixes_are_refused() {
    for prefix in ["/a;b", "/a//b", "/%61b", "/a/../b"] {
        let text = BASE.replace("path_prefix: /public }", &format!("path_prefix: \"{prefix}\" }}"));
        assert!(error(&text).contains("is not a canonical path"), "{prefix}: {}", error(&text));
    }
}

#[test]
fn small_header_limits_are_refused_with_their_line() {
    let text = format!("{BASE}limits:\n  max_header_bytes: 1024\n");
    let e = error(&text);
    assert!(e.contains("limits.max_header_bytes"), "{e}");
    assert!(!e.starts_with("gateway.yaml:0:0"), "{e}");
}

#[test]
fn send_pace_stream_and_socket_limits_have_defaults_and_bounds() {
    let limits = parse(BASE).unwrap().limits;
    assert_eq!(limits.send_timeout, Duration::from_secs(60));
    assert_eq!(limits.min_send_rate, 0);
    assert_eq!(limits.max_concurrent_streams, 100);
    assert_eq!(limits.socket_send_buffer, None);
    let with = |v: &str| format!("{BASE}limits:\n  {v}\n");
    let limits =
        parse(&with("{ send_timeout: 5s, min_send_rate: 512, max_concurrent_streams: 8, socket_send_buffer: 65536 }"))
            .unwrap()
            .limits;
    assert_eq!(
        (limits.send_timeout, limits.min_send_rate, limits.max_concurrent_streams, limits.socket_send_buffer),
        (Duration::from_secs(5), 512, 8, Some(65536))
    );
    for (bad, key, why) in [
        ("send_timeout: 0s", "limits.send_timeout", "longer than 0s"),
        ("max_concurrent_streams: 0", "limits.max_concurrent_streams", "at least 1"),
        ("socket_send_buffer: 1024", "limits.socket_send_buffer", "between 4096"),
        ("min_send_rate: -1", "min_send_rate", ""),
    ] {
        let e = error(&with(bad));
        assert!(e.contains(key) && e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn shutdown_delay_defaults_to_zero_and_is_bounded() {
    assert_eq!(parse(BASE).unwrap().limits.shutdown_delay, Duration::ZERO);
    let with = |v: &str| format!("{BASE}limits:\n  shutdown_delay: {v}\n");
    assert_eq!(parse(&with("15s")).unwrap().limits.shutdown_delay, Duration::from_secs(15));
    assert_eq!(parse(&with("5m")).unwrap().limits.shutdown_delay, Duration::from_secs(300));
    let e = error(&with("6m"));
    assert!(e.contains("limits.shutdown_delay") && e.contains("at most 5m"), "{e}");
    assert!(!e.starts_with("gateway.yaml:0:0"), "{e}");
    let e = error(&with("10"));
    assert!(e.contains("shutdown_delay"), "{e}");
}

#[test]
fn refetch_interval_below_one_second_is_refused() {
    let text = BASE.replace("    audiences:", "    jwks_cache: { refetch_interval: 0s }\n    audiences:");
    assert!(error(&text).contains("at least 1s"));
}

#[test]
fn dpop_section_defaults_and_validation() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.dpop.algs_challenge, "ES256 PS256 EdDSA");
    assert_eq!(c.dpop.max_age, Duration::from_secs(60));
    assert_eq!(c.dpop.nonce, NonceMode::Off);
    assert_eq!(c.routes[0].public_origin, "https://gateway.test:8443");
    let text = format!("{BASE}dpop:\n  max_future: 2m\n");
    assert!(error(&text).contains("dpop.max_future"));
    let text = format!("{BASE}dpop:\n  max_future: 5s\n");
    assert!(error(&text).contains("between 10s and 60s"), "FAPI requires accepting 10 s ahead");
    let text = format!("{BASE}dpop:\n  max_age: 1500ms\n");
    assert!(error(&text).contains("whole seconds"));
    let text = format!("{BASE}dpop:\n  nonce_secret_file: a\n  nonce_secret_env: B\n");
    assert!(error(&text).contains("not both"));
    let text = format!("{BASE}dpop:\n  algorithms: [HS256]\n");
    assert!(error(&text).contains("is not allowed"));
}

#[test]
fn restart_guard_defaults_to_start_and_is_for_the_memory_store() {
    use crate::config::RestartGuard;
    assert_eq!(parse(BASE).unwrap().dpop.restart_guard, RestartGuard::Start);
    let skew = format!("{BASE}dpop:\n  replay:\n    restart_guard: skew\n");
    assert_eq!(parse(&skew).unwrap().dpop.restart_guard, RestartGuard::Skew);
    let unknown = format!("{BASE}dpop:\n  replay:\n    restart_guard: never\n");
    assert!(error(&unknown).contains("restart_guard"), "{}", error(&unknown));
    let redis = format!(
        "{BASE}dpop:\n  replay:\n    store: redis\n    url: redis://127.0.0.1:6379/0\n    restart_guard: skew\n"
    );
    let e = error(&redis);
    assert!(e.contains("dpop.replay.restart_guard") && e.contains("only used with `store: memory`"), "{e}");
}

#[test]
fn redis_replay_store_settings() {
    let text = format!("{BASE}dpop:\n  replay:\n    store: redis\n    url: rediss://gw:s3cret@redis.internal:6380/1\n");
    let c = parse(&text).unwrap();
    match &c.dpop.replay_store {
        ReplayBackend::Redis { target, key_prefix, timeout, on_error, ca: None, wait_for_replicas: 0 } => {
            assert_eq!(target.to_string(), "rediss://redis.internal:6380/1", "never shows the password");
            assert_eq!(format!("{target:?}"), "Single(rediss://redis.internal:6380/1)");
            assert_eq!(key_prefix, "fapi-gateway:dpop:");
            assert_eq!(*timeout, Duration::from_millis(250));
            assert_eq!(*on_error, ReplayOnError::Fail);
        }
        other => panic!("{other:?}"),
    }
    let missing = format!("{BASE}dpop:\n  replay:\n    store: redis\n");
    assert!(error(&missing).contains("dpop.replay.url"));
    let wrong = format!("{BASE}dpop:\n  replay:\n    store: redis\n    url: http://x\n");
    assert!(error(&wrong).contains("redis://"));
    let stray = format!("{BASE}dpop:\n  replay:\n    url: redis://x\n");
    assert!(error(&stray).contains("only used with `store: redis`"));
}

#[test]
fn route_public_url_must_be_an_https_origin() {
    let text = BASE.replace("    auth: none", "    auth: none\n    public_url: http://api.test");
    assert!(error(&text).contains("routes[1].public_url"), "{}", error(&text));
    let text = BASE.replace("    auth: none", "    auth: none\n    public_url: HTTPS://API.test:443");
    assert_eq!(parse(&text).unwrap().routes[1].public_origin, "https://api.test");
    let text = BASE.replace("match: { path_prefix: /public }", "match: { host: Partner.test, path_prefix: /public }");
    assert_eq!(parse(&text).unwrap().routes[1].public_origin, "https://partner.test:8443");
}

#[test]
fn strip_headers_are_header_names_but_not_the_credentials() {
    let with = |list: &str| BASE.replace("  tls:\n", &format!("  strip_headers: {list}\n  tls:\n"));
    let config = parse(&with("[X-Internal-Role]")).unwrap();
    assert_eq!(config.listen.strip_headers, vec![http::HeaderName::from_static("x-internal-role")]);
    assert!(parse(BASE).unwrap().listen.strip_headers.is_empty());
    let e = error(&with("[\"bad name\"]"));
    assert!(e.contains("listen.strip_headers[0]") && e.contains("is not a header name"), "{e}");
    let e = error(&with("[X-Ok, Authorization]"));
    assert!(e.contains("listen.strip_headers[1]") && e.contains("forward_token"), "{e}");
}

#[test]
fn per_client_connection_cap_is_off_unless_set_and_never_zero() {
    assert_eq!(parse(BASE).unwrap().limits.max_connections_per_client, None);
    let with = |v: &str| format!("{BASE}limits:\n  max_connections_per_client: {v}\n");
    assert_eq!(parse(&with("50")).unwrap().limits.max_connections_per_client, Some(50));
    let e = error(&with("0"));
    assert!(e.contains("limits.max_connections_per_client") && e.contains("at least 1"), "{e}");
}

const LOGIN: &str = "login:
  - name: web
    issuer: https://as.example.com
    client_id: web-bff
    client_key: secrets/web-bff.key
    redirect_uri: https://app.example.com/auth/callback
    scopes: [openid, accounts:read]
    return_to: [/app/]
";

fn with_login(login: &str, route_extra: &str) -> String {
    BASE.replace("routes:\n", &format!("{login}routes:\n"))
        + &format!(
            "  - name: app-api\n    match: {{ path_prefix: /app/api }}\n    upstream: http://127.0.0.1:8080/base\n    auth: session\n    login: web\n{route_extra}"
        )
}

#[test]
fn a_login_entry_gets_its_defaults_and_a_session_route_names_it() {
    let text = BASE.replace("routes:\n", &format!("{LOGIN}routes:\n  - name: app-api\n    match: {{ path_prefix: /app/api }}\n    upstream: http://127.0.0.1:8080/base\n    auth: session\n    login: web\n"));
    let c = parse(&text).unwrap();
    let login = &c.logins[0];
    assert_eq!(login.callback_path, "/auth/callback");
    assert_eq!(login.redirect_uri, "https://app.example.com/auth/callback");
    assert_eq!(login.client_auth, LoginAuth::PrivateKeyJwt { key: "/etc/fapi/secrets/web-bff.key".into(), kid: None });
    assert_eq!(
        login.paths,
        LoginPaths { login: "/auth/login".into(), logout: "/auth/logout".into(), session: "/auth/session".into() }
    );
    assert_eq!(login.session.cookie, "__Host-fapi-session");
    assert_eq!(login.session.idle_timeout, Duration::from_secs(1800));
    assert_eq!(login.session.max_lifetime, Duration::from_secs(12 * 3600));
    assert_eq!(login.response_mode, ResponseMode::Jwt);
    assert!(login.openid());
    assert_eq!(c.routes[0].policy, RoutePolicy::Session { login: 0, upstream_origin: "http://127.0.0.1:8080".into() });
}

#[test]
fn login_mistakes_are_refused_with_their_key() {
    let cases = [
        (LOGIN.replace("issuer: https://as.example.com", "issuer: http://as.example.com"), "login[0].issuer"),
        (LOGIN.replace("    client_key: secrets/web-bff.key\n", ""), "login[0].client_key"),
        (LOGIN.replace("https://app.example.com/auth/callback", "http://app.example.com/cb"), "login[0].redirect_uri"),
        (LOGIN.replace("return_to: [/app/]", "return_to: [//evil.test/]"), "login[0].return_to"),
        (LOGIN.replace("return_to: [/app/]", "return_to: []"), "login[0].return_to"),
        (LOGIN.replace("scopes: [openid, accounts:read]", "scopes: [\"openid accounts:read\"]"), "login[0].scopes"),
        (LOGIN.to_string() + "    client_auth: tls_client_auth\n", "login[0].client_cert"),
        (
            LOGIN.replace("    client_key: secrets/web-bff.key\n", "")
                + "    client_auth: tls_client_auth\n    client_cert: c.pem\n",
            "login[0].client_cert",
        ),
        (LOGIN.to_string() + "    session: { store: redis }\n", "login[0].session.redis"),
        (
            LOGIN.to_string() + "    session: { store: redis, redis: { url: \"redis://r:6379\" } }\n",
            "login[0].session.secret_file",
        ),
        (LOGIN.to_string() + "    paths: { login: /auth/callback }\n", "login[0].paths.login"),
    ];
    for (login, key) in cases {
        let e = error(&with_login(&login, ""));
        assert!(e.contains(&format!(": {key}: ")), "{key} not named in {e}");
    }
    let e = error(&with_login(LOGIN, "    scopes: [x]\n"));
    assert!(e.contains("routes[2].scopes"), "{e}");
    let e = error(&with_login(&LOGIN.replace("name: web", "name: other"), ""));
    assert!(e.contains("routes[2].login: no `login:` entry is named `web`"), "{e}");
    let e = error(
        &(BASE.to_string()
            + "  - name: x\n    match: { path_prefix: /x }\n    upstream: http://127.0.0.1:1\n    auth: none\n    login: web\n"),
    );
    assert!(e.contains("routes[2].login: `auth: session` and `login: <name>` go together"), "{e}");
}
