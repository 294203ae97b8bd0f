//! Layer 3: space maps — persistent reference counts for metadata pages and data
//! extents, and the allocators that hand them out.
//!
//! Each map is an [`RcArray`]: a sparse copy-on-write radix tree whose leaves hold
//! 32-bit counts ([`COUNTS_PER_LEAF`] per 4 KiB block) and whose index nodes hold
//! [`PTRS_PER_INDEX`] child addresses. A null pointer stands for an all-zero subtree,
//! so formatting a huge pool writes almost nothing. Like every metadata page, a node
//! is modified in place only if it was written in the current transaction; otherwise
//! it is shadowed to a fresh block and the old one is released.
//!
//! The metadata map describes the blocks its own nodes live in, so changing it may
//! allocate, which changes it again. As in dm-thin's metadata space map, that
//! recursion is broken with a queue: operations are applied one at a time from
//! `pending`, and allocations made while applying one only enqueue more.
//!
//! An entry is free to hand out only if its count is zero both now *and* in the
//! committed state: a block released in this transaction may still be referenced by
//! the committed metadata, so it is not reused before the transaction commits.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::store::page::{
    self, get_u32, get_u64, put_u32, put_u64, PageKind, HEADER_SIZE, PAGE_SIZE,
};
use crate::store::page_store::PageStore;

/// Reference counts in one leaf block.
pub const COUNTS_PER_LEAF: u64 = ((PAGE_SIZE - HEADER_SIZE) / 4) as u64;
/// Child pointers in one index block.
pub const PTRS_PER_INDEX: u64 = ((PAGE_SIZE - HEADER_SIZE) / 8) as u64;

/// Which of the two space maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapId {
    /// Reference counts of metadata pages.
    Meta,
    /// Reference counts of data extents.
    Data,
}

/// One persistent array of reference counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcArray {
    /// Number of entries (blocks or extents) the array describes.
    pub entries: u64,
    /// Index levels above the leaves (0: the root is a leaf).
    pub depth: u32,
    /// Root of the current state (0 = all counts zero).
    pub root: u64,
    /// Root of the committed state.
    pub committed_root: u64,
    /// Entries whose count is not zero.
    pub allocated: u64,
    /// Entries released in this transaction that the committed state still uses.
    pub pinned: u64,
    /// Where the next allocation search starts (log order).
    pub cursor: u64,
}

/// Index levels needed above the leaves for `entries` counts.
pub fn depth_for(entries: u64) -> u32 {
    let leaves = entries.div_ceil(COUNTS_PER_LEAF).max(1);
    let mut depth = 0;
    let mut reach = 1u64;
    while reach < leaves {
        reach = reach.saturating_mul(PTRS_PER_INDEX);
        depth += 1;
    }
    depth
}

impl RcArray {
    /// An all-zero array of `entries` counts.
    pub fn new(entries: u64) -> Self {
        RcArray {
            entries,
            depth: depth_for(entries),
            root: 0,
            committed_root: 0,
            allocated: 0,
            pinned: 0,
            cursor: 0,
        }
    }

    /// Entries that can be allocated now.
    pub fn free(&self) -> u64 {
        self.entries.saturating_sub(self.allocated + self.pinned)
    }

    fn digit(&self, leaf_no: u64, level: u32) -> usize {
        let mut d = leaf_no;
        for _ in 1..level {
            d /= PTRS_PER_INDEX;
        }
        (d % PTRS_PER_INDEX) as usize
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// 0 → 1 for an entry the allocator reserved.
    Alloc,
    Inc,
    Dec,
    /// Sets the count outright (repair rebuilding a map from the references found).
    Set(u32),
}

/// Both space maps and the queue that serialises their updates.
pub struct SpaceMaps {
    /// Reference counts of metadata pages; entry `i` is block `meta_start + i`.
    pub meta: RcArray,
    /// Reference counts of data extents.
    pub data: RcArray,
    meta_start: u64,
    pending: VecDeque<(u64, Op)>,
    reserved: Vec<u64>,
    draining: bool,
    /// Data extents freed in this transaction that the last commit still counts:
    /// the device may discard them once this transaction's commit is durable.
    pub freed: FreedRuns,
    /// Metadata entries never to hand out (a bit each), while repair builds new
    /// maps beside pages the old state still uses.
    pub avoid: Option<Vec<u64>>,
}

/// Runs of data extents (start, length) freed in the current transaction, kept to
/// be discarded on the device after the commit. Bounded: past [`FreedRuns::MAX_RUNS`]
/// runs further frees are not recorded (their extents stay on the device until
/// reused; discarding is a hint).
#[derive(Clone, Debug, Default)]
pub struct FreedRuns {
    runs: Vec<(u64, u64)>,
}

impl FreedRuns {
    /// Most runs kept per transaction (1 MiB of memory).
    pub const MAX_RUNS: usize = 1 << 16;

