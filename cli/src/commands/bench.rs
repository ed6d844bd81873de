//! `fieldcase bench`: the load generator of BENCHMARKS.md, run against a server it starts or
//! one given with `--server`.
//!
//! Devices are enrolled for real ([`fleet`]), each builds its case files offline from a seeded
//! workload ([`workload`]), and then every device syncs at once ([`scenario`]); the bench then
//! checks that the server holds every document at the device's heads. The scenarios:
//!
//! - `A`, first sync: D devices, C case files each, E edits each.
//! - `B`, resync: each device edits a fraction F of its documents offline (5 edits each) and
//!   syncs; `B0`, resync with nothing changed.
//! - `C`, scale: A at D=50, C=200 on a fresh server, then `C-B` and `C-B0` at that scale.
//! - `R`, after `C-B0`: each supervision report once over the 10,000 records ([`reports`]).
//!
//! Each scenario reports the wall time from the first request to every document
//! acknowledged, requests, body bytes up and down, changes stored and per second, the server's
//! CPU seconds and peak RSS ([`server_process`]), and with `--floor` the time the same uploads
//! take in-process ([`floor`]). Between scenarios every device drains the feed, untimed, so
//! that a resync starts from a device that is up to date.

mod fleet;
mod floor;
mod reports;
mod scenario;
mod server_process;
mod workload;

use std::fmt::Write as _;
use std::io::{self, IsTerminal as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::client::Client;
use crate::commands::bench::fleet::{Admin, Device, Registration};
use crate::commands::bench::floor::Floor;
use crate::commands::bench::reports::{ReportTiming, time_reports};
use crate::commands::bench::scenario::{SyncRun, Verification, sync_all, verify};
use crate::commands::bench::server_process::{ServerUsage, SpawnedServer, UsageSource};
use crate::commands::bench::workload::{Setting, build_document, choose_documents, edit_again};
use crate::commands::{CommandError, Output, Settings};

/// Devices in scenario A unless `--devices` says otherwise.
const DEFAULT_DEVICES: usize = 10;
/// Case files per device in scenario A unless `--docs` says otherwise.
const DEFAULT_DOCS: usize = 100;
/// Devices in scenario C (BENCHMARKS.md).
const SCALE_DEVICES: usize = 50;
/// Case files per device in scenario C (BENCHMARKS.md).
const SCALE_DOCS: usize = 200;
/// Edits per document a resync makes (BENCHMARKS.md: E=5).
const RESYNC_EDITS: usize = 5;

/// `fieldcase bench`. The global `--server` names a running server; without it the bench
/// starts `fieldcase-server --demo` on a temporary data directory and port 0.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Devices, each enrolled with its own key and actor [default: 10; 50 for scenario C].
    #[arg(long)]
    pub devices: Option<usize>,
    /// Case files each device creates offline [default: 100; 200 for scenario C].
    #[arg(long)]
    pub docs: Option<usize>,
    /// Edits per case file before the first sync, each its own change.
    #[arg(long, default_value_t = 20)]
    pub edits: usize,
    /// Fraction of each device's documents a resync edits (5 edits each).
    #[arg(long, default_value_t = 0.1)]
    pub resync_fraction: f64,
    /// Seed of the workload: the same seed makes the same documents and changes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Which scenarios to run: A; B (A, then B and B0); C (C, C-B, C-B0 at scale); all.
    #[arg(long, value_enum, default_value_t = ScenarioChoice::All)]
    pub scenario: ScenarioChoice,
    /// Also replay every scenario's uploads in-process into the server's own store, with no
    /// HTTP, and report each scenario's ratio to that floor.
    #[arg(long)]
    pub floor: bool,
    /// One-time admin enrollment code of the server given with `--server` (demo.json
    /// `codes.admin` or bootstrap.json `admin_code`); the bench enrolls its devices with it.
    #[arg(long, env = "FIELDCASE_BENCH_ADMIN_CODE")]
    pub admin_code: Option<String>,
    /// Home of an admin device already enrolled with the server given with `--server`, instead
    /// of `--admin-code` (which works only once).
    #[arg(long, conflicts_with = "admin_code")]
    pub admin_home: Option<PathBuf>,
    /// Township of the bench's officers and documents, with `--server` (a spawned demo server
    /// uses its first township).
    #[arg(long, default_value = "t-chengguan")]
    pub township: String,
    /// Entrusted matter of the case files, with `--server` (a spawned demo server uses its
    /// entrusted matter).
    #[arg(long, default_value = "AJ-001")]
    pub matter: String,
    /// Sector of the officers' certificates; it must be the matter's sector.
    #[arg(long, default_value = "work_safety")]
    pub sector: String,
}

