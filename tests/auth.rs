//! Authentication and authorization end to end through the real `gateway` binary: JWT
//! algorithms, claims and key choice, attacks, remote key sets (JWKS), API keys, consumer
//! and claim headers, scopes, the 401/403 answers, the metrics, `gateway token` and the
//! configuration errors of `gateway check`.
//!
//! Keys are the test-only key pairs of `tests/fixtures/keys/`.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::line_of;

use common::reply::{assert_ok, send, Reply};
use common::{bin, client, metric, ConfigDir, Gateway, Upstream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Helpers: keys and tokens
// ---------------------------------------------------------------------------------------

const ISS: &str = "https://issuer.test/";
const AUD: &str = "orders-api";

/// The directory of the test-only key pairs.
fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

/// The public key (SPKI PEM) of fixture `name`, as an absolute path for `pem_file`.
fn pub_pem(name: &str) -> String {
    keys_dir()
        .join(format!("test-only-{name}.pub.pem"))
        .display()
        .to_string()
}

/// The private key (PKCS#8 PEM) file of fixture `name`.
fn private_pem(name: &str) -> PathBuf {
    keys_dir().join(format!("test-only-{name}.key.pem"))
}

/// A signing key for fixture `name` (`rsa-1`, `rsa-2`, `ec-p256`, `ec-p384`, `ed25519`).
fn signing_key(name: &str) -> EncodingKey {
    let pem = std::fs::read(private_pem(name)).expect("read private key");
    let key = if name.starts_with("rsa") {
        EncodingKey::from_rsa_pem(&pem)
    } else if name.starts_with("ec") {
        EncodingKey::from_ec_pem(&pem)
    } else {
        EncodingKey::from_ed_pem(&pem)
    };
    key.expect("usable private key")
}

fn hmac(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

/// The public JWK of fixture `name` with `kid` (and `alg` when given).
fn jwk(name: &str, kid: Option<&str>, alg: Option<&str>) -> Value {
    let text = std::fs::read_to_string(keys_dir().join(format!("test-only-{name}.jwk.json")))
        .expect("read jwk");
    let mut v: Value = serde_json::from_str(&text).expect("jwk json");
    if let Some(kid) = kid {
        v["kid"] = json!(kid);
    }
    if let Some(alg) = alg {
        v["alg"] = json!(alg);
    }
    v
}

/// A JWKS document of (fixture, kid, alg).
fn jwks_doc(keys: &[(&str, &str, &str)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(name, kid, alg)| jwk(name, Some(kid), Some(alg)))
        .collect();
    json!({ "keys": keys }).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Claims every provider here accepts: issuer, audience, a subject, an hour to live.
fn good_claims() -> Value {
    json!({ "iss": ISS, "aud": AUD, "sub": "user-1", "iat": now(), "exp": now() + 3600 })
}

/// `good_claims` with `changes` applied; a null value removes the claim.
fn claims_with(changes: Value) -> Value {
    let mut c = good_claims();
    let map = c.as_object_mut().expect("object");
    for (k, v) in changes.as_object().expect("object") {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    c
}

/// A token signed the ordinary way.
fn token(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("sign token")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with an arbitrary header, validly signed with `key` under `alg`.
fn raw_token(header: &Value, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, alg).expect("sign");
    format!("{signing_input}.{sig}")
}

/// `header.payload` (both already base64url) with a valid RS256 signature by `key`.
fn signed(header_b64: &str, payload_b64: &str, key: &EncodingKey) -> String {
    let input = format!("{header_b64}.{payload_b64}");
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, Algorithm::RS256).expect("sign");
    format!("{input}.{sig}")
}

/// `sha256:<hex>` of an API key, as configuration holds it.
fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// The decoded payload of a token.
fn payload(token: &str) -> Value {
    use base64::Engine;
    let p = token.split('.').nth(1).expect("payload segment");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("json payload")
}

// ---------------------------------------------------------------------------------------
// Helpers: configuration
// ---------------------------------------------------------------------------------------

/// A policy file: upstream `up` at `target`, then `body` (providers, consumers, routes).
fn policy(target: &str, body: &str) -> String {
    format!("upstreams:\n  up:\n    targets: [\"{target}\"]\n{body}")
}

/// A route list item on upstream `up`; `extra` lines (unindented) go under it.
fn route(name: &str, path: &str, auth: &str, extra: &str) -> String {
    let mut s = format!(
        "  - name: {name}\n    match: {{ path: \"{path}\" }}\n    auth: {auth}\n    upstream: up\n"
    );
    for line in extra.lines() {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

// ---------------------------------------------------------------------------------------
// Helpers: requests, answers, metrics
// ---------------------------------------------------------------------------------------

/// GET `path` with `Authorization: Bearer <token>` when a token is given.
async fn get(gw: &Gateway, path: &str, token: Option<&str>) -> Reply {
    let mut req = client().get(gw.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    send(req).await
}

/// Asserts a 401 `unauthorized` with the right `WWW-Authenticate`, whose body does not
/// echo `credential`.
fn assert_unauthorized(r: &Reply, token_presented: bool, credential: &str, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.describe());
    let body = r.json();
    assert_eq!(body["error"]["code"], "unauthorized", "{what}: {}", r.text);
    assert_eq!(body["error"]["status"], 401, "{what}: {}", r.text);
    assert!(
        body["error"]["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{what}: {}",
        r.text
    );
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{what}"
    );
    let want = if token_presented {
        "Bearer error=\"invalid_token\""
    } else {
        "Bearer"
    };
    assert_eq!(
        r.header("www-authenticate"),
        Some(want),
        "{what}: {}",
        r.describe()
    );
    assert_no_echo(r, credential, what);
}

/// Asserts a 403 `forbidden` naming `scope` in `WWW-Authenticate`.
fn assert_forbidden(r: &Reply, scope: &str, credential: &str, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.describe());
    assert_eq!(r.json()["error"]["code"], "forbidden", "{what}: {}", r.text);
    assert_eq!(
        r.header("www-authenticate"),
        Some(format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"").as_str()),
        "{what}"
    );
    assert_no_echo(r, credential, what);
}

/// The parts of a credential that must never be echoed: all of it and, for a JWT, its
/// payload and signature.
fn credential_parts(credential: &str) -> Vec<&str> {
    let mut parts = vec![credential];
    if credential.matches('.').count() == 2 {
        parts.extend(credential.split('.').skip(1).filter(|p| p.len() >= 16));
    }
    parts.retain(|p| p.len() >= 8);
    parts
}

fn assert_no_echo(r: &Reply, credential: &str, what: &str) {
    for p in credential_parts(credential) {
        assert!(
            !r.text.contains(p),
            "{what}: the body echoes the credential"
        );
        for (name, v) in &r.headers {
            assert!(
                !v.as_bytes().windows(p.len()).any(|w| w == p.as_bytes()),
                "{what}: response header {name} echoes the credential"
            );
        }
    }
}

/// Asserts that nothing the gateway printed contains any of `credentials`.
fn assert_output_clean(gw: &Gateway, credentials: &[String]) {
    let out = gw.output();
    for c in credentials {
        for p in credential_parts(c) {
            assert!(
                !out.contains(p),
                "the gateway's output contains a credential ({} chars of it)",
                p.len()
            );
        }
    }
}

fn auth_failures(text: &str, route: &str, reason: &str) -> f64 {
    metric(
        text,
        "gateway_auth_failures_total",
        &[("route", route), ("reason", reason)],
    )
}

/// Every `gateway_auth_failures_total` sample of a route, as `reason -> count`.
fn failures_by_reason(text: &str, route: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for reason in [
        "missing",
        "malformed",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "issuer",
        "audience",
        "unknown_key",
        "algorithm",
        "scope",
    ] {
        let n = auth_failures(text, route, reason);
        if n > 0.0 {
            out.push((reason.to_string(), n));
        }
    }
    out
}

/// Sends `token` to `path` and asserts a 401 counted under exactly `reason` (one more
/// than before, and no other reason moved).
async fn assert_refused(
    gw: &Gateway,
    route: &str,
    path: &str,
    token: &str,
    reason: &str,
    what: &str,
) {
    let before = failures_by_reason(&gw.metrics().await, route);
    let r = get(gw, path, Some(token)).await;
    assert_unauthorized(&r, true, token, what);
    let after = failures_by_reason(&gw.metrics().await, route);
    let mut want = before.clone();
    match want.iter_mut().find(|(k, _)| k == reason) {
        Some((_, n)) => *n += 1.0,
        None => {
            want.push((reason.to_string(), 1.0));
        }
    }
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let mut after_sorted = after.clone();
    after_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        after_sorted, want,
        "{what}: expected one more {reason:?} failure on route {route} (before {before:?})"
    );
}

/// Polls until `cond` holds, up to `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Helpers: a JWKS server
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct JwksState {
    /// The document served now.
    doc: Mutex<String>,
    /// Answer 500 instead of the document.
    fail: AtomicBool,
    /// Requests received.
    fetches: AtomicUsize,
    /// Answers finished (counted just before the answer is sent).
    answered: AtomicUsize,
    /// How long the very first request waits before it is answered.
    first_delay: Mutex<Option<Duration>>,
}

/// A JWKS endpoint at `/jwks.json` that counts fetches and whose key set, delay and
/// failure mode the test changes over time.
struct JwksServer {
    addr: SocketAddr,
    state: Arc<JwksState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(doc: String, first_delay: Option<Duration>) -> JwksServer {
        let state = Arc::new(JwksState::default());
        *state.doc.lock().unwrap() = doc;
        *state.first_delay.lock().unwrap() = first_delay;
        let s = state.clone();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let s = s.clone();
                async move {
                    let n = s.fetches.fetch_add(1, Ordering::SeqCst);
                    let delay = if n == 0 {
                        s.first_delay.lock().unwrap().take()
                    } else {
                        None
                    };
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    let answer = if s.fail.load(Ordering::SeqCst) {
                        (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            "down".to_string(),
                        )
                    } else {
                        (axum::http::StatusCode::OK, s.doc.lock().unwrap().clone())
                    };
                    s.answered.fetch_add(1, Ordering::SeqCst);
                    (
                        answer.0,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        answer.1,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind jwks");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        JwksServer { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    fn serve(&self, doc: String) {
        *self.state.doc.lock().unwrap() = doc;
    }

    fn fail(&self, fail: bool) {
        self.state.fail.store(fail, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------
// 1. Algorithms
// ---------------------------------------------------------------------------------------

const HS256_SECRET: &str = "test-only-hs256-secret-0123456789abcdef";
const HS384_SECRET: &str = "test-only-hs384-secret-0123456789abcdef0123456789";
const HS512_SECRET: &str = "test-only-hs512-secret-0123456789abcdef0123456789abcdef0123456789";

#[tokio::test]
async fn every_listed_algorithm_is_accepted_and_others_are_refused() {
    let up = Upstream::start("u").await;
    let body = format!(
        r#"jwt_providers:
  multi:
    issuer: "{ISS}"
    audiences: [{AUD}]
    algorithms: [HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384, EdDSA]
    keys:
      - {{ kid: hs256, alg: HS256, secret_env: AUTH_TEST_HS256 }}
      - {{ kid: hs384, alg: HS384, secret_env: AUTH_TEST_HS384 }}
      - {{ kid: hs512, alg: HS512, secret_env: AUTH_TEST_HS512 }}
      - {{ kid: rsa-1, pem_file: "{rsa}" }}
      - {{ kid: ec-p256, alg: ES256, pem_file: "{p256}" }}
      - {{ kid: ec-p384, alg: ES384, pem_file: "{p384}" }}
      - {{ kid: ed25519, pem_file: "{ed}" }}
  narrow:
    issuer: "{ISS}"
    audiences: [{AUD}]
    algorithms: [RS256]
    keys:
      - {{ kid: rsa-1, pem_file: "{rsa}" }}
      - {{ kid: ec-p256, pem_file: "{p256}" }}
routes:
{multi}{narrow}"#,
        rsa = pub_pem("rsa-1"),
        p256 = pub_pem("ec-p256"),
        p384 = pub_pem("ec-p384"),
        ed = pub_pem("ed25519"),
        multi = route("multi", "/multi/*", "[jwt:multi]", ""),
        narrow = route("narrow", "/narrow/*", "[jwt:narrow]", ""),
    );
    let config = ConfigDir::new("", &[("p.yaml", &policy(&up.target(), &body))]);
    let gw = Gateway::start_in(
        config,
        &[
            ("AUTH_TEST_HS256", HS256_SECRET),
            ("AUTH_TEST_HS384", HS384_SECRET),
            ("AUTH_TEST_HS512", HS512_SECRET),
        ],
    )
    .await;
    let mut sent = Vec::new();

    let rsa = signing_key("rsa-1");
    let accepted: Vec<(Algorithm, &str, EncodingKey)> = vec![
        (Algorithm::HS256, "hs256", hmac(HS256_SECRET)),
        (Algorithm::HS384, "hs384", hmac(HS384_SECRET)),
        (Algorithm::HS512, "hs512", hmac(HS512_SECRET)),
        (Algorithm::RS256, "rsa-1", rsa.clone()),
        (Algorithm::RS384, "rsa-1", rsa.clone()),
        (Algorithm::RS512, "rsa-1", rsa.clone()),
        (Algorithm::PS256, "rsa-1", rsa.clone()),
        (Algorithm::ES256, "ec-p256", signing_key("ec-p256")),
        (Algorithm::ES384, "ec-p384", signing_key("ec-p384")),
        (Algorithm::EdDSA, "ed25519", signing_key("ed25519")),
    ];
    for (alg, kid, key) in &accepted {
        let claims = claims_with(json!({ "sub": format!("sub-{alg:?}") }));
        let t = token(*alg, Some(kid), key, &claims);
        let r = get(&gw, "/multi/x", Some(&t)).await;
        assert_ok(&r, &format!("{alg:?}"));
        assert_eq!(r.json()["path"], "/multi/x");
        // The token itself goes upstream untouched (it is the upstream's to read too).
        assert_eq!(
            r.upstream_header("authorization"),
            Some(format!("Bearer {t}")),
            "{alg:?}"
        );
        assert_eq!(
            r.upstream_header("x-consumer-id").as_deref(),
            Some(format!("sub-{alg:?}").as_str()),
            "{alg:?}"
        );
        sent.push(t);
    }

    // PS384 fits the RSA key but is not in the provider's list.
    let t = token(Algorithm::PS384, Some("rsa-1"), &rsa, &good_claims());
    assert_refused(
        &gw,
        "multi",
        "/multi/x",
        &t,
        "algorithm",
        "PS384 not listed",
    )
    .await;
    sent.push(t);
    // On a provider that lists RS256 only, every other algorithm is refused, even with a
    // key that exists for it.
    for (alg, kid, key) in [
        (Algorithm::RS384, "rsa-1", rsa.clone()),
        (Algorithm::PS256, "rsa-1", rsa.clone()),
        (Algorithm::ES256, "ec-p256", signing_key("ec-p256")),
        (Algorithm::HS256, "hs256", hmac(HS256_SECRET)),
    ] {
        let t = token(alg, Some(kid), &key, &good_claims());
        assert_refused(
            &gw,
            "narrow",
            "/narrow/x",
            &t,
            "algorithm",
            &format!("{alg:?} on narrow"),
        )
        .await;
        sent.push(t);
    }
    let t = token(Algorithm::RS256, Some("rsa-1"), &rsa, &good_claims());
    assert_ok(&get(&gw, "/narrow/x", Some(&t)).await, "RS256 on narrow");

    // A wrong HMAC secret is a bad signature.
    let t = token(
        Algorithm::HS256,
        Some("hs256"),
        &hmac("not-the-secret-at-all-0123456789"),
        &good_claims(),
    );
    assert_refused(
        &gw,
        "multi",
        "/multi/x",
        &t,
        "bad_signature",
        "wrong secret",
    )
    .await;
    sent.push(t);

    // `alg: none`, with or without a signature, in any spelling, is never accepted.
    let m = gw.metrics().await;
    let before = auth_failures(&m, "multi", "malformed") + auth_failures(&m, "multi", "algorithm");
    let claims = b64(good_claims().to_string().as_bytes());
    let mut nones = Vec::new();
    for alg in ["none", "None", "NONE"] {
        let h = b64(json!({ "alg": alg, "typ": "JWT", "kid": "hs256" })
            .to_string()
            .as_bytes());
        nones.push(format!("{h}.{claims}."));
        let h = b64(json!({ "alg": alg, "typ": "JWT" }).to_string().as_bytes());
        nones.push(format!("{h}.{claims}."));
        nones.push(format!("{h}.{claims}.{}", b64(b"signature")));
    }
    for t in &nones {
        let r = get(&gw, "/multi/x", Some(t)).await;
        assert_unauthorized(&r, true, t, &format!("alg none token {t}"));
    }
    let m = gw.metrics().await;
    let after = auth_failures(&m, "multi", "malformed") + auth_failures(&m, "multi", "algorithm");
    assert_eq!(
        after - before,
        nones.len() as f64,
        "every alg:none token counted"
    );
    sent.extend(nones);

    assert_output_clean(&gw, &sent);
}

// ---------------------------------------------------------------------------------------
// 2. Claims
// ---------------------------------------------------------------------------------------

const CLAIMS_SECRET: &str = "test-only-claims-secret-0123456789abcdef";

#[tokio::test]
async fn issuer_audience_expiry_and_leeway_are_checked() {
    let up = Upstream::start("u").await;
    let provider = |name: &str, leeway: &str| {
        format!(
            "  {name}:\n    issuer: \"{ISS}\"\n    audiences: [{AUD}, billing-api]\n    algorithms: [HS256]\n    keys:\n      - {{ kid: k, alg: HS256, secret_env: AUTH_TEST_CLAIMS }}\n    leeway: {leeway}\n"
        )
    };
    let body = format!(
        "jwt_providers:\n{}{}routes:\n{}{}",
        provider("loose", "30s"),
        provider("tight", "1s"),
        route("loose", "/loose/*", "[jwt:loose]", ""),
        route("tight", "/tight/*", "[jwt:tight]", ""),
    );
    let config = ConfigDir::new("", &[("p.yaml", &policy(&up.target(), &body))]);
    let gw = Gateway::start_in(config, &[("AUTH_TEST_CLAIMS", CLAIMS_SECRET)]).await;
    let key = hmac(CLAIMS_SECRET);
    let tok = |changes: Value| token(Algorithm::HS256, Some("k"), &key, &claims_with(changes));
    let mut sent = Vec::new();

    for (what, changes) in [
        ("plain", json!({})),
        ("second audience", json!({ "aud": "billing-api" })),
        ("audience array", json!({ "aud": ["someone-else", AUD] })),
        ("nbf in the past", json!({ "nbf": now() - 60 })),
    ] {
        let t = tok(changes);
        assert_ok(&get(&gw, "/loose/a", Some(&t)).await, what);
        assert_ok(&get(&gw, "/tight/a", Some(&t)).await, what);
        sent.push(t);
    }

    for (what, changes, reason) in [
        (
            "other issuer",
            json!({ "iss": "https://evil.test/" }),
            "issuer",
        ),
        (
            "issuer without its slash",
            json!({ "iss": "https://issuer.test" }),
            "issuer",
        ),
        ("no issuer", json!({ "iss": null }), "issuer"),
        (
            "other audience",
            json!({ "aud": "someone-else" }),
            "audience",
        ),
        ("other audiences", json!({ "aud": ["x", "y"] }), "audience"),
        ("no audience", json!({ "aud": null }), "audience"),
        ("no exp", json!({ "exp": null }), "malformed"),
        (
            "expired an hour ago",
            json!({ "exp": now() - 3600 }),
            "expired",
        ),
        (
            "nbf in an hour",
            json!({ "nbf": now() + 3600 }),
            "not_yet_valid",
        ),
    ] {
        let t = tok(changes);
        assert_refused(&gw, "loose", "/loose/a", &t, reason, what).await;
        sent.push(t);
    }

    // Leeway: expired 10 s ago, or valid 10 s from now.
    let t = tok(json!({ "exp": now() - 10 }));
    assert_ok(
        &get(&gw, "/loose/a", Some(&t)).await,
        "expired 10s ago, leeway 30s",
    );
    assert_refused(
        &gw,
        "tight",
        "/tight/a",
        &t,
        "expired",
        "expired 10s ago, leeway 1s",
    )
    .await;
    sent.push(t);
    let t = tok(json!({ "nbf": now() + 10 }));
    assert_ok(
        &get(&gw, "/loose/a", Some(&t)).await,
        "nbf in 10s, leeway 30s",
    );
    assert_refused(
        &gw,
        "tight",
        "/tight/a",
        &t,
        "not_yet_valid",
        "nbf in 10s, leeway 1s",
    )
    .await;
    sent.push(t);
    let t = tok(json!({ "exp": now() - 120 }));
    assert_refused(
        &gw,
        "loose",
        "/loose/a",
        &t,
        "expired",
        "expired 2 min ago, leeway 30s",
    )
    .await;
    sent.push(t);

    let m = gw.metrics().await;
    assert_eq!(auth_failures(&m, "loose", "issuer"), 3.0);
    assert_eq!(auth_failures(&m, "loose", "audience"), 3.0);
    assert_eq!(auth_failures(&m, "loose", "expired"), 2.0);
    assert_eq!(auth_failures(&m, "loose", "not_yet_valid"), 1.0);
    assert_eq!(auth_failures(&m, "tight", "expired"), 1.0);
    assert_eq!(auth_failures(&m, "tight", "not_yet_valid"), 1.0);
    assert_output_clean(&gw, &sent);
}

// ---------------------------------------------------------------------------------------
// 3. Key choice
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn keys_are_chosen_by_kid_or_by_algorithm() {
    let up = Upstream::start("u").await;
    let ed_jwk = jwk("ed25519", None, None);
    let p384_jwk = jwk("ec-p384", Some("inline-384"), Some("ES384"));
    let body = format!(
        r#"jwt_providers:
  kc:
    issuer: "{ISS}"
    audiences: [{AUD}]
    algorithms: [RS256, ES256, ES384, EdDSA]
    keys:
      - {{ kid: r1, alg: RS256, pem_file: "{r1}" }}
      - {{ kid: r2, alg: RS256, pem_file: "{r2}" }}
      - {{ alg: ES256, pem_file: "{p256}" }}
      - {{ kid: j1, jwk: {ed_jwk} }}
      - {{ jwk: {p384_jwk} }}
routes:
{r}"#,
        r1 = pub_pem("rsa-1"),
        r2 = pub_pem("rsa-2"),
        p256 = pub_pem("ec-p256"),
        r = route("kc", "/kc/*", "[jwt:kc]", ""),
    );
    let gw = Gateway::start("", &[("p.yaml", &policy(&up.target(), &body))]).await;
    let (rsa1, rsa2) = (signing_key("rsa-1"), signing_key("rsa-2"));
    let mut sent = Vec::new();

    for (what, alg, kid, key) in [
        ("kid r1", Algorithm::RS256, Some("r1"), &rsa1),
        ("kid r2", Algorithm::RS256, Some("r2"), &rsa2),
        ("no kid, rsa-1", Algorithm::RS256, None, &rsa1),
        ("no kid, rsa-2", Algorithm::RS256, None, &rsa2),
        (
            "no kid, ES256 (the only EC P-256 key)",
            Algorithm::ES256,
            None,
            &signing_key("ec-p256"),
        ),
        (
            "inline JWK by kid",
            Algorithm::EdDSA,
            Some("j1"),
            &signing_key("ed25519"),
        ),
        (
            "inline JWK without kid",
            Algorithm::EdDSA,
            None,
            &signing_key("ed25519"),
        ),
        (
            "inline JWK with its own kid",
            Algorithm::ES384,
            Some("inline-384"),
            &signing_key("ec-p384"),
        ),
    ] {
        let t = token(alg, kid, key, &good_claims());
        assert_ok(&get(&gw, "/kc/a", Some(&t)).await, what);
        sent.push(t);
    }

    for (what, alg, kid, key, reason) in [
        (
            "kid r1 but signed by rsa-2",
            Algorithm::RS256,
            Some("r1"),
            &rsa2,
            "bad_signature",
        ),
        (
            "unknown kid",
            Algorithm::RS256,
            Some("r3"),
            &rsa1,
            "unknown_key",
        ),
        (
            "kid of an RSA key, ES256 token",
            Algorithm::ES256,
            Some("r1"),
            &signing_key("ec-p256"),
            "algorithm",
        ),
    ] {
        let t = token(alg, kid, key, &good_claims());
        assert_refused(&gw, "kc", "/kc/a", &t, reason, what).await;
        sent.push(t);
    }
    assert_output_clean(&gw, &sent);
}

// ---------------------------------------------------------------------------------------
// 4. Attacks
// ---------------------------------------------------------------------------------------

const ATTACK_SECRET: &str = "test-only-attack-secret-0123456789abcdef";

#[tokio::test]
async fn attacks_are_refused_cleanly() {
    let up = Upstream::start("u").await;
    let rsa_pub = pub_pem("rsa-1");
    let body = format!(
        r#"jwt_providers:
  mixed:
    issuer: "{ISS}"
    audiences: [{AUD}]
    algorithms: [RS256, HS256]
    keys:
      - {{ kid: r1, pem_file: "{rsa_pub}" }}
      - {{ kid: h1, alg: HS256, secret_env: AUTH_TEST_ATTACK }}
  rsonly:
    issuer: "{ISS}"
    audiences: [{AUD}]
    algorithms: [RS256]
    keys:
      - {{ kid: r1, pem_file: "{rsa_pub}" }}
  other:
    issuer: "https://other-issuer.test/"
    audiences: [{AUD}]
    keys:
      - {{ kid: r1, pem_file: "{rsa_pub}" }}
routes:
{mixed}{rsonly}{other}"#,
        mixed = route("mixed", "/mixed/*", "[jwt:mixed]", ""),
        rsonly = route("rsonly", "/rsonly/*", "[jwt:rsonly]", ""),
        other = route("other", "/other/*", "[jwt:other]", ""),
    );
    let config = ConfigDir::new("", &[("p.yaml", &policy(&up.target(), &body))]);
    let gw = Gateway::start_in(config, &[("AUTH_TEST_ATTACK", ATTACK_SECRET)]).await;
    let rsa = signing_key("rsa-1");
    let good = token(Algorithm::RS256, Some("r1"), &rsa, &good_claims());
    let mut sent = vec![good.clone()];
    assert_ok(&get(&gw, "/mixed/a", Some(&good)).await, "RS256 on mixed");
    assert_ok(&get(&gw, "/rsonly/a", Some(&good)).await, "RS256 on rsonly");
    let hs = token(
        Algorithm::HS256,
        Some("h1"),
        &hmac(ATTACK_SECRET),
        &good_claims(),
    );
    assert_ok(&get(&gw, "/mixed/a", Some(&hs)).await, "HS256 on mixed");
    sent.push(hs);

    // Algorithm confusion: HS256 whose HMAC secret is the RSA public key as published.
    let pem = std::fs::read(&rsa_pub).expect("read public key");
    let pem_trimmed = String::from_utf8(pem.clone()).unwrap().trim().to_string();
    for secret in [pem.clone(), pem_trimmed.into_bytes()] {
        let key = EncodingKey::from_secret(&secret);
        for (kid, route_name, path, reason) in [
            (Some("r1"), "mixed", "/mixed/a", "algorithm"),
            (None, "mixed", "/mixed/a", "bad_signature"),
            (Some("r1"), "rsonly", "/rsonly/a", "algorithm"),
            (None, "rsonly", "/rsonly/a", "algorithm"),
        ] {
            let t = token(Algorithm::HS256, kid, &key, &good_claims());
            let what = format!("HS256 keyed with the RSA public key, kid {kid:?}, on {route_name}");
            assert_refused(&gw, route_name, path, &t, reason, &what).await;
            sent.push(t);
        }
    }

    // Hostile kid values: refused as unknown keys, nothing else happens.
    for kid in [
        "../../etc/passwd",
        "/etc/passwd",
        "' OR 1=1 --",
        "\"; DROP TABLE keys; --",
        "file:///etc/passwd",
        "http://127.0.0.1:1/jwks.json",
        "r1\u{0}",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "{{claims.sub}}",
        &"k".repeat(2000),
    ] {
        let t = token(Algorithm::RS256, Some(kid), &rsa, &good_claims());
        assert_refused(
            &gw,
            "mixed",
            "/mixed/a",
            &t,
            "unknown_key",
            &format!("kid {kid:?}"),
        )
        .await;
        sent.push(t);
    }
    // A kid that is not a string is not a JWT header at all.
    let t = raw_token(
        &json!({ "alg": "RS256", "kid": 7 }),
        &good_claims(),
        Algorithm::RS256,
        &rsa,
    );
    assert_refused(&gw, "mixed", "/mixed/a", &t, "malformed", "numeric kid").await;
    sent.push(t);
    assert_ok(
        &get(&gw, "/mixed/a", Some(&good)).await,
        "after hostile kids",
    );

    // Size: a valid token just under 8 KiB is accepted, one over it is refused unread.
    let sized = |n: usize| {
        let mut pad = 1;
        loop {
            let t = token(
                Algorithm::RS256,
                Some("r1"),
                &rsa,
                &claims_with(json!({ "pad": "p".repeat(pad) })),
            );
            if t.len() >= n {
                return t;
            }
            pad += (n - t.len()).div_ceil(2).max(1);
        }
    };
    let under = sized(8000);
    assert!(under.len() <= 8192, "{}", under.len());
    assert_ok(
        &get(&gw, "/mixed/a", Some(&under)).await,
        "token of 8000 bytes",
    );
    let over = sized(8193);
    assert!(over.len() > 8192);
    assert_refused(
        &gw,
        "mixed",
        "/mixed/a",
        &over,
        "malformed",
        "token over 8 KiB",
    )
    .await;
    sent.push(under);
    sent.push(over);

    // A huge Authorization header: refused one way or another, nothing crashes.
    for size in [64 << 10, 1 << 20, 4 << 20] {
        let t = "A".repeat(size);
        let reply = client()
            .get(gw.url("/mixed/a"))
            .header("authorization", format!("Bearer {t}"))
            .send()
            .await;
        // Closing the connection on an oversized header is a fine answer too.
        if let Ok(r) = reply {
            let status = r.status().as_u16();
            assert!(
                (400..500).contains(&status),
                "a {size}-byte Authorization header answered {status}"
            );
            let text = r.text().await.unwrap_or_default();
            assert!(!text.contains(&t[..64]), "the answer echoes the header");
        }
        assert_ok(
            &get(&gw, "/mixed/a", Some(&good)).await,
            &format!("after a {size}-byte header"),
        );
    }

    // Malformed tokens.
    let h = b64(json!({ "alg": "RS256", "kid": "r1" })
        .to_string()
        .as_bytes());
    let p = b64(good_claims().to_string().as_bytes());
    let sig = good.rsplit('.').next().unwrap().to_string();
    for (what, t) in [
        ("two segments", format!("{h}.{p}")),
        ("four segments", format!("{h}.{p}.{sig}.{sig}")),
        (
            "five segments (JWE-like)",
            format!("{h}.{p}.{sig}.{sig}.{sig}"),
        ),
        ("garbage base64", "!!!!.@@@@.####".to_string()),
        (
            "non-JSON header",
            format!("{}.{p}.{sig}", b64(b"not json at all")),
        ),
        (
            "header is a JSON array",
            format!("{}.{p}.{sig}", b64(b"[\"RS256\"]")),
        ),
        (
            "non-JSON payload, validly signed",
            signed(&h, &b64(b"not json"), &rsa),
        ),
        (
            "payload a JSON string, validly signed",
            signed(&h, &b64(b"\"claims\""), &rsa),
        ),
        ("empty segments", "..".to_string()),
        ("just dots and text", "a.b.c".to_string()),
    ] {
        assert_refused(&gw, "mixed", "/mixed/a", &t, "malformed", what).await;
        sent.push(t);
    }
    // Tampering: the good token's signature over other claims.
    let forged = format!(
        "{h}.{}.{sig}",
        b64(claims_with(json!({ "sub": "admin" }))
            .to_string()
            .as_bytes())
    );
    assert_refused(
        &gw,
        "mixed",
        "/mixed/a",
        &forged,
        "bad_signature",
        "claims swapped under a signature",
    )
    .await;
    sent.push(forged);

    // A critical header extension the gateway does not understand.
    for crit in [json!(["exp"]), json!(["b64"]), json!([])] {
        let t = raw_token(
            &json!({ "alg": "RS256", "kid": "r1", "typ": "JWT", "crit": crit, "exp": now() + 60, "b64": true }),
            &good_claims(),
            Algorithm::RS256,
            &rsa,
        );
        assert_refused(
            &gw,
            "mixed",
            "/mixed/a",
            &t,
            "malformed",
            &format!("crit {crit}"),
        )
        .await;
        sent.push(t);
    }

    // A valid signature from the same key, but for another issuer, and the other way round.
    let foreign = token(
        Algorithm::RS256,
        Some("r1"),
        &rsa,
        &claims_with(json!({ "iss": "https://other-issuer.test/" })),
    );
    assert_refused(
        &gw,
        "mixed",
        "/mixed/a",
        &foreign,
        "issuer",
        "another issuer's token",
    )
    .await;
    assert_ok(
        &get(&gw, "/other/a", Some(&foreign)).await,
        "the other issuer's own route",
    );
    assert_refused(
        &gw,
        "other",
        "/other/a",
        &good,
        "issuer",
        "our token on the other issuer",
    )
    .await;
    sent.push(foreign);

    // Other schemes and empty bearer values are "no credentials".
    for value in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "Token abc.def.ghi",
        "bearer",
    ] {
        let r = send(
            client()
                .get(gw.url("/mixed/a"))
                .header("authorization", value),
        )
        .await;
        assert_unauthorized(
            &r,
            false,
            "dXNlcjpwYXNz",
            &format!("Authorization: {value}"),
        );
    }

    // Still healthy, still serving.
    let r = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_ok(&get(&gw, "/mixed/a", Some(&good)).await, "at the end");
    assert_output_clean(&gw, &sent);
}

// ---------------------------------------------------------------------------------------
// 5. Remote key sets (JWKS)
// ---------------------------------------------------------------------------------------

/// A provider `remote` with only a `jwks_url` (plus `extra` lines), and route `remote`.
fn jwks_policy(target: &str, url: &str, extra: &str) -> String {
    let body = format!(
        "jwt_providers:\n  remote:\n    issuer: \"{ISS}\"\n    audiences: [{AUD}]\n    algorithms: [RS256, ES256]\n    jwks_url: \"{url}\"\n{extra}routes:\n{}",
        route("remote", "/remote/*", "[jwt:remote]", "")
    );
    policy(target, &body)
}

fn jwks_fetches(text: &str, result: &str) -> f64 {
    metric(
        text,
        "gateway_jwks_fetches_total",
        &[("provider", "remote"), ("result", result)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwks_readiness_rotation_and_single_flight() {
    let up = Upstream::start("u").await;
    // The first answer takes 2 s: the gateway must not be ready meanwhile.
    let jwks = JwksServer::start(
        jwks_doc(&[("rsa-1", "k1", "RS256")]),
        Some(Duration::from_secs(2)),
    )
    .await;
    let config = ConfigDir::new(
        "",
        &[("p.yaml", &jwks_policy(&up.target(), &jwks.url(), ""))],
    );
    let readyz = format!("http://127.0.0.1:{}/readyz", config.admin);
    let state = jwks.state.clone();
    let watch = async move {
        let c = client();
        let (mut not_ready_while_pending, mut ready_too_early) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = c.get(&readyz).send().await {
                // Read after the answer: if the key set was still unanswered then, it was
                // unanswered when /readyz was computed.
                let pending = state.answered.load(Ordering::SeqCst) == 0;
                match (r.status().as_u16(), pending) {
                    (503, true) => not_ready_while_pending += 1,
                    (200, true) => ready_too_early += 1,
                    (200, false) => break,
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        (not_ready_while_pending, ready_too_early)
    };
    let started = Instant::now();
    let (gw, (not_ready, too_early)) = tokio::join!(Gateway::start_in(config, &[]), watch);
    assert_eq!(
        too_early, 0,
        "/readyz said 200 before the first JWKS fetch was answered"
    );
    assert!(
        not_ready > 0,
        "/readyz was never seen 503 while the JWKS fetch was pending"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "ready after {:?}, before the JWKS answered",
        started.elapsed()
    );
    let baseline = jwks.fetches();
    assert!(baseline >= 1);

    let rsa1 = signing_key("rsa-1");
    let rsa2 = signing_key("rsa-2");
    let k1 = token(Algorithm::RS256, Some("k1"), &rsa1, &good_claims());
    let mut sent = vec![k1.clone()];
    for _ in 0..3 {
        assert_ok(&get(&gw, "/remote/a", Some(&k1)).await, "k1 from the JWKS");
    }
    // A token without kid is verified by algorithm against the remote keys too.
    let nokid = token(Algorithm::RS256, None, &rsa1, &good_claims());
    assert_ok(
        &get(&gw, "/remote/a", Some(&nokid)).await,
        "no kid, remote key",
    );
    sent.push(nokid);
    // A known kid with a bad signature causes no fetch.
    let bad = token(Algorithm::RS256, Some("k1"), &rsa2, &good_claims());
    assert_refused(
        &gw,
        "remote",
        "/remote/a",
        &bad,
        "bad_signature",
        "k1 signed by rsa-2",
    )
    .await;
    sent.push(bad);
    assert_eq!(jwks.fetches(), baseline, "known kids cause no fetch");

    // Rotation: the provider now publishes k2 only. Twenty concurrent requests with the
    // new kid cause exactly one fetch, and all succeed.
    jwks.serve(jwks_doc(&[("rsa-2", "k2", "RS256")]));
    let k2 = token(Algorithm::RS256, Some("k2"), &rsa2, &good_claims());
    sent.push(k2.clone());
    let replies =
        futures::future::join_all((0..20).map(|_| get(&gw, "/remote/a", Some(&k2)))).await;
    for r in &replies {
        assert_ok(r, "k2 after rotation");
    }
    assert_eq!(
        jwks.fetches(),
        baseline + 1,
        "20 concurrent requests with a new kid must cause exactly one fetch"
    );

    // Within 30 s, further unknown kids (and the retired k1) cause no fetch at all.
    let k9 = token(Algorithm::RS256, Some("k9"), &rsa1, &good_claims());
    let replies =
        futures::future::join_all((0..10).map(|_| get(&gw, "/remote/a", Some(&k9)))).await;
    for r in &replies {
        assert_unauthorized(r, true, &k9, "unknown kid k9");
    }
    assert_refused(&gw, "remote", "/remote/a", &k1, "unknown_key", "retired k1").await;
    assert_eq!(jwks.fetches(), baseline + 1, "no refetch within 30 s");
    assert_ok(&get(&gw, "/remote/a", Some(&k2)).await, "k2 still");
    sent.push(k9);

    let m = gw.metrics().await;
    assert_eq!(jwks_fetches(&m, "success"), (baseline + 1) as f64, "{m}");
    assert_eq!(jwks_fetches(&m, "failure"), 0.0);
    assert_eq!(auth_failures(&m, "remote", "unknown_key"), 11.0);
    assert_output_clean(&gw, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwks_refreshes_periodically_and_keeps_the_last_good_set() {
    let up = Upstream::start("u").await;
    let jwks = JwksServer::start(jwks_doc(&[("ec-p256", "e1", "ES256")]), None).await;
    let gw = Gateway::start(
        "",
        &[(
            "p.yaml",
            &jwks_policy(&up.target(), &jwks.url(), "    jwks_refresh: 1s\n"),
        )],
    )
    .await;
    let e1 = token(
        Algorithm::ES256,
        Some("e1"),
        &signing_key("ec-p256"),
        &good_claims(),
    );
    assert_ok(&get(&gw, "/remote/a", Some(&e1)).await, "e1");

    // Refetched about every second.
    let first = jwks.fetches();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let later = jwks.fetches();
    assert!(
        later >= first + 2,
        "fetches went from {first} to {later} in 3.5 s"
    );
    assert!(
        later <= first + 6,
        "fetches went from {first} to {later} in 3.5 s"
    );
    let m = gw.metrics().await;
    assert!(jwks_fetches(&m, "success") >= later as f64 - 1.0, "{m}");

    // The provider fails: fetches go on, are counted as failures, the keys stay.
    jwks.fail(true);
    let failing_from = jwks.fetches();
    eventually(
        Duration::from_secs(10),
        "two failed JWKS fetches",
        || async { jwks_fetches(&gw.metrics().await, "failure") >= 2.0 },
    )
    .await;
    assert!(jwks.fetches() >= failing_from + 2);
    for _ in 0..3 {
        assert_ok(
            &get(&gw, "/remote/a", Some(&e1)).await,
            "e1 while the JWKS fails",
        );
    }
    let r = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "a failing JWKS does not make a ready gateway unready"
    );

    // Back with a rotated set: picked up by the periodic refresh.
    jwks.serve(jwks_doc(&[("rsa-1", "r1", "RS256")]));
    jwks.fail(false);
    let r1 = token(
        Algorithm::RS256,
        Some("r1"),
        &signing_key("rsa-1"),
        &good_claims(),
    );
    let before = jwks.fetches();
    eventually(
        Duration::from_secs(10),
        "a refetch after recovery",
        || async { jwks.fetches() > before + 1 },
    )
    .await;
    assert_ok(&get(&gw, "/remote/a", Some(&r1)).await, "r1 after recovery");
    assert_refused(&gw, "remote", "/remote/a", &e1, "unknown_key", "e1 retired").await;

    let m = gw.metrics().await;
    assert!(m.contains("gateway_jwks_fetches_total{"), "{m}");
    assert!(jwks_fetches(&m, "failure") >= 2.0);
    // The failure is logged.
    gw.wait_output("JWKS fetch failed").await;
    assert_output_clean(&gw, &[e1, r1]);
}

// ---------------------------------------------------------------------------------------
// 6.–8. API keys, consumers and claim headers, scopes
// ---------------------------------------------------------------------------------------

const ACME_KEY: &str = "test-only-acme-key-4f9a2c";
const BETA_KEY: &str = "test-only-beta-key-77d01e";
const IDENT_SECRET: &str = "test-only-identity-secret-0123456789abcdef";

/// Provider `corp` (HS256, consumer from `azp`, `sub`/`tenant` forwarded), API keys in a
/// header and a query parameter, consumers `acme` (orders:read) and `beta` (orders:read,
/// orders:write), and routes:
/// - `keyed` `/keyed/*`: api_key only;
/// - `either` `/either/*`: jwt:corp or api_key;
/// - `scoped` `/scoped/*`: either, scopes orders:read and orders:write;
/// - `templated` `/templated/*`: jwt:corp, rewritten to `/users/{claims.sub}/as/{consumer.id}`;
/// - `keyed-templated` `/keyed-templated`: api_key, rewritten to `/consumers/{consumer.id}`;
/// - `public` `/public/*`: auth none;
/// - provider `arr` reads scopes from the `scp` claim; route `scp` `/scp` needs orders:write.
fn identity_policy(target: &str) -> String {
    let body = format!(
        r#"jwt_providers:
  corp:
    issuer: "{ISS}"
    audiences: [{AUD}]
    algorithms: [HS256]
    keys:
      - {{ kid: c1, alg: HS256, secret_env: AUTH_TEST_IDENT }}
    consumer_claim: azp
    forward_claims: {{ sub: X-User-Id, tenant: X-Tenant-Id }}
  arr:
    issuer: "https://arr.test/"
    audiences: [{AUD}]
    keys:
      - {{ kid: c1, alg: HS256, secret_env: AUTH_TEST_IDENT }}
    scopes_claim: scp
api_keys:
  header: X-API-Key
  query: api_key
consumers:
  acme:
    api_keys: ["{acme}"]
    scopes: [orders:read]
  beta:
    api_keys: ["{beta_old}", "{beta}"]
    scopes: [orders:read, orders:write]
routes:
{keyed}{either}{scoped}{templated}{keyed_templated}{public}{scp}"#,
        acme = key_hash(ACME_KEY),
        beta = key_hash(BETA_KEY),
        beta_old = key_hash("test-only-beta-old-key"),
        keyed = route("keyed", "/keyed/*", "[api_key]", ""),
        either = route("either", "/either/*", "[jwt:corp, api_key]", ""),
        scoped = route(
            "scoped",
            "/scoped/*",
            "[jwt:corp, api_key]",
            "scopes: [orders:read, orders:write]"
        ),
        templated = route(
            "templated",
            "/templated/*",
            "[jwt:corp]",
            "rewrite: { path: \"/users/{claims.sub}/as/{consumer.id}\" }"
        ),
        keyed_templated = route(
            "keyed-templated",
            "/keyed-templated",
            "[api_key]",
            "rewrite: { path: \"/consumers/{consumer.id}\" }"
        ),
        public = route("public", "/public/*", "none", ""),
        scp = route("scp", "/scp", "[jwt:arr]", "scopes: [orders:write]"),
    );
    policy(target, &body)
}

async fn identity_gateway(up: &Upstream) -> Gateway {
    let config = ConfigDir::new("", &[("p.yaml", &identity_policy(&up.target()))]);
    Gateway::start_in(config, &[("AUTH_TEST_IDENT", IDENT_SECRET)]).await
}

fn corp_token(changes: Value) -> String {
    token(
        Algorithm::HS256,
        Some("c1"),
        &hmac(IDENT_SECRET),
        &claims_with(changes),
    )
}

#[tokio::test]
async fn api_keys_in_header_or_query_are_checked_and_not_forwarded() {
    let up = Upstream::start("u").await;
    let gw = identity_gateway(&up).await;
    let c = client();

    // In the header: the consumer goes upstream, the key does not.
    let r = send(
        c.get(gw.url("/keyed/a?x=1"))
            .header("x-api-key", ACME_KEY)
            .header("x-consumer-id", "evil"),
    )
    .await;
    assert_ok(&r, "key in header");
    assert_eq!(r.upstream_header("x-consumer-id").as_deref(), Some("acme"));
    assert_eq!(
        r.upstream_header("x-api-key"),
        None,
        "the key went upstream: {}",
        r.text
    );
    assert_eq!(r.json()["query"], "x=1");

    // In the query: removed from the query, every other parameter intact and in order.
    let r = send(c.get(gw.url(&format!(
        "/keyed/a?first=1&api_key={BETA_KEY}&b=two%20words&api_keyx=keep&c="
    ))))
    .await;
    assert_ok(&r, "key in query");
    assert_eq!(r.upstream_header("x-consumer-id").as_deref(), Some("beta"));
    assert_eq!(r.json()["query"], "first=1&b=two%20words&api_keyx=keep&c=");
    assert!(
        !r.text.contains(BETA_KEY),
        "the key went upstream: {}",
        r.text
    );
    // The only parameter: no query left at all.
    let r = send(c.get(gw.url(&format!("/keyed/a?api_key={BETA_KEY}")))).await;
    assert_ok(&r, "key as the only parameter");
    assert_eq!(r.json()["query"], Value::Null, "{}", r.text);
    assert_eq!(r.json()["path"], "/keyed/a");
    // Both places: neither is forwarded.
    let r = send(
        c.get(gw.url(&format!("/keyed/a?api_key={BETA_KEY}&y=2")))
            .header("x-api-key", ACME_KEY),
    )
    .await;
    assert_ok(&r, "key in both places");
    assert_eq!(
        r.upstream_header("x-consumer-id").as_deref(),
        Some("acme"),
        "the header wins"
    );
    assert_eq!(r.json()["query"], "y=2");
    assert!(
        !r.text.contains(BETA_KEY) && !r.text.contains(ACME_KEY),
        "{}",
        r.text
    );
    // A consumer's second key works too.
    let r = send(
        c.get(gw.url("/keyed/a"))
            .header("x-api-key", "test-only-beta-old-key"),
    )
    .await;
    assert_eq!(r.upstream_header("x-consumer-id").as_deref(), Some("beta"));
    // `{consumer.id}` in a rewrite, for an API-key consumer.
    let r = send(
        c.get(gw.url("/keyed-templated"))
            .header("x-api-key", ACME_KEY),
    )
    .await;
    assert_ok(&r, "keyed template");
    assert_eq!(r.json()["path"], "/consumers/acme");

    // Unknown keys and no key.
    let unknown = "test-only-unknown-key-0000";
    let before = gw.metrics().await;
    let r = send(c.get(gw.url("/keyed/a")).header("x-api-key", unknown)).await;
    assert_unauthorized(&r, false, unknown, "unknown key in header");
    let r = send(c.get(gw.url(&format!("/keyed/a?api_key={unknown}")))).await;
    assert_unauthorized(&r, false, unknown, "unknown key in query");
    let r = send(c.get(gw.url("/keyed/a")).header("x-api-key", "")).await;
    assert_eq!(r.status, 401, "empty key");
    let r = send(c.get(gw.url("/keyed/a?other=1"))).await;
    assert_unauthorized(&r, false, "", "no key");
    assert_eq!(r.json()["error"]["message"], "credentials are required");
    // The hash is not the key.
    let r = send(
        c.get(gw.url("/keyed/a"))
            .header("x-api-key", key_hash(ACME_KEY)),
    )
    .await;
    assert_unauthorized(&r, false, &key_hash(ACME_KEY), "the hash as a key");
    // A bearer token is not an API key on an api_key-only route.
    let t = corp_token(json!({}));
    let r = get(&gw, "/keyed/a", Some(&t)).await;
    assert_eq!(r.status, 401, "a JWT on an api_key route: {}", r.describe());
    let after = gw.metrics().await;
    assert_eq!(
        auth_failures(&after, "keyed", "unknown_key")
            - auth_failures(&before, "keyed", "unknown_key"),
        4.0,
        "{after}"
    );
    assert!(
        auth_failures(&after, "keyed", "missing") - auth_failures(&before, "keyed", "missing")
            >= 2.0
    );

    // On a route taking either: a bad token does not hide a good key, a bad key does not
    // hide a good token.
    let r = send(
        c.get(gw.url("/either/a"))
            .bearer_auth("not.a.token")
            .header("x-api-key", ACME_KEY),
    )
    .await;
    assert_ok(&r, "bad token, good key");
    assert_eq!(r.upstream_header("x-consumer-id").as_deref(), Some("acme"));
    assert_eq!(r.upstream_header("x-api-key"), None);
    let r = send(
        c.get(gw.url("/either/a"))
            .bearer_auth(&t)
            .header("x-api-key", unknown),
    )
    .await;
    assert_ok(&r, "good token, bad key");
    let r = send(
        c.get(gw.url("/either/a"))
            .bearer_auth("not.a.token")
            .header("x-api-key", unknown),
    )
    .await;
    assert_unauthorized(&r, true, unknown, "bad token and bad key");

    // On a public route the key is nobody's business: passed through as sent.
    let r = send(c.get(gw.url(&format!("/public/a?api_key={ACME_KEY}")))).await;
    assert_ok(&r, "public");
    assert_eq!(r.upstream_header("x-consumer-id"), None);

    assert_output_clean(&gw, &[ACME_KEY.into(), BETA_KEY.into(), unknown.into(), t]);
}

#[tokio::test]
async fn consumer_and_claim_headers_replace_what_clients_send() {
    let up = Upstream::start("u").await;
    let gw = identity_gateway(&up).await;
    let c = client();
    let forged = [
        ("x-consumer-id", "evil-consumer"),
        ("x-user-id", "evil-user"),
        ("x-tenant-id", "evil-tenant"),
        ("X-Consumer-ID", "evil-again"),
    ];
    let with_forged = |mut req: reqwest::RequestBuilder| {
        for (k, v) in forged {
            req = req.header(k, v);
        }
        req
    };

    let t = corp_token(json!({ "sub": "user-7", "azp": "app-1", "tenant": "t-9" }));
    let r = send(with_forged(c.get(gw.url("/either/a"))).bearer_auth(&t)).await;
    assert_ok(&r, "jwt");
    assert_eq!(r.upstream_header("x-consumer-id").as_deref(), Some("app-1"));
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("user-7"));
    assert_eq!(r.upstream_header("x-tenant-id").as_deref(), Some("t-9"));
    assert!(
        !r.text.contains("evil"),
        "a forged identity header went upstream: {}",
        r.text
    );

    // A claim the token lacks: the client's header is removed, nothing is set.
    let t2 = corp_token(json!({ "sub": "user-8", "azp": "app-2" }));
    let r = send(with_forged(c.get(gw.url("/either/a"))).bearer_auth(&t2)).await;
    assert_eq!(r.upstream_header("x-tenant-id"), None, "{}", r.text);
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("user-8"));
    assert!(!r.text.contains("evil"), "{}", r.text);
    // No consumer claim: no X-Consumer-Id at all (and not the forged one).
    let t3 = corp_token(json!({ "sub": "user-9", "tenant": 42 }));
    let r = send(with_forged(c.get(gw.url("/either/a"))).bearer_auth(&t3)).await;
    assert_ok(&r, "no azp");
    assert_eq!(r.upstream_header("x-consumer-id"), None, "{}", r.text);
    assert_eq!(
        r.upstream_header("x-tenant-id").as_deref(),
        Some("42"),
        "numbers are printed"
    );

    // API-key consumers: X-Consumer-Id set, claim headers removed.
    let r = send(with_forged(c.get(gw.url("/either/a"))).header("x-api-key", BETA_KEY)).await;
    assert_eq!(r.upstream_header("x-consumer-id").as_deref(), Some("beta"));
    assert_eq!(r.upstream_header("x-user-id"), None);
    assert_eq!(r.upstream_header("x-tenant-id"), None);

    // A public route: identity headers from the client are removed too.
    let r = send(with_forged(c.get(gw.url("/public/a")))).await;
    assert_ok(&r, "public");
    for (k, _) in forged {
        assert_eq!(
            r.upstream_header(&k.to_ascii_lowercase()),
            None,
            "{k} reached the upstream on a public route"
        );
    }
    // ... even with a valid token, which a public route does not look at.
    let r = send(with_forged(c.get(gw.url("/public/a"))).bearer_auth(&t)).await;
    assert_eq!(r.upstream_header("x-consumer-id"), None, "{}", r.text);

    // Templates: `{claims.sub}` and `{consumer.id}`, percent-encoded where they land.
    let r = get(&gw, "/templated/x?q=1", Some(&t)).await;
    assert_ok(&r, "templated");
    assert_eq!(r.json()["path"], "/users/user-7/as/app-1");
    assert_eq!(r.json()["query"], "q=1");
    let odd = corp_token(json!({ "sub": "a b/../c?d", "azp": "x/y" }));
    let r = get(&gw, "/templated/x", Some(&odd)).await;
    assert_ok(&r, "templated, odd values");
    assert_eq!(r.json()["path"], "/users/a%20b%2F..%2Fc%3Fd/as/x%2Fy");
    // A header value that cannot be a header is not forwarded (and does not break things).
    let nl = corp_token(json!({ "sub": "line\r\nX-Injected: 1", "azp": "app-1" }));
    let r = get(&gw, "/either/a", Some(&nl)).await;
    assert_ok(&r, "claim with CRLF");
    assert_eq!(r.upstream_header("x-injected"), None, "{}", r.text);

    assert_output_clean(&gw, &[t, t2, t3, odd, nl, BETA_KEY.into()]);
}

#[tokio::test]
async fn every_route_scope_is_required() {
    let up = Upstream::start("u").await;
    let gw = identity_gateway(&up).await;
    let c = client();
    let mut sent = Vec::new();

    for (what, scope) in [
        ("space-separated", json!("orders:read orders:write")),
        (
            "space-separated, extra and reordered",
            json!("admin  orders:write orders:read"),
        ),
        ("array", json!(["orders:write", "orders:read"])),
    ] {
        let t = corp_token(json!({ "scope": scope }));
        assert_ok(&get(&gw, "/scoped/a", Some(&t)).await, what);
        sent.push(t);
    }

    let m0 = gw.metrics().await;
    for (what, scope, missing) in [
        ("one of two", json!("orders:read"), "orders:write"),
        ("the other one", json!(["orders:write"]), "orders:read"),
        ("none", Value::Null, "orders:read"),
        ("empty", json!(""), "orders:read"),
        (
            "a prefix is not the scope",
            json!("orders:re orders:write"),
            "orders:read",
        ),
        (
            "one string with a comma",
            json!("orders:read,orders:write"),
            "orders:read",
        ),
        (
            "an array of one joined string",
            json!(["orders:read orders:write"]),
            "orders:read",
        ),
    ] {
        let t = corp_token(json!({ "scope": scope }));
        let r = get(&gw, "/scoped/a", Some(&t)).await;
        assert_forbidden(&r, missing, &t, what);
        sent.push(t);
    }
    // API-key consumers carry their configured scopes.
    let r = send(c.get(gw.url("/scoped/a")).header("x-api-key", ACME_KEY)).await;
    assert_forbidden(&r, "orders:write", ACME_KEY, "acme has orders:read only");
    let r = send(c.get(gw.url("/scoped/a")).header("x-api-key", BETA_KEY)).await;
    assert_ok(&r, "beta has both");
    assert_eq!(r.upstream_header("x-consumer-id").as_deref(), Some("beta"));
    // A token's scopes come from the provider's scopes_claim.
    let arr = |claims: Value| token(Algorithm::HS256, Some("c1"), &hmac(IDENT_SECRET), &claims);
    let t = arr(claims_with(
        json!({ "iss": "https://arr.test/", "scp": ["orders:write"] }),
    ));
    assert_ok(&get(&gw, "/scp", Some(&t)).await, "scp claim");
    let t2 = arr(claims_with(
        json!({ "iss": "https://arr.test/", "scope": "orders:write" }),
    ));
    assert_forbidden(
        &get(&gw, "/scp", Some(&t2)).await,
        "orders:write",
        &t2,
        "scope is not scp",
    );
    sent.extend([t, t2]);

    // Authentication comes first: no credentials is a 401, not a 403.
    let r = get(&gw, "/scoped/a", None).await;
    assert_unauthorized(&r, false, "", "no credentials on a scoped route");

    // Request counts are recorded as a request is logged, just after its answer.
    let count = |m: &str, status| {
        metric(
            m,
            "gateway_requests_total",
            &[("route", "scoped"), ("status", status)],
        )
    };
    let m = gw
        .metrics_when(|m| count(m, "401") >= 1.0 && count(m, "403") >= 8.0)
        .await;
    assert_eq!(
        auth_failures(&m, "scoped", "scope") - auth_failures(&m0, "scoped", "scope"),
        8.0,
        "{m}"
    );
    assert_eq!(auth_failures(&m, "scp", "scope"), 1.0);
    assert_eq!(auth_failures(&m, "scoped", "missing"), 1.0);
    assert!(
        metric(
            &m,
            "gateway_requests_total",
            &[("route", "scoped"), ("status", "403")]
        ) >= 8.0,
        "{m}"
    );
    sent.extend([ACME_KEY.into(), BETA_KEY.into()]);
    assert_output_clean(&gw, &sent);
}

// ---------------------------------------------------------------------------------------
// 9. What a 401 says, and what is never said
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unauthorized_answers_follow_rfc_6750_and_never_echo_credentials() {
    let up = Upstream::start("u").await;
    let gw = identity_gateway(&up).await;
    let c = client();

    let r = get(&gw, "/either/a", None).await;
    assert_unauthorized(&r, false, "", "nothing presented");
    assert_eq!(r.json()["error"]["message"], "credentials are required");
    assert!(r.headers.get("x-request-id").is_some());
    assert_eq!(
        r.json()["error"]["request_id"],
        r.headers["x-request-id"].to_str().unwrap()
    );

    // Every failing token gets `invalid_token`, and no part of it comes back.
    let expired = corp_token(json!({ "exp": now() - 3600 }));
    let bad_sig = token(
        Algorithm::HS256,
        Some("c1"),
        &hmac("some-other-secret-0123456789abcdef"),
        &good_claims(),
    );
    let garbage =
        "eyJhbGciOiJIUzI1NiJ9.eyJzZWNyZXQiOiJ0b3Atc2VjcmV0LXZhbHVlIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
            .to_string();
    for (t, message) in [
        (&expired, "the token has expired"),
        (&bad_sig, "the token signature is invalid"),
        (&garbage, "the token signature is invalid"),
    ] {
        let r = get(&gw, "/either/a", Some(t)).await;
        assert_unauthorized(&r, true, t, message);
        assert_eq!(r.json()["error"]["message"], message, "{}", r.text);
        // Not even the decoded claims come back.
        assert!(!r.text.contains("top-secret-value"), "{}", r.text);
        assert!(!r.text.contains(ISS), "{}", r.text);
    }
    // HEAD: the status and header, no body.
    let r = send(c.head(gw.url("/either/a")).bearer_auth(&expired)).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    // A key in the query string is not echoed, nor logged.
    let r = send(c.get(gw.url("/keyed/a?api_key=test-only-wrong-key-in-query"))).await;
    assert_unauthorized(
        &r,
        false,
        "test-only-wrong-key-in-query",
        "wrong key in query",
    );
    let r = send(c.get(gw.url(&format!("/keyed/a?api_key={ACME_KEY}")))).await;
    assert_ok(&r, "right key in query");
    gw.wait_log(|v| v["route"] == "keyed" && v["status"] == 200)
        .await;
    let log = gw
        .wait_log(|v| v["route"] == "keyed" && v["status"] == 401)
        .await;
    assert_eq!(log["path"], "/keyed/a");

    assert_output_clean(
        &gw,
        &[
            expired,
            bad_sig,
            garbage,
            ACME_KEY.into(),
            "test-only-wrong-key-in-query".into(),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// 10. Metrics by reason, across routes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn auth_failures_are_counted_by_route_and_reason() {
    let up = Upstream::start("u").await;
    let gw = identity_gateway(&up).await;
    let c = client();

    let _ = get(&gw, "/either/a", None).await;
    let _ = get(&gw, "/either/a", None).await;
    let _ = get(&gw, "/either/a", Some("x.y")).await;
    let _ = get(
        &gw,
        "/either/a",
        Some(&corp_token(json!({ "exp": now() - 3600 }))),
    )
    .await;
    let _ = get(
        &gw,
        "/either/a",
        Some(&corp_token(json!({ "nbf": now() + 3600 }))),
    )
    .await;
    let _ = get(
        &gw,
        "/either/a",
        Some(&corp_token(json!({ "iss": "https://x.test/" }))),
    )
    .await;
    let _ = get(&gw, "/either/a", Some(&corp_token(json!({ "aud": "x" })))).await;
    let other_kid = token(
        Algorithm::HS256,
        Some("zz"),
        &hmac(IDENT_SECRET),
        &good_claims(),
    );
    let _ = get(&gw, "/either/a", Some(&other_kid)).await;
    let rs = token(
        Algorithm::RS256,
        Some("c1"),
        &signing_key("rsa-1"),
        &good_claims(),
    );
    let _ = get(&gw, "/either/a", Some(&rs)).await;
    let bad = token(
        Algorithm::HS256,
        Some("c1"),
        &hmac("wrong-secret-0123456789abcdefghij"),
        &good_claims(),
    );
    let _ = get(&gw, "/either/a", Some(&bad)).await;
    let _ = send(
        c.get(gw.url("/keyed/a"))
            .header("x-api-key", "nope-nope-nope"),
    )
    .await;
    let _ = get(
        &gw,
        "/scoped/a",
        Some(&corp_token(json!({ "scope": "orders:read" }))),
    )
    .await;
    // Successes and public routes count nothing.
    let _ = get(&gw, "/either/a", Some(&corp_token(json!({})))).await;
    let _ = get(&gw, "/public/a", None).await;

    // Request counts are recorded as a request is logged, just after its answer.
    let m = gw
        .metrics_when(|m| metric(m, "gateway_requests_total", &[("route", "public")]) >= 1.0)
        .await;
    assert!(
        m.contains("# TYPE gateway_auth_failures_total counter"),
        "{m}"
    );
    for (route, reason, n) in [
        ("either", "missing", 2.0),
        ("either", "malformed", 1.0),
        ("either", "expired", 1.0),
        ("either", "not_yet_valid", 1.0),
        ("either", "issuer", 1.0),
        ("either", "audience", 1.0),
        ("either", "unknown_key", 1.0),
        ("either", "algorithm", 1.0),
        ("either", "bad_signature", 1.0),
        ("keyed", "unknown_key", 1.0),
        ("scoped", "scope", 1.0),
    ] {
        assert_eq!(
            auth_failures(&m, route, reason),
            n,
            "{route}/{reason}:\n{m}"
        );
    }
    assert_eq!(
        metric(&m, "gateway_auth_failures_total", &[("route", "either")]),
        10.0
    );
    assert_eq!(
        metric(&m, "gateway_auth_failures_total", &[("route", "public")]),
        0.0
    );
    assert_eq!(metric(&m, "gateway_auth_failures_total", &[]), 12.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "gateway_requests_total",
            &[("route", "either"), ("status", "401")]
        ),
        10.0
    );
}

// ---------------------------------------------------------------------------------------
// 11. `gateway token`
// ---------------------------------------------------------------------------------------

const MINT_SECRET: &str = "test-only-mint-secret-0123456789abcdef";

/// Runs `gateway token -c <config> ARGS` with `env`; returns (success, stdout, stderr).
fn gateway_token(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("token").arg("-c").arg(config).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run gateway token");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn gateway_token_mints_tokens_the_gateway_accepts() {
    let up = Upstream::start("u").await;
    let body = format!(
        r#"jwt_providers:
  local:
    issuer: "{ISS}"
    audiences: [{AUD}, second-api]
    keys:
      - {{ kid: dev, alg: HS256, secret_env: AUTH_TEST_MINT }}
    forward_claims: {{ sub: X-User-Id }}
  public:
    issuer: "https://public.test/"
    audiences: [{AUD}]
    algorithms: [RS256]
    keys:
      - {{ kid: r1, pem_file: "{rsa}" }}
    forward_claims: {{ sub: X-User-Id }}
routes:
{minted}"#,
        rsa = pub_pem("rsa-1"),
        minted = route(
            "minted",
            "/minted/*",
            "[jwt:local, jwt:public]",
            "scopes: [orders:read, orders:write]"
        ),
    );
    let config = ConfigDir::new("", &[("p.yaml", &policy(&up.target(), &body))]);
    let yaml = config.gateway_yaml();
    let env = [("AUTH_TEST_MINT", MINT_SECRET)];
    let gw = Gateway::start_in(config, &env).await;

    // A provider with a secret: the token carries issuer, audience, subject and scopes.
    let (ok, t, err) = gateway_token(
        &yaml,
        &[
            "--provider",
            "local",
            "--sub",
            "alice",
            "--scope",
            "orders:read orders:write",
        ],
        &env,
    );
    assert!(ok, "gateway token failed: {err}");
    assert_eq!(t.matches('.').count(), 2, "not a JWT: {t:?}");
    let claims = payload(&t);
    assert_eq!(claims["iss"], ISS);
    assert_eq!(claims["aud"], AUD);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["scope"], "orders:read orders:write");
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 3600, "default lifetime");
    let r = get(&gw, "/minted/a", Some(&t)).await;
    assert_ok(&r, "minted with the secret");
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("alice"));
    assert_eq!(r.upstream_header("x-consumer-id").as_deref(), Some("alice"));

    // Repeated --scope, a lifetime, another audience; too few scopes is a 403.
    let (ok, t2, err) = gateway_token(
        &yaml,
        &[
            "--provider",
            "local",
            "--sub",
            "bob",
            "--scope",
            "orders:read",
            "--ttl",
            "5m",
            "--aud",
            "second-api",
        ],
        &env,
    );
    assert!(ok, "{err}");
    let claims = payload(&t2);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert_eq!(claims["aud"], "second-api");
    assert_forbidden(
        &get(&gw, "/minted/a", Some(&t2)).await,
        "orders:write",
        &t2,
        "one scope",
    );

    // A provider with only a public key cannot sign.
    let (ok, out, err) = gateway_token(&yaml, &["--provider", "public", "--sub", "carol"], &env);
    assert!(!ok, "minting without a private key succeeded: {out}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("\"public\"") && err.contains("--key"),
        "unclear message: {err}"
    );
    // ... unless given the private key.
    let key = private_pem("rsa-1").display().to_string();
    let (ok, t3, err) = gateway_token(
        &yaml,
        &[
            "--provider",
            "public",
            "--sub",
            "carol",
            "--scope",
            "orders:read",
            "--scope",
            "orders:write",
            "--key",
            &key,
            "--alg",
            "RS256",
        ],
        &env,
    );
    assert!(ok, "{err}");
    assert_eq!(payload(&t3)["iss"], "https://public.test/");
    let r = get(&gw, "/minted/a", Some(&t3)).await;
    assert_ok(&r, "minted with --key");
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("carol"));
    // A private key of another pair mints a token the gateway refuses.
    let other = private_pem("rsa-2").display().to_string();
    let (ok, t4, err) = gateway_token(
        &yaml,
        &[
            "--provider",
            "public",
            "--sub",
            "mallory",
            "--key",
            &other,
            "--alg",
            "RS256",
        ],
        &env,
    );
    assert!(ok, "{err}");
    assert_refused(
        &gw,
        "minted",
        "/minted/a",
        &t4,
        "bad_signature",
        "minted with another key",
    )
    .await;

    // Over 8 KiB on a route with two providers: refused as malformed all the same.
    let big = token(
        Algorithm::RS256,
        None,
        &signing_key("rsa-1"),
        &claims_with(json!({ "iss": "https://public.test/", "pad": "p".repeat(9000) })),
    );
    assert_refused(
        &gw,
        "minted",
        "/minted/a",
        &big,
        "malformed",
        "over 8 KiB, two providers",
    )
    .await;

    // Unknown provider; missing secret; `none`.
    let (ok, _, err) = gateway_token(&yaml, &["--provider", "nope"], &env);
    assert!(!ok);
    assert!(err.contains("no jwt provider \"nope\""), "{err}");
    let (ok, _, err) = gateway_token(&yaml, &["--provider", "local"], &[]);
    assert!(!ok, "minted without the secret in the environment");
    assert!(err.contains("AUTH_TEST_MINT"), "{err}");
    let (ok, _, err) = gateway_token(
        &yaml,
        &["--provider", "public", "--key", &key, "--alg", "none"],
        &env,
    );
    assert!(!ok);
    assert!(err.contains("none"), "{err}");

    assert_output_clean(&gw, &[t, t2, t3, t4]);
}

// ---------------------------------------------------------------------------------------
// 12. Configuration errors (`gateway check`)
// ---------------------------------------------------------------------------------------

/// Checks a configuration made of policy `text` and asserts that it fails with a
/// problem reported at the line of `needle`, with a message containing all of `parts`.
fn assert_check_fails(text: &str, needle: &str, parts: &[&str]) {
    let c = ConfigDir::new("", &[("p.yaml", text)]);
    let (ok, out) = c.check();
    assert!(!ok, "check passed:\n{text}\n{out}");
    let prefix = format!(
        "{}:{}: ",
        c.path().join("policies").join("p.yaml").display(),
        line_of(text, needle)
    );
    let msg = out
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| {
            panic!("no problem reported as {prefix:?}; output:\n{out}\npolicy:\n{text}")
        });
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} should contain {p:?}");
    }
}

/// A provider `corp` (its body `provider`, indented four spaces), and a route using it.
fn provider_policy(provider: &str) -> String {
    format!(
        "upstreams:\n  up:\n    targets: [\"127.0.0.1:9\"]\njwt_providers:\n  corp:\n    issuer: \"{ISS}\"\n{provider}routes:\n{}",
        route("r", "/r", "[jwt:corp]", "")
    )
}

#[test]
fn configuration_errors_name_file_line_and_problem() {
    // A valid one first, so that the failures below are the ones intended.
    let good = provider_policy(&format!(
        "    keys:\n      - {{ kid: r1, pem_file: \"{}\" }}\n",
        pub_pem("rsa-1")
    ));
    let (ok, out) = ConfigDir::new("", &[("p.yaml", &good)]).check();
    assert!(ok, "{out}");

    // A route naming an unknown provider.
    let text = format!(
        "upstreams:\n  up:\n    targets: [\"127.0.0.1:9\"]\nroutes:\n{}",
        route("r", "/r", "[api_key, jwt:nobody]", "")
    );
    assert_check_fails(&text, "jwt:nobody", &["unknown jwt provider \"nobody\""]);

    // `none` is never an algorithm, in the provider's list or on a key.
    let text = provider_policy(
        "    algorithms: [RS256, none]\n    keys:\n      - { kid: k, secret_env: PATH }\n",
    );
    assert_check_fails(&text, "  corp:", &["\"none\" is never accepted"]);
    let text = provider_policy("    keys:\n      - { kid: k, alg: none, secret_env: PATH }\n");
    assert_check_fails(&text, "  corp:", &["keys[0]", "\"none\" is never accepted"]);

    // A key with two sources.
    let text = provider_policy(&format!(
        "    keys:\n      - {{ kid: k, secret_env: PATH, pem_file: \"{}\" }}\n",
        pub_pem("rsa-1")
    ));
    assert_check_fails(
        &text,
        "  corp:",
        &["keys[0]", "exactly one of secret_env, pem_file and jwk"],
    );

    // A secret_env naming a variable that is not set.
    let text = provider_policy(
        "    keys:\n      - { kid: k, secret_env: AUTH_TEST_SURELY_UNSET_VARIABLE }\n",
    );
    assert_check_fails(
        &text,
        "  corp:",
        &["AUTH_TEST_SURELY_UNSET_VARIABLE", "not set"],
    );

    // A pem_file that does not exist (relative to the policy file), or is no key.
    let text = provider_policy("    keys:\n      - { kid: k, pem_file: keys/missing.pem }\n");
    assert_check_fails(&text, "  corp:", &["keys[0]", "cannot read", "missing.pem"]);
    let text = provider_policy(&format!(
        "    keys:\n      - {{ kid: k, pem_file: \"{}\" }}\n",
        keys_dir().join("README.md").display()
    ));
    assert_check_fails(
        &text,
        "  corp:",
        &["keys[0]", "not an RSA, EC or Ed25519 public key"],
    );
    // A key bound to an algorithm of another family.
    let text = provider_policy(&format!(
        "    keys:\n      - {{ kid: k, alg: ES256, pem_file: \"{}\" }}\n",
        pub_pem("rsa-1")
    ));
    assert_check_fails(&text, "  corp:", &["keys[0]", "does not fit"]);

    // Bad key hashes, and one hash on two consumers.
    let consumers = |acme: &str, beta: &str| {
        format!(
            "upstreams:\n  up:\n    targets: [\"127.0.0.1:9\"]\nconsumers:\n  acme:\n    api_keys: [\"{acme}\"]\n  beta:\n    api_keys:\n      - \"{beta}\"\nroutes:\n{}",
            route("r", "/r", "[api_key]", "")
        )
    };
    let h = key_hash("test-only-shared-key");
    assert_check_fails(
        &consumers("sha256:zz", &h),
        "sha256:zz",
        &["not hexadecimal"],
    );
    assert_check_fails(
        &consumers("plain-key", &h),
        "plain-key",
        &["not a key hash", "hash-key"],
    );
    assert_check_fails(
        &consumers(&h, "sha256:abcd"),
        "sha256:abcd",
        &["64 hex digits"],
    );
    assert_check_fails(
        &consumers(&h, &h),
        "      - \"sha256:",
        &["already belongs to consumer \"acme\""],
    );

    // A provider without keys, an issuer, or a usable JWKS URL.
    let text = provider_policy("    audiences: [x]\n");
    assert_check_fails(&text, "  corp:", &["needs `keys`, a `jwks_url`"]);
    let text = provider_policy("    jwks_url: \"ftp://keys.test/jwks.json\"\n");
    assert_check_fails(&text, "  corp:", &["not an http(s) URL"]);
}

// ---------------------------------------------------------------------------------------
// Reload: key files are re-read, remote key sets survive
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_rereads_key_files_and_keeps_remote_key_sets() {
    let up = Upstream::start("u").await;
    let jwks = JwksServer::start(jwks_doc(&[("rsa-1", "k1", "RS256")]), None).await;
    let text = |extra_route: &str| {
        policy(
            &up.target(),
            &format!(
                "jwt_providers:\n  remote:\n    issuer: \"{ISS}\"\n    audiences: [{AUD}]\n    jwks_url: \"{}\"\n  file:\n    issuer: \"{ISS}\"\n    audiences: [{AUD}]\n    keys:\n      - {{ kid: f1, pem_file: keys/signer.pub.pem }}\nroutes:\n{}{}{extra_route}",
                jwks.url(),
                route("remote", "/remote/*", "[jwt:remote]", ""),
                route("file", "/file/*", "[jwt:file]", ""),
            ),
        )
    };
    let config = ConfigDir::new("", &[("p.yaml", &text(""))]);
    let key_file = config.path().join("policies/keys/signer.pub.pem");
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    std::fs::copy(pub_pem("rsa-1"), &key_file).unwrap();
    let gw = Gateway::start_in(config, &[]).await;
    let (rsa1, rsa2) = (signing_key("rsa-1"), signing_key("rsa-2"));
    let k1 = token(Algorithm::RS256, Some("k1"), &rsa1, &good_claims());
    let f1 = token(Algorithm::RS256, Some("f1"), &rsa1, &good_claims());
    let f2 = token(Algorithm::RS256, Some("f1"), &rsa2, &good_claims());
    assert_ok(&get(&gw, "/remote/a", Some(&k1)).await, "k1");
    assert_ok(&get(&gw, "/file/a", Some(&f1)).await, "f1 with rsa-1");
    let fetched = jwks.fetches();

    // A policy change: a new snapshot, the same remote key set (no refetch needed).
    gw.config
        .write_policy("p.yaml", &text(&route("extra", "/extra", "none", "")));
    let r = send(client().post(gw.admin_url("/reload"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json()["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "extra"),
        "{}",
        r.text
    );
    assert_ok(&get(&gw, "/remote/a", Some(&k1)).await, "k1 after reload");
    assert_eq!(jwks.fetches(), fetched, "the reload refetched the key set");

    // The key file changes: picked up by the watcher, the old key is gone.
    std::fs::copy(pub_pem("rsa-2"), &key_file).unwrap();
    eventually(
        Duration::from_secs(10),
        "the new key file in force",
        || async { get(&gw, "/file/a", Some(&f2)).await.status == 200 },
    )
    .await;
    assert_refused(
        &gw,
        "file",
        "/file/a",
        &f1,
        "bad_signature",
        "rsa-1 after the key changed",
    )
    .await;

    // A key file that is no key: the reload fails, the last keys stay.
    std::fs::write(&key_file, "not a key\n").unwrap();
    let r = send(client().post(gw.admin_url("/reload"))).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("signer.pub.pem"), "{}", r.text);
    assert_ok(
        &get(&gw, "/file/a", Some(&f2)).await,
        "f2 after a failed reload",
    );
    assert_output_clean(&gw, &[k1, f1, f2]);
}
