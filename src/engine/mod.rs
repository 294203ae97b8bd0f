//! Layer 5b: transactions — the [`Engine`] that ties device, cache, space maps and
//! trees together and commits them atomically.
//!
//! Nothing committed is ever overwritten: every change goes to blocks that are free
//! in the committed state. [`Engine::commit`] writes those blocks, flushes, writes
//! the superblock slot of the new generation, and flushes again. A crash before the
//! second flush returns leaves the previous slot as the newest valid one, so open
//! recovers the previous commit; after it, the new one.

mod audit;
mod reclaim;
pub(crate) mod salvage;
mod scrub;
mod slots;
pub(crate) mod superblock;

use crate::btree::Ctx;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::store::page::PAGE_SIZE;
use crate::store::page_store::PageStore;
use crate::store::space_map::{MapId, RcArray, SpaceMaps};
use superblock::{MapRoot, Superblock};

pub use crate::btree::node::ValueKind;
pub use crate::btree::Tree;
pub use crate::btree::{LiveCounts, LIVE_CHUNK};
pub use crate::store::page_store::CacheStats;
pub use scrub::{ScrubProblem, ScrubReport, MAX_PROBLEMS};
pub use superblock::{is_valid_extent_size, Geometry, CLIENT_BYTES, ROOT_SLOTS};
pub use superblock::{MAX_DATA_EXTENTS, MAX_EXTENT_SIZE, MIN_EXTENT_SIZE, SUPERBLOCK_PAGES};

/// What [`is_valid_extent_size`] requires, as an error message.
pub(crate) const EXTENT_SIZE_RULE: &str = "extent size must be a power of two from 4 KiB to 1 MiB";
pub use audit::Violation;
pub use reclaim::ReclaimStats;

/// Default data extent size: 64 KiB.
pub const DEFAULT_EXTENT_SIZE: u32 = 64 * 1024;
/// Default cache budget: 4 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 4 << 20;

/// Options for [`Engine::format`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatOptions {
    /// Data extent size in bytes: a power of two from 4 KiB to 1 MiB.
    pub extent_size: u32,
    /// Metadata pages to provision; `None` picks [`default_metadata_pages`].
    pub metadata_pages: Option<u64>,
    /// Cache budget in bytes for the returned engine.
    pub cache_bytes: usize,
    /// An id stored in the superblock.
    pub array_id: [u8; 16],
    /// Copies of every metadata page: 2 (the default: a bad copy is healed from
    /// the other) or 1. The superblock always has two.
    pub metadata_copies: u32,
}

/// Default number of copies of every metadata page.
pub const DEFAULT_METADATA_COPIES: u32 = 2;

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            extent_size: DEFAULT_EXTENT_SIZE,
            metadata_pages: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
            array_id: [0; 16],
            metadata_copies: DEFAULT_METADATA_COPIES,
        }
    }
}

/// Options for [`Engine::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Cache budget in bytes (at least 16 blocks are always cached).
    pub cache_bytes: usize,
    /// When the newest commit cannot be read (both copies of its superblock are
    /// bad), open the newest readable one instead of failing with
    /// [`Error::CommitLost`]; the rollback is recorded and reported.
    pub allow_rollback: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
            allow_rollback: false,
        }
    }
}

/// Metadata pages provisioned by default for a device of `pages` 4 KiB pages and
/// extents of `extent_pages` pages: room for 48 bytes of mapping and counts per data
/// extent, plus 64 blocks. The layer above provisions its own worst case.
pub fn default_metadata_pages(pages: u64, extent_pages: u64) -> u64 {
    let extents = pages / extent_pages.max(1);
    (extents.saturating_mul(48)).div_ceil(PAGE_SIZE as u64) + 64
}

/// Pages at the device's end for second copies: the superblocks' always, the
/// metadata area's with two copies.
pub(crate) fn mirror_pages(meta_pages: u64, copies: u32) -> u64 {
    SUPERBLOCK_PAGES.saturating_add(if copies == 2 { meta_pages } else { 0 })
}

