//! The OpenAPI 3.1 document of the live routes: `GET /openapi.json` on the admin port and
//! `gateway openapi export`. Built from a compiled snapshot (what is serving), never from
//! the files on disk, so the document always describes one generation.

use super::facts::RouteFacts;
use super::merge::{self, Part};
use super::params::{constraints, dedupe, path_parameters, query_parameters, request_body};
use super::responses::{self, Shape};
use super::schemas::{sanitize, Components};
use crate::config::policy::AuthMethod;
use crate::config::GatewayConfig;
use crate::runtime::{Route, Snapshot, Stage};
use http::Method;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// A route without `methods` is listed under these (SPEC); it takes any method.
const ANY: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Methods that carry a body the gateway may read, limit or validate.
pub(super) fn carries_body(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// One OpenAPI path for every route of the same shape (parameter names aside): the first
/// route's names are used by all, since OpenAPI forbids two templates that differ only in
/// parameter names.
pub(super) struct Template {
    pub path: String,
    /// Path parameters in order; the last is the rest when `rest` is set.
    pub params: Vec<String>,
    pub rest: bool,
}

/// The shape key and the OpenAPI path of `path` (a final `/*` becomes `{rest}`).
fn template(path: &str) -> (String, Template) {
    let segs: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let names: Vec<&str> = segs
        .iter()
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .collect();
    let mut rest_name = "rest".to_string();
    while names.contains(&rest_name.as_str()) {
        rest_name.push('_');
    }
    let (mut shape, mut out, mut params, mut rest) =
        (String::new(), String::new(), Vec::new(), false);
    for (i, s) in segs.iter().enumerate() {
        shape.push('/');
        out.push('/');
        if *s == "*" && i + 1 == segs.len() {
            shape.push('*');
            out.push_str(&format!("{{{rest_name}}}"));
            params.push(rest_name.clone());
            rest = true;
        } else if let Some(name) = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            shape.push_str("{}");
            out.push_str(s);
            params.push(name.to_string());
        } else {
            shape.push_str(s);
            out.push_str(s);
        }
    }
    (
        shape,
        Template {
            path: out,
            params,
            rest,
        },
    )
}

struct Builder<'a> {
    snap: &'a Snapshot,
    components: Components,
    schemes: BTreeMap<String, Value>,
    templates: HashMap<String, Template>,
    /// OpenAPI path -> method (lower case) -> the operations of every route there.
    paths: BTreeMap<String, BTreeMap<String, Vec<Part>>>,
    op_ids: HashMap<String, usize>,
}

/// The document for `snapshot`; `gateway` gives the listeners (`servers`).
pub fn document(snapshot: &Snapshot, gateway: &GatewayConfig) -> Value {
    let mut b = Builder {
        snap: snapshot,
        components: Components::new(),
        schemes: BTreeMap::new(),
        templates: HashMap::new(),
        paths: BTreeMap::new(),
        op_ids: HashMap::new(),
    };
    for route in &snapshot.routes {
        b.route(route);
    }
    let paths: Map<String, Value> = std::mem::take(&mut b.paths)
        .into_iter()
        .map(|(path, ops)| {
            let item: Map<String, Value> = ops
                .into_iter()
                .map(|(method, parts)| (method, merge::operations(parts)))
                .collect();
            (path, Value::Object(item))
        })
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "gateway",
            "version": snapshot.hash,
            "description": "The routes of the gateway's live policy set (its hash is the version). Every error the gateway answers itself is the JSON object `Error`; answers of the upstream services are passed through.",
        },
        "servers": servers(gateway),
        "paths": paths,
        "components": {
            "schemas": b.components.into_map(),
            "responses": responses::components(),
            "headers": responses::headers(),
            "securitySchemes": b.schemes,
        },
    })
}

