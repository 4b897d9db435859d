//! Verified webhooks with the memory store, end to end through the real `gateway` binary:
//! Standard Webhooks, Stripe, GitHub and configurable HMAC signatures checked over the raw
//! body (forwarded byte for byte), secret rotation, several signatures per header, the
//! timestamp window, replays answered as duplicates only after a 2xx, the metrics, secrets
//! kept out of answers and logs, and the configuration errors of `gateway check`.
//!
//! Signatures are computed here, from the schemes' specifications, with `hmac`/`sha2`; the
//! helpers are checked against the schemes' published examples first.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::reply::{assert_ok, send, Reply};
use common::{bin, client, line_of, metric, ConfigDir, Gateway, Upstream};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Helpers: secrets and signatures
// ---------------------------------------------------------------------------------------

/// Standard Webhooks keys (the bytes behind `whsec_<base64>`).
const STD_KEY: &[u8] = b"test-only-standard-key-current";
const STD_OLD_KEY: &[u8] = b"test-only-standard-key-previous";
const STRIPE: &str = "whsec_test_only_stripe_secret";
const GH: &str = "It's a Secret to Everybody";
const PARTNER: &str = "test-only-partner-hmac-secret";
/// GitHub's documented signature of "Hello, World!" under `GH`.
const GH_VECTOR: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

fn whsec(key: &[u8]) -> String {
    format!("whsec_{}", B64.encode(key))
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("WH_STD", whsec(STD_KEY)),
        ("WH_STD_OLD", whsec(STD_OLD_KEY)),
        ("WH_STRIPE", STRIPE.into()),
        ("WH_GH", GH.into()),
        ("WH_P", PARTNER.into()),
    ]
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    parts.iter().for_each(|p| m.update(p));
    m.finalize().into_bytes().to_vec()
}

fn hmac512(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).unwrap();
    parts.iter().for_each(|p| m.update(p));
    m.finalize().into_bytes().to_vec()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

type Headers = Vec<(String, String)>;

fn one(name: &str, value: String) -> Headers {
    vec![(name.into(), value)]
}

/// Replaces (or adds) header `name` in `h`.
fn with(mut h: Headers, name: &str, value: &str) -> Headers {
    h.retain(|(k, _)| k != name);
    h.push((name.into(), value.into()));
    h
}

/// A `v1,<base64>` Standard Webhooks signature entry.
fn standard_entry(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
    let mac = hmac256(key, &[format!("{id}.{ts}.").as_bytes(), body]);
    format!("v1,{}", B64.encode(mac))
}

fn standard(key: &[u8], id: &str, ts: i64, body: &[u8]) -> Headers {
    let h = with(
        one("webhook-id", id.into()),
        "webhook-timestamp",
        &ts.to_string(),
    );
    with(h, "webhook-signature", &standard_entry(key, id, ts, body))
}

fn stripe_v1(ts: i64, body: &[u8]) -> String {
    hex::encode(hmac256(
        STRIPE.as_bytes(),
        &[format!("{ts}.").as_bytes(), body],
    ))
}

fn github(body: &[u8], delivery: Option<&str>) -> Headers {
    let sig = format!("sha256={}", hex::encode(hmac256(GH.as_bytes(), &[body])));
    let h = one("x-hub-signature-256", sig);
    match delivery {
        Some(d) => with(h, "x-github-delivery", d),
        None => h,
    }
}

fn partner(ts: i64, id: &str, body: &[u8]) -> Headers {
    let mac = hmac512(PARTNER.as_bytes(), &[format!("{ts}.").as_bytes(), body]);
    let h = one("x-signature", format!("sha512={}", B64.encode(mac)));
    with(with(h, "x-timestamp", &ts.to_string()), "x-event-id", id)
}

// ---------------------------------------------------------------------------------------
// Helpers: the gateway
// ---------------------------------------------------------------------------------------

