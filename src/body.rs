//! The body type every response and forwarded request uses: a boxed, streaming
//! [`http_body::Body`] of [`Bytes`], so gateway-made and proxied bodies share one type.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// Errors inside a streamed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body, boxed.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}