/// The public listeners, as clients reach them (an unspecified bind address as localhost).
fn servers(gw: &GatewayConfig) -> Vec<Value> {
    gw.file
        .listeners
        .iter()
        .map(|l| {
            let scheme = if l.tls.is_some() { "https" } else { "http" };
            let ip = l.bind.ip();
            let host = match ip {
                _ if ip.is_unspecified() => "localhost".to_string(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                std::net::IpAddr::V4(v4) => v4.to_string(),
            };
            json!({"url": format!("{scheme}://{host}:{}", l.bind.port()), "description": l.name})
        })
        .collect()
}

impl Builder<'_> {
    fn route(&mut self, route: &Route) {
        let facts = &*route.written;
        let (shape, mine) = template(&facts.path);
        let t = self.templates.entry(shape).or_insert(mine);
        let path = t.path.clone();
        let path_params = path_parameters(t);
        let methods: Vec<Method> = facts.methods.clone().unwrap_or_else(|| ANY.to_vec());
        let listed: Vec<&Method> = methods.iter().filter(|m| key(m).is_some()).collect();
        let body = facts
            .body_schema
            .as_ref()
            .map(|s| self.components.add(s, &format!("{}.body", route.name)));
        let query = facts.query_schema.as_ref().map(|s| {
            let name = self.components.add(s, &format!("{}.query", route.name));
            query_parameters(self.components.get(&name))
        });
        let security = self.security(route, facts);
        let description = super::describe::route(self.snap, route, facts, &methods);
        for (i, m) in listed.iter().enumerate() {
            let Some(k) = key(m) else { continue };
            let id = if i == 0 {
                route.name.to_string()
            } else {
                format!("{}.{k}", route.name)
            };
            let id = self.unique(&id);
            let mut params = path_params.clone();
            params.extend(constraints(facts));
            params.extend(query.clone().unwrap_or_default());
            let idempotent = route.idempotency.as_ref().filter(|i| i.methods.contains(m));
            if let Some(idem) = idempotent {
                params.push(json!({
                    "name": idem.header_text, "in": "header", "required": idem.required,
                    "description": "Repeats of a request with this key get the first answer (`Idempotent-Replayed: true`); 1-255 visible ASCII characters.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
                }));
            }
            let reads_body = route.validation.as_ref().is_some_and(|v| v.body.is_some())
                || route.auth.webhook.is_some()
                || idempotent.is_some()
                || route.request_transform.is_some()
                || route.aggregate.as_ref().is_some_and(|a| a.forwards_body);
            let shape = Shape {
                authenticates: !route.auth.is_public() && route.auth.webhook.is_none(),
                webhook: route.auth.webhook.is_some(),
                forbids: !route.auth.scopes.is_empty() || route.traffic.ips.is_some(),
                constrained: facts.host.is_some()
                    || !facts.headers.is_empty()
                    || !facts.query.is_empty(),
                reads_body: reads_body && carries_body(m),
                carries_body: carries_body(m),
                validates: route
                    .validation
                    .as_ref()
                    .is_some_and(|v| v.query.is_some() || (v.body.is_some() && carries_body(m))),
                validates_body: body.is_some() && carries_body(m),
                idempotent: idempotent.is_some(),
                limited: route.stages.contains(&Stage::RateLimit),
                always_limited: route.rate_limit.is_some(),
                aggregate: route.aggregate.is_some(),
            };
            let mut op = Map::new();
            op.insert("operationId".into(), json!(id));
            op.insert("summary".into(), json!(route.name.to_string()));
            op.insert("description".into(), json!(description));
            op.insert("parameters".into(), Value::Array(dedupe(params)));
            if let Some(rb) = request_body(route, m, body.as_deref()) {
                op.insert("requestBody".into(), rb);
            }
            op.insert("security".into(), Value::Array(security.clone()));
            op.insert("responses".into(), Value::Object(responses::of(shape)));
            op.insert("x-gateway-route".into(), json!(route.name.to_string()));
            self.paths
                .entry(path.clone())
                .or_default()
                .entry(k.to_string())
                .or_default()
                .push(Part {
                    route: route.name.to_string(),
                    operation: op,
                });
        }
    }

    /// `id`, or `id_2`, `id_3`... when taken.
    fn unique(&mut self, id: &str) -> String {
        let n = self.op_ids.entry(id.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            return id.to_string();
        }
        let candidate = format!("{id}_{n}");
        self.unique(&candidate)
    }

    /// The route's security requirements (any one suffices), registering the schemes.
    fn security(&mut self, route: &Route, facts: &RouteFacts) -> Vec<Value> {
        let scopes = json!(route.auth.scopes);
        let ids = &self.snap.identities;
        let mut reqs = Vec::new();
        for m in &facts.auth {
            match m {
                AuthMethod::Jwt(p) => {
                    let name = format!("jwt.{}", sanitize(p));
                    let text = ids.providers.get(p.as_str()).map_or_else(String::new, |p| {
                        format!(
                            "A JWT of provider `{}` (issuer {}, audiences {:?}) in `Authorization: Bearer`.",
                            p.name, p.issuer, p.audiences
                        )
                    });
                    self.schemes.insert(
                        name.clone(),
                        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": text}),
                    );
                    reqs.push(json!({ name: scopes }));
                }
                AuthMethod::ApiKey => {
                    let keys = ids.api_keys.as_ref();
                    let header = keys.map_or("x-api-key".to_string(), |k| k.header.to_string());
                    self.schemes.insert(
                        "api_key".into(),
                        json!({"type": "apiKey", "in": "header", "name": header, "description": "An API key (the gateway holds only its SHA-256); never forwarded upstream."}),
                    );
                    reqs.push(json!({ "api_key": scopes }));
                    if let Some(q) = keys.and_then(|k| k.query.as_ref()) {
                        self.schemes.insert(
                            "api_key.query".into(),
                            json!({"type": "apiKey", "in": "query", "name": q, "description": "The API key as a query parameter instead of the header."}),
                        );
                        reqs.push(json!({ "api_key.query": scopes }));
                    }
                }
                AuthMethod::ClientCert => {
                    self.schemes.insert(
                        "client_cert".into(),
                        json!({"type": "mutualTLS", "description": "A TLS client certificate whose subject names a consumer."}),
                    );
                    reqs.push(json!({ "client_cert": scopes }));
                }
                // A signature over the body, not a credential: described on the operation.
                AuthMethod::Webhook(_) => {}
            }
        }
        reqs
    }
}

/// The OpenAPI path-item key of a method (OpenAPI 3.1 lists eight).
fn key(m: &Method) -> Option<&'static str> {
    Some(match *m {
        Method::GET => "get",
        Method::PUT => "put",
        Method::POST => "post",
        Method::DELETE => "delete",
        Method::OPTIONS => "options",
        Method::HEAD => "head",
        Method::PATCH => "patch",
        Method::TRACE => "trace",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::template;

    #[test]
    fn templates() {
        let (shape, t) = template("/v1/users/{id}/files/*");
        assert_eq!(shape, "/v1/users/{}/files/*");
        assert_eq!(t.path, "/v1/users/{id}/files/{rest}");
        assert_eq!(t.params, ["id", "rest"]);
        assert!(t.rest);
        let (_, t) = template("/a/{rest}/*");
        assert_eq!(t.path, "/a/{rest}/{rest_}");
        let (shape, t) = template("/v1/users/{uid}");
        assert_eq!((shape.as_str(), t.rest), ("/v1/users/{}", false));
    }
}
