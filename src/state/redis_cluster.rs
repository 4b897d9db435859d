//! Redis Cluster for the shared store: where the nodes come from (`store.redis.cluster`, or
//! a `redis+cluster://` URL), the pool of cluster connections (the redis crate follows
//! MOVED/ASK, refreshes the slot map and reconnects), scripts that load themselves on the
//! node that owns their keys, and cache-purge pub/sub through one plain node connection.
//!
//! URL form: `redis+cluster://[user:password@]host:port[,host:port...][/]`. The redis crate
//! has no URL for a cluster, so it is parsed here into one `redis://` URL per seed node.

use super::StoreError;
use crate::config::gateway::RedisStore;
use redis::aio::ConnectionLike;
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, RedisFuture, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

const SCHEME: &str = "redis+cluster://";

/// What `store.redis` points at.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// One server (or a proxy in front of several), by URL.
    Single(String),
    /// Seed nodes of a Redis Cluster, each as a `redis://` URL.
    Cluster(Vec<String>),
}

/// A `store.redis` mapping that names no usable Redis.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    #[error("`url` and `cluster` are both set: keep one (`cluster` for Redis Cluster)")]
    Both,
    #[error("needs `url` (one server) or `cluster` (Redis Cluster nodes)")]
    Neither,
    #[error("`cluster` is empty: list at least one node as host:port")]
    EmptyCluster,
    #[error("cluster node {0:?} is not host:port")]
    BadNode(String),
}

/// Reads `url` / `cluster` of the store's Redis settings.
pub fn target(cfg: &RedisStore) -> Result<Target, TargetError> {
    let url = cfg.url.trim();
    match (&cfg.cluster, url.is_empty()) {
        (Some(_), false) => Err(TargetError::Both),
        (Some(nodes), true) if nodes.is_empty() => Err(TargetError::EmptyCluster),
        (Some(nodes), true) => nodes
            .iter()
            .map(|n| node_url("", n))
            .collect::<Result<_, _>>(),
        (None, true) => Err(TargetError::Neither),
        (None, false) => match url.strip_prefix(SCHEME) {
            Some(rest) => cluster_url(rest),
            None => Ok(Target::Single(url.to_string())),
        },
    }
}

/// The part after `redis+cluster://`: optional credentials, then comma-separated nodes,
/// then an optional `/` (a cluster has only database 0, so nothing may follow it).
fn cluster_url(rest: &str) -> Result<Target, TargetError> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    if hosts.trim().is_empty() {
        return Err(TargetError::EmptyCluster);
    }
    hosts.split(',').map(|n| node_url(&auth, n)).collect()
}

fn node_url(auth: &str, node: &str) -> Result<String, TargetError> {
    let node = node.trim();
    let node = node.strip_prefix("redis://").unwrap_or(node);
    let ok = match node.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains(['/', '@', ',']) && port.parse::<u16>().is_ok()
        }
        None => false,
    };
    if ok {
        Ok(format!("redis://{auth}{node}"))
    } else {
        Err(TargetError::BadNode(node.to_string()))
    }
}

impl FromIterator<String> for Target {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        Target::Cluster(iter.into_iter().collect())
    }
}

/// Cluster connections, made on first use and used in turn, plus one plain client per seed
/// node for pub/sub.
pub struct ClusterPool {
    client: ClusterClient,
    config: ClusterConfig,
    pool: OnceLock<Vec<ClusterConnection>>,
    size: usize,
    next: AtomicUsize,
    nodes: Vec<redis::Client>,
    /// The seed node pub/sub starts with; moves on when one fails.
    pubsub_node: AtomicUsize,
}

impl ClusterPool {
    pub fn new(nodes: &[String], size: usize, timeout: Duration) -> Result<ClusterPool, String> {
        let clients = nodes
            .iter()
            .map(|n| redis::Client::open(n.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("invalid redis cluster node: {e}"))?;
        if clients.is_empty() {
            return Err(TargetError::EmptyCluster.to_string());
        }
        let connect = timeout.max(Duration::from_millis(250));
        // Few, short retries: a request is bounded by the store's timeout anyway, and the
        // crate's default (16 retries, waits from 1.28 s) only matters beyond it.
        let client = ClusterClient::builder(nodes.iter().map(String::as_str))
            .retries(2)
            .min_retry_wait(5)
            .max_retry_wait(50)
            .build()
            .map_err(|e| format!("invalid redis cluster: {e}"))?;
        Ok(ClusterPool {
            client,
            config: ClusterConfig::new()
                .set_connection_timeout(connect)
                .set_response_timeout(timeout),
            pool: OnceLock::new(),
            size,
            next: AtomicUsize::new(0),
            nodes: clients,
            pubsub_node: AtomicUsize::new(0),
        })
    }

    /// A connection of the pool, in turn. The first call creates them without waiting for
    /// the cluster (they connect, and find the slot map, in the background).
    pub fn connection(&self) -> Result<ScriptRouted, StoreError> {
        let pool = self.pool.get_or_init(|| {
            (0..self.size)
                .map(|_| {
                    self.client
                        .get_pending_async_connection_with_config(self.config.clone())
                })
                .collect()
        });
        let conn = pool
            .get(self.next.fetch_add(1, Ordering::Relaxed) % pool.len().max(1))
            .ok_or_else(|| StoreError::Failed("no connection".into()))?;
        Ok(ScriptRouted {
            conn: conn.clone(),
            first_key: None,
        })
    }

    /// The plain client pub/sub should use now: a cluster's PUBLISH reaches subscribers on
    /// every node, so one node of the list is enough.
    pub fn pubsub_client(&self) -> &redis::Client {
        // `new` refuses an empty list, so the index is always in range.
        &self.nodes[self.pubsub_node.load(Ordering::Relaxed) % self.nodes.len()]
    }

    /// Moves pub/sub to the next node of the list, after the current one failed.
    pub fn pubsub_failed(&self) {
        self.pubsub_node.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes through the first node of the list that answers, starting with the
    /// current pub/sub node (the caller bounds the whole attempt).
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let mut last = StoreError::Failed("no cluster node".into());
        for _ in 0..self.nodes.len() {
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(channel).arg(message);
            let tried = async {
                let mut conn = self
                    .pubsub_client()
                    .get_multiplexed_async_connection()
                    .await?;
                cmd.query_async::<i64>(&mut conn).await
            };
            match tried.await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    last = StoreError::Failed(e.to_string());
                    self.pubsub_failed();
                }
            }
        }
        Err(last)
    }
}

