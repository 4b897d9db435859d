//! Upstream targets given as host names: parsed when a policy set is compiled (never
//! resolved there, so `gateway check` needs no network), resolved by a background service
//! at start and every `dns_refresh`. Every address a name resolves to becomes a target.

use super::health::Schedule;
use super::Upstream;
use crate::runtime::{Snapshot, Store};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::{register_int_counter_vec, IntCounterVec};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

/// How often names are resolved again when the upstream does not say (`dns_refresh`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// How long one lookup may take. A lookup that takes longer counts as failed; the blocking
/// resolver call behind it may still finish in the background, which is why refreshes of
/// one upstream never overlap (no pile-up of lookups for the same name).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many addresses per upstream: the balancer refuses more than 2^16, and no
/// sane DNS answer comes close.
const MAX_ADDRESSES: usize = 4096;

/// How often the service looks for upstreams that are due.
const TICK: Duration = Duration::from_millis(100);

#[allow(clippy::expect_used)]
static RESOLUTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gateway_dns_resolutions_total",
        "Lookups of upstream host names, by upstream and result (success, failure).",
        &["upstream", "result"]
    )
    .expect("metric names are static and registered once")
});

/// One entry of `targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address and port: used as it is, never looked up.
    Addr(SocketAddr),
    /// A host name, resolved in the background.
    Name { host: String, port: u16 },
}

/// Parses a target (`host:port`, `1.2.3.4:port`, `[::1]:port`) without resolving anything.
pub fn parse_target(t: &str) -> Result<Target, String> {
    let bad = |why: &str| {
        format!("invalid target {t:?}: {why}; expected host:port, such as 127.0.0.1:9001 or users.internal:8080")
    };
    if let Ok(a) = t.parse::<SocketAddr>() {
        return match a.port() {
            0 => Err(bad("port 0")),
            _ => Ok(Target::Addr(a)),
        };
    }
    let (host, port) = t.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(bad("the port is not a number from 1 to 65535")),
    };
    if host.contains(':') {
        return Err(bad("an IPv6 address needs brackets, as in [::1]:80"));
    }
    // What a DNS name may hold (with `_` for SRV-style labels); no scheme, no path.
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(bad("not a host name"));
    }
    Ok(Target::Name {
        host: host.to_string(),
        port,
    })
}

/// Looks up the addresses of a host name. Object-safe, so that tests can put a scripted
/// double where the system resolver goes.
#[async_trait]
pub trait Resolve: Send + Sync {
    /// Every address of `host`; an error or an empty list when it has none.
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The system resolver (getaddrinfo, on Tokio's blocking pool: /etc/hosts, search domains
/// and `ndots` as the platform configures them, as in a Kubernetes pod).
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, 0))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An upstream's targets as written, and what its names resolved to last.
#[derive(Debug)]
pub(super) struct Names {
    targets: Vec<Target>,
    /// By index into `targets`: the addresses of the last successful lookup of a name
    /// (`None`: none yet). A failed lookup keeps them: a DNS hiccup does not empty the pool.
    last: Mutex<Vec<Option<Vec<SocketAddr>>>>,
    schedule: Schedule,
    /// A refresh is running (refreshes of one upstream never overlap).
    busy: AtomicBool,
    /// Every name has had a lookup (or there are none): readiness waits for this.
    attempted: AtomicBool,
}

impl Names {
    pub(super) fn new(targets: Vec<Target>, every: Duration) -> Names {
        let names = targets.iter().any(|t| matches!(t, Target::Name { .. }));
        Names {
            last: Mutex::new(vec![None; targets.len()]),
            targets,
            schedule: Schedule::new(every),
            busy: AtomicBool::new(false),
            attempted: AtomicBool::new(!names),
        }
    }

    /// Whether any target is a host name.
    pub(super) fn any(&self) -> bool {
        self.targets
            .iter()
            .any(|t| matches!(t, Target::Name { .. }))
    }

    /// Starts from what `prev` (the upstream this one replaces on a reload) resolved for
    /// the same names, so that a changed upstream does not go without targets until its
    /// first lookup.
    pub(super) fn seed_from(&self, prev: &Names) {
        let before = lock(&prev.last).clone();
        let mut last = lock(&self.last);
        for (i, t) in self.targets.iter().enumerate() {
            if let Some(j) = prev.targets.iter().position(|p| p == t) {
                last[i] = before.get(j).cloned().flatten();
            }
        }
        if self
            .targets
            .iter()
            .zip(last.iter())
            .all(|(t, l)| l.is_some() || matches!(t, Target::Addr(_)))
        {
            self.attempted.store(true, Ordering::Release);
        }
    }

