//! The inspection record (检查记录): who inspected which party, where, and what they found.

use autosurgeon::{Hydrate, Reconcile, Text};

use crate::records::{Evidence, OfficerPresent, Party, RecordKind, SCHEMA_VERSION};

/// One inspection. The findings are Automerge Text, so concurrent edits merge character-wise.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct InspectionRecord {
    /// Schema version that wrote the document.
    pub schema: i64,
    /// Always `"inspection"`.
    pub kind: String,
    /// The document id, repeated inside the document so exports are self-describing.
    pub id: String,
    /// Matter code (执法事项) inspected under.
    pub matter: String,
    /// The township whose officers inspect.
    pub township: String,
    /// Where.
    pub site: Site,
    /// Who was inspected.
    pub party: Party,
    /// The officers present (at least two) and the certificate numbers shown.
    pub officers: Vec<OfficerPresent>,
    /// Device time the inspection started, milliseconds since the Unix epoch.
    pub started_at: i64,
    /// Device time it ended, once it has.
    pub ended_at: Option<i64>,
    /// Checklist items.
    pub checklist: Vec<ChecklistItem>,
    /// What the officers found, as free text.
    pub findings: Text,
    /// Evidence items.
    pub evidence: Vec<Evidence>,
    /// Signatures of the officers and the inspected party.
    pub signatures: Vec<Signature>,
    /// `none`, `rectification_order`, `case_lead` or `referral`.
    pub outcome: String,
}

/// The inspected site.
#[derive(Debug, Clone, PartialEq, Default, Reconcile, Hydrate)]
pub struct Site {
    /// Name of the site or business.
    pub name: String,
    /// Street address.
    pub address: String,
    /// Position fix, when the device had one.
    pub gnss: Option<Gnss>,
}

/// A GNSS position.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct Gnss {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

/// One checklist line.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct ChecklistItem {
    /// Id minted on the device.
    #[key]
    pub id: String,
    /// What is checked.
    pub label: String,
    /// `ok`, `problem` or `n/a`.
    pub result: String,
}

/// A signature: who signed, as what, and the document heads the signature covers.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct Signature {
    /// Id minted on the device.
    #[key]
    pub id: String,
    /// Officer id or the party's name.
    pub signer: String,
    /// `officer`, `party` or `witness`; `refused` records a refusal to sign.
    pub role: String,
    /// Hex change hashes the signature covers.
    pub heads: Vec<String>,
    /// Device time, milliseconds since the Unix epoch.
    pub signed_at: i64,
}

impl InspectionRecord {
    /// A fresh record; the caller supplies the id and the device time.
    pub fn new(id: String, matter: String, party: Party, site: Site, started_at: i64) -> Self {
        Self {
            schema: SCHEMA_VERSION,
            kind: RecordKind::Inspection.as_str().to_owned(),
            id,
            matter,
            township: String::new(),
            site,
            party,
            officers: Vec::new(),
            started_at,
            ended_at: None,
            checklist: Vec::new(),
            findings: Text::with_value(""),
            evidence: Vec::new(),
            signatures: Vec::new(),
            outcome: "none".to_owned(),
        }
    }
}
