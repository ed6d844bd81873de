//! Domain rules over a hydrated record. Rules return findings (data), never errors: what
//! happened in the field happened, and a supervisor decides what to do about it.
//!
//! [`findings`] runs the rules that need nothing but the record, so every replica computes the
//! same list. [`findings_with`] adds the rules that need registry facts (certificates,
//! entrustments, matters) and server state (blobs received); the server fills a
//! [`RuleContext`] from its registry and runs them on every merge.

use std::collections::HashSet;

use serde::Serialize;

use crate::numbers::NumberBlock;
use crate::records::{CaseFile, CaseState, Party, Penalty, Record, TransitionIssue};
use crate::scope::Action;

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

impl Finding {
    fn new(
        code: &'static str,
        severity: Severity,
        path: impl Into<String>,
        message: String,
        message_zh: String,
    ) -> Self {
        Self { code, severity, path: path.into(), message, message_zh }
    }
}

/// 200 yuan: the on-site (summary procedure) fine ceiling for a citizen (Administrative
/// Penalty Law Art. 51).
pub const SUMMARY_FINE_LIMIT_PERSON: i64 = 200;
/// 3,000 yuan: the on-site fine ceiling for an organisation (Art. 51).
pub const SUMMARY_FINE_LIMIT_ORGANISATION: i64 = 3_000;
/// 90 days: from filing (立案) to decision, unless extended (Art. 60).
pub const DECISION_DAYS: i64 = 90;

const DAY_MS: i64 = 86_400_000;

/// Registry facts about one certificate, as the rules need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The holder.
    pub officer: String,
    /// Certificate number.
    pub cert_no: String,
    /// Start of validity, ms.
    pub valid_from: i64,
    /// End of validity, ms.
    pub valid_to: i64,
    /// Time of suspension or revocation, ms; `None` while active.
    pub withdrawn_at: Option<i64>,
    /// Sectors covered.
    pub sectors: Vec<String>,
    /// The agency whose territory the certificate is valid in (a township, or the county).
    pub territory: String,
}

impl CertificateFacts {
    fn valid_at(&self, at: i64) -> bool {
        self.valid_from <= at
            && at <= self.valid_to
            && self.withdrawn_at.is_none_or(|withdrawn| at < withdrawn)
    }
}

/// Registry facts about the record's matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatterFacts {
    /// Matter code.
    pub code: String,
    /// Sector.
    pub sector: String,
    /// Fine (yuan) at or above which a citizen must be offered a hearing.
    pub hearing_threshold_person: Option<i64>,
    /// Fine (yuan) at or above which an organisation must be offered a hearing.
    pub hearing_threshold_org: Option<i64>,
}

/// Registry facts about one entrustment scope item of the record's township.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrustmentFacts {
    /// Agreement id.
    pub agreement: String,
    /// Township entrusted.
    pub township: String,
    /// Matter entrusted.
    pub matter: String,
    /// Actions allowed.
    pub actions: Vec<Action>,
    /// Term start, ms.
    pub valid_from: i64,
    /// Term end, ms.
    pub valid_to: i64,
    /// Whether the agreement is active (signed, filed, published and not suspended).
    pub active: bool,
}

/// What the server knows beyond the record.
#[derive(Debug, Clone, Default)]
pub struct RuleContext {
    /// Certificates of the officers named in the record.
    pub certificates: Vec<CertificateFacts>,
    /// The record's matter, when the registry knows it.
    pub matter: Option<MatterFacts>,
    /// Scope items of the record's township.
    pub entrustments: Vec<EntrustmentFacts>,
    /// The record's township and every agency above it (the county): the territories a
    /// certificate may name to cover the act. Empty where unknown, and then the territory is
    /// not checked.
    pub territories: Vec<String>,
    /// SHA-256 (hex) of the evidence blobs the server holds; `None` where unknown.
    pub blobs_received: Option<HashSet<String>>,
    /// Number blocks leased in the number spaces the record's documents use.
    pub number_blocks: Vec<NumberBlock>,
    /// Rendered document numbers already used by other records.
    pub numbers_used_elsewhere: HashSet<String>,
    /// Server time, ms.
    pub now_ms: i64,
}

