//! `allow`: kept paths, parents, wildcards merged with indices, edge cases.

use super::tests::run;
use serde_json::json;

#[test]
fn allow_keeps_listed_paths_and_parents() {
    let t = json!({"allow": ["/id", "/name", "/orders/*/id", "/profile/address/city", "/gone/x"]});
    let doc = json!({
        "id": 1, "name": {"first": "a", "last": "b"}, "secret": "s",
        "orders": [{"id": 1, "total": 3}, {"total": 4}, "scalar"],
        "profile": {"address": {"city": "c", "zip": "z"}, "ssn": "x"},
        "gone": "scalar"
    });
    assert_eq!(
        run(t, doc),
        json!({
            "id": 1, "name": {"first": "a", "last": "b"},
            "orders": [{"id": 1}, {}],
            "profile": {"address": {"city": "c"}}
        })
    );
}

#[test]
fn allow_merges_wildcards_with_indices() {
    let t = json!({"allow": ["/items/*/id", "/items/1/name", "/m/*/x", "/m/0/y"]});
    let doc = json!({
        "items": [{"id": 0, "name": "a", "z": 1}, {"id": 1, "name": "b", "z": 1}],
        "m": {"*": {"x": 1, "y": 1}, "0": {"x": 2, "y": 2}}
    });
    assert_eq!(
        run(t, doc),
        json!({
            "items": [{"id": 0}, {"id": 1, "name": "b"}],
            "m": {"*": {"x": 1}, "0": {"y": 2}}
        })
    );
}

#[test]
fn allow_by_index_drops_other_elements() {
    let t = json!({"allow": ["/xs/2", "/xs/0/a"]});
    assert_eq!(
        run(t, json!({"xs": [{"a": 1, "b": 2}, 9, {"c": 3}, 4]})),
        json!({"xs": [{"a": 1}, {"c": 3}]})
    );
}

#[test]
fn allow_edge_cases() {
    assert_eq!(run(json!({"allow": []}), json!({"a": 1})), json!({}));
    assert_eq!(run(json!({"allow": []}), json!([1, 2])), json!([]));
    assert_eq!(run(json!({"allow": ["/a"]}), json!("text")), json!("text"));
    assert_eq!(
        run(
            json!({"allow": ["/*/a"]}),
            json!([{"a": 1, "b": 2}, {"b": 3}])
        ),
        json!([{"a": 1}, {}])
    );
    assert_eq!(
        run(
            json!({"allow": ["/a", "/a/b"]}),
            json!({"a": {"b": 1, "c": 2}})
        ),
        json!({"a": {"b": 1, "c": 2}})
    );
}
