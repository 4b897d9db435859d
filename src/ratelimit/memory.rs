//! The memory backend: one governor keyed rate limiter per limit.
//!
//! Governor decides (its GCRA, its clock, its state snapshots); the state store under it is
//! ours, for three things governor's own stores lack: a *peek* (decide without recording, so
//! several limits can be checked before any is committed), a bound on the number of keys,
//! and keys that are 128-bit hashes of the client key (so a long header value costs no more
//! memory than an IP address).

use super::quota::{MemQuota, Quota as CalendarQuota, QuotaVerdict, Window};
use super::{Limit, Spec, Verdict};
use crate::metrics;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use std::hash::{BuildHasher, Hash, Hasher};
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

/// Memory-backend settings from gateway.yaml.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_keys: usize,
    pub sweep_interval: Duration,
}

/// A key as the limiter sees it: the client key's hash, and whether this call only looks.
/// Equality and hashing ignore `peek`.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    hash: u128,
    peek: bool,
}

impl PartialEq for Probe {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}
impl Eq for Probe {}
impl Hash for Probe {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash.hash(state)
    }
}

/// Per-key theoretical arrival times (nanoseconds since the limiter's start; 0: none yet).
#[derive(Debug)]
pub struct KeyStore {
    map: DashMap<u128, AtomicU64>,
    len: AtomicUsize,
    max: usize,
}

fn tat(state: &AtomicU64) -> Option<Nanos> {
    NonZeroU64::new(state.load(Ordering::Acquire)).map(|n| Nanos::from(n.get()))
}

/// Decides on the current state and records the decision (a compare-and-swap loop, as
/// governor's own in-memory state does).
fn replace<T, E>(
    state: &AtomicU64,
    f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Result<T, E> {
    let mut prev = state.load(Ordering::Acquire);
    loop {
        let (out, next) = f(NonZeroU64::new(prev).map(|n| Nanos::from(n.get())))?;
        match state.compare_exchange_weak(prev, next.as_u64(), Ordering::Release, Ordering::Acquire)
        {
            Ok(_) => return Ok(out),
            Err(actual) => prev = actual,
        }
    }
}

impl StateStore for KeyStore {
    type Key = Probe;

    fn measure_and_replace<T, F, E>(&self, key: &Probe, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(&key.hash) {
            return if key.peek {
                f(tat(&state)).map(|(out, _)| out)
            } else {
                replace(&state, f)
            };
        }
        if key.peek {
            return f(None).map(|(out, _)| out);
        }
        if self.len.load(Ordering::Relaxed) >= self.max {
            // Full: judged as a fresh key, not remembered.
            metrics::RATE_LIMIT_STORE_ERRORS
                .with_label_values(&["full"])
                .inc();
            return f(None).map(|(out, _)| out);
        }
        match self.map.entry(key.hash) {
            Entry::Occupied(e) => replace(e.get(), f),
            Entry::Vacant(e) => {
                let (out, next) = f(None)?;
                self.len.fetch_add(1, Ordering::Relaxed);
                e.insert(AtomicU64::new(next.as_u64()));
                Ok(out)
            }
        }
    }
}

impl ShrinkableKeyedStateStore<Probe> for KeyStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let mut removed = 0;
        self.map.retain(|_, state| {
            let keep = state.load(Ordering::Relaxed) > drop_below.as_u64();
            removed += usize::from(!keep);
            keep
        });
        self.len.fetch_sub(removed, Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        if self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type Limiter = RateLimiter<Probe, KeyStore, DefaultClock, StateInformationMiddleware>;

/// The in-memory state of one limit.
pub struct MemLimit {
    limiter: Limiter,
    interval: Duration,
    burst: u32,
}

impl std::fmt::Debug for MemLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemLimit({} keys)", self.len())
    }
}

impl MemLimit {
    pub fn new(spec: &Spec, max_keys: usize) -> Option<MemLimit> {
        let quota = Quota::with_period(spec.interval())?.allow_burst(NonZeroU32::new(spec.burst)?);
        let store = KeyStore {
            map: DashMap::new(),
            len: AtomicUsize::new(0),
            max: max_keys,
        };
        Some(MemLimit {
            limiter: RateLimiter::<_, _, _, governor::middleware::NoOpMiddleware<_>>::new(
                quota,
                store,
                DefaultClock::default(),
            )
            .with_middleware::<StateInformationMiddleware>(),
            interval: spec.interval(),
            burst: spec.burst,
        })
    }

    fn verdict(&self, hash: u128, peek: bool) -> Verdict {
        match self.limiter.check_key(&Probe { hash, peek }) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Verdict {
                    admitted: true,
                    remaining: u64::from(remaining),
                    wait: self.interval * self.burst.saturating_sub(remaining),
                }
            }
            Err(not_until) => Verdict {
                admitted: false,
                remaining: 0,
                wait: not_until.wait_time_from(self.limiter.clock().now()),
            },
        }
    }

    /// Drops keys whose state is the same as a fresh key's; gives memory back when most of
    /// the table is empty.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// The 128-bit hash of a client key, with a per-process random seed.
