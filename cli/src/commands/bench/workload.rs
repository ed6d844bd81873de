//! The benchmark workload of BENCHMARKS.md: case files made offline, then small edits, each
//! its own commit, all drawn from a seeded generator so that a seed gives the same documents
//! and the same changes.
//!
//! A device's documents depend on the seed, the device's index and its actor (which the server
//! allocates at enrollment, so two runs against one server never collide on document ids);
//! nothing reads the clock: change times count from a fixed base.

use automerge::transaction::{CommitOptions, Transactable as _};
use automerge::{ActorId, AutoCommit, ObjType, ROOT, ReadDoc, Value};
use autosurgeon::Text;
use sha2::{Digest as _, Sha256};
use sync_core::edit::set_field;
use sync_core::ids::DocumentId;
use sync_core::records::{CaseFile, Evidence, OfficerPresent, Party, Procedure, create_document};
use sync_core::replica::DeviceDoc;

/// 2026-01-01T00:00:00Z in milliseconds: the device time of the first change; each later
/// change is a second later, so change times do not depend on when the bench runs.
const BASE_TIME_MS: i64 = 1_767_225_600_000;

/// About 500 characters: the narrative (`facts`) of a fresh case file.
const NARRATIVE_CHARS: usize = 500;

/// Evidence items per case file.
const EVIDENCE_ITEMS: usize = 5;

/// The scalar fields an even edit sets; none of them decides authorization (township, matter,
/// kind) or the procedure.
const EDITED_FIELDS: [&str; 9] = [
    "name_agency",
    "legal_basis",
    "parties.0.name",
    "parties.0.id_number",
    "evidence.0.note",
    "evidence.1.note",
    "evidence.2.note",
    "evidence.3.note",
    "evidence.4.note",
];

/// The words every text is made of (the peers harness's vocabulary, so sizes compare).
const WORDS: &[&str] = &[
    "inspection",
    "site",
    "crack",
    "corrosion",
    "beam",
    "column",
    "joint",
    "weld",
    "bolt",
    "anchor",
    "slab",
    "moisture",
    "rust",
    "paint",
    "coating",
    "leak",
    "valve",
    "pipe",
    "flange",
    "gasket",
    "seal",
    "pressure",
    "gauge",
    "reading",
    "north",
    "south",
    "east",
    "west",
    "level",
    "floor",
    "roof",
    "wall",
    "door",
    "window",
    "frame",
    "panel",
    "cable",
    "tray",
    "conduit",
    "earth",
    "bonding",
    "fire",
    "exit",
    "sign",
    "alarm",
    "detector",
    "sprinkler",
    "hydrant",
    "pump",
    "motor",
    "bearing",
    "vibration",
    "noise",
    "temperature",
    "humidity",
    "observed",
    "noted",
    "minor",
    "major",
    "critical",
    "remedial",
    "action",
    "required",
    "follow",
    "up",
    "photo",
    "taken",
    "sample",
    "collected",
    "measured",
    "approx",
    "mm",
    "deep",
    "wide",
    "long",
    "adjacent",
    "near",
    "behind",
    "above",
    "below",
    "the",
    "a",
    "of",
    "and",
    "with",
    "at",
    "on",
    "in",
    "to",
    "from",
    "for",
    "was",
    "is",
    "site",
    "exit",
    "gauge",
    "valve",
    "wall",
    "door",
    "roof",
    "beam",
    "seal",
];

/// The legal evidence classes the items are drawn from.
const EVIDENCE_KINDS: [&str; 5] = ["photo", "document", "audio", "video", "testimony"];

/// What the documents of one device are about, fixed by the registry the bench enrolled in.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    /// The devices' township; every document is created in it.
    pub(crate) township: String,
    /// The entrusted matter every case is about.
    pub(crate) matter: String,
    /// The two officers present: the device's own officer first.
    pub(crate) officers: [OfficerPresent; 2],
}

