//! CORS for browser clients, from named `cors_policies`. Everything a request needs is
//! compiled at load: the origin patterns, and the header values of a preflight answer and of
//! an actual answer. A preflight is answered by the gateway (never forwarded); every other
//! answer on a CORS route gets the gateway's own CORS headers and loses the upstream's.

use crate::config::integration::CorsPolicyDef;
use http::{HeaderName, HeaderValue, Method};
use pingora_http::ResponseHeader;
use std::time::Duration;

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Any,
    /// `https://app.example.com` (scheme, host and port as the browser sends them).
    Exact(String),
    /// `https://*.example.com`: the scheme, and a host ending in `.example.com` (one label or
    /// more before it).
    Suffix {
        scheme: String,
        suffix: String,
    },
}

/// A compiled `cors_policies` entry.
#[derive(Debug)]
pub struct CorsPolicy {
    origins: Vec<Origin>,
    /// Default: the route's methods (see [`RouteCors`]).
    methods: Option<Vec<Method>>,
    /// Lower-case names.
    headers: Vec<HeaderName>,
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    credentials: bool,
    max_age_value: Option<HeaderValue>,
}

/// A route's CORS: its policy and the methods a preflight may ask for.
#[derive(Debug)]
pub struct RouteCors {
    policy: std::sync::Arc<CorsPolicy>,
    methods: Vec<Method>,
    methods_value: HeaderValue,
}

fn joined<'a>(items: impl Iterator<Item = &'a str>) -> Result<Option<HeaderValue>, String> {
    let text = items.collect::<Vec<_>>().join(", ");
    if text.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&text)
        .map(Some)
        .map_err(|_| format!("invalid header list {text:?}"))
}

fn origin(pattern: &str) -> Result<Origin, String> {
    if pattern == "*" {
        return Ok(Origin::Any);
    }
    let (scheme, host) = pattern
        .split_once("://")
        .filter(|(s, h)| matches!(*s, "http" | "https") && !h.is_empty() && !h.contains('/'))
        .ok_or_else(|| {
            format!("origin {pattern:?}: write scheme://host[:port] (no path), or \"*\"")
        })?;
    match host.strip_prefix("*.") {
        Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => Ok(Origin::Suffix {
            scheme: scheme.to_string(),
            suffix: format!(".{}", suffix.to_ascii_lowercase()),
        }),
        None if !host.contains('*') => Ok(Origin::Exact(pattern.to_ascii_lowercase())),
        _ => Err(format!(
            "origin {pattern:?}: a wildcard only as the first label (https://*.example.com)"
        )),
    }
}

impl CorsPolicy {
    pub fn compile(def: &CorsPolicyDef) -> Result<CorsPolicy, String> {
        if def.allow_origins.is_empty() {
            return Err("`allow_origins` is empty".into());
        }
        let origins = def
            .allow_origins
            .iter()
            .map(|o| origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        if def.allow_credentials && origins.contains(&Origin::Any) {
            return Err(
                "\"*\" cannot be combined with `allow_credentials: true`: list the origins".into(),
            );
        }
        let headers = def
            .allow_headers
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("invalid header name {h:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for h in &def.expose_headers {
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("invalid header name {h:?}"))?;
        }
        let max_age = def.max_age.map(|d| d.0);
        if max_age.is_some_and(|d| d > Duration::from_secs(86_400)) {
            return Err("`max_age` must be at most 24h (browsers cap it lower)".into());
        }
        Ok(CorsPolicy {
            origins,
            methods: def
                .allow_methods
                .as_ref()
                .map(|ms| ms.iter().map(|m| m.0.clone()).collect()),
            headers_value: joined(def.allow_headers.iter().map(String::as_str))?,
            headers,
            expose_value: joined(def.expose_headers.iter().map(String::as_str))?,
            credentials: def.allow_credentials,
            max_age_value: max_age.map(|d| HeaderValue::from(d.as_secs())),
        })
    }

