//! The in-memory store: a sharded map of expiring values, bounded by `max_keys`. A new key
//! beyond the bound is refused (`StoreError::Full`, counted) rather than evicting another:
//! evicting an idempotency key would let a duplicate write through.

use super::StoreError;
use bytes::Bytes;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

struct Entry {
    value: Bytes,
    expires: Instant,
}

type Shard = Mutex<HashMap<String, Entry>>;

pub struct MemoryKv {
    shards: Vec<Shard>,
    hasher: RandomState,
    len: AtomicUsize,
    max_keys: usize,
}

impl std::fmt::Debug for MemoryKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryKv")
            .field("len", &self.len.load(Ordering::Relaxed))
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl MemoryKv {
    pub fn new(max_keys: usize) -> MemoryKv {
        MemoryKv {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
            max_keys,
        }
    }

    /// Runs `f` on the shard of `key`. A poisoned lock (a panic elsewhere while holding it)
    /// still holds a consistent map: every change below is a single insert or remove.
    fn with<T>(&self, key: &str, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        let mut map = match self.shards[i].lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        f(&mut map)
    }

    /// The live value of `key`, dropping it if it has expired.
    fn live<'m>(&self, map: &'m mut HashMap<String, Entry>, key: &str) -> Option<&'m Entry> {
        if map.get(key).is_some_and(|e| e.expires <= Instant::now()) {
            map.remove(key);
            self.count(-1);
        }
        map.get(key)
    }

    fn count(&self, delta: isize) {
        let n = if delta >= 0 {
            self.len.fetch_add(delta as usize, Ordering::Relaxed) + delta as usize
        } else {
            self.len.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed) - delta.unsigned_abs()
        };
        crate::metrics::STORE_KEYS.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Inserts a new key if the bound allows; `Err(Full)` asks the caller to sweep every
    /// shard (not under this shard's lock) and try once more.
    fn insert_new(
        &self,
        map: &mut HashMap<String, Entry>,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if self.len.load(Ordering::Relaxed) >= self.max_keys {
            return Err(StoreError::Full);
        }
        map.insert(key.to_string(), entry(value, ttl));
        self.count(1);
        Ok(())
    }

    /// Runs `op`; when the store is full, sweeps expired entries from every shard and runs
    /// it once more.
    fn with_room<T>(&self, op: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
        match op() {
            Err(StoreError::Full) => {
                self.sweep();
                op()
            }
            other => other,
        }
    }

    pub fn claim(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Option<Bytes>, StoreError> {
        self.with_room(|| {
            self.with(key, |map| {
                if let Some(e) = self.live(map, key) {
                    return Ok(Some(e.value.clone()));
                }
                self.insert_new(map, key, value, ttl).map(|()| None)
            })
        })
    }

    pub fn replace(&self, key: &str, expected: &[u8], value: &[u8], ttl: Duration) -> bool {
        self.with(key, |map| {
            if self.live(map, key).is_some_and(|e| e.value == expected) {
                map.insert(key.to_string(), entry(value, ttl));
                return true;
            }
            false
        })
    }

    pub fn release(&self, key: &str, expected: &[u8]) -> bool {
        self.with(key, |map| {
            if self.live(map, key).is_some_and(|e| e.value == expected) {
                map.remove(key);
                self.count(-1);
                return true;
            }
            false
        })
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.with(key, |map| self.live(map, key).map(|e| e.value.clone()))
    }

    pub fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.with_room(|| {
            self.with(key, |map| {
                if self.live(map, key).is_some() {
                    map.insert(key.to_string(), entry(value, ttl));
                    return Ok(());
                }
                self.insert_new(map, key, value, ttl)
            })
        })
    }

    /// Drops every expired entry (run periodically, so that keys nobody asks for again do
    /// not stay until the bound is reached).
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            let mut map = match shard.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            let before = map.len();
            map.retain(|_, e| e.expires > now);
            let gone = before - map.len();
            drop(map);
            if gone > 0 {
                self.count(-(gone as isize));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn entry(value: &[u8], ttl: Duration) -> Entry {
    Entry {
        value: Bytes::copy_from_slice(value),
        // A TTL too large to add (never, in practice) is capped at a year.
        expires: Instant::now()
            .checked_add(ttl)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_replace_release() {
        let kv = MemoryKv::new(10);
        let ttl = Duration::from_secs(60);
        assert_eq!(kv.claim("k", b"lock", ttl).unwrap(), None);
        assert_eq!(kv.claim("k", b"other", ttl).unwrap().unwrap(), "lock");
        assert!(!kv.replace("k", b"other", b"x", ttl));
        assert!(kv.replace("k", b"lock", b"answer", ttl));
        assert_eq!(kv.get("k").unwrap(), "answer");
        assert!(!kv.release("k", b"lock"));
        assert!(kv.release("k", b"answer"));
        assert_eq!(kv.get("k"), None);
        assert!(kv.is_empty());
    }

    #[test]
    fn entries_expire() {
        let kv = MemoryKv::new(10);
        kv.put("a", b"1", Duration::from_millis(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kv.get("a"), None);
        assert_eq!(kv.claim("a", b"2", Duration::from_secs(1)).unwrap(), None);
        kv.put("b", b"1", Duration::from_millis(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        kv.sweep();
        assert_eq!(kv.len(), 1);
    }

    #[test]
    fn bounded_without_evicting() {
        let kv = MemoryKv::new(2);
        let ttl = Duration::from_secs(60);
        kv.put("a", b"1", ttl).unwrap();
        kv.put("b", b"1", ttl).unwrap();
        assert!(matches!(kv.claim("c", b"1", ttl), Err(StoreError::Full)));
        assert!(matches!(kv.put("c", b"1", ttl), Err(StoreError::Full)));
        // Existing keys are still there and can change.
        kv.put("a", b"2", ttl).unwrap();
        assert_eq!(kv.get("a").unwrap(), "2");
        // Room again once one expires.
        kv.put("b", b"1", Duration::from_millis(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kv.claim("c", b"1", ttl).unwrap(), None);
    }
}
