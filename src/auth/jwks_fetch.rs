//! Fetching an issuer's signing keys: RFC 8414 / OpenID Connect discovery, the JWKS
//! document over HTTPS (or from a file), and its `Cache-Control: max-age`.
//!
//! Keys are parsed here, once per fetch, into ready-to-verify [`PublicKey`]s; keys the
//! gateway cannot use for signatures (encryption keys, symmetric keys, unknown types) are
//! skipped. Key URLs named inside tokens (`jku`, `x5u`) are never fetched: only the
//! configured or discovered `jwks_uri` is.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::jose::PublicKey;
use crate::tls::{TlsError, client as tls};

/// JWKS and metadata documents larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why keys could not be fetched. Messages name the URL, never key material.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("GET {url}: status {status}")]
    Status { url: String, status: StatusCode },
    #[error("GET {url}: timed out")]
    Timeout { url: String },
    #[error("{url}: not a JSON document of the expected shape: {reason}")]
    Json { url: String, reason: String },
    #[error("{url}: metadata names issuer `{found}`, expected `{expected}` (RFC 8414 §3.3)")]
    IssuerMismatch { url: String, found: String, expected: String },
    #[error("{url}: jwks_uri `{jwks_uri}` is not an https:// URL")]
    InsecureJwksUri { url: String, jwks_uri: String },
    #[error("{url}: no usable signing key in the key set")]
    NoUsableKey { url: String },
    #[error("cannot read {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A fetched key set and how long the server says it stays fresh.
pub struct Fetched {
    pub keys: Vec<PublicKey>,
    pub max_age: Option<Duration>,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An HTTPS client for one issuer's metadata and keys.
pub struct KeyFetcher {
    client: HttpsClient,
    timeout: Duration,
}

impl KeyFetcher {
    /// A client trusting the system roots plus `ca`.
    pub fn new(ca: Option<&std::path::Path>, timeout: Duration) -> Result<Self, FetchError> {
        let tls = tls::client_config(ca)?;
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(KeyFetcher { client, timeout })
    }

    /// Discovers the `jwks_uri` of `issuer` (RFC 8414 first, then OpenID Connect discovery).
    pub async fn discover(&self, issuer: &str) -> Result<Uri, FetchError> {
        let mut last_error = None;
        for url in metadata_urls(issuer) {
            match self.get(&url).await {
                Ok((body, _)) => return parse_metadata(&url, &body, issuer),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(FetchError::Http { url: issuer.to_string(), reason: "no metadata URL".into() }))
    }

    /// Fetches and parses the key set at `jwks_uri`.
    pub async fn fetch_jwks(&self, jwks_uri: &Uri) -> Result<Fetched, FetchError> {
        let url = jwks_uri.to_string();
        let (body, max_age) = self.get(&url).await?;
        let keys = parse_jwks(&url, &body)?;
        Ok(Fetched { keys, max_age })
    }

    async fn get(&self, url: &str) -> Result<(Bytes, Option<Duration>), FetchError> {
        let http_err = |reason: String| FetchError::Http { url: url.to_string(), reason };
        let request = Request::get(url)
            .header(ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| http_err(e.to_string()))?;
        let work = async {
            let response =
                self.client.request(request).await.map_err(|e| http_err(crate::diagnostics::error_chain(&e)))?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status { url: url.to_string(), status: response.status() });
            }
            let max_age = response.headers().get(CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| http_err(e.to_string()))?
                .to_bytes();
            Ok((body, max_age))
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| FetchError::Timeout { url: url.to_string() })?
    }
}

/// Reads a key set from a file; a file without a usable key is a configuration error.
pub fn read_jwks_file(path: &std::path::Path) -> Result<Fetched, FetchError> {
    let body = std::fs::read(path).map_err(|e| FetchError::File { path: path.to_path_buf(), reason: e.to_string() })?;
    let keys = parse_jwks(&path.display().to_string(), &body)?;
    if keys.is_empty() {
        return Err(FetchError::NoUsableKey { url: path.display().to_string() });
    }
    Ok(Fetched { keys, max_age: None })
}

