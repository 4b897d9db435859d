//! Upstream pools: targets, balancing and the peer (with its timeouts) a request goes to.
//! Built once per load; an unchanged definition keeps its pool across reloads.

pub mod client;

use crate::config::policy::{Balance, Scheme, UpstreamDef, UpstreamTlsDef};
use crate::config::values::ClientKey;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, WrappedX509};
use pingora_load_balancing::selection::{Consistent, Random, RoundRobin};
use pingora_load_balancing::{Backend, LoadBalancer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
}

/// How targets of an `https` upstream are reached.
struct Tls {
    sni: String,
    verify: bool,
    /// A custom CA (DER certificates, as read), instead of the system's roots.
    ca: Option<(Vec<Vec<u8>>, Arc<pingora_core::protocols::tls::CaType>)>,
    /// Separates pooled connections verified against different CAs: Pingora's pool key
    /// covers address, SNI and verification flags, not the CA.
    group: u64,
}

/// The upstream's TLS settings; `dir` resolves a relative `ca`.
fn tls(def: &UpstreamDef, dir: &Path) -> Result<Option<Tls>, String> {
    let t = def.tls.clone().unwrap_or(UpstreamTlsDef {
        sni: None,
        verify: true,
        ca: None,
    });
    if def.scheme == Scheme::Http {
        return match def.tls {
            Some(_) => Err("`tls` needs `scheme: https`".into()),
            None => Ok(None),
        };
    }
    let ca = match &t.ca {
        None => None,
        Some(path) => {
            let der: Vec<Vec<u8>> = crate::tls::pem::certs(&dir.join(path))?
                .into_iter()
                .map(|c| c.to_vec())
                .collect();
            let wrapped: Vec<WrappedX509> = der
                .iter()
                .map(|d| WrappedX509::new(d.clone(), parse_x509))
                .collect();
            Some((der, Arc::from(wrapped)))
        }
    };
    // Without `sni`, a target given by name is asked for that name.
    let sni = t.sni.clone().unwrap_or_else(|| {
        let host = def.targets[0].rsplit_once(':').map_or("", |(h, _)| h);
        match host.parse::<std::net::IpAddr>() {
            Ok(_) => String::new(),
            Err(_) => host.to_string(),
        }
    });
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&ca.as_ref().map(|c| &c.0), &mut h);
    Ok(Some(Tls {
        sni,
        verify: t.verify,
        ca,
        group: std::hash::Hasher::finish(&h),
    }))
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
        let balancer = match def.balance {
            Balance::RoundRobin => {
                Balancer::RoundRobin(LoadBalancer::try_from_iter(targets).map_err(fail)?)
            }
            Balance::Random => {
                Balancer::Random(LoadBalancer::try_from_iter(targets).map_err(fail)?)
            }
            Balance::ConsistentHash => {
                Balancer::Consistent(LoadBalancer::try_from_iter(targets).map_err(fail)?)
            }
        };
        Ok(Upstream {
            name: name.into(),
            def: def.clone(),
            balancer,
            hash_key: def.hash_key.clone().unwrap_or(ClientKey::ClientIp),
            tls,
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

    /// Picks a target; `key` matters only for consistent hashing.
    pub fn select(&self, key: &[u8]) -> Option<Backend> {
        const MAX_ITER: usize = 256;
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select(key, MAX_ITER),
            Balancer::Random(lb) => lb.select(key, MAX_ITER),
            Balancer::Consistent(lb) => lb.select(key, MAX_ITER),
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
            .map(|_| u.select(b"").unwrap().addr.to_string())
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
        let a = u.select(b"client-a").unwrap();
        for _ in 0..10 {
            assert_eq!(u.select(b"client-a").unwrap(), a);
        }
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
