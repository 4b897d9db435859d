//! Upstream pools: targets, balancing and the peer (with its timeouts) a request goes to.
//! Built once per load; an unchanged definition keeps its pool (and its resolved targets,
//! breakers and health) across reloads. Host names among the targets are resolved in the
//! background (`dns`), never on the request path nor when a set is compiled.

pub mod breaker;
pub mod client;
pub mod dns;
pub mod health;
pub mod retry;
mod targets;
mod tls;

use crate::config::policy::UpstreamDef;
use crate::config::values::ClientKey;
use arc_swap::ArcSwap;
/// A target's address, as the balancer knows it.
pub use pingora_core::protocols::l4::socket::SocketAddr as Addr;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::Backend;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use targets::{Balancer, Feed, Targets};
use tls::{tls, Tls};

/// How long a pooled upstream connection may stay idle before it is closed.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// One named upstream pool.
pub struct Upstream {
    pub name: Arc<str>,
    /// The definition it was built from; compared on reload to reuse the pool.
    pub def: UpstreamDef,
    balancer: Balancer,
    /// What the balancer's discovery returns: the current target set.
    feed: Feed,
    /// Breakers and the single-target fast path of the current target set; read without a
    /// lock on the request path, replaced whole when the set changes.
    targets: ArcSwap<Targets>,
    /// Serializes changes of the target set.
    applying: Mutex<()>,
    /// The targets as written, and what their host names last resolved to.
    dns: dns::Names,
    pub hash_key: ClientKey,
    tls: Option<Tls>,
    pub retry: Option<retry::RetryPolicy>,
    /// When active health checks last ran (with `health_check`).
    pub health: Option<health::Schedule>,
    /// `gateway_upstream_duration_seconds{upstream}`, resolved once.
    pub duration: prometheus::Histogram,
    /// Connect and read/write timeouts, taken from the definition when built (the request
    /// path reads no configuration types).
    connect_timeout: std::time::Duration,
    read_timeout: std::time::Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish()
    }
}

impl Upstream {
    /// Builds the pool. Targets are `host:port`; only their syntax is checked here: IP
    /// targets are used as they are, host names start without addresses until the DNS
    /// service resolves them. `dir` resolves a relative CA file.
    pub fn build(name: &str, def: &UpstreamDef, dir: &Path) -> Result<Upstream, String> {
        Upstream::build_after(name, def, dir, None)
    }

    /// As [`Upstream::build`], for an upstream that replaces `prev` (same name, changed
    /// definition) on a reload: names both have start with what `prev` resolved them to.
    pub fn build_after(
        name: &str,
        def: &UpstreamDef,
        dir: &Path,
        prev: Option<&Upstream>,
    ) -> Result<Upstream, String> {
        if def.targets.is_empty() {
            return Err("an upstream needs at least one target".into());
        }
        let parsed = def
            .targets
            .iter()
            .map(|t| dns::parse_target(t))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = tls(def, dir)?;
        let feed = Feed::default();
        let balancer = Balancer::new(def.balance, &feed, health::check(def, tls.as_ref()));
        let every = def.dns_refresh.map_or(dns::DEFAULT_REFRESH, |d| d.0);
        let names = dns::Names::new(parsed, every);
        if let Some(p) = prev {
            names.seed_from(&p.dns);
        }
        let up = Upstream {
            retry: def.retries.as_ref().map(retry::RetryPolicy::new),
            health: def
                .health_check
                .as_ref()
                .map(|h| health::Schedule::new(h.interval.0)),
            name: name.into(),
            def: def.clone(),
            balancer,
            feed,
            targets: ArcSwap::from_pointee(Targets::default()),
            applying: Mutex::new(()),
            dns: names,
            hash_key: def.hash_key.clone().unwrap_or(ClientKey::ClientIp),
            tls,
            duration: crate::metrics::UPSTREAM_DURATION.with_label_values(&[name]),
            connect_timeout: def.timeouts.connect.0,
            read_timeout: def.timeouts.read.0,
        };
        up.apply(up.dns.addresses());
        Ok(up)
    }

    /// Whether a rebuilt upstream would be the same as this one: same definition, same
    /// CA certificates on disk.
    pub fn same_as(&self, def: &UpstreamDef, dir: &Path) -> bool {
        if self.def != *def {
            return false;
        }
        match (&self.tls, tls(def, dir)) {
            (Some(a), Ok(Some(b))) => a.ca.as_ref().map(|c| &c.0) == b.ca.as_ref().map(|c| &c.0),
            (None, Ok(None)) => true,
            _ => false,
        }
    }

    /// Picks a healthy target whose breaker lets the request through, preferring one not in
    /// `tried` (the targets earlier tries of this request went to); `key` matters only for
    /// consistent hashing. `None`: no target can take the request now (none resolved, all
    /// unhealthy or open).
    pub fn select_for(&self, key: &[u8], tried: &[Addr]) -> Option<Backend> {
        let t = self.targets.load();
        let admit = |b: &Backend| {
            t.breakers.is_empty() || t.breakers.get(&b.addr).is_none_or(|br| br.admit())
        };
        if let Some(only) = &t.single {
            // Tried or not, it is the only choice.
            return admit(only).then(|| only.clone());
        }
        let fresh = |b: &Backend, healthy: bool| healthy && !tried.contains(&b.addr) && admit(b);
        self.balancer.select_with(key, fresh).or_else(|| {
            self.balancer
                .select_with(key, |b, healthy| healthy && admit(b))
        })
    }

