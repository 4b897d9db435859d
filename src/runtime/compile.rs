//! Compiles a parsed policy set into a [`Snapshot`]: every cross-reference checked, every
//! route, template and upstream pool built, all problems reported together with file:line.

use super::snapshot::{Rewrite, Route, Settings, Snapshot, Stage};
use crate::config::policy::RouteDef;
use crate::config::{GatewayConfig, PolicySet, PolicySource, Problems};
use crate::runtime::router::{HostPattern, PathPattern, Router, Segment};
use crate::template::{Scope, Template};
use crate::upstream::Upstream;
use http::{HeaderName, HeaderValue, Method};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

/// A route's name and methods, to find routes that match the same requests.
type NamedMethods = (String, Option<Vec<Method>>);

/// The compiled set, or every problem found.
pub fn compile(
    gw: &GatewayConfig,
    set: &PolicySet,
    prev: Option<&Snapshot>,
    generation: u64,
) -> Result<Snapshot, Problems> {
    let mut problems = Problems::default();
    let upstreams = build_upstreams(set, prev, &mut problems);
    let prev_jwks = prev.map(|s| s.jwks.as_slice()).unwrap_or_default();
    let ids = crate::auth::compile::identities(set, prev_jwks, &mut problems);
    let (state, backend) = match prev {
        Some(s) => (s.state.clone(), s.rate.backend.clone()),
        None => match crate::ratelimit::compile::backend(gw) {
            Ok((state, b)) => (Arc::new(state), Arc::new(b)),
            Err(e) => {
                problems.push(e);
                return Err(problems);
            }
        },
    };
    let mut limits = crate::ratelimit::compile::Builder::new(backend, prev.map(|s| &s.rate));
    limits.plans(set, &mut problems);
    let consumer_plans = limits.consumer_plans(set, &mut problems);
    let settings = Arc::new(Settings {
        max_body: gw.file.limits.max_body.0,
        body_timeout: gw.file.limits.body_timeout.0,
        trusted_proxies: gw.file.trusted_proxies.clone(),
        head: crate::conn::head::HeadLimits::from_config(&gw.file.limits),
        header_timeout: gw.file.limits.header_timeout.0,
        idle_timeout: gw.file.limits.idle_timeout.0,
    });

    // Upstream CA files are watched and part of the change check, like schemas.
    let mut referenced: Vec<std::path::PathBuf> = set
        .sources
        .iter()
        .flat_map(|src| {
            let ca = src.file.upstreams.values();
            ca.filter_map(|u| u.tls.as_ref()?.ca.as_ref().map(|c| src.dir().join(c)))
        })
        .collect();
    let cors = crate::cors::compile_policies(set, &mut problems);
    let shared = Shared {
        upstreams: &upstreams,
        ids: &ids.identities,
        settings: &settings,
        cors: &cors,
    };
    let mut router = Router::default();
    let mut routes = Vec::new();
    let mut seen: HashMap<&str, &PolicySource> = HashMap::new();
    let mut shapes: HashMap<(HostPattern, PathPattern), Vec<NamedMethods>> = HashMap::new();
    for src in &set.sources {
        for (i, def) in src.file.routes.iter().enumerate() {
            let at = format!("routes.{i}");
            if let Some(first) = seen.insert(&def.name, src) {
                problems.push(src.problem(
                    &format!("{at}.name"),
                    format!(
                        "route name {:?} is defined twice (first in {})",
                        def.name,
                        first.path.display()
                    ),
                ));
                continue;
            }
            let Some(mut c) = compile_route(src, &at, def, &shared, &mut referenced, &mut problems)
            else {
                continue;
            };
            c.route.rate_limit = limits.route(src, &at, def, &mut problems);
            c.route.stages = stages(&c.route, !consumer_plans.is_empty());
            let methods = def
                .matcher
                .methods
                .as_ref()
                .map(|ms| ms.iter().map(|m| m.0.clone()).collect::<Vec<_>>());
            // Parameter names do not change which requests a path matches.
            let shape = PathPattern {
                segments: c
                    .path
                    .segments
                    .iter()
                    .map(|s| match s {
                        Segment::Param(_) => Segment::Param(String::new()),
                        s => s.clone(),
                    })
                    .collect(),
            };
            let same = shapes.entry((c.host.clone(), shape)).or_default();
            if let Some((other, _)) = same.iter().find(|(_, m)| overlaps(m, &methods)) {
                problems.push(src.problem(
                    &format!("{at}.match"),
                    format!(
                        "route {:?} matches the same requests as route {other:?}",
                        def.name
                    ),
                ));
            }
            same.push((def.name.clone(), methods.clone()));
            router.add(routes.len(), &c.host, &c.path, methods);
            routes.push(c.route);
        }
    }
    problems.into_result(())?;
    Ok(Snapshot {
        generation,
        hash: set.hash.clone(),
        loaded_at: SystemTime::now(),
        router,
        routes,
        upstreams,
        settings,
        identities: ids.identities,
        jwks: ids.jwks,
        rate: limits.finish(consumer_plans),
        state,
        referenced: ids
            .referenced
            .into_iter()
            .chain(referenced)
            .chain(crate::tls::files(gw))
            .collect(),
        unmatched: crate::metrics::RouteMetrics::new(crate::metrics::UNMATCHED),
    })
}

