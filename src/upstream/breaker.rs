//! Circuit breakers, one per target: `failures` consecutive failures open it for
//! `open_for`; then a single half-open probe closes it (success) or opens it again.

use crate::metrics;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

const CLOSED: u8 = 0;
const HALF_OPEN: u8 = 1;
const OPEN: u8 = 2;

/// One target's breaker.
#[derive(Debug)]
pub struct Breaker {
    upstream: String,
    target: String,
    threshold: u32,
    open_for: Duration,
    failures: AtomicU32,
    state: AtomicU8,
    /// When an open breaker may let a probe through (ms since `epoch`).
    retry_at: AtomicU64,
    /// Whether the half-open probe is out.
    probing: AtomicBool,
    epoch: Instant,
}

impl Breaker {
    pub fn new(upstream: &str, target: &str, threshold: u32, open_for: Duration) -> Breaker {
        let b = Breaker {
            upstream: upstream.to_string(),
            target: target.to_string(),
            threshold: threshold.max(1),
            open_for,
            failures: AtomicU32::new(0),
            state: AtomicU8::new(CLOSED),
            retry_at: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            epoch: Instant::now(),
        };
        b.publish(CLOSED);
        b
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn publish(&self, state: u8) {
        metrics::CIRCUIT_STATE
            .with_label_values(&[&self.upstream, &self.target])
            .set(i64::from(state));
    }

    fn set(&self, state: u8) {
        if self.state.swap(state, Ordering::AcqRel) != state {
            self.publish(state);
            tracing::warn!(upstream = %self.upstream, target = %self.target,
                state = ["closed", "half-open", "open"][usize::from(state)], "circuit breaker");
        }
    }

    /// Whether a request may go to this target now. An open breaker whose time is up lets
    /// exactly one request through (the half-open probe); this call takes that slot.
    pub fn admit(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            _ if self.now_ms() < self.retry_at.load(Ordering::Acquire) => false,
            _ => {
                let took = self
                    .probing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if took {
                    self.set(HALF_OPEN);
                }
                took
            }
        }
    }

    /// Whether the breaker would let a request through, without taking the probe slot.
    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED
            && (self.now_ms() < self.retry_at.load(Ordering::Acquire)
                || self.probing.load(Ordering::Acquire))
    }

    pub fn success(&self) {
        self.failures.store(0, Ordering::Release);
        if self.state.load(Ordering::Acquire) != CLOSED {
            self.probing.store(false, Ordering::Release);
            self.set(CLOSED);
        }
    }

    pub fn failure(&self) {
        let state = self.state.load(Ordering::Acquire);
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if state == HALF_OPEN || (state == CLOSED && n >= self.threshold) {
            let until = self.now_ms() + self.open_for.as_millis() as u64;
            self.retry_at.store(until, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            self.set(OPEN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let b = Breaker::new("u", "t", 2, Duration::from_millis(30));
        assert!(b.admit());
        b.failure();
        assert!(b.admit(), "one failure is below the threshold");
        b.failure();
        assert!(!b.admit(), "open");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit(), "the probe");
        assert!(!b.admit(), "only one probe at a time");
        b.failure();
        assert!(!b.admit(), "the probe failed: open again");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit());
        b.success();
        assert!(b.admit() && b.admit(), "closed");
    }
}
