//! Causal time bounds of uploaded changes (SECURITY.md §a "Offline attribution and
//! revocation"): the verdict on an upload-only caller's edits (B-18) and the `clock_suspect`
//! flag (B-38).
//!
//! A device's clock is asserted, not trusted. What the server knows for sure is when it
//! received each change: a change built on a change from elsewhere was made after the server
//! received that one (`sync_core::merge::causal_not_before`), and before the server received
//! it. An officer whose certificate was withdrawn may still upload, with the access token
//! minted before, what the device made before the withdrawal: edits whose lower bound is not
//! after the withdrawal are merged and flagged `needs_review`, the others quarantined.

use std::collections::HashMap;

use automerge::{Change, ChangeHash};
use chrono::{DateTime, SecondsFormat};
use sync_core::merge::{ReceivedChange, causal_not_before};

/// 10 minutes, in ms: how far a device's time may stray outside a change's causal bounds before
/// the change is flagged `clock_suspect`; enough for an unsynchronised phone clock, far less
/// than any offline stretch.
pub(crate) const CLOCK_TOLERANCE_MS: i64 = 10 * 60 * 1000;

/// Why a caller may only upload: its certificate's withdrawal.
#[derive(Debug, Clone)]
pub(crate) struct UploadOnly {
    /// Server time the certificate was suspended or revoked, ms.
    pub(crate) withdrawn_at: i64,
    /// `certificate_revoked` or `certificate_suspended`: the refusal every other route answers,
    /// and the code of a quarantined document's result.
    pub(crate) code: &'static str,
    /// The certificate.
    pub(crate) cert_no: String,
}

impl UploadOnly {
    /// "revoked" or "suspended".
    fn withdrawn(&self) -> &'static str {
        if self.code == "certificate_suspended" { "suspended" } else { "revoked" }
    }

    /// The detail of a `needs_review` flag on a change with lower bound `not_before`.
    pub(crate) fn review_detail(&self, not_before: i64, received_at: i64) -> String {
        let bound = if not_before == i64::MIN {
            "no change from elsewhere bounds when it was made".to_owned()
        } else {
            format!("it was made after {}", rfc3339(not_before))
        };
        format!(
            "uploaded at {} after certificate {} was {} at {}; {bound}, so it may have been made \
             before the withdrawal",
            rfc3339(received_at),
            self.cert_no,
            self.withdrawn(),
            rfc3339(self.withdrawn_at),
        )
    }

    /// The quarantine reason of a document whose upload follows the withdrawal.
    pub(crate) fn late_reason(&self, not_before: i64) -> String {
        format!(
            "{}: certificate {} was {} at {}; this upload builds on a change the server received \
             at {}, after it",
            self.code,
            self.cert_no,
            self.withdrawn(),
            rfc3339(self.withdrawn_at),
            rfc3339(not_before),
        )
    }

    /// The quarantine reason of a document created in upload-only mode.
    pub(crate) fn created_reason(&self) -> String {
        format!(
            "{}: certificate {} was {} at {}; a record cannot be created with it",
            self.code,
            self.cert_no,
            self.withdrawn(),
            rfc3339(self.withdrawn_at),
        )
    }

    /// The quarantine reason of a document whose upload builds on quarantined changes.
    pub(crate) fn follows_quarantine_reason(&self) -> String {
        format!(
            "{}: certificate {} was {}; this upload builds on changes already kept in quarantine",
            self.code,
            self.cert_no,
            self.withdrawn(),
        )
    }
}

/// The verdict on one document's new changes from an upload-only caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No change is known to follow the withdrawal: merge them all, each flagged
    /// `needs_review` with its lower bound.
    Accept(Vec<(ChangeHash, i64)>),
    /// A change builds on one the server received after the withdrawal (at this time): the
    /// document's new changes go to quarantine.
    Late(i64),
}

/// Judges the new changes of one existing document uploaded by `device` at `received_at`,
/// whose certificate was withdrawn at `withdrawn_at`; `stored` holds what the server recorded
/// of the document's stored changes.
///
/// The changes of one device form a chain, and a change's lower bound is at least that of its
/// ancestors on the same device, so the late changes are the end of the chain; the whole
/// upload of the document is nevertheless quarantined, because a sync result is all or nothing
/// per document.
pub(crate) fn judge(
    new_changes: &[Change],
    stored: &HashMap<ChangeHash, ReceivedChange>,
    device: &str,
    received_at: i64,
    withdrawn_at: i64,
) -> Verdict {
    let uploaded: HashMap<ChangeHash, ReceivedChange> = new_changes
        .iter()
        .map(|change| {
            let received = ReceivedChange {
                device: Some(device.to_owned()),
                received_at,
                deps: change.deps().to_vec(),
            };
            (change.hash(), received)
        })
        .collect();
    let lookup = |hash: &ChangeHash| stored.get(hash).or_else(|| uploaded.get(hash)).cloned();
    let mut bounds = Vec::with_capacity(new_changes.len());
    let mut latest = i64::MIN;
    for change in new_changes {
        let not_before = causal_not_before(change.deps(), device, lookup);
        latest = latest.max(not_before);
        bounds.push((change.hash(), not_before));
    }
    if latest > withdrawn_at { Verdict::Late(latest) } else { Verdict::Accept(bounds) }
}

