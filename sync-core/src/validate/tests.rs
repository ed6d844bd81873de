//! One positive and one negative case per finding code.

use std::collections::{BTreeMap, HashSet};

use crate::numbers::NumberBlock;
use crate::records::{
    CaseFile, Evidence, InspectionRecord, IssuedDocument, OfficerPresent, Party, Penalty,
    Procedure, Record, SERVER_AUTHORED, Site, server_actor_hex,
};
use crate::scope::Action;
use crate::validate::{
    CertificateFacts, EntrustmentFacts, MatterFacts, RuleContext, findings_with,
};

const DAY: i64 = 86_400_000;

fn party(kind: &str) -> Party {
    Party { kind: kind.to_owned(), name: "甲".to_owned(), id_number: "91X".to_owned() }
}

fn officers() -> Vec<OfficerPresent> {
    ["o-1", "o-2"]
        .iter()
        .map(|id| OfficerPresent { officer: (*id).to_owned(), cert_no: String::new() })
        .collect()
}

fn inspection() -> InspectionRecord {
    let mut record = InspectionRecord::new(
        "i".to_owned(),
        "AJ-001".to_owned(),
        party("legal"),
        Site::default(),
        10 * DAY,
    );
    record.township = "t-1".to_owned();
    record.officers = officers();
    record
}

fn case(procedure: Procedure) -> CaseFile {
    let mut case_file =
        CaseFile::new("c".to_owned(), procedure, "AJ-001".to_owned(), party("natural"));
    case_file.township = "t-1".to_owned();
    case_file.officers = officers();
    case_file
}

fn event(case_file: &mut CaseFile, kind: &str, day: i64, fields: &[(&str, &str)]) {
    let id = format!("e{}", case_file.timeline.len());
    let fields: BTreeMap<String, String> =
        fields.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
    // Server-authored kinds are written by the server's actor, as the review flow does.
    let actor = if SERVER_AUTHORED.contains(&kind) { server_actor_hex() } else { "aa".to_owned() };
    case_file.append_event(id, kind.to_owned(), "o-1".to_owned(), actor, day * DAY, fields);
}

fn penalty(fine_yuan: i64) -> Option<Penalty> {
    Some(Penalty {
        kinds: vec!["fine".to_owned()],
        fine_yuan,
        confiscation_yuan: 0,
        description: String::new(),
    })
}

/// A context in which the baseline records break no rule.
fn context() -> RuleContext {
    let certificate = |officer: &str| CertificateFacts {
        officer: officer.to_owned(),
        cert_no: format!("C-{officer}"),
        valid_from: 0,
        valid_to: 1_000 * DAY,
        withdrawn_at: None,
        sectors: vec!["work_safety".to_owned()],
        territory: "t-1".to_owned(),
    };
    RuleContext {
        certificates: vec![certificate("o-1"), certificate("o-2")],
        matter: Some(MatterFacts {
            code: "AJ-001".to_owned(),
            sector: "work_safety".to_owned(),
            hearing_threshold_person: Some(2_000),
            hearing_threshold_org: Some(10_000),
        }),
        entrustments: vec![EntrustmentFacts {
            agreement: "e-1".to_owned(),
            township: "t-1".to_owned(),
            matter: "AJ-001".to_owned(),
            actions: vec![Action::Inspect, Action::SummaryPenalty, Action::GeneralPenalty],
            valid_from: 0,
            valid_to: 1_000 * DAY,
            active: true,
        }],
        territories: vec!["t-1".to_owned(), "county".to_owned()],
        blobs_received: Some(HashSet::new()),
        number_blocks: vec![NumberBlock {
            id: "b-1".to_owned(),
            name_agency: "d-yingji".to_owned(),
            agency_code: "应急".to_owned(),
            doc_type: "onsite_decision".to_owned(),
            year: 2026,
            first: 1,
            last: 20,
            device: "device-1".to_owned(),
            template: "{代字}罚〔{年}〕{N}号".to_owned(),
        }],
        numbers_used_elsewhere: HashSet::new(),
        now_ms: 20 * DAY,
    }
}

fn codes(record: &Record, context: &RuleContext) -> Vec<&'static str> {
    let mut codes: Vec<_> =
        findings_with(record, context).into_iter().map(|finding| finding.code).collect();
    codes.sort_unstable();
    codes
}

// Taking the record by value lets every call site build it in one expression.
#[allow(clippy::needless_pass_by_value)]
#[track_caller]
fn check(record: Record, context: &RuleContext, expected: &[&str]) {
    assert_eq!(codes(&record, context), expected);
}