pub fn key_hash(key: &str) -> u128 {
    static SEEDS: LazyLock<(std::hash::RandomState, std::hash::RandomState)> =
        LazyLock::new(|| (std::hash::RandomState::new(), std::hash::RandomState::new()));
    let (a, b) = &*SEEDS;
    (u128::from(a.hash_one(key)) << 64) | u128::from(b.hash_one(key))
}

const STRIPES: usize = 256;

/// Requests on the same key are decided one at a time (a short, never-awaiting critical
/// section), so that what the peek saw is what the commit records.
static LOCKS: [Mutex<()>; STRIPES] = [const { Mutex::new(()) }; STRIPES];

fn lock(i: usize) -> MutexGuard<'static, ()> {
    LOCKS[i].lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks every limit, then commits all of them only if every one admits.
pub fn check(items: &[(&Limit, &str)]) -> Vec<Verdict> {
    check_with(items, &[], std::time::SystemTime::now()).0
}

/// Checks every limit and quota, then commits all of them only if every one admits.
pub fn check_with(
    items: &[(&Limit, &str)],
    quotas: &[(&CalendarQuota, &str)],
    now: std::time::SystemTime,
) -> (Vec<Verdict>, Vec<QuotaVerdict>) {
    let keyed: Vec<(&MemLimit, u128)> = items
        .iter()
        .filter_map(|(l, k)| l.memory.as_ref().map(|m| (m, key_hash(k))))
        .collect();
    let counted: Vec<(&CalendarQuota, &MemQuota, u128, Window)> = quotas
        .iter()
        .filter_map(|(q, k)| {
            let m = q.memory.as_deref()?;
            Some((*q, m, key_hash(k), Window::of(q.per, now)))
        })
        .collect();
    let mut stripes: Vec<usize> = keyed
        .iter()
        .map(|(_, h)| h)
        .chain(counted.iter().map(|(_, _, h, _)| h))
        .map(|h| (*h % STRIPES as u128) as usize)
        .collect();
    stripes.sort_unstable();
    stripes.dedup();
    let _guards: Vec<_> = stripes.into_iter().map(lock).collect();
    if let ([(m, h)], []) = (keyed.as_slice(), counted.as_slice()) {
        return (vec![m.verdict(*h, false)], Vec::new());
    }
    let peeked: Vec<Verdict> = keyed.iter().map(|(m, h)| m.verdict(*h, true)).collect();
    let seen: Vec<QuotaVerdict> = counted
        .iter()
        .map(|(q, m, h, w)| {
            let used = m.used(*h, w);
            QuotaVerdict {
                admitted: used < q.requests,
                limit: q.requests,
                used,
                until_reset: w.until_reset(now),
            }
        })
        .collect();
    if !(peeked.iter().all(|v| v.admitted) && seen.iter().all(|v| v.admitted)) {
        return (peeked, seen);
    }
    let verdicts = keyed.iter().map(|(m, h)| m.verdict(*h, false)).collect();
    for (_, m, h, w) in &counted {
        m.add(*h, w);
    }
    let seen = seen
        .into_iter()
        .map(|v| QuotaVerdict {
            used: v.used + 1,
            ..v
        })
        .collect();
    (verdicts, seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, per_ms: u64, burst: u32) -> Limit {
        let spec = Spec {
            requests,
            per: Duration::from_millis(per_ms),
            burst,
        };
        Limit {
            memory: MemLimit::new(&spec, 1000),
            spec,
            name: String::new(),
        }
    }

    #[test]
    fn burst_then_refused_with_wait() {
        let l = limit(5, 60_000, 5);
        let r: Vec<Verdict> = (0..7).map(|_| check(&[(&l, "a")])[0]).collect();
        assert_eq!(r.iter().filter(|v| v.admitted).count(), 5);
        assert_eq!(
            r.iter().map(|v| v.remaining).collect::<Vec<_>>(),
            [4, 3, 2, 1, 0, 0, 0]
        );
        // 12 s per request: the sixth waits about 12 s.
        assert!(r[5].wait > Duration::from_secs(11) && r[5].wait <= Duration::from_secs(12));
        assert!(check(&[(&l, "b")])[0].admitted, "keys are independent");
    }

    #[test]
    fn a_refusal_commits_nothing() {
        let wide = limit(10, 60_000, 10);
        let narrow = limit(1, 60_000, 1);
        assert!(check(&[(&wide, "k"), (&narrow, "k")])
            .iter()
            .all(|v| v.admitted));
        for _ in 0..5 {
            let v = check(&[(&wide, "k"), (&narrow, "k")]);
            assert!(v[0].admitted && !v[1].admitted);
        }
        // Only the first request counted against the wide limit.
        assert_eq!(check(&[(&wide, "k")])[0].remaining, 8);
    }

    #[test]
    fn bounded_and_swept() {
        let spec = Spec {
            requests: 1000,
            per: Duration::from_millis(1),
            burst: 1,
        };
        let l = Limit {
            memory: MemLimit::new(&spec, 3),
            spec,
            name: String::new(),
        };
        for k in ["a", "b", "c", "d", "e"] {
            assert!(check(&[(&l, k)])[0].admitted);
        }
        let m = l.memory.as_ref().unwrap();
        assert_eq!(m.len(), 3, "keys beyond max_keys are not stored");
        std::thread::sleep(Duration::from_millis(5));
        m.sweep();
        assert_eq!(m.len(), 0, "idle keys are evicted");
    }
}
