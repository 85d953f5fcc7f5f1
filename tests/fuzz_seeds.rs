//! Writes the fuzz targets' seed corpora, `fuzz/seeds/<target>/`, from the inputs the tests
//! use: the raw requests of the connection-level tests, tokens and DPoP proofs minted by
//! the test signers, the bundled `gateway.yaml` and the test environment's configuration,
//! rustls ClientHellos, the paths, hosts and headers of the unit tests. The committed
//! files are what CI fuzzes from (`.ci/run`); this only regenerates them:
//!
//! ```text
//! cargo test --test fuzz_seeds -- --ignored
//! ```
//!
//! Tokens, proofs and ClientHellos carry fresh keys, times and randoms, and the test
//! environment's configuration its temporary paths and ports, so regenerating changes those
//! files; everything else comes out the same.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use serde_json::json;

/// Seeds stay small: libFuzzer's default input size limit is 4 KiB.
const MAX_SEED: usize = 4096;

#[tokio::test]
#[ignore = "regenerates fuzz/seeds/; run by hand"]
async fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    write(&root, "http1_framing", http1_framing());
    write(&root, "client_hello", client_hello());
    write(&root, "access_token", access_token());
    write(&root, "dpop_proof", dpop_proof());
    write(&root, "config", config().await);
    write(&root, "request_target", request_target());
    write(&root, "request_headers", request_headers());
}

/// Replaces `root/target/` with `seeds`.
fn write(root: &Path, target: &str, seeds: Vec<(String, Vec<u8>)>) {
    let dir: PathBuf = root.join(target);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        assert!(bytes.len() < MAX_SEED, "{target}/{name}: {} bytes", bytes.len());
        let path = dir.join(name);
        assert!(!path.exists(), "{} twice", path.display());
        std::fs::write(path, bytes).unwrap();
    }
}

