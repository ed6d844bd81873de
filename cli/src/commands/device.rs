//! The field device commands: open records, edit them offline, add evidence and timeline
//! events, read them, and sync.
//!
//! Every command but `sync` works without a server: it opens the replica under `--home`,
//! changes or reads documents through sync-core, and stores them. Each command that edits
//! commits exactly one Automerge change, stamped with the device time, and stores the document
//! before it reports success; an edit that fails stores nothing.
//!
//! A device must enroll (`fieldcase enroll`) before it opens records: every change it writes
//! carries the actor the server allocated to it, every new record is checked offline against
//! the master data (scope, certificate, entrustment) and takes its township from it, and `sync`
//! authenticates every call with the device key ([`Session`]).
//!
//! Evidence bytes are content-addressed blobs: `evidence add` keeps them under the home until
//! `sync` uploads them ([`blobs`]), `evidence remove` withdraws an item from its record as an
//! attributed change that keeps both the item and the bytes, and `evidence get` writes the
//! bytes out, from the home or downloaded and hash-checked.

pub mod blobs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use automerge::transaction::CommitOptions;
use automerge::{ActorId, ChangeHash, ROOT};
use clap::{ArgGroup, Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sync_core::edit::{TextEdit, edit_text, set_field};
use sync_core::ids::{DocumentId, OfficerId};
use sync_core::numbers::NumberBlock;
use sync_core::records::{
    CaseFile, Evidence, InspectionRecord, IssuedDocument, OfficerPresent, Party, Procedure, Record,
    RecordKind, Removal, SERVER_ACTOR, Site, TransitionIssue, create_document, withdraw_evidence,
};
use sync_core::replica::{DeviceDoc, SyncRound};
use sync_core::scope::{Action, MasterData};
use sync_core::view::DocumentView;

use crate::auth::Session;
use crate::client::{Client, ClientError, paths};
use crate::commands::device::blobs::{BlobFailure, upload_blobs};
use crate::commands::{CommandError, Output, Settings};
use crate::replica_store::{Enrollment, ReplicaStore, is_sha256_hex};

/// The kind of a party (当事人), as the record stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum PartyKind {
    /// A natural person (自然人).
    Natural,
    /// A legal person (法人).
    Legal,
    /// Another organisation (其他组织).
    OtherOrg,
    /// An individual business (个体工商户).
    IndividualBusiness,
}

/// The procedure of a case file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ProcedureArg {
    /// 简易程序: decided on site.
    Summary,
    /// 普通程序.
    General,
}

/// The class of an evidence item, as the record stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// A photograph.
    Photo,
    /// 书证: a document.
    Document,
    /// An audio recording.
    Audio,
    /// A video recording.
    Video,
    /// 证人证言: witness testimony.
    Testimony,
    /// 当事人的陈述: the party's statement.
    Statement,
    /// 鉴定意见: an expert opinion.
    ExpertOpinion,
    /// 勘验笔录: a survey record.
    SurveyRecord,
    /// 现场笔录: an on-site record.
    OnsiteRecord,
}

/// Who a new record is about, shared by `inspection new` and `case new`.
#[derive(Debug, Args)]
pub struct PartyArgs {
    /// Matter code (执法事项) the record is made under.
    #[arg(long)]
    pub matter: String,
    /// Full name of the party.
    #[arg(long)]
    pub party_name: String,
    /// ID card number or unified social credit code of the party.
    #[arg(long)]
    pub party_id: String,
    /// Kind of party.
    #[arg(long, value_enum, default_value_t = PartyKind::Natural)]
    pub party_kind: PartyKind,
}

/// `fieldcase inspection new`.
#[derive(Debug, Args)]
pub struct InspectionNewArgs {
    /// Who is inspected.
    #[command(flatten)]
    pub party: PartyArgs,
    /// Name of the inspected site or business.
    #[arg(long)]
    pub site: String,
    /// Street address of the site.
    #[arg(long)]
    pub address: Option<String>,
    /// Another officer present, besides the enrolled one; repeat for each (at least two must
    /// be present by law).
    #[arg(long = "officer", value_parser = OfficerId::parse)]
    pub officers: Vec<OfficerId>,
}

/// `fieldcase case new`.
#[derive(Debug, Args)]
pub struct CaseNewArgs {
    /// Who the case is against.
    #[command(flatten)]
    pub party: PartyArgs,
    /// The procedure the case follows.
    #[arg(long, value_enum, default_value_t = ProcedureArg::General)]
    pub procedure: ProcedureArg,
    /// The inspection record the case comes from.
    #[arg(long, value_parser = DocumentId::parse)]
    pub from_inspection: Option<DocumentId>,
    /// Another officer handling the case, besides the enrolled one; repeat for each.
    #[arg(long = "officer", value_parser = OfficerId::parse)]
    pub officers: Vec<OfficerId>,
}

/// `fieldcase edit`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("edits").required(true).multiple(true)))]
pub struct EditArgs {
    /// The document to edit.
    #[arg(value_parser = DocumentId::parse)]
    pub doc: DocumentId,
    /// Sets the field at a dotted path (`site.name=...`), parsed as the type it holds.
    #[arg(long = "set", value_name = "PATH=VALUE", group = "edits", value_parser = parse_assignment)]
    pub sets: Vec<(String, String)>,
    /// Appends text to the text field at a path (`findings=...`).
    #[arg(long = "append", value_name = "PATH=TEXT", group = "edits", value_parser = parse_assignment)]
    pub appends: Vec<(String, String)>,
    /// Prepends text to the text field at a path.
    #[arg(long = "prepend", value_name = "PATH=TEXT", group = "edits", value_parser = parse_assignment)]
    pub prepends: Vec<(String, String)>,
}