/// Runs every rule that needs nothing but the record itself.
pub fn findings(record: &Record) -> Vec<Finding> {
    let mut out = Vec::new();
    officer_count(record, &mut out);
    if let Record::Case(case_file) = record {
        transitions(case_file, &mut out);
        summary_fine(case_file, &mut out);
        heavier_than_notified(case_file, &mut out);
        never_entrustable(case_file, &mut out);
    }
    out
}

/// Runs every rule, with the registry facts and server state in `context`.
pub fn findings_with(record: &Record, context: &RuleContext) -> Vec<Finding> {
    let mut out = findings(record);
    let act_time = act_time(record);
    certificates(record, context, act_time, &mut out);
    entrustment(record, context, act_time, &mut out);
    evidence_pending(record, context, &mut out);
    if let Record::Case(case_file) = record {
        hearing_offered(case_file, context, &mut out);
        document_numbers(case_file, context, &mut out);
        decision_deadline(case_file, context.now_ms, &mut out);
    }
    out
}

/// The time the record's acts are checked at: the inspection's start, or the case's filing
/// (its first event when it was never filed).
fn act_time(record: &Record) -> i64 {
    match record {
        Record::Inspection(inspection) => inspection.started_at,
        Record::Case(case_file) => event_time(case_file, "file")
            .or_else(|| case_file.timeline.first().map(|event| event.device_time))
            .unwrap_or_default(),
    }
}

/// The time of the first event of `kind` that counts: a server-authored kind counts only when
/// the server wrote it, as in the case fold (a device's own `file` starts no clock).
fn event_time(case_file: &CaseFile, kind: &str) -> Option<i64> {
    case_file
        .timeline
        .iter()
        .find(|event| event.kind == kind && counts(event))
        .map(|event| event.device_time)
}

/// Whether an event counts for the procedure: any event a device may write, and
/// server-authored kinds only when the server wrote them.
pub(crate) fn counts(event: &crate::records::TimelineEvent) -> bool {
    !crate::records::SERVER_AUTHORED.contains(&event.kind.as_str())
        || event.actor == crate::records::server_actor_hex()
}

fn officer_count(record: &Record, out: &mut Vec<Finding>) {
    let officers = record.officers();
    if officers.len() < 2 {
        out.push(Finding::new(
            "too_few_officers",
            Severity::Error,
            "officers",
            format!(
                "{} officer(s) recorded; at least two certified officers must be present",
                officers.len()
            ),
            format!("仅记录{}名执法人员，执法时应不少于两人", officers.len()),
        ));
    }
}

fn transitions(case_file: &CaseFile, out: &mut Vec<Finding>) {
    for issue in case_file.fold().issues {
        out.push(match issue {
            TransitionIssue::Invalid { index, kind, from } => Finding::new(
                "invalid_transition",
                Severity::Error,
                format!("timeline.{index}"),
                format!("event {kind:?} is not allowed in state {}", from.as_str()),
                format!("案件处于“{}”状态时不得进行“{kind}”", from.as_str()),
            ),
            TransitionIssue::Unauthorised { index, kind, actor } => Finding::new(
                "unauthorised_transition",
                Severity::Error,
                format!("timeline.{index}"),
                format!("{kind:?} may only be recorded by the server on a supervisor's approval; actor {actor} wrote it"),
                format!("“{kind}”须经审批后由系统记录，设备{actor}不得自行记录"),
            ),
            TransitionIssue::Concurrent { indexes, kinds } => Finding::new(
                "conflicting_transitions",
                Severity::Error,
                format!("timeline.{}", indexes[0]),
                format!(
                    "transitions {} were recorded concurrently; a supervisor must decide",
                    kinds.join(", ")
                ),
                format!("程序环节“{}”被并发记录，需由监督人员裁定", kinds.join("、")),
            ),
        });
    }
}