fn named<T: AsRef<[u8]>>(items: impl IntoIterator<Item = (&'static str, T)>) -> Vec<(String, Vec<u8>)> {
    items.into_iter().map(|(name, bytes)| (name.to_string(), bytes.as_ref().to_vec())).collect()
}

// ---------------------------------------------------------------------------------------
// http1_framing: a knob byte (fuzz/fuzz_targets/http1_framing.rs), then the client's bytes
// ---------------------------------------------------------------------------------------

fn http1_framing() -> Vec<(String, Vec<u8>)> {
    let chunked = |body: &str| {
        format!("POST /public/upload HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
    };
    let smuggled = "GET /public/smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n";
    let mut spoofed = format!(
        "GET /public/x?a=1&b=two%20words&c=%2e%2e/../y&d HTTP/1.1\r\nHost: {GATEWAY_HOST}:8443\r\n\
         Connection: x-drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n"
    );
    for (name, value) in [
        ("client-cert", ":AAAA:"),
        ("x-fapi-subject", "admin"),
        ("x-forwarded-for", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
        ("proxy-authorization", "Basic x"),
    ] {
        spoofed.push_str(&format!("{name}: {value}\r\n"));
    }
    spoofed.push_str("\r\n");
    let requests: Vec<(&str, String)> = vec![
        // tests/host_header.rs
        ("get", "GET /public/x HTTP/1.1\r\nHost: gateway.test\r\n\r\n".into()),
        ("no-host", "GET /public/x HTTP/1.1\r\n\r\n".into()),
        ("two-hosts", "GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nHost: partner.test\r\n\r\n".into()),
        ("bad-host", "GET /public/x HTTP/1.1\r\nHost: gateway.test:1:2\r\n\r\n".into()),
        ("canonical-host", "GET /public/x HTTP/1.1\r\nHost: GATEWAY.test.:443\r\nConnection: close\r\n\r\n".into()),
        ("http10", "GET /public/x HTTP/1.0\r\n\r\n".into()),
        // tests/request_framing.rs: malformed chunked bodies
        ("chunked", chunked("3\r\nabc\r\n0\r\n\r\n")),
        ("chunk-size-zz", chunked("zz\r\nabc\r\n0\r\n\r\n")),
        ("chunk-bare-lf", chunked("3\nabc\r\n0\r\n\r\n")),
        ("chunk-overflow", chunked("fffffffffffffffffff\r\nabc\r\n0\r\n\r\n")),
        ("chunk-cut-short", chunked("3\r\nabcdef")),
        // tests/proxy.rs: chunked uploads (with an extension and a trailer here), header hygiene
        ("chunked-ext-trailer", chunked("4;name=value\r\nabcd\r\n1\r\ne\r\n0\r\nX-Trailer: 1\r\n\r\n")),
        // hyper reads a trailer line up to CRLF, a bare LF included: this trailer section
        // runs on to the CRLF CRLF after the GET, which is never served (the fuzz target's
        // `trailer_section` allowance).
        ("trailer-bare-lf", chunked(&format!("3\r\nabc\r\n0\r\n\n\r\n{smuggled}"))),
        ("hop-by-hop-spoofed", spoofed),
        ("forwarded-injection", "GET /public/x HTTP/1.1\r\nHost: a\", for=6.6.6.6;proto=https;host=\"b\r\n\r\n".into()),
        // tests/connections.rs: pipelined requests, an unread body holding a request
        (
            "pipelined",
            "GET /public/c HTTP/1.1\r\nHost: gateway.test\r\n\r\n\
             GET /public/d HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n"
                .into(),
        ),
        (
            "body-holding-a-request",
            format!(
                "POST /mtls/x HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        // Framing conflicts
        (
            "cl-and-te",
            format!(
                "POST /public/upload HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
                 3\r\nabc\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "te-not-chunked-last",
            "POST /public/upload HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
                .into(),
        ),
        (
            "te-http10",
            "POST /public/upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n".into(),
        ),
        (
            "two-content-lengths",
            format!(
                "POST /public/upload HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc{smuggled}"
            ),
        ),
        (
            "content-length-plus",
            "POST /public/upload HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: +3\r\n\r\nabc".into(),
        ),
        (
            "expect-continue",
            "PUT /echo HTTP/1.1\r\nHost: gateway.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello".into(),
        ),
        (
            "head",
            "HEAD /public/x HTTP/1.1\r\nHost: gateway.test\r\n\r\nGET /public/y HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
                .into(),
        ),
        ("leading-crlf", "\r\n\r\nGET /public/x HTTP/1.1\r\nHost: gateway.test\r\n\r\n".into()),
        ("obs-fold", "GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-Folded: a\r\n b\r\n\r\n".into()),
        ("head-cut-short", "GET /public/x HTTP/1.1\r\nHost: gatew".into()),
    ];
    let mut seeds = Vec::new();
    for (name, request) in requests {
        // Whole reads, body read: the plain case.
        seeds.push((name.to_string(), [&[0x00], request.as_bytes()].concat()));
    }
    // A few with other knobs: 1-byte reads with `Pending` and parking after every answer
    // (the body refused unread, as tests/connections.rs does); 64-byte reads, a 16-byte body
    // limit; a per-request mix, end of file at once.
    for (name, knobs) in
        [("pipelined", 0x25), ("chunked", 0x0e), ("body-holding-a-request", 0x35), ("cl-and-te", 0x5b), ("get", 0x40)]
    {
        let (_, plain) = seeds.iter().find(|(n, _)| n == name).expect("seed");
        let mut bytes = plain.clone();
        bytes[0] = knobs;
        seeds.push((format!("{name}-knobs-{knobs:02x}"), bytes));
    }
    seeds
}

// ---------------------------------------------------------------------------------------
// client_hello: a split count, split points, then the TLS bytes
// ---------------------------------------------------------------------------------------

fn client_hello() -> Vec<(String, Vec<u8>)> {
    init();
    let pki = TestPki::new();
    let hello = |config: rustls::ClientConfig, name: &str| {
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        bytes
    };
    let tls13 = hello(raw::tls_config(&pki, &[b"h2", b"http/1.1"], &[&rustls::version::TLS13]), GATEWAY_HOST);
    let tls12 = hello(raw::tls_config(&pki, &[b"http/1.1"], &[&rustls::version::TLS12]), "partner.test");
    let no_sni = hello(raw::tls_config(&pki, &[b"http/1.1"], &[&rustls::version::TLS13]), "127.0.0.1");
    // As the scanner's unit tests do: the handshake message re-framed into small records.
    let split_records = |hello: &[u8], size: usize| {
        let mut out = Vec::new();
        for chunk in hello[5..].chunks(size) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    };
    let unsplit = |tls: &[u8]| [&[0u8][..], tls].concat();
    let with_splits = |tls: &[u8], ends: &[u16]| {
        let mut bytes = vec![u8::try_from(ends.len()).unwrap()];
        for end in ends {
            bytes.extend_from_slice(&end.to_be_bytes());
        }
        bytes.extend_from_slice(tls);
        bytes
    };
    let mut alert_first = vec![0, 21, 3, 1, 0, 2, 1, 90];
    alert_first.extend_from_slice(&tls13);
    let mut then_data = unsplit(&tls13);
    then_data.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
    named([
        ("tls13-sni", unsplit(&tls13)),
        ("tls12-sni", unsplit(&tls12)),
        ("ip-no-sni", unsplit(&no_sni)),
        ("read-in-four", with_splits(&tls13, &[1, 5, 9, 100])),
        ("records-of-100", unsplit(&split_records(&tls13, 100))),
        ("records-of-7-read-in-three", with_splits(&split_records(&tls12, 7), &[3, 12, 200])),
        ("truncated", unsplit(&tls13[..tls13.len() / 2])),
        ("alert-first", alert_first),
        ("application-data-after", then_data),
        ("http-not-tls", unsplit(b"GET / HTTP/1.1\r\nHost: gateway.test\r\n\r\n")),
    ])
}

// ---------------------------------------------------------------------------------------
// access_token: compact JWS or a JWK; dpop_proof: a proof
// ---------------------------------------------------------------------------------------

fn access_token() -> Vec<(String, Vec<u8>)> {
    let issuer = "https://as.test";
    let es256 = Signer::es256("k1");
    let mut bound = claims(issuer, AUDIENCE);
    bound["cnf"] = json!({ "x5t#S256": b64([7u8; 32]) });
    let mut dpop_bound = claims(issuer, AUDIENCE);
    dpop_bound["cnf"] = json!({ "jkt": Signer::es256("dpop").jwk_thumbprint() });
    let mut private = es256.public_jwk();
    private["d"] = json!(b64([1u8; 32]));
    named([
        ("es256-token", es256.jwt(&claims(issuer, AUDIENCE)).into_bytes()),
        ("es384-token", Signer::es384("k2").jwt(&claims(issuer, AUDIENCE)).into_bytes()),
        ("ps256-token", Signer::ps256("k3").jwt(&claims(issuer, AUDIENCE)).into_bytes()),
        ("eddsa-token", Signer::eddsa("k4").jwt(&claims(issuer, AUDIENCE)).into_bytes()),
        ("mtls-bound-token", es256.jwt(&bound).into_bytes()),
        ("dpop-bound-token", es256.jwt(&dpop_bound).into_bytes()),
        (
            "alg-none-token",
            es256.sign_compact(&json!({"alg": "none", "typ": "at+jwt"}), &claims(issuer, AUDIENCE)).into_bytes(),
        ),
        ("es256-jwk", es256.public_jwk().to_string().into_bytes()),
        ("ps256-jwk", Signer::ps256("k3").public_jwk().to_string().into_bytes()),
        ("eddsa-jwk", Signer::eddsa("k4").public_jwk().to_string().into_bytes()),
        ("private-jwk", private.to_string().into_bytes()),
        ("oct-jwk", json!({"kty": "oct", "k": b64(b"secret"), "alg": "HS256"}).to_string().into_bytes()),
    ])
}

fn dpop_proof() -> Vec<(String, Vec<u8>)> {
    // The fuzz target checks proofs against GET https://api.test/x.
    let (htm, htu) = ("GET", "https://api.test/x");
    let key = Signer::es256("dpop");
    let bare = key.bare_public_jwk();
    let proof_claims = || json!({"jti": random_id(), "htm": htm, "htu": htu, "iat": now()});
    let mut with_d = bare.clone();
    with_d["d"] = json!(b64([1u8; 32]));
    let mut no_jti = proof_claims();
    no_jti.as_object_mut().unwrap().remove("jti");
    let mut nonce = proof_claims();
    nonce["nonce"] = json!("AAAAAAAAAAA");
    named([
        ("es256", key.dpop_proof(htm, htu, None)),
        ("es256-ath", key.dpop_proof(htm, htu, Some("token"))),
        ("ps256", Signer::ps256("p").dpop_proof(htm, htu, None)),
        ("eddsa", Signer::eddsa("e").dpop_proof(htm, htu, None)),
        ("es384-normalised-htu", Signer::es384("e3").dpop_proof(htm, "HTTPS://API.test:443/x?q#f", None)),
        ("typ-jwt", key.sign_compact(&json!({"typ": "jwt", "alg": "ES256", "jwk": bare}), &proof_claims())),
        ("alg-none", key.sign_compact(&json!({"typ": "dpop+jwt", "alg": "none", "jwk": bare}), &proof_claims())),
        (
            "private-key-in-jwk",
            key.sign_compact(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": with_d}), &proof_claims()),
        ),
        ("no-jti", key.sign_compact(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": bare}), &no_jti)),
        ("nonce", key.sign_compact(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": bare}), &nonce)),
        ("wrong-method", key.dpop_proof("POST", htu, None)),
    ])
}

// ---------------------------------------------------------------------------------------
// config: gateway.yaml text
// ---------------------------------------------------------------------------------------

async fn config() -> Vec<(String, Vec<u8>)> {
    // The bundled file without its comments (the whole file is over 4 KiB).
    let bundled = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml")).unwrap();
    let bundled: String = bundled
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .map(|line| format!("{line}\n"))
        .collect();
    // The integration tests' configuration, as `Env` writes it.
    let env = Env::start_with(Options {
        admin: true,
        limits: "  max_body_bytes: 1024\n  max_connections: 20\n".into(),
        dpop: "dpop:\n  nonce: required\n  max_age: 30s\n".into(),
        ..Default::default()
    })
    .await;
    let test_env = env.yaml.clone();
    // src/config/tests.rs' base configuration, and refusals it tests.
    let base = "listen:\n  address: 127.0.0.1:8443\n  public_url: https://gateway.test:8443\n  tls:\n    cert: certs/server.pem\n    \
                key: certs/server.key\nissuers:\n  - issuer: https://as.example.com\n    jwks_uri: https://as.example.com/jwks\n    \
                audiences: [https://api.example.com]\nroutes:\n  - name: accounts\n    match: { path_prefix: /accounts/, methods: [GET] }\n    \
                upstream: http://127.0.0.1:8080\n    binding: mtls\n    scopes: [accounts:read]\n  - name: public\n    \
                match: { path_prefix: /public }\n    upstream: http://127.0.0.1:8080\n    auth: none\n";
    named([
        ("gateway-yaml", bundled),
        ("test-env", test_env),
        ("base", base.to_string()),
        ("small-header-limit", format!("{base}limits:\n  max_header_bytes: 1024\n")),
        ("unknown-key", format!("{base}unknown: 1\n")),
        ("durations", format!("{base}limits:\n  header_read_timeout: 10s\n  idle_timeout: 1m\n")),
    ])
}

// ---------------------------------------------------------------------------------------
// request_target: `host\npath`; request_headers: `name: value` lines
// ---------------------------------------------------------------------------------------

fn request_target() -> Vec<(String, Vec<u8>)> {
    // Hosts from src/uri/host.rs' tests and tests/host_header.rs, paths from
    // src/uri/path.rs' and normalise.rs' tests.
    named([
        ("plain", "gateway.test\n/public/x"),
        ("upper-trailing-dot-port", "GATEWAY.test.:443\n/accounts/1"),
        ("ipv6-port", "[::1]:8443\n/a/b.json"),
        ("mapped-ipv4", "[::ffff:127.0.0.1]\n/"),
        ("unclosed-bracket", "[::1\n/x"),
        ("double-dot-host", "gateway..test\n/a/../b"),
        ("bad-port", "a.test:123456\n/accounts//1"),
        ("userinfo", "user@a.test\n/public/..;/mtls"),
        ("encoded-slash", "gateway.test\n/public%2F..%2Faccounts"),
        ("encoded-dots", "gateway.test\n/public/%2e%2e/accounts"),
        ("path-parameters", "gateway.test\n/accounts;jsessionid=x/1"),
        ("encoded-unreserved", "gateway.test\n/%61ccounts/1"),
        ("bad-escape", "gateway.test\n/a%zz"),
        ("query-fragment", "gateway.test\n/public/x?a=1&b=two%20words&c=%2e%2e/../y&d#f"),
        ("utf8", "gateway.test\n/caf\u{e9}/%C3%A9"),
        ("url", "HTTPS://Server.Example.COM:443/%74oken?x=1#frag"),
    ])
}

fn request_headers() -> Vec<(String, Vec<u8>)> {
    // tests/proxy.rs' spoofed and hop-by-hop headers, src/proxy/headers.rs' unit tests.
    named([
        (
            "spoofed",
            "client-cert: :AAAA:\nclient-cert-chain: :AAAA:\nx-fapi-subject: admin\nx-fapi-client-id: evil-client\n\
             x-fapi-scopes: admin\nx-forwarded-for: 6.6.6.6\nx-forwarded-host: evil\nx-forwarded-proto: http\n\
             forwarded: for=6.6.6.6\nproxy-authorization: Basic x\nx-custom: 1\nx-also-custom: two words\n",
        ),
        (
            "hop-by-hop",
            "connection: close, x-secret\nx-secret: 1\nkeep-alive: timeout=5\nte: trailers\nupgrade: websocket\n\
             proxy-anything: x\ntransfer-encoding: chunked\nhost: gateway.test\nx-kept: 1\n",
        ),
        (
            "vendor-trusted",
            "x-ssl-client-verify: SUCCESS\nx-amzn-mtls-clientcert-leaf: x\ntrue-client-ip: 6.6.6.6\nx-original-url: /admin\n\
             x-envoy-peer: x\nx-request-id: 1\naccept: */*\n",
        ),
        (
            "underscores",
            "x_fapi_subject: admin\nx_forwarded_for: 6.6.6.6\nproxy_authorization: Basic x\nx_ssl_client_verify: 0\n",
        ),
        ("cookie-crumbs", "cookie: a=1\ncookie: b=2\ncookie: c=3\nauthorization: Bearer t\n"),
        ("connection-names-gateway-headers", "connection: x-forwarded-for, authorization\nx-forwarded-for: 1.2.3.4\n"),
    ])
}
