//! `fieldcase review ...`: the supervisor console (docs/review.md) through the enrolled
//! supervisor's (or admin's) device session: the queue, one record as a supervisor reviews it,
//! and the actions resolve, approve, return and grant.
//!
//! `--json` prints the server's JSON as it is; text mode prints a table, the record, or one
//! line. The server decides who may review (`forbidden` for an officer's device) and what an
//! action may touch (`invalid_edit`); the command only shapes the request.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use sync_core::ids::DocumentId;

use crate::auth::Session;
use crate::client::Client;
use crate::client::paths::{self, ReviewAction};
use crate::commands::device::{open_store, require_enrollment};
use crate::commands::{Output, Settings};

/// `fieldcase review ...`.
#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Lists the records to review, newest change first, with conflicts and findings.
    Queue(QueueArgs),
    /// Shows one record as a supervisor reviews it: fields, conflicts with their writers,
    /// findings, review state and comments, quarantined changes and the history.
    Show(DocArg),
    /// Settles a field with a server-authored change that supersedes every concurrent value.
    Resolve(ResolveArgs),
    /// Approves a record at its current heads; later edits to it are quarantined.
    Approve(DocArg),
    /// Returns a record to its officer for correction, with a comment.
    Return(ReturnArgs),
    /// Grants a device's request event (request_file, request_decision, request_close).
    Grant(GrantArgs),
}

/// A review state, as the server stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ReviewState {
    /// Not reviewed yet.
    Pending,
    /// Approved and sealed.
    Approved,
    /// Returned for correction.
    Returned,
}

impl ReviewState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Returned => "returned",
        }
    }
}

/// `fieldcase review queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Only records of this township.
    #[arg(long)]
    pub township: Option<String>,
    /// Only records with this finding code.
    #[arg(long)]
    pub finding: Option<String>,
    /// Only records with conflicting fields.
    #[arg(long)]
    pub conflicts: bool,
    /// Only records in this review state.
    #[arg(long, value_enum)]
    pub state: Option<ReviewState>,
    /// Only approved records changed since their approval.
    #[arg(long)]
    pub changed_since_approval: bool,
    /// Only returned records their officer changed since.
    #[arg(long)]
    pub resubmitted: bool,
}

impl QueueArgs {
    /// The query parameters of the queue request, in a stable order.
    fn filters(&self) -> Vec<(&'static str, String)> {
        let mut filters = Vec::new();
        if let Some(township) = &self.township {
            filters.push(("township", township.clone()));
        }
        if let Some(finding) = &self.finding {
            filters.push(("finding", finding.clone()));
        }
        if self.conflicts {
            filters.push(("conflicts", "true".to_owned()));
        }
        if let Some(state) = self.state {
            filters.push(("state", state.as_str().to_owned()));
        }
        if self.changed_since_approval {
            filters.push(("changed_since_approval", "true".to_owned()));
        }
        if self.resubmitted {
            filters.push(("resubmitted", "true".to_owned()));
        }
        filters
    }
}

/// One document.
#[derive(Debug, Args)]
pub struct DocArg {
    /// The document id.
    #[arg(value_parser = DocumentId::parse)]
    pub doc: DocumentId,
}

/// `fieldcase review resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The document id.
    #[arg(value_parser = DocumentId::parse)]
    pub doc: DocumentId,
    /// Dotted path of the field (`site.name`, `party.id_number`).
    pub path: String,
    /// The value that settles it.
    #[arg(long)]
    pub value: String,
}

/// `fieldcase review return`.
#[derive(Debug, Args)]
pub struct ReturnArgs {
    /// The document id.
    #[arg(value_parser = DocumentId::parse)]
    pub doc: DocumentId,
    /// What the officer should correct.
    #[arg(long)]
    pub comment: String,
}

/// `fieldcase review grant`.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// The document id.
    #[arg(value_parser = DocumentId::parse)]
    pub doc: DocumentId,
    /// The id of the request event to grant.
    pub event: String,
}

