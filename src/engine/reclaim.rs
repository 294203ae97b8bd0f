//! Deferred freeing: the free queue, and reclamation worked off a little at a time.
//!
//! Dropping a tree eagerly costs what the tree alone owns, which for a diverged copy
//! can be gigabytes of extents. [`Engine::drop_tree_later`] instead inserts the
//! tree's root into the *free queue*, a B-tree of node references committed with
//! everything else, and returns after one insert. [`Engine::reclaim`] then frees
//! from the front of the queue, a budget of work at a time, in the manner of ZFS's
//! asynchronous destroy.
//!
//! Each queue entry *is* a reference to a node, counted in the metadata space map
//! like any parent pointer (its values are [`ValueKind::Tree`] references, so the
//! audit, scrub and repair walks see queued trees as they see live ones). One step
//! takes the front entry and:
//! - if the node has other references, removes the entry and gives back its one;
//! - otherwise the node dies: a leaf's extents are released (and any tree its
//!   values hold is queued); an interior node's children that other trees share
//!   lose its reference at once, and the others are queued *in place of* it, each
//!   entry taking over the reference the node held; then the node is freed.
//!
//! So every count is exact at every commit, a power cut anywhere resumes from the
//! committed queue, and nothing is freed twice or while referenced. Children are
//! queued at the front (keys below every other entry), so the queue is worked
//! depth first and holds at most a path's worth of siblings per queued tree.

use alloc::vec::Vec;

use crate::btree::node::{self, Ref, ValueKind, MAX_LEVEL};
use crate::btree::{Ctx, Tree};
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::store::page::{get_u64, PageKind};

use super::Engine;

/// Bytes of a queue value: the node's address (u64), its level plus one (u8, 0 when
/// not known: the root of a queued tree), then zeros.
pub(crate) const QUEUE_VALUE: usize = 16;
const LEVEL_OFF: usize = 8;
/// Keys of dropped trees count up from here; children of expanded nodes count down.
const MIDDLE: u64 = 1 << 63;

/// The free queue: a tree of node references, and its key counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FreeQueue {
    /// The tree (values [`QUEUE_VALUE`] bytes of [`ValueKind::Tree`]).
    pub tree: Tree,
    /// The key the next expanded child takes, minus one (entries lie above it).
    pub front: u64,
    /// The key the next dropped tree takes (entries lie below it).
    pub back: u64,
    /// Entries in the queue.
    pub entries: u64,
}

impl FreeQueue {
    /// An empty queue.
    pub fn empty() -> FreeQueue {
        FreeQueue {
            tree: Tree {
                root: 0,
                value_size: QUEUE_VALUE as u16,
                kind: ValueKind::Tree,
            },
            front: MIDDLE,
            back: MIDDLE,
            entries: 0,
        }
    }

    /// Rebuilds a queue from its persisted parts, checking what can be checked.
    pub fn from_parts(root: u64, front: u64, back: u64, entries: u64) -> Result<FreeQueue> {
        let bad = |w| Err(Error::corrupt(0, w));
        if front > MIDDLE || back < MIDDLE {
            return bad("free queue key counters out of range");
        }
        if (root == 0) != (entries == 0) || entries > back - front {
            return bad("free queue entry count does not match its keys");
        }
        let mut q = FreeQueue::empty();
        q.tree.root = root;
        q.front = front;
        q.back = back;
        q.entries = entries;
        Ok(q)
    }

    /// True when nothing waits to be freed.
    pub fn is_empty(&self) -> bool {
        self.tree.root == 0
    }
}

/// A queue value referring to `addr` at `level` (`None`: a tree's root).
fn entry(addr: u64, level: Option<u8>) -> [u8; QUEUE_VALUE] {
    let mut v = [0u8; QUEUE_VALUE];
    v[..8].copy_from_slice(&addr.to_le_bytes());
    v[LEVEL_OFF] = level.map_or(0, |l| l + 1);
    v
}

/// What reclamation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimStats {
    /// Work done: nodes visited plus extent references released.
    pub work: u64,
    /// Metadata pages freed.
    pub nodes_freed: u64,
    /// Data extent references released.
    pub extent_refs: u64,
    /// Entries left in the free queue afterwards (0: nothing waits).
    pub remaining: u64,
}

