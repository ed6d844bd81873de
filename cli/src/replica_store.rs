//! The device's local replica: its record documents, actor, feed cursor and evidence blobs.
//!
//! Everything lives under `--home`: `replica.sqlite` (WAL, `synchronous=FULL`, so a command
//! that reported success survives a power cut) and `blobs/<sha256>` for evidence bytes kept until
//! they are uploaded. A document is stored whole (`save()`) with the heads the server has
//! acknowledged and a `dirty` flag, so that a sync loads only documents with pending changes.
//! The documents a sync round touched, the new cursor and the last-sync time are written in one
//! transaction ([`ReplicaStore::commit_round`]): an interrupted sync resumes from the last
//! acknowledged state and re-sends, harmlessly, whatever was not acknowledged.
//!
//! After `fieldcase enroll` the `meta` table also holds the device's identity ([`Enrollment`]),
//! with the server-allocated actor replacing the random one, and the master data the device
//! checks its scope against offline.
//!
//! `number_blocks` holds the document number blocks the device leased, each with its cursor;
//! [`ReplicaStore::take_number`] advances a cursor in its own committed transaction before the
//! caller renders the number, so a crash skips a serial but never hands it out twice.
//!
//! One fieldcase process uses a home at a time: [`ReplicaStore::open`] takes an exclusive lock
//! on `<home>/lock` and holds it until the store is dropped. A sync keeps documents in memory
//! across its HTTP round trips; without the lock, saving them afterwards would overwrite an
//! edit another process made meanwhile.

#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use automerge::{ActorId, Change, ChangeHash};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use sync_core::error::ReplicaError;
use sync_core::ids::DocumentId;
use sync_core::numbers::{BlockCursor, NumberBlock};
use sync_core::records::RecordKind;
use sync_core::replica::DeviceDoc;
use sync_core::scope::MasterData;
use thiserror::Error;

/// The schema, one entry per version; `PRAGMA user_version` counts the entries applied.
/// Entries are only ever appended, so that every older replica migrates forward.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB);
    CREATE TABLE docs (
        id BLOB PRIMARY KEY,
        kind TEXT,
        bytes BLOB NOT NULL,
        synced_heads BLOB NOT NULL,
        dirty INTEGER NOT NULL,
        updated_at INTEGER
    );
    CREATE INDEX docs_dirty ON docs (id) WHERE dirty = 1;
    CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, uploaded INTEGER NOT NULL);
",
    "
    CREATE TABLE refused_changes (
        doc_id BLOB NOT NULL,
        hash BLOB NOT NULL,
        bytes BLOB NOT NULL,
        reason TEXT NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE TRIGGER refused_changes_no_update BEFORE UPDATE ON refused_changes
        BEGIN SELECT RAISE(ABORT, 'refused_changes is append-only'); END;
    CREATE TRIGGER refused_changes_no_delete BEFORE DELETE ON refused_changes
        BEGIN SELECT RAISE(ABORT, 'refused_changes is append-only'); END;
",
    "
    CREATE TABLE number_blocks (id TEXT PRIMARY KEY, json TEXT NOT NULL, next INTEGER NOT NULL);
",
];

/// 30 s: how long a statement waits for a lock held by a process that opened the database
/// without going through [`ReplicaStore::open`] (a backup tool, `sqlite3`) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Length of one change hash in the `synced_heads` column, which holds them concatenated.
const HASH_LEN: usize = 32;

/// A device replica failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The device holds no document with this id.
    #[error("no document {0} on this device")]
    UnknownDocument(DocumentId),
    /// Stored bytes that do not read back: a damaged or foreign replica file.
    #[error("the replica is damaged: {0}")]
    Corrupt(String),
    /// A newer fieldcase wrote this replica; reading it could lose what that version stored.
    #[error("the replica has schema version {found}, newer than the {known} this build knows")]
    NewerSchema {
        /// The version found in the file.
        found: i64,
        /// The newest version this build knows.
        known: usize,
    },
    /// SQLite refused an operation.
    #[error("replica database error")]
    Sqlite(#[from] rusqlite::Error),
    /// A file or directory under the home (or an evidence file) could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// The stable snake_case code `--json` reports for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownDocument(_) => "unknown_document",
            Self::Corrupt(_) | Self::NewerSchema { .. } => "corrupt_replica",
            Self::Sqlite(_) => "storage_error",
            Self::Io { .. } => "io_error",
        }
    }
}

