//! Response caching on Pingora's cache (`pingora-cache`): its state machine, cache lock
//! (one upstream fetch for concurrent misses) and stale-while-revalidate, over
//! [`storage::MemoryStorage`]. What is cached, under which key and for how long is decided
//! in [`policy`]; the proxy's hooks that drive it are in `crate::proxy::cache`; purges
//! (admin, and from other replicas through Redis) in [`purge`].

mod handlers;
pub mod policy;
pub mod purge;
pub mod storage;

use crate::config::integration::{CacheSettingsDef, RouteCacheDef};
use http::HeaderName;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use prometheus::IntCounter;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use storage::MemoryStorage;

/// Every cached answer of the process. Pingora takes its storage and lock as `'static`;
/// the memory bound is set from gateway.yaml at start ([`configure`]).
static STORAGE: LazyLock<MemoryStorage> =
    LazyLock::new(|| MemoryStorage::new(CacheSettingsDef::default().max_memory.0 as usize));

/// A fetch that holds a key's lock longer than this lets the waiting requests go upstream
/// themselves (a slow upstream does not stall every reader behind it for good).
const LOCK_AGE: Duration = Duration::from_secs(30);

static LOCK: LazyLock<Box<CacheLock>> = LazyLock::new(|| CacheLock::new_boxed(LOCK_AGE));

pub fn storage() -> &'static MemoryStorage {
    &STORAGE
}

pub fn lock() -> &'static CacheKeyLockImpl {
    &**LOCK
}

/// Applies gateway.yaml's `cache` block.
pub fn configure(settings: &CacheSettingsDef) {
    STORAGE.set_max_bytes(usize::try_from(settings.max_memory.0).unwrap_or(usize::MAX));
}

/// What the cache did for one request, as `X-Cache` and the metric's `result` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Stale,
    Bypass,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
            Outcome::Bypass => "BYPASS",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A route's compiled `cache` block.
pub struct RouteCache {
    pub route: Arc<str>,
    /// Freshness when the upstream's answer sets none.
    pub ttl: Duration,
    /// Request headers whose values are part of the key.
    pub key_headers: Vec<HeaderName>,
    pub stale_while_revalidate: Duration,
    /// `gateway_cache_requests_total{route, result}`, one handle per [`Outcome`].
    counters: [IntCounter; 4],
}

impl std::fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCache")
            .field("ttl", &self.ttl)
            .field("key_headers", &self.key_headers)
            .field("stale_while_revalidate", &self.stale_while_revalidate)
            .finish()
    }
}

impl RouteCache {
    pub fn compile(route: &str, def: &RouteCacheDef) -> RouteCache {
        let mut key_headers = Vec::new();
        for part in &def.key {
            if !key_headers.contains(&part.0) {
                key_headers.push(part.0.clone());
            }
        }
        let outcome =
            |o: Outcome| crate::metrics::CACHE_REQUESTS.with_label_values(&[route, o.as_str()]);
        RouteCache {
            route: route.into(),
            ttl: def.ttl.0,
            key_headers,
            stale_while_revalidate: def.stale_while_revalidate.map_or(Duration::ZERO, |d| d.0),
            counters: [
                outcome(Outcome::Hit),
                outcome(Outcome::Miss),
                outcome(Outcome::Stale),
                outcome(Outcome::Bypass),
            ],
        }
    }

    pub fn count(&self, outcome: Outcome) {
        self.counters[outcome.index()].inc();
    }
}
