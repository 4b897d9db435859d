//! Builds the identity configuration of a policy set: JWT providers (reusing the previous
//! generation's JWKS sources, with their keys, when unchanged), API keys and consumers.

use super::apikey::{self, ApiKeys};
use super::jwks::JwksSource;
use super::jwt::{Provider, ProviderParts};
use super::keys::{self, Key};
use super::{Consumer, Identities, RouteAuth};
use crate::config::policy::{AuthDef, AuthMethod, JwtProviderDef, RouteDef};
use crate::config::{PolicySet, PolicySource, Problems};
use jsonwebtoken::Algorithm;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_REFRESH: Duration = Duration::from_secs(600);
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Algorithms accepted from a JWKS when a provider lists none: every asymmetric one.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The identity part of a compiled snapshot, and the files it read.
pub struct Compiled {
    pub identities: Identities,
    pub jwks: Vec<Arc<JwksSource>>,
    pub referenced: Vec<PathBuf>,
}

fn static_key(
    src: &PolicySource,
    k: &crate::config::policy::JwtKeyDef,
    refs: &mut Vec<PathBuf>,
) -> Result<Key, String> {
    let alg = k.alg.as_deref().map(keys::parse_alg).transpose()?;
    match (&k.secret_env, &k.pem_file, &k.jwk) {
        (Some(var), None, None) => keys::from_secret_env(k.kid.clone(), alg, var),
        (None, Some(path), None) => {
            let path = src.dir().join(path);
            refs.push(path.clone());
            keys::from_pem_file(k.kid.clone(), alg, &path)
        }
        (None, None, Some(jwk)) => {
            let json = serde_json::to_value(jwk).map_err(|e| format!("invalid jwk: {e}"))?;
            let jwk = serde_json::from_value(json).map_err(|e| format!("invalid jwk: {e}"))?;
            let mut key = keys::from_jwk(&jwk, alg)?;
            if key.kid.is_none() {
                key.kid = k.kid.clone();
            }
            Ok(key)
        }
        _ => Err("a key takes exactly one of secret_env, pem_file and jwk".into()),
    }
}

