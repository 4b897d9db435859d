use super::*;
use serde_json::json;
use std::borrow::Cow;

struct V;
impl Values for V {
    fn path_param(&self, i: usize) -> Option<&str> {
        ["42"].get(i).copied()
    }
    fn query(&self, n: &str) -> Option<Cow<'_, str>> {
        (n == "q").then_some(Cow::Borrowed("a&b c"))
    }
    fn header(&self, h: &http::HeaderName) -> Option<&str> {
        (h.as_str() == "x-user").then_some("u/1")
    }
    fn claim(&self, n: &str) -> Option<Cow<'_, str>> {
        (n == "sub").then_some(Cow::Borrowed("subject"))
    }
    fn consumer_id(&self) -> Option<&str> {
        Some("acme")
    }
}

const PARAMS: &[String] = &[];

fn scope() -> Scope<'static> {
    Scope {
        path_params: PARAMS,
        claims: true,
        consumer: true,
        calls: &[],
    }
}

fn def(v: Value) -> TransformDef {
    serde_json::from_value(v).unwrap()
}

fn compile(v: Value) -> Transform {
    Transform::compile(&def(v), &scope()).unwrap()
}

fn compile_err(v: Value) -> String {
    Transform::compile(&def(v), &scope()).unwrap_err()
}

pub(super) fn run(t: Value, doc: Value) -> Value {
    let mut doc = doc;
    compile(t).apply(&mut doc, &V);
    doc
}

#[test]
fn rename_moves_values_and_creates_destinations() {
    let t = json!({"rename": {"/customerId": "/id", "/a/b": "/x/y/z", "/missing": "/m"}});
    let doc = json!({"customerId": 7, "a": {"b": [1], "c": 2}});
    assert_eq!(
        run(t, doc),
        json!({"id": 7, "a": {"c": 2}, "x": {"y": {"z": [1]}}})
    );
}

#[test]
fn rename_runs_in_written_order() {
    let t = json!({"rename": {"/a": "/b", "/b": "/c"}});
    assert_eq!(run(t, json!({"a": 1, "b": 2})), json!({"c": 1}));
}

#[test]
fn rename_to_a_blocked_destination_leaves_the_source() {
    let t = json!({"rename": {"/a": "/s/x", "/items/1": "/n/q"}});
    let doc = json!({"a": 1, "s": "text", "items": [0, 1, 2], "n": 5});
    assert_eq!(run(t, doc.clone()), doc);
}

#[test]
fn rename_binds_wildcards_element_by_element() {
    let t = json!({"rename": {"/orders/*/amount": "/orders/*/price/total"}});
    let doc = json!({"orders": [{"amount": 1}, {"other": 0}, 5, {"amount": {"v": 3}}]});
    assert_eq!(
        run(t, doc),
        json!({"orders": [{"price": {"total": 1}}, {"other": 0}, 5, {"price": {"total": {"v": 3}}}]})
    );
}

#[test]
fn rename_wraps_and_unwraps_elements() {
    let wrap = json!({"rename": {"/xs/*": "/xs/*/value"}});
    assert_eq!(
        run(wrap, json!({"xs": [1, {"a": 2}]})),
        json!({"xs": [{"value": 1}, {"value": {"a": 2}}]})
    );
    let unwrap = json!({"rename": {"/xs/*/value": "/xs/*"}});
    assert_eq!(
        run(unwrap, json!({"xs": [{"value": 1}, {"other": 2}]})),
        json!({"xs": [1, {"other": 2}]})
    );
}

#[test]
fn rename_of_an_array_element_moves_it_out() {
    let t = json!({"rename": {"/items/0": "/first"}});
    assert_eq!(
        run(t, json!({"items": ["a", "b"]})),
        json!({"items": ["b"], "first": "a"})
    );
}

