//! The merged view of one record, as `fieldcase show --json` and `GET /v1/docs/{id}` print it.
//!
//! Both the device and the server build it with the same code from the same heads, so two
//! replicas that converged print byte-identical views.

use automerge::{ChangeHash, ROOT, ReadDoc};
use serde::Serialize;

use crate::ids::DocumentId;
use crate::json::value_json;
use crate::merge::{FieldConflict, field_conflicts};
use crate::records::Record;
use crate::validate::{Finding, findings};

/// The merged record with its conflicts and findings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentView {
    /// The document id.
    pub id: String,
    /// `inspection` or `case`.
    pub kind: String,
    /// Hex change hashes, sorted.
    pub heads: Vec<String>,
    /// The document as JSON, with the winning value where fields conflict.
    pub record: serde_json::Value,
    /// Every field with concurrent values.
    pub conflicts: Vec<FieldConflict>,
    /// Every rule the record breaks.
    pub findings: Vec<Finding>,
    /// Derived case state (case files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl DocumentView {
    /// Builds the view of `doc`, whose current heads are `heads`.
    pub fn build(
        doc_id: DocumentId,
        heads: &[ChangeHash],
        doc: &(impl ReadDoc + autosurgeon::ReadDoc),
    ) -> Self {
        let record = Record::hydrate(doc);
        let mut heads: Vec<String> = heads.iter().map(ToString::to_string).collect();
        heads.sort();
        Self {
            id: doc_id.to_string(),
            kind: record
                .as_ref()
                .map(|record| record.kind().as_str())
                .unwrap_or("unknown")
                .to_owned(),
            heads,
            record: value_json(doc, &ROOT),
            conflicts: field_conflicts(doc),
            findings: record.as_ref().map(findings).unwrap_or_default(),
            state: match &record {
                Ok(Record::Case(case_file)) => Some(case_file.fold().state.as_str().to_owned()),
                _ => None,
            },
        }
    }
}
