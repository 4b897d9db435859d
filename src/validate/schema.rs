//! Compiling a route's JSON Schema once per load: from a file (relative to the policy
//! file) or an inline mapping; draft from `$schema` (default 2020-12); formats asserted;
//! `$ref` resolved only to files in the schema's own directory, never over the network.

use jsonschema::{Draft, Retrieve, Uri, Validator};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Resolves `file://` references inside one directory and records what it read.
struct DirRetriever {
    root: PathBuf,
    read: Arc<Mutex<Vec<PathBuf>>>,
}

impl Retrieve for DirRetriever {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.scheme().as_str() != "file" {
            return Err(format!(
                "remote $ref {} is not allowed: schemas are resolved from local files only",
                uri.as_str()
            )
            .into());
        }
        let raw = uri.path().as_str();
        let decoded = percent_encoding::percent_decode_str(raw).decode_utf8()?;
        let path = PathBuf::from(decoded.as_ref());
        let canon = path
            .canonicalize()
            .map_err(|e| format!("$ref {}: {e}", path.display()))?;
        if !canon.starts_with(&self.root) {
            return Err(
                format!("$ref {} is outside the schema's directory", path.display()).into(),
            );
        }
        let text = std::fs::read(&canon)?;
        self.read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(canon);
        Ok(serde_json::from_slice(&text)?)
    }
}

/// A compiled schema and the files it was read from.
pub struct Compiled {
    pub validator: Validator,
    pub files: Vec<PathBuf>,
}

/// Bytes escaped in a file path turned into a URI.
const PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'#')
    .add(b'?')
    .add(b'%');

fn file_uri(path: &Path) -> String {
    let encoded = percent_encoding::utf8_percent_encode(&path.to_string_lossy(), PATH).to_string();
    format!("file://{encoded}")
}

/// Compiles `source`: a path (string, relative to `dir`) or an inline schema (mapping).
pub fn compile(source: &serde_yaml::Value, dir: &Path) -> Result<Compiled, String> {
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let (schema, base, root, mut files) = match source {
        serde_yaml::Value::String(rel) => {
            let path = dir.join(rel);
            let path = path
                .canonicalize()
                .map_err(|e| format!("cannot read schema {}: {e}", path.display()))?;
            let text = std::fs::read(&path)
                .map_err(|e| format!("cannot read schema {}: {e}", path.display()))?;
            let schema: Value = serde_json::from_slice(&text)
                .or_else(|_| serde_yaml::from_slice::<Value>(&text))
                .map_err(|e| format!("schema {} is not JSON or YAML: {e}", path.display()))?;
            let root = path.parent().unwrap_or(&dir).to_path_buf();
            (schema, file_uri(&path), root, vec![path])
        }
        serde_yaml::Value::Mapping(_) => {
            let schema =
                serde_json::to_value(source).map_err(|e| format!("invalid inline schema: {e}"))?;
            (
                schema,
                file_uri(&dir.join("inline-schema.json")),
                dir.clone(),
                Vec::new(),
            )
        }
        _ => return Err("`schema` is a file path or an inline mapping".into()),
    };
    let draft = match schema.get("$schema").and_then(Value::as_str) {
        None => Draft::Draft202012,
        Some(uri) => draft_of(uri)?,
    };
    let read = Arc::new(Mutex::new(Vec::new()));
    let validator = jsonschema::options()
        .with_draft(draft)
        .should_validate_formats(true)
        .with_base_uri(base)
        .with_retriever(DirRetriever {
            root,
            read: read.clone(),
        })
        .build(&schema)
        .map_err(|e| format!("invalid schema: {e}"))?;
    files.extend(read.lock().unwrap_or_else(|e| e.into_inner()).drain(..));
    Ok(Compiled { validator, files })
}

fn draft_of(uri: &str) -> Result<Draft, String> {
    let u = uri.trim_end_matches('#').trim_end_matches('/');
    let u = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .unwrap_or(u);
    Ok(match u {
        "json-schema.org/draft/2020-12/schema" => Draft::Draft202012,
        "json-schema.org/draft/2019-09/schema" => Draft::Draft201909,
        "json-schema.org/draft-07/schema" => Draft::Draft7,
        "json-schema.org/draft-06/schema" => Draft::Draft6,
        "json-schema.org/draft-04/schema" => Draft::Draft4,
        _ => {
            return Err(format!(
                "unknown $schema {uri:?}: use a JSON Schema draft 4, 6, 7, 2019-09 or 2020-12 URI"
            ))
        }
    })
}
