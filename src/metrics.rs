//! Prometheus metrics; the names are part of the contract (SPEC.md, "Metrics").

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, TextEncoder,
};
use std::sync::LazyLock;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

macro_rules! metric {
    ($name:ident: $ty:ty = $init:expr) => {
        #[allow(clippy::expect_used)]
        pub static $name: LazyLock<$ty> =
            LazyLock::new(|| $init.expect("metric names are static and registered once"));
    };
}

metric!(REQUESTS: IntCounterVec = register_int_counter_vec!(
    "gateway_requests_total", "Requests answered, by route, method and status.",
    &["route", "method", "status"]));
metric!(REQUEST_DURATION: HistogramVec = register_histogram_vec!(
    "gateway_request_duration_seconds", "Time from request start to the last byte sent.",
    &["route"], LATENCY_BUCKETS.to_vec()));
metric!(UPSTREAM_DURATION: HistogramVec = register_histogram_vec!(
    "gateway_upstream_duration_seconds", "Time from upstream peer selection to the response header.",
    &["upstream"], LATENCY_BUCKETS.to_vec()));
metric!(UPSTREAM_ERRORS: IntCounterVec = register_int_counter_vec!(
    "gateway_upstream_errors_total", "Upstream failures by kind (connect, timeout, reset, status).",
    &["upstream", "kind"]));
metric!(AUTH_FAILURES: IntCounterVec = register_int_counter_vec!(
    "gateway_auth_failures_total", "Refused authentications and authorizations, by route and reason.",
    &["route", "reason"]));
metric!(VALIDATION_FAILURES: IntCounterVec = register_int_counter_vec!(
    "gateway_validation_failures_total", "Requests refused by validation (400, 415), by route.",
    &["route"]));
metric!(RATE_LIMITED: IntCounterVec = register_int_counter_vec!(
    "gateway_rate_limited_total", "Requests refused with 429 by a rate limit, by route.",
    &["route"]));
metric!(RATE_LIMIT_STORE_ERRORS: IntCounterVec = register_int_counter_vec!(
    "gateway_rate_limit_store_errors_total",
    "Rate-limit decisions the store could not make, by kind (timeout, error, full).",
    &["kind"]));
metric!(RATE_LIMIT_KEYS: IntGauge = register_int_gauge!(
    "gateway_rate_limit_keys", "Client keys held by the memory rate-limit store, over all limits."));
metric!(STORE_ERRORS: IntCounterVec = register_int_counter_vec!(
    "gateway_store_errors_total",
    "Shared-store operations that failed, by feature (idempotency, webhook) and kind (timeout, error, full).",
    &["feature", "kind"]));
metric!(STORE_KEYS: IntGauge = register_int_gauge!(
    "gateway_store_keys", "Entries held by the memory store (idempotency keys, webhook ids)."));
metric!(UPSTREAM_REQUESTS: IntCounterVec = register_int_counter_vec!(
    "gateway_upstream_requests_total",
    "Requests sent upstream (first tries), by route and the upstream chosen (a split shows here).",
    &["route", "upstream"]));
metric!(MIRROR_REQUESTS: IntCounterVec = register_int_counter_vec!(
    "gateway_mirror_requests_total",
    "Copies of requests to a route's shadow upstream, by outcome (sent, failed, dropped).",
    &["route", "outcome"]));
metric!(OPEN_STREAMS: IntGaugeVec = register_int_gauge_vec!(
    "gateway_open_streams", "WebSockets and event streams open now, by route.", &["route"]));
metric!(STREAM_DURATION: HistogramVec = register_histogram_vec!(
    "gateway_stream_duration_seconds", "How long WebSockets and event streams stayed open, by route.",
    &["route"], vec![1.0, 10.0, 60.0, 300.0, 1800.0, 7200.0, 86400.0]));
metric!(STREAMS_CLOSED: IntCounterVec = register_int_counter_vec!(
    "gateway_streams_closed_total",
    "WebSockets and event streams that ended, by route and reason (closed, idle, client, upstream, error).",
    &["route", "reason"]));
