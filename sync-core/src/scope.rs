//! The master data a device holds offline and the check that refuses actions outside its scope.
//!
//! At enrollment (and on every later sync) the server hands a device a signed snapshot of what
//! its officer may do: the certificate, the township, and the scope items of the township's
//! active entrustment agreements. A device that is offline for days checks every new record
//! against it, so an officer is stopped on site rather than told days later. The server checks
//! the same rules again, live, on every sync: the device check is a convenience, not a defence.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An enforcement action a scope item may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// 检查: inspect.
    Inspect,
    /// 责令改正: order rectification.
    OrderRectify,
    /// 简易程序处罚: on-site penalty.
    SummaryPenalty,
    /// 普通程序处罚: general-procedure penalty.
    GeneralPenalty,
    /// 先行登记保存: register and preserve evidence.
    EvidencePreserve,
    /// 行政强制措施: coercive measures; never entrustable.
    Coerce,
    /// 行政拘留: detention; never entrustable.
    Detain,
}

impl Action {
    /// Coercive measures and detention can never be entrusted to a township.
    pub fn is_entrustable(self) -> bool {
        !matches!(self, Self::Coerce | Self::Detain)
    }

    /// Parses the snake_case form.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }

    /// The snake_case form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inspect => "inspect",
            Self::OrderRectify => "order_rectify",
            Self::SummaryPenalty => "summary_penalty",
            Self::GeneralPenalty => "general_penalty",
            Self::EvidencePreserve => "evidence_preserve",
            Self::Coerce => "coerce",
            Self::Detain => "detain",
        }
    }
}

/// The officer's certificate as the snapshot carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateSnapshot {
    /// Certificate number.
    pub cert_no: String,
    /// `active`, `suspended`, `revoked` or `expired`.
    pub status: String,
    /// Start of validity, milliseconds since the Unix epoch.
    pub valid_from: i64,
    /// End of validity, milliseconds since the Unix epoch.
    pub valid_to: i64,
    /// Enforcement sectors (执法类别) the certificate covers.
    pub sectors: Vec<String>,
}

/// One matter the township may handle, with the actions the agreement allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeItem {
    /// Matter code (执法事项).
    pub matter: String,
    /// The matter's sector.
    pub sector: String,
    /// Actions allowed under the agreement.
    pub actions: Vec<Action>,
    /// The entrustment agreement granting it.
    pub agreement: String,
    /// The entrusting department (name agency of decisions).
    pub entrusting_agency: String,
    /// Start of the agreement's term, milliseconds since the Unix epoch.
    pub valid_from: i64,
    /// End of the agreement's term, milliseconds since the Unix epoch.
    pub valid_to: i64,
}

/// What a device may do offline, as the server last told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterData {
    /// Registry id of the officer.
    pub officer: String,
    /// The officer's name.
    pub officer_name: String,
    /// `officer`, `supervisor` or `admin`.
    pub role: String,
    /// The officer's township (agency id).
    pub township: String,
    /// The officer's certificate; absent for roles that hold none.
    pub certificate: Option<CertificateSnapshot>,
    /// Matters entrusted to the township, with allowed actions.
    pub scope: Vec<ScopeItem>,
    /// When the server issued the snapshot, milliseconds since the Unix epoch.
    pub issued_at: i64,
    /// After this the device refuses new actions until it syncs again.
    pub valid_until: i64,
}

/// Why an action is outside the device's scope.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScopeRefusal {
    /// The snapshot is older than its `valid_until`: sync first.
    #[error("the master data expired; sync before starting new actions")]
    SnapshotStale,
    /// No certificate, or one that is suspended, revoked or outside its validity.
    #[error("certificate {0} is not valid now")]
    CertificateInvalid(String),
    /// The township has no active entrustment of the matter.
    #[error("matter {0} is not entrusted to this township")]
    NotEntrusted(String),
    /// The certificate's sectors do not cover the matter's sector.
    #[error("the certificate does not cover sector {0}")]
    SectorNotCovered(String),
    /// The agreement does not allow the action.
    #[error("action {0} is not allowed for this matter")]
    ActionNotAllowed(&'static str),
    /// Coercive measures and detention are never entrusted.
    #[error("action {0} can never be entrusted to a township")]
    NeverEntrustable(&'static str),
}

impl ScopeRefusal {
    /// Stable snake_case code, the same the server answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SnapshotStale => "master_data_stale",
            Self::CertificateInvalid(_) => "certificate_invalid",
            Self::NotEntrusted(_) | Self::SectorNotCovered(_) | Self::ActionNotAllowed(_) => {
                "out_of_scope"
            }
            Self::NeverEntrustable(_) => "not_entrustable",
        }
    }
}