/// The scenarios `--scenario` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioChoice {
    /// First sync only.
    #[value(name = "A")]
    A,
    /// First sync, then the resync with edits (B) and without (B0).
    #[value(name = "B")]
    B,
    /// First sync and resyncs at 50 devices × 200 documents, then the reports over them (R).
    #[value(name = "C")]
    C,
    /// A, B, B0, then C, C-B, C-B0, R.
    #[value(name = "all")]
    All,
}

/// One fleet on one server: a first sync and optionally the two resyncs.
#[derive(Debug, Clone)]
struct Suite {
    /// Names of the first sync, the resync and the unchanged resync.
    names: [&'static str; 3],
    /// Officer id infix, so that two fleets on one server do not share officers.
    fleet: &'static str,
    devices: usize,
    docs: usize,
    resync: bool,
    /// Name of the scenario that times the supervision reports after the resyncs, if any.
    reports: Option<&'static str>,
}

/// The `--json` document (BENCHMARKS.md: fields may be added, never renamed).
#[derive(Debug, Serialize)]
struct Report {
    params: Params,
    scenarios: Vec<ScenarioReport>,
}

#[derive(Debug, Serialize)]
struct Params {
    devices: usize,
    docs: usize,
    edits: usize,
    seed: u64,
    resync_fraction: f64,
    resync_edits: usize,
    /// `spawned` or the URL given.
    server: String,
    floor: bool,
}

/// The figures of one scenario.
#[derive(Debug, Serialize)]
struct ScenarioReport {
    name: String,
    /// First request to every document acknowledged, seconds.
    wall_s: f64,
    requests: u64,
    bytes_up: u64,
    bytes_down: u64,
    /// Changes the server newly stored.
    changes: usize,
    server_cpu_s: Option<f64>,
    server_peak_rss_bytes: Option<u64>,
    floor_s: Option<f64>,
    verified: bool,
    devices: usize,
    docs_per_device: usize,
    documents: usize,
    changes_per_s: f64,
    /// First request to the end of every device's rounds, the township feed drained too.
    drained_s: f64,
    verify_s: f64,
    /// Changes received for documents the device holds.
    changes_down: usize,
    /// Chunks of other devices' documents received (the township feed), counted and dropped:
    /// a change, or a whole document sent as its creating upload left it.
    feed_chunks_down: usize,
    server_rss_bytes: Option<u64>,
    /// `wall_s / floor_s`.
    floor_ratio: Option<f64>,
    documents_failed: usize,
    /// The first few verification failures.
    failures: Vec<String>,
    /// Scenario `R`: each report endpoint's time and answer size.
    #[serde(skip_serializing_if = "Option::is_none")]
    reports: Option<Vec<ReportTiming>>,
}

/// Runs the selected scenarios and reports them; the output is marked failed (exit status 1)
/// when any document fails verification.
///
/// `server` is the URL given with `--server`, if any.
///
/// # Errors
/// A server that cannot be started or enrolled with, or a sync that fails outright.
pub fn bench(settings: &Settings, server: Option<&str>, args: &BenchArgs) -> Result<Output> {
    if !(0.0..=1.0).contains(&args.resync_fraction) {
        bail!(CommandError::new("invalid_argument", "--resync-fraction must be between 0 and 1"));
    }
    if server.is_some() && args.admin_code.is_none() && args.admin_home.is_none() {
        bail!(CommandError::new(
            "invalid_argument",
            "with --server, give --admin-code CODE or --admin-home DIR to enroll the devices"
        ));
    }
    let progress = if !settings.json && io::stderr().is_terminal() {
        let spinner = ProgressBar::new_spinner();
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner
    } else {
        ProgressBar::hidden()
    };
    let only_scale = args.scenario == ScenarioChoice::C;
    let devices = args.devices.unwrap_or(if only_scale { SCALE_DEVICES } else { DEFAULT_DEVICES });
    let docs = args.docs.unwrap_or(if only_scale { SCALE_DOCS } else { DEFAULT_DOCS });
    if devices == 0 || docs == 0 {
        bail!(CommandError::new("invalid_argument", "--devices and --docs must be at least 1"));
    }
    let first =
        Suite { names: ["A", "B", "B0"], fleet: "a", devices, docs, resync: true, reports: None };
    let scale = Suite {
        names: ["C", "C-B", "C-B0"],
        fleet: "c",
        devices: SCALE_DEVICES,
        docs: SCALE_DOCS,
        resync: true,
        reports: Some("R"),
    };
    let suites = match args.scenario {
        ScenarioChoice::A => vec![Suite { resync: false, ..first }],
        ScenarioChoice::B => vec![first],
        ScenarioChoice::C => vec![Suite { devices, docs, ..scale }],
        ScenarioChoice::All => vec![first, scale],
    };

    let mut target = match server {
        Some(url) => Target::Given(Box::new(GivenServer::new(url, args)?)),
        None => Target::Spawned(None),
    };
    let mut scenarios = Vec::new();
    for suite in &suites {
        run_suite(&mut target, suite, args, &progress, &mut scenarios)?;
    }
    progress.finish_and_clear();

    let report = Report {
        params: Params {
            devices,
            docs,
            edits: args.edits,
            seed: args.seed,
            resync_fraction: args.resync_fraction,
            resync_edits: RESYNC_EDITS,
            server: server.map_or_else(|| "spawned".to_owned(), str::to_owned),
            floor: args.floor,
        },
        scenarios,
    };
    let text = render(&report);
    let output = Output::new(&report, text);
    Ok(if report.scenarios.iter().all(|scenario| scenario.verified) {
        output
    } else {
        output.failed()
    })
}

/// The server a suite runs against.
enum Target {
    /// A fresh `fieldcase-server --demo` per suite, held while the suite runs.
    Spawned(Option<SpawnedServer>),
    /// The server of `--server`, shared by every suite.
    Given(Box<GivenServer>),
}

/// A server given with `--server` and the admin enrolled on it.
struct GivenServer {
    url: String,
    admin: Admin,
}

impl GivenServer {
    fn new(url: &str, args: &BenchArgs) -> Result<Self> {
        let admin = match (&args.admin_home, &args.admin_code) {
            (Some(home), _) => Admin::open(url, home)?,
            (None, Some(code)) => Admin::enroll(url, code)?,
            (None, None) => unreachable!("checked by the caller"),
        };
        Ok(Self { url: url.to_owned(), admin })
    }
}

/// Runs one suite and appends its scenarios to `scenarios`.
fn run_suite(
    target: &mut Target,
    suite: &Suite,
    args: &BenchArgs,
    progress: &ProgressBar,
    scenarios: &mut Vec<ScenarioReport>,
) -> Result<()> {
    progress.set_message(format!("{}: starting the server", suite.names[0]));
    let mut spawned_admin = None;
    let (url, usage, registration, matter) = match target {
        Target::Spawned(slot) => {
            // The previous suite's server stops before the next one starts.
            *slot = None;
            let spawned = slot.insert(SpawnedServer::start()?);
            let demo = spawned.demo();
            let text = |pointer: &str| -> Result<String> {
                demo.pointer(pointer)
                    .and_then(|value| value.as_str())
                    .map(str::to_owned)
                    .with_context(|| format!("demo.json has no {pointer}"))
            };
            let registration =
                Registration { township: text("/townships/0")?, sector: args.sector.clone() };
            let matter = text("/matters/entrusted")?;
            spawned_admin = Some(Admin::enroll(spawned.url(), &text("/codes/admin")?)?);
            (spawned.url().to_owned(), UsageSource::Process(spawned.pid()), registration, matter)
        }
        Target::Given(given) => (
            given.url.clone(),
            UsageSource::Metrics(Client::new(&given.url)),
            Registration { township: args.township.clone(), sector: args.sector.clone() },
            args.matter.clone(),
        ),
    };
    let admin = match (spawned_admin.as_mut(), target) {
        (Some(admin), _) => admin,
        (None, Target::Given(given)) => &mut given.admin,
        (None, Target::Spawned(_)) => unreachable!("a spawned server has its admin"),
    };

    progress.set_message(format!("{}: enrolling {} devices", suite.names[0], suite.devices));
    let mut devices =
        admin.enroll_devices(&url, &registration, suite.fleet, args.seed, suite.devices)?;
    progress.set_message(format!(
        "{}: building {} case files offline",
        suite.names[0],
        suite.devices * suite.docs
    ));
    build_workload(&mut devices, &registration.township, &matter, suite.docs, args)?;
    let floor = if args.floor { Some(Floor::open()?) } else { None };

    progress.set_message(format!("{}: first sync", suite.names[0]));
    let report = measure(suite.names[0], suite, &mut devices, admin, &usage, floor.as_ref())?;
    scenarios.push(report);
    if !suite.resync {
        return Ok(());
    }

    progress.set_message(format!("{}: draining the feed", suite.names[1]));
    sync_all(&mut devices, false).context("draining the feed before the resync")?;
    #[expect(clippy::cast_possible_truncation, reason = "a fraction of a usize fits a usize")]
    let edited = (suite.docs as f64 * args.resync_fraction).round() as usize;
    edit_for_resync(&mut devices, args.seed, edited)?;
    progress.set_message(format!("{}: resync", suite.names[1]));
    let report = measure(suite.names[1], suite, &mut devices, admin, &usage, floor.as_ref())?;
    scenarios.push(report);

    progress.set_message(format!("{}: draining the feed", suite.names[2]));
    sync_all(&mut devices, false).context("draining the feed before the unchanged resync")?;
    progress.set_message(format!("{}: resync with nothing changed", suite.names[2]));
    let report = measure(suite.names[2], suite, &mut devices, admin, &usage, floor.as_ref())?;
    scenarios.push(report);

    if let Some(name) = suite.reports {
        progress.set_message(format!("{name}: supervision reports"));
        scenarios.push(measure_reports(name, suite, admin, &usage)?);
    }
    Ok(())
}

/// Scenario `R`: each supervision report once, timed; verified when every answer is 200.
fn measure_reports(
    name: &str,
    suite: &Suite,
    admin: &mut Admin,
    usage: &UsageSource,
) -> Result<ScenarioReport> {
    usage.reset_peak();
    let before = usage.read();
    let run = time_reports(admin).with_context(|| format!("scenario {name}"))?;
    let after = usage.read();
    let wall_s = run.took.as_secs_f64();
    let failures: Vec<String> = run
        .reports
        .iter()
        .filter(|report| report.status != 200)
        .map(|report| format!("{} answered {}", report.path, report.status))
        .collect();
    Ok(ScenarioReport {
        name: name.to_owned(),
        wall_s,
        requests: run.reports.len() as u64,
        bytes_up: 0,
        bytes_down: run.reports.iter().map(|report| report.bytes).sum(),
        changes: 0,
        server_cpu_s: after.cpu_s.zip(before.cpu_s).map(|(after, before)| after - before),
        server_peak_rss_bytes: after.peak_rss_bytes,
        floor_s: None,
        verified: run.passed(),
        devices: suite.devices,
        docs_per_device: suite.docs,
        documents: suite.devices * suite.docs,
        changes_per_s: 0.0,
        drained_s: wall_s,
        verify_s: 0.0,
        changes_down: 0,
        feed_chunks_down: 0,
        server_rss_bytes: after.rss_bytes,
        floor_ratio: None,
        documents_failed: failures.len(),
        failures,
        reports: Some(run.reports),
    })
}

/// Every device builds its case files offline, devices in parallel; untimed.
fn build_workload(
    devices: &mut [Device],
    township: &str,
    matter: &str,
    docs: usize,
    args: &BenchArgs,
) -> Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter_mut()
            .map(|device| {
                scope.spawn(move || -> Result<()> {
                    let setting = Setting {
                        township: township.to_owned(),
                        matter: matter.to_owned(),
                        officers: device.officers.clone(),
                    };
                    for index in 0..docs {
                        let device_doc = build_document(
                            args.seed,
                            device.index,
                            index,
                            args.edits,
                            &device.actor,
                            &setting,
                        )?;
                        let doc_id = device_doc.id();
                        device.order.push(doc_id);
                        device.edits.push(args.edits);
                        device.pending_changes.insert(doc_id, 1 + args.edits);
                        device.docs.insert(doc_id, device_doc);
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|handle| {
            handle.join().unwrap_or_else(|_| bail!("building a workload panicked"))
        })
    })
}

/// Each device edits `count` of its documents offline, [`RESYNC_EDITS`] edits each.
fn edit_for_resync(devices: &mut [Device], seed: u64, count: usize) -> Result<()> {
    for device in devices {
        for index in choose_documents(seed, device.index, 1, device.order.len(), count) {
            let doc_id = device.order[index];
            let device_doc = device.docs.get_mut(&doc_id).expect("ordered documents are held");
            let first = device.edits[index];
            edit_again(device_doc, seed, device.index, index, 1, first, RESYNC_EDITS)?;
            device.edits[index] += RESYNC_EDITS;
            *device.pending_changes.entry(doc_id).or_insert(0) += RESYNC_EDITS;
        }
    }
    Ok(())
}

/// One measured sync of every device, its verification and, with a floor, its replay.
fn measure(
    name: &str,
    suite: &Suite,
    devices: &mut [Device],
    admin: &mut Admin,
    usage: &UsageSource,
    floor: Option<&Floor>,
) -> Result<ScenarioReport> {
    usage.reset_peak();
    let before = usage.read();
    let run = sync_all(devices, floor.is_some()).with_context(|| format!("scenario {name}"))?;
    let after = usage.read();
    let verification = verify(admin, devices).with_context(|| format!("verifying {name}"))?;
    let floor_s = match floor {
        Some(floor) => {
            let (took, stored) =
                floor.replay(&run.batches).with_context(|| format!("floor of {name}"))?;
            // Nothing to store costs nothing in-process: a zero floor, with no ratio.
            Some(if stored == 0 { 0.0 } else { took.as_secs_f64() })
        }
        None => None,
    };
    Ok(scenario_report(name, suite, &run, &verification, before, after, floor_s))
}

fn scenario_report(
    name: &str,
    suite: &Suite,
    run: &SyncRun,
    verification: &Verification,
    before: ServerUsage,
    after: ServerUsage,
    floor_s: Option<f64>,
) -> ScenarioReport {
    let wall_s = run.confirmed.as_secs_f64();
    let server_cpu_s = after.cpu_s.zip(before.cpu_s).map(|(after, before)| after - before);
    ScenarioReport {
        name: name.to_owned(),
        wall_s,
        requests: run.requests,
        bytes_up: run.traffic.bytes_up,
        bytes_down: run.traffic.bytes_down,
        changes: run.uploaded,
        server_cpu_s,
        server_peak_rss_bytes: after.peak_rss_bytes,
        floor_s,
        verified: verification.passed(),
        devices: suite.devices,
        docs_per_device: suite.docs,
        documents: suite.devices * suite.docs,
        changes_per_s: if wall_s > 0.0 { run.uploaded as f64 / wall_s } else { 0.0 },
        drained_s: run.drained.as_secs_f64(),
        verify_s: verification.took.as_secs_f64(),
        changes_down: run.downloaded,
        feed_chunks_down: run.foreign,
        server_rss_bytes: after.rss_bytes,
        floor_ratio: floor_s.filter(|floor_s| *floor_s > 0.0).map(|floor_s| wall_s / floor_s),
        documents_failed: verification.failures.len(),
        failures: verification.failures.iter().take(5).cloned().collect(),
        reports: None,
    }
}

/// The table for people.
fn render(report: &Report) -> String {
    let mut text = format!(
        "fieldcase bench: seed {}, {} edits, resync fraction {}, server {}\n",
        report.params.seed,
        report.params.edits,
        report.params.resync_fraction,
        report.params.server
    );
    let _ = writeln!(
        text,
        "{:<6} {:>9} {:>9} {:>9} {:>7} {:>10} {:>10} {:>7} {:>9} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "name",
        "D x C",
        "wall s",
        "drain s",
        "req",
        "up B",
        "down B",
        "changes",
        "chg/s",
        "cpu s",
        "rss MB",
        "floor s",
        "x floor",
        "verified"
    );
    let optional = |value: Option<f64>, precision: usize| {
        value.map_or_else(|| "-".to_owned(), |value| format!("{value:.precision$}"))
    };
    for scenario in &report.scenarios {
        let _ = writeln!(
            text,
            "{:<6} {:>9} {:>9.3} {:>9.3} {:>7} {:>10} {:>10} {:>7} {:>9.0} {:>8} {:>8} {:>8} {:>7} {:>8}",
            scenario.name,
            format!("{}x{}", scenario.devices, scenario.docs_per_device),
            scenario.wall_s,
            scenario.drained_s,
            scenario.requests,
            scenario.bytes_up,
            scenario.bytes_down,
            scenario.changes,
            scenario.changes_per_s,
            optional(scenario.server_cpu_s, 2),
            optional(scenario.server_peak_rss_bytes.map(|bytes| bytes as f64 / 1e6), 1),
            optional(scenario.floor_s, 3),
            optional(scenario.floor_ratio, 1),
            if scenario.verified {
                "yes".to_owned()
            } else {
                format!("NO ({})", scenario.documents_failed)
            },
        );
    }
    for scenario in &report.scenarios {
        for timing in scenario.reports.iter().flatten() {
            let _ = writeln!(
                text,
                "{:<6} {:<28} {:>9.3} s {:>10} B  status {}",
                scenario.name, timing.path, timing.wall_s, timing.bytes, timing.status
            );
        }
    }
    for scenario in report.scenarios.iter().filter(|scenario| !scenario.verified) {
        for failure in &scenario.failures {
            let _ = writeln!(text, "{}: {failure}", scenario.name);
        }
    }
    text.trim_end().to_owned()
}
