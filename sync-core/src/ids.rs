//! Identifier newtypes, parsed once at the boundary so the rest of the code cannot mix them up.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::IdError;

/// The id of one record document (inspection or case file), a UUID minted on the device.
///
/// On the wire it is the 16 raw bytes; in JSON, paths and the CLI it is the hyphenated form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DocumentId([u8; 16]);

impl DocumentId {
    /// Wraps 16 random bytes; the caller supplies the randomness (sync-core has no RNG).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        // Stamp the UUID version 4 and variant bits so that the id is a well-formed random UUID.
        let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
        Self(*uuid.as_bytes())
    }

    /// Parses the hyphenated (or simple) UUID form.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let uuid =
            uuid::Uuid::try_parse(text.trim()).map_err(|_| IdError::Document(text.to_owned()))?;
        Ok(Self(*uuid.as_bytes()))
    }

    /// Reads the 16 bytes back, as stored in SQLite.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self, IdError> {
        let array: [u8; 16] =
            bytes.try_into().map_err(|_| IdError::Document(hex_preview(bytes)))?;
        Ok(Self(array))
    }

    /// The 16 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

fn hex_preview(bytes: &[u8]) -> String {
    bytes.iter().take(20).map(|byte| format!("{byte:02x}")).collect()
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $variant:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Accepts a non-empty id of printable characters without spaces.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                let valid = !text.is_empty()
                    && text.len() <= 128
                    && text.chars().all(|c| !c.is_whitespace() && !c.is_control());
                if valid { Ok(Self(text.to_owned())) } else { Err(IdError::$variant(text.to_owned())) }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A registered field device (one install of the app on one phone or laptop).
    DeviceId,
    Device
);
string_id!(
    /// An enforcement officer (执法人员) in the registry.
    OfficerId,
    Officer
);
string_id!(
    /// An enforcement certificate (行政执法证件) number.
    CertificateId,
    Certificate
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_id_round_trips_through_text_and_bytes() {
        let id = DocumentId::from_bytes([7; 16]);
        let text = id.to_string();
        assert_eq!(DocumentId::parse(&text).unwrap(), id);
        assert_eq!(DocumentId::try_from_slice(id.as_bytes()).unwrap(), id);
        assert_eq!(uuid::Uuid::parse_str(&text).unwrap().get_version_num(), 4);
    }

    #[test]
    fn malformed_ids_are_refused() {
        assert!(DocumentId::parse("not-a-uuid").is_err());
        assert!(DocumentId::try_from_slice(&[1, 2, 3]).is_err());
        assert!(OfficerId::parse("").is_err());
        assert!(OfficerId::parse("has space").is_err());
        assert_eq!(OfficerId::parse("officer-1").unwrap().as_str(), "officer-1");
    }
}
