//! The Redis side of the store: a small pool of multiplexed connections (made on first
//! use, reconnecting with backoff), every call bounded by the store's timeout, and the
//! key-value operations as Lua scripts so that each is one atomic round trip.

use super::StoreError;
use crate::config::gateway::RedisStore;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Returns the value if present; otherwise sets it (with its TTL) and returns nil.
const CLAIM: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"#;

/// Replaces the value only while it is still the expected one.
const REPLACE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"#;

/// Deletes the key only while its value is still the expected one.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

pub struct RedisPool {
    client: redis::Client,
    /// Created on first use, on the runtime of the request that needed it.
    pool: OnceLock<Vec<ConnectionManager>>,
    size: usize,
    next: AtomicUsize,
    /// For one whole operation, connection waits included.
    pub timeout: Duration,
    claim: redis::Script,
    replace: redis::Script,
    release: redis::Script,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("pool", &self.size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// TTLs in whole milliseconds, at least 1 (Redis refuses `PX 0`).
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisPool {
    /// Checks the settings; connects nothing yet.
    pub fn new(cfg: &RedisStore) -> Result<RedisPool, String> {
        let client =
            redis::Client::open(cfg.url.as_str()).map_err(|e| format!("invalid redis url: {e}"))?;
        if cfg.pool == 0 {
            return Err("redis pool must be at least 1".into());
        }
        Ok(RedisPool {
            client,
            pool: OnceLock::new(),
            size: cfg.pool,
            next: AtomicUsize::new(0),
            timeout: cfg.timeout.0,
            claim: redis::Script::new(CLAIM),
            replace: redis::Script::new(REPLACE),
            release: redis::Script::new(RELEASE),
        })
    }

    /// A connection of the pool, in turn.
    pub fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if self.pool.get().is_none() {
            // Reconnects back off from 10 ms to 1 s and never give up for long: the next
            // request after a failed series starts a new one.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(250))))
                .set_response_timeout(Some(self.timeout))
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(Duration::from_secs(1));
            let pool = (0..self.size)
                .map(|_| {
                    ConnectionManager::new_lazy_with_config(self.client.clone(), config.clone())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Failed(e.to_string()))?;
            let _ = self.pool.set(pool);
        }
        let pool = self
            .pool
            .get()
            .ok_or_else(|| StoreError::Failed("no connection".into()))?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % pool.len();
        Ok(pool[i].clone())
    }

    /// Waits for a Redis call at most the store's timeout.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(StoreError::Timeout),
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout),
            Ok(Err(e)) => Err(StoreError::Failed(e.to_string())),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Runs a script invocation within the timeout.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.connection()?;
        self.bounded(call.invoke_async(&mut conn)).await
    }

    /// Runs a plain command within the timeout.
    async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.connection()?;
        self.bounded(cmd.query_async(&mut conn)).await
    }

    pub async fn claim(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Option<Bytes>, StoreError> {
        let mut call = self.claim.prepare_invoke();
        call.key(key).arg(value).arg(millis(ttl));
        let v: Option<Vec<u8>> = self.invoke(&call).await?;
        Ok(v.map(Bytes::from))
    }

    pub async fn replace(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut call = self.replace.prepare_invoke();
        call.key(key).arg(expected).arg(value).arg(millis(ttl));
        let n: i64 = self.invoke(&call).await?;
        Ok(n == 1)
    }

    pub async fn release(&self, key: &str, expected: &[u8]) -> Result<bool, StoreError> {
        let mut call = self.release.prepare_invoke();
        call.key(key).arg(expected);
        let n: i64 = self.invoke(&call).await?;
        Ok(n == 1)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let v: Option<Vec<u8>> = self.command(cmd).await?;
        Ok(v.map(Bytes::from))
    }

    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(millis(ttl));
        let _: () = self.command(cmd).await?;
        Ok(())
    }

    /// Publishes `message` on `channel` (cache purges to other replicas). An operator's
    /// call, not a request's: it may take up to a second whatever the store's timeout.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let mut conn = self.connection()?;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(message);
        let limit = self.timeout.max(Duration::from_secs(1));
        match tokio::time::timeout(limit, cmd.query_async::<i64>(&mut conn)).await {
            Err(_) => Err(StoreError::Timeout),
            Ok(Err(e)) => Err(StoreError::Failed(e.to_string())),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// The client, for connections of their own (a pub/sub subscription).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }
}
