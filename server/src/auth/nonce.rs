//! Stateless DPoP nonces (RFC 9449 §9): the issue time and a MAC of it, so the server keeps no
//! nonce table and any nonce it issued in the last five minutes is accepted.
//!
//! `nonce = base64url(ts_be_u64_seconds || HMAC-SHA256(nonce_key, ts_be)[..16])`.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How long a nonce stays valid, in seconds.
pub(crate) const NONCE_LIFETIME_SECONDS: u64 = 300;

/// Bytes of the truncated MAC.
const MAC_BYTES: usize = 16;

/// The key that makes nonces unforgeable.
pub(crate) struct NonceKey {
    key: hmac::Key,
}

impl NonceKey {
    /// Wraps the 32-byte key.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    /// The nonce for `now` (seconds since the Unix epoch); the same within one second.
    pub(crate) fn issue(&self, now: u64) -> String {
        let timestamp = now.to_be_bytes();
        let tag = hmac::sign(&self.key, &timestamp);
        let mut bytes = Vec::with_capacity(8 + MAC_BYTES);
        bytes.extend_from_slice(&timestamp);
        bytes.extend_from_slice(&tag.as_ref()[..MAC_BYTES]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Whether `nonce` was issued by this server at most [`NONCE_LIFETIME_SECONDS`] ago.
    pub(crate) fn is_valid(&self, nonce: &str, now: u64) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else { return false };
        if bytes.len() != 8 + MAC_BYTES {
            return false;
        }
        let (timestamp, mac) = bytes.split_at(8);
        let expected = hmac::sign(&self.key, timestamp);
        if verify_slices_are_equal(&expected.as_ref()[..MAC_BYTES], mac).is_err() {
            return false;
        }
        let issued = u64::from_be_bytes(timestamp.try_into().expect("8 bytes"));
        issued <= now && now - issued <= NONCE_LIFETIME_SECONDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(key: &NonceKey, nonce: &str, now: u64, expected: bool) {
        assert_eq!(key.is_valid(nonce, now), expected, "{nonce} at {now}");
    }

    #[test]
    fn nonces_are_valid_for_five_minutes_and_unforgeable() {
        let key = NonceKey::new(&[7; 32]);
        let other = NonceKey::new(&[8; 32]);
        let nonce = key.issue(1_000);
        check(&key, &nonce, 1_000, true);
        check(&key, &nonce, 1_300, true);
        check(&key, &nonce, 1_301, false);
        check(&key, &nonce, 999, false);
        check(&other, &nonce, 1_000, false);
        check(&key, "not-a-nonce", 1_000, false);
        check(&key, "", 1_000, false);
    }
}
