//! What the console shows of a route beyond its match and authentication (which it takes
//! from [`crate::openapi::facts::RouteFacts`]): its scopes, limits, where it sends
//! requests and the features it uses, as short text written down when the route is
//! compiled. The request path never reads it.

use crate::config::policy::RouteDef;
use crate::config::values::ClientKey;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, Default)]
pub struct RouteSummary {
    pub scopes: Vec<String>,
    /// Such as `5/1s by consumer`.
    pub limits: Vec<String>,
    /// The upstream (with a split's shares), or `aggregate (N calls)`.
    pub target: String,
    /// Features the route uses, by their configuration key.
    pub features: Vec<&'static str>,
}

fn key_text(k: &ClientKey) -> String {
    match k {
        ClientKey::ClientIp => "client_ip".into(),
        ClientKey::Consumer => "consumer".into(),
        ClientKey::Header(h) => format!("header:{h}"),
    }
}

impl RouteSummary {
    pub fn of(def: &RouteDef) -> RouteSummary {
        let limits = def.rate_limit.as_ref().map_or_else(Vec::new, |rl| {
            let by = key_text(&rl.key);
            rl.limits
                .iter()
                .map(|l| {
                    let per = humantime::format_duration(l.per.0);
                    format!("{}/{per} by {by}", l.requests)
                })
                .collect()
        });
        let target = match (&def.upstream, &def.aggregate) {
            (Some(u), _) if def.split.is_empty() => u.clone(),
            (Some(u), _) => {
                let others: u32 = def.split.iter().map(|s| s.weight).sum();
                let mut t = format!("{u} {}%", 100u32.saturating_sub(others));
                for s in &def.split {
                    t.push_str(&format!(", {} {}%", s.upstream, s.weight));
                }
                t
            }
            (None, Some(a)) => format!("aggregate ({} calls)", a.calls.len()),
            (None, None) => def
                .deliver
                .as_ref()
                .map_or_else(String::new, |d| format!("{} (queued delivery)", d.upstream)),
        };
        let request = def.request.as_ref();
        let features = [
            (request.is_some_and(|r| r.schema.is_some()), "schema"),
            (def.idempotency.is_some(), "idempotency"),
            (def.cors.is_some(), "cors"),
            (def.cache.is_some(), "cache"),
            (def.mirror.is_some(), "mirror"),
            (
                !def.allow_ips.is_empty() || !def.deny_ips.is_empty(),
                "ip rules",
            ),
            (def.grpc_web, "grpc_web"),
            (
                def.deliver.as_ref().is_some_and(|d| d.sign.is_some()),
                "signed",
            ),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        RouteSummary {
            scopes: def.scopes.clone(),
            limits,
            target,
            features,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> RouteSummary {
        let def: RouteDef = serde_yaml::from_str(yaml).unwrap();
        RouteSummary::of(&def)
    }

    #[test]
    fn targets_and_limits_read_as_written() {
        let r = route(
            "{ name: a, match: { path: /a }, auth: none, upstream: users, split: [ { upstream: beta, weight: 20 } ], \
             rate_limit: { key: client_ip, limits: [ { requests: 5, per: 1s } ] } }",
        );
        assert_eq!(r.target, "users 80%, beta 20%");
        assert_eq!(r.limits, ["5/1s by client_ip"]);
        let r = route(
            "{ name: q, match: { path: /q }, auth: none, deliver: { upstream: orders, sign: { scheme: standard, secret_env: S } } }",
        );
        assert_eq!(r.target, "orders (queued delivery)");
        assert_eq!(r.features, ["signed"]);
    }
}