/// Verifiers `std` (two secrets), `stripe`, `gh`, `partner` (sha512, base64, prefix,
/// timestamp and id headers); routes `/stripe`, `/gh`, `/partner`, and `hook` at `/*`.
fn policy(target: &str) -> String {
    format!(
        r#"upstreams:
  up:
    targets: ["{target}"]
webhook_verifiers:
  std: {{ scheme: standard, secrets_env: [WH_STD, WH_STD_OLD], tolerance: 5m }}
  stripe: {{ scheme: stripe, secrets_env: [WH_STRIPE] }}
  gh: {{ scheme: github, secrets_env: [WH_GH] }}
  partner: {{ scheme: hmac, secrets_env: [WH_P], header: X-Signature, algorithm: sha512, encoding: base64, prefix: "sha512=", timestamp_header: X-Timestamp, id_header: X-Event-Id }}
routes:
  - {{ name: hook, match: {{ path: "/*", methods: [POST] }}, auth: [webhook:std], upstream: up }}
  - {{ name: stripe, match: {{ path: /stripe, methods: [POST] }}, auth: [webhook:stripe], upstream: up }}
  - {{ name: gh, match: {{ path: /gh, methods: [POST] }}, auth: [webhook:gh], upstream: up }}
  - {{ name: partner, match: {{ path: /partner, methods: [POST] }}, auth: [webhook:partner], upstream: up }}
"#
    )
}

/// One test's gateway and echo upstream.
struct Hooks {
    gw: Gateway,
    up: Upstream,
}

impl Hooks {
    async fn start(extra: &str) -> Hooks {
        let up = Upstream::start("up").await;
        let env = env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let config = ConfigDir::new(extra, &[("p.yaml", &policy(&up.target()))]);
        let gw = Gateway::start_in(config, &env).await;
        Hooks { gw, up }
    }

    /// POSTs `body` to `path` with headers `h`, and waits until the gateway has finished
    /// the request (its access-log line is written after a delivery is remembered).
    async fn send(&self, path: &str, h: &Headers, body: &[u8]) -> Reply {
        let mut req = client().post(self.gw.url(path)).body(body.to_vec());
        for (k, v) in h {
            req = req.header(k, v);
        }
        let r = send(req.header("content-type", "application/json")).await;
        if let Some(id) = r.header("x-request-id").map(str::to_string) {
            self.gw.wait_log(|l| l["request_id"] == id.as_str()).await;
        }
        r
    }

    /// Asserts a delivery forwarded to the echo upstream, body intact, as the verifier of
    /// `path`; returns the answer.
    async fn ok(&self, path: &str, h: &Headers, body: &[u8], what: &str) -> Reply {
        let r = self.send(path, h, body).await;
        assert_ok(&r, what);
        let echo = r.json();
        let sha = hex::encode(Sha256::digest(body));
        assert_eq!(echo["body_sha256"], sha, "{what}: body changed");
        assert_eq!(echo["body_len"], body.len(), "{what}");
        let verifier = match path {
            "/stripe" | "/gh" | "/partner" => &path[1..],
            _ => "std",
        };
        let consumer = r.upstream_header("x-consumer-id");
        assert_eq!(consumer.unwrap(), format!("webhook:{verifier}"), "{what}");
        assert_eq!(r.header("webhook-duplicate"), None, "{what}");
        r
    }

    async fn refused(&self, path: &str, h: &Headers, body: &[u8], what: &str) {
        let r = self.send(path, h, body).await;
        assert_eq!(r.status, 401, "{what}: {}", r.describe());
        assert_eq!(r.code(), "invalid_signature", "{what}: {}", r.describe());
        let challenge = r.header("www-authenticate");
        assert_eq!(challenge, None, "{what}: {}", r.describe());
    }

    async fn duplicate(&self, path: &str, h: &Headers, body: &[u8], what: &str) {
        let r = self.send(path, h, body).await;
        assert_eq!(r.status, 200, "{what}: {}", r.describe());
        let json = serde_json::json!({ "duplicate": true });
        assert_eq!(r.json(), json, "{what}: {}", r.text);
        assert_eq!(r.header("webhook-duplicate"), Some("true"), "{what}");
    }

    fn hits(&self) -> usize {
        self.up.hits.load(Ordering::SeqCst)
    }

    /// Asserts `gateway_auth_failures_total` and `gateway_webhook_duplicates_total` of
    /// `route`: (invalid_signature, stale_timestamp, duplicates).
    async fn counted(&self, route: &str, expected: (f64, f64, f64)) {
        let m = self.gw.metrics().await;
        let failures = |reason| {
            let labels = [("route", route), ("reason", reason)];
            metric(&m, "gateway_auth_failures_total", &labels)
        };
        let dups = metric(&m, "gateway_webhook_duplicates_total", &[("route", route)]);
        let (invalid, stale) = (failures("invalid_signature"), failures("stale_timestamp"));
        let got = (invalid, stale, dups);
        assert_eq!(got, expected, "{route}: (invalid, stale, duplicates)");
    }
}