/// `fieldcase evidence add`.
#[derive(Debug, Args)]
pub struct EvidenceAddArgs {
    /// The document the evidence belongs to.
    #[arg(value_parser = DocumentId::parse)]
    pub doc: DocumentId,
    /// The file holding the evidence bytes.
    #[arg(long)]
    pub file: PathBuf,
    /// The evidence class.
    #[arg(long, value_enum)]
    pub kind: EvidenceKind,
    /// A note on the item.
    #[arg(long)]
    pub note: Option<String>,
    /// Media type of the bytes; guessed from the file extension when absent.
    #[arg(long)]
    pub media_type: Option<String>,
}

/// `fieldcase evidence remove`.
#[derive(Debug, Args)]
pub struct EvidenceRemoveArgs {
    /// The document the evidence belongs to.
    #[arg(value_parser = DocumentId::parse)]
    pub doc: DocumentId,
    /// The evidence item to withdraw.
    pub evidence: String,
    /// Why the item is withdrawn; kept in the record.
    #[arg(long)]
    pub reason: String,
}

/// `fieldcase evidence get`.
#[derive(Debug, Args)]
pub struct EvidenceGetArgs {
    /// The document the evidence belongs to.
    #[arg(value_parser = DocumentId::parse)]
    pub doc: DocumentId,
    /// The evidence item.
    pub evidence: String,
    /// Where to write the bytes; an existing file is replaced.
    #[arg(long)]
    pub out: PathBuf,
}

/// `fieldcase event`.
#[derive(Debug, Args)]
pub struct EventArgs {
    /// The case file.
    #[arg(value_parser = DocumentId::parse)]
    pub doc: DocumentId,
    /// What happened: `file`, `investigate`, `notify`, `decide`, `serve`, `close`, `note`, ...
    #[arg(value_parser = parse_event_kind)]
    pub kind: String,
    /// An event detail (`k=v`); repeat for each.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_assignment)]
    pub fields: Vec<(String, String)>,
    /// The officer who acted.
    #[arg(long, value_parser = OfficerId::parse)]
    pub officer: Option<OfficerId>,
    /// With `issue_document`: the document type, whose next number is taken from a block this
    /// device leased (`fieldcase numbers lease`).
    #[arg(long, required_if_eq("kind", ISSUE_DOCUMENT))]
    pub doc_type: Option<String>,
    /// With `issue_document`: record the number taken as void (作废, a spoiled printout) for
    /// this reason instead of issuing it.
    #[arg(long, value_name = "REASON", requires = "doc_type")]
    pub void: Option<String>,
}

/// The event that issues a document with the next number of a leased block.
pub const ISSUE_DOCUMENT: &str = "issue_document";

/// The event that records a taken number as void; the server's reconciliation counts it.
pub const VOID_NUMBER: &str = "void_number";

/// `fieldcase show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The document to show.
    #[arg(value_parser = DocumentId::parse)]
    pub doc: DocumentId,
}

/// What `fieldcase sync` did, as `sync --json` prints it (DESIGN.md §9).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Every upload was accepted.
    pub ok: bool,
    /// HTTP requests made.
    pub requests: u64,
    /// Request bytes sent.
    pub bytes_up: u64,
    /// Response bytes received.
    pub bytes_down: u64,
    /// Changes the server newly stored from this device.
    pub uploaded: usize,
    /// Changes received that the device did not hold.
    pub downloaded: usize,
    /// Documents whose upload the server refused; their changes stay pending.
    pub rejected: Vec<Rejection>,
    /// The feed cursor reached.
    pub cursor: u64,
    /// Evidence blobs the server now holds whole that were waiting for upload.
    pub blobs_uploaded: usize,
    /// Evidence bytes the server took (chunks it refused do not count).
    pub blob_bytes_up: u64,
    /// Evidence blobs that could not be uploaded; they stay pending, and `ok` is false.
    pub blob_errors: Vec<BlobFailure>,
    /// Documents re-forked under a new actor after the server refused the old actor's
    /// sequence numbers (`duplicate_seq`: the replica was restored from a backup).
    pub reforked: Vec<String>,
}

/// One refused document upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The document.
    pub id: String,
    /// The server's stable code.
    pub code: String,
    /// The server's sentence.
    pub message: String,
}

/// Opens a new inspection record and stores it; nothing of it is on the server yet.
///
/// The device must be enrolled and its master data must allow `inspect` on the matter now;
/// a refusal stores nothing.
pub fn inspection_new(settings: &Settings, args: InspectionNewArgs) -> Result<Output> {
    let store = open_store(settings)?;
    let now = now_ms();
    let (enrollment, master_data) =
        require_scope(&store, &args.party.matter, Action::Inspect, now)?;
    let doc_id = new_document_id();
    let site = Site { name: args.site, address: args.address.unwrap_or_default(), gnss: None };
    let matter = args.party.matter.clone();
    let mut record =
        InspectionRecord::new(doc_id.to_string(), matter, party(&args.party), site, now);
    record.township.clone_from(&master_data.township);
    record.officers = officers_present(&enrollment, &master_data, args.officers);
    let doc = create_document(store.actor(), &record, now).context("creating the document")?;
    store_new_document(&store, doc_id, doc, now)
}

