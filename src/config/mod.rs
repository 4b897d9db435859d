//! Configuration: plain serde types for `gateway.yaml` and the policy files, loaded with
//! every problem reported as `file:line: message`. Compilation into a runtime snapshot
//! lives in `crate::runtime`.

pub mod gateway;
pub mod integration;
pub mod locate;
pub mod plans;
pub mod policy;
pub mod problem;
pub mod traffic;
pub mod values;

pub use gateway::GatewayFile;
pub use locate::Locator;
pub use policy::PolicyFile;
pub use problem::{Problem, Problems};

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `gateway.yaml`, parsed, with its location for resolving relative paths.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub path: PathBuf,
    pub file: GatewayFile,
    pub locator: Locator,
    /// `sha256:<hex>` of the file's text, to tell a real change from a touch.
    pub hash: String,
}

impl GatewayConfig {
    /// The directory relative paths in gateway.yaml are resolved against.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The policy file or directory, resolved against gateway.yaml's directory.
    pub fn policies_path(&self) -> PathBuf {
        self.dir().join(&self.file.policies)
    }

    pub fn problem(&self, at: &str, message: impl Into<String>) -> Problem {
        Problem::new(&self.path, self.locator.line(at), message)
    }
}

/// One parsed policy file.
#[derive(Debug, Clone)]
pub struct PolicySource {
    pub path: PathBuf,
    pub file: PolicyFile,
    pub locator: Locator,
}

impl PolicySource {
    pub fn problem(&self, at: &str, message: impl Into<String>) -> Problem {
        Problem::new(&self.path, self.locator.line(at), message)
    }

    /// The directory relative paths in this policy file are resolved against.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Every policy file of the set, in path order, with a hash of their contents.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub sources: Vec<PolicySource>,
    pub hash: String,
}

/// Reads and parses a YAML document into `T`, reporting problems with file and line.
fn parse_yaml<T: DeserializeOwned + Default>(
    path: &Path,
    text: &str,
) -> Result<(T, Locator), Problem> {
    if text.trim().is_empty() {
        return Ok((T::default(), Locator::default()));
    }
    match serde_yaml::from_str::<T>(text) {
        Ok(v) => Ok((v, Locator::new(text))),
        Err(e) => {
            // A syntax error found at the end of the input is marked on the line after the
            // last one; report the last line instead.
            let last = text.lines().count().max(1);
            let line = e.location().map(|l| l.line().min(last));
            // Drop serde_yaml's " at line L column C" (the line is in the prefix) but keep
            // the context of a syntax error, such as ", while parsing a flow sequence at
            // line 3 column 14": it says where an unclosed bracket was opened.
            let mut msg = e.to_string();
            if let Some(i) = msg.find(" at line ") {
                let context = msg[i..].find(", ").map(|j| msg[i + j..].to_string());
                msg.truncate(i);
                msg.push_str(&context.unwrap_or_default());
            }
            Err(Problem::new(path, line, msg))
        }
    }
}

fn read(path: &Path) -> Result<String, Problem> {
    std::fs::read_to_string(path)
        .map_err(|e| Problem::new(path, None, format!("cannot read file: {e}")))
}

/// Loads `gateway.yaml`.
pub fn load_gateway(path: &Path) -> Result<GatewayConfig, Problems> {
    let text = read(path)?;
    if text.trim().is_empty() {
        return Err(Problem::new(path, None, "file is empty: `listeners` is required").into());
    }
    let (file, locator) = parse_yaml::<Option<GatewayFile>>(path, &text)?;
    let file = file.ok_or_else(|| Problem::new(path, None, "file is empty"))?;
    let cfg = GatewayConfig {
        path: path.to_path_buf(),
        file,
        locator,
        hash: format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes()))),
    };
    let mut problems = Problems::default();
    if cfg.file.listeners.is_empty() {
        problems.push(cfg.problem("listeners", "at least one listener is required"));
    }
    let mut names = std::collections::HashSet::new();
    for (i, l) in cfg.file.listeners.iter().enumerate() {
        if !names.insert(l.name.as_str()) {
            problems.push(cfg.problem(
                &format!("listeners.{i}.name"),
                format!("listener name {:?} is used twice", l.name),
            ));
        }
    }
    if cfg.file.threads == Some(0) {
        problems.push(cfg.problem("threads", "threads must be at least 1"));
    }
    if cfg.file.cache.max_memory.0 < 64 * 1024 {
        problems.push(cfg.problem(
            "cache.max_memory",
            "cache.max_memory must be at least 64KiB (entries over it are never kept)",
        ));
    }
    problems.into_result(cfg)
}

/// The policy files under `path`: the file itself, or every `*.yaml`/`*.yml` in the
/// directory (hidden entries such as a ConfigMap's `..data` are skipped), sorted by name.
pub fn policy_files(path: &Path) -> Result<Vec<PathBuf>, Problem> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Problem::new(path, None, format!("cannot read policies: {e}")))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| Problem::new(path, None, format!("cannot list policies: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            !name.starts_with('.') && (ext == "yaml" || ext == "yml") && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Parses the text of one policy file (what a reload does for each file; also fuzzed).
pub fn parse_policy(path: &Path, text: &str) -> Result<PolicySource, Problem> {
    let (file, locator) = parse_yaml::<Option<PolicyFile>>(path, text)?;
    Ok(PolicySource {
        path: path.to_path_buf(),
        file: file.unwrap_or_default(),
        locator,
    })
}

/// Loads and parses every policy file; all parse problems are reported together.
pub fn load_policies(path: &Path) -> Result<PolicySet, Problems> {
    let files = policy_files(path)?;
    let mut problems = Problems::default();
    let mut sources = Vec::new();
    let mut hasher = Sha256::new();
    for f in files {
        let text = match read(&f) {
            Ok(t) => t,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        hasher.update(f.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        match parse_policy(&f, &text) {
            Ok(src) => sources.push(src),
            Err(p) => problems.push(p),
        }
    }
    let hash = format!("sha256:{}", hex::encode(hasher.finalize()));
    problems.into_result(PolicySet { sources, hash })
}
