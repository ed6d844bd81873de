//! Domain rules over a hydrated record. Rules return findings (data), never errors: what
//! happened in the field happened, and a supervisor decides what to do about it.

use serde::Serialize;

use crate::records::{Record, TransitionIssue};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Probably irregular; a supervisor should review.
    Warning,
    /// Breaks a legal rule.
    Error,
}

/// One rule the record breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable snake_case code.
    pub code: &'static str,
    /// How serious it is.
    pub severity: Severity,
    /// Dotted path of the part of the record concerned.
    pub path: String,
    /// English sentence.
    pub message: String,
    /// Chinese sentence.
    pub message_zh: String,
}

/// Runs every rule that needs nothing but the record itself.
///
/// Rules that need the registry (certificates, entrustment) or server state (blobs received)
/// run on the server with that context.
pub fn findings(record: &Record) -> Vec<Finding> {
    let mut out = Vec::new();
    let officers = record.officers();
    if officers.len() < 2 {
        out.push(Finding {
            code: "too_few_officers",
            severity: Severity::Error,
            path: "officers".to_owned(),
            message: format!(
                "{} officer(s) recorded; at least two certified officers must be present",
                officers.len()
            ),
            message_zh: format!("仅记录{}名执法人员，执法时应不少于两人", officers.len()),
        });
    }
    if let Record::Case(case_file) = record {
        for issue in case_file.fold().issues {
            out.push(match issue {
                TransitionIssue::Invalid { index, kind, from } => Finding {
                    code: "invalid_transition",
                    severity: Severity::Error,
                    path: format!("timeline.{index}"),
                    message: format!("event {kind:?} is not allowed in state {}", from.as_str()),
                    message_zh: format!("案件处于“{}”状态时不得进行“{kind}”", from.as_str()),
                },
                TransitionIssue::Concurrent { indexes, kinds } => Finding {
                    code: "conflicting_transitions",
                    severity: Severity::Error,
                    path: format!("timeline.{}", indexes[0]),
                    message: format!(
                        "transitions {} were recorded concurrently; a supervisor must decide",
                        kinds.join(", ")
                    ),
                    message_zh: format!(
                        "程序环节“{}”被并发记录，需由监督人员裁定",
                        kinds.join("、")
                    ),
                },
            });
        }
    }
    out
}
