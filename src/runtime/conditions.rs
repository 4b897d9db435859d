//! `match.headers` and `match.query`: exact values a request must carry for a route to
//! match it. Among routes on the same host, path and method, one with more constraints is
//! tried first; two with as many that one request could satisfy both are refused at load
//! ([`Conditions::compatible`]).

use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    headers: Vec<(HeaderName, HeaderValue)>,
    query: Vec<(String, String)>,
}

impl Conditions {
    /// Compiles the two maps; `None` when both are empty (the route has no constraint).
    pub fn compile<'a>(
        headers: impl IntoIterator<Item = (&'a String, &'a String)>,
        query: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<Option<Conditions>, String> {
        let mut c = Conditions::default();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("match.headers: {k:?} is not a header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("match.headers.{k}: {v:?} is not a header value"))?;
            c.headers.push((name, value));
        }
        for (k, v) in query {
            if k.is_empty() {
                return Err("match.query: a parameter name is empty".into());
            }
            c.query.push((k.clone(), v.clone()));
        }
        Ok((c.count() > 0).then_some(c))
    }

    /// How many constraints: the more, the more specific the route.
    pub fn count(&self) -> usize {
        self.headers.len() + self.query.len()
    }

    pub fn matches(&self, req: &RequestHeader) -> bool {
        let headers = self.headers.iter().all(|(name, want)| {
            req.headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == want.as_bytes())
        });
        headers
            && (self.query.is_empty() || {
                let q = req.uri.query().unwrap_or_default();
                self.query.iter().all(|(name, want)| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == name.as_str())
                        .is_some_and(|(_, v)| v == want.as_str())
                })
            })
    }

    /// Whether one request could satisfy both (no constraint of one contradicts the
    /// other's). `None` stands for no constraints.
    pub fn compatible(a: Option<&Conditions>, b: Option<&Conditions>) -> bool {
        let (Some(a), Some(b)) = (a, b) else {
            return true;
        };
        let headers = a.headers.iter().all(|(n, v)| {
            b.headers
                .iter()
                .filter(|(m, _)| m == n)
                .all(|(_, w)| w == v)
        });
        let query = a
            .query
            .iter()
            .all(|(n, v)| b.query.iter().filter(|(m, _)| m == n).all(|(_, w)| w == v));
        headers && query
    }

    pub fn len_of(c: Option<&Conditions>) -> usize {
        c.map_or(0, Conditions::count)
    }
}
