//! Black-box end-to-end tests: the real `fieldcase-server` on port 0 and real `fieldcase` devices.
//!
//! Build the binaries first: `cargo build --workspace --bins && cargo test --workspace`.

mod auth;
mod blobs;
mod codes;
mod crash;
mod errors;
mod harness;
mod jose;
mod numbers;
mod openapi;
mod public;
mod quarter;
mod reports;
mod restore;
mod resync;
mod review;
mod scope;
mod storage;
mod sync;
mod tidy;
