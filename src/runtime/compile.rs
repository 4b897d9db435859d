//! Compiles a parsed policy set into a [`Snapshot`]: every cross-reference checked, every
//! route, template and upstream pool built, all problems reported together with file:line.

use super::route::{compile_route, Shared};
use super::snapshot::{Route, Settings, Snapshot, Stage};
use crate::config::{GatewayConfig, PolicySet, PolicySource, Problems};
use crate::runtime::router::{HostPattern, PathPattern, Router, Segment};

use crate::upstream::Upstream;
use http::Method;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

/// A route's name and methods, to find routes that match the same requests.
type NamedMethods = (
    String,
    Option<Vec<Method>>,
    Option<Arc<crate::runtime::conditions::Conditions>>,
);

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
    let mut warnings: Vec<String> = Vec::new();
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
            let Some(mut c) = compile_route(
                src,
                &at,
                def,
                &shared,
                (&mut referenced, &mut warnings),
                &mut problems,
            ) else {
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
            // Two routes clash when one request could match both equally: overlapping
            // methods, as many header/query constraints, none contradicting the other's.
            let mine = c.conditions.as_deref();
            let clash = same.iter().find(|(_, m, theirs)| {
                use crate::runtime::conditions::Conditions;
                overlaps(m, &methods)
                    && Conditions::len_of(theirs.as_deref()) == Conditions::len_of(mine)
                    && Conditions::compatible(theirs.as_deref(), mine)
            });
            if let Some((other, _, _)) = clash {
                problems.push(src.problem(
                    &format!("{at}.match"),
                    format!(
                        "route {:?} matches the same requests as route {other:?}",
                        def.name
                    ),
                ));
            }
            same.push((def.name.clone(), methods.clone(), c.conditions.clone()));
            router.add_constrained(
                routes.len(),
                &c.host,
                &c.path,
                methods,
                c.conditions.clone(),
            );
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
        warnings,
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
    if route.request_transform.is_some() {
        stages.push(Stage::Transform);
    }
    if route.idempotency.is_some() {
        stages.push(Stage::Idempotency);
    }
    // A stage that reads the whole body may leave one too large for Pingora to send.
    let holds_body = route.validation.as_ref().is_some_and(|v| v.body.is_some())
        || route.auth.webhook.is_some()
        || route.idempotency.is_some()
        || route.request_transform.is_some();
    if route.aggregate.is_some() {
        stages.push(Stage::Aggregate);
    } else if route.deliver.is_some() {
        stages.push(Stage::Deliver);
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

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
