//! What the integration features do once the answer is known: an idempotency key's answer
//! is captured as it goes to the client and stored when it is complete (or the key is
//! released), a webhook event is remembered once the upstream took it. The capture hooks
//! run for proxied answers and for answers the relay streams; `finish` runs at the end of
//! every request, whatever happened.

use super::ctx::Ctx;
use crate::idempotency::{self, Answer, Entry};
use crate::metrics;
use bytes::Bytes;
use pingora_http::ResponseHeader;
use std::sync::Arc;
use std::time::Duration;

/// The features' state between the request's stages and its end. Boxed: a request that
/// uses neither carries two empty pointers (Pingora moves the context with its futures).
#[derive(Default)]
pub struct After {
    pub idempotency: Option<Box<Pending>>,
    pub webhook: Option<Box<Delivery>>,
}

/// A key this request holds (its lock is in the store), and the answer as captured so far.
pub struct Pending {
    pub route: Arc<str>,
    pub key: String,
    pub lock: Vec<u8>,
    pub fingerprint: [u8; 32],
    pub ttl: Duration,
    pub max_response: usize,
    pub capture: Capture,
}

pub enum Capture {
    /// No answer yet (or one the gateway wrote itself: an error, never stored).
    Waiting,
    Body {
        status: u16,
        headers: Vec<(String, Bytes)>,
        body: Vec<u8>,
    },
    Complete(Answer),
    /// Not stored: a status that asks for another try, or a body over `max_response`.
    Skip,
}

/// A verified webhook event, remembered as delivered once the upstream answers 2xx.
pub struct Delivery {
    /// The event's store keys (its id, and its signature where the id is not signed).
    pub keys: Vec<String>,
    /// The first key holds this request's in-flight marker.
    pub claimed: bool,
    pub ttl: Duration,
}

impl After {
    /// Whether anything is left for the end of the request (checked at the call site, so
    /// that a route without these features makes no call at all).
    pub fn pending(&self) -> bool {
        self.idempotency.is_some() || self.webhook.is_some()
    }
}

/// Response fields that belong to one exchange and are not replayed: hop-by-hop fields
/// (as the proxy drops them), the client's cookie, framing (recomputed), and the request
/// id and rate headers (the replay carries its own).
fn replayable(name: &http::HeaderName) -> bool {
    !(super::forward::hop_by_hop(name)
        || matches!(
            name.as_str(),
            "set-cookie"
                | "connection"
                | "transfer-encoding"
                | "content-length"
                | "x-request-id"
                | "ratelimit-limit"
                | "ratelimit-remaining"
                | "ratelimit-reset"
        ))
}

/// The answer's head, as the client gets it.
pub fn on_response(resp: &ResponseHeader, ctx: &mut Ctx) {
    let Some(p) = &mut ctx.after.idempotency else {
        return;
    };
    let status = resp.status.as_u16();
    p.capture = if idempotency::storable(status) {
        Capture::Body {
            status,
            headers: resp
                .headers
                .iter()
                .filter(|(k, _)| replayable(k))
                .map(|(k, v)| (k.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            body: Vec::new(),
        }
    } else {
        Capture::Skip
    };
}

/// A piece of the answer's body; `end`: it was the last.
pub fn on_body(chunk: Option<&Bytes>, end: bool, ctx: &mut Ctx) {
    let Some(p) = &mut ctx.after.idempotency else {
        return;
    };
    if let Capture::Body { body, .. } = &mut p.capture {
        let len = chunk.map_or(0, |c| c.len());
        if body.len() + len > p.max_response {
            p.capture = Capture::Skip;
            return;
        }
        if let Some(c) = chunk {
            body.extend_from_slice(c);
        }
    }
    if end {
        if let Capture::Body {
            status,
            headers,
            body,
        } = std::mem::replace(&mut p.capture, Capture::Waiting)
        {
            p.capture = Capture::Complete(Answer {
                status,
                headers,
                body: Bytes::from(body),
            });
        }
    }
}

/// At the end of the request. `delivered`: the client got the whole answer, with this
/// status (an answer without a body-end mark is stored only then).
pub async fn finish(ctx: &mut Ctx, status: u16, delivered: bool) {
    let shared = ctx.snapshot.state.clone();
    if let Some(p) = ctx.after.idempotency.take() {
        let p = *p;
        let count = |outcome: &str| {
            metrics::IDEMPOTENCY
                .with_label_values(&[&p.route, outcome])
                .inc();
        };
        let answer = match p.capture {
            Capture::Complete(answer) => Some(answer),
            // The whole answer went through without a body-end mark (no body at all).
            Capture::Body {
                status,
                headers,
                body,
            } if delivered => Some(Answer {
                status,
                headers,
                body: Bytes::from(body),
            }),
            _ => None,
        };
        match answer {
            // A complete answer is stored even when the client went away before it had it
            // all: its retry is what the key is for, and the upstream did the work.
            Some(answer) if answer.status == status => {
                let entry = Entry::Answer {
                    fingerprint: p.fingerprint,
                    answer,
                };
                match shared
                    .kv
                    .replace(&p.key, &p.lock, &entry.encode(), p.ttl)
                    .await
                {
                    Ok(true) => count("stored"),
                    // The lock expired (and maybe another request took the key): this
                    // answer is not the one to replay.
                    Ok(false) => count("not_stored"),
                    Err(e) => {
                        shared.tolerate("idempotency", &e);
                        count("not_stored");
                    }
                }
            }
            _ => {
                // Failed, retryable, too large or cut off: the client may try again.
                if let Err(e) = shared.kv.release(&p.key, &p.lock).await {
                    shared.tolerate("idempotency", &e);
                }
                count("not_stored");
            }
        }
    }
    if let Some(d) = ctx.after.webhook.take() {
        use crate::proxy::stage::webhook::{DELIVERED, IN_FLIGHT};
        // The upstream took the event (even if the sender went away before the answer).
        if (200..300).contains(&status) {
            for key in &d.keys {
                if let Err(e) = shared.kv.put(key, DELIVERED, d.ttl).await {
                    shared.tolerate("webhook", &e);
                    break;
                }
            }
        } else if d.claimed {
            // Not delivered: the sender's redelivery goes through.
            if let Some(first) = d.keys.first() {
                if let Err(e) = shared.kv.release(first, IN_FLIGHT).await {
                    shared.tolerate("webhook", &e);
                }
            }
        }
    }
}
