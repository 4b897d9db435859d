//! Route matching: host (exact, then `*.suffix` longest first, then any host), then path
//! (literal segment over `{param}` over a final `/*`, segment by segment), then method.
//! The most specific route that allows the method wins; when routes match the path but
//! none allows the method, the answer is 405 with the union of their methods. Routes with
//! `match.headers`/`match.query` constraints are tried before those without (more before
//! fewer) and match only requests that carry the values.

use super::conditions::Conditions;
use http::Method;
use pingora_http::RequestHeader;
use std::collections::HashMap;
use std::sync::Arc;

/// One segment of a compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Literal(String),
    Param(String),
    /// A final `/*`: any rest, including none.
    Rest,
}

/// A parsed path pattern such as `/v1/users/{id}` or `/static/*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPattern {
    pub segments: Vec<Segment>,
}

impl PathPattern {
    pub fn parse(src: &str) -> Result<PathPattern, String> {
        let body = src
            .strip_prefix('/')
            .ok_or_else(|| format!("path {src:?} must start with `/`"))?;
        let raw: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        let mut names = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            if *s == "*" {
                if i + 1 != raw.len() {
                    return Err(format!(
                        "in path {src:?}, `*` is only allowed as the last segment"
                    ));
                }
                segments.push(Segment::Rest);
            } else if let Some(inner) = s.strip_prefix('{') {
                let name = inner.strip_suffix('}').ok_or_else(|| {
                    format!("in path {src:?}, segment {s:?} is not a whole `{{param}}`")
                })?;
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!("in path {src:?}, invalid parameter name {name:?}"));
                }
                if names.contains(&name) {
                    return Err(format!("in path {src:?}, parameter {name:?} appears twice"));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_string()));
            } else if s.contains(['{', '}', '*', '?', '#', '%']) {
                return Err(format!(
                    "in path {src:?}, segment {s:?} mixes a literal with `{{`, `}}`, `*`, `?`, `#` or `%`"
                ));
            } else if *s == "." || *s == ".." {
                return Err(format!("in path {src:?}, dot segments are not allowed"));
            } else {
                segments.push(Segment::Literal(s.to_string()));
            }
        }
        Ok(PathPattern { segments })
    }

    /// The parameter names, in order.
    pub fn params(&self) -> Vec<String> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A host pattern: exact (`api.example.com`), wildcard (`*.example.com`) or any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Any,
    Exact(String),
    /// The suffix including its leading dot: `.example.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn parse(src: Option<&str>) -> Result<HostPattern, String> {
        let Some(h) = src else {
            return Ok(HostPattern::Any);
        };
        let h = h.trim().to_ascii_lowercase();
        let (wild, name) = match h.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, h.clone()),
        };
        let valid = !name.is_empty()
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid {
            return Err(format!(
                "invalid host {h:?}: expected a name such as api.example.com or *.example.com"
            ));
        }
        Ok(if wild {
            HostPattern::Suffix(format!(".{name}"))
        } else {
            HostPattern::Exact(name)
        })
    }
}

#[derive(Debug, Clone)]
struct Entry {
    route: usize,
    methods: Option<Vec<Method>>,
    conditions: Option<Arc<Conditions>>,
}

impl Entry {
    fn allows(&self, m: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(ms) => ms
                .iter()
                .any(|x| x == m || (*x == Method::GET && *m == Method::HEAD)),
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    literals: HashMap<String, Node>,
    param: Option<Box<Node>>,
    here: Vec<Entry>,
    rest: Vec<Entry>,
}

/// The outcome of matching one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Match {
    /// The route's index and its path parameters' values, in the pattern's order.
    Found {
        route: usize,
        params: Vec<String>,
    },
    /// Routes match the path but none allows the method; the methods they allow.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

struct Search<'a> {
    /// None: any method (a CORS preflight matches by host and path only).
    method: Option<&'a Method>,
    /// The request, for routes with header or query constraints; `None`: a search by host
    /// and path only, where constraints do not count.
    req: Option<&'a RequestHeader>,
    params: Vec<&'a str>,
    allow: Option<Vec<Method>>,
}

impl<'a> Search<'a> {
    fn check(&mut self, entries: &[Entry]) -> Option<usize> {
        for e in entries {
            let constrained_out = match (&e.conditions, self.req) {
                (Some(c), Some(req)) => !c.matches(req),
                _ => false,
            };
            if constrained_out {
                continue;
            }
            if self.method.is_none_or(|m| e.allows(m)) {
                return Some(e.route);
            }
            let allow = self.allow.get_or_insert_with(Vec::new);
            if let Some(ms) = &e.methods {
                allow.extend(ms.iter().cloned());
            }
        }
        None
    }

    fn walk(&mut self, node: &Node, segs: &[&'a str]) -> Option<usize> {
        match segs.split_first() {
            None => {
                if let Some(r) = self.check(&node.here) {
                    return Some(r);
                }
            }
            Some((first, rest)) => {
                if let Some(child) = node.literals.get(*first) {
                    if let Some(r) = self.walk(child, rest) {
                        return Some(r);
                    }
                }
                if let Some(child) = &node.param {
                    self.params.push(first);
                    if let Some(r) = self.walk(child, rest) {
                        return Some(r);
                    }
                    self.params.pop();
                }
            }
        }
        self.check(&node.rest)
    }
}

impl Node {
    fn insert(&mut self, segments: &[Segment], entry: Entry) {
        match segments.split_first() {
            None => push_ranked(&mut self.here, entry),
            Some((Segment::Rest, _)) => push_ranked(&mut self.rest, entry),
            Some((Segment::Literal(l), rest)) => self
                .literals
                .entry(l.clone())
                .or_default()
                .insert(rest, entry),
            Some((Segment::Param(_), rest)) => self
                .param
                .get_or_insert_with(Default::default)
                .insert(rest, entry),
        }
    }
}

/// Adds an entry after those with as many constraints or more: more specific first, and
/// among equals the earlier route first.
fn push_ranked(entries: &mut Vec<Entry>, entry: Entry) {
    let rank = Conditions::len_of(entry.conditions.as_deref());
    let at = entries
        .iter()
        .position(|e| Conditions::len_of(e.conditions.as_deref()) < rank)
        .unwrap_or(entries.len());
    entries.insert(at, entry);
}

/// All routes of a snapshot, indexed for matching.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Node>,
    suffixes: Vec<(String, Node)>,
    any: Node,
}

