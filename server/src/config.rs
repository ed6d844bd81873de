//! Command-line and environment configuration of `fieldcase-server`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How to run the server: where to listen and where to keep the data.
///
/// Every field can also be set through its `FIELDCASE_…` environment variable; the defaults run
/// as they are on a developer machine.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fieldcase-server", version, about = "The fieldcase sync and review server")]
pub struct Config {
    /// Address to listen on; port 0 picks a free port, printed on the first stdout line.
    #[arg(long, env = "FIELDCASE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory holding the SQLite database (`fieldcase.sqlite`); created when missing.
    #[arg(long, env = "FIELDCASE_DATA_DIR", default_value = "./fieldcase-data")]
    pub data_dir: PathBuf,
    /// On a fresh data directory, also seed a demo registry (agencies, matters, an
    /// entrustment, officers with certificates and enrollment codes) and write `demo.json`.
    #[arg(long, env = "FIELDCASE_DEMO")]
    pub demo: bool,
}