/// Opens a new case file and stores it.
///
/// The device must be enrolled and its master data must allow the procedure's penalty
/// (`summary_penalty` or `general_penalty`) on the matter now; a refusal stores nothing.
pub fn case_new(settings: &Settings, args: CaseNewArgs) -> Result<Output> {
    let store = open_store(settings)?;
    let now = now_ms();
    let action = match args.procedure {
        ProcedureArg::Summary => Action::SummaryPenalty,
        ProcedureArg::General => Action::GeneralPenalty,
    };
    let (enrollment, master_data) = require_scope(&store, &args.party.matter, action, now)?;
    if let Some(inspection_id) = args.from_inspection {
        // The device may not hold the inspection (another device made it); when it does, the
        // link must point at an inspection.
        if let Some(held) = store.find(inspection_id)?
            && held.kind() != Some(RecordKind::Inspection)
        {
            bail!(CommandError::new(
                "invalid_argument",
                format!("document {inspection_id} is not an inspection record")
            ));
        }
    }
    let doc_id = new_document_id();
    let procedure = match args.procedure {
        ProcedureArg::Summary => Procedure::Summary,
        ProcedureArg::General => Procedure::General,
    };
    let matter = args.party.matter.clone();
    let mut case_file = CaseFile::new(doc_id.to_string(), procedure, matter, party(&args.party));
    case_file.township.clone_from(&master_data.township);
    // A township decides in the entrusting department's name (APL Art. 20): the agreement that
    // allows the action names it, and the quarterly report groups cases by it.
    if let Ok(item) = master_data.check(&case_file.matter, action, now) {
        case_file.name_agency.clone_from(&item.entrusting_agency);
    }
    case_file.officers = officers_present(&enrollment, &master_data, args.officers);
    case_file.inspections = args.from_inspection.iter().map(ToString::to_string).collect();
    let doc = create_document(store.actor(), &case_file, now).context("creating the document")?;
    store_new_document(&store, doc_id, doc, now)
}

/// Applies every `--set`, then every `--append`, then every `--prepend`, as one change.
pub fn edit(settings: &Settings, args: &EditArgs) -> Result<Output> {
    let store = open_store(settings)?;
    let mut device_doc = store.load(args.doc)?;
    let doc = device_doc.doc_mut();
    for (path, value) in &args.sets {
        set_field(doc, path, value).with_context(|| format!("cannot set {path}"))?;
    }
    let text_edits = args
        .appends
        .iter()
        .map(|edit| (edit, TextEdit::Append))
        .chain(args.prepends.iter().map(|edit| (edit, TextEdit::Prepend)));
    for ((path, text), at) in text_edits {
        edit_text(doc, path, at, text)
            .with_context(|| format!("cannot edit the text of {path}"))?;
    }
    let now = now_ms();
    let changed = doc.commit_with(commit_options("edit", now)).is_some();
    if changed {
        store.save(&mut device_doc, now)?;
    }
    let text = if changed {
        format!("edited {}", args.doc)
    } else {
        format!("nothing changed in {}", args.doc)
    };
    Ok(Output::new(&json!({"id": args.doc.to_string(), "changed": changed}), text))
}

/// Stores the file's bytes as a blob and appends an evidence item that names them by hash.
pub fn evidence_add(settings: &Settings, args: EvidenceAddArgs) -> Result<Output> {
    let store = open_store(settings)?;
    let mut device_doc = store.load(args.doc)?;
    let blob = store
        .import_blob(&args.file)
        .with_context(|| format!("storing the evidence file {}", args.file.display()))?;
    let now = now_ms();
    let evidence_id = uuid::Uuid::new_v4().to_string();
    let item = Evidence {
        id: evidence_id.clone(),
        kind: value_name(&args.kind),
        sha256: blob.sha256.clone(),
        size: i64::try_from(blob.size).context("the evidence file is too large")?,
        media_type: args.media_type.unwrap_or_else(|| guess_media_type(&args.file).to_owned()),
        captured_at: now,
        captured_by: store.actor().to_hex_string(),
        note: args.note.unwrap_or_default(),
        removed: None,
    };
    let doc = device_doc.doc_mut();
    let mut evidence: Vec<Evidence> =
        autosurgeon::hydrate_prop(&*doc, ROOT, "evidence").context("reading the evidence list")?;
    evidence.push(item);
    autosurgeon::reconcile_prop(doc, ROOT, "evidence", &evidence)
        .context("writing the evidence list")?;
    doc.commit_with(commit_options("add evidence", now));
    store.save(&mut device_doc, now)?;
    let text = format!(
        "added evidence {evidence_id} to {} ({} bytes, sha256 {})",
        args.doc, blob.size, blob.sha256
    );
    Ok(Output::new(
        &json!({
            "id": args.doc.to_string(),
            "evidence": evidence_id,
            "sha256": blob.sha256,
            "size": blob.size,
        }),
        text,
    ))
}

/// Withdraws an evidence item from its record, as one change attributed to the enrolled
/// officer (or, before enrollment, to the device actor); the item stays in the record with its
/// `removed` entry, and its bytes stay in the home and on the server.
pub fn evidence_remove(settings: &Settings, args: &EvidenceRemoveArgs) -> Result<Output> {
    let store = open_store(settings)?;
    let mut device_doc = store.load(args.doc)?;
    if args.reason.trim().is_empty() {
        bail!(CommandError::new("invalid_argument", "a withdrawal needs a reason"));
    }
    let item = find_evidence(&device_doc, args.doc, &args.evidence)?;
    if let Some(removal) = &item.removed {
        bail!(CommandError::new(
            "already_removed",
            format!(
                "evidence {} of {} was withdrawn already by {}: {}",
                args.evidence, args.doc, removal.by, removal.reason
            )
        ));
    }
    let now = now_ms();
    let by = match store.enrollment()? {
        Some(enrollment) => enrollment.officer,
        None => store.actor().to_hex_string(),
    };
    let removal = Removal { at: now, by, reason: args.reason.clone() };
    let doc = device_doc.doc_mut();
    withdraw_evidence(doc, &args.evidence, removal)
        .with_context(|| format!("withdrawing evidence {}", args.evidence))?;
    doc.commit_with(commit_options("withdraw evidence", now));
    store.save(&mut device_doc, now)?;
    let text = format!(
        "withdrew evidence {} from {}; the item and its bytes are kept",
        args.evidence, args.doc
    );
    Ok(Output::new(
        &json!({"id": args.doc.to_string(), "evidence": args.evidence, "removed": true}),
        text,
    ))
}

