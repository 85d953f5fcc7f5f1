//! Browser login mode (issue 12): the gateway as a FAPI 2.0 client — a backend for the
//! browser that does PAR, PKCE and JARM itself, holds the DPoP key and the tokens, and gives
//! the browser only cookies. [`runtime`] answers the login, callback, session and logout
//! endpoints and admits `auth: session` routes; [`session`] keeps transactions and sessions;
//! [`id_token`] checks ID tokens (OIDC Core §3.1.3.7). Its building blocks:
//!
//! - [`as_client`]: the HTTPS calls to the authorization server — discovery (RFC 8414, the
//!   metadata `issuer` must be the configured one), PAR (RFC 9126) and the token endpoint,
//!   with DPoP proofs (RFC 9449 §5) and one retry on `use_dpop_nonce`;
//! - [`client_auth`]: `private_key_jwt` client assertions (RFC 7523; FAPI 2.0 §5.3.3.1-5:
//!   `aud` is the issuer identifier as a string);
//! - [`pkce`]: S256 code verifiers and challenges (RFC 7636), and random `state`/`nonce`;
//! - [`jarm`]: verifying a JWT-secured authorization response (JARM §2.4) before anything
//!   in it is read;
//! - [`proof`]: DPoP proofs the gateway signs as a client.

pub mod as_client;
pub mod client_auth;
pub mod id_token;
pub mod jarm;
pub mod pkce;
pub mod proof;
pub mod redis_store;
pub mod runtime;
pub mod session;

pub use as_client::{AsClient, AsMetadata, LoginError, PushedRequest, TokenResponse};
pub use runtime::{Endpoint, LoginRuntime, LoginSetupError, UpstreamProofs};
