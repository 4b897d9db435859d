//! `gateway openapi export [-c gateway.yaml] [-o FILE]`: the document of the configuration
//! as `gateway check` loads it (the same snapshot `gateway run` would serve).

use crate::config::Problems;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}\n{n} problem(s) found", n = .0 .0.len())]
    Config(Problems),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the document: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The document as pretty JSON, from the configuration at `config`.
pub fn export(config: &Path) -> Result<String, ExportError> {
    let (gw, store) = crate::server::check(config).map_err(ExportError::Config)?;
    let doc = super::export::document(&store.load(), &gw);
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    Ok(text)
}

/// Writes the document to `out`, or to stdout.
pub fn run(config: &Path, out: Option<&Path>) -> Result<(), ExportError> {
    let text = export(config)?;
    match out {
        Some(path) => std::fs::write(path, text).map_err(|source| ExportError::Write {
            path: path.to_path_buf(),
            source,
        }),
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|source| ExportError::Write {
                    path: "stdout".into(),
                    source,
                })
        }
    }
}

/// The command's entry point.
pub fn main(config: &Path, out: Option<&Path>) -> ExitCode {
    // The demo's webhook verifier reads its secret from the environment, as for `gateway
    // token`: the document never contains it, but the configuration must load.
    crate::demo::default_webhook_secret();
    match run(config, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway openapi export: {e}");
            ExitCode::FAILURE
        }
    }
}
