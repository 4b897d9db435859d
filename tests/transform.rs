//! JSON transforms through the real `gateway` binary: request bodies transformed after
//! validation (what the upstream parsed, with a matching Content-Length; an invalid body
//! still refused naming the original field; `{consumer.id}` filled in), response bodies of
//! 2xx JSON answers transformed (rename, remove, set, then allow; `*` over nested arrays)
//! while other answers pass through byte for byte, transforms of aggregate answers, a
//! transformed answer compressed for a gzip client, and the configuration errors of
//! `gateway check` (pointers the request schema rules out, template variables the route
//! cannot provide).

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/traffic_upstream.rs"]
mod traffic_upstream;

use common::reply::{send, Reply};
use common::{line_of, ConfigDir, Gateway};
use serde_json::{json, Value};
use std::io::Read;
use traffic_upstream::{
    assert_check_ok, assert_error, assert_problem_on, call, echo, get, key_hash, show, Plan,
    Recorder, Seen,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const ACME_KEY: &str = "test-only-transform-acme-key";

/// The customer the upstream answers, formatted unusually (spaces, key order) so that an
/// answer passed through is told apart from one parsed and written again.
const CUSTOMER: &str = r#"{ "full_name" : "Ann Lee",  "id":7, "email": "ann@example.test",
  "secret": {"token": "s3"},
  "orders": [ {"id": 1, "total": 5.5, "lines": [{"sku": "A"}]}, {"total": 7, "id": 2} ] }"#;

/// What the `customer` route's transform makes of `CUSTOMER`.
fn customer_out() -> Value {
    json!({ "id": 7, "name": "Ann Lee", "orders": [ { "id": 1 }, { "id": 2 } ] })
}

/// `CUSTOMER` with 300 orders, for compression.
fn big_customer() -> Value {
    let orders: Vec<Value> = (0..300)
        .map(|i| json!({ "id": i, "total": i * 3, "note": format!("order number {i}") }))
        .collect();
    json!({ "id": 7, "full_name": "Ann Lee", "secret": "s3", "orders": orders })
}

fn big_out() -> Value {
    let orders: Vec<Value> = (0..300).map(|i| json!({ "id": i })).collect();
    json!({ "id": 7, "name": "Ann Lee", "orders": orders })
}

const LINES: &str = r#"{"orders": [
  {"id": 1, "lines": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]},
  {"id": 2, "lines": [{"sku": "C", "qty": 3}]},
  {"id": 3, "lines": []}
]}"#;

/// The upstream's answers by path (the last segment naming a status where it is a number):
/// - `/customer/N`: `CUSTOMER` as JSON with status N (`/customer/x`: 200);
/// - `/customer/text`: a 200 `text/plain`; `/customer/utf8`: JSON with a charset;
/// - `/lines`, `/ordered`, `/stats`, `/big`: fixed JSON;
/// - anything else: the echo (`got` is the body it parsed).
fn plan(s: &Seen) -> Plan {
    let last = s.path.rsplit('/').next().unwrap_or("");
    if s.path.starts_with("/customer/") {
        return match last {
            "text" => Plan::text(200, "id=7&full_name=Ann+Lee\n"),
            "utf8" => Plan {
                headers: vec![(
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                )],
                ..Plan::json_text(200, CUSTOMER)
            },
            n => {
                let status = n.parse().ok().filter(|s| (200..600).contains(s));
                Plan::json_text(status.unwrap_or(200), CUSTOMER)
            }
        };
    }
    match s.path.as_str() {
        "/lines" => Plan::json_text(200, LINES),
        "/ordered" => Plan::json(&json!({ "a": { "x": 1, "z": 2 }, "keep": true })),
        "/stats" => Plan::json(&json!({ "count": 3, "secret": "s" })),
        "/big" => Plan::json(&big_customer()),
        _ => echo("up", s),
    }
}

const SCHEMA: &str = "{ type: object, required: [customerId], properties: { customerId: { type: integer }, name: { type: string }, internal: { type: object } } }";