    /// The current target set: the literal addresses and the last addresses of every name.
    pub(super) fn addresses(&self) -> BTreeSet<SocketAddr> {
        let last = lock(&self.last);
        let mut out = BTreeSet::new();
        for (t, l) in self.targets.iter().zip(last.iter()) {
            match t {
                Target::Addr(a) => {
                    out.insert(*a);
                }
                Target::Name { .. } => out.extend(l.iter().flatten().copied()),
            }
        }
        out.into_iter().take(MAX_ADDRESSES).collect()
    }

    pub(super) fn attempted(&self) -> bool {
        self.attempted.load(Ordering::Acquire)
    }
}

/// Clears `busy` however the refresh ends (also when its future is dropped at shutdown).
struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Upstream {
    /// Whether the first lookup of every name has been made (successful or not).
    pub fn resolved_once(&self) -> bool {
        self.dns.attempted()
    }

    /// Whether the upstream has host names to resolve and it is time to.
    pub(super) fn dns_due(&self) -> bool {
        self.dns.any() && self.dns.schedule.take_due()
    }

    /// Looks up every name among the targets (at once, each within a timeout) and makes
    /// the result the target set. A name that does not resolve keeps what it last resolved
    /// to, or contributes nothing if it never did; it is logged and counted. Returns at once
    /// when a refresh of this upstream is already running.
    pub async fn refresh(&self, resolver: &dyn Resolve) {
        let names = &self.dns;
        if names.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let _busy = Busy(&names.busy);
        let lookups = names
            .targets
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match t {
                Target::Addr(_) => None,
                Target::Name { host, port } => Some(async move {
                    let r = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup(host)).await;
                    (i, *port, r)
                }),
            });
        let results = futures::future::join_all(lookups).await;
        {
            let mut last = lock(&names.last);
            for (i, port, r) in results {
                let target = self.def.targets.get(i).map_or("", String::as_str);
                let found = match r {
                    Ok(Ok(ips)) if !ips.is_empty() => Ok(ips),
                    Ok(Ok(_)) => Err("no address".to_string()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
                };
                let Some(slot) = last.get_mut(i) else {
                    continue;
                };
                match found {
                    Ok(ips) => {
                        RESOLUTIONS
                            .with_label_values(&[&self.name, "success"])
                            .inc();
                        let mut addrs: Vec<SocketAddr> = ips
                            .into_iter()
                            .map(|ip| SocketAddr::new(ip, port))
                            .collect();
                        addrs.sort();
                        addrs.dedup();
                        if slot.as_ref() != Some(&addrs) {
                            tracing::info!(upstream = %self.name, target, addresses = ?addrs,
                                "upstream name resolved");
                        }
                        *slot = Some(addrs);
                    }
                    Err(error) => {
                        RESOLUTIONS
                            .with_label_values(&[&self.name, "failure"])
                            .inc();
                        let kept = slot.as_ref().map_or(0, Vec::len);
                        tracing::warn!(upstream = %self.name, target, %error, kept,
                            "upstream name does not resolve; keeping the addresses it last resolved to");
                    }
                }
            }
        }
        self.apply(names.addresses());
        names.attempted.store(true, Ordering::Release);
    }
}

/// Warnings for `gateway check`, which resolves nothing: the host names it could not verify.
pub fn check_warnings(snapshot: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (name, up) in &snapshot.upstreams {
        let hosts: Vec<&str> = up
            .dns
            .targets
            .iter()
            .zip(&up.def.targets)
            .filter(|(t, _)| matches!(t, Target::Name { .. }))
            .map(|(_, s)| s.as_str())
            .collect();
        if hosts.is_empty() {
            continue;
        }
        let every = up.def.dns_refresh.map_or(DEFAULT_REFRESH, |d| d.0);
        let (what, it) = match hosts.len() {
            1 => ("host name", "it"),
            _ => ("host names", "them"),
        };
        out.push(format!(
            "warning: upstream {name:?}: {what} {} not resolved here; the gateway looks {it} up \
             at start and every {}, and the upstream answers 503 upstream_unavailable while it \
             has no address",
            hosts.join(", "),
            humantime::format_duration(every)
        ));
    }
    out
}

/// Resolves the names of the live generation's upstreams, each when it is due (at once for
/// a new upstream, then every `dns_refresh`), off the request path.
pub struct DnsService {
    store: Arc<Store>,
    resolver: Arc<dyn Resolve>,
}

impl DnsService {
    pub fn new(store: Arc<Store>) -> Self {
        DnsService {
            store,
            resolver: Arc::new(SystemResolver),
        }
    }
}

#[async_trait]
impl BackgroundService for DnsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        LazyLock::force(&RESOLUTIONS);
        loop {
            let snapshot = self.store.load();
            for up in snapshot.upstreams.values().filter(|u| u.dns_due()) {
                let (up, resolver) = (up.clone(), self.resolver.clone());
                // Each upstream on its own: a slow name delays no other.
                tokio::spawn(async move { up.refresh(&*resolver).await });
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}