/// One stored document, as listings show it, without loading the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocSummary {
    /// The document id.
    pub id: DocumentId,
    /// `inspection` or `case`; `None` when the document is not (yet) a readable record.
    pub kind: Option<String>,
    /// Whether the document has changes the server has not acknowledged.
    pub pending: bool,
    /// Device time the device's copy was last written, milliseconds since the Unix epoch.
    pub updated_at: Option<i64>,
}

/// How much the replica holds, for `fieldcase status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaCounts {
    /// Documents stored.
    pub documents: u64,
    /// Documents with changes the server has not acknowledged.
    pub pending_documents: u64,
    /// Evidence blobs not uploaded yet.
    pub pending_blobs: u64,
}

/// Evidence bytes stored under `<home>/blobs/<sha256>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// Lowercase hex SHA-256 of the bytes: the blob's name here and on the server.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Who this device is, as the server told it at enrollment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Enrollment {
    /// The device id the server allocated.
    pub device: String,
    /// The officer the device belongs to.
    pub officer: String,
    /// The officer's name.
    pub officer_name: String,
    /// `officer`, `supervisor` or `admin`.
    pub role: String,
    /// The officer's township, if the officer has one.
    pub township: Option<String>,
    /// The Automerge actor the server allocated to this device, 32 hex digits.
    pub actor: String,
    /// The server's token key (Ed25519 public JWK with `kid`).
    pub server_key: serde_json::Value,
}

/// The open replica of one device home.
pub struct ReplicaStore {
    // Declared before the lock so that the database closes before the lock is released.
    db: Connection,
    _lock: File,
    home: PathBuf,
    actor: ActorId,
}

