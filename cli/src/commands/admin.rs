//! `fieldcase admin ...`: the registry (agencies, matters, entrustments, officers,
//! certificates, devices, enrollment codes, audit) through the admin API, with the enrolled
//! admin device's credentials.
//!
//! `--json` prints the server's JSON as it is; text mode prints a short table or one line.
//! The server decides who may call it (`forbidden` for a device of another role) and checks
//! every reference; the command only checks the shape of what it sends.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use sync_core::scope::Action;

use crate::auth::Session;
use crate::client::Client;
use crate::client::paths::{self, Registry, RegistryAction};
use crate::commands::device::{open_store, require_enrollment};
use crate::commands::{Output, Settings};

/// `fieldcase admin ...`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Agencies: county departments, townships, the justice bureau.
    #[command(subcommand)]
    Agency(AgencyCommand),
    /// Enforcement matters (执法事项).
    #[command(subcommand)]
    Matter(MatterCommand),
    /// Entrustment agreements (委托协议) and their scope items.
    #[command(subcommand)]
    Entrust(EntrustCommand),
    /// Officers.
    #[command(subcommand)]
    Officer(OfficerCommand),
    /// Enforcement certificates (执法证).
    #[command(subcommand)]
    Cert(CertCommand),
    /// Enrolled devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Issues a one-time enrollment code for an officer's device.
    EnrollCode(EnrollCodeArgs),
    /// Shows the registry audit log.
    Audit,
}

/// `fieldcase admin agency ...`.
#[derive(Debug, Subcommand)]
pub enum AgencyCommand {
    /// Registers an agency.
    Add(AgencyAddArgs),
    /// Lists the agencies.
    List,
}

/// `fieldcase admin matter ...`.
#[derive(Debug, Subcommand)]
pub enum MatterCommand {
    /// Registers a matter.
    Add(MatterAddArgs),
    /// Lists the matters.
    List,
}

/// `fieldcase admin entrust ...`.
#[derive(Debug, Subcommand)]
pub enum EntrustCommand {
    /// Registers an entrustment agreement.
    Add(EntrustAddArgs),
    /// Lists the entrustment agreements.
    List,
    /// Suspends an agreement: its township may no longer act under it.
    Suspend(IdArg),
    /// Revokes an agreement.
    Revoke(IdArg),
    /// Activates an agreement.
    Activate(IdArg),
}

/// `fieldcase admin officer ...`.
#[derive(Debug, Subcommand)]
pub enum OfficerCommand {
    /// Registers an officer.
    Add(OfficerAddArgs),
    /// Lists the officers.
    List,
}

/// `fieldcase admin cert ...`.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Registers a certificate.
    Add(CertAddArgs),
    /// Lists the certificates.
    List,
    /// Suspends a certificate.
    Suspend(CertNoArg),
    /// Revokes a certificate.
    Revoke(CertNoArg),
    /// Reinstates a suspended certificate.
    Reinstate(CertNoArg),
}

/// `fieldcase admin device ...`.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Lists the enrolled devices.
    List,
    /// Revokes a device: its key can no longer get tokens.
    Revoke(IdArg),
}

/// The id of a registry object.
#[derive(Debug, Args)]
pub struct IdArg {
    /// The id.
    pub id: String,
}

/// The number of a certificate.
#[derive(Debug, Args)]
pub struct CertNoArg {
    /// The certificate number.
    pub cert_no: String,
}

/// `fieldcase admin agency add`.
#[derive(Debug, Args)]
pub struct AgencyAddArgs {
    /// Registry id; the server makes one when absent.
    #[arg(long)]
    pub id: Option<String>,
    /// Full name.
    #[arg(long)]
    pub name: String,
    /// Agency code (机关代字).
    #[arg(long)]
    pub code: String,
    /// Kind of agency.
    #[arg(long, value_parser = ["county_dept", "township", "justice_bureau"])]
    pub kind: String,
    /// The parent agency.
    #[arg(long)]
    pub parent: Option<String>,
    /// Public hotline.
    #[arg(long)]
    pub hotline: Option<String>,
}

/// `fieldcase admin matter add`.
#[derive(Debug, Args)]
pub struct MatterAddArgs {
    /// Matter code.
    #[arg(long)]
    pub code: String,
    /// Name of the matter.
    #[arg(long)]
    pub name: String,
    /// Enforcement sector (执法类别), such as `work_safety`.
    #[arg(long)]
    pub sector: String,
    /// Legal basis.
    #[arg(long)]
    pub legal_basis: String,
    /// Penalty standard.
    #[arg(long)]
    pub penalty_standard: String,
    /// Allowed actions (`inspect`, `order_rectify`, `summary_penalty`, ...); one or more.
    #[arg(long = "action", required = true, num_args = 1.., value_parser = parse_action)]
    pub actions: Vec<String>,
    /// Fine above which a natural person must be offered a hearing, in yuan.
    #[arg(long)]
    pub hearing_threshold_person: Option<i64>,
    /// Fine above which an organisation must be offered a hearing, in yuan.
    #[arg(long)]
    pub hearing_threshold_org: Option<i64>,
}