/// Writes the bytes of an evidence item to `--out`: the home's copy when the device holds
/// it, else downloaded from the server; either way checked against the item's SHA-256.
pub fn evidence_get(settings: &Settings, args: &EvidenceGetArgs) -> Result<Output> {
    let store = open_store(settings)?;
    let device_doc = store.load(args.doc)?;
    let item = find_evidence(&device_doc, args.doc, &args.evidence)?;
    // The hash names a file and a URL path: only a well-formed one is used.
    let sha256 = item.sha256.to_ascii_lowercase();
    if !is_sha256_hex(&sha256) {
        bail!(CommandError::new(
            "invalid_evidence",
            format!("evidence {} names no valid sha256: {:?}", args.evidence, item.sha256)
        ));
    }
    let (bytes, source) = match store.open_blob(&sha256)? {
        Some(mut file) => {
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut file, &mut bytes)
                .with_context(|| format!("reading the device's copy of blob {sha256}"))?;
            (bytes, "device")
        }
        None => {
            require_enrollment(&store)?;
            let client = Client::new(&settings.server);
            let mut session = Session::open(client.clone(), &settings.home)
                .context("opening the device session")?;
            let bytes = session.get_blob(&sha256).with_context(|| {
                format!("downloading blob {sha256} from {}", client.server_url())
            })?;
            (bytes, "server")
        }
    };
    if hex::encode(Sha256::digest(&bytes)) != sha256 {
        bail!(CommandError::new(
            "blob_hash_mismatch",
            format!("the bytes from the {source} do not match sha256 {sha256}; nothing written")
        ));
    }
    fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    let text = format!(
        "wrote evidence {} ({} bytes, from the {source}) to {}",
        args.evidence,
        bytes.len(),
        args.out.display()
    );
    Ok(Output::new(
        &json!({
            "id": args.doc.to_string(),
            "evidence": args.evidence,
            "sha256": sha256,
            "size": bytes.len(),
            "source": source,
            "out": args.out.display().to_string(),
        }),
        text,
    ))
}

/// The evidence item `evidence_id` of a document, withdrawn or not; `unknown_evidence` when
/// the document has none by that id.
fn find_evidence(
    device_doc: &DeviceDoc,
    doc_id: DocumentId,
    evidence_id: &str,
) -> Result<Evidence> {
    let evidence: Vec<Evidence> = autosurgeon::hydrate_prop(device_doc.doc(), ROOT, "evidence")
        .context("reading the evidence list")?;
    evidence.into_iter().find(|item| item.id == evidence_id).ok_or_else(|| {
        CommandError::new(
            "unknown_evidence",
            format!("document {doc_id} has no evidence item {evidence_id}"),
        )
        .into()
    })
}

/// Appends an event to a case file's timeline and reports the state it derives.
pub fn event(settings: &Settings, args: EventArgs) -> Result<Output> {
    let mut store = open_store(settings)?;
    let mut device_doc = store.load(args.doc)?;
    if device_doc.kind() != Some(RecordKind::Case) {
        bail!(CommandError::new(
            "not_a_case",
            format!(
                "document {} is not a case file; timeline events belong to case files",
                args.doc
            )
        ));
    }
    if args.doc_type.is_some() && args.kind != ISSUE_DOCUMENT {
        bail!(CommandError::new(
            "invalid_argument",
            format!("--doc-type and --void belong to {ISSUE_DOCUMENT}, not to {}", args.kind)
        ));
    }
    let now = now_ms();
    let mut kind = args.kind.clone();
    let mut fields: BTreeMap<String, String> = args.fields.into_iter().collect();
    let mut issued = None;
    if let Some(doc_type) = &args.doc_type {
        // The cursor is committed before the number is rendered: a crash from here on skips
        // the serial, and never hands it out twice.
        let (block, serial) = take_number(&mut store, doc_type)?;
        fields.insert("block".to_owned(), block.id.clone());
        fields.insert("serial".to_owned(), serial.to_string());
        fields.insert("doc_type".to_owned(), doc_type.clone());
        let document = IssuedDocument {
            number: block.render(serial),
            doc_type: doc_type.clone(),
            block: block.id,
            serial,
            issued_at: now,
        };
        match &args.void {
            Some(reason) => {
                VOID_NUMBER.clone_into(&mut kind);
                fields.insert("reason".to_owned(), reason.clone());
            }
            None => {
                fields.insert("number".to_owned(), document.number.clone());
            }
        }
        issued = Some(document);
    }
    let event_id = uuid::Uuid::new_v4().to_string();
    let doc = device_doc.doc_mut();
    let mut case_file: CaseFile = autosurgeon::hydrate(&*doc).context("reading the case file")?;
    if let Some(document) = issued.as_ref().filter(|_| args.void.is_none()) {
        case_file.documents.push(document.clone());
    }
    case_file.append_event(
        event_id.clone(),
        kind.clone(),
        args.officer.map(|officer| officer.to_string()).unwrap_or_default(),
        store.actor().to_hex_string(),
        now,
        fields,
    );
    autosurgeon::reconcile(doc, &case_file).context("writing the case file")?;
    doc.commit_with(commit_options(&format!("event {kind}"), now));
    store.save(&mut device_doc, now)?;

    let fold = case_file.fold();
    let state = fold.state.as_str();
    let mut text = format!("recorded {kind} on {}; state: {state}", args.doc);
    if let Some(document) = &issued {
        match &args.void {
            Some(_) => {
                let _ = write!(text, "; serial {} of {} void", document.serial, document.block);
            }
            None => {
                let _ = write!(text, "; number {}", document.number);
            }
        }
    }
    let last = case_file.timeline.len() - 1;
    for issue in &fold.issues {
        if let TransitionIssue::Invalid { index, kind, from } = issue
            && *index == last
        {
            let from = from.as_str();
            let _ =
                write!(text, "\nwarning: {kind:?} is not allowed in state {from}; recorded anyway");
        }
    }
    let mut printed = json!({"id": args.doc.to_string(), "event": event_id, "state": state});
    if let Some(document) = issued {
        printed["block"] = json!(document.block);
        printed["serial"] = json!(document.serial);
        printed["number"] =
            json!(if args.void.is_some() { String::new() } else { document.number });
        printed["void"] = json!(args.void.is_some());
    }
    Ok(Output::new(&printed, text))
}

