//! A request's path, host and identity headers through the gateway's own parsers, in
//! process: path decoding and route matching (over a fixed router built once, and over a
//! router made from a fuzzed path and host pattern), `X-Request-Id` and `traceparent`,
//! path templates (compiled from fuzzed text, rendered with the request's values) and
//! `X-Forwarded-For`. Each must answer, never panic, and the answers are checked against
//! what the functions promise (see `check_*` below).
//!
//! The input is text, one field per line (a missing line is an absent field), so that the
//! seeds stay readable:
//!
//! ```text
//! 0 method                       4 traceparent                     8 "1": the peer is a
//! 1 Host header                  5 path template                     trusted proxy
//! 2 request target (path?query)  6 X-Forwarded-For (empty: none)   9 path pattern
//! 3 X-Request-Id                 7 client IP address              10 host pattern
//! ```
#![no_main]

use gateway::runtime::router::{decode_segments, HostPattern, Match, PathPattern, Router, Segment};
use gateway::template::{Scope, Template, Values};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;
use std::sync::LazyLock;

type Route = (&'static str, Option<&'static str>, Option<Vec<Method>>);

/// The fixed routes: literals, parameters, rests, exact and wildcard hosts, methods.
fn routes() -> Vec<Route> {
    use Method as M;
    vec![
        ("/v1/users/{id}", None, Some(vec![M::GET])),
        ("/v1/users/me", None, None),
        ("/v1/users/{id}/orders", None, Some(vec![M::GET, M::POST])),
        ("/v1/*", None, None),
        (
            "/v1/orders/{order}/items/{item}",
            None,
            Some(vec![M::PUT, M::DELETE]),
        ),
        ("/static/*", Some("*.example.com"), Some(vec![M::GET])),
        ("/{tenant}/items/{item}", Some("api.example.com"), None),
        ("/", Some("*.eu.example.com"), None),
        ("/health", None, Some(vec![M::GET])),
        ("/a/{x}/c", None, None),
        ("/a/b/d", None, None),
    ]
}

struct Fixed {
    router: Router,
    routes: Vec<(HostPattern, PathPattern, Option<Vec<Method>>)>,
}

