//! Integration harness: the real `gateway` binary on free loopback ports, real upstream
//! HTTP servers (axum) started by the test, a temporary configuration directory.
#![allow(dead_code, unused_imports)]

pub mod collector;
pub mod reply;
pub mod upstream;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use upstream::Upstream;

/// A free TCP port on 127.0.0.1.
/// A port on 127.0.0.1 that nothing listens on, for a server the test starts later.
///
/// Taken below the ephemeral range when there is room: a port from that range (what
/// binding port 0 gives) can be taken by an outgoing connection of a concurrent test
/// between this check and the server's bind ("Address already in use"). Ports are handed
/// out in turn from a per-process offset, so concurrent tests never get the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    if ephemeral_low > LOW + 1_000 {
        let span = ephemeral_low - LOW;
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let port = LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return port as u16;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gateway")
}

/// A configuration directory: gateway.yaml plus policies/.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin: u16,
}

impl ConfigDir {
    /// `extra` is appended to gateway.yaml (for example `limits: ...`).
    pub fn new(extra: &str, policies: &[(&str, &str)]) -> ConfigDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let admin = free_port();
        let gw = format!(
            "listeners:\n  - name: public\n    bind: 127.0.0.1:{port}\nadmin:\n  bind: 127.0.0.1:{admin}\npolicies: policies/\nthreads: 2\nshutdown_grace: 1s\n{extra}"
        );
        std::fs::write(dir.path().join("gateway.yaml"), gw).expect("write gateway.yaml");
        std::fs::create_dir(dir.path().join("policies")).expect("mkdir policies");
        let c = ConfigDir { dir, port, admin };
        for (name, text) in policies {
            c.write_policy(name, text);
        }
        c
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn gateway_yaml(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    pub fn write_policy(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join("policies").join(name), text).expect("write policy");
    }

    /// Runs `gateway check`; returns (exit success, stdout + stderr).
    pub fn check(&self) -> (bool, String) {
        let out = Command::new(bin())
            .args(["check", "-c"])
            .arg(self.gateway_yaml())
            .output()
            .expect("run gateway check");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

/// The stdout and stderr of `child`, those of them that are piped and not taken yet.
pub fn output_pipes(child: &mut Child) -> Vec<Box<dyn Read + Send>> {
    [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A running gateway process; killed on drop.
pub struct Gateway {
    child: Child,
    pub config: ConfigDir,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts `gateway run` on a fresh configuration and waits until `/readyz` is 200.
    pub async fn start(extra: &str, policies: &[(&str, &str)]) -> Gateway {
        Self::start_in(ConfigDir::new(extra, policies), &[]).await
    }

    pub async fn start_in(config: ConfigDir, env: &[(&str, &str)]) -> Gateway {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "-c"])
            .arg(config.gateway_yaml())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn gateway");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for pipe in output_pipes(&mut child) {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let gw = Gateway {
            child,
            config,
            lines,
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&self) {
        let url = self.admin_url("/readyz");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = client();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway did not become ready; output:\n{}", self.output());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.config.port, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.config.admin, path)
    }

    /// The Prometheus text of the admin `/metrics`.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The admin `/metrics` text once `ready` holds for it (at most 5 s, then as it is).
    /// Request counts and durations are recorded when a request is logged, which may be
    /// just after its answer reached the client.
    pub async fn metrics_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.metrics().await;
            if ready(&m) || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The admin `/config` document.
    pub async fn config(&self) -> serde_json::Value {
        client()
            .get(self.admin_url("/config"))
            .send()
            .await
            .expect("config")
            .json()
            .await
            .expect("config json")
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.port))
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits (at most 5 s) until the output contains `needle`: log lines reach it through
    /// the gateway's log writer thread and this harness's pipe reader, after the event
    /// that wrote them is visible elsewhere.
    pub async fn wait_output(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.output().contains(needle) {
            if Instant::now() > deadline {
                panic!("no {needle:?} in the output:\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Parsed JSON access-log lines so far.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "access")
            .collect()
    }

    /// Waits until an access-log line satisfies `pred`.
    pub async fn wait_log(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(v) = self.access_log().into_iter().find(|v| pred(v)) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("no matching access-log line; output:\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

/// Sends raw bytes and returns everything the server answers until it closes or goes
/// quiet for `quiet`. Async, so upstreams running in the test's runtime keep serving.
pub async fn raw(addr: SocketAddr, request: &[u8], quiet: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The 1-based line of the only line of `text` containing `needle` (to compute the
/// `file:line` a configuration problem must name).
pub fn line_of(text: &str, needle: &str) -> usize {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{needle:?} must be on exactly one line of:\n{text}"
    );
    hits[0]
}

/// The status code of the first response in a raw HTTP/1.1 answer.
pub fn raw_status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The values of the samples of `name` in the Prometheus text `text` whose labels include
/// every one of `labels`, in order.
pub fn samples<'a>(
    text: &'a str,
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(move |l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let have: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
            labels
                .iter()
                .all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str()))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
}

/// The sum of the samples of `name` in the Prometheus text `text` whose labels include
/// every one of `labels` (0 when there are none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, name, labels).sum()
}

/// Polls a delivery's status at `url` (the admin `/deliveries/{id}`) until it is
/// delivered or dead, for at most 15 s.
pub async fn delivery_outcome(url: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v: serde_json::Value = client()
            .get(url)
            .send()
            .await
            .expect("the admin port answers")
            .json()
            .await
            .expect("a JSON status");
        if v["status"] == "delivered" || v["status"] == "dead" {
            return v;
        }
        assert!(Instant::now() < deadline, "still {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
