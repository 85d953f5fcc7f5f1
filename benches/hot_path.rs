//! Criterion micro-benchmarks of the per-request work: token validation warm (cache hit) and
//! cold (signature + claims) next to the raw signature verify of the same algorithm, for
//! ES256, PS256 and EdDSA; thumbprints (client certificate, JWK); the binding check; route
//! matching; and the header rewriting of a forwarded request.
//!
//! Run: `cargo bench --bench hot_path`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/signers.rs"]
mod signers;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fapi_gateway::auth::binding::check_binding;
use fapi_gateway::auth::credentials::Credential;
use fapi_gateway::auth::jwks::IssuerKeys;
use fapi_gateway::auth::token::{Confirmation, TokenValidator};
use fapi_gateway::config::{Binding, Config, Route};
use fapi_gateway::jose::{CompactJws, PublicKey, SigningKey};
use fapi_gateway::proxy::headers::{ForwardedHeaders, prepare_request};
use fapi_gateway::router::Router;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use signers::{compact, signers};

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A validator trusting one issuer whose only key is `signer`'s, and a token it signed.
struct Fixture {
    validator: TokenValidator,
    token: String,
    key: PublicKey,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn fixture(signer: &SigningKey) -> Fixture {
    let mut jwk = signer.public_jwk();
    jwk["kid"] = json!("k1");
    let key = PublicKey::from_jwk(jwk.as_object().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, json!({"keys":[jwk]}).to_string()).unwrap();
    let yaml = format!(
        "listen: {{ address: 127.0.0.1:0, public_url: https://api.test, tls: {{ cert: c, key: k }} }}\n\
         issuers:\n  - {{ issuer: https://as.test, jwks_file: {}, audiences: [https://api.test], algorithms: [{}] }}\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: http://127.0.0.1:1, binding: mtls }}\n",
        jwks_path.display(),
        signer.alg()
    );
    let config = Config::from_yaml(&yaml, "bench.yaml", dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let issuer = config.issuers[0].clone();
    let keys = Arc::new(IssuerKeys::new(&issuer).unwrap());
    runtime.block_on(keys.prefetch()).unwrap();
    let validator = TokenValidator::new(vec![(issuer, keys)], &config.token_cache);
    let header = json!({"alg":signer.alg().name(),"typ":"at+jwt","kid":"k1"});
    let claims = json!({"iss":"https://as.test","aud":"https://api.test","sub":"u","client_id":"c","iat":now(),"exp":now()+3600,
        "jti":"j","scope":"accounts:read","cnf":{"x5t#S256":fapi_gateway::jose::b64url_encode(&[7u8; 32])}});
    let token = compact(signer, &header, &claims);
    Fixture { validator, token, key, runtime, _dir: dir }
}

fn token_validation(c: &mut Criterion) {
    for signer in signers() {
        let f = fixture(&signer);
        // After the fixture: generating an RSA key takes a while, and the token's `iat` is
        // checked against this clock.
        let now = now();
        let mut group = c.benchmark_group(signer.alg().name().to_ascii_lowercase());
        group.measurement_time(Duration::from_secs(3));
        group.bench_function("token_cold", |b| {
            b.iter(|| f.runtime.block_on(f.validator.validate_uncached(black_box(&f.token), now)).unwrap())
        });
        f.runtime.block_on(f.validator.validate(&f.token, now)).unwrap();
        group.bench_function("token_warm", |b| {
            b.iter(|| f.runtime.block_on(f.validator.validate(black_box(&f.token), now)).unwrap())
        });
        let jws = CompactJws::parse(&f.token, 16 * 1024).unwrap();
        let alg = signer.alg();
        group.bench_function("raw_verify", |b| {
            b.iter(|| f.key.verify(alg, black_box(jws.signing_input()), jws.signature()).unwrap())
        });
        group.finish();
    }
}

fn thumbprints(c: &mut Criterion) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap().self_signed(&key).unwrap();
    let der = cert.der().to_vec();
    c.bench_function("thumbprint_certificate", |b| {
        b.iter(|| fapi_gateway::tls::certificate_thumbprint(black_box(&der)))
    });
    let jwk = signers().remove(0).public_jwk();
    let jwk = jwk.as_object().unwrap().clone();
    // What a DPoP proof with a new key costs: import the public JWK and hash its RFC 7638
    // thumbprint (a known key is found by header hash instead).
    c.bench_function("thumbprint_jwk_import_es256", |b| b.iter(|| PublicKey::from_jwk(black_box(&jwk)).unwrap()));
}

/// A typical forwarded request's headers: Host, a bearer token, a few client headers.
fn request_headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::HOST, HeaderValue::from_static("api.test"));
    h.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    h.insert(http::header::USER_AGENT, HeaderValue::from_static("bank-client/4.2"));
    h.insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(HeaderName::from_static("x-request-id"), HeaderValue::from_static("0123456789abcdef0123456789abcdef"));
    h
}

fn header_rewriting(c: &mut Criterion) {
    let token = "a".repeat(700);
    let forwarded = ForwardedHeaders::new("10.1.2.3:50000".parse().unwrap());
    forwarded.apply(&mut HeaderMap::new(), Some("api.test"));
    let typical = request_headers(&token);
    c.bench_function("headers_forward_typical", |b| {
        b.iter_batched(
            || typical.clone(),
            |mut h| {
                prepare_request(&mut h);
                forwarded.apply(&mut h, Some("api.test"));
                h
            },
            BatchSize::SmallInput,
        )
    });
    let mut hostile = request_headers(&token);
    for name in ["x-forwarded-for", "x_fapi_subject", "client-cert", "proxy-authorization", "forwarded"] {
        hostile.insert(HeaderName::from_static(name), HeaderValue::from_static("spoofed"));
    }
    hostile.insert(http::header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
    c.bench_function("headers_forward_spoofed", |b| {
        b.iter_batched(
            || hostile.clone(),
            |mut h| {
                prepare_request(&mut h);
                forwarded.apply(&mut h, Some("api.test"));
                h
            },
            BatchSize::SmallInput,
        )
    });
}

fn binding_and_routing(c: &mut Criterion) {
    let cnf = Confirmation { x5t_s256: Some([7; 32]), ..Default::default() };
    let cert = [7u8; 32];
    c.bench_function("binding_mtls", |b| {
        b.iter(|| check_binding(Binding::Mtls, black_box(&cnf), &Credential::Bearer("t"), Some(&cert)).unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from(
        "listen: { address: 127.0.0.1:0, public_url: https://api.test, tls: { cert: c, key: k } }\nroutes:\n",
    );
    for i in 0..50 {
        yaml.push_str(&format!(
            "  - {{ name: r{i}, match: {{ path_prefix: /api/v1/resource{i} }}, upstream: http://127.0.0.1:1, auth: none }}\n"
        ));
    }
    let config = Config::from_yaml(&yaml, "bench.yaml", dir.path()).unwrap();
    let routes: &[Route] = &config.routes;
    let router = Router::new(routes);
    c.bench_function("route_50_routes", |b| {
        b.iter(|| router.route(None, black_box("/api/v1/resource42/items/7"), &http::Method::GET).unwrap())
    });
}

criterion_group!(benches, token_validation, thumbprints, binding_and_routing, header_rewriting);
criterion_main!(benches);