    /// Records that extent `e` was freed.
    pub fn push(&mut self, e: u64) {
        if let Some((start, len)) = self.runs.last_mut() {
            if e == *start + *len {
                *len += 1;
                return;
            }
            if e + 1 == *start {
                *start = e;
                *len += 1;
                return;
            }
        }
        if self.runs.len() < Self::MAX_RUNS {
            self.runs.push((e, 1));
        }
    }

    /// The runs recorded, sorted and merged, leaving the list empty.
    pub fn take(&mut self) -> Vec<(u64, u64)> {
        let mut runs = core::mem::take(&mut self.runs);
        runs.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
        for (s, l) in runs {
            match out.last_mut() {
                Some((ps, pl)) if *ps + *pl >= s => *pl = (*pl).max(s + l - *ps),
                _ => out.push((s, l)),
            }
        }
        out
    }
}

fn ptr_off(i: usize) -> usize {
    HEADER_SIZE + 8 * i
}
fn cnt_off(i: usize) -> usize {
    HEADER_SIZE + 4 * i
}

/// Reads the count of entry `e` in the array rooted at `root`.
pub fn count_at<D: BlockDevice>(
    store: &mut PageStore<D>,
    a: &RcArray,
    root: u64,
    e: u64,
) -> Result<u32> {
    let leaf = leaf_at(store, a, root, e / COUNTS_PER_LEAF)?;
    if leaf == 0 {
        return Ok(0);
    }
    let b = store.read(leaf, PageKind::RcLeaf)?;
    Ok(get_u32(b, cnt_off((e % COUNTS_PER_LEAF) as usize)))
}

/// Address of leaf `leaf_no` under `root` (0 if absent).
fn leaf_at<D: BlockDevice>(
    store: &mut PageStore<D>,
    a: &RcArray,
    root: u64,
    leaf_no: u64,
) -> Result<u64> {
    let mut addr = root;
    for level in (1..=a.depth).rev() {
        if addr == 0 {
            return Ok(0);
        }
        let b = store.read(addr, PageKind::RcIndex)?;
        addr = get_u64(b, ptr_off(a.digit(leaf_no, level)));
    }
    Ok(addr)
}

impl SpaceMaps {
    /// Space maps for `meta_pages` metadata pages starting at page `meta_start`
    /// and `data_extents` data extents, all free.
    pub fn new(meta_start: u64, meta_pages: u64, data_extents: u64) -> Self {
        SpaceMaps {
            meta: RcArray::new(meta_pages),
            data: RcArray::new(data_extents),
            meta_start,
            pending: VecDeque::new(),
            reserved: Vec::new(),
            draining: false,
            freed: FreedRuns::default(),
            avoid: None,
        }
    }

    /// Restores maps from their persisted state.
    pub fn restore(meta_start: u64, meta: RcArray, data: RcArray) -> Self {
        SpaceMaps {
            meta,
            data,
            meta_start,
            pending: VecDeque::new(),
            reserved: Vec::new(),
            draining: false,
            freed: FreedRuns::default(),
            avoid: None,
        }
    }

    fn arr(&self, m: MapId) -> &RcArray {
        match m {
            MapId::Meta => &self.meta,
            MapId::Data => &self.data,
        }
    }
    fn arr_mut(&mut self, m: MapId) -> &mut RcArray {
        match m {
            MapId::Meta => &mut self.meta,
            MapId::Data => &mut self.data,
        }
    }

