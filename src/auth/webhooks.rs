//! Builds the policy set's `webhook_verifiers`: the scheme and its keys checked, the
//! secrets read from the environment (a missing variable is a problem, with the file and
//! line of the verifier). Secrets never appear in a problem's text.

use super::Identities;
use crate::config::integration::WebhookVerifierDef;
use crate::config::{PolicySet, PolicySource, Problems};
use crate::webhook::{Algorithm, Encoding, HmacScheme, Scheme, Verifier};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
const MAX_TOLERANCE: Duration = Duration::from_secs(24 * 3600);

fn header(name: &str, key: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{key}`: invalid header name {name:?}"))
}

fn scheme(def: &WebhookVerifierDef) -> Result<Scheme, (&'static str, String)> {
    let hmac_only = [
        ("header", def.header.is_some()),
        ("algorithm", def.algorithm.is_some()),
        ("encoding", def.encoding.is_some()),
        ("prefix", def.prefix.is_some()),
        ("timestamp_header", def.timestamp_header.is_some()),
        ("id_header", def.id_header.is_some()),
    ];
    let fixed = |s: Scheme| match hmac_only.iter().find(|(_, set)| *set) {
        Some((key, _)) => Err((
            "scheme",
            format!(
                "`{key}` applies to scheme hmac only (scheme {:?} fixes its own)",
                def.scheme
            ),
        )),
        None => Ok(s),
    };
    match def.scheme.as_str() {
        "standard" => fixed(Scheme::Standard),
        "stripe" => fixed(Scheme::Stripe),
        "github" => fixed(Scheme::Github),
        "hmac" => {
            let name = def.header.as_deref().ok_or((
                "header",
                "scheme hmac needs `header`, where the signature is".to_string(),
            ))?;
            let alg = def.algorithm.as_deref().unwrap_or("sha256");
            let algorithm = Algorithm::from_name(alg).ok_or_else(|| {
                (
                    "algorithm",
                    format!("unknown algorithm {alg:?}: expected sha256 or sha512"),
                )
            })?;
            let enc = def.encoding.as_deref().unwrap_or("hex");
            let encoding = Encoding::from_name(enc).ok_or_else(|| {
                (
                    "encoding",
                    format!("unknown encoding {enc:?}: expected hex or base64"),
                )
            })?;
            let opt = |h: &Option<String>, key: &'static str| {
                h.as_deref()
                    .map(|n| header(n, key))
                    .transpose()
                    .map_err(|e| (key, e))
            };
            Ok(Scheme::Hmac(HmacScheme {
                header: header(name, "header").map_err(|e| ("header", e))?,
                algorithm,
                encoding,
                prefix: def.prefix.clone(),
                timestamp_header: opt(&def.timestamp_header, "timestamp_header")?,
                id_header: opt(&def.id_header, "id_header")?,
            }))
        }
        other => Err((
            "scheme",
            format!(
                "unknown scheme {other:?}: expected one of {}",
                crate::webhook::scheme_names().join(", ")
            ),
        )),
    }
}

fn verifier(name: &str, def: &WebhookVerifierDef) -> Result<Verifier, (&'static str, String)> {
    let scheme = scheme(def)?;
    let tolerance = def.tolerance.map_or(DEFAULT_TOLERANCE, |t| t.0);
    if tolerance < Duration::from_secs(1) || tolerance > MAX_TOLERANCE {
        return Err(("tolerance", "`tolerance` must be between 1s and 24h".into()));
    }
    if def.secrets_env.is_empty() {
        return Err(("secrets_env", "`secrets_env` lists no variable".into()));
    }
    let mut secrets = Vec::new();
    for var in &def.secrets_env {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => secrets.push(v),
            _ => {
                return Err((
                    "secrets_env",
                    format!("environment variable {var} is not set"),
                ))
            }
        }
    }
    Verifier::new(name, scheme, secrets, tolerance).map_err(|e| ("secrets_env", e))
}

/// Adds every verifier of the set to `ids.webhooks`.
pub fn compile(set: &PolicySet, ids: &mut Identities, p: &mut Problems) {
    let mut origin: HashMap<&str, &PolicySource> = HashMap::new();
    for src in &set.sources {
        for (name, def) in &src.file.webhook_verifiers {
            let at = format!("webhook_verifiers.{name}");
            if let Some(first) = origin.insert(name, src) {
                let first = first.path.display();
                p.push(src.problem(
                    &at,
                    format!("webhook verifier {name:?} is defined twice (first in {first})"),
                ));
                continue;
            }
            match verifier(&format!("webhook:{name}"), def) {
                Ok(v) => {
                    ids.webhooks.insert(name.clone(), Arc::new(v));
                }
                Err((key, e)) => p.push(src.problem(
                    &format!("{at}.{key}"),
                    format!("webhook verifier {name:?}: {e}"),
                )),
            }
        }
    }
}
