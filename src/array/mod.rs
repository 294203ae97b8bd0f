//! Layer 6: the array — the LUN table, business copies, full-size reservation, the
//! I/O path and `check()`, over the storage [`Engine`].
//!
//! State lives in two places. The LUN table is a B-tree in root slot 0 whose values
//! ([`ValueKind::Tree`]) hold each LUN's record and a reference to its mapping tree
//! (mapping entry index (logical extent / 16) → [`ValueKind::Extents`] slots). In RAM the array keeps
//! one record per LUN with the live mapping handle (so RAM grows with the number of
//! LUNs, not their size) and writes changed records back to the table before every
//! commit. The table is never cloned, so its own nodes are never shared, and a
//! record's value is only rewritten with [`Engine::replace_owned`]: the reference it
//! holds moved with the mapping handle.

mod access;
mod check;
mod consistency_group;
mod header;
mod io;
mod lost;
pub(crate) mod lun;
mod map;
mod ops;
mod reclaim;
mod repair;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::btree::node::max_entries;
use crate::btree::Tree;
use crate::device::BlockDevice;
use crate::engine::ValueKind;
use crate::engine::{self, Engine};
use crate::error::{CloseError, Error, Result};
use crate::store::page::PAGE_SIZE;
use header::ArrayHeader;

pub use access::{Access, HostInfo, HostView, MAX_HOSTS, MAX_HOST_NAME};
pub use check::{ArrayViolation, Severity};
use lun::{Lun, ENTRY_BYTES, EXTENTS_PER_ENTRY, RECORD_SIZE};
pub use lun::{LunInfo, LunKind, LunStatus, PoolInfo};
pub use map::{DiffRange, MapRange};
pub use reclaim::RECLAIM_PER_FLUSH;
pub use repair::{RepairOptions, RepairReport};

/// The I/O unit: offsets and lengths of reads, writes and discards are multiples
/// of it, and LUN sizes too.
pub const SECTOR: u64 = 512;
/// Default data extent size: 16 KiB. Measured (BENCHMARKS.md, "Array"): steady 4 KiB
/// I/O does not depend on the extent size, but the first write into an extent after
/// a commit or a copy copies the whole extent: 5 µs at 16 KiB against 14–17 µs at
/// 64 KiB, which misses the copy-on-write target. 4 KiB is faster still but needs 4×
/// the metadata and limits the pool to 16 TiB (extent numbers are 32-bit); 16 KiB
/// allows 64 TiB with 0.05% of the data in mapping metadata.
pub const DEFAULT_EXTENT_SIZE: u32 = 16 * 1024;
/// Default maximum number of LUNs.
pub const DEFAULT_MAX_LUNS: u32 = 1024;
/// Largest `max_luns` accepted.
pub const MAX_LUNS_LIMIT: u32 = 1 << 20;
/// Extents kept out of the capacity so that a copy-on-write write can always
/// allocate its new extent before the old one is released: 1/256 of the pool,
/// from 2 to 256 extents. A pool whose LUNs are all fully written commits after
/// every `s` copy-on-writes. At least two, because a discard may have to zero a
/// partly covered extent at each end of its range, both before it commits; one in a
/// pool of two extents, where no LUN can span two.
fn spare_extents(data_extents: u64) -> u64 {
    let least = if data_extents > 2 { 2 } else { 1 };
    (data_extents / 256).clamp(least, 256)
}