static FIXED: LazyLock<Fixed> = LazyLock::new(|| {
    let mut router = Router::default();
    let mut compiled = Vec::new();
    for (i, (path, host, methods)) in routes().into_iter().enumerate() {
        let host = HostPattern::parse(host).expect("the fixed host patterns parse");
        let path = PathPattern::parse(path).expect("the fixed path patterns parse");
        router.add(i, &host, &path, methods.clone());
        compiled.push((host, path, methods));
    }
    Fixed {
        router,
        routes: compiled,
    }
});

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let mut field = || lines.next();
    let method = field()
        .and_then(|m| Method::from_bytes(m).ok())
        .unwrap_or(Method::GET);
    let host_header = field().and_then(|h| HeaderValue::from_bytes(h).ok());
    let target = field().map(String::from_utf8_lossy).unwrap_or_default();
    let request_id = field().and_then(|v| HeaderValue::from_bytes(v).ok());
    let traceparent = field().and_then(|v| HeaderValue::from_bytes(v).ok());
    let template = field().map(String::from_utf8_lossy);
    let xff_prior = field()
        .filter(|v| !v.is_empty())
        .and_then(|v| HeaderValue::from_bytes(v).ok());
    let client = field()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok());
    let trusted = field().is_some_and(|v| v == b"1");
    let path_pattern = field().map(String::from_utf8_lossy);
    let host_pattern = field().map(String::from_utf8_lossy);

    // Identity headers.
    check_request_id(request_id.as_ref());
    check_traceparent(traceparent.as_ref());
    // As the gateway passes it: the client's header when it is text.
    check_forwarded_for(
        xff_prior.as_ref().and_then(|v| v.to_str().ok()),
        trusted,
        client,
    );

    // The path and query as the gateway sees them: from the parsed URI when it parses (as
    // Pingora hands it over), the raw text otherwise (a superset: decoding must cope).
    let uri = http::Uri::try_from(target.as_ref()).ok();
    let (path, query) = match &uri {
        Some(u) => (u.path(), u.query()),
        None => match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target.as_ref(), None),
        },
    };
    let host = route_host(uri.as_ref(), host_header.as_ref());

    let segments = match decode_segments(path) {
        Ok(s) => s,
        Err(_) => return,
    };
    assert_eq!(
        segments.len(),
        path[1..].split('/').count(),
        "one decoded segment per raw segment"
    );
    assert!(
        segments.iter().all(|s| s != "." && s != ".."),
        "dot segments are refused"
    );
    let segs: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();

    // The fixed router.
    let fixed = &*FIXED;
    let found = fixed.router.find(&host, &segs, &method);
    check_match(&found, &fixed.routes, &host, &segs, &method);

    // A router from fuzzed patterns, next to one fixed route.
    let mut params_names: Vec<String> = Vec::new();
    if let Some(src) = &path_pattern {
        let hp = match host_pattern.as_deref() {
            None | Some("") => HostPattern::parse(None),
            Some(h) => HostPattern::parse(Some(h)),
        };
        if let (Ok(pp), Ok(hp)) = (PathPattern::parse(src), hp) {
            assert!(src.starts_with('/'));
            params_names = pp.params();
            let mut router = Router::default();
            let catch_all = (
                HostPattern::Any,
                PathPattern::parse("/*").expect("a rest pattern parses"),
                Some(vec![Method::OPTIONS]),
            );
            let table = vec![(hp, pp, Some(vec![method.clone()])), catch_all];
            for (i, (h, p, m)) in table.iter().enumerate() {
                router.add(i, h, p, m.clone());
            }
            let m = router.find(&host, &segs, &method);
            check_match(&m, &table, &host, &segs, &method);
        }
    }

    // A template from fuzzed text, rendered with this request's values.
    if let Some(src) = &template {
        let (params, names) = match &found {
            Match::Found { route, params } => (params.clone(), fixed.routes[*route].1.params()),
            _ => (Vec::new(), params_names),
        };
        let calls = ["profile".to_string()];
        let scope = Scope {
            path_params: &names,
            claims: true,
            consumer: true,
            calls: &calls,
        };
        if let Ok(t) = Template::compile(src, &scope) {
            assert!(src.starts_with('/'), "a compiled template starts with `/`");
            let mut headers = HeaderMap::new();
            for (name, value) in [
                ("host", &host_header),
                ("x-request-id", &request_id),
                ("traceparent", &traceparent),
            ] {
                if let Some(v) = value {
                    headers.insert(HeaderName::from_static(name), v.clone());
                }
            }
            let values = RequestValues {
                params: &params,
                query,
                headers: &headers,
                host: &host,
            };
            let _ = t.render(&values);
            // With no values at all, only the literal text is left.
            assert_eq!(t.render(&Nothing), literals(src), "template {src:?}");
        }
    }
});

/// The host the router is given: the absolute-form authority or the Host header, without
/// the port or a final dot, lower-case (as the gateway's admission does).
fn route_host(uri: Option<&http::Uri>, header: Option<&HeaderValue>) -> String {
    let raw = uri
        .and_then(|u| u.authority())
        .map(|a| a.as_str())
        .or_else(|| header.and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let no_port = if raw.starts_with('[') {
        raw.split_once(']').map_or(raw, |(h, _)| &h[1..])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    no_port.trim_end_matches('.').to_ascii_lowercase()
}

/// A client id is kept when it is 1–128 visible ASCII characters, else replaced by 32 hex
/// digits.
fn check_request_id(client: Option<&HeaderValue>) {
    let out = gateway::proxy::ids::request_id(client);
    let visible = |v: &HeaderValue| {
        (1..=128).contains(&v.len()) && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b))
    };
    match client {
        Some(v) if visible(v) => assert_eq!(&out, v, "a valid request id is kept"),
        _ => assert!(
            out.len() == 32 && out.as_bytes().iter().all(u8::is_ascii_hexdigit),
            "a new request id is 32 hex digits: {out:?}"
        ),
    }
}

/// The answer is always a well-formed version-00 traceparent in lower case: the client's
/// (lower-cased) when it was well-formed, a new one otherwise.
fn check_traceparent(client: Option<&HeaderValue>) {
    let out = gateway::proxy::ids::traceparent(client);
    let text = out.to_str().expect("a traceparent is ASCII");
    assert!(well_formed_traceparent(text), "{text:?}");
    assert!(!text.bytes().any(|b| b.is_ascii_uppercase()), "{text:?}");
    if let Some(c) = client.and_then(|c| c.to_str().ok()) {
        if well_formed_traceparent(c) {
            assert_eq!(text, c.to_ascii_lowercase());
        }
    }
}

