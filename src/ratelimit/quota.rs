//! Calendar quotas: a consumer's plan may allow so many requests per UTC day or month.
//! A quota counts admitted requests only (a request refused by a rate limit or by another
//! quota counts nowhere), is checked together with the rate limits in the same store
//! call, and resets when the UTC calendar day or month ends: its counter's key carries the
//! period (`2026-12-06`, `2026-12`), so a new period starts from zero and the old counter
//! expires on its own.

use crate::config::policy::QuotaPeriod;
use dashmap::DashMap;
use std::time::{Duration, SystemTime};
use time::{Date, Month, OffsetDateTime};

/// One compiled quota of a plan. Its `name` identifies its counts: `quota:day` or
/// `quota:month`, the same for every plan, so that a consumer's usage is its own whatever
/// plan it is on or however the limit is changed during the period.
#[derive(Debug)]
pub struct Quota {
    pub requests: u64,
    pub per: QuotaPeriod,
    pub name: &'static str,
    /// The counts, with the memory backend (one table per period, shared by every plan
    /// and kept across reloads).
    pub memory: Option<std::sync::Arc<MemQuota>>,
}

impl Quota {
    pub fn name_of(per: QuotaPeriod) -> &'static str {
        match per {
            QuotaPeriod::Day => "quota:day",
            QuotaPeriod::Month => "quota:month",
        }
    }
}

/// The UTC calendar period a moment falls in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// `2026-12-06` or `2026-12`: part of the counter's key.
    pub id: String,
    /// When the next period starts.
    pub resets_at: SystemTime,
}

impl Window {
    pub fn of(per: QuotaPeriod, now: SystemTime) -> Window {
        let today = OffsetDateTime::from(now).date();
        let (id, next) = match per {
            QuotaPeriod::Day => (
                format!(
                    "{:04}-{:02}-{:02}",
                    today.year(),
                    u8::from(today.month()),
                    today.day()
                ),
                today.next_day(),
            ),
            QuotaPeriod::Month => {
                let (y, m) = match today.month() {
                    Month::December => (today.year() + 1, Month::January),
                    m => (today.year(), m.next()),
                };
                (
                    format!("{:04}-{:02}", today.year(), u8::from(today.month())),
                    Date::from_calendar_date(y, m, 1).ok(),
                )
            }
        };
        // Past the calendar's last representable day (year 9999) there is no next
        // period: it resets "now", which no clock reaches.
        let resets_at = next.map_or(now, |d| SystemTime::from(d.midnight().assume_utc()));
        Window { id, resets_at }
    }

    /// Until the reset, from `now` (at least one second: a period ends on a second).
    pub fn until_reset(&self, now: SystemTime) -> Duration {
        self.resets_at
            .duration_since(now)
            .unwrap_or_default()
            .max(Duration::from_secs(1))
    }
}

/// What one quota says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaVerdict {
    pub admitted: bool,
    pub limit: u64,
    /// Counted in this period, this request included when admitted.
    pub used: u64,
    pub until_reset: Duration,
}

impl QuotaVerdict {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }
}

/// The `X-Quota-*` headers: the quota closest to running out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaHeaders {
    pub limit: u64,
    pub remaining: u64,
    /// Whole seconds until the reset.
    pub reset: u64,
}

/// The decision over a request's quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDecision {
    pub admitted: bool,
    /// Refused: whole seconds until the quota that refused resets (the latest, when
    /// several did).
    pub retry_after: u64,
    pub headers: QuotaHeaders,
}

/// Combines the verdicts; `None` without quotas.
pub fn decide(verdicts: &[QuotaVerdict]) -> Option<QuotaDecision> {
    let headers = |v: &QuotaVerdict| QuotaHeaders {
        limit: v.limit,
        remaining: v.remaining(),
        reset: super::ceil_secs(v.until_reset),
    };
    if let Some(v) = verdicts
        .iter()
        .filter(|v| !v.admitted)
        .max_by_key(|v| v.until_reset)
    {
        let h = headers(v);
        return Some(QuotaDecision {
            admitted: false,
            retry_after: h.reset.max(1),
            headers: h,
        });
    }
    let v = verdicts
        .iter()
        .min_by_key(|v| (v.remaining(), std::cmp::Reverse(v.until_reset)))?;
    Some(QuotaDecision {
        admitted: true,
        retry_after: 0,
        headers: headers(v),
    })
}

/// The in-memory counts of one quota: per client key (its hash), the period and count.
/// Keys are the plan's consumers, which the configuration bounds; `max` guards anyway.
#[derive(Debug)]
pub struct MemQuota {
    counts: DashMap<u128, (Box<str>, u64)>,
    max: usize,
}

impl MemQuota {
    pub fn new(max: usize) -> MemQuota {
        MemQuota {
            counts: DashMap::new(),
            max,
        }
    }

    /// Counted so far in `window` for `hash`.
    pub fn used(&self, hash: u128, window: &Window) -> u64 {
        self.counts
            .get(&hash)
            .filter(|c| *c.0 == *window.id)
            .map_or(0, |c| c.1)
    }

    /// Counts one request in `window` (a new period starts from zero).
    pub fn add(&self, hash: u128, window: &Window) {
        if let Some(mut c) = self.counts.get_mut(&hash) {
            if *c.0 == *window.id {
                c.1 += 1;
            } else {
                *c = (window.id.as_str().into(), 1);
            }
            return;
        }
        if self.counts.len() >= self.max {
            // Counts of past periods go first; a full table of current ones is counted
            // as a store error and the request is not remembered.
            self.counts.retain(|_, c| *c.0 == *window.id);
            if self.counts.len() >= self.max {
                crate::metrics::RATE_LIMIT_STORE_ERRORS
                    .with_label_values(&["full"])
                    .inc();
                return;
            }
        }
        self.counts.insert(hash, (window.id.as_str().into(), 1));
    }
}

#[cfg(test)]
#[path = "quota_tests.rs"]
mod tests;
