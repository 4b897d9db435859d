//! Target sets that follow DNS, with a scripted resolver in place of the system one.

use super::dns::{parse_target, Resolve, Target};
use super::*;
use async_trait::async_trait;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Answers what the test last said for each name; a name it said nothing about (or `None`)
/// does not resolve. Counts lookups.
#[derive(Default)]
struct Scripted {
    answers: Mutex<HashMap<String, Option<Vec<IpAddr>>>>,
    lookups: AtomicUsize,
}

impl Scripted {
    fn set(&self, host: &str, ips: Option<&[&str]>) {
        let ips = ips.map(|l| l.iter().map(|i| i.parse().unwrap()).collect());
        self.answers.lock().unwrap().insert(host.to_string(), ips);
    }
}

#[async_trait]
impl Resolve for Scripted {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        match self.answers.lock().unwrap().get(host).cloned().flatten() {
            Some(ips) => Ok(ips),
            None => Err(std::io::Error::other(format!("{host}: no such host"))),
        }
    }
}

/// Never answers.
struct Silent;

#[async_trait]
impl Resolve for Silent {
    async fn lookup(&self, _: &str) -> std::io::Result<Vec<IpAddr>> {
        std::future::pending().await
    }
}

fn def(yaml: &str) -> UpstreamDef {
    serde_yaml::from_str(yaml).unwrap()
}

fn build(name: &str, yaml: &str) -> Upstream {
    Upstream::build(name, &def(yaml), Path::new(".")).unwrap()
}

fn addrs(u: &Upstream) -> Vec<String> {
    let mut a: Vec<String> = u.addresses().iter().map(ToString::to_string).collect();
    a.sort();
    a
}

fn addr(s: &str) -> Addr {
    Addr::Inet(s.parse().unwrap())
}

