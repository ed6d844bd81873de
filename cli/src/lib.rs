//! The fieldcase client: a field device's replica, the HTTP client and the `fieldcase` commands.
//!
//! - [`auth`]: the device key, DPoP proofs and the authenticated [`auth::Session`] every
//!   server call of an enrolled device goes through.
//! - [`client`]: the typed blocking HTTP client of the server, shared with the e2e tests; the
//!   only code that knows URLs.
//! - [`replica_store`]: the device's documents, actor, cursor and evidence blobs in SQLite
//!   under `--home`.
//! - [`commands`]: what each `fieldcase` command does and prints; `main.rs` only parses the
//!   command line and dispatches.
//!
//! The device logic itself (what to send, how to apply the answer) is `sync_core::replica`;
//! this crate adds the IO around it: the clock, random ids, SQLite and HTTP.

pub mod auth;
pub mod client;
pub mod commands;
pub mod replica_store;
#[cfg(test)]
mod test_server;