/// The smallest device, in pages, that holds the superblocks, `meta(pages)`
/// metadata pages (aligned to an extent of `ext_pages` pages) in `copies` copies
/// and `extents` data extents. The metadata may grow with the device (`meta` is
/// non-decreasing), so this is the least fixed point of that sum: a few rounds, as
/// it grows by about a block per hundred extents.
pub(crate) fn min_device_pages(
    meta: impl Fn(u64) -> u64,
    copies: u32,
    ext_pages: u64,
    extents: u64,
) -> u64 {
    let ext_pages = ext_pages.max(1);
    let mut pages = 0u64;
    for _ in 0..64 {
        let m = meta(pages);
        let need = m
            .saturating_add(SUPERBLOCK_PAGES)
            .div_ceil(ext_pages)
            .saturating_mul(ext_pages)
            .saturating_add(extents.saturating_mul(ext_pages))
            .saturating_add(mirror_pages(m, copies));
        if need <= pages {
            break;
        }
        pages = need;
    }
    pages
}

/// Space accounting of both maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceStats {
    /// Metadata pages provisioned.
    pub meta_pages: u64,
    /// Metadata pages in use.
    pub meta_allocated: u64,
    /// Metadata pages released in this transaction, reusable after commit.
    pub meta_pinned: u64,
    /// Data extents in the pool.
    pub data_extents: u64,
    /// Data extents in use.
    pub data_allocated: u64,
    /// Data extents released in this transaction, reusable after commit.
    pub data_pinned: u64,
}

/// The storage engine: checksummed copy-on-write metadata with atomic commits.
///
/// Most users want the array built on top of it; the engine is public so that its
/// guarantees can be tested and reused. Trees are handled through [`Tree`] values,
/// each of which owns one reference to its root: keep every live tree either in a
/// root slot ([`Engine::set_root`]) or as a value of a tree that is, or it is lost
/// (and reported as leaked by [`Engine::audit`]) after a reopen.
pub struct Engine<D: BlockDevice> {
    pub(crate) st: PageStore<D>,
    pub(crate) sm: SpaceMaps,
    pub(crate) geo: Geometry,
    generation: u64,
    array_id: [u8; 16],
    pub(crate) roots: [Option<Tree>; ROOT_SLOTS],
    client: [u8; CLIENT_BYTES],
    poisoned: bool,
    /// Metadata page copies healed, up to the last commit.
    healed: u64,
    /// The last rollback an open allowed: (generation lost, generation kept).
    rollback: Option<(u64, u64)>,
    /// Superblock copies found bad or stale at open: (page, bytes to write there).
    superblock_heals: alloc::vec::Vec<(u64, alloc::boxed::Box<[u8]>)>,
    /// An allowed rollback that no commit has recorded yet.
    rollback_unrecorded: bool,
    /// Changes since the last commit (trees, roots, client bytes).
    changed: bool,
    /// Trees waiting to be freed ([`Engine::drop_tree_later`]).
    queue: reclaim::FreeQueue,
}

