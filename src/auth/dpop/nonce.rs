//! Stateless DPoP server nonces (RFC 9449 §8, §9): a nonce is the time step it was minted
//! for and an HMAC-SHA256 of that step under a configured secret. Any instance holding the
//! secret accepts the nonces of the others; a nonce passes during its own step and
//! `window` steps either side, and nothing is stored.
//!
//! Each process also has a key of its own (the shared secret itself when it is random):
//! a nonce minted under it ([`NonceIssuer::issue_here`]) proves that a proof carrying it was
//! made after this process started, which the in-memory replay store asks of proofs older
//! than its own memory (see `auth::check_dpop`).

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
    /// This process's own key, for nonces that prove a proof was made after the start
    /// ([`NonceIssuer::issue_here`]); `None` when `key` is itself random, made at start.
    local: Option<hmac::Key>,
    step_secs: u64,
    window: u64,
}

impl NonceIssuer {
    /// An issuer with a shared `secret` (at least 32 bytes) and a random key of its own.
    pub fn new(secret: &[u8], step_secs: u64, window: u32) -> Result<Self, NonceSecretError> {
        if secret.len() < 32 {
            return Err(NonceSecretError::TooShort);
        }
        Ok(NonceIssuer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            local: Some(hmac::Key::new(hmac::HMAC_SHA256, &random_secret()?)),
            step_secs: step_secs.max(1),
            window: u64::from(window),
        })
    }

    /// Loads the secret the settings name.
    pub fn from_settings(settings: &DpopSettings) -> Result<Self, NonceSecretError> {
        let (step, window) = (settings.nonce_step.as_secs(), settings.nonce_window);
        let secret = match &settings.nonce_secret {
            NonceSecret::Random => {
                // Made here and known to nobody else: every nonce it checks was minted here.
                let mut issuer = Self::new(&random_secret()?, step, window)?;
                issuer.local = None;
                return Ok(issuer);
            }
            NonceSecret::File(path) => read_secret_file(path)?,
            NonceSecret::Env(var) => {
                std::env::var(var).map_err(|_| NonceSecretError::MissingEnv(var.clone()))?.trim().as_bytes().to_vec()
            }
        };
        Self::new(&secret, step, window)
    }

    fn step(&self, now: i64) -> u64 {
        u64::try_from(now).unwrap_or(0) / self.step_secs
    }

    fn own_key(&self) -> &hmac::Key {
        self.local.as_ref().unwrap_or(&self.key)
    }

    /// A nonce for the current step (any instance with the secret accepts it).
    pub fn issue(&self, now: i64) -> String {
        mint(&self.key, self.step(now))
    }

    /// A nonce only this process accepts: a proof that carries it was made after the
    /// process started.
    pub fn issue_here(&self, now: i64) -> String {
        mint(self.own_key(), self.step(now))
    }

    /// Checks a nonce taken from a proof (minted by [`issue`](Self::issue) on any instance
    /// or by [`issue_here`](Self::issue_here) on this one).
    pub fn check(&self, nonce: &str, now: i64) -> NonceStatus {
        match self.verify(&self.key, nonce, now) {
            NonceStatus::Invalid => self.local.as_ref().map_or(NonceStatus::Invalid, |k| self.verify(k, nonce, now)),
            status => status,
        }
    }

    /// Whether `nonce` is valid and was minted by this process.
    pub fn minted_here(&self, nonce: &str, now: i64) -> bool {
        self.verify(self.own_key(), nonce, now) != NonceStatus::Invalid
    }

    fn verify(&self, key: &hmac::Key, nonce: &str, now: i64) -> NonceStatus {
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
        if !jose::constant_time_eq(&bytes[8..], &tag(key, step).as_ref()[..TAG_BYTES]) {
            return NonceStatus::Invalid;
        }
        if step < current { NonceStatus::Aging } else { NonceStatus::Current }
    }
}

fn tag(key: &hmac::Key, step: u64) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(LABEL);
    ctx.update(&step.to_be_bytes());
    ctx.sign()
}

fn mint(key: &hmac::Key, step: u64) -> String {
    let mut bytes = Vec::with_capacity(8 + TAG_BYTES);
    bytes.extend_from_slice(&step.to_be_bytes());
    bytes.extend_from_slice(&tag(key, step).as_ref()[..TAG_BYTES]);
    jose::b64url_encode(&bytes)
}

fn random_secret() -> Result<[u8; 32], NonceSecretError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| NonceSecretError::Random)?;
    Ok(bytes)
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
    fn nonces_minted_here_pass_here_only_and_prove_it() {
        let a = NonceIssuer::new(SECRET, 30, 1).unwrap_or_else(|e| panic!("{e}"));
        let b = NonceIssuer::new(SECRET, 30, 1).unwrap_or_else(|e| panic!("{e}"));
        let t = 1_700_000_000;
        let here = a.issue_here(t);
        assert_eq!(a.check(&here, t), NonceStatus::Current, "valid wherever a nonce is asked for");
        assert!(a.minted_here(&here, t));
        assert_eq!(b.check(&here, t), NonceStatus::Invalid, "another instance (or a restart) does not know it");
        assert!(!b.minted_here(&here, t));
        let shared = a.issue(t);
        assert!(!a.minted_here(&shared, t), "any instance with the secret could have minted it");
        assert!(!a.minted_here(&here, t + 90), "expired");
    }

    #[test]
    fn with_a_random_secret_every_valid_nonce_was_minted_here() {
        let settings = DpopSettings::default();
        let issuer = NonceIssuer::from_settings(&settings).unwrap_or_else(|e| panic!("{e}"));
        let t = 1_700_000_000;
        assert!(issuer.minted_here(&issuer.issue(t), t));
        assert!(issuer.minted_here(&issuer.issue_here(t), t));
        let restarted = NonceIssuer::from_settings(&settings).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(restarted.check(&issuer.issue(t), t), NonceStatus::Invalid);
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(NonceIssuer::new(b"short", 30, 1), Err(NonceSecretError::TooShort)));
    }
}
