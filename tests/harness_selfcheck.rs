//! Self-checks of the integration-test harness in `tests/common`, without the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{JwksServer, Signer, TestPki, Upstream};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

#[tokio::test]
async fn jwks_server_over_https_with_client_identity() {
    let pki = TestPki::new();
    let signer = Signer::es256("k1");
    let jwks = JwksServer::start(&pki, vec![signer.public_jwk()]).await;
    assert_eq!(jwks.issuer(), format!("https://localhost:{}", jwks.port()));
    assert_eq!(jwks.jwks_uri(), format!("{}/jwks", jwks.issuer()));

    let cert = pki.ca_signed_client("client-1");
    let http = common::client(&pki, jwks.addr(), Some(&cert), false);
    jwks.set_cache_control(Some("max-age=60".into()));
    let resp = http.get(jwks.jwks_uri()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["cache-control"], "max-age=60");
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["keys"][0], signer.public_jwk());
    assert_eq!(jwks.jwks_hits(), 1);

    jwks.set_keys(vec![]);
    let body: Value =
        serde_json::from_slice(&http.get(jwks.jwks_uri()).send().await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!(body["keys"], serde_json::json!([]));
    assert_eq!(jwks.jwks_hits(), 2);

    for path in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
        let url = format!("{}{path}", jwks.issuer());
        let meta: Value = http.get(url).send().await.unwrap().json_value().await;
        assert_eq!(meta["issuer"], jwks.issuer());
        assert_eq!(meta["jwks_uri"], jwks.jwks_uri());
    }
    jwks.set_metadata_issuer(Some("https://evil.test".into()));
    let url = format!("{}/.well-known/openid-configuration", jwks.issuer());
    let meta: Value = http.get(url).send().await.unwrap().json_value().await;
    assert_eq!(meta["issuer"], "https://evil.test");
    assert_eq!(jwks.metadata_hits(), 3);

    let resp = http.get(format!("{}/nope", jwks.issuer())).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

/// Small helper so the test above reads linearly.
trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

#[tokio::test]
async fn client_resolves_gateway_host_and_negotiates_h2() {
    let pki = TestPki::new();
    let jwks = JwksServer::start(&pki, vec![]).await;
    let cert = pki.self_signed_client("self-signed");
    // Both set-ups offer h2 over ALPN, and the JWKS server picks it.
    for h2 in [true, false] {
        let http = common::client(&pki, jwks.addr(), Some(&cert), h2);
        let resp = http.get(common::gateway_url(jwks.addr(), "/jwks")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    }
}

#[tokio::test]
async fn jwks_server_failing_and_stop() {
    let pki = TestPki::new();
    let jwks = JwksServer::start(&pki, vec![]).await;
    let http = common::client(&pki, jwks.addr(), None, false);
    jwks.set_failing(true);
    let resp = http.get(jwks.jwks_uri()).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(jwks.jwks_hits(), 1);
    jwks.set_failing(false);
    assert_eq!(http.get(jwks.jwks_uri()).send().await.unwrap().status(), 200);

    jwks.stop().await;
    let fresh = common::client(&pki, jwks.addr(), None, false);
    let err = fresh.get(jwks.jwks_uri()).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // The pooled connection of the first client was dropped too.
    assert!(http.get(jwks.jwks_uri()).send().await.is_err());
}

#[tokio::test]
async fn upstream_records_requests() {
    let upstream = Upstream::start().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let resp = http
        .post(format!("{}/api/items?x=1", upstream.url()))
        .header("x-test", "abc")
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "yes");
    assert_eq!(resp.text().await.unwrap(), "upstream-ok");
    assert_eq!(upstream.hits(), 1);
    let rec = &upstream.requests()[0];
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.uri, "/api/items?x=1");
    assert_eq!(rec.headers["x-test"], "abc");
    assert_eq!(rec.body, b"hello body");

    let resp = http.put(format!("{}/echo", upstream.url())).body(vec![7u8; 100_000]).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), 100_000);
    assert_eq!(upstream.last().unwrap().body.len(), 100_000);

    let resp = http.get(format!("{}/status/418", upstream.url())).send().await.unwrap();
    assert_eq!(resp.status(), 418);
    assert_eq!(upstream.hits(), 3);

    let err = http.get(Upstream::refused_url()).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn ca_signed_client_passes_webpki_client_verification() {
    common::init();
    let pki = TestPki::new();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(pki.client_ca_pem_path()).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap();
    let chain = CertificateDer::pem_file_iter(pki.server_cert_path()).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.server_key_path()).unwrap();
    let config =
        rustls::ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts three handshakes and reports the client certificate of each.
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = acceptor.accept(tcp).await.unwrap();
            seen.push(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec());
        }
        seen
    });

    let cert = pki.ca_signed_client("client-1");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("gateway.test").unwrap();
    let _tls = pki.tls_connector(Some(&cert), &[]).connect(name, tcp).await.unwrap();
    // reqwest presents the identity too, through both TLS set-ups of `common::client`
    // (the request itself fails: this server speaks no HTTP).
    for h2 in [false, true] {
        let http = common::client(&pki, addr, Some(&cert), h2);
        let _ = http.get(common::gateway_url(addr, "/")).send().await;
    }
    assert_eq!(server.await.unwrap(), vec![cert.der.clone(); 3]);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert.der);
    assert_eq!(unb64(&cert.x5t_s256), digest.as_ref());
}

