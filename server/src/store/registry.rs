//! SQL on the registry: agencies, matters, entrustments, officers, certificates, the scope a
//! township holds, and the audit log every registry change writes in its own transaction.
//!
//! Writers take the caller's transaction, check references and duplicates themselves (so a
//! client mistake gets a precise refusal, not a constraint error), write the row and its audit
//! row, and return the row as stored.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sync_core::scope::{Action, ScopeItem};

use crate::registry::{
    Agency, AgencyKind, AuditEntry, Certificate, CertificateStatus, Entrustment, EntrustmentItem,
    EntrustmentStatus, Matter, Officer, Role,
};
use crate::store::{Refusal, StoreError};

/// Who changes the registry, and when; every write records it in the audit log.
#[derive(Debug, Clone)]
pub(crate) struct Author<'a> {
    /// The officer making the change, or [`crate::registry::SYSTEM`].
    pub(crate) who: &'a str,
    /// Server time, milliseconds since the Unix epoch.
    pub(crate) now: i64,
}

/// Appends one audit row.
pub(crate) fn audit<B: Serialize, A: Serialize>(
    connection: &Connection,
    change: &Author<'_>,
    action: &str,
    object: (&str, &str),
    before: Option<&B>,
    after: Option<&A>,
) -> Result<(), StoreError> {
    let (object_kind, object_id) = object;
    let before = before.map(to_json).transpose()?;
    let after = after.map(to_json).transpose()?;
    connection
        .prepare_cached(
            "INSERT INTO audit (at, actor_officer, action, object_kind, object_id, before, after) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![change.now, change.who, action, object_kind, object_id, before, after])?;
    Ok(())
}

/// The audit log, oldest first.
pub(crate) fn list_audit(connection: &Connection) -> Result<Vec<AuditEntry>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT id, at, actor_officer, action, object_kind, object_id, before, after FROM audit \
         ORDER BY id",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(AuditEntry {
            id: row.get(0)?,
            at: row.get(1)?,
            actor_officer: row.get(2)?,
            action: row.get(3)?,
            object_kind: row.get(4)?,
            object_id: row.get(5)?,
            before: json_column_opt(row, 6)?,
            after: json_column_opt(row, 7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether no officer is registered yet: the data directory is fresh.
pub(crate) fn is_empty(connection: &Connection) -> Result<bool, StoreError> {
    Ok(!connection.prepare_cached("SELECT 1 FROM officers")?.exists([])?)
}

// ---- agencies ---------------------------------------------------------------------------------

/// Registers an agency.
pub(crate) fn insert_agency(
    connection: &Connection,
    change: &Author<'_>,
    agency: &Agency,
) -> Result<Agency, StoreError> {
    if get_agency(connection, &agency.id)?.is_some() {
        return Err(already_exists("agency", &agency.id));
    }
    if let Some(parent) = &agency.parent {
        require_agency(connection, parent)?;
    }
    connection
        .prepare_cached(
            "INSERT INTO agencies (id, name, code, kind, parent, hotline) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            agency.id,
            agency.name,
            agency.code,
            text_of(&agency.kind)?,
            agency.parent,
            agency.hotline
        ])?;
    audit::<(), _>(connection, change, "create", ("agency", &agency.id), None, Some(agency))?;
    Ok(agency.clone())
}

/// Every agency, by id.
pub(crate) fn list_agencies(connection: &Connection) -> Result<Vec<Agency>, StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT id, name, code, kind, parent, hotline FROM agencies ORDER BY id")?;
    let rows = statement.query_map([], agency_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn get_agency(connection: &Connection, id: &str) -> Result<Option<Agency>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT id, name, code, kind, parent, hotline FROM agencies WHERE id = ?1")?
        .query_row([id], agency_row)
        .optional()?)
}

fn agency_row(row: &Row<'_>) -> rusqlite::Result<Agency> {
    Ok(Agency {
        id: row.get(0)?,
        name: row.get(1)?,
        code: row.get(2)?,
        kind: parse_column::<AgencyKind>(row, 3)?,
        parent: row.get(4)?,
        hotline: row.get(5)?,
    })
}

fn require_agency(connection: &Connection, id: &str) -> Result<(), StoreError> {
    match get_agency(connection, id)? {
        Some(_) => Ok(()),
        None => Err(unknown_reference("agency", id)),
    }
}

// ---- matters ----------------------------------------------------------------------------------