/// Runs a review command with the enrolled device's session.
pub fn review(settings: &Settings, command: ReviewCommand) -> Result<Output> {
    // The store stays open (and the home locked) so that no other command of this device
    // rewrites the session cache meanwhile.
    let store = open_store(settings)?;
    require_enrollment(&store)?;
    let mut session = Session::open(Client::new(&settings.server), &settings.home)
        .context("opening the device session")?;
    let session = &mut session;
    match command {
        ReviewCommand::Queue(args) => {
            let filters = args.filters();
            let pairs: Vec<(&str, &str)> =
                filters.iter().map(|(name, value)| (*name, value.as_str())).collect();
            let listed =
                session.get_json(&paths::review_queue(&pairs)).context("reading the queue")?;
            let text = render_queue(&listed);
            Ok(Output::new(&listed, text))
        }
        ReviewCommand::Show(args) => {
            let view = session.get_json(&paths::review(args.doc)).context("reading the record")?;
            let text = render_review(&view);
            Ok(Output::new(&view, text))
        }
        ReviewCommand::Resolve(args) => {
            let body = json!({"path": args.path, "value": args.value});
            let view = act(session, args.doc, ReviewAction::Resolve, &body)?;
            let text = format!("resolved {} of {} to {:?}", args.path, args.doc, args.value);
            Ok(Output::new(&view, text))
        }
        ReviewCommand::Approve(args) => {
            let view = act(session, args.doc, ReviewAction::Approve, &json!({}))?;
            let heads = view["review"]["heads"].as_array().map_or(0, Vec::len);
            Ok(Output::new(&view, format!("approved {} at {heads} head(s)", args.doc)))
        }
        ReviewCommand::Return(args) => {
            let view =
                act(session, args.doc, ReviewAction::Return, &json!({"comment": args.comment}))?;
            Ok(Output::new(&view, format!("returned {} for correction", args.doc)))
        }
        ReviewCommand::Grant(args) => {
            let view = act(session, args.doc, ReviewAction::Grant, &json!({"event": args.event}))?;
            let mut text = format!("granted {} of {}", args.event, args.doc);
            if let Some(state) = view["state"].as_str() {
                let _ = write!(text, ": state {state}");
            }
            if let Some(case_no) = view["record"]["case_no"].as_str() {
                let _ = write!(text, ", case {case_no}");
            }
            Ok(Output::new(&view, text))
        }
    }
}

fn act(
    session: &mut Session,
    doc: DocumentId,
    action: ReviewAction,
    body: &Value,
) -> Result<Value> {
    session
        .post_json(&paths::review_action(doc, action), body)
        .with_context(|| format!("reviewing document {doc}"))
}

/// The queue as a table.
fn render_queue(listed: &Value) -> String {
    let rows = listed.as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.is_empty() {
        return "no records to review".to_owned();
    }
    let mut text = format!(
        "{:<36}  {:<10}  {:<14}  {:<20}  {:<22}  {:<9}  FINDINGS",
        "ID", "KIND", "TOWNSHIP", "STATUS", "REVIEW", "CONFLICTS"
    );
    for row in rows {
        let mut review = cell(&row["review_state"]);
        if row["changed_since_approval"] == json!(true) {
            review.push_str(" (changed)");
        }
        if row["resubmitted"] == json!(true) {
            review.push_str(" (resubmitted)");
        }
        let findings = row["findings"]
            .as_array()
            .map(|codes| codes.iter().map(cell).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let _ = write!(
            text,
            "\n{:<36}  {:<10}  {:<14}  {:<20}  {:<22}  {:<9}  {findings}",
            cell(&row["id"]),
            cell(&row["kind"]),
            cell(&row["township"]),
            cell(&row["status"]),
            review,
            cell(&row["conflicts"]),
        );
    }
    text
}

/// One record as a supervisor reviews it.
fn render_review(view: &Value) -> String {
    let mut text = format!("{} {}", cell(&view["kind"]), cell(&view["id"]));
    if let Some(state) = view["state"].as_str() {
        let _ = write!(text, "\nstate: {state}");
    }
    let _ = write!(text, "\nreview: {}", cell(&view["review"]["state"]));
    let mut fields = Vec::new();
    flatten(&view["record"], String::new(), &mut fields);
    text.push('\n');
    for (path, value) in fields.iter().filter(|(path, _)| !path.starts_with("review.")) {
        let _ = write!(text, "\n  {path}: {value}");
    }
    section(
        &mut text,
        view["conflicts"].as_array(),
        "conflicts (the shown value first):",
        |text, conflict| {
            let _ = write!(text, "\n  {}", cell(&conflict["path"]));
            for value in conflict["values"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let _ = write!(
                    text,
                    "\n    {}  (officer {}, device {}, actor {})",
                    cell(&value["value"]),
                    cell(&value["officer"]),
                    cell(&value["device"]),
                    cell(&value["actor"]),
                );
            }
        },
    );
    section(&mut text, view["findings"].as_array(), "findings:", |text, finding| {
        let _ = write!(
            text,
            "\n  {} {} at {}: {}",
            cell(&finding["severity"]),
            cell(&finding["code"]),
            cell(&finding["path"]),
            cell(&finding["message"])
        );
    });
    section(&mut text, view["review"]["comments"].as_array(), "comments:", |text, comment| {
        let _ = write!(
            text,
            "\n  {} ({}): {}",
            cell(&comment["by"]),
            time_cell(&comment["at"]),
            cell(&comment["text"])
        );
    });
    section(&mut text, view["quarantined"].as_array(), "quarantined changes:", |text, change| {
        let _ = write!(
            text,
            "\n  {} by {} on {}: {}",
            cell(&change["hash"]),
            cell(&change["officer"]),
            cell(&change["device"]),
            cell(&change["reason"])
        );
    });
    section(&mut text, view["history"].as_array(), "history:", |text, change| {
        let _ = write!(
            text,
            "\n  {} {} by {} on {} (certificate {}): {}",
            time_cell(&change["received_at"]),
            cell(&change["hash"]).chars().take(12).collect::<String>(),
            cell(&change["officer"]),
            cell(&change["device"]),
            cell(&change["certificate"]),
            cell(&change["message"])
        );
    });
    text
}

/// Appends a titled list when it is not empty.
fn section(
    text: &mut String,
    items: Option<&Vec<Value>>,
    title: &str,
    mut line: impl FnMut(&mut String, &Value),
) {
    let Some(items) = items.filter(|items| !items.is_empty()) else { return };
    let _ = write!(text, "\n\n{title}");
    for item in items {
        line(text, item);
    }
}

/// Flattens JSON into `(dotted path, value)` lines.
fn flatten(value: &Value, path: String, out: &mut Vec<(String, String)>) {
    let join = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                flatten(child, join(key), out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (index, child) in items.iter().enumerate() {
                flatten(child, join(&index.to_string()), out);
            }
        }
        other => out.push((path, cell(other))),
    }
}

