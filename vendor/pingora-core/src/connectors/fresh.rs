// gateway patch: this whole file is the gateway's (see vendor/README.md).

//! Connections just returned to the keep-alive pool, watched only once they stay idle.
//!
//! Stock Pingora spawns a watcher task for every connection it puts back in the pool (to
//! notice the server closing it, unexpected data, and the idle timeout), and the next
//! request that takes the connection has to wake that task and wait for it to let go: a
//! spawn, a timer and two extra task switches per request, about 3 % of a plain proxy's
//! CPU. Under load most pooled connections are taken again within microseconds. Here a
//! released connection is only listed; a sweep every [`SWEEP`] gives a watcher to each
//! listed connection still in the pool, with what is left of its idle timeout. A connection
//! taken before the sweep never has one. What is given up: a connection the server closes
//! in its first [`SWEEP`] of idleness is closed on our side up to [`SWEEP`] later (the next
//! take would find it closed without using it, as stock Pingora does). The list is bounded
//! ([`MAX_LISTED`]); past it, and for idle timeouts shorter than two sweeps, a connection is
//! watched at once as before.

use super::{PoolCallback, Stream};
use log::debug;
use pingora_pool::{ConnectionMeta, ConnectionPool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Mutex, Notify, OwnedMutexGuard};

pub(super) type Pool = ConnectionPool<Arc<Mutex<Stream>>>;

/// How often listed connections are looked at.
pub(super) const SWEEP: Duration = Duration::from_millis(250);
/// Most connections listed at once (about 80 bytes each).
pub(super) const MAX_LISTED: usize = 65_536;

/// A connection put in the pool and not watched yet.
pub(super) struct Fresh {
    pub meta: ConnectionMeta,
    pub conn: Weak<Mutex<Stream>>,
    pub notify_close: Arc<Notify>,
    pub watch_use: oneshot::Receiver<bool>,
    pub idle_timeout: Option<Duration>,
    pub since: Instant,
}

/// The listed connections of one connector, and whether its sweep task runs.
#[derive(Default)]
pub(super) struct FreshList {
    listed: StdMutex<Vec<Fresh>>,
    sweeping: AtomicBool,
}

impl FreshList {
    /// Lists `fresh`, starting the sweep on the current runtime the first time. Gives it
    /// back when it must be watched at once: a short idle timeout, or the list is full.
    pub(super) fn list(
        self: &Arc<Self>,
        fresh: Fresh,
        pool: &Arc<Pool>,
        callback: &Option<PoolCallback>,
    ) -> Result<(), Fresh> {
        if fresh.idle_timeout.is_some_and(|t| t < 2 * SWEEP) {
            return Err(fresh);
        }
        {
            let Ok(mut listed) = self.listed.lock() else {
                return Err(fresh);
            };
            if listed.len() >= MAX_LISTED {
                return Err(fresh);
            }
            listed.push(fresh);
        }
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            // Made here, not inside the task: a task dropped before it first runs (its
            // runtime shut down) still drops the mark and so clears the flag.
            let running = Running(Arc::downgrade(self));
            let pool = Arc::downgrade(pool);
            let callback = callback.clone();
            pingora_runtime::current_handle().spawn(sweep(running, pool, callback));
        }
        Ok(())
    }
}

/// Every [`SWEEP`], until the connector is gone: each listed connection that was taken or
/// evicted meanwhile is forgotten, each still idle gets its watcher.
/// If the runtime it runs on shuts down, `running` is dropped with it, and the next release
/// starts a new sweep.
async fn sweep(running: Running, pool: Weak<Pool>, callback: Option<PoolCallback>) {
    let list = running.0.clone();
    let mut batch = Vec::new();
    loop {
        tokio::time::sleep(SWEEP).await;
        let (Some(list), Some(pool)) = (list.upgrade(), pool.upgrade()) else {
            return;
        };
        match list.listed.lock() {
            Ok(mut listed) => std::mem::swap(&mut *listed, &mut batch),
            Err(_) => return,
        }
        for fresh in batch.drain(..) {
            settle(fresh, &pool, &callback);
        }
    }
}

/// Marks the sweep as stopped when its task ends or is dropped.
struct Running(Weak<FreshList>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(list) = self.0.upgrade() {
            list.sweeping.store(false, Ordering::Release);
        }
    }
}

/// One listed connection at a sweep.
fn settle(mut fresh: Fresh, pool: &Arc<Pool>, callback: &Option<PoolCallback>) {
    match fresh.watch_use.try_recv() {
        // Taken by a request.
        Ok(_) => {}
        // Taken, or evicted from the pool (the pool dropped its sender).
        Err(oneshot::error::TryRecvError::Closed) => {
            let evicted = futures::FutureExt::now_or_never(fresh.notify_close.notified());
            if let (Some(()), Some(cb)) = (evicted, callback) {
                cb(fresh.since.elapsed());
            }
        }
        Err(oneshot::error::TryRecvError::Empty) => {
            let Some(conn) = fresh.conn.upgrade() else {
                return;
            };
            // Locked: a request is taking it right now.
            let Ok(guard) = conn.try_lock_owned() else {
                return;
            };
            watch(pool.clone(), guard, fresh, callback.clone());
        }
    }
}

/// Watches an idle connection until it is taken, evicted, closed by the server or idle for
/// its timeout (then it leaves the pool and is closed), as stock Pingora does on release.
pub(super) fn watch(
    pool: Arc<Pool>,
    guard: OwnedMutexGuard<Stream>,
    fresh: Fresh,
    callback: Option<PoolCallback>,
) {
    let Fresh {
        meta,
        notify_close,
        watch_use,
        idle_timeout,
        since,
        ..
    } = fresh;
    let timeout = idle_timeout.map(|t| t.saturating_sub(since.elapsed()));
    if timeout == Some(Duration::ZERO) {
        debug!("idle connection timed out before its watch");
        drop(guard);
        pool.pop_closed(&meta);
        return;
    }
    pingora_runtime::current_handle().spawn(async move {
        let evicted = pool
            .idle_poll(guard, &meta, timeout, notify_close, watch_use)
            .await;
        if let (true, Some(cb)) = (evicted, callback) {
            cb(since.elapsed());
        }
    });
}
