//! Opening SQLite connections with the pragmas the store relies on, and the schema migrations.
//!
//! Migrations are versioned in code: migration `n` (1-based) brings `PRAGMA user_version` from
//! `n - 1` to `n` inside one transaction, so a crash mid-migration leaves the previous version.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::store::StoreError;

/// How long a connection waits for a lock held by another connection before giving up with
/// `SQLITE_BUSY`. Only checkpoints and other processes can hold one, since the store has a
/// single writer connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the writer waits for a lock before one attempt to begin a transaction gives up;
/// the writer retries a few times (`store::writer`) before answering `busy`.
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// Each migration's SQL, in order; never edit a released entry, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the append-only change log and the document table.
    r"
    CREATE TABLE changes (
        feed_seq INTEGER PRIMARY KEY AUTOINCREMENT,
        hash BLOB NOT NULL UNIQUE,
        doc_id BLOB NOT NULL,
        actor BLOB NOT NULL,
        seq INTEGER NOT NULL,
        deps BLOB NOT NULL,
        bytes BLOB NOT NULL,
        message TEXT,
        device TEXT,
        officer TEXT,
        certificate TEXT,
        device_time INTEGER,
        received_at INTEGER NOT NULL,
        UNIQUE (doc_id, actor, seq)
    );
    CREATE INDEX changes_doc_feed ON changes (doc_id, feed_seq);
    CREATE TRIGGER changes_no_update BEFORE UPDATE ON changes
    BEGIN
        SELECT RAISE(ABORT, 'changes is append-only');
    END;
    CREATE TRIGGER changes_no_delete BEFORE DELETE ON changes
    BEGIN
        SELECT RAISE(ABORT, 'changes is append-only');
    END;

    CREATE TABLE documents (
        id BLOB PRIMARY KEY CHECK (length(id) = 16),
        kind TEXT,
        matter TEXT,
        township TEXT,
        party_key TEXT,
        status TEXT,
        heads BLOB NOT NULL,
        snapshot BLOB,
        snapshot_seq INTEGER,
        feed_seq INTEGER NOT NULL,
        change_count INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX documents_feed_seq ON documents (feed_seq);
    ",
    // 2: the registry (identity and scope), with its audit log, and the feed-by-township index.
    r"
    CREATE TABLE agencies (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        code TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('county_dept', 'township', 'justice_bureau')),
        parent TEXT REFERENCES agencies (id),
        hotline TEXT
    );
    CREATE TABLE matters (
        code TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        sector TEXT NOT NULL,
        legal_basis TEXT NOT NULL,
        penalty_standard TEXT NOT NULL,
        allowed_actions TEXT NOT NULL,
        hearing_threshold_person INTEGER,
        hearing_threshold_org INTEGER
    );
    CREATE TABLE entrustments (
        id TEXT PRIMARY KEY,
        entrusting_agency TEXT NOT NULL REFERENCES agencies (id),
        township TEXT NOT NULL REFERENCES agencies (id),
        legal_basis TEXT NOT NULL,
        valid_from INTEGER NOT NULL,
        valid_to INTEGER NOT NULL,
        status TEXT NOT NULL
    );
    CREATE INDEX entrustments_township ON entrustments (township);
    CREATE TABLE entrustment_items (
        entrustment TEXT NOT NULL REFERENCES entrustments (id),
        matter TEXT NOT NULL REFERENCES matters (code),
        actions TEXT NOT NULL,
        PRIMARY KEY (entrustment, matter)
    );
    CREATE TABLE officers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        township TEXT REFERENCES agencies (id),
        role TEXT NOT NULL CHECK (role IN ('officer', 'supervisor', 'admin'))
    );
    CREATE TABLE certificates (
        cert_no TEXT PRIMARY KEY,
        officer TEXT NOT NULL REFERENCES officers (id),
        issuer TEXT NOT NULL,
        sectors TEXT NOT NULL,
        territory TEXT NOT NULL,
        valid_from INTEGER NOT NULL,
        valid_to INTEGER NOT NULL,
        status TEXT NOT NULL,
        rev INTEGER NOT NULL
    );
    CREATE INDEX certificates_officer ON certificates (officer);
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        officer TEXT NOT NULL REFERENCES officers (id),
        jkt TEXT NOT NULL UNIQUE,
        jwk TEXT NOT NULL,
        name TEXT,
        status TEXT NOT NULL,
        enrolled_at INTEGER NOT NULL
    );
    CREATE TABLE actors (
        actor BLOB PRIMARY KEY CHECK (length(actor) = 16),
        device TEXT NOT NULL REFERENCES devices (id),
        officer TEXT NOT NULL REFERENCES officers (id),
        created_at INTEGER NOT NULL,
        retired_at INTEGER
    );
    CREATE INDEX actors_device ON actors (device);
    CREATE TABLE enrollment_codes (
        code_hash TEXT PRIMARY KEY,
        officer TEXT NOT NULL REFERENCES officers (id),
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        used_by_device TEXT REFERENCES devices (id)
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor_officer TEXT NOT NULL,
        action TEXT NOT NULL,
        object_kind TEXT NOT NULL,
        object_id TEXT NOT NULL,
        before TEXT,
        after TEXT
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'audit is append-only');
    END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'audit is append-only');
    END;
    CREATE INDEX documents_township ON documents (township, feed_seq);
    ",
    // 3: issue 4: document quota, idempotent sync answers, evidence blobs and their documents,
    // and the documents each device holds (for eviction).
    r"
    ALTER TABLE documents ADD COLUMN change_bytes INTEGER NOT NULL DEFAULT 0;
    UPDATE documents SET change_bytes =
        (SELECT COALESCE(SUM(length(bytes)), 0) FROM changes WHERE changes.doc_id = documents.id);

    CREATE TABLE idempotency (
        device TEXT NOT NULL,
        key TEXT NOT NULL,
        request_sha256 BLOB NOT NULL,
        status INTEGER NOT NULL,
        response BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (device, key)
    );
    CREATE INDEX idempotency_created_at ON idempotency (created_at);

    CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY CHECK (length(sha256) = 64),
        size INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        device TEXT,
        officer TEXT
    );
    CREATE TRIGGER blobs_no_update BEFORE UPDATE ON blobs
    BEGIN
        SELECT RAISE(ABORT, 'blobs are never changed');
    END;
    CREATE TRIGGER blobs_no_delete BEFORE DELETE ON blobs
    BEGIN
        SELECT RAISE(ABORT, 'blobs are never deleted');
    END;

    CREATE TABLE document_blobs (
        doc_id BLOB NOT NULL,
        sha256 TEXT NOT NULL,
        PRIMARY KEY (doc_id, sha256)
    );
    CREATE INDEX document_blobs_sha256 ON document_blobs (sha256);

    CREATE TABLE device_documents (
        device TEXT NOT NULL,
        doc_id BLOB NOT NULL,
        PRIMARY KEY (device, doc_id)
    );
    ",
    // 4: changes a device made to a document it can no longer see (its officer moved), kept
    // for review rather than merged or dropped.
    "
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        doc_id BLOB NOT NULL,
        hash BLOB NOT NULL,
        bytes BLOB NOT NULL,
        device TEXT,
        officer TEXT,
        certificate TEXT,
        reason TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        UNIQUE (doc_id, hash)
    );
    CREATE TRIGGER quarantine_no_update BEFORE UPDATE ON quarantine
    BEGIN
        SELECT RAISE(ABORT, 'quarantine is append-only');
    END;
    CREATE TRIGGER quarantine_no_delete BEFORE DELETE ON quarantine
    BEGIN
        SELECT RAISE(ABORT, 'quarantine is append-only');
    END;
    ",
    // 5: issue 5, review: the projections the supervisor's queue filters on (conflicting
    // fields, the server-written review state and the heads its last review change left, the
    // finding codes) and the official case numbers handed out at filing.
    "
    ALTER TABLE documents ADD COLUMN conflicts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE documents ADD COLUMN review_state TEXT NOT NULL DEFAULT 'pending';
    ALTER TABLE documents ADD COLUMN review_heads BLOB;
    CREATE INDEX documents_review_state ON documents (review_state, feed_seq);

    CREATE TABLE document_findings (
        doc_id BLOB NOT NULL,
        code TEXT NOT NULL,
        PRIMARY KEY (doc_id, code)
    );
    CREATE INDEX document_findings_code ON document_findings (code, doc_id);

    CREATE TABLE case_numbers (
        township TEXT NOT NULL,
        year INTEGER NOT NULL,
        n INTEGER NOT NULL,
        doc_id BLOB NOT NULL UNIQUE,
        case_no TEXT NOT NULL UNIQUE,
        PRIMARY KEY (township, year, n)
    );
    ",
    // 6: merged changes a supervisor must look at (SECURITY.md §a): `needs_review` for edits
    // uploaded after the certificate was withdrawn but made before it, `clock_suspect` for a
    // device time outside the change's causal bounds. Append-only, like the change log.
    "
    CREATE TABLE review_flags (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        doc_id BLOB NOT NULL,
        hash BLOB NOT NULL,
        code TEXT NOT NULL,
        detail TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (doc_id, hash, code)
    );
    CREATE TRIGGER review_flags_no_update BEFORE UPDATE ON review_flags
    BEGIN
        SELECT RAISE(ABORT, 'review_flags is append-only');
    END;
    CREATE TRIGGER review_flags_no_delete BEFORE DELETE ON review_flags
    BEGIN
        SELECT RAISE(ABORT, 'review_flags is append-only');
    END;
    ",
    // 7: issue 6, reports: the open statutory deadlines of each case, its procedure and key
    // dates, and the officers each record names, projected at every merge (`store::deadlines`).
    "
    CREATE TABLE document_deadlines (
        doc_id BLOB NOT NULL,
        code TEXT NOT NULL,
        from_event TEXT NOT NULL,
        due INTEGER NOT NULL,
        provisional INTEGER NOT NULL,
        PRIMARY KEY (doc_id, code)
    );
    CREATE INDEX document_deadlines_due ON document_deadlines (due, doc_id);

    CREATE TABLE document_cases (
        doc_id BLOB PRIMARY KEY,
        procedure TEXT NOT NULL,
        name_agency TEXT NOT NULL,
        filed_at INTEGER,
        decided_at INTEGER
    );

    CREATE TABLE document_officers (
        doc_id BLOB NOT NULL,
        officer TEXT NOT NULL,
        PRIMARY KEY (doc_id, officer)
    );
    CREATE INDEX document_officers_officer ON document_officers (officer, doc_id);
    ", // 8: issue 5, document numbers (DOMAIN.md §3): the blocks leased to devices, one row per
    // lease, and the numbers the merged case files use or void, projected at every merge
    // (`store::numbers`).
    "
    CREATE TABLE number_blocks (
        id TEXT PRIMARY KEY,
        name_agency TEXT NOT NULL,
        agency_code TEXT NOT NULL,
        doc_type TEXT NOT NULL,
        year INTEGER NOT NULL,
        first INTEGER NOT NULL,
        last INTEGER NOT NULL,
        device TEXT NOT NULL,
        template TEXT NOT NULL,
        leased_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        UNIQUE (name_agency, doc_type, year, first)
    );

    CREATE TABLE document_numbers (
        doc_id BLOB NOT NULL,
        block TEXT NOT NULL,
        serial INTEGER NOT NULL,
        number TEXT NOT NULL,
        void_reason TEXT
    );
    CREATE INDEX document_numbers_doc ON document_numbers (doc_id);
    CREATE INDEX document_numbers_block ON document_numbers (block, serial);
    CREATE INDEX document_numbers_number ON document_numbers (number);
    ",
    // 9: issue 6, the quarterly case report (DOMAIN.md §4.1): the case flags its case list
    // reads, projected at every merge (`store::deadlines`), and the reports themselves,
    // immutable snapshots whose submission and acknowledgement are each recorded once.
    "
    ALTER TABLE document_cases ADD COLUMN issued_at INTEGER;
    ALTER TABLE document_cases ADD COLUMN hearing INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE document_cases ADD COLUMN legal_review INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE document_cases ADD COLUMN filed_with_agency INTEGER NOT NULL DEFAULT 0;

    CREATE TABLE quarterly_reports (
        id TEXT PRIMARY KEY,
        department TEXT NOT NULL,
        township TEXT NOT NULL,
        quarter TEXT NOT NULL,
        generated_at INTEGER NOT NULL,
        generated_by TEXT NOT NULL,
        body TEXT NOT NULL,
        submitted_at INTEGER,
        submitted_by TEXT,
        acknowledged_at INTEGER,
        acknowledged_by TEXT
    );
    CREATE INDEX quarterly_reports_quarter ON quarterly_reports (department, township, quarter);
    CREATE TRIGGER quarterly_reports_no_delete BEFORE DELETE ON quarterly_reports
    BEGIN
        SELECT RAISE(ABORT, 'quarterly_reports is append-only');
    END;
    CREATE TRIGGER quarterly_reports_snapshot_fixed BEFORE UPDATE ON quarterly_reports
    WHEN NEW.id IS NOT OLD.id OR NEW.department IS NOT OLD.department
        OR NEW.township IS NOT OLD.township OR NEW.quarter IS NOT OLD.quarter
        OR NEW.generated_at IS NOT OLD.generated_at OR NEW.generated_by IS NOT OLD.generated_by
        OR NEW.body IS NOT OLD.body
    BEGIN
        SELECT RAISE(ABORT, 'a quarterly report snapshot is immutable');
    END;
    CREATE TRIGGER quarterly_reports_recorded_once BEFORE UPDATE ON quarterly_reports
    WHEN (OLD.submitted_at IS NOT NULL AND (NEW.submitted_at IS NOT OLD.submitted_at
            OR NEW.submitted_by IS NOT OLD.submitted_by))
        OR (OLD.acknowledged_at IS NOT NULL AND (NEW.acknowledged_at IS NOT OLD.acknowledged_at
            OR NEW.acknowledged_by IS NOT OLD.acknowledged_by))
        OR (NEW.acknowledged_at IS NOT NULL AND NEW.submitted_at IS NULL)
    BEGIN
        SELECT RAISE(ABORT, 'submission and acknowledgement are recorded once, in order');
    END;
    ",
    // 10: issue 5, sealing: why a record is sealed besides approval (`signed`: an inspection
    // carries a signature; `served`: a case's decision was served), NULL when it is not.
    // Projected at every merge; a record merged before this migration fills it in at its next.
    r"
    ALTER TABLE documents ADD COLUMN sealed TEXT;
    ",
    // 11: issue 6, the assessment's timeliness and the remaining alerts, projected at every
    // merge (`store::deadlines`): a case's timed steps with their due times (sync-core
    // `deadlines::timeliness`), how often its lead was passed on (推诿) and whether it imposed a
    // fine (一事不再罚; never an amount), and every record's handling window (duplicate
    // enforcement), with the index that finds a party's other records; and a case's decided
    // penalty for the quarterly case list only, in a table of its own that the assessment never
    // reads (Art. 74). A record merged before this migration fills them in at its next merge.
    r"
    ALTER TABLE document_cases ADD COLUMN lead_at INTEGER;
    ALTER TABLE document_cases ADD COLUMN filing_due INTEGER;
    ALTER TABLE document_cases ADD COLUMN decision_due INTEGER;
    ALTER TABLE document_cases ADD COLUMN service_due INTEGER;
    ALTER TABLE document_cases ADD COLUMN served_at INTEGER;
    ALTER TABLE document_cases ADD COLUMN passed_on INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE document_cases ADD COLUMN fined INTEGER NOT NULL DEFAULT 0;

    CREATE TABLE document_windows (
        doc_id BLOB PRIMARY KEY,
        handled_from INTEGER NOT NULL,
        handled_to INTEGER
    );
    CREATE INDEX documents_party_matter ON documents (party_key, matter);

    CREATE TABLE document_penalties (
        doc_id BLOB PRIMARY KEY,
        kinds TEXT NOT NULL,
        fine_yuan INTEGER NOT NULL,
        confiscation_yuan INTEGER NOT NULL
    );
    ",
    // 12: issue 7, a stored sync answer may keep its feed page as the bounds it is read from
    // (`store::idempotency::FeedBounds`) instead of its bytes: the page is read after COMMIT on
    // a pooled reader, off the writer thread. NULL: `response` is the whole answer. And the
    // visibility under which every document a device holds is visible
    // (`store::device_documents`), so that a sync looks for documents to evict only when the
    // device's visibility changed.
    r"
    ALTER TABLE idempotency ADD COLUMN feed BLOB;

    CREATE TABLE device_visibility (
        device TEXT PRIMARY KEY,
        all_docs INTEGER NOT NULL,
        township TEXT
    );
    ",
    // 13: issue 6, the findings a record raised and those it resolved, for the quarterly case
    // list (DOMAIN.md §4.1): a finding code is raised at the first merge that finds it and
    // resolved at the first merge that no longer does (`store::findings::project`); raised
    // again, it is open again. A record merged before this migration starts its history at its
    // next merge.
    r"
    CREATE TABLE document_finding_history (
        doc_id BLOB NOT NULL,
        code TEXT NOT NULL,
        raised_at INTEGER NOT NULL,
        resolved_at INTEGER,
        PRIMARY KEY (doc_id, code)
    );
    ",
    // 14: issue 7, each document as the upload that created it left it, saved once, so that
    // the feed sends a device that has none of its changes the whole document instead of its
    // changes one by one (`store::creations`). Written in the transaction that appends those
    // changes and never changed after, so that a feed page read again from its bounds
    // (`store::idempotency::FeedBounds`) is the same, byte for byte. A document created before
    // this migration has no row and is fed change by change.
    r"
    CREATE TABLE creations (
        first_feed_seq INTEGER PRIMARY KEY,
        last_feed_seq INTEGER NOT NULL,
        doc_id BLOB NOT NULL UNIQUE,
        bytes BLOB NOT NULL
    );
    CREATE TRIGGER creations_no_update BEFORE UPDATE ON creations
    BEGIN
        SELECT RAISE(ABORT, 'creations is append-only');
    END;
    CREATE TRIGGER creations_no_delete BEFORE DELETE ON creations
    BEGIN
        SELECT RAISE(ABORT, 'creations is append-only');
    END;
    ",
    // 15: issue 7, a change hash is unique per document, and a root change (no dependencies)
    // unique over all documents, instead of every hash over all documents. The index of every
    // hash took one random leaf page per change, so a commit wrote more of it the larger the
    // log (scenario C's in-process floor 9.5 s against 8.2 s without it). Refusing one change
    // under two documents needs no more: a document holds no change without its dependencies
    // and has exactly one root (`merge::merge_changes`), so two documents sharing any change
    // share their root. SQLite cannot drop a column's UNIQUE, so the table is rebuilt, rows and
    // feed sequences unchanged; dropping a table fires no DELETE trigger.
    r"
    CREATE TABLE changes_rebuilt (
        feed_seq INTEGER PRIMARY KEY AUTOINCREMENT,
        hash BLOB NOT NULL,
        doc_id BLOB NOT NULL,
        actor BLOB NOT NULL,
        seq INTEGER NOT NULL,
        deps BLOB NOT NULL,
        bytes BLOB NOT NULL,
        message TEXT,
        device TEXT,
        officer TEXT,
        certificate TEXT,
        device_time INTEGER,
        received_at INTEGER NOT NULL,
        UNIQUE (doc_id, actor, seq)
    );
    INSERT INTO changes_rebuilt (feed_seq, hash, doc_id, actor, seq, deps, bytes, message,
        device, officer, certificate, device_time, received_at)
    SELECT feed_seq, hash, doc_id, actor, seq, deps, bytes, message, device, officer,
        certificate, device_time, received_at
    FROM changes ORDER BY feed_seq;
    DROP TABLE changes;
    ALTER TABLE changes_rebuilt RENAME TO changes;
    CREATE INDEX changes_doc_feed ON changes (doc_id, feed_seq);
    CREATE UNIQUE INDEX changes_doc_hash ON changes (doc_id, hash);
    CREATE UNIQUE INDEX changes_root ON changes (hash) WHERE deps = x'';
    CREATE TRIGGER changes_no_update BEFORE UPDATE ON changes
    BEGIN
        SELECT RAISE(ABORT, 'changes is append-only');
    END;
    CREATE TRIGGER changes_no_delete BEFORE DELETE ON changes
    BEGIN
        SELECT RAISE(ABORT, 'changes is append-only');
    END;
    ",
    // 16: issue 7, a document's scope (kind, matter, township) and stored change bytes read
    // from an index by its id. A `documents` row holds the document's snapshot, so reading
    // them from the row took one page per document, rarely in the page cache: the feed looks
    // each document's township up once per page, and fifty devices reading 10,000 documents
    // spent a third of their feed reads there (scenario C). Every merge rewrites the row's
    // entry anyway (its upsert sets these columns), so holding the change bytes costs nothing.
    r"
    CREATE INDEX documents_scope ON documents (id, kind, matter, township, change_bytes);
    ",
];