/// splitmix64: a tiny, fast generator whose whole state is one word, so every document can
/// have its own stream derived from the seed (the result does not depend on thread order).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// The stream named by `parts` under `seed`.
    pub(crate) fn new(seed: u64, parts: &[u64]) -> Self {
        let mut rng = Self(seed ^ 0x6a09_e667_f3bc_c908);
        for part in parts {
            rng.0 ^= part.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            rng.next();
        }
        rng
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value ^ (value >> 31)
    }

    /// A number in `0..bound`; `bound` must be positive.
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        // The modulo bias over 64 bits is far below anything a benchmark could notice.
        usize::try_from(self.next() % bound as u64).expect("below a usize bound")
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// Words of the vocabulary, at least `min_chars` characters in all.
    fn words(&mut self, min_chars: usize) -> String {
        let mut text = String::with_capacity(min_chars + 12);
        while text.len() < min_chars {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(self.pick(WORDS));
        }
        text
    }

    /// Words of at least `low..=high` characters in all, the length drawn first.
    fn words_between(&mut self, low: usize, high: usize) -> String {
        let min_chars = self.between(low, high);
        self.words(min_chars)
    }

    /// A short scalar field: words of 12–28 characters.
    fn short_field(&mut self) -> String {
        self.words_between(12, 28)
    }

    /// `low..=high` words of the vocabulary, the count drawn first.
    fn word_count_between(&mut self, low: usize, high: usize) -> String {
        let count = self.between(low, high);
        (0..count).map(|_| self.pick(WORDS)).collect::<Vec<_>>().join(" ")
    }

    fn hex(&mut self, bytes: usize) -> String {
        let raw: Vec<u8> = (0..bytes).map(|_| self.next().to_le_bytes()[0]).collect();
        hex::encode(raw)
    }
}

