//! What the upstream sees: the rewritten path, forwarding and identity headers, and the
//! route's header edits; and what the client sees of the upstream's response headers.

use super::ctx::Ctx;
use super::ids::{REQUEST_ID_HEADER, TRACEPARENT_HEADER};
use crate::runtime::snapshot::Rewrite;
use crate::template::Values;
use http::{HeaderName, HeaderValue};
use pingora_http::{KnownHeader, RequestHeader, ResponseHeader};
use std::borrow::Cow;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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

/// The path as the router matched it: its decoded segments, each percent-encoded again
/// where needed. It differs from the raw path only when that has percent-escapes, so only
/// then is it rebuilt; an upstream then sees `/v1/x` for both `/%76%31/x` and `/v1/x`, the
/// path that was authorised.
fn matched_path(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let segments = crate::runtime::router::decode_segments(raw).ok()?;
    let mut out = String::with_capacity(raw.len());
    for s in &segments {
        out.push('/');
        out.extend(percent_encoding::utf8_percent_encode(
            s,
            crate::template::SEGMENT,
        ));
    }
    Some(Cow::Owned(out))
}

/// The upstream path and query for this request, or `None` to keep the client's.
fn rewritten(client: &RequestHeader, ctx: &Ctx) -> Option<String> {
    let route = ctx.route()?;
    let path = matched_path(client.uri.path())?;
    let query = client.uri.query();
    let with_query = |p: &str| match query {
        Some(q) => format!("{p}?{q}"),
        None => p.to_string(),
    };
    let normalised = matches!(path, Cow::Owned(_));
    match &route.rewrite {
        // Upstreams get origin-form even when the client sent absolute-form.
        Rewrite::None if normalised || super::admit::absolute_authority(client).is_some() => {
            Some(with_query(&path))
        }
        Rewrite::None => None,
        Rewrite::StripPrefix(prefix) => {
            let rest = path.strip_prefix(prefix.as_str())?;
            if rest.is_empty() {
                Some(with_query("/"))
            } else if rest.starts_with('/') {
                Some(with_query(rest))
            } else {
                normalised.then(|| with_query(&path))
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

/// A header value from text built for it (no copy); `None` if it is not a valid value.
pub(super) fn owned(text: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
}

/// Edits the request that goes upstream. `client` is the request as the client sent it.
pub fn upstream_request(client: &RequestHeader, up: &mut RequestHeader, ctx: &Ctx) {
    if let Some(pq) = rewritten(client, ctx) {
        if let Ok(uri) = pq.parse::<http::Uri>() {
            up.set_uri(uri);
        }
        // An HTTP/2 client names the host in `:authority` only: the origin-form request
        // keeps it as Host (which an HTTP/2 upstream turns back into `:authority`).
        if !up.headers.contains_key(http::header::HOST) {
            if let Some(a) = super::admit::absolute_authority(client) {
                let _ = up.insert_header(http::header::HOST, a);
            }
        }
    }
    gateway_headers(client, up, ctx);
}

// Parsed once, with the case the wire gets: Pingora keeps each header's case for HTTP/1,
// and a name given as text is parsed and allocated again at every insert.
static XFF: KnownHeader = KnownHeader::from_static("x-forwarded-for", "X-Forwarded-For");
static XFP: KnownHeader = KnownHeader::from_static("x-forwarded-proto", "X-Forwarded-Proto");
static XFH: KnownHeader = KnownHeader::from_static("x-forwarded-host", "X-Forwarded-Host");
static CONSUMER_ID: KnownHeader = KnownHeader::from_static("x-consumer-id", "X-Consumer-Id");

/// The `X-Forwarded-For` an upstream gets: what a trusted proxy sent with the client's
/// address appended, else the client's address alone (a client's own claim is dropped);
/// `None`: no header at all.
pub fn forwarded_for(
    prior: Option<&str>,
    trusted: bool,
    client: Option<std::net::IpAddr>,
) -> Option<HeaderValue> {
    let prior = prior.filter(|p| trusted && !p.trim().is_empty());
    if prior.is_none() && client.is_none() {
        return None;
    }
    let mut text = String::with_capacity(prior.map_or(0, |p| p.len() + 2) + 39);
    if let Some(p) = prior {
        text.push_str(p);
    }
    if let Some(ip) = client {
        if prior.is_some() {
            text.push_str(", ");
        }
        // No client address (not an IP connection): only what a trusted proxy said.
        push_ip(&mut text, ip);
    }
    owned(text)
}

/// Appends an address as text. IPv4 (nearly every client) is written octet by octet:
/// `Display` goes through `core::fmt` and costs ~1,300 instructions a request here.
pub(crate) fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// The headers the gateway adds to every upstream request, proxied or made by itself
/// (aggregate calls): forwarding, request id, trace, identity, and the route's edits.
pub fn gateway_headers(client: &RequestHeader, up: &mut RequestHeader, ctx: &Ctx) {
    let trusted = ctx
        .client
        .ip
        .is_some_and(|ip| ctx.snapshot.settings.is_trusted(ip));
    // Looked up only when the peer is trusted: each lookup hashes the name.
    let prior = |h: &HeaderName| {
        if !trusted {
            return None;
        }
        client
            .headers
            .get(h)
            .filter(|v| v.to_str().is_ok_and(|s| !s.trim().is_empty()))
    };
    // The five below and a few identity headers. A parsed header, and so its clone, has room
    // for 8 beyond its own (vendor/pingora-http); one built otherwise (HTTP/2) grows once.
    up.reserve_headers(8);
    let prior_xff = prior(&X_FORWARDED_FOR).and_then(|p| p.to_str().ok());
    match forwarded_for(prior_xff, trusted, ctx.client.ip) {
        Some(v) => {
            let _ = up.insert_known(&XFF, v);
        }
        // Never the client's own claim.
        None => {
            up.remove_header(&X_FORWARDED_FOR);
        }
    }
    let proto = match prior(&X_FORWARDED_PROTO) {
        Some(p) => p.clone(),
        None if ctx.client.tls => HeaderValue::from_static("https"),
        None => HeaderValue::from_static("http"),
    };
    let _ = up.insert_known(&XFP, proto);
    let host = match super::admit::absolute_authority(client) {
        Some(a) => HeaderValue::from_str(a).ok(),
        None => client.headers.get(http::header::HOST).cloned(),
    };
    match prior(&X_FORWARDED_HOST).cloned().or(host) {
        Some(h) => {
            let _ = up.insert_known(&XFH, h);
        }
        None => {
            up.remove_header(&X_FORWARDED_HOST);
        }
    }
    let _ = up.insert_known(&REQUEST_ID_HEADER, ctx.ids.id.clone());
    let _ = up.insert_known(&TRACEPARENT_HEADER, ctx.upstream_traceparent());
    identity_headers(up, ctx);
    if let Some(route) = ctx.route() {
        for h in &route.remove_headers {
            up.remove_header(h);
        }
        for (k, v) in &route.set_headers {
            let _ = up.insert_known(k, v.clone());
        }
    }
}

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
        if let Ok(v) = HeaderValue::from_str(c) {
            let _ = up.insert_known(&CONSUMER_ID, v);
        }
    }
    if let (Some(p), Some(claims)) = (&id.provider, &id.claims) {
        for (claim, header) in &p.forward_claims {
            if let Some(v) = claims.get(claim).and_then(crate::auth::jwt::claim_string) {
                if let Some(v) = owned(v) {
                    let _ = up.insert_header(header.clone(), v);
                }
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
/// A `match` on the name compiles to a length switch: no loop over a list per header.
pub(super) fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "keep-alive" | "proxy-connection" | "proxy-authenticate" | "te" | "trailer" | "upgrade"
    )
}

/// Edits the response that goes to the client.
pub fn client_response(resp: &mut ResponseHeader, ctx: &Ctx) {
    // Most responses carry no hop-by-hop field and no `Connection` tokens beyond
    // close/keep-alive: then this only looks, and allocates nothing.
    if resp.status != http::StatusCode::SWITCHING_PROTOCOLS && has_hop_by_hop(resp) {
        let mut gone: Vec<HeaderName> = resp
            .headers
            .keys()
            .filter(|k| hop_by_hop(k))
            .cloned()
            .collect();
        gone.extend(
            connection_tokens(resp).filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()),
        );
        for h in &gone {
            resp.remove_header(h);
        }
    }
    // The parsed header has room for these (vendor/pingora-http: 8 beyond its own).
    let _ = resp.insert_known(&REQUEST_ID_HEADER, ctx.ids.id.clone());
    super::stage::rate_limit::add_headers(resp, ctx);
    ctx.cors_headers(resp);
    if let Some(ops) = ctx
        .route()
        .and_then(|r| r.traffic.response_headers.as_ref())
    {
        ops.apply(resp);
    }
}

/// The field names a response's `Connection` header nominates as hop-by-hop.
fn connection_tokens(resp: &ResponseHeader) -> impl Iterator<Item = &str> {
    resp.headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case("close")
                && !t.eq_ignore_ascii_case("keep-alive")
        })
}

fn has_hop_by_hop(resp: &ResponseHeader) -> bool {
    resp.headers.keys().any(hop_by_hop) || connection_tokens(resp).next().is_some()
}

#[cfg(test)]
mod tests {
    use super::forwarded_for;

    #[test]
    fn forwarded_for_keeps_only_trusted_claims() {
        let ip = Some(std::net::IpAddr::from([10, 0, 0, 7]));
        assert_eq!(
            forwarded_for(Some("1.2.3.4"), true, ip).unwrap(),
            "1.2.3.4, 10.0.0.7"
        );
        assert_eq!(
            forwarded_for(Some("1.2.3.4"), false, ip).unwrap(),
            "10.0.0.7"
        );
        assert_eq!(forwarded_for(Some("  "), true, ip).unwrap(), "10.0.0.7");
        assert_eq!(
            forwarded_for(Some("1.2.3.4"), true, None).unwrap(),
            "1.2.3.4"
        );
        assert!(forwarded_for(Some("1.2.3.4"), false, None).is_none());
        assert!(forwarded_for(None, true, None).is_none());
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "192.0.2.10",
            "::1",
            "2001:db8::7",
            "::ffff:10.1.2.3",
        ] {
            let addr: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(
                forwarded_for(None, false, Some(addr)).unwrap(),
                addr.to_string()
            );
        }
    }
}