    /// Whether some target could take a request now (healthy, breaker not open), without
    /// taking a half-open probe.
    pub fn available(&self) -> bool {
        let t = self.targets.load();
        self.balancer
            .select_with(b"", |b, healthy| {
                healthy && t.breakers.get(&b.addr).is_none_or(|br| !br.is_open())
            })
            .is_some()
    }

    /// A try at `target` ended without a verdict: its half-open probe, if it was one, is
    /// given back.
    pub fn release(&self, target: &Addr) {
        let t = self.targets.load();
        if t.breakers.is_empty() {
            return;
        }
        if let Some(b) = t.breakers.get(target) {
            b.release();
        }
    }

    /// Feeds a try's verdict to the target's breaker.
    pub fn record(&self, target: &Addr, v: breaker::Verdict) {
        let t = self.targets.load();
        // Most upstreams have no breakers: no hashing of the address per request then.
        if t.breakers.is_empty() {
            return;
        }
        if let Some(b) = t.breakers.get(target) {
            b.record(v);
        }
    }

    /// Runs the active health checks of every target (with `health_check`).
    pub async fn check_health(&self) {
        self.balancer.check_health().await;
    }

    /// The longest a request can take here: every try to its connect and read timeouts.
    pub fn longest_answer(&self) -> std::time::Duration {
        let tries = self.retry.as_ref().map_or(1, |r| r.attempts);
        (self.connect_timeout + self.read_timeout) * tries
    }

    /// Whether the key for consistent hashing needs to be computed at all.
    pub fn hashes(&self) -> bool {
        matches!(self.balancer, Balancer::Consistent(_))
    }

    /// The peer for a selected target, with this upstream's timeouts and pooling.
    pub fn peer(&self, backend: &Backend) -> Box<HttpPeer> {
        let mut peer = match &self.tls {
            None => HttpPeer::new(backend.addr.clone(), false, String::new()),
            Some(t) => {
                let mut peer = HttpPeer::new(backend.addr.clone(), true, t.sni.clone());
                peer.options.verify_cert = t.verify;
                peer.options.verify_hostname = t.verify;
                peer.options.ca = t.ca.as_ref().map(|c| c.1.clone());
                peer.group_key = t.group;
                peer
            }
        };
        let o = &mut peer.options;
        if self.def.scheme == crate::config::policy::Scheme::H2c {
            o.set_http_version(2, 2);
        }
        o.connection_timeout = Some(self.connect_timeout);
        o.total_connection_timeout = Some(self.connect_timeout);
        o.read_timeout = Some(self.read_timeout);
        o.write_timeout = Some(self.read_timeout);
        o.idle_timeout = Some(POOL_IDLE);
        Box::new(peer)
    }
}

#[cfg(test)]
mod dns_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::Balance;

    fn def(targets: &[&str], balance: Balance) -> UpstreamDef {
        serde_yaml::from_str::<UpstreamDef>(&format!(
            "targets: [{}]\nbalance: {}",
            targets
                .iter()
                .map(|t| format!("{t:?}"))
                .collect::<Vec<_>>()
                .join(","),
            match balance {
                Balance::RoundRobin => "round_robin",
                Balance::Random => "random",
                Balance::ConsistentHash => "consistent_hash",
            }
        ))
        .unwrap()
    }

    impl Upstream {
        fn build_here(name: &str, def: &UpstreamDef) -> Result<Upstream, String> {
            Upstream::build(name, def, Path::new("."))
        }
    }

    #[test]
    fn round_robin_visits_every_target() {
        let u = Upstream::build_here(
            "u",
            &def(&["127.0.0.1:1", "127.0.0.1:2"], Balance::RoundRobin),
        )
        .unwrap();
        let mut seen: Vec<String> = (0..4)
            .map(|_| u.select_for(b"", &[]).unwrap().addr.to_string())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn consistent_hash_is_sticky() {
        let u = Upstream::build_here(
            "u",
            &def(
                &["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
                Balance::ConsistentHash,
            ),
        )
        .unwrap();
        let a = u.select_for(b"client-a", &[]).unwrap();
        for _ in 0..10 {
            assert_eq!(u.select_for(b"client-a", &[]).unwrap(), a);
        }
    }

    #[test]
    fn a_single_target_is_chosen_directly_and_its_breaker_still_applies() {
        let mut d = def(&["127.0.0.1:1"], Balance::RoundRobin);
        d.circuit_breaker = serde_yaml::from_str("{ failures: 2, open_for: 60s }").unwrap();
        let u = Upstream::build_here("u", &d).unwrap();
        assert!(u.targets.load().single.is_some());
        let only = u.select_for(b"", &[]).unwrap();
        // Already tried: still the only choice.
        assert_eq!(
            u.select_for(b"", std::slice::from_ref(&only.addr)).unwrap(),
            only
        );
        u.record(&only.addr, breaker::Verdict::Failed);
        u.record(&only.addr, breaker::Verdict::Failed);
        assert!(u.select_for(b"", &[]).is_none(), "open breaker");
        // Several targets go through the balancer.
        let two = Upstream::build_here("u", &def(&["127.0.0.1:1", "127.0.0.1:2"], Balance::Random));
        assert!(two.unwrap().targets.load().single.is_none());
    }

    #[test]
    fn bad_targets() {
        for t in [
            "nope",
            ":80",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "http://users:80",
            "::1:80",
            "[::1]:0",
            "a b:80",
            "users:",
            "users:http",
        ] {
            assert!(
                Upstream::build_here("u", &def(&[t], Balance::Random)).is_err(),
                "{t}"
            );
        }
        assert!(Upstream::build_here("u", &def(&[], Balance::Random)).is_err());
    }
}
