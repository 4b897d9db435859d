//! The web console on the admin port, rendered by a real browser: headless Chromium (Debian's
//! package, installed by scripts/setup.sh) loads `GET /` after traffic, runs its script,
//! and the test reads route names, targets with their health, and non-zero live figures
//! from the DOM it dumps; a screenshot goes to the test's output directory
//! (`target/tmp/console/console.png`). The data endpoint and the admin token are checked
//! over HTTP as well.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::Browser;
use common::{client, ConfigDir, Gateway, Upstream};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn policy(up: &Upstream) -> String {
    format!(
        r#"upstreams:
  app: {{ targets: ["{up}"] }}
  flaky:
    targets: ["{up}", "127.0.0.1:9"]
    health_check: {{ path: /healthz, interval: 200ms, healthy: 1, unhealthy: 1 }}
routes:
  - name: orders
    match: {{ path: /orders, methods: [GET] }}
    auth: none
    rate_limit: {{ key: client_ip, limits: [ {{ requests: 1000, per: 1s }} ] }}
    upstream: app
    rewrite: {{ path: /slow }}
  - name: broken
    match: {{ path: /broken }}
    auth: none
    upstream: flaky
    rewrite: {{ path: /status/500 }}
"#,
        up = up.target()
    )
}

/// Headless Chromium on `url` with a fresh profile. `extra` selects what it does (dump the
/// DOM, take a screenshot). Its script gets five seconds of virtual time to fetch and draw.
fn browse(url: &str, extra: &[String]) -> String {
    browser::installed();
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser::CHROMIUM)
        .args(browser::FLAGS)
        .arg("--virtual-time-budget=5000")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `data-value` of the cell with class `cls` in the row of `route`.
fn cell(dom: &str, route: &str, cls: &str) -> String {
    let row_at = dom
        .find(&format!("data-route=\"{route}\""))
        .unwrap_or_else(|| panic!("no row for {route} in:\n{dom}"));
    let row = &dom[row_at..];
    let row = &row[..row.find("</tr>").unwrap()];
    let cell_at = row
        .find(&format!("class=\"num {cls}"))
        .unwrap_or_else(|| panic!("no {cls} cell in {row}"));
    let cell = &row[cell_at..];
    let v = &cell[cell.find("data-value=\"").unwrap() + 12..];
    v[..v.find('"').unwrap()].to_string()
}