/// The id of document `index` of device `device`: a hash of the seed, the indices and the
/// device's actor, shaped as a UUID v4.
pub(crate) fn document_id(seed: u64, device: usize, index: usize, actor: &ActorId) -> DocumentId {
    let mut hasher = Sha256::new();
    hasher.update(b"fieldcase-bench-document");
    hasher.update(seed.to_le_bytes());
    hasher.update((device as u64).to_le_bytes());
    hasher.update((index as u64).to_le_bytes());
    hasher.update(actor.to_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    DocumentId::from_bytes(uuid::Builder::from_random_bytes(bytes).into_uuid().into_bytes())
}

/// Document `index` of device `device`, created and then edited `edits` times, each edit its
/// own commit; nothing of it is acknowledged by a server.
///
/// # Errors
/// Only a bug in the workload (a field that does not exist) fails.
pub(crate) fn build_document(
    seed: u64,
    device: usize,
    index: usize,
    edits: usize,
    actor: &ActorId,
    setting: &Setting,
) -> anyhow::Result<DeviceDoc> {
    let mut rng = Rng::new(seed, &[1, device as u64, index as u64]);
    let doc_id = document_id(seed, device, index, actor);
    let case_file = case_file(&mut rng, doc_id, device, index, setting);
    let mut doc = create_document(actor, &case_file, BASE_TIME_MS)?;
    for edit in 0..edits {
        apply_edit(&mut doc, &mut rng, edit)?;
    }
    Ok(DeviceDoc::new(doc_id, doc))
}

/// Edits a document `count` more times offline, continuing its edit numbering at `first`;
/// `round` names the resync round, so that each round draws its own edits.
///
/// # Errors
/// Only a bug in the workload fails.
pub(crate) fn edit_again(
    device_doc: &mut DeviceDoc,
    seed: u64,
    device: usize,
    index: usize,
    round: u64,
    first: usize,
    count: usize,
) -> anyhow::Result<()> {
    let mut rng = Rng::new(seed, &[2, device as u64, index as u64, round]);
    for edit in first..first + count {
        apply_edit(device_doc.doc_mut(), &mut rng, edit)?;
    }
    Ok(())
}

/// `count` distinct indices out of `0..total`, in order, drawn for device `device` in resync
/// round `round`.
pub(crate) fn choose_documents(
    seed: u64,
    device: usize,
    round: u64,
    total: usize,
    count: usize,
) -> Vec<usize> {
    let mut rng = Rng::new(seed, &[3, device as u64, round]);
    let mut indices: Vec<usize> = (0..total).collect();
    for position in (1..total).rev() {
        indices.swap(position, rng.below(position + 1));
    }
    indices.truncate(count.min(total));
    indices.sort_unstable();
    indices
}

/// A fresh case file: about 12 short scalar fields, a narrative of about 500 characters and 5
/// evidence items.
fn case_file(
    rng: &mut Rng,
    doc_id: DocumentId,
    device: usize,
    index: usize,
    setting: &Setting,
) -> CaseFile {
    let party = Party {
        kind: "natural".to_owned(),
        name: rng.short_field(),
        id_number: format!("{:018}", rng.next() % 1_000_000_000_000_000_000),
    };
    let mut case_file =
        CaseFile::new(doc_id.to_string(), Procedure::General, setting.matter.clone(), party);
    case_file.township.clone_from(&setting.township);
    case_file.name_agency = rng.short_field();
    case_file.legal_basis = rng.short_field();
    case_file.facts = Text::with_value(rng.words(NARRATIVE_CHARS));
    case_file.officers = setting.officers.to_vec();
    case_file.evidence = (0..EVIDENCE_ITEMS)
        .map(|item| Evidence {
            id: format!("EV-{device}-{index}-{item}"),
            kind: rng.pick(&EVIDENCE_KINDS).to_owned(),
            sha256: rng.hex(32),
            size: i64::try_from(rng.between(20_000, 4_000_000)).expect("small"),
            media_type: "image/jpeg".to_owned(),
            captured_at: BASE_TIME_MS - i64::try_from(rng.below(86_400_000)).expect("small"),
            captured_by: setting.officers[0].officer.clone(),
            note: rng.words_between(20, 40),
            removed: None,
        })
        .collect();
    case_file
}

/// Edit number `edit` as one commit: an even edit sets a scalar field, an odd one inserts
/// 5–15 words at a random position of the narrative.
fn apply_edit(doc: &mut AutoCommit, rng: &mut Rng, edit: usize) -> anyhow::Result<()> {
    if edit.is_multiple_of(2) {
        let field = rng.pick(&EDITED_FIELDS);
        let value = rng.short_field();
        set_field(doc, field, &value)?;
    } else {
        let Some((Value::Object(ObjType::Text), facts)) = doc.get(ROOT, "facts")? else {
            anyhow::bail!("the case file has no facts text");
        };
        let narrative = doc.text(&facts)?;
        // Documents use UTF-8 text indices: a position is a byte offset at a char boundary.
        let mut position = rng.below(narrative.len() + 1);
        while !narrative.is_char_boundary(position) {
            position -= 1;
        }
        let inserted = format!(" {}", rng.word_count_between(5, 15));
        doc.splice_text(&facts, position, 0, &inserted)?;
    }
    let time_secs = BASE_TIME_MS / 1000 + i64::try_from(edit + 1).expect("small");
    doc.commit_with(CommitOptions::default().with_time(time_secs));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting() -> Setting {
        let officer =
            |id: &str| OfficerPresent { officer: id.to_owned(), cert_no: format!("C-{id}") };
        Setting {
            township: "t-chengguan".to_owned(),
            matter: "AJ-001".to_owned(),
            officers: [officer("o-1"), officer("o-2")],
        }
    }

    /// Saved bytes and every change hash of document `index` of device 3.
    fn fingerprint(seed: u64, index: usize) -> (Vec<u8>, Vec<String>) {
        let actor = ActorId::from([7; 16]);
        let mut device_doc = build_document(seed, 3, index, 20, &actor, &setting()).unwrap();
        edit_again(&mut device_doc, seed, 3, index, 1, 20, 5).unwrap();
        let hashes = device_doc.pending().iter().map(|change| change.hash().to_string()).collect();
        (device_doc.save(), hashes)
    }

    #[test]
    fn the_workload_is_the_same_for_the_same_seed() {
        let (bytes, hashes) = fingerprint(42, 5);
        assert_eq!(fingerprint(42, 5), (bytes.clone(), hashes.clone()));
        // A create, 20 edits and 5 more: one change each.
        assert_eq!(hashes.len(), 26);
        assert_ne!(fingerprint(43, 5).0, bytes);
        assert_ne!(fingerprint(42, 6).0, bytes);
        assert_eq!(choose_documents(42, 1, 1, 100, 10), choose_documents(42, 1, 1, 100, 10));
        assert_eq!(choose_documents(42, 1, 1, 100, 10).len(), 10);
    }

    #[test]
    fn a_fresh_case_file_has_the_size_of_the_benchmark_workload() {
        let actor = ActorId::from([7; 16]);
        let mut device_doc = build_document(42, 0, 0, 0, &actor, &setting()).unwrap();
        let saved = device_doc.save().len();
        // BENCHMARKS.md: save() of one fresh document is about 1.3 KB.
        assert!((900..2_500).contains(&saved), "saved {saved} bytes");
        let mut edited = build_document(42, 0, 0, 20, &actor, &setting()).unwrap();
        assert_eq!(edited.pending().len(), 21);
    }
}