metric!(STREAM_BYTES: IntCounterVec = register_int_counter_vec!(
    "gateway_stream_bytes_total",
    "Bytes carried by WebSockets and event streams, by route and direction (from_client, to_client).",
    &["route", "direction"]));
metric!(LOG_LINES_DROPPED: prometheus::IntCounter = prometheus::register_int_counter!(
    "gateway_log_lines_dropped_total",
    "Log lines (access lines included) dropped because the writer's buffer was full."));
metric!(DELIVERIES: IntCounterVec = register_int_counter_vec!(
    "gateway_deliveries_total",
    "Delivery attempts' outcomes, by route (delivered, retried, dead).",
    &["route", "outcome"]));
metric!(DELIVERY_QUEUE_DEPTH: IntGaugeVec = register_int_gauge_vec!(
    "gateway_delivery_queue_depth",
    "Messages of a deliver route not yet delivered or dead (the shared queue).",
    &["route"]));
metric!(DELIVERY_DEAD: IntGaugeVec = register_int_gauge_vec!(
    "gateway_delivery_dead",
    "Dead letters of a deliver route (the shared queue).",
    &["route"]));
metric!(CACHE_REQUESTS: IntCounterVec = register_int_counter_vec!(
    "gateway_cache_requests_total",
    "Requests on routes with a cache, by route and result (HIT, MISS, STALE, BYPASS).",
    &["route", "result"]));
metric!(CACHE_ENTRIES: IntGauge = register_int_gauge!(
    "gateway_cache_entries", "Answers held by the response cache."));
metric!(CACHE_BYTES: IntGauge = register_int_gauge!(
    "gateway_cache_bytes", "Bytes held by the response cache (bodies and headers), bounded by cache.max_memory."));
metric!(CACHE_PURGES: IntCounterVec = register_int_counter_vec!(
    "gateway_cache_purged_total",
    "Entries removed by purges, by origin (admin: this replica's admin port; peer: another replica through Redis).",
    &["origin"]));
metric!(IDEMPOTENCY: IntCounterVec = register_int_counter_vec!(
    "gateway_idempotency_total",
    "Requests with an idempotency key, by route and outcome (stored, replayed, in_flight, reused, not_stored).",
    &["route", "outcome"]));
metric!(WEBHOOK_DUPLICATES: IntCounterVec = register_int_counter_vec!(
    "gateway_webhook_duplicates_total", "Webhook deliveries answered as duplicates, by route.",
    &["route"]));
metric!(AGGREGATE_CALLS: IntCounterVec = register_int_counter_vec!(
    "gateway_aggregate_calls_total", "Aggregate (backend-for-frontend) calls by route, call and outcome (ok, error, timeout).",
    &["route", "call", "outcome"]));
metric!(CIRCUIT_STATE: IntGaugeVec = register_int_gauge_vec!(
    "gateway_circuit_state", "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.",
    &["upstream", "target"]));
metric!(UPSTREAM_RETRIES: IntCounterVec = register_int_counter_vec!(
    "gateway_upstream_retries_total", "Tries after the first, by upstream.",
    &["upstream"]));
metric!(JWKS_FETCHES: IntCounterVec = register_int_counter_vec!(
    "gateway_jwks_fetches_total", "JWKS fetches by provider and result (success, failure).",
    &["provider", "result"]));
metric!(CONFIG_RELOADS: IntCounterVec = register_int_counter_vec!(
    "gateway_config_reloads_total", "Policy reloads by result (success, failure).",
    &["result"]));
metric!(DOWNSTREAM_CLOSED: IntCounterVec = register_int_counter_vec!(
    "gateway_downstream_closed_total",
    "Client connections the gateway closed before or between requests, by reason (header_timeout, idle_timeout, header_too_large, bad_request).",
    &["reason"]));
metric!(CONFIG_GENERATION: IntGauge = register_int_gauge!(
    "gateway_config_generation", "Generation of the live policy set."));