    /// The metadata map's entry for page `addr`.
    pub(crate) fn meta_entry(&self, addr: u64) -> Result<u64> {
        match addr.checked_sub(self.meta_start) {
            Some(e) if e < self.meta.entries => Ok(e),
            _ => Err(Error::corrupt(addr, "pointer outside the metadata area")),
        }
    }

    fn check_data(&self, e: u64) -> Result<()> {
        if e >= self.data.entries {
            return Err(Error::corrupt(
                e,
                "data extent number outside the data area",
            ));
        }
        Ok(())
    }

    /// Current count of metadata page `addr`.
    pub fn meta_count<D: BlockDevice>(&self, store: &mut PageStore<D>, addr: u64) -> Result<u32> {
        let e = self.meta_entry(addr)?;
        count_at(store, &self.meta, self.meta.root, e)
    }

    /// Current count of data extent `e`.
    pub fn data_count<D: BlockDevice>(&self, store: &mut PageStore<D>, e: u64) -> Result<u32> {
        self.check_data(e)?;
        count_at(store, &self.data, self.data.root, e)
    }

    /// Count of entry `e` of map `m` in the committed state.
    pub fn committed_count<D: BlockDevice>(
        &self,
        store: &mut PageStore<D>,
        m: MapId,
        e: u64,
    ) -> Result<u32> {
        let a = self.arr(m);
        count_at(store, a, a.committed_root, e)
    }

    /// Count of entry `e` of map `m` now.
    pub fn count<D: BlockDevice>(&self, store: &mut PageStore<D>, m: MapId, e: u64) -> Result<u32> {
        let a = self.arr(m);
        if e >= a.entries {
            return Err(Error::InvalidArgument("space map entry out of range"));
        }
        count_at(store, a, a.root, e)
    }

    /// Allocates a metadata page (count 0 → 1) and returns its address.
    pub fn alloc_meta<D: BlockDevice>(&mut self, store: &mut PageStore<D>) -> Result<u64> {
        let e = self.reserve(store, MapId::Meta)?;
        self.push(store, e, Op::Alloc)?;
        Ok(self.meta_start + e)
    }

    /// Adds a reference to metadata page `addr`, which must be in use.
    pub fn inc_meta<D: BlockDevice>(&mut self, store: &mut PageStore<D>, addr: u64) -> Result<()> {
        let e = self.meta_entry(addr)?;
        self.push(store, e, Op::Inc)
    }

    /// Sets the count of metadata page `addr` to `n` (repair).
    pub fn set_meta_count<D: BlockDevice>(
        &mut self,
        store: &mut PageStore<D>,
        addr: u64,
        n: u32,
    ) -> Result<()> {
        let e = self.meta_entry(addr)?;
        self.push(store, e, Op::Set(n))
    }

    /// Sets the count of data extent `e` to `n` (repair).
    pub fn set_data_count<D: BlockDevice>(
        &mut self,
        store: &mut PageStore<D>,
        e: u64,
        n: u32,
    ) -> Result<()> {
        self.check_data(e)?;
        self.apply_data(store, e, Op::Set(n))
    }

    /// Drops a reference to metadata page `addr`.
    pub fn dec_meta<D: BlockDevice>(&mut self, store: &mut PageStore<D>, addr: u64) -> Result<()> {
        let e = self.meta_entry(addr)?;
        self.push(store, e, Op::Dec)
    }

    /// Allocates a data extent in log order (count 0 → 1).
    pub fn alloc_data<D: BlockDevice>(&mut self, store: &mut PageStore<D>) -> Result<u64> {
        let e = self.find_free(store, MapId::Data)?;
        self.apply_data(store, e, Op::Alloc)?;
        self.data.cursor = if e + 1 >= self.data.entries { 0 } else { e + 1 };
        Ok(e)
    }

    /// Adds a reference to data extent `e`, which must be in use.
    pub fn inc_data<D: BlockDevice>(&mut self, store: &mut PageStore<D>, e: u64) -> Result<()> {
        self.check_data(e)?;
        self.apply_data(store, e, Op::Inc)
    }

