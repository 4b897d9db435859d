//! A real three-master Redis Cluster for the tests of the store in cluster mode: three
//! `redis-server --cluster-enabled yes` on free loopback ports (each with its cluster bus on
//! another free port), joined by `redis-cli --cluster create`, without replicas or
//! persistence; killed on drop. One master can be killed (SIGKILL) mid-test; the cluster
//! runs with `cluster-require-full-coverage no`, so the others keep serving their slots.
//! Included with `#[path = "common/redis_cluster.rs"] mod redis_cluster;` next to `mod common;`.
//!
//! `redis-server` and `redis-cli` must be installed: the tests fail, never skip, without them.
#![allow(dead_code)]

use crate::common::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    /// Client ports of the masters, in start order.
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: tempfile::TempDir,
}

/// Runs `redis-cli` with `args` and returns its standard output (panics if it cannot run).
pub fn cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-cli not found on PATH: the Redis Cluster tests need it \
             (e.g. apt-get install redis-tools); they are never skipped"
        ),
        Err(e) => panic!("cannot run redis-cli: {e}"),
    }
}

impl RedisCluster {
    /// Starts three masters, creates the cluster and waits until every node says
    /// `cluster_state:ok`.
    pub async fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ports = Vec::new();
        let mut children = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let bus = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                // The bus port would be port + 10000, maybe in use: a free one of its own.
                .args(["--cluster-port", &bus.to_string()])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--cluster-require-full-coverage", "no"])
                .args(["--appendonly", "no", "--save", ""])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match child {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "redis-server not found on PATH: the Redis Cluster tests need it; \
                     they are never skipped"
                ),
                Err(e) => panic!("cannot start redis-server: {e}"),
            };
            ports.push(port);
            children.push(Some(child));
        }
        let c = RedisCluster {
            ports,
            children,
            dir,
        };
        for &p in &c.ports {
            c.wait_for(p, "PING", |o| o.trim() == "PONG").await;
        }
        let nodes = c.nodes();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cli(&args);
        assert!(out.contains("[OK]"), "redis-cli --cluster create: {out}");
        for &p in &c.ports {
            c.wait_for(p, "CLUSTER INFO", |o| o.contains("cluster_state:ok"))
                .await;
        }
        c
    }

    /// `127.0.0.1:port` of every master, as `store.redis.cluster` lists them.
    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// The `redis+cluster://` URL of the cluster.
    pub fn url(&self) -> String {
        format!("redis+cluster://{}/", self.nodes().join(","))
    }

    /// Runs `command` (words split on spaces) on the node at `port`.
    pub fn on(&self, port: u16, command: &str) -> String {
        let port = port.to_string();
        let mut args = vec!["-h", "127.0.0.1", "-p", &port, "--raw"];
        args.extend(command.split(' '));
        cli(&args)
    }

    async fn wait_for(&self, port: u16, command: &str, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.on(port, command);
            if ok(&out) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis node {port}: `{command}` answered {out:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index (in `ports`) of the master that owns `key`'s slot.
    pub fn owner(&self, key: &str) -> usize {
        let slot: u16 = self
            .on(self.ports[0], &format!("CLUSTER KEYSLOT {key}"))
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT");
        let nodes = self.on(self.ports[0], "CLUSTER NODES");
        // `id ip:port@bus flags master ping pong epoch link slot-range...`
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let owns = f.iter().skip(8).any(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                match (a.parse::<u16>(), b.parse::<u16>()) {
                    (Ok(a), Ok(b)) => a <= slot && slot <= b,
                    _ => false,
                }
            });
            if owns {
                let port: u16 = f[1]
                    .split(['@', ','])
                    .next()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse().ok())
                    .expect("a node address");
                return self
                    .ports
                    .iter()
                    .position(|&p| p == port)
                    .expect("a known port");
            }
        }
        panic!("no master owns slot {slot}: {nodes}");
    }

    /// Every key of the live masters (`KEYS *`: fine for a test's few keys), with the
    /// index of the master holding it.
    pub fn keys(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for (i, &p) in self.ports.iter().enumerate() {
            if self.children[i].is_none() {
                continue;
            }
            for k in self.on(p, "KEYS *").lines().filter(|l| !l.is_empty()) {
                out.push((k.to_string(), i));
            }
        }
        out
    }

    /// Kills master `i` (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to master `i`: a stopped master accepts connections
    /// but answers nothing, like a node whose network drops packets.
    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.children[i].as_ref().expect("master running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Waits until the surviving masters mark the killed one as failed (after the
    /// node timeout, 2 s), so what the test sees next is the steady state.
    pub async fn wait_failed(&self, i: usize) {
        let live: Vec<u16> = (0..self.ports.len())
            .filter(|&j| self.children[j].is_some())
            .map(|j| self.ports[j])
            .collect();
        let dead = format!("127.0.0.1:{}", self.ports[i]);
        for p in live {
            self.wait_for(p, "CLUSTER NODES", |o| {
                o.lines()
                    .any(|l| l.contains(&dead) && l.contains("fail") && !l.contains("fail?"))
            })
            .await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}
