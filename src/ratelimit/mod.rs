//! Step 5 of a request: per-client rate limits.
//!
//! Every limit is a GCRA ("generic cell rate algorithm", a token bucket without a timer): it
//! admits `burst` requests at once, then one more every `per / requests`. The limits that apply
//! to a request (its consumer's plan, keyed by consumer, and its route's, keyed by consumer,
//! client address or a header) are checked together and committed only if all admit, so a
//! refused request consumes nothing. A plan's calendar quotas ([`quota`]) are checked in
//! the same call and counted only when everything admits. State lives in memory ([`memory`], on governor's keyed
//! limiters) or in Redis ([`redis`], one Lua script per request), shared by every replica.

pub mod compile;
pub mod memory;
pub mod quota;
pub mod redis;
pub mod sweep;
pub mod usage;

use crate::config::gateway::OnStoreError;
use crate::config::values::ClientKey;
use std::sync::Arc;
use std::time::Duration;

/// One limit as configured: `requests` per `per`, up to `burst` at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Spec {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
}

impl Spec {
    /// The time one request "costs": GCRA's emission interval.
    pub fn interval(&self) -> Duration {
        self.per / self.requests
    }
}

/// One compiled limit. Its `name` identifies its state: a limit whose name is unchanged
/// keeps its state across reloads, and every replica computes the same name.
#[derive(Debug)]
pub struct Limit {
    pub spec: Spec,
    pub name: String,
    /// The in-memory state (memory backend only).
    pub memory: Option<memory::MemLimit>,
}

/// The limits of one plan or one route, and what they are keyed by.
#[derive(Debug)]
pub struct LimitSet {
    pub key: ClientKey,
    pub limits: Vec<Arc<Limit>>,
    /// A plan's calendar quotas (keyed by consumer, as its limits).
    pub quotas: Vec<Arc<quota::Quota>>,
}

/// What the store said about one request: its rate limits' decision and its quotas'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    pub rate: Option<Decision>,
    pub quota: Option<quota::QuotaDecision>,
}

impl Outcome {
    /// Admitted by every limit and every quota (then all of them counted it).
    pub fn admitted(&self) -> bool {
        self.rate.is_none_or(|d| d.admitted) && self.quota.is_none_or(|q| q.admitted)
    }
}

/// What one limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub admitted: bool,
    /// Requests this limit still admits right now (after this one, when admitted).
    pub remaining: u64,
    /// Admitted: until the limit is full again. Refused: until this request would be admitted.
    pub wait: Duration,
}

/// The `RateLimit-*` headers of a response: the tightest applicable limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u64,
    pub remaining: u64,
    pub reset: u64,
}

/// The decision for one request over all its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    /// Whole seconds, rounded up; 0 when admitted.
    pub retry_after: u64,
    pub headers: RateHeaders,
}

/// Whole seconds, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Combines the verdicts of `items`' limits (same order). Refused: the limit that refuses
/// longest decides `Retry-After` and the headers. Admitted: the limit with the fewest
/// requests left.
pub fn decide(items: &[(&Limit, &str)], verdicts: &[Verdict]) -> Option<Decision> {
    let pairs = items.iter().map(|(l, _)| l).zip(verdicts);
    let refused = pairs
        .clone()
        .filter(|(_, v)| !v.admitted)
        .max_by_key(|(_, v)| v.wait);
    if let Some((limit, v)) = refused {
        let secs = ceil_secs(v.wait).max(1);
        return Some(Decision {
            admitted: false,
            retry_after: secs,
            headers: RateHeaders {
                limit: u64::from(limit.spec.burst),
                remaining: 0,
                reset: secs,
            },
        });
    }
    let (limit, v) = pairs.min_by_key(|(_, v)| (v.remaining, std::cmp::Reverse(v.wait)))?;
    Some(Decision {
        admitted: true,
        retry_after: 0,
        headers: RateHeaders {
            limit: u64::from(limit.spec.burst),
            remaining: v.remaining,
            reset: ceil_secs(v.wait),
        },
    })
}

pub use crate::state::StoreError;

/// Where rate-limit state lives: one per process (gateway.yaml's `rate_limit_store`).
#[derive(Debug)]
pub enum Backend {
    Memory(memory::Settings),
    Redis(Box<redis::RedisBackend>),
}

impl Backend {
    /// What to do when the store cannot answer.
    pub fn on_error(&self) -> OnStoreError {
        match self {
            Backend::Memory(_) => OnStoreError::Allow,
            Backend::Redis(r) => r.on_error,
        }
    }

    /// Checks `items` (a limit and the client key it is applied to) and `quotas` together:
    /// all admit and are counted, or none is.
    pub async fn check(
        &self,
        items: &[(&Limit, &str)],
        quotas: &[(&quota::Quota, &str)],
    ) -> Result<Outcome, StoreError> {
        // The clock only matters to quotas (their calendar period): no read without them.
        let now = if quotas.is_empty() {
            std::time::UNIX_EPOCH
        } else {
            std::time::SystemTime::now()
        };
        let (verdicts, counted) = match self {
            Backend::Memory(_) => memory::check_with(items, quotas, now),
            Backend::Redis(r) => r.check_with(items, quotas, now).await?,
        };
        Ok(Outcome {
            rate: decide(items, &verdicts),
            quota: quota::decide(&counted),
        })
    }

    /// What each quota has counted for `key` in the current period (the admin usage
    /// endpoint): nothing is counted by asking.
    pub async fn usage(
        &self,
        quotas: &[Arc<quota::Quota>],
        key: &str,
    ) -> Result<Vec<(quota::Window, u64)>, StoreError> {
        let now = std::time::SystemTime::now();
        let windows: Vec<quota::Window> = quotas
            .iter()
            .map(|q| quota::Window::of(q.per, now))
            .collect();
        let used = match self {
            Backend::Memory(_) => quotas
                .iter()
                .zip(&windows)
                .map(|(q, w)| {
                    q.memory
                        .as_ref()
                        .map_or(0, |m| m.used(memory::key_hash(key), w))
                })
                .collect(),
            Backend::Redis(r) => r.quota_counts(quotas, &windows, key).await?,
        };
        Ok(windows.into_iter().zip(used).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(burst: u32) -> Limit {
        Limit {
            spec: Spec {
                requests: burst,
                per: Duration::from_secs(1),
                burst,
            },
            name: String::new(),
            memory: None,
        }
    }

    fn v(admitted: bool, remaining: u64, ms: u64) -> Verdict {
        Verdict {
            admitted,
            remaining,
            wait: Duration::from_millis(ms),
        }
    }

    #[test]
    fn tightest_limit_and_longest_refusal() {
        let (a, b) = (limit(20), limit(5));
        let d = decide(
            &[(&a, "k"), (&b, "k")],
            &[v(true, 19, 100), v(true, 2, 600)],
        )
        .unwrap();
        assert!(d.admitted);
        assert_eq!(
            d.headers,
            RateHeaders {
                limit: 5,
                remaining: 2,
                reset: 1
            }
        );
        let d = decide(
            &[(&a, "k"), (&b, "k")],
            &[v(false, 0, 2500), v(false, 0, 100)],
        )
        .unwrap();
        assert!(!d.admitted);
        assert_eq!(d.retry_after, 3);
        assert_eq!(
            d.headers,
            RateHeaders {
                limit: 20,
                remaining: 0,
                reset: 3
            }
        );
        assert_eq!(decide(&[], &[]), None);
    }

    #[test]
    fn rounding() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }
}