/// Makes every metric exist from the start so that scrapes see them before traffic.
pub fn init() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&UPSTREAM_DURATION);
    LazyLock::force(&UPSTREAM_ERRORS);
    LazyLock::force(&CONFIG_GENERATION);
    LazyLock::force(&AUTH_FAILURES);
    LazyLock::force(&JWKS_FETCHES);
    LazyLock::force(&VALIDATION_FAILURES);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&AGGREGATE_CALLS);
    LazyLock::force(&CIRCUIT_STATE);
    LazyLock::force(&UPSTREAM_RETRIES);
    LazyLock::force(&RATE_LIMIT_KEYS);
    LazyLock::force(&STORE_KEYS);
    LazyLock::force(&IDEMPOTENCY);
    LazyLock::force(&CACHE_REQUESTS);
    LazyLock::force(&UPSTREAM_REQUESTS);
    LazyLock::force(&OPEN_STREAMS);
    LazyLock::force(&STREAM_DURATION);
    LazyLock::force(&STREAMS_CLOSED);
    LazyLock::force(&MIRROR_REQUESTS);
    LazyLock::force(&CACHE_ENTRIES);
    LazyLock::force(&CACHE_BYTES);
    for o in ["admin", "peer"] {
        CACHE_PURGES.with_label_values(&[o]);
    }
    LazyLock::force(&WEBHOOK_DUPLICATES);
    LazyLock::force(&STORE_ERRORS);
    for k in ["timeout", "error", "full"] {
        RATE_LIMIT_STORE_ERRORS.with_label_values(&[k]);
    }
    for r in [
        "header_timeout",
        "idle_timeout",
        "header_too_large",
        "bad_request",
    ] {
        DOWNSTREAM_CLOSED.with_label_values(&[r]);
    }
    for r in ["success", "failure"] {
        CONFIG_RELOADS.with_label_values(&[r]);
    }
}

/// The `route` label of requests that matched no route.
pub const UNMATCHED: &str = "_unmatched";

/// The methods that are their own `method` label; any other is `other`, so that clients
/// cannot create series (a method is any token a client invents).
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "other",
];

/// The index of a method's label in [`METHODS`].
pub fn method_index(m: &http::Method) -> usize {
    use http::Method as M;
    match *m {
        M::GET => 0,
        M::HEAD => 1,
        M::POST => 2,
        M::PUT => 3,
        M::PATCH => 4,
        M::DELETE => 5,
        M::OPTIONS => 6,
        M::CONNECT => 7,
        M::TRACE => 8,
        _ => 9,
    }
}

pub fn method_label(m: &http::Method) -> &'static str {
    METHODS[method_index(m)]
}

/// A route's request metrics, resolved when the route is compiled so that a request makes
/// no label lookups: the duration histogram, and the request counters by method and
/// status, created on first use (a status only appears once it has been answered).
pub struct RouteMetrics {
    route: String,
    duration: prometheus::Histogram,
    requests: [std::sync::RwLock<Vec<(u16, prometheus::IntCounter)>>; METHODS.len()],
}

impl RouteMetrics {
    pub fn new(route: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            duration: REQUEST_DURATION.with_label_values(&[route]),
            requests: Default::default(),
        }
    }

    /// Counts one answered request and its duration.
    pub fn record(&self, method: &http::Method, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        let i = method_index(method);
        let Some(slot) = self.requests.get(i) else {
            return;
        };
        if let Ok(known) = slot.read() {
            if let Some((_, c)) = known.iter().find(|(s, _)| *s == status) {
                c.inc();
                return;
            }
        }
        let counter = REQUESTS.with_label_values(&[&self.route, METHODS[i], &status.to_string()]);
        counter.inc();
        if let Ok(mut known) = slot.write() {
            if !known.iter().any(|(s, _)| *s == status) {
                known.push((status, counter));
            }
        }
    }
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish()
    }
}

/// The Prometheus text exposition of every registered metric.
pub fn render() -> String {
    // The log writer counts what it had to drop; the counter catches up when scraped.
    let dropped = crate::logging::dropped();
    let counted = LOG_LINES_DROPPED.get();
    if dropped > counted {
        LOG_LINES_DROPPED.inc_by(dropped - counted);
    }
    TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap_or_else(|e| format!("# error encoding metrics: {e}\n"))
}