/// The stages a route's requests pass, from the features it uses: a route pays only for
/// what it has. `plans`: some consumer has a plan (which applies on any route that
/// authenticates).
fn stages(route: &Route, plans: bool) -> Vec<Stage> {
    let public = route.auth.is_public();
    let mut stages = Vec::new();
    if route.auth.webhook.is_some() {
        stages.push(Stage::Webhook);
    } else if !public {
        stages.push(Stage::Authenticate);
    }
    if route.rate_limit.is_some() || (plans && !public) {
        stages.push(Stage::RateLimit);
    }
    if route.validation.is_some() {
        stages.push(Stage::Validate);
    }
    if route.idempotency.is_some() {
        stages.push(Stage::Idempotency);
    }
    // A stage that reads the whole body may leave one too large for Pingora to send.
    let holds_body = route.validation.as_ref().is_some_and(|v| v.body.is_some())
        || route.auth.webhook.is_some()
        || route.idempotency.is_some();
    if route.aggregate.is_some() {
        stages.push(Stage::Aggregate);
    } else if holds_body {
        stages.push(Stage::Relay);
    }
    stages
}

fn overlaps(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

/// Builds every upstream, reusing the previous generation's pool when its definition is
/// unchanged (so connection pools and, later, health and breaker state survive reloads).
fn build_upstreams(
    set: &PolicySet,
    prev: Option<&Snapshot>,
    p: &mut Problems,
) -> BTreeMap<String, Arc<Upstream>> {
    let mut out: BTreeMap<String, Arc<Upstream>> = BTreeMap::new();
    let mut origin: HashMap<&str, &PolicySource> = HashMap::new();
    for src in &set.sources {
        for (name, def) in &src.file.upstreams {
            let at = format!("upstreams.{name}");
            if let Some(first) = origin.insert(name, src) {
                p.push(src.problem(
                    &at,
                    format!(
                        "upstream {name:?} is defined twice (first in {})",
                        first.path.display()
                    ),
                ));
                continue;
            }
            // Nothing here resolves a name: an unchanged upstream is reused whole (with its
            // resolved addresses, breakers and health); a changed one starts from the
            // addresses its predecessor resolved, and the DNS service takes it from there.
            let before = prev.and_then(|s| s.upstreams.get(name));
            let built = match before.filter(|u| u.same_as(def, src.dir())) {
                Some(u) => Ok(u.clone()),
                None => {
                    Upstream::build_after(name, def, src.dir(), before.map(|u| &**u)).map(Arc::new)
                }
            };
            match built {
                Ok(u) => {
                    out.insert(name.clone(), u);
                }
                Err(e) => {
                    p.push(src.problem(&format!("{at}.targets"), format!("upstream {name:?}: {e}")))
                }
            }
        }
    }
    out
}

struct Compiled {
    host: HostPattern,
    path: PathPattern,
    route: Route,
}

/// What every route of a set is compiled against.
struct Shared<'a> {
    upstreams: &'a BTreeMap<String, Arc<Upstream>>,
    ids: &'a crate::auth::Identities,
    settings: &'a Settings,
    cors: &'a HashMap<String, Arc<crate::cors::CorsPolicy>>,
}

