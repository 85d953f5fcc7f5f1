//! The login mode's HTTPS client for one authorization server: discovery, the pushed
//! authorization request and the token endpoint. Every call has a deadline; every refusal
//! becomes a [`LoginError`] that names the endpoint and what the AS said (its `error` and
//! `error_description`, never a token or a code).
//!
//! DPoP (RFC 9449): token requests carry a fresh proof per attempt (§4.2); a `400
//! use_dpop_nonce` with a `DPoP-Nonce` is answered once with a new proof carrying it (§8),
//! and a `DPoP-Nonce` on any answer is kept for the next call to that AS (§8.2).

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::proof::{ProofBuildError, dpop_proof};
use crate::jose::SigningKey;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// At most this much of an AS answer is read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Why a call to the authorization server failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("cannot set up TLS for the authorization server: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: the answer is not the JSON expected: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("{url}: the metadata names the issuer `{found}`, not `{expected}` (RFC 8414 §3.3)")]
    IssuerMismatch { url: String, found: String, expected: String },
    #[error("the authorization server's metadata lacks `{0}`, which the login mode needs")]
    MissingMetadata(&'static str),
    #[error("the authorization server's `{name}` is not an https:// URL: {value}")]
    InsecureEndpoint { name: &'static str, value: String },
    /// The AS refused: its HTTP status and OAuth error (RFC 6749 §5.2).
    #[error("{endpoint} refused the request ({status}): {error}{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused { endpoint: &'static str, status: u16, error: String, description: Option<String> },
    #[error("cannot sign: {0}")]
    Sign(#[from] ProofBuildError),
}

/// The metadata the login mode uses (RFC 8414, RFC 9126 §5, RFC 9449 §5.1).
#[derive(Debug, Clone, Deserialize)]
pub struct AsMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub pushed_authorization_request_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub revocation_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    #[serde(default)]
    pub dpop_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    pub response_modes_supported: Vec<String>,
    /// RFC 8705 §5: the endpoints a client authenticating with mutual TLS must use.
    pub mtls_endpoint_aliases: Option<MtlsAliases>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MtlsAliases {
    pub token_endpoint: Option<String>,
    pub pushed_authorization_request_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
}

impl AsMetadata {
    /// The PAR endpoint, required: FAPI 2.0 logins always push their request.
    pub fn par_endpoint(&self) -> Result<&str, LoginError> {
        self.pushed_authorization_request_endpoint
            .as_deref()
            .ok_or(LoginError::MissingMetadata("pushed_authorization_request_endpoint"))
    }

    fn check(&self) -> Result<(), LoginError> {
        let https = |name: &'static str, value: &str| {
            if value.starts_with("https://") {
                Ok(())
            } else {
                Err(LoginError::InsecureEndpoint { name, value: value.to_string() })
            }
        };
        https("authorization_endpoint", &self.authorization_endpoint)?;
        https("token_endpoint", &self.token_endpoint)?;
        https("pushed_authorization_request_endpoint", self.par_endpoint()?)?;
        let jwks = self.jwks_uri.as_deref().ok_or(LoginError::MissingMetadata("jwks_uri"))?;
        https("jwks_uri", jwks)?;
        for (name, value) in
            [("revocation_endpoint", &self.revocation_endpoint), ("end_session_endpoint", &self.end_session_endpoint)]
        {
            if let Some(value) = value {
                https(name, value)?;
            }
        }
        Ok(())
    }
}

/// The PAR answer (RFC 9126 §2.2).
#[derive(Debug, Clone, Deserialize)]
pub struct PushedRequest {
    pub request_uri: String,
    pub expires_in: u64,
}

/// A token endpoint answer (RFC 6749 §5.1). Its secrets never reach `Debug`.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: Option<u64>,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "<redacted>"))
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// An OAuth error answer (RFC 6749 §5.2).
#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    error_description: Option<String>,
}

/// One answer of the AS.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// The HTTPS client of one authorization server.
pub struct AsClient {
    client: HttpsClient,
    timeout: Duration,
    /// The last `DPoP-Nonce` this AS sent (RFC 9449 §8.2).
    nonce: Mutex<Option<String>>,
    /// The client authenticates with its TLS certificate: use the `mtls_endpoint_aliases`.
    mtls: bool,
}

impl AsClient {
    /// A client trusting the system roots plus `ca`, with `timeout` for each call;
    /// `identity` (certificate chain and key files) for `tls_client_auth`.
    pub fn new(
        ca: Option<&std::path::Path>,
        timeout: Duration,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, LoginError> {
        let tls = match identity {
            Some((cert, key)) => crate::tls::client::client_config_with_identity(ca, cert, key)?,
            None => crate::tls::client::client_config(ca)?,
        };
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
        Ok(AsClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
            nonce: Mutex::new(None),
            mtls: identity.is_some(),
        })
    }

