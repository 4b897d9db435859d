//! `gateway openapi import SPEC --upstream NAME`: routes (one per operation) and request
//! schema files from an OpenAPI 3.0 or 3.1 document, YAML or JSON.
//!
//! The document is read whole into a `serde_json::Value` and walked; nothing is written
//! until every operation has been looked at, so a refusal (secured operations without
//! `--auth`) leaves no half-written output. What the gateway cannot enforce is listed on
//! stderr, one line each, with the JSON pointer of the construct.

mod doc;
mod operation;
mod params;
mod schema;
mod security;

use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

/// The command line of `gateway openapi import`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The OpenAPI 3.0 or 3.1 document (YAML or JSON).
    pub spec: PathBuf,
    /// The upstream every route goes to; define it in another policy file.
    #[arg(long)]
    pub upstream: String,
    /// The policy file to write (default: stdout).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The routes' auth: jwt:NAME, api_key or none (default: from the document's security;
    /// bearer, OAuth2 and OpenID Connect operations need this flag).
    #[arg(long)]
    pub auth: Option<String>,
    /// Where request schema files are written (default: schemas/ next to the output file,
    /// or in the current directory when writing to stdout).
    #[arg(long)]
    pub schemas_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: not UTF-8 text (invalid byte at offset {1})")]
    NotUtf8(PathBuf, usize),
    #[error("{0}: not valid YAML or JSON: {1}")]
    Parse(PathBuf, String),
    #[error("{0}: {1}")]
    Document(PathBuf, String),
    #[error("--auth {0:?}: expected jwt:NAME, api_key or none")]
    BadAuth(String),
    #[error("--upstream must name an upstream")]
    NoUpstream,
    #[error("{0}: {1}\nnothing was written")]
    NeedsAuth(PathBuf, String),
    #[error("{0}: no operation could be imported (see the lines above); nothing was written")]
    Nothing(PathBuf),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// What `--auth` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChoice {
    Jwt(String),
    ApiKey,
    None,
}

impl std::str::FromStr for AuthChoice {
    type Err = ImportError;
    fn from_str(s: &str) -> Result<AuthChoice, ImportError> {
        match s {
            "none" => Ok(AuthChoice::None),
            "api_key" => Ok(AuthChoice::ApiKey),
            _ => match s.strip_prefix("jwt:") {
                Some(name) if !name.is_empty() => Ok(AuthChoice::Jwt(name.to_string())),
                _ => Err(ImportError::BadAuth(s.to_string())),
            },
        }
    }
}

/// One line on stderr: a construct the gateway does not enforce as written, or a setting
/// the user has to make elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub pointer: String,
    pub unsupported: bool,
    pub message: String,
}

impl Note {
    pub fn unsupported(pointer: &str, message: impl Into<String>) -> Note {
        Note {
            pointer: pointer.to_string(),
            unsupported: true,
            message: message.into(),
        }
    }
    pub fn info(pointer: &str, message: impl Into<String>) -> Note {
        Note {
            pointer: pointer.to_string(),
            unsupported: false,
            message: message.into(),
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.unsupported {
            "unsupported"
        } else {
            "note"
        };
        write!(f, "{}: {kind}: {}", self.pointer, self.message)
    }
}

/// The policy file as written: field order chosen for people reading it.
#[derive(Debug, Serialize)]
pub struct PolicyOut {
    pub routes: Vec<RouteOut>,
}

#[derive(Debug, Serialize)]
pub struct RouteOut {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchOut,
    pub auth: serde_yaml::Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestOut>,
    pub upstream: String,
}

#[derive(Debug, Serialize)]
pub struct MatchOut {
    pub path: String,
    pub methods: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct RequestOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_schema: Option<String>,
}

/// The import's settings, independent of where the output goes.
pub struct Options {
    pub upstream: String,
    pub auth: Option<AuthChoice>,
    /// How a route refers to a schema file: this prefix and the file name.
    pub schema_prefix: String,
}

/// The result: routes, schema files (name, content) and the lines for stderr.
#[derive(Debug)]
pub struct Imported {
    pub policy: PolicyOut,
    pub schemas: Vec<(String, Value)>,
    pub notes: Vec<Note>,
}

/// Why a document yields nothing; the caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not an OpenAPI 3.0/3.1 document.
    Document(String),
    /// Operations declare security that needs `--auth` to map.
    NeedsAuth(String),
}

/// Imports a parsed document.
pub fn import(root: &Value, opts: &Options) -> Result<Imported, Refusal> {
    let v30 = doc::version(root).map_err(Refusal::Document)?;
    let mut ctx = operation::Ctx::new(root, v30, opts);
    let paths = root.get("paths").and_then(Value::as_object);
    for (path, item) in paths.into_iter().flatten() {
        ctx.path_item(path, item);
    }
    ctx.finish().map_err(Refusal::NeedsAuth)
}

