use super::*;
use crate::config::{load_gateway, load_policies};

fn setup(policy: &str) -> (tempfile::TempDir, GatewayConfig) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        "listeners: [{name: p, bind: \"127.0.0.1:1\"}]\npolicies: p.yaml\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("p.yaml"), policy).unwrap();
    let gw = load_gateway(&dir.path().join("gateway.yaml")).unwrap();
    (dir, gw)
}

const TWO: &str = "upstreams:\n  a: { targets: [\"127.0.0.1:1\"] }\n  b: { targets: [\"127.0.0.1:2\"] }\nroutes:\n  - { name: r, match: { path: /r }, auth: none, upstream: a }\n";

#[test]
fn unchanged_upstreams_are_reused_changed_ones_rebuilt() {
    let (dir, gw) = setup(TWO);
    let set = load_policies(&gw.policies_path()).unwrap();
    let first = compile(&gw, &set, None, 1).unwrap();

    let second = compile(&gw, &set, Some(&first), 2).unwrap();
    assert!(Arc::ptr_eq(&first.upstreams["a"], &second.upstreams["a"]));
    assert!(Arc::ptr_eq(&first.upstreams["b"], &second.upstreams["b"]));
    assert!(Arc::ptr_eq(
        &first.upstreams["a"],
        second.routes[0].upstream.as_ref().unwrap()
    ));

    std::fs::write(
        dir.path().join("p.yaml"),
        TWO.replace("127.0.0.1:2", "127.0.0.1:3"),
    )
    .unwrap();
    let set = load_policies(&gw.policies_path()).unwrap();
    let third = compile(&gw, &set, Some(&second), 3).unwrap();
    assert!(Arc::ptr_eq(&second.upstreams["a"], &third.upstreams["a"]));
    assert!(!Arc::ptr_eq(&second.upstreams["b"], &third.upstreams["b"]));
}

#[test]
fn a_failed_compile_reports_every_problem() {
    let (_dir, gw) = setup(
        "routes:\n  - { name: r, match: { path: /r }, auth: none, upstream: nope }\n  - { name: s, match: { path: /s }, upstream: nope }\n",
    );
    let set = load_policies(&gw.policies_path()).unwrap();
    let problems = compile(&gw, &set, None, 1).unwrap_err();
    let text = problems.to_string();
    assert_eq!(problems.0.len(), 3, "{text}");
    assert!(
        text.contains("p.yaml:2:") && text.contains("p.yaml:3:"),
        "{text}"
    );
}

#[test]
fn a_route_pays_only_for_the_features_it_uses() {
    let (_dir, gw) = setup(
        "upstreams:\n  a: { targets: [\"127.0.0.1:1\"] }\nroutes:\n  - { name: plain, match: { path: /p }, auth: none, upstream: a }\n  - { name: empty, match: { path: /e }, auth: none, upstream: a, request: { transform: {} }, response: { transform: {} } }\n  - { name: edits, match: { path: /t }, auth: none, upstream: a, request: { transform: { remove: [/x] } } }\n",
    );
    let set = load_policies(&gw.policies_path()).unwrap();
    let snap = compile(&gw, &set, None, 1).unwrap();
    let route = |n: &str| snap.routes.iter().find(|r| &*r.name == n).unwrap();
    assert!(route("plain").stages.is_empty());
    // An empty transform block edits nothing: no stage, no body held, no answer collected.
    let empty = route("empty");
    assert!(empty.stages.is_empty(), "{:?}", empty.stages);
    assert!(empty.request_transform.is_none() && empty.response_transform.is_none());
    assert!(empty.traffic.split.is_none() && empty.traffic.ips.is_none());
    assert_eq!(route("edits").stages, [Stage::Transform, Stage::Relay]);
}
