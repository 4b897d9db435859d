//! The in-memory delivery queue, for development and single-replica tests: everything is
//! lost when the process ends (the README says so). One lock over small maps; the waits
//! are polls, not held locks.

use super::now_ms;
use super::queue::{Lease, Message, Queue, QueueError, Record, Status};
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Delivered records kept for `GET /deliveries/{id}`, oldest dropped first.
const KEPT_DELIVERED: usize = 10_000;
/// How often a waiting `next` looks again.
const POLL: Duration = Duration::from_millis(10);

struct Entry {
    message: Message,
    record: Record,
    /// While delivering: the worker and when it took the lease (Unix ms).
    lease: Option<(String, u64)>,
    /// When it died (Unix ms), for the newest-first listing.
    died: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Queued messages by when they are due, then by arrival.
    due: BTreeSet<(u64, u64, String)>,
    seq: u64,
    /// Per route: messages not yet delivered or dead, and dead ones.
    depth: HashMap<String, (u64, u64)>,
    delivered: VecDeque<String>,
}

impl State {
    fn schedule(&mut self, id: &str, at: u64) {
        self.seq += 1;
        self.due.insert((at, self.seq, id.to_string()));
    }

    fn depth_mut(&mut self, route: &str) -> &mut (u64, u64) {
        self.depth.entry(route.to_string()).or_default()
    }

    /// The next message due, or a lease older than `claim_after` (ms), leased to `worker`.
    fn take(&mut self, worker: &str, now: u64, claim_after: u64) -> Option<Lease> {
        let due = self.due.first().filter(|(at, _, _)| *at <= now).cloned();
        let id = match due {
            Some(key) => {
                self.due.remove(&key);
                key.2
            }
            None => self
                .entries
                .iter()
                .find(|(_, e)| {
                    e.lease
                        .as_ref()
                        .is_some_and(|(_, at)| now.saturating_sub(*at) >= claim_after)
                })
                .map(|(id, _)| id.clone())?,
        };
        let e = self.entries.get_mut(&id)?;
        e.record.attempts += 1;
        e.record.status = Status::Delivering;
        e.record.next_attempt_at = None;
        e.lease = Some((worker.to_string(), now));
        Some(Lease {
            message: e.message.clone(),
            attempt: e.record.attempts,
            token: format!("{worker}:{now}"),
        })
    }

    /// The entry of `lease`, if this lease still holds it (a claimed one moved on).
    fn held(&mut self, lease: &Lease) -> Option<&mut Entry> {
        let e = self.entries.get_mut(&lease.message.id)?;
        let holds = e
            .lease
            .as_ref()
            .is_some_and(|(w, at)| format!("{w}:{at}") == lease.token);
        holds.then_some(e)
    }
}

#[derive(Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryQueue")
    }
}

impl MemoryQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn accept(&self, msg: &Message, max_queued: u64) -> Result<(), QueueError> {
        let mut s = self.state();
        if s.depth_mut(&msg.route).0 >= max_queued {
            return Err(QueueError::Full);
        }
        s.depth_mut(&msg.route).0 += 1;
        let record = Record {
            id: msg.id.clone(),
            route: msg.route.clone(),
            status: Status::Queued,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
        };
        let entry = Entry {
            message: msg.clone(),
            record,
            lease: None,
            died: 0,
        };
        s.entries.insert(msg.id.clone(), entry);
        s.schedule(&msg.id, msg.accepted_at);
        Ok(())
    }

    async fn take(&self, worker: &str, claim_after: Duration) -> Result<Option<Lease>, QueueError> {
        let claim = claim_after.as_millis() as u64;
        Ok(self.state().take(worker, now_ms(), claim))
    }

    fn poll_interval(&self) -> Duration {
        POLL
    }

    async fn delivered(&self, lease: &Lease) -> Result<(), QueueError> {
        let mut s = self.state();
        let Some(e) = s.held(lease) else {
            return Ok(());
        };
        e.record.status = Status::Delivered;
        e.record.last_error = None;
        e.lease = None;
        let route = e.message.route.clone();
        s.depth_mut(&route).0 = s.depth_mut(&route).0.saturating_sub(1);
        s.delivered.push_back(lease.message.id.clone());
        while s.delivered.len() > KEPT_DELIVERED {
            if let Some(old) = s.delivered.pop_front() {
                s.entries.remove(&old);
            }
        }
        Ok(())
    }

    async fn retry_later(&self, lease: &Lease, at: u64, error: &str) -> Result<(), QueueError> {
        let mut s = self.state();
        let Some(e) = s.held(lease) else {
            return Ok(());
        };
        e.record.status = Status::Queued;
        e.record.last_error = Some(error.to_string());
        e.record.next_attempt_at = Some(at);
        e.lease = None;
        s.schedule(&lease.message.id, at);
        Ok(())
    }

    async fn dead(&self, lease: &Lease, error: &str) -> Result<(), QueueError> {
        let mut s = self.state();
        let Some(e) = s.held(lease) else {
            return Ok(());
        };
        e.record.status = Status::Dead;
        e.record.last_error = Some(error.to_string());
        e.lease = None;
        e.died = now_ms();
        let route = e.message.route.clone();
        let d = s.depth_mut(&route);
        d.0 = d.0.saturating_sub(1);
        d.1 += 1;
        Ok(())
    }

    async fn status(&self, id: &str) -> Result<Option<Record>, QueueError> {
        Ok(self.state().entries.get(id).map(|e| e.record.clone()))
    }

    async fn dead_letters(
        &self,
        route: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, QueueError> {
        let s = self.state();
        let mut dead: Vec<&Entry> = s
            .entries
            .values()
            .filter(|e| e.record.status == Status::Dead)
            .filter(|e| route.is_none_or(|r| e.message.route == r))
            .collect();
        dead.sort_by_key(|e| std::cmp::Reverse(e.died));
        Ok(dead
            .into_iter()
            .take(limit)
            .map(|e| e.record.clone())
            .collect())
    }

    async fn requeue(&self, id: &str) -> Result<bool, QueueError> {
        let mut s = self.state();
        let Some(e) = s
            .entries
            .get_mut(id)
            .filter(|e| e.record.status == Status::Dead)
        else {
            return Ok(false);
        };
        e.record.status = Status::Queued;
        e.record.attempts = 0;
        e.record.next_attempt_at = None;
        let route = e.message.route.clone();
        let d = s.depth_mut(&route);
        d.0 += 1;
        d.1 = d.1.saturating_sub(1);
        s.schedule(id, now_ms());
        Ok(true)
    }

    async fn remove(&self, id: &str) -> Result<bool, QueueError> {
        let mut s = self.state();
        if !s
            .entries
            .get(id)
            .is_some_and(|e| e.record.status == Status::Dead)
        {
            return Ok(false);
        }
        if let Some(e) = s.entries.remove(id) {
            let d = s.depth_mut(&e.message.route);
            d.1 = d.1.saturating_sub(1);
        }
        Ok(true)
    }

    async fn depth(&self, route: &str) -> Result<(u64, u64), QueueError> {
        Ok(self.state().depth.get(route).copied().unwrap_or_default())
    }
}