/// Whether a device time (`timestamp`, seconds, as `Change::timestamp` holds it) lies outside
/// [lower bound − 10 min, `received_at` + 10 min] (SECURITY.md B-38); the detail of the flag
/// when it does.
///
/// `not_before` is asked for only when the device time is more than 10 minutes older than the
/// receipt, since the lower bound never passes the receipt time.
pub(crate) fn clock_suspect(
    timestamp: i64,
    received_at: i64,
    not_before: impl FnOnce() -> i64,
) -> Option<String> {
    let device_time = timestamp.saturating_mul(1000);
    let latest = received_at.saturating_add(CLOCK_TOLERANCE_MS);
    if device_time > latest {
        return Some(format!(
            "the device stamped {} on the change, more than 10 minutes after the server received \
             it at {}",
            rfc3339(device_time),
            rfc3339(received_at),
        ));
    }
    if device_time >= received_at.saturating_sub(CLOCK_TOLERANCE_MS) {
        return None;
    }
    let not_before = not_before();
    (device_time < not_before.saturating_sub(CLOCK_TOLERANCE_MS)).then(|| {
        format!(
            "the device stamped {} on the change, more than 10 minutes before {}, the earliest it \
             can have been made (the receipt of a change it builds on, or its actor's \
             registration)",
            rfc3339(device_time),
            rfc3339(not_before),
        )
    })
}

/// A time in ms as RFC 3339 UTC, or the number itself when out of range.
fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |time| time.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

#[cfg(test)]
mod tests {
    use automerge::transaction::{CommitOptions, Transactable as _};
    use automerge::{ActorId, AutoCommit, ROOT};

    use super::*;

    const MINUTE: i64 = 60_000;

    #[track_caller]
    fn check_clock(timestamp_s: i64, received_at: i64, not_before: i64, suspect: bool) {
        let mut asked = false;
        let flagged = clock_suspect(timestamp_s, received_at, || {
            asked = true;
            not_before
        });
        assert_eq!(
            flagged.is_some(),
            suspect,
            "{timestamp_s} s against {received_at}: {flagged:?}"
        );
        if timestamp_s * 1000 >= received_at - 10 * MINUTE {
            assert!(!asked, "the lower bound is read only for old device times");
        }
    }

    #[test]
    fn a_device_time_outside_the_causal_bounds_by_more_than_ten_minutes_is_suspect() {
        let received_at = 1_800_000_000_000;
        let seconds = |ms: i64| ms / 1000;
        // Inside the window, and at its edges.
        check_clock(seconds(received_at), received_at, received_at - 60 * MINUTE, false);
        check_clock(seconds(received_at + 10 * MINUTE), received_at, i64::MIN, false);
        check_clock(
            seconds(received_at - 70 * MINUTE),
            received_at,
            received_at - 60 * MINUTE,
            false,
        );
        // An offline edit made days ago, on nothing from elsewhere, is fine.
        check_clock(seconds(received_at - 3 * 24 * 60 * MINUTE), received_at, i64::MIN, false);
        // B-38: zero, two years ahead, before the causal lower bound.
        check_clock(0, received_at, received_at - 60 * MINUTE, true);
        check_clock(seconds(received_at + 2 * 365 * 24 * 60 * MINUTE), received_at, i64::MIN, true);
        check_clock(
            seconds(received_at - 71 * MINUTE),
            received_at,
            received_at - 60 * MINUTE,
            true,
        );
    }

    fn change(doc: &mut AutoCommit, key: &str) -> Change {
        let heads = doc.get_heads();
        doc.put(ROOT, key, "value").unwrap();
        doc.commit_with(CommitOptions::default().with_time(1));
        doc.get_changes(&heads).remove(0)
    }

    #[test]
    fn edits_on_changes_received_before_the_withdrawal_are_accepted_and_after_it_late() {
        // Arrange: another device's change A, received at 100; this device's B on A, and C on B.
        let mut other = AutoCommit::new().with_actor(ActorId::from([1_u8; 16]));
        let first = change(&mut other, "a");
        let mut mine = other.fork().with_actor(ActorId::from([2_u8; 16]));
        let second = change(&mut mine, "b");
        let third = change(&mut mine, "c");
        let stored = |received_at: i64| {
            HashMap::from([(
                first.hash(),
                ReceivedChange { device: Some("other".to_owned()), received_at, deps: Vec::new() },
            )])
        };
        let new_changes = [second.clone(), third.clone()];

        // Act
        let before = judge(&new_changes, &stored(100), "mine", 500, 200);
        let after = judge(&new_changes, &stored(300), "mine", 500, 200);
        let on_nothing = judge(std::slice::from_ref(&first), &HashMap::new(), "mine", 500, 200);

        // Assert
        assert_eq!(before, Verdict::Accept(vec![(second.hash(), 100), (third.hash(), 100)]));
        assert_eq!(after, Verdict::Late(300));
        assert_eq!(on_nothing, Verdict::Accept(vec![(first.hash(), i64::MIN)]));
    }
}