async fn state(gw: &Gateway) -> Value {
    client()
        .get(gw.admin_url("/console/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_routes_targets_and_live_figures_in_a_browser() {
    let up = Upstream::start("app").await;
    let gw = Gateway::start("", &[("p.yaml", &policy(&up))]).await;
    let c = client();
    for _ in 0..40 {
        let r = c.get(gw.url("/orders?ms=5")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..10 {
        c.get(gw.url("/broken")).send().await.unwrap();
    }
    // The figures come from readings two seconds apart: wait for one after the traffic.
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = state(&gw).await;
        let orders = &s["routes"][0];
        if orders["live"]["requests_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
        {
            break s;
        }
        assert!(Instant::now() < deadline, "no live figures: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(s["routes"][0]["name"], "orders");
    assert_eq!(s["routes"][0]["limits"][0], "1000/1s by client_ip");
    assert_eq!(s["routes"][1]["live"]["error_ratio"], 1.0, "{s}");

    let page = gw.admin_url("/");
    let dom = browse(&page, &["--dump-dom".to_string()]);
    // Drawn by the page's script from the data call: the static page has no rows.
    assert!(dom.contains("data-route=\"orders\""), "{dom}");
    assert!(dom.contains("data-route=\"broken\""), "{dom}");
    let rps: f64 = cell(&dom, "orders", "rps").parse().unwrap();
    assert!(rps > 0.0, "orders req/s {rps}");
    let p50: f64 = cell(&dom, "orders", "p50").parse().unwrap();
    assert!(p50 >= 5.0, "orders p50 {p50} ms (the upstream waits 5 ms)");
    let p99: f64 = cell(&dom, "orders", "p99").parse().unwrap();
    assert!(p99 >= p50, "p99 {p99} < p50 {p50}");
    assert_eq!(cell(&dom, "broken", "errors"), "1");
    // `app` has no health check: its target is drawn as not checked, not as healthy.
    assert!(
        dom.contains(&format!(
            "data-target=\"{}\" data-healthy=\"unchecked\"",
            up.target()
        )),
        "{dom}"
    );
    // The dead target of `flaky` is drawn as unhealthy once its health check failed.
    assert!(
        dom.contains("data-target=\"127.0.0.1:9\" data-healthy=\"false\""),
        "{dom}"
    );
    assert!(dom.contains("<b id=\"generation\">1</b>"), "{dom}");

    let shot = output_dir().join("console.png");
    let _ = std::fs::remove_file(&shot);
    browse(&page, &[format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_shows_its_file_and_line() {
    let up = Upstream::start("app").await;
    let gw = Gateway::start("", &[("p.yaml", &policy(&up))]).await;
    gw.config.write_policy(
        "bad.yaml",
        "routes:\n  - name: x\n    match: { path: /x }\n    upstream: nowhere\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.config().await["last_error"].is_null() {
        assert!(Instant::now() < deadline, "the bad file was not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dom = browse(&gw.admin_url("/"), &["--dump-dom".to_string()]);
    let banner_at = dom.find("id=\"last-error\"").unwrap();
    let banner = &dom[banner_at..banner_at + dom[banner_at..].find("</div>").unwrap()];
    assert!(banner.contains("class=\"banner bad show\""), "{banner}");
    assert!(banner.contains("bad.yaml:"), "{banner}");
    // The previous generation keeps serving and is still drawn.
    assert!(dom.contains("data-route=\"orders\""));
}

async fn with_token(up: &Upstream) -> Gateway {
    let config = ConfigDir::new("", &[("p.yaml", &policy(up))]);
    let yaml = std::fs::read_to_string(config.gateway_yaml())
        .unwrap()
        .replace("admin:\n", "admin:\n  token_env: TEST_ADMIN_TOKEN\n");
    std::fs::write(config.gateway_yaml(), yaml).unwrap();
    Gateway::start_in(config, &[("TEST_ADMIN_TOKEN", "s3cret")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_browser_the_token_is_asked_for_and_the_reload_button_reloads() {
    let up = Upstream::start("app").await;
    let gw = with_token(&up).await;
    let mut page = Browser::open(&gw.admin_url("/")).await;
    let form_shown = "document.getElementById('token-form').classList.contains('show')";
    page.wait_for(form_shown, "the token form").await;
    let submit = |token: &str| {
        format!(
            "document.getElementById('token').value = '{token}';\
             document.getElementById('token-form').requestSubmit(); true"
        )
    };
    // A wrong token: still asked for.
    page.eval(&submit("wrong")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(page.eval(form_shown).await, true);
    page.eval(&submit("s3cret")).await;
    let orders_row = "document.querySelector('[data-route=\"orders\"]') !== null";
    page.wait_for(orders_row, "the routes once the token was given")
        .await;
    assert_eq!(page.eval(form_shown).await, false);

    // The reload button: a new route file, then a click.
    gw.config.write_policy(
        "more.yaml",
        "routes:\n  - { name: added, match: { path: /added }, auth: none, upstream: app }\n",
    );
    let notice = "document.getElementById('notice').textContent";
    page.eval("document.getElementById('reload').click(); true")
        .await;
    page.wait_for(
        &format!("{notice}.startsWith('Reloaded: generation')"),
        "the reload's answer",
    )
    .await;
    page.wait_for(
        "document.querySelector('[data-route=\"added\"]') !== null",
        "the added route",
    )
    .await;

    // A broken file and a click: refused, with the file and line, and the old set drawn.
    gw.config.write_policy(
        "bad.yaml",
        "routes:\n  - name: x\n    match: { path: /x }\n    upstream: nowhere\n",
    );
    page.eval("document.getElementById('reload').click(); true")
        .await;
    page.wait_for(
        &format!("{notice}.includes('refused') && {notice}.includes('bad.yaml:')"),
        "the refusal with its file and line",
    )
    .await;
    assert_eq!(page.eval(orders_row).await, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_the_page_loads_and_asks_for_it() {
    let up = Upstream::start("app").await;
    let gw = with_token(&up).await;
    let c = client();
    let page = c.get(gw.admin_url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    // No external assets: nothing is loaded from anywhere else.
    assert!(!html.contains("http://") && !html.contains("https://"));
    let refused = c.get(gw.admin_url("/console/state")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let data = c
        .get(gw.admin_url("/console/state"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(data.status(), 200);
    let s: Value = data.json().await.unwrap();
    assert_eq!(s["routes"].as_array().unwrap().len(), 2);

    // In the browser, without the token: the form, and no data drawn.
    let dom = browse(&gw.admin_url("/"), &["--dump-dom".to_string()]);
    assert!(dom.contains("id=\"token-form\" class=\"show\""), "{dom}");
    assert!(!dom.contains("data-route="), "{dom}");
}