/// The metadata pages to provision on a device of `pages` 4 KiB pages, and the data
/// extents that leave: the least `m` that covers the worst case of the extents left
/// beside `m` pages (the metadata grows with the pool and the pool shrinks as the
/// metadata grows, so this is the least fixed point, found by bisection).
fn provision(pages: u64, extent_size: u32, max_luns: u32, copies: u32) -> (u64, u64) {
    let ep = u64::from(extent_size) / PAGE_SIZE as u64;
    let extents_with = |m: u64| {
        let data_start = m
            .saturating_add(SUPERBLOCK_PAGES)
            .div_ceil(ep)
            .saturating_mul(ep);
        pages
            .saturating_sub(data_start)
            .saturating_sub(engine::mirror_pages(m, copies))
            / ep
    };
    let covers = |m: u64| m >= worst_case_metadata_pages(extents_with(m), max_luns);
    // `covers` is false below the fixed point and true from it on: the worst case
    // only shrinks as m grows.
    let (mut lo, mut hi) = (MIN_METADATA_PAGES, MIN_METADATA_PAGES);
    while !covers(hi) {
        lo = hi + 1;
        hi = worst_case_metadata_pages(extents_with(lo), max_luns).max(lo);
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if covers(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    (hi, extents_with(hi))
}

/// Bytes on the device of `pages` metadata pages in `copies` copies, with the
/// superblocks' four pages.
fn metadata_bytes(pages: u64, copies: u32) -> u64 {
    (pages * u64::from(copies) + 2 * SUPERBLOCK_PAGES) * PAGE_SIZE as u64
}

/// The engine's floor on the metadata area.
const MIN_METADATA_PAGES: u64 = 16;

/// The smallest device, in bytes, that an array with `extent_size` and `max_luns`
/// formats on: its worst-case metadata for that device and two data extents, one of
/// them spare.
fn min_device_bytes(extent_size: u32, max_luns: u32, copies: u32) -> u64 {
    let formats = |pages: u64| provision(pages, extent_size, max_luns, copies).1 >= 2;
    let mut hi = 64u64;
    while !formats(hi) {
        hi = hi.saturating_mul(2);
    }
    let mut lo = 1u64;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if formats(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi.saturating_mul(PAGE_SIZE as u64)
}

const TABLE_SLOT: usize = 0;
use engine::SUPERBLOCK_PAGES;

/// Options for [`Array::format`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatOptions {
    /// Data extent size in bytes: a power of two from 4 KiB to 1 MiB (default
    /// [`DEFAULT_EXTENT_SIZE`]). The unit of copy-on-write: the first write into a
    /// shared extent, or into an extent after a commit, copies it whole.
    pub extent_size: u32,
    /// LUN numbers run from 0 to `max_luns - 1` (1 to 2^20).
    pub max_luns: u32,
    /// Cache budget in bytes for metadata pages of the returned array.
    pub cache_bytes: usize,
    /// An id stored in the superblock (the array-id of HP's Business Copy VA guide).
    pub array_id: [u8; 16],
    /// Copies of every metadata page, 1 or 2 (default 2): with two, a page whose
    /// copy is damaged is read from the other and healed (docs/FORMAT.md says
    /// where the copies live). The superblock always has two copies.
    pub metadata_copies: u32,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            extent_size: DEFAULT_EXTENT_SIZE,
            max_luns: DEFAULT_MAX_LUNS,
            cache_bytes: engine::DEFAULT_CACHE_BYTES,
            array_id: [0; 16],
            metadata_copies: engine::DEFAULT_METADATA_COPIES,
        }
    }
}

impl FormatOptions {
    /// The smallest device, in bytes, that these options format on: the worst-case
    /// metadata for that device (docs/DESIGN.md §2 "Space") and two data extents, one
    /// of them kept spare. [`Array::format`] refuses a smaller device with
    /// [`Error::DeviceTooSmall`] naming this figure.
    ///
    /// Errors: [`Error::InvalidOptions`], as [`FormatOptions::validate`].
    pub fn min_device_bytes(&self) -> Result<u64> {
        self.validate()?;
        Ok(min_device_bytes(
            self.extent_size,
            self.max_luns,
            self.metadata_copies,
        ))
    }

