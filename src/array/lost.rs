//! Lost ranges: the parts of LUNs whose mapping [`Array::repair`] could not read
//! back. They read as [`Error::LostData`] (never as zeros, never as stale data) until
//! written or discarded, and a copy made of them inherits them.
//!
//! Kept in RAM per LUN (sorted, disjoint byte ranges; none in an array that was never
//! repaired) and on the device in a B-tree in root slot [`LOST_SLOT`], rewritten
//! whole at the commit after any change: key `lun << 44 | first sector`, value the
//! end sector (exclusive), 8 bytes, little-endian.
//!
//! [`Array::repair`]: super::Array::repair

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::btree::Tree;
use crate::device::BlockDevice;
use crate::engine::{Engine, ValueKind};
use crate::error::{Error, Result};

use super::SECTOR;

/// The engine root slot of the lost-range tree.
pub(crate) const LOST_SLOT: usize = 2;
/// Bits of a key that hold the first sector (2^44 sectors is 8 PiB, beyond any pool).
pub(crate) const SECTOR_BITS: u32 = 44;

/// Every LUN's lost ranges; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LostRanges {
    luns: BTreeMap<u32, Vec<(u64, u64)>>,
    /// Changed since last written to the tree.
    dirty: bool,
}

impl LostRanges {
    /// Reads the tree in [`LOST_SLOT`] (none: nothing lost).
    pub fn load<D: BlockDevice>(eng: &mut Engine<D>) -> Result<LostRanges> {
        let mut l = LostRanges::default();
        let Some(t) = eng.root(LOST_SLOT)? else {
            return Ok(l);
        };
        if t.value_size() != 8 || t.kind() != ValueKind::Opaque {
            return Err(Error::corrupt(
                t.root(),
                "lost-range tree has the wrong shape",
            ));
        }
        let mut bad = false;
        eng.range(&t, 0, u64::MAX, |k, v| {
            let mut a = [0u8; 8];
            a.copy_from_slice(v);
            let lun = k >> SECTOR_BITS;
            let start = k & ((1 << SECTOR_BITS) - 1);
            let end = u64::from_le_bytes(a);
            match u32::try_from(lun) {
                Ok(n) if start < end && end < 1 << SECTOR_BITS => {
                    l.luns
                        .entry(n)
                        .or_default()
                        .push((start * SECTOR, end * SECTOR));
                    true
                }
                _ => {
                    bad = true;
                    false
                }
            }
        })?;
        if bad {
            return Err(Error::corrupt(
                t.root(),
                "lost-range tree holds an invalid range",
            ));
        }
        for v in l.luns.values_mut() {
            let sorted = v.windows(2).all(|w| w[0].1 <= w[1].0);
            if !sorted {
                return Err(Error::corrupt(t.root(), "lost ranges of a LUN overlap"));
            }
        }
        Ok(l)
    }

    /// Rewrites the tree if anything changed (part of the array's write-back).
    pub fn write_back<D: BlockDevice>(&mut self, eng: &mut Engine<D>) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let fresh = if self.luns.is_empty() {
            None
        } else {
            let mut t = Tree::empty(8, ValueKind::Opaque)?;
            for (&n, ranges) in &self.luns {
                for &(s, e) in ranges {
                    let key = (u64::from(n) << SECTOR_BITS) | (s / SECTOR);
                    eng.insert(&mut t, key, &(e / SECTOR).to_le_bytes())?;
                }
            }
            Some(t)
        };
        if let Some(old) = eng.set_root(LOST_SLOT, fresh)? {
            eng.drop_tree(old)?;
        }
        self.dirty = false;
        Ok(())
    }

    /// LUN `n`'s lost ranges, in order.
    pub fn of(&self, n: u32) -> &[(u64, u64)] {
        self.luns.get(&n).map_or(&[], Vec::as_slice)
    }

    /// Bytes of LUN `n` that are lost.
    pub fn bytes(&self, n: u32) -> u64 {
        self.of(n).iter().map(|(s, e)| e - s).sum()
    }

    /// LUNs with lost ranges.
    pub fn luns(&self) -> impl Iterator<Item = u32> + '_ {
        self.luns.keys().copied()
    }

    /// Refuses a read of `len` bytes at `offset` of LUN `n` that touches a lost range.
    pub fn check_read(&self, n: u32, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let end = offset.saturating_add(len);
        match self.of(n).iter().find(|&&(s, e)| s < end && offset < e) {
            Some(&(s, e)) => {
                let from = s.max(offset);
                Err(Error::LostData {
                    lun: n,
                    offset: from,
                    len: e.min(end) - from,
                })
            }
            None => Ok(()),
        }
    }

    /// Bytes `offset .. offset + len` of LUN `n` were written or discarded: no
    /// longer lost. True when that changed anything (the change must be committed).
    pub fn clear(&mut self, n: u32, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        let Some(v) = self.luns.get_mut(&n) else {
            return false;
        };
        if len == 0 || !v.iter().any(|&(s, e)| s < end && offset < e) {
            return false;
        }
        let mut out = Vec::with_capacity(v.len() + 1);
        for &(s, e) in v.iter() {
            if e <= offset || end <= s {
                out.push((s, e));
                continue;
            }
            if s < offset {
                out.push((s, offset));
            }
            if end < e {
                out.push((end, e));
            }
        }
        if out.is_empty() {
            self.luns.remove(&n);
        } else {
            *v = out;
        }
        self.dirty = true;
        true
    }

    /// LUN `to` now holds LUN `from`'s image: it has `from`'s lost ranges.
    pub fn copy(&mut self, from: u32, to: u32) {
        let ranges = self.of(from).to_vec();
        self.set(to, ranges);
    }

    /// LUN `n` holds no data any more (deleted, detached).
    pub fn remove(&mut self, n: u32) {
        self.set(n, Vec::new());
    }

    /// Replaces LUN `n`'s lost ranges (sorted, disjoint, not empty each).
    pub fn set(&mut self, n: u32, ranges: Vec<(u64, u64)>) {
        let had = self.luns.contains_key(&n);
        if ranges.is_empty() {
            if had {
                self.luns.remove(&n);
                self.dirty = true;
            }
        } else {
            self.luns.insert(n, ranges);
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn clearing_splits_and_reads_are_refused_only_where_lost() {
        let mut l = LostRanges::default();
        l.set(3, vec![(4096, 65536)]);
        assert_eq!(l.check_read(3, 0, 4096), Ok(()));
        assert_eq!(
            l.check_read(3, 0, 8192),
            Err(Error::LostData {
                lun: 3,
                offset: 4096,
                len: 4096
            })
        );
        assert_eq!(l.check_read(4, 4096, 512), Ok(()));
        assert!(!l.clear(3, 8192, 0), "an empty write changes nothing");
        assert!(l.clear(3, 8192, 512));
        assert_eq!(l.of(3), &[(4096, 8192), (8704, 65536)]);
        assert_eq!(l.check_read(3, 8192, 512), Ok(()));
        assert_eq!(l.bytes(3), 4096 + 65536 - 8704);
        l.copy(3, 5);
        assert_eq!(l.of(5), l.of(3));
        l.clear(3, 0, 1 << 20);
        assert_eq!(l.of(3), &[]);
        assert_eq!(l.luns().collect::<Vec<_>>(), vec![5]);
        l.remove(5);
        assert_eq!(
            l,
            LostRanges {
                luns: BTreeMap::new(),
                dirty: true
            }
        );
    }
}
