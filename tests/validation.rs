//! Request validation (issue 5) end to end through the real `gateway` binary: JSON Schema
//! from files and inline mappings, drafts, formats, `$ref`, the load errors of
//! `gateway check`, content types (415), not-JSON and schema errors (400 with `details`),
//! byte-for-byte forwarding, body limits on validated routes (413, stopping early),
//! `query_schema`, hostile bodies, the validation metric, and that routes without a schema
//! still stream.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::line_of;

use common::{client, ConfigDir, Gateway, Upstream};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const JSON: Option<&str> = Some("application/json");

/// A policy with one upstream `up` and the given routes.
fn policy(target: &str, routes: &[String]) -> String {
    format!(
        "upstreams:\n  up:\n    targets: [\"{target}\"]\nroutes:\n{}",
        routes.concat()
    )
}

/// A public route to `up`; `request` is the YAML under `request:` (unindented, may be
/// several lines), empty for none.
fn route(name: &str, path: &str, request: &str) -> String {
    let mut r = format!(
        "  - name: {name}\n    match: {{ path: {path} }}\n    auth: none\n    upstream: up\n"
    );
    if !request.is_empty() {
        r.push_str("    request:\n");
        for line in request.lines() {
            r.push_str("      ");
            r.push_str(line);
            r.push('\n');
        }
    }
    r
}

/// Writes `text` to `policies/<rel>` of the configuration, creating directories.
fn write(config: &ConfigDir, rel: &str, text: &str) {
    let p = config.path().join("policies").join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write file");
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// POSTs `body` with an optional Content-Type; returns the status and the JSON answer
/// (`Null` when the answer is not JSON).
async fn post(
    c: &reqwest::Client,
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut rb = c.post(url).body(body);
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    let r = tokio::time::timeout(Duration::from_secs(20), rb.send())
        .await
        .expect("answered in time")
        .expect("request");
    let status = r.status().as_u16();
    let bytes = r.bytes().await.expect("response body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A streamed (chunked, no Content-Length) body made of `body` cut into `size`-byte pieces.
fn chunked(body: &[u8], size: usize) -> reqwest::Body {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(size).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(pieces))
}

/// Asserts a gateway error of `status` and `code` in the contract's shape.
fn assert_error(got: &(u16, Value), status: u16, code: &str) {
    let (s, v) = got;
    assert_eq!(*s, status, "answer: {v}");
    assert_eq!(v["error"]["status"], status, "answer: {v}");
    assert_eq!(v["error"]["code"], code, "answer: {v}");
    assert!(
        v["error"]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "answer: {v}"
    );
}

/// The `details` of a validation error as (path, message).
fn details(v: &Value) -> Vec<(String, String)> {
    v["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details in {v}"))
        .iter()
        .map(|d| {
            (
                d["path"].as_str().expect("path").to_string(),
                d["message"].as_str().expect("message").to_string(),
            )
        })
        .collect()
}

fn paths(v: &Value) -> Vec<String> {
    details(v).into_iter().map(|(p, _)| p).collect()
}

/// Asserts a 400 schema error whose details include `path`, whose message contains `word`.
fn assert_detail(got: &(u16, Value), path: &str, word: &str) {
    assert_error(got, 400, "invalid_request");
    let d = details(&got.1);
    assert!(
        d.iter().any(|(p, m)| p == path && m.contains(word)),
        "expected a detail at {path:?} mentioning {word:?}: {d:?}"
    );
}

/// `gateway_validation_failures_total{route}`, 0 when absent.
async fn validation_failures(gw: &Gateway, route: &str) -> u64 {
    let text = gw.metrics().await;
    let prefix = format!("gateway_validation_failures_total{{route=\"{route}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("counter value"))
}

/// A value (in kB) of `/proc/<pid>/status`, such as `VmRSS`.
fn proc_status_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in:\n{status}"))
}

// ---------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------

const COMMON: &str = r#"{"$defs": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}}}"#;

/// An order: local `$ref`s to `$defs` and a `$ref` into `common.json` next to it.
const ORDER: &str = r##"{
  "type": "object",
  "required": ["customer", "items"],
  "additionalProperties": false,
  "properties": {
    "customer": {"type": "string", "minLength": 1},
    "items": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/item"}}
  },
  "$defs": {
    "item": {
      "type": "object",
      "required": ["sku", "qty"],
      "properties": {"sku": {"$ref": "common.json#/$defs/sku"}, "qty": {"$ref": "#/$defs/qty"}}
    },
    "qty": {"type": "integer", "minimum": 1}
  }
}"##;

/// Draft-07: `dependencies` and the tuple form of `items` work; `prefixItems` and
/// `dependentRequired` are unknown.
const DRAFT7: &str = r#"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "dependencies": {"card": ["billing"]},
  "dependentRequired": {"coupon": ["code"]},
  "properties": {
    "pair": {"type": "array", "items": [{"type": "integer"}, {"type": "string"}], "additionalItems": false},
    "tuple": {"type": "array", "prefixItems": [{"type": "integer"}]}
  }
}"#;

/// The same without `$schema` (2020-12): `prefixItems` and `dependentRequired` work.
const DRAFT2020: &str = r#"{
  "type": "object",
  "dependentRequired": {"coupon": ["code"]},
  "properties": {
    "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": false},
    "tuple": {"type": "array", "prefixItems": [{"type": "integer"}]}
  }
}"#;

const FORMATS: &str = "schema:
  type: object
  properties:
    email: { type: string, format: email }
    id: { type: string, format: uuid }
    at: { type: string, format: date-time }
    site: { type: string, format: uri }";