fn verify(signer: &Signer) {
    let token = signer.jwt(&common::claims("https://issuer.test", "https://api.test"));
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&unb64(parts[0])).unwrap();
    assert_eq!(header["alg"], signer.alg());
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], signer.kid());
    let claims: Value = serde_json::from_slice(&unb64(parts[1])).unwrap();
    assert_eq!(claims["sub"], "user-1");
    let ttl = claims["exp"].as_i64().unwrap() - common::now();
    assert!((299..=300).contains(&ttl), "ttl {ttl}");

    let input = format!("{}.{}", parts[0], parts[1]);
    let sig = unb64(parts[2]);
    let jwk = signer.public_jwk();
    let field = |name: &str| unb64(jwk[name].as_str().unwrap());
    let ec_point = || [vec![4u8], field("x"), field("y")].concat();
    let verifies = |msg: &[u8]| {
        match signer.alg() {
            "ES256" => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, ec_point()).verify(msg, &sig),
            "ES384" => UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, ec_point()).verify(msg, &sig),
            "EdDSA" => UnparsedPublicKey::new(&signature::ED25519, field("x")).verify(msg, &sig),
            "PS256" => signature::RsaPublicKeyComponents { n: field("n"), e: field("e") }.verify(
                &signature::RSA_PSS_2048_8192_SHA256,
                msg,
                &sig,
            ),
            other => panic!("unexpected alg {other}"),
        }
        .is_ok()
    };
    assert!(verifies(input.as_bytes()), "{} signature", signer.alg());
    assert!(!verifies(format!("{input}x").as_bytes()), "{} tampered", signer.alg());
}

#[test]
fn signers_produce_verifiable_jwts() {
    let es256 = Signer::es256("k-es256");
    let jwk = es256.public_jwk();
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["kid"], "k-es256");
    assert_eq!(unb64(jwk["x"].as_str().unwrap()).len(), 32);
    for signer in [es256, Signer::es384("k-es384"), Signer::ps256("k-ps256"), Signer::eddsa("k-eddsa")] {
        verify(&signer);
        assert_eq!(unb64(&signer.jwk_thumbprint()).len(), 32);
    }
}

#[test]
fn jwk_thumbprint_is_rfc7638() {
    let signer = Signer::eddsa("k");
    let jwk = signer.public_jwk();
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, jwk["x"].as_str().unwrap());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    assert_eq!(signer.jwk_thumbprint(), URL_SAFE_NO_PAD.encode(digest.as_ref()));

    let proof = signer.dpop_proof("GET", "https://gateway.test/x", Some("tok"));
    let header: Value = serde_json::from_slice(&unb64(proof.split('.').next().unwrap())).unwrap();
    assert_eq!(header["typ"], "dpop+jwt");
    assert_eq!(header["jwk"], signer.bare_public_jwk());
}