    /// `plain`, or its mutual-TLS alias (RFC 8705 §5) when the client authenticates with TLS.
    fn endpoint<'m>(
        &self,
        plain: &'m str,
        alias: impl Fn(&'m MtlsAliases) -> Option<&'m String>,
        metadata: &'m AsMetadata,
    ) -> &'m str {
        match (&metadata.mtls_endpoint_aliases, self.mtls) {
            (Some(aliases), true) => alias(aliases).map_or(plain, String::as_str),
            _ => plain,
        }
    }

    /// Fetches the metadata of `issuer` (RFC 8414 §3, then OpenID Connect Discovery §4) and
    /// checks that it names `issuer` exactly and has https endpoints for PAR, authorization,
    /// token and keys.
    pub async fn discover(&self, issuer: &str) -> Result<AsMetadata, LoginError> {
        let mut last = None;
        for url in crate::auth::jwks_fetch::metadata_urls(issuer) {
            let answer = match self.call(Request::get(&url).header(ACCEPT, "application/json"), Bytes::new()).await {
                Ok(answer) if answer.status == StatusCode::OK => answer,
                Ok(answer) => {
                    last = Some(LoginError::Http { url, reason: format!("status {}", answer.status) });
                    continue;
                }
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let metadata: AsMetadata = serde_json::from_slice(&answer.body)
                .map_err(|e| LoginError::BadAnswer { url: url.clone(), reason: e.to_string() })?;
            if metadata.issuer != issuer {
                return Err(LoginError::IssuerMismatch { url, found: metadata.issuer, expected: issuer.to_string() });
            }
            metadata.check()?;
            return Ok(metadata);
        }
        Err(last.unwrap_or(LoginError::MissingMetadata("issuer")))
    }

    /// Pushes an authorization request (RFC 9126 §2.1): `form` holds every parameter and the
    /// client authentication; the answer's `request_uri` goes to the browser.
    pub async fn push(&self, metadata: &AsMetadata, form: &[(&str, &str)]) -> Result<PushedRequest, LoginError> {
        let url =
            self.endpoint(metadata.par_endpoint()?, |a| a.pushed_authorization_request_endpoint.as_ref(), metadata);
        let answer = self.post_form(url, form, None).await?;
        if answer.status != StatusCode::CREATED && answer.status != StatusCode::OK {
            return Err(refusal("the PAR endpoint", &answer));
        }
        parse(url, &answer.body)
    }

    /// A token request (`authorization_code` or `refresh_token` grant) with a DPoP proof by
    /// `dpop_key`; `use_dpop_nonce` is answered once. `form` holds the grant and the client
    /// authentication; `fresh_form` is called before each attempt, so a client assertion
    /// (single-use `jti`) is made anew for the retry.
    pub async fn token(
        &self,
        metadata: &AsMetadata,
        dpop_key: &SigningKey,
        fresh_form: impl Fn() -> Result<Vec<(String, String)>, LoginError>,
    ) -> Result<TokenResponse, LoginError> {
        let url = self.endpoint(&metadata.token_endpoint, |a| a.token_endpoint.as_ref(), metadata);
        let mut retried = false;
        loop {
            let nonce = self.current_nonce();
            let proof = dpop_proof(dpop_key, "POST", url, None, nonce.as_deref())?;
            let form = fresh_form()?;
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let answer = self.post_form(url, &pairs, Some(&proof)).await?;
            if answer.status == StatusCode::OK {
                return parse(url, &answer.body);
            }
            let error = refusal("the token endpoint", &answer);
            let asks_nonce = matches!(&error, LoginError::Refused { error, .. } if error == "use_dpop_nonce");
            if asks_nonce && !retried && answer.headers.contains_key("dpop-nonce") {
                retried = true;
                continue;
            }
            return Err(error);
        }
    }

    /// Revokes a token (RFC 7009 §2.1); `form` holds it and the client authentication.
    pub async fn revoke(&self, metadata: &AsMetadata, form: &[(&str, &str)]) -> Result<(), LoginError> {
        let plain =
            metadata.revocation_endpoint.as_deref().ok_or(LoginError::MissingMetadata("revocation_endpoint"))?;
        let endpoint = self.endpoint(plain, |a| a.revocation_endpoint.as_ref(), metadata);
        let answer = self.post_form(endpoint, form, None).await?;
        if answer.status == StatusCode::OK { Ok(()) } else { Err(refusal("the revocation endpoint", &answer)) }
    }

    fn current_nonce(&self) -> Option<String> {
        self.nonce.lock().map_or(None, |n| n.clone())
    }

    async fn post_form(&self, url: &str, form: &[(&str, &str)], dpop: Option<&str>) -> Result<Answer, LoginError> {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let mut request = Request::post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json");
        if let Some(proof) = dpop {
            request = request.header("dpop", proof);
        }
        self.call(request, Bytes::from(body)).await
    }

    async fn call(&self, request: http::request::Builder, body: Bytes) -> Result<Answer, LoginError> {
        let url = request.uri_ref().map(Uri::to_string).unwrap_or_default();
        let http_err = |reason: String| LoginError::Http { url: url.clone(), reason };
        let request = request.body(Full::new(body)).map_err(|e| http_err(e.to_string()))?;
        let work = async {
            let response =
                self.client.request(request).await.map_err(|e| http_err(crate::diagnostics::error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await.map_err(|e| http_err(e.to_string()))?;
            Ok::<Answer, LoginError>(Answer { status: parts.status, headers: parts.headers, body: body.to_bytes() })
        };
        let answer: Answer = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| LoginError::Timeout { url: url.clone(), timeout: self.timeout })??;
        if let Some(nonce) = answer.headers.get("dpop-nonce").and_then(|v| v.to_str().ok())
            && let Ok(mut kept) = self.nonce.lock()
        {
            *kept = Some(nonce.to_string());
        }
        Ok(answer)
    }
}

fn parse<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, LoginError> {
    serde_json::from_slice(body).map_err(|e| LoginError::BadAnswer { url: url.to_string(), reason: e.to_string() })
}

/// The AS's refusal as it said it; a body that is not an OAuth error keeps only the status.
fn refusal(endpoint: &'static str, answer: &Answer) -> LoginError {
    let parsed: Option<ErrorAnswer> = serde_json::from_slice(&answer.body).ok();
    let shown = |s: &str| crate::auth::token::shown(s).into_string();
    LoginError::Refused {
        endpoint,
        status: answer.status.as_u16(),
        error: parsed.as_ref().map_or_else(|| "no OAuth error in the answer".to_string(), |p| shown(&p.error)),
        description: parsed.and_then(|p| p.error_description).map(|d| shown(&d)),
    }
}
