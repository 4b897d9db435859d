//! The upstream tries of one proxied request, as one state machine. Pingora reports the end
//! of a try through several hooks (`fail_to_connect`, `error_while_proxy`,
//! `upstream_response_filter`, and `logging` for a try nobody finished); each turns what it
//! saw into an [`End`] and hands it to [`Tries::end`]. That one place feeds the target's
//! circuit breaker (or releases its half-open probe when the try ended without a verdict),
//! asks [`decide`] whether another try follows, and spends the retry budget.

use crate::upstream::breaker::Verdict;
use crate::upstream::retry::retryable_status;
use crate::upstream::{Addr, Upstream};
use std::time::Instant;

/// How a try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// No connection could be made.
    ConnectFailed,
    /// The upstream failed (reset, timeout, broken answer) before its answer's header.
    Failed,
    /// A pooled connection turned out closed before anything was answered.
    Stale,
    /// The answer's header arrived with this status.
    Answered(u16),
    /// Something other than the upstream ended it: the client went away, the gateway
    /// refused the body, or the answer broke off after it had started.
    Abandoned,
}

/// What follows a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Another try, at another target if one is left.
    Retry,
    /// The same try again on a new connection (not counted as a try).
    Replace,
    /// No more tries: the answer (or the error) goes to the client.
    Stop,
}

/// What a retry decision needs to know besides how the try ended.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// Tries allowed in all (1 without a retry policy).
    pub attempts: u32,
    /// Tries made so far.
    pub tries: u32,
    /// The request may be sent again: idempotent (or with an `Idempotency-Key`), its body
    /// can be replayed, and nothing of an answer went to the client.
    pub replayable: bool,
}

/// The retry policy, pure: which ends are worth another try and when one is allowed. The
/// budget is not consulted here ([`Tries::end`] spends it).
pub fn decide(end: End, f: &Facts) -> Next {
    let more = f.replayable && f.tries < f.attempts;
    match end {
        End::Stale if f.replayable => Next::Replace,
        End::ConnectFailed | End::Failed if more => Next::Retry,
        End::Answered(s) if retryable_status(s) && more => Next::Retry,
        _ => Next::Stop,
    }
}

/// The try state of one request.
#[derive(Debug, Default)]
pub struct Tries {
    /// Tries made (a replaced stale connection is not one).
    pub count: u32,
    /// Targets tried, so that a retry goes elsewhere when it can.
    pub tried: Vec<Addr>,
    /// The current (or last) try's target.
    pub target: Option<Addr>,
    /// When the current try's target was chosen.
    pub started: Option<Instant>,
    /// The status of the answer passed on to the client.
    pub status: Option<u16>,
    /// What was decided after the last try ended.
    pub next: Option<Next>,
    /// The current try's outcome has not been given to its breaker yet.
    pending: bool,
    /// The current try is a retry that holds one of the budget's concurrency slots.
    slot: bool,
}

impl Tries {
    /// Whether the next try replaces a stale connection (and so is not a new try).
    pub fn replacing(&self) -> bool {
        self.next == Some(Next::Replace)
    }

    /// A target was chosen for a try.
    pub fn started(&mut self, target: Addr, new_try: bool) {
        if new_try {
            self.count += 1;
        }
        self.tried.push(target.clone());
        self.target = Some(target);
        self.status = None;
        self.next = None;
        self.pending = true;
        self.started = Some(Instant::now());
    }

    /// The current try ended: the breaker learns of it, and the answer is what follows.
    /// A retry is taken from the upstream's retry budget here, and only here.
    pub fn end(&mut self, upstream: &Upstream, end: End, facts: Facts) -> Next {
        if let Some(target) = self.target.as_ref().filter(|_| self.pending) {
            match end {
                End::ConnectFailed => upstream.record(target, Verdict::ConnectFailed),
                End::Failed => upstream.record(target, Verdict::Failed),
                End::Answered(s) if retryable_status(s) => upstream.record(target, Verdict::Failed),
                End::Answered(_) => upstream.record(target, Verdict::Ok),
                End::Stale | End::Abandoned => upstream.release(target),
            }
        }
        self.pending = false;
        if let (true, Some(policy)) = (std::mem::take(&mut self.slot), &upstream.retry) {
            policy.budget.retry_done();
        }
        let mut next = decide(end, &facts);
        // A retry needs a target that can take it (checked after this try's verdict, which
        // may just have opened the last breaker: a retry with no target left would turn
        // the upstream's answer into a 503), then a retry from the budget.
        if next == Next::Retry && !upstream.available() {
            next = Next::Stop;
        }
        if next == Next::Retry {
            match &upstream.retry {
                Some(policy) if policy.budget.withdraw() => self.slot = true,
                _ => next = Next::Stop,
            }
        }
        if let End::Answered(s) = end {
            if next == Next::Stop {
                self.status = Some(s);
            }
        }
        self.next = Some(next);
        next
    }

    /// The request is over: a try that never got a verdict (the client left while it was
    /// out) releases its target's half-open probe, and a retry its budget slot.
    pub fn finish(&mut self, upstream: &Upstream) {
        if self.pending || self.slot {
            let facts = Facts {
                attempts: 0,
                tries: self.count,
                replayable: false,
            };
            self.end(upstream, End::Abandoned, facts);
        }
    }
}

#[cfg(test)]
#[path = "attempt_tests.rs"]
mod tests;
