//! The registry's rows as the server passes them around and the admin API prints them:
//! agencies, matters, entrustments, officers, certificates, devices and audit entries.
//!
//! The registry is server-authoritative (DESIGN.md §3): authorization reads it live on every
//! request, and every change to it writes an audit row in the same transaction
//! (`store::registry`). Times are milliseconds since the Unix epoch inside the server and
//! RFC 3339 UTC strings on the wire.

use serde::{Deserialize, Serialize};
use sync_core::scope::Action;

/// Who wrote an audit row when no officer did: the first start and the demo seed.
pub(crate) const SYSTEM: &str = "system";

/// The kind of an agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AgencyKind {
    /// A county department that entrusts matters (县应急管理局).
    CountyDept,
    /// A township government that enforces entrusted matters.
    Township,
    /// The justice bureau that supervises enforcement (司法局).
    JusticeBureau,
}

/// An enforcement agency (执法主体).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Agency {
    /// Registry id (`t-chengguan`).
    pub(crate) id: String,
    /// Full name, as printed on documents.
    pub(crate) name: String,
    /// 机关代字, the short code in document numbers.
    pub(crate) code: String,
    /// What kind of agency it is.
    pub(crate) kind: AgencyKind,
    /// The parent agency, if any.
    pub(crate) parent: Option<String>,
    /// The published complaint hotline.
    pub(crate) hotline: Option<String>,
}

/// An enforcement matter (执法事项) of the power list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Matter {
    /// Matter code (`AJ-001`), the key.
    pub(crate) code: String,
    /// Name of the matter.
    pub(crate) name: String,
    /// Enforcement sector (执法类别) a certificate must cover.
    pub(crate) sector: String,
    /// Legal basis (违法条款 and 罚则条款).
    pub(crate) legal_basis: String,
    /// Penalty standard.
    pub(crate) penalty_standard: String,
    /// Actions the law allows for the matter.
    #[schema(value_type = Vec<String>)]
    pub(crate) allowed_actions: Vec<Action>,
    /// Fine (yuan) from which a natural person may ask for a hearing.
    pub(crate) hearing_threshold_person: Option<i64>,
    /// Fine (yuan) from which an organisation may ask for a hearing.
    pub(crate) hearing_threshold_org: Option<i64>,
}

/// Where an entrustment agreement stands; only `active` inside its term grants anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EntrustmentStatus {
    /// Being drafted.
    Draft,
    /// Signed by both sides.
    Signed,
    /// Filed with the justice bureau.
    Filed,
    /// Published.
    Published,
    /// In force.
    Active,
    /// Temporarily not in force.
    Suspended,
    /// Past its term.
    Expired,
    /// Withdrawn.
    Revoked,
}

/// One matter an agreement entrusts, with the actions it allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct EntrustmentItem {
    /// Matter code.
    pub(crate) matter: String,
    /// Actions allowed; never `coerce` or `detain`.
    #[schema(value_type = Vec<String>)]
    pub(crate) actions: Vec<Action>,
}

/// An entrustment agreement (委托执法协议): a department entrusts matters to a township.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Entrustment {
    /// Registry id.
    pub(crate) id: String,
    /// The entrusting department, the name agency of decisions.
    pub(crate) entrusting_agency: String,
    /// The entrusted township.
    pub(crate) township: String,
    /// The law allowing the entrustment.
    pub(crate) legal_basis: String,
    /// Start of the term.
    #[serde(with = "timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub(crate) valid_from: i64,
    /// End of the term.
    #[serde(with = "timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub(crate) valid_to: i64,
    /// Where the agreement stands.
    pub(crate) status: EntrustmentStatus,
    /// The entrusted matters.
    pub(crate) items: Vec<EntrustmentItem>,
}

/// What an officer does in the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// Field officer: reads and writes the documents of their township.
    Officer,
    /// Supervisor: reads everything, uploads nothing.
    Supervisor,
    /// Registry administrator.
    Admin,
}

impl Role {
    /// The snake_case form.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Officer => "officer",
            Self::Supervisor => "supervisor",
            Self::Admin => "admin",
        }
    }
}

/// An officer (执法人员), supervisor or administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Officer {
    /// Registry id.
    pub(crate) id: String,
    /// Name.
    pub(crate) name: String,
    /// Employing agency (the township, for field officers).
    pub(crate) township: Option<String>,
    /// Role.
    pub(crate) role: Role,
}

/// Where a certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CertificateStatus {
    /// Valid inside its dates.
    Active,
    /// Temporarily withdrawn.
    Suspended,
    /// Withdrawn for good.
    Revoked,
    /// Marked expired.
    Expired,
}

