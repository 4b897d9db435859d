//! What the upstream sees: the rewritten path, forwarding and identity headers, and the
//! route's header edits; and what the client sees of the upstream's response headers.

use super::ctx::Ctx;
use crate::runtime::snapshot::Rewrite;
use crate::template::Values;
use http::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use std::borrow::Cow;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Template values drawn from the client's request and its identity.
pub struct RequestValues<'a> {
    pub req: &'a RequestHeader,
    pub ctx: &'a Ctx,
}

impl Values for RequestValues<'_> {
    fn path_param(&self, index: usize) -> Option<&str> {
        self.ctx.params.get(index).map(String::as_str)
    }
    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        let q = self.req.uri.query()?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.req.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn claim(&self, name: &str) -> Option<Cow<'_, str>> {
        let claims = self.ctx.identity.as_ref()?.claims.as_ref()?;
        crate::auth::jwt::claim_string(claims.get(name)?).map(Cow::Owned)
    }
    fn consumer_id(&self) -> Option<&str> {
        self.ctx.consumer()
    }
}

/// The upstream path and query for this request, or `None` to keep the client's.
fn rewritten(client: &RequestHeader, ctx: &Ctx) -> Option<String> {
    let route = ctx.route()?;
    let path = client.uri.path();
    let query = client.uri.query();
    let with_query = |p: &str| match query {
        Some(q) => format!("{p}?{q}"),
        None => p.to_string(),
    };
    match &route.rewrite {
        // Upstreams get origin-form even when the client sent absolute-form.
        Rewrite::None if super::admit::absolute_authority(client).is_some() => {
            Some(with_query(path))
        }
        Rewrite::None => None,
        Rewrite::StripPrefix(prefix) => {
            let rest = path.strip_prefix(prefix.as_str())?;
            if rest.is_empty() {
                Some(with_query("/"))
            } else if rest.starts_with('/') {
                Some(with_query(rest))
            } else {
                None
            }
        }
        Rewrite::Path(t) => {
            let rendered = t.render(&RequestValues { req: client, ctx });
            Some(if rendered.contains('?') {
                rendered
            } else {
                with_query(&rendered)
            })
        }
    }
}

fn set(req: &mut RequestHeader, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        let _ = req.insert_header(name.clone(), v);
    }
}

/// Edits the request that goes upstream. `client` is the request as the client sent it.
pub fn upstream_request(client: &RequestHeader, up: &mut RequestHeader, ctx: &Ctx) {
    if let Some(pq) = rewritten(client, ctx) {
        if let Ok(uri) = pq.parse::<http::Uri>() {
            up.set_uri(uri);
        }
    }
    gateway_headers(client, up, ctx);
}

/// The headers the gateway adds to every upstream request, proxied or made by itself
/// (aggregate calls): forwarding, request id, trace, identity, and the route's edits.
pub fn gateway_headers(client: &RequestHeader, up: &mut RequestHeader, ctx: &Ctx) {
    let trusted = ctx
        .client_ip
        .is_some_and(|ip| ctx.snapshot.settings.is_trusted(ip));
    let ip = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let prior = |h: &HeaderName| {
        client
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .filter(|v| trusted && !v.trim().is_empty())
    };
    let xff = match prior(&X_FORWARDED_FOR) {
        Some(p) => format!("{p}, {ip}"),
        None => ip,
    };
    set(up, &X_FORWARDED_FOR, &xff);
    let proto = if ctx.tls { "https" } else { "http" };
    let proto = prior(&X_FORWARDED_PROTO).unwrap_or(proto).to_string();
    set(up, &X_FORWARDED_PROTO, &proto);
    let host = super::admit::absolute_authority(client).or_else(|| {
        client
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    match prior(&X_FORWARDED_HOST).or(host) {
        Some(h) => set(up, &X_FORWARDED_HOST, h),
        None => {
            up.remove_header(&X_FORWARDED_HOST);
        }
    }
    set(up, &X_REQUEST_ID, &ctx.request_id);
    set(up, &TRACEPARENT, &ctx.upstream_traceparent());
    identity_headers(up, ctx);
    if let Some(route) = ctx.route() {
        for h in &route.remove_headers {
            up.remove_header(h);
        }
        for (k, v) in &route.set_headers {
            let _ = up.insert_header(k.clone(), v.clone());
        }
    }
}

static X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");

/// Identity headers: whatever the client sent under these names is removed, then the
/// gateway's own values are set. An API key is not forwarded upstream.
fn identity_headers(up: &mut RequestHeader, ctx: &Ctx) {
    let ids = &ctx.snapshot.identities;
    for h in &ids.identity_headers {
        up.remove_header(h);
    }
    let Some(id) = &ctx.identity else {
        return;
    };
    if let Some(c) = &id.consumer {
        set(up, &X_CONSUMER_ID, c);
    }
    if let (Some(p), Some(claims)) = (&id.provider, &id.claims) {
        for (claim, header) in &p.forward_claims {
            if let Some(v) = claims.get(claim).and_then(crate::auth::jwt::claim_string) {
                set(up, header, &v);
            }
        }
    }
    if id.by_api_key {
        if let Some(keys) = &ids.api_keys {
            up.remove_header(&keys.header);
            if let Some(q) = &keys.query {
                strip_query_param(up, q);
            }
        }
        up.remove_header(crate::auth::apikey::DEFAULT_HEADER);
    }
}

/// Removes every `name=...` pair from the request's query, leaving the rest byte for byte.
fn strip_query_param(up: &mut RequestHeader, name: &str) {
    let Some(query) = up.uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_none_or(|(k, _)| k != name)
        })
        .collect();
    let path = up.uri.path();
    let pq = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    if let Ok(uri) = pq.parse::<http::Uri>() {
        up.set_uri(uri);
    }
}

/// Response headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Edits the response that goes to the client.
pub fn client_response(resp: &mut ResponseHeader, ctx: &Ctx) {
    if resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
        let nominated: Vec<String> = resp
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive")
            .collect();
        for h in nominated.iter().map(String::as_str).chain(HOP_BY_HOP) {
            resp.remove_header(h);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        let _ = resp.insert_header(X_REQUEST_ID.clone(), v);
    }
    super::throttle::add_headers(resp, ctx);
}