/// A server time (ms since the Unix epoch) in local time; anything else as [`cell`] prints it.
fn time_cell(value: &Value) -> String {
    value.as_i64().and_then(chrono::DateTime::from_timestamp_millis).map_or_else(
        || cell(value),
        |time| time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// A JSON value as one table cell: strings bare, null as `-`.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ReviewCommand,
    }

    #[test]
    fn queue_filters_become_query_parameters() {
        let cli = Cli::try_parse_from([
            "review",
            "queue",
            "--township",
            "t-chengguan",
            "--conflicts",
            "--state",
            "returned",
            "--resubmitted",
        ])
        .unwrap();
        let ReviewCommand::Queue(args) = cli.command else { panic!("a queue command") };
        let filters = args.filters();
        let pairs: Vec<(&str, &str)> =
            filters.iter().map(|(name, value)| (*name, value.as_str())).collect();
        assert_eq!(
            paths::review_queue(&pairs),
            "/v1/review/queue?township=t-chengguan&conflicts=true&state=returned&resubmitted=true"
        );
        assert!(Cli::try_parse_from(["review", "queue", "--state", "bogus"]).is_err());
    }

    #[test]
    fn actions_parse_their_arguments() {
        let doc = "0b0b0b0b-0b0b-0b0b-0b0b-0b0b0b0b0b0b";
        let cli = Cli::try_parse_from(["review", "resolve", doc, "site.name", "--value", "五金店"])
            .unwrap();
        let ReviewCommand::Resolve(args) = cli.command else { panic!("a resolve command") };
        assert_eq!((args.path.as_str(), args.value.as_str()), ("site.name", "五金店"));
        assert_eq!(
            paths::review_action(args.doc, ReviewAction::Resolve),
            format!("/v1/review/{doc}/resolve")
        );
        assert!(Cli::try_parse_from(["review", "return", doc]).is_err(), "a comment is required");
        let cli = Cli::try_parse_from(["review", "grant", doc, "ev-1"]).unwrap();
        assert!(
            matches!(cli.command, ReviewCommand::Grant(GrantArgs { ref event, .. }) if event == "ev-1")
        );
    }

    #[test]
    fn the_queue_and_a_record_render_for_people() {
        let listed = json!([{
            "id": "d1", "kind": "inspection", "township": "t-chengguan", "status": "open",
            "review_state": "returned", "conflicts": 1, "findings": ["too_few_officers"],
            "changed_since_approval": false, "resubmitted": true, "updated_at": 1
        }]);
        let table = render_queue(&listed);
        assert!(table.contains("returned (resubmitted)"), "{table}");
        assert!(table.contains("too_few_officers"), "{table}");
        assert_eq!(render_queue(&json!([])), "no records to review");

        let view = json!({
            "id": "d1", "kind": "inspection", "record": {"site": {"name": "A"}, "review": {"state": "returned"}},
            "conflicts": [{"path": "site.name", "values": [
                {"value": "A", "actor": "aa", "officer": "o-1", "device": "dev-1"},
                {"value": "B", "actor": "bb", "officer": "o-2", "device": null}]}],
            "findings": [], "review": {"state": "returned", "heads": [], "comments": [
                {"id": "c1", "by": "s-1", "at": 5, "text": "补充照片"}]},
            "quarantined": [], "history": []
        });
        let text = render_review(&view);
        assert!(text.contains("review: returned"), "{text}");
        assert!(text.contains("site.name: A"), "{text}");
        assert!(!text.contains("review.state"), "{text}");
        assert!(text.contains("officer o-2, device -"), "{text}");
        assert!(text.contains("补充照片"), "{text}");
        assert!(!text.contains("s-1 (5)"), "times print as dates: {text}");
    }
}
