//! The response cache's memory, behind Pingora's `Storage` trait: whole answers only (a
//! miss is stored when its body is complete, so a reader never sees half of one), bounded
//! in bytes with the least recently used entries going first, and indexed by route so
//! that an operator can purge a route or one of its paths.
//!
//! Pingora's own `MemCache` is for tests (unbounded, no index, its metadata serialised and
//! zstd-compressed on every hit); this one keeps each entry's metadata as values and hands
//! out the body as a shared `Bytes`.

use super::handlers::{Hit, Miss};
use bytes::Bytes;
use lru::LruCache;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, Storage};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

pub use super::handlers::MAX_ENTRY;

/// What an entry is filed under for purges: set by the proxy on the cache key (its
/// extensions) and read by the miss handler that stores the answer.
#[derive(Debug, Clone)]
pub struct EntryTag {
    pub route: Arc<str>,
    pub path: Box<str>,
}

/// An entry's metadata as values (a `CacheMeta` is rebuilt from them on each hit).
pub(super) struct Meta {
    fresh_until: SystemTime,
    updated: SystemTime,
    stale_while_revalidate: u32,
    stale_if_error: u32,
    header: ResponseHeader,
}

impl Meta {
    pub(super) fn of(meta: &CacheMeta) -> Meta {
        Meta {
            fresh_until: meta.fresh_until(),
            updated: meta.updated(),
            stale_while_revalidate: meta.stale_while_revalidate_sec(),
            stale_if_error: meta.stale_if_error_sec(),
            header: meta.response_header_copy(),
        }
    }

    fn build(&self) -> CacheMeta {
        CacheMeta::new(
            self.fresh_until,
            self.updated,
            self.stale_while_revalidate,
            self.stale_if_error,
            self.header.clone(),
        )
    }

    /// Past any use: neither fresh nor within a window in which it may be served stale.
    fn dead(&self, now: SystemTime) -> bool {
        let grace = self.stale_while_revalidate.max(self.stale_if_error);
        self.fresh_until + Duration::from_secs(grace.into()) < now
    }

    /// Bytes the header takes, roughly: what the memory bound counts besides the body.
    pub(super) fn weight(&self) -> usize {
        let fields: usize = self
            .header
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        fields + 256
    }
}

pub(super) struct Entry {
    pub(super) meta: Meta,
    pub(super) body: Bytes,
    pub(super) tag: EntryTag,
    pub(super) weight: usize,
}

struct Inner {
    entries: LruCache<HashBinary, Arc<Entry>>,
    bytes: usize,
    /// Every stored key of a route, for purges.
    routes: HashMap<Arc<str>, HashSet<HashBinary>>,
}

impl Inner {
    fn remove(&mut self, key: &HashBinary) -> Option<Arc<Entry>> {
        let entry = self.entries.pop(key)?;
        self.forget(key, &entry);
        Some(entry)
    }

    /// Drops an entry already taken out of `entries` from the byte count and the index.
    fn forget(&mut self, key: &HashBinary, entry: &Entry) {
        self.bytes = self.bytes.saturating_sub(entry.weight);
        if let Some(keys) = self.routes.get_mut(&entry.tag.route) {
            keys.remove(key);
            if keys.is_empty() {
                self.routes.remove(&entry.tag.route);
            }
        }
    }
}

/// The process's response cache (one for every listener and policy generation).
pub struct MemoryStorage {
    inner: Mutex<Inner>,
    max_bytes: AtomicUsize,
}

impl MemoryStorage {
    pub fn new(max_bytes: usize) -> MemoryStorage {
        MemoryStorage {
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
                routes: HashMap::new(),
            }),
            max_bytes: AtomicUsize::new(max_bytes),
        }
    }

    /// Sets the bound; entries over it go at the next store.
    pub fn set_max_bytes(&self, max: usize) {
        self.max_bytes.store(max, Ordering::Relaxed);
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-changed in a way that
        // matters more than losing the cache: keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// (entries, bytes) held now.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner();
        (inner.entries.len(), inner.bytes)
    }

    /// Stores a complete answer; returns the bytes it counts (0: not kept).
    pub(super) fn insert(&self, key: HashBinary, entry: Entry) -> usize {
        let weight = entry.weight;
        let max = self.max_bytes.load(Ordering::Relaxed);
        if weight > max {
            return 0;
        }
        let mut inner = self.inner();
        inner.remove(&key);
        inner
            .routes
            .entry(entry.tag.route.clone())
            .or_default()
            .insert(key);
        inner.bytes += weight;
        inner.entries.put(key, Arc::new(entry));
        while inner.bytes > max {
            let Some((k, old)) = inner.entries.pop_lru() else {
                break;
            };
            inner.forget(&k, &old);
        }
        report(&inner);
        weight
    }

    /// Removes every entry of `route`, or only those of one path (every query string and
    /// variant of it). Returns how many went.
    pub fn purge_route(&self, route: &str, path: Option<&str>) -> usize {
        let mut inner = self.inner();
        let Some(keys) = inner.routes.get(route) else {
            return 0;
        };
        let chosen: Vec<HashBinary> = keys
            .iter()
            .filter(|k| {
                path.is_none_or(|p| inner.entries.peek(*k).is_some_and(|e| &*e.tag.path == p))
            })
            .copied()
            .collect();
        for k in &chosen {
            inner.remove(k);
        }
        report(&inner);
        chosen.len()
    }
}

fn report(inner: &Inner) {
    crate::metrics::CACHE_ENTRIES.set(i64::try_from(inner.entries.len()).unwrap_or(i64::MAX));
    crate::metrics::CACHE_BYTES.set(i64::try_from(inner.bytes).unwrap_or(i64::MAX));
}

#[async_trait::async_trait]
impl Storage for MemoryStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let entry = {
            let mut inner = self.inner();
            let dead = match inner.entries.get(&hash) {
                None => return Ok(None),
                Some(e) => e.meta.dead(SystemTime::now()),
            };
            if dead {
                inner.remove(&hash);
                report(&inner);
                return Ok(None);
            }
            inner.entries.get(&hash).cloned()
        };
        Ok(entry.map(|e| {
            let hit: HitHandler = Box::new(Hit::new(e.body.clone()));
            (e.meta.build(), hit)
        }))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(Miss::new(
            self,
            key.combined_bin(),
            Meta::of(meta),
            key.extensions.get::<EntryTag>().cloned(),
        )))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let mut inner = self.inner();
        let gone = inner.remove(&target.key().combined_bin()).is_some();
        report(&inner);
        Ok(if gone {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let mut inner = self.inner();
        let Some(old) = inner.entries.peek(&hash).cloned() else {
            return Ok(false);
        };
        let meta = Meta::of(meta);
        let weight = old.body.len() + meta.weight();
        let entry = Entry {
            meta,
            body: old.body.clone(),
            tag: old.tag.clone(),
            weight,
        };
        inner.bytes = inner.bytes.saturating_sub(old.weight) + weight;
        inner.entries.put(hash, Arc::new(entry));
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