    /// Drops a reference to data extent `e`.
    pub fn dec_data<D: BlockDevice>(&mut self, store: &mut PageStore<D>, e: u64) -> Result<()> {
        self.check_data(e)?;
        self.apply_data(store, e, Op::Dec)
    }

    /// Adds one reference to (`inc`) or drops one from each extent in `es`, which
    /// is sorted first: each space-map leaf is made writable once per run of
    /// extents it holds. Shadowing or freeing a B-tree leaf of packed mappings
    /// changes hundreds of neighbouring counts at once; one at a time, the path to
    /// the count's leaf would be walked for each.
    pub fn adjust_data_many<D: BlockDevice>(
        &mut self,
        store: &mut PageStore<D>,
        es: &mut [u64],
        inc: bool,
    ) -> Result<()> {
        es.sort_unstable();
        let mut zeros: Vec<u64> = Vec::new();
        let mut i = 0;
        while i < es.len() {
            self.check_data(es[i])?;
            let leaf_no = es[i] / COUNTS_PER_LEAF;
            let run = es[i..]
                .iter()
                .take_while(|&&e| e / COUNTS_PER_LEAF == leaf_no)
                .count();
            let leaf = self.writable_leaf(store, MapId::Data, es[i])?;
            let r = (|| {
                let b = store.modify(leaf, PageKind::RcLeaf)?;
                for &e in &es[i..i + run] {
                    let off = cnt_off((e % COUNTS_PER_LEAF) as usize);
                    let old = get_u32(b, off);
                    let new = if inc {
                        if old == 0 {
                            return Err(Error::corrupt(e, "reference to a free block"));
                        }
                        old.checked_add(1)
                            .ok_or(Error::RefcountOverflow { addr: e })?
                    } else {
                        old.checked_sub(1)
                            .ok_or(Error::corrupt(e, "reference count underflow"))?
                    };
                    put_u32(b, off, new);
                    if new == 0 {
                        zeros.push(e);
                    }
                }
                Ok(())
            })();
            let d = self.drain(store);
            r.and(d)?;
            i += run;
        }
        for e in zeros {
            self.data.allocated = self
                .data
                .allocated
                .checked_sub(1)
                .ok_or(Error::corrupt(e, "space map allocated counter underflow"))?;
            if self.committed_count(store, MapId::Data, e)? > 0 {
                self.data.pinned += 1;
                self.freed.push(e);
            }
        }
        Ok(())
    }

    fn apply_data<D: BlockDevice>(
        &mut self,
        store: &mut PageStore<D>,
        e: u64,
        op: Op,
    ) -> Result<()> {
        let r = self.apply(store, MapId::Data, e, op);
        let d = self.drain(store);
        r.and(d)
    }

    fn push<D: BlockDevice>(&mut self, store: &mut PageStore<D>, e: u64, op: Op) -> Result<()> {
        self.pending.push_back((e, op));
        self.drain(store)
    }

    fn drain<D: BlockDevice>(&mut self, store: &mut PageStore<D>) -> Result<()> {
        if self.draining {
            return Ok(());
        }
        self.draining = true;
        let mut res = Ok(());
        while let Some((e, op)) = self.pending.pop_front() {
            if let Err(err) = self.apply(store, MapId::Meta, e, op) {
                res = Err(err);
                self.pending.clear();
                self.reserved.clear();
                break;
            }
        }
        self.draining = false;
        res
    }

