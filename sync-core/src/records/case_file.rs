//! The case file (案卷): one enforcement case from lead to archive, with its timeline.

use std::collections::BTreeMap;

use autosurgeon::{Hydrate, Reconcile, Text};

use crate::records::procedure::{Procedure, ProcedureFold};
use crate::records::{Evidence, OfficerPresent, Party, RecordKind, SCHEMA_VERSION};

/// One case. The state is not stored: it is derived from the timeline by [`CaseFile::fold`].
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct CaseFile {
    /// Schema version that wrote the document.
    pub schema: i64,
    /// Always `"case"`.
    pub kind: String,
    /// The document id.
    pub id: String,
    /// Provisional number until the server assigns the official 案号 at filing.
    pub case_no: String,
    /// `summary` (简易程序) or `general` (普通程序).
    pub procedure: String,
    /// Matter code (执法事项).
    pub matter: String,
    /// The handling township.
    pub township: String,
    /// The agency whose name the decisions carry (the entrusting department under entrustment).
    pub name_agency: String,
    /// The parties.
    pub parties: Vec<Party>,
    /// The facts found, as free text.
    pub facts: Text,
    /// Articles violated and penalty articles.
    pub legal_basis: String,
    /// The officers handling the case.
    pub officers: Vec<OfficerPresent>,
    /// The penalty notified (事先告知).
    pub proposed_penalty: Option<Penalty>,
    /// The penalty decided.
    pub final_penalty: Option<Penalty>,
    /// Ids of the inspections the case came from.
    pub inspections: Vec<String>,
    /// Evidence items.
    pub evidence: Vec<Evidence>,
    /// Documents issued, with their numbers.
    pub documents: Vec<IssuedDocument>,
    /// Append-only list of events; the state is a fold over it.
    pub timeline: Vec<TimelineEvent>,
}

/// A penalty, proposed or final.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct Penalty {
    /// Penalty types (warning, fine, confiscation, …).
    pub kinds: Vec<String>,
    /// Fine in yuan.
    pub fine_yuan: i64,
    /// Value confiscated in yuan.
    pub confiscation_yuan: i64,
    /// Free-text description.
    pub description: String,
}

/// A legal document issued in the case.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct IssuedDocument {
    /// The rendered document number (文书编号).
    #[key]
    pub number: String,
    /// Document type code.
    pub doc_type: String,
    /// The number block the number was taken from (empty for server-allocated numbers).
    pub block: String,
    /// The serial number within the block's number space.
    pub serial: i64,
    /// Device time of issue, milliseconds since the Unix epoch.
    pub issued_at: i64,
}

/// Event kinds that end an agency's handling of a case: after one, another agency acting
/// against the same party for the same matter is no longer concurrent enforcement.
const HANDLING_ENDS: [&str; 6] =
    ["execute", "close", "not_file", "terminate", "transfer", "archive"];

/// Event kinds that pass a lead on to someone else: `transfer` (移送, the formal transfer of
/// the case to the competent agency) and `pass_on` (转交, the lead handed to another unit or
/// agency without a transfer decision). `pass_on` moves no state; its `to` field names who
/// received it. Two or more on one lead is buck-passing (推诿, DOMAIN.md §4.5).
pub const PASSING_ON: [&str; 2] = ["transfer", "pass_on"];

/// One timeline event. Events are only ever appended.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct TimelineEvent {
    /// Id minted by the writer.
    #[key]
    pub id: String,
    /// What happened (`file`, `notify`, `decide`, `serve`, `close`, `note`, …).
    pub kind: String,
    /// Id of the latest event the writer had seen; two events with the same `prev` were
    /// written concurrently.
    pub prev: String,
    /// Officer who acted.
    pub officer: String,
    /// Hex actor id of the writer.
    pub actor: String,
    /// Device time, milliseconds since the Unix epoch.
    pub device_time: i64,
    /// Event details.
    pub fields: BTreeMap<String, String>,
}

impl CaseFile {
    /// A fresh case file; the caller supplies the id and the device time.
    pub fn new(id: String, procedure: Procedure, matter: String, party: Party) -> Self {
        Self {
            schema: SCHEMA_VERSION,
            kind: RecordKind::Case.as_str().to_owned(),
            case_no: format!("provisional-{id}"),
            id,
            procedure: procedure.as_str().to_owned(),
            matter,
            township: String::new(),
            name_agency: String::new(),
            parties: vec![party],
            facts: Text::with_value(""),
            legal_basis: String::new(),
            officers: Vec::new(),
            proposed_penalty: None,
            final_penalty: None,
            inspections: Vec::new(),
            evidence: Vec::new(),
            documents: Vec::new(),
            timeline: Vec::new(),
        }
    }

    /// Derives the case state from the timeline, with every irregular transition found.
    pub fn fold(&self) -> ProcedureFold {
        let procedure = Procedure::parse(&self.procedure).unwrap_or(Procedure::General);
        ProcedureFold::run(procedure, &self.timeline)
    }

    /// From the case's first event to the first event that ends its handling
    /// ([`HANDLING_ENDS`]); the end is `None` while the case is handled, the start 0 for an
    /// empty timeline.
    pub fn handling_window(&self) -> (i64, Option<i64>) {
        let start = self.timeline.first().map_or(0, |event| event.device_time);
        let end = self
            .timeline
            .iter()
            .find(|event| {
                HANDLING_ENDS.contains(&event.kind.as_str()) && crate::validate::counts(event)
            })
            .map(|event| event.device_time);
        (start, end)
    }

    /// How many times the lead was passed on ([`PASSING_ON`]).
    pub fn times_passed_on(&self) -> usize {
        self.timeline.iter().filter(|event| PASSING_ON.contains(&event.kind.as_str())).count()
    }

    /// Whether a fine was imposed: a decision (the server's, or an on-site one) with a final
    /// penalty that carries a fine. For the rule of one fine per act (一事不再罚, Art. 29) only;
    /// the amount itself is never reported.
    pub fn fine_imposed(&self) -> bool {
        let decided = self.timeline.iter().any(|event| {
            matches!(event.kind.as_str(), "decide" | "issue_on_site")
                && crate::validate::counts(event)
        });
        decided && self.final_penalty.as_ref().is_some_and(|penalty| penalty.fine_yuan > 0)
    }

    /// Appends an event after the latest one; `id`, `actor` and `now_ms` come from the caller.
    pub fn append_event(
        &mut self,
        id: String,
        kind: String,
        officer: String,
        actor: String,
        now_ms: i64,
        fields: BTreeMap<String, String>,
    ) {
        let prev = self.timeline.last().map(|event| event.id.clone()).unwrap_or_default();
        self.timeline.push(TimelineEvent {
            id,
            kind,
            prev,
            officer,
            actor,
            device_time: now_ms,
            fields,
        });
    }
}