impl ReplicaStore {
    /// Opens (and on first use creates) the replica under `home`, waiting for any other
    /// fieldcase process using the same home to finish.
    ///
    /// On first use the device makes its own random Automerge actor id and stores it, until
    /// enrollment ([`Self::enroll`]) replaces it with the actor the server allocated; every
    /// later open returns the stored actor, so that its changes keep one sequence.
    pub fn open(home: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(home).map_err(io_error(home))?;
        let lock_path = home.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        lock.lock().map_err(io_error(&lock_path))?;

        let mut db = Connection::open(home.join("replica.sqlite"))?;
        db.busy_timeout(BUSY_TIMEOUT)?;
        db.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        db.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut db)?;
        db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('actor', ?1)",
            [ActorId::random().to_bytes()],
        )?;
        let actor_bytes: Vec<u8> =
            db.query_row("SELECT value FROM meta WHERE key = 'actor'", [], |row| row.get(0))?;
        if actor_bytes.is_empty() {
            return Err(StoreError::Corrupt("the stored actor id is empty".to_owned()));
        }
        Ok(Self { db, _lock: lock, home: home.to_owned(), actor: ActorId::from(actor_bytes) })
    }

    /// The device's Automerge actor: every change this device writes carries it.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The device's identity, once it has enrolled.
    pub fn enrollment(&self) -> Result<Option<Enrollment>, StoreError> {
        self.meta_json("enrollment")
    }

    /// Stores the identity and master data of a new enrollment in one transaction, and makes
    /// the server-allocated actor the one every later change of this device carries.
    pub fn enroll(
        &mut self,
        enrollment: &Enrollment,
        master_data: &serde_json::Value,
        master_data_jwt: Option<&str>,
    ) -> Result<(), StoreError> {
        let actor_bytes = hex::decode(&enrollment.actor)
            .ok()
            .filter(|bytes| bytes.len() == 16)
            .ok_or_else(|| StoreError::Corrupt(format!("invalid actor {:?}", enrollment.actor)))?;
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        set_meta(&tx, "enrollment", &json_text(enrollment))?;
        set_meta(&tx, "actor", &actor_bytes)?;
        store_master_data(&tx, master_data, master_data_jwt)?;
        tx.commit()?;
        self.actor = ActorId::from(actor_bytes);
        Ok(())
    }

    /// The master data the device last received; `None` before enrollment or when the server
    /// sent none.
    pub fn master_data(&self) -> Result<Option<MasterData>, StoreError> {
        Ok(self.meta_json::<Option<MasterData>>("master_data")?.flatten())
    }

    /// Replaces the master data with a newer snapshot from the server.
    pub fn set_master_data(
        &self,
        master_data: &serde_json::Value,
        master_data_jwt: Option<&str>,
    ) -> Result<(), StoreError> {
        store_master_data(&self.db, master_data, master_data_jwt)
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Stores a block the server leased, with its cursor at the first serial.
    pub fn store_number_block(&self, block: &NumberBlock) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO number_blocks (id, json, next) VALUES (?1, ?2, ?3)",
            params![block.id, json_text(block), block.first],
        )?;
        Ok(())
    }

    /// Every block the device holds with its cursor, in the order they were stored.
    pub fn number_blocks(&self) -> Result<Vec<BlockCursor>, StoreError> {
        let mut statement =
            self.db.prepare("SELECT json, next FROM number_blocks ORDER BY rowid")?;
        let rows =
            statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
        let mut cursors = Vec::new();
        for row in rows {
            let (json, next) = row?;
            let block: NumberBlock = serde_json::from_str(&json)
                .map_err(|error| StoreError::Corrupt(format!("a stored number block: {error}")))?;
            cursors.push(BlockCursor { block, next });
        }
        Ok(cursors)
    }

    /// Takes the next serial of the oldest block of `doc_type` with serials left, and stores
    /// the advanced cursor in its own committed transaction before returning it (DOMAIN.md §3,
    /// block protocol step 2): a crash after this call skips the serial, never reuses it.
    /// `None` when no block of that type has serials left.
    pub fn take_number(
        &mut self,
        doc_type: &str,
    ) -> Result<Option<(NumberBlock, i64)>, StoreError> {
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(String, String, i64)> = {
            let mut statement =
                tx.prepare("SELECT id, json, next FROM number_blocks ORDER BY rowid")?;
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        for (id, json, next) in rows {
            let block: NumberBlock = serde_json::from_str(&json)
                .map_err(|error| StoreError::Corrupt(format!("a stored number block: {error}")))?;
            if block.doc_type != doc_type {
                continue;
            }
            let mut cursor = BlockCursor { block, next };
            let Some(serial) = cursor.take() else { continue };
            tx.execute(
                "UPDATE number_blocks SET next = ?1 WHERE id = ?2",
                params![cursor.next, id],
            )?;
            tx.commit()?;
            return Ok(Some((cursor.block, serial)));
        }
        Ok(None)
    }

    /// The server feed sequence up to which this device has applied every change in its scope.
    pub fn cursor(&self) -> Result<u64, StoreError> {
        let cursor = self.meta_int("cursor")?.unwrap_or(0);
        u64::try_from(cursor).map_err(|_| StoreError::Corrupt(format!("negative cursor {cursor}")))
    }

    /// Device time of the last completed sync round, milliseconds since the Unix epoch.
    pub fn last_sync(&self) -> Result<Option<i64>, StoreError> {
        self.meta_int("last_sync")
    }

    /// Stores the document as it is now: its bytes, acknowledged heads and pending flag.
    pub fn save(&self, device_doc: &mut DeviceDoc, now_ms: i64) -> Result<(), StoreError> {
        save_doc(&self.db, device_doc, now_ms)
    }

    /// Loads a document, with this device's actor set for new edits.
    pub fn load(&self, doc_id: DocumentId) -> Result<DeviceDoc, StoreError> {
        self.find(doc_id)?.ok_or(StoreError::UnknownDocument(doc_id))
    }

    /// Loads a document if the device holds it.
    pub fn find(&self, doc_id: DocumentId) -> Result<Option<DeviceDoc>, StoreError> {
        let row = self
            .db
            .query_row(
                "SELECT bytes, synced_heads FROM docs WHERE id = ?1",
                [doc_id.as_bytes()],
                |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        row.map(|(bytes, heads)| self.read_doc(doc_id, &bytes, &heads)).transpose()
    }

    /// Loads every document with changes the server has not acknowledged.
    pub fn load_pending(&self) -> Result<Vec<DeviceDoc>, StoreError> {
        let mut statement =
            self.db.prepare("SELECT id, bytes, synced_heads FROM docs WHERE dirty = 1")?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?, row.get::<_, Vec<u8>>(2)?))
        })?;
        let mut docs = Vec::new();
        for row in rows {
            let (id, bytes, heads) = row?;
            docs.push(self.read_doc(read_id(&id)?, &bytes, &heads)?);
        }
        Ok(docs)
    }

    /// Every stored document, ordered by last write (newest first), without loading any.
    pub fn summaries(&self) -> Result<Vec<DocSummary>, StoreError> {
        let mut statement = self
            .db
            .prepare("SELECT id, kind, dirty, updated_at FROM docs ORDER BY updated_at DESC, id")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, Option<String>>(1)?,
                row.get::<_, bool>(2)?,
                row.get::<_, Option<i64>>(3)?,
            ))
        })?;
        let mut summaries = Vec::new();
        for row in rows {
            let (id, kind, pending, updated_at) = row?;
            summaries.push(DocSummary { id: read_id(&id)?, kind, pending, updated_at });
        }
        Ok(summaries)
    }

    /// Stores the outcome of one sync round in one transaction: the touched documents, the
    /// evicted ones deleted, the new cursor and the time of the round.
    ///
    /// Either all of it is stored or none of it, so the cursor never moves past changes whose
    /// documents were not stored.
    pub fn commit_round<'a>(
        &mut self,
        touched: impl IntoIterator<Item = &'a mut DeviceDoc>,
        evicted: &[DocumentId],
        cursor: u64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let cursor = i64::try_from(cursor)
            .map_err(|_| StoreError::Corrupt(format!("cursor {cursor} does not fit SQLite")))?;
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for device_doc in touched {
            save_doc(&tx, device_doc, now_ms)?;
        }
        for doc_id in evicted {
            tx.execute("DELETE FROM docs WHERE id = ?1", [doc_id.as_bytes()])?;
        }
        set_meta_int(&tx, "cursor", cursor)?;
        set_meta_int(&tx, "last_sync", now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Stores a re-fork in one transaction: `new_actor` becomes the actor of every later change
    /// (meta and enrollment), the refused changes of each document are appended to
    /// `refused_changes` with `reason` (never deleted), and the re-forked documents are saved.
    pub fn store_refork<'a>(
        &mut self,
        new_actor: &ActorId,
        reforked: impl IntoIterator<Item = (&'a mut DeviceDoc, &'a [Change])>,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut enrollment = self.enrollment()?;
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        set_meta(&tx, "actor", &new_actor.to_bytes())?;
        if let Some(enrollment) = &mut enrollment {
            enrollment.actor = new_actor.to_hex_string();
            set_meta(&tx, "enrollment", &json_text(enrollment))?;
        }
        for (device_doc, refused) in reforked {
            for change in refused {
                tx.execute(
                    "INSERT INTO refused_changes (doc_id, hash, bytes, reason, at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        device_doc.id().as_bytes(),
                        &change.hash().0[..],
                        change.raw_bytes(),
                        reason,
                        now_ms
                    ],
                )?;
            }
            save_doc(&tx, device_doc, now_ms)?;
        }
        tx.commit()?;
        self.actor = new_actor.clone();
        Ok(())
    }

    /// How many changes the server refused and the device keeps in `refused_changes`.
    pub fn refused_count(&self) -> Result<u64, StoreError> {
        let count: i64 =
            self.db.query_row("SELECT COUNT(*) FROM refused_changes", [], |row| row.get(0))?;
        Ok(u64::try_from(count).expect("counts are never negative"))
    }

    /// Copies evidence bytes into `<home>/blobs/<sha256>` while hashing them, and records the
    /// blob as not uploaded yet.
    ///
    /// The bytes are streamed, so a long video needs no more memory than a photo; they are
    /// written to a temporary file, flushed to disk and renamed, so a crash never leaves a
    /// blob whose content does not match its name.
    pub fn import_blob(&self, source: &Path) -> Result<BlobRef, StoreError> {
        let blobs_dir = self.home.join("blobs");
        fs::create_dir_all(&blobs_dir).map_err(io_error(&blobs_dir))?;
        let incoming = blobs_dir.join(format!(".incoming-{}", uuid::Uuid::new_v4().simple()));
        let copied = copy_hashing(source, &incoming);
        let blob = match copied {
            Ok(blob) => blob,
            Err(error) => {
                // The partial copy is worthless; the error that matters is the one returned.
                let _ = fs::remove_file(&incoming);
                return Err(error);
            }
        };
        let stored = blobs_dir.join(&blob.sha256);
        fs::rename(&incoming, &stored).map_err(io_error(&stored))?;
        File::open(&blobs_dir).and_then(|dir| dir.sync_all()).map_err(io_error(&blobs_dir))?;
        let size = i64::try_from(blob.size)
            .map_err(|_| StoreError::Corrupt(format!("blob of {} bytes", blob.size)))?;
        self.db.execute(
            "INSERT OR IGNORE INTO blobs (sha256, size, uploaded) VALUES (?1, ?2, 0)",
            params![blob.sha256, size],
        )?;
        Ok(blob)
    }

    /// Every blob not uploaded yet, in the order they were imported.
    pub fn pending_blobs(&self) -> Result<Vec<BlobRef>, StoreError> {
        let mut statement =
            self.db.prepare("SELECT sha256, size FROM blobs WHERE uploaded = 0 ORDER BY rowid")?;
        let rows =
            statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
        let mut blobs = Vec::new();
        for row in rows {
            let (sha256, size) = row?;
            let size = u64::try_from(size)
                .map_err(|_| StoreError::Corrupt(format!("blob {sha256} of {size} bytes")))?;
            blobs.push(BlobRef { sha256, size });
        }
        Ok(blobs)
    }

    /// Records that the server holds the whole blob; it is not uploaded again. The bytes stay.
    pub fn mark_blob_uploaded(&self, sha256: &str) -> Result<(), StoreError> {
        self.db.execute("UPDATE blobs SET uploaded = 1 WHERE sha256 = ?1", [sha256])?;
        Ok(())
    }

    /// The evidence bytes named `sha256`, opened for reading; `None` when the device does not
    /// hold them.
    pub fn open_blob(&self, sha256: &str) -> Result<Option<File>, StoreError> {
        // The name is a lowercase hex hash, never a path.
        if !is_sha256_hex(sha256) {
            return Ok(None);
        }
        let path = self.home.join("blobs").join(sha256);
        match File::open(&path) {
            Ok(file) => Ok(Some(file)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// How many documents and blobs the replica holds and how many are pending.
    pub fn counts(&self) -> Result<ReplicaCounts, StoreError> {
        let (documents, pending_documents) =
            self.db.query_row("SELECT COUNT(*), COALESCE(SUM(dirty), 0) FROM docs", [], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })?;
        let pending_blobs: i64 =
            self.db
                .query_row("SELECT COUNT(*) FROM blobs WHERE uploaded = 0", [], |row| row.get(0))?;
        let count = |value: i64| u64::try_from(value).expect("counts are never negative");
        Ok(ReplicaCounts {
            documents: count(documents),
            pending_documents: count(pending_documents),
            pending_blobs: count(pending_blobs),
        })
    }

    fn read_doc(
        &self,
        doc_id: DocumentId,
        bytes: &[u8],
        heads: &[u8],
    ) -> Result<DeviceDoc, StoreError> {
        let corrupt =
            |error: ReplicaError| StoreError::Corrupt(format!("document {doc_id}: {error}"));
        DeviceDoc::load(doc_id, bytes, decode_heads(doc_id, heads)?, &self.actor).map_err(corrupt)
    }

    fn meta_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let text: Option<String> = self
            .db
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| row.get(0))
            .optional()?;
        text.map(|text| {
            serde_json::from_str(&text)
                .map_err(|error| StoreError::Corrupt(format!("stored {key}: {error}")))
        })
        .transpose()
    }

    fn meta_int(&self, key: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .db
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| row.get(0))
            .optional()?)
    }
}