    /// Checks the options without touching a device: what [`Array::format`] refuses
    /// before it writes anything (`InvalidOptions`).
    pub fn validate(&self) -> Result<()> {
        if self.max_luns == 0 || self.max_luns > MAX_LUNS_LIMIT {
            return Err(Error::InvalidOptions("max_luns must be from 1 to 2^20"));
        }
        let es = self.extent_size;
        if !engine::is_valid_extent_size(es) {
            return Err(Error::InvalidOptions(engine::EXTENT_SIZE_RULE));
        }
        if !matches!(self.metadata_copies, 1 | 2) {
            return Err(Error::InvalidOptions("metadata_copies must be 1 or 2"));
        }
        Ok(())
    }
}

/// Options for [`Array::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Cache budget in bytes for metadata pages.
    pub cache_bytes: usize,
    /// When both copies of the newest commit's superblock are damaged, open the
    /// newest readable commit instead of failing with [`Error::CommitLost`]. The
    /// rollback is recorded in the array and reported by [`Array::pool_info`] and
    /// [`Array::check`] from then on.
    pub allow_rollback: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: engine::DEFAULT_CACHE_BYTES,
            allow_rollback: false,
        }
    }
}

/// Metadata pages that the worst case of an array with `extents` data extents and
/// `max_luns` LUNs can need, committed state and current transaction together.
///
/// The bound: every LUN that is not detached maps at most its size, and the sizes
/// add up to at most the pool, so all mapping trees together hold at most
/// `extents / 16 + max_luns` entries (shared nodes counted once per tree). Nodes
/// other than the rightmost of each level are at least a third full (splits halve,
/// removals rebalance below a third), so leaves are bounded by entries / 17 plus
/// a few per tree. Add the LUN table and both space maps; double it all because
/// the current transaction may have shadowed every block the last commit uses.
pub fn worst_case_metadata_pages(extents: u64, max_luns: u32) -> u64 {
    let l = u64::from(max_luns);
    // Every tree maps at least one extent's worth of reservation, so there are no
    // more trees than extents (detached copies have none).
    let trees = l.min(extents.max(1));
    let leaf_min = (max_entries(ENTRY_BYTES) / 3 - 1) as u64;
    let inner_min = (max_entries(8) / 3 - 1) as u64;
    let entries = extents.div_ceil(EXTENTS_PER_ENTRY) + trees;
    // One underfull rightmost leaf per tree, the rest at least a third full.
    let leaves = entries.div_ceil(leaf_min) + trees;
    let mut depth = 1u64;
    let mut n = leaves;
    while n > 1 {
        n = n.div_ceil(inner_min);
        depth += 1;
    }
    // Only a tree of two leaves or more has interior nodes, and its leaves but the
    // last are at least a third full, so few trees can: at most entries / (leaf_min
    // + 1) of them. Interior levels shrink geometrically; add one underfull node per
    // level of each such tree, never more interior nodes than leaves.
    let branching = trees.min(entries / (leaf_min + 1));
    let inner = leaves.div_ceil(inner_min - 1) + (branching * depth).min(leaves);
    let table_min = (max_entries(RECORD_SIZE) / 3 - 1) as u64;
    let table = l.div_ceil(table_min) * 2 + depth;
    let counts = crate::store::space_map::COUNTS_PER_LEAF;
    let data_map = extents.div_ceil(counts) * 2 + depth;
    // Hosts (64-byte records, at least a third full); grants live in LUN records.
    let hosts = u64::from(access::MAX_HOSTS).div_ceil(table_min) * 2 + depth;
    let live = leaves + inner + table + data_map + hosts;
    // Double everything for the committed state beside the current transaction;
    // the metadata map counts the metadata pages themselves (4 bytes each).
    let total = 2 * live + 128;
    total + (total.div_ceil(counts) * 2 + depth) * 2
}

