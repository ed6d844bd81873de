//! Document numbers (文书编号) issued offline from leased blocks (DOMAIN.md §3).
//!
//! The server leases a contiguous block of serial numbers in one number space (name agency ×
//! document type × year) to one device. The device takes numbers strictly in order and stores
//! its pointer before it renders or prints a number, so a crash can skip a number but never
//! reuse one; a skipped or spoiled number is recorded as void. Two devices working offline
//! from their own blocks therefore never collide, and reconciliation accounts for every number.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A block of serial numbers leased to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberBlock {
    /// Lease id.
    pub id: String,
    /// The agency whose name the documents carry.
    pub name_agency: String,
    /// The agency's short code (机关代字) used in the rendered number.
    pub agency_code: String,
    /// Document type code (e.g. `当场处罚决定书`'s code).
    pub doc_type: String,
    /// Year of the number space; numbers reset each year.
    pub year: i32,
    /// First serial of the block.
    pub first: i64,
    /// Last serial of the block (inclusive).
    pub last: i64,
    /// The device holding the lease.
    pub device: String,
    /// Rendering template with `{代字}`, `{年}` and `{N}`, e.g. `{代字}〔{年}〕{N}号`.
    pub template: String,
}

impl NumberBlock {
    /// Whether `serial` lies in the block.
    pub fn contains(&self, serial: i64) -> bool {
        self.first <= serial && serial <= self.last
    }

    /// Renders a serial with the block's template (GB/T 9704: year in 〔〕, no padding).
    pub fn render(&self, serial: i64) -> String {
        self.template
            .replace("{代字}", &self.agency_code)
            .replace("{年}", &self.year.to_string())
            .replace("{N}", &serial.to_string())
    }
}

/// The device's position in one block. Take a number, store the cursor, then use the number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCursor {
    /// The leased block.
    pub block: NumberBlock,
    /// The next serial to hand out.
    // Invariant: block.first <= next <= block.last + 1.
    pub next: i64,
}

impl BlockCursor {
    /// A cursor at the start of a fresh block.
    pub fn new(block: NumberBlock) -> Self {
        let next = block.first;
        Self { block, next }
    }

    /// Takes the next serial, or `None` when the block is used up. The caller stores the cursor
    /// before rendering the number.
    pub fn take(&mut self) -> Option<i64> {
        if self.next > self.block.last {
            return None;
        }
        let serial = self.next;
        self.next += 1;
        Some(serial)
    }

    /// Serials left.
    pub fn remaining(&self) -> i64 {
        self.block.last + 1 - self.next
    }
}

/// How one serial of a block was accounted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NumberUse {
    /// Printed on an issued document.
    Used {
        /// The document (case file) it was used in.
        doc: String,
    },
    /// Spoiled or skipped, with the reason (作废).
    Void {
        /// Why.
        reason: String,
    },
}

/// Every serial of a block, accounted for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Reconciliation {
    /// Serials used exactly once.
    pub used: Vec<i64>,
    /// Serials voided.
    pub void: Vec<i64>,
    /// Serials neither used nor voided.
    pub unused: Vec<i64>,
    /// Serials used more than once, with the documents.
    pub duplicates: BTreeMap<i64, Vec<String>>,
    /// Serials reported that lie outside the block.
    pub outside: Vec<i64>,
}

/// Accounts for every serial of `block` given every reported use of a serial in its space.
pub fn reconcile(block: &NumberBlock, uses: &[(i64, NumberUse)]) -> Reconciliation {
    let mut by_serial: BTreeMap<i64, Vec<&NumberUse>> = BTreeMap::new();
    let mut outside = BTreeSet::new();
    for (serial, number_use) in uses {
        if block.contains(*serial) {
            by_serial.entry(*serial).or_default().push(number_use);
        } else {
            outside.insert(*serial);
        }
    }
    let mut reconciliation =
        Reconciliation { outside: outside.into_iter().collect(), ..Reconciliation::default() };
    for serial in block.first..=block.last {
        let Some(uses) = by_serial.get(&serial) else {
            reconciliation.unused.push(serial);
            continue;
        };
        let docs: Vec<String> = uses
            .iter()
            .filter_map(|number_use| match number_use {
                NumberUse::Used { doc } => Some(doc.clone()),
                NumberUse::Void { .. } => None,
            })
            .collect();
        match docs.len() {
            0 => reconciliation.void.push(serial),
            1 => reconciliation.used.push(serial),
            _ => {
                reconciliation.duplicates.insert(serial, docs);
            }
        }
    }
    reconciliation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(id: &str, first: i64, last: i64) -> NumberBlock {
        NumberBlock {
            id: id.to_owned(),
            name_agency: "d-yingji".to_owned(),
            agency_code: "应急".to_owned(),
            doc_type: "onsite_decision".to_owned(),
            year: 2026,
            first,
            last,
            device: format!("device-{id}"),
            template: "{代字}罚〔{年}〕{N}号".to_owned(),
        }
    }

    #[test]
    fn numbers_render_with_the_agency_template() {
        assert_eq!(block("a", 1, 20).render(7), "应急罚〔2026〕7号");
    }

    #[test]
    fn two_devices_working_offline_from_their_blocks_never_collide() {
        let mut a = BlockCursor::new(block("a", 1, 20));
        let mut b = BlockCursor::new(block("b", 21, 40));
        let mut seen = BTreeSet::new();
        for _ in 0..25 {
            for cursor in [&mut a, &mut b] {
                if let Some(serial) = cursor.take() {
                    assert!(seen.insert(cursor.block.render(serial)), "collision");
                }
            }
        }
        assert_eq!(seen.len(), 40);
        assert_eq!((a.take(), b.remaining()), (None, 0));
    }

    #[test]
    fn reconciliation_accounts_for_every_number() {
        let lease = block("a", 1, 6);
        let used = |doc: &str| NumberUse::Used { doc: doc.to_owned() };
        let uses = vec![
            (1, used("c1")),
            (2, NumberUse::Void { reason: "spoiled".to_owned() }),
            (3, used("c2")),
            (3, used("c3")),
            (9, used("c4")),
        ];
        let reconciliation = reconcile(&lease, &uses);
        assert_eq!(reconciliation.used, vec![1]);
        assert_eq!(reconciliation.void, vec![2]);
        assert_eq!(reconciliation.unused, vec![4, 5, 6]);
        assert_eq!(reconciliation.duplicates[&3], vec!["c2".to_owned(), "c3".to_owned()]);
        assert_eq!(reconciliation.outside, vec![9]);
        let accounted = reconciliation.used.len()
            + reconciliation.void.len()
            + reconciliation.unused.len()
            + reconciliation.duplicates.len();
        assert_eq!(accounted, 6);
    }
}