/// Prepared statements kept per connection. rusqlite's default of 16 is fewer than the
/// distinct statements one merge runs per document (load, quota, insert, row, findings, blobs,
/// device documents), so its LRU evicted each of them before its next use and every
/// `prepare_cached` compiled its SQL again; the store has under 100 statements in all.
const STATEMENT_CACHE_CAPACITY: usize = 128;

/// WAL pages after which a commit copies the WAL back into the database (SQLite's automatic
/// checkpoint, run by the writer inside that `COMMIT`): about 32 MB. SQLite's default of 1,000
/// pages checkpointed about every 4 MB, copying the same hot index pages back again and again,
/// and checkpoints were a fifth of the writer's time in scenario C. Four runs of C each,
/// interleaved: 8.50-8.70 s at 8,000 pages against 8.80-9.10 s at 1,000, server CPU
/// 15.8-16.3 s against 16.2-16.8 s. Session 3 dropped 8,192 pages because B, the resync after
/// A, then paid for the checkpoint A left pending on its one writer; now that resyncs merge on
/// the request threads, five interleaved runs each gave B 0.097 s against 0.105 s. A commit is
/// as durable either way: its WAL frames are synced before it is acknowledged.
const WAL_CHECKPOINT_PAGES: i64 = 8_000;

/// The size the WAL file is cut back to when it starts over: readers holding old snapshots can
/// make it grow past [`WAL_CHECKPOINT_PAGES`] (61 MB while 100,000 documents were loaded), and
/// without a limit the file keeps its largest size for good.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Opens (creating it if needed) the database for writing and brings its schema up to date.
///
/// WAL lets readers proceed while the writer commits; `synchronous=FULL` makes a commit
/// durable across power loss before the server acknowledges it (SECURITY.md T16).
pub(crate) fn open_writer(path: &Path, max_db_size: Option<u64>) -> Result<Connection, StoreError> {
    let mut connection = Connection::open(path)?;
    connection.busy_timeout(WRITER_BUSY_TIMEOUT)?;
    let journal_mode: String =
        connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Pragma { pragma: "journal_mode=WAL", actual: journal_mode });
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    connection.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    keep_statements(&connection)?;
    migrate(&mut connection)?;
    if let Some(max_db_size) = max_db_size {
        let page_size: i64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
        let pages = i64::try_from(max_db_size).unwrap_or(i64::MAX) / page_size.max(1);
        // SQLite keeps the limit at the current size when asked for less: the file never
        // shrinks, it only stops growing.
        connection.pragma_update(None, "max_page_count", pages.max(1))?;
    }
    Ok(connection)
}

