//! A remote JWKS: fetched in the background before readiness, refreshed every
//! `jwks_refresh`, refetched (single-flight, at most once per 30 s) when a token names an
//! unknown `kid`. A failed fetch keeps the last good set.

use super::keys::{self, Key};
use crate::metrics;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Least time between two fetches caused by unknown `kid`s.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// Retry interval while a source has never been fetched successfully.
const RETRY: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
const MAX_BODY: usize = 1 << 20;

static CLIENT: LazyLock<Option<reqwest::Client>> = LazyLock::new(|| {
    reqwest::Client::builder()
        .user_agent("gateway-jwks/1")
        .build()
        .map_err(|e| tracing::error!(error = %e, "cannot build the JWKS HTTP client"))
        .ok()
});

#[derive(Debug, Clone, Copy, Default)]
struct Attempts {
    last: Option<Instant>,
    last_ok: Option<Instant>,
    /// The last fetch caused by an unknown `kid` (rate-limited by `MIN_REFETCH`).
    last_unknown_kid: Option<Instant>,
}

pub struct JwksSource {
    pub url: String,
    pub refresh: Duration,
    pub timeout: Duration,
    /// Label for metrics and logs: the first provider that uses this URL.
    pub provider: String,
    keys: ArcSwap<Vec<Key>>,
    attempts: Mutex<Attempts>,
    /// Held for the duration of a fetch: concurrent callers wait, then see its result.
    flight: tokio::sync::Mutex<()>,
    attempted: AtomicBool,
    /// Bumped whenever a new key set is stored.
    version: AtomicU64,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("url", &self.url)
            .finish()
    }
}

impl JwksSource {
    pub fn new(url: &str, refresh: Duration, timeout: Duration, provider: &str) -> JwksSource {
        JwksSource {
            url: url.to_string(),
            refresh,
            timeout,
            provider: provider.to_string(),
            keys: ArcSwap::from_pointee(Vec::new()),
            attempts: Mutex::new(Attempts::default()),
            flight: tokio::sync::Mutex::new(()),
            attempted: AtomicBool::new(false),
            version: AtomicU64::new(0),
        }
    }

    /// Whether a source built from these settings can be reused as it is.
    pub fn same(&self, url: &str, refresh: Duration, timeout: Duration) -> bool {
        self.url == url && self.refresh == refresh && self.timeout == timeout
    }

    /// Changes whenever the key set changes.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.keys.load_full()
    }

    /// True once a first fetch has completed, successfully or not.
    pub fn attempted(&self) -> bool {
        self.attempted.load(Ordering::Acquire)
    }

    fn attempts(&self) -> Attempts {
        *self.attempts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the background refresh should fetch now.
    pub fn due(&self) -> bool {
        let a = self.attempts();
        match (a.last, a.last_ok) {
            (None, _) => true,
            (Some(last), Some(ok)) if ok >= last => last.elapsed() >= self.refresh,
            (Some(last), _) => last.elapsed() >= RETRY.min(self.refresh),
        }
    }

    /// Fetches unless another caller is already doing so (then waits for it) or a fetch
    /// happened within `min_gap`.
    pub async fn fetch_unless_recent(&self, min_gap: Duration) {
        let _flight = self.flight.lock().await;
        if self.attempts().last.is_some_and(|t| t.elapsed() < min_gap) {
            return;
        }
        self.fetch_now().await;
    }

    /// A token named a `kid` no known key has: fetches again, at most once per
    /// `min_gap` for this cause (background refreshes do not count), and not at all when
    /// a fetch started while this caller waited (its result is as fresh as a new one).
    pub async fn fetch_for_unknown_kid(&self, min_gap: Duration) {
        let asked = Instant::now();
        let _flight = self.flight.lock().await;
        let a = self.attempts();
        if a.last.is_some_and(|t| t >= asked)
            || a.last_unknown_kid.is_some_and(|t| t.elapsed() < min_gap)
        {
            return;
        }
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_unknown_kid = Some(Instant::now());
        self.fetch_now().await;
    }

    async fn fetch_now(&self) {
        {
            let mut a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            a.last = Some(Instant::now());
        }
        let result = self
            .download()
            .await
            .and_then(|body| keys::from_jwks(&body));
        match result {
            Ok(keys) => {
                tracing::info!(provider = %self.provider, keys = keys.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys));
                self.version.fetch_add(1, Ordering::AcqRel);
                self.attempts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .last_ok = Some(Instant::now());
                metrics::JWKS_FETCHES
                    .with_label_values(&[&self.provider, "success"])
                    .inc();
            }
            Err(e) => {
                tracing::warn!(provider = %self.provider, url = %self.url, error = %e, "JWKS fetch failed; keeping the last good key set");
                metrics::JWKS_FETCHES
                    .with_label_values(&[&self.provider, "failure"])
                    .inc();
            }
        }
        self.attempted.store(true, Ordering::Release);
    }

    async fn download(&self) -> Result<Vec<u8>, String> {
        let client = CLIENT.as_ref().ok_or("no HTTP client")?;
        let mut resp = client
            .get(&self.url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let mut body = Vec::new();
        let read = async {
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("read failed: {e}"))?
            {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(format!("document larger than {MAX_BODY} bytes"));
                }
            }
            Ok(())
        };
        tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| "timed out".to_string())??;
        Ok(body)
    }
}
