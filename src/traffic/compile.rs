//! A route's traffic blocks, from their serde types into what requests use.

use super::mirror::Mirror;
use super::{Arm, HeaderOps, IpRules, Split};
use crate::config::policy::{HeaderOpsDef, RouteDef};
use crate::upstream::Upstream;
use http::{HeaderName, HeaderValue};
use prometheus::IntCounter;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a route's traffic blocks compile to.
#[derive(Debug, Default)]
pub struct Traffic {
    pub ips: Option<IpRules>,
    pub split: Option<Split>,
    pub mirror: Option<Arc<Mirror>>,
    pub response_headers: Option<HeaderOps>,
    /// `gateway_upstream_requests_total{route, upstream}` of the route's own upstream.
    pub requests: Option<IntCounter>,
}

fn counter(route: &str, upstream: &str) -> IntCounter {
    crate::metrics::UPSTREAM_REQUESTS.with_label_values(&[route, upstream])
}

/// Compiles `def`'s traffic blocks; problems go to `err` as (field, message).
pub fn traffic(
    def: &RouteDef,
    upstream: Option<&Arc<Upstream>>,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    err: &mut dyn FnMut(&'static str, String),
) -> Traffic {
    let mut t = Traffic::default();
    if !def.allow_ips.is_empty() || !def.deny_ips.is_empty() {
        t.ips = Some(IpRules {
            allow: def.allow_ips.iter().map(|r| r.0).collect(),
            deny: def.deny_ips.iter().map(|r| r.0).collect(),
        });
    }
    let needs_upstream = !def.split.is_empty() || def.mirror.is_some();
    if needs_upstream && upstream.is_none() {
        err(
            ".split",
            "split and mirror need a route with an upstream".into(),
        );
        return t;
    }
    t.requests = upstream.map(|u| counter(&def.name, &u.name));
    let find = |name: &str, field: &'static str, err: &mut dyn FnMut(&'static str, String)| {
        let found = upstreams.get(name).cloned();
        if found.is_none() {
            err(field, format!("unknown upstream {name:?}"));
        }
        found
    };
    if !def.split.is_empty() {
        let mut arms = Vec::new();
        let mut upto = 0u32;
        for s in &def.split {
            upto = upto.saturating_add(s.weight);
            if let Some(u) = find(&s.upstream, ".split", err) {
                arms.push(Arm {
                    requests: counter(&def.name, &u.name),
                    upstream: u,
                    upto,
                });
            }
        }
        if upto > 100 {
            err(
                ".split",
                format!("split weights add up to {upto}: percentages, at most 100 in all"),
            );
        }
        t.split = Some(Split {
            arms,
            sticky: def.sticky.clone(),
        });
    } else if def.sticky.is_some() {
        err(".sticky", "sticky needs a split".into());
    }
    if let Some(m) = &def.mirror {
        if m.percent > 100 {
            err(
                ".mirror.percent",
                format!("{}: a percentage, 0 to 100", m.percent),
            );
        }
        if let Some(u) = find(&m.upstream, ".mirror.upstream", err) {
            t.mirror = Some(Arc::new(Mirror::new(&def.name, u, m.percent.min(100))));
        }
    }
    let headers = def.response.as_ref().and_then(|r| r.headers.as_ref());
    if let Some(h) = headers {
        t.response_headers = header_ops(h, err);
    }
    t
}

fn header_ops(def: &HeaderOpsDef, err: &mut dyn FnMut(&'static str, String)) -> Option<HeaderOps> {
    let mut ops = HeaderOps::default();
    for (k, v) in &def.set {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => ops.set.push((k.into(), v)),
            _ => err(
                ".response.headers.set",
                format!("invalid header {k:?}: {v:?}"),
            ),
        }
    }
    for k in &def.remove {
        match HeaderName::from_bytes(k.as_bytes()) {
            Ok(k) => ops.remove.push(k),
            Err(_) => err(
                ".response.headers.remove",
                format!("invalid header name {k:?}"),
            ),
        }
    }
    Some(ops)
}
