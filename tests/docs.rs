//! The configuration reference (docs/configuration.md) against the configuration types:
//! every field of every serde type in src/config/{gateway,policy}.rs is documented, and
//! every example policy and gateway.yaml in the repository passes `gateway check`.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `(struct, field)` for every `pub` field of every `pub struct` in `file`, under its serde
/// name (`#[serde(rename = "...")]` honoured).
fn fields(file: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join(file)).expect("read source");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut rename: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("pub struct ") {
            current = rest
                .split([' ', '{', '('])
                .next()
                .filter(|_| line.ends_with('{'))
                .map(str::to_string);
        } else if line == "}" {
            current = None;
        } else if let Some(r) = line
            .strip_prefix("#[serde(rename = \"")
            .and_then(|r| r.split('"').next())
        {
            rename = Some(r.to_string());
        } else if let (Some(s), Some(rest)) = (&current, line.strip_prefix("pub ")) {
            if let Some((name, _)) = rest.split_once(':') {
                let name = rename.take().unwrap_or_else(|| name.trim().to_string());
                out.push((s.clone(), name));
            }
        } else if !line.starts_with("#[") && !line.starts_with("///") {
            rename = None;
        }
    }
    out
}

#[test]
fn every_configuration_field_is_documented() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).expect("read doc");
    let mut missing = Vec::new();
    let mut seen = 0;
    for file in [
        "src/config/gateway.rs",
        "src/config/policy.rs",
        "src/config/integration.rs",
        "src/config/plans.rs",
        "src/config/traffic.rs",
    ] {
        for (s, f) in fields(file) {
            seen += 1;
            // Internal structs of the parser, not keys a user writes.
            if matches!(s.as_str(), "PolicySet" | "PolicySource" | "GatewayConfig") {
                continue;
            }
            let documented = [
                format!("`{f}`"),
                format!("`{f}."),
                format!(".{f}`"),
                format!(".{f}."),
                format!("`{f}[]"),
                format!(".{f}[]"),
                format!("### {f}"),
                format!("{{{f},"),
                format!(", {f}"),
            ]
            .iter()
            .any(|p| doc.contains(p.as_str()));
            if !documented {
                missing.push(format!("{s}.{f} ({file})"));
            }
        }
    }
    assert!(
        seen > 40,
        "the field scan found only {seen} fields: the scanner is broken"
    );
    assert!(
        missing.is_empty(),
        "undocumented keys in docs/configuration.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_scanner_sees_renames_and_structs() {
    let f = fields("src/config/policy.rs");
    assert!(
        f.contains(&("RouteDef".into(), "match".into())),
        "rename honoured"
    );
    assert!(f.contains(&("UpstreamDef".into(), "targets".into())));
    assert!(!f.iter().any(|(_, n)| n == "matcher"));
}

#[test]
fn the_repository_configuration_passes_check() {
    // The demo webhook verifier's secret, as `gateway demo` sets it.
    let out = Command::new(common::bin())
        .args(["check", "-c"])
        .arg(root().join("gateway.yaml"))
        .env(
            "DEMO_WEBHOOK_SECRET",
            "whsec_ZGVtby1vbmx5LXdlYmhvb2stc2VjcmV0LWNoYW5nZS1tZQ==",
        )
        .output()
        .expect("run gateway check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok:"), "{text}");
    assert!(
        !text.contains("warning: certificate"),
        "the demo certificate should not be close to expiry: {text}"
    );
    // The one expected warning: the demo's response transform has no schema to be
    // checked against.
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("warning")).collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("response.transform is not checked"),
        "{text}"
    );
}
