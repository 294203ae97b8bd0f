//! The engine's fsck: walks every structure reachable from the superblock and
//! verifies every invariant, reporting each violation instead of stopping at the first.
//!
//! Checked: every reachable block reads and verifies; node headers, levels and value
//! shapes are consistent; keys ascend within a node and lie inside the range their
//! parent gives them; the stored reference count of every metadata page and data
//! extent equals the number of references actually found (so nothing is leaked and
//! nothing is freed while in use); the space maps' counters match their contents.
//!
//! A page that cannot be read is reported once, and while one is, counts that
//! look too high are not reported: the walk could not count what lies below it.
//!
//! Memory: one bit per metadata page and one `u32` per metadata page, plus one
//! `u32` per data extent in chunks of [`DATA_CHUNK`] extents (the trees are walked
//! once per chunk).

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::btree::node::{self, Ref, ValueKind};
use crate::device::BlockDevice;
use crate::engine::Engine;
use crate::error::Error;
use crate::store::page::PageKind;
use crate::store::space_map::{MapId, COUNTS_PER_LEAF};

/// The block an error names, or 0.
pub(super) fn error_addr(e: &Error) -> u64 {
    match e {
        Error::Checksum { addr } | Error::Misplaced { addr, .. } | Error::Corrupt { addr, .. } => {
            *addr
        }
        _ => 0,
    }
}

/// Data extents counted per tree walk.
pub const DATA_CHUNK: u64 = 1 << 20;

/// One violated invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A block that should be readable is not (checksum, misplaced, bad header...).
    Unreadable {
        /// Block address.
        addr: u64,
        /// Why.
        error: Error,
    },
    /// Keys in a node are not strictly ascending.
    KeyOrder {
        /// Node address.
        addr: u64,
    },
    /// A key lies outside the range the parent node assigns to this node.
    KeyOutOfRange {
        /// Node address.
        addr: u64,
        /// The offending key.
        key: u64,
    },
    /// A non-root interior node has no entries, or a leaf of a tree is empty.
    EmptyNode {
        /// Node address.
        addr: u64,
    },
    /// A value refers to a data extent outside the pool.
    BadDataRef {
        /// Leaf address.
        addr: u64,
        /// The extent number found.
        extent: u64,
    },
    /// A block of the committed state carries the id of the transaction being built,
    /// so it could be changed in place (only a forged image can contain this).
    StaleTransaction {
        /// Block address.
        addr: u64,
    },
    /// A metadata page's stored reference count differs from the references found.
    MetaRefcount {
        /// Block address.
        addr: u64,
        /// Count in the space map.
        stored: u32,
        /// References found.
        found: u32,
    },
    /// A data extent's stored reference count differs from the references found.
    DataRefcount {
        /// Extent number.
        extent: u64,
        /// Count in the space map.
        stored: u32,
        /// References found.
        found: u32,
    },
    /// An entry of the free queue (trees waiting to be freed) is malformed: a key
    /// outside the queue's counters, a level that is not one, or a node at another
    /// level than the entry says; or the queue's entry count is wrong (`key` 0).
    FreeQueue {
        /// The entry's key.
        key: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A space map's "allocated" counter differs from its number of non-zero entries.
    AllocatedCounter {
        /// Which map.
        map: MapId,
        /// Counter value.
        stored: u64,
        /// Non-zero entries found.
        found: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Unreadable { addr, error } => write!(f, "block {addr} unreadable: {error}"),
            Violation::KeyOrder { addr } => write!(f, "node {addr}: keys not ascending"),
            Violation::KeyOutOfRange { addr, key } => {
                write!(
                    f,
                    "node {addr}: key {key} outside the range its parent assigns"
                )
            }
            Violation::EmptyNode { addr } => write!(f, "node {addr} is empty"),
            Violation::BadDataRef { addr, extent } => {
                write!(
                    f,
                    "node {addr}: reference to data extent {extent} outside the pool"
                )
            }
            Violation::StaleTransaction { addr } => {
                write!(
                    f,
                    "block {addr} is committed but stamped with the open transaction"
                )
            }
            Violation::MetaRefcount {
                addr,
                stored,
                found,
            } => write!(
                f,
                "metadata page {addr}: reference count {stored} but {found} references"
            ),
            Violation::DataRefcount {
                extent,
                stored,
                found,
            } => write!(
                f,
                "data extent {extent}: reference count {stored} but {found} references"
            ),
            Violation::FreeQueue { key, what } => write!(f, "free queue entry {key}: {what}"),
            Violation::AllocatedCounter { map, stored, found } => write!(
                f,
                "{map:?} space map: allocated counter {stored} but {found} entries in use"
            ),
        }
    }
}

