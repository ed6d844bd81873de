//! What each change of a record did to the hydrated record, for the history of the review view:
//! the record as JSON right before the change (at its dependencies) and right after it (at the
//! change itself), diffed into leaf paths.
//!
//! Both states are read from the one loaded document with Automerge's `*_at` reads, so no fork
//! is made; a change is judged against its own causal past, so a concurrent change that
//! arrived earlier in the feed does not blur what it did.

use automerge::{Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, Value};
use serde_json::{Map, Value as Json, json};
use sync_core::json::scalar_json;

/// `[{"path", "before", "after"}]`: every leaf of the record the change with `hash` and `deps`
/// altered. Objects are compared by key and arrays by index (`timeline.3.kind`, the paths of
/// `field_conflicts`), strings and other scalars whole; a leaf that appears or disappears has
/// `null` on the other side.
pub(crate) fn changed(doc: &Automerge, hash: ChangeHash, deps: &[ChangeHash]) -> Json {
    let before = value_json_at(doc, &ROOT, deps);
    let after = value_json_at(doc, &ROOT, &[hash]);
    let mut leaves = Vec::new();
    diff("", &before, &after, &mut leaves);
    Json::Array(leaves)
}

/// The object `obj` as JSON at `heads`, rendered as `sync_core::json::value_json` renders the
/// current state (the winner of concurrent values, text as a string, bytes as hex).
fn value_json_at(doc: &Automerge, obj: &ObjId, heads: &[ChangeHash]) -> Json {
    match doc.object_type(obj) {
        Ok(ObjType::Map | ObjType::Table) => {
            let mut map = Map::new();
            for key in doc.keys_at(obj, heads) {
                if let Ok(Some((value, id))) = doc.get_at(obj, key.as_str(), heads) {
                    map.insert(key, child_json_at(doc, &value, &id, heads));
                }
            }
            Json::Object(map)
        }
        Ok(ObjType::List) => Json::Array(
            (0..doc.length_at(obj, heads))
                .filter_map(|index| doc.get_at(obj, index, heads).ok().flatten())
                .map(|(value, id)| child_json_at(doc, &value, &id, heads))
                .collect(),
        ),
        Ok(ObjType::Text) => Json::String(doc.text_at(obj, heads).unwrap_or_default()),
        Err(_) => Json::Null,
    }
}

fn child_json_at(doc: &Automerge, value: &Value<'_>, id: &ObjId, heads: &[ChangeHash]) -> Json {
    match value {
        Value::Object(_) => value_json_at(doc, id, heads),
        Value::Scalar(scalar) => scalar_json(scalar),
    }
}

/// Appends to `leaves` every leaf under `path` where `before` and `after` differ.
fn diff(path: &str, before: &Json, after: &Json, leaves: &mut Vec<Json>) {
    if before == after {
        return;
    }
    let (Some(before_children), Some(after_children)) = (children(before), children(after)) else {
        leaves.push(json!({ "path": path, "before": before, "after": after }));
        return;
    };
    let mut keys: Vec<&String> = before_children.iter().map(|(key, _)| key).collect();
    for (key, _) in &after_children {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let found = leaves.len();
    let lookup = |items: &[(String, &Json)], key: &str| {
        items.iter().find(|(name, _)| name == key).map_or(Json::Null, |(_, value)| (*value).clone())
    };
    for key in keys {
        let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        diff(&child_path, &lookup(&before_children, key), &lookup(&after_children, key), leaves);
    }
    // An empty object or list that appeared or went has no leaf of its own: show it whole.
    if leaves.len() == found {
        leaves.push(json!({ "path": path, "before": before, "after": after }));
    }
}

/// The children of an object (by key) or an array (by index); `null` counts as empty, so that
/// a created object is shown leaf by leaf. `None` for any other value.
fn children(value: &Json) -> Option<Vec<(String, &Json)>> {
    match value {
        Json::Object(map) => Some(map.iter().map(|(key, child)| (key.clone(), child)).collect()),
        Json::Array(items) => Some(
            items.iter().enumerate().map(|(index, child)| (index.to_string(), child)).collect(),
        ),
        Json::Null => Some(Vec::new()),
        Json::Bool(_) | Json::Number(_) | Json::String(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::routes::review::changed::diff;

    #[track_caller]
    fn check(before: &Value, after: &Value, expected: &Value) {
        let mut leaves = Vec::new();
        diff("", before, after, &mut leaves);
        assert_eq!(&Value::Array(leaves), expected);
    }

    #[test]
    fn objects_are_diffed_by_key_arrays_by_index_and_strings_whole() {
        check(
            &json!({"site": {"name": "a", "kind": "shop"}, "tags": ["x"]}),
            &json!({"site": {"name": "ab", "kind": "shop"}, "tags": ["x", "y"]}),
            &json!([
                {"path": "site.name", "before": "a", "after": "ab"},
                {"path": "tags.1", "before": null, "after": "y"},
            ]),
        );
    }

    #[test]
    fn a_created_object_shows_its_leaves_and_an_empty_one_shows_whole() {
        check(
            &json!({}),
            &json!({"party": {"name": "张三"}, "evidence": []}),
            &json!([
                {"path": "evidence", "before": null, "after": []},
                {"path": "party.name", "before": null, "after": "张三"},
            ]),
        );
        check(&json!({"a": 1}), &json!({"a": 1}), &json!([]));
        check(
            &json!({"a": {"b": 1}}),
            &json!({"a": 2}),
            &json!([{"path": "a", "before": {"b": 1}, "after": 2}]),
        );
    }
}