impl<D: BlockDevice> Ctx<'_, D> {
    /// Appends the tree rooted at `root` to the back of the queue.
    fn queue_push_back(&mut self, q: &mut FreeQueue, root: u64) -> Result<()> {
        let key = q.back;
        let next = key
            .checked_add(1)
            .ok_or(Error::corrupt(0, "free queue keys exhausted"))?;
        self.insert(&mut q.tree, key, &entry(root, None))?;
        q.back = next;
        q.entries += 1;
        Ok(())
    }

    /// Puts `nodes` (in order) at the front of the queue, before every entry.
    fn queue_push_front(&mut self, q: &mut FreeQueue, nodes: &[(u64, Option<u8>)]) -> Result<()> {
        let n = nodes.len() as u64;
        let first = q
            .front
            .checked_sub(n)
            .ok_or(Error::corrupt(0, "free queue keys exhausted"))?;
        for (i, &(addr, level)) in nodes.iter().enumerate() {
            self.insert(&mut q.tree, first + i as u64, &entry(addr, level))?;
        }
        q.front = first;
        q.entries += n;
        Ok(())
    }

    /// One step of reclamation: handles the front entry. False when the queue is empty.
    fn reclaim_one(&mut self, q: &mut FreeQueue, stats: &mut ReclaimStats) -> Result<bool> {
        let mut front: Option<(u64, [u8; QUEUE_VALUE])> = None;
        let t = q.tree;
        self.range(&t, 0, u64::MAX, |k, v| {
            let mut e = [0u8; QUEUE_VALUE];
            e.copy_from_slice(v);
            front = Some((k, e));
            false
        })?;
        let Some((key, v)) = front else {
            return Ok(false);
        };
        let addr = get_u64(&v, 0);
        let level = match v[LEVEL_OFF] {
            0 => None,
            l if l - 1 <= MAX_LEVEL => Some(l - 1),
            _ => {
                return Err(Error::corrupt(
                    addr,
                    "free queue entry has an invalid level",
                ))
            }
        };
        stats.work += 1;
        // The entry's reference passes to this step.
        self.remove_key(&mut q.tree, key, false)?;
        q.entries = q.entries.saturating_sub(1);
        let rc = self.sm.meta_count(self.st, addr)?;
        if rc == 0 {
            return Err(Error::corrupt(addr, "free queue refers to a free node"));
        }
        if rc > 1 {
            self.sm.dec_meta(self.st, addr)?;
            return Ok(true);
        }
        // The last reference: read what the node points to before it is freed.
        let b = self.st.read(addr, PageKind::BtreeNode)?;
        let h = node::header(b, addr)?;
        if level.is_some_and(|l| l != h.level) {
            return Err(Error::corrupt(addr, "B-tree child at the wrong level"));
        }
        let mut extents: Vec<u64> = Vec::new();
        let mut queued: Vec<(u64, Option<u8>)> = Vec::new();
        if h.is_leaf() {
            for i in 0..h.nr {
                for r in node::value_refs(h.kind, node::value(b, &h, i)) {
                    match r {
                        Ref::Data(e) => extents.push(e),
                        Ref::Tree(r) => queued.push((r, None)),
                    }
                }
            }
        } else {
            if h.nr == 0 {
                return Err(Error::corrupt(addr, "empty interior B-tree node"));
            }
            let children: Vec<u64> = (0..h.nr).map(|i| node::child(b, &h, i)).collect();
            // A child another tree shares only loses this node's reference: give it
            // back now rather than queue it (what its step would do). Only the
            // children that die with this node are queued.
            for child in children {
                if self.sm.meta_count(self.st, child)? > 1 {
                    self.sm.dec_meta(self.st, child)?;
                    stats.work += 1;
                } else {
                    queued.push((child, Some(h.level - 1)));
                }
            }
        }
        self.sm.dec_meta(self.st, addr)?;
        stats.nodes_freed += 1;
        stats.extent_refs += extents.len() as u64;
        stats.work += extents.len() as u64;
        self.sm.adjust_data_many(self.st, &mut extents, false)?;
        // The children's references move from the freed node to queue entries.
        self.queue_push_front(q, &queued)?;
        Ok(true)
    }
}

impl<D: BlockDevice> Engine<D> {
    /// Gives back the reference `tree` holds, like [`Engine::drop_tree`], in time
    /// that does not depend on the tree's size: the tree is queued, and freed by
    /// later [`Engine::reclaim`] calls. Its nodes and extents stay counted (and
    /// unallocatable) until then.
    pub fn drop_tree_later(&mut self, tree: Tree) -> Result<()> {
        if tree.root == 0 {
            return Ok(());
        }
        self.change_queue(|cx, q| cx.queue_push_back(q, tree.root))
    }