/// `fieldcase admin entrust add`.
#[derive(Debug, Args)]
pub struct EntrustAddArgs {
    /// Registry id; the server makes one when absent.
    #[arg(long)]
    pub id: Option<String>,
    /// The entrusting department.
    #[arg(long = "from")]
    pub entrusting_agency: String,
    /// The township entrusted.
    #[arg(long = "to")]
    pub township: String,
    /// Legal basis.
    #[arg(long)]
    pub legal_basis: String,
    /// Start of the term (`2026-01-01` or RFC 3339).
    #[arg(long)]
    pub valid_from: String,
    /// End of the term (`2028-12-31` or RFC 3339).
    #[arg(long)]
    pub valid_to: String,
    /// Status of the agreement.
    #[arg(long, default_value = "active", value_parser = [
        "draft", "signed", "filed", "published", "active", "suspended", "expired", "revoked",
    ])]
    pub status: String,
    /// A scope item `MATTER:action,action`; repeat for each matter.
    #[arg(long = "item", required = true, value_parser = parse_scope_item)]
    pub items: Vec<Value>,
}

/// `fieldcase admin officer add`.
#[derive(Debug, Args)]
pub struct OfficerAddArgs {
    /// Registry id; the server makes one when absent.
    #[arg(long)]
    pub id: Option<String>,
    /// Full name.
    #[arg(long)]
    pub name: String,
    /// The officer's township.
    #[arg(long)]
    pub township: Option<String>,
    /// Role.
    #[arg(long, value_parser = ["officer", "supervisor", "admin"])]
    pub role: String,
}

/// `fieldcase admin cert add`.
#[derive(Debug, Args)]
pub struct CertAddArgs {
    /// Certificate number.
    #[arg(long)]
    pub cert_no: String,
    /// The officer holding it.
    #[arg(long)]
    pub officer: String,
    /// The issuing government.
    #[arg(long)]
    pub issuer: String,
    /// Sectors covered; one or more.
    #[arg(long = "sector", required = true, num_args = 1..)]
    pub sectors: Vec<String>,
    /// Territory of validity.
    #[arg(long)]
    pub territory: String,
    /// Start of validity (`2026-01-01` or RFC 3339).
    #[arg(long)]
    pub valid_from: String,
    /// End of validity (`2028-12-31` or RFC 3339).
    #[arg(long)]
    pub valid_to: String,
}

/// `fieldcase admin enroll-code`.
#[derive(Debug, Args)]
pub struct EnrollCodeArgs {
    /// The officer whose device will enroll with the code.
    #[arg(long)]
    pub officer: String,
}

