//! CORS from named `cors_policies`, end to end through the real `gateway` binary: preflights
//! answered by the gateway before authentication and limits and never forwarded (also on a
//! route whose methods omit OPTIONS), exact and `*.suffix` origins, credentials, exposed
//! headers, `Vary: Origin`, the CORS headers on the gateway's own errors, the upstream's CORS
//! headers replaced; `gateway check` refuses bad policies with file:line. Last, a real
//! browser (headless Chromium) loads a page from one origin that calls the gateway on
//! another, with credentials and a custom header: the allowed origin reads the answer, a
//! disallowed one cannot.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use common::{client, free_port, line_of, metric, ConfigDir, Gateway};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const KEY: &str = "test-only-cors-key";

/// An upstream that sends CORS headers of its own (which the gateway must replace) and
/// counts what it sees, preflights included.
struct Loose {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Loose {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Loose {
    async fn start() -> Loose {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().fallback(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async move {
                let headers = [
                    ("access-control-allow-origin", "*"),
                    ("access-control-allow-methods", "DELETE"),
                    ("x-upstream", "yes"),
                ];
                (headers, "{\"ok\":true}")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Loose { addr, hits, task }
    }
}

fn policy(up: SocketAddr, page_origin: &str) -> String {
    let hash = hex::encode(Sha256::digest(KEY.as_bytes()));
    format!(
        r#"upstreams:
  up:
    targets: ["{up}"]
api_keys:
  header: X-API-Key
consumers:
  acme:
    api_keys: ["sha256:{hash}"]
cors_policies:
  web:
    allow_origins: ["https://app.example.com", "https://*.example.org", "{page_origin}"]
    allow_headers: [Authorization, Content-Type, X-API-Key, X-Custom]
    expose_headers: [X-Request-Id, RateLimit-Remaining]
    allow_credentials: true
    max_age: 10m
  open:
    allow_origins: ["*"]
routes:
  - name: data
    match: {{ path: /data/*, methods: [GET, POST] }}
    auth: [api_key]
    cors: web
    upstream: up
  - name: limited
    match: {{ path: /limited, methods: [GET] }}
    auth: none
    cors: web
    rate_limit: {{ key: client_ip, limits: [{{ requests: 1, per: 1m }}] }}
    upstream: up
  - name: public
    match: {{ path: /public, methods: [GET] }}
    auth: none
    cors: open
    upstream: up
  - name: plain
    match: {{ path: /plain }}
    auth: none
    upstream: up
"#
    )
}

async fn start(page_origin: &str) -> (Gateway, Loose) {
    let up = Loose::start().await;
    let gw = Gateway::start("", &[("p.yaml", &policy(up.addr, page_origin))]).await;
    (gw, up)
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn preflight(
    gw: &Gateway,
    path: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> reqwest::Response {
    let mut r = client()
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method);
    if let Some(h) = headers {
        r = r.header("Access-Control-Request-Headers", h);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_here_before_authentication_and_never_forwarded() {
    let (gw, up) = start("http://127.0.0.1:1").await;
    // The route lists GET and POST, not OPTIONS, and needs an API key: still 204.
    let r = preflight(
        &gw,
        "/data/1",
        "https://app.example.com",
        "POST",
        Some("x-custom, content-type"),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("Authorization, Content-Type, X-API-Key, X-Custom")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    assert!(header(&r, "vary").unwrap().contains("Origin"));
    // A suffix origin; the limited route's limit is not spent by preflights.
    for _ in 0..3 {
        let r = preflight(&gw, "/limited", "https://a.b.example.org", "GET", None).await;
        assert_eq!(r.status(), 204);
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some("https://a.b.example.org")
        );
    }
    // Not allowed: origin, method, header. 204 without Access-Control-Allow-Origin.
    for (origin, method, hdrs) in [
        ("https://evil.example.com.attacker.net", "POST", None),
        ("https://example.org", "GET", None),
        ("http://app.example.com", "GET", None),
        ("https://app.example.com", "DELETE", None),
        ("https://app.example.com", "POST", Some("x-secret")),
    ] {
        let r = preflight(&gw, "/data/1", origin, method, hdrs).await;
        assert_eq!(r.status(), 204, "{origin} {method} {hdrs:?}");
        assert!(
            header(&r, "access-control-allow-origin").is_none(),
            "{origin} {method} {hdrs:?}"
        );
    }
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        0,
        "no preflight reached the upstream"
    );
    // The first real request to the limited route is still admitted.
    let r = client()
        .get(gw.url("/limited"))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A route without `cors` knows nothing of preflights: its OPTIONS is proxied as any
    // other request, with no CORS headers added.
    let r = preflight(&gw, "/plain", "https://app.example.com", "GET", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("*"),
        "the upstream's own"
    );
    let m = gw.metrics().await;
    let labels = [("route", "data"), ("method", "OPTIONS"), ("status", "204")];
    assert!(metric(&m, "gateway_requests_total", &labels) >= 6.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_the_gateways_cors_headers_errors_included() {
    let (gw, up) = start("http://127.0.0.1:1").await;
    let c = client();
    // Proxied: the upstream's CORS headers are replaced by the policy's.
    let r = c
        .get(gw.url("/data/1"))
        .header("Origin", "https://app.example.com")
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        Some("X-Request-Id, RateLimit-Remaining")
    );
    assert!(
        header(&r, "access-control-allow-methods").is_none(),
        "the upstream's is removed"
    );
    assert_eq!(header(&r, "vary"), Some("Origin"));
    assert_eq!(header(&r, "x-upstream"), Some("yes"));
    // A disallowed origin: the upstream's CORS headers are removed all the same.
    let r = c
        .get(gw.url("/data/1"))
        .header("Origin", "https://evil.test")
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert!(header(&r, "access-control-allow-methods").is_none());
    // The gateway's own errors: 401 (no key) and 429 (over the limit).
    let r = c
        .get(gw.url("/data/1"))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    let get = || {
        c.get(gw.url("/limited"))
            .header("Origin", "https://x.example.org")
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    let r = get().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://x.example.org")
    );
    // "*" without credentials: the origin is echoed, no credentials header.
    let r = c
        .get(gw.url("/public"))
        .header("Origin", "http://anything.test:1234")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("http://anything.test:1234")
    );
    assert!(header(&r, "access-control-allow-credentials").is_none());
    // Without Origin (not a browser's cross-origin call): no CORS headers, Vary kept.
    let r = c.get(gw.url("/public")).send().await.unwrap();
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert_eq!(header(&r, "vary"), Some("Origin"));
    // A route without cors passes the upstream's headers through untouched.
    let r = c
        .get(gw.url("/plain"))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "access-control-allow-methods"), Some("DELETE"));
    assert!(up.hits.load(Ordering::SeqCst) >= 4);
}

#[test]
fn check_refuses_bad_policies_with_file_and_line() {
    let bad = |policy: &str, needle: &str, parts: &[&str]| {
        let text = format!(
            "upstreams:\n  up:\n    targets: [\"127.0.0.1:9\"]\n{policy}routes:\n  - name: r\n    match: {{ path: /r }}\n    auth: none\n    cors: web\n    upstream: up\n"
        );
        let c = ConfigDir::new("", &[("p.yaml", &text)]);
        let (ok, out) = c.check();
        assert!(!ok, "{policy}: {out}");
        let line = line_of(&text, needle);
        let file = c.path().join("policies").join("p.yaml");
        let prefix = format!("{}:{line}:", file.display());
        let hit = out
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no problem at {prefix}\n{out}"));
        for p in parts {
            assert!(hit.contains(p), "{hit}");
        }
    };
    bad(
        "cors_policies:\n  web:\n    allow_origins: [\"*\"]\n    allow_credentials: true\n",
        "  web:",
        &["allow_credentials"],
    );
    bad(
        "cors_policies:\n  web:\n    allow_origins: [\"app.example.com\"]\n",
        "  web:",
        &["scheme://host"],
    );
    bad("", "    cors: web", &["cors policy \"web\" is not defined"]);
}

// ---------------------------------------------------------------------------------------
// A real browser
// ---------------------------------------------------------------------------------------

/// Serves, on `listener`, one page that calls the gateway with credentials and a custom
/// header and writes the outcome into the page.
fn serve_page(listener: tokio::net::TcpListener, gateway: &str) -> tokio::task::JoinHandle<()> {
    let html = page_html(gateway);
    let app = axum::Router::new().fallback(move || {
        let html = html.clone();
        async move { axum::response::Html(html) }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// What the page wrote, as headless Chromium renders it.
async fn browse(url: String) -> String {
    browser::installed();
    let out = tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        std::process::Command::new(browser::CHROMIUM)
            .args(browser::FLAGS)
            .args(["--virtual-time-budget=10000", "--dump-dom"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .output()
    })
    .await
    .unwrap();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run chromium: {e}"),
    };
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    let start = dom.find("<pre id=\"out\">").map(|i| i + 14).unwrap_or(0);
    dom[start..].split('<').next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_an_allowed_origin_reads_the_answer_and_another_cannot() {
    // The allowed page origin must be known before the gateway starts.
    let allowed_port = free_port();
    let allowed_origin = format!("http://127.0.0.1:{allowed_port}");
    let (gw, up) = start(&allowed_origin).await;
    let gateway = format!("http://localhost:{}", gw.addr().port());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", allowed_port))
        .await
        .unwrap();
    let allowed = serve_page(listener, &gateway);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_port = listener.local_addr().unwrap().port();
    let other = serve_page(listener, &gateway);

    let seen = browse(format!("{allowed_origin}/page")).await;
    assert!(seen.starts_with("ok:200:id:"), "allowed origin: {seen:?}");
    assert!(seen.contains("\"ok\":true"), "{seen:?}");
    let hits = up.hits.load(Ordering::SeqCst);
    assert_eq!(
        hits, 1,
        "the preflight stayed at the gateway; the POST went through"
    );

    let seen = browse(format!("http://127.0.0.1:{other_port}/page")).await;
    assert_eq!(
        seen, "error:TypeError",
        "a disallowed origin must not read the answer"
    );
    // The browser stopped at the preflight: nothing more reached the upstream.
    assert_eq!(up.hits.load(Ordering::SeqCst), hits);
    allowed.abort();
    other.abort();
}

fn page_html(gateway: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="out">pending</pre><script>
fetch("{gateway}/data/7", {{method: "POST", credentials: "include",
  headers: {{"X-API-Key": "{KEY}", "X-Custom": "1", "Content-Type": "application/json"}}, body: "{{}}"}})
 .then(r => r.text().then(t => {{ document.getElementById("out").textContent =
   "ok:" + r.status + ":" + (r.headers.get("x-request-id") ? "id" : "no-id") + ":" + t; }}))
 .catch(e => {{ document.getElementById("out").textContent = "error:" + e.name; }});
</script></body></html>"#
    )
}