/// Registers a matter.
pub(crate) fn insert_matter(
    connection: &Connection,
    change: &Author<'_>,
    matter: &Matter,
) -> Result<Matter, StoreError> {
    if get_matter(connection, &matter.code)?.is_some() {
        return Err(already_exists("matter", &matter.code));
    }
    connection
        .prepare_cached(
            "INSERT INTO matters (code, name, sector, legal_basis, penalty_standard, \
             allowed_actions, hearing_threshold_person, hearing_threshold_org) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            matter.code,
            matter.name,
            matter.sector,
            matter.legal_basis,
            matter.penalty_standard,
            to_json(&matter.allowed_actions)?,
            matter.hearing_threshold_person,
            matter.hearing_threshold_org,
        ])?;
    audit::<(), _>(connection, change, "create", ("matter", &matter.code), None, Some(matter))?;
    Ok(matter.clone())
}

/// Every matter, by code.
pub(crate) fn list_matters(connection: &Connection) -> Result<Vec<Matter>, StoreError> {
    let mut statement = connection.prepare_cached(&format!("{MATTER_SELECT} ORDER BY code"))?;
    let rows = statement.query_map([], matter_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const MATTER_SELECT: &str = "SELECT code, name, sector, legal_basis, penalty_standard, \
     allowed_actions, hearing_threshold_person, hearing_threshold_org FROM matters";

fn get_matter(connection: &Connection, code: &str) -> Result<Option<Matter>, StoreError> {
    Ok(connection
        .prepare_cached(&format!("{MATTER_SELECT} WHERE code = ?1"))?
        .query_row([code], matter_row)
        .optional()?)
}

fn matter_row(row: &Row<'_>) -> rusqlite::Result<Matter> {
    Ok(Matter {
        code: row.get(0)?,
        name: row.get(1)?,
        sector: row.get(2)?,
        legal_basis: row.get(3)?,
        penalty_standard: row.get(4)?,
        allowed_actions: json_column(row, 5)?,
        hearing_threshold_person: row.get(6)?,
        hearing_threshold_org: row.get(7)?,
    })
}

// ---- entrustments -----------------------------------------------------------------------------

/// Registers an entrustment agreement with its items.
///
/// The caller has already refused items granting `coerce` or `detain`.
pub(crate) fn insert_entrustment(
    connection: &Connection,
    change: &Author<'_>,
    entrustment: &Entrustment,
) -> Result<Entrustment, StoreError> {
    if get_entrustment(connection, &entrustment.id)?.is_some() {
        return Err(already_exists("entrustment", &entrustment.id));
    }
    require_agency(connection, &entrustment.entrusting_agency)?;
    require_agency(connection, &entrustment.township)?;
    for item in &entrustment.items {
        if get_matter(connection, &item.matter)?.is_none() {
            return Err(unknown_reference("matter", &item.matter));
        }
    }
    connection
        .prepare_cached(
            "INSERT INTO entrustments (id, entrusting_agency, township, legal_basis, valid_from, \
             valid_to, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            entrustment.id,
            entrustment.entrusting_agency,
            entrustment.township,
            entrustment.legal_basis,
            entrustment.valid_from,
            entrustment.valid_to,
            text_of(&entrustment.status)?,
        ])?;
    let mut insert_item = connection.prepare_cached(
        "INSERT INTO entrustment_items (entrustment, matter, actions) VALUES (?1, ?2, ?3)",
    )?;
    for item in &entrustment.items {
        let inserted =
            insert_item.execute(params![entrustment.id, item.matter, to_json(&item.actions)?]);
        if inserted.as_ref().is_err_and(is_constraint_violation) {
            return Err(already_exists("entrustment item for matter", &item.matter));
        }
        inserted?;
    }
    audit::<(), _>(
        connection,
        change,
        "create",
        ("entrustment", &entrustment.id),
        None,
        Some(entrustment),
    )?;
    Ok(entrustment.clone())
}

/// Every entrustment with its items, by id.
pub(crate) fn list_entrustments(connection: &Connection) -> Result<Vec<Entrustment>, StoreError> {
    let ids: Vec<String> = connection
        .prepare_cached("SELECT id FROM entrustments ORDER BY id")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter()
        .map(|id| {
            get_entrustment(connection, id)?
                .ok_or_else(|| StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
        })
        .collect()
}

/// One entrustment with its items.
pub(crate) fn get_entrustment(
    connection: &Connection,
    id: &str,
) -> Result<Option<Entrustment>, StoreError> {
    let row = connection
        .prepare_cached(
            "SELECT id, entrusting_agency, township, legal_basis, valid_from, valid_to, status \
             FROM entrustments WHERE id = ?1",
        )?
        .query_row([id], |row| {
            Ok(Entrustment {
                id: row.get(0)?,
                entrusting_agency: row.get(1)?,
                township: row.get(2)?,
                legal_basis: row.get(3)?,
                valid_from: row.get(4)?,
                valid_to: row.get(5)?,
                status: parse_column::<EntrustmentStatus>(row, 6)?,
                items: Vec::new(),
            })
        })
        .optional()?;
    let Some(mut entrustment) = row else { return Ok(None) };
    entrustment.items = connection
        .prepare_cached(
            "SELECT matter, actions FROM entrustment_items WHERE entrustment = ?1 ORDER BY matter",
        )?
        .query_map([id], |row| {
            Ok(EntrustmentItem { matter: row.get(0)?, actions: json_column(row, 1)? })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(entrustment))
}

/// Sets an entrustment's status; audited with the row before and after.
pub(crate) fn set_entrustment_status(
    connection: &Connection,
    change: &Author<'_>,
    id: &str,
    status: EntrustmentStatus,
) -> Result<Entrustment, StoreError> {
    let before = get_entrustment(connection, id)?.ok_or_else(|| not_found("entrustment", id))?;
    connection
        .prepare_cached("UPDATE entrustments SET status = ?2 WHERE id = ?1")?
        .execute(params![id, text_of(&status)?])?;
    let after = Entrustment { status, ..before.clone() };
    let action = text_of(&status)?;
    audit(connection, change, &action, ("entrustment", id), Some(&before), Some(&after))?;
    Ok(after)
}

/// The scope items of the township's entrustments that are active at `now_ms`, with each
/// matter's sector: what the township may do right now.
pub(crate) fn scope_items(
    connection: &Connection,
    township: &str,
    now_ms: i64,
) -> Result<Vec<ScopeItem>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT i.matter, m.sector, i.actions, e.id, e.entrusting_agency, e.valid_from, \
         e.valid_to FROM entrustments e \
         JOIN entrustment_items i ON i.entrustment = e.id \
         JOIN matters m ON m.code = i.matter \
         WHERE e.township = ?1 AND e.status = 'active' AND e.valid_from <= ?2 \
         AND ?2 <= e.valid_to ORDER BY e.id, i.matter",
    )?;
    let rows = statement.query_map(params![township, now_ms], |row| {
        Ok(ScopeItem {
            matter: row.get(0)?,
            sector: row.get(1)?,
            actions: json_column::<Vec<Action>>(row, 2)?,
            agreement: row.get(3)?,
            entrusting_agency: row.get(4)?,
            valid_from: row.get(5)?,
            valid_to: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---- officers ---------------------------------------------------------------------------------

/// Registers an officer.
pub(crate) fn insert_officer(
    connection: &Connection,
    change: &Author<'_>,
    officer: &Officer,
) -> Result<Officer, StoreError> {
    if get_officer(connection, &officer.id)?.is_some() {
        return Err(already_exists("officer", &officer.id));
    }
    if let Some(township) = &officer.township {
        require_agency(connection, township)?;
    }
    connection
        .prepare_cached("INSERT INTO officers (id, name, township, role) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![officer.id, officer.name, officer.township, officer.role.as_str()])?;
    audit::<(), _>(connection, change, "create", ("officer", &officer.id), None, Some(officer))?;
    Ok(officer.clone())
}

/// Every officer, by id.
pub(crate) fn list_officers(connection: &Connection) -> Result<Vec<Officer>, StoreError> {
    let mut statement =
        connection.prepare_cached("SELECT id, name, township, role FROM officers ORDER BY id")?;
    let rows = statement.query_map([], officer_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One officer.
pub(crate) fn get_officer(
    connection: &Connection,
    id: &str,
) -> Result<Option<Officer>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT id, name, township, role FROM officers WHERE id = ?1")?
        .query_row([id], officer_row)
        .optional()?)
}

fn officer_row(row: &Row<'_>) -> rusqlite::Result<Officer> {
    Ok(Officer {
        id: row.get(0)?,
        name: row.get(1)?,
        township: row.get(2)?,
        role: parse_column::<Role>(row, 3)?,
    })
}

/// Moves an officer to another agency (township); from the next request on, the officer sees
/// that township's documents and no longer the old one's.
///
/// # Errors
/// `not_found` for an unknown officer, `unknown_reference` for an unknown agency.
pub(crate) fn move_officer(
    connection: &Connection,
    change: &Author<'_>,
    id: &str,
    township: &str,
) -> Result<Officer, StoreError> {
    let before = get_officer(connection, id)?.ok_or_else(|| not_found("officer", id))?;
    require_agency(connection, township)?;
    connection
        .prepare_cached("UPDATE officers SET township = ?2 WHERE id = ?1")?
        .execute(params![id, township])?;
    let after = Officer { township: Some(township.to_owned()), ..before.clone() };
    audit(connection, change, "move", ("officer", id), Some(&before), Some(&after))?;
    Ok(after)
}

/// Fails with `unknown_reference` unless the officer exists.
pub(crate) fn require_officer(connection: &Connection, id: &str) -> Result<Officer, StoreError> {
    get_officer(connection, id)?.ok_or_else(|| unknown_reference("officer", id))
}

// ---- certificates -----------------------------------------------------------------------------

const CERTIFICATE_SELECT: &str = "SELECT cert_no, officer, issuer, sectors, territory, \
     valid_from, valid_to, status, rev FROM certificates";

/// Registers a certificate (status and `rev` as given; a new one is active at rev 1).
pub(crate) fn insert_certificate(
    connection: &Connection,
    change: &Author<'_>,
    certificate: &Certificate,
) -> Result<Certificate, StoreError> {
    if get_certificate(connection, &certificate.cert_no)?.is_some() {
        return Err(already_exists("certificate", &certificate.cert_no));
    }
    require_officer(connection, &certificate.officer)?;
    connection
        .prepare_cached(
            "INSERT INTO certificates (cert_no, officer, issuer, sectors, territory, valid_from, \
             valid_to, status, rev) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            certificate.cert_no,
            certificate.officer,
            certificate.issuer,
            to_json(&certificate.sectors)?,
            certificate.territory,
            certificate.valid_from,
            certificate.valid_to,
            text_of(&certificate.status)?,
            certificate.rev,
        ])?;
    audit::<(), _>(
        connection,
        change,
        "create",
        ("certificate", &certificate.cert_no),
        None,
        Some(certificate),
    )?;
    Ok(certificate.clone())
}

/// Every certificate, by number.
pub(crate) fn list_certificates(connection: &Connection) -> Result<Vec<Certificate>, StoreError> {
    let mut statement =
        connection.prepare_cached(&format!("{CERTIFICATE_SELECT} ORDER BY cert_no"))?;
    let rows = statement.query_map([], certificate_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One certificate.
pub(crate) fn get_certificate(
    connection: &Connection,
    cert_no: &str,
) -> Result<Option<Certificate>, StoreError> {
    Ok(connection
        .prepare_cached(&format!("{CERTIFICATE_SELECT} WHERE cert_no = ?1"))?
        .query_row([cert_no], certificate_row)
        .optional()?)
}

/// The certificate that speaks for the officer at `now_ms`: an active one valid now if any,
/// else the one that ends last (so a refusal names the state of the latest card).
pub(crate) fn current_certificate(
    connection: &Connection,
    officer: &str,
    now_ms: i64,
) -> Result<Option<Certificate>, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "{CERTIFICATE_SELECT} WHERE officer = ?1 ORDER BY \
         (status = 'active' AND valid_from <= ?2 AND ?2 <= valid_to) DESC, valid_to DESC, \
         cert_no DESC LIMIT 1"
    ))?;
    Ok(statement.query_row(params![officer, now_ms], certificate_row).optional()?)
}

/// Sets a certificate's status and bumps its `rev`, so every token minted before is refused.
pub(crate) fn set_certificate_status(
    connection: &Connection,
    change: &Author<'_>,
    cert_no: &str,
    status: CertificateStatus,
    action: &str,
) -> Result<Certificate, StoreError> {
    let before =
        get_certificate(connection, cert_no)?.ok_or_else(|| not_found("certificate", cert_no))?;
    connection
        .prepare_cached("UPDATE certificates SET status = ?2, rev = rev + 1 WHERE cert_no = ?1")?
        .execute(params![cert_no, text_of(&status)?])?;
    let after = Certificate { status, rev: before.rev + 1, ..before.clone() };
    audit(connection, change, action, ("certificate", cert_no), Some(&before), Some(&after))?;
    Ok(after)
}

/// When a certificate's current suspension or revocation began, read from the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Withdrawal {
    /// Server time of the first suspension or revocation since the certificate was last
    /// registered or reinstated, ms.
    pub(crate) at: i64,
    /// The certificate's `rev` just before it: tokens minted at that revision were minted
    /// while the certificate was still valid.
    pub(crate) rev_before: i64,
}

/// The start of the certificate's current withdrawal: the first `suspend` or `revoke` audit row
/// after the last other row of the certificate (its registration or a reinstatement); `None`
/// when there is none, as for an active certificate.
pub(crate) fn certificate_withdrawal(
    connection: &Connection,
    cert_no: &str,
) -> Result<Option<Withdrawal>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT a.at, json_extract(a.before, '$.rev') FROM audit a \
         WHERE a.object_kind = 'certificate' AND a.object_id = ?1 \
         AND a.action IN ('suspend', 'revoke') \
         AND a.id > COALESCE((SELECT MAX(b.id) FROM audit b WHERE b.object_kind = 'certificate' \
             AND b.object_id = ?1 AND b.action NOT IN ('suspend', 'revoke')), 0) \
         ORDER BY a.id LIMIT 1",
    )?;
    let row = statement
        .query_row([cert_no], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?)))
        .optional()?;
    Ok(row.and_then(|(at, rev_before)| rev_before.map(|rev_before| Withdrawal { at, rev_before })))
}

