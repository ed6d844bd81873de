//! Sync bodies on the wire: gzip (`Content-Encoding: gzip`, RFC 9110 §8.4.1).
//!
//! DESIGN.md §5 sends sync bodies compressed. A device's upload is mostly change chunks whose
//! actor ids, field names and narrative text repeat from change to change, which the chunks'
//! own column compression (per change, and only above 256 bytes) cannot see; compressing the
//! whole body does. The server inflates an upload into a bounded buffer, so a gzip bomb costs
//! it at most the body limit (SECURITY.md B-25) whatever it would inflate to.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use thiserror::Error;

/// The `Content-Encoding` of a compressed sync body.
pub const GZIP: &str = "gzip";

/// Why a compressed body was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BodyError {
    /// The body inflates past the limit of an uncompressed body.
    #[error("the body inflates past {limit} bytes")]
    TooLarge {
        /// The limit, in inflated bytes.
        limit: usize,
    },
    /// The bytes are not one gzip member.
    #[error("the body is not valid gzip: {0}")]
    Malformed(String),
}

/// Compresses a sync body. Level 6, gzip's default: on the bench's uploads it gives nearly
/// all of level 9's saving at a third of its time.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 2), Compression::default());
    encoder.write_all(body).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// Inflates a gzip body of at most `limit` inflated bytes.
///
/// # Errors
/// [`BodyError::TooLarge`] as soon as the output passes `limit` (nothing past it is kept),
/// [`BodyError::Malformed`] for bytes that are not a whole gzip member.
pub fn gunzip_within(compressed: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut inflated = Vec::new();
    let budget = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    GzDecoder::new(compressed)
        .take(budget)
        .read_to_end(&mut inflated)
        .map_err(|error| BodyError::Malformed(error.to_string()))?;
    if inflated.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(inflated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_round_trips_and_repeated_bytes_shrink() {
        let body: Vec<u8> = b"site.name=\xe4\xba\x94\xe9\x87\x91\xe5\xba\x97;".repeat(200);
        let compressed = gzip(&body);
        assert!(compressed.len() * 10 < body.len(), "{} bytes", compressed.len());
        assert_eq!(gunzip_within(&compressed, body.len()), Ok(body));
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0; 1 << 20]);
        assert_eq!(gunzip_within(&bomb, 1000), Err(BodyError::TooLarge { limit: 1000 }));
        assert_eq!(gunzip_within(&bomb, 1 << 20).map(|body| body.len()), Ok(1 << 20));
    }

    #[test]
    fn bytes_that_are_not_gzip_are_malformed() {
        assert!(matches!(gunzip_within(b"not gzip", 100), Err(BodyError::Malformed(_))));
        let truncated = &gzip(b"a whole body")[..10];
        assert!(matches!(gunzip_within(truncated, 100), Err(BodyError::Malformed(_))));
    }
}