fn first_party(case_file: &CaseFile) -> Option<&Party> {
    case_file.parties.first()
}

fn summary_fine(case_file: &CaseFile, out: &mut Vec<Finding>) {
    if case_file.procedure != "summary" {
        return;
    }
    let organisation = first_party(case_file).is_some_and(Party::is_organisation);
    let limit =
        if organisation { SUMMARY_FINE_LIMIT_ORGANISATION } else { SUMMARY_FINE_LIMIT_PERSON };
    for (path, penalty) in [
        ("final_penalty", &case_file.final_penalty),
        ("proposed_penalty", &case_file.proposed_penalty),
    ] {
        if let Some(penalty) = penalty.as_ref().filter(|penalty| penalty.fine_yuan > limit) {
            out.push(Finding::new(
                "summary_fine_over_limit",
                Severity::Error,
                format!("{path}.fine_yuan"),
                format!(
                    "an on-site fine of {} yuan exceeds the {limit} yuan summary-procedure limit",
                    penalty.fine_yuan
                ),
                format!("当场罚款{}元超过简易程序{limit}元上限", penalty.fine_yuan),
            ));
            return;
        }
    }
}

fn heavier(final_penalty: &Penalty, notified: &Penalty) -> bool {
    final_penalty.fine_yuan > notified.fine_yuan
        || final_penalty.confiscation_yuan > notified.confiscation_yuan
        || final_penalty.kinds.iter().any(|kind| !notified.kinds.contains(kind))
}

fn heavier_than_notified(case_file: &CaseFile, out: &mut Vec<Finding>) {
    if let (Some(final_penalty), Some(notified)) =
        (&case_file.final_penalty, &case_file.proposed_penalty)
        && heavier(final_penalty, notified)
    {
        out.push(Finding::new(
            "penalty_heavier_than_notified",
            Severity::Error,
            "final_penalty",
            "the decided penalty is heavier than the one notified; notify the party again"
                .to_owned(),
            "决定的处罚重于事先告知的处罚，应重新告知".to_owned(),
        ));
    }
}

/// Event kinds that are coercive measures or detention, which are never entrusted.
const NEVER_ENTRUSTABLE_EVENTS: [&str; 3] = ["coerce", "coercive_measure", "detain"];

fn never_entrustable(case_file: &CaseFile, out: &mut Vec<Finding>) {
    for (index, event) in case_file.timeline.iter().enumerate() {
        if NEVER_ENTRUSTABLE_EVENTS.contains(&event.kind.as_str()) {
            out.push(Finding::new(
                "not_entrustable",
                Severity::Error,
                format!("timeline.{index}"),
                format!("{} can never be entrusted to a township", event.kind),
                "行政强制措施和限制人身自由的处罚不得委托乡镇实施".to_owned(),
            ));
        }
    }
}

fn certificates(record: &Record, context: &RuleContext, at: i64, out: &mut Vec<Finding>) {
    for (index, present) in record.officers().iter().enumerate() {
        let held: Vec<&CertificateFacts> =
            context.certificates.iter().filter(|cert| cert.officer == present.officer).collect();
        let Some(valid) = held.iter().find(|cert| cert.valid_at(at)) else {
            out.push(Finding::new(
                "certificate_invalid",
                Severity::Error,
                format!("officers.{index}"),
                format!(
                    "officer {} held no valid enforcement certificate at the time of the act",
                    present.officer
                ),
                format!("执法人员{}在执法时未持有有效执法证件", present.officer),
            ));
            continue;
        };
        if !context.territories.is_empty() && !context.territories.contains(&valid.territory) {
            out.push(Finding::new(
                "certificate_out_of_territory",
                Severity::Error,
                format!("officers.{index}"),
                format!(
                    "certificate {} is valid in {}, not in township {}",
                    valid.cert_no,
                    valid.territory,
                    record.township()
                ),
                format!(
                    "执法证件{}的执法区域为{}，不含乡镇{}",
                    valid.cert_no,
                    valid.territory,
                    record.township()
                ),
            ));
        }
        if let Some(matter) = &context.matter
            && !valid.sectors.contains(&matter.sector)
        {
            out.push(Finding::new(
                "certificate_out_of_scope",
                Severity::Error,
                format!("officers.{index}"),
                format!("certificate {} does not cover sector {}", valid.cert_no, matter.sector),
                format!("执法证件{}的执法类别不包含{}", valid.cert_no, matter.sector),
            ));
        }
    }
}

