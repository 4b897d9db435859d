//! Path templates such as `/users/{path.id}?team={query.team}`, compiled once at load time
//! and rendered per request with every value percent-encoded for where it lands.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use std::borrow::Cow;
use std::fmt::Write;

/// Bytes escaped in a path segment: everything but RFC 3986 unreserved and sub-delims.
pub(crate) const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Bytes escaped in a query component: the segment set plus the query's own separators.
const QUERY: &AsciiSet = &SEGMENT.add(b'&').add(b'=').add(b'+').add(b';');

/// A value a template can refer to.
#[derive(Debug, Clone, PartialEq)]
pub enum Var {
    /// `{path.NAME}`, by the parameter's position in the route's path.
    Path(usize),
    Query(String),
    Header(http::HeaderName),
    Claim(String),
    ConsumerId,
    /// `{calls.NAME.FIELD}` in an aggregate call: a field (a JSON Pointer) of an earlier
    /// call's answer.
    Call {
        call: String,
        pointer: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Var { var: Var, in_query: bool },
}

/// What a template may refer to, given where it is used.
pub struct Scope<'a> {
    /// The route's path parameters, in order.
    pub path_params: &'a [String],
    /// Whether the route authenticates with JWT (claims available).
    pub claims: bool,
    /// Whether the route identifies a consumer.
    pub consumer: bool,
    /// The aggregate calls whose answers may be referred to (`{calls.NAME.FIELD}`).
    pub calls: &'a [String],
}

/// The values of one request that a template is rendered with.
pub trait Values {
    fn path_param(&self, index: usize) -> Option<&str>;
    fn query(&self, name: &str) -> Option<Cow<'_, str>>;
    fn header(&self, name: &http::HeaderName) -> Option<&str>;
    fn claim(&self, name: &str) -> Option<Cow<'_, str>>;
    fn consumer_id(&self) -> Option<&str>;
    /// A scalar at `pointer` in the answer of call `call`, as text.
    fn call_field(&self, _call: &str, _pointer: &str) -> Option<Cow<'_, str>> {
        None
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Compiles `src`; the error says what is wrong with it.
    pub fn compile(src: &str, scope: &Scope<'_>) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut in_query = false;
        let mut rest = src;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Lit(rest.to_string()));
                    break;
                }
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(format!("unmatched `}}` in template {src:?}"));
                }
                Some(i) => {
                    let lit = &rest[..i];
                    if !lit.is_empty() {
                        in_query |= lit.contains('?');
                        parts.push(Part::Lit(lit.to_string()));
                    }
                    let after = &rest[i + 1..];
                    let end = after
                        .find('}')
                        .ok_or_else(|| format!("unclosed `{{` in template {src:?}"))?;
                    let var = parse_var(&after[..end], scope)?;
                    parts.push(Part::Var { var, in_query });
                    rest = &after[end + 1..];
                }
            }
        }
        if !src.starts_with('/') {
            return Err(format!("template {src:?} must start with `/`"));
        }
        Ok(Template { parts })
    }

    /// Renders the template; a missing value renders as an empty string.
    pub fn render(&self, values: &dyn Values) -> String {
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var { var, in_query } => {
                    let set = if *in_query { QUERY } else { SEGMENT };
                    if let Some(v) = var_value(var, values) {
                        let _ = write!(out, "{}", utf8_percent_encode(&v, set));
                    }
                }
            }
        }
        out
    }
}

/// The value of `var` for one request, unencoded (also used by `crate::transform`).
pub(crate) fn var_value<'v>(var: &'v Var, values: &'v dyn Values) -> Option<Cow<'v, str>> {
    match var {
        Var::Path(i) => values.path_param(*i).map(Cow::Borrowed),
        Var::Query(n) => values.query(n),
        Var::Header(h) => values.header(h).map(Cow::Borrowed),
        Var::Claim(c) => values.claim(c),
        Var::ConsumerId => values.consumer_id().map(Cow::Borrowed),
        Var::Call { call, pointer } => values.call_field(call, pointer),
    }
}