    /// Frees queued trees, front first, until `budget` units of work are done
    /// (nodes visited plus extent references released; a leaf is handled whole,
    /// so the last step may overshoot by a leaf's references) or the queue is
    /// empty. The changes commit with the next [`Engine::commit`]; what a step
    /// frees becomes allocatable after it, like any freed block.
    pub fn reclaim(&mut self, budget: u64) -> Result<ReclaimStats> {
        let mut stats = ReclaimStats::default();
        self.live()?;
        if !self.queue.is_empty() && budget > 0 {
            self.change_queue(|cx, q| {
                while stats.work < budget && cx.reclaim_one(q, &mut stats)? {}
                Ok(())
            })?;
        }
        stats.remaining = self.queue.entries;
        Ok(stats)
    }

    /// True when queued trees wait to be freed.
    pub fn reclaim_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Entries in the free queue: queued trees and subtrees waiting to be freed.
    pub fn reclaim_queue_len(&self) -> u64 {
        self.queue.entries
    }

    /// Empties the free queue without freeing anything: for repair, which rebuilds
    /// every count from the live trees alone.
    pub(crate) fn forget_free_queue(&mut self) {
        self.changed |= !self.queue.is_empty();
        self.queue = FreeQueue::empty();
    }

    /// Runs a change that may touch the queue; errors poison the engine like
    /// [`Engine::change`].
    fn change_queue<T>(
        &mut self,
        f: impl FnOnce(&mut Ctx<'_, D>, &mut FreeQueue) -> Result<T>,
    ) -> Result<T> {
        let mut q = self.queue;
        let r = self.change(|cx| f(cx, &mut q));
        if r.is_ok() {
            self.queue = q;
        }
        r
    }
}

impl<D: BlockDevice> Engine<D> {
    /// The free queue's own invariants, beyond the counts the audit compares: every
    /// key between the counters, every level byte a level and the level of the node
    /// it names, the entry count right. Unreadable pages are the audit's to report.
    pub(super) fn audit_queue(&mut self) -> Vec<super::Violation> {
        let mut out = Vec::new();
        let q = self.queue;
        if q.is_empty() {
            return out;
        }
        let mut entries: Vec<(u64, u64, u8)> = Vec::new();
        let r = self.read_ctx().range(&q.tree, 0, u64::MAX, |k, v| {
            entries.push((k, get_u64(v, 0), v[LEVEL_OFF]));
            true
        });
        if r.is_err() {
            return out;
        }
        let bad = |key, what| super::Violation::FreeQueue { key, what };
        if entries.len() as u64 != q.entries {
            out.push(bad(0, "the queue's entry count differs from its entries"));
        }
        for (key, addr, level) in entries {
            if key < q.front || key >= q.back {
                out.push(bad(key, "key outside the queue's counters"));
            }
            match level {
                0 => {}
                l if l - 1 > MAX_LEVEL => out.push(bad(key, "invalid level")),
                l => {
                    let at = self
                        .st
                        .read(addr, PageKind::BtreeNode)
                        .ok()
                        .and_then(|b| node::header(b, addr).ok())
                        .map(|h| h.level);
                    if at.is_some_and(|at| at != l - 1) {
                        out.push(bad(key, "the node is at another level than the entry says"));
                    }
                }
            }
        }
        out
    }

    /// Marks in `seen` every page the free queue holds: its own nodes and those of
    /// the trees it queues, as far as they can be read. Repair calls it so that the
    /// new commit it builds never overwrites a page of the old one.
    pub(crate) fn mark_queued(&mut self, seen: &mut super::salvage::Seen) {
        let mut stack: Vec<u64> = Vec::new();
        if !self.queue.is_empty() {
            stack.push(self.queue.tree.root);
        }
        while let Some(addr) = stack.pop() {
            if !seen.mark(addr) {
                continue;
            }
            let Ok(b) = self.st.read(addr, PageKind::BtreeNode) else {
                continue;
            };
            let Ok(h) = node::header(b, addr) else {
                continue;
            };
            for i in 0..h.nr {
                if h.is_leaf() {
                    for r in node::value_refs(h.kind, node::value(b, &h, i)) {
                        if let Ref::Tree(t) = r {
                            stack.push(t);
                        }
                    }
                } else {
                    stack.push(node::child(b, &h, i));
                }
            }
        }
    }
}
