//! Edits of a record by field path, as `fieldcase edit DOC --set PATH=VALUE` makes them.
//!
//! Paths are dotted (`site.name`, `party.id_number`, `evidence.0.note`); list positions are
//! numbers. Only fields that exist can be set, and a value must fit the type the field already
//! holds, so that a path edit can never break the record's schema. Text fields are edited with
//! splices (never replaced wholesale when appending or prepending), so concurrent edits on two
//! devices merge character-wise.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, Prop, ROOT, ReadDoc, ScalarValue, Value};

use crate::error::EditError;

/// Where in a text field new text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEdit {
    /// Before the first character.
    Prepend,
    /// After the last character.
    Append,
}

/// Sets the field at `path` to `value`, parsed as the type the field holds.
///
/// A text field is replaced by `value` with a diff, so unchanged characters keep their identity.
pub fn set_field(doc: &mut AutoCommit, path: &str, value: &str) -> Result<(), EditError> {
    let (parent, prop) = resolve_parent(doc, path)?;
    let Some((current, current_id)) = doc.get(&parent, prop.clone())? else {
        return Err(EditError::NoSuchPath(path.to_owned()));
    };
    match current {
        Value::Object(ObjType::Text) => {
            let old = doc.text(&current_id)?;
            replace_text(doc, &current_id, &old, value)?;
        }
        Value::Object(_) => {
            return Err(EditError::WrongType {
                path: path.to_owned(),
                expected: "an object",
                value: value.to_owned(),
            });
        }
        Value::Scalar(scalar) => {
            let parsed = parse_like(&scalar, value).ok_or_else(|| EditError::WrongType {
                path: path.to_owned(),
                expected: type_name(&scalar),
                value: value.to_owned(),
            })?;
            match prop {
                Prop::Map(key) => doc.put(&parent, key, parsed)?,
                Prop::Seq(index) => doc.put(&parent, index, parsed)?,
            }
        }
    }
    Ok(())
}

/// Inserts `text` at the start or end of the text field at `path`.
pub fn edit_text(
    doc: &mut AutoCommit,
    path: &str,
    at: TextEdit,
    text: &str,
) -> Result<(), EditError> {
    let (parent, prop) = resolve_parent(doc, path)?;
    match doc.get(&parent, prop)? {
        Some((Value::Object(ObjType::Text), text_id)) => {
            let position = match at {
                TextEdit::Prepend => 0,
                TextEdit::Append => doc.length(&text_id),
            };
            doc.splice_text(&text_id, position, 0, text)?;
            Ok(())
        }
        Some(_) => Err(EditError::NotText(path.to_owned())),
        None => Err(EditError::NoSuchPath(path.to_owned())),
    }
}

/// Replaces a text's content by splicing only the differing middle, so that characters both
/// versions share keep their identity and concurrent edits elsewhere still merge.
fn replace_text(
    doc: &mut AutoCommit,
    text_id: &ObjId,
    old: &str,
    new: &str,
) -> Result<(), EditError> {
    let prefix = common_prefix(old, new);
    let suffix = common_prefix_rev(&old[prefix..], &new[prefix..]);
    let deleted = old.len() - prefix - suffix;
    let inserted = &new[prefix..new.len() - suffix];
    let deleted = isize::try_from(deleted).expect("a text field is shorter than isize::MAX bytes");
    doc.splice_text(text_id, prefix, deleted, inserted)?;
    Ok(())
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or_else(|| a.len().min(b.len()), |((index, _), _)| index)
}

fn common_prefix_rev(a: &str, b: &str) -> usize {
    let mut length = 0;
    for (x, y) in a.chars().rev().zip(b.chars().rev()) {
        if x != y {
            break;
        }
        length += x.len_utf8();
    }
    length
}

/// Walks all but the last segment of `path` and returns the parent object and the last prop.
fn resolve_parent(doc: &AutoCommit, path: &str) -> Result<(ObjId, Prop), EditError> {
    let no_such_path = || EditError::NoSuchPath(path.to_owned());
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|segment| segment.is_empty()) {
        return Err(no_such_path());
    }
    let (last, walk) = segments.split_last().ok_or_else(no_such_path)?;
    let mut obj = ROOT;
    for segment in walk {
        let prop = prop_in(doc, &obj, segment).ok_or_else(no_such_path)?;
        obj = match doc.get(&obj, prop)? {
            Some((Value::Object(ObjType::Map | ObjType::List | ObjType::Table), id)) => id,
            _ => return Err(no_such_path()),
        };
    }
    let prop = prop_in(doc, &obj, last).ok_or_else(no_such_path)?;
    Ok((obj, prop))
}

