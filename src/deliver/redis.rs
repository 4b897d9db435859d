//! The delivery queue on Redis Streams with one consumer group, shared by every replica
//! (layout and scripts: [`scripts`]). Every state change is one Lua script on keys of one
//! hash tag, so it is atomic on one server and on a Redis Cluster alike; every call is
//! bounded by the store's timeout.
//!
//! `next` does not block in Redis: the pool's calls are bounded by the store's timeout
//! (often well under a second) and share multiplexed connections, where a blocking
//! `XREADGROUP` would hold up every other call. Instead it runs its (non-blocking) script
//! and, while nothing is due and `wait` is not over, polls again every [`POLL`]: a new
//! message waits at most that long for an idle worker.
//!
//! Leases: a lease's token is its stream entry id, and a lease holds its message while the
//! message is delivering with that token and the lease's attempt number. A worker whose
//! lease was taken over (its entry claimed by another after `claim_after`, which counts
//! an attempt) changes nothing when it finishes, like the memory queue.
//!
//! Durability is Redis's: without `appendonly yes` (or a replica to fail over to), a Redis
//! restart loses the queue.

#[path = "redis_scripts.rs"]
mod scripts;

use super::now_ms;
use super::queue::{Lease, Message, Queue, QueueError, Record, Status};
use crate::state::redis::RedisPool;
use crate::state::StoreError;
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often an idle `next` asks again while its `wait` lasts.
pub const POLL: Duration = Duration::from_millis(100);

/// How long a delivered message's record answers `GET /deliveries/{id}`.
pub const KEEP_DELIVERED: Duration = Duration::from_secs(24 * 3600);

/// Due retries moved back into the stream per `next` (the rest on the following calls).
const PROMOTE_BATCH: u32 = 100;

/// Worker names forgotten per `prune_workers` call (a long list goes over several).
const PRUNE_BATCH: u32 = 100;

/// The consumer group every replica's workers read through.
const GROUP: &str = "workers";

pub struct RedisQueue {
    pool: Arc<RedisPool>,
    /// `{prefix}{deliver}`: the start of every key, and their one hash tag.
    base: String,
    /// Whether the consumer group is known to exist (created on first use, and again if
    /// Redis lost it).
    group_ready: AtomicBool,
    scripts: scripts::Scripts,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("base", &self.base)
            .field("pool", &self.pool)
            .finish()
    }
}

/// One script reply of `next`: entry id, attempt, message JSON.
type Taken = Option<(String, u32, String)>;

impl RedisQueue {
    /// Connects nothing: the pool connects, and the group is created, on first use.
    pub fn new(pool: Arc<RedisPool>, prefix: &str) -> RedisQueue {
        RedisQueue {
            pool,
            base: format!("{prefix}{{deliver}}"),
            group_ready: AtomicBool::new(false),
            scripts: scripts::Scripts::new(),
        }
    }

    fn key(&self, kind: &str) -> String {
        format!("{}:{kind}", self.base)
    }

    fn msg_key(&self, id: &str) -> String {
        format!("{}:msg:{id}", self.base)
    }

    fn depth_key(&self, route: &str) -> String {
        format!("{}:depth:{route}", self.base)
    }

    fn dead_key(&self, route: &str) -> String {
        format!("{}:dead:{route}", self.base)
    }

    async fn ensure_group(&self) -> Result<(), QueueError> {
        if self.group_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut call = self.scripts.ensure_group.prepare_invoke();
        call.key(self.key("stream")).arg(GROUP);
        let _: i64 = self.pool.invoke(&call).await?;
        self.group_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// One non-blocking try of `next`.
    async fn take(&self, worker: &str, claim_after: Duration) -> Result<Taken, StoreError> {
        let mut call = self.scripts.next.prepare_invoke();
        call.key(self.key("stream"))
            .key(self.key("delayed"))
            .arg(&self.base)
            .arg(GROUP)
            .arg(worker)
            .arg(now_ms())
            .arg(u64::try_from(claim_after.as_millis()).unwrap_or(u64::MAX))
            .arg(PROMOTE_BATCH);
        self.pool.invoke(&call).await
    }

    /// `take`, creating the group first, and again once if Redis lost it (a restart
    /// without persistence, a flush): the stream then has no group to read through.
    async fn take_grouped(&self, worker: &str, claim_after: Duration) -> Result<Taken, QueueError> {
        self.ensure_group().await?;
        match self.take(worker, claim_after).await {
            Err(StoreError::Failed(e)) if e.contains("NOGROUP") => {
                self.group_ready.store(false, Ordering::Release);
                self.ensure_group().await?;
                Ok(self.take(worker, claim_after).await?)
            }
            other => Ok(other?),
        }
    }

    /// Runs one of the lease-ending scripts, whose first ARGV are group, token, attempt.
    async fn finish(
        &self,
        script: &redis::Script,
        keys: &[String],
        lease: &Lease,
        more: &[String],
    ) -> Result<(), QueueError> {
        let mut call = script.prepare_invoke();
        for k in keys {
            call.key(k);
        }
        call.arg(GROUP).arg(&lease.token).arg(lease.attempt);
        for a in more {
            call.arg(a);
        }
        // 0: the lease no longer held the message (taken over, or already finished).
        let _: i64 = self.pool.invoke(&call).await?;
        Ok(())
    }
}

fn status_of(s: &str) -> Result<Status, QueueError> {
    match s {
        "queued" => Ok(Status::Queued),
        "delivering" => Ok(Status::Delivering),
        "delivered" => Ok(Status::Delivered),
        "dead" => Ok(Status::Dead),
        other => Err(QueueError::Failed(format!(
            "unknown delivery status {other:?}"
        ))),
    }
}

/// A record from its hash fields `route, status, attempts, err, next_at`; `None` if the
/// hash is gone.
fn record(id: &str, f: &[Option<String>]) -> Result<Option<Record>, QueueError> {
    let field = |i: usize| f.get(i).cloned().flatten();
    let (Some(route), Some(status)) = (field(0), field(1)) else {
        return Ok(None);
    };
    Ok(Some(Record {
        id: id.to_string(),
        route,
        status: status_of(&status)?,
        attempts: field(2).and_then(|a| a.parse().ok()).unwrap_or(0),
        last_error: field(3),
        next_attempt_at: field(4).and_then(|n| n.parse().ok()),
    }))
}

#[async_trait]
impl Queue for RedisQueue {
    async fn accept(&self, msg: &Message, max_queued: u64) -> Result<(), QueueError> {
        let data = serde_json::to_string(msg).map_err(|e| QueueError::Failed(e.to_string()))?;
        let mut call = self.scripts.accept.prepare_invoke();
        call.key(self.msg_key(&msg.id))
            .key(self.key("stream"))
            .key(self.depth_key(&msg.route))
            .arg(&msg.id)
            .arg(&msg.route)
            .arg(data)
            .arg(max_queued);
        let stored: i64 = self.pool.invoke(&call).await?;
        if stored == 0 {
            return Err(QueueError::Full);
        }
        Ok(())
    }

