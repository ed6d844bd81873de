//! `fieldcase report ...`: the supervision reports (issue 6) through the enrolled supervisor's
//! (or admin's) device session: the overdue board, the alerts, the officer assessment, and the
//! quarterly case report (`quarterly`, `submit`, `acknowledge`).
//!
//! `--json` prints the server's JSON as it is; `--format csv` prints the server's CSV (UTF-8
//! with a BOM) as it is, with or without `--json`; otherwise a short table for people.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use crate::auth::Session;
use crate::client::{Client, paths};
use crate::commands::device::{open_store, require_enrollment};
use crate::commands::{Output, Settings};

/// `fieldcase report ...`.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Every open deadline of every case with its due date, overdue ones flagged, and the
    /// agreements and certificates expiring within 30 days.
    Overdue(FormatArgs),
    /// Out-of-scope alerts, duplicate enforcement (one party and matter, two townships or
    /// agencies at overlapping times), second fines for one act, leads passed on twice or more.
    Alerts(FormatArgs),
    /// Per officer and township: volume, timeliness (decided within 90 days, served and filed
    /// on time), overdue, findings, veto items, returns, certificate status; never an amount.
    Assessment(AssessmentArgs),
    /// Generates the quarterly case report (案件报告) of a township to its entrusting
    /// department and prints it (`--format csv`: its case list).
    Quarterly(QuarterlyArgs),
    /// Records that the township submitted a quarterly report (once).
    Submit(ReportIdArgs),
    /// Records that the department acknowledged a submitted quarterly report (once).
    Acknowledge(ReportIdArgs),
}

/// `fieldcase report quarterly`.
#[derive(Debug, Args)]
pub struct QuarterlyArgs {
    /// The entrusting department (agency id).
    #[arg(long)]
    pub department: String,
    /// The reporting township (agency id).
    #[arg(long)]
    pub township: String,
    /// The quarter, `YYYY-Qn`.
    #[arg(long)]
    pub quarter: String,
    /// The format.
    #[command(flatten)]
    pub format: FormatArgs,
}

/// A stored quarterly report.
#[derive(Debug, Args)]
pub struct ReportIdArgs {
    /// The report id (`qr-...`).
    pub id: String,
}

/// The format the server answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// JSON (printed with `--json`, or as a table).
    Json,
    /// CSV, UTF-8 with a BOM, printed as it is.
    Csv,
}

/// The format of a report.
#[derive(Debug, Args)]
pub struct FormatArgs {
    /// `csv` prints the server's CSV as it is.
    #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
    pub format: ReportFormat,
}

/// `fieldcase report assessment`.
#[derive(Debug, Args)]
pub struct AssessmentArgs {
    /// First day of the period (YYYY-MM-DD, UTC), inclusive.
    #[arg(long)]
    pub from: Option<String>,
    /// Last day of the period (YYYY-MM-DD, UTC), inclusive.
    #[arg(long)]
    pub to: Option<String>,
    /// The format.
    #[command(flatten)]
    pub format: FormatArgs,
}