#[test]
fn ops_at_depth_through_nested_arrays() {
    let doc = json!({"a": [
        {"b": [{"c": 1, "d": 1}, {"c": 2, "d": 2}], "e": 0},
        {"b": [{"d": 3}], "e": 0},
        {"e": 0}
    ]});
    let renamed = run(
        json!({"rename": {"/a/*/b/*/c": "/a/*/b/*/k/c"}}),
        doc.clone(),
    );
    assert_eq!(
        renamed,
        json!({"a": [
            {"b": [{"k": {"c": 1}, "d": 1}, {"k": {"c": 2}, "d": 2}], "e": 0},
            {"b": [{"d": 3}], "e": 0},
            {"e": 0}
        ]})
    );
    let removed = run(json!({"remove": ["/a/*/b/*/c"]}), doc.clone());
    assert_eq!(
        removed,
        json!({"a": [
            {"b": [{"d": 1}, {"d": 2}], "e": 0},
            {"b": [{"d": 3}], "e": 0},
            {"e": 0}
        ]})
    );
    let set = run(json!({"set": {"/a/*/b/*/c": "x"}}), doc.clone());
    assert_eq!(
        set,
        json!({"a": [
            {"b": [{"c": "x", "d": 1}, {"c": "x", "d": 2}], "e": 0},
            {"b": [{"c": "x", "d": 3}], "e": 0},
            {"e": 0}
        ]})
    );
    let allowed = run(json!({"allow": ["/a/*/b/*/c"]}), doc);
    assert_eq!(
        allowed,
        json!({"a": [{"b": [{"c": 1}, {"c": 2}]}, {"b": [{}]}, {}]})
    );
}

#[test]
fn remove_deletes_every_match() {
    let t = json!({"remove": ["/internal", "/items/0", "/tags/*", "/users/*/password", "/nope/x"]});
    let doc = json!({
        "internal": {"a": 1}, "keep": true, "items": [1, 2, 3], "tags": ["a", "b"],
        "users": [{"name": "a", "password": "p"}, {"name": "b"}, "x"]
    });
    assert_eq!(
        run(t, doc),
        json!({"keep": true, "items": [2, 3], "tags": [], "users": [{"name": "a"}, {"name": "b"}, "x"]})
    );
}

#[test]
fn remove_by_index_is_sequential_and_bounded() {
    let t = json!({"remove": ["/items/0", "/items/0", "/items/9", "/items/01"]});
    assert_eq!(run(t, json!({"items": [1, 2, 3]})), json!({"items": [3]}));
}

#[test]
fn set_values_templates_and_intermediates() {
    let t = json!({"set": {
        "/source": "gateway",
        "/requested_by": "{consumer.id}",
        "/meta/who": "{header.x-user} via {query.q} ({claims.sub}){query.none}",
        "/n": 5,
        "/obj": {"k": "{not.a.template}"},
        "/items/*/seen": true,
        "/items/0/first": true,
        "/items/7/x": 1,
        "/blocked/x": 1
    }});
    let doc = json!({"items": [{}, {"a": 1}], "blocked": "scalar"});
    assert_eq!(
        run(t, doc),
        json!({
            "source": "gateway", "requested_by": "acme",
            "meta": {"who": "u/1 via a&b c (subject)"},
            "n": 5, "obj": {"k": "{not.a.template}"},
            "items": [{"seen": true, "first": true}, {"a": 1, "seen": true}],
            "blocked": "scalar"
        })
    );
}

#[test]
fn set_with_a_final_wildcard_replaces_every_element() {
    let t = json!({"set": {"/xs/*": 0}});
    assert_eq!(
        run(t, json!({"xs": [1, [2], {}]})),
        json!({"xs": [0, 0, 0]})
    );
}

#[test]
fn set_on_a_scalar_or_array_root_does_nothing() {
    let t = json!({"set": {"/a": 1}});
    assert_eq!(run(t.clone(), json!(3)), json!(3));
    assert_eq!(run(t, json!([1])), json!([1]));
}

#[test]
fn operations_run_in_order_rename_remove_set_allow() {
    let t = json!({
        "allow": ["/id", "/source", "/tmp"],
        "set": {"/source": "gw", "/tmp": "{consumer.id}"},
        "remove": ["/id", "/tmp"],
        "rename": {"/customerId": "/id"}
    });
    let doc = json!({"customerId": 1, "tmp": 0, "other": 2});
    // rename puts `id` in place, remove takes it out again, set adds, allow filters.
    assert_eq!(run(t, doc), json!({"source": "gw", "tmp": "acme"}));
}

