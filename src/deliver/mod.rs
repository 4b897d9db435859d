//! Asynchronous delivery: a `deliver` route writes each request to the store's queue and
//! answers 202 ([`crate::proxy::stage::deliver`]); workers in every replica deliver it to
//! the route's upstream at least once ([`worker`]), retrying with exponential backoff and
//! full jitter, and keep what cannot be delivered as a dead letter for the admin API
//! ([`admin`]). The queue lives in the shared store: Redis Streams ([`redis`]) or, for
//! development, memory ([`memory`], lost on restart).

pub mod admin;
pub mod memory;
pub mod queue;
pub mod redis;
pub mod worker;

use crate::config::integration::DeliverDef;
use crate::config::{PolicySource, Problems};
use crate::upstream::Upstream;
use crate::webhook::verify::Scheme;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A route's compiled `deliver` block.
#[derive(Debug)]
pub struct Deliver {
    pub upstream: Arc<Upstream>,
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Each attempt's limit.
    pub timeout: Duration,
    pub max_queued: u64,
    /// The Standard Webhooks secret every attempt is signed with.
    pub sign: Option<String>,
}

/// Compiles `def` (at `at`, for file:line problems).
pub fn compile(
    src: &PolicySource,
    at: &str,
    def: &DeliverDef,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    p: &mut Problems,
) -> Option<Deliver> {
    let mut bad = |field: &str, msg: String| {
        p.push(src.problem(&format!("{at}.{field}"), msg));
        None::<Deliver>
    };
    let Some(upstream) = upstreams.get(&def.upstream).cloned() else {
        return bad("upstream", format!("unknown upstream {:?}", def.upstream));
    };
    let r = &def.retries;
    if r.attempts == 0 {
        return bad("retries.attempts", "at least 1 attempt".into());
    }
    if r.backoff.0.is_zero() || r.max_backoff.0 < r.backoff.0 {
        return bad(
            "retries.backoff",
            "backoff must be longer than zero and not longer than max_backoff".into(),
        );
    }
    if def.timeout.0.is_zero() {
        return bad(
            "timeout",
            "the attempt timeout must be longer than zero".into(),
        );
    }
    if def.max_queued == 0 {
        return bad("max_queued", "max_queued must be at least 1".into());
    }
    let sign = match &def.sign {
        None => None,
        Some(s) if s.scheme != "standard" => {
            return bad(
                "sign.scheme",
                format!(
                    "deliveries are signed with scheme `standard` (Standard Webhooks), not {:?}",
                    s.scheme
                ),
            )
        }
        Some(s) => {
            let Ok(secret) = std::env::var(&s.secret_env) else {
                return bad(
                    "sign.secret_env",
                    format!("the variable {} is not set", s.secret_env),
                );
            };
            // A secret that cannot sign is refused now, not on the first attempt.
            if let Err(e) = crate::webhook::verify::sign(&Scheme::Standard, &secret, "x", 0, b"") {
                return bad("sign.secret_env", format!("{}: {e}", s.secret_env));
            }
            Some(secret)
        }
    };
    Some(Deliver {
        upstream,
        attempts: r.attempts,
        backoff: r.backoff.0,
        max_backoff: r.max_backoff.0,
        timeout: def.timeout.0,
        max_queued: def.max_queued,
        sign,
    })
}

impl Deliver {
    /// The wait before the next attempt after `failed` failed ones: exponential from
    /// `backoff`, capped at `max_backoff`, with full jitter (a random wait up to that), and
    /// never shorter than the upstream's `Retry-After`.
    pub fn backoff(&self, failed: u32, retry_after: Option<Duration>) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        let cap = self
            .backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        let jittered = cap.mul_f64(rand::random::<f64>());
        jittered.max(retry_after.unwrap_or_default())
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
