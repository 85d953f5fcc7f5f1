//! URL, path and host text rules shared by configuration checks and request handling: a
//! leaf module (it imports nothing else of the crate), so that `config` can validate with
//! the very functions requests are judged by without importing the runtime.
//!
//! - [`path`]: the one canonical spelling of a request path ([`check_path`]);
//! - [`normalise`]: RFC 3986 URL normalisation for DPoP `htu` and configured origins;
//! - [`host`]: the host a request names ([`request_host`]).

pub mod host;
pub mod normalise;
pub mod path;

pub use host::{HostError, request_host};
pub use normalise::{NotAUrl, normalise, normalise_origin, request_url};
pub use path::{PathError, check_path};
