//! Bearer tokens: fetched once for every caller that needs one at the same time, renewed ahead
//! of expiry or when the CRM refuses one, and a rotated refresh token kept across restarts.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// Tokio's clock, so that tests can let time pass without waiting.
use tokio::time::Instant;

use unisync_core::{AdapterError, CredentialStore, ErrorKind, Secret};

/// The most a token is renewed ahead of its expiry (less for short-lived tokens: a fifth of
/// their lifetime).
const MAX_RENEWAL_MARGIN: Duration = Duration::from_secs(300);

/// A token as an authorisation server hands it out.
#[derive(Debug)]
pub struct Fresh<T> {
    /// The token (and whatever comes with it: Salesforce's instance URL, for one).
    pub value: T,
    /// How long it is valid (`expires_in`); `None` when the server does not say, and the
    /// token lives until the CRM refuses it.
    pub lifetime: Option<Duration>,
}

/// A token held by a [`TokenCache`].
#[derive(Debug)]
pub struct Token<T> {
    value: T,
    /// The fetch that made it: a refusal names the token by this.
    generation: u64,
    renew_at: Option<Instant>,
}

impl<T> Token<T> {
    /// The token.
    pub fn value(&self) -> &T {
        &self.value
    }

    fn is_due(&self, now: Instant) -> bool {
        self.renew_at.is_some_and(|at| now >= at)
    }
}

/// The token of one connection, fetched single-flight: callers that need one while a fetch
/// is in flight wait for it and take its outcome — a failure too, so that a burst of requests
/// against a refusing token endpoint costs one token request, not one each. A caller that
/// comes after a failed fetch has finished tries again.
pub struct TokenCache<T> {
    /// Held across a fetch, so that one runs at a time.
    state: tokio::sync::Mutex<CacheState<T>>,
    /// `CacheState::generation`, readable without the lock: a caller notes it before
    /// waiting, and a change means someone fetched while it waited.
    generation: AtomicU64,
}

struct CacheState<T> {
    /// Bumped by every fetch, successful or not.
    generation: u64,
    /// The last fetch's outcome; `None` before the first.
    outcome: Option<Result<Arc<Token<T>>, AdapterError>>,
}

impl<T> Default for TokenCache<T> {
    fn default() -> Self {
        TokenCache {
            state: tokio::sync::Mutex::new(CacheState {
                generation: 0,
                outcome: None,
            }),
            generation: AtomicU64::new(0),
        }
    }
}

impl<T> std::fmt::Debug for TokenCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("TokenCache")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T> TokenCache<T> {
    /// An empty cache: the first caller fetches.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token to send now. `fetch` runs when there is none yet, when it is due for renewal
    /// (a fifth of its lifetime, at most five minutes, before it expires), or when the caller
    /// says the CRM `refused` it; not when someone else fetched while this caller waited: it
    /// takes that outcome instead.
    pub async fn token<F, Fut>(
        &self,
        refused: Option<&Token<T>>,
        fetch: F,
    ) -> Result<Arc<Token<T>>, AdapterError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fresh<T>, AdapterError>>,
    {
        let seen = self.generation.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        match &state.outcome {
            Some(Ok(token))
                if refused.is_none_or(|refused| refused.generation != token.generation)
                    && !token.is_due(Instant::now()) =>
            {
                return Ok(token.clone());
            }
            Some(outcome) if state.generation != seen => return outcome.clone(),
            _ => {}
        }
        let generation = state.generation + 1;
        // Counted from the request, not the answer: the server started the lifetime somewhere
        // in between.
        let asked_at = Instant::now();
        let outcome = fetch().await.map(|fresh| {
            Arc::new(Token {
                value: fresh.value,
                generation,
                renew_at: fresh
                    .lifetime
                    .map(|lifetime| asked_at + lifetime - (lifetime / 5).min(MAX_RENEWAL_MARGIN)),
            })
        });
        state.generation = generation;
        state.outcome = Some(outcome.clone());
        self.generation.store(generation, Ordering::Release);
        outcome
    }
}

/// A refresh token the CRM may rotate (answer a new one with each grant, the old one dead):
/// the newest is kept in memory and saved in the daemon's [`CredentialStore`] under `key`, so
/// that a restart uses it. A stored one wins over the configured one at start.
pub struct RotatingSecret {
    key: &'static str,
    configured: Secret,
    current: Mutex<Secret>,
    store: Arc<dyn CredentialStore>,
}