impl<D: BlockDevice> Engine<D> {
    /// Writes an empty engine to `dev` and returns it open.
    ///
    /// Both superblock slots are rewritten, so whatever the device held before is
    /// gone. The layout is: superblock slots (pages 0–1), metadata pages, then data
    /// extents aligned to the extent size.
    pub fn format(dev: D, opts: &FormatOptions) -> Result<Self> {
        let es = opts.extent_size;
        if !is_valid_extent_size(es) {
            return Err(Error::InvalidOptions(EXTENT_SIZE_RULE));
        }
        let mut st = PageStore::new(dev, opts.cache_bytes, 0, 0)?;
        let pages = st.device_pages();
        let ext_pages = u64::from(es) / PAGE_SIZE as u64;
        let meta_pages = opts
            .metadata_pages
            .unwrap_or_else(|| default_metadata_pages(pages, ext_pages));
        if meta_pages < 16 {
            return Err(Error::InvalidOptions(
                "at least 16 metadata pages are needed",
            ));
        }
        let copies = opts.metadata_copies;
        if !matches!(copies, 1 | 2) {
            return Err(Error::InvalidOptions("metadata copies must be 1 or 2"));
        }
        let too_small = Error::DeviceTooSmall {
            needed: min_device_pages(
                |p| {
                    opts.metadata_pages
                        .unwrap_or_else(|| default_metadata_pages(p, ext_pages))
                },
                copies,
                ext_pages,
                1,
            )
            .saturating_mul(PAGE_SIZE as u64),
            available: pages.saturating_mul(PAGE_SIZE as u64),
        };
        let meta_end = SUPERBLOCK_PAGES
            .checked_add(meta_pages)
            .ok_or(Error::InvalidOptions("too many metadata pages"))?;
        let data_start = meta_end.div_ceil(ext_pages) * ext_pages;
        let data_extents = pages
            .saturating_sub(data_start)
            .saturating_sub(mirror_pages(meta_pages, copies))
            / ext_pages;
        if data_extents == 0 {
            return Err(too_small);
        }
        let geo = Geometry {
            device_block_size: st.device().block_size(),
            extent_size: es,
            device_pages: pages,
            meta_start: SUPERBLOCK_PAGES,
            meta_pages,
            data_start,
            data_extents,
            metadata_copies: copies,
        };
        geo.validate(pages)?;
        // Wipe every superblock copy first so no older one can win at open; a
        // wiped copy says "no commit here", so a format cut short is not mistaken
        // for damage (docs/FORMAT.md).
        let mut wiped = [0u8; PAGE_SIZE];
        for slot in 0..SUPERBLOCK_PAGES {
            slots::wiped_page(&mut wiped, slot);
            st.write_page(slot, &wiped)?;
            st.write_page(geo.superblock_copy(slot), &wiped)?;
        }
        st.flush_device()?;
        st.set_meta_range(geo.meta_start, meta_end);
        st.set_mirror(geo.mirror_offset());
        st.set_txid(1);
        let mut e = Engine {
            st,
            sm: SpaceMaps::new(geo.meta_start, meta_pages, data_extents),
            geo,
            generation: 0,
            array_id: opts.array_id,
            roots: [None; ROOT_SLOTS],
            client: [0; CLIENT_BYTES],
            poisoned: false,
            healed: 0,
            rollback: None,
            superblock_heals: alloc::vec::Vec::new(),
            rollback_unrecorded: false,
            changed: true,
            queue: reclaim::FreeQueue::empty(),
        };
        e.commit()?;
        Ok(e)
    }

    /// Opens the engine on `dev` at its newest committed state.
    pub fn open(dev: D, opts: &OpenOptions) -> Result<Self> {
        let mut st = PageStore::new(dev, opts.cache_bytes, 0, 0)?;
        let chosen = slots::choose(&mut st, opts.allow_rollback)?;
        let sb = chosen.sb;
        let geo = sb.geo;
        if geo.device_block_size != st.device().block_size() {
            return Err(Error::BlockSizeMismatch {
                formatted: geo.device_block_size,
                device: st.device().block_size(),
            });
        }
        geo.validate(st.device_pages())?;
        let meta_end = geo.meta_start + geo.meta_pages;
        let map = |m: &MapRoot, entries: u64| -> Result<RcArray> {
            if m.allocated > entries || (m.cursor >= entries && m.cursor != 0) {
                return Err(Error::corrupt(0, "space map counters out of range"));
            }
            if m.root != 0 && !(geo.meta_start..meta_end).contains(&m.root) {
                return Err(Error::corrupt(
                    m.root,
                    "space map root outside the metadata area",
                ));
            }
            let mut a = RcArray::new(entries);
            a.root = m.root;
            a.committed_root = m.root;
            a.allocated = m.allocated;
            a.cursor = m.cursor;
            Ok(a)
        };
        let meta = map(&sb.meta_map, geo.meta_pages)?;
        let data = map(&sb.data_map, geo.data_extents)?;
        for t in sb.roots.iter().flatten().chain([&sb.queue.tree]) {
            if t.root() != 0 && !(geo.meta_start..meta_end).contains(&t.root()) {
                return Err(Error::corrupt(
                    t.root(),
                    "tree root outside the metadata area",
                ));
            }
        }
        st.set_meta_range(geo.meta_start, meta_end);
        st.set_mirror(geo.mirror_offset());
        st.set_txid(sb.generation + 1);
        Ok(Engine {
            st,
            sm: SpaceMaps::restore(geo.meta_start, meta, data),
            geo,
            generation: sb.generation,
            array_id: sb.array_id,
            roots: sb.roots,
            client: sb.client,
            poisoned: false,
            healed: sb.healed,
            rollback: chosen.rollback.or(sb.rollback),
            superblock_heals: chosen.heal,
            rollback_unrecorded: chosen.rollback.is_some(),
            changed: false,
            queue: sb.queue,
        })
    }