/// A gateway whose routes cover every way of giving a schema.
async fn schema_gateway(up: &Upstream, extra: &str) -> Gateway {
    let config = ConfigDir::new(extra, &[]);
    write(&config, "schemas/common.json", COMMON);
    write(&config, "schemas/order.json", ORDER);
    write(&config, "schemas/d7.json", DRAFT7);
    write(&config, "schemas/d2020.json", DRAFT2020);
    let p = policy(
        &up.target(),
        &[
            route("file", "/file", "schema: schemas/order.json"),
            route(
                "inline",
                "/inline",
                "schema: { type: object, required: [name], properties: { name: { type: string } } }",
            ),
            route("d7", "/d7", "schema: schemas/d7.json"),
            route("d2020", "/d2020", "schema: schemas/d2020.json"),
            route("formats", "/formats", FORMATS),
            route("list", "/list", "schema: { type: array, items: { type: integer } }"),
            route(
                "exact",
                "/exact",
                "max_body: 64KiB\nschema: { type: object, properties: { pad: { type: string } } }",
            ),
            route("plain", "/plain/*", ""),
        ],
    );
    config.write_policy("p.yaml", &p);
    let (ok, out) = config.check();
    assert!(ok, "gateway check should accept the configuration:\n{out}");
    Gateway::start_in(config, &[]).await
}

// ---------------------------------------------------------------------------------------
// 1. Schema sources, drafts, formats, $ref
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn schema_from_file_with_local_and_cross_file_refs() {
    let up = Upstream::start("u").await;
    let gw = schema_gateway(&up, "").await;
    let c = client();
    let url = gw.url("/file");

    let ok = json!({"customer": "ann", "items": [{"sku": "ABC-1234", "qty": 2}]});
    let (s, v) = post(&c, &url, JSON, ok.to_string()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["path"], "/file");

    let hits = up.hits.load(Ordering::SeqCst);
    // `$ref` into common.json (/items/1/sku), local `$ref` to $defs (/items/3/qty), and
    // additionalProperties at the root.
    let bad = json!({"customer": "ann", "extra": 1, "items": [
        {"sku": "ABC-1234", "qty": 1},
        {"sku": "abc", "qty": 1},
        {"sku": "ABC-1234", "qty": 1},
        {"sku": "ABC-1234", "qty": 0}
    ]});
    let got = post(&c, &url, JSON, bad.to_string()).await;
    assert_detail(&got, "/items/1/sku", "abc");
    assert_detail(&got, "/items/3/qty", "minimum");
    assert_detail(&got, "", "extra");
    assert_eq!(
        got.1["error"]["message"],
        "request body does not match the schema"
    );
    assert_eq!(details(&got.1).len(), 3, "{}", got.1);

    let got = post(&c, &url, JSON, r#"{"items": []}"#).await;
    assert_detail(&got, "", "customer");
    assert_detail(&got, "/items", "");
    // A required property of a nested object, through two `$ref`s.
    let got = post(
        &c,
        &url,
        JSON,
        r#"{"customer":"a","items":[{"sku":"ABC-1234"}]}"#,
    )
    .await;
    assert_detail(&got, "/items/0", "qty");
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        hits,
        "a refused body never reaches the upstream"
    );
}