/// A cluster connection for one script call. `Script::invoke_async` sends `EVALSHA`, and on
/// `NOSCRIPT` a keyless `SCRIPT LOAD` that the crate would send to every node: with one
/// master down that fails, and scripts could not run even on the masters still up. So the
/// load goes to the node that owns the script's first key, the one the retry runs on.
pub struct ScriptRouted {
    conn: ClusterConnection,
    first_key: Option<Vec<u8>>,
}

/// Whether `cmd` is the command `words` (case-insensitive), and its arguments.
fn is(cmd: &Cmd, words: &[&str]) -> bool {
    let mut args = cmd.args_iter();
    words.iter().all(|w| match args.next() {
        Some(redis::Arg::Simple(a)) => a.eq_ignore_ascii_case(w.as_bytes()),
        _ => false,
    })
}

/// The first key of an `EVAL`/`EVALSHA`: `EVALSHA sha numkeys key...`.
fn script_key(cmd: &Cmd) -> Option<Vec<u8>> {
    if !is(cmd, &["EVALSHA"]) && !is(cmd, &["EVAL"]) {
        return None;
    }
    let mut args = cmd.args_iter().skip(2);
    let keys = match args.next() {
        Some(redis::Arg::Simple(n)) => std::str::from_utf8(n).ok()?.parse::<usize>().ok()?,
        _ => return None,
    };
    match args.next() {
        Some(redis::Arg::Simple(k)) if keys > 0 => Some(k.to_vec()),
        _ => None,
    }
}

impl ConnectionLike for ScriptRouted {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if let Some(key) = script_key(cmd) {
            self.first_key = Some(key);
        }
        if is(cmd, &["SCRIPT", "LOAD"]) {
            if let Some(key) = &self.first_key {
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                return Box::pin(self.conn.route_command(cmd.clone(), routing));
            }
        }
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str, cluster: Option<Vec<&str>>) -> RedisStore {
        let yaml = match cluster {
            Some(c) => format!("{{ url: {url:?}, cluster: {c:?} }}"),
            None => format!("{{ url: {url:?} }}"),
        };
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    #[test]
    fn single_and_cluster_targets() {
        assert_eq!(
            target(&store("redis://h:1/2", None)),
            Ok(Target::Single("redis://h:1/2".into()))
        );
        assert_eq!(
            target(&store("", Some(vec!["10.0.0.1:7000", "redis://b:7001"]))),
            Ok(Target::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://b:7001".into()
            ]))
        );
        assert_eq!(
            target(&store("redis+cluster://u:p@a:1,b:2/", None)),
            Ok(Target::Cluster(vec![
                "redis://u:p@a:1".into(),
                "redis://u:p@b:2".into()
            ]))
        );
    }

    #[test]
    fn unusable_targets() {
        assert_eq!(
            target(&store("redis://h:1", Some(vec!["a:1"]))),
            Err(TargetError::Both)
        );
        assert_eq!(
            target(&store("", Some(vec![]))),
            Err(TargetError::EmptyCluster)
        );
        assert_eq!(target(&store("", None)), Err(TargetError::Neither));
        assert_eq!(
            target(&store("redis+cluster:///", None)),
            Err(TargetError::EmptyCluster)
        );
        assert!(matches!(
            target(&store("redis+cluster://a:1/0", None)),
            Err(TargetError::BadNode(_))
        ));
        assert!(matches!(
            target(&store("", Some(vec!["a"]))),
            Err(TargetError::BadNode(_))
        ));
    }

    #[test]
    fn script_commands_are_recognised() {
        let mut c = redis::cmd("EVALSHA");
        c.arg("abc").arg(1).arg("k1").arg("v");
        assert_eq!(script_key(&c), Some(b"k1".to_vec()));
        let mut c = redis::cmd("EVAL");
        c.arg("return 1").arg(0).arg("a");
        assert_eq!(script_key(&c), None);
        let mut c = redis::cmd("script");
        c.arg("load").arg("return 1");
        assert!(is(&c, &["SCRIPT", "LOAD"]));
        assert_eq!(script_key(&c), None);
    }
}