fn required_action(record: &Record) -> Action {
    match record {
        Record::Inspection(_) => Action::Inspect,
        Record::Case(case_file) if case_file.procedure == "summary" => Action::SummaryPenalty,
        Record::Case(_) => Action::GeneralPenalty,
    }
}

/// Whether the act is inside an entrustment, told apart the way a supervisor must act on it:
/// the matter was never entrusted to the township (`matter_not_entrusted`), it was but no
/// agreement was in force at the act — expired, not yet in force, suspended or revoked
/// (`agreement_not_in_force`) — or the agreements in force do not allow this action, say a
/// general-procedure penalty where only on-site penalties were entrusted
/// (`action_not_entrusted`).
fn entrustment(record: &Record, context: &RuleContext, at: i64, out: &mut Vec<Finding>) {
    let action = required_action(record);
    let items: Vec<&EntrustmentFacts> = context
        .entrustments
        .iter()
        .filter(|item| item.township == record.township() && item.matter == record.matter())
        .collect();
    let in_force: Vec<&&EntrustmentFacts> = items
        .iter()
        .filter(|item| item.active && item.valid_from <= at && at <= item.valid_to)
        .collect();
    if in_force.iter().any(|item| item.actions.contains(&action)) {
        return;
    }
    let (matter, township, action_name) = (record.matter(), record.township(), action.as_str());
    out.push(if items.is_empty() {
        Finding::new(
            "matter_not_entrusted",
            Severity::Error,
            "matter",
            format!("matter {matter} ({action_name}) was never entrusted to township {township}"),
            format!("事项{matter}未委托乡镇{township}实施"),
        )
    } else if in_force.is_empty() {
        Finding::new(
            "agreement_not_in_force",
            Severity::Error,
            "matter",
            format!(
                "no agreement entrusting matter {matter} to township {township} was in force at \
                 the time of the act (expired, not yet in force, suspended or revoked)"
            ),
            format!("执法时委托乡镇{township}实施事项{matter}的委托协议不在有效期内或未生效"),
        )
    } else {
        Finding::new(
            "action_not_entrusted",
            Severity::Error,
            "matter",
            format!(
                "the agreements in force entrust matter {matter} to township {township}, but not \
                 the action {action_name}"
            ),
            format!("委托协议未授权乡镇{township}就事项{matter}实施{action_name}"),
        )
    });
}

fn evidence_pending(record: &Record, context: &RuleContext, out: &mut Vec<Finding>) {
    let Some(received) = &context.blobs_received else { return };
    for (index, item) in record.evidence().iter().enumerate() {
        if !received.contains(&item.sha256) {
            out.push(Finding::new(
                "evidence_pending",
                Severity::Info,
                format!("evidence.{index}"),
                format!("the bytes of evidence {} have not been uploaded yet", item.id),
                format!("证据{}的文件尚未上传", item.id),
            ));
        }
    }
}

