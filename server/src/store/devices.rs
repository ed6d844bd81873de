//! SQL on devices, their Automerge actors and the one-time enrollment codes.
//!
//! A code is stored only as its SHA-256 hash and used once; enrolling a device consumes it,
//! registers the device key's thumbprint (unique), and allocates the device's actor, all in
//! one transaction with its audit row.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::registry::{Device, DeviceStatus, Officer};
use crate::store::registry::{
    Author, audit, json_column, not_found, parse_column, require_officer, text_of, to_json,
};
use crate::store::{Refusal, StoreError};

/// A device asking to enroll, with the ids the server chose for it.
#[derive(Debug, Clone)]
pub(crate) struct Enrollment {
    /// SHA-256 (hex) of the enrollment code presented.
    pub(crate) code_hash: String,
    /// The new device's id.
    pub(crate) device_id: String,
    /// RFC 7638 thumbprint of the device key.
    pub(crate) jkt: String,
    /// The device's public JWK.
    pub(crate) jwk: serde_json::Value,
    /// Optional device name.
    pub(crate) name: Option<String>,
    /// The fresh Automerge actor id allocated to the device.
    pub(crate) actor: [u8; 16],
    /// Server time, milliseconds since the Unix epoch.
    pub(crate) now: i64,
}

/// Stores a new enrollment code (hashed) for an officer.
pub(crate) fn insert_enrollment_code(
    connection: &Connection,
    change: &Author<'_>,
    code_hash: &str,
    officer: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    require_officer(connection, officer)?;
    connection
        .prepare_cached(
            "INSERT INTO enrollment_codes (code_hash, officer, expires_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![code_hash, officer, expires_at])?;
    let record = serde_json::json!({ "officer": officer, "expires_at": expires_at });
    audit::<(), _>(connection, change, "issue", ("enrollment_code", officer), None, Some(&record))?;
    Ok(())
}

/// Consumes the code and enrolls the device; returns the device and its officer.
///
/// # Errors
/// [`Refusal::InvalidEnrollmentCode`] for an unknown, used or expired code,
/// [`Refusal::DeviceAlreadyEnrolled`] when the key is already registered.
pub(crate) fn enroll_device(
    connection: &Connection,
    enrollment: &Enrollment,
) -> Result<(Device, Officer), StoreError> {
    let code: Option<(String, i64, Option<i64>)> = connection
        .prepare_cached(
            "SELECT officer, expires_at, used_at FROM enrollment_codes WHERE code_hash = ?1",
        )?
        .query_row([&enrollment.code_hash], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    let officer_id = match code {
        Some((officer, expires_at, None)) if enrollment.now <= expires_at => officer,
        _ => return Err(StoreError::Refused(Refusal::InvalidEnrollmentCode)),
    };
    if device_by_jkt(connection, &enrollment.jkt)?.is_some() {
        return Err(StoreError::Refused(Refusal::DeviceAlreadyEnrolled));
    }
    let officer = require_officer(connection, &officer_id)?;
    let device = Device {
        id: enrollment.device_id.clone(),
        officer: officer_id.clone(),
        jkt: enrollment.jkt.clone(),
        jwk: enrollment.jwk.clone(),
        name: enrollment.name.clone(),
        status: DeviceStatus::Active,
        enrolled_at: enrollment.now,
    };
    connection
        .prepare_cached(
            "INSERT INTO devices (id, officer, jkt, jwk, name, status, enrolled_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            device.id,
            device.officer,
            device.jkt,
            to_json(&device.jwk)?,
            device.name,
            text_of(&device.status)?,
            device.enrolled_at,
        ])?;
    connection
        .prepare_cached(
            "INSERT INTO actors (actor, device, officer, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![&enrollment.actor[..], device.id, device.officer, enrollment.now])?;
    connection
        .prepare_cached(
            "UPDATE enrollment_codes SET used_at = ?2, used_by_device = ?3 WHERE code_hash = ?1",
        )?
        .execute(params![enrollment.code_hash, enrollment.now, device.id])?;
    let change = Author { who: &officer_id, now: enrollment.now };
    let after = serde_json::json!({ "device": &device, "actor": hex::encode(enrollment.actor) });
    audit::<(), _>(connection, &change, "enroll", ("device", &device.id), None, Some(&after))?;
    Ok((device, officer))
}

/// A fresh actor for an enrolled device (`POST /v1/actors`).
#[derive(Debug, Clone)]
pub(crate) struct NewActor {
    /// The random actor id the server chose.
    pub(crate) actor: [u8; 16],
    /// The calling device.
    pub(crate) device: String,
    /// The device's officer.
    pub(crate) officer: String,
    /// Server time, milliseconds since the Unix epoch.
    pub(crate) now: i64,
}

/// Registers one more actor to a device and its officer, with its audit row; the device's
/// earlier actors stay registered.
pub(crate) fn allocate_actor(
    connection: &Connection,
    new_actor: &NewActor,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT INTO actors (actor, device, officer, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            &new_actor.actor[..],
            new_actor.device,
            new_actor.officer,
            new_actor.now
        ])?;
    let change = Author { who: &new_actor.officer, now: new_actor.now };
    let actor = hex::encode(new_actor.actor);
    let after = serde_json::json!({ "device": new_actor.device, "officer": new_actor.officer, "actor": actor });
    audit::<(), _>(connection, &change, "allocate", ("actor", &actor), None, Some(&after))?;
    Ok(())
}

const DEVICE_SELECT: &str = "SELECT id, officer, jkt, jwk, name, status, enrolled_at FROM devices";

/// The device enrolled with this key thumbprint.
pub(crate) fn device_by_jkt(
    connection: &Connection,
    jkt: &str,
) -> Result<Option<Device>, StoreError> {
    Ok(connection
        .prepare_cached(&format!("{DEVICE_SELECT} WHERE jkt = ?1"))?
        .query_row([jkt], device_row)
        .optional()?)
}

/// One device.
pub(crate) fn get_device(connection: &Connection, id: &str) -> Result<Option<Device>, StoreError> {
    Ok(connection
        .prepare_cached(&format!("{DEVICE_SELECT} WHERE id = ?1"))?
        .query_row([id], device_row)
        .optional()?)
}

/// Every device, in enrollment order.
pub(crate) fn list_devices(connection: &Connection) -> Result<Vec<Device>, StoreError> {
    let mut statement =
        connection.prepare_cached(&format!("{DEVICE_SELECT} ORDER BY enrolled_at, id"))?;
    let rows = statement.query_map([], device_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes a device and retires its actors.
pub(crate) fn revoke_device(
    connection: &Connection,
    change: &Author<'_>,
    id: &str,
) -> Result<Device, StoreError> {
    let before = get_device(connection, id)?.ok_or_else(|| not_found("device", id))?;
    connection
        .prepare_cached("UPDATE devices SET status = 'revoked' WHERE id = ?1")?
        .execute([id])?;
    connection
        .prepare_cached(
            "UPDATE actors SET retired_at = ?2 WHERE device = ?1 AND retired_at IS NULL",
        )?
        .execute(params![id, change.now])?;
    let after = Device { status: DeviceStatus::Revoked, ..before.clone() };
    audit(connection, change, "revoke", ("device", id), Some(&before), Some(&after))?;
    Ok(after)
}

/// The actor ids registered to the device and not retired.
pub(crate) fn device_actors(
    connection: &Connection,
    device: &str,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT actor FROM actors WHERE device = ?1 AND retired_at IS NULL")?;
    let rows = statement.query_map([device], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn device_row(row: &Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: row.get(0)?,
        officer: row.get(1)?,
        jkt: row.get(2)?,
        jwk: json_column(row, 3)?,
        name: row.get(4)?,
        status: parse_column::<DeviceStatus>(row, 5)?,
        enrolled_at: row.get(6)?,
    })
}