/// An enforcement certificate (行政执法证), registered from the physical card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Certificate {
    /// Certificate number, the key.
    pub(crate) cert_no: String,
    /// Holder.
    pub(crate) officer: String,
    /// Issuing government.
    pub(crate) issuer: String,
    /// Enforcement sectors covered.
    pub(crate) sectors: Vec<String>,
    /// Territory (执法区域).
    pub(crate) territory: String,
    /// Start of validity.
    #[serde(with = "timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub(crate) valid_from: i64,
    /// End of validity.
    #[serde(with = "timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub(crate) valid_to: i64,
    /// Where it stands.
    pub(crate) status: CertificateStatus,
    /// Row version: bumped by every status change, so tokens minted earlier are refused.
    pub(crate) rev: i64,
}

impl Certificate {
    /// Active and inside its validity at `now_ms`.
    pub(crate) fn is_valid_at(&self, now_ms: i64) -> bool {
        self.status == CertificateStatus::Active
            && self.valid_from <= now_ms
            && now_ms <= self.valid_to
    }
}

/// Whether a device may still talk to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeviceStatus {
    /// Enrolled and usable.
    Active,
    /// Reported lost or retired; its tokens and proofs are refused.
    Revoked,
}

/// An enrolled device: the officer it belongs to and the key it proves possession of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Device {
    /// Registry id.
    pub(crate) id: String,
    /// The officer who enrolled it.
    pub(crate) officer: String,
    /// RFC 7638 thumbprint of the device's P-256 key.
    pub(crate) jkt: String,
    /// The public JWK, as enrolled.
    #[schema(value_type = Object)]
    pub(crate) jwk: serde_json::Value,
    /// Optional name the officer gave it.
    pub(crate) name: Option<String>,
    /// Active or revoked.
    pub(crate) status: DeviceStatus,
    /// When it enrolled.
    #[serde(with = "timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub(crate) enrolled_at: i64,
}

/// One registry change: who, when, and the row before and after.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditEntry {
    /// Position in the audit log.
    pub(crate) id: i64,
    /// When.
    #[serde(with = "timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub(crate) at: i64,
    /// The officer who made the change, or `system`.
    pub(crate) actor_officer: String,
    /// What was done (`create`, `revoke`, `enroll`, …).
    pub(crate) action: String,
    /// The table of the object (`agency`, `certificate`, …).
    pub(crate) object_kind: String,
    /// The object's id.
    pub(crate) object_id: String,
    /// The row before, absent for a creation.
    #[schema(value_type = Object)]
    pub(crate) before: Option<serde_json::Value>,
    /// The row after.
    #[schema(value_type = Object)]
    pub(crate) after: Option<serde_json::Value>,
}

/// Registry times: milliseconds inside, RFC 3339 UTC on the wire; date-only input accepted.
pub(crate) mod timestamp {
    use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// One day less one second, in milliseconds: a date-only `valid_to` means 23:59:59.
    const END_OF_DAY_MS: i64 = 86_399_000;

    /// RFC 3339 UTC with seconds precision.
    pub(crate) fn format(ms: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// Parses an RFC 3339 time, or a date meaning 00:00 UTC that day.
    pub(crate) fn parse_start(text: &str) -> Option<i64> {
        parse(text, 0)
    }

    /// Parses an RFC 3339 time, or a date meaning 23:59:59 UTC that day.
    pub(crate) fn parse_end(text: &str) -> Option<i64> {
        parse(text, END_OF_DAY_MS)
    }

    fn parse(text: &str, date_offset_ms: i64) -> Option<i64> {
        if let Ok(time) = DateTime::parse_from_rfc3339(text) {
            return Some(time.timestamp_millis());
        }
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
        Some(midnight + date_offset_ms)
    }

    /// Serde: writes milliseconds as RFC 3339.
    pub(crate) fn serialize<S: Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*ms))
    }

    /// Serde: reads RFC 3339 (or a date, as 00:00 UTC).
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_start(&text).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn dates_mean_the_start_or_the_end_of_the_day() {
            assert_eq!(super::parse_start("2026-01-01"), Some(1_767_225_600_000));
            assert_eq!(super::parse_end("2026-01-01"), Some(1_767_225_600_000 + 86_399_000));
            assert_eq!(super::parse_start("2026-01-01T08:00:00+08:00"), Some(1_767_225_600_000));
            assert_eq!(super::format(1_767_225_600_000), "2026-01-01T00:00:00Z");
            assert_eq!(super::parse_start("yesterday"), None);
        }
    }
}
