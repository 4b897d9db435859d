use super::*;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

// 2026-12-06T15:30:00Z
const DEC_6: u64 = 1_796_571_000;

#[test]
fn days_and_months_end_at_utc_midnight() {
    let w = Window::of(QuotaPeriod::Day, at(DEC_6));
    assert_eq!(w.id, "2026-12-06");
    // 2026-12-07T00:00:00Z
    assert_eq!(w.resets_at, at(1_796_601_600));
    assert_eq!(w.until_reset(at(DEC_6)), Duration::from_secs(30_600));
    let m = Window::of(QuotaPeriod::Month, at(DEC_6));
    assert_eq!(m.id, "2026-12");
    // 2027-01-01T00:00:00Z: December rolls over into the next year.
    assert_eq!(m.resets_at, at(1_798_761_600));
    // The last second of a day is still that day; the next is the next one's.
    let last = Window::of(QuotaPeriod::Day, at(1_796_601_599));
    assert_eq!(last.id, "2026-12-06");
    assert_eq!(last.until_reset(at(1_796_601_599)), Duration::from_secs(1));
    assert_eq!(
        Window::of(QuotaPeriod::Day, at(1_796_601_600)).id,
        "2026-12-07"
    );
    // February of a leap year.
    let feb = Window::of(QuotaPeriod::Month, at(1_709_164_800)); // 2024-02-29T00:00:00Z
    assert_eq!(feb.id, "2024-02");
    assert_eq!(feb.resets_at, at(1_709_251_200)); // 2024-03-01
}

fn v(admitted: bool, limit: u64, used: u64, secs: u64) -> QuotaVerdict {
    QuotaVerdict {
        admitted,
        limit,
        used,
        until_reset: Duration::from_secs(secs),
    }
}

#[test]
fn the_quota_closest_to_running_out_decides() {
    let d = decide(&[v(true, 5000, 12, 3600), v(true, 100_000, 99_990, 86_400)]).unwrap();
    assert!(d.admitted);
    assert_eq!(
        d.headers,
        QuotaHeaders {
            limit: 100_000,
            remaining: 10,
            reset: 86_400
        }
    );
    let d = decide(&[v(false, 5000, 5000, 3600), v(false, 10, 10, 7200)]).unwrap();
    assert!(!d.admitted);
    assert_eq!(d.retry_after, 7200);
    assert_eq!(d.headers.remaining, 0);
    assert_eq!(decide(&[]), None);
}

#[test]
fn memory_counts_start_over_in_a_new_period() {
    let q = MemQuota::new(10);
    let day1 = Window::of(QuotaPeriod::Day, at(DEC_6));
    let day2 = Window::of(QuotaPeriod::Day, at(DEC_6 + 86_400));
    q.add(7, &day1);
    q.add(7, &day1);
    assert_eq!(q.used(7, &day1), 2);
    assert_eq!(q.used(7, &day2), 0);
    q.add(7, &day2);
    assert_eq!(q.used(7, &day2), 1);
    assert_eq!(q.used(8, &day2), 0);
}

#[test]
fn a_full_memory_table_drops_past_periods_first() {
    let q = MemQuota::new(2);
    let day1 = Window::of(QuotaPeriod::Day, at(DEC_6));
    let day2 = Window::of(QuotaPeriod::Day, at(DEC_6 + 86_400));
    q.add(1, &day1);
    q.add(2, &day1);
    q.add(3, &day2);
    assert_eq!(q.used(3, &day2), 1);
    q.add(4, &day2);
    q.add(5, &day2);
    // Full of current counts: not remembered.
    assert_eq!(q.used(5, &day2), 0);
}
