//! SQL for public disclosure (执法公开): who may enforce what, under which agreements, by which
//! standards, and where to complain.
//!
//! Every query selects the columns the law asks to publish and nothing else: no officer id, no
//! device, no personal data beyond the officer's name and certificate.

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::registry::timestamp;
use crate::store::StoreError;

/// An officer who may enforce now, as published.
#[derive(Debug, Serialize)]
pub(crate) struct PublicOfficer {
    /// Name.
    pub(crate) name: String,
    /// Certificate number.
    pub(crate) cert_no: String,
    /// Enforcement sectors the certificate covers.
    pub(crate) sectors: Vec<String>,
    /// Territory.
    pub(crate) territory: String,
    /// The officer's township (agency name).
    pub(crate) agency: Option<String>,
    /// Issuer of the certificate.
    pub(crate) issuer: String,
    /// Start of validity, RFC 3339.
    pub(crate) valid_from: String,
    /// End of validity, RFC 3339.
    pub(crate) valid_to: String,
}

/// Officers holding an active certificate valid at `now_ms`, by name.
pub(crate) fn officers(
    connection: &Connection,
    now_ms: i64,
) -> Result<Vec<PublicOfficer>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT o.name, c.cert_no, c.sectors, c.territory, a.name, c.issuer, c.valid_from, c.valid_to \
         FROM certificates c JOIN officers o ON o.id = c.officer \
         LEFT JOIN agencies a ON a.id = o.township \
         WHERE c.status = 'active' AND c.valid_from <= ?1 AND ?1 <= c.valid_to \
         ORDER BY o.name, c.cert_no",
    )?;
    let rows = statement.query_map(params![now_ms], |row| {
        Ok(PublicOfficer {
            name: row.get(0)?,
            cert_no: row.get(1)?,
            sectors: json_list(&row.get::<_, String>(2)?),
            territory: row.get(3)?,
            agency: row.get(4)?,
            issuer: row.get(5)?,
            valid_from: timestamp::format(row.get(6)?),
            valid_to: timestamp::format(row.get(7)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An active entrustment agreement, as published (Administrative Penalty Law Art. 20 ¶2).
#[derive(Debug, Serialize)]
pub(crate) struct PublicEntrustment {
    /// Agreement id.
    pub(crate) id: String,
    /// The entrusting department.
    pub(crate) entrusting_agency: String,
    /// The entrusted township.
    pub(crate) township: String,
    /// Legal basis allowing the entrustment.
    pub(crate) legal_basis: String,
    /// Start of the term, RFC 3339.
    pub(crate) valid_from: String,
    /// End of the term, RFC 3339.
    pub(crate) valid_to: String,
    /// The matters entrusted and the actions allowed.
    pub(crate) items: Vec<PublicScopeItem>,
}

/// One entrusted matter.
#[derive(Debug, Serialize)]
pub(crate) struct PublicScopeItem {
    /// Matter code.
    pub(crate) matter: String,
    /// Matter name.
    pub(crate) name: String,
    /// Actions allowed.
    pub(crate) actions: Vec<String>,
}

/// Agreements that are active and inside their term at `now_ms`.
pub(crate) fn entrustments(
    connection: &Connection,
    now_ms: i64,
) -> Result<Vec<PublicEntrustment>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT e.id, d.name, t.name, e.legal_basis, e.valid_from, e.valid_to \
         FROM entrustments e JOIN agencies d ON d.id = e.entrusting_agency \
         JOIN agencies t ON t.id = e.township \
         WHERE e.status = 'active' AND e.valid_from <= ?1 AND ?1 <= e.valid_to ORDER BY e.id",
    )?;
    let agreements: Vec<PublicEntrustment> = statement
        .query_map(params![now_ms], |row| {
            Ok(PublicEntrustment {
                id: row.get(0)?,
                entrusting_agency: row.get(1)?,
                township: row.get(2)?,
                legal_basis: row.get(3)?,
                valid_from: timestamp::format(row.get(4)?),
                valid_to: timestamp::format(row.get(5)?),
                items: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut items = connection.prepare_cached(
        "SELECT i.matter, m.name, i.actions FROM entrustment_items i \
         JOIN matters m ON m.code = i.matter WHERE i.entrustment = ?1 ORDER BY i.matter",
    )?;
    agreements
        .into_iter()
        .map(|mut agreement| {
            agreement.items = items
                .query_map(params![agreement.id], |row| {
                    Ok(PublicScopeItem {
                        matter: row.get(0)?,
                        name: row.get(1)?,
                        actions: json_list(&row.get::<_, String>(2)?),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(agreement)
        })
        .collect()
}

/// A matter with its legal basis and penalty standard, as published.
#[derive(Debug, Serialize)]
pub(crate) struct PublicMatter {
    /// Matter code.
    pub(crate) code: String,
    /// Name.
    pub(crate) name: String,
    /// Sector.
    pub(crate) sector: String,
    /// Articles violated and penalty articles.
    pub(crate) legal_basis: String,
    /// Penalty standard (裁量基准).
    pub(crate) penalty_standard: String,
}

/// Every matter of the power list.
pub(crate) fn matters(connection: &Connection) -> Result<Vec<PublicMatter>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT code, name, sector, legal_basis, penalty_standard FROM matters ORDER BY code",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(PublicMatter {
            code: row.get(0)?,
            name: row.get(1)?,
            sector: row.get(2)?,
            legal_basis: row.get(3)?,
            penalty_standard: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A complaint channel (投诉举报): an agency and its published hotline.
#[derive(Debug, Serialize)]
pub(crate) struct ComplaintChannel {
    /// Agency name.
    pub(crate) agency: String,
    /// Hotline.
    pub(crate) hotline: String,
}

/// Every agency that publishes a hotline.
pub(crate) fn complaint_channels(
    connection: &Connection,
) -> Result<Vec<ComplaintChannel>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT name, hotline FROM agencies WHERE hotline IS NOT NULL AND hotline != '' ORDER BY id",
    )?;
    let rows = statement
        .query_map([], |row| Ok(ComplaintChannel { agency: row.get(0)?, hotline: row.get(1)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A JSON list of strings stored in a column; an unreadable column reads as empty.
fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}