/// RFC 8414 §3.1 inserts the well-known segment between host and path; OpenID Connect
/// Discovery §4 appends it to the issuer.
pub fn metadata_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let rfc8414 = match trimmed.strip_prefix("https://").and_then(|rest| rest.split_once('/')) {
        Some((host, path)) => {
            format!("https://{host}/.well-known/oauth-authorization-server/{path}")
        }
        None => format!("{trimmed}/.well-known/oauth-authorization-server"),
    };
    vec![rfc8414, format!("{trimmed}/.well-known/openid-configuration")]
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
}

fn parse_metadata(url: &str, body: &[u8], expected_issuer: &str) -> Result<Uri, FetchError> {
    let meta: Metadata =
        serde_json::from_slice(body).map_err(|e| FetchError::Json { url: url.to_string(), reason: e.to_string() })?;
    if meta.issuer != expected_issuer {
        return Err(FetchError::IssuerMismatch {
            url: url.to_string(),
            found: meta.issuer,
            expected: expected_issuer.to_string(),
        });
    }
    let insecure = || FetchError::InsecureJwksUri { url: url.to_string(), jwks_uri: meta.jwks_uri.clone() };
    let uri: Uri = meta.jwks_uri.parse().map_err(|_| insecure())?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(insecure());
    }
    Ok(uri)
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Parses a JWKS document, keeping the keys usable for signature verification (possibly
/// none: an issuer may withdraw every key).
pub fn parse_jwks(source: &str, body: &[u8]) -> Result<Vec<PublicKey>, FetchError> {
    let set: JwkSet = serde_json::from_slice(body)
        .map_err(|e| FetchError::Json { url: source.to_string(), reason: e.to_string() })?;
    let keys: Vec<PublicKey> = set
        .keys
        .iter()
        .filter(|jwk| jwk.get("use").and_then(|u| u.as_str()).is_none_or(|u| u == "sig"))
        .filter_map(|jwk| match PublicKey::from_jwk(jwk) {
            Ok(key) => Some(key),
            Err(e) => {
                let kid = jwk.get("kid").and_then(|k| k.as_str()).unwrap_or("-");
                tracing::debug!(source, kid, error = %e, "skipping unusable JWK");
                None
            }
        })
        .collect();
    Ok(keys)
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` count as zero.
fn max_age(value: &str) -> Option<Duration> {
    let mut result = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            result = secs.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_follow_rfc8414_and_oidc() {
        assert_eq!(
            metadata_urls("https://as.example.com"),
            vec![
                "https://as.example.com/.well-known/oauth-authorization-server",
                "https://as.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            metadata_urls("https://as.example.com/tenant/1"),
            vec![
                "https://as.example.com/.well-known/oauth-authorization-server/tenant/1",
                "https://as.example.com/tenant/1/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn metadata_issuer_must_match_exactly() {
        let body = br#"{"issuer":"https://evil.example","jwks_uri":"https://evil.example/jwks"}"#;
        let e = parse_metadata("u", body, "https://as.example.com").unwrap_err();
        assert!(matches!(e, FetchError::IssuerMismatch { .. }));
        let body = br#"{"issuer":"https://as.example.com","jwks_uri":"http://as.example.com/jwks"}"#;
        assert!(matches!(
            parse_metadata("u", body, "https://as.example.com").unwrap_err(),
            FetchError::InsecureJwksUri { .. }
        ));
        let body = br#"{"issuer":"https://as.example.com","jwks_uri":"https://as.example.com/jwks"}"#;
        assert_eq!(parse_metadata("u", body, "https://as.example.com").unwrap(), "https://as.example.com/jwks");
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(max_age("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let body = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"EC","crv":"P-256","use":"enc","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"}]}"#;
        assert!(parse_jwks("u", body).unwrap().is_empty());
        let body = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"}]}"#;
        let keys = parse_jwks("u", body).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid(), Some("k1"));
        assert!(parse_jwks("u", b"[]").is_err());
    }
}