/// Runs an admin command with the enrolled device's session.
pub fn admin(settings: &Settings, command: AdminCommand) -> Result<Output> {
    // The store stays open (and the home locked) so that no other command of this device
    // rewrites the session cache meanwhile.
    let store = open_store(settings)?;
    require_enrollment(&store)?;
    let mut session = Session::open(Client::new(&settings.server), &settings.home)
        .context("opening the device session")?;
    let session = &mut session;
    let output = match command {
        AdminCommand::Agency(AgencyCommand::Add(args)) => {
            let body = with_optional(
                json!({"name": args.name, "code": args.code, "kind": args.kind}),
                [("id", args.id), ("parent", args.parent), ("hotline", args.hotline)],
            );
            add(session, Registry::Agencies, &body, "agency", "id")
        }
        AdminCommand::Agency(AgencyCommand::List) => {
            list(session, Registry::Agencies, &["id", "code", "kind", "parent", "name"])
        }
        AdminCommand::Matter(MatterCommand::Add(args)) => {
            let mut body = json!({
                "code": args.code,
                "name": args.name,
                "sector": args.sector,
                "legal_basis": args.legal_basis,
                "penalty_standard": args.penalty_standard,
                "allowed_actions": args.actions,
            });
            if let Some(threshold) = args.hearing_threshold_person {
                body["hearing_threshold_person"] = json!(threshold);
            }
            if let Some(threshold) = args.hearing_threshold_org {
                body["hearing_threshold_org"] = json!(threshold);
            }
            add(session, Registry::Matters, &body, "matter", "code")
        }
        AdminCommand::Matter(MatterCommand::List) => {
            list(session, Registry::Matters, &["code", "sector", "allowed_actions", "name"])
        }
        AdminCommand::Entrust(EntrustCommand::Add(args)) => {
            let body = with_optional(
                json!({
                    "entrusting_agency": args.entrusting_agency,
                    "township": args.township,
                    "legal_basis": args.legal_basis,
                    "valid_from": args.valid_from,
                    "valid_to": args.valid_to,
                    "status": args.status,
                    "items": args.items,
                }),
                [("id", args.id)],
            );
            add(session, Registry::Entrustments, &body, "entrustment", "id")
        }
        AdminCommand::Entrust(EntrustCommand::List) => list(
            session,
            Registry::Entrustments,
            &["id", "entrusting_agency", "township", "status", "valid_from", "valid_to"],
        ),
        AdminCommand::Entrust(EntrustCommand::Suspend(arg)) => {
            act(session, Registry::Entrustments, &arg.id, RegistryAction::Suspend, "entrustment")
        }
        AdminCommand::Entrust(EntrustCommand::Revoke(arg)) => {
            act(session, Registry::Entrustments, &arg.id, RegistryAction::Revoke, "entrustment")
        }
        AdminCommand::Entrust(EntrustCommand::Activate(arg)) => {
            act(session, Registry::Entrustments, &arg.id, RegistryAction::Activate, "entrustment")
        }
        AdminCommand::Officer(OfficerCommand::Add(args)) => {
            let body = with_optional(
                json!({"name": args.name, "role": args.role}),
                [("id", args.id), ("township", args.township)],
            );
            add(session, Registry::Officers, &body, "officer", "id")
        }
        AdminCommand::Officer(OfficerCommand::List) => {
            list(session, Registry::Officers, &["id", "role", "township", "name"])
        }
        AdminCommand::Cert(CertCommand::Add(args)) => {
            let body = json!({
                "cert_no": args.cert_no,
                "officer": args.officer,
                "issuer": args.issuer,
                "sectors": args.sectors,
                "territory": args.territory,
                "valid_from": args.valid_from,
                "valid_to": args.valid_to,
            });
            add(session, Registry::Certificates, &body, "certificate", "cert_no")
        }
        AdminCommand::Cert(CertCommand::List) => list(
            session,
            Registry::Certificates,
            &["cert_no", "officer", "status", "rev", "sectors", "valid_from", "valid_to"],
        ),
        AdminCommand::Cert(CertCommand::Suspend(arg)) => act(
            session,
            Registry::Certificates,
            &arg.cert_no,
            RegistryAction::Suspend,
            "certificate",
        ),
        AdminCommand::Cert(CertCommand::Revoke(arg)) => act(
            session,
            Registry::Certificates,
            &arg.cert_no,
            RegistryAction::Revoke,
            "certificate",
        ),
        AdminCommand::Cert(CertCommand::Reinstate(arg)) => act(
            session,
            Registry::Certificates,
            &arg.cert_no,
            RegistryAction::Reinstate,
            "certificate",
        ),
        AdminCommand::Device(DeviceCommand::List) => {
            list(session, Registry::Devices, &["id", "officer", "status", "name"])
        }
        AdminCommand::Device(DeviceCommand::Revoke(arg)) => {
            act(session, Registry::Devices, &arg.id, RegistryAction::Revoke, "device")
        }
        AdminCommand::EnrollCode(args) => {
            let path = paths::registry(Registry::EnrollCodes);
            let issued = session
                .post_json(&path, &json!({"officer": args.officer}))
                .context("issuing an enrollment code")?;
            let text = format!(
                "enrollment code for {}: {} (expires {})",
                args.officer,
                cell(&issued["code"]),
                cell(&issued["expires_at"])
            );
            Ok(Output::new(&issued, text))
        }
        AdminCommand::Audit => list(
            session,
            Registry::Audit,
            &["id", "at", "actor_officer", "action", "object_kind", "object_id"],
        ),
    };
    drop(store);
    output
}

/// `POST`s a new registry object; prints `added <noun> <key>`.
fn add(
    session: &mut Session,
    collection: Registry,
    body: &Value,
    noun: &str,
    key: &str,
) -> Result<Output> {
    let created = session
        .post_json(&paths::registry(collection), body)
        .with_context(|| format!("adding the {noun}"))?;
    let id = if created[key].is_null() { &body[key] } else { &created[key] };
    Ok(Output::new(&created, format!("added {noun} {}", cell(id))))
}