fn certificate_row(row: &Row<'_>) -> rusqlite::Result<Certificate> {
    Ok(Certificate {
        cert_no: row.get(0)?,
        officer: row.get(1)?,
        issuer: row.get(2)?,
        sectors: json_column(row, 3)?,
        territory: row.get(4)?,
        valid_from: row.get(5)?,
        valid_to: row.get(6)?,
        status: parse_column::<CertificateStatus>(row, 7)?,
        rev: row.get(8)?,
    })
}

// ---- shared -----------------------------------------------------------------------------------

/// A refusal: the object already exists.
pub(crate) fn already_exists(kind: &str, id: &str) -> StoreError {
    StoreError::Refused(Refusal::AlreadyExists(format!("{kind} {id} already exists")))
}

/// A refusal: a referenced object does not exist.
pub(crate) fn unknown_reference(kind: &str, id: &str) -> StoreError {
    StoreError::Refused(Refusal::UnknownReference(format!("{kind} {id} is not registered")))
}

/// A refusal: the object named in the path does not exist.
pub(crate) fn not_found(kind: &str, id: &str) -> StoreError {
    StoreError::Refused(Refusal::NotFound(format!("{kind} {id} is not registered")))
}

/// The snake_case text of a unit enum, as serde writes it.
pub(crate) fn text_of<T: Serialize>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => Ok(text),
        _ => Err(StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(
            "not a unit enum".into(),
        ))),
    }
}