/// Runs a report command with the enrolled device's session.
pub fn report(settings: &Settings, command: &ReportCommand) -> Result<Output> {
    // The store stays open (and the home locked) so that no other command of this device
    // rewrites the session cache meanwhile.
    let store = open_store(settings)?;
    require_enrollment(&store)?;
    let mut session = Session::open(Client::new(&settings.server), &settings.home)
        .context("opening the device session")?;
    let (name, mut query, format) = match command {
        ReportCommand::Quarterly(args) => return quarterly(&mut session, args),
        ReportCommand::Submit(args) => return step(&mut session, &args.id, "submit"),
        ReportCommand::Acknowledge(args) => return step(&mut session, &args.id, "acknowledge"),
        ReportCommand::Overdue(args) => ("overdue", Vec::new(), args.format),
        ReportCommand::Alerts(args) => ("alerts", Vec::new(), args.format),
        ReportCommand::Assessment(args) => {
            let mut query = Vec::new();
            if let Some(from) = &args.from {
                query.push(("from", from.as_str()));
            }
            if let Some(to) = &args.to {
                query.push(("to", to.as_str()));
            }
            ("assessment", query, args.format.format)
        }
    };
    if format == ReportFormat::Csv {
        query.push(("format", "csv"));
        let path = paths::report(name, &query);
        let body = session
            .send("GET", &path, None, Vec::new())
            .and_then(crate::client::RawResponse::into_body)
            .with_context(|| format!("reading the {name} report"))?;
        let text = String::from_utf8(body).context("the CSV report is not UTF-8")?;
        return Ok(Output::verbatim(text));
    }
    let report = session
        .get_json(&paths::report(name, &query))
        .with_context(|| format!("reading the {name} report"))?;
    let text = match command {
        ReportCommand::Overdue(_) => render_overdue(&report),
        ReportCommand::Alerts(_) => render_alerts(&report),
        ReportCommand::Assessment(_) => render_assessment(&report),
        ReportCommand::Quarterly(_) | ReportCommand::Submit(_) | ReportCommand::Acknowledge(_) => {
            unreachable!("answered above")
        }
    };
    Ok(Output::new(&report, text))
}

/// Generates a quarterly report; prints its JSON, or fetches its case list as CSV.
fn quarterly(session: &mut Session, args: &QuarterlyArgs) -> Result<Output> {
    let request = serde_json::json!({
        "department": args.department,
        "township": args.township,
        "quarter": args.quarter,
    });
    let report = session
        .post_json(paths::QUARTERLY_REPORTS, &request)
        .context("generating the quarterly report")?;
    let id = report["id"].as_str().context("the report has no id")?.to_owned();
    if args.format.format == ReportFormat::Csv {
        let body = session
            .send(
                "GET",
                &paths::quarterly_report(&id, None, &[("format", "csv")]),
                None,
                Vec::new(),
            )
            .and_then(crate::client::RawResponse::into_body)
            .context("reading the quarterly report as CSV")?;
        let text = String::from_utf8(body).context("the CSV report is not UTF-8")?;
        return Ok(Output::verbatim(text));
    }
    let text = render_quarterly(&report);
    Ok(Output::new(&report, text))
}

/// Records `submit` or `acknowledge` of a quarterly report.
fn step(session: &mut Session, id: &str, step: &str) -> Result<Output> {
    let report = session
        .post_json(&paths::quarterly_report(id, Some(step), &[]), &serde_json::json!({}))
        .with_context(|| format!("recording {step} of quarterly report {id}"))?;
    let text = format!(
        "{id}: submitted {} by {}, acknowledged {} by {}",
        cell(&report["submitted_at"]),
        cell(&report["submitted_by"]),
        cell(&report["acknowledged_at"]),
        cell(&report["acknowledged_by"]),
    );
    Ok(Output::new(&report, text))
}

fn render_quarterly(report: &Value) -> String {
    let body = &report["body"];
    let mut text = format!(
        "{} quarterly report {} of {} to {}",
        cell(&report["quarter"]),
        cell(&report["id"]),
        cell(&report["township"]),
        cell(&report["department"]),
    );
    for row in rows(body, "counts") {
        let _ = write!(
            text,
            "\n  {:<10}  {:<8}  {:<22}  {}",
            cell(&row["matter"]),
            cell(&row["procedure"]),
            cell(&row["outcome"]),
            cell(&row["cases"]),
        );
    }
    for case in rows(body, "cases") {
        let _ = write!(
            text,
            "\n  {}  {:<20}  {:<20}  {:<22}  overdue {}",
            cell(&case["doc_id"]),
            cell(&case["case_no"]),
            cell(&case["party"]),
            cell(&case["outcome"]),
            cell(&case["overdue"]),
        );
    }
    let filing = &body["summary_filing"];
    let _ = write!(
        text,
        "\nsummary cases filed with the agency: {} of {}",
        cell(&filing["filed_with_agency"]),
        cell(&filing["summary_cases"]),
    );
    text
}

