//! `Array::check`: the engine's audit plus the array's own invariants, read back
//! from the device's LUN table rather than from RAM.

use alloc::vec::Vec;
use core::fmt;

use crate::device::BlockDevice;
use crate::engine::{ScrubReport, Violation};
use crate::error::{Error, Result};

use super::lun::{unpack, Lun, EXTENTS_PER_ENTRY, RECORD_SIZE};
use super::Array;

/// One violated invariant found by [`Array::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArrayViolation {
    /// A storage-engine invariant (reference counts, tree structure, space maps).
    Engine(Violation),
    /// A LUN-table entry cannot be decoded.
    BadRecord {
        /// Key of the entry.
        lun: u64,
        /// Why.
        error: Error,
    },
    /// The table on the device and the open array disagree about a LUN.
    TableMismatch {
        /// The LUN.
        lun: u32,
    },
    /// A copy names a parent that does not exist.
    MissingParent {
        /// The copy.
        lun: u32,
        /// The parent it names.
        parent: u32,
    },
    /// A copy's size differs from its parent's (a copy is always its parent's size:
    /// restore would give the parent a mapping of another size).
    CopySizeMismatch {
        /// The copy.
        lun: u32,
        /// Its size.
        size: u64,
        /// The parent.
        parent: u32,
        /// The parent's size.
        parent_size: u64,
    },
    /// The LUNs that are not detached reserve more than the pool holds.
    OverReserved {
        /// Extents reserved.
        reserved: u64,
        /// Extents the pool holds for LUNs.
        capacity: u64,
    },
    /// A LUN maps an extent beyond its size.
    MappingBeyondSize {
        /// The LUN.
        lun: u32,
        /// The logical extent.
        logical_extent: u64,
    },
    /// A mapping entry holds no extent at all (it should have been removed).
    EmptyMappingEntry {
        /// The LUN.
        lun: u32,
        /// The entry's key.
        key: u64,
    },
    /// A LUN record grants access to a host index no registered host has.
    DanglingGrant {
        /// The LUN it names.
        lun: u32,
        /// The host index it names.
        host_index: u32,
    },
    /// A LUN's mapping cannot be read.
    UnreadableMapping {
        /// The LUN.
        lun: u32,
        /// Why.
        error: Error,
    },
    /// A LUN has lost ranges (from `repair`) that it cannot have: it does not exist,
    /// is detached, or a range lies beyond its size.
    BadLostRange {
        /// The LUN the ranges name.
        lun: u32,
    },
    /// A notice, not damage: ranges of a LUN that `repair` could not recover read
    /// as errors until written or discarded.
    LostData {
        /// The LUN.
        lun: u32,
        /// Bytes lost.
        bytes: u64,
    },
    /// A notice, not damage: an open that allowed it rolled the array back
    /// because the newest commit could not be read ([`crate::OpenOptions::allow_rollback`]).
    RolledBack {
        /// The generation lost.
        lost: u64,
        /// The generation opened instead.
        kept: u64,
    },
}

/// How much a violation matters, as `qemu-img check` ranks what it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing, nothing to repair (a past rollback).
    Notice,
    /// Space counted as used that nothing references: wasted, never wrong data.
    Leak,
    /// Anything else: structures that are unreadable or disagree.
    Damage,
}

impl ArrayViolation {
    /// How much this violation matters.
    pub fn severity(&self) -> Severity {
        match self {
            ArrayViolation::RolledBack { .. } | ArrayViolation::LostData { .. } => Severity::Notice,
            ArrayViolation::Engine(
                Violation::MetaRefcount { stored, found, .. }
                | Violation::DataRefcount { stored, found, .. },
            ) if stored > found => Severity::Leak,
            ArrayViolation::Engine(Violation::AllocatedCounter { stored, found, .. })
                if stored > found =>
            {
                Severity::Leak
            }
            _ => Severity::Damage,
        }
    }
}