/// The targets that have a `gateway_circuit_state` series for `upstream`.
fn circuit_series(upstream: &str) -> Vec<String> {
    let mut out = Vec::new();
    for family in prometheus::gather() {
        if family.name() != "gateway_circuit_state" {
            continue;
        }
        for m in family.get_metric() {
            let label = |n: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == n)
                    .map(|l| l.value().to_string())
            };
            if label("upstream").as_deref() == Some(upstream) {
                out.extend(label("target"));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn targets_follow_the_name_and_breakers_follow_the_addresses() {
    let dns = Scripted::default();
    let u = build(
        "dns-follow",
        "targets: [\"svc.test:8080\"]\ncircuit_breaker: { failures: 1, open_for: 60s }",
    );
    assert!(u.addresses().is_empty() && !u.resolved_once());
    assert!(u.select_for(b"", &[]).is_none(), "nothing resolved yet");

    // A.
    dns.set("svc.test", Some(&["10.0.0.1"]));
    u.refresh(&dns).await;
    assert_eq!(addrs(&u), ["10.0.0.1:8080"]);
    assert!(u.resolved_once());
    let a = addr("10.0.0.1:8080");
    assert_eq!(u.select_for(b"", &[]).unwrap().addr, a, "the single target");
    u.record(&a, breaker::Verdict::Failed);
    assert!(u.select_for(b"", &[]).is_none(), "A's breaker is open");
    let a_breaker = u.targets.load().breakers[&a].clone();

    // A and B: A keeps its (open) breaker, B starts closed; the fast path is off.
    dns.set("svc.test", Some(&["10.0.0.2", "10.0.0.1"]));
    u.refresh(&dns).await;
    assert_eq!(addrs(&u), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    assert!(u.targets.load().single.is_none());
    assert!(Arc::ptr_eq(&u.targets.load().breakers[&a], &a_breaker));
    for _ in 0..6 {
        assert_eq!(u.select_for(b"", &[]).unwrap().addr, addr("10.0.0.2:8080"));
    }
    assert_eq!(
        circuit_series("dns-follow"),
        ["10.0.0.1:8080", "10.0.0.2:8080"]
    );

    // B: A's breaker and series are gone.
    dns.set("svc.test", Some(&["10.0.0.2"]));
    u.refresh(&dns).await;
    assert_eq!(addrs(&u), ["10.0.0.2:8080"]);
    assert!(!u.targets.load().breakers.contains_key(&a));
    assert_eq!(circuit_series("dns-follow"), ["10.0.0.2:8080"]);
    assert_eq!(
        u.targets.load().single.as_ref().map(|b| b.addr.clone()),
        Some(addr("10.0.0.2:8080"))
    );
    // A failure recorded late (a request that was in flight to A) brings nothing back.
    a_breaker.failure();
    assert_eq!(circuit_series("dns-follow"), ["10.0.0.2:8080"]);

    // A again: a fresh, closed breaker.
    dns.set("svc.test", Some(&["10.0.0.1", "10.0.0.2"]));
    u.refresh(&dns).await;
    let again = u.targets.load().breakers[&a].clone();
    assert!(!Arc::ptr_eq(&again, &a_breaker));
    assert!(again.admit());
}

#[tokio::test]
async fn a_name_that_fails_then_resolves() {
    let dns = Scripted::default();
    let u = build(
        "dns-late",
        "targets: [\"late.test:80\"]\nbalance: consistent_hash",
    );
    u.refresh(&dns).await;
    assert!(u.resolved_once(), "a failed lookup counts as the first one");
    assert!(u.addresses().is_empty());
    assert!(u.select_for(b"key", &[]).is_none() && !u.available());

    dns.set("late.test", Some(&["10.1.0.1"]));
    u.refresh(&dns).await;
    assert_eq!(u.select_for(b"key", &[]).unwrap().addr, addr("10.1.0.1:80"));
    assert!(u.available());

    // A later failure keeps the last answer (a DNS hiccup must not empty the pool).
    dns.set("late.test", None);
    u.refresh(&dns).await;
    assert_eq!(addrs(&u), ["10.1.0.1:80"]);
    // So does an empty answer.
    dns.set("late.test", Some(&[]));
    u.refresh(&dns).await;
    assert_eq!(addrs(&u), ["10.1.0.1:80"]);
}

#[tokio::test]
async fn health_is_kept_for_addresses_that_stay() {
    // Nothing listens on port 9 of these loopback addresses: a check fails at once.
    let dns = Scripted::default();
    let u = build(
        "dns-health",
        "targets: [\"h.test:9\"]\nhealth_check: { path: /h, interval: 1s, unhealthy: 1 }",
    );
    dns.set("h.test", Some(&["127.0.0.1"]));
    u.refresh(&dns).await;
    u.check_health().await;
    assert!(u.select_for(b"", &[]).is_none(), "127.0.0.1 is unhealthy");

    dns.set("h.test", Some(&["127.0.0.1", "127.0.0.2"]));
    u.refresh(&dns).await;
    for _ in 0..4 {
        let b = u.select_for(b"", &[]).unwrap();
        assert_eq!(b.addr, addr("127.0.0.2:9"), "127.0.0.1 stays unhealthy");
    }

    // Gone and back: a new address, healthy until checked.
    dns.set("h.test", Some(&["127.0.0.2"]));
    u.refresh(&dns).await;
    dns.set("h.test", Some(&["127.0.0.1"]));
    u.refresh(&dns).await;
    assert_eq!(u.select_for(b"", &[]).unwrap().addr, addr("127.0.0.1:9"));
}

#[tokio::test]
async fn ip_targets_never_touch_dns() {
    let dns = Scripted::default();
    let u = build("dns-ip", "targets: [\"127.0.0.1:1\", \"[::1]:2\"]");
    assert!(u.resolved_once() && !u.dns.any());
    assert_eq!(addrs(&u), ["127.0.0.1:1", "[::1]:2"]);
    u.refresh(&dns).await;
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 0);
    assert!(!u.dns_due());

    // Mixed: the literal address is there from the start, the name joins it.
    let m = build("dns-mixed", "targets: [\"127.0.0.1:1\", \"m.test:2\"]");
    assert_eq!(addrs(&m), ["127.0.0.1:1"]);
    dns.set("m.test", Some(&["10.2.0.1", "10.2.0.1"]));
    m.refresh(&dns).await;
    assert_eq!(addrs(&m), ["10.2.0.1:2", "127.0.0.1:1"]);
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lookup_that_never_answers_times_out() {
    let u = build("dns-silent", "targets: [\"s.test:80\"]");
    u.refresh(&Silent).await;
    assert!(u.resolved_once() && u.addresses().is_empty());
}

#[tokio::test]
async fn a_changed_upstream_starts_from_what_its_predecessor_resolved() {
    let dns = Scripted::default();
    let old = build("dns-reload", "targets: [\"r.test:80\", \"gone.test:80\"]");
    dns.set("r.test", Some(&["10.3.0.1"]));
    dns.set("gone.test", Some(&["10.3.0.9"]));
    old.refresh(&dns).await;
    let d = def("targets: [\"r.test:80\", \"new.test:80\"]\ndns_refresh: 1s");
    let new = Upstream::build_after("dns-reload", &d, Path::new("."), Some(&old)).unwrap();
    assert_eq!(addrs(&new), ["10.3.0.1:80"]);
    assert!(!new.resolved_once(), "new.test was never looked up");
    // Both names shared: nothing to wait for.
    let d = def("targets: [\"r.test:80\"]\ntimeouts: { connect: 2s }");
    let same = Upstream::build_after("dns-reload", &d, Path::new("."), Some(&old)).unwrap();
    assert!(same.resolved_once());
}

#[test]
fn targets_parse_without_resolving() {
    let name = |h: &str, p: u16| Target::Name {
        host: h.into(),
        port: p,
    };
    assert_eq!(parse_target("users:8080"), Ok(name("users", 8080)));
    assert_eq!(
        parse_target("users.default.svc.cluster.local.:80"),
        Ok(name("users.default.svc.cluster.local.", 80))
    );
    assert_eq!(
        parse_target("nope.invalid:80"),
        Ok(name("nope.invalid", 80))
    );
    assert!(matches!(parse_target("10.0.0.1:80"), Ok(Target::Addr(_))));
    assert!(matches!(parse_target("[fe80::1]:80"), Ok(Target::Addr(_))));
    for bad in [
        "users",
        "users:0",
        "-:",
        "a..b:80",
        "http://a:80",
        "a/b:80",
        "fe80::1:80",
    ] {
        assert!(parse_target(bad).is_err(), "{bad}");
    }
    let long = format!("{}:80", "a".repeat(64));
    assert!(parse_target(&long).is_err(), "a label of 64 characters");
}

#[test]
fn dns_refresh_parses_and_defaults() {
    assert_eq!(def("targets: [a:1]").dns_refresh, None);
    let d = def("targets: [a:1]\ndns_refresh: 1s");
    assert_eq!(d.dns_refresh.map(|d| d.0), Some(Duration::from_secs(1)));
    assert!(serde_yaml::from_str::<UpstreamDef>("targets: [a:1]\ndns_refresh: 0s").is_err());
}
