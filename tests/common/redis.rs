//! A real `redis-server` process for the tests of the Redis store: started on a free
//! loopback port, without persistence, killed on drop; it can be killed and started again
//! on the same port, and paused (SIGSTOP) and resumed. Included by the test files that need
//! it with `#[path = "common/redis.rs"] mod redis_server;` (next to `mod common;`).
//!
//! `redis-server` must be installed: the tests using it fail, never skip, without it.
#![allow(dead_code)]

use crate::common::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on 127.0.0.1:`port`, without persistence; killed on drop. It can be
/// killed and started again on the same port, and paused (SIGSTOP) and resumed.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        r.spawn().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers PING.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server not found on PATH: the Redis store tests need it \
                 (e.g. apt-get install redis-server); they are never skipped"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping().await {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} does not answer PING",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the server answers `PING` with `+PONG` within a short time.
    pub async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            s.write_all(b"PING\r\n").await?;
            let mut buf = [0u8; 16];
            let mut got = Vec::new();
            while got.len() < 7 {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            Ok::<bool, std::io::Error>(got.starts_with(b"+PONG"))
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), attempt).await,
            Ok(Ok(true))
        )
    }

    /// Sends one inline command (words without spaces or quotes: fine for a test's key
    /// names) and returns the raw RESP answer, read until the server goes quiet.
    pub async fn inline(&self, command: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to redis");
        s.write_all(format!("{command}\r\n").as_bytes())
            .await
            .expect("send to redis");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The keys in the server (`KEYS *`, an inline command; fine for a test's few keys).
    pub async fn keys(&self) -> Vec<String> {
        let text = self.inline("KEYS *").await;
        assert!(text.starts_with('*'), "KEYS answered {text:?}");
        text.split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty() && !l.starts_with('$'))
            .map(str::to_string)
            .collect()
    }

    /// The remaining time to live of `key` in milliseconds (`PTTL`: -1 without a TTL, -2
    /// when the key does not exist).
    pub async fn pttl(&self, key: &str) -> i64 {
        let text = self.inline(&format!("PTTL {key}")).await;
        text.trim()
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("PTTL {key} answered {text:?}"))
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid} failed");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
