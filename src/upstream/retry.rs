//! Retries: how many tries, how long between them (exponential backoff with full jitter),
//! which requests may be tried again, and a budget that keeps retries from multiplying an
//! outage.

use crate::config::policy::RetriesDef;
use rand::Rng;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

/// Each request earns this share of a retry (milli-retries): about 20% of requests may be
/// retried once the initial reserve is spent.
const EARN: i64 = 200;
const COST: i64 = 1000;
/// At most this many retries in reserve, and the reserve at start.
const CAP: i64 = 100 * COST;
const START: i64 = 10 * COST;

/// Retries that may be in flight whatever the balance (Envoy's `min_retry_concurrency`): a
/// quiet upstream with one dead target still retries every request that hits it.
const MIN_CONCURRENT: u32 = 3;

/// A token bucket of retries, filled by requests, with a floor of retries in flight.
#[derive(Debug)]
pub struct Budget {
    balance: AtomicI64,
    in_flight: AtomicU32,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            balance: AtomicI64::new(START),
            in_flight: AtomicU32::new(0),
        }
    }
}

impl Budget {
    /// A new request earns a fraction of a retry.
    pub fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some((b + EARN).min(CAP))
            });
    }

    /// Takes one retry: one of the few that may always be in flight, else one from the
    /// balance. A granted retry must be given back with [`Budget::retry_done`].
    pub fn withdraw(&self) -> bool {
        let floor = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MIN_CONCURRENT).then_some(n + 1)
            })
            .is_ok();
        if floor {
            return true;
        }
        let paid = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b >= COST).then_some(b - COST)
            })
            .is_ok();
        if paid {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        paid
    }

    /// A granted retry has ended.
    pub fn retry_done(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

#[derive(Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    pub budget: Budget,
}

impl RetryPolicy {
    pub fn new(def: &RetriesDef) -> RetryPolicy {
        let backoff = def.backoff.map_or(Duration::from_millis(25), |d| d.0);
        RetryPolicy {
            attempts: def.attempts.max(1),
            backoff,
            max_backoff: def.max_backoff.map_or(Duration::from_secs(1), |d| d.0),
            budget: Budget::default(),
        }
    }

    /// Whether a request that has made `tries` tries may make another (and takes it from
    /// the budget if so).
    pub fn another(&self, tries: u32) -> bool {
        tries < self.attempts && self.budget.withdraw()
    }

    /// The wait before try number `next` (2 for the first retry): uniformly random between
    /// zero and `backoff * 2^(next-2)`, at most `max_backoff`.
    pub fn delay(&self, next: u32) -> Duration {
        let exp = next.saturating_sub(2).min(20);
        let ceiling = self.backoff.saturating_mul(1 << exp).min(self.max_backoff);
        if ceiling.is_zero() {
            return Duration::ZERO;
        }
        rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
    }
}

/// Whether a request may be sent twice: an idempotent method, or an `Idempotency-Key`.
pub fn idempotent(method: &http::Method, headers: &http::HeaderMap) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || headers.contains_key("idempotency-key")
}

/// Upstream statuses worth another try elsewhere.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 502..=504)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_limits_retries_to_a_fifth() {
        let b = Budget::default();
        let mut granted = 0;
        // Retries that never end (an outage): the floor of 3 in flight, the reserve of 10,
        // then one retry per 5 requests.
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw() {
                granted += 1;
            }
        }
        assert!((203..=214).contains(&granted), "{granted}");
    }

    #[test]
    fn a_few_retries_in_flight_are_always_allowed() {
        let b = Budget {
            balance: AtomicI64::new(0),
            in_flight: AtomicU32::new(0),
        };
        // Sequential retries, each done before the next: never refused, even broke.
        for _ in 0..1000 {
            assert!(b.withdraw());
            b.retry_done();
        }
        assert!(b.withdraw() && b.withdraw() && b.withdraw());
        assert!(!b.withdraw(), "a fourth at once needs a balance");
        b.retry_done();
        assert!(b.withdraw());
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let p = RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
            budget: Budget::default(),
        };
        for _ in 0..100 {
            assert!(p.delay(2) <= Duration::from_millis(100));
            assert!(p.delay(3) <= Duration::from_millis(200));
            assert!(p.delay(9) <= Duration::from_millis(250));
        }
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| p.delay(3)).collect();
        assert!(distinct.len() > 1, "jitter");
    }

    #[test]
    fn idempotency() {
        let h = http::HeaderMap::new();
        assert!(idempotent(&http::Method::PUT, &h));
        assert!(!idempotent(&http::Method::POST, &h));
        let mut k = http::HeaderMap::new();
        k.insert("idempotency-key", http::HeaderValue::from_static("abc"));
        assert!(idempotent(&http::Method::POST, &k));
    }
}