// ---------------------------------------------------------------------------------------
// The test helpers follow the schemes' published examples
// ---------------------------------------------------------------------------------------

#[test]
fn signing_helpers_match_the_published_examples() {
    let key = B64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let body = br#"{"test": 2432232314}"#;
    let entry = standard_entry(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
    assert_eq!(entry, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    assert_eq!(github(b"Hello, World!", None)[0].1, GH_VECTOR);
}

// ---------------------------------------------------------------------------------------
// 11. Standard Webhooks: raw bytes, rotation, several signatures, the window
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_signatures_are_checked_over_the_raw_body() {
    let hk = Hooks::start("").await;
    let body: &[u8] = b"{\"type\":  \"paid\",\n \"n\": 12.50, \"s\": \"caf\xc3\xa9\"}  \r\n";
    let ts = now();

    let h = standard(STD_KEY, "msg_1", ts, body);
    let r = hk.ok("/ok", &h, body, "valid").await;
    for (k, v) in &h {
        let got = r.upstream_header(k);
        assert_eq!(got.as_ref(), Some(v), "{k} forwarded unchanged");
    }
    assert_eq!(hk.hits(), 1);

    // The signed body with one byte changed; no signature; a signature of another id or
    // under another key.
    let mut forged = body.to_vec();
    forged[12] = b'X';
    let h = standard(STD_KEY, "msg_2", ts, body);
    hk.refused("/ok", &h, &forged, "forged body").await;
    let mut bare = h.clone();
    bare.retain(|(k, _)| k != "webhook-signature");
    hk.refused("/ok", &bare, body, "no signature").await;
    let other_id = with(h.clone(), "webhook-id", "msg_other");
    hk.refused("/ok", &other_id, body, "other id").await;
    let other_key = standard(b"test-only-other", "msg_2", ts, body);
    hk.refused("/ok", &other_key, body, "other key").await;
    // Validly signed, but 10 minutes old or ahead (tolerance 5m).
    for (what, at) in [("10 min old", ts - 600), ("10 min ahead", ts + 600)] {
        let h = standard(STD_KEY, &format!("msg_{at}"), at, body);
        hk.refused("/ok", &h, body, what).await;
    }
    assert_eq!(hk.hits(), 1, "nothing refused was forwarded");
    // Within the window (4 min old); the previous secret (rotation).
    let h = standard(STD_KEY, "msg_3", ts - 240, body);
    hk.ok("/ok", &h, body, "4 min old").await;
    let h = standard(STD_OLD_KEY, "msg_4", ts, body);
    hk.ok("/ok", &h, body, "old secret").await;
    // Several entries, only the second valid.
    let good = standard_entry(STD_KEY, "msg_5", ts, body);
    let mut h = standard(STD_KEY, "msg_5", ts, body);
    h[2] = (
        "webhook-signature".into(),
        format!("v1,{} {good}", B64.encode([7u8; 32])),
    );
    hk.ok("/ok", &h, body, "second entry").await;
    assert_eq!(hk.hits(), 4);
    hk.counted("hook", (4.0, 2.0, 0.0)).await;
}

// ---------------------------------------------------------------------------------------
// 12. Replays: a delivered event is a duplicate; a failed one is delivered again
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_event_is_answered_as_a_duplicate() {
    let hk = Hooks::start("").await;
    let body: &[u8] = br#"{"event": 1}"#;
    let ts = now();

    let h = standard(STD_KEY, "evt_1", ts, body);
    hk.ok("/ok", &h, body, "first").await;
    hk.duplicate("/ok", &h, body, "same request").await;
    // The sender's redelivery: same id, new timestamp and signature, another path.
    let h = standard(STD_KEY, "evt_1", ts + 1, body);
    hk.duplicate("/elsewhere", &h, body, "redelivered").await;
    // A forged redelivery is refused, not answered as a duplicate.
    hk.refused("/ok", &h, b"{\"event\": 2}", "forged").await;
    assert_eq!(hk.hits(), 1);

    // The upstream failed (500) or refused (400): not delivered; the redelivery goes through.
    for (id, status) in [("evt_2", 500u16), ("evt_3", 400)] {
        let h = standard(STD_KEY, id, ts, body);
        let r = hk.send(&format!("/status/{status}"), &h, body).await;
        assert_eq!(r.status, status, "{id}: {}", r.describe());
        hk.ok("/ok", &h, body, &format!("{id} again")).await;
        hk.duplicate("/ok", &h, body, &format!("{id} 3rd")).await;
    }
    assert_eq!(hk.hits(), 5);
    hk.counted("hook", (1.0, 0.0, 4.0)).await;
}

/// A sender's quick retry while the first delivery is still with the upstream is refused
/// (409 `webhook_in_flight`), not forwarded a second time; once the first is delivered, the
/// retry is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_while_the_first_delivery_is_in_flight_is_not_forwarded_twice() {
    let hk = Arc::new(Hooks::start("").await);
    let body: &'static [u8] = br#"{"event": "slow"}"#;
    let h = standard(STD_KEY, "evt_slow", now(), body);
    let (first_hk, first_h) = (hk.clone(), h.clone());
    let first = tokio::spawn(async move { first_hk.send("/slow?ms=1500", &first_h, body).await });
    // Until the upstream has the first delivery.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while hk.hits() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first delivery never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = hk.send("/slow?ms=1500", &h, body).await;
    assert_eq!(r.status, 409, "{}", r.describe());
    assert_eq!(r.code(), "webhook_in_flight");
    assert_eq!(r.header("retry-after"), Some("1"));
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.describe());
    hk.duplicate("/slow?ms=1500", &h, body, "after delivery")
        .await;
    assert_eq!(hk.hits(), 1, "forwarded once");
}

