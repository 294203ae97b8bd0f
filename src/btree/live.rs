//! Live reference counts: how many references each node and data extent has from a
//! given set of trees, rather than the stored counts, which also count the trees
//! that wait in the free queue.
//!
//! Sharing is reported from reference counts ([`Ctx::data_sharing`],
//! [`Ctx::range_shared`]); while dropped trees wait to be freed their references
//! still count, so a node only they share with a live tree looks shared. Walking the
//! live trees gives the counts reclamation will leave, without freeing anything:
//! reporting stays exact and read-only.
//!
//! Memory: a byte per metadata page, and a byte per data extent of one chunk of
//! [`CHUNK`] extents (the counts saturate at 255: only 0, 1 and "more" matter).

use alloc::vec;
use alloc::vec::Vec;

use super::node::{self, Ref};
use super::{Ctx, Tree};
use crate::device::BlockDevice;
use crate::error::Result;

/// Data extents counted per walk.
pub const CHUNK: u64 = 4 << 20;

/// References from a set of live trees: to every metadata page, and to the data
/// extents of one chunk.
pub struct LiveCounts {
    /// The first metadata page: the metadata map's entry 0.
    meta_start: u64,
    meta: Vec<u8>,
    lo: u64,
    data: Vec<u8>,
}

impl LiveCounts {
    /// References to node `addr` (0 outside the metadata area).
    pub fn node(&self, addr: u64) -> u32 {
        addr.checked_sub(self.meta_start)
            .and_then(|i| self.meta.get(i as usize))
            .map_or(0, |&c| u32::from(c))
    }

    /// References to data extent `e`; `None` when `e` lies outside this chunk.
    pub fn extent(&self, e: u64) -> Option<u32> {
        e.checked_sub(self.lo)
            .and_then(|i| self.data.get(i as usize))
            .map(|&c| u32::from(c))
    }

    /// Extents of this chunk that some live tree maps.
    pub fn extents_in_use(&self) -> u64 {
        self.data.iter().filter(|&&c| c > 0).count() as u64
    }
}

impl<D: BlockDevice> Ctx<'_, D> {
    /// Counts the references `trees` hold (each tree's handle counts one) and their
    /// nodes hold, to every metadata page and to the data extents from `lo` (up to
    /// [`CHUNK`] of them, and no further than `extents`). Values that refer to
    /// trees are not followed: `trees` must list every tree that counts. Each
    /// node is expanded once, so the work is bounded by the metadata size.
    ///
    /// `meta_start` is the first metadata page (the metadata map's entry 0).
    pub fn live_counts(
        &mut self,
        trees: &[Tree],
        meta_start: u64,
        (lo, extents): (u64, u64),
    ) -> Result<LiveCounts> {
        let n = extents.saturating_sub(lo).min(CHUNK);
        let mut c = LiveCounts {
            meta_start,
            meta: vec![0; self.sm.meta.entries as usize],
            lo,
            data: vec![0; n as usize],
        };
        let mut stack: Vec<(u64, Option<u8>)> = Vec::new();
        let mut refs: Vec<u64> = Vec::new();
        for t in trees.iter().filter(|t| t.root != 0) {
            stack.push((t.root, None));
            while let Some((addr, level)) = stack.pop() {
                let i = self.sm.meta_entry(addr)? as usize;
                c.meta[i] = c.meta[i].saturating_add(1);
                if c.meta[i] > 1 {
                    // Expanded already: its references are counted once, as stored.
                    continue;
                }
                let (b, h) = self.node(addr, level, t)?;
                if h.is_leaf() {
                    refs.clear();
                    for j in 0..h.nr {
                        for r in node::value_refs(h.kind, node::value(b, &h, j)) {
                            if let Ref::Data(e) = r {
                                refs.push(e);
                            }
                        }
                    }
                    for &e in &refs {
                        if let Some(x) = e.checked_sub(lo).and_then(|x| c.data.get_mut(x as usize))
                        {
                            *x = x.saturating_add(1);
                        }
                    }
                } else {
                    for j in 0..h.nr {
                        stack.push((node::child(b, &h, j), Some(h.level - 1)));
                    }
                }
            }
        }
        Ok(c)
    }
}
