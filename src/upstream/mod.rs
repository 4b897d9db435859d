//! Upstream pools: targets, balancing and the peer (with its timeouts) a request goes to.
//! Built once per load; an unchanged definition keeps its pool across reloads.

pub mod breaker;
pub mod client;
pub mod health;
pub mod retry;
mod tls;

use crate::config::policy::{Balance, UpstreamDef};
use crate::config::values::ClientKey;
/// A target's address, as the balancer knows it.
pub use pingora_core::protocols::l4::socket::SocketAddr as Addr;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::selection::{Consistent, Random, RoundRobin};
use pingora_load_balancing::{Backend, LoadBalancer};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tls::{tls, Tls};

/// How long a pooled upstream connection may stay idle before it is closed.
const POOL_IDLE: Duration = Duration::from_secs(60);

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<Consistent>),
}

/// One named upstream pool.
pub struct Upstream {
    pub name: Arc<str>,
    /// The definition it was built from; compared on reload to reuse the pool.
    pub def: UpstreamDef,
    balancer: Balancer,
    pub hash_key: ClientKey,
    tls: Option<Tls>,
    pub retry: Option<retry::RetryPolicy>,
    /// One breaker per target address (with `circuit_breaker`).
    /// Keyed by target address (no formatting per request).
    breakers: HashMap<Addr, breaker::Breaker>,
    /// When active health checks last ran (with `health_check`).
    pub health: Option<health::Schedule>,
    /// The only target, when there is one and no health check can take it out: selected
    /// without going through the balancer (no per-request set of visited targets).
    single: Option<Backend>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish()
    }
}

impl Upstream {
    /// Builds the pool. Targets are `host:port`; names are resolved once, here. `dir`
    /// resolves a relative CA file.
    pub fn build(name: &str, def: &UpstreamDef, dir: &Path) -> Result<Upstream, String> {
        if def.targets.is_empty() {
            return Err("an upstream needs at least one target".into());
        }
        for t in &def.targets {
            check_target(t)?;
        }
        let tls = tls(def, dir)?;
        let targets = def.targets.iter().map(String::as_str);
        let fail = |e: std::io::Error| format!("cannot resolve targets: {e}");
        let hc = || health::check(def, tls.as_ref());
        let balancer = match def.balance {
            Balance::RoundRobin => {
                let mut lb = LoadBalancer::try_from_iter(targets).map_err(fail)?;
                if let Some(hc) = hc() {
                    lb.set_health_check(hc);
                }
                Balancer::RoundRobin(lb)
            }
            Balance::Random => {
                let mut lb = LoadBalancer::try_from_iter(targets).map_err(fail)?;
                if let Some(hc) = hc() {
                    lb.set_health_check(hc);
                }
                Balancer::Random(lb)
            }
            Balance::ConsistentHash => {
                let mut lb = LoadBalancer::try_from_iter(targets).map_err(fail)?;
                if let Some(hc) = hc() {
                    lb.set_health_check(hc);
                }
                Balancer::Consistent(lb)
            }
        };
        let backends = match &balancer {
            Balancer::RoundRobin(lb) => lb.backends().get_backend(),
            Balancer::Random(lb) => lb.backends().get_backend(),
            Balancer::Consistent(lb) => lb.backends().get_backend(),
        };
        let single = match (backends.len(), &def.health_check) {
            (1, None) => backends.iter().next().cloned(),
            _ => None,
        };
        let mut breakers = HashMap::new();
        if let Some(cb) = &def.circuit_breaker {
            for b in backends.iter() {
                let label = b.addr.to_string();
                let breaker = breaker::Breaker::new(name, &label, cb.failures, cb.open_for.0);
                breakers.insert(b.addr.clone(), breaker);
            }
        }
        Ok(Upstream {
            retry: def.retries.as_ref().map(retry::RetryPolicy::new),
            breakers,
            health: def
                .health_check
                .as_ref()
                .map(|h| health::Schedule::new(h.interval.0)),
            name: name.into(),
            def: def.clone(),
            balancer,
            hash_key: def.hash_key.clone().unwrap_or(ClientKey::ClientIp),
            tls,
            single,
        })
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

    fn select_with(&self, key: &[u8], accept: impl Fn(&Backend, bool) -> bool) -> Option<Backend> {
        const MAX_ITER: usize = 256;
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_ITER, accept),
            Balancer::Random(lb) => lb.select_with(key, MAX_ITER, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_ITER, accept),
        }
    }

    /// Picks a healthy target whose breaker lets the request through, preferring one not in
    /// `tried` (the targets earlier tries of this request went to); `key` matters only for
    /// consistent hashing. `None`: no target can take the request now.
    pub fn select_for(&self, key: &[u8], tried: &[Addr]) -> Option<Backend> {
        let admit = |b: &Backend| {
            self.breakers.is_empty()
                || self
                    .breakers
                    .get(&b.addr)
                    .is_none_or(breaker::Breaker::admit)
        };
        if let Some(only) = &self.single {
            // Tried or not, it is the only choice.
            return admit(only).then(|| only.clone());
        }
        let fresh = |b: &Backend, healthy: bool| healthy && !tried.contains(&b.addr) && admit(b);
        self.select_with(key, fresh)
            .or_else(|| self.select_with(key, |b, healthy| healthy && admit(b)))
    }

    /// Whether some target could take a request now (healthy, breaker not open), without
    /// taking a half-open probe.
    pub fn available(&self) -> bool {
        self.select_with(b"", |b, healthy| {
            healthy && self.breakers.get(&b.addr).is_none_or(|br| !br.is_open())
        })
        .is_some()
    }

    /// Feeds a try's outcome to the target's breaker.
    pub fn record(&self, target: &Addr, ok: bool) {
        if let Some(b) = self.breakers.get(target) {
            match ok {
                true => b.success(),
                false => b.failure(),
            }
        }
    }

    /// Runs the active health checks of every target (with `health_check`).
    pub async fn check_health(&self) {
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends().run_health_check(true).await,
            Balancer::Random(lb) => lb.backends().run_health_check(true).await,
            Balancer::Consistent(lb) => lb.backends().run_health_check(true).await,
        }
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
        o.connection_timeout = Some(self.def.timeouts.connect.0);
        o.total_connection_timeout = Some(self.def.timeouts.connect.0);
        o.read_timeout = Some(self.def.timeouts.read.0);
        o.write_timeout = Some(self.def.timeouts.read.0);
        o.idle_timeout = Some(POOL_IDLE);
        Box::new(peer)
    }
}

fn check_target(t: &str) -> Result<(), String> {
    let bad = || format!("invalid target {t:?}: expected host:port, such as 127.0.0.1:9001");
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(u.single.is_some());
        let only = u.select_for(b"", &[]).unwrap();
        // Already tried: still the only choice.
        assert_eq!(
            u.select_for(b"", std::slice::from_ref(&only.addr)).unwrap(),
            only
        );
        u.record(&only.addr, false);
        u.record(&only.addr, false);
        assert!(u.select_for(b"", &[]).is_none(), "open breaker");
        // Several targets go through the balancer.
        let two = Upstream::build_here("u", &def(&["127.0.0.1:1", "127.0.0.1:2"], Balance::Random));
        assert!(two.unwrap().single.is_none());
    }

    #[test]
    fn bad_targets() {
        for t in ["nope", ":80", "127.0.0.1:0", "127.0.0.1:99999"] {
            assert!(
                Upstream::build_here("u", &def(&[t], Balance::Random)).is_err(),
                "{t}"
            );
        }
        assert!(Upstream::build_here("u", &def(&[], Balance::Random)).is_err());
    }
}
