//! Route schemas as component schemas: each schema file once (named after the file), each
//! inline schema under its route's name, with every `$ref` rewritten to point into
//! `#/components/schemas`. A schema's own `#/$defs/x`, or `common.json#/$defs/sku`, means
//! nothing once the schema sits inside another document.

use super::facts::{resolve, SchemaSource};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The error object's component name (reserved).
pub const ERROR: &str = "Error";

#[derive(Default)]
pub struct Components {
    schemas: Map<String, Value>,
    taken: BTreeSet<String>,
    by_file: BTreeMap<PathBuf, String>,
}

/// `[A-Za-z0-9._-]` as OpenAPI allows in a component name; anything else becomes `_`.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Components {
    pub fn new() -> Components {
        let mut c = Components::default();
        c.taken.insert(ERROR.into());
        c.schemas
            .insert(ERROR.into(), super::responses::error_schema());
        c
    }

    /// A free component name close to `wanted`.
    fn claim(&mut self, wanted: &str) -> String {
        let base = sanitize(wanted);
        let mut name = base.clone();
        let mut n = 2;
        while self.taken.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    /// Registers `s` and the files it reaches (each file only once across routes);
    /// returns the component name of its root. `inline` names an inline schema.
    pub fn add(&mut self, s: &SchemaSource, inline: &str) -> String {
        if let Some(name) = s.file.as_ref().and_then(|f| self.by_file.get(f)) {
            return name.clone();
        }
        let root = match &s.file {
            Some(f) => {
                let name = self.claim(&stem(f));
                self.by_file.insert(f.clone(), name.clone());
                name
            }
            None => self.claim(inline),
        };
        let mut fresh = Vec::new();
        for path in s.files.keys() {
            if !self.by_file.contains_key(path) {
                let name = self.claim(&stem(path));
                self.by_file.insert(path.clone(), name.clone());
                fresh.push((path, name));
            }
        }
        let value = self.rewrite(&s.root, &root, &s.dir);
        self.schemas.insert(root.clone(), value);
        for (path, name) in fresh {
            let dir = path.parent().unwrap_or(&s.dir);
            let value = s
                .files
                .get(path)
                .map(|doc| self.rewrite(doc, &name, dir))
                .unwrap_or_default();
            self.schemas.insert(name, value);
        }
        root
    }

    /// A registered component, as it appears in the document.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.schemas.get(name)
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.schemas
    }

    /// `doc` (the document named `own`, whose relative references resolve against `dir`)
    /// with its references pointing into the components. Its root `$id` goes: it would
    /// make `#/components/...` resolve against another base. `$schema` stays unless it is
    /// 2020-12, the document's default dialect.
    fn rewrite(&self, doc: &Value, own: &str, dir: &Path) -> Value {
        let mut out = self.refs(doc, own, dir);
        if let Value::Object(map) = &mut out {
            map.remove("$id");
            let default_dialect = map
                .get("$schema")
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains("2020-12"));
            if default_dialect {
                map.remove("$schema");
            }
        }
        out
    }

    fn refs(&self, v: &Value, own: &str, dir: &Path) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => {
                            (k.clone(), Value::String(self.target(r, own, dir)))
                        }
                        _ => (k.clone(), self.refs(v, own, dir)),
                    })
                    .collect(),
            ),
            Value::Array(items) => {
                Value::Array(items.iter().map(|x| self.refs(x, own, dir)).collect())
            }
            other => other.clone(),
        }
    }

    /// Where the reference `r`, written in document `own`, points in the bundle.
    fn target(&self, r: &str, own: &str, dir: &Path) -> String {
        let (file, fragment) = r.split_once('#').unwrap_or((r, ""));
        let name = if file.is_empty() {
            own
        } else {
            match resolve(dir, r).and_then(|p| self.by_file.get(&p)) {
                Some(n) => n.as_str(),
                // Not a local file (a URI, an anchor the bundle cannot follow): as written.
                None => return r.to_string(),
            }
        };
        if fragment.is_empty() || fragment.starts_with('/') {
            format!("#/components/schemas/{name}{fragment}")
        } else {
            r.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_become_components_and_refs_follow() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        let common = json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"type": "string"}}});
        std::fs::write(d.join("common.json"), common.to_string()).unwrap();
        let root = json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
            "properties": {"x": {"$ref": "common.json#/$defs/a"}, "y": {"$ref": "#/$defs/c"}},
            "$defs": {"c": {"type": "integer"}}});
        let src = SchemaSource {
            root,
            file: None,
            dir: d.clone(),
            files: [(d.join("common.json"), common)].into(),
        };
        let mut c = Components::new();
        let name = c.add(&src, "route one.body");
        assert_eq!(name, "route_one.body");
        let doc = c.get(&name).unwrap();
        assert!(doc.get("$schema").is_none());
        assert_eq!(
            doc["properties"]["x"]["$ref"],
            "#/components/schemas/common/$defs/a"
        );
        assert_eq!(
            doc["properties"]["y"]["$ref"],
            format!("#/components/schemas/{name}/$defs/c")
        );
        assert_eq!(
            c.get("common").unwrap()["$defs"]["a"]["$ref"],
            "#/components/schemas/common/$defs/b"
        );
        // A second route on the same file reuses its component; names never clash.
        assert_eq!(c.add(&src, "route one.body"), "route_one.body_2");
        assert!(c.get("common_2").is_none());
        assert_eq!(c.claim("Error"), "Error_2");
    }
}
