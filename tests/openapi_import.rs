//! `gateway openapi import` through the real binary: fixtures in tests/fixtures/openapi/
//! imported next to a gateway.yaml and a policy file defining the upstream, then
//! `gateway check`, the unsupported constructs on stderr, the refusal without `--auth`,
//! hostile input, and the imported routes serving (and validating) real requests.

// Test code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, ConfigDir, Gateway, Upstream};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KEY: &str = "test-only-openapi-import-key";
const JWT_ENV: (&str, &str) = (
    "OPENAPI_IMPORT_TEST_SECRET",
    "test-only-openapi-import-secret-0123456789",
);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openapi")
        .join(name)
}

/// The policy file the import does not write: the upstream, a consumer with an API key,
/// and a JWT provider for `--auth jwt:corp`.
fn base_policy(target: &str) -> String {
    let hash = hex::encode(Sha256::digest(KEY.as_bytes()));
    format!(
        r#"upstreams:
  pets: {{ targets: ["{target}"] }}
  orders: {{ targets: ["{target}"] }}
jwt_providers:
  corp:
    issuer: "https://id.test/"
    audiences: [api]
    algorithms: [HS256]
    keys: [ {{ kid: k1, alg: HS256, secret_env: {} }} ]
consumers:
  acme: {{ api_keys: ["sha256:{hash}"] }}
"#,
        JWT_ENV.0
    )
}

fn import(args: &[&str], cwd: &Path) -> Output {
    Command::new(common::bin())
        .args(["openapi", "import"])
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run gateway openapi import")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `gateway check -c gateway.yaml` with the JWT secret set: (success, output).
fn check(config: &ConfigDir) -> (bool, String) {
    let out = Command::new(common::bin())
        .args(["check", "-c"])
        .arg(config.gateway_yaml())
        .env(JWT_ENV.0, JWT_ENV.1)
        .output()
        .expect("run gateway check");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    (out.status.success(), text)
}

/// Imports `fixture` into `policies/<out>` of a fresh configuration.
fn imported(fixture_name: &str, out: &str, extra: &[&str]) -> (ConfigDir, Output) {
    let config = ConfigDir::new("", &[("base.yaml", &base_policy("127.0.0.1:9"))]);
    let spec = fixture(fixture_name);
    let target = config.path().join("policies").join(out);
    let mut args = vec![spec.to_str().unwrap(), "-o", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = import(&args, config.path());
    (config, o)
}

#[test]
fn petstore_30_imports_and_passes_check() {
    let (config, o) = imported("petstore-3.0.yaml", "pets.yaml", &["--upstream", "pets"]);
    let err = stderr(&o);
    assert!(o.status.success(), "import failed: {err}");
    let policy = std::fs::read_to_string(config.path().join("policies/pets.yaml")).unwrap();
    let doc: Value = serde_yaml::from_str(&policy).unwrap();
    let routes = doc["routes"].as_array().unwrap();
    let names: Vec<&str> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "create-category",
            "listPets",
            "createPet",
            "showPetById",
            "delete-pets-petId"
        ]
    );
    let create = &routes[2];
    assert_eq!(
        create["match"],
        json!({"path": "/pets", "methods": ["POST"]})
    );
    assert_eq!(
        create["auth"],
        json!(["api_key"]),
        "from the document's apiKey security"
    );
    assert_eq!(create["upstream"], "pets");
    assert_eq!(create["request"]["schema"], "schemas/createPet.json");
    assert_eq!(routes[1]["auth"], "none", "security: [] is public");
    assert_eq!(
        routes[1]["request"]["query_schema"],
        "schemas/listPets.query.json"
    );
    assert_eq!(routes[3]["match"]["path"], "/pets/{petId}");

    // The body schema stands alone: components as $defs, 3.0 translated.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(config.path().join("policies/schemas/createPet.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(schema["$ref"], "#/$defs/Pet");
    let pet = &schema["$defs"]["Pet"];
    assert_eq!(pet["properties"]["tag"]["type"], json!(["string", "null"]));
    assert_eq!(pet["properties"]["age"]["exclusiveMinimum"], 0);
    assert!(pet["properties"]["age"].get("minimum").is_none());
    assert!(pet["properties"]["name"].get("example").is_none());
    assert_eq!(
        pet["required"],
        json!(["name"]),
        "readOnly id is not required in a request"
    );
    assert_eq!(schema["$defs"]["Owner"]["type"], json!(["object", "null"]));
    assert!(!schema.to_string().contains("x-vendor"));

    // The path parameter's type is listed as not enforced, once.
    let line =
        "#/paths/~1pets~1{petId}/parameters/0: unsupported: the schema of path parameter \"petId\"";
    assert_eq!(err.matches(line).count(), 1, "stderr: {err}");
    let (ok, text) = check(&config);
    assert!(ok, "gateway check failed:\n{text}\n{policy}");
}

