//! The resolved target set of an upstream and the state kept per address: the balancer
//! (Pingora's, fed by a discovery that returns the current set; it keeps each address's
//! health across updates), one circuit breaker per address, and the single-target fast path.

use super::breaker::Breaker;
use super::{Addr, Upstream};
use crate::config::policy::Balance;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::FutureExt;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::HttpHealthCheck;
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Consistent, Random, RoundRobin,
};
use pingora_load_balancing::{Backend, Backends, Extensions, LoadBalancer};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

/// The set the balancer's discovery returns: whatever was last applied.
#[derive(Clone, Default)]
pub(super) struct Feed(Arc<ArcSwap<BTreeSet<Backend>>>);

#[async_trait]
impl ServiceDiscovery for Feed {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((BTreeSet::clone(&self.0.load()), HashMap::new()))
    }
}

pub(super) enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<Consistent>),
}

fn lb<S>(feed: &Feed, hc: Option<Box<HttpHealthCheck>>) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let mut lb = LoadBalancer::from_backends(Backends::new(Box::new(feed.clone())));
    if let Some(hc) = hc {
        lb.set_health_check(hc);
    }
    lb
}

impl Balancer {
    /// An empty balancer reading its targets from `feed`.
    pub(super) fn new(balance: Balance, feed: &Feed, hc: Option<Box<HttpHealthCheck>>) -> Self {
        match balance {
            Balance::RoundRobin => Balancer::RoundRobin(lb(feed, hc)),
            Balance::Random => Balancer::Random(lb(feed, hc)),
            Balance::ConsistentHash => Balancer::Consistent(lb(feed, hc)),
        }
    }

    fn backends(&self) -> &Backends {
        match self {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Random(lb) => lb.backends(),
            Balancer::Consistent(lb) => lb.backends(),
        }
    }

    /// Takes the feed's set. The discovery answers without waiting, so the update is done
    /// in one poll; `None` would mean it was not (the set then stays as it was).
    fn update_now(&self) -> Option<pingora_error::Result<()>> {
        match self {
            Balancer::RoundRobin(lb) => lb.update().now_or_never(),
            Balancer::Random(lb) => lb.update().now_or_never(),
            Balancer::Consistent(lb) => lb.update().now_or_never(),
        }
    }

    pub(super) fn select_with(
        &self,
        key: &[u8],
        accept: impl Fn(&Backend, bool) -> bool,
    ) -> Option<Backend> {
        const MAX_ITER: usize = 256;
        match self {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_ITER, accept),
            Balancer::Random(lb) => lb.select_with(key, MAX_ITER, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_ITER, accept),
        }
    }

    pub(super) async fn check_health(&self) {
        self.backends().run_health_check(true).await;
    }
}

/// Per-address state of one target set, replaced whole when the set changes.
#[derive(Default)]
pub(super) struct Targets {
    /// One breaker per address (configured, or passive with several targets); shared with
    /// the next set for the addresses that stay.
    pub(super) breakers: HashMap<Addr, Arc<Breaker>>,
    /// The only target, when there is one and no health check can take it out: selected
    /// without going through the balancer (no per-request set of visited targets).
    pub(super) single: Option<Backend>,
}

impl Upstream {
    /// Makes `addrs` the target set. An address that stays keeps its breaker and its health;
    /// a new one starts closed and healthy; one that is gone loses both (and its
    /// `gateway_circuit_state` series).
    pub(super) fn apply(&self, addrs: BTreeSet<SocketAddr>) {
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let set: BTreeSet<Backend> = addrs
            .into_iter()
            .map(|a| Backend {
                addr: Addr::Inet(a),
                weight: 1,
                ext: Extensions::new(),
            })
            .collect();
        self.feed.0.store(Arc::new(set));
        match self.balancer.update_now() {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::error!(upstream = %self.name, error = %e, "target set not updated")
            }
            None => tracing::error!(upstream = %self.name, "target set not updated"),
        }
        let backends = self.balancer.backends().get_backend();
        let old = self.targets.load_full();
        let mut breakers = HashMap::new();
        // Configured breakers; else passive ones when another target can take over (with
        // one target, taking it out would only turn a 502 into a 503).
        let passive = self.def.circuit_breaker.is_none() && backends.len() > 1;
        if self.def.circuit_breaker.is_some() || passive {
            for b in backends.iter() {
                let kept = old
                    .breakers
                    .get(&b.addr)
                    .filter(|k| k.is_passive() == passive);
                let breaker = kept.cloned().unwrap_or_else(|| {
                    let label = b.addr.to_string();
                    Arc::new(match &self.def.circuit_breaker {
                        Some(cb) => Breaker::new(&self.name, &label, cb.failures, cb.open_for.0),
                        None => Breaker::passive(&self.name, &label),
                    })
                });
                breakers.insert(b.addr.clone(), breaker);
            }
        }
        for (addr, b) in &old.breakers {
            if !breakers.contains_key(addr) {
                b.forget();
            }
        }
        let single = match (backends.len(), &self.def.health_check) {
            (1, None) => backends.iter().next().cloned(),
            _ => None,
        };
        self.targets.store(Arc::new(Targets { breakers, single }));
    }

    /// Each target of the current set: its address, whether the balancer counts it
    /// healthy, and its breaker's state (`none` without one). For the console.
    pub fn target_states(&self) -> Vec<(String, bool, &'static str)> {
        let backends = self.balancer.backends();
        let targets = self.targets.load();
        backends
            .get_backend()
            .iter()
            .map(|b| {
                let circuit = targets
                    .breakers
                    .get(&b.addr)
                    .map_or("none", |k| k.state_name());
                (b.addr.to_string(), backends.ready(b), circuit)
            })
            .collect()
    }

    /// The addresses of the current target set.
    pub fn addresses(&self) -> Vec<Addr> {
        self.balancer
            .backends()
            .get_backend()
            .iter()
            .map(|b| b.addr.clone())
            .collect()
    }
}
