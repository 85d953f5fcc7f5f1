//! The signing keys of one issuer, cached: fresh keys are a lock-free load; expired keys keep
//! serving (up to `stale_if_error`) while one background task refetches them, so a slow or
//! unreachable issuer never stalls requests; an unknown `kid` triggers one refetch, at most
//! every `refetch_interval`, so tokens with random `kid`s cannot make the gateway hammer the
//! authorization server. A reachable issuer that publishes an empty key set has withdrawn
//! its keys: the empty set replaces the old one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::Uri;
use tokio::sync::Mutex;

use super::jwks_fetch::{FetchError, Fetched, KeyFetcher, read_jwks_file};
use crate::config::{Issuer, JwksCacheSettings, KeySource};
use crate::jose::{Alg, PublicKey};
use crate::metrics::FetchLabels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Stand-in for "never expires" that cannot overflow an `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Why no key could be found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The issuer's keys were never fetched, or are too stale to use, and fetching failed.
    #[error("the issuer's keys are unavailable")]
    Unavailable,
    /// The key set has no key with this `kid` fitting the algorithm.
    #[error("no key of the issuer matches the token's kid and alg")]
    NoMatchingKey,
}

/// One fetched key set.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<PublicKey>,
    fresh_until: Instant,
}

impl KeySet {
    /// Keys that may verify a token with this `kid` and `alg` (FAPI 2.0 §5.4.3: by `kid`,
    /// then by key type). Without a `kid`, every key that fits the algorithm is a candidate.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>, alg: Alg) -> impl Iterator<Item = &'a PublicKey> + 'a {
        self.keys.iter().filter(move |k| {
            k.fits(alg) && kid.is_none_or(|kid| k.kid() == Some(kid)) && k.alg().is_none_or(|a| a == alg.name())
        })
    }

    fn has(&self, kid: Option<&str>, alg: Alg) -> bool {
        self.candidates(kid, alg).next().is_some()
    }
}

struct FetchState {
    last_attempt: Option<Instant>,
    last_finished: Option<Instant>,
    discovered_jwks_uri: Option<Uri>,
}

/// The cached keys of one issuer.
pub struct IssuerKeys {
    issuer: String,
    /// The issuer's `algorithms`: a key set none of whose keys can verify one is warned about.
    algorithms: Vec<crate::jose::Alg>,
    source: KeySource,
    settings: JwksCacheSettings,
    fetcher: Option<KeyFetcher>,
    current: ArcSwapOption<KeySet>,
    state: Mutex<FetchState>,
    /// A background refresh is running.
    refreshing: AtomicBool,
    fetches: Family<FetchLabels, Counter>,
}

/// A warning when none of `keys` can verify any of `algorithms` (every token of the issuer
/// would be refused), naming what the keys are and what to change.
pub fn unusable_with(keys: &[crate::jose::PublicKey], algorithms: &[crate::jose::Alg]) -> Option<String> {
    if keys.iter().any(|k| algorithms.iter().any(|a| k.allows(*a))) {
        return None;
    }
    let described: Vec<String> = keys
        .iter()
        .map(|k| {
            let kind = match k.crv() {
                Some(crv) => format!("{} {crv}", k.kty()),
                None => k.kty().to_string(),
            };
            match k.alg() {
                Some(alg) => format!("{kind} (alg {alg})"),
                None => kind,
            }
        })
        .collect();
    let wanted: Vec<&str> = algorithms.iter().map(|a| a.name()).collect();
    let hint =
        keys.iter().find_map(|k| k.alg()).map_or(String::new(), |alg| format!("; e.g. add {alg} to `algorithms`"));
    Some(format!(
        "none of the issuer's signing keys ({}) can verify its `algorithms` ({}): every token will be refused; \
         list the algorithm the issuer signs with, or have it sign with one of these{hint}",
        described.join(", "),
        wanted.join(" ")
    ))
}

impl IssuerKeys {
    pub fn new(issuer: &Issuer) -> Result<Self, FetchError> {
        let fetcher = match issuer.keys {
            KeySource::File(_) => None,
            _ => Some(KeyFetcher::new(issuer.ca.as_deref(), issuer.jwks_cache.fetch_timeout)?),
        };
        Ok(IssuerKeys {
            issuer: issuer.issuer.clone(),
            algorithms: issuer.algorithms.clone(),
            source: issuer.keys.clone(),
            settings: issuer.jwks_cache.clone(),
            fetcher,
            current: ArcSwapOption::empty(),
            state: Mutex::new(FetchState { last_attempt: None, last_finished: None, discovered_jwks_uri: None }),
            refreshing: AtomicBool::new(false),
            fetches: Family::default(),
        })
    }

    /// Counts fetches (by issuer and result) into `family`.
    pub fn counting(mut self, family: Family<FetchLabels, Counter>) -> Self {
        self.fetches = family;
        self
    }

    /// Whether keys have been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Fetches the keys now (at start-up), ignoring the rate limit.
    pub async fn prefetch(&self) -> Result<(), FetchError> {
        let mut state = self.state.lock().await;
        self.fetch_locked(&mut state).await
    }

    /// The key set to verify a token with `kid`/`alg`.
    ///
    /// Fresh keys are a lock-free load. Stale keys (within `stale_if_error`) are used at once
    /// while one background task refreshes them, so no request waits on the issuer. An
    /// unknown `kid`, or no usable keys at all, waits for one rate-limited refetch.
    ///
    /// The refreshes are boxed: a fetch is the large and rare state of this future, which
    /// every token validation would otherwise carry (and the request's future with it).
    pub async fn key_set(self: &Arc<Self>, kid: Option<&str>, alg: Alg) -> Result<Arc<KeySet>, KeyError> {
        let now = Instant::now();
        match self.current.load_full() {
            Some(set) if now < set.fresh_until => {
                if set.has(kid, alg) {
                    return Ok(set);
                }
                Box::pin(self.refresh(now)).await;
            }
            Some(set) if self.usable(&set, now) => {
                self.refresh_in_background();
                if set.has(kid, alg) {
                    return Ok(set);
                }
                Box::pin(self.refresh(now)).await;
            }
            _ => Box::pin(self.refresh(now)).await,
        }
        let set = self.current.load_full().ok_or(KeyError::Unavailable)?;
        if !self.usable(&set, Instant::now()) {
            return Err(KeyError::Unavailable);
        }
        if set.has(kid, alg) { Ok(set) } else { Err(KeyError::NoMatchingKey) }
    }

    /// Whether a key set may still be used: fresh, or stale for less than `stale_if_error`.
    fn usable(&self, set: &KeySet, now: Instant) -> bool {
        set.fresh_until.checked_add(self.settings.stale_if_error).is_none_or(|limit| now < limit)
    }

    /// Starts one background refresh unless one is already running.
    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.refresh(Instant::now()).await;
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// One refetch, unless an attempt finished after `requested_at` (another task did the
    /// work) or the last attempt started less than `refetch_interval` ago.
    async fn refresh(&self, requested_at: Instant) {
        let mut state = self.state.lock().await;
        if state.last_finished.is_some_and(|t| t >= requested_at) {
            return;
        }
        if state.last_attempt.is_some_and(|t| t.elapsed() < self.settings.refetch_interval) {
            return;
        }
        if let Err(e) = self.fetch_locked(&mut state).await {
            let serving_stale = self.current.load().is_some();
            tracing::warn!(issuer = %self.issuer, error = %e, serving_stale, "fetching signing keys failed");
        }
    }

    async fn fetch_locked(&self, state: &mut FetchState) -> Result<(), FetchError> {
        state.last_attempt = Some(Instant::now());
        let result = self.fetch(state).await;
        state.last_finished = Some(Instant::now());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.fetches.get_or_create(&FetchLabels { issuer: self.issuer.clone(), result: outcome }).inc();
        let fetched = result?;
        if fetched.keys.is_empty() {
            // A reachable issuer that publishes no usable key has withdrawn its keys: honour it.
            tracing::warn!(issuer = %self.issuer, "the issuer's key set has no usable signing key; tokens will be refused");
        } else if let Some(warning) = unusable_with(&fetched.keys, &self.algorithms) {
            tracing::warn!(issuer = %self.issuer, "{warning}");
        }
        let ttl = fetched
            .max_age
            .map_or(self.settings.default_ttl, |age| age.clamp(self.settings.min_ttl, self.settings.max_ttl));
        let now = Instant::now();
        tracing::info!(issuer = %self.issuer, keys = fetched.keys.len(), ttl_secs = ttl.as_secs(), "signing keys loaded");
        self.current.store(Some(Arc::new(KeySet {
            keys: fetched.keys,
            fresh_until: now.checked_add(ttl).unwrap_or(now + FAR_FUTURE),
        })));
        Ok(())
    }

    async fn fetch(&self, state: &mut FetchState) -> Result<Fetched, FetchError> {
        let fetcher = self.fetcher.as_ref();
        match (&self.source, fetcher) {
            (KeySource::File(path), _) => {
                let mut fetched = read_jwks_file(path)?;
                // A key file changes only when an operator edits it: keep it as long as allowed.
                fetched.max_age = Some(self.settings.max_ttl);
                Ok(fetched)
            }
            (KeySource::JwksUri(uri), Some(f)) => f.fetch_jwks(uri).await,
            (KeySource::Discovery, Some(f)) => {
                let uri = match &state.discovered_jwks_uri {
                    Some(uri) => uri.clone(),
                    None => {
                        let uri = f.discover(&self.issuer).await?;
                        state.discovered_jwks_uri = Some(uri.clone());
                        uri
                    }
                };
                let result = f.fetch_jwks(&uri).await;
                if result.is_err() {
                    // The jwks_uri may have moved: discover again next time.
                    state.discovered_jwks_uri = None;
                }
                result
            }
            (_, None) => Err(FetchError::Http { url: self.issuer.clone(), reason: "no HTTP client".into() }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod unusable_key_tests {
    use super::unusable_with;
    use crate::jose::{Alg, PublicKey, SigningKey};

    fn key(alg: Alg, jwk_alg: Option<&str>) -> PublicKey {
        let mut jwk = SigningKey::generate(alg).unwrap().public_jwk();
        if let Some(name) = jwk_alg {
            jwk["alg"] = serde_json::json!(name);
        }
        PublicKey::from_jwk(jwk.as_object().unwrap()).unwrap()
    }

    #[test]
    fn a_key_set_that_cannot_verify_the_configured_algorithms_is_named() {
        // Keycloak's JWKS: an RSA key restricted to RS256, against the FAPI default list.
        let keys = [key(Alg::Rs256, Some("RS256"))];
        let warning = unusable_with(&keys, &[Alg::Ps256, Alg::Es256, Alg::EdDsa]).unwrap();
        assert!(warning.contains("RSA (alg RS256)"), "{warning}");
        assert!(warning.contains("(PS256 ES256 EdDSA)"), "{warning}");
        assert!(warning.ends_with("add RS256 to `algorithms`"), "{warning}");
        // An EC P-384 key for an ES256-only issuer.
        let warning = unusable_with(&[key(Alg::Es384, None)], &[Alg::Es256]).unwrap();
        assert!(warning.contains("EC P-384"), "{warning}");
    }

    #[test]
    fn one_usable_key_is_enough() {
        let keys = [key(Alg::Rs256, Some("RS256")), key(Alg::Es256, None)];
        assert_eq!(unusable_with(&keys, &[Alg::Ps256, Alg::Es256]), None);
        // An RSA key without `alg` serves PS256.
        assert_eq!(unusable_with(&[key(Alg::Ps256, None)], &[Alg::Ps256]), None);
    }
}
