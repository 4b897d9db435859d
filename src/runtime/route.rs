//! Compiles one route definition into a [`Route`]: its match, authentication, upstream,
//! rewrite, validation, transforms, traffic blocks, cache and header edits; every problem
//! reported against the route's file and line. The set as a whole is `super::compile`.

use super::snapshot::{Rewrite, Route, Settings};
use crate::config::policy::RouteDef;
use crate::config::{PolicySource, Problems};
use crate::runtime::router::{HostPattern, PathPattern};
use crate::template::{Scope, Template};
use crate::upstream::Upstream;
use http::{HeaderName, HeaderValue, Method};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub(super) struct Compiled {
    pub host: HostPattern,
    pub path: PathPattern,
    pub conditions: Option<Arc<crate::runtime::conditions::Conditions>>,
    pub route: Route,
}

/// What every route of a set is compiled against.
pub(super) struct Shared<'a> {
    pub upstreams: &'a BTreeMap<String, Arc<Upstream>>,
    pub ids: &'a crate::auth::Identities,
    pub settings: &'a Settings,
    pub cors: &'a HashMap<String, Arc<crate::cors::CorsPolicy>>,
}

pub(super) fn compile_route(
    src: &PolicySource,
    at: &str,
    def: &RouteDef,
    shared: &Shared<'_>,
    (referenced, warnings): (&mut Vec<std::path::PathBuf>, &mut Vec<String>),
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
    let upstream = match (&def.upstream, &def.aggregate, &def.deliver) {
        (Some(u), None, None) => match upstreams.get(u) {
            Some(up) => Some(up.clone()),
            None => {
                err(".upstream", format!("unknown upstream {u:?}"));
                None
            }
        },
        (None, Some(_), None) | (None, None, Some(_)) => None,
        _ => {
            err(
                "",
                "a route has exactly one of `upstream`, `aggregate` and `deliver`".into(),
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
    let traffic = crate::traffic::compile::traffic(def, upstream.as_ref(), upstreams, &mut err);
    let (request_transform, response_transform) =
        super::transforms::compile(src, at, def, &scope, &mut err, warnings);
    let conditions =
        crate::runtime::conditions::Conditions::compile(&def.matcher.headers, &def.matcher.query)
            .map_err(|e| err(".match", e))
            .ok()
            .flatten()
            .map(Arc::new);
    let ops = req.headers.unwrap_or_default();
    let mut set_headers = Vec::new();
    for (k, v) in &ops.set {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => set_headers.push((k.into(), v)),
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
    let deliver = def.deliver.as_ref().map(|d| {
        crate::deliver::compile(src, &format!("{at}.deliver"), d, upstreams, p).map(Arc::new)
    });
    if !errs.is_empty() || matches!(aggregate, Some(None)) || matches!(deliver, Some(None)) {
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
        conditions,
        route: Route {
            name: def.name.as_str().into(),
            auth,
            upstream,
            aggregate: aggregate.flatten(),
            deliver: deliver.flatten(),
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
            traffic,
            request_transform,
            response_transform,
            grpc_web: def.grpc_web,
            stream_idle: def
                .timeouts
                .as_ref()
                .map_or(std::time::Duration::from_secs(300), |t| t.idle.0),
            metrics: crate::metrics::RouteMetrics::new(&def.name),
            summary: Arc::new(crate::console::summary::RouteSummary::of(def)),
            written: Arc::new(crate::openapi::facts::RouteFacts::of(src, def)),
            stages: Vec::new(),
        },
    })
}