    /// Applies one count change to map `m`, shadowing the path to its leaf first.
    fn apply<D: BlockDevice>(
        &mut self,
        store: &mut PageStore<D>,
        m: MapId,
        e: u64,
        op: Op,
    ) -> Result<()> {
        let leaf = self.writable_leaf(store, m, e)?;
        let off = cnt_off((e % COUNTS_PER_LEAF) as usize);
        let b = store.modify(leaf, PageKind::RcLeaf)?;
        let old = get_u32(b, off);
        // Errors name the block: a metadata page by its address, an extent by its number.
        let at = match m {
            MapId::Meta => self.meta_start + e,
            MapId::Data => e,
        };
        let new = match op {
            Op::Alloc if old == 0 => 1,
            Op::Alloc => return Err(Error::corrupt(at, "allocated an entry that is in use")),
            Op::Inc if old == 0 => return Err(Error::corrupt(at, "reference to a free block")),
            Op::Inc => old
                .checked_add(1)
                .ok_or(Error::RefcountOverflow { addr: at })?,
            Op::Dec => old
                .checked_sub(1)
                .ok_or(Error::corrupt(at, "reference count underflow"))?,
            Op::Set(n) => n,
        };
        put_u32(b, off, new);
        if matches!(op, Op::Set(_)) {
            // Only repair sets counts, on maps it builds from nothing: no pins.
            let a = self.arr_mut(m);
            match (old, new) {
                (0, 1..) => a.allocated += 1,
                (1.., 0) => a.allocated = a.allocated.saturating_sub(1),
                _ => {}
            }
        } else if matches!(op, Op::Alloc) {
            self.arr_mut(m).allocated += 1;
            if m == MapId::Meta {
                self.reserved.retain(|&r| r != e);
            }
        } else if new == 0 {
            let a = self.arr_mut(m);
            a.allocated = a
                .allocated
                .checked_sub(1)
                .ok_or(Error::corrupt(e, "space map allocated counter underflow"))?;
            if self.committed_count(store, m, e)? > 0 {
                self.arr_mut(m).pinned += 1;
                if m == MapId::Data {
                    // Pinned until the commit: it cannot be handed out again before
                    // it is discarded.
                    self.freed.push(e);
                }
            } else if m == MapId::Meta {
                // Born and died in this transaction: nothing needs its content.
                store.forget(self.meta_start + e);
            }
        }
        Ok(())
    }

    /// Makes the path from the root of map `m` to the leaf holding entry `e`
    /// writable in this transaction, creating or shadowing nodes; returns the leaf.
    fn writable_leaf<D: BlockDevice>(
        &mut self,
        store: &mut PageStore<D>,
        m: MapId,
        e: u64,
    ) -> Result<u64> {
        let (depth, root) = {
            let a = self.arr(m);
            if e >= a.entries {
                return Err(Error::corrupt(e, "space map entry out of range"));
            }
            (a.depth, a.root)
        };
        let leaf_no = e / COUNTS_PER_LEAF;
        let kind_at = |level: u32| {
            if level == 0 {
                PageKind::RcLeaf
            } else {
                PageKind::RcIndex
            }
        };
        let mut parent: Option<(u64, usize)> = None;
        let mut addr = root;
        for level in (0..=depth).rev() {
            let kind = kind_at(level);
            let node = self.writable_node(store, addr, kind)?;
            if node != addr {
                match parent {
                    None => self.arr_mut(m).root = node,
                    Some((p, slot)) => {
                        put_u64(store.modify(p, PageKind::RcIndex)?, ptr_off(slot), node)
                    }
                }
            }
            if level == 0 {
                return Ok(node);
            }
            let slot = self.arr(m).digit(leaf_no, level);
            addr = get_u64(store.read(node, PageKind::RcIndex)?, ptr_off(slot));
            parent = Some((node, slot));
        }
        Err(Error::corrupt(root, "space map walk did not reach a leaf"))
    }

    /// Returns a node that may be modified in place: `addr` itself if this
    /// transaction wrote it, else a fresh copy (or a fresh zero node for `addr == 0`).
    fn writable_node<D: BlockDevice>(
        &mut self,
        store: &mut PageStore<D>,
        addr: u64,
        kind: PageKind,
    ) -> Result<u64> {
        if addr != 0 && page::txid(store.read(addr, kind)?) == store.txid() {
            return Ok(addr);
        }
        let e = self.reserve(store, MapId::Meta)?;
        self.pending.push_back((e, Op::Alloc));
        let new = self.meta_start + e;
        if addr == 0 {
            store.create(new, kind)?;
        } else {
            store.copy(addr, new, kind)?;
            let old = self.meta_entry(addr)?;
            self.pending.push_back((old, Op::Dec));
        }
        Ok(new)
    }

