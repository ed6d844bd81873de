//! The projections the supervision reports query (issue 6), written at every merge beside the
//! findings: a case's open statutory deadlines (sync-core `deadlines::open_deadlines` on the
//! shipped holiday calendar) into `document_deadlines`, its procedure, name agency, key dates,
//! hearing, legal review and agency-filing flags, its timed steps with their due times
//! (sync-core `deadlines::timeliness`), how often its lead was passed on and whether it imposed
//! a fine into `document_cases`, its decided penalty into `document_penalties` (for the quarterly
//! case list only), the officers any record names into `document_officers`, and
//! every record's handling window into `document_windows`.
//!
//! Each merge replaces the document's rows, so they always describe the merged record; a
//! document that is not a readable record has none.

use std::sync::LazyLock;

use rusqlite::{Connection, params};
use sync_core::calendar::Calendar;
use sync_core::deadlines::{open_deadlines, timeliness};
use sync_core::ids::DocumentId;
use sync_core::records::{CaseFile, Record};

use crate::store::StoreError;

/// The holiday calendar shipped with this build, parsed once.
static CALENDAR: LazyLock<Calendar> = LazyLock::new(Calendar::shipped);

/// Replaces the deadline, case and officer rows of a document with those of its merged
/// `record`.
pub(crate) fn project(
    connection: &Connection,
    doc_id: DocumentId,
    record: Option<&Record>,
) -> Result<(), StoreError> {
    for table in [
        "document_deadlines",
        "document_cases",
        "document_officers",
        "document_windows",
        "document_penalties",
    ] {
        connection
            .prepare_cached(&format!("DELETE FROM {table} WHERE doc_id = ?1"))?
            .execute([doc_id.as_bytes()])?;
    }
    let Some(record) = record else { return Ok(()) };
    let mut insert_officer = connection.prepare_cached(
        "INSERT OR IGNORE INTO document_officers (doc_id, officer) VALUES (?1, ?2)",
    )?;
    for present in record.officers() {
        if !present.officer.is_empty() {
            insert_officer.execute(params![doc_id.as_bytes(), present.officer])?;
        }
    }
    let (handled_from, handled_to) = record.handling_window();
    connection
        .prepare_cached(
            "INSERT INTO document_windows (doc_id, handled_from, handled_to) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![doc_id.as_bytes(), handled_from, handled_to])?;
    if let Record::Case(case_file) = record {
        project_case(connection, doc_id, case_file)?;
    }
    Ok(())
}

fn project_case(
    connection: &Connection,
    doc_id: DocumentId,
    case_file: &CaseFile,
) -> Result<(), StoreError> {
    // The first event of a kind, as the deadline rules read it.
    let time_of = |kind: &str| {
        case_file.timeline.iter().find(|event| event.kind == kind).map(|event| event.device_time)
    };
    // Filing and decision are read as the rules read them: only the server's count.
    let steps = timeliness(case_file, &CALENDAR);
    connection
        .prepare_cached(
            "INSERT INTO document_cases (doc_id, procedure, name_agency, filed_at, decided_at, \
             issued_at, hearing, legal_review, filed_with_agency, lead_at, filing_due, \
             decision_due, service_due, served_at, passed_on, fined) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?
        .execute(params![
            doc_id.as_bytes(),
            case_file.procedure,
            case_file.name_agency,
            steps.filed_at,
            steps.decided_at,
            time_of("issue_on_site"),
            time_of("hearing").is_some(),
            time_of("legal_review").is_some(),
            time_of("file_with_agency").is_some(),
            steps.lead_at,
            steps.filing_due,
            steps.decision_due,
            steps.service_due,
            steps.served_at,
            i64::try_from(case_file.times_passed_on()).unwrap_or(i64::MAX),
            case_file.fine_imposed(),
        ])?;
    // The decided penalty, for the quarterly case list (DOMAIN.md §4.1). Its own table, which
    // the assessment never joins: no amount may be linked to assessment (Art. 74).
    if let Some(penalty) = &case_file.final_penalty {
        connection
            .prepare_cached(
                "INSERT INTO document_penalties (doc_id, kinds, fine_yuan, confiscation_yuan) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                doc_id.as_bytes(),
                penalty.kinds.join(" "),
                penalty.fine_yuan,
                penalty.confiscation_yuan,
            ])?;
    }
    let mut insert = connection.prepare_cached(
        "INSERT OR REPLACE INTO document_deadlines (doc_id, code, from_event, due, provisional) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for deadline in open_deadlines(case_file, &CALENDAR) {
        insert.execute(params![
            doc_id.as_bytes(),
            deadline.code,
            deadline.from_event,
            deadline.due,
            deadline.provisional,
        ])?;
    }
    Ok(())
}