/// A virtual disk array: LUNs and business copies on one block device.
///
/// Every management operation commits before it returns `Ok`; data writes become
/// durable at the next [`Array::flush`] or management operation. After a device
/// error during a commit the array refuses changes with [`Error::Poisoned`] until
/// it is reopened, which recovers the last commit.
pub struct Array<D: BlockDevice> {
    pub(crate) eng: Engine<D>,
    /// The LUN table (root slot 0) as last written; re-rooted by each write-back.
    table: Tree,
    pub(crate) luns: BTreeMap<u32, Lun>,
    max_luns: u32,
    extent_size: u64,
    /// Uncommitted changes exist (data writes or table changes).
    dirty: bool,
    /// One extent of scratch space for copy-on-write, allocated on first use.
    scratch: Vec<u8>,
    /// Whole extents written with zeros are unmapped instead of stored.
    detect_zeros: bool,
    /// Hosts, grants and the security switch.
    pub(crate) access: access::AccessTable,
    /// Ranges `repair` could not recover, which read as errors.
    pub(crate) lost: lost::LostRanges,
}

impl<D: BlockDevice> Array<D> {
    /// Writes an empty array to `dev` (everything on it is lost) and returns it open.
    ///
    /// Metadata space is provisioned for the worst case
    /// (see docs/DESIGN.md §2 "Space"), so no sequence of permitted operations can
    /// run out of it.
    pub fn format(dev: D, opts: &FormatOptions) -> Result<Self> {
        opts.validate()?;
        let es = opts.extent_size;
        let bytes = u64::from(dev.block_size()).saturating_mul(dev.block_count());
        let extents_bound = bytes / u64::from(es);
        if extents_bound > engine::MAX_DATA_EXTENTS {
            return Err(Error::InvalidOptions(
                "the device holds more than 2^32 - 2 extents: choose a larger extent size",
            ));
        }
        let copies = opts.metadata_copies;
        let meta = provision(bytes / PAGE_SIZE as u64, es, opts.max_luns, copies).0;
        let eopts = engine::FormatOptions {
            extent_size: es,
            metadata_pages: Some(meta),
            cache_bytes: opts.cache_bytes,
            array_id: opts.array_id,
            metadata_copies: copies,
        };
        let too_small = Error::DeviceTooSmall {
            needed: min_device_bytes(es, opts.max_luns, copies),
            available: bytes,
        };
        let mut eng = Engine::format(dev, &eopts).map_err(|e| match e {
            Error::DeviceTooSmall { .. } => too_small.clone(),
            e => e,
        })?;
        let de = eng.geometry().data_extents;
        if de <= spare_extents(de) {
            return Err(too_small);
        }
        let header = ArrayHeader {
            max_luns: opts.max_luns,
            security: false,
        };
        eng.set_client_bytes(&header.encode())?;
        let table = eng.create_tree(RECORD_SIZE, ValueKind::Tree)?;
        eng.set_root(TABLE_SLOT, Some(table))?;
        eng.commit()?;
        Ok(Array {
            eng,
            table,
            luns: BTreeMap::new(),
            max_luns: opts.max_luns,
            extent_size: u64::from(es),
            dirty: false,
            scratch: Vec::new(),
            detect_zeros: true,
            access: access::AccessTable::new()?,
            lost: lost::LostRanges::default(),
        })
    }