impl Router {
    /// Adds route number `route`. Routes added earlier win ties of equal specificity.
    pub fn add(
        &mut self,
        route: usize,
        host: &HostPattern,
        path: &PathPattern,
        methods: Option<Vec<Method>>,
    ) {
        self.add_constrained(route, host, path, methods, None);
    }

    /// Adds a route with `match.headers`/`match.query` constraints.
    pub fn add_constrained(
        &mut self,
        route: usize,
        host: &HostPattern,
        path: &PathPattern,
        methods: Option<Vec<Method>>,
        conditions: Option<Arc<Conditions>>,
    ) {
        let node = match host {
            HostPattern::Any => &mut self.any,
            HostPattern::Exact(h) => self.exact.entry(h.clone()).or_default(),
            HostPattern::Suffix(s) => {
                let pos = self.suffixes.iter().position(|(x, _)| x == s);
                let i = match pos {
                    Some(i) => i,
                    None => {
                        self.suffixes.push((s.clone(), Node::default()));
                        self.suffixes
                            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
                        self.suffixes.iter().position(|(x, _)| x == s).unwrap_or(0)
                    }
                };
                &mut self.suffixes[i].1
            }
        };
        node.insert(
            &path.segments,
            Entry {
                route,
                methods,
                conditions,
            },
        );
    }

    /// Matches a request. `host` is lower-case without port; `segments` are the decoded path
    /// segments (`/a/b` is `["a", "b"]`, `/` is `[""]`).
    /// `req` is the request, for routes with header or query constraints.
    pub fn find(
        &self,
        host: &str,
        segments: &[&str],
        method: &Method,
        req: &RequestHeader,
    ) -> Match {
        self.search(host, segments, Some(method), Some(req))
    }

    /// Matches by host, path and method, whatever the constraints (a CORS preflight asks
    /// about a request it does not carry).
    pub fn find_path_for(&self, host: &str, segments: &[&str], method: &Method) -> Match {
        self.search(host, segments, Some(method), None)
    }

    /// Matches by host and path only: the first route there, whatever its methods and
    /// constraints.
    pub fn find_path(&self, host: &str, segments: &[&str]) -> Match {
        self.search(host, segments, None, None)
    }

    fn search(
        &self,
        host: &str,
        segments: &[&str],
        method: Option<&Method>,
        req: Option<&RequestHeader>,
    ) -> Match {
        let mut search = Search {
            method,
            req,
            params: Vec::new(),
            allow: None,
        };
        let exact = self.exact.get(host);
        let suffixes = self
            .suffixes
            .iter()
            .filter(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
            .map(|(_, n)| n);
        for node in exact
            .into_iter()
            .chain(suffixes)
            .chain(std::iter::once(&self.any))
        {
            search.params.clear();
            if let Some(route) = search.walk(node, segments) {
                let params = search.params.iter().map(|s| s.to_string()).collect();
                return Match::Found { route, params };
            }
        }
        match search.allow {
            Some(mut allow) => {
                if allow.contains(&Method::GET) && !allow.contains(&Method::HEAD) {
                    allow.push(Method::HEAD);
                }
                allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                allow.dedup();
                Match::MethodNotAllowed(allow)
            }
            None => Match::NotFound,
        }
    }
}

/// Why a request path cannot be routed.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    BadEncoding,
    DotSegment,
    NotOrigin,
}

/// Splits a raw request path (no query) into percent-decoded segments. Invalid
/// percent-encoding, invalid UTF-8 and `.`/`..` segments are refused: forwarding them would
/// let the upstream resolve a different path than the one that was authorized.
pub fn decode_segments(path: &str) -> Result<Vec<std::borrow::Cow<'_, str>>, PathError> {
    let body = path.strip_prefix('/').ok_or(PathError::NotOrigin)?;
    body.split('/')
        .map(|seg| {
            if seg == "." || seg == ".." {
                return Err(PathError::DotSegment);
            }
            let bytes = seg.as_bytes();
            // Nearly every segment has no escape: it is its own decoding.
            if memchr::memchr(b'%', bytes).is_none() {
                return Ok(std::borrow::Cow::Borrowed(seg));
            }
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let ok = bytes.len() > i + 2
                        && bytes[i + 1].is_ascii_hexdigit()
                        && bytes[i + 2].is_ascii_hexdigit();
                    if !ok {
                        return Err(PathError::BadEncoding);
                    }
                    i += 3;
                } else {
                    i += 1;
                }
            }
            let decoded = percent_encoding::percent_decode(bytes)
                .decode_utf8()
                .map_err(|_| PathError::BadEncoding)?;
            if decoded == "." || decoded == ".." {
                return Err(PathError::DotSegment);
            }
            Ok(decoded)
        })
        .collect()
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