    async fn take(&self, worker: &str, claim_after: Duration) -> Result<Option<Lease>, QueueError> {
        let Some((token, attempt, data)) = self.take_grouped(worker, claim_after).await? else {
            return Ok(None);
        };
        let message: Message = serde_json::from_str(&data)
            .map_err(|e| QueueError::Failed(format!("stored message: {e}")))?;
        Ok(Some(Lease {
            message,
            attempt,
            token,
        }))
    }

    fn poll_interval(&self) -> Duration {
        POLL
    }

    async fn delivered(&self, lease: &Lease) -> Result<(), QueueError> {
        let m = &lease.message;
        let keys = [
            self.msg_key(&m.id),
            self.key("stream"),
            self.depth_key(&m.route),
        ];
        let keep = u64::try_from(KEEP_DELIVERED.as_millis()).unwrap_or(u64::MAX);
        self.finish(&self.scripts.delivered, &keys, lease, &[keep.to_string()])
            .await
    }

    async fn retry_later(&self, lease: &Lease, at: u64, error: &str) -> Result<(), QueueError> {
        let m = &lease.message;
        let keys = [self.msg_key(&m.id), self.key("stream"), self.key("delayed")];
        let more = [at.to_string(), error.to_string(), m.id.clone()];
        self.finish(&self.scripts.retry_later, &keys, lease, &more)
            .await
    }

    async fn dead(&self, lease: &Lease, error: &str) -> Result<(), QueueError> {
        let m = &lease.message;
        let keys = [
            self.msg_key(&m.id),
            self.key("stream"),
            self.depth_key(&m.route),
            self.key("dead"),
            self.dead_key(&m.route),
        ];
        let more = [error.to_string(), now_ms().to_string(), m.id.clone()];
        self.finish(&self.scripts.dead, &keys, lease, &more).await
    }

    async fn status(&self, id: &str) -> Result<Option<Record>, QueueError> {
        let mut call = self.scripts.status.prepare_invoke();
        call.key(self.msg_key(id));
        let fields: Vec<Option<String>> = self.pool.invoke(&call).await?;
        record(id, &fields)
    }

    async fn dead_letters(
        &self,
        route: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, QueueError> {
        // ZREVRANGE 0 -1 would be every one of them.
        if limit == 0 {
            return Ok(Vec::new());
        }
        let set = match route {
            Some(r) => self.dead_key(r),
            None => self.key("dead"),
        };
        let mut call = self.scripts.dead_letters.prepare_invoke();
        call.key(set).arg(&self.base).arg(limit);
        let rows: Vec<Vec<Option<String>>> = self.pool.invoke(&call).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some((Some(id), fields)) = row.split_first() else {
                continue;
            };
            if let Some(r) = record(id, fields)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn requeue(&self, id: &str) -> Result<bool, QueueError> {
        let mut call = self.scripts.requeue.prepare_invoke();
        call.key(self.msg_key(id))
            .key(self.key("stream"))
            .key(self.key("dead"))
            .arg(&self.base)
            .arg(id);
        let n: i64 = self.pool.invoke(&call).await?;
        Ok(n == 1)
    }

    async fn remove(&self, id: &str) -> Result<bool, QueueError> {
        let mut call = self.scripts.remove.prepare_invoke();
        call.key(self.msg_key(id))
            .key(self.key("dead"))
            .arg(&self.base)
            .arg(id);
        let n: i64 = self.pool.invoke(&call).await?;
        Ok(n == 1)
    }

    async fn depth(&self, route: &str) -> Result<(u64, u64), QueueError> {
        let mut call = self.scripts.depth.prepare_invoke();
        call.key(self.depth_key(route)).key(self.dead_key(route));
        let (queued, dead): (i64, i64) = self.pool.invoke(&call).await?;
        Ok((
            u64::try_from(queued).unwrap_or(0),
            u64::try_from(dead).unwrap_or(0),
        ))
    }

    async fn prune_workers(&self, idle: Duration) -> Result<u64, QueueError> {
        let mut call = self.scripts.prune.prepare_invoke();
        call.key(self.key("stream"))
            .arg(GROUP)
            .arg(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
            .arg(PRUNE_BATCH);
        let removed: i64 = self.pool.invoke(&call).await?;
        Ok(u64::try_from(removed).unwrap_or(0))
    }
}