#[tokio::test]
async fn inline_schema_drafts_and_formats() {
    let up = Upstream::start("u").await;
    let gw = schema_gateway(&up, "").await;
    let c = client();

    // Inline mapping.
    let (s, v) = post(&c, &gw.url("/inline"), JSON, r#"{"name": "x"}"#).await;
    assert_eq!(s, 200, "{v}");
    let got = post(&c, &gw.url("/inline"), JSON, r#"{"name": 5}"#).await;
    assert_detail(&got, "/name", "string");
    let got = post(&c, &gw.url("/inline"), JSON, r#"{}"#).await;
    assert_detail(&got, "", "name");
    let got = post(&c, &gw.url("/inline"), JSON, r#"[]"#).await;
    assert_detail(&got, "", "object");

    // Draft-07 ($schema) against the default 2020-12, on keywords that differ.
    let d7 = gw.url("/d7");
    let d2020 = gw.url("/d2020");
    // `dependencies` (draft-07).
    let got = post(&c, &d7, JSON, r#"{"card": "4111"}"#).await;
    assert_detail(&got, "", "billing");
    assert_eq!(
        post(&c, &d7, JSON, r#"{"card": 1, "billing": 2}"#).await.0,
        200
    );
    // `dependentRequired` exists from 2019-09 on.
    let got = post(&c, &d2020, JSON, r#"{"coupon": "X"}"#).await;
    assert_detail(&got, "", "code");
    assert_eq!(
        post(&c, &d7, JSON, r#"{"coupon": "X"}"#).await.0,
        200,
        "`dependentRequired` is not a draft-07 keyword"
    );
    // `prefixItems` exists in 2020-12 only.
    let got = post(&c, &d2020, JSON, r#"{"tuple": ["x"]}"#).await;
    assert_detail(&got, "/tuple/0", "integer");
    assert_eq!(
        post(&c, &d7, JSON, r#"{"tuple": ["x"]}"#).await.0,
        200,
        "`prefixItems` is not a draft-07 keyword"
    );
    // Tuples: `items: [..]` in draft-07, `prefixItems` in 2020-12, same answers.
    for url in [&d7, &d2020] {
        assert_eq!(post(&c, url, JSON, r#"{"pair": [1, "a"]}"#).await.0, 200);
        let got = post(&c, url, JSON, r#"{"pair": ["a", 1]}"#).await;
        assert_detail(&got, "/pair/0", "integer");
        assert_detail(&got, "/pair/1", "string");
        let got = post(&c, url, JSON, r#"{"pair": [1, "a", 3]}"#).await;
        assert_error(&got, 400, "invalid_request");
        assert!(
            paths(&got.1).iter().any(|p| p.starts_with("/pair")),
            "{}",
            got.1
        );
    }

    // Formats are asserted, not just annotations.
    let url = gw.url("/formats");
    let good = json!({
        "email": "ann.b@example.com",
        "id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "at": "2024-02-29T12:30:00Z",
        "site": "https://example.com/x?y=1"
    });
    let (s, v) = post(&c, &url, JSON, good.to_string()).await;
    assert_eq!(s, 200, "{v}");
    for (field, bad, format) in [
        ("email", "not-an-email", "email"),
        ("id", "0f8fad5b-d9cb-469f-a165-7086772895", "uuid"),
        ("at", "2024-02-30T25:00:00Z", "date-time"),
        ("site", "not a uri", "uri"),
    ] {
        let mut body = good.clone();
        body[field] = json!(bad);
        let got = post(&c, &url, JSON, body.to_string()).await;
        assert_detail(&got, &format!("/{field}"), format);
        assert_eq!(details(&got.1).len(), 1, "{}", got.1);
    }
}

// ---------------------------------------------------------------------------------------
// 1b. Load errors
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn schema_load_errors_are_reported_on_their_line() {
    let config = ConfigDir::new("", &[]);
    write(&config, "secret.json", r#"{"type": "string"}"#);
    write(
        &config,
        "schemas/outside.json",
        r#"{"$ref": "../secret.json"}"#,
    );
    write(
        &config,
        "schemas/remote-http.json",
        r#"{"properties": {"a": {"$ref": "http://127.0.0.1:1/s.json"}}}"#,
    );
    write(&config, "schemas/ok.json", r#"{"type": "object"}"#);
    let text = policy(
        "127.0.0.1:9",
        &[
            route("r-http", "/a", "schema: schemas/remote-http.json"),
            route(
                "r-https",
                "/b",
                "schema: { properties: { a: { \"$ref\": \"https://127.0.0.1:1/s.json\" } } }",
            ),
            route("outside", "/c", "schema: schemas/outside.json"),
            route("invalid", "/d", "schema: { type: 12 }"),
            route("missing", "/e", "schema: schemas/nope.json"),
            route(
                "draft",
                "/g",
                "schema: { \"$schema\": \"https://example.com/my-draft\", type: object }",
            ),
            route("query-bad", "/h", "query_schema: { type: 12 }"),
            route(
                "abs-file",
                "/j",
                "schema: { \"$ref\": \"file:///etc/passwd\" }",
            ),
            // Valid ones next to them are not reported.
            route("fine", "/i", "max_body: 64KiB\nschema: schemas/ok.json"),
        ],
    );
    config.write_policy("p.yaml", &text);
    let (ok, out) = config.check();
    assert!(!ok, "check should fail:\n{out}");
    let file = config.path().join("policies/p.yaml");
    let at = |needle: &str, words: &[&str]| {
        let prefix = format!("{}:{}: ", file.display(), line_of(&text, needle));
        let msg = out
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no problem reported as {prefix:?}; output:\n{out}"));
        for w in words {
            assert!(
                msg.contains(w),
                "{msg:?} should contain {w:?}; output:\n{out}"
            );
        }
    };
    at(
        "remote-http.json",
        &["r-http", "remote $ref", "http://127.0.0.1:1/s.json"],
    );
    at("https://127.0.0.1:1", &["r-https", "remote $ref"]);
    at(
        "outside.json",
        &["outside", "outside the schema's directory"],
    );
    at("      schema: { type: 12 }", &["invalid", "invalid schema"]);
    at("nope.json", &["missing", "cannot read schema"]);
    at("my-draft", &["draft", "unknown $schema"]);
    at(
        "query_schema: { type: 12 }",
        &["query-bad", "invalid schema"],
    );
    at(
        "file:///etc/passwd",
        &["abs-file", "outside the schema's directory"],
    );
    assert!(
        out.lines().any(|l| l.trim() == "8 problem(s) found"),
        "exactly the eight broken routes are reported:\n{out}"
    );
    assert!(!out.contains("\"fine\""), "{out}");

    // `gateway run` refuses to start on the same configuration.
    let status = std::process::Command::new(common::bin())
        .args(["run", "-c"])
        .arg(config.gateway_yaml())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run gateway");
    assert!(!status.success());
}

// ---------------------------------------------------------------------------------------
// 2. Content types
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn content_type_must_be_json() {
    let up = Upstream::start("u").await;
    let gw = schema_gateway(&up, "").await;
    let c = client();
    let url = gw.url("/inline");
    let body = r#"{"name": "x"}"#;
    let hits = up.hits.load(Ordering::SeqCst);
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
        Some("multipart/form-data; boundary=x"),
    ] {
        let got = post(&c, &url, ct, body).await;
        assert_error(&got, 415, "unsupported_media_type");
        assert!(got.1["error"].get("details").is_none(), "{}", got.1);
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), hits);
    // The same keep-alive client goes on working after a refused (unread) body.
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.api+json",
        "application/merge-patch+json; charset=UTF-8",
    ] {
        let (s, v) = post(&c, &url, Some(ct), body).await;
        assert_eq!(s, 200, "{ct}: {v}");
        assert_eq!(v["headers"]["content-type"], ct);
    }
    // A route without a schema does not care.
    let (s, _) = post(&c, &gw.url("/plain/x"), Some("text/plain"), "hello").await;
    assert_eq!(s, 200);
}

// ---------------------------------------------------------------------------------------
// 3. Not JSON, details
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn not_json_and_schema_details() {
    let up = Upstream::start("u").await;
    let gw = schema_gateway(&up, "").await;
    let c = client();
    let url = gw.url("/inline");

    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .header("x-request-id", "bad-json-1")
        .body("{\n  \"name\": \"x\",\n  \"n\": tRue\n}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-request-id"], "bad-json-1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_request");
    assert_eq!(v["error"]["request_id"], "bad-json-1");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("not valid JSON"), "{msg}");
    assert!(msg.contains("at line 3 column 9"), "{msg}");
    assert!(v["error"].get("details").is_none(), "{v}");

    for (body, pos) in [
        (&b"{\"name\": \"x\"} trailing"[..], "line 1 column 15"),
        (b"", "line 1 column 0"),
        (b"{\"name\": \"x\",}", "trailing comma at line 1 column 14"),
        (b"\n\n    [1, 2", "line 3 column 9"),
    ] {
        let got = post(&c, &url, JSON, body.to_vec()).await;
        assert_error(&got, 400, "invalid_request");
        let msg = got.1["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(pos),
            "{:?}: {msg}",
            String::from_utf8_lossy(body)
        );
    }

    // More errors than fit: exactly 20 details, each a distinct JSON Pointer into the array.
    let many = format!("[{}]", vec!["\"x\""; 100].join(","));
    let got = post(&c, &gw.url("/list"), JSON, many).await;
    assert_error(&got, 400, "invalid_request");
    let ps = paths(&got.1);
    assert_eq!(ps.len(), 20, "{ps:?}");
    let distinct: std::collections::HashSet<&String> = ps.iter().collect();
    assert_eq!(distinct.len(), 20, "{ps:?}");
    for p in &ps {
        let i: usize = p
            .strip_prefix('/')
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("not an array pointer: {p:?}"));
        assert!(i < 100);
    }
    // Fewer than 20: all of them.
    let got = post(&c, &gw.url("/list"), JSON, r#"[1, "a", 2, true, null]"#).await;
    let mut ps = paths(&got.1);
    ps.sort();
    assert_eq!(ps, ["/1", "/3", "/4"]);

    // JSON Pointer escaping of awkward keys (`/` → `~1`, `~` → `~0`).
    let got = post(
        &c,
        &gw.url("/file"),
        JSON,
        r#"{"customer": "a", "items": [{"sku": "ABC-1234", "qty": 1}], "a/b~c": 1}"#,
    )
    .await;
    assert_detail(&got, "", "a/b~c");
    let got = post(
        &c,
        &gw.url("/d2020"),
        JSON,
        r#"{"tuple": ["x"], "pair": [1, "a"]}"#,
    )
    .await;
    assert_eq!(paths(&got.1), ["/tuple/0"]);

    // Messages are bounded even for a huge offending value.
    let long = format!("[\"{}\"]", "y".repeat(30_000));
    let got = post(&c, &gw.url("/list"), JSON, long).await;
    let d = details(&got.1);
    assert_eq!(d.len(), 1);
    assert!(
        d[0].1.chars().count() <= 201,
        "message not bounded: {} chars",
        d[0].1.len()
    );
}

// ---------------------------------------------------------------------------------------
// 4. Forwarding byte for byte
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn valid_bodies_are_forwarded_byte_for_byte() {
    let up = Upstream::start("u").await;
    let gw = schema_gateway(&up, "").await;
    let c = client();
    let url = gw.url("/file");
    // Odd but valid: leading/trailing whitespace, CR LF and tabs, keys out of order, unicode
    // escapes (a surrogate pair), raw UTF-8, escaped quotes and slashes, an exponent.
    let body = "\r\n\t { \"items\" :[ {\"qty\":1e0 ,\"sku\" : \"ABC-1234\"}\n ,{ \"sku\":\"XYZ-0001\",\"qty\":  3}],\n  \"customer\" : \"J\\u00fcrgen \\ud83d\\ude00 \\\"q\\\" \\/ Zo\u{eb} \u{1F600}\"   } \n\n";
    // `1e0` is an integer for JSON Schema (a number with no fractional part).
    let (s, v2) = post(&c, &url, JSON, body).await;
    assert_eq!(s, 200, "{v2}");
    assert_eq!(v2["body_len"], body.len());
    assert_eq!(v2["body_sha256"], sha256(body.as_bytes()));
    assert_eq!(v2["headers"]["content-length"], body.len().to_string());

    // Chunked, in 7-byte pieces that cut escapes and multi-byte characters.
    let (s, v) = post(&c, &url, JSON, chunked(body.as_bytes(), 7)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["body_len"], body.len());
    assert_eq!(v["body_sha256"], sha256(body.as_bytes()));
    // One byte at a time.
    let (s, v) = post(&c, &url, JSON, chunked(body.as_bytes(), 1)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["body_sha256"], sha256(body.as_bytes()));

    // Exactly 64 KiB on a route whose max_body is 64 KiB.
    let head = b"{\"pad\":\"";
    let tail = b"\"}";
    let mut exact = head.to_vec();
    exact.resize(65536 - tail.len(), b'p');
    exact.extend_from_slice(tail);
    assert_eq!(exact.len(), 65536);
    let (s, v) = post(&c, &gw.url("/exact"), JSON, exact.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["body_len"], 65536);
    assert_eq!(v["body_sha256"], sha256(&exact));
    for size in [1000, 65536, 4096] {
        let (s, v) = post(&c, &gw.url("/exact"), JSON, chunked(&exact, size)).await;
        assert_eq!(s, 200, "chunks of {size}: {v}");
        assert_eq!(v["body_len"], 65536);
        assert_eq!(v["body_sha256"], sha256(&exact));
    }
    // One byte more is refused, with and without Content-Length.
    let mut over = exact.clone();
    over.insert(0, b' ');
    assert_error(
        &post(&c, &gw.url("/exact"), JSON, over.clone()).await,
        413,
        "body_too_large",
    );
    assert_error(
        &post(&c, &gw.url("/exact"), JSON, chunked(&over, 4096)).await,
        413,
        "body_too_large",
    );
    // Without an explicit max_body, a schema route's limit is the global 1MiB. Bodies
    // past Pingora's 64 KiB retry buffer are sent by the gateway itself, byte for byte,
    // with Content-Length and chunked alike.
    let mut big = br#"{"customer":"a","items":[{"sku":"ABC-1234","qty":1}]}"#.to_vec();
    big.resize(65537, b' ');
    let (s, v) = post(&c, &url, JSON, big.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["body_len"], 65537);
    assert_eq!(v["body_sha256"], sha256(&big));
    big.resize(1 << 20, b' ');
    let (s, v) = post(&c, &url, JSON, chunked(&big, 50_000)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["body_sha256"], sha256(&big));
    assert_eq!(v["headers"]["content-length"], big.len().to_string());
    big.push(b' ');
    assert_error(&post(&c, &url, JSON, big).await, 413, "body_too_large");
}

// ---------------------------------------------------------------------------------------
// 5. Limits on validated routes
// ---------------------------------------------------------------------------------------

/// A valid JSON body of exactly `n` bytes.
fn fits(n: usize) -> Vec<u8> {
    let mut b = b"[1]".to_vec();
    b.resize(n, b' ');
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits_on_schema_routes_stop_reading_early() {
    let up = Upstream::start("u").await;
    let p = policy(
        &up.target(),
        &[
            route("small", "/small", "max_body: 1KiB\nschema: {}"),
            route("dflt", "/dflt", "schema: {}"),
        ],
    );
    let gw = Gateway::start("limits: { max_body: 2KiB }\n", &[("p.yaml", &p)]).await;
    let c = client();
    let url = gw.url("/small");
    assert_eq!(post(&c, &url, JSON, fits(1024)).await.0, 200);
    assert_eq!(post(&c, &url, JSON, chunked(&fits(1024), 100)).await.0, 200);
    let hits = up.hits.load(Ordering::SeqCst);
    assert_error(
        &post(&c, &url, JSON, fits(1025)).await,
        413,
        "body_too_large",
    );
    assert_error(
        &post(&c, &url, JSON, chunked(&fits(2048), 512)).await,
        413,
        "body_too_large",
    );
    // The global limit (2KiB, below 64KiB) is a schema route's default.
    let d = gw.url("/dflt");
    assert_eq!(post(&c, &d, JSON, fits(2048)).await.0, 200);
    let hits_after_ok = up.hits.load(Ordering::SeqCst);
    assert_error(&post(&c, &d, JSON, fits(2049)).await, 413, "body_too_large");
    assert_error(
        &post(&c, &d, JSON, chunked(&fits(4096), 1000)).await,
        413,
        "body_too_large",
    );

    // Reading stops as soon as the limit is passed: the rest of the body is produced only
    // after the client has the 413, so a gateway that waited for the whole body would
    // never answer.
    for with_length in [false, true] {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stream = futures::stream::unfold((0u8, Some(rx)), |(state, rx)| async move {
            match state {
                0 => Some((Ok::<_, std::io::Error>(fits(1500)), (1, rx))),
                1 => {
                    if let Some(rx) = rx {
                        let _ = rx.await;
                    }
                    Some((Ok(vec![b' '; 1500]), (2, None)))
                }
                _ => None,
            }
        });
        let mut rb = c
            .post(&url)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream));
        if with_length {
            // Over the limit by its Content-Length: refused before any byte is read.
            rb = rb.header("content-length", "3000");
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(10), rb.send()).await;
        let _ = tx.send(());
        let r = answer
            .expect("the 413 must arrive while the body is still being sent")
            .expect("response");
        assert_eq!(r.status(), 413, "content-length: {with_length}");
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(v["error"]["code"], "body_too_large", "{v}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(hits_after_ok, hits + 1);
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        hits_after_ok,
        "refused bodies never reach the upstream"
    );

    // 413 is not a validation failure.
    assert_eq!(validation_failures(&gw, "small").await, 0);
    assert_eq!(validation_failures(&gw, "dflt").await, 0);
    // The gateway still answers.
    assert_eq!(post(&c, &url, JSON, "{}").await.0, 200);
}

// ---------------------------------------------------------------------------------------
// 6. query_schema
// ---------------------------------------------------------------------------------------

const QUERY: &str = "query_schema:
  type: object
  required: [limit]
  additionalProperties: false
  properties:
    limit: { type: integer, minimum: 1, maximum: 100 }
    ratio: { type: number }
    active: { type: boolean }
    tag: { type: array, items: { type: string }, maxItems: 3 }
    ids: { type: array, items: { type: integer } }
    q: { type: string, maxLength: 5 }";

#[tokio::test]
async fn query_schema_types_and_refusals() {
    let up = Upstream::start("u").await;
    let config = ConfigDir::new("", &[]);
    write(
        &config,
        "schemas/q.json",
        r#"{"type": "object", "required": ["page"], "properties": {"page": {"type": "integer"}, "on": {"type": "boolean"}}}"#,
    );
    let p = policy(
        &up.target(),
        &[
            route("q", "/q", QUERY),
            route("qfile", "/qfile", "query_schema: schemas/q.json"),
            route(
                "both",
                "/both",
                "query_schema: { type: object, properties: { v: { type: integer } } }\nschema: { type: object, required: [a] }",
            ),
        ],
    );
    config.write_policy("p.yaml", &p);
    let gw = Gateway::start_in(config, &[]).await;
    let c = client();
    let get = |q: &str| {
        let c = c.clone();
        let url = gw.url(&format!("/q{q}"));
        async move {
            let r = c.get(&url).send().await.expect("request");
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let q = "?limit=10&ratio=0.5&active=true&tag=a&tag=b&ids=1&ids=-2&q=x%20y";
    let (s, v) = get(q).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["query"],
        &q[1..],
        "the query string goes upstream unchanged"
    );
    assert_eq!(get("?limit=1").await.0, 200);
    assert_eq!(get("?limit=100&active=false&tag=z").await.0, 200);

    let hits = up.hits.load(Ordering::SeqCst);
    let got = get("?limit=ten").await;
    assert_detail(&got, "/limit", "integer");
    assert_eq!(
        got.1["error"]["message"],
        "query parameters do not match the schema"
    );
    assert_detail(&get("?limit=0").await, "/limit", "minimum");
    assert_detail(&get("?limit=1.5").await, "/limit", "integer");
    assert_detail(&get("?active=true").await, "", "limit");
    assert_detail(&get("").await, "", "limit");
    assert_detail(&get("?limit=5&other=1").await, "", "other");
    assert_detail(&get("?limit=5&active=yes").await, "/active", "boolean");
    assert_detail(&get("?limit=5&ratio=abc").await, "/ratio", "number");
    assert_detail(&get("?limit=5&ids=1&ids=x").await, "/ids/1", "integer");
    assert_detail(&get("?limit=5&tag=a&tag=b&tag=c&tag=d").await, "/tag", "");
    assert_detail(&get("?limit=5&q=toolong").await, "/q", "");
    let got = get("?limit=x&active=maybe&zzz=1").await;
    assert_eq!(details(&got.1).len(), 3, "{}", got.1);
    assert_eq!(up.hits.load(Ordering::SeqCst), hits);

    // From a file, typed the same way.
    let r = c.get(gw.url("/qfile?page=3&on=true")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(gw.url("/qfile?page=three")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(paths(&v), ["/page"], "{v}");
    let r = c.get(gw.url("/qfile?page=1&on=1")).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Query and body on one route.
    let both = gw.url("/both?v=1");
    assert_eq!(post(&c, &both, JSON, r#"{"a": 1}"#).await.0, 200);
    assert_detail(
        &post(&c, &gw.url("/both?v=x"), JSON, r#"{"a": 1}"#).await,
        "/v",
        "integer",
    );
    assert_detail(&post(&c, &both, JSON, r#"{"b": 1}"#).await, "", "a");

    assert_eq!(validation_failures(&gw, "q").await, 12);
    assert_eq!(validation_failures(&gw, "qfile").await, 2);
    assert_eq!(validation_failures(&gw, "both").await, 2);
}

// ---------------------------------------------------------------------------------------
// 7. Hostile bodies
// ---------------------------------------------------------------------------------------

/// Sends the headers of a `Content-Length: 100` POST, then one body byte every 100 ms;
/// returns what the gateway answered and how long it took.
async fn trickle(gw: &Gateway, path: &str) -> (String, Duration) {
    let s = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    let (mut r, mut w) = s.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n["
    );
    w.write_all(head.as_bytes()).await.expect("write head");
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..99 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if w.write_all(b" ").await.is_err() {
                break;
            }
        }
        w
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&out).contains("}}") {
                break;
            }
        }
    })
    .await;
    let took = started.elapsed();
    writer.abort();
    assert!(read.is_ok(), "no answer to a trickling body within 8s");
    (String::from_utf8_lossy(&out).into_owned(), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_bodies_are_refused_quickly_and_memory_stays_bounded() {
    let up = Upstream::start("u").await;
    let p = policy(
        &up.target(),
        &[
            route("deep", "/deep", "max_body: 64KiB\nschema: {}"),
            route("small", "/small", "max_body: 1KiB\nschema: {}"),
            route("plain", "/plain", ""),
        ],
    );
    let gw = Gateway::start("limits: { body_timeout: 1s }\n", &[("p.yaml", &p)]).await;
    let c = client();
    let deep = gw.url("/deep");
    let quick = Duration::from_secs(5);
    assert_eq!(post(&c, &deep, JSON, "[]").await.0, 200);
    let peak_before = proc_status_kb(gw.pid(), "VmHWM");

    // Nesting: the deepest a 64 KiB body can be, with Content-Length and chunked.
    let nested = "[".repeat(65536);
    for body in [
        reqwest::Body::from(nested.clone()),
        chunked(nested.as_bytes(), 8192),
        reqwest::Body::from("{\"a\":".repeat(13107)),
        reqwest::Body::from(format!("{}{}", "[".repeat(20_000), "]".repeat(20_000))),
    ] {
        let t = Instant::now();
        let got = post(&c, &deep, JSON, body).await;
        assert_error(&got, 400, "invalid_request");
        assert!(
            got.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("recursion limit"),
            "{}",
            got.1
        );
        assert!(t.elapsed() < quick);
    }
    // A million levels cannot even be read: it is over the limit.
    let got = post(&c, &deep, JSON, "[".repeat(1_000_000)).await;
    assert_error(&got, 413, "body_too_large");
    // Many at once.
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (c, url, body) = (c.clone(), deep.clone(), nested.clone());
            tokio::spawn(async move { post(&c, &url, JSON, body).await.0 })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 400);
    }

    // Numbers out of range, duplicate keys, invalid UTF-8, lone surrogates.
    for (body, word) in [
        (&br#"{"n": 1e999}"#[..], "number out of range"),
        (br#"[-1e999]"#, "number out of range"),
        (br#"{"a": 1, "a": 2}"#, "duplicate key \"a\""),
        (br#"{"x": {"k": [], "k": {}}}"#, "duplicate key \"k\""),
        (b"{\"a\": \"\xff\xfe\"}", "line 1"),
        (b"{\"a\xc3\": 1}", "line 1"),
        (br#"{"a": "\ud800"}"#, "line 1"),
        (b"\xef\xbb\xbf{}", "line 1"),
    ] {
        let t = Instant::now();
        let got = post(&c, &deep, JSON, body.to_vec()).await;
        assert_error(&got, 400, "invalid_request");
        let msg = got.1["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(word),
            "{:?}: {msg}",
            String::from_utf8_lossy(body)
        );
        assert!(t.elapsed() < quick);
    }
    // Big but representable numbers are fine.
    assert_eq!(
        post(
            &c,
            &deep,
            JSON,
            r#"[1e308, -1e-999, 123456789012345678901234567890]"#
        )
        .await
        .0,
        200
    );

    // 100 MB against a 1 KiB limit, with Content-Length and chunked; produced lazily. The
    // client may see the 413 or the connection closed while it is still sending.
    let mb100 = || {
        let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
        futures::stream::iter((0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())))
    };
    for with_length in [true, false] {
        let mut rb = c
            .post(gw.url("/small"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(mb100()));
        if with_length {
            rb = rb.header("content-length", (100u64 << 20).to_string());
        }
        let t = Instant::now();
        match tokio::time::timeout(Duration::from_secs(30), rb.send())
            .await
            .expect("100 MB upload answered or cut within 30s")
        {
            Ok(r) => assert_eq!(r.status(), 413, "content-length: {with_length}"),
            Err(e) => eprintln!("100 MB upload (content-length: {with_length}): {e}"),
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    // A body that trickles in: 408 once limits.body_timeout (1s) has passed.
    let (answer, took) = trickle(&gw, "/deep").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "408 after {took:?}"
    );

    // Still healthy, still serving, memory bounded.
    let h = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let (s, v) = post(&c, &deep, JSON, r#"{"ok": true}"#).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["body_len"], 12);
    let (s, v) = post(&c, &gw.url("/plain"), None, vec![b'z'; 100_000]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["body_len"], 100_000);
    let rss = proc_status_kb(gw.pid(), "VmRSS");
    let peak = proc_status_kb(gw.pid(), "VmHWM");
    assert!(rss < 300 * 1024, "VmRSS {rss} kB");
    assert!(peak < 300 * 1024, "VmHWM {peak} kB");
    // Nothing was held whole: the 100 MB uploads alone would add at least 100 MB.
    assert!(
        peak - peak_before < 64 * 1024,
        "peak memory grew by {} kB during the hostile requests",
        peak - peak_before
    );
    eprintln!(
        "gateway memory after hostile bodies: VmRSS {rss} kB, VmHWM {peak} kB (was {peak_before} kB)"
    );
}

// ---------------------------------------------------------------------------------------
// 8. The validation metric
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn validation_failures_are_counted_per_route() {
    let up = Upstream::start("u").await;
    let gw = schema_gateway(&up, "limits: { body_timeout: 1s }\n").await;
    let c = client();
    let url = gw.url("/inline");
    let before = validation_failures(&gw, "inline").await;
    assert_eq!(before, 0);

    let ok = r#"{"name": "x"}"#;
    // 415 ×2
    assert_eq!(post(&c, &url, None, ok).await.0, 415);
    assert_eq!(post(&c, &url, Some("text/plain"), ok).await.0, 415);
    // 400 not JSON ×2
    assert_eq!(post(&c, &url, JSON, "{").await.0, 400);
    assert_eq!(post(&c, &url, JSON, r#"{"a":1,"a":1}"#).await.0, 400);
    // 400 schema ×3
    for bad in [r#"{}"#, r#"{"name": 1}"#, r#"[]"#] {
        assert_eq!(post(&c, &url, JSON, bad).await.0, 400);
    }
    // not counted: successes, 413, 408, 404
    for _ in 0..3 {
        assert_eq!(post(&c, &url, JSON, ok).await.0, 200);
    }
    let over = (1 << 20) + 1;
    assert_eq!(post(&c, &url, JSON, vec![b' '; over]).await.0, 413);
    assert_eq!(
        post(&c, &url, JSON, chunked(&vec![b' '; over], 100_000))
            .await
            .0,
        413
    );
    let (answer, _) = trickle(&gw, "/inline").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        client()
            .get(gw.url("/nowhere"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    assert_eq!(validation_failures(&gw, "inline").await, 7);
    // Other routes keep their own count.
    assert_eq!(post(&c, &gw.url("/list"), JSON, "[\"x\"]").await.0, 400);
    assert_eq!(validation_failures(&gw, "list").await, 1);
    assert_eq!(validation_failures(&gw, "inline").await, 7);
    assert_eq!(validation_failures(&gw, "file").await, 0);
    // 413 and 408 are counted as requests, not as validation failures.
    let m = gw.metrics().await;
    assert!(
        m.lines().any(|l| l.starts_with("gateway_requests_total")
            && l.contains("route=\"inline\"")
            && l.contains("status=\"413\"")
            && l.ends_with(" 2")),
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------
// Expect: 100-continue, API keys in the query, reload of referenced schema files
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn expect_continue_is_answered_before_the_body_is_read() {
    let up = Upstream::start("u").await;
    let gw = schema_gateway(&up, "").await;
    for (path, body, want) in [
        ("/inline", r#"{"name": "x"}"#, "200"),
        ("/inline", r#"{"name": 1}"#, "400"),
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.addr())
            .await
            .expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.expect("write head");
        // The client waits for 100 Continue before it sends the body.
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("100 Continue must come before the body is sent")
            .expect("read");
        let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            interim.starts_with("HTTP/1.1 100 Continue\r\n"),
            "{interim:?}"
        );
        s.write_all(body.as_bytes()).await.expect("write body");
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        let answer = format!("{interim}{}", String::from_utf8_lossy(&rest));
        let finals: Vec<&str> = answer
            .lines()
            .filter(|l| l.starts_with("HTTP/1.1 "))
            .collect();
        assert_eq!(finals.len(), 2, "one 100 Continue, one answer: {answer}");
        assert!(
            finals[1].starts_with(&format!("HTTP/1.1 {want}")),
            "{answer}"
        );
        if want == "200" {
            let v: Value =
                serde_json::from_str(answer.split("\r\n\r\n").last().unwrap()).expect("echo JSON");
            assert_eq!(v["body_sha256"], sha256(body.as_bytes()));
            assert!(v["headers"].get("expect").is_none(), "{v}");
        }
    }
    // A refusal that needs no body (415) comes without 100 Continue.
    let answer = common::raw(
        gw.addr(),
        b"POST /inline HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
}

/// The hash of `demo-acme-key` (from the contract's example).
const ACME_HASH: &str = "sha256:a2fb8545fcd457204e9fee11be92013aa3240b1b146fe262ba608fdfc159041c";

#[tokio::test]
async fn the_api_key_query_parameter_is_not_validated_nor_echoed() {
    let up = Upstream::start("u").await;
    let p = format!(
        "api_keys:\n  header: X-API-Key\n  query: api_key\nconsumers:\n  acme:\n    api_keys: [\"{ACME_HASH}\"]\n{}",
        policy(
            &up.target(),
            &[
                route(
                    "strict",
                    "/strict",
                    "query_schema: { type: object, required: [n], additionalProperties: false, properties: { n: { type: integer } } }",
                )
                .replace("auth: none", "auth: [api_key]"),
                route(
                    "typed",
                    "/typed",
                    "query_schema: { type: object, properties: { n: { type: integer } }, additionalProperties: { maxLength: 3 } }",
                )
                .replace("auth: none", "auth: [api_key]"),
            ],
        )
    );
    let gw = Gateway::start("", &[("p.yaml", &p)]).await;
    let c = client();
    let r = c
        .get(gw.url("/strict?api_key=demo-acme-key&n=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the key parameter is the gateway's");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["x-consumer-id"], "acme");
    let r = c
        .get(gw.url("/strict?api_key=demo-acme-key&n=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("demo-acme-key"),
        "a credential echoed: {text}"
    );
    let r = c
        .get(gw.url("/typed?api_key=demo-acme-key&n=1&other=long"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("demo-acme-key"),
        "a credential echoed: {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(paths(&v), ["/other"], "{v}");
    // With the key in its header, the query is validated as it is.
    let r = c
        .get(gw.url("/strict?n=1"))
        .header("x-api-key", "demo-acme-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn editing_a_referenced_schema_file_reloads_it() {
    let up = Upstream::start("u").await;
    let gw = schema_gateway(&up, "").await;
    let c = client();
    let url = gw.url("/file");
    let lower = r#"{"customer": "a", "items": [{"sku": "abc-1234", "qty": 1}]}"#;
    assert_eq!(post(&c, &url, JSON, lower).await.0, 400);
    // common.json is only reached through a `$ref` of order.json: it is watched too.
    std::fs::write(
        gw.config.path().join("policies/schemas/common.json"),
        r#"{"$defs": {"sku": {"type": "string", "pattern": "^[a-zA-Z]{3}-[0-9]{4}$"}}}"#,
    )
    .unwrap();
    let start = Instant::now();
    while post(&c, &url, JSON, lower).await.0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the edited $ref target was not reloaded; output:\n{}",
            gw.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken edit keeps the last good set, and says so.
    std::fs::write(
        gw.config.path().join("policies/schemas/order.json"),
        r#"{"type": 12}"#,
    )
    .unwrap();
    let start = Instant::now();
    loop {
        let cfg: Value = gw.config().await;
        if let Some(e) = cfg["last_error"].as_str() {
            assert!(e.contains("invalid schema"), "{e}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the broken schema was not noticed: {cfg}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post(&c, &url, JSON, lower).await.0, 200);
    assert_eq!(post(&c, &url, JSON, r#"{"customer": "a"}"#).await.0, 400);
}

// ---------------------------------------------------------------------------------------
// 9. Routes without a schema stream
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn routes_without_schema_still_stream_large_bodies() {
    let up = Upstream::start("u").await;
    let gw = schema_gateway(&up, "limits: { max_body: 16MiB }\n").await;
    let c = client();
    let body: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    let (s, v) = post(&c, &gw.url("/plain/upload"), None, body.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["body_len"], body.len());
    assert_eq!(v["body_sha256"], sha256(&body));
    let (s, v) = post(
        &c,
        &gw.url("/plain/upload"),
        Some("application/octet-stream"),
        chunked(&body, 100_000),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["body_len"], body.len());
    assert_eq!(v["body_sha256"], sha256(&body));
    // A schema route in the same gateway reads and validates a body of the same size
    // whole before anything goes upstream: invalid, nothing is forwarded; valid, it is
    // forwarded byte for byte.
    let hits = up.hits.load(Ordering::SeqCst);
    let mut invalid = b"{}".to_vec();
    invalid.resize(8 << 20, b' ');
    let (s, _) = post(&c, &gw.url("/inline"), JSON, invalid).await;
    assert_eq!(s, 400);
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        hits,
        "an invalid body was forwarded"
    );
    let mut valid = br#"{"name":"x"}"#.to_vec();
    valid.resize(8 << 20, b' ');
    let (s, v) = post(&c, &gw.url("/inline"), JSON, valid.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["body_sha256"], sha256(&valid));
}

/// GET, HEAD and DELETE carry no body as a rule: on a schema route they pass body
/// validation when they send none, and are validated when they do; POST always needs one.
#[tokio::test]
async fn bodyless_methods_skip_body_validation_post_needs_a_body() {
    let up = Upstream::start("u").await;
    let text = format!(
        "upstreams:\n  up:\n    targets: [\"{}\"]\nroutes:\n  - name: item\n    match: {{ path: /item }}\n    auth: none\n    upstream: up\n    request:\n      schema: {{ type: object, required: [name] }}\n",
        up.target()
    );
    let gw = Gateway::start("", &[("p.yaml", &text)]).await;
    let c = client();
    assert_eq!(c.get(gw.url("/item")).send().await.unwrap().status(), 200);
    assert_eq!(c.head(gw.url("/item")).send().await.unwrap().status(), 200);
    assert_eq!(
        c.delete(gw.url("/item")).send().await.unwrap().status(),
        200
    );
    let r = c.post(gw.url("/item")).send().await.unwrap();
    assert_eq!(r.status(), 415, "a POST without a body or content type");
    let r = c
        .post(gw.url("/item"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a POST with an empty JSON body");
    let r = c
        .delete(gw.url("/item"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a DELETE with a body is validated");
}
