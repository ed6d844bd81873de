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
    /// What to do; without a command the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address to listen on; port 0 picks a free port, printed on the first stdout line.
    #[arg(long, env = "FIELDCASE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory holding the SQLite database (`fieldcase.sqlite`); created when missing.
    #[arg(long, env = "FIELDCASE_DATA_DIR", default_value = "./fieldcase-data", global = true)]
    pub data_dir: PathBuf,
    /// On a fresh data directory, also seed a demo registry (agencies, matters, an
    /// entrustment, officers with certificates and enrollment codes) and write `demo.json`.
    #[arg(long, env = "FIELDCASE_DEMO")]
    pub demo: bool,
    /// An operator quota on the database file, in bytes (SQLite `max_page_count`): writes
    /// past it answer 507 `storage_full` while reads go on; restart with a larger value to
    /// recover.
    #[arg(long, env = "FIELDCASE_MAX_DB_SIZE")]
    pub max_db_size: Option<u64>,
}

/// The subcommands of `fieldcase-server`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Checks the database of the data directory (SQLite integrity, every document rebuilt
    /// from the change log against its stored heads and snapshot), prints a JSON report and
    /// exits with status 1 on any problem. Safe beside a running server.
    Check,
}