fn policy(target: &str) -> String {
    format!(
        r#"upstreams:
  up: {{ targets: ["{target}"] }}
api_keys: {{ header: X-API-Key }}
consumers:
  acme: {{ api_keys: ["{acme}"] }}
routes:
  - name: legacy
    match: {{ path: "/v2/customers/{{id}}", methods: [POST] }}
    auth: [api_key]
    request:
      schema: {SCHEMA}
      transform: {{ rename: {{ /customerId: /id }}, remove: [/internal], set: {{ /source: gateway, /requested_by: "{{consumer.id}}" }} }}
    upstream: up
  - name: both
    match: {{ path: /both, methods: [POST] }}
    auth: none
    request:
      transform: {{ rename: {{ /a: /b }} }}
    response:
      transform: {{ allow: [/got] }}
    upstream: up
  - name: loose
    match: {{ path: /loose, methods: [POST] }}
    auth: none
    request:
      transform: {{ rename: {{ /a: /b }}, set: {{ /n: 1 }} }}
    upstream: up
  - name: customer
    match: {{ path: "/customer/*" }}
    auth: none
    response:
      transform: {{ allow: [/id, /name, /orders/*/id], rename: {{ /full_name: /name }} }}
    upstream: up
  - name: lines
    match: {{ path: /lines }}
    auth: none
    response:
      transform: {{ rename: {{ /orders/*/lines/*/qty: /orders/*/lines/*/quantity }} }}
    upstream: up
  - name: ordered
    match: {{ path: /ordered }}
    auth: none
    response:
      transform:
        rename: {{ /a: /b }}
        remove: [/b/x]
        set: {{ /b/x: again, /added: 1, /dropped: 2 }}
        allow: [/b, /added]
    upstream: up
  - name: tiny-zipped
    match: {{ path: /tiny/* }}
    auth: none
    rewrite: {{ strip_prefix: /tiny }}
    response:
      compression: {{ algorithms: [gzip], min_size: 64KiB }}
      transform: {{ allow: [/id, /name, /orders/*/id], rename: {{ /full_name: /name }} }}
    upstream: up
  - name: zipped
    match: {{ path: /big }}
    auth: none
    response:
      compression: {{ algorithms: [gzip], min_size: 64B }}
      transform: {{ allow: [/id, /name, /orders/*/id], rename: {{ /full_name: /name }} }}
    upstream: up
  - name: agg
    match: {{ path: "/agg/{{id}}", methods: [GET] }}
    auth: none
    response:
      transform: {{ rename: {{ /profile/full_name: /profile/name }}, remove: [/stats/secret], allow: [/profile/id, /profile/name, /stats] }}
    aggregate:
      timeout: 5s
      calls:
        - {{ name: profile, upstream: up, path: "/customer/{{path.id}}", required: true }}
        - {{ name: stats, upstream: up, path: /stats }}
"#,
        acme = key_hash(ACME_KEY),
    )
}

async fn start() -> (Gateway, Recorder) {
    let up = Recorder::start("up", plan).await;
    let config = ConfigDir::new("", &[("p.yaml", &policy(&up.target()))]);
    assert_check_ok(&config);
    (Gateway::start_in(config, &[]).await, up)
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// Asserts a JSON answer of `status` whose body is `want` and whose Content-Length (when
/// there is one) is the body's length.
#[track_caller]
fn assert_json(r: &Reply, status: u16, want: &Value, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", show(r));
    let got: Value = serde_json::from_str(&r.text)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", show(r)));
    assert_eq!(&got, want, "{what}: {}", show(r));
    if let Some(n) = r.number("content-length") {
        assert_eq!(
            n as usize,
            r.text.len(),
            "{what}: Content-Length: {}",
            show(r)
        );
    }
}

/// Asserts the upstream's echo of a request body: what it parsed is `want`, and the
/// Content-Length it received (required unless `chunked_ok`) is the body's length.
#[track_caller]
fn assert_upstream_got(r: &Reply, want: &Value, chunked_ok: bool, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", show(r));
    let echo = r.json();
    assert_eq!(
        &echo["got"], want,
        "{what}: the upstream received {}",
        echo["body"]
    );
    let len = echo["len"].as_u64().unwrap();
    match echo["content_length"].as_str() {
        Some(cl) => assert_eq!(cl, len.to_string(), "{what}: {echo}"),
        None => assert!(chunked_ok, "{what}: no Content-Length: {echo}"),
    }
}

// ---------------------------------------------------------------------------------------
// 1. Request transforms
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_receives_the_transformed_body_after_validation() {
    let (gw, up) = start().await;
    let auth = ("X-API-Key", ACME_KEY);
    let body = r#"{"customerId": 42, "name": "Ann", "internal": {"debug": true}}"#;
    let r = call(&gw, "POST", "/v2/customers/42", &[JSON, auth], body).await;
    let want = json!({ "id": 42, "name": "Ann", "source": "gateway", "requested_by": "acme" });
    assert_upstream_got(&r, &want, false, "transformed");
    assert_eq!(r.json()["headers"]["content-type"], "application/json");
    assert_eq!(r.json()["path"], "/v2/customers/42");

    // A streamed (chunked) body is transformed the same way.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.as_bytes().chunks(7).map(|c| Ok(c.to_vec())).collect();
    let req = traffic_upstream::client()
        .post(gw.url("/v2/customers/42"))
        .header(JSON.0, JSON.1)
        .header(auth.0, auth.1)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
    assert_upstream_got(&send(req).await, &want, true, "chunked");

    // Validation sees the original body: errors name the client's fields.
    let hits = up.count();
    for (bad, field) in [
        (r#"{"customerId": "42", "name": "Ann"}"#, "/customerId"),
        (r#"{"customerId": 42, "name": 5}"#, "/name"),
    ] {
        let r = call(&gw, "POST", "/v2/customers/42", &[JSON, auth], bad).await;
        assert_error(&r, 400, "invalid_request", bad);
        let v = r.json();
        let paths: Vec<&str> = v["error"]["details"]
            .as_array()
            .map(|d| d.iter().filter_map(|d| d["path"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(paths, [field], "{bad}: {}", show(&r));
    }
    let r = call(
        &gw,
        "POST",
        "/v2/customers/42",
        &[JSON, auth],
        r#"{"id": 42}"#,
    )
    .await;
    assert_error(&r, 400, "invalid_request", "missing customerId");
    assert!(r.text.contains("customerId"), "{}", show(&r));
    assert_eq!(up.count(), hits, "refused bodies never reach the upstream");

    // Without a schema the transform still applies.
    let r = call(
        &gw,
        "POST",
        "/loose",
        &[JSON],
        r#"{"a": [1, {"x": null}], "c": "é"}"#,
    )
    .await;
    let want = json!({ "b": [1, { "x": null }], "c": "é", "n": 1 });
    assert_upstream_got(&r, &want, false, "no schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_transforms_both_its_request_and_its_answer() {
    // The transformed request is sent by the gateway itself (relay); its answer gets the
    // route's response transform too.
    let (gw, _up) = start().await;
    let r = call(&gw, "POST", "/both", &[JSON], r#"{"a": 1, "keep": [2]}"#).await;
    assert_json(&r, 200, &json!({ "got": { "b": 1, "keep": [2] } }), "both");
}

// ---------------------------------------------------------------------------------------
// 2. Response transforms
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answers_are_transformed_and_others_pass_through_untouched() {
    let (gw, _up) = start().await;
    for (path, status) in [
        ("/customer/x", 200),
        ("/customer/201", 201),
        ("/customer/utf8", 200),
    ] {
        assert_json(&get(&gw, path, &[]).await, status, &customer_out(), path);
    }
    // Not 2xx, or not JSON: the upstream's bytes exactly.
    for (path, status) in [("/customer/404", 404u16), ("/customer/500", 500)] {
        let r = get(&gw, path, &[]).await;
        assert_eq!(
            (r.status, r.text.as_str()),
            (status, CUSTOMER),
            "{}",
            show(&r)
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let r = get(&gw, "/customer/text", &[]).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (200, "id=7&full_name=Ann+Lee\n")
    );
    assert_eq!(r.header("content-type"), Some("text/plain"), "{}", show(&r));

    // `*` on both sides of a rename, at every element of nested arrays.
    let want = json!({ "orders": [
        { "id": 1, "lines": [ { "sku": "A", "quantity": 1 }, { "sku": "B", "quantity": 2 } ] },
        { "id": 2, "lines": [ { "sku": "C", "quantity": 3 } ] },
        { "id": 3, "lines": [] }
    ] });
    assert_json(&get(&gw, "/lines", &[]).await, 200, &want, "nested arrays");
}

/// rename, then remove (of the renamed field), then set (after the remove), then allow
/// (dropping a field just set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_apply_in_order_rename_remove_set_allow() {
    let (gw, _up) = start().await;
    let want = json!({ "b": { "z": 2, "x": "again" }, "added": 1 });
    assert_json(&get(&gw, "/ordered", &[]).await, 200, &want, "ordered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_answers_are_transformed() {
    let (gw, up) = start().await;
    let r = get(&gw, "/agg/7", &[]).await;
    let want = json!({ "profile": { "id": 7, "name": "Ann Lee" }, "stats": { "count": 3 } });
    assert_json(&r, 200, &want, "aggregate");
    let paths: Vec<String> = up.seen().into_iter().map(|s| s.path).collect();
    assert!(paths.contains(&"/customer/7".to_string()), "{paths:?}");
    assert!(paths.contains(&"/stats".to_string()), "{paths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_client_gets_the_transformed_body_compressed() {
    let (gw, _up) = start().await;
    let r = traffic_upstream::client()
        .get(gw.url("/big"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let encoding = r
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = r.bytes().await.unwrap();
    assert_eq!(encoding.as_deref(), Some("gzip"), "{} bytes", bytes.len());
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_end(&mut plain)
        .expect("a whole gzip stream");
    let got: Value = serde_json::from_slice(&plain).expect("JSON inside");
    assert_eq!(got, big_out());

    // And an identity client the same document.
    assert_json(&get(&gw, "/big", &[]).await, 200, &big_out(), "identity");

    // An answer under the route's min_size is not compressed, transformed or not (the
    // compression decides on the upstream's length, before the edit drops it).
    let r = traffic_upstream::client()
        .get(gw.url("/tiny/customer/x"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-encoding").is_none(),
        "{:?}",
        r.headers()
    );
    let got: Value = r.json().await.unwrap();
    assert_eq!(got, customer_out());
}

// ---------------------------------------------------------------------------------------
// 3. gateway check
// ---------------------------------------------------------------------------------------

/// A policy with upstream `up`, consumer `acme` and one route whose `request` block is
/// `request` (on one line) and whose `auth` is `auth`.
fn check_policy(auth: &str, request: &str) -> String {
    format!(
        "upstreams:\n  up: {{ targets: [\"127.0.0.1:9\"] }}\napi_keys: {{ header: X-API-Key }}\nconsumers:\n  acme: {{ api_keys: [\"{}\"] }}\nroutes:\n  - name: r\n    match: {{ path: /r, methods: [POST] }}\n    auth: {auth}\n    request: {request}\n    upstream: up\n",
        key_hash(ACME_KEY)
    )
}

#[test]
fn check_refuses_impossible_pointers_and_unavailable_variables() {
    let closed = "schema: { type: object, additionalProperties: false, properties: { id: { type: integer }, customer: { type: object, additionalProperties: false, properties: { id: { type: integer } } } } }";
    let bad = [
        (
            "none".to_string(),
            format!("{{ {closed}, transform: {{ rename: {{ /nope: /id }} }} }}"),
            &["/nope"][..],
        ),
        (
            "none".to_string(),
            format!("{{ {closed}, transform: {{ remove: [/customer/nope] }} }}"),
            &["/customer/nope"][..],
        ),
        (
            "none".to_string(),
            "{ transform: { set: { /by: \"{consumer.id}\" } } }".to_string(),
            &["consumer.id"][..],
        ),
    ];
    for (auth, request, words) in bad {
        let text = check_policy(&auth, &request);
        let c = ConfigDir::new("", &[("routes.yaml", &text)]);
        // A pointer is refused where it is written; a variable there or at `auth`.
        let mut lines = vec![line_of(&text, "request:")];
        if words == ["consumer.id"] {
            lines.push(line_of(&text, "auth:"));
        }
        assert_problem_on(&c, "routes.yaml", &lines, words);
    }

    // The controls: pointers the schema allows, an open schema, `{consumer.id}` with
    // authentication.
    for (auth, request) in [
        ("none", format!("{{ {closed}, transform: {{ rename: {{ /customer/id: /id }}, remove: [/customer] }} }}")),
        ("none", format!("{{ schema: {SCHEMA}, transform: {{ rename: {{ /anything: /else }} }} }}")),
        ("[api_key]", "{ transform: { set: { /by: \"{consumer.id}\" } } }".to_string()),
    ] {
        let text = check_policy(auth, &request);
        assert_check_ok(&ConfigDir::new("", &[("routes.yaml", &text)]));
    }
}