/// Serialises a value for a JSON TEXT column.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|err| StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(err))))
}

/// Reads a JSON TEXT column.
pub(crate) fn json_column<T: DeserializeOwned>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(err))
    })
}

fn json_column_opt<T: DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| {
        serde_json::from_str(&text).map_err(|err| {
            rusqlite::Error::FromSqlConversionFailure(
                index,
                rusqlite::types::Type::Text,
                Box::new(err),
            )
        })
    })
    .transpose()
}

/// Reads a snake_case enum column.
pub(crate) fn parse_column<T: DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    serde_json::from_value(serde_json::Value::String(text)).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(err))
    })
}

fn is_constraint_violation(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
}

// ---- standing ---------------------------------------------------------------------------------

/// An officer's registry state at one moment: what tokens and master data are made from.
#[derive(Debug, Clone)]
pub(crate) struct Standing {
    /// The officer.
    pub(crate) officer: Officer,
    /// Their current certificate (see [`current_certificate`]), valid or not.
    pub(crate) certificate: Option<Certificate>,
    /// What their township may do now.
    pub(crate) scope: Vec<ScopeItem>,
}

/// The officer's standing at `now_ms`, or `None` for an unknown officer.
pub(crate) fn standing(
    connection: &Connection,
    officer: &str,
    now_ms: i64,
) -> Result<Option<Standing>, StoreError> {
    let Some(officer) = get_officer(connection, officer)? else { return Ok(None) };
    let certificate = current_certificate(connection, &officer.id, now_ms)?;
    let scope = match &officer.township {
        Some(township) => scope_items(connection, township, now_ms)?,
        None => Vec::new(),
    };
    Ok(Some(Standing { officer, certificate, scope }))
}
