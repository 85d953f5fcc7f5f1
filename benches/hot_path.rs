//! Criterion micro-benchmarks of the per-request work: token validation warm (cache hit) and
//! cold (signature + claims) next to the raw signature verify of the same algorithm, the
//! binding check, and route matching.
//!
//! Run: `cargo bench --bench hot_path`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group, criterion_main};
use fapi_gateway::auth::binding::check_binding;
use fapi_gateway::auth::credentials::Credential;
use fapi_gateway::auth::jwks::IssuerKeys;
use fapi_gateway::auth::token::{Confirmation, TokenValidator};
use fapi_gateway::config::{Binding, Config, Route};
use fapi_gateway::jose::{Alg, CompactJws};
use fapi_gateway::router::Router;
use serde_json::json;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

struct Fixture {
    validator: TokenValidator,
    token: String,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = key.public_key().as_ref();
    let jwk = json!({"kty":"EC","crv":"P-256","kid":"k1","x":B64.encode(&point[1..33]),"y":B64.encode(&point[33..65])});
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, json!({"keys":[jwk]}).to_string()).unwrap();
    let yaml = format!(
        "listen: {{ address: 127.0.0.1:0, public_url: https://api.test, tls: {{ cert: c, key: k }} }}\n\
         issuers:\n  - {{ issuer: https://as.test, jwks_file: {}, audiences: [https://api.test] }}\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: http://127.0.0.1:1, binding: mtls }}\n",
        jwks_path.display()
    );
    let config = Config::from_yaml(&yaml, "bench.yaml", dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let issuer = config.issuers[0].clone();
    let keys = Arc::new(IssuerKeys::new(&issuer).unwrap());
    runtime.block_on(keys.prefetch()).unwrap();
    let validator = TokenValidator::new(vec![(issuer, keys)], &config.token_cache);
    let header = json!({"alg":"ES256","typ":"at+jwt","kid":"k1"});
    let claims = json!({"iss":"https://as.test","aud":"https://api.test","sub":"u","client_id":"c","iat":now(),"exp":now()+3600,
        "jti":"j","scope":"accounts:read","cnf":{"x5t#S256":B64.encode([7u8; 32])}});
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let signature = key.sign(&rng, input.as_bytes()).unwrap();
    let token = format!("{input}.{}", B64.encode(signature.as_ref()));
    Fixture { validator, token, runtime, _dir: dir }
}

fn token_validation(c: &mut Criterion) {
    let f = fixture();
    let now = now();
    let mut group = c.benchmark_group("es256");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("token_cold", |b| {
        b.iter(|| f.runtime.block_on(f.validator.validate_uncached(black_box(&f.token), now)).unwrap())
    });
    f.runtime.block_on(f.validator.validate(&f.token, now)).unwrap();
    group.bench_function("token_warm", |b| {
        b.iter(|| f.runtime.block_on(f.validator.validate(black_box(&f.token), now)).unwrap())
    });
    let jws = CompactJws::parse(&f.token, 16 * 1024).unwrap();
    let jwk_keys = fapi_gateway::auth::jwks_fetch::parse_jwks(
        "bench",
        std::fs::read(f._dir.path().join("jwks.json")).unwrap().as_slice(),
    )
    .unwrap();
    group.bench_function("raw_verify", |b| {
        b.iter(|| jwk_keys[0].verify(Alg::Es256, black_box(jws.signing_input()), jws.signature()).unwrap())
    });
    group.finish();
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

criterion_group!(benches, token_validation, binding_and_routing);
criterion_main!(benches);