fn prop_in(doc: &AutoCommit, obj: &ObjId, segment: &str) -> Option<Prop> {
    match doc.object_type(obj).ok()? {
        ObjType::List => {
            let index: usize = segment.parse().ok()?;
            (index < doc.length(obj)).then_some(Prop::Seq(index))
        }
        _ => Some(Prop::Map(segment.to_owned())),
    }
}

fn parse_like(current: &ScalarValue, value: &str) -> Option<ScalarValue> {
    Some(match current {
        ScalarValue::Str(_) => ScalarValue::Str(value.into()),
        ScalarValue::Int(_) => ScalarValue::Int(value.parse().ok()?),
        ScalarValue::Uint(_) => ScalarValue::Uint(value.parse().ok()?),
        ScalarValue::F64(_) => ScalarValue::F64(value.parse().ok()?),
        ScalarValue::Boolean(_) => ScalarValue::Boolean(value.parse().ok()?),
        ScalarValue::Timestamp(_) => ScalarValue::Timestamp(value.parse().ok()?),
        // An empty optional field: a whole number becomes a number, anything else text.
        ScalarValue::Null => match value.parse::<i64>() {
            Ok(number) => ScalarValue::Int(number),
            Err(_) => ScalarValue::Str(value.into()),
        },
        ScalarValue::Bytes(_) | ScalarValue::Counter(_) | ScalarValue::Unknown { .. } => {
            return None;
        }
    })
}

fn type_name(scalar: &ScalarValue) -> &'static str {
    match scalar {
        ScalarValue::Str(_) => "text",
        ScalarValue::Int(_) | ScalarValue::Uint(_) | ScalarValue::Timestamp(_) => "a whole number",
        ScalarValue::F64(_) => "a number",
        ScalarValue::Boolean(_) => "true or false",
        _ => "a value that cannot be set by path",
    }
}

#[cfg(test)]
mod tests {
    use automerge::ActorId;

    use super::*;
    use crate::records::{InspectionRecord, Party, Site, create_document};

    fn record() -> AutoCommit {
        let party = Party {
            kind: "legal".to_owned(),
            name: "甲公司".to_owned(),
            id_number: "91X".to_owned(),
        };
        let site = Site { name: "仓库".to_owned(), address: "路 1 号".to_owned(), gnss: None };
        let record = InspectionRecord::new("id".to_owned(), "M1".to_owned(), party, site, 0);
        create_document(&ActorId::from([1u8; 16]), &record, 0).unwrap()
    }

    fn text_at(doc: &AutoCommit, key: &str) -> String {
        let (_, id) = doc.get(ROOT, key).unwrap().unwrap();
        doc.text(&id).unwrap()
    }

    #[test]
    fn set_follows_the_field_type() {
        let mut doc = record();
        set_field(&mut doc, "site.name", "新仓库 🏭").unwrap();
        set_field(&mut doc, "started_at", "1700000000000").unwrap();
        assert!(matches!(
            set_field(&mut doc, "started_at", "soon"),
            Err(EditError::WrongType { .. })
        ));
        assert!(matches!(set_field(&mut doc, "nope.x", "1"), Err(EditError::NoSuchPath(_))));
        assert!(matches!(set_field(&mut doc, "site.", "1"), Err(EditError::NoSuchPath(_))));
        set_field(&mut doc, "ended_at", "5").unwrap();
        let (value, _) = doc.get(ROOT, "ended_at").unwrap().unwrap();
        assert_eq!(value.as_i64(), Some(5));
    }

    #[test]
    fn text_edits_keep_non_ascii_exact() {
        let mut doc = record();
        edit_text(&mut doc, "findings", TextEdit::Append, "消防通道堵塞").unwrap();
        edit_text(&mut doc, "findings", TextEdit::Prepend, "【复查】").unwrap();
        edit_text(&mut doc, "findings", TextEdit::Append, " 🚒").unwrap();
        assert_eq!(text_at(&doc, "findings"), "【复查】消防通道堵塞 🚒");
        set_field(&mut doc, "findings", "【复查】安全出口堵塞 🚒").unwrap();
        assert_eq!(text_at(&doc, "findings"), "【复查】安全出口堵塞 🚒");
        assert!(matches!(
            edit_text(&mut doc, "outcome", TextEdit::Append, "x"),
            Err(EditError::NotText(_))
        ));
    }
}
