//! sync-core: the record documents of fieldcase and the logic of syncing them, without IO.
//!
//! # The lifecycle of a record
//!
//! 1. An officer opens an inspection or a case file on a device: [`records::create_document`]
//!    reconciles a fresh [`records::InspectionRecord`] or [`records::CaseFile`] into a new
//!    Automerge document written with the device's registered actor. The document is created
//!    once; every other replica receives it by sync.
//! 2. The officer edits offline ([`edit`]); every edit is an Automerge change by that actor.
//! 3. On resync, [`replica::SyncRound::plan`] collects every document's changes after the heads
//!    the server acknowledged into one [`protocol::SyncRequest`], with the device's feed cursor.
//! 4. The server parses each change strictly and merges each document's new changes in one
//!    call ([`merge::parse_changes`], [`merge::merge_changes`]), commits, and answers with the
//!    changes the device lacks ([`protocol::SyncResponse`]).
//! 5. [`replica::SyncRound::apply`] merges the answer and moves the acknowledged heads.
//! 6. Anyone reading the merged record sees one [`view::DocumentView`]: the record, every field
//!    written concurrently ([`merge::field_conflicts`]) and every rule it breaks
//!    ([`validate::findings`]).
//!
//! sync-core does no IO and never reads the clock or a random source: time, ids and actors
//! are arguments, so the same code runs on the server, in the CLI and in a mobile app.

#![warn(missing_docs)]

pub mod body;
pub mod calendar;
pub mod deadlines;
pub mod edit;
pub mod error;
pub mod ids;
pub mod json;
pub mod merge;
pub mod numbers;
pub mod protocol;
pub mod records;
mod refork;
pub mod replica;
pub mod scope;
pub mod validate;
pub mod view;

#[cfg(test)]
mod network;

pub use automerge;