/// `GET`s a registry collection; prints it as a table of `columns`.
fn list(session: &mut Session, collection: Registry, columns: &[&str]) -> Result<Output> {
    let listed = session.get_json(&paths::registry(collection)).context("reading the registry")?;
    let text = table(rows(&listed), columns);
    Ok(Output::new(&listed, text))
}

/// `POST`s a state change of one registry object; prints what it did.
fn act(
    session: &mut Session,
    collection: Registry,
    id: &str,
    action: RegistryAction,
    noun: &str,
) -> Result<Output> {
    let verb = match action {
        RegistryAction::Suspend => "suspended",
        RegistryAction::Revoke => "revoked",
        RegistryAction::Activate => "activated",
        RegistryAction::Reinstate => "reinstated",
    };
    let changed = session
        .post_json(&paths::registry_action(collection, id, action), &json!({}))
        .with_context(|| format!("changing {noun} {id}"))?;
    let mut text = format!("{verb} {noun} {id}");
    if let Some(status) = changed.get("status").and_then(Value::as_str) {
        let _ = write!(text, "; status {status}");
    }
    Ok(Output::new(&changed, text))
}

/// Adds each present optional field to a JSON object.
fn with_optional<const N: usize>(mut body: Value, fields: [(&str, Option<String>); N]) -> Value {
    for (name, value) in fields {
        if let Some(value) = value {
            body[name] = Value::String(value);
        }
    }
    body
}

/// The rows of a listing: the array itself, or the first array in an object wrapping it.
fn rows(listed: &Value) -> &[Value] {
    match listed {
        Value::Array(rows) => rows,
        Value::Object(map) => map.values().find_map(Value::as_array).map_or(&[], Vec::as_slice),
        _ => &[],
    }
}

/// A plain-text table of `columns` of `rows`, headed by the column names in capitals.
fn table(rows: &[Value], columns: &[&str]) -> String {
    if rows.is_empty() {
        return "nothing registered".to_owned();
    }
    let empty = Map::new();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let row = row.as_object().unwrap_or(&empty);
            columns.iter().map(|column| row.get(*column).map(cell).unwrap_or_default()).collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            cells.iter().map(|row| row[index].chars().count()).max().unwrap_or(0).max(column.len())
        })
        .collect();
    let headers: Vec<String> = columns.iter().map(|column| column.to_uppercase()).collect();
    std::iter::once(headers)
        .chain(cells)
        .map(|line| {
            let padded: Vec<String> = line
                .iter()
                .zip(&widths)
                .map(|(text, width)| {
                    let padding = width.saturating_sub(text.chars().count());
                    format!("{text}{}", " ".repeat(padding))
                })
                .collect();
            padded.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One value as a table cell: strings bare, lists comma-joined, null empty.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// An action name as the registry spells it (`inspect`, `summary_penalty`, ...).
fn parse_action(text: &str) -> Result<String, String> {
    Action::parse(text).map(|action| action.as_str().to_owned()).ok_or_else(|| {
        format!(
            "unknown action {text:?}; expected inspect, order_rectify, summary_penalty, \
             general_penalty, evidence_preserve, coerce or detain"
        )
    })
}

/// A scope item `MATTER:action,action` as the registry takes it.
fn parse_scope_item(text: &str) -> Result<Value, String> {
    let (matter, actions) = text
        .split_once(':')
        .filter(|(matter, actions)| !matter.is_empty() && !actions.is_empty())
        .ok_or_else(|| format!("expected MATTER:action,action, got {text:?}"))?;
    let actions = actions.split(',').map(parse_action).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"matter": matter, "actions": actions}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_items_parse_matter_and_actions() {
        assert_eq!(
            parse_scope_item("AJ-001:inspect,summary_penalty"),
            Ok(json!({"matter": "AJ-001", "actions": ["inspect", "summary_penalty"]}))
        );
        assert!(parse_scope_item("AJ-001:inspect,fly").is_err());
        assert!(parse_scope_item("AJ-001").is_err());
        assert!(parse_scope_item(":inspect").is_err());
    }

    #[test]
    fn listings_print_as_tables_of_the_chosen_columns() {
        let listed = json!([
            {"id": "o-1", "name": "李明", "role": "officer", "township": "t-chengguan"},
            {"id": "admin", "name": "admin", "role": "admin", "township": null},
        ]);
        let text = table(rows(&listed), &["id", "role", "township"]);
        assert_eq!(text, "ID     ROLE     TOWNSHIP\no-1    officer  t-chengguan\nadmin  admin");
        assert_eq!(rows(&json!({"officers": listed})).len(), 2);
        assert_eq!(table(&[], &["id"]), "nothing registered");
    }
}