    /// Opens the array on `dev` at its newest committed state.
    pub fn open(dev: D, opts: &OpenOptions) -> Result<Self> {
        let mut eng = Engine::open(
            dev,
            &engine::OpenOptions {
                cache_bytes: opts.cache_bytes,
                allow_rollback: opts.allow_rollback,
            },
        )?;
        let header = ArrayHeader::decode(eng.client_bytes())?;
        let max_luns = header.max_luns;
        let table = eng.root(TABLE_SLOT)?.ok_or(Error::NotAnArray)?;
        if table.value_size() != RECORD_SIZE || table.kind() != ValueKind::Tree {
            return Err(Error::Corrupt {
                addr: table.root(),
                what: "LUN table has the wrong shape",
            });
        }
        let mut raw: Vec<(u64, [u8; RECORD_SIZE])> = Vec::new();
        let mut too_many = false;
        eng.range(&table, 0, u64::MAX, |k, v| {
            if raw.len() >= max_luns as usize {
                too_many = true;
                return false;
            }
            let mut r = [0u8; RECORD_SIZE];
            r.copy_from_slice(v);
            raw.push((k, r));
            true
        })?;
        if too_many {
            return Err(Error::Corrupt {
                addr: table.root(),
                what: "LUN table holds more LUNs than the maximum",
            });
        }
        let mut luns = BTreeMap::new();
        let (es, de) = (eng.geometry().extent_size, eng.geometry().data_extents);
        for (k, r) in raw {
            let n = u32::try_from(k).map_err(|_| Error::Corrupt {
                addr: table.root(),
                what: "LUN table key is not a LUN number",
            })?;
            let l = Lun::decode(n, &r, max_luns)?;
            // No operation makes a LUN larger than the pool (and a larger size
            // would overflow the reservation arithmetic).
            if l.size.div_ceil(u64::from(es)) > de.saturating_sub(spare_extents(de)) {
                return Err(Error::Corrupt {
                    addr: table.root(),
                    what: "LUN record is larger than the pool",
                });
            }
            luns.insert(n, l);
        }
        for (n, l) in &luns {
            if let Some(p) = l.parent {
                if !luns.contains_key(&p) {
                    let _ = n;
                    return Err(Error::Corrupt {
                        addr: table.root(),
                        what: "a copy names a parent that does not exist",
                    });
                }
            }
        }
        let extent_size = u64::from(eng.geometry().extent_size);
        let access = access::AccessTable::load(&mut eng, header.security)?;
        let lost = lost::LostRanges::load(&mut eng)?;
        Ok(Array {
            eng,
            table,
            luns,
            max_luns,
            extent_size,
            dirty: false,
            scratch: Vec::new(),
            detect_zeros: true,
            access,
            lost,
        })
    }

    /// Commits and returns the device. When the commit fails the device comes back
    /// with the error ([`CloseError`]), so that the caller can still reopen it (the
    /// array on it is then at its last commit) or release it as it sees fit.
    pub fn close(mut self) -> core::result::Result<D, CloseError<D>> {
        // As flush: bad copies found by reads, and an allowed rollback, are
        // written down before the device goes.
        let r = if self.dirty || self.eng.pending_heals() > 0 {
            self.commit()
        } else {
            Ok(())
        };
        let device = self.eng.into_device();
        match r {
            Ok(()) => Ok(device),
            Err(error) => Err(CloseError { error, device }),
        }
    }

    /// Returns the device *without* committing: what a crash would leave behind,
    /// apart from what the device itself still holds in a volatile cache.
    pub fn into_device(self) -> D {
        self.eng.into_device()
    }

    /// The device, to inspect (its geometry, counters of a test device).
    pub fn device(&self) -> &D {
        self.eng.device()
    }

    /// The device, to change behind the array's back (feature `testing`: tests that
    /// damage an image or steer a test device; writing to it bypasses the array).
    #[cfg(feature = "testing")]
    pub fn device_mut(&mut self) -> &mut D {
        self.eng.device_mut()
    }

    /// Makes every data write so far durable (a commit when anything changed, or
    /// when reads found bad metadata copies to rewrite: [`PoolInfo::pending_heals`]).
    pub fn flush(&mut self) -> Result<()> {
        if self.eng.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if self.dirty || self.eng.pending_heals() > 0 {
            self.reclaim_some()?;
            self.commit()
        } else {
            Ok(())
        }
    }

    /// True once a device error has made this handle refuse changes.
    pub fn is_poisoned(&self) -> bool {
        self.eng.is_poisoned()
    }

    /// Turns zero detection on (the default) or off. With it on, a write that covers
    /// a whole extent with zeros unmaps that extent instead of storing the zeros (the
    /// range reads as zeros either way, but occupies no space and stops being shared
    /// with copies), and zeros written into part of a hole are not stored at all. Turn
    /// it off where allocation must follow writes.
    pub fn set_detect_zeros(&mut self, on: bool) {
        self.detect_zeros = on;
    }

