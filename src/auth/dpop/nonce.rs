//! Stateless DPoP server nonces (RFC 9449 §8, §9): a nonce is the time step it was minted
//! for and an HMAC-SHA256 of that step under a configured secret. Any instance holding the
//! secret accepts the nonces of the others; a nonce passes during its own step and
//! `window` steps either side, and nothing is stored.

use std::path::Path;

use aws_lc_rs::hmac;

use crate::config::{DpopSettings, NonceSecret};
use crate::jose;

const LABEL: &[u8] = b"fapi-gateway dpop nonce v1";
const TAG_BYTES: usize = 16;

/// Why the nonce secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum NonceSecretError {
    #[error("cannot read the DPoP nonce secret from {path}: {reason}")]
    File { path: String, reason: String },
    #[error("environment variable {0} (DPoP nonce secret) is not set")]
    MissingEnv(String),
    #[error("the DPoP nonce secret must be at least 32 bytes")]
    TooShort,
    #[error("cannot generate a random DPoP nonce secret")]
    Random,
}

/// How a presented nonce compares with the current time step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    /// Minted in the current step.
    Current,
    /// Still accepted, but older than the current step: send a fresh one.
    Aging,
    /// Unknown, forged or expired.
    Invalid,
}

/// Mints and checks nonces.
pub struct NonceIssuer {
    key: hmac::Key,
    step_secs: u64,
    window: u64,
}

impl NonceIssuer {
    pub fn new(secret: &[u8], step_secs: u64, window: u32) -> Result<Self, NonceSecretError> {
        if secret.len() < 32 {
            return Err(NonceSecretError::TooShort);
        }
        Ok(NonceIssuer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            step_secs: step_secs.max(1),
            window: u64::from(window),
        })
    }

    /// Loads the secret the settings name.
    pub fn from_settings(settings: &DpopSettings) -> Result<Self, NonceSecretError> {
        let secret = match &settings.nonce_secret {
            NonceSecret::Random => {
                let mut bytes = [0u8; 32];
                aws_lc_rs::rand::fill(&mut bytes).map_err(|_| NonceSecretError::Random)?;
                bytes.to_vec()
            }
            NonceSecret::File(path) => read_secret_file(path)?,
            NonceSecret::Env(var) => {
                std::env::var(var).map_err(|_| NonceSecretError::MissingEnv(var.clone()))?.trim().as_bytes().to_vec()
            }
        };
        Self::new(&secret, settings.nonce_step.as_secs(), settings.nonce_window)
    }

    fn step(&self, now: i64) -> u64 {
        u64::try_from(now).unwrap_or(0) / self.step_secs
    }

    fn tag(&self, step: u64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(LABEL);
        ctx.update(&step.to_be_bytes());
        ctx.sign()
    }

    /// A nonce for the current step.
    pub fn issue(&self, now: i64) -> String {
        let step = self.step(now);
        let mut bytes = Vec::with_capacity(8 + TAG_BYTES);
        bytes.extend_from_slice(&step.to_be_bytes());
        bytes.extend_from_slice(&self.tag(step).as_ref()[..TAG_BYTES]);
        jose::b64url_encode(&bytes)
    }

    /// Checks a nonce taken from a proof.
    pub fn check(&self, nonce: &str, now: i64) -> NonceStatus {
        if nonce.len() > 64 {
            return NonceStatus::Invalid;
        }
        let Ok(bytes) = jose::b64url_decode(nonce) else {
            return NonceStatus::Invalid;
        };
        if bytes.len() != 8 + TAG_BYTES {
            return NonceStatus::Invalid;
        }
        let mut step_bytes = [0u8; 8];
        step_bytes.copy_from_slice(&bytes[..8]);
        let step = u64::from_be_bytes(step_bytes);
        let current = self.step(now);
        if step.abs_diff(current) > self.window {
            return NonceStatus::Invalid;
        }
        if !jose::constant_time_eq(&bytes[8..], &self.tag(step).as_ref()[..TAG_BYTES]) {
            return NonceStatus::Invalid;
        }
        if step < current { NonceStatus::Aging } else { NonceStatus::Current }
    }
}

fn read_secret_file(path: &Path) -> Result<Vec<u8>, NonceSecretError> {
    let text = std::fs::read(path)
        .map_err(|e| NonceSecretError::File { path: path.display().to_string(), reason: e.to_string() })?;
    Ok(text.trim_ascii().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_fresh_nonce_passes_and_ages_then_expires() {
        let issuer = NonceIssuer::new(SECRET, 30, 1).unwrap_or_else(|e| panic!("{e}"));
        let t = 1_700_000_010;
        let nonce = issuer.issue(t);
        assert_eq!(issuer.check(&nonce, t), NonceStatus::Current);
        assert_eq!(issuer.check(&nonce, t + 30), NonceStatus::Aging);
        assert_eq!(issuer.check(&nonce, t + 60), NonceStatus::Invalid);
        assert_eq!(issuer.check(&nonce, t - 30), NonceStatus::Current, "a slightly slow instance accepts it");
    }

    #[test]
    fn instances_sharing_the_secret_accept_each_other() {
        let a = NonceIssuer::new(SECRET, 30, 1).unwrap_or_else(|e| panic!("{e}"));
        let b = NonceIssuer::new(SECRET, 30, 1).unwrap_or_else(|e| panic!("{e}"));
        let other = NonceIssuer::new(b"another secret of thirty-two bytes!", 30, 1).unwrap_or_else(|e| panic!("{e}"));
        let t = 1_700_000_000;
        let nonce = a.issue(t);
        assert_eq!(b.check(&nonce, t), NonceStatus::Current);
        assert_eq!(other.check(&nonce, t), NonceStatus::Invalid);
    }

    #[test]
    fn forged_and_malformed_nonces_are_invalid() {
        let issuer = NonceIssuer::new(SECRET, 30, 1).unwrap_or_else(|e| panic!("{e}"));
        let t = 1_700_000_000;
        let mut bytes = jose::b64url_decode(&issuer.issue(t)).unwrap_or_default();
        bytes[10] ^= 1;
        assert_eq!(issuer.check(&jose::b64url_encode(&bytes), t), NonceStatus::Invalid);
        for junk in ["", "abc", "!!!!", &"A".repeat(100)] {
            assert_eq!(issuer.check(junk, t), NonceStatus::Invalid);
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(NonceIssuer::new(b"short", 30, 1), Err(NonceSecretError::TooShort)));
    }
}
