//! The `fieldcase-server` binary: reads the configuration, opens the store, binds and serves
//! until SIGINT or SIGTERM; `fieldcase-server check` checks the database instead.

// The first stdout line, `listening on ADDR`, is the contract with scripts and the e2e harness,
// which read the bound port from it; everything else goes through tracing to stderr.
#![allow(clippy::print_stdout)]

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::Parser;
use server::config::{Command, Config};
use server::state::AppState;
use server::store::check::check_database;
use server::store::{DATABASE_FILE, Store, StoreOptions};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// jemalloc, configured in `.cargo/config.toml`: two arenas, and a background thread that
/// returns freed pages to the system within 100 ms. With glibc's malloc, the memory a burst of
/// uploads and feed pages freed stayed with its thread's arena: scenario C peaked at 160–230 MB
/// and held about 200 MB after it; with this, 105 MB and 70–90 MB, at the same wall time
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    if let Some(Command::Check) = config.command {
        return check(&config);
    }

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let database = config.data_dir.join(DATABASE_FILE);
    let options = StoreOptions { max_db_size: config.max_db_size };
    let store = Store::open_with(&database, options)
        .with_context(|| format!("opening database {}", database.display()))?;
    let state = AppState::new(store, &config.data_dir).context("loading the server keys")?;
    server::bootstrap::prepare(&state, &config.data_dir, config.demo)
        .context("preparing the registry")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;

    println!("listening on {address}");
    std::io::stdout().flush().context("flushing stdout")?;
    tracing::info!(%address, database = %database.display(), "serving");

    server::serve(listener, state, shutdown_signal()).await.context("serving")?;
    tracing::info!("shut down");
    Ok(())
}

/// `fieldcase-server check`: prints the report as JSON; a failed check exits with status 1.
fn check(config: &Config) -> anyhow::Result<()> {
    let database = config.data_dir.join(DATABASE_FILE);
    let report = check_database(&database)
        .with_context(|| format!("checking database {}", database.display()))?;
    println!("{}", serde_json::to_string(&report).context("encoding the report")?);
    std::io::stdout().flush().context("flushing stdout")?;
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        tokio::signal::ctrl_c().await.expect("installing the SIGINT handler");
    };
    #[cfg(unix)]
    let terminate = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