// ---------------------------------------------------------------------------------------
// 13. Stripe, GitHub and configurable HMAC
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_signatures() {
    let hk = Hooks::start("").await;
    let ts = now();
    let sig = |t: i64, v1: &str| one("stripe-signature", format!("t={t},v1={v1}"));
    // t=<unix>,v1=<hex>; no event id: the signature is the replay id.
    let body: &[u8] = br#"{"id": "evt_stripe_1", "object": "event"}"#;
    let h = sig(ts, &stripe_v1(ts, body));
    let r = hk.ok("/stripe", &h, body, "stripe").await;
    assert_eq!(r.upstream_header("stripe-signature"), Some(h[0].1.clone()));
    hk.duplicate("/stripe", &h, body, "replayed").await;
    let body2: &[u8] = br#"{"id": "evt_stripe_2"}"#;
    let bad = "ab".repeat(32);
    let h = sig(ts, &format!("{bad},v1={}", stripe_v1(ts, body2)));
    hk.ok("/stripe", &h, body2, "second v1").await;

    // The secret is used whole: signed without its whsec_ prefix, refused.
    let rest = STRIPE.strip_prefix("whsec_").unwrap().as_bytes();
    let mac = hmac256(rest, &[format!("{ts}.").as_bytes(), b"{}"]);
    let h = sig(ts, &hex::encode(mac));
    hk.refused("/stripe", &h, b"{}", "not whole").await;
    let h = sig(ts, &stripe_v1(ts, body));
    hk.refused("/stripe", &h, body2, "forged").await;
    let h = sig(ts - 3600, &stripe_v1(ts - 3600, body2));
    hk.refused("/stripe", &h, body2, "stale").await;
    let v0 = format!("t={ts},v0={}", stripe_v1(ts, b"{}"));
    let h = one("stripe-signature", v0);
    hk.refused("/stripe", &h, b"{}", "v0 only").await;
    assert_eq!(hk.hits(), 2);
    hk.counted("stripe", (3.0, 1.0, 1.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_signatures() {
    let hk = Hooks::start("").await;
    // GitHub's documented example, delivery id from X-GitHub-Delivery.
    let body: &[u8] = b"Hello, World!";
    let sig = one("x-hub-signature-256", GH_VECTOR.into());
    let h = |d: &str| with(sig.clone(), "x-github-delivery", d);
    let r = hk.ok("/gh", &h("gh-1"), body, "github vector").await;
    assert_eq!(r.upstream_header("x-hub-signature-256").unwrap(), GH_VECTOR);
    hk.duplicate("/gh", &h("gh-1"), body, "redelivery").await;
    // The delivery id is not signed: the same signed body under another id is a replay.
    hk.duplicate("/gh", &h("gh-2"), body, "new id").await;
    let other: &[u8] = b"Hello, World!!";
    let h2 = github(other, Some("gh-2"));
    hk.ok("/gh", &h2, other, "another delivery").await;
    hk.refused("/gh", &h("gh-3"), b"Hello!", "forged").await;
    let bare = one("x-hub-signature-256", GH_VECTOR[7..].into());
    hk.refused("/gh", &bare, body, "without sha256=").await;
    // Without a delivery id, the signature is the replay id.
    let plain: &[u8] = b"no delivery id";
    let h = github(plain, None);
    hk.ok("/gh", &h, plain, "no id").await;
    hk.duplicate("/gh", &h, plain, "no id, again").await;
    assert_eq!(hk.hits(), 3);
    hk.counted("gh", (2.0, 0.0, 3.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_signatures() {
    let hk = Hooks::start("").await;
    let ts = now();
    // sha512, base64, "sha512=" prefix, over "{ts}.{body}", event id header.
    let body: &[u8] = br#"{"partner": "event"}"#;
    let h = partner(ts, "p-1", body);
    hk.ok("/partner", &h, body, "hmac").await;
    let again = partner(ts + 2, "p-1", body);
    hk.duplicate("/partner", &again, body, "again").await;
    let captured = with(h.clone(), "x-event-id", "p-9");
    hk.duplicate("/partner", &captured, body, "new id").await;
    let signed = format!("{ts}.");
    let key = PARTNER.as_bytes();
    let mac = hmac512(key, &[signed.as_bytes(), body]);
    let sha256 = hmac256(key, &[signed.as_bytes(), body]);
    let body_only = hmac512(key, &[body]);
    let signatures = [
        ("no prefix", B64.encode(&mac)),
        ("hex", format!("sha512={}", hex::encode(&mac))),
        ("sha256", format!("sha512={}", B64.encode(sha256))),
        ("body only", format!("sha512={}", B64.encode(body_only))),
    ];
    for (what, sig) in signatures {
        let h = with(h.clone(), "x-signature", &sig);
        hk.refused("/partner", &h, body, what).await;
    }
    let moved = with(h.clone(), "x-timestamp", &(ts + 1).to_string());
    hk.refused("/partner", &moved, body, "other timestamp")
        .await;
    let stale = partner(ts - 3600, "p-2", body);
    hk.refused("/partner", &stale, body, "stale").await;
    assert_eq!(hk.hits(), 1);
    hk.counted("partner", (5.0, 1.0, 2.0)).await;
}

// ---------------------------------------------------------------------------------------
// 15. Secrets never appear in answers, the admin API or the output
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_answers_or_logs() {
    let hk = Hooks::start("log: { level: debug, format: json }\n").await;
    let ts = now();
    let body: &[u8] = b"{}";
    let mut replies = vec![
        hk.send("/ok", &standard(STD_KEY, "s-1", ts, body), body)
            .await,
        hk.send("/ok", &standard(STD_KEY, "s-1", ts, body), body)
            .await,
        hk.send("/ok", &standard(b"wrong", "s-2", ts, body), body)
            .await,
        hk.send("/ok", &standard(STD_KEY, "s-3", ts - 900, body), body)
            .await,
        hk.send(
            "/stripe",
            &one("stripe-signature", "t=1,v1=00".into()),
            body,
        )
        .await,
        hk.send("/gh", &github(b"other", Some("g")), body).await,
        hk.send("/partner", &partner(ts, "p", b"other"), body).await,
    ];
    assert_eq!(replies.iter().filter(|r| r.status == 401).count(), 5);
    replies.push(send(client().get(hk.gw.admin_url("/config"))).await);
    replies.push(send(client().get(hk.gw.admin_url("/metrics"))).await);

    let secrets = [
        whsec(STD_KEY),
        B64.encode(STD_KEY),
        String::from_utf8(STD_KEY.to_vec()).unwrap(),
        whsec(STD_OLD_KEY),
        String::from_utf8(STD_OLD_KEY.to_vec()).unwrap(),
        STRIPE.into(),
        GH.into(),
        PARTNER.into(),
    ];
    let out = hk.gw.output();
    assert!(!out.is_empty(), "the gateway logged nothing");
    for s in &secrets {
        assert!(
            !out.contains(s.as_str()),
            "secret {s:?} in the output:\n{out}"
        );
        for r in &replies {
            let seen = format!("{:?} {}", r.headers, r.text);
            assert!(
                !seen.contains(s.as_str()),
                "secret {s:?} in an answer: {seen}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 16. gateway check: the configuration errors, with file and line
// ---------------------------------------------------------------------------------------

const CHECKED: &str = r#"upstreams:
  up:
    targets: ["127.0.0.1:9"]
webhook_verifiers:
  std:
    scheme: standard
    secrets_env: [WH_STD]
    tolerance: 5m
  partner:
    scheme: hmac
    secrets_env: [WH_P]
    header: X-Signature
routes:
  - name: hook
    match: { path: /hook, methods: [POST] }
    auth: [webhook:std]
    upstream: up
  - name: orders
    match: { path: /orders, methods: [POST] }
    auth: none
    idempotency: {}
    upstream: up
"#;

/// An aggregate route with idempotency, to append to `CHECKED`.
const AGGREGATE: &str = "  - name: agg
    match: { path: /agg, methods: [POST] }
    auth: none
    idempotency: { required: true }
    aggregate: { timeout: 5s, calls: [ { name: a, upstream: up, path: /a } ] }
";

/// Each refused variant of `CHECKED`: what | text replaced | by (`-`: nothing, the line is
/// dropped) | the text of the line reported | a word of the message. `(appended)`: the
/// variant is `CHECKED` with `AGGREGATE` appended.
const REFUSED: &str = "unknown scheme | scheme: standard | scheme: nosuch | scheme: nosuch | nosuch
unset variable | [WH_STD] | [WH_UNSET_FOR_TEST] | WH_UNSET_FOR_TEST | WH_UNSET_FOR_TEST
tolerance 0s | tolerance: 5m | tolerance: 0s | tolerance: 0s | tolerance
tolerance 48h | tolerance: 5m | tolerance: 48h | tolerance: 48h | tolerance
hmac without header | header: X-Signature | - | partner: | header
unknown verifier | [webhook:std] | [webhook:nope] | webhook:nope | nope
webhook with api_key | [webhook:std] | [webhook:std, api_key] | webhook:std, api_key | webhook
idempotency on an aggregate | (appended) | - | { required: true } | idempotency";

/// `gateway check` on `text` as policy file `hooks.yaml`, with `env` and no other webhook
/// variable: (success, output, the policy file's path).
fn check(text: &str, env: &[(&str, String)]) -> (bool, String, std::path::PathBuf) {
    let c = ConfigDir::new("", &[("hooks.yaml", text)]);
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["check", "-c"]).arg(c.gateway_yaml());
    for (k, _) in self::env() {
        cmd.env_remove(k);
    }
    let out = cmd
        .envs(env.iter().cloned())
        .output()
        .expect("gateway check");
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    (
        out.status.success(),
        text,
        c.path().join("policies").join("hooks.yaml"),
    )
}

/// The message of the problem reported at `file:line`.
fn problem_at(out: &str, file: &std::path::Path, line: usize) -> Option<String> {
    let prefix = format!("{}:{line}: ", file.display());
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

#[test]
fn check_refuses_bad_verifiers_and_routes_with_file_and_line() {
    let env = env();
    let (ok, out, _) = check(CHECKED, &env);
    assert!(ok, "the base configuration is valid: {out}");

    for case in REFUSED.lines() {
        let f: Vec<&str> = case.split(" | ").map(str::trim).collect();
        let (what, from, to, needle, word) = (f[0], f[1], f[2].trim_matches('-'), f[3], f[4]);
        let text = match CHECKED.lines().find(|l| l.contains(from)) {
            // The line changed, or dropped when nothing is left of it.
            Some(line) => {
                let changed = format!("{}\n", line.replace(from, to));
                let changed = if changed.trim().is_empty() {
                    ""
                } else {
                    &changed
                };
                CHECKED.replace(&format!("{line}\n"), changed)
            }
            None => format!("{CHECKED}{AGGREGATE}"),
        };
        let (ok, out, file) = check(&text, &env);
        assert!(!ok, "{what}: check passed:\n{out}");
        let msg = problem_at(&out, &file, line_of(&text, needle));
        let msg = msg.unwrap_or_else(|| panic!("{what}: not at the line of {needle:?}:\n{out}"));
        assert!(
            msg.contains(word),
            "{what}: {msg:?} should contain {word:?}"
        );
    }

    // A malformed secret is reported by position, never by value.
    let mut bad = env.clone();
    bad[0].1 = "whsec_test-only-not*base64!".into();
    let (ok, out, file) = check(CHECKED, &bad);
    assert!(!ok, "a standard secret that is not base64 passed:\n{out}");
    assert!(
        problem_at(&out, &file, line_of(CHECKED, "[WH_STD]")).is_some(),
        "{out}"
    );
    assert!(!out.contains("not*base64"), "the secret is printed:\n{out}");
}