fn inspect(record: InspectionRecord) -> Record {
    Record::Inspection(Box::new(record))
}

fn case_record(case_file: CaseFile) -> Record {
    Record::Case(Box::new(case_file))
}

#[test]
fn baselines_break_no_rule() {
    check(inspect(inspection()), &context(), &[]);
    check(case_record(case(Procedure::General)), &context(), &[]);
}

#[test]
fn too_few_officers() {
    let mut record = inspection();
    record.officers.truncate(1);
    check(inspect(record), &context(), &["too_few_officers"]);
}

#[test]
fn certificate_invalid_at_the_act_time() {
    let mut expired = context();
    expired.certificates[1].valid_to = 5 * DAY;
    check(inspect(inspection()), &expired, &["certificate_invalid"]);
    let mut revoked_later = context();
    revoked_later.certificates[1].withdrawn_at = Some(15 * DAY);
    check(inspect(inspection()), &revoked_later, &[]);
    let mut revoked_before = context();
    revoked_before.certificates[1].withdrawn_at = Some(5 * DAY);
    check(inspect(inspection()), &revoked_before, &["certificate_invalid"]);
}

#[test]
fn certificate_out_of_scope() {
    let mut other_sector = context();
    other_sector.certificates[0].sectors = vec!["traffic".to_owned()];
    check(inspect(inspection()), &other_sector, &["certificate_out_of_scope"]);
}

#[test]
fn matter_not_entrusted() {
    let mut record = inspection();
    record.matter = "AJ-002".to_owned();
    check(inspect(record), &context(), &["matter_not_entrusted"]);
    let mut other_township = inspection();
    other_township.township = "t-2".to_owned();
    let mut covering = context();
    covering.territories = vec!["t-2".to_owned(), "county".to_owned()];
    covering.certificates.iter_mut().for_each(|cert| "county".clone_into(&mut cert.territory));
    check(inspect(other_township), &covering, &["matter_not_entrusted"]);
}

#[test]
fn agreement_not_in_force() {
    // Revoked or suspended (not active), expired, and not yet in force at the act.
    let mut inactive = context();
    inactive.entrustments[0].active = false;
    check(inspect(inspection()), &inactive, &["agreement_not_in_force"]);
    let mut expired = context();
    expired.entrustments[0].valid_to = 5 * DAY;
    check(inspect(inspection()), &expired, &["agreement_not_in_force"]);
    let mut not_yet = context();
    not_yet.entrustments[0].valid_from = 11 * DAY;
    check(inspect(inspection()), &not_yet, &["agreement_not_in_force"]);
}

#[test]
fn action_not_entrusted() {
    let mut summary_only = context();
    summary_only.entrustments[0].actions = vec![Action::Inspect, Action::SummaryPenalty];
    let mut case_file = case(Procedure::General);
    event(&mut case_file, "file", 1, &[]);
    check(case_record(case_file.clone()), &summary_only, &["action_not_entrusted"]);
    check(case_record(case_file), &context(), &[]);
}

#[test]
fn certificate_out_of_territory() {
    let mut elsewhere = context();
    "t-9".clone_into(&mut elsewhere.certificates[1].territory);
    check(inspect(inspection()), &elsewhere, &["certificate_out_of_territory"]);
    // A county-wide certificate covers every township of the county.
    let mut county = context();
    "county".clone_into(&mut county.certificates[1].territory);
    check(inspect(inspection()), &county, &[]);
}

#[test]
fn not_entrustable() {
    let mut case_file = case(Procedure::General);
    event(&mut case_file, "file", 1, &[]);
    event(&mut case_file, "coerce", 2, &[]);
    check(case_record(case_file), &context(), &["not_entrustable"]);
}

#[test]
fn summary_fine_over_limit() {
    let mut person = case(Procedure::Summary);
    person.final_penalty = penalty(201);
    person.proposed_penalty = penalty(201);
    check(case_record(person.clone()), &context(), &["summary_fine_over_limit"]);
    person.final_penalty = penalty(200);
    person.proposed_penalty = penalty(200);
    check(case_record(person), &context(), &[]);
    let mut organisation = case(Procedure::Summary);
    organisation.parties = vec![party("legal")];
    organisation.final_penalty = penalty(3_000);
    check(case_record(organisation.clone()), &context(), &[]);
    organisation.final_penalty = penalty(3_001);
    check(case_record(organisation), &context(), &["summary_fine_over_limit"]);
}

