//! What the plain bench programs (ws_idle, deliver) share: child processes killed on drop,
//! numeric settings from the environment, free loopback ports, percentiles. Included with
//! `#[path = "support/mod.rs"] mod support;` (a file directly in benches/ would be a bench
//! target of its own).
#![allow(dead_code)]

use std::process::Child;
use std::time::Duration;

/// A child process killed (and reaped) on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A numeric setting from the environment, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// The `p` quantile of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

/// A `gateway run` on free loopback ports with a temporary configuration: `extra` is
/// appended to gateway.yaml, `policy` is the one policy file. Killed on drop.
pub struct Gateway {
    pub process: Killed,
    pub port: u16,
    pub admin: u16,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `bin` and waits until it is ready; its stdout goes to `log` when given.
    pub async fn start(
        bin: &str,
        extra: &str,
        policy: &str,
        log: Option<std::path::PathBuf>,
    ) -> Gateway {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, admin) = (free_port(), free_port());
        std::fs::create_dir(dir.path().join("policies")).expect("policies dir");
        std::fs::write(
            dir.path().join("gateway.yaml"),
            format!(
                "listeners:\n  - name: public\n    bind: 127.0.0.1:{port}\nadmin:\n  bind: 127.0.0.1:{admin}\npolicies: policies/\nthreads: 2\nlog: {{ level: warn }}\n{extra}"
            ),
        )
        .expect("gateway.yaml");
        std::fs::write(dir.path().join("policies/p.yaml"), policy).expect("policy");
        let stdout = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::null(),
        };
        let child = Command::new(bin)
            .args(["run", "-c"])
            .arg(dir.path().join("gateway.yaml"))
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (cargo build --release first)"));
        let process = Killed(child);
        let client = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{admin}/readyz");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the gateway did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Gateway {
            process,
            port,
            admin,
            dir,
        }
    }
}