pub(crate) fn parse_var(expr: &str, scope: &Scope<'_>) -> Result<Var, String> {
    let (ns, name) = expr
        .split_once('.')
        .ok_or_else(|| format!("invalid template variable {{{expr}}}: expected NAMESPACE.NAME"))?;
    if name.is_empty() {
        return Err(format!("invalid template variable {{{expr}}}: empty name"));
    }
    match ns {
        "path" => scope
            .path_params
            .iter()
            .position(|p| p == name)
            .map(Var::Path)
            .ok_or_else(|| format!("{{path.{name}}} is not a parameter of the route's path")),
        "query" => Ok(Var::Query(name.to_string())),
        "header" => http::HeaderName::from_bytes(name.as_bytes())
            .map(Var::Header)
            .map_err(|_| format!("{{header.{name}}}: invalid header name")),
        "claims" if scope.claims => Ok(Var::Claim(name.to_string())),
        "claims" => Err(format!(
            "{{claims.{name}}} needs a route authenticated with jwt"
        )),
        "consumer" if name == "id" && scope.consumer => Ok(Var::ConsumerId),
        "consumer" if name == "id" => {
            Err("{consumer.id} needs a route that identifies a consumer".to_string())
        }
        "calls" => {
            let (call, field) = name.split_once('.').unwrap_or((name, ""));
            if !scope.calls.iter().any(|c| c == call) {
                return Err(format!(
                    "{{calls.{name}}}: {call:?} is not an earlier call of this aggregate"
                ));
            }
            if field.is_empty() || field.split('.').any(str::is_empty) {
                return Err(format!("{{calls.{name}}}: expected calls.CALL.FIELD"));
            }
            let pointer = field
                .split('.')
                .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
                .collect();
            Ok(Var::Call {
                call: call.to_string(),
                pointer,
            })
        }
        _ => Err(format!(
            "unknown template variable {{{expr}}}: use path.*, query.*, header.*, claims.*, consumer.id or (in aggregate calls) calls.*"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V;
    impl Values for V {
        fn path_param(&self, i: usize) -> Option<&str> {
            ["a b/c", "42"].get(i).copied()
        }
        fn query(&self, n: &str) -> Option<Cow<'_, str>> {
            (n == "q").then_some(Cow::Borrowed("x&y=z"))
        }
        fn header(&self, _: &http::HeaderName) -> Option<&str> {
            Some("h")
        }
        fn claim(&self, _: &str) -> Option<Cow<'_, str>> {
            None
        }
        fn consumer_id(&self) -> Option<&str> {
            Some("acme")
        }
    }

    fn scope(params: &[String]) -> Scope<'_> {
        Scope {
            path_params: params,
            claims: false,
            consumer: true,
            calls: &[],
        }
    }

    #[test]
    fn renders_and_encodes() {
        let params = vec!["name".to_string(), "id".to_string()];
        let t = Template::compile(
            "/u/{path.name}/{path.id}?q={query.q}&c={consumer.id}&h={header.x-a}&m={query.missing}",
            &scope(&params),
        )
        .unwrap();
        assert_eq!(t.render(&V), "/u/a%20b%2Fc/42?q=x%26y%3Dz&c=acme&h=h&m=");
    }

    #[test]
    fn rejects_bad_templates() {
        let params = vec!["id".to_string()];
        let s = scope(&params);
        for bad in [
            "/u/{path.nope}",
            "/u/{path.id",
            "/u/path.id}",
            "/u/{weird.x}",
            "/u/{id}",
            "/u/{claims.sub}",
            "u/{path.id}",
            "/u/{query.}",
            "/u/{calls.profile.id}",
        ] {
            assert!(Template::compile(bad, &s).is_err(), "{bad} should fail");
        }
    }
}
