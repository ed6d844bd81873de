//! The statutory deadlines of a case, derived from its timeline (DOMAIN.md §2, §4.3).
//!
//! Each open deadline says what must happen, by when, and from which event the clock runs.
//! Day-counted periods use calendar days; working-day periods use the holiday calendar
//! ([`crate::calendar::Calendar`]), and a deadline computed in a year the calendar does not
//! cover is marked provisional. Pure: the server projects these at merge time so the overdue
//! board is a query, and a device can show them offline.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime};
use serde::Serialize;

use crate::calendar::Calendar;
use crate::records::CaseFile;

const DAY_MS: i64 = 86_400_000;

/// Working days to serve a decision on a party who was absent (Art. 61).
pub const SERVICE_WORKING_DAYS: u32 = 7;
/// Working days for a party to request a hearing after the notice (Art. 64(1)).
pub const HEARING_REQUEST_WORKING_DAYS: u32 = 5;
/// Days to pay a fine after the decision is served (Art. 67).
pub const PAYMENT_DAYS: i64 = 15;
/// Working days from a lead to the filing decision (立案), the check period of SAMR-P Art. 18
/// that DOMAIN.md §2 cites for "file promptly" (Art. 54 ¶2).
pub const FILING_WORKING_DAYS: u32 = 15;

/// When a case's timed steps were due and when they happened, for the assessment's timeliness
/// shares (DOMAIN.md §4.2). A step that has not happened has `None`; a due time is `None` when
/// its clock never started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Timeliness {
    /// The lead: the device time of the case's first event (general procedure only).
    pub lead_at: Option<i64>,
    /// [`FILING_WORKING_DAYS`] after the lead.
    pub filing_due: Option<i64>,
    /// The server's filing (立案).
    pub filed_at: Option<i64>,
    /// 90 days after filing plus extensions and suspensions.
    pub decision_due: Option<i64>,
    /// The server's decision.
    pub decided_at: Option<i64>,
    /// [`SERVICE_WORKING_DAYS`] after the decision.
    pub service_due: Option<i64>,
    /// The service (送达).
    pub served_at: Option<i64>,
}

/// The timed steps of a case: filing, decision and service, each with its due time. Only
/// events that count are read (a device's own `file` or `decide` is not a filing or decision).
pub fn timeliness(case_file: &CaseFile, calendar: &Calendar) -> Timeliness {
    let first = |kind: &str| {
        case_file
            .timeline
            .iter()
            .find(|event| event.kind == kind && crate::validate::counts(event))
            .map(|event| event.device_time)
    };
    let general = case_file.procedure == "general";
    let lead_at = case_file.timeline.first().map(|event| event.device_time).filter(|_| general);
    let decided_at = first("decide");
    Timeliness {
        lead_at,
        filing_due: lead_at.map(|lead| {
            working_day_deadline("filing", "lead", lead, FILING_WORKING_DAYS, calendar).due
        }),
        filed_at: first("file"),
        decision_due: crate::validate::decision_due(case_file),
        decided_at,
        service_due: decided_at.map(|decided| {
            working_day_deadline("service", "decide", decided, SERVICE_WORKING_DAYS, calendar).due
        }),
        served_at: first("serve"),
    }
}

/// One open deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deadline {
    /// Stable snake_case code: `filing`, `decision`, `service`, `hearing_request`, `payment`.
    pub code: &'static str,
    /// The event kind the clock runs from.
    pub from_event: String,
    /// Due time, ms since the epoch (end of the due day, UTC, for day-counted periods).
    pub due: i64,
    /// The holiday calendar did not cover the due date's year: weekends only were counted.
    pub provisional: bool,
}