fn hearing_offered(case_file: &CaseFile, context: &RuleContext, out: &mut Vec<Finding>) {
    let Some(matter) = &context.matter else { return };
    let organisation = first_party(case_file).is_some_and(Party::is_organisation);
    let threshold =
        if organisation { matter.hearing_threshold_org } else { matter.hearing_threshold_person };
    let Some(threshold) = threshold else { return };
    let Some(proposed) = &case_file.proposed_penalty else { return };
    if proposed.fine_yuan < threshold {
        return;
    }
    for (index, event) in
        case_file.timeline.iter().enumerate().filter(|(_, event)| event.kind == "notify")
    {
        if event.fields.get("hearing_rights").map(String::as_str) != Some("true") {
            out.push(Finding::new(
                "hearing_rights_not_offered",
                Severity::Error,
                format!("timeline.{index}"),
                format!("a fine of {} yuan reaches the {threshold} yuan hearing threshold, but the notice offers no hearing", proposed.fine_yuan),
                format!("罚款{}元达到听证标准{threshold}元，告知书未告知听证权利", proposed.fine_yuan),
            ));
        }
    }
}

fn document_numbers(case_file: &CaseFile, context: &RuleContext, out: &mut Vec<Finding>) {
    let mut seen = HashSet::new();
    for (index, document) in case_file.documents.iter().enumerate() {
        let path = format!("documents.{index}.number");
        let used_twice = !seen.insert(document.number.as_str())
            || context.numbers_used_elsewhere.contains(&document.number);
        if used_twice {
            out.push(Finding::new(
                "number_used_twice",
                Severity::Error,
                path.clone(),
                format!("document number {} is used more than once", document.number),
                format!("文书编号{}被重复使用", document.number),
            ));
        }
        // Server-allocated numbers (general-procedure decisions) carry no block.
        if document.block.is_empty() {
            continue;
        }
        let in_block = context.number_blocks.iter().any(|block| {
            block.id == document.block
                && block.contains(document.serial)
                && block.render(document.serial) == document.number
        });
        if !in_block {
            out.push(Finding::new(
                "number_outside_block",
                Severity::Error,
                path,
                format!(
                    "document number {} is not inside the device's number block {}",
                    document.number, document.block
                ),
                format!("文书编号{}不在设备领用的号段{}内", document.number, document.block),
            ));
        }
    }
}

/// The decision deadline: 90 days after filing, plus recorded extensions, plus the time spent
/// suspended.
pub(crate) fn decision_due(case_file: &CaseFile) -> Option<i64> {
    let filed = event_time(case_file, "file")?;
    let mut due = filed + DECISION_DAYS * DAY_MS;
    let mut suspended_since = None;
    for event in &case_file.timeline {
        match event.kind.as_str() {
            "extend" => {
                let days: i64 =
                    event.fields.get("days").and_then(|days| days.parse().ok()).unwrap_or(0);
                due += days.max(0) * DAY_MS;
            }
            "suspend" => suspended_since = Some(event.device_time),
            "resume" => {
                if let Some(since) = suspended_since.take() {
                    due += (event.device_time - since).max(0);
                }
            }
            _ => {}
        }
    }
    Some(due)
}

fn decision_deadline(case_file: &CaseFile, now_ms: i64, out: &mut Vec<Finding>) {
    let Some(due) = decision_due(case_file) else { return };
    let decided = event_time(case_file, "decide");
    let state = case_file.fold().state;
    let closed_without_decision =
        matches!(state, CaseState::Terminated | CaseState::Transferred | CaseState::NotFiled);
    let late = match decided {
        Some(decided) => decided > due,
        None => !closed_without_decision && now_ms > due,
    };
    if late {
        out.push(Finding::new(
            "decision_overdue",
            Severity::Error,
            "timeline",
            "the decision came, or is still missing, more than 90 days after filing (extensions and suspensions counted)".to_owned(),
            "自立案之日起九十日内（含批准延长和中止期间）未作出处罚决定".to_owned(),
        ));
    }
}

#[cfg(test)]
mod tests;
