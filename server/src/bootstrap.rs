//! The first start of a fresh data directory: the first admin and its one-time code
//! (`bootstrap.json`), and with `--demo` a seeded registry and its codes (`demo.json`).
//!
//! Both run only while no officer is registered, so a restart changes nothing. The files are
//! written before the registry commits: if the commit fails the next start, still on an empty
//! registry, writes them again with new codes.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use sync_core::scope::Action;

use crate::auth::keys::write_secret_file;
use crate::auth::now_millis;
use crate::registry::{
    Agency, AgencyKind, Certificate, CertificateStatus, Entrustment, EntrustmentItem,
    EntrustmentStatus, Matter, Officer, Role, SYSTEM,
};
use crate::routes::enroll::{
    BOOTSTRAP_CODE_LIFETIME_MS, enrollment_code_hash, new_enrollment_code,
};
use crate::state::AppState;
use crate::store::registry::{self, Author};
use crate::store::{StoreError, devices};

/// The file holding the first admin's code.
pub const BOOTSTRAP_FILE: &str = "bootstrap.json";

/// The file describing the demo registry and its codes.
pub const DEMO_FILE: &str = "demo.json";

/// The first admin's id.
const ADMIN: &str = "admin";

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Prepares the registry of a fresh data directory; does nothing on one that has officers.
///
/// # Errors
/// Fails when the registry cannot be read or written, or a file cannot be written.
pub fn prepare(state: &AppState, data_dir: &Path, demo: bool) -> anyhow::Result<()> {
    let store = state.store();
    if !store.read(|tx| registry::is_empty(tx))? {
        return Ok(());
    }
    let now = now_millis();
    let admin_code = new_enrollment_code();
    let seed = demo.then(|| DemoSeed::new(now));
    let bootstrap_json = json!({ "admin_code": admin_code });
    write_secret_file(&data_dir.join(BOOTSTRAP_FILE), bootstrap_json.to_string().as_bytes())?;
    if let Some(seed) = &seed {
        let demo_json = seed.file(&admin_code);
        write_secret_file(&data_dir.join(DEMO_FILE), demo_json.to_string().as_bytes())?;
    }
    let admin_hash = enrollment_code_hash(&admin_code);
    store
        .write(move |tx| {
            let change = Author { who: SYSTEM, now };
            let admin = Officer {
                id: ADMIN.to_owned(),
                name: "管理员".to_owned(),
                township: None,
                role: Role::Admin,
            };
            registry::insert_officer(tx, &change, &admin)?;
            let expires_at = now + BOOTSTRAP_CODE_LIFETIME_MS;
            devices::insert_enrollment_code(tx, &change, &admin_hash, ADMIN, expires_at)?;
            if let Some(seed) = &seed {
                seed.insert(tx, &change)?;
            }
            Ok(())
        })
        .context("seeding the registry")?;
    tracing::warn!(
        code = %admin_code,
        file = %data_dir.join(BOOTSTRAP_FILE).display(),
        "fresh data directory: enroll the first admin device with this one-time code"
    );
    if demo {
        tracing::info!(file = %data_dir.join(DEMO_FILE).display(), "seeded the demo registry");
    }
    Ok(())
}

/// The demo registry, with the codes generated for it.
struct DemoSeed {
    now: i64,
    supervisor_code: String,
    // (id, name, township, certificate, code)
    officers: Vec<(&'static str, &'static str, &'static str, &'static str, String)>,
}

impl DemoSeed {
    fn new(now: i64) -> Self {
        Self {
            now,
            supervisor_code: new_enrollment_code(),
            officers: vec![
                ("o-1", "李明", "t-chengguan", "C-0001", new_enrollment_code()),
                ("o-2", "王芳", "t-chengguan", "C-0002", new_enrollment_code()),
                ("o-3", "赵强", "t-hexi", "C-0003", new_enrollment_code()),
            ],
        }
    }

    /// The contents of `demo.json`.
    fn file(&self, admin_code: &str) -> Value {
        let officers: Vec<Value> = self
            .officers
            .iter()
            .map(|(id, name, township, _, code)| {
                json!({ "officer": id, "name": name, "township": township, "code": code })
            })
            .collect();
        json!({
            "codes": { "admin": admin_code, "supervisor": self.supervisor_code, "officers": officers },
            "matters": { "entrusted": "AJ-001", "not_entrusted": "AJ-002" },
            "townships": ["t-chengguan", "t-hexi"],
            "departments": ["d-yingji"],
        })
    }