    /// Makes every change since the last commit durable and atomic.
    ///
    /// Steps: write dirty metadata pages (both copies), and rewrite the bad copies
    /// that reads found since the last commit; flush; write the first copy of the
    /// superblock slot of the new generation; flush; write its second copy; flush.
    /// Any device error poisons the engine: it refuses further changes until
    /// reopened, which recovers the newest committed state.
    pub fn commit(&mut self) -> Result<()> {
        self.live()?;
        let r = self.commit_inner();
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn commit_inner(&mut self) -> Result<()> {
        let gen = self.st.txid();
        // Only a forged superblock gets here: 2^64 commits never happen.
        if gen >= u64::MAX - 1 {
            return Err(Error::corrupt(0, "the generation counter is exhausted"));
        }
        self.st.write_dirty()?;
        let mut healed = self.st.heal()?;
        for (page, bytes) in core::mem::take(&mut self.superblock_heals) {
            self.st.write_page(page, &bytes)?;
            healed += 1;
        }
        self.st.flush_device()?;
        let sb = Superblock {
            generation: gen,
            geo: self.geo,
            array_id: self.array_id,
            meta_map: MapRoot {
                root: self.sm.meta.root,
                allocated: self.sm.meta.allocated,
                cursor: self.sm.meta.cursor,
            },
            data_map: MapRoot {
                root: self.sm.data.root,
                allocated: self.sm.data.allocated,
                cursor: self.sm.data.cursor,
            },
            roots: self.roots,
            client: self.client,
            healed: self.healed + healed,
            rollback: self.rollback,
            queue: self.queue,
        };
        let mut buf = [0u8; PAGE_SIZE];
        let slot = gen % 2;
        sb.encode(&mut buf, slot);
        // One copy at a time: a power cut tears at most one of them.
        self.st.write_page(slot, &buf)?;
        self.st.flush_device()?;
        self.st.write_page(self.geo.superblock_copy(slot), &buf)?;
        self.st.flush_device()?;
        self.healed += healed;
        self.rollback_unrecorded = false;
        self.changed = false;
        self.sm.committed();
        self.generation = gen;
        self.st.set_txid(gen + 1);
        self.discard_freed();
        Ok(())
    }

    /// Tells the device that the data extents this commit freed hold nothing useful
    /// (a hint: TRIM, or a hole punched in an image file). Only after the commit is
    /// durable, and only extents the previous commit counted, which stayed pinned
    /// (unallocatable) until now: so no extent that a durable commit maps is ever
    /// discarded. A device error here changes nothing and is ignored.
    fn discard_freed(&mut self) {
        let lbas_per_page = PAGE_SIZE as u64 / u64::from(self.geo.device_block_size);
        let lbas_per_extent = self.geo.extent_pages() * lbas_per_page;
        for (start, len) in self.sm.freed.take() {
            if let Ok(lba) = self.extent_lba(start) {
                let _ = self
                    .st
                    .device_mut()
                    .discard(lba, len.saturating_mul(lbas_per_extent));
            }
        }
    }

    fn live(&self) -> Result<()> {
        if self.poisoned {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Runs a change; an error other than a rejected argument poisons the engine,
    /// because the change may have been half applied in memory.
    fn change<T>(&mut self, f: impl FnOnce(&mut Ctx<'_, D>) -> Result<T>) -> Result<T> {
        self.live()?;
        self.changed = true;
        let mut cx = Ctx {
            st: &mut self.st,
            sm: &mut self.sm,
        };
        let r = f(&mut cx);
        if let Err(e) = &r {
            if !matches!(e, Error::InvalidArgument(_)) {
                self.poisoned = true;
            }
        }
        r
    }

    /// Every tree the superblock holds: the root slots', then the free queue.
    fn trees(&self) -> impl Iterator<Item = Tree> {
        let queue = (!self.queue.is_empty()).then_some(self.queue.tree);
        self.roots.into_iter().flatten().chain(queue)
    }

    fn read_ctx(&mut self) -> Ctx<'_, D> {
        Ctx {
            st: &mut self.st,
            sm: &mut self.sm,
        }
    }

    /// Generation of the newest commit.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Metadata page copies healed (rewritten from their good copy) over the
    /// engine's life, up to the last commit.
    pub fn healed(&self) -> u64 {
        self.healed
    }

    fn add_healed(&mut self, n: u64) {
        self.healed += n;
    }

    /// Bad copies found since the last commit, to be rewritten by the next one (an
    /// allowed rollback not yet recorded counts as one: the next commit records it).
    pub fn pending_heals(&self) -> u64 {
        (self.st.pending_heals() + self.superblock_heals.len()) as u64
            + u64::from(self.rollback_unrecorded)
    }

    /// True when something changed since the last commit (trees, root slots, the
    /// client bytes), so that a commit would write a new state.
    pub fn has_changes(&self) -> bool {
        self.changed
    }

    /// The last rollback an open allowed ([`OpenOptions::allow_rollback`]):
    /// (generation lost, generation opened instead). Kept in the superblock.
    pub fn rollback(&self) -> Option<(u64, u64)> {
        self.rollback
    }

    /// Makes this handle refuse changes until reopened: for a layer above whose
    /// change failed half way, so that the half is never committed.
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    /// True once a device error has made this handle refuse changes.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The layout chosen at format.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// The id given at format.
    pub fn array_id(&self) -> [u8; 16] {
        self.array_id
    }

    /// Space accounting.
    pub fn space(&self) -> SpaceStats {
        SpaceStats {
            meta_pages: self.sm.meta.entries,
            meta_allocated: self.sm.meta.allocated,
            meta_pinned: self.sm.meta.pinned,
            data_extents: self.sm.data.entries,
            data_allocated: self.sm.data.allocated,
            data_pinned: self.sm.data.pinned,
        }
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.st.stats()
    }

    /// The device, to inspect (its geometry, counters of a test device).
    pub fn device(&self) -> &D {
        self.st.device()
    }

    /// The device (data I/O goes straight to it; metadata goes through the engine).
    pub fn device_mut(&mut self) -> &mut D {
        self.st.device_mut()
    }

    /// Closes the engine *without* committing and returns the device.
    pub fn into_device(self) -> D {
        self.st.into_device()
    }

    /// The 64 client bytes stored in the superblock.
    pub fn client_bytes(&self) -> &[u8; CLIENT_BYTES] {
        &self.client
    }

    /// Replaces the client bytes (committed with the next commit).
    pub fn set_client_bytes(&mut self, b: &[u8; CLIENT_BYTES]) -> Result<()> {
        self.live()?;
        self.changed |= *b != self.client;
        self.client = *b;
        Ok(())
    }

    /// The tree in root slot `slot`, if any. The slot keeps its reference.
    pub fn root(&self, slot: usize) -> Result<Option<Tree>> {
        self.roots
            .get(slot)
            .copied()
            .ok_or(Error::InvalidArgument("root slot out of range (0..8)"))
    }

    /// Stores `tree` in root slot `slot`, which takes over its reference, and returns
    /// the tree the slot held (whose reference passes back to the caller).
    pub fn set_root(&mut self, slot: usize, tree: Option<Tree>) -> Result<Option<Tree>> {
        self.live()?;
        let meta = self.geo.meta_start..self.geo.meta_start + self.geo.meta_pages;
        if tree.is_some_and(|t| t.root() != 0 && !meta.contains(&t.root())) {
            return Err(Error::InvalidArgument(
                "tree root is not a metadata page of this engine",
            ));
        }
        let s = self
            .roots
            .get_mut(slot)
            .ok_or(Error::InvalidArgument("root slot out of range (0..8)"))?;
        let old = core::mem::replace(s, tree);
        self.changed |= old != tree;
        Ok(old)
    }

    /// A new empty tree with values of `value_size` bytes of `kind`.
    pub fn create_tree(&self, value_size: usize, kind: ValueKind) -> Result<Tree> {
        Tree::empty(value_size, kind)
    }

    /// Looks up `key` in `tree`, copying its value into `out`; false if absent.
    pub fn lookup(&mut self, tree: &Tree, key: u64, out: &mut [u8]) -> Result<bool> {
        self.read_ctx().lookup(tree, key, out)
    }

    /// Inserts or replaces `key` in `tree`. The tree takes over the reference the
    /// value holds ([`ValueKind::Data`], [`ValueKind::Tree`]); a replaced value's is released.
    pub fn insert(&mut self, tree: &mut Tree, key: u64, value: &[u8]) -> Result<()> {
        if value.len() != tree.value_size() {
            return Err(Error::InvalidArgument(
                "value length differs from the tree's value size",
            ));
        }
        self.change(|cx| cx.insert(tree, key, value))
    }

    /// Replaces or inserts `key` *without* releasing the references the old value
    /// held: the caller has already accounted for them (for example a tree-root value
    /// whose tree was modified, and so re-rooted, through its own handle). The tree
    /// takes over the references `value` holds, as with [`Engine::insert`].
    pub fn replace_owned(&mut self, tree: &mut Tree, key: u64, value: &[u8]) -> Result<()> {
        if value.len() != tree.value_size() {
            return Err(Error::InvalidArgument(
                "value length differs from the tree's value size",
            ));
        }
        self.change(|cx| cx.insert_value(tree, key, value, false))
    }

    /// Removes `key` from `tree` *without* releasing its value's references, which
    /// pass to the caller; false if absent.
    pub fn remove_owned(&mut self, tree: &mut Tree, key: u64) -> Result<bool> {
        self.change(|cx| cx.remove_key(tree, key, false))
    }

    /// Data-extent references of `tree` as (exclusive, shared): exclusive ones are
    /// reached by no other tree and their extent has no other reference, so dropping
    /// the tree would free them. Time grows with the tree's size; RAM does not.
    pub fn data_sharing(&mut self, tree: &Tree) -> Result<(u64, u64)> {
        self.read_ctx().data_sharing(tree, None)
    }

    /// The references `trees` hold (each handle one, and their nodes theirs), to
    /// every metadata page and to the data extents from `lo` (a chunk of up to
    /// [`LIVE_CHUNK`]): the counts the stored ones become once the free queue is
    /// worked off, when `trees` are all the live trees that share nodes or extents.
    /// Values that refer to trees are not followed. Reads every node of `trees`
    /// once.
    pub fn live_counts(&mut self, trees: &[Tree], lo: u64) -> Result<LiveCounts> {
        let (start, extents) = (self.geo.meta_start, self.geo.data_extents);
        self.read_ctx().live_counts(trees, start, (lo, extents))
    }

    /// [`Engine::data_sharing`] by the counts of `live`, for the extents of its chunk.
    pub fn data_sharing_live(&mut self, tree: &Tree, live: &LiveCounts) -> Result<(u64, u64)> {
        self.read_ctx().data_sharing(tree, Some(live))
    }

    /// [`Engine::range_shared`] by the node counts of `live`.
    pub fn range_shared_live(
        &mut self,
        tree: &Tree,
        lo: u64,
        hi: u64,
        live: &LiveCounts,
        mut f: impl FnMut(u64, &[u8], bool),
    ) -> Result<()> {
        self.read_ctx()
            .range_shared(tree, lo, hi, Some(live), &mut f)
    }

    /// Data extents that can be allocated now, without a commit.
    pub fn data_free(&self) -> u64 {
        self.sm.data.free()
    }

    /// Metadata pages that can be allocated now, without a commit.
    pub fn meta_free(&self) -> u64 {
        self.sm.meta.free()
    }

    /// Reference counts of data extent `extent`: now, and in the last commit.
    pub fn data_refcounts(&mut self, extent: u64) -> Result<(u32, u32)> {
        self.check_extent(extent)?;
        let cx = self.read_ctx();
        let now = cx.sm.data_count(cx.st, extent)?;
        let then = cx.sm.committed_count(cx.st, MapId::Data, extent)?;
        Ok((now, then))
    }

    /// Removes `key` from `tree`, releasing its value's reference; false if absent.
    pub fn remove(&mut self, tree: &mut Tree, key: u64) -> Result<bool> {
        self.change(|cx| cx.remove(tree, key))
    }

    /// Calls `f(key, value)` for each entry of `tree` with `lo <= key <= hi`, in order,
    /// until `f` returns false.
    pub fn range(
        &mut self,
        tree: &Tree,
        lo: u64,
        hi: u64,
        f: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<()> {
        self.read_ctx().range(tree, lo, hi, f)
    }

    /// Calls `f(key, value, shared)` for each entry of `tree` with `lo <= key <= hi`, in
    /// order; `shared` is true when another tree reaches the entry too (a node on the
    /// path to it is referenced more than once).
    pub fn range_shared(
        &mut self,
        tree: &Tree,
        lo: u64,
        hi: u64,
        mut f: impl FnMut(u64, &[u8], bool),
    ) -> Result<()> {
        self.read_ctx().range_shared(tree, lo, hi, None, &mut f)
    }

    /// Calls `f(key, a_value, b_value)` for each key in `[lo, hi]` where trees `a` and
    /// `b` (of the same value shape) may differ, in key order, skipping every subtree
    /// they share: cost grows with what changed between them, not with their size.
    pub fn diff(
        &mut self,
        a: &Tree,
        b: &Tree,
        lo: u64,
        hi: u64,
        mut f: impl FnMut(u64, Option<&[u8]>, Option<&[u8]>),
    ) -> Result<()> {
        self.read_ctx().diff(a, b, lo, hi, &mut f)
    }

    /// A second reference to `tree`: an O(1) snapshot that shares every node.
    pub fn clone_tree(&mut self, tree: &Tree) -> Result<Tree> {
        self.change(|cx| cx.clone_tree(tree))
    }

    /// Gives back the reference `tree` holds, freeing every node and value only it used.
    pub fn drop_tree(&mut self, tree: Tree) -> Result<()> {
        self.change(|cx| cx.drop_tree(tree))
    }

    /// Allocates a data extent in log order; the caller owns its one reference.
    pub fn alloc_data(&mut self) -> Result<u64> {
        self.change(|cx| cx.sm.alloc_data(cx.st))
    }

    /// Adds a reference to data extent `extent`.
    pub fn inc_data(&mut self, extent: u64) -> Result<()> {
        self.check_extent(extent)?;
        self.change(|cx| cx.sm.inc_data(cx.st, extent))
    }

    /// Drops a reference to data extent `extent`.
    pub fn dec_data(&mut self, extent: u64) -> Result<()> {
        self.check_extent(extent)?;
        self.change(|cx| cx.sm.dec_data(cx.st, extent))
    }

    /// Reference count of data extent `extent`.
    pub fn data_refcount(&mut self, extent: u64) -> Result<u32> {
        self.check_extent(extent)?;
        let cx = self.read_ctx();
        cx.sm.data_count(cx.st, extent)
    }

    /// Reference count of metadata page `addr`.
    pub fn meta_refcount(&mut self, addr: u64) -> Result<u32> {
        let e = addr.wrapping_sub(self.geo.meta_start);
        if e >= self.geo.meta_pages {
            return Err(Error::InvalidArgument(
                "metadata page outside the metadata area",
            ));
        }
        let cx = self.read_ctx();
        cx.sm.count(cx.st, MapId::Meta, e)
    }

    fn check_extent(&self, extent: u64) -> Result<()> {
        if extent >= self.geo.data_extents {
            return Err(Error::InvalidArgument("data extent number out of range"));
        }
        Ok(())
    }

    /// First device block (LBA) of data extent `extent`.
    pub fn extent_lba(&self, extent: u64) -> Result<u64> {
        self.check_extent(extent)?;
        let lbas_per_page = PAGE_SIZE as u64 / u64::from(self.geo.device_block_size);
        Ok((self.geo.data_start + extent * self.geo.extent_pages()) * lbas_per_page)
    }
}
