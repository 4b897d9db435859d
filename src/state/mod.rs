//! Shared state: the one store behind rate limits, idempotency keys and webhook replay ids.
//! In memory (one process) or in Redis (every replica sees the same keys). Its operations
//! are the few that those features need, each atomic on either backend:
//!
//! - [`Kv::claim`]: take a key if nobody holds it, else see what is there (idempotency's
//!   in-flight lock, and its stored answer);
//! - [`Kv::replace`] / [`Kv::release`]: change or drop a value only while it is still the
//!   one this request wrote (a lock that expired and was taken by another is left alone);
//! - [`Kv::get`] / [`Kv::put`]: plain reads and writes with a time to live (webhook ids).
//!
//! Every value expires: memory entries when their time is up (and they are bounded by
//! `max_keys`), Redis keys by their `PX` TTL.

pub mod memory;
pub mod redis;
pub mod redis_cluster;

use crate::config::gateway::OnStoreError;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Why the store could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store did not answer in time")]
    Timeout,
    #[error("the store failed: {0}")]
    Failed(String),
    #[error("the memory store is full")]
    Full,
}

impl StoreError {
    /// The `kind` label of the store-error counters.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Failed(_) => "error",
            StoreError::Full => "full",
        }
    }
}

/// The key-value side of the store (rate limits keep their own state shapes, see
/// `crate::ratelimit`, on the same Redis connections).
#[derive(Debug)]
pub enum Kv {
    Memory(memory::MemoryKv),
    Redis(Arc<redis::RedisPool>),
}

impl Kv {
    /// Sets `key` to `value` for `ttl` if it is absent (`Ok(None)`); otherwise returns what
    /// is there and changes nothing.
    pub async fn claim(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Option<Bytes>, StoreError> {
        match self {
            Kv::Memory(m) => m.claim(key, value, ttl),
            Kv::Redis(r) => r.claim(key, value, ttl).await,
        }
    }

    /// Replaces the value of `key` with `value` for `ttl`, only if it is still `expected`.
    /// `Ok(false)`: it was not (expired, or taken by another).
    pub async fn replace(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Kv::Memory(m) => Ok(m.replace(key, expected, value, ttl)),
            Kv::Redis(r) => r.replace(key, expected, value, ttl).await,
        }
    }

    /// Removes `key` if its value is still `expected`.
    pub async fn release(&self, key: &str, expected: &[u8]) -> Result<bool, StoreError> {
        match self {
            Kv::Memory(m) => Ok(m.release(key, expected)),
            Kv::Redis(r) => r.release(key, expected).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self {
            Kv::Memory(m) => Ok(m.get(key)),
            Kv::Redis(r) => r.get(key).await,
        }
    }

    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        match self {
            Kv::Memory(m) => m.put(key, value, ttl),
            Kv::Redis(r) => r.put(key, value, ttl).await,
        }
    }

    /// Drops expired memory entries (Redis expires its own).
    pub fn sweep(&self) {
        if let Kv::Memory(m) = self {
            m.sweep();
        }
    }
}

/// The process's shared state, from gateway.yaml's `store`: built once at start and kept
/// by every policy generation.
#[derive(Debug)]
pub struct Shared {
    pub kv: Kv,
    /// What a feature does when the store cannot answer (memory: it always can, except
    /// when full, which is treated as `allow`).
    pub on_error: OnStoreError,
    /// The key prefix, so several gateways (or environments) can share one Redis.
    pub prefix: String,
    /// The delivery queue of `deliver` routes (in the same store).
    pub queue: std::sync::Arc<dyn crate::deliver::queue::Queue>,
}

impl Shared {
    /// The full key of a feature's entry: `{prefix}{feature}:{id}`.
    pub fn key(&self, feature: &str, id: &str) -> String {
        format!("{}{feature}:{id}", self.prefix)
    }

    /// Counts a store failure; `true` when the request should go on without the feature.
    pub fn tolerate(&self, feature: &str, e: &StoreError) -> bool {
        crate::metrics::STORE_ERRORS
            .with_label_values(&[feature, e.kind()])
            .inc();
        tracing::warn!(feature, error = %e, "shared store unavailable");
        matches!(e, StoreError::Full) || self.on_error == OnStoreError::Allow
    }
}