/// With a client address: the trusted proxy's chain (when not blank) and the address, or
/// the address alone. Without one, any answer will do as long as it does not panic.
fn check_forwarded_for(prior: Option<&str>, trusted: bool, client: Option<std::net::IpAddr>) {
    let out = gateway::proxy::forward::forwarded_for(prior, trusted, client);
    if let Some(ip) = client {
        let want = match prior.filter(|p| trusted && !p.trim().is_empty()) {
            Some(p) => format!("{p}, {ip}"),
            None => ip.to_string(),
        };
        assert_eq!(out.as_ref().map(|v| v.as_bytes()), Some(want.as_bytes()));
    }
}

fn well_formed_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

/// A match must be one the table allows: the route's host and path match, its methods
/// allow the request's, and the parameters are the segments under `{param}`. A 405 lists
/// methods, sorted and without repeats, none of which would have been allowed.
fn check_match(
    m: &Match,
    table: &[(HostPattern, PathPattern, Option<Vec<Method>>)],
    host: &str,
    segs: &[&str],
    method: &Method,
) {
    match m {
        Match::Found { route, params } => {
            let (h, p, methods) = &table[*route];
            assert!(host_matches(h, host), "route {route} for host {host:?}");
            assert_eq!(
                path_params(p, segs).as_ref(),
                Some(params),
                "route {route} for {segs:?}"
            );
            if let Some(ms) = methods {
                assert!(
                    ms.contains(method) || (*method == Method::HEAD && ms.contains(&Method::GET)),
                    "route {route} does not allow {method}"
                );
            }
        }
        Match::MethodNotAllowed(allow) => {
            assert!(!allow.is_empty());
            assert!(
                allow.windows(2).all(|w| w[0].as_str() < w[1].as_str()),
                "sorted, no repeats: {allow:?}"
            );
            assert!(
                !allow.contains(method),
                "{method} is in the Allow list {allow:?}"
            );
        }
        Match::NotFound => {}
    }
}

fn host_matches(pattern: &HostPattern, host: &str) -> bool {
    match pattern {
        HostPattern::Any => true,
        HostPattern::Exact(h) => h == host,
        HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
    }
}

/// The parameters when `pattern` matches `segs`, straight from the pattern's definition.
fn path_params(pattern: &PathPattern, segs: &[&str]) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut rest = segs;
    for s in &pattern.segments {
        match s {
            Segment::Rest => return Some(params),
            Segment::Literal(l) => match rest.split_first() {
                Some((first, more)) if first == l => rest = more,
                _ => return None,
            },
            Segment::Param(_) => {
                let (first, more) = rest.split_first()?;
                params.push(first.to_string());
                rest = more;
            }
        }
    }
    rest.is_empty().then_some(params)
}

/// `src` without its `{...}` variables (a compiled template has only well-formed ones).
fn literals(src: &str) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        rest = rest[i..].split_once('}').map_or("", |(_, r)| r);
    }
    out.push_str(rest);
    out
}

/// The request's values, as the gateway draws them (`forward::RequestValues`), with a
/// claim and a call field made from their names.
struct RequestValues<'a> {
    params: &'a [String],
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    host: &'a str,
}

impl Values for RequestValues<'_> {
    fn path_param(&self, index: usize) -> Option<&str> {
        self.params.get(index).map(String::as_str)
    }
    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        form_urlencoded::parse(self.query?.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn claim(&self, name: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(format!("{name}/?#&= é")))
    }
    fn consumer_id(&self) -> Option<&str> {
        Some(self.host)
    }
    fn call_field(&self, call: &str, pointer: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(format!("{call}{pointer}")))
    }
}

/// No value for anything: every variable renders empty.
struct Nothing;

impl Values for Nothing {
    fn path_param(&self, _: usize) -> Option<&str> {
        None
    }
    fn query(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }
    fn header(&self, _: &HeaderName) -> Option<&str> {
        None
    }
    fn claim(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }
    fn consumer_id(&self) -> Option<&str> {
        None
    }
}