/// The deadlines still open in the case's timeline (the filing deadline is the
/// [`FILING_WORKING_DAYS`] of a lead; the decision deadline is the 90 days of
/// [`crate::validate::DECISION_DAYS`] plus extensions and suspensions): each clock starts at its event and stops
/// at the event that meets it.
pub fn open_deadlines(case_file: &CaseFile, calendar: &Calendar) -> Vec<Deadline> {
    let time_of = |kind: &str| {
        case_file
            .timeline
            .iter()
            .rev()
            .find(|event| event.kind == kind && crate::validate::counts(event))
            .map(|event| event.device_time)
    };
    let mut open = Vec::new();
    // A lead (线索) still waiting for the filing decision: its clock runs from the case's first
    // event, the earliest the record tells of the lead.
    if case_file.procedure == "general"
        && case_file.fold().state == crate::records::CaseState::Lead
        && let Some(lead) = case_file.timeline.first()
    {
        open.push(working_day_deadline(
            "filing",
            &lead.kind,
            lead.device_time,
            FILING_WORKING_DAYS,
            calendar,
        ));
    }
    if let (Some(_), None) = (time_of("file"), time_of("decide"))
        && let Some(due) = crate::validate::decision_due(case_file)
        && !matches!(
            case_file.fold().state,
            crate::records::CaseState::Terminated
                | crate::records::CaseState::Transferred
                | crate::records::CaseState::NotFiled
        )
    {
        open.push(Deadline {
            code: "decision",
            from_event: "file".to_owned(),
            due,
            provisional: false,
        });
    }
    if let (Some(decided), None) = (time_of("decide"), time_of("serve")) {
        open.push(working_day_deadline(
            "service",
            "decide",
            decided,
            SERVICE_WORKING_DAYS,
            calendar,
        ));
    }
    if let (Some(notified), None, None) = (time_of("notify"), time_of("hearing"), time_of("decide"))
    {
        open.push(working_day_deadline(
            "hearing_request",
            "notify",
            notified,
            HEARING_REQUEST_WORKING_DAYS,
            calendar,
        ));
    }
    // The party receives the decision when it is served, or, in the summary procedure, when
    // it is handed over on site; payment (or the on-site decision's execution) stops the clock.
    let received = time_of("serve")
        .or_else(|| (case_file.procedure == "summary").then(|| time_of("issue_on_site")).flatten());
    let from_event = if time_of("serve").is_some() { "serve" } else { "issue_on_site" };
    if let (Some(served), None, None) = (received, time_of("paid"), time_of("execute")) {
        let has_fine =
            case_file.final_penalty.as_ref().is_some_and(|penalty| penalty.fine_yuan > 0);
        if has_fine {
            open.push(Deadline {
                code: "payment",
                from_event: from_event.to_owned(),
                due: end_of_day(served + PAYMENT_DAYS * DAY_MS),
                provisional: false,
            });
        }
    }
    open
}

fn working_day_deadline(
    code: &'static str,
    from_event: &str,
    start_ms: i64,
    working_days: u32,
    calendar: &Calendar,
) -> Deadline {
    let start = date_of(start_ms);
    let due_day = calendar.add_working_days(start, working_days);
    let provisional = !calendar.covers(start.year()) || !calendar.covers(due_day.year());
    let due = due_day.and_time(NaiveTime::MIN).and_utc().timestamp_millis() + DAY_MS - 1;
    Deadline { code, from_event: from_event.to_owned(), due, provisional }
}

fn date_of(ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(ms).unwrap_or_default().date_naive()
}