/// Takes the next number of a stored block of `doc_type`, its cursor already committed;
/// `no_number_block` when the device holds no block of that type with numbers left.
fn take_number(store: &mut ReplicaStore, doc_type: &str) -> Result<(NumberBlock, i64)> {
    let taken = store.take_number(doc_type).context("taking a document number")?;
    taken.ok_or_else(|| {
        anyhow::Error::new(CommandError::new(
            "no_number_block",
            format!(
                "no number block of type {doc_type} with numbers left on this device; lease one \
                 with `fieldcase numbers lease --doc-type {doc_type}` while online"
            ),
        ))
    })
}

/// The merged view of one document: record, conflicts and findings.
pub fn show(settings: &Settings, args: &ShowArgs) -> Result<Output> {
    let store = open_store(settings)?;
    let mut device_doc = store.load(args.doc)?;
    let view = device_doc.view();
    let text = render_view(&view, device_doc.has_pending());
    Ok(Output::new(&view, text))
}

/// Every document on the device, with its derived status.
pub fn list(settings: &Settings) -> Result<Output> {
    /// One row of `list --json`.
    #[derive(Serialize)]
    struct Listed {
        id: String,
        kind: String,
        status: String,
        pending: bool,
        updated_at: Option<i64>,
        matter: String,
    }

    let store = open_store(settings)?;
    let mut rows = Vec::new();
    for summary in store.summaries()? {
        let device_doc = store.load(summary.id)?;
        let record = Record::hydrate(device_doc.doc()).ok();
        let unknown = || "unknown".to_owned();
        rows.push(Listed {
            id: summary.id.to_string(),
            kind: record
                .as_ref()
                .map(|record| record.kind().as_str().to_owned())
                .or(summary.kind)
                .unwrap_or_else(unknown),
            status: record.as_ref().map_or_else(unknown, Record::status),
            pending: summary.pending,
            updated_at: summary.updated_at,
            matter: record.as_ref().map(|record| record.matter().to_owned()).unwrap_or_default(),
        });
    }
    let text = if rows.is_empty() {
        "no documents on this device".to_owned()
    } else {
        let mut text = format!(
            "{:<36}  {:<10}  {:<22}  {:<7}  {:<16}  MATTER",
            "ID", "KIND", "STATUS", "PENDING", "UPDATED"
        );
        for row in &rows {
            let pending = if row.pending { "yes" } else { "no" };
            let updated = row.updated_at.map(format_time).unwrap_or_default();
            let _ = write!(
                text,
                "\n{:<36}  {:<10}  {:<22}  {pending:<7}  {updated:<16}  {}",
                row.id, row.kind, row.status, row.matter
            );
        }
        text
    };
    Ok(Output::new(&rows, text))
}

/// What the device holds and how far it has synced; never contacts the server.
pub fn status(settings: &Settings) -> Result<Output> {
    /// `status --json`.
    #[derive(Serialize)]
    struct Status {
        actor: String,
        device: Option<String>,
        officer: Option<String>,
        role: Option<String>,
        township: Option<String>,
        cursor: u64,
        last_sync: Option<i64>,
        documents: u64,
        pending_documents: u64,
        pending_blobs: u64,
        // Changes the server refused, kept in the replica's append-only `refused_changes`.
        refused_changes: u64,
        server: String,
        home: String,
        // Records a supervisor returned for correction, with their comments (docs/review.md).
        returned: Vec<Value>,
    }

    let store = open_store(settings)?;
    let counts = store.counts()?;
    let enrollment = store.enrollment()?;
    let mut returned = Vec::new();
    for summary in store.summaries()? {
        let device_doc = store.load(summary.id)?;
        let review = server_review(device_doc.doc());
        if review["state"] == "returned" {
            returned.push(json!({"id": summary.id.to_string(), "comments": review["comments"]}));
        }
    }
    let status = Status {
        actor: store.actor().to_hex_string(),
        device: enrollment.as_ref().map(|enrollment| enrollment.device.clone()),
        officer: enrollment.as_ref().map(|enrollment| enrollment.officer.clone()),
        role: enrollment.as_ref().map(|enrollment| enrollment.role.clone()),
        township: enrollment.and_then(|enrollment| enrollment.township),
        cursor: store.cursor()?,
        last_sync: store.last_sync()?,
        documents: counts.documents,
        pending_documents: counts.pending_documents,
        pending_blobs: counts.pending_blobs,
        refused_changes: store.refused_count()?,
        server: settings.server.clone(),
        home: store.home().display().to_string(),
        returned,
    };
    let last_sync = status.last_sync.map_or_else(|| "never".to_owned(), format_time);
    let identity = match (&status.device, &status.officer, &status.role) {
        (Some(device), Some(officer), Some(role)) => format!(
            "device     {device}\nofficer    {officer} ({role}, township {})\n",
            status.township.as_deref().unwrap_or("none")
        ),
        _ => "device     not enrolled\n".to_owned(),
    };
    let text = format!(
        "{identity}actor      {}\nserver     {}\nhome       {}\ncursor     {}\nlast sync  {last_sync}\n\
         documents  {} ({} with changes to sync)\nblobs      {} waiting for upload\n\
         refused_changes: {}",
        status.actor,
        status.server,
        status.home,
        status.cursor,
        status.documents,
        status.pending_documents,
        status.pending_blobs,
        status.refused_changes,
    );
    let mut text = text;
    for record in &status.returned {
        let _ = write!(text, "\nreturned   {} for correction", scalar_text(&record["id"]));
        write_comments(&mut text, &record["comments"]);
    }
    Ok(Output::new(&status, text))
}

