use super::*;
use serde_json::json;

fn transform(v: Value) -> Transform {
    let scope = Scope {
        path_params: &[],
        claims: false,
        consumer: false,
        calls: &[],
    };
    Transform::compile(&serde_json::from_value(v).unwrap(), &scope).unwrap()
}

/// The pointers of `remove` found impossible under `schema`.
fn impossible(schema: Value, pointers: &[&str]) -> Vec<String> {
    transform(json!({ "remove": pointers }))
        .impossible_paths(&schema)
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

fn order_schema() -> Value {
    serde_json::from_str(include_str!("../../benches/fixtures/order-schema.json")).unwrap()
}

#[test]
fn closed_objects_refuse_unknown_keys() {
    let schema = json!({
        "type": "object", "additionalProperties": false,
        "properties": {"a": {"type": "object"}, "s": {"type": "string"}, "f": false}
    });
    assert_eq!(
        impossible(schema, &["/a", "/a/anything", "/b", "/s", "/s/x", "/f"]),
        vec!["/b", "/s/x", "/f"]
    );
}

#[test]
fn open_objects_and_unknown_keywords_allow_anything() {
    let open = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    assert_eq!(impossible(open, &["/b/c", "/a/x"]), vec!["/a/x"]);
    let patterns = json!({"additionalProperties": false, "patternProperties": {"^x": {}}});
    assert!(impossible(patterns, &["/xa", "/b"]).is_empty());
    let typed_extra = json!({"additionalProperties": {"type": "integer"}});
    assert_eq!(impossible(typed_extra, &["/k", "/k/v"]), vec!["/k/v"]);
    assert!(impossible(json!(true), &["/a/b/c"]).is_empty());
    assert!(impossible(json!({"not": {"type": "object"}}), &["/a"]).is_empty());
    assert_eq!(impossible(json!(false), &["/a"]), vec!["/a"]);
}

#[test]
fn scalar_types_have_no_children() {
    let schema = json!({"type": ["string", "null"]});
    let found = transform(json!({"remove": ["/a"]})).impossible_paths(&schema);
    assert_eq!(found.len(), 1);
    assert!(found[0].1.contains("string"), "{}", found[0].1);
}

#[test]
fn arrays_follow_items_and_indices() {
    let schema = json!({
        "type": "object",
        "properties": {
            "xs": {"type": "array", "items": {"type": "object", "additionalProperties": false,
                                               "properties": {"id": {}}}},
            "tuple": {"type": "array", "prefixItems": [{"type": "string"}], "items": false},
            "none": {"type": "array", "items": false}
        }
    });
    assert_eq!(
        impossible(
            schema,
            &[
                "/xs/*/id",
                "/xs/3/id",
                "/xs/*/no",
                "/xs/0/no",
                "/xs/key",
                "/tuple/0",
                "/tuple/1",
                "/tuple/0/x",
                "/tuple/*",
                "/none/*"
            ]
        ),
        vec![
            "/xs/*/no",
            "/xs/0/no",
            "/xs/key",
            "/tuple/1",
            "/tuple/0/x",
            "/none/*"
        ]
    );
}

#[test]
fn legacy_tuples_use_additional_items() {
    let schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "array", "items": [{"type": "object"}], "additionalItems": false,
        "prefixItems": [{"type": "string"}]
    });
    assert_eq!(impossible(schema, &["/0/a", "/1", "/*/a"]), vec!["/1"]);
}

#[test]
fn wildcard_on_objects_is_the_star_key() {
    let schema = json!({"type": "object", "additionalProperties": false,
                        "properties": {"*": {"type": "object"}}});
    assert!(impossible(schema.clone(), &["/*/x"]).is_empty());
    let closed = json!({"type": "object", "additionalProperties": false, "properties": {}});
    assert_eq!(impossible(closed, &["/*"]), vec!["/*"]);
}

#[test]
fn combinators() {
    let a = json!({"type": "object", "properties": {"a": {}}, "additionalProperties": false});
    let b = json!({"type": "object", "properties": {"b": {}}, "additionalProperties": false});
    let all = json!({"allOf": [a, b]});
    assert_eq!(impossible(all, &["/a", "/c"]), vec!["/a", "/c"]);
    let any = json!({"anyOf": [a, b]});
    assert_eq!(impossible(any, &["/a", "/b", "/c"]), vec!["/c"]);
    let one = json!({"oneOf": [a, {"type": "string"}]});
    assert_eq!(impossible(one, &["/a", "/c"]), vec!["/c"]);
    let with_open = json!({"anyOf": [a, {}]});
    assert!(impossible(with_open, &["/c"]).is_empty());
}

#[test]
fn local_references_are_followed_and_others_are_not() {
    let order = order_schema();
    assert_eq!(
        impossible(
            order,
            &[
                "/items/*/sku",
                "/items/*/internal",
                "/internal",
                "/email/x",
                "/total"
            ]
        ),
        vec!["/items/*/internal", "/internal", "/email/x"]
    );
    let remote =
        json!({"properties": {"a": {"$ref": "other.json"}}, "additionalProperties": false});
    assert!(impossible(remote, &["/a/x"]).is_empty());
    let anchor = json!({"$ref": "#node", "$defs": {"n": {"$anchor": "node", "type": "string"}}});
    assert!(impossible(anchor, &["/x"]).is_empty());
    let nested_id = json!({
        "$ref": "#/$defs/n",
        "$defs": {"n": {"$id": "n.json", "type": "string"}}
    });
    assert!(impossible(nested_id, &["/x"]).is_empty());
}

#[test]
fn reference_loops_end() {
    let looping = json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
    assert!(impossible(looping, &["/x"]).is_empty());
    let tree = json!({
        "type": "object", "additionalProperties": false,
        "properties": {"child": {"$ref": "#"}, "v": {"type": "integer"}}
    });
    assert_eq!(
        impossible(tree, &["/child/child/v", "/child/child/w", "/child/v/x"]),
        vec!["/child/child/w", "/child/v/x"]
    );
    let wide = json!({"anyOf": [{"$ref": "#"}, {"$ref": "#"}]});
    assert!(impossible(wide, &["/x"]).is_empty());
}

#[test]
fn written_paths_are_not_checked() {
    let schema = json!({"type": "object", "additionalProperties": false,
                        "properties": {"a": {}}});
    let t = transform(json!({
        "rename": {"/a": "/b", "/b/x": "/c", "/zz": "/y"},
        "remove": ["/c", "/q"],
        "set": {"/s/t": 1},
        "allow": ["/s", "/s/t/u", "/y", "/w", "/q"]
    }));
    let found: Vec<String> = t
        .impossible_paths(&schema)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(found, vec!["/zz", "/q", "/w"]);
}

#[test]
fn reasons_say_where() {
    let t = transform(json!({"remove": ["/items/*/internal"]}));
    let found = t.impossible_paths(&order_schema());
    assert_eq!(found.len(), 1);
    assert!(found[0].1.contains("\"internal\""), "{}", found[0].1);
    assert!(found[0].1.contains("/items/*"), "{}", found[0].1);
}