fn end_of_day(ms: i64) -> i64 {
    date_of(ms).and_time(NaiveTime::MIN).and_utc().timestamp_millis() + DAY_MS - 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_device_written_filing_starts_no_clock() {
        let mut case_file = case_with(&[]);
        case_file.append_event(
            "e0".to_owned(),
            "file".to_owned(),
            "o-1".to_owned(),
            "aa".to_owned(),
            ms("2026-01-05"),
            BTreeMap::new(),
        );
        // No decision clock: the case is still a lead, waiting for the server's filing.
        let open: Vec<&str> = codes(&case_file).into_iter().map(|(code, ..)| code).collect();
        assert_eq!(open, ["filing"]);
    }

    use std::collections::BTreeMap;

    use super::*;
    use crate::records::{Party, Penalty, Procedure, server_actor_hex};

    fn ms(date: &str) -> i64 {
        NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .unwrap()
            .and_time(NaiveTime::MIN)
            .and_utc()
            .timestamp_millis()
    }

    fn case_with(events: &[(&str, &str)]) -> CaseFile {
        let mut case_file = CaseFile::new(
            "c".to_owned(),
            Procedure::General,
            "AJ-001".to_owned(),
            Party::default(),
        );
        for (kind, date) in events {
            let id = format!("e{}", case_file.timeline.len());
            let actor = if crate::records::SERVER_AUTHORED.contains(kind) {
                server_actor_hex()
            } else {
                "aa".to_owned()
            };
            case_file.append_event(
                id,
                (*kind).to_owned(),
                "o-1".to_owned(),
                actor,
                ms(date),
                BTreeMap::new(),
            );
        }
        case_file
    }

    fn codes(case_file: &CaseFile) -> Vec<(&'static str, String, bool)> {
        open_deadlines(case_file, &Calendar::shipped())
            .into_iter()
            .map(|deadline| {
                (deadline.code, date_of(deadline.due).to_string(), deadline.provisional)
            })
            .collect()
    }

    #[test]
    fn the_decision_clock_runs_from_filing_until_the_decision() {
        let filed = case_with(&[("file", "2026-03-02")]);
        assert_eq!(codes(&filed), vec![("decision", "2026-05-31".to_owned(), false)]);
        let decided = case_with(&[
            ("file", "2026-03-02"),
            ("investigate", "2026-03-03"),
            ("close_investigation", "2026-03-10"),
            ("notify", "2026-03-11"),
            ("decide", "2026-04-01"),
        ]);
        assert!(!codes(&decided).iter().any(|(code, ..)| *code == "decision"));
    }

    #[test]
    fn service_and_hearing_windows_count_working_days_across_holidays() {
        let decided = case_with(&[
            ("file", "2026-08-01"),
            ("investigate", "2026-08-02"),
            ("close_investigation", "2026-08-03"),
            ("notify", "2026-09-01"),
            ("decide", "2026-09-28"),
        ]);
        assert_eq!(codes(&decided), vec![("service", "2026-10-13".to_owned(), false)]);
        let notified = case_with(&[
            ("file", "2026-08-01"),
            ("investigate", "2026-08-02"),
            ("close_investigation", "2026-08-03"),
            ("notify", "2026-09-30"),
        ]);
        let windows = codes(&notified);
        assert!(
            windows.contains(&("hearing_request", "2026-10-13".to_owned(), false)),
            "{windows:?}"
        );
    }

    #[test]
    fn payment_is_due_fifteen_days_after_service_and_late_years_are_provisional() {
        let mut served = case_with(&[
            ("file", "2026-12-01"),
            ("investigate", "2026-12-02"),
            ("close_investigation", "2026-12-03"),
            ("notify", "2026-12-04"),
            ("decide", "2026-12-28"),
            ("serve", "2026-12-29"),
        ]);
        served.final_penalty = Some(Penalty {
            kinds: vec!["fine".to_owned()],
            fine_yuan: 500,
            confiscation_yuan: 0,
            description: String::new(),
        });
        assert_eq!(codes(&served), vec![("payment", "2027-01-13".to_owned(), false)]);
        let decided_late = case_with(&[
            ("file", "2026-12-01"),
            ("investigate", "2026-12-02"),
            ("close_investigation", "2026-12-03"),
            ("notify", "2026-12-04"),
            ("decide", "2026-12-28"),
        ]);
        assert_eq!(codes(&decided_late), vec![("service", "2027-01-06".to_owned(), true)]);
    }

    #[test]
    fn timeliness_reads_each_step_against_its_due_time() {
        // Lead on 2026-09-25 (Mid-Autumn): the 15 working days skip the National Day week
        // and count Saturday 10-10, a make-up working day, so filing is due on 2026-10-22 and
        // the filing on 10-20 is on time. Decided 2026-12-01: service is due 7 working days
        // later, on 12-10, and the service on 12-15 is late.
        let case_file = case_with(&[
            ("request_file", "2026-09-25"),
            ("file", "2026-10-20"),
            ("investigate", "2026-10-21"),
            ("close_investigation", "2026-10-22"),
            ("notify", "2026-11-02"),
            ("decide", "2026-12-01"),
            ("serve", "2026-12-15"),
        ]);
        let day = |ms: Option<i64>| ms.map(|ms| date_of(ms).to_string());
        let steps = timeliness(&case_file, &Calendar::shipped());
        assert_eq!(day(steps.lead_at).as_deref(), Some("2026-09-25"));
        assert_eq!(day(steps.filing_due).as_deref(), Some("2026-10-22"));
        assert_eq!(day(steps.filed_at).as_deref(), Some("2026-10-20"));
        assert_eq!(day(steps.decision_due).as_deref(), Some("2027-01-18"));
        assert_eq!(day(steps.service_due).as_deref(), Some("2026-12-10"));
        assert_eq!(day(steps.served_at).as_deref(), Some("2026-12-15"));
    }

    #[test]
    fn an_on_site_fine_is_due_fifteen_days_after_it_was_handed_over() {
        let mut on_site = case_with(&[("issue_on_site", "2026-06-01")]);
        on_site.procedure = "summary".to_owned();
        on_site.final_penalty = Some(Penalty {
            kinds: vec!["fine".to_owned()],
            fine_yuan: 100,
            confiscation_yuan: 0,
            description: String::new(),
        });
        assert_eq!(codes(&on_site), vec![("payment", "2026-06-16".to_owned(), false)]);
        let mut executed = on_site;
        executed.append_event(
            "e9".to_owned(),
            "execute".to_owned(),
            "o-1".to_owned(),
            "aa".to_owned(),
            ms("2026-06-03"),
            BTreeMap::new(),
        );
        assert!(codes(&executed).is_empty());
    }

    #[test]
    fn a_lead_is_due_for_filing_fifteen_working_days_after_its_first_event() {
        let lead = case_with(&[("request_file", "2026-09-25"), ("pass_on", "2026-09-28")]);
        assert_eq!(codes(&lead), vec![("filing", "2026-10-22".to_owned(), false)]);
        let filed = case_with(&[("request_file", "2026-09-25"), ("file", "2026-09-28")]);
        assert!(codes(&filed).iter().all(|(code, ..)| *code != "filing"));
        let transferred = case_with(&[("transfer", "2026-09-25")]);
        assert!(codes(&transferred).is_empty());
    }
}