#[test]
fn escapes_name_keys_with_slash_and_tilde() {
    let t = json!({
        "rename": {"/a~1b": "/c~0d"},
        "remove": ["/x~1y~0z"],
        "set": {"/~01": 1}
    });
    let doc = json!({"a/b": 1, "x/y~z": 2, "keep": 3});
    assert_eq!(run(t, doc), json!({"c~d": 1, "keep": 3, "~1": 1}));
    assert_eq!(
        run(
            json!({"allow": ["/a~1b"]}),
            json!({"a/b": 1, "a": {"b": 2}})
        ),
        json!({"a/b": 1})
    );
}

#[test]
fn star_and_numbers_are_keys_on_objects() {
    let t = json!({"remove": ["/o/*", "/o/0"]});
    assert_eq!(
        run(t, json!({"o": {"*": 1, "0": 2, "k": 3}})),
        json!({"o": {"k": 3}})
    );
}

#[test]
fn compile_errors_name_the_pointer() {
    for (t, needle) in [
        (json!({"remove": [""]}), "whole document"),
        (json!({"allow": [""]}), "whole document"),
        (json!({"set": {"": 1}}), "whole document"),
        (json!({"rename": {"": "/a"}}), "whole document"),
        (json!({"remove": ["a/b"]}), "\"a/b\""),
        (json!({"remove": ["/a~2"]}), "\"/a~2\""),
        (json!({"rename": {"/a/*/b": "/c"}}), "same number of `*`"),
        (json!({"rename": {"/a/*/b": "/c/*/b"}}), "\"/a/*/b\""),
        (
            json!({"rename": {"/a/*/b/*/c": "/a/*/x/*/c"}}),
            "up to the last `*`",
        ),
        (json!({"set": {"/x": "{nope.x}"}}), "\"/x\""),
        (json!({"set": {"/x": "{consumer.id"}}), "unclosed"),
        (json!({"set": {"/x": "{query.a}}"}}), "unmatched"),
    ] {
        let e = compile_err(t.clone());
        assert!(e.contains(needle), "{t}: {e}");
    }
    let long = "/a".repeat(129);
    assert!(compile_err(json!({"remove": [long]})).contains("segments"));
}

#[test]
fn template_scope_is_checked() {
    let strict = Scope {
        path_params: &[],
        claims: false,
        consumer: false,
        calls: &[],
    };
    let d = def(json!({"set": {"/c": "{consumer.id}"}}));
    assert!(Transform::compile(&d, &strict).is_err());
    let d = def(json!({"set": {"/c": "{claims.sub}"}}));
    assert!(Transform::compile(&d, &strict).is_err());
    let params = vec!["id".to_string()];
    let with_path = Scope {
        path_params: &params,
        ..strict
    };
    let t = Transform::compile(&def(json!({"set": {"/id": "{path.id}"}})), &with_path).unwrap();
    let mut doc = json!({});
    t.apply(&mut doc, &V);
    assert_eq!(doc, json!({"id": "42"}));
}

#[test]
fn is_empty_only_when_nothing_is_configured() {
    assert!(compile(json!({})).is_empty());
    assert!(!compile(json!({"allow": []})).is_empty());
    assert!(!compile(json!({"remove": ["/a"]})).is_empty());
}

#[test]
fn apply_bytes_round_trips_and_refuses_non_json() {
    let t = compile(json!({"remove": ["/b"], "set": {"/c": "{consumer.id}"}}));
    let out = apply_bytes(&t, br#"{"a": 1, "b": 2}"#, &V).unwrap();
    assert_eq!(&out[..], br#"{"a":1,"c":"acme"}"#);
    assert!(apply_bytes(&t, b"{not json", &V).is_err());
    assert!(apply_bytes(&t, b"", &V).is_err());
    // A repeated key keeps its last value, the one written back and transformed.
    let out = apply_bytes(&t, br#"{"b": 1, "b": 2, "a": 0}"#, &V).unwrap();
    assert_eq!(&out[..], br#"{"a":0,"c":"acme"}"#);
    let deep = "[".repeat(10_000);
    assert!(apply_bytes(&t, deep.as_bytes(), &V).is_err());
}

#[test]
fn transform_is_send_and_sync() {
    fn check<T: Send + Sync + std::fmt::Debug>() {}
    check::<Transform>();
}
