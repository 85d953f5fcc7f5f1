//! Values that must never be printed: access tokens, DPoP proofs, credentials headed
//! upstream, keys, connection strings with passwords.
//!
//! [`Secret`] wraps such a value so that `{:?}` (a `tracing` field, a panic message, a
//! derived `Debug` of a struct that holds it) shows `Secret(<redacted>)` instead. Reading
//! the value takes an explicit [`Secret::expose`], which is easy to find in review.
//! [`redact_url`] is the printable form of a URL that may carry a password.
//!
//! Not a zeroising container: the wrapped value is freed the usual way. This module only
//! stops secrets from reaching logs and debug output by accident.

use std::fmt;

/// A value whose `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub const fn new(value: T) -> Self {
        Secret(value)
    }

    /// The wrapped value, for the one place that must use it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `redis://user:secret@host:6379/0` → `redis://host:6379/0`: a URL safe to print.
/// Credentials end at the last `@`, even if an unencoded password contains `/` or `@`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid URL>".to_string();
    };
    let after_credentials = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{after_credentials}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let token = Secret::new("eyJhbGciOiJFUzI1NiJ9.secret-token".to_string());
        assert_eq!(format!("{token:?}"), "Secret(<redacted>)");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret<String>,
        }
        let shown = format!("{:?}", Holder { token });
        assert!(!shown.contains("secret-token"), "{shown}");
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact_url("rediss://gateway:s3cr3t@redis.internal:6380/2"), "rediss://redis.internal:6380/2");
        assert_eq!(redact_url("redis://:p@ss@host"), "redis://host");
        assert_eq!(redact_url("nonsense"), "<invalid URL>");
        assert_eq!(redact_url("redis://gateway:s3cr/3t@redis.internal:6379/0"), "redis://redis.internal:6379/0");
        assert_eq!(redact_url("redis://u:a@b/c@host:1/0"), "redis://host:1/0");
    }
}