fn provider(
    src: &PolicySource,
    name: &str,
    def: &JwtProviderDef,
    prev: &[Arc<JwksSource>],
    refs: &mut Vec<PathBuf>,
) -> Result<(Provider, Option<Arc<JwksSource>>), Vec<String>> {
    let mut errs = Vec::new();
    if def.issuer.trim().is_empty() {
        errs.push("`issuer` is required".to_string());
    }
    let mut static_keys = Vec::new();
    for (i, k) in def.keys.iter().enumerate() {
        match static_key(src, k, refs) {
            Ok(key) => static_keys.push(key),
            Err(e) => errs.push(format!("keys[{i}]: {e}")),
        }
    }
    let mut algorithms = Vec::new();
    for a in &def.algorithms {
        match keys::parse_alg(a) {
            Ok(a) => algorithms.push(a),
            Err(e) => errs.push(e),
        }
    }
    if def.algorithms.is_empty() {
        algorithms.extend(
            static_keys
                .iter()
                .flat_map(|k| k.algorithms.iter().copied()),
        );
        if def.jwks_url.is_some() {
            algorithms.extend(ASYMMETRIC);
        }
        algorithms.sort_by_key(|a| format!("{a:?}"));
        algorithms.dedup();
    }
    let jwks = match &def.jwks_url {
        Some(url) => {
            let ok = url.parse::<http::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !ok {
                errs.push(format!("jwks_url {url:?} is not an http(s) URL"));
            }
            let refresh = def.jwks_refresh.map_or(DEFAULT_REFRESH, |d| d.0);
            let timeout = def.jwks_timeout.map_or(DEFAULT_FETCH_TIMEOUT, |d| d.0);
            let reused = prev.iter().find(|j| j.same(url, refresh, timeout)).cloned();
            Some(reused.unwrap_or_else(|| Arc::new(JwksSource::new(url, refresh, timeout, name))))
        }
        None => None,
    };
    if static_keys.is_empty() && def.keys.is_empty() && jwks.is_none() {
        errs.push("a provider needs `keys`, a `jwks_url`, or both".into());
    }
    let mut forward_claims = Vec::new();
    for (claim, header) in &def.forward_claims {
        match http::HeaderName::from_bytes(header.as_bytes()) {
            Ok(h) => forward_claims.push((claim.clone(), h)),
            Err(_) => errs.push(format!("forward_claims: invalid header name {header:?}")),
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let p = Provider::new(ProviderParts {
        name: name.to_string(),
        issuer: def.issuer.clone(),
        audiences: def.audiences.clone(),
        algorithms,
        leeway: def.leeway.map_or(DEFAULT_LEEWAY, |d| d.0).as_secs(),
        static_keys,
        jwks: jwks.clone(),
        consumer_claim: def.consumer_claim.clone().unwrap_or_else(|| "sub".into()),
        scopes_claim: def.scopes_claim.clone().unwrap_or_else(|| "scope".into()),
        forward_claims,
    });
    Ok((p, jwks))
}

/// Builds every provider, the API-key index and the consumers.
pub fn identities(set: &PolicySet, prev: &[Arc<JwksSource>], p: &mut Problems) -> Compiled {
    let mut ids = Identities::default();
    let mut jwks: Vec<Arc<JwksSource>> = Vec::new();
    let mut refs = Vec::new();
    let mut origin: HashMap<String, &PolicySource> = HashMap::new();
    let mut api_keys_at: Option<&PolicySource> = None;
    for src in &set.sources {
        let f = &src.file;
        for (name, def) in &f.jwt_providers {
            let at = format!("jwt_providers.{name}");
            if let Some(first) = origin.insert(format!("jwt:{name}"), src) {
                p.push(src.problem(
                    &at,
                    format!(
                        "jwt provider {name:?} is defined twice (first in {})",
                        first.path.display()
                    ),
                ));
                continue;
            }
            match provider(src, name, def, prev, &mut refs) {
                Ok((prov, source)) => {
                    if let Some(s) = source {
                        if !jwks.iter().any(|j| Arc::ptr_eq(j, &s)) {
                            jwks.push(s);
                        }
                    }
                    ids.providers.insert(name.clone(), Arc::new(prov));
                }
                Err(errs) => {
                    for e in errs {
                        p.push(src.problem(&at, format!("jwt provider {name:?}: {e}")));
                    }
                }
            }
        }
        if let Some(k) = &f.api_keys {
            if let Some(first) = api_keys_at.replace(src) {
                p.push(src.problem(
                    "api_keys",
                    format!(
                        "api_keys is defined twice (first in {})",
                        first.path.display()
                    ),
                ));
            }
            let header = k.header.as_deref().unwrap_or(apikey::DEFAULT_HEADER);
            match http::HeaderName::from_bytes(header.as_bytes()) {
                Ok(h) => ids.api_keys = Some(ApiKeys::new(h, k.query.clone())),
                Err(_) => p.push(
                    src.problem("api_keys.header", format!("invalid header name {header:?}")),
                ),
            }
        }
    }
    let mut index = ids.api_keys.take().unwrap_or_else(|| {
        ApiKeys::new(http::HeaderName::from_static(apikey::DEFAULT_HEADER), None)
    });
    for src in &set.sources {
        for (id, def) in &src.file.consumers {
            let at = format!("consumers.{id}");
            if let Some(first) = origin.insert(format!("consumer:{id}"), src) {
                p.push(src.problem(
                    &at,
                    format!(
                        "consumer {id:?} is defined twice (first in {})",
                        first.path.display()
                    ),
                ));
                continue;
            }
            for (i, h) in def.api_keys.iter().enumerate() {
                match apikey::parse_hash(h) {
                    Ok(hash) => {
                        if let Some(other) = index.insert(hash, id) {
                            p.push(src.problem(
                                &format!("{at}.api_keys.{i}"),
                                format!("this key hash already belongs to consumer {other:?}"),
                            ));
                        }
                    }
                    Err(e) => p.push(src.problem(&format!("{at}.api_keys.{i}"), e)),
                }
            }
            if let Some(cc) = &def.client_cert {
                match crate::tls::client::parse_subject(&cc.subject) {
                    Ok(subject) => ids.client_certs.push((subject, id.as_str().into())),
                    Err(e) => p.push(src.problem(&format!("{at}.client_cert.subject"), e)),
                }
            }
            ids.consumers.insert(
                id.clone(),
                Consumer {
                    id: id.as_str().into(),
                    scopes: def.scopes.clone(),
                },
            );
        }
    }
    ids.api_keys = Some(index);
    super::webhooks::compile(set, &mut ids, p);
    let mut headers = vec![http::HeaderName::from_static("x-consumer-id")];
    for prov in ids.providers.values() {
        headers.extend(prov.forward_claims.iter().map(|(_, h)| h.clone()));
    }
    headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    headers.dedup();
    ids.identity_headers = headers;
    Compiled {
        identities: ids,
        jwks,
        referenced: refs,
    }
}

/// A route's `auth` and `scopes`. Errors are (field, message) pairs.
pub fn route_auth(
    def: &RouteDef,
    ids: &Identities,
    errs: &mut Vec<(&'static str, String)>,
) -> RouteAuth {
    let mut auth = RouteAuth {
        scopes: def.scopes.clone(),
        ..RouteAuth::default()
    };
    if let Some(AuthDef::AnyOf(list)) = &def.auth {
        for m in list {
            match m {
                AuthMethod::ApiKey => auth.api_key = true,
                AuthMethod::ClientCert => auth.client_cert = true,
                AuthMethod::Jwt(name) => match ids.providers.get(name) {
                    Some(p) => auth.providers.push(p.clone()),
                    None => errs.push((".auth", format!("unknown jwt provider {name:?}"))),
                },
                AuthMethod::Webhook(name) => match ids.webhooks.get(name) {
                    Some(v) => auth.webhook = Some(v.clone()),
                    None => errs.push((
                        ".auth",
                        format!(
                            "webhook verifier {name:?} is not defined (or has problems of its own)"
                        ),
                    )),
                },
            }
        }
        if auth.webhook.is_some() && list.len() > 1 {
            errs.push((
                ".auth",
                "a webhook verifier checks the request by itself: list it alone".into(),
            ));
        }
        if auth.webhook.is_some() && !def.scopes.is_empty() {
            errs.push((".scopes", "webhook routes have no scopes".into()));
        }
    }
    if auth.is_public() && !def.scopes.is_empty() {
        errs.push((
            ".scopes",
            "scopes need an authenticated route (auth is none)".into(),
        ));
    }
    auth
}
