//! `fieldcase numbers ...`: document number blocks (文书编号号段, DOMAIN.md §3) on an officer's
//! device: lease a block from the server, list the blocks held, and read how a block is
//! accounted for.
//!
//! A leased block is stored in the replica with its cursor; `fieldcase event DOC
//! issue_document` takes its serials offline, in order (`commands::device`).

use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sync_core::numbers::NumberBlock;

use crate::auth::Session;
use crate::client::{Client, paths};
use crate::commands::device::{open_store, require_enrollment};
use crate::commands::{Output, Settings};

/// `fieldcase numbers ...`.
#[derive(Debug, Subcommand)]
pub enum NumbersCommand {
    /// Leases a block of document numbers for this device from the server.
    Lease(LeaseArgs),
    /// Lists the number blocks this device holds and the serials left in each, offline.
    List,
    /// Shows how every serial of a block is accounted for: used, void, unused, used twice,
    /// reported outside it (the block's officer, supervisors and admins).
    Reconcile(ReconcileArgs),
}

/// `fieldcase numbers lease`.
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Document type code (`onsite_decision`, ...): each type has its own number space.
    #[arg(long)]
    pub doc_type: String,
    /// Serials wanted, 1 to 50; the server's default is 20.
    #[arg(long)]
    pub count: Option<u32>,
}

/// `fieldcase numbers reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The block id.
    pub block: String,
}

/// Runs a numbers command.
pub fn numbers(settings: &Settings, command: NumbersCommand) -> Result<Output> {
    let store = open_store(settings)?;
    require_enrollment(&store)?;
    match command {
        NumbersCommand::Lease(args) => {
            let mut session = Session::open(Client::new(&settings.server), &settings.home)
                .context("opening the device session")?;
            let mut body = json!({"doc_type": args.doc_type});
            if let Some(count) = args.count {
                body["count"] = json!(count);
            }
            let answer =
                session.post_json(paths::NUMBERS_LEASE, &body).context("leasing a number block")?;
            let block: NumberBlock = serde_json::from_value(answer.clone())
                .context("reading the leased number block")?;
            store.store_number_block(&block).context("storing the leased number block")?;
            let text = format!(
                "leased {} for {}: {} to {} ({} … {})",
                block.id,
                block.doc_type,
                block.first,
                block.last,
                block.render(block.first),
                block.render(block.last)
            );
            Ok(Output::new(&answer, text))
        }
        NumbersCommand::List => {
            let cursors = store.number_blocks()?;
            let listed: Vec<Value> = cursors
                .iter()
                .map(|cursor| {
                    json!({
                        "block": cursor.block,
                        "next": cursor.next,
                        "remaining": cursor.remaining(),
                    })
                })
                .collect();
            let mut text = if cursors.is_empty() {
                "no number blocks on this device".to_owned()
            } else {
                format!(
                    "{:<20}  {:<18}  {:>5}  {:>5}  {:>5}  LEFT",
                    "BLOCK", "TYPE", "YEAR", "FIRST", "LAST"
                )
            };
            for cursor in &cursors {
                let block = &cursor.block;
                let _ = write!(
                    text,
                    "\n{:<20}  {:<18}  {:>5}  {:>5}  {:>5}  {}",
                    block.id,
                    block.doc_type,
                    block.year,
                    block.first,
                    block.last,
                    cursor.remaining()
                );
            }
            Ok(Output::new(&listed, text))
        }
        NumbersCommand::Reconcile(args) => {
            let mut session = Session::open(Client::new(&settings.server), &settings.home)
                .context("opening the device session")?;
            let answer = session
                .get_json(&paths::number_reconciliation(&args.block))
                .context("reading the reconciliation")?;
            let count = |key: &str| answer[key].as_array().map_or(0, Vec::len);
            let duplicates = answer["duplicates"].as_object().map_or(0, serde_json::Map::len);
            let text = format!(
                "block {}: {} used, {} void, {} unused, {} used twice, {} outside",
                args.block,
                count("used"),
                count("void"),
                count("unused"),
                duplicates,
                count("outside")
            );
            Ok(Output::new(&answer, text))
        }
    }
}
