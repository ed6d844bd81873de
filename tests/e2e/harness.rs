//! Starts a real server on a random port with its own data dir, and drives real devices.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// The path of a workspace binary next to the test executable (`target/<profile>/<name>`).
///
/// Cargo only sets `CARGO_BIN_EXE_*` for a binary's own package, so the binaries are found by
/// location; `cargo build --workspace --bins` must have run first.
pub(crate) fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins && cargo test --workspace`",
        path.display()
    );
    path
}

/// A `fieldcase-server` process with a fresh data dir; killed on drop.
pub(crate) struct TestServer {
    child: Child,
    url: String,
    data_dir: TempDir,
}

impl TestServer {
    /// Starts the server on port 0 and waits for its `listening on ADDR` line.
    pub(crate) fn spawn() -> Self {
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let stderr =
            if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() };
        let mut child = Command::new(bin_path("fieldcase-server"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start fieldcase-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut first_line = String::new();
        BufReader::new(stdout).read_line(&mut first_line).expect("read the listening line");
        let address = first_line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
            .to_owned();
        Self { child, url: format!("http://{address}"), data_dir }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The server's data directory.
    #[allow(dead_code)]
    pub(crate) fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// A typed client for requests no device command makes.
    pub(crate) fn client(&self) -> cli::client::Client {
        cli::client::Client::new(&self.url)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field device: the real `fieldcase` binary with its own home directory.
pub(crate) struct Device {
    home: TempDir,
    server: String,
}

impl Device {
    /// A fresh device pointed at `server`.
    pub(crate) fn new(server: &TestServer) -> Self {
        Self { home: tempfile::tempdir().expect("temp home"), server: server.url().to_owned() }
    }

    /// The same device (same home, same replica) talking to another server.
    pub(crate) fn pointed_at(self, server: &TestServer) -> Self {
        Self { home: self.home, server: server.url().to_owned() }
    }

    /// Runs `fieldcase --json ARGS` and returns the raw output.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        Command::new(bin_path("fieldcase"))
            .arg("--home")
            .arg(self.home.path())
            .args(["--server", &self.server, "--json"])
            .args(args)
            .output()
            .expect("run fieldcase")
    }

    /// Runs a command that must succeed and parses its JSON output.
    #[track_caller]
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "fieldcase {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("{args:?} printed {stdout:?}: {err}"))
    }

    /// Writes a file into the device's home, as a camera would.
    pub(crate) fn write_file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, bytes).expect("write evidence file");
        path.to_str().expect("utf-8 temp path").to_owned()
    }
}
