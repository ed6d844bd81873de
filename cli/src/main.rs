//! `fieldcase`: the command line of a fieldcase field device; parses and dispatches only.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the binary's output is its interface: results on stdout, errors on stderr"
)]

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use cli::commands::admin::{self, AdminCommand};
use cli::commands::bench::{self, BenchArgs};
use cli::commands::device::{
    self, CaseNewArgs, EditArgs, EventArgs, EvidenceAddArgs, EvidenceGetArgs, EvidenceRemoveArgs,
    InspectionNewArgs, ShowArgs,
};
use cli::commands::enroll::{self, EnrollArgs};
use cli::commands::numbers::{self, NumbersCommand};
use cli::commands::report::{self, ReportCommand};
use cli::commands::review::{self, ReviewCommand};
use cli::commands::{self, Output, Settings};
use serde_json::json;

/// The field device client of fieldcase: records inspections and case files offline and
/// syncs them with the server.
#[derive(Debug, Parser)]
#[command(name = "fieldcase", version)]
struct Config {
    /// Directory of this device's replica (`replica.sqlite`), evidence blobs, device key and
    /// session.
    #[arg(long, env = "FIELDCASE_HOME", default_value = "./fieldcase-home", global = true)]
    home: PathBuf,
    /// Base URL of the fieldcase server; `enroll`, `sync`, `evidence get`, `review`, `report`,
    /// `numbers` and `admin` contact it, the record commands work offline.
    #[arg(long, env = "FIELDCASE_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// Print one JSON document (DESIGN.md §9), failures included, instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// A `fieldcase` command.
///
/// Exit status: 0 when the command did its work (a sync whose uploads were partly refused
/// did its work: see `ok` and `rejected`); 1 when it failed (bad input, unknown document,
/// local storage, or the server refused the request); 2 on a command-line usage error;
/// 3 when the server could not be reached, so a script knows that retrying later may help.
/// `bench` exits 1 also when it ran but a document failed verification.
#[derive(Debug, Subcommand)]
enum Command {
    /// Makes this device an officer's device with a one-time enrollment code.
    Enroll(EnrollArgs),
    /// Inspection records (检查记录).
    #[command(subcommand)]
    Inspection(InspectionCommand),
    /// Case files (案卷).
    #[command(subcommand)]
    Case(CaseCommand),
    /// Edits fields of a document by dotted path, offline, as one change.
    Edit(EditArgs),
    /// Evidence items and their bytes.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// Appends an event (file, notify, decide, serve, close, ...) to a case file's timeline;
    /// `issue_document --doc-type T` issues the next number of a leased block.
    Event(EventArgs),
    /// Document number blocks (文书编号号段): lease, list, reconcile.
    #[command(subcommand)]
    Numbers(NumbersCommand),
    /// Shows the merged view of a document: record, conflicts, findings.
    Show(ShowArgs),
    /// Lists the documents on this device.
    List,
    /// Shows the device's identity, actor, cursor, last sync and what is waiting to sync.
    Status,
    /// Uploads pending evidence blobs, sends pending changes to the server and receives
    /// everyone else's.
    Sync,
    /// The registry, from an enrolled admin device.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The supervisor's review: queue, record, resolve, approve, return, grant.
    #[command(subcommand)]
    Review(ReviewCommand),
    /// Supervision reports: the quarterly case report, officer assessment, overdue board, alerts
    /// (JSON or CSV with Chinese headers).
    #[command(subcommand)]
    Report(ReportCommand),
    /// Measures a server under the BENCHMARKS.md workload: enrolled devices build case files
    /// offline and sync at once; starts `fieldcase-server` unless `--server` is given.
    Bench(BenchArgs),
}

/// `fieldcase inspection ...`.
#[derive(Debug, Subcommand)]
enum InspectionCommand {
    /// Opens a new inspection record on this device.
    New(InspectionNewArgs),
}

/// `fieldcase case ...`.
#[derive(Debug, Subcommand)]
enum CaseCommand {
    /// Opens a new case file on this device.
    New(CaseNewArgs),
}

/// `fieldcase evidence ...`.
#[derive(Debug, Subcommand)]
enum EvidenceCommand {
    /// Adds a file as an evidence item of a document.
    Add(EvidenceAddArgs),
    /// Withdraws an evidence item: it stays in the record, marked removed, and its bytes stay.
    Remove(EvidenceRemoveArgs),
    /// Writes the bytes of an evidence item to a file, downloading them if needed.
    Get(EvidenceGetArgs),
}

fn main() -> ExitCode {
    let parsed = Config::command()
        .try_get_matches()
        .and_then(|matches| Ok((Config::from_arg_matches(&matches)?, matches)));
    let (config, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return usage_error(&error),
    };
    // `bench` starts its own server unless one was named on the command line or in the
    // environment.
    let server_given = matches.value_source("server") != Some(ValueSource::DefaultValue);
    let settings = Settings { home: config.home, server: config.server, json: config.json };
    match dispatch(config.command, &settings, server_given) {
        Ok(output) => {
            let printed = print_output(if settings.json { output.json() } else { output.text() });
            if output.succeeded() { printed } else { ExitCode::FAILURE }
        }
        Err(error) => {
            if settings.json {
                print_output(&commands::error_json(&error));
            } else {
                // The alternate form prints the whole context chain on one line, without a backtrace.
                eprintln!("error: {error:#}");
            }
            match commands::error_code(&error) {
                "server_unreachable" => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn dispatch(command: Command, settings: &Settings, server_given: bool) -> anyhow::Result<Output> {
    match command {
        Command::Enroll(args) => enroll::enroll(settings, &args),
        Command::Inspection(InspectionCommand::New(args)) => device::inspection_new(settings, args),
        Command::Case(CaseCommand::New(args)) => device::case_new(settings, args),
        Command::Edit(args) => device::edit(settings, &args),
        Command::Evidence(EvidenceCommand::Add(args)) => device::evidence_add(settings, args),
        Command::Evidence(EvidenceCommand::Remove(args)) => {
            device::evidence_remove(settings, &args)
        }
        Command::Evidence(EvidenceCommand::Get(args)) => device::evidence_get(settings, &args),
        Command::Event(args) => device::event(settings, args),
        Command::Numbers(command) => numbers::numbers(settings, command),
        Command::Show(args) => device::show(settings, &args),
        Command::List => device::list(settings),
        Command::Status => device::status(settings),
        Command::Sync => device::sync(settings),
        Command::Admin(command) => admin::admin(settings, command),
        Command::Review(command) => review::review(settings, command),
        Command::Report(command) => report::report(settings, &command),
        Command::Bench(args) => {
            bench::bench(settings, server_given.then_some(settings.server.as_str()), &args)
        }
    }
}

/// Prints `text` on stdout; a closed pipe (`fieldcase list | head`) is not a failure.
fn print_output(text: &str) -> ExitCode {
    match writeln!(io::stdout().lock(), "{text}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot write the output: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version print as usual; a usage error prints as JSON when `--json` was given,
/// because scripts read stdout for failures too.
fn usage_error(error: &clap::Error) -> ExitCode {
    let informational = matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    if informational || !std::env::args_os().any(|arg| arg == "--json") {
        error.exit();
    }
    // The message is what clap says before its usage lines, on one line.
    let rendered = error.render().to_string();
    let message = rendered
        .lines()
        .take_while(|line| !line.starts_with("Usage:"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.trim_start_matches("error: ");
    print_output(&json!({"error": {"code": "invalid_argument", "message": message}}).to_string());
    ExitCode::from(2)
}