    /// Whether zero detection is on (see [`Array::set_detect_zeros`]).
    pub fn detect_zeros(&self) -> bool {
        self.detect_zeros
    }

    /// Data extent size in bytes.
    pub fn extent_size(&self) -> u32 {
        self.extent_size as u32
    }

    /// LUN numbers run from 0 to `max_luns() - 1`.
    pub fn max_luns(&self) -> u32 {
        self.max_luns
    }

    /// The engine underneath (feature `testing`: tests that forge states through the
    /// engine; changing it bypasses the array).
    #[cfg(feature = "testing")]
    pub fn engine(&mut self) -> &mut Engine<D> {
        &mut self.eng
    }

    /// Writes changed LUN records to the table; the table's root moves to slot 0.
    fn write_back(&mut self) -> Result<()> {
        for (&n, l) in self.luns.iter_mut().filter(|(_, l)| l.dirty) {
            self.eng
                .replace_owned(&mut self.table, u64::from(n), &l.encode())?;
            l.dirty = false;
        }
        self.eng.set_root(TABLE_SLOT, Some(self.table))?;
        self.access.write_back(&mut self.eng)?;
        self.lost.write_back(&mut self.eng)?;
        let c = ArrayHeader {
            max_luns: self.max_luns,
            security: self.access.security,
        }
        .encode();
        if c != *self.eng.client_bytes() {
            self.eng.set_client_bytes(&c)?;
        }
        Ok(())
    }

    /// Writes back the LUN table and commits the transaction.
    pub(crate) fn commit(&mut self) -> Result<()> {
        self.write_back()?;
        self.eng.commit()?;
        self.dirty = false;
        Ok(())
    }

    /// Removes LUN `n`'s record from the table without touching its mapping, whose
    /// reference the caller has dealt with.
    fn forget_record(&mut self, n: u32) -> Result<()> {
        self.luns.remove(&n);
        self.eng.remove_owned(&mut self.table, u64::from(n))?;
        self.dirty = true;
        Ok(())
    }

    /// Extents of data the pool can hold for LUNs.
    fn capacity_extents(&self) -> u64 {
        let de = self.eng.geometry().data_extents;
        de.saturating_sub(spare_extents(de))
    }

    /// Extents reserved by a LUN of `size` bytes.
    fn extents_for(&self, size: u64) -> u64 {
        size.div_ceil(self.extent_size)
    }

    /// Extents reserved by all LUNs that are not detached.
    fn reserved_extents(&self) -> u64 {
        self.luns
            .values()
            .filter(|l| l.attached)
            .map(|l| self.extents_for(l.size))
            .sum()
    }

    /// Fails with `NoSpace` unless `extra` more extents can be reserved.
    fn reserve(&self, extra: u64) -> Result<()> {
        let free = self
            .capacity_extents()
            .saturating_sub(self.reserved_extents());
        if extra > free {
            return Err(Error::NoSpace {
                needed: extra * self.extent_size,
                available: free * self.extent_size,
            });
        }
        Ok(())
    }

    fn check_number(&self, n: u32) -> Result<()> {
        if n >= self.max_luns {
            return Err(Error::LunOutOfRange {
                lun: n,
                max_luns: self.max_luns,
            });
        }
        Ok(())
    }

    fn get(&self, n: u32) -> Result<&Lun> {
        self.check_number(n)?;
        self.luns.get(&n).ok_or(Error::NoSuchLun(n))
    }

    /// Generation the current transaction will commit as.
    fn next_gen(&self) -> u64 {
        self.eng.generation() + 1
    }

    /// Everything known about LUN `n`, with exact exclusive and shared bytes
    /// (computed by walking its mapping: time grows with the data it maps).
    pub fn lun_info(&mut self, n: u32) -> Result<LunInfo> {
        let l = self.get(n)?.clone();
        let sharing = self.sharing_of(&[l.mapping])?;
        let (exclusive, shared) = sharing.first().copied().unwrap_or_default();
        Ok(self.info_of(n, &l, exclusive, shared))
    }