#[test]
fn bearer_security_needs_auth_and_nothing_is_written() {
    let (config, o) = imported("orders-3.1.json", "orders.yaml", &["--upstream", "orders"]);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "bearer security without --auth must be refused"
    );
    assert!(err.contains("orders-3.1.json"), "names the file: {err}");
    assert!(
        err.contains("--auth jwt:PROVIDER"),
        "tells what to pass: {err}"
    );
    assert!(err.contains("POST /orders (createOrder): bearer"), "{err}");
    assert!(!config.path().join("policies/orders.yaml").exists());
    assert!(!config.path().join("policies/schemas").exists());
}

#[test]
fn openapi_31_with_auth_imports_and_passes_check() {
    let (config, o) = imported(
        "orders-3.1.json",
        "orders.yaml",
        &["--upstream", "orders", "--auth", "jwt:corp"],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "import failed: {err}");
    assert!(
        err.contains("#/servers/0/url: note: base path /v2"),
        "{err}"
    );
    let doc: Value = serde_yaml::from_str(
        &std::fs::read_to_string(config.path().join("policies/orders.yaml")).unwrap(),
    )
    .unwrap();
    let create = doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "createOrder")
        .unwrap();
    assert_eq!(create["auth"], json!(["jwt:corp"]));
    assert_eq!(create["scopes"], json!(["orders:write"]));
    let get = doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "getOrder")
        .unwrap();
    assert_eq!(
        get["match"]["path"], "/orders/{order_id}",
        "parameter renamed for the router"
    );
    let q: Value = serde_json::from_str(
        &std::fs::read_to_string(config.path().join("policies/schemas/getOrder.query.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        q["properties"]["expand"]["type"], "boolean",
        "null dropped: a query value is never null"
    );
    let (ok, text) = check(&config);
    assert!(ok, "gateway check failed:\n{text}");
}

#[test]
fn unsupported_constructs_are_listed_and_the_rest_passes_check() {
    let (config, o) = imported("unsupported-3.0.yaml", "odd.yaml", &["--upstream", "pets"]);
    let err = stderr(&o);
    assert!(o.status.success(), "import failed: {err}");
    for line in [
        "#/paths/~1upload/post/requestBody/content/multipart~1form-data: unsupported: only application/json request bodies become schemas",
        "#/paths/~1session/get/parameters/0: unsupported: cookie parameter \"sid\" is not enforced",
        "#/paths/~1session/get/parameters/1: unsupported: header parameter \"X-Trace\" is not enforced",
        "#/paths/~1session/get/parameters/2: unsupported: query parameter \"filter\" (style deepObject",
        "#/paths/~1files~1{name}.json: unsupported: in path \"/files/{name}.json\", segment \"{name}.json\" is not a whole `{param}`",
        "#/components/schemas/LoopA: unsupported: cyclic $ref",
        "#/components/schemas/LoopB: unsupported: cyclic $ref",
        "#/paths/~1remote/put/requestBody/content/application~1json/schema/properties/ext/$ref: unsupported: $ref \"https://example.com/schemas/thing.json\" points outside the document",
        "#/components/securitySchemes/basicAuth: unsupported: HTTP basic authentication",
        "#/paths/~1basic/get/security: unsupported: security HTTP basic authentication cannot be checked",
    ] {
        assert_eq!(
            err.lines().filter(|l| l.starts_with(line)).count(),
            1,
            "expected one line starting {line:?} in:\n{err}"
        );
    }
    let policy = std::fs::read_to_string(config.path().join("policies/odd.yaml")).unwrap();
    let doc: Value = serde_yaml::from_str(&policy).unwrap();
    let names: Vec<&str> = doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    // Header/cookie parameters and a multipart body keep their routes; the template the
    // router cannot take and the basic-auth operation are skipped.
    assert_eq!(names, ["loop", "remote", "session", "upload"]);
    let (ok, text) = check(&config);
    assert!(ok, "gateway check failed:\n{text}\n{policy}");
}

#[test]
fn stdout_and_schemas_dir() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture("petstore-3.0.yaml");
    let o = import(
        &[
            spec.to_str().unwrap(),
            "--upstream",
            "pets",
            "--schemas-dir",
            "out/s",
            "--auth",
            "none",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("schema: out/s/createPet.json"), "{text}");
    assert!(
        !text.contains("api_key"),
        "--auth none for every route: {text}"
    );
    assert!(dir.path().join("out/s/createPet.json").exists());
}

#[test]
fn hostile_and_broken_documents_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // Nine levels of nine aliases each: 9^9 nodes if expanded.
    let mut bomb = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let refs = vec![format!("*l{}", i - 1); 9].join(", ");
        bomb.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    for (name, bytes, expect) in [
        (
            "latin1.yaml",
            &b"openapi: 3.0.0\ninfo: {title: caf\xe9}\n"[..],
            "not UTF-8",
        ),
        (
            "broken.yaml",
            &b"openapi: 3.0.0\npaths: [unclosed\n"[..],
            "not valid YAML or JSON",
        ),
        ("deep.json", deep.as_bytes(), "not valid YAML or JSON"),
        ("bomb.yaml", bomb.as_bytes(), "not valid YAML or JSON"),
        ("swagger.yaml", &b"swagger: '2.0'\n"[..], "Swagger 2.0"),
    ] {
        let p = write(name, bytes);
        let o = import(
            &[p.to_str().unwrap(), "--upstream", "x", "-o", "out.yaml"],
            dir.path(),
        );
        let err = stderr(&o);
        assert!(!o.status.success(), "{name} must fail");
        assert!(err.contains(name) && err.contains(expect), "{name}: {err}");
        assert!(!dir.path().join("out.yaml").exists());
    }
    // Reference cycles everywhere: parameters, bodies, path items; nothing loops.
    let p = fixture("cycles-3.0.yaml");
    let o = import(
        &[p.to_str().unwrap(), "--upstream", "x", "-o", "out.yaml"],
        dir.path(),
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("#/paths/~1a: unsupported: $ref chain longer than"),
        "{err}"
    );
    assert!(
        err.contains("#/paths/~1c/post/parameters/0: unsupported: $ref chain"),
        "{err}"
    );
    assert!(
        err.contains("#/paths/~1c/post/requestBody: unsupported: $ref chain"),
        "{err}"
    );
}