    /// Finds a free metadata entry and marks it reserved until its `Alloc` is applied.
    fn reserve<D: BlockDevice>(&mut self, store: &mut PageStore<D>, m: MapId) -> Result<u64> {
        let e = self.find_free(store, m)?;
        if m == MapId::Meta {
            self.reserved.push(e);
            self.meta.cursor = if e + 1 >= self.meta.entries { 0 } else { e + 1 };
        }
        Ok(e)
    }

    /// Scans map `m` from its cursor, wrapping once, for an entry that is zero now and
    /// in the committed state and not reserved.
    fn find_free<D: BlockDevice>(&mut self, store: &mut PageStore<D>, m: MapId) -> Result<u64> {
        let exhausted = match m {
            MapId::Meta => Error::MetadataSpaceExhausted,
            MapId::Data => Error::DataSpaceExhausted,
        };
        let a = self.arr(m).clone();
        let busy = a.allocated
            + a.pinned
            + if m == MapId::Meta {
                self.reserved.len() as u64
            } else {
                0
            };
        if busy >= a.entries {
            return Err(exhausted);
        }
        let start = if a.cursor < a.entries { a.cursor } else { 0 };
        let mut e = start;
        let mut scanned = 0u64;
        let mut committed = [0u8; PAGE_SIZE];
        while scanned < a.entries {
            let leaf_no = e / COUNTS_PER_LEAF;
            let first = (e % COUNTS_PER_LEAF) as usize;
            let last = (COUNTS_PER_LEAF as usize).min(first + (a.entries - e) as usize);
            let cur = leaf_at(store, &a, a.root, leaf_no)?;
            let com = leaf_at(store, &a, a.committed_root, leaf_no)?;
            let have_com = com != 0 && com != cur;
            if have_com {
                committed.copy_from_slice(store.read(com, PageKind::RcLeaf)?);
            }
            let cur_buf = if cur != 0 {
                Some(store.read(cur, PageKind::RcLeaf)?)
            } else {
                None
            };
            for i in first..last {
                let busy_now = cur_buf.is_some_and(|b| get_u32(b, cnt_off(i)) != 0);
                let busy_then = have_com && get_u32(&committed, cnt_off(i)) != 0;
                let cand = leaf_no * COUNTS_PER_LEAF + i as u64;
                let reserved = m == MapId::Meta
                    && (self.reserved.contains(&cand)
                        || self.avoid.as_ref().is_some_and(|a| {
                            a.get((cand / 64) as usize)
                                .is_some_and(|w| w & (1 << (cand % 64)) != 0)
                        }));
                if !(busy_now || busy_then || reserved) {
                    return Ok(cand);
                }
            }
            scanned += (last - first) as u64;
            e += (last - first) as u64;
            if e >= a.entries {
                e = 0;
            }
        }
        Err(exhausted)
    }

    /// Marks the current state committed: released entries become reusable.
    pub fn committed(&mut self) {
        for a in [&mut self.meta, &mut self.data] {
            a.committed_root = a.root;
            a.pinned = 0;
        }
    }

    /// Calls `f` with every index and leaf node of map `m` (current state), with its kind.
    pub fn for_each_node<D: BlockDevice>(
        &self,
        store: &mut PageStore<D>,
        m: MapId,
        mut f: impl FnMut(u64, PageKind),
    ) -> Result<()> {
        let a = self.arr(m);
        if a.root == 0 {
            return Ok(());
        }
        let mut stack: Vec<(u64, u32)> = Vec::new();
        stack.push((a.root, a.depth));
        while let Some((addr, level)) = stack.pop() {
            if level == 0 {
                store.read(addr, PageKind::RcLeaf)?;
                f(addr, PageKind::RcLeaf);
                continue;
            }
            f(addr, PageKind::RcIndex);
            let b = store.read(addr, PageKind::RcIndex)?;
            let mut kids: Vec<u64> = Vec::new();
            for i in 0..PTRS_PER_INDEX as usize {
                let c = get_u64(b, ptr_off(i));
                if c != 0 {
                    kids.push(c);
                }
            }
            stack.extend(kids.into_iter().map(|c| (c, level - 1)));
        }
        Ok(())
    }
}