#[test]
fn hearing_rights_not_offered() {
    let mut case_file = case(Procedure::General);
    case_file.proposed_penalty = penalty(2_000);
    for kind in ["file", "investigate", "close_investigation"] {
        event(&mut case_file, kind, 1, &[]);
    }
    let mut offered = case_file.clone();
    event(&mut offered, "notify", 2, &[("hearing_rights", "true")]);
    check(case_record(offered), &context(), &[]);
    event(&mut case_file, "notify", 2, &[]);
    check(case_record(case_file.clone()), &context(), &["hearing_rights_not_offered"]);
    case_file.proposed_penalty = penalty(1_999);
    check(case_record(case_file), &context(), &[]);
}

#[test]
fn penalty_heavier_than_notified() {
    let mut case_file = case(Procedure::General);
    case_file.proposed_penalty = penalty(500);
    case_file.final_penalty = penalty(800);
    check(case_record(case_file.clone()), &context(), &["penalty_heavier_than_notified"]);
    case_file.final_penalty = penalty(300);
    check(case_record(case_file), &context(), &[]);
}

#[test]
fn decision_overdue() {
    let mut case_file = case(Procedure::General);
    for kind in ["file", "investigate", "close_investigation", "notify"] {
        event(&mut case_file, kind, 0, &[("hearing_rights", "true")]);
    }
    let mut late = context();
    late.now_ms = 91 * DAY;
    check(case_record(case_file.clone()), &late, &["decision_overdue"]);
    let mut extended = case_file.clone();
    event(&mut extended, "extend", 10, &[("days", "30")]);
    check(case_record(extended), &late, &[]);
    let mut decided_late = case_file.clone();
    event(&mut decided_late, "decide", 95, &[]);
    check(case_record(decided_late), &late, &["decision_overdue"]);
    let mut decided_in_time = case_file;
    event(&mut decided_in_time, "decide", 80, &[]);
    check(case_record(decided_in_time), &late, &[]);
}

#[test]
fn evidence_pending() {
    let mut record = inspection();
    record.evidence.push(Evidence {
        id: "ev-1".to_owned(),
        kind: "photo".to_owned(),
        sha256: "ab".repeat(32),
        size: 3,
        media_type: "image/jpeg".to_owned(),
        captured_at: 0,
        captured_by: "o-1".to_owned(),
        note: String::new(),
        removed: None,
    });
    check(inspect(record.clone()), &context(), &["evidence_pending"]);
    let mut received = context();
    received.blobs_received = Some(HashSet::from(["ab".repeat(32)]));
    check(inspect(record), &received, &[]);
}

#[test]
fn transitions() {
    let mut invalid = case(Procedure::General);
    event(&mut invalid, "decide", 0, &[]);
    check(case_record(invalid), &context(), &["invalid_transition"]);
    let mut concurrent = case(Procedure::General);
    event(&mut concurrent, "file", 0, &[]);
    event(&mut concurrent, "investigate", 1, &[]);
    concurrent.timeline.push(concurrent.timeline[1].clone());
    concurrent.timeline[2].id = "other".to_owned();
    concurrent.timeline[2].kind = "terminate".to_owned();
    check(case_record(concurrent), &context(), &["conflicting_transitions"]);
}

fn issued(block: &str, serial: i64, number: &str) -> IssuedDocument {
    IssuedDocument {
        number: number.to_owned(),
        doc_type: "onsite_decision".to_owned(),
        block: block.to_owned(),
        serial,
        issued_at: 0,
    }
}

#[test]
fn document_numbers() {
    let mut case_file = case(Procedure::Summary);
    case_file.documents.push(issued("b-1", 3, "应急罚〔2026〕3号"));
    check(case_record(case_file.clone()), &context(), &[]);
    let mut elsewhere = context();
    elsewhere.numbers_used_elsewhere.insert("应急罚〔2026〕3号".to_owned());
    check(case_record(case_file.clone()), &elsewhere, &["number_used_twice"]);
    let mut outside = case_file.clone();
    outside.documents[0] = issued("b-1", 21, "应急罚〔2026〕21号");
    check(case_record(outside), &context(), &["number_outside_block"]);
    let mut forged = case_file;
    forged.documents[0] = issued("b-1", 3, "应急罚〔2026〕4号");
    check(case_record(forged), &context(), &["number_outside_block"]);
}
