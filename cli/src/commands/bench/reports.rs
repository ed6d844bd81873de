//! Scenario `R`: the supervision reports over the records the scale scenario stored (issue 6:
//! "a report over 10,000 stored records answers in well under a second").
//!
//! Each report endpoint is asked once, through the bench's admin session (the `Supervisor`
//! extractor admits admins), and timed from the request to the last byte of its JSON answer.
//! The endpoints themselves are issue 6's; the bench only reads them.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::client::paths;
use crate::commands::bench::fleet::Admin;

/// The supervision reports timed, in order.
const REPORTS: [&str; 3] = ["overdue", "alerts", "assessment"];

/// One report's answer as timed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReportTiming {
    /// The path asked.
    pub(crate) path: String,
    /// Request to the last byte of the answer, seconds.
    pub(crate) wall_s: f64,
    /// Bytes of the answer's body.
    pub(crate) bytes: u64,
    /// The HTTP status.
    pub(crate) status: u16,
}

/// Every report timed, and the total.
#[derive(Debug)]
pub(crate) struct ReportRun {
    pub(crate) reports: Vec<ReportTiming>,
    pub(crate) took: Duration,
}

impl ReportRun {
    /// Every report answered 200.
    pub(crate) fn passed(&self) -> bool {
        self.reports.iter().all(|report| report.status == 200)
    }
}

/// Asks each report once, one after the other.
///
/// # Errors
/// A report the server could not be asked for at all (a refusal is a status, not an error).
pub(crate) fn time_reports(admin: &mut Admin) -> Result<ReportRun> {
    let started = Instant::now();
    let mut reports = Vec::with_capacity(REPORTS.len());
    for report in REPORTS {
        let path = paths::report(report, &[]);
        let asked = Instant::now();
        let answer = admin.get(&path).with_context(|| format!("asking {path}"))?;
        reports.push(ReportTiming {
            path,
            wall_s: asked.elapsed().as_secs_f64(),
            bytes: answer.body.len() as u64,
            status: answer.status,
        });
    }
    Ok(ReportRun { reports, took: started.elapsed() })
}