/// Opens a read-only connection to a database the writer has already created and migrated.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    keep_statements(&connection)?;
    Ok(connection)
}

/// Makes a cached statement run as compiled, whatever its parameters.
///
/// Without the query planner stability guarantee SQLite marks a statement whose plan its
/// parameter might change (a join, or an `ORDER BY` beside a parameter in the `WHERE`, such as
/// an officer's certificates or a township's entrustments), and rusqlite clears a statement's
/// bindings when it returns to the cache, which expires a marked statement: it was compiled
/// again at every use. The writer ran both for every document it merged, and compiling them
/// was 7 % of its time in a first sync. The store never runs `ANALYZE`, and uses no
/// parameter in a `LIMIT`, a `LIKE` or against a partial index, so a plan chosen without the
/// values is the plan chosen with them.
fn keep_statements(connection: &Connection) -> Result<(), StoreError> {
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// Applies every migration the file has not seen yet, each in its own transaction.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    migrate_until(connection, MIGRATIONS.len())
}

/// Applies the migrations up to the `last`-th that the file has not seen yet.
fn migrate_until(connection: &mut Connection, last: usize) -> Result<(), StoreError> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = i64::try_from(MIGRATIONS.len()).expect("a handful of migrations");
    if version > known {
        return Err(StoreError::NewerSchema { found: version, supported: known });
    }
    let due = MIGRATIONS.iter().take(last);
    for (next_version, sql) in (1_i64..).zip(due).skip(usize::try_from(version).unwrap_or(0)) {
        let tx = connection.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", next_version)?;
        tx.commit()?;
        tracing::info!(version = next_version, "migrated database schema");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::params;
    use sync_core::ids::DocumentId;

    use super::*;
    use crate::store::{changes, documents};

    /// Appends one change row the way migration 1's columns take it.
    fn append(
        connection: &Connection,
        hash: u8,
        doc: u8,
        seq: i64,
        deps: &[u8],
    ) -> rusqlite::Result<usize> {
        connection.execute(
            "INSERT INTO changes (hash, doc_id, actor, seq, deps, bytes, received_at) \
             VALUES (?1, ?2, x'01', ?3, ?4, x'00', 0)",
            params![[hash; 32], [doc; 16], seq, deps],
        )
    }

    #[test]
    fn a_cached_statement_is_not_compiled_again_when_it_is_used_again() {
        // Arrange: a statement SQLite marks as depending on its parameter, used three times on
        // the store's connections and on a plain one.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fieldcase.db");
        let writer = open_writer(&path, None).unwrap();
        let reader = open_reader(&path).unwrap();
        let plain = Connection::open(&path).unwrap();
        let sql = "SELECT cert_no, officer FROM certificates WHERE officer = ?1 ORDER BY cert_no";
        let recompiled = |connection: &Connection| {
            for _ in 0..3 {
                let mut statement = connection.prepare_cached(sql).unwrap();
                statement.query_map(["o-1"], |_| Ok(())).unwrap().for_each(drop);
            }
            let statement = connection.prepare_cached(sql).unwrap();
            statement.get_status(rusqlite::StatementStatus::RePrepare)
        };

        // Act
        let (writer, reader, plain) =
            (recompiled(&writer), recompiled(&reader), recompiled(&plain));

        // Assert: without the guarantee SQLite compiles it again at every use.
        assert_eq!((writer, reader), (0, 0));
        assert!(plain > 0, "a plain connection recompiles it ({plain} times)");
    }

    #[test]
    fn a_documents_scope_is_read_from_its_covering_index_on_a_database_from_before_it() {
        // Arrange: a database at migration 15 holding one document.
        let doc_id = DocumentId::from_bytes([7; 16]);
        let id = *doc_id.as_bytes();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fieldcase.db");
        let mut connection = Connection::open(&path).unwrap();
        migrate_until(&mut connection, 15).unwrap();
        connection
            .execute(
                "INSERT INTO documents (id, kind, matter, township, heads, feed_seq, \
                 change_count, created_at, updated_at, change_bytes) \
                 VALUES (?1, 'inspection', 'M1', 't-1', x'', 1, 1, 0, 0, 42)",
                [id],
            )
            .unwrap();
        drop(connection);

        // Act
        let connection = open_writer(&path, None).unwrap();

        // Assert: the stored values, each read from the index alone.
        let scope = documents::stored_scope(&connection, doc_id).unwrap().unwrap();
        assert_eq!(
            (scope.kind.as_deref(), scope.matter.as_deref(), scope.township.as_deref()),
            (Some("inspection"), Some("M1"), Some("t-1"))
        );
        assert_eq!(documents::change_bytes(&connection, doc_id).unwrap(), 42);
        let queries: [(&str, &[&dyn rusqlite::ToSql]); 3] = [
            (documents::SCOPE_BY_ID, &[&id]),
            (documents::CHANGE_BYTES_BY_ID, &[&id]),
            (changes::IN_TOWNSHIP, &[&id, &"t-1"]),
        ];
        for (sql, parameters) in queries {
            let mut statement = connection.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = statement
                .query_map(parameters, |row| row.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let covering = plan.iter().any(|step| step.contains("COVERING INDEX documents_scope"));
            assert!(covering, "{sql}: {plan:?}");
        }
    }

    #[test]
    fn the_change_log_rebuilt_without_a_global_hash_index_keeps_its_rows_and_rules() {
        // Arrange: a log at migration 14 holding a root and a change after it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fieldcase.db");
        let mut connection = Connection::open(&path).unwrap();
        migrate_until(&mut connection, 14).unwrap();
        append(&connection, 1, 1, 1, &[]).unwrap();
        append(&connection, 2, 1, 2, &[1; 32]).unwrap();
        drop(connection);

        // Act
        let connection = open_writer(&path, None).unwrap();

        // Assert: rows and feed sequences as they were, the sequence going on after them.
        let rows: Vec<(i64, Vec<u8>)> = connection
            .prepare("SELECT feed_seq, hash FROM changes ORDER BY feed_seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, vec![(1, vec![1; 32]), (2, vec![2; 32])]);
        append(&connection, 3, 1, 3, &[2; 32]).unwrap();
        let last: i64 = connection
            .query_row("SELECT MAX(feed_seq) FROM changes", [], |row| row.get(0))
            .unwrap();
        assert_eq!(last, 3);
        // Still append-only.
        assert!(connection.execute("UPDATE changes SET seq = 9", []).is_err());
        assert!(connection.execute("DELETE FROM changes", []).is_err());
        // A root is stored once over all documents; any other change once per document.
        assert!(append(&connection, 1, 2, 1, &[]).is_err());
        assert!(append(&connection, 2, 1, 7, &[1; 32]).is_err());
        assert!(append(&connection, 2, 2, 2, &[1; 32]).is_ok());
    }
}
