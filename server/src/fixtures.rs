//! Test fixtures: record documents written the way a device writes them, their changes, a
//! device key that signs DPoP proofs, and a server state opened from a data directory.

use std::path::Path;

use automerge::{ActorId, AutoCommit, Change, ChangeHash};
use sync_core::edit::set_field;
use sync_core::ids::DocumentId;
use sync_core::protocol::DocUpload;
use sync_core::records::{InspectionRecord, Party, Site, create_document};
use tempfile::TempDir;

use crate::bootstrap;
use crate::state::AppState;
use crate::store::{DATABASE_FILE, Store};

/// A device's P-256 key, made with aws-lc-rs as the device CLI makes it.
pub(crate) struct TestDevice {
    encoding: jsonwebtoken::EncodingKey,
    jwk: jsonwebtoken::jwk::Jwk,
}

impl TestDevice {
    /// A fresh key.
    pub(crate) fn generate() -> Self {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generating a P-256 key");
        let encoding = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
        let jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, jsonwebtoken::Algorithm::ES256)
                .expect("a P-256 key has a JWK");
        Self { encoding, jwk }
    }

    /// The RFC 7638 thumbprint of the key.
    pub(crate) fn jkt(&self) -> String {
        let jwk = self.raw_header_json()["jwk"].clone();
        crate::auth::dpop::thumbprint(jwk["x"].as_str().expect("x"), jwk["y"].as_str().expect("y"))
    }

    /// The proof header: `typ` dpop+jwt, ES256, the public JWK.
    pub(crate) fn header(&self) -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("dpop+jwt".to_owned());
        header.jwk = Some(self.jwk.clone());
        header
    }

    /// The proof header as JSON, to tamper with.
    pub(crate) fn raw_header_json(&self) -> serde_json::Value {
        serde_json::to_value(self.header()).expect("a header serialises")
    }

    /// A fresh proof for one request.
    pub(crate) fn proof(
        &self,
        htm: &str,
        htu: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let jti = hex::encode(crate::auth::keys::random_bytes::<16>());
        let mut claims = serde_json::json!({
            "htm": htm, "htu": htu, "iat": jsonwebtoken::get_current_timestamp(), "jti": jti,
        });
        if let Some(token) = access_token {
            claims["ath"] = crate::auth::dpop::sha256_b64(token.as_bytes()).into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        self.proof_with(&self.header(), &claims)
    }

    /// A proof with any header and claims, signed by this key.
    pub(crate) fn proof_with(
        &self,
        header: &jsonwebtoken::Header,
        claims: &serde_json::Value,
    ) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("signing")
    }

    /// Signs any header JSON (including members the typed header cannot hold).
    pub(crate) fn sign_raw(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message =
            format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &self.encoding,
            jsonwebtoken::Algorithm::ES256,
        )
        .expect("signing");
        format!("{message}.{signature}")
    }
}

/// A store in a fresh temporary directory, kept alive by the returned guard.
pub(crate) fn temp_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let store = Store::open(&dir.path().join(DATABASE_FILE)).expect("opening the store");
    (dir, store)
}

/// The state of a `fieldcase-server --demo` started on `data_dir`, opened as `main` opens it:
/// the store, the key files (written on the first start) and the demo registry (seeded on the
/// first start only), so that dropping the state and calling this again is a restart that
/// keeps every token, key and change.
pub(crate) fn open_demo_state(data_dir: &Path) -> AppState {
    let store = Store::open(&data_dir.join(DATABASE_FILE)).expect("opening the store");
    let state = AppState::new(store, data_dir).expect("loading the server keys");
    bootstrap::prepare(&state, data_dir, true).expect("seeding the demo registry");
    state
}

/// A document id made from one repeated byte.
pub(crate) fn doc_id(byte: u8) -> DocumentId {
    DocumentId::from_bytes([byte; 16])
}

/// An actor id made from one repeated byte, as if registered to one device.
pub(crate) fn actor(byte: u8) -> ActorId {
    ActorId::from([byte; 16])
}

/// A new inspection record created on the device whose actor is `actor`, as one change.
pub(crate) fn new_inspection(actor: &ActorId, doc_id: DocumentId) -> AutoCommit {
    inspection_in(actor, doc_id, "M1", "")
}

/// A new inspection record of `matter` in `township`, as one change.
pub(crate) fn inspection_in(
    actor: &ActorId,
    doc_id: DocumentId,
    matter: &str,
    township: &str,
) -> AutoCommit {
    let party = Party {
        kind: "legal".to_owned(),
        name: "镇南五金店".to_owned(),
        id_number: "91110000MA01234567".to_owned(),
    };
    let site =
        Site { name: "五金店".to_owned(), address: "镇南路 8 号".to_owned(), gnss: None };
    let mut record = InspectionRecord::new(doc_id.to_string(), matter.to_owned(), party, site, 0);
    township.clone_into(&mut record.township);
    create_document(actor, &record, 1_700_000_000_000).expect("creating the record")
}

/// Sets the inspection outcome and commits it as one change.
pub(crate) fn set_outcome(doc: &mut AutoCommit, outcome: &str) {
    set_field(doc, "outcome", outcome).expect("outcome is a text field");
    doc.commit();
}

/// Change chunks as a device puts them on the wire.
pub(crate) fn chunks(changes: &mut [Change]) -> Vec<Vec<u8>> {
    changes.iter_mut().map(|change| change.bytes().into_owned()).collect()
}

/// A new document as a device uploads it: one uncompressed document chunk, no base heads.
pub(crate) fn document_chunk_upload(doc_id: DocumentId, doc: &mut AutoCommit) -> DocUpload {
    DocUpload {
        doc_id,
        base_heads: vec![],
        heads: doc.get_heads().iter().map(|hash| hash.0).collect(),
        changes: vec![doc.save_nocompress()],
    }
}

/// The upload of a document's changes after `since`.
pub(crate) fn upload(doc_id: DocumentId, doc: &mut AutoCommit, since: &[ChangeHash]) -> DocUpload {
    DocUpload {
        doc_id,
        base_heads: since.iter().map(|hash| hash.0).collect(),
        heads: doc.get_heads().iter().map(|hash| hash.0).collect(),
        changes: chunks(&mut doc.get_changes(since)),
    }
}
