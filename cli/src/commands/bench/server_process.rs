//! The server a benchmark measures: a `fieldcase-server --demo` it starts on a temporary data
//! directory and port 0, or one already running; and how its CPU time and memory are read.
//!
//! For a server it started, the bench reads `/proc/<pid>/stat` (user + system CPU) and
//! `/proc/<pid>/status` (`VmHWM`, the peak resident set, reset per scenario through
//! `/proc/<pid>/clear_refs` where the kernel allows it). For a server it did not start it reads
//! `GET /metrics` when the server offers it, and reports nothing otherwise.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::client::{Client, paths};

/// The server binary, found next to the running `fieldcase` executable.
const SERVER_BINARY: &str = "fieldcase-server";

/// Clock ticks per second of `/proc/<pid>/stat` times: Linux reports them in USER_HZ, which is
/// 100 on every architecture it exposes to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// A `fieldcase-server --demo` the bench started; killed when dropped.
pub(crate) struct SpawnedServer {
    child: Child,
    url: String,
    demo: Value,
    // Held so that the data directory lives as long as the server; dropped after the kill.
    _data_dir: tempfile::TempDir,
}

impl SpawnedServer {
    /// Starts the server on a fresh temporary data directory and port 0, and reads the bound
    /// address from its first stdout line and the seeded registry from `demo.json`.
    ///
    /// The server's log goes to `server.log` in the data directory.
    pub(crate) fn start() -> Result<Self> {
        let binary = server_binary()?;
        let data_dir = tempfile::Builder::new()
            .prefix("fieldcase-bench-")
            .tempdir()
            .context("creating the server's data directory")?;
        let log = fs::File::create(data_dir.path().join("server.log"))
            .context("creating the server log")?;
        let mut child = Command::new(&binary)
            .arg("--demo")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut first_line = String::new();
        let read = BufReader::new(stdout).read_line(&mut first_line);
        let address = first_line.trim().strip_prefix("listening on ").map(str::to_owned);
        let Some(address) = address.filter(|_| read.is_ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not print its address (log: {})",
                binary.display(),
                data_dir.path().join("server.log").display()
            );
        };
        let demo_path = data_dir.path().join(server::bootstrap::DEMO_FILE);
        let mut server = Self {
            child,
            url: format!("http://{address}"),
            demo: Value::Null,
            _data_dir: data_dir,
        };
        // The server writes demo.json before it prints its address.
        let bytes =
            fs::read(&demo_path).with_context(|| format!("reading {}", demo_path.display()))?;
        server.demo = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", demo_path.display()))?;
        Ok(server)
    }

    /// The base URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The seeded registry, as `demo.json` describes it.
    pub(crate) fn demo(&self) -> &Value {
        &self.demo
    }

    /// The process id, to read its CPU time and memory.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `fieldcase-server` beside the running executable; an error that says how to build it.
fn server_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the fieldcase executable")?;
    let directory = exe.parent().context("the fieldcase executable has no directory")?;
    // Test binaries run from `target/<profile>/deps`; the server is one level up.
    let candidates = [directory.join(SERVER_BINARY), directory.join("..").join(SERVER_BINARY)];
    candidates.into_iter().find(|path| path.is_file()).with_context(|| {
        format!(
            "{SERVER_BINARY} is missing next to {}: build it with `cargo build --release \
             --workspace --bins`, or pass --server URL",
            exe.display()
        )
    })
}

/// CPU time and memory of the server, as far as the bench can read them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ServerUsage {
    /// User plus system CPU seconds since the process started.
    pub(crate) cpu_s: Option<f64>,
    /// Peak resident set in bytes since the last reset (or since start).
    pub(crate) peak_rss_bytes: Option<u64>,
    /// Resident set now, in bytes.
    pub(crate) rss_bytes: Option<u64>,
}

/// Where the server's usage comes from.
pub(crate) enum UsageSource {
    /// A process the bench started.
    Process(u32),
    /// A server's `GET /metrics`, when it has one.
    Metrics(Client),
}

impl UsageSource {
    /// Reads the usage now; what cannot be read is `None`.
    pub(crate) fn read(&self) -> ServerUsage {
        match self {
            Self::Process(pid) => process_usage(*pid),
            Self::Metrics(client) => metrics_usage(client),
        }
    }

    /// Starts a new peak-RSS window: `/proc/<pid>/clear_refs` with 5 resets `VmHWM` to the
    /// current RSS. Returns whether it did; otherwise the peak is the process's lifetime peak.
    pub(crate) fn reset_peak(&self) -> bool {
        match self {
            Self::Process(pid) => fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok(),
            Self::Metrics(_) => false,
        }
    }
}

fn process_usage(pid: u32) -> ServerUsage {
    let cpu_s = fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
        // The command name may hold spaces; the fields follow its closing parenthesis.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // Fields 14 and 15 of stat(5) (utime, stime) are 12 and 13 after the name.
        let user: f64 = fields.get(11)?.parse().ok()?;
        let system: f64 = fields.get(12)?.parse().ok()?;
        Some((user + system) / TICKS_PER_SECOND)
    });
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kilobytes = |name: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    };
    ServerUsage { cpu_s, peak_rss_bytes: kilobytes("VmHWM:"), rss_bytes: kilobytes("VmRSS:") }
}

fn metrics_usage(client: &Client) -> ServerUsage {
    let Ok(raw) =
        client.request_raw("GET", paths::METRICS, &[("accept", "text/plain")], Vec::new())
    else {
        return ServerUsage::default();
    };
    if raw.status != 200 {
        return ServerUsage::default();
    }
    let text = String::from_utf8_lossy(&raw.body);
    let metric = |name: &str| -> Option<f64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find(|line| line.split_whitespace().next() == Some(name))
            .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
    };
    // Prometheus writes integers as floats; a byte count is far below 2^53.
    #[expect(clippy::cast_possible_truncation, reason = "byte counts are whole and small")]
    let bytes = |value: f64| value.max(0.0) as u64;
    ServerUsage {
        cpu_s: metric("process_cpu_seconds_total"),
        peak_rss_bytes: metric("process_max_resident_memory_bytes").map(bytes),
        rss_bytes: metric("process_resident_memory_bytes").map(bytes),
    }
}