/// `part/whole`, as people read a timeliness share.
fn share(part: &Value, whole: &Value) -> String {
    format!("{}/{}", cell(part), cell(whole))
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn rows<'a>(report: &'a Value, key: &str) -> &'a [Value] {
    report[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn render_overdue(report: &Value) -> String {
    let mut text = format!(
        "{:<16}  {:<36}  {:<14}  {:<10}  {:<13}  OVERDUE",
        "DEADLINE", "DOCUMENT", "TOWNSHIP", "MATTER", "DUE (ms)"
    );
    for row in rows(report, "deadlines") {
        let _ = write!(
            text,
            "\n{:<16}  {:<36}  {:<14}  {:<10}  {:<13}  {}",
            cell(&row["deadline"]),
            cell(&row["doc_id"]),
            cell(&row["township"]),
            cell(&row["matter"]),
            cell(&row["due"]),
            if row["overdue"] == Value::Bool(true) { "yes" } else { "no" },
        );
    }
    for row in rows(report, "expiring") {
        let _ = write!(
            text,
            "\n{} {} ({}) expires at {}",
            cell(&row["kind"]),
            cell(&row["id"]),
            cell(&row["township"]),
            cell(&row["valid_to"]),
        );
    }
    text
}

fn render_alerts(report: &Value) -> String {
    let mut text = String::from("out of scope:");
    for row in rows(report, "scope") {
        let _ = write!(
            text,
            "\n  {:<26}  {}  {}  {}",
            cell(&row["code"]),
            cell(&row["doc_id"]),
            cell(&row["township"]),
            cell(&row["matter"]),
        );
    }
    for (title, key) in [
        ("duplicate enforcement", "duplicate_enforcement"),
        ("second fine for one act", "second_fine"),
    ] {
        let _ = write!(text, "\n{title}:");
        for alert in rows(report, key) {
            let _ = write!(
                text,
                "\n  party {} matter {}:",
                cell(&alert["party_key"]),
                cell(&alert["matter"])
            );
            for record in rows(alert, "records") {
                let _ =
                    write!(text, " {} ({})", cell(&record["doc_id"]), cell(&record["township"]));
            }
        }
    }
    text.push_str("\npassed on twice or more:");
    for row in rows(report, "passed_on") {
        let _ = write!(
            text,
            "\n  {}  {}  {}  {} times",
            cell(&row["doc_id"]),
            cell(&row["township"]),
            cell(&row["matter"]),
            cell(&row["times"]),
        );
    }
    text
}

fn render_assessment(report: &Value) -> String {
    let mut text = format!(
        "{:<9}  {:<14}  {:>7}  {:>11}  {:>7}  {:>7}  {:>7}  {:>7}  {:>7}  {:>7}  {:>8}  {:>4}  \
         {:>8}  CERTIFICATES",
        "LEVEL",
        "ID",
        "RECORDS",
        "INSPECTIONS",
        "SUMMARY",
        "GENERAL",
        "IN 90 D",
        "SERVED",
        "FILED",
        "OVERDUE",
        "FINDINGS",
        "VETO",
        "RETURNED"
    );
    for (level, key) in [("officer", "officers"), ("township", "townships")] {
        for row in rows(report, key) {
            let veto = [
                "veto_no_legal_subject",
                "veto_too_few_officers",
                "veto_certificate_invalid",
                "veto_out_of_scope",
            ]
            .iter()
            .map(|name| row[*name].as_i64().unwrap_or(0))
            .sum::<i64>();
            let _ = write!(
                text,
                "\n{:<9}  {:<14}  {:>7}  {:>11}  {:>7}  {:>7}  {:>7}  {:>7}  {:>7}  {:>7}  {:>8}  \
                 {:>4}  {:>8}  {}",
                level,
                cell(&row["id"]),
                cell(&row["records"]),
                cell(&row["inspections"]),
                cell(&row["summary_cases"]),
                cell(&row["general_cases"]),
                share(&row["decided_in_time"], &row["decisions_due"]),
                share(&row["served_in_time"], &row["services_due"]),
                share(&row["filed_in_time"], &row["filings_due"]),
                cell(&row["overdue"]),
                cell(&row["findings"]),
                veto,
                cell(&row["returned"]),
                cell(&row["certificate_status"]),
            );
        }
    }
    text
}