/// Reads, imports and writes; the notes are returned for the caller to print.
pub fn run(args: &Args) -> Result<Vec<Note>, ImportError> {
    let auth = args.auth.as_deref().map(str::parse).transpose()?;
    if args.upstream.trim().is_empty() {
        return Err(ImportError::NoUpstream);
    }
    let root = doc::read(&args.spec)?;
    // Schema paths in a policy file are relative to that file: the prefix is the schema
    // directory as seen from the output file's directory.
    let base = match &args.output {
        Some(out) => out.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => PathBuf::new(),
    };
    let schemas_dir = args
        .schemas_dir
        .clone()
        .unwrap_or_else(|| base.join("schemas"));
    let opts = Options {
        upstream: args.upstream.clone(),
        auth,
        schema_prefix: reference_prefix(&base, &schemas_dir),
    };
    let spec = args.spec.clone();
    let imported = import(&root, &opts).map_err(|r| match r {
        Refusal::Document(m) => ImportError::Document(spec.clone(), m),
        Refusal::NeedsAuth(m) => ImportError::NeedsAuth(spec.clone(), m),
    })?;
    if imported.policy.routes.is_empty() {
        for n in &imported.notes {
            eprintln!("{n}");
        }
        return Err(ImportError::Nothing(spec));
    }
    write(args, &schemas_dir, &imported)?;
    Ok(imported.notes)
}

fn write(args: &Args, schemas_dir: &Path, imported: &Imported) -> Result<(), ImportError> {
    if !imported.schemas.is_empty() {
        std::fs::create_dir_all(schemas_dir)
            .map_err(|e| ImportError::Write(schemas_dir.to_path_buf(), e))?;
    }
    for (name, schema) in &imported.schemas {
        let path = schemas_dir.join(name);
        let mut text = serde_json::to_string_pretty(schema)
            .map_err(|e| ImportError::Write(path.clone(), std::io::Error::other(e)))?;
        text.push('\n');
        std::fs::write(&path, text).map_err(|e| ImportError::Write(path.clone(), e))?;
    }
    let yaml = serde_yaml::to_string(&imported.policy)
        .map_err(|e| ImportError::Write(PathBuf::from("-"), std::io::Error::other(e)))?;
    let text = format!(
        "# Imported from {} by `gateway openapi import`. The upstream {:?} is not defined\n# here: define it in another policy file.\n{yaml}",
        args.spec.display(),
        args.upstream
    );
    match &args.output {
        Some(out) => {
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| ImportError::Write(dir.into(), e))?;
            }
            std::fs::write(out, text).map_err(|e| ImportError::Write(out.clone(), e))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// `dir` as seen from `base`, with `/` separators and a trailing `/`: relative when both
/// are under one root, else absolute.
fn reference_prefix(base: &Path, dir: &Path) -> String {
    let abs = |p: &Path| {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
    };
    let (base, dir) = (abs(base), abs(dir));
    let norm = |p: &Path| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in p.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other.as_os_str().to_string_lossy().into_owned()),
            }
        }
        out
    };
    let (b, d) = (norm(&base), norm(&dir));
    let common = b.iter().zip(&d).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); b.len() - common];
    parts.extend(d[common..].iter().cloned());
    if parts.is_empty() {
        return String::new();
    }
    let mut s = parts.join("/");
    s.push('/');
    s
}

/// Entry point of the subcommand: notes on stderr, exit status.
pub fn main(args: &Args) -> ExitCode {
    match run(args) {
        Ok(notes) => {
            for n in &notes {
                eprintln!("{n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway openapi import: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_relative_to_the_output() {
        assert_eq!(
            reference_prefix(Path::new("policies"), Path::new("policies/schemas")),
            "schemas/"
        );
        assert_eq!(
            reference_prefix(Path::new("policies"), Path::new("schemas")),
            "../schemas/"
        );
        assert_eq!(reference_prefix(Path::new(""), Path::new("")), "");
    }

    #[test]
    fn a_30_document_becomes_routes_and_standalone_schemas() {
        let doc: Value = serde_json::json!({
            "openapi": "3.0.3",
            "paths": {"/a/{id}": {"put": {
                "operationId": "put a",
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}},
                "responses": {}}}},
            "components": {"schemas": {
                "A": {"type": "object", "nullable": true, "properties": {"b": {"$ref": "#/components/schemas/B"}}},
                "B": {"allOf": [{"$ref": "#/components/schemas/C"}]},
                "C": {"$ref": "#/components/schemas/B"}}}
        });
        let opts = Options {
            upstream: "up".into(),
            auth: None,
            schema_prefix: "s/".into(),
        };
        let out = import(&doc, &opts).unwrap_or_else(|e| panic!("{e:?}"));
        let r = &out.policy.routes[0];
        assert_eq!(
            (r.name.as_str(), r.matcher.path.as_str()),
            ("put-a", "/a/{id}")
        );
        assert_eq!(
            r.request.as_ref().and_then(|q| q.schema.as_deref()),
            Some("s/put-a.json")
        );
        let (file, schema) = &out.schemas[0];
        assert_eq!(file, "put-a.json");
        assert_eq!(
            schema["$defs"]["A"]["type"],
            serde_json::json!(["object", "null"])
        );
        assert_eq!(
            schema["$defs"]["B"],
            serde_json::json!({}),
            "B -> C -> B is cut"
        );
        let cyclic = out
            .notes
            .iter()
            .filter(|n| n.message.starts_with("cyclic $ref"))
            .count();
        assert_eq!(cyclic, 2, "{:?}", out.notes);
    }

    #[test]
    fn auth_flag() {
        assert_eq!("none".parse::<AuthChoice>().ok(), Some(AuthChoice::None));
        assert_eq!(
            "jwt:corp".parse::<AuthChoice>().ok(),
            Some(AuthChoice::Jwt("corp".into()))
        );
        assert!("jwt:".parse::<AuthChoice>().is_err());
        assert!("basic".parse::<AuthChoice>().is_err());
    }
}
