//! The delivery queue's contract: what the accepting request, the workers and the admin
//! API ask of the store. Two stores implement it: [`super::memory`] (development: lost on
//! restart) and [`super::redis`] (Redis Streams with a consumer group, shared by every
//! replica, surviving any of them).
//!
//! A message's life: `accept` (queued) → a worker's `next` (delivering, leased to that
//! worker) → `delivered`, or `retry_later` (queued again, due at a time kept in the store,
//! not in a replica), or `dead` (kept for the admin API) → `requeue` (queued again) or
//! `remove`. A lease whose worker died is taken over by `next` in another worker once it has
//! been held longer than the claim time.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A request accepted for delivery: what is sent upstream on every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The delivery id (also the `Idempotency-Key` and `webhook-id` of every attempt).
    pub id: String,
    /// The route that accepted it (its `deliver` settings apply).
    pub route: String,
    pub method: String,
    /// Path and query after the route's rewrite.
    pub path: String,
    /// Headers to send (names lower-case), after the route's header edits.
    pub headers: Vec<(String, String)>,
    #[serde(with = "body_b64")]
    pub body: Bytes,
    /// Unix milliseconds when it was accepted.
    pub accepted_at: u64,
}

mod body_b64 {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Delivering,
    Delivered,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Delivering => "delivering",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }
}

/// What the admin API shows of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub route: String,
    pub status: Status,
    /// Attempts made so far.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Unix milliseconds of the next attempt, while it waits for one.
    pub next_attempt_at: Option<u64>,
}

/// A message a worker holds for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub message: Message,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// The store's own handle for the lease (a stream entry id, ...).
    pub token: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    /// The route has `max_queued` messages not yet delivered or dead.
    #[error("the delivery queue is full")]
    Full,
    #[error("the queue store did not answer in time")]
    Timeout,
    #[error("the queue store failed: {0}")]
    Failed(String),
}

impl From<crate::state::StoreError> for QueueError {
    fn from(e: crate::state::StoreError) -> QueueError {
        match e {
            crate::state::StoreError::Timeout => QueueError::Timeout,
            other => QueueError::Failed(other.to_string()),
        }
    }
}

/// A delivery queue store, shared by the accepting requests, the workers of this process
/// and the admin API. Every method is bounded by the store's timeout.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// Stores `msg` as queued and due now, unless its route already has `max_queued`
    /// messages not yet delivered or dead (then `Full`). Returns only once the message is
    /// durable in the store (for Redis: written by the master).
    async fn accept(&self, msg: &Message, max_queued: u64) -> Result<(), QueueError>;

    /// The next message due for an attempt, leased to `worker` and marked delivering: a
    /// due retry, a new message, or one leased longer than `claim_after` by a worker that
    /// did not finish it; `None` when there is none right now.
    async fn take(
        &self,
        worker: &str,
        claim_after: std::time::Duration,
    ) -> Result<Option<Lease>, QueueError>;

    /// How often a waiting [`Queue::next`] looks again.
    fn poll_interval(&self) -> std::time::Duration;

    /// As [`Queue::take`], waiting up to `wait` for a message to become due.
    async fn next(
        &self,
        worker: &str,
        wait: std::time::Duration,
        claim_after: std::time::Duration,
    ) -> Result<Option<Lease>, QueueError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            if let Some(lease) = self.take(worker, claim_after).await? {
                return Ok(Some(lease));
            }
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(left.min(self.poll_interval())).await;
        }
    }

    /// The attempt succeeded: the message is delivered and leaves the queue.
    async fn delivered(&self, lease: &Lease) -> Result<(), QueueError>;

    /// The attempt failed and another is due at `at` (Unix ms): queued again, in the store.
    async fn retry_later(&self, lease: &Lease, at: u64, error: &str) -> Result<(), QueueError>;

    /// The attempt failed for good: the message is dead (kept for the admin API).
    async fn dead(&self, lease: &Lease, error: &str) -> Result<(), QueueError>;

    /// A delivery's record, if it is known (delivered ones are kept for a while).
    async fn status(&self, id: &str) -> Result<Option<Record>, QueueError>;

    /// Dead letters, newest first, of one route or all, at most `limit`.
    async fn dead_letters(
        &self,
        route: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, QueueError>;

    /// Puts a dead letter back in the queue, due now, its attempts starting over. `false`
    /// if `id` is not a dead letter.
    async fn requeue(&self, id: &str) -> Result<bool, QueueError>;

    /// Forgets a dead letter. `false` if `id` is not a dead letter.
    async fn remove(&self, id: &str) -> Result<bool, QueueError>;

    /// Messages of `route` not yet delivered or dead, and dead ones (for the gauges).
    async fn depth(&self, route: &str) -> Result<(u64, u64), QueueError>;

    /// Forgets the names of workers idle longer than `idle` that hold no lease (those of
    /// replicas gone or restarted); how many. A store without such names has none.
    async fn prune_workers(&self, idle: std::time::Duration) -> Result<u64, QueueError> {
        let _ = idle;
        Ok(0)
    }
}
