//! An operation's security requirements (its own, else the document's) as the route's
//! `auth`. The gateway has one API-key mechanism, so `apiKey` maps to `api_key` by itself;
//! bearer, OAuth2 and OpenID Connect need a JWT provider's name, which only the user
//! knows: without `--auth` such operations refuse the whole import.

use super::doc::{child, deref, escape};
use super::{AuthChoice, Note};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// What a security scheme (or a requirement of several) amounts to for the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Public,
    Jwt,
    ApiKey,
    Other(String),
}

/// The security of every operation seen so far, and what it asked of the user.
pub struct Security<'a> {
    root: &'a Value,
    /// Schemes already explained on stderr (each once, not per operation).
    explained: BTreeSet<String>,
    /// Operations that need `--auth`: "GET /pets (listPets): bearerAuth".
    pub refused: Vec<String>,
}

impl<'a> Security<'a> {
    pub fn new(root: &'a Value) -> Security<'a> {
        Security {
            root,
            explained: BTreeSet::new(),
            refused: Vec::new(),
        }
    }

    /// The route's auth and scopes, or `None` when the operation is skipped (a note or a
    /// refusal says why).
    pub fn decide(
        &mut self,
        op: &Value,
        op_ptr: &str,
        label: &str,
        forced: Option<&AuthChoice>,
        notes: &mut Vec<Note>,
    ) -> Option<(AuthChoice, Vec<String>)> {
        let (reqs, reqs_ptr) = match op.get("security") {
            Some(s) => (s, child(op_ptr, "security")),
            None => (
                self.root.get("security").unwrap_or(&Value::Null),
                "#/security".to_string(),
            ),
        };
        let empty = Map::new();
        let alts: Vec<(String, &Map<String, Value>)> = reqs
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                (
                    child(&reqs_ptr, &i.to_string()),
                    r.as_object().unwrap_or(&empty),
                )
            })
            .collect();
        let kinds: Vec<Kind> = alts
            .iter()
            .map(|(ptr, req)| self.requirement(ptr, req, notes))
            .collect();
        if let Some(choice) = forced {
            if *choice == AuthChoice::ApiKey {
                self.explain_api_keys(&alts, notes);
            }
            // OAuth2 scopes are all required, as the route's `scopes` are; with several
            // alternatives the gateway cannot say which applies, so none are taken.
            let scopes = match choice {
                AuthChoice::Jwt(_) => scopes_of(&alts, &self.jwt_names(&alts, true)),
                _ => Vec::new(),
            };
            return Some((choice.clone(), scopes));
        }
        if alts.is_empty() || kinds.contains(&Kind::Public) {
            return Some((AuthChoice::None, Vec::new()));
        }
        if kinds.contains(&Kind::Jwt) {
            let names: BTreeSet<String> = self.jwt_names(&alts, false).into_iter().collect();
            let names: Vec<String> = names.into_iter().collect();
            self.refused.push(format!("{label}: {}", names.join(", ")));
            return None;
        }
        if kinds.contains(&Kind::ApiKey) {
            self.explain_api_keys(&alts, notes);
            return Some((AuthChoice::ApiKey, Vec::new()));
        }
        let what: BTreeSet<String> = kinds
            .iter()
            .filter_map(|k| match k {
                Kind::Other(d) => Some(d.clone()),
                _ => None,
            })
            .collect();
        notes.push(Note::unsupported(
            &reqs_ptr,
            format!(
                "security {} cannot be checked by the gateway; operation skipped (pass --auth to import it)",
                what.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
        None
    }

    /// One requirement object: all its schemes together.
    fn requirement(&mut self, ptr: &str, req: &Map<String, Value>, notes: &mut Vec<Note>) -> Kind {
        if req.is_empty() {
            return Kind::Public;
        }
        if req.len() > 1 {
            notes.push(Note::unsupported(
                ptr,
                format!(
                    "requires {} together; a route checks one method",
                    req.keys().cloned().collect::<Vec<_>>().join(" and ")
                ),
            ));
        }
        let kinds: Vec<Kind> = req.keys().map(|n| self.kind(n)).collect();
        for (name, k) in req.keys().zip(&kinds) {
            if let Kind::Other(d) = k {
                let at = format!("#/components/securitySchemes/{}", escape(name));
                if self.explained.insert(format!("other:{name}")) {
                    notes.push(Note::unsupported(
                        &at,
                        format!("{d} is not a method the gateway checks"),
                    ));
                }
            }
        }
        if kinds.contains(&Kind::Jwt) {
            Kind::Jwt
        } else if kinds.iter().all(|k| *k == Kind::ApiKey) {
            Kind::ApiKey
        } else {
            kinds
                .into_iter()
                .find(|k| matches!(k, Kind::Other(_)))
                .unwrap_or(Kind::Other("an unknown scheme".into()))
        }
    }

    /// The bearer/OAuth2/OpenID Connect schemes named (with `single`, only when there is
    /// one alternative).
    fn jwt_names(&self, alts: &[(String, &Map<String, Value>)], single: bool) -> Vec<String> {
        alts.iter()
            .filter(|_| !single || alts.len() == 1)
            .flat_map(|(_, req)| req.keys().cloned())
            .filter(|n| self.kind(n) == Kind::Jwt)
            .collect()
    }

    fn scheme(&self, name: &str) -> Option<&'a Value> {
        let ptr = format!("#/components/securitySchemes/{}", escape(name));
        let v = self.root.pointer(&ptr[1..])?;
        deref(self.root, v, &ptr).ok().map(|(v, _)| v)
    }

    fn kind(&self, name: &str) -> Kind {
        let Some(s) = self.scheme(name) else {
            return Kind::Other(format!(
                "scheme {name:?} (not defined under components.securitySchemes)"
            ));
        };
        let field = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("");
        match field("type") {
            "http" if field("scheme").eq_ignore_ascii_case("bearer") => Kind::Jwt,
            "oauth2" | "openIdConnect" => Kind::Jwt,
            "apiKey" if matches!(field("in"), "header" | "query") => Kind::ApiKey,
            "apiKey" => Kind::Other(format!("an API key in a {}", field("in"))),
            "http" => Kind::Other(format!("HTTP {} authentication", field("scheme"))),
            t => Kind::Other(format!("security scheme type {t:?}")),
        }
    }

    /// Where the document's API keys travel, when that is not where the gateway looks by
    /// default (`X-API-Key`): the user sets `api_keys` in a policy file.
    fn explain_api_keys(&mut self, alts: &[(String, &Map<String, Value>)], notes: &mut Vec<Note>) {
        for name in alts.iter().flat_map(|(_, r)| r.keys()) {
            let Some(s) = self.scheme(name) else { continue };
            if s.get("type").and_then(Value::as_str) != Some("apiKey")
                || !self.explained.insert(format!("apikey:{name}"))
            {
                continue;
            }
            let key = s.get("name").and_then(Value::as_str).unwrap_or("");
            let at = format!("#/components/securitySchemes/{}", escape(name));
            match s.get("in").and_then(Value::as_str) {
                Some("header") if !key.eq_ignore_ascii_case(crate::auth::apikey::DEFAULT_HEADER) => {
                    notes.push(Note::info(
                        &at,
                        format!("API key in header {key}, not the gateway's default X-API-Key: set `api_keys: {{ header: {key} }}` in a policy file"),
                    ));
                }
                Some("query") => notes.push(Note::info(
                    &at,
                    format!("API key in query parameter {key}: set `api_keys: {{ query: {key} }}` in a policy file"),
                )),
                _ => {}
            }
        }
    }
}

/// The scopes the named schemes require in the requirements.
fn scopes_of(alts: &[(String, &Map<String, Value>)], names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, req) in alts {
        for n in names {
            for s in req.get(n).and_then(Value::as_array).into_iter().flatten() {
                if let Some(s) = s.as_str().filter(|s| !out.iter().any(|o| o == s)) {
                    out.push(s.to_string());
                }
            }
        }
    }
    out
}