/// Uploads the pending evidence blobs, then syncs changes until the server has nothing more
/// to send; shows a progress bar (blob bytes) and a spinner (rounds) on a terminal.
///
/// A blob that fails to upload is listed in `blob_errors` and makes `ok` false, but the
/// changes sync anyway. Every call is authenticated with the device key; the master data of
/// each new access token replaces the stored one, even when the sync then fails.
pub fn sync(settings: &Settings) -> Result<Output> {
    let mut store = open_store(settings)?;
    require_enrollment(&store)?;
    let client = Client::new(&settings.server);
    let mut session =
        Session::open(client.clone(), &settings.home).context("opening the device session")?;
    let on_terminal = !settings.json && io::stderr().is_terminal();

    // Built without drawing: a sync with no pending blob shows no bar at all.
    let bar = if on_terminal { ProgressBar::new(0) } else { ProgressBar::hidden() }
        .with_style(
            ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} ({eta})")
                .expect("the template is valid"),
        )
        .with_message("uploading evidence");
    let blobs = upload_blobs(&store, &mut session, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();

    let progress = if on_terminal {
        let spinner = ProgressBar::new_spinner();
        spinner.set_message(format!("syncing with {}", client.server_url()));
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner
    } else {
        ProgressBar::hidden()
    };
    let result = blobs.and_then(|blobs| {
        let report = sync_replica(&mut store, &mut session, |report| {
            progress.set_message(format!(
                "syncing: {} requests, {} changes up, {} down",
                report.requests, report.uploaded, report.downloaded
            ));
        })?;
        Ok(SyncReport {
            ok: report.ok && blobs.errors.is_empty(),
            blobs_uploaded: blobs.uploaded,
            blob_bytes_up: blobs.bytes_up,
            blob_errors: blobs.errors,
            ..report
        })
    });
    progress.finish_and_clear();
    let stored = session.master_data().map_or(Ok(()), |update| {
        store
            .set_master_data(&update.data, update.jwt.as_deref())
            .context("storing the new master data")
    });
    // A failed sync reports its own failure first.
    let report = result?;
    stored?;

    let mut text = format!(
        "synced with {}: {} changes up, {} down in {} request(s) ({} bytes up, {} down); cursor {}",
        client.server_url(),
        report.uploaded,
        report.downloaded,
        report.requests,
        report.bytes_up,
        report.bytes_down,
        report.cursor,
    );
    if report.blobs_uploaded > 0 || !report.blob_errors.is_empty() {
        let _ = write!(
            text,
            "\nevidence: {} blob(s) uploaded ({} bytes)",
            report.blobs_uploaded, report.blob_bytes_up
        );
    }
    for failure in &report.blob_errors {
        let _ = write!(
            text,
            "\nblob {} not uploaded: {} ({}); it stays pending",
            failure.sha256, failure.message, failure.code
        );
    }
    for doc_id in &report.reforked {
        let _ = write!(
            text,
            "\nre-forked {doc_id} under a new actor: the server held this device's old actor's \
             changes from after its backup; the refused changes are kept"
        );
    }
    for rejection in &report.rejected {
        let _ = write!(
            text,
            "\nrefused {}: {} ({}); its changes stay pending",
            rejection.id, rejection.message, rejection.code
        );
    }
    Ok(Output::new(&report, text))
}

/// Runs sync rounds until the server has nothing more to send, storing each round's outcome
/// (documents, cursor, time) in one transaction before the next request.
///
/// A document the server refused is not uploaded again in later rounds of the same run (it
/// would be refused again); it stays pending for the next sync. `on_round` sees the running
/// totals after each round.
///
/// # Errors
/// A transport or API failure of any request, or an answer that cannot be applied; rounds
/// stored before the failure stay stored.
pub fn sync_replica(
    store: &mut ReplicaStore,
    session: &mut Session,
    mut on_round: impl FnMut(&SyncReport),
) -> Result<SyncReport> {
    let mut actor = store.actor().clone();
    let mut report = SyncReport { cursor: store.cursor()?, ..SyncReport::default() };
    let mut reforked = false;
    let mut refused = BTreeSet::new();
    // Rounds in a row that asked for more without advancing the cursor. One is legitimate: a
    // `Resync` (heads the server does not hold, as after changes it quarantined) leaves the
    // cursor where it was and the next round uploads what the server lacks.
    let mut stalled = 0;
    loop {
        let mut docs: BTreeMap<DocumentId, DeviceDoc> = store
            .load_pending()?
            .into_iter()
            .filter(|device_doc| !refused.contains(&device_doc.id()))
            .map(|device_doc| (device_doc.id(), device_doc))
            .collect();
        let round = SyncRound::plan(report.cursor, docs.values_mut());
        let (response, traffic) = match session.sync(round.request()) {
            // The server holds this device's own actor's sequence numbers with other content:
            // the replica was restored from a backup. Once per sync: take a new actor, re-fork
            // what is pending, keep the refused changes, and retry.
            Err(ClientError::Api { code, actor: Some(spent), .. })
                if code == DUPLICATE_SEQ && spent == actor.to_hex_string() && !reforked =>
            {
                reforked = true;
                let (new_actor, doc_ids, requests) = refork_replica(store, session)?;
                // The refused sync, the new actor and one history read per pending document.
                report.requests += 1 + requests;
                actor = new_actor;
                report.reforked.extend(doc_ids.iter().map(ToString::to_string));
                continue;
            }
            other => {
                other.with_context(|| format!("syncing with {}", session.client().server_url()))?
            }
        };
        report.requests += 1;
        report.bytes_up += traffic.bytes_up;
        report.bytes_down += traffic.bytes_down;

        for doc_id in SyncRound::documents_in(&response) {
            if !docs.contains_key(&doc_id)
                && let Some(device_doc) = store.find(doc_id)?
            {
                docs.insert(doc_id, device_doc);
            }
        }
        let outcome =
            round.apply(response, &mut docs, &actor).context("applying the server's answer")?;
        let touched = docs
            .iter_mut()
            .filter(|(doc_id, _)| outcome.touched.contains(doc_id))
            .map(|(_, device_doc)| device_doc);
        store.commit_round(touched, &outcome.evicted, outcome.cursor, now_ms())?;

        report.uploaded += outcome.uploaded;
        report.downloaded += outcome.downloaded;
        for (doc_id, code, message) in outcome.rejected {
            refused.insert(doc_id);
            report.rejected.push(Rejection { id: doc_id.to_string(), code, message });
        }
        let advanced = outcome.cursor != report.cursor;
        report.cursor = outcome.cursor;
        on_round(&report);
        if !outcome.more {
            break;
        }
        stalled = if advanced { 0 } else { stalled + 1 };
        if stalled > 1 {
            bail!(CommandError::new(
                "invalid_response",
                "the server asked for another round without advancing the cursor"
            ));
        }
    }
    report.ok = report.rejected.is_empty();
    Ok(report)
}