    /// Whether the browser's `Origin` is allowed (compared without copying: this runs on
    /// every request of a CORS route).
    pub fn allows(&self, origin: &[u8]) -> bool {
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        self.origins.iter().any(|o| match o {
            Origin::Any => true,
            Origin::Exact(e) => e.eq_ignore_ascii_case(origin),
            Origin::Suffix { scheme, suffix } => origin
                .split_once("://")
                .filter(|(s, _)| s.eq_ignore_ascii_case(scheme))
                .map(|(_, host)| host.split(':').next().unwrap_or(host))
                .is_some_and(|host| {
                    host.len() > suffix.len()
                        && host.is_char_boundary(host.len() - suffix.len())
                        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                }),
        })
    }
}

impl RouteCors {
    /// `route_methods`: the route's `match.methods` (None: any).
    pub fn new(policy: std::sync::Arc<CorsPolicy>, route_methods: Option<&[Method]>) -> RouteCors {
        let methods: Vec<Method> = match (&policy.methods, route_methods) {
            (Some(m), _) => m.clone(),
            (None, Some(m)) => m.to_vec(),
            (None, None) => ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
        };
        let methods_value = joined(methods.iter().map(Method::as_str))
            .ok()
            .flatten()
            .unwrap_or(HeaderValue::from_static("GET"));
        RouteCors {
            policy,
            methods,
            methods_value,
        }
    }

    pub fn policy(&self) -> &CorsPolicy {
        &self.policy
    }

    /// The answer to a preflight: 204, with the CORS headers only when the origin, the
    /// method and every requested header are allowed.
    pub fn preflight(
        &self,
        origin: &HeaderValue,
        method: &[u8],
        headers: Option<&[u8]>,
    ) -> Option<ResponseHeader> {
        let mut head = ResponseHeader::build(204, Some(8)).ok()?;
        let vary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";
        let _ = head.append_header(http::header::VARY, vary);
        let p = &self.policy;
        let method_ok = Method::from_bytes(method).is_ok_and(|m| self.methods.contains(&m));
        let headers_ok = match headers {
            None => true,
            Some(raw) => std::str::from_utf8(raw).is_ok_and(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .all(|h| p.headers.iter().any(|a| a.as_str().eq_ignore_ascii_case(h)))
            }),
        };
        if !(p.allows(origin.as_bytes()) && method_ok && headers_ok) {
            return Some(head);
        }
        let _ = head.insert_header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        let _ = head.insert_header(
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            self.methods_value.clone(),
        );
        if let Some(v) = &p.headers_value {
            let _ = head.insert_header(http::header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if p.credentials {
            let _ = head.insert_header(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        }
        if let Some(v) = &p.max_age_value {
            let _ = head.insert_header(http::header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        Some(head)
    }
}

/// Every answer on a CORS route: the upstream's CORS headers removed, the gateway's set when
/// `origin` (the request's, if allowed) is given.
pub fn decorate(resp: &mut ResponseHeader, policy: &CorsPolicy, origin: Option<&HeaderValue>) {
    let upstream: Vec<HeaderName> = resp
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for h in &upstream {
        resp.remove_header(h);
    }
    let _ = resp.append_header(http::header::VARY, "Origin");
    let Some(origin) = origin else {
        return;
    };
    let _ = resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if let Some(v) = &policy.expose_value {
        let _ = resp.insert_header(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
    }
    if policy.credentials {
        let _ = resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
}

#[cfg(test)]
#[path = "cors_tests.rs"]
mod tests;

/// Every `cors_policies` entry of the set, by name; problems with file and line.
pub fn compile_policies(
    set: &crate::config::PolicySet,
    p: &mut crate::config::Problems,
) -> std::collections::HashMap<String, std::sync::Arc<CorsPolicy>> {
    let mut out = std::collections::HashMap::new();
    for src in &set.sources {
        for (name, def) in &src.file.cors_policies {
            let at = format!("cors_policies.{name}");
            if out.contains_key(name) {
                p.push(src.problem(&at, format!("cors policy {name:?} is defined twice")));
                continue;
            }
            match CorsPolicy::compile(def) {
                Ok(c) => {
                    out.insert(name.clone(), std::sync::Arc::new(c));
                }
                Err(e) => p.push(src.problem(&at, format!("cors policy {name:?}: {e}"))),
            }
        }
    }
    out
}
