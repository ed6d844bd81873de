//! `fieldcase enroll`: makes this device an officer's device with a one-time code.
//!
//! The device key is generated (once) and saved before the server is contacted, so a retry
//! after a lost answer proves the same key. The server's answer (device id, officer, role,
//! township, the allocated actor, its token key and the master data) is stored in the replica
//! in one transaction; from then on every change the device writes carries that actor.

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::auth::{DeviceKey, Session};
use crate::client::Client;
use crate::commands::device::open_store;
use crate::commands::{CommandError, Output, Settings};
use crate::replica_store::Enrollment;

/// `fieldcase enroll`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The one-time enrollment code an admin issued for the officer.
    #[arg(long)]
    pub code: String,
    /// A name for this device, shown to admins.
    #[arg(long)]
    pub name: Option<String>,
}

/// What `enroll --json` prints.
#[derive(Debug, Serialize)]
struct Enrolled<'a> {
    device: &'a str,
    officer: &'a str,
    role: &'a str,
    township: Option<&'a str>,
    actor: &'a str,
}

/// Enrolls the device; refuses with `already_enrolled` when it already is.
pub fn enroll(settings: &Settings, args: &EnrollArgs) -> Result<Output> {
    let mut store = open_store(settings)?;
    if let Some(enrollment) = store.enrollment()? {
        bail!(CommandError::new(
            "already_enrolled",
            format!(
                "this device is already enrolled as device {} of officer {}",
                enrollment.device, enrollment.officer
            )
        ));
    }
    if DeviceKey::load(&settings.home)?.is_none() {
        DeviceKey::generate().save(&settings.home).context("saving the device key")?;
    }
    let client = Client::new(&settings.server);
    let mut session = Session::open(client, &settings.home)?;
    let answer = session
        .enroll(&args.code, args.name.as_deref())
        .with_context(|| format!("enrolling with {}", settings.server))?;

    let text_field = |name: &str| -> Result<String> {
        answer[name].as_str().map(str::to_owned).ok_or_else(|| {
            CommandError::new(
                "invalid_response",
                format!("the enrollment answer has no \"{name}\" string"),
            )
            .into()
        })
    };
    let enrollment = Enrollment {
        device: text_field("device")?,
        officer: text_field("officer")?,
        officer_name: answer["officer_name"].as_str().unwrap_or_default().to_owned(),
        role: text_field("role")?,
        township: answer["township"].as_str().map(str::to_owned),
        actor: text_field("actor")?,
        server_key: answer["server_key"].clone(),
    };
    let master_data = answer.get("master_data_json").cloned().unwrap_or(Value::Null);
    store
        .enroll(&enrollment, &master_data, answer["master_data"].as_str())
        .context("storing the enrollment")?;

    let enrolled = Enrolled {
        device: &enrollment.device,
        officer: &enrollment.officer,
        role: &enrollment.role,
        township: enrollment.township.as_deref(),
        actor: &enrollment.actor,
    };
    let text = format!(
        "enrolled device {} for officer {} {} ({}, township {}); actor {}",
        enrollment.device,
        enrollment.officer,
        enrollment.officer_name,
        enrollment.role,
        enrollment.township.as_deref().unwrap_or("none"),
        enrollment.actor,
    );
    Ok(Output::new(&enrolled, text))
}
