//! The commands of the `fieldcase` binary, one module per group, and how their results print.
//!
//! A command returns an [`Output`]: the machine-readable JSON of DESIGN.md §9 and a rendering
//! for people; `main` prints one or the other. A failure is an `anyhow` error whose chain
//! carries the typed errors of this crate and of sync-core; [`error_code`] reads from that
//! chain the stable code that `--json` prints, so that commands need not map errors by hand.

pub mod admin;
pub mod bench;
pub mod device;
pub mod enroll;
pub mod numbers;
pub mod report;
pub mod review;

use std::io;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;
use sync_core::error::{EditError, ReplicaError};
use thiserror::Error;

use crate::auth::AuthError;
use crate::client::ClientError;
use crate::replica_store::StoreError;

/// The global options every command receives.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The device home: replica database and evidence blobs.
    pub home: PathBuf,
    /// Base URL of the server; only commands that talk to it read it.
    pub server: String,
    /// Whether output is JSON; commands use it only to decide on a progress bar.
    pub json: bool,
}

/// What a command prints on success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    json: String,
    text: String,
    // Whether the command did what it was asked; an output that reports a failed check (a
    // benchmark whose documents failed verification) prints, then exits non-zero.
    succeeded: bool,
}

impl Output {
    /// Pairs the JSON of `value` with a rendering for people.
    pub fn new(value: &impl Serialize, text: String) -> Self {
        let json = serde_json::to_string(value).expect("command outputs serialise to JSON");
        Self { json, text, succeeded: true }
    }

    /// The same output, marked as reporting a failure: it prints as usual and the command
    /// exits with status 1.
    pub fn failed(mut self) -> Self {
        self.succeeded = false;
        self
    }

    /// Output printed as it is, `--json` or not: a CSV report.
    pub fn verbatim(text: String) -> Self {
        Self { json: text.clone(), text, succeeded: true }
    }

    /// Whether the command succeeded; `false` after [`Self::failed`].
    pub fn succeeded(&self) -> bool {
        self.succeeded
    }

    /// The machine-readable output, one JSON document.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The output for people.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A refusal by a command, with the stable code `--json` reports for it.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct CommandError {
    code: &'static str,
    message: String,
}

impl CommandError {
    /// A refusal with `code` (snake_case) and a lowercase human sentence.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

/// The stable snake_case code of a failure, read from the typed errors in its chain.
///
/// The outermost typed error wins, so a command that refuses with a [`CommandError`] decides
/// the code even when it wraps another error. A failure with no typed error in its chain is
/// `internal_error`.
pub fn error_code(error: &anyhow::Error) -> &str {
    if let Some(refusal) = error.downcast_ref::<CommandError>() {
        return refusal.code();
    }
    for cause in error.chain() {
        if let Some(client_error) = cause.downcast_ref::<ClientError>() {
            return client_error.code();
        }
        if let Some(store_error) = cause.downcast_ref::<StoreError>() {
            return store_error.code();
        }
        if let Some(auth_error) = cause.downcast_ref::<AuthError>() {
            return auth_error.code();
        }
        if cause.is::<EditError>() {
            return "invalid_edit";
        }
        if let Some(replica_error) = cause.downcast_ref::<ReplicaError>() {
            return match replica_error {
                // Only a sync applies received bytes, so bad bytes came from the server.
                ReplicaError::Corrupt(_) | ReplicaError::Incomplete(_) => "invalid_response",
                ReplicaError::Reconcile(_) => "internal_error",
            };
        }
        if cause.is::<io::Error>() {
            return "io_error";
        }
    }
    "internal_error"
}

/// The `{"error": {"code", "message"}}` document `--json` prints for a failure; the message
/// is the whole chain of causes on one line.
pub fn error_json(error: &anyhow::Error) -> String {
    json!({"error": {"code": error_code(error), "message": format!("{error:#}")}}).to_string()
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;
    use sync_core::ids::DocumentId;

    use super::*;

    #[track_caller]
    fn check(error: &anyhow::Error, expected_code: &str) {
        assert_eq!(error_code(error), expected_code);
        let printed: serde_json::Value = serde_json::from_str(&error_json(error)).unwrap();
        assert_eq!(printed["error"]["code"], expected_code);
        assert_eq!(printed["error"]["message"], format!("{error:#}"));
    }

    #[test]
    fn codes_come_from_the_typed_errors_in_the_chain() {
        let unknown = StoreError::UnknownDocument(DocumentId::from_bytes([1; 16]));
        check(
            &Err::<(), _>(unknown).context("showing the document").unwrap_err(),
            "unknown_document",
        );
        check(&anyhow::Error::new(EditError::NotText("outcome".to_owned())), "invalid_edit");
        let refused = ClientError::Api {
            status: 403,
            code: "out_of_scope".to_owned(),
            message: "not your township".to_owned(),
            actor: None,
        };
        check(&anyhow::Error::new(refused).context("syncing"), "out_of_scope");
        check(
            &anyhow::Error::new(EditError::NoSuchPath("x".to_owned()))
                .context(CommandError::new("not_a_case", "events belong to case files")),
            "not_a_case",
        );
        check(&anyhow::anyhow!("something unexpected"), "internal_error");
    }
}
