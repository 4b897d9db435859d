use super::*;

fn counts(requests: u64, errors: u64, buckets: &[(f64, u64)]) -> Counts {
    Counts {
        requests,
        errors,
        buckets: buckets.to_vec(),
    }
}

#[test]
fn quantiles_interpolate_within_their_bucket() {
    // 100 answers: 50 under 10 ms, 40 between 10 and 50 ms, 10 between 50 and 100 ms.
    let b = [(0.01, 50), (0.05, 90), (0.1, 100), (f64::INFINITY, 100)];
    assert_eq!(quantile(0.5, &b), Some(0.01));
    let p99 = quantile(0.99, &b).unwrap();
    assert!((p99 - 0.095).abs() < 1e-9, "{p99}");
    let p25 = quantile(0.25, &b).unwrap();
    assert!((p25 - 0.005).abs() < 1e-9, "{p25}");
    assert_eq!(quantile(0.5, &[(0.01, 0), (f64::INFINITY, 0)]), None);
    assert_eq!(quantile(0.5, &[]), None);
    // Beyond the last bound: the bound, not infinity.
    assert_eq!(
        quantile(0.99, &[(0.01, 0), (f64::INFINITY, 10)]),
        Some(0.01)
    );
}

#[test]
fn figures_are_the_difference_between_two_readings() {
    let then = counts(100, 5, &[(0.01, 80), (0.1, 100), (f64::INFINITY, 100)]);
    let now = counts(300, 25, &[(0.01, 180), (0.1, 300), (f64::INFINITY, 300)]);
    let f = between(&then, &now, 10.0);
    assert_eq!(f.requests_per_second, 20.0);
    assert_eq!(f.error_ratio, 0.1);
    // In the window: 100 under 10 ms, 100 between 10 and 100 ms.
    assert_eq!(f.p50_ms, Some(10.0));
    let p99 = f.p99_ms.unwrap();
    assert!((p99 - 98.2).abs() < 1e-6, "{p99}");
    let idle = between(&now, &now, 10.0);
    assert_eq!(idle.requests_per_second, 0.0);
    assert_eq!(idle.error_ratio, 0.0);
    assert_eq!(idle.p50_ms, None);
}

#[test]
fn the_window_keeps_a_bounded_number_of_readings() {
    let live = Live::default();
    let start = Instant::now();
    for i in 0..(KEPT as u64 + 5) {
        let mut routes = HashMap::new();
        routes.insert(
            "r".to_string(),
            counts(i * 10, 0, &[(f64::INFINITY, i * 10)]),
        );
        live.push(start + TICK * i as u32, routes);
    }
    assert_eq!(live.readings.lock().unwrap().len(), KEPT);
    let f = &live.figures()["r"];
    // 10 requests per reading, readings 2 s apart.
    assert_eq!(f.requests_per_second, 5.0);
}

#[test]
fn a_route_that_appeared_counts_from_zero() {
    let live = Live::default();
    let start = Instant::now();
    live.push(start, HashMap::new());
    let mut routes = HashMap::new();
    routes.insert("new".to_string(), counts(8, 8, &[(f64::INFINITY, 8)]));
    live.push(start + Duration::from_secs(4), routes);
    let f = &live.figures()["new"];
    assert_eq!(f.requests_per_second, 2.0);
    assert_eq!(f.error_ratio, 1.0);
}