/// The code of a refused upload whose (actor, seq) the server already holds.
const DUPLICATE_SEQ: &str = "duplicate_seq";

/// Recovers a replica restored from a backup after the server refused its own actor's changes
/// as `duplicate_seq`: asks for a new actor (`POST /v1/actors`), marks as acknowledged the
/// pending changes the server already stores (its history of the document), re-forks every
/// pending document under the new actor and stores the new actor, the refused changes and the
/// documents in one transaction. Returns the new actor, the documents that had refused
/// changes and the number of requests made.
fn refork_replica(
    store: &mut ReplicaStore,
    session: &mut Session,
) -> Result<(ActorId, Vec<DocumentId>, u64)> {
    let answer = session
        .post_json(paths::ACTORS, &json!({}))
        .context("asking the server for a new actor after duplicate_seq")?;
    let new_actor = answer["actor"]
        .as_str()
        .and_then(|text| hex::decode(text).ok())
        .filter(|bytes| bytes.len() == 16)
        .map(ActorId::from)
        .ok_or_else(|| {
            CommandError::new("invalid_response", "the server's new actor is not 32 hex digits")
        })?;
    let mut docs = store.load_pending()?;
    let mut refused = Vec::with_capacity(docs.len());
    for device_doc in &mut docs {
        let stored = stored_hashes(session, device_doc.id())?;
        device_doc.acknowledge_stored(&stored);
        let doc_id = device_doc.id();
        refused.push(
            device_doc
                .refork(&new_actor)
                .with_context(|| format!("re-forking document {doc_id} under a new actor"))?,
        );
    }
    let reforked = docs
        .iter()
        .zip(&refused)
        .filter(|(_, changes)| !changes.is_empty())
        .map(|(device_doc, _)| device_doc.id())
        .collect();
    store
        .store_refork(
            &new_actor,
            docs.iter_mut().zip(refused.iter().map(Vec::as_slice)),
            DUPLICATE_SEQ,
            now_ms(),
        )
        .context("storing the re-forked documents")?;
    Ok((new_actor, reforked, 1 + docs.len() as u64))
}

/// The hashes of every change of the document the server stores; none when it holds none.
fn stored_hashes(session: &mut Session, doc_id: DocumentId) -> Result<HashSet<ChangeHash>> {
    let history = match session.get_json(&paths::history(doc_id)) {
        Ok(history) => history,
        Err(ClientError::Api { status: 404, .. }) => return Ok(HashSet::new()),
        Err(error) => {
            return Err(error).with_context(|| format!("reading the history of {doc_id}"));
        }
    };
    let invalid = || CommandError::new("invalid_response", "the document history is malformed");
    history
        .as_array()
        .ok_or_else(invalid)?
        .iter()
        .map(|entry| {
            entry["hash"]
                .as_str()
                .and_then(|hash| hash.parse::<ChangeHash>().ok())
                .ok_or_else(|| invalid().into())
        })
        .collect()
}

/// Opens the replica under `--home`.
pub(crate) fn open_store(settings: &Settings) -> Result<ReplicaStore> {
    ReplicaStore::open(&settings.home)
        .with_context(|| format!("opening the device replica in {}", settings.home.display()))
}

/// The device's identity; `not_enrolled` when it has none.
pub(crate) fn require_enrollment(store: &ReplicaStore) -> Result<Enrollment> {
    store.enrollment()?.ok_or_else(|| {
        CommandError::new(
            "not_enrolled",
            "this device is not enrolled; run fieldcase enroll --code CODE first",
        )
        .into()
    })
}

/// Checks offline that the enrolled officer may take `action` on `matter` now.
fn require_scope(
    store: &ReplicaStore,
    matter: &str,
    action: Action,
    now: i64,
) -> Result<(Enrollment, MasterData)> {
    let enrollment = require_enrollment(store)?;
    let master_data = store.master_data()?.ok_or_else(|| {
        CommandError::new("master_data_stale", "the device holds no master data; sync first")
    })?;
    if let Err(refusal) = master_data.check(matter, action, now) {
        bail!(CommandError::new(refusal.code(), refusal.to_string()));
    }
    Ok((enrollment, master_data))
}

fn store_new_document(
    store: &ReplicaStore,
    doc_id: DocumentId,
    doc: automerge::AutoCommit,
    now: i64,
) -> Result<Output> {
    let mut device_doc = DeviceDoc::new(doc_id, doc);
    store.save(&mut device_doc, now)?;
    Ok(Output::new(&json!({"id": doc_id.to_string()}), doc_id.to_string()))
}

fn party(args: &PartyArgs) -> Party {
    Party {
        kind: value_name(&args.party_kind),
        name: args.party_name.clone(),
        id_number: args.party_id.clone(),
    }
}

