//! Path items and operations as routes: the path template (checked by the router's own
//! parser), a unique name, auth, the query parameters as `request.query_schema`, the JSON
//! request body as `request.schema`.

use super::doc::{child, deref};
use super::params::{self, Param};
use super::schema::Translator;
use super::security::Security;
use super::{AuthChoice, Imported};
use super::{MatchOut, Note, Options, PolicyOut, RequestOut, RouteOut};
use crate::runtime::router::{PathPattern, Segment};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The import in progress.
pub struct Ctx<'a> {
    root: &'a Value,
    v30: bool,
    opts: &'a Options,
    security: Security<'a>,
    routes: Vec<RouteOut>,
    schemas: Vec<(String, Value)>,
    notes: Vec<Note>,
    names: BTreeSet<String>,
    /// (path shape, method) -> the route already there: one request, one route.
    shapes: HashMap<(Vec<Segment>, String), String>,
}

impl<'a> Ctx<'a> {
    pub fn new(root: &'a Value, v30: bool, opts: &'a Options) -> Ctx<'a> {
        let mut notes = Vec::new();
        for (i, s) in root
            .get("servers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let url = s.get("url").and_then(Value::as_str).unwrap_or("");
            let after_host = url
                .split_once("://")
                .map_or(url, |(_, r)| r.split_once('/').map_or("", |(_, p)| p));
            let base = url
                .strip_prefix('/')
                .unwrap_or(after_host)
                .trim_matches('/');
            if !base.is_empty() {
                notes.push(Note::info(
                    &format!("#/servers/{i}/url"),
                    format!("base path /{base} is not part of the routes' paths (add it with a rewrite if the upstream needs it)"),
                ));
            }
        }
        Ctx {
            root,
            v30,
            opts,
            security: Security::new(root),
            routes: Vec::new(),
            schemas: Vec::new(),
            notes,
            names: BTreeSet::new(),
            shapes: HashMap::new(),
        }
    }

    pub fn path_item(&mut self, path: &str, item: &'a Value) {
        let ptr = child("#/paths", path);
        let item = match deref(self.root, item, &ptr) {
            Ok((v, _)) => v,
            Err(e) => {
                return self
                    .notes
                    .push(Note::unsupported(&ptr, format!("{e}; path skipped")))
            }
        };
        let route_path = router_path(path);
        let pattern = match PathPattern::parse(&route_path) {
            Ok(p) => p,
            Err(e) => {
                return self.notes.push(Note::unsupported(
                    &ptr,
                    format!("{e} (the router takes a `{{param}}` only as a whole segment); its operations are skipped"),
                ))
            }
        };
        let shape: Vec<Segment> = pattern
            .segments
            .into_iter()
            .map(|s| match s {
                Segment::Param(_) => Segment::Param(String::new()),
                s => s,
            })
            .collect();
        let common = params::collect(
            self.root,
            item.get("parameters"),
            &child(&ptr, "parameters"),
            &mut self.notes,
        );
        for m in METHODS {
            if let Some(op) = item.get(m) {
                let op_ptr = child(&ptr, m);
                let key = (shape.clone(), m.to_ascii_uppercase());
                if let Some(other) = self.shapes.get(&key) {
                    let msg =
                        format!("matches the same requests as route {other:?}; operation skipped");
                    self.notes.push(Note::unsupported(&op_ptr, msg));
                    continue;
                }
                if let Some(name) = self.operation(path, &route_path, m, op, &op_ptr, &common) {
                    self.shapes.insert(key, name);
                }
            }
        }
    }

    /// One route, or `None` when the operation is skipped or refused.
    fn operation(
        &mut self,
        path: &str,
        route_path: &str,
        method: &str,
        op: &'a Value,
        op_ptr: &str,
        common: &[Param<'a>],
    ) -> Option<String> {
        let op_id = op.get("operationId").and_then(Value::as_str);
        let upper = method.to_ascii_uppercase();
        let label = match op_id {
            Some(id) => format!("{upper} {path} ({id})"),
            None => format!("{upper} {path}"),
        };
        let (auth, scopes) =
            self.security
                .decide(op, op_ptr, &label, self.opts.auth.as_ref(), &mut self.notes)?;
        let name = self.unique_name(op_id, method, path);
        // Operation parameters override the path item's of the same name and location.
        let mut params = params::collect(
            self.root,
            op.get("parameters"),
            &child(op_ptr, "parameters"),
            &mut self.notes,
        );
        for c in common {
            if !params
                .iter()
                .any(|p| p.field("name") == c.field("name") && p.field("in") == c.field("in"))
            {
                params.push(Param {
                    ptr: c.ptr.clone(),
                    v: c.v,
                });
            }
        }
        let mut request = RequestOut {
            schema: self.body(op, op_ptr, &name),
            query_schema: params::query_schema(self.root, self.v30, &params, &mut self.notes)
                .and_then(|q| {
                    self.file(
                        format!("{name}.query.json"),
                        q,
                        &child(op_ptr, "parameters"),
                    )
                }),
        };
        params::not_enforced(&params, &mut self.notes);
        if request.schema.is_none() && request.query_schema.is_none() {
            request = RequestOut::default();
        }
        let has_request = request.schema.is_some() || request.query_schema.is_some();
        self.routes.push(RouteOut {
            name: name.clone(),
            matcher: MatchOut {
                path: route_path.to_string(),
                methods: vec![upper],
            },
            auth: match auth {
                AuthChoice::None => serde_yaml::Value::from("none"),
                AuthChoice::ApiKey => serde_yaml::Value::Sequence(vec!["api_key".into()]),
                AuthChoice::Jwt(p) => serde_yaml::Value::Sequence(vec![format!("jwt:{p}").into()]),
            },
            scopes,
            request: has_request.then_some(request),
            upstream: self.opts.upstream.clone(),
        });
        Some(name)
    }

    /// The JSON request body's schema as a file (`request.schema`).
    fn body(&mut self, op: &'a Value, op_ptr: &str, name: &str) -> Option<String> {
        let bptr = child(op_ptr, "requestBody");
        let (rb, _) = match deref(self.root, op.get("requestBody")?, &bptr) {
            Ok(r) => r,
            Err(e) => {
                self.notes
                    .push(Note::unsupported(&bptr, format!("{e}; body not validated")));
                return None;
            }
        };
        let cptr = child(&bptr, "content");
        let mut json: Vec<(String, &Value)> = Vec::new();
        let mut others = 0;
        for (mt, media) in rb
            .get("content")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let at = child(&cptr, mt);
            if is_json(mt) {
                json.push((at, media));
            } else {
                others += 1;
                self.notes.push(Note::unsupported(
                    &at,
                    "only application/json request bodies become schemas",
                ));
            }
        }
        let (mptr, media) = json.first()?;
        if others > 0 {
            self.notes.push(Note::unsupported(mptr, "not enforced: the operation also takes other media types, which a route with a schema refuses (415)"));
            return None;
        }
        let schema = media.get("schema")?;
        for (other, m) in &json[1..] {
            if m.get("schema") != Some(schema) {
                self.notes.push(Note::unsupported(
                    other,
                    "a second JSON media type with another schema; the first one is enforced",
                ));
            }
        }
        if rb.get("required") == Some(&Value::Bool(false)) {
            self.notes.push(Note::unsupported(
                &bptr,
                "an optional body: a route with a schema requires one",
            ));
        }
        let mut t = Translator::new(self.root, self.v30);
        let s = t.translate(schema, &child(mptr, "schema"));
        let (s, notes) = t.finish(s);
        self.notes.extend(notes);
        self.file(format!("{name}.json"), s, &child(mptr, "schema"))
    }

    /// Keeps a schema file if the gateway compiles it (so the output passes `gateway
    /// check`); returns how the route refers to it.
    fn file(&mut self, file: String, schema: Value, at: &str) -> Option<String> {
        let compiled = serde_yaml::to_value(&schema)
            .map_err(|e| e.to_string())
            .and_then(|y| {
                crate::validate::schema::compile(&y, std::path::Path::new(".")).map(|_| ())
            });
        if let Err(e) = compiled {
            self.notes.push(Note::unsupported(
                at,
                format!("the translated schema does not compile ({e}); not enforced"),
            ));
            return None;
        }
        let reference = format!("{}{file}", self.opts.schema_prefix);
        self.schemas.push((file, schema));
        Some(reference)
    }

    fn unique_name(&mut self, op_id: Option<&str>, method: &str, path: &str) -> String {
        let base = op_id
            .map(sanitize)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| sanitize(&format!("{method}-{path}")));
        let base = if base.is_empty() {
            method.to_string()
        } else {
            base
        };
        let mut name = base.clone();
        let mut i = 2;
        while self.names.contains(&name) {
            name = format!("{base}-{i}");
            i += 1;
        }
        self.names.insert(name.clone());
        name
    }

    pub fn finish(self) -> Result<Imported, String> {
        if !self.security.refused.is_empty() {
            let n = self.security.refused.len();
            let mut msg = format!(
                "{n} operation(s) declare bearer, OAuth2 or OpenID Connect security, which needs a JWT provider of the gateway: pass --auth jwt:PROVIDER (or --auth api_key, or --auth none to make them public)"
            );
            for r in self.security.refused.iter().take(10) {
                msg.push_str("\n  ");
                msg.push_str(r);
            }
            if n > 10 {
                msg.push_str(&format!("\n  ... and {} more", n - 10));
            }
            return Err(msg);
        }
        // A path item's parameter is seen once per operation; say it once.
        let mut notes: Vec<Note> = Vec::new();
        for n in self.notes {
            if !notes.contains(&n) {
                notes.push(n);
            }
        }
        Ok(Imported {
            policy: PolicyOut {
                routes: self.routes,
            },
            schemas: self.schemas,
            notes,
        })
    }
}

fn is_json(media_type: &str) -> bool {
    let mt = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mt == "application/json" || (mt.starts_with("application/") && mt.ends_with("+json"))
}

/// The path with parameter names the router accepts (letters, digits, `_`): names do not
/// change what a route matches, and the upstream gets the path as requested.
fn router_path(path: &str) -> String {
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if !name.contains(['{', '}']) => format!(
                    "{{{}}}",
                    name.chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect::<String>()
                ),
                _ => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// A route name from an operationId or method and path: letters, digits, `_`, `-`, `.`.
fn sanitize(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '_' | '.') {
            c
        } else {
            '-'
        };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.trim_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(sanitize("get-/pets/{petId}"), "get-pets-petId");
        assert_eq!(sanitize("List Pets!"), "List-Pets");
        assert_eq!(router_path("/pets/{pet-id}/x"), "/pets/{pet_id}/x");
        assert_eq!(router_path("/files/{name}.json"), "/files/{name}.json");
        assert!(is_json("application/merge-patch+json; charset=utf-8"));
        assert!(!is_json("multipart/form-data"));
    }
}
