//! What the OpenAPI export needs of a route that its compiled form does not keep: the path
//! template and match as written, the auth list in its order, and the JSON of its schemas
//! together with the files they `$ref`. Taken when the route is compiled, so the document
//! describes the generation that is live rather than the files as they are now; the
//! request path never reads it.

use crate::config::policy::{AuthDef, AuthMethod, RouteDef};
use crate::config::PolicySource;
use http::Method;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct RouteFacts {
    pub host: Option<String>,
    /// `match.path` as written: `/v1/users/{id}`, `/v1/catalog/*`.
    pub path: String,
    /// `None`: any method.
    pub methods: Option<Vec<Method>>,
    /// `match.headers` and `match.query`: exact values the request must carry.
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    /// Any one suffices; empty for `auth: none`.
    pub auth: Vec<AuthMethod>,
    pub body_schema: Option<Arc<SchemaSource>>,
    pub query_schema: Option<Arc<SchemaSource>>,
}

/// A JSON Schema as the route compiled it, with every local file it refers to.
#[derive(Debug, Clone, Default)]
pub struct SchemaSource {
    pub root: Value,
    /// The root's file (canonical); `None` for an inline schema.
    pub file: Option<PathBuf>,
    /// The directory relative `$ref`s of the root resolve against.
    pub dir: PathBuf,
    /// Every file reached through `$ref`, by canonical path.
    pub files: BTreeMap<PathBuf, Value>,
}

impl RouteFacts {
    /// Called once per compiled route (after its schemas compiled, so the files exist).
    pub fn of(src: &PolicySource, def: &RouteDef) -> RouteFacts {
        let m = &def.matcher;
        let request = def.request.as_ref();
        let load = |s: Option<&serde_yaml::Value>| {
            s.and_then(|s| SchemaSource::load(s, src.dir()).map(Arc::new))
        };
        RouteFacts {
            host: m.host.clone(),
            path: m.path.clone(),
            methods: m
                .methods
                .as_ref()
                .map(|ms| ms.iter().map(|x| x.0.clone()).collect()),
            headers: pairs(&m.headers),
            query: pairs(&m.query),
            auth: match &def.auth {
                Some(AuthDef::AnyOf(list)) => list.clone(),
                _ => Vec::new(),
            },
            body_schema: load(request.and_then(|r| r.schema.as_ref())),
            query_schema: load(request.and_then(|r| r.query_schema.as_ref())),
        }
    }
}

fn pairs(m: &indexmap::IndexMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn read(path: &Path) -> Option<Value> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text)
        .or_else(|_| serde_yaml::from_slice(&text))
        .ok()
}

impl SchemaSource {
    /// `source` as `validate::schema::compile` takes it: a file relative to `dir`, or an
    /// inline mapping. `None` when it cannot be read (the validator refused it already).
    fn load(source: &serde_yaml::Value, dir: &Path) -> Option<SchemaSource> {
        let dir = dir.canonicalize().ok()?;
        let mut s = match source {
            serde_yaml::Value::String(rel) => {
                let file = dir.join(rel).canonicalize().ok()?;
                SchemaSource {
                    root: read(&file)?,
                    dir: file.parent().unwrap_or(&dir).to_path_buf(),
                    file: Some(file),
                    files: BTreeMap::new(),
                }
            }
            other => SchemaSource {
                root: serde_json::to_value(other).ok()?,
                file: None,
                dir,
                files: BTreeMap::new(),
            },
        };
        let (root, dir) = (s.root.clone(), s.dir.clone());
        s.collect(&root, &dir);
        Some(s)
    }

    /// Reads every file `value` refers to, and the files those refer to, once each.
    fn collect(&mut self, value: &Value, dir: &Path) {
        let mut refs = Vec::new();
        file_refs(value, &mut refs);
        for r in refs {
            let Some(path) = resolve(dir, &r) else {
                continue;
            };
            // The validator refused anything outside the schema's directory; so does this.
            if !path.starts_with(&self.dir)
                || self.files.contains_key(&path)
                || Some(&path) == self.file.as_ref()
            {
                continue;
            }
            let Some(doc) = read(&path) else { continue };
            self.files.insert(path.clone(), doc.clone());
            let next = path.parent().unwrap_or(dir).to_path_buf();
            self.collect(&doc, &next);
        }
    }
}

/// The file part of a `$ref` (`common.json` of `common.json#/$defs/sku`) resolved against
/// `dir`, canonical; `None` for a reference within the document or a URI with a scheme.
pub fn resolve(dir: &Path, reference: &str) -> Option<PathBuf> {
    let file = reference.split('#').next().unwrap_or("");
    if file.is_empty() || file.contains("://") {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(file)
        .decode_utf8()
        .ok()?;
    dir.join(decoded.as_ref()).canonicalize().ok()
}

/// Every `$ref` string in `value` that names another file.
fn file_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) if !r.starts_with('#') => out.push(r.clone()),
                    _ => file_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| file_refs(v, out)),
        _ => {}
    }
}