/// A node still to visit: address, expected level (None for a root), the key range
/// its parent assigns, and the leaf shape its tree must have (None if unknown).
type Pending = (u64, Option<u8>, u64, u64, Option<(usize, ValueKind)>);

struct Walk {
    meta_found: Vec<u32>,
    visited: Vec<u64>,
    data_found: Vec<u32>,
    data_lo: u64,
    report: bool,
    out: Vec<Violation>,
}

impl Walk {
    fn note(&mut self, v: Violation) {
        if self.report {
            self.out.push(v);
        }
    }
}

impl<D: BlockDevice> Engine<D> {
    /// Verifies every invariant of the metadata (see the module docs) and returns
    /// each violation found; an empty vector means the metadata is consistent.
    ///
    /// Every tree must be reachable from a root slot (directly or as a value of a
    /// reachable tree): a tree held only by the caller is reported as leaked.
    pub fn audit(&mut self) -> Vec<Violation> {
        let m = self.geo.meta_pages as usize;
        let d = self.geo.data_extents;
        let mut w = Walk {
            meta_found: vec![0; m],
            visited: vec![0; m.div_ceil(64)],
            data_found: Vec::new(),
            data_lo: 0,
            report: true,
            out: Vec::new(),
        };
        for map in [MapId::Meta, MapId::Data] {
            let start = self.geo.meta_start;
            let mut found = Vec::new();
            let r = self
                .sm
                .for_each_node(&mut self.st, map, |a, _| found.push(a));
            if let Err(error) = r {
                w.note(Violation::Unreadable {
                    addr: error_addr(&error),
                    error,
                });
            }
            for a in found {
                if let Some(c) = a
                    .checked_sub(start)
                    .and_then(|i| w.meta_found.get_mut(i as usize))
                {
                    *c += 1;
                }
            }
        }
        let mut lo = 0;
        loop {
            let n = (d - lo).min(DATA_CHUNK);
            w.data_lo = lo;
            // Free the previous chunk before allocating the next: peak is one chunk.
            w.data_found = Vec::new();
            w.data_found = vec![0; n as usize];
            w.visited.iter_mut().for_each(|x| *x = 0);
            for t in self.trees() {
                if t.root() != 0 {
                    self.walk_tree(&mut w, t.root(), Some((t.value_size(), t.kind())));
                }
            }
            self.compare_data(&mut w, lo);
            w.report = false;
            lo += n;
            if lo >= d {
                break;
            }
        }
        w.report = true;
        self.compare_meta(&mut w);
        w.out.extend(self.audit_queue());
        // A block that cannot be read is found by every walk that reaches it
        // (the space map listing, the counts, the trees): report it once.
        let mut seen = alloc::collections::BTreeSet::new();
        w.out.retain(|v| match v {
            Violation::Unreadable { addr, .. } => seen.insert(*addr),
            _ => true,
        });
        // Below an unreadable page nothing was counted, so every count it reaches
        // looks too high: those are not leaks, and cannot be told from real ones.
        if !seen.is_empty() {
            w.out.retain(|v| {
                !matches!(v,
                    Violation::MetaRefcount { stored, found, .. }
                    | Violation::DataRefcount { stored, found, .. } if stored > found)
            });
        }
        w.out
    }