    fn insert(&self, tx: &rusqlite::Connection, change: &Author<'_>) -> Result<(), StoreError> {
        // Complaint channels: 12350 is the national work-safety reporting line, 12345 the
        // government service hotline that townships publish.
        let agency = |id: &str, name: &str, code: &str, kind, hotline: &str| Agency {
            id: id.to_owned(),
            name: name.to_owned(),
            code: code.to_owned(),
            kind,
            parent: None,
            hotline: Some(hotline.to_owned()),
        };
        for agency in [
            agency("d-yingji", "县应急管理局", "应急", AgencyKind::CountyDept, "12350"),
            agency("t-chengguan", "城关镇", "城关", AgencyKind::Township, "12345"),
            agency("t-hexi", "河西乡", "河西", AgencyKind::Township, "12345"),
            agency("j-sifa", "县司法局", "司法", AgencyKind::JusticeBureau, "12345"),
        ] {
            registry::insert_agency(tx, change, &agency)?;
        }
        let entrustable = vec![
            Action::Inspect,
            Action::OrderRectify,
            Action::SummaryPenalty,
            Action::GeneralPenalty,
            Action::EvidencePreserve,
        ];
        let matter = |code: &str, name: &str, basis: &str| Matter {
            code: code.to_owned(),
            name: name.to_owned(),
            sector: "work_safety".to_owned(),
            legal_basis: basis.to_owned(),
            penalty_standard:
                "责令限期改正，处五万元以下的罚款；逾期未改正的，处五万元以上二十万元以下的罚款"
                    .to_owned(),
            allowed_actions: entrustable.clone(),
            hearing_threshold_person: None,
            hearing_threshold_org: None,
        };
        registry::insert_matter(
            tx,
            change,
            &matter(
                "AJ-001",
                "未按规定设置安全警示标志",
                "《中华人民共和国安全生产法》第三十五条、第九十九条第一项",
            ),
        )?;
        registry::insert_matter(
            tx,
            change,
            &matter(
                "AJ-002",
                "未对安全设备进行经常性维护、保养和定期检测",
                "《中华人民共和国安全生产法》第三十六条、第九十九条第二项",
            ),
        )?;
        registry::insert_entrustment(
            tx,
            change,
            &Entrustment {
                id: "e-1".to_owned(),
                entrusting_agency: "d-yingji".to_owned(),
                township: "t-chengguan".to_owned(),
                legal_basis: "《中华人民共和国行政处罚法》第二十条".to_owned(),
                valid_from: self.now - 30 * DAY_MS,
                valid_to: self.now + 3 * 365 * DAY_MS,
                status: EntrustmentStatus::Active,
                items: vec![EntrustmentItem { matter: "AJ-001".to_owned(), actions: entrustable }],
            },
        )?;
        for (id, name, township, cert_no, code) in &self.officers {
            let officer = Officer {
                id: (*id).to_owned(),
                name: (*name).to_owned(),
                township: Some((*township).to_owned()),
                role: Role::Officer,
            };
            registry::insert_officer(tx, change, &officer)?;
            let certificate = Certificate {
                cert_no: (*cert_no).to_owned(),
                officer: (*id).to_owned(),
                issuer: "县人民政府".to_owned(),
                sectors: vec!["work_safety".to_owned()],
                territory: (*township).to_owned(),
                valid_from: self.now - 365 * DAY_MS,
                valid_to: self.now + 3 * 365 * DAY_MS,
                status: CertificateStatus::Active,
                rev: 1,
            };
            registry::insert_certificate(tx, change, &certificate)?;
            self.insert_code(tx, change, id, code)?;
        }
        let supervisor = Officer {
            id: "s-1".to_owned(),
            name: "陈静".to_owned(),
            township: Some("j-sifa".to_owned()),
            role: Role::Supervisor,
        };
        registry::insert_officer(tx, change, &supervisor)?;
        self.insert_code(tx, change, "s-1", &self.supervisor_code)
    }

    fn insert_code(
        &self,
        tx: &rusqlite::Connection,
        change: &Author<'_>,
        officer: &str,
        code: &str,
    ) -> Result<(), StoreError> {
        let expires_at = self.now + BOOTSTRAP_CODE_LIFETIME_MS;
        devices::insert_enrollment_code(
            tx,
            change,
            &enrollment_code_hash(code),
            officer,
            expires_at,
        )
    }
}