fn migrate(db: &mut Connection) -> Result<(), StoreError> {
    // Immediate, so that two processes opening a fresh home cannot both apply a migration.
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::NewerSchema { found: version, known: MIGRATIONS.len() });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(migration)?;
        let version = i64::try_from(index + 1).expect("a handful of migrations");
        tx.pragma_update(None, "user_version", version)?;
    }
    tx.commit()?;
    Ok(())
}

fn save_doc(db: &Connection, device_doc: &mut DeviceDoc, now_ms: i64) -> Result<(), StoreError> {
    let kind = device_doc.kind().map(RecordKind::as_str);
    let heads = encode_heads(device_doc.synced_heads());
    let dirty = device_doc.has_pending();
    db.execute(
        "INSERT INTO docs (id, kind, bytes, synced_heads, dirty, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, bytes = excluded.bytes,
             synced_heads = excluded.synced_heads, dirty = excluded.dirty,
             updated_at = excluded.updated_at",
        params![device_doc.id().as_bytes(), kind, device_doc.save(), heads, dirty, now_ms],
    )?;
    Ok(())
}

fn store_master_data(
    db: &Connection,
    master_data: &serde_json::Value,
    master_data_jwt: Option<&str>,
) -> Result<(), StoreError> {
    set_meta(db, "master_data", &master_data.to_string())?;
    match master_data_jwt {
        Some(jwt) => set_meta(db, "master_data_jwt", &jwt)?,
        None => {
            db.execute("DELETE FROM meta WHERE key = 'master_data_jwt'", [])?;
        }
    }
    Ok(())
}

fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("stored identity serialises to JSON")
}

fn set_meta(db: &Connection, key: &str, value: &dyn rusqlite::ToSql) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn set_meta_int(db: &Connection, key: &str, value: i64) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn read_id(bytes: &[u8]) -> Result<DocumentId, StoreError> {
    DocumentId::try_from_slice(bytes).map_err(|error| StoreError::Corrupt(error.to_string()))
}

fn encode_heads(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|hash| hash.0).collect()
}

fn decode_heads(doc_id: DocumentId, bytes: &[u8]) -> Result<Vec<ChangeHash>, StoreError> {
    let chunks = bytes.chunks_exact(HASH_LEN);
    if !chunks.remainder().is_empty() {
        return Err(StoreError::Corrupt(format!(
            "document {doc_id}: synced heads of {} bytes are not whole hashes",
            bytes.len()
        )));
    }
    Ok(chunks
        .map(|chunk| ChangeHash(chunk.try_into().expect("chunks_exact yields whole hashes")))
        .collect())
}

/// Streams `source` into a new file at `target`, hashing on the way, and flushes it to disk.
fn copy_hashing(source: &Path, target: &Path) -> Result<BlobRef, StoreError> {
    let mut input = File::open(source).map_err(io_error(source))?;
    let output = File::create_new(target).map_err(io_error(target))?;
    let mut writer = HashingWriter { inner: output, hasher: Sha256::new() };
    let size = io::copy(&mut input, &mut writer).map_err(io_error(source))?;
    writer.inner.sync_all().map_err(io_error(target))?;
    Ok(BlobRef { sha256: hex::encode(writer.hasher.finalize()), size })
}

/// Whether `text` is a SHA-256 in lowercase hex, the way blobs are named.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// A writer that hashes what passes through it.
struct HashingWriter {
    inner: File,
    hasher: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}
