//! `mirror`: copies of a route's requests sent to a shadow upstream off the request path.
//! A copy never delays or fails the client: it is sent from its own task once the
//! request's body is complete, and the shadow's answer is read and discarded. Copies in
//! flight are bounded in number and in body bytes for the whole process; a copy over
//! either bound is dropped (and counted).

use crate::upstream::client::{self, CallError};
use crate::upstream::Upstream;
use bytes::Bytes;
use pingora_http::RequestHeader;
use prometheus::IntCounter;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use tokio::sync::Semaphore;

/// Copies in flight at once, over every route.
const MAX_COPIES: usize = 128;
/// Body bytes held by copies in flight, over every route.
const MAX_BYTES: usize = 32 << 20;
/// A request body larger than this is not copied.
pub const MAX_BODY: usize = 1 << 20;
/// The shadow's answer is read up to this, then dropped with the connection.
const MAX_ANSWER: usize = 1 << 20;

static COPIES: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(MAX_COPIES));
static BYTES: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
pub struct Mirror {
    pub upstream: Arc<Upstream>,
    percent: u32,
    sent: IntCounter,
    failed: IntCounter,
    dropped: IntCounter,
}

impl Mirror {
    pub fn new(route: &str, upstream: Arc<Upstream>, percent: u32) -> Mirror {
        let outcome = |o: &str| crate::metrics::MIRROR_REQUESTS.with_label_values(&[route, o]);
        Mirror {
            upstream,
            percent,
            sent: outcome("sent"),
            failed: outcome("failed"),
            dropped: outcome("dropped"),
        }
    }

    /// Whether this request is copied (drawn at random at the route's percentage).
    pub fn draw(&self) -> bool {
        self.percent >= 100 || rand::random::<u32>() % 100 < self.percent
    }

    /// A copy that could not be made (its body too large).
    pub fn drop_copy(&self) {
        self.dropped.inc();
    }

    /// Sends a copy of `req` with `body` from a task of its own.
    pub fn send(self: &Arc<Self>, req: RequestHeader, body: Option<Bytes>) {
        let len = body.as_ref().map_or(0, Bytes::len);
        let Ok(permit) = COPIES.try_acquire() else {
            self.dropped.inc();
            return;
        };
        if BYTES.fetch_add(len, Ordering::AcqRel) + len > MAX_BYTES {
            BYTES.fetch_sub(len, Ordering::AcqRel);
            self.dropped.inc();
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let limit = me.upstream.longest_answer();
            let call = client::send(&me.upstream, &[], &req, body, MAX_ANSWER);
            let outcome = tokio::time::timeout(limit, call).await;
            BYTES.fetch_sub(len, Ordering::AcqRel);
            match outcome {
                Ok(Ok(_)) | Ok(Err(CallError::TooLarge)) => me.sent.inc(),
                Ok(Err(_)) | Err(_) => me.failed.inc(),
            }
        });
    }
}
