//! OpenAPI export: `GET /openapi.json` on the admin port of a running gateway (the
//! repository's demo policies plus a policy of this test, on free ports) and `gateway
//! openapi export` for the same configuration: concrete content, the two are equal, the
//! document follows a reload, and a standard validator (PyPI `openapi-spec-validator`,
//! installed when missing) accepts it.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, ConfigDir, Gateway};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// The version scripts/setup.sh installs.
const VALIDATOR: &str = "openapi-spec-validator==0.9.0";
const TOKEN: &str = "openapi-test-admin-token";

/// What the demo policies do not show: a host, two routes told apart by a query value, an
/// inline schema with its own `$defs`, a JWT route with its own limit.
const EXTRA: &str = r##"
routes:
  - name: hosted
    match: { host: api.example.com, path: "/t/hosted/{id}", methods: [GET] }
    auth: none
    upstream: users
  - name: version-one
    match: { path: /t/versions, methods: [GET], query: { v: "1" } }
    auth: none
    upstream: users
  - name: version-two
    match: { path: /t/versions, methods: [GET], query: { v: "2" } }
    auth: none
    upstream: orders
  - name: items
    match: { path: /t/items, methods: [POST, PUT] }
    auth: [jwt:demo]
    scopes: [items:write]
    rate_limit: { key: consumer, limits: [ { requests: 5, per: 1s, burst: 7 } ] }
    upstream: users
    request:
      schema:
        type: object
        required: [name]
        properties: { name: { $ref: "#/$defs/name" } }
        $defs: { name: { type: string, minLength: 1 } }
"##;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The repository's policies/ and [`EXTRA`], with the admin token required.
fn config() -> ConfigDir {
    let c = ConfigDir::new("", &[]);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        &c.path().join("policies"),
    );
    c.write_policy("zz-export-test.yaml", EXTRA);
    let gw = std::fs::read_to_string(c.gateway_yaml()).unwrap();
    let gw = gw.replacen(
        "admin:\n",
        "admin:\n  token_env: OPENAPI_TEST_ADMIN_TOKEN\n",
        1,
    );
    std::fs::write(c.gateway_yaml(), gw).unwrap();
    c
}