    /// A LUN's info, given its (exclusive, shared) extents.
    fn info_of(&self, n: u32, l: &Lun, exclusive: u64, shared: u64) -> LunInfo {
        LunInfo {
            lun: n,
            size: l.size,
            kind: l.kind,
            parent: l.parent,
            attached: l.attached,
            online: l.online,
            created_generation: l.created_gen,
            attached_generation: l.attached_gen,
            reserved_bytes: if l.attached {
                self.extents_for(l.size) * self.extent_size
            } else {
                0
            },
            exclusive_bytes: exclusive * self.extent_size,
            shared_bytes: shared * self.extent_size,
            lost_bytes: self.lost.bytes(n),
        }
    }

    /// The ranges of LUN `n` that [`Array::repair`] could not recover, as (offset,
    /// length) in bytes, in order: they read as [`Error::LostData`] until written or
    /// discarded. Empty unless the array was repaired.
    ///
    /// Errors: [`Error::LunOutOfRange`], [`Error::NoSuchLun`].
    pub fn lost_ranges(&self, n: u32) -> Result<Vec<(u64, u64)>> {
        self.get(n)?;
        Ok(self.lost.of(n).iter().map(|&(s, e)| (s, e - s)).collect())
    }

    /// LUN `n`'s size, kind, parent and state, in O(1) (no space accounting: see
    /// [`Array::lun_info`]).
    ///
    /// Errors: [`Error::LunOutOfRange`], [`Error::NoSuchLun`].
    pub fn lun_status(&self, n: u32) -> Result<LunStatus> {
        let l = self.get(n)?;
        Ok(LunStatus {
            lun: n,
            size: l.size,
            kind: l.kind,
            parent: l.parent,
            attached: l.attached,
            online: l.online,
        })
    }

    /// Every LUN, in number order.
    pub fn luns(&mut self) -> Result<Vec<LunInfo>> {
        let trees: Vec<Tree> = self.luns.values().map(|l| l.mapping).collect();
        let sharing = self.sharing_of(&trees)?;
        Ok(self
            .luns
            .iter()
            .zip(sharing)
            .map(|((&n, l), (e, s))| self.info_of(n, l, e, s))
            .collect())
    }

    /// The LUN numbers in use, in order (cheap: no accounting).
    pub fn lun_numbers(&self) -> Vec<u32> {
        self.luns.keys().copied().collect()
    }

    /// Pool accounting.
    pub fn pool_info(&self) -> PoolInfo {
        let s = self.eng.space();
        let copies = self.eng.geometry().metadata_copies;
        let es = self.extent_size;
        let cap = self.capacity_extents();
        let reserved = self.reserved_extents();
        PoolInfo {
            capacity_bytes: cap * es,
            allocated_bytes: s.data_allocated * es,
            // Saturating: a damaged table may reserve more than the pool (check()
            // reports it): up to 2^20 LUNs of up to the pool's size each.
            reserved_bytes: reserved.saturating_mul(es),
            unreserved_bytes: cap.saturating_sub(reserved) * es,
            free_bytes: cap.saturating_sub(s.data_allocated) * es,
            // Every copy counts, the superblocks' (two slots, two copies each)
            // included: a new array has no other metadata page yet.
            metadata_used_bytes: metadata_bytes(s.meta_allocated, copies),
            metadata_provisioned_bytes: metadata_bytes(s.meta_pages, copies),
            metadata_copies: copies,
            healed_pages: self.eng.healed(),
            pending_heals: self.eng.pending_heals(),
            rollback: self.eng.rollback(),
            extent_size: es as u32,
            luns: self.luns.len() as u32,
            max_luns: self.max_luns,
            generation: self.eng.generation(),
            reclaim_queue: self.eng.reclaim_queue_len(),
        }
    }
}