impl fmt::Display for ArrayViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArrayViolation::Engine(v) => write!(f, "{v}"),
            ArrayViolation::BadRecord { lun, error } => {
                write!(f, "LUN table entry {lun} is invalid: {error}")
            }
            ArrayViolation::TableMismatch { lun } => {
                write!(
                    f,
                    "LUN {lun}: the table on the device differs from the open array"
                )
            }
            ArrayViolation::MissingParent { lun, parent } => {
                write!(f, "copy {lun} names parent {parent}, which does not exist")
            }
            ArrayViolation::CopySizeMismatch {
                lun,
                size,
                parent,
                parent_size,
            } => write!(
                f,
                "copy {lun} is {size} bytes but its parent {parent} is {parent_size}"
            ),
            ArrayViolation::OverReserved { reserved, capacity } => write!(
                f,
                "LUNs reserve {reserved} extents but the pool holds {capacity}"
            ),
            ArrayViolation::MappingBeyondSize {
                lun,
                logical_extent,
            } => write!(
                f,
                "LUN {lun} maps logical extent {logical_extent}, beyond its size"
            ),
            ArrayViolation::EmptyMappingEntry { lun, key } => {
                write!(f, "LUN {lun}: mapping entry {key} holds no extent")
            }
            ArrayViolation::DanglingGrant { lun, host_index } => write!(
                f,
                "LUN {lun} grants access to host index {host_index}, which no host has"
            ),
            ArrayViolation::UnreadableMapping { lun, error } => {
                write!(f, "LUN {lun}: mapping unreadable: {error}")
            }
            ArrayViolation::BadLostRange { lun } => {
                write!(f, "LUN {lun} has lost ranges it cannot have")
            }
            ArrayViolation::LostData { lun, bytes } => write!(
                f,
                "note: {bytes} bytes of LUN {lun} were lost to metadata damage and read \
                 as errors until written or discarded"
            ),
            ArrayViolation::RolledBack { lost, kept } => write!(
                f,
                "note: generation {lost} was lost to damage and the array was rolled back \
                 to generation {kept} by an open that allowed it"
            ),
        }
    }
}

impl<D: BlockDevice> Array<D> {
    /// Commits, then reads both copies of every metadata page the array uses
    /// (superblocks, space maps, the LUN table, every mapping, the hosts) and
    /// rewrites each bad copy from its good one, durably, before it returns. Pages
    /// with no good copy left are listed in the report ([`ScrubReport::lost`]);
    /// `repair` is the next step for those. `progress(done, total)` is called as
    /// pages are read. Memory: a bit per metadata page.
    ///
    /// With one metadata copy nothing can be healed, and a scrub tells which pages
    /// are damaged. Errors: [`Error::Poisoned`]; a device error (which poisons).
    pub fn scrub(&mut self, progress: impl FnMut(u64, u64)) -> Result<ScrubReport> {
        if self.eng.is_poisoned() {
            return Err(Error::Poisoned);
        }
        self.write_back()?;
        let r = self.eng.scrub(progress)?;
        self.dirty = false;
        Ok(r)
    }