#[tokio::test]
async fn imported_routes_serve_and_validate() {
    let up = Upstream::start("pets").await;
    let config = ConfigDir::new("", &[("base.yaml", &base_policy(&up.target()))]);
    let target = config.path().join("policies/pets.yaml");
    let spec = fixture("petstore-3.0.yaml");
    let o = import(
        &[
            spec.to_str().unwrap(),
            "--upstream",
            "pets",
            "-o",
            target.to_str().unwrap(),
        ],
        config.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let gw = Gateway::start_in(config, &[JWT_ENV]).await;
    let c = client();
    let post = |path: &str, body: Value, key: bool| {
        let mut r = c.post(gw.url(path)).json(&body);
        if key {
            r = r.header("X-API-Key", KEY);
        }
        r.send()
    };

    let r = post(
        "/pets",
        json!({"name": "Rex", "tag": null, "age": 2.5}),
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        (echo["name"].as_str(), echo["path"].as_str()),
        (Some("pets"), Some("/pets"))
    );

    let r = post(
        "/pets",
        json!({"name": "", "age": 0, "colour": "red"}),
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_request", "{e}");
    let paths: Vec<&str> = e["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert!(paths.contains(&"/name") && paths.contains(&"/age"), "{e}");

    let r = post("/pets", json!({"name": "Rex"}), false).await.unwrap();
    assert_eq!(r.status(), 401, "apiKey security became auth: [api_key]");

    // A recursive schema ($defs referring to itself) validates nested values.
    let ok = json!({"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]});
    assert_eq!(post("/categories", ok, false).await.unwrap().status(), 200);
    let bad = json!({"name": "a", "children": [{"children": []}]});
    let r = post("/categories", bad, false).await.unwrap();
    assert_eq!(r.status(), 400);

    // Query parameters: typed and validated.
    let r = c
        .get(gw.url("/pets?limit=5&tags=a&tags=b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(gw.url("/pets?limit=500")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_request", "{e}");
}
