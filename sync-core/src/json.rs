//! Plain JSON renderings of Automerge values, identical on every replica with the same heads.

use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value};
use serde_json::{Map, Value as Json};

/// The whole object `obj` as JSON: maps as objects, lists as arrays, text as a string.
///
/// Where a field has concurrent values, the winner is shown (the one Automerge's `get`
/// returns); the others are reported by [`crate::merge::field_conflicts`].
pub fn value_json(doc: &impl ReadDoc, obj: &ObjId) -> Json {
    match doc.object_type(obj) {
        Ok(ObjType::Map | ObjType::Table) => {
            let mut map = Map::new();
            for key in doc.keys(obj) {
                if let Ok(Some((value, id))) = doc.get(obj, key.as_str()) {
                    map.insert(key, child_json(doc, &value, &id));
                }
            }
            Json::Object(map)
        }
        Ok(ObjType::List) => Json::Array(
            (0..doc.length(obj))
                .filter_map(|index| doc.get(obj, index).ok().flatten())
                .map(|(value, id)| child_json(doc, &value, &id))
                .collect(),
        ),
        Ok(ObjType::Text) => Json::String(doc.text(obj).unwrap_or_default()),
        Err(_) => Json::Null,
    }
}

fn child_json(doc: &impl ReadDoc, value: &Value<'_>, id: &ObjId) -> Json {
    match value {
        Value::Object(_) => value_json(doc, id),
        Value::Scalar(scalar) => scalar_json(scalar),
    }
}

/// A scalar as JSON; bytes become lowercase hex.
pub fn scalar_json(scalar: &ScalarValue) -> Json {
    match scalar {
        ScalarValue::Str(text) => Json::String(text.to_string()),
        ScalarValue::Int(number) | ScalarValue::Timestamp(number) => Json::from(*number),
        ScalarValue::Uint(number) => Json::from(*number),
        ScalarValue::F64(number) => Json::from(*number),
        ScalarValue::Counter(counter) => Json::from(i64::from(counter)),
        ScalarValue::Boolean(flag) => Json::Bool(*flag),
        ScalarValue::Bytes(bytes) => {
            Json::String(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
        }
        ScalarValue::Null | ScalarValue::Unknown { .. } => Json::Null,
    }
}