    /// Verifies every invariant of the metadata (an fsck) and returns each violation
    /// found; an empty list means the array is consistent. Changed LUN records are
    /// written to the table first (not committed), so what is checked is what the
    /// next commit would write.
    ///
    /// Checked: everything [`Engine::audit`](crate::engine::Engine::audit) checks (reference
    /// counts equal references, nothing leaked, keys ordered, tree shapes), every
    /// LUN-table entry decodes and agrees with the open array, parents exist and
    /// have their copies' size,
    /// reservations add up to at most the pool, no mapping beyond a LUN's size.
    pub fn check(&mut self) -> Result<Vec<ArrayViolation>> {
        if self.eng.is_poisoned() {
            return Err(Error::Poisoned);
        }
        self.write_back()?;
        let mut out: Vec<ArrayViolation> = self
            .eng
            .audit()
            .into_iter()
            .map(ArrayViolation::Engine)
            .collect();

        // The table as stored.
        let mut raw: Vec<(u64, [u8; RECORD_SIZE])> = Vec::new();
        let limit = self.max_luns as usize + 1;
        let table = self.table;
        if let Err(e) = self.eng.range(&table, 0, u64::MAX, |k, v| {
            let mut r = [0u8; RECORD_SIZE];
            r.copy_from_slice(v);
            raw.push((k, r));
            raw.len() < limit
        }) {
            out.push(ArrayViolation::BadRecord { lun: 0, error: e });
        }
        let mut stored: Vec<(u32, Lun)> = Vec::new();
        for (k, r) in raw {
            let decoded = u32::try_from(k)
                .map_err(|_| Error::LunOutOfRange {
                    lun: u32::MAX,
                    max_luns: self.max_luns,
                })
                .and_then(|n| Lun::decode(n, &r, self.max_luns).map(|l| (n, l)));
            match decoded {
                Ok(x) => stored.push(x),
                Err(error) => out.push(ArrayViolation::BadRecord { lun: k, error }),
            }
        }
        for (n, l) in &stored {
            let same = self.luns.get(n).is_some_and(|m| m.encode() == l.encode());
            if !same {
                out.push(ArrayViolation::TableMismatch { lun: *n });
            }
            if let Some(p) = l.parent {
                match stored.iter().find(|(m, _)| *m == p) {
                    None => out.push(ArrayViolation::MissingParent { lun: *n, parent: p }),
                    Some((_, pl)) if pl.size != l.size => {
                        out.push(ArrayViolation::CopySizeMismatch {
                            lun: *n,
                            size: l.size,
                            parent: p,
                            parent_size: pl.size,
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        for n in self.luns.keys() {
            if !stored.iter().any(|(m, _)| m == n) {
                out.push(ArrayViolation::TableMismatch { lun: *n });
            }
        }
        let reserved: u64 = stored
            .iter()
            .filter(|(_, l)| l.attached)
            .map(|(_, l)| self.extents_for(l.size))
            .sum();
        let capacity = self.capacity_extents();
        if reserved > capacity {
            out.push(ArrayViolation::OverReserved { reserved, capacity });
        }
        // A block the audit found unreadable is reported there, once.
        let unreadable: alloc::collections::BTreeSet<u64> = out
            .iter()
            .filter_map(|v| match v {
                ArrayViolation::Engine(Violation::Unreadable { addr, .. }) => Some(*addr),
                _ => None,
            })
            .collect();
        for (n, l) in &stored {
            self.check_mapping(*n, l, &mut out, &unreadable);
        }
        let hosts = self.access.index_mask();
        for (n, l) in &stored {
            let stray = (l.grants_read | l.grants_write) & !hosts;
            for host_index in (0..64).filter(|i| stray & (1u64 << i) != 0) {
                out.push(ArrayViolation::DanglingGrant {
                    lun: *n,
                    host_index,
                });
            }
        }
        let lost_luns: Vec<u32> = self.lost.luns().collect();
        for n in lost_luns {
            let fits = self.luns.get(&n).is_some_and(|l| {
                l.attached && self.lost.of(n).iter().all(|&(s, e)| s < e && e <= l.size)
            });
            if fits {
                out.push(ArrayViolation::LostData {
                    lun: n,
                    bytes: self.lost.bytes(n),
                });
            } else {
                out.push(ArrayViolation::BadLostRange { lun: n });
            }
        }
        if let Some((lost, kept)) = self.eng.rollback() {
            out.push(ArrayViolation::RolledBack { lost, kept });
        }
        Ok(out)
    }

    /// No slot of `l`'s mapping lies beyond its size; no entry is all holes.
    fn check_mapping(
        &mut self,
        n: u32,
        l: &Lun,
        out: &mut Vec<ArrayViolation>,
        unreadable: &alloc::collections::BTreeSet<u64>,
    ) {
        let extents = self.extents_for(l.size);
        let mut found = Vec::new();
        let r = self.eng.range(&l.mapping, 0, u64::MAX, |k, v| {
            let slots = unpack(v);
            if slots.iter().all(|&s| s == 0) {
                found.push(ArrayViolation::EmptyMappingEntry { lun: n, key: k });
            }
            for (i, &s) in slots.iter().enumerate() {
                let le = k.saturating_mul(EXTENTS_PER_ENTRY).saturating_add(i as u64);
                if s != 0 && le >= extents {
                    found.push(ArrayViolation::MappingBeyondSize {
                        lun: n,
                        logical_extent: le,
                    });
                }
            }
            // Bounded report: one entry past the end is enough to show it.
            found.len() < 64
        });
        out.append(&mut found);
        match r {
            Err(Error::Checksum { addr } | Error::Misplaced { addr, .. })
                if unreadable.contains(&addr) => {}
            Err(error) => out.push(ArrayViolation::UnreadableMapping { lun: n, error }),
            Ok(()) => {}
        }
    }
}
