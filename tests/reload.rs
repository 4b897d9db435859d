//! Hot reload: file watching, SIGHUP, atomic swaps under load, failures that keep the old
//! set, ConfigMap-style symlink swaps, requests spanning a reload, and SIGTERM draining.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, Gateway, Upstream};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A policy set: route `stable` on upstream `pool` (at `target`), and one route per name in
/// `extra` at `/extra/NAME`.
fn version(target: &str, extra: &[String]) -> String {
    let mut s = format!(
        "upstreams:\n  pool:\n    targets: [\"{target}\"]\nroutes:\n  - name: stable\n    match: {{ path: /stable/* }}\n    auth: none\n    upstream: pool\n    rewrite: {{ strip_prefix: /stable }}\n"
    );
    for e in extra {
        s.push_str(&format!(
            "  - name: extra-{e}\n    match: {{ path: /extra/{e} }}\n    auth: none\n    upstream: pool\n"
        ));
    }
    s
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn status(url: &str) -> u16 {
    match client().get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls `url` until it answers `want`; returns how long that took.
async fn until_status(url: &str, want: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if status(url).await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{url} did not answer {want} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Keep-alive clients requesting `url` in a loop until finished, counting what they get.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    /// Error statuses, and errors other than a closed connection.
    failed: Arc<Mutex<Vec<String>>>,
    /// Requests lost to HTTP/1.1's close race (RFC 9112 §9.6): written just as the server
    /// closed the idle connection; clients retry such idempotent requests.
    closed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed, closed, url) = (
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    closed.clone(),
                    url.clone(),
                );
                tokio::spawn(async move {
                    let c = client();
                    while !stop.load(Ordering::Relaxed) {
                        match c.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failed
                                .lock()
                                .unwrap()
                                .push(format!("status {}", r.status())),
                            Err(e) if e.is_request() => {
                                closed.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failed.lock().unwrap().push(format!("error {e}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            closed,
            tasks,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns (answered 200, failures, lost to the close race).
    async fn finish(self) -> (usize, Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            failed,
            self.closed.load(Ordering::Relaxed),
        )
    }
}

fn signal(gw: &Gateway, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewrites_under_load_fail_no_request() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start("", &[("p.yaml", &version(&a.target(), &[]))]).await;
    let policy = gw.config.path().join("policies").join("p.yaml");

    let load = Load::start(gw.url("/stable/x"), 4);

    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut i = 0;
    while i < 24 || start.elapsed() < Duration::from_secs(6) {
        i += 1;
        let target = if i % 2 == 0 { a.target() } else { b.target() };
        // Add a route, drop the previous version's, move the upstream between targets.
        let text = version(&target, &[format!("v{i}")]);
        if i % 3 == 0 {
            std::fs::write(&policy, text).unwrap();
        } else {
            write_atomically(&policy, &text);
        }
        let took = until_status(
            &gw.url(&format!("/extra/v{i}")),
            200,
            Duration::from_secs(5),
        )
        .await;
        worst = worst.max(took);
        assert_eq!(
            status(&gw.url(&format!("/extra/v{}", i - 1))).await,
            404,
            "old route removed"
        );
        let want = if i % 2 == 0 { "a" } else { "b" };
        let v: Value = client()
            .get(gw.url("/stable/y"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            v["name"], want,
            "the upstream change is live with the route change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, failed, closed) = load.finish().await;
    assert!(
        failed.is_empty() && closed == 0,
        "{} failed, {closed} closed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 500, "load too light: {ok}");
    assert!(
        worst < Duration::from_secs(1),
        "a change took {worst:?} to go live"
    );
    let cfg = gw.config().await;
    assert!(cfg["generation"].as_u64().unwrap() > i as u64 / 2, "{cfg}");
    eprintln!("{i} rewrites, {ok} requests, slowest change live after {worst:?}");
}

use std::sync::Mutex;

#[tokio::test]
async fn invalid_file_keeps_the_old_set_and_a_fix_recovers_by_itself() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start("", &[("p.yaml", &version(&a.target(), &["one".into()]))]).await;
    let policy = gw.config.path().join("policies").join("p.yaml");

    write_atomically(
        &policy,
        "routes:\n  - name: x\n    match: { path: /x }\n    auth: none\n    upstreem: pool\n",
    );
    let start = Instant::now();
    let cfg = loop {
        let cfg = gw.config().await;
        if !cfg["last_error"].is_null() {
            break cfg;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no reload error reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let err = cfg["last_error"].as_str().unwrap();
    assert!(
        err.contains("p.yaml:5:") && err.contains("upstreem"),
        "{err}"
    );
    assert_eq!(cfg["generation"], 1);
    assert_eq!(
        status(&gw.url("/extra/one")).await,
        200,
        "the old set keeps serving"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains("gateway_config_reloads_total{result=\"failure\"} 1"),
        "{m}"
    );
    // The error is logged with file:line.
    gw.wait_output("p.yaml:5:").await;

    write_atomically(&policy, &version(&a.target(), &["two".into()]));
    until_status(&gw.url("/extra/two"), 200, Duration::from_secs(5)).await;
    let cfg = gw.config().await;
    assert_eq!(cfg["last_error"], Value::Null);
    assert_eq!(cfg["generation"], 2);
    let m = gw.metrics().await;
    assert!(
        m.contains("gateway_config_reloads_total{result=\"success\"} 1"),
        "{m}"
    );
    assert!(m.contains("gateway_config_generation 2"), "{m}");
}

#[tokio::test]
async fn configmap_symlink_swap_is_picked_up() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start("", &[]).await;
    let dir = gw.config.path().join("policies");
    // Simulate the kubelet's layout: ..data -> ..v1, p.yaml -> ..data/p.yaml.
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(
        dir.join("..v1/p.yaml"),
        version(&a.target(), &["one".into()]),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/p.yaml", dir.join("p.yaml")).unwrap();
    until_status(&gw.url("/extra/one"), 200, Duration::from_secs(5)).await;

    // An update: a new version directory, a new ..data symlink renamed over the old one.
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(
        dir.join("..v2/p.yaml"),
        version(&a.target(), &["two".into()]),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    until_status(&gw.url("/extra/two"), 200, Duration::from_secs(5)).await;
    assert_eq!(status(&gw.url("/extra/one")).await, 404);
}

#[tokio::test]
async fn sighup_and_post_reload_rebuild_the_set() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start("", &[("p.yaml", &version(&a.target(), &[]))]).await;
    signal(&gw, "-HUP");
    let start = Instant::now();
    while gw.config().await["generation"] != 2 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.wait_output("SIGHUP received").await;
    let r = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["generation"], 3);
    assert_eq!(status(&gw.url("/stable/x")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_spanning_a_reload_completes() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start("", &[("p.yaml", &version(&a.target(), &["slow".into()]))]).await;
    let url = gw.url("/stable/slow?ms=1500");
    let slow = tokio::spawn(async move {
        let r = client().get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new set moves `pool` to another target and drops a route.
    let policy = gw.config.path().join("policies").join("p.yaml");
    write_atomically(&policy, &version(&b.target(), &[]));
    until_status(&gw.url("/extra/slow"), 404, Duration::from_secs(5)).await;
    assert!(
        !slow.is_finished(),
        "the slow request should still be in flight"
    );
    let (code, body) = slow.await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(body, "slow done");
    let v: Value = client()
        .get(gw.url("/stable/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["name"], "b", "new requests go to the new target");
}

#[tokio::test]
async fn start_time_settings_need_a_restart_live_settings_apply() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start(
        "limits: { max_body: 1KiB }\n",
        &[("p.yaml", &version(&a.target(), &[]))],
    )
    .await;
    let c = client();
    assert_eq!(
        c.post(gw.url("/stable/x"))
            .body(vec![0u8; 2000])
            .send()
            .await
            .unwrap()
            .status(),
        413
    );

    let yaml = std::fs::read_to_string(gw.config.gateway_yaml()).unwrap();
    let moved = yaml
        .replace(&format!("127.0.0.1:{}", gw.config.port), "127.0.0.1:1")
        .replace("max_body: 1KiB", "max_body: 4KiB");
    write_atomically(&gw.config.gateway_yaml(), &moved);
    let start = Instant::now();
    let cfg = loop {
        let cfg = gw.config().await;
        if cfg["restart_required"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break cfg;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "change not noticed: {cfg}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(cfg["restart_required"], serde_json::json!(["listeners"]));
    assert_eq!(cfg["last_error"], Value::Null);
    // Still listening where it started, with the new body limit.
    assert_eq!(
        c.post(gw.url("/stable/x"))
            .body(vec![0u8; 2000])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.wait_output("restart the gateway to apply them").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight() {
    let a = Upstream::start("a").await;
    let mut gw = Gateway::start("", &[("p.yaml", &version(&a.target(), &[]))]).await;
    let url = gw.url("/stable/slow?ms=700");
    let slow = tokio::spawn(async move {
        let r = client().get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&gw, "-TERM");
    let (code, body) = slow.await.unwrap();
    assert_eq!(code, 200, "the request in flight completes");
    assert_eq!(body, "slow done");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        status(&gw.url("/stable/x")).await,
        0,
        "no new connections after SIGTERM"
    );
    let exit = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(10)));
    assert!(exit.is_some(), "the gateway exits after its shutdown grace");
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pingora's zero-downtime upgrade: a new process started with `--upgrade` receives the
/// listening sockets when the old one gets SIGQUIT; clients see no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_downtime_binary_upgrade() {
    let a = Upstream::start("a").await;
    let mut old = Gateway::start("", &[("p.yaml", &version(&a.target(), &[]))]).await;

    // Keep-alive clients: at the handover their idle connections to the old process close
    // and they reconnect, to the new one. (A brand-new connection that the old process
    // accepted in the instant before it stopped, and whose request had not arrived yet, is
    // closed by Pingora without an answer: see the README.)
    let load = Load::start(old.url("/stable/x"), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let new = Killed(
        std::process::Command::new(common::bin())
            .args(["run", "--upgrade", "-c"])
            .arg(old.config.gateway_yaml())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&old, "-QUIT");
    let exited = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(20)));
    assert!(
        exited.is_some(),
        "the old process exits after handing over its sockets"
    );
    let before = load.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, closed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // At most one request per keep-alive connection (one per client) can meet the race.
    assert!(closed <= 2, "{closed} requests lost to closed connections");
    assert!(
        ok > before,
        "the new process serves after the old one exited"
    );
    eprintln!("upgrade: {ok} requests answered, {closed} lost to the close race");
    drop(new);
}

/// Files that are not configuration (a log next to gateway.yaml, notes in the policies
/// directory) change all the time; their writes must not postpone a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_files_next_to_the_config_do_not_delay_reloads() {
    let a = Upstream::start("a").await;
    let gw = Gateway::start("", &[("p.yaml", &version(&a.target(), &[]))]).await;
    let dir = gw.config.path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, dir) = (stop.clone(), dir.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut log = std::fs::File::create(dir.join("gateway.log")).unwrap();
            let mut notes = std::fs::File::create(dir.join("policies/NOTES.txt")).unwrap();
            while !stop.load(Ordering::Relaxed) {
                writeln!(log, "a log line").unwrap();
                writeln!(notes, "a note").unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_atomically(
        &dir.join("policies/p.yaml"),
        &version(&a.target(), &["new".into()]),
    );
    let took = until_status(&gw.url("/extra/new"), 200, Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        took < Duration::from_secs(1),
        "the change took {took:?} to go live"
    );
    assert_eq!(
        gw.config().await["generation"],
        2,
        "the noise caused no reloads"
    );
}
