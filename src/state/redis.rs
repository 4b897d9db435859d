//! The Redis side of the store: a small pool of multiplexed connections (made on first
//! use, reconnecting with backoff), every call bounded by the store's timeout, and the
//! key-value operations as Lua scripts so that each is one atomic round trip. The pool is
//! one server's or a Redis Cluster's (`super::redis_cluster`), behind the same methods.
//!
//! Cluster: every script here touches one key (`KEYS[1]`), so it runs on the key's master
//! whatever the layout; a script of several keys must keep them in one hash slot, see
//! [`hash_tag`].

use super::redis_cluster::{self, ClusterPool, ScriptRouted, Target};
use super::StoreError;
use crate::config::gateway::RedisStore;
use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
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

/// Identities longer than this get a hashed tag (tags are repeated in every key).
const MAX_RAW_TAG: usize = 64;

/// The hash tag of `identity` (a consumer, a client key): `{identity}`. Redis Cluster puts
/// keys in slots by the text between their first `{` and the next `}` alone, so keys that
/// share this tag share a slot, and one script may touch them all. Identities that would
/// not make a clean tag (empty, containing `{` or `}`, longer than 64 bytes, or starting
/// with `#`) become `{#` + 32 hex digits of their SHA-256 + `}`; two identities never share
/// a tag but by a hash collision.
pub fn hash_tag(identity: &str) -> String {
    let clean = !identity.is_empty()
        && identity.len() <= MAX_RAW_TAG
        && !identity.starts_with('#')
        && !identity.contains(['{', '}']);
    if clean {
        format!("{{{identity}}}")
    } else {
        let digest = Sha256::digest(identity.as_bytes());
        format!("{{#{}}}", hex::encode(&digest[..16]))
    }
}

/// One server's connection managers, or a cluster's connections.
enum Backend {
    Single {
        client: redis::Client,
        /// Created on first use, on the runtime of the request that needed it.
        pool: OnceLock<Vec<ConnectionManager>>,
    },
    /// Boxed: much larger than the single-server variant.
    Cluster(Box<ClusterPool>),
}

/// A connection of either kind, for one call.
enum Conn {
    Single(ConnectionManager),
    Cluster(ScriptRouted),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub struct RedisPool {
    backend: Backend,
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
        let kind = match self.backend {
            Backend::Single { .. } => "single",
            Backend::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisPool")
            .field("kind", &kind)
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
        if cfg.pool == 0 {
            return Err("redis pool must be at least 1".into());
        }
        let backend = match redis_cluster::target(cfg).map_err(|e| e.to_string())? {
            Target::Single(url) => Backend::Single {
                client: redis::Client::open(url.as_str())
                    .map_err(|e| format!("invalid redis url: {e}"))?,
                pool: OnceLock::new(),
            },
            Target::Cluster(nodes) => {
                Backend::Cluster(Box::new(ClusterPool::new(&nodes, cfg.pool, cfg.timeout.0)?))
            }
        };
        Ok(RedisPool {
            backend,
            size: cfg.pool,
            next: AtomicUsize::new(0),
            timeout: cfg.timeout.0,
            claim: redis::Script::new(CLAIM),
            replace: redis::Script::new(REPLACE),
            release: redis::Script::new(RELEASE),
        })
    }

    /// Whether this is a Redis Cluster's pool.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// A connection of the pool, in turn.
    fn connection(&self) -> Result<Conn, StoreError> {
        let (client, pool) = match &self.backend {
            Backend::Cluster(c) => return c.connection().map(Conn::Cluster),
            Backend::Single { client, pool } => (client, pool),
        };
        if pool.get().is_none() {
            // Reconnects back off from 10 ms to 1 s and never give up for long: the next
            // request after a failed series starts a new one.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(250))))
                .set_response_timeout(Some(self.timeout))
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(Duration::from_secs(1));
            let made = (0..self.size)
                .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Failed(e.to_string()))?;
            let _ = pool.set(made);
        }
        let pool = pool
            .get()
            .ok_or_else(|| StoreError::Failed("no connection".into()))?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % pool.len();
        Ok(Conn::Single(pool[i].clone()))
    }

    /// Connects every connection of the pool, each waiting at most the timeout for a PING
    /// (with a cluster: every node's). Run before the gateway reports ready, so the first
    /// requests do not pay for connecting, or, with a cluster, for discovering the slot
    /// map, which costs a timeout whenever it asks a node that answers nothing. Failures
    /// are logged only: requests reconnect as they always do.
    pub async fn warm(&self) {
        let pings = (0..self.size).map(|_| self.command::<redis::Value>(redis::cmd("PING")));
        let failed = futures::future::join_all(pings)
            .await
            .into_iter()
            .filter_map(Result::err)
            .last();
        match failed {
            Some(e) => tracing::warn!(error = %e, "redis store: not every connection is up yet"),
            None => tracing::info!(connections = self.size, "redis store connected"),
        }
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
    /// call, not a request's: it may take up to a second whatever the store's timeout. In
    /// a cluster, through a plain connection to one node (classic pub/sub reaches every
    /// node's subscribers), the next node of the list if that one fails.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let limit = self.timeout.max(Duration::from_secs(1));
        let published = async {
            match &self.backend {
                Backend::Cluster(c) => c.publish(channel, message).await,
                Backend::Single { .. } => {
                    let mut conn = self.connection()?;
                    let mut cmd = redis::cmd("PUBLISH");
                    cmd.arg(channel).arg(message);
                    cmd.query_async::<i64>(&mut conn)
                        .await
                        .map(|_| ())
                        .map_err(|e| StoreError::Failed(e.to_string()))
                }
            }
        };
        tokio::time::timeout(limit, published)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }

    /// The client a pub/sub subscription should connect with now: the server's, or in a
    /// cluster one node's of the list.
    pub fn client(&self) -> &redis::Client {
        match &self.backend {
            Backend::Single { client, .. } => client,
            Backend::Cluster(c) => c.pubsub_client(),
        }
    }

    /// Tells the pool that a subscription through [`Self::client`] failed: in a cluster,
    /// the next one connects to the next node of the list.
    pub fn subscription_failed(&self) {
        if let Backend::Cluster(c) = &self.backend {
            c.pubsub_failed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hash_tag;
    use redis::cluster_routing::Slot;

    #[test]
    fn hash_tags_are_clean_and_put_keys_in_one_slot() {
        assert_eq!(hash_tag("acme"), "{acme}");
        let tag = hash_tag("a{b}c");
        assert!(
            tag.starts_with("{#") && tag.ends_with('}') && tag.len() == 35,
            "{tag}"
        );
        assert_eq!(tag.matches(['{', '}']).count(), 2, "{tag}");
        assert_ne!(hash_tag(""), "{}", "an empty tag would hash the whole key");
        assert_ne!(hash_tag(&"x".repeat(65)), format!("{{{}}}", "x".repeat(65)));
        // An identity that looks like a hashed tag is hashed itself: no two share a tag.
        assert_ne!(hash_tag(&tag[1..tag.len() - 1]), tag);
        for id in ["acme", "a{b}c", "", "}{"] {
            let t = hash_tag(id);
            let day = Slot::for_key(format!("gw:quota:{t}:day"));
            assert_eq!(day, Slot::for_key(format!("gw:rl:{t}:month")), "{id}");
        }
    }
}