async fn fetch(gw: &Gateway) -> Value {
    let r = client()
        .get(gw.admin_url("/openapi.json"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// `python3 -m openapi_spec_validator`, installing the pinned version when it is missing.
fn validate(file: &Path) {
    let present = || {
        Command::new("python3")
            .args(["-c", "import openapi_spec_validator"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !present() {
        // Debian's own Python refuses plain pip installs (PEP 668): then the second try.
        let pip = |extra: &[&str]| {
            Command::new("python3")
                .args(["-m", "pip", "install", "--quiet"])
                .args(extra)
                .arg(VALIDATOR)
                .status()
                .is_ok_and(|s| s.success())
        };
        let installed = pip(&[]) || pip(&["--break-system-packages"]);
        assert!(
            installed && present(),
            "the OpenAPI validator is required: `python3 -m pip install {VALIDATOR}` failed \
             (or run scripts/setup.sh)"
        );
    }
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("OK"),
        "not a valid OpenAPI document:\n{text}"
    );
}

fn param<'a>(op: &'a Value, place: &str, name: &str) -> &'a Value {
    op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["in"] == place && p["name"] == name)
        .unwrap_or_else(|| panic!("no {place} parameter {name} in {op:#}"))
}

fn statuses(op: &Value) -> Vec<&str> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

fn check_content(doc: &Value) {
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = &doc["paths"];
    // Templates as written; a final /* is the rest parameter.
    let user = &paths["/v1/users/{id}"]["get"];
    assert_eq!(param(user, "path", "id")["required"], true);
    let catalog = &paths["/v1/catalog/{rest}"]["get"];
    let rest = param(catalog, "path", "rest");
    assert!(
        rest["description"]
            .as_str()
            .unwrap()
            .contains("rest of the path"),
        "{rest}"
    );
    // No methods: GET, POST, PUT, PATCH and DELETE.
    let echo: Vec<&str> = paths["/v1/echo/{rest}"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(echo, ["delete", "get", "patch", "post", "put"]);
    // Public: no security, no 401, no 429.
    assert_eq!(user["security"], json!([]));
    assert!(!statuses(user).contains(&"401") && !statuses(user).contains(&"429"));
    // Two routes on one path and method, by header: one operation, the header optional.
    assert_eq!(user["x-gateway-routes"], json!(["get-user", "get-user-v2"]));
    assert_eq!(param(user, "header", "X-Api-Version")["required"], false);
    assert!(
        !statuses(user).contains(&"404"),
        "get-user takes any request"
    );
    // By query value only: both values, required, and 404 for neither.
    let versions = &paths["/t/versions"]["get"];
    let v = param(versions, "query", "v");
    assert_eq!(v["required"], true);
    assert_eq!(v["schema"]["enum"], json!(["1", "2"]));
    assert!(statuses(versions).contains(&"404"));
    let hosted = &paths["/t/hosted/{id}"]["get"];
    assert!(hosted["description"]
        .as_str()
        .unwrap()
        .contains("api.example.com"));
    // Query validation: the query schema's properties.
    let search = &paths["/v1/users"]["get"];
    let limit = param(search, "query", "limit");
    assert_eq!(limit["required"], true);
    assert_eq!(
        limit["schema"],
        json!({"type": "integer", "minimum": 1, "maximum": 100})
    );
    assert_eq!(param(search, "query", "active")["required"], false);
    assert!(statuses(search).contains(&"400"));
    // A schema file with a $ref to another file: both components, the $ref rewritten.
    let create = &paths["/v1/orders"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/create-order"
    );
    assert_eq!(create["requestBody"]["required"], true);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["create-order"]["properties"]["sku"]["$ref"],
        "#/components/schemas/common/$defs/sku"
    );
    assert_eq!(schemas["common"]["$defs"]["sku"]["type"], "string");
    for s in ["400", "401", "413", "415", "429", "502", "503", "504"] {
        assert!(statuses(create).contains(&s), "{s} in {create:#}");
    }
    // Any one of the methods: one requirement each (the API key in header or query).
    assert_eq!(
        create["security"],
        json!([{"jwt.demo": []}, {"api_key": []}, {"api_key.query": []}])
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["jwt.demo"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": schemes["jwt.demo"]["description"]})
    );
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(
        schemes["api_key"]["name"].as_str().unwrap().to_lowercase(),
        "x-api-key"
    );
    assert_eq!(schemes["api_key.query"]["name"], "api_key");
    // Scopes in the requirement; 403 for them.
    let partner = &paths["/v1/partner/orders"]["get"];
    assert_eq!(partner["security"][0]["jwt.demo"], json!(["orders:read"]));
    assert!(statuses(partner).contains(&"403"));
    // A route limit: 429 with Retry-After and RateLimit-*, and RateLimit-* on its answers.
    let limited = &paths["/v1/limited"]["get"];
    assert_eq!(
        limited["responses"]["429"]["$ref"],
        "#/components/responses/TooManyRequests"
    );
    let too_many = &doc["components"]["responses"]["TooManyRequests"]["headers"];
    for h in [
        "Retry-After",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
    ] {
        assert!(too_many.get(h).is_some(), "{h} in {too_many}");
        assert!(limited["responses"]["default"]["headers"].get(h).is_some() || h == "Retry-After");
    }
    assert_eq!(
        doc["components"]["headers"]["Retry-After"]["schema"]["type"],
        "integer"
    );
    // The error object.
    let error = &schemas["Error"]["properties"]["error"];
    assert_eq!(
        error["required"],
        json!(["status", "code", "message", "request_id"])
    );
    // An inline schema: its own $defs reached under its component.
    let items = &paths["/t/items"]["put"];
    let body = items["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap();
    let name = body.rsplit('/').next().unwrap();
    assert_eq!(
        schemas[name]["properties"]["name"]["$ref"],
        format!("#/components/schemas/{name}/$defs/name")
    );
    assert_eq!(items["security"], json!([{"jwt.demo": ["items:write"]}]));
    assert!(statuses(items).contains(&"429") && statuses(items).contains(&"403"));
    // Webhooks, aggregates.
    let hook = &paths["/v1/webhooks/payments"]["post"];
    assert_eq!(
        hook["responses"]["401"]["$ref"],
        "#/components/responses/InvalidSignature"
    );
    let dash = &paths["/v1/dashboard"]["get"];
    assert!(dash["responses"]["200"]["headers"]
        .get("X-Gateway-Partial")
        .is_some());
    // operationIds: route names, unique.
    let mut ids: Vec<&str> = paths
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"create-order") && ids.contains(&"items.put"));
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "operationIds must be unique");
}

#[tokio::test]
async fn admin_document_equals_cli_and_validates() {
    let gw = Gateway::start_in(
        config(),
        &[
            ("OPENAPI_TEST_ADMIN_TOKEN", TOKEN),
            ("DEMO_WEBHOOK_SECRET", gateway::demo::WEBHOOK_SECRET_DEMO),
        ],
    )
    .await;
    // The admin token is honoured like on every other admin endpoint.
    let refused = client()
        .get(gw.admin_url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let wrong_method = client()
        .post(gw.admin_url("/openapi.json"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);

    let doc = fetch(&gw).await;
    check_content(&doc);

    // The command line, on the same configuration: the same document.
    let out = gw.config.path().join("exported.json");
    let status = Command::new(common::bin())
        .args(["openapi", "export", "-c"])
        .arg(gw.config.gateway_yaml())
        .arg("-o")
        .arg(&out)
        .env_remove("DEMO_WEBHOOK_SECRET")
        .status()
        .unwrap();
    assert!(status.success());
    let exported: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        exported, doc,
        "gateway openapi export differs from /openapi.json"
    );
    let stdout = Command::new(common::bin())
        .args(["openapi", "export", "-c"])
        .arg(gw.config.gateway_yaml())
        .output()
        .unwrap();
    assert!(stdout.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&stdout.stdout).unwrap(),
        doc
    );
    validate(&out);

    // The live generation: a reloaded policy set is in the next document.
    gw.config.write_policy(
        "zz-export-test.yaml",
        &EXTRA.replace("/t/hosted/{id}", "/t/moved/{key}/*"),
    );
    let r = client()
        .post(gw.admin_url("/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let next = fetch(&gw).await;
    assert!(next["paths"].get("/t/hosted/{id}").is_none());
    let moved = &next["paths"]["/t/moved/{key}/{rest}"]["get"];
    assert_eq!(param(moved, "path", "key")["required"], true);
    assert_eq!(param(moved, "path", "rest")["in"], "path");
    assert_ne!(next["info"]["version"], doc["info"]["version"]);
}

#[test]
fn export_reports_configuration_problems() {
    let c = ConfigDir::new(
        "",
        &[(
            "bad.yaml",
            "routes:\n  - name: x\n    match: { path: /x }\n",
        )],
    );
    let out = Command::new(common::bin())
        .args(["openapi", "export", "-c"])
        .arg(c.gateway_yaml())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:2"), "{err}");
    assert!(out.stdout.is_empty());
}