    fn walk_tree(&mut self, w: &mut Walk, root: u64, shape: Option<(usize, ValueKind)>) {
        // (addr, expected level, key range [lo, hi], expected leaf shape)
        let mut stack: Vec<Pending> = vec![(root, None, 0, u64::MAX, shape)];
        let start = self.geo.meta_start;
        while let Some((addr, level, lo, hi, shape)) = stack.pop() {
            let Some(i) = addr.checked_sub(start).filter(|&i| i < self.geo.meta_pages) else {
                w.note(Violation::Unreadable {
                    addr,
                    error: Error::corrupt(addr, "pointer outside the metadata area"),
                });
                continue;
            };
            let i = i as usize;
            w.meta_found[i] = w.meta_found[i].saturating_add(u32::from(w.report));
            if w.visited[i / 64] & (1 << (i % 64)) != 0 {
                continue;
            }
            w.visited[i / 64] |= 1 << (i % 64);
            let cur_txid = self.st.txid();
            let b = match self.st.read(addr, PageKind::BtreeNode) {
                Ok(b) => b,
                Err(error) => {
                    w.note(Violation::Unreadable { addr, error });
                    continue;
                }
            };
            let stamped_now = crate::store::page::txid(b) == cur_txid;
            let h = match node::header(b, addr) {
                Ok(h) => h,
                Err(error) => {
                    w.note(Violation::Unreadable { addr, error });
                    continue;
                }
            };
            if level.is_some_and(|l| l != h.level) {
                w.note(Violation::Unreadable {
                    addr,
                    error: Error::corrupt(addr, "B-tree child at the wrong level"),
                });
                continue;
            }
            if h.is_leaf() && shape.is_some_and(|s| s != (h.vs, h.kind)) {
                w.note(Violation::Unreadable {
                    addr,
                    error: Error::corrupt(addr, "leaf does not match the tree's value shape"),
                });
                continue;
            }
            if h.nr == 0 {
                w.note(Violation::EmptyNode { addr });
            }
            let mut prev: Option<u64> = None;
            for j in 0..h.nr {
                let k = node::key(b, j);
                if prev.is_some_and(|p| p >= k) {
                    w.note(Violation::KeyOrder { addr });
                }
                if k < lo || k > hi {
                    w.note(Violation::KeyOutOfRange { addr, key: k });
                }
                prev = Some(k);
            }
            if h.is_leaf() {
                for j in 0..h.nr {
                    for r in node::value_refs(h.kind, node::value(b, &h, j)) {
                        match r {
                            Ref::Data(e) if e >= self.geo.data_extents => {
                                w.note(Violation::BadDataRef { addr, extent: e })
                            }
                            Ref::Data(e) => {
                                if let Some(c) = e
                                    .checked_sub(w.data_lo)
                                    .and_then(|x| w.data_found.get_mut(x as usize))
                                {
                                    *c = c.saturating_add(1);
                                }
                            }
                            Ref::Tree(r) => stack.push((r, None, 0, u64::MAX, None)),
                        }
                    }
                }
            } else {
                for j in 0..h.nr {
                    let clo = node::key(b, j);
                    let chi = if j + 1 < h.nr {
                        node::key(b, j + 1).saturating_sub(1)
                    } else {
                        hi
                    };
                    stack.push((node::child(b, &h, j), Some(h.level - 1), clo, chi, shape));
                }
            }
            // A block stamped with the open transaction must be new in it.
            if stamped_now
                && self
                    .sm
                    .committed_count(&mut self.st, MapId::Meta, i as u64)
                    .unwrap_or(0)
                    > 0
            {
                w.note(Violation::StaleTransaction { addr });
            }
        }
    }

    fn compare_data(&mut self, w: &mut Walk, lo: u64) {
        let n = w.data_found.len() as u64;
        let mut e = lo;
        while e < lo + n {
            let stored = match self.sm.count(&mut self.st, MapId::Data, e) {
                Ok(c) => c,
                Err(error) => {
                    w.out.push(Violation::Unreadable {
                        addr: error_addr(&error),
                        error,
                    });
                    e = (e / COUNTS_PER_LEAF + 1) * COUNTS_PER_LEAF;
                    continue;
                }
            };
            let found = w.data_found[(e - lo) as usize];
            if stored != found {
                w.out.push(Violation::DataRefcount {
                    extent: e,
                    stored,
                    found,
                });
            }
            e += 1;
        }
    }

    fn compare_meta(&mut self, w: &mut Walk) {
        let mut nonzero = 0u64;
        for i in 0..self.geo.meta_pages {
            let stored = match self.sm.count(&mut self.st, MapId::Meta, i) {
                Ok(c) => c,
                Err(error) => {
                    w.out.push(Violation::Unreadable {
                        addr: error_addr(&error),
                        error,
                    });
                    return;
                }
            };
            nonzero += u64::from(stored != 0);
            let found = w.meta_found[i as usize];
            if stored != found {
                w.out.push(Violation::MetaRefcount {
                    addr: self.geo.meta_start + i,
                    stored,
                    found,
                });
            }
        }
        if nonzero != self.sm.meta.allocated {
            w.out.push(Violation::AllocatedCounter {
                map: MapId::Meta,
                stored: self.sm.meta.allocated,
                found: nonzero,
            });
        }
        let mut data_nonzero = 0u64;
        for e in 0..self.geo.data_extents {
            match self.sm.count(&mut self.st, MapId::Data, e) {
                Ok(c) => data_nonzero += u64::from(c != 0),
                Err(_) => return,
            }
        }
        if data_nonzero != self.sm.data.allocated {
            w.out.push(Violation::AllocatedCounter {
                map: MapId::Data,
                stored: self.sm.data.allocated,
                found: data_nonzero,
            });
        }
    }
}