impl MasterData {
    /// Checks that the officer may take `action` on `matter` at `now_ms`.
    pub fn check(
        &self,
        matter: &str,
        action: Action,
        now_ms: i64,
    ) -> Result<&ScopeItem, ScopeRefusal> {
        if now_ms > self.valid_until {
            return Err(ScopeRefusal::SnapshotStale);
        }
        if !action.is_entrustable() {
            return Err(ScopeRefusal::NeverEntrustable(action.as_str()));
        }
        let certificate = self
            .certificate
            .as_ref()
            .filter(|cert| {
                cert.status == "active" && cert.valid_from <= now_ms && now_ms <= cert.valid_to
            })
            .ok_or_else(|| {
                ScopeRefusal::CertificateInvalid(
                    self.certificate.as_ref().map(|cert| cert.cert_no.clone()).unwrap_or_default(),
                )
            })?;
        let item = self
            .scope
            .iter()
            .find(|item| {
                item.matter == matter && item.valid_from <= now_ms && now_ms <= item.valid_to
            })
            .ok_or_else(|| ScopeRefusal::NotEntrusted(matter.to_owned()))?;
        if !certificate.sectors.contains(&item.sector) {
            return Err(ScopeRefusal::SectorNotCovered(item.sector.clone()));
        }
        if !item.actions.contains(&action) {
            return Err(ScopeRefusal::ActionNotAllowed(action.as_str()));
        }
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn master() -> MasterData {
        MasterData {
            officer: "o1".to_owned(),
            officer_name: "李明".to_owned(),
            role: "officer".to_owned(),
            township: "t1".to_owned(),
            certificate: Some(CertificateSnapshot {
                cert_no: "C-1".to_owned(),
                status: "active".to_owned(),
                valid_from: 0,
                valid_to: 100 * DAY,
                sectors: vec!["work_safety".to_owned()],
            }),
            scope: vec![ScopeItem {
                matter: "AJ-001".to_owned(),
                sector: "work_safety".to_owned(),
                actions: vec![Action::Inspect, Action::SummaryPenalty],
                agreement: "a1".to_owned(),
                entrusting_agency: "d1".to_owned(),
                valid_from: 0,
                valid_to: 50 * DAY,
            }],
            issued_at: 0,
            valid_until: 7 * DAY,
        }
    }

    #[track_caller]
    fn check(
        master: &MasterData,
        matter: &str,
        action: Action,
        now: i64,
        expected: Result<(), &str>,
    ) {
        let actual =
            master.check(matter, action, now).map(|_| ()).map_err(|refusal| refusal.code());
        assert_eq!(actual, expected);
    }

    #[test]
    fn scope_rules() {
        let data = master();
        check(&data, "AJ-001", Action::Inspect, DAY, Ok(()));
        check(&data, "AJ-002", Action::Inspect, DAY, Err("out_of_scope"));
        check(&data, "AJ-001", Action::GeneralPenalty, DAY, Err("out_of_scope"));
        check(&data, "AJ-001", Action::Coerce, DAY, Err("not_entrustable"));
        check(&data, "AJ-001", Action::Inspect, 8 * DAY, Err("master_data_stale"));
        let mut revoked = master();
        revoked.certificate.as_mut().unwrap().status = "revoked".to_owned();
        check(&revoked, "AJ-001", Action::Inspect, DAY, Err("certificate_invalid"));
        let mut other_sector = master();
        other_sector.certificate.as_mut().unwrap().sectors = vec!["traffic".to_owned()];
        check(&other_sector, "AJ-001", Action::Inspect, DAY, Err("out_of_scope"));
        assert_eq!(Action::parse("summary_penalty"), Some(Action::SummaryPenalty));
    }
}