impl std::fmt::Debug for RotatingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingSecret")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RotatingSecret {
    /// The secret saved under `key` by an earlier run, else `configured`.
    pub fn new(key: &'static str, configured: Secret, store: Arc<dyn CredentialStore>) -> Self {
        let current = store
            .load(key)
            .map(Secret::new)
            .unwrap_or_else(|| configured.clone());
        RotatingSecret {
            key,
            configured,
            current: Mutex::new(current),
            store,
        }
    }

    /// The newest secret.
    pub fn current(&self) -> Secret {
        self.current.lock().unwrap().clone()
    }

    /// The secret from the connection's config.
    pub fn configured(&self) -> &Secret {
        &self.configured
    }

    /// Takes in what a grant's answer said: a new secret (different from the current one) is
    /// saved and used from now on. A failure to save is logged, not returned: the new secret
    /// still works in memory, and only a restart would lose it.
    pub fn rotated(&self, issued: Option<String>) {
        let Some(issued) = issued else { return };
        let mut current = self.current.lock().unwrap();
        if issued == current.expose() {
            return;
        }
        if let Err(problem) = self.store.save(self.key, &issued) {
            tracing::error!(key = self.key, %problem, "could not save a rotated refresh token");
        }
        *current = Secret::new(issued);
    }

    /// Runs `grant` with the newest secret. When the server refuses it (`Unauthorized`) and it
    /// is a stored one that differs from the configured, `grant` runs once more with the
    /// configured one: the stored one may be stale (restored from an old backup, or rotated
    /// by another process) while an operator just put a fresh one in the config.
    pub async fn with_fallback<F, Fut, R>(&self, mut grant: F) -> Result<R, AdapterError>
    where
        F: FnMut(Secret) -> Fut,
        Fut: Future<Output = Result<R, AdapterError>>,
    {
        let current = self.current();
        match grant(current.clone()).await {
            Err(error) if error.kind == ErrorKind::Unauthorized && current != self.configured => {
                tracing::warn!(
                    key = self.key,
                    code = %error.code,
                    "the stored refresh token was refused; trying the configured one"
                );
                *self.current.lock().unwrap() = self.configured.clone();
                grant(self.configured.clone()).await
            }
            outcome => outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[derive(Default)]
    struct Memory(Mutex<Option<String>>);

    impl CredentialStore for Memory {
        fn load(&self, _: &str) -> Option<String> {
            self.0.lock().unwrap().clone()
        }
        fn save(&self, _: &str, value: &str) -> Result<(), String> {
            *self.0.lock().unwrap() = Some(value.to_string());
            Ok(())
        }
    }

    fn fresh(value: &str, lifetime: Option<Duration>) -> Result<Fresh<String>, AdapterError> {
        Ok(Fresh {
            value: value.to_string(),
            lifetime,
        })
    }

    #[tokio::test]
    async fn a_token_is_fetched_once_and_again_only_when_refused() {
        let cache = TokenCache::new();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            fresh(&format!("t{n}"), None)
        };
        let first = cache.token(None, fetch).await.unwrap();
        let again = cache.token(None, fetch).await.unwrap();
        assert_eq!(
            (first.value().as_str(), again.value().as_str()),
            ("t0", "t0")
        );
        let renewed = cache.token(Some(&first), fetch).await.unwrap();
        assert_eq!(renewed.value(), "t1");
        // A refusal of the old token, told late, does not renew the new one.
        let still = cache.token(Some(&first), fetch).await.unwrap();
        assert_eq!(still.value(), "t1");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_renewed_ahead_of_its_expiry() {
        let cache = TokenCache::new();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            fresh(&format!("t{n}"), Some(Duration::from_secs(100)))
        };
        assert_eq!(cache.token(None, fetch).await.unwrap().value(), "t0");
        tokio::time::advance(Duration::from_secs(79)).await;
        assert_eq!(cache.token(None, fetch).await.unwrap().value(), "t0");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            cache.token(None, fetch).await.unwrap().value(),
            "t1",
            "renewed a fifth of its lifetime before it expires"
        );
    }

    #[tokio::test]
    async fn a_failed_fetch_is_the_answer_of_every_caller_that_waited_for_it() {
        let cache = Arc::new(TokenCache::<String>::new());
        let fetches = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
        let mut callers = Vec::new();
        for _ in 0..5 {
            let (cache, fetches, released) = (cache.clone(), fetches.clone(), released.clone());
            callers.push(tokio::spawn(async move {
                cache
                    .token(None, || async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        if let Some(released) = released.lock().await.take() {
                            let _ = released.await;
                        }
                        Err::<Fresh<String>, _>(AdapterError::unauthorized(
                            "invalid_grant",
                            "refused",
                        ))
                    })
                    .await
            }));
        }
        // On this one-thread runtime, yielding lets every caller run until it waits: the first
        // in its fetch, the others for the lock, each having noted the generation before.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        release.send(()).unwrap();
        for caller in callers {
            let error = caller.await.unwrap().unwrap_err();
            assert_eq!(error.code, "invalid_grant");
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "one token request for all"
        );
        // A caller that comes afterwards tries again.
        let later = cache.token(None, || async { fresh("ok", None) }).await;
        assert_eq!(later.unwrap().value(), "ok");
    }

    #[tokio::test]
    async fn a_rotated_secret_is_saved_and_wins_at_the_next_start() {
        let store = Arc::new(Memory::default());
        let secret = RotatingSecret::new("refresh_token", Secret::new("rt-0"), store.clone());
        assert_eq!(secret.current().expose(), "rt-0");
        secret.rotated(None);
        secret.rotated(Some("rt-0".into()));
        assert_eq!(*store.0.lock().unwrap(), None, "nothing new to save");
        secret.rotated(Some("rt-1".into()));
        assert_eq!(store.0.lock().unwrap().as_deref(), Some("rt-1"));
        let restarted = RotatingSecret::new("refresh_token", Secret::new("rt-0"), store);
        assert_eq!(restarted.current().expose(), "rt-1");
    }

    #[tokio::test]
    async fn a_refused_stored_secret_falls_back_to_the_configured_one() {
        let store = Arc::new(Memory(Mutex::new(Some("stale".into()))));
        let secret = RotatingSecret::new("refresh_token", Secret::new("configured"), store);
        let tried = Mutex::new(Vec::new());
        let outcome = secret
            .with_fallback(|used| {
                tried.lock().unwrap().push(used.expose().to_string());
                async move {
                    if used.expose() == "stale" {
                        Err(AdapterError::unauthorized("invalid_grant", "expired"))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert!(outcome.is_ok());
        assert_eq!(*tried.lock().unwrap(), ["stale", "configured"]);
        assert_eq!(secret.current().expose(), "configured");
        // The configured one refused too: no third try.
        let refused = secret
            .with_fallback(|_| async { Err::<(), _>(AdapterError::unauthorized("x", "no")) })
            .await;
        assert!(refused.is_err());
    }
}
