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
