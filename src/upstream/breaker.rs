//! Circuit breakers, one per target: `failures` consecutive failures open it for
//! `open_for`; then a single half-open probe closes it (success) or opens it again.
//!
//! An upstream of several targets without a `circuit_breaker` block still has passive
//! ones: [`PASSIVE_FAILURES`] connections refused in a row take a target out for
//! [`PASSIVE_OPEN_FOR`] (other failures, such as a 503, do not count for them), so that a
//! dead target stops costing every request that is sent to it a connect attempt.

use crate::metrics;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Consecutive connect failures that take a target out when no breaker is configured.
pub const PASSIVE_FAILURES: u32 = 3;
pub const PASSIVE_OPEN_FOR: Duration = Duration::from_secs(5);

/// What a try at a target came to, for its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// No connection could be made.
    ConnectFailed,
    /// A reset, a timeout or a retryable status.
    Failed,
}

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
    /// The address left the target set: its series is gone and stays gone.
    gone: AtomicBool,
    /// A passive breaker counts only connect failures.
    passive: bool,
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
            gone: AtomicBool::new(false),
            passive: false,
            epoch: Instant::now(),
        };
        b.publish(CLOSED);
        b
    }

    /// The breaker of a target whose upstream configures none: connect failures only.
    pub fn passive(upstream: &str, target: &str) -> Breaker {
        let mut b = Breaker::new(upstream, target, PASSIVE_FAILURES, PASSIVE_OPEN_FOR);
        b.passive = true;
        b
    }

    pub fn is_passive(&self) -> bool {
        self.passive
    }

    /// Feeds a try's verdict.
    pub fn record(&self, v: Verdict) {
        match v {
            Verdict::Ok => self.success(),
            Verdict::ConnectFailed => self.failure(),
            Verdict::Failed if !self.passive => self.failure(),
            // A passive breaker ignores what a live target may answer; a probe that got
            // an answer proves the target reachable.
            Verdict::Failed if self.state.load(Ordering::Acquire) != CLOSED => self.success(),
            Verdict::Failed => {}
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn publish(&self, state: u8) {
        // A request still in flight to a vanished address must not bring its series back.
        if self.gone.load(Ordering::Acquire) {
            return;
        }
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

    /// `closed`, `half_open` or `open`, as `gateway_circuit_state` counts them (for the
    /// console).
    pub fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Acquire) {
            CLOSED => "closed",
            HALF_OPEN => "half_open",
            _ => "open",
        }
    }

    /// Whether the breaker would let a request through, without taking the probe slot.
    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED
            && (self.now_ms() < self.retry_at.load(Ordering::Acquire)
                || self.probing.load(Ordering::Acquire))
    }

    /// The target's address left the upstream's target set: removes its
    /// `gateway_circuit_state` series (a gauge for an address that no longer exists would
    /// stay at its last value forever).
    pub fn forget(&self) {
        self.gone.store(true, Ordering::Release);
        let _ = metrics::CIRCUIT_STATE.remove_label_values(&[&self.upstream, &self.target]);
    }

    /// A try let through ended without a verdict (the client left, the gateway refused the
    /// body, a stale pooled connection): a half-open breaker lets the next request probe,
    /// so that a target never stays half-open with no traffic. If the try was admitted
    /// while the breaker was closed, this may let one extra probe through; never fewer.
    pub fn release(&self) {
        if self.state.load(Ordering::Acquire) != CLOSED {
            self.probing.store(false, Ordering::Release);
        }
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

    #[test]
    fn passive_breakers_count_connect_failures_only() {
        let b = Breaker::passive("u", "t");
        for _ in 0..10 {
            b.record(Verdict::Failed);
        }
        assert!(b.admit(), "answers, even 503s, do not take a target out");
        b.record(Verdict::ConnectFailed);
        b.record(Verdict::ConnectFailed);
        b.record(Verdict::Ok);
        b.record(Verdict::ConnectFailed);
        b.record(Verdict::ConnectFailed);
        assert!(b.admit(), "not consecutive");
        b.record(Verdict::ConnectFailed);
        assert!(!b.admit(), "three refused connections in a row");
        assert!(b.is_open());
    }
}
