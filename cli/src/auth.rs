//! Device identity: the P-256 device key, its DPoP proofs (RFC 9449) and the authenticated
//! [`Session`] every server call of an enrolled device goes through.
//!
//! The device key is made once, at `fieldcase enroll`, and kept as PKCS#8 DER in
//! `<home>/device-key.der` (mode 0600). It is the device's only credential: with it the device
//! proves possession to mint a short access token whenever it needs one, so no password or
//! refresh token is stored (DESIGN.md §7, docs/identity.md).

mod session;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

pub use self::session::{MasterDataUpdate, SESSION_FILE, Sent, Session};

/// File name of the device key under the home.
pub const DEVICE_KEY_FILE: &str = "device-key.der";

/// A failure to load, make or store device credentials.
#[derive(Debug, Error)]
pub enum AuthError {
    /// The home holds no device key: the device never enrolled.
    #[error("this device is not enrolled: no device key in {0}; run fieldcase enroll --code CODE")]
    NoKey(PathBuf),
    /// The stored key is not a P-256 PKCS#8 key.
    #[error("the device key is not a P-256 PKCS#8 key: {0}")]
    InvalidKey(String),
    /// A credential file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

impl AuthError {
    /// The stable snake_case code `--json` reports for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoKey(_) => "not_enrolled",
            Self::InvalidKey(_) => "invalid_device_key",
            Self::Io { .. } => "io_error",
        }
    }
}

/// The device's ECDSA P-256 key pair, which signs every DPoP proof.
pub struct DeviceKey {
    pkcs8: Vec<u8>,
    encoding: EncodingKey,
    // Invariant: x and y are the unpadded base64url of the 32-byte public coordinates.
    x: String,
    y: String,
    header_jwk: Jwk,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key never reaches logs or error messages.
        formatter.debug_struct("DeviceKey").field("jkt", &self.thumbprint()).finish_non_exhaustive()
    }
}

impl DeviceKey {
    /// A fresh random key from the operating system's random source.
    pub fn generate() -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("the system random source is available");
        Self::from_pkcs8_der(pkcs8.as_ref()).expect("a freshly generated P-256 key is valid")
    }

    /// The key stored as PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, AuthError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|error| AuthError::InvalidKey(error.to_string()))?;
        // An uncompressed SEC1 point: 0x04, then X and Y, 32 bytes each.
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(AuthError::InvalidKey(format!(
                "unexpected public point of {} bytes",
                point.len()
            )));
        }
        let x = BASE64URL.encode(&point[1..33]);
        let y = BASE64URL.encode(&point[33..]);
        let header_jwk = serde_json::from_value(public_jwk(&x, &y))
            .map_err(|error| AuthError::InvalidKey(error.to_string()))?;
        Ok(Self { pkcs8: der.to_vec(), encoding: EncodingKey::from_ec_der(der), x, y, header_jwk })
    }

    /// The key as PKCS#8 DER, as it is stored.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// Reads `<home>/device-key.der`; `None` when the device has no key yet.
    pub fn load(home: &Path) -> Result<Option<Self>, AuthError> {
        let path = home.join(DEVICE_KEY_FILE);
        match fs::read(&path) {
            Ok(der) => Self::from_pkcs8_der(&der).map(Some),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AuthError::Io { path, source }),
        }
    }

    /// Writes `<home>/device-key.der`, readable by the owner only.
    pub fn save(&self, home: &Path) -> Result<(), AuthError> {
        let path = home.join(DEVICE_KEY_FILE);
        fs::create_dir_all(home)
            .and_then(|()| write_private(&path, &self.pkcs8))
            .map_err(|source| AuthError::Io { path, source })
    }

    /// The public key as a JWK: `{"kty":"EC","crv":"P-256","x":..,"y":..}`.
    pub fn public_jwk(&self) -> serde_json::Value {
        public_jwk(&self.x, &self.y)
    }

    /// The RFC 7638 thumbprint (jkt) of the public key, which access tokens are bound to.
    pub fn thumbprint(&self) -> String {
        jwk_thumbprint(&self.x, &self.y)
    }

    /// A DPoP proof for one request: a JWS `typ: dpop+jwt`, ES256, with the public key in its
    /// `jwk` header; claims `htm`, `htu`, `iat`, a fresh random `jti`, and `nonce` and `ath`
    /// (the hash of `access_token`) when given.
    pub fn proof(
        &self,
        htm: &str,
        htu: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".to_owned());
        header.jwk = Some(self.header_jwk.clone());
        let claims = ProofClaims {
            htm,
            htu,
            iat: jsonwebtoken::get_current_timestamp(),
            jti: random_id(),
            nonce,
            ath: access_token.map(access_token_hash),
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("signing with a valid P-256 key cannot fail")
    }
}

/// The claims of a DPoP proof.
#[derive(Serialize)]
struct ProofClaims<'a> {
    htm: &'a str,
    htu: &'a str,
    iat: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
}

/// The RFC 7638 thumbprint of a P-256 public key given its base64url coordinates: the
/// base64url SHA-256 of `{"crv":"P-256","kty":"EC","x":..,"y":..}`.
pub fn jwk_thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    BASE64URL.encode(Sha256::digest(canonical.as_bytes()))
}

/// The `ath` claim of a proof: base64url(SHA-256(access token)).
pub fn access_token_hash(access_token: &str) -> String {
    BASE64URL.encode(Sha256::digest(access_token.as_bytes()))
}

fn public_jwk(x: &str, y: &str) -> serde_json::Value {
    json!({"kty": "EC", "crv": "P-256", "x": x, "y": y})
}

/// 16 random bytes, base64url: 22 characters, inside the 16–64 a `jti` may have.
fn random_id() -> String {
    let mut bytes = [0; 16];
    SystemRandom::new().fill(&mut bytes).expect("the system random source is available");
    BASE64URL.encode(bytes)
}

/// Writes `bytes` to `path` with mode 0600 through a temporary file, flushed and renamed, so a
/// crash never leaves a half-written credential.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut options = fs::File::options();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    // A leftover temporary file keeps its old mode on open; tighten it.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)
}
