//! Background freeing at the array level: when the free queue is worked off.
//!
//! `delete`, `detach`, `attach`, `restore` and the group operations queue the
//! mapping they drop ([`Engine::drop_tree_later`](crate::engine::Engine::drop_tree_later)) and return. The queue is
//! then worked off
//! - by [`Array::reclaim`], which hosts call when idle (the NBD server does);
//! - by every [`Array::flush`], a bounded step ([`RECLAIM_PER_FLUSH`]) before its
//!   commit;
//! - synchronously, by a write or an operation that needs space the queue still
//!   holds (a data extent when none is free, metadata pages when fewer than
//!   `META_MARGIN` are): steps of at most `RECLAIM_STEP` until enough would be
//!   free, then the one commit that the write path makes anyway when it runs out
//!   of free extents (freed space is allocatable only once committed).
//!   Reservations stay exact: space that waits in the queue is promised to no LUN,
//!   and the writer that needs it frees it first.
//!
//! What waits in the queue still holds its references, so while anything waits the
//! calls that report sharing (`lun_info`, `luns`, `map`) count the references of
//! the live mappings instead of reading the stored counts: exact at every moment,
//! and read-only.

use alloc::vec;
use alloc::vec::Vec;

use crate::btree::Tree;
use crate::device::BlockDevice;
use crate::engine::{ReclaimStats, LIVE_CHUNK};
use crate::error::Result;

use super::Array;

/// Work (nodes visited plus extent references released) a flush does before it
/// commits, when trees wait to be freed.
pub const RECLAIM_PER_FLUSH: u64 = 4096;
/// Work done between two commits when a write waits for space the queue holds.
pub(crate) const RECLAIM_STEP: u64 = 1024;
/// Free metadata pages below which operations first free queued trees: more than
/// any single write or operation allocates.
pub(crate) const META_MARGIN: u64 = 128;

impl<D: BlockDevice> Array<D> {
    /// Frees dropped mappings until `budget` units of work are done (tree nodes
    /// visited plus extent references released) or nothing waits, and commits what
    /// it freed. Management operations return without freeing what they drop;
    /// hosts call this when idle (any budget: 4,096 units take well under a
    /// millisecond), and [`Array::flush`] does a little each time.
    ///
    /// Returns what was done; `remaining` is 0 once nothing waits.
    ///
    /// Errors: device errors (the array is poisoned, as for any commit).
    pub fn reclaim(&mut self, budget: u64) -> Result<ReclaimStats> {
        self.live()?;
        let stats = self.eng.reclaim(budget)?;
        if stats.work > 0 {
            self.dirty = true;
            self.commit()?;
        }
        Ok(stats)
    }

    /// True while dropped mappings wait to be freed.
    pub fn reclaim_pending(&self) -> bool {
        self.eng.reclaim_pending()
    }

    /// When trees wait in the free queue and fewer than `data` extents or
    /// `META_MARGIN` metadata pages are free, frees queued trees until enough would
    /// be free after a commit (or nothing waits), then commits once: what a step
    /// frees is allocatable only after the commit. False (and nothing done) when
    /// nothing waits or nothing is short: the caller then handles a shortage as
    /// without a queue. It commits, so it runs before an operation changes
    /// anything, or where a write may commit early anyway.
    pub(super) fn make_room(&mut self, data: u64) -> Result<bool> {
        let short = |a: &Self| a.eng.data_free() < data || a.eng.meta_free() < META_MARGIN;
        if !self.eng.reclaim_pending() || !short(self) {
            return Ok(false);
        }
        loop {
            // A step allocates a few metadata pages itself (the queue's path, the
            // space map leaves it touches): keep it well inside what is free.
            let step = (self.eng.meta_free() / 4).clamp(16, RECLAIM_STEP);
            self.eng.reclaim(step)?;
            let s = self.eng.space();
            let after_commit_data = self.eng.data_free() + s.data_pinned;
            let after_commit_meta = self.eng.meta_free() + s.meta_pinned;
            if !self.eng.reclaim_pending()
                || (after_commit_data >= data && after_commit_meta >= META_MARGIN)
                || self.eng.meta_free() < 16
            {
                break;
            }
        }
        self.dirty = true;
        self.commit()?;
        Ok(true)
    }

    /// Every live mapping: the trees whose references count once the queue is
    /// worked off (the LUN table, hosts and lost ranges share nothing with them).
    pub(super) fn live_mappings(&self) -> Vec<Tree> {
        self.luns.values().map(|l| l.mapping).collect()
    }

    /// (exclusive, shared) data extents of each of `trees`. While dropped mappings
    /// wait to be freed, the stored counts still include their references, so the
    /// live mappings are walked for the counts they alone hold (once per chunk of
    /// [`LIVE_CHUNK`] extents): exact at every moment, and nothing is written.
    pub(super) fn sharing_of(&mut self, trees: &[Tree]) -> Result<Vec<(u64, u64)>> {
        if !self.eng.reclaim_pending() {
            return trees.iter().map(|t| self.eng.data_sharing(t)).collect();
        }
        let live = self.live_mappings();
        let mut out = vec![(0u64, 0u64); trees.len()];
        let extents = self.eng.geometry().data_extents;
        let mut lo = 0;
        while lo < extents {
            let counts = self.eng.live_counts(&live, lo)?;
            for (t, o) in trees.iter().zip(out.iter_mut()) {
                let (e, s) = self.eng.data_sharing_live(t, &counts)?;
                o.0 += e;
                o.1 += s;
            }
            lo += LIVE_CHUNK;
        }
        Ok(out)
    }

    /// Bytes of data that wait to be freed: held only by dropped mappings in the
    /// free queue. They are counted in [`PoolInfo::allocated_bytes`](super::PoolInfo::allocated_bytes) until
    /// reclaimed. 0 in O(1) when nothing waits; otherwise the live mappings are
    /// walked (as [`Array::lun_info`] does), and nothing is written.
    ///
    /// Errors: device errors and damage met on the walk.
    pub fn pending_bytes(&mut self) -> Result<u64> {
        if !self.eng.reclaim_pending() {
            return Ok(0);
        }
        let live = self.live_mappings();
        let extents = self.eng.geometry().data_extents;
        let mut in_use = 0u64;
        let mut lo = 0;
        while lo < extents {
            in_use += self.eng.live_counts(&live, lo)?.extents_in_use();
            lo += LIVE_CHUNK;
        }
        let allocated = self.eng.space().data_allocated;
        Ok(allocated.saturating_sub(in_use) * self.extent_size)
    }

    /// The flush's share of reclamation.
    pub(super) fn reclaim_some(&mut self) -> Result<()> {
        if self.eng.reclaim_pending() {
            self.eng.reclaim(RECLAIM_PER_FLUSH)?;
            self.dirty = true;
        }
        Ok(())
    }
}