fn compile_route(
    src: &PolicySource,
    at: &str,
    def: &RouteDef,
    shared: &Shared<'_>,
    referenced: &mut Vec<std::path::PathBuf>,
    p: &mut Problems,
) -> Option<Compiled> {
    let Shared {
        upstreams,
        ids,
        settings,
        cors,
    } = *shared;
    let mut errs: Vec<(&str, String)> = Vec::new();
    let auth = crate::auth::compile::route_auth(def, ids, &mut errs);
    let mut err = |field: &'static str, msg: String| errs.push((field, msg));
    if def.name.is_empty() {
        err(".name", "the name is empty".into());
    }
    if def.auth.is_none() {
        err("", "`auth` is required: list methods such as [jwt:corp, api_key], or write `auth: none` for a public route".into());
    }
    let host = HostPattern::parse(def.matcher.host.as_deref())
        .map_err(|e| err(".match.host", e))
        .ok();
    let path = PathPattern::parse(&def.matcher.path)
        .map_err(|e| err(".match.path", e))
        .ok();
    if matches!(&def.matcher.methods, Some(m) if m.is_empty()) {
        err(
            ".match.methods",
            "the method list is empty; leave it out to allow any method".into(),
        );
    }
    let upstream = match (&def.upstream, &def.aggregate) {
        (Some(u), None) => match upstreams.get(u) {
            Some(up) => Some(up.clone()),
            None => {
                err(".upstream", format!("unknown upstream {u:?}"));
                None
            }
        },
        (None, Some(_)) => None,
        _ => {
            err(
                "",
                "a route has exactly one of `upstream` and `aggregate`".into(),
            );
            None
        }
    };
    let params = path.as_ref().map(|p| p.params()).unwrap_or_default();
    let scope = Scope {
        path_params: &params,
        claims: !auth.providers.is_empty(),
        consumer: !auth.is_public(),
        calls: &[],
    };
    let rewrite = match &def.rewrite {
        None => Rewrite::None,
        Some(r) => match (&r.strip_prefix, &r.path) {
            (Some(prefix), None) if prefix.starts_with('/') && prefix.len() > 1 => {
                Rewrite::StripPrefix(prefix.trim_end_matches('/').to_string())
            }
            (Some(_), None) => {
                err(
                    ".rewrite.strip_prefix",
                    "strip_prefix must start with `/` and not be `/` alone".into(),
                );
                Rewrite::None
            }
            (None, Some(t)) => match Template::compile(t, &scope) {
                Ok(t) => Rewrite::Path(t),
                Err(e) => {
                    err(".rewrite.path", e);
                    Rewrite::None
                }
            },
            _ => {
                err(
                    ".rewrite",
                    "rewrite takes exactly one of `strip_prefix` and `path`".into(),
                );
                Rewrite::None
            }
        },
    };
    let aggregate = def.aggregate.as_ref().map(|a| {
        let at = format!("{at}.aggregate");
        crate::aggregate::compile::compile(src, &at, a, &scope, upstreams, p).map(Arc::new)
    });
    let req = def.request.clone().unwrap_or_default();
    let (validation, max_body) =
        super::validation::compile(src, &req, settings, referenced, &mut err);
    let idempotency = match (&def.idempotency, &upstream) {
        (None, _) => None,
        (Some(_), None) => {
            err(
                ".idempotency",
                "idempotency needs a route with an upstream (aggregate routes answer themselves)"
                    .into(),
            );
            None
        }
        (Some(d), Some(u)) => crate::idempotency::Idempotency::compile(d, u.longest_answer())
            .map_err(|e| err(".idempotency", e))
            .ok(),
    };
    let route_methods: Option<Vec<Method>> = def
        .matcher
        .methods
        .as_ref()
        .map(|ms| ms.iter().map(|m| m.0.clone()).collect());
    let cors = def.cors.as_ref().and_then(|name| match cors.get(name) {
        Some(p) => Some(crate::cors::RouteCors::new(
            p.clone(),
            route_methods.as_deref(),
        )),
        None => {
            err(
                ".cors",
                format!("cors policy {name:?} is not defined (or has problems of its own)"),
            );
            None
        }
    });
    let compression = def
        .response
        .as_ref()
        .and_then(|r| r.compression.as_ref())
        .and_then(|c| {
            crate::compress::Compression::compile(c)
                .map_err(|e| err(".response.compression", e))
                .ok()
        });
    let cache = match (&def.cache, &upstream) {
        (None, _) => None,
        (Some(_), None) => {
            err(
                ".cache",
                "cache needs a route with an upstream (aggregate routes answer themselves)".into(),
            );
            None
        }
        (Some(c), Some(_)) => Some(crate::cache::RouteCache::compile(&def.name, c)),
    };
    let ops = req.headers.unwrap_or_default();
    let mut set_headers = Vec::new();
    for (k, v) in &ops.set {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => set_headers.push((k, v)),
            _ => err(
                ".request.headers.set",
                format!("invalid header {k:?}: {v:?}"),
            ),
        }
    }
    let mut remove_headers = Vec::new();
    for k in &ops.remove {
        match HeaderName::from_bytes(k.as_bytes()) {
            Ok(k) => remove_headers.push(k),
            Err(_) => err(
                ".request.headers.remove",
                format!("invalid header name {k:?}"),
            ),
        }
    }
    if !errs.is_empty() || matches!(aggregate, Some(None)) {
        for (field, msg) in errs {
            p.push(src.problem(
                &format!("{at}{field}"),
                format!("route {:?}: {msg}", def.name),
            ));
        }
        return None;
    }
    Some(Compiled {
        host: host?,
        path: path?,
        route: Route {
            name: def.name.as_str().into(),
            auth,
            upstream,
            aggregate: aggregate.flatten(),
            rewrite,
            set_headers,
            remove_headers,
            max_body,
            validation,
            rate_limit: None,
            idempotency,
            cors,
            compression,
            cache,
            metrics: crate::metrics::RouteMetrics::new(&def.name),
            stages: Vec::new(),
        },
    })
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
