//! An operation's description: what the route does that the rest of the document cannot
//! say (host, match values, limits, aggregate calls, webhooks, caching, streams).

use super::facts::RouteFacts;
use crate::config::policy::AuthMethod;
use crate::config::values::ClientKey;
use crate::runtime::{Route, Snapshot, Stage};
use http::Method;

fn key_text(k: &ClientKey) -> String {
    match k {
        ClientKey::ClientIp => "client address".into(),
        ClientKey::Consumer => "consumer".into(),
        ClientKey::Header(h) => format!("header {h}"),
    }
}

/// Markdown, one sentence per feature.
pub fn route(snap: &Snapshot, route: &Route, facts: &RouteFacts, methods: &[Method]) -> String {
    let mut out = vec![format!("Route `{}`.", route.name)];
    if let Some(h) = &facts.host {
        out.push(format!("Only for requests to host `{h}`."));
    }
    let mut when: Vec<String> = facts
        .headers
        .iter()
        .map(|(k, v)| format!("header `{k}: {v}`"))
        .collect();
    when.extend(facts.query.iter().map(|(k, v)| format!("query `{k}={v}`")));
    if !when.is_empty() {
        out.push(format!(
            "Chosen when the request carries {} (other routes of this path may take requests without).",
            when.join(" and ")
        ));
    }
    if facts.methods.is_none() {
        out.push("Takes any method; GET, POST, PUT, PATCH and DELETE are listed.".into());
    } else if methods.contains(&Method::GET) {
        out.push("HEAD is answered like GET.".into());
    }
    let unlisted: Vec<String> = methods
        .iter()
        .filter(|m| {
            !matches!(
                **m,
                Method::GET
                    | Method::PUT
                    | Method::POST
                    | Method::DELETE
                    | Method::OPTIONS
                    | Method::HEAD
                    | Method::PATCH
                    | Method::TRACE
            )
        })
        .map(|m| m.to_string())
        .collect();
    if !unlisted.is_empty() {
        out.push(format!(
            "Also takes {} (not expressible in OpenAPI).",
            unlisted.join(", ")
        ));
    }
    if !route.auth.scopes.is_empty() {
        out.push(format!(
            "Requires the scopes {} (403 otherwise).",
            route.auth.scopes.join(", ")
        ));
    }
    if let Some(AuthMethod::Webhook(v)) = facts.auth.first() {
        out.push(format!(
            "A signed webhook event: verified by `{v}` over the raw body (401 `invalid_signature` otherwise); replays are answered without reaching the upstream."
        ));
    }
    if route.traffic.ips.is_some() {
        out.push("Only some client addresses may call it (403 otherwise).".into());
    }
    if route.stages.contains(&Stage::RateLimit) {
        let mut limits: Vec<String> = route
            .rate_limit
            .iter()
            .flat_map(|set| {
                let by = key_text(&set.key);
                set.limits.iter().map(move |l| {
                    let per = humantime::format_duration(l.spec.per);
                    format!(
                        "{} per {per} (bursts of {}) per {by}",
                        l.spec.requests, l.spec.burst
                    )
                })
            })
            .collect();
        if !route.auth.is_public() && !snap.rate.consumer_plans.is_empty() {
            limits.push("the plan of the calling consumer".into());
        }
        out.push(format!(
            "Rate limited: {}; answers carry RateLimit-* headers, 429 with Retry-After.",
            limits.join(", ")
        ));
    }
    if let Some(a) = &route.aggregate {
        let calls: Vec<String> = a
            .calls
            .iter()
            .map(|c| {
                let req = if c.required { "required" } else { "optional" };
                format!("`{}` ({req})", c.name)
            })
            .collect();
        out.push(format!(
            "Answered by the gateway from {} upstream calls, made concurrently within {}: {}.",
            calls.len(),
            humantime::format_duration(a.timeout),
            calls.join(", ")
        ));
    }
    if let Some(c) = &route.cache {
        out.push(format!(
            "GET and HEAD answers may come from the gateway's cache (`X-Cache`, `Age`; fresh for {} unless the upstream says otherwise).",
            humantime::format_duration(c.ttl)
        ));
    }
    if route.cors.is_some() {
        out.push("CORS: preflights are answered by the gateway (204).".into());
    }
    if route.grpc_web {
        out.push("Also takes gRPC-Web from browsers.".into());
    }
    out.join(" ")
}