/// The enrolled officer (with the certificate number the master data holds), then every
/// other officer given, each once.
fn officers_present(
    enrollment: &Enrollment,
    master_data: &MasterData,
    others: Vec<OfficerId>,
) -> Vec<OfficerPresent> {
    let cert_no =
        master_data.certificate.as_ref().map(|cert| cert.cert_no.clone()).unwrap_or_default();
    let mut present = vec![OfficerPresent { officer: enrollment.officer.clone(), cert_no }];
    for officer in others {
        let officer = officer.to_string();
        if present.iter().all(|known| known.officer != officer) {
            present.push(OfficerPresent { officer, cert_no: String::new() });
        }
    }
    present
}

/// A fresh random document id (UUID v4).
fn new_document_id() -> DocumentId {
    DocumentId::from_bytes(uuid::Uuid::new_v4().into_bytes())
}

/// Device time now, milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Change metadata: Automerge stores change times in seconds.
fn commit_options(message: &str, now_ms: i64) -> CommitOptions {
    CommitOptions::default().with_message(message.to_owned()).with_time(now_ms / 1000)
}

/// The command-line spelling of a value, which is also the stored form.
fn value_name(value: &impl ValueEnum) -> String {
    value.to_possible_value().expect("no value is skipped").get_name().to_owned()
}

/// Splits `PATH=VALUE` at the first `=`; the value may contain `=`.
fn parse_assignment(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((path, value)) if !path.is_empty() => Ok((path.to_owned(), value.to_owned())),
        _ => Err(format!("expected PATH=VALUE, got {text:?}")),
    }
}

/// Event kinds are snake_case words, so that the state machine and reports can match them.
fn parse_event_kind(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!("event kinds are snake_case words like notify or decide, got {text:?}"))
    }
}

fn guess_media_type(path: &Path) -> &'static str {
    let extension = path.extension().and_then(OsStr::to_str).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("heic") => "image/heic",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("mp3") => "audio/mpeg",
        Some("m4a") => "audio/mp4",
        Some("amr") => "audio/amr",
        Some("wav") => "audio/wav",
        Some("mp4") => "video/mp4",
        Some("mov") => "video/quicktime",
        _ => "application/octet-stream",
    }
}

fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|time| time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// The view for people: fields by the same dotted paths `edit` takes, then conflicts and
/// findings.
fn render_view(view: &DocumentView, pending: bool) -> String {
    let mut text = format!("{} {}", view.kind, view.id);
    if let Some(state) = &view.state {
        let _ = write!(text, "\nstate: {state}");
    }
    let review = &view.record["review"];
    if let Some(state) = review["state"].as_str() {
        let _ = write!(text, "\nreview: {state}");
    }
    let sync_state = if pending { "changes not synced yet" } else { "in sync with the server" };
    let _ = write!(text, "\n{} head(s), {sync_state}\n", view.heads.len());
    let mut fields = Vec::new();
    flatten(&view.record, String::new(), &mut fields);
    for (path, value) in fields.into_iter().filter(|(path, _)| !path.starts_with("review.")) {
        let _ = write!(text, "\n  {path}: {value}");
    }
    if !view.conflicts.is_empty() {
        text.push_str("\n\nconflicts (concurrent values, the shown one first):");
        for conflict in &view.conflicts {
            let _ = write!(text, "\n  {}", conflict.path);
            for value in &conflict.values {
                let officer = value.officer.as_ref().map(|officer| format!(", officer {officer}"));
                let _ = write!(
                    text,
                    "\n    {}  (actor {}{})",
                    scalar_text(&value.value),
                    value.actor,
                    officer.unwrap_or_default()
                );
            }
        }
    }
    if review["comments"].as_array().is_some_and(|comments| !comments.is_empty()) {
        text.push_str("\n\nsupervisor comments:");
        write_comments(&mut text, &review["comments"]);
    }
    if !view.findings.is_empty() {
        text.push_str("\n\nfindings:");
        for finding in &view.findings {
            let severity = serde_json::to_value(finding.severity).unwrap_or(Value::Null);
            let _ = write!(
                text,
                "\n  {} {} at {}: {}",
                scalar_text(&severity),
                finding.code,
                finding.path,
                finding.message
            );
        }
    }
    text
}

/// The `review` part of a record as the server wrote it (`state`, `heads`, `comments`), or
/// `null`; a `review` map some device wrote is not the supervisor's and is ignored.
fn server_review(doc: &impl automerge::ReadDoc) -> Value {
    match doc.get(ROOT, "review") {
        Ok(Some((automerge::Value::Object(automerge::ObjType::Map), id))) if matches!(&id, automerge::ObjId::Id(_, actor, _) if actor.to_bytes() == SERVER_ACTOR) => {
            sync_core::json::value_json(doc, &id)
        }
        _ => Value::Null,
    }
}

/// Appends a supervisor's comments, one line each.
fn write_comments(text: &mut String, comments: &Value) {
    for comment in comments.as_array().map(Vec::as_slice).unwrap_or_default() {
        let at = comment["at"].as_i64().map(format_time).unwrap_or_default();
        let _ = write!(
            text,
            "\n  {} {at}: {}",
            scalar_text(&comment["by"]),
            scalar_text(&comment["text"])
        );
    }
}

/// Flattens JSON into `(dotted path, value)` lines; empty objects and lists keep a line.
fn flatten(value: &Value, path: String, out: &mut Vec<(String, String)>) {
    let join = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                flatten(child, join(key), out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (index, child) in items.iter().enumerate() {
                flatten(child, join(&index.to_string()), out);
            }
        }
        other => out.push((path, scalar_text(other))),
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) if text.is_empty() => "\"\"".to_owned(),
        Value::String(text) => text.clone(),
        Value::Object(map) if map.is_empty() => "{}".to_owned(),
        other => other.to_string(),
    }
}
