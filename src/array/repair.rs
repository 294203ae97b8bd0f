//! `Array::repair`: where both copies of some metadata are bad, rebuild what the
//! rest allows, in the manner of `thin_repair`, in one new commit.
//!
//! 1. Salvage (reads only): the LUN table's readable records, the hosts' readable
//!    records, and for each LUN whether its mapping reads whole. A mapping that does
//!    not keeps its readable entries; the logical ranges under an unreadable node
//!    (or held by an entry that points outside the pool) become *lost ranges*.
//! 2. Recount: the reference count of every metadata page and data extent, from the
//!    trees that are kept, into space maps built anew (the old ones may be
//!    unreadable, and their counts are not trusted).
//! 3. Rebuild: a new LUN table, hosts table and lost-range tree; a new mapping for
//!    each damaged LUN, holding its readable entries. Mappings that read whole are
//!    kept as they are, shared nodes and all.
//! 4. Commit. Until then no page of the old state is overwritten (the new space maps
//!    never hand one out), so a crash during repair leaves the old state.
//!
//! Memory: a count per metadata page, a count per data extent in chunks of
//! [`DATA_CHUNK`], the LUN records, and up to [`BATCH`] mapping entries at a time.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;

use crate::btree::Tree;
use crate::device::BlockDevice;
use crate::engine::salvage::{Salvaged, Seen};
use crate::engine::{self, Engine, ValueKind};
use crate::error::Result;
use crate::store::space_map::{MapId, SpaceMaps};

use super::access::{HOSTS_SLOT, HOST_RECORD, MAX_HOSTS, MAX_HOST_NAME};
use super::header::ArrayHeader;
use super::lost::{LostRanges, LOST_SLOT, SECTOR_BITS};
use super::lun::{pack, unpack, Lun, LunKind, ENTRY_BYTES, EXTENTS_PER_ENTRY, RECORD_SIZE};
use super::SECTOR;
use super::{Array, OpenOptions, TABLE_SLOT};

/// Data extents counted per pass over the mappings.
const DATA_CHUNK: u64 = 1 << 22;
/// Mapping entries of a damaged LUN copied into its new mapping at a time.
const BATCH: usize = 1 << 14;
/// Unreadable pages listed one by one in a [`RepairReport`].
const MAX_LISTED: usize = 1000;

/// Options for [`Array::repair`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairOptions {
    /// How to open the device (a rollback must be allowed here too when the newest
    /// commit cannot be read).
    pub open: OpenOptions,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
}

/// What [`Array::repair`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// The generation examined (a dry run), or the one the repair committed.
    pub generation: u64,
    /// Metadata pages with no good copy that the trees reach (the first 1,000).
    pub unreadable_pages: Vec<u64>,
    /// How many such pages in all.
    pub unreadable_count: u64,
    /// LUNs whose records were kept, in number order.
    pub luns: Vec<u32>,
    /// Ranges of LUN numbers (first, last) whose records could not be read: those
    /// LUNs, if any, are gone.
    pub lost_records: Vec<(u64, u64)>,
    /// Records read but invalid (their LUN numbers, or keys): dropped.
    pub bad_records: Vec<u64>,
    /// Copies whose parent is gone: they stand alone now (attached ones as plain LUNs).
    pub orphaned: Vec<u32>,
    /// LUNs whose mapping was rebuilt from its readable entries.
    pub rebuilt: Vec<u32>,
    /// (LUN, offset, length) in bytes: the ranges whose mapping could not be read.
    /// They read as [`Error::LostData`](crate::Error::LostData) until written or discarded.
    pub lost: Vec<(u32, u64, u64)>,
    /// Hosts kept.
    pub hosts: u32,
    /// Some host records could not be read or were invalid: those hosts are gone
    /// (and their grants).
    pub hosts_lost: bool,
}

impl RepairReport {
    fn unreadable(&mut self, addr: u64, seen: &mut BTreeSet<u64>) {
        if seen.insert(addr) {
            self.unreadable_count += 1;
            if self.unreadable_pages.len() < MAX_LISTED {
                self.unreadable_pages.push(addr);
            }
        }
    }

    /// True when nothing was lost: every record, host and mapping read whole (the
    /// counts were rebuilt all the same).
    pub fn is_complete(&self) -> bool {
        self.unreadable_count == 0
            && self.lost_records.is_empty()
            && self.bad_records.is_empty()
            && self.lost.is_empty()
            && !self.hosts_lost
    }
}

/// A LUN record kept, and whether its mapping is kept as it is.
struct Kept {
    lun: Lun,
    whole: bool,
}

/// The salvaged state of the old array.
struct Salvage {
    records: BTreeMap<u32, Kept>,
    hosts: BTreeMap<u64, [u8; HOST_RECORD]>,
    lost: LostRanges,
    /// Every old page seen (readable or not): never handed out before the commit.
    old: Seen,
}

impl<D: BlockDevice> Array<D> {
    /// Repairs the array on `dev` where both copies of some of its metadata are bad,
    /// and hands the device back with a report: then [`Array::open`] it. Rebuilds
    /// the space maps from the trees that can still be read, the LUN table and hosts
    /// from the records that survive, and each LUN whose mapping is damaged from its
    /// readable entries; the ranges that could not be read are listed and read as
    /// [`Error::LostData`](crate::Error::LostData) until written or discarded, never as wrong data (see the
    /// module documentation). Writes one new commit and nothing else, so a crash
    /// during repair leaves the array as it was. With `dry_run` it only reports.
    ///
    /// Errors: what [`Array::open`] gives before it reads the LUN table
    /// ([`Error::CommitLost`](crate::Error::CommitLost) unless `open.allow_rollback`, [`Error::NotAnArray`](crate::Error::NotAnArray),
    /// ...); device errors; [`Error::MetadataSpaceExhausted`](crate::Error::MetadataSpaceExhausted) if the rebuilt trees
    /// do not fit (they cannot be larger than the ones they replace).
    pub fn repair(dev: D, opts: &RepairOptions) -> Result<(D, RepairReport)> {
        let mut eng = Engine::open(
            dev,
            &engine::OpenOptions {
                cache_bytes: opts.open.cache_bytes,
                allow_rollback: opts.open.allow_rollback,
            },
        )?;
        let header = ArrayHeader::decode(eng.client_bytes())?;
        let mut rep = RepairReport {
            dry_run: opts.dry_run,
            generation: eng.generation(),
            ..RepairReport::default()
        };
        let mut s = salvage(&mut eng, header.max_luns, &mut rep)?;
        rep.luns = s.records.keys().copied().collect();
        rep.rebuilt = s
            .records
            .iter()
            .filter(|(_, k)| !k.whole)
            .map(|(&n, _)| n)
            .collect();
        rep.hosts = s.hosts.len() as u32;
        for n in rep.luns.clone() {
            for &(a, b) in s.lost.of(n) {
                rep.lost.push((n, a, b - a));
            }
        }
        if opts.dry_run {
            return Ok((eng.into_device(), rep));
        }
        rebuild(&mut eng, &mut s)?;
        eng.commit()?;
        rep.generation = eng.generation();
        Ok((eng.into_device(), rep))
    }
}

/// Step 1: what the old state still holds.
fn salvage<D: BlockDevice>(
    eng: &mut Engine<D>,
    max_luns: u32,
    rep: &mut RepairReport,
) -> Result<Salvage> {
    let es = u64::from(eng.geometry().extent_size);
    let data_extents = eng.geometry().data_extents;
    let capacity = data_extents.saturating_sub(super::spare_extents(data_extents));
    let mut old = Seen::new(eng);
    let mut bad_pages = BTreeSet::new();
    let mut records = BTreeMap::new();
    if let Some(t) = eng.root(TABLE_SLOT)? {
        eng.salvage(
            t.root(),
            (RECORD_SIZE, ValueKind::Tree),
            0,
            &mut old,
            &mut |f| {
                match f {
                    Salvaged::Entry { key, value } => {
                        // As open: a record must decode and fit the pool.
                        let rec = u32::try_from(key)
                            .ok()
                            .and_then(|n| Lun::decode(n, value, max_luns).ok().map(|l| (n, l)))
                            .filter(|(_, l)| l.size.div_ceil(es) <= capacity);
                        match rec {
                            Some((n, l)) => {
                                records.insert(
                                    n,
                                    Kept {
                                        lun: l,
                                        whole: true,
                                    },
                                );
                            }
                            None => rep.bad_records.push(key),
                        }
                    }
                    Salvaged::Lost { addr, lo, hi, .. } => {
                        rep.unreadable(addr, &mut bad_pages);
                        if lo < u64::from(max_luns) {
                            rep.lost_records.push((lo, hi.min(u64::from(max_luns) - 1)));
                        }
                    }
                    Salvaged::Node { .. } | Salvaged::Empty { .. } => {}
                }
                true
            },
        );
    }
    let mut hosts = BTreeMap::new();
    let mut hosts_lost = false;
    if let Some(t) = eng.root(HOSTS_SLOT)? {
        let mut indexes = 0u64;
        eng.salvage(
            t.root(),
            (HOST_RECORD, ValueKind::Opaque),
            0,
            &mut old,
            &mut |f| {
                match f {
                    Salvaged::Entry { key, value } => {
                        let index = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
                        let len = usize::from(value[4]);
                        let name_ok = len <= MAX_HOST_NAME
                            && value
                                .get(8..8 + len)
                                .is_some_and(|b| core::str::from_utf8(b).is_ok());
                        if name_ok && index < MAX_HOSTS && indexes & (1 << index) == 0 {
                            indexes |= 1 << index;
                            let mut v = [0u8; HOST_RECORD];
                            v.copy_from_slice(value);
                            hosts.insert(key, v);
                        } else {
                            hosts_lost = true;
                        }
                    }
                    Salvaged::Lost { addr, .. } => {
                        rep.unreadable(addr, &mut bad_pages);
                        hosts_lost = true;
                    }
                    Salvaged::Node { .. } | Salvaged::Empty { .. } => {}
                }
                true
            },
        );
    }
    rep.hosts_lost = hosts_lost;
    // Copies whose parent is gone stand alone; grants name only hosts kept.
    let host_mask = hosts.values().fold(0u64, |m, v| {
        m | 1u64 << u32::from_le_bytes([v[0], v[1], v[2], v[3]])
    });
    let sizes: BTreeMap<u32, u64> = records.iter().map(|(&n, k)| (n, k.lun.size)).collect();
    for (&n, k) in records.iter_mut() {
        let l = &mut k.lun;
        // A copy is its parent's size: one whose parent is gone, or of another
        // size (a damaged record), stands alone.
        if l.parent.is_some_and(|p| sizes.get(&p) != Some(&l.size)) {
            l.parent = None;
            if l.attached {
                l.kind = LunKind::Lun;
            }
            rep.orphaned.push(n);
        }
        l.grants_read &= host_mask;
        l.grants_write &= l.grants_read;
        l.dirty = true;
    }
    // Ranges an earlier repair lost stay lost (a rebuilt mapping has holes there);
    // where the lost-range tree itself cannot be read, every range it may have
    // named is lost.
    let mut before: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    if let Some(t) = eng.root(LOST_SLOT)? {
        let sector_mask = (1u64 << SECTOR_BITS) - 1;
        let mut add = |n: u64, a: u64, b: u64| {
            if let Ok(n) = u32::try_from(n) {
                if n < max_luns && a < b {
                    before.entry(n).or_default().push((a, b));
                }
            }
        };
        eng.salvage(t.root(), (8, ValueKind::Opaque), 0, &mut old, &mut |f| {
            match f {
                Salvaged::Entry { key, value } => {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(value);
                    let end = u64::from_le_bytes(v).min(sector_mask + 1);
                    add(
                        key >> SECTOR_BITS,
                        (key & sector_mask).saturating_mul(SECTOR),
                        end.saturating_mul(SECTOR),
                    );
                }
                Salvaged::Lost { addr, lo, hi } => {
                    rep.unreadable(addr, &mut bad_pages);
                    let (first, last) = (lo >> SECTOR_BITS, hi >> SECTOR_BITS);
                    let last = last.min(u64::from(max_luns));
                    for n in first..=last {
                        let a = if n == first { lo & sector_mask } else { 0 };
                        let b = if n == hi >> SECTOR_BITS {
                            (hi & sector_mask) + 1
                        } else {
                            sector_mask + 1
                        };
                        add(n, a.saturating_mul(SECTOR), b.saturating_mul(SECTOR));
                    }
                }
                Salvaged::Node { .. } | Salvaged::Empty { .. } => {}
            }
            true
        });
    }
    // Each mapping: whole, or its lost ranges.
    let mut lost = LostRanges::default();
    for (&n, k) in records.iter_mut() {
        let l = &k.lun;
        let mut ranges: Vec<(u64, u64)> = before
            .remove(&n)
            .unwrap_or_default()
            .into_iter()
            .filter(|_| l.attached)
            .map(|(a, b)| (a, b.min(l.size)))
            .filter(|(a, b)| a < b)
            .collect();
        if l.mapping.root() == 0 {
            ranges.sort_unstable();
            lost.set(n, merge(ranges));
            continue;
        }
        let extents = l.size.div_ceil(es);
        let mut whole = true;
        let mut lose = |first: u64, end: u64| {
            let (a, b) = (first.saturating_mul(es), end.saturating_mul(es).min(l.size));
            if a < b {
                ranges.push((a, b));
            }
        };
        eng.salvage(
            l.mapping.root(),
            (ENTRY_BYTES, ValueKind::Extents),
            0,
            &mut Seen::new(eng),
            &mut |f| {
                match f {
                    Salvaged::Entry { key, value } => {
                        let slots = unpack(value);
                        if slots.iter().all(|&x| x == 0) {
                            whole = false;
                        }
                        for (i, &x) in slots.iter().enumerate() {
                            let le = key
                                .saturating_mul(EXTENTS_PER_ENTRY)
                                .saturating_add(i as u64);
                            if x == 0 {
                                continue;
                            }
                            if le >= extents {
                                whole = false;
                            } else if u64::from(x) > data_extents {
                                whole = false;
                                lose(le, le + 1);
                            }
                        }
                    }
                    Salvaged::Lost { addr, lo, hi, .. } => {
                        rep.unreadable(addr, &mut bad_pages);
                        whole = false;
                        let first = lo.saturating_mul(EXTENTS_PER_ENTRY);
                        let end = hi.saturating_add(1).saturating_mul(EXTENTS_PER_ENTRY);
                        lose(first, end.max(first));
                    }
                    Salvaged::Node { addr, .. } => {
                        old.mark(addr);
                    }
                    Salvaged::Empty { addr } => {
                        old.mark(addr);
                        whole = false;
                    }
                }
                true
            },
        );
        k.whole = whole;
        ranges.sort_unstable();
        lost.set(n, merge(ranges));
    }
    for &p in &bad_pages {
        old.mark(p);
    }
    // The old space maps' pages, as far as they read.
    for map in [MapId::Meta, MapId::Data] {
        let mut pages = Vec::new();
        let _ = eng.sm.for_each_node(&mut eng.st, map, |a, _| pages.push(a));
        for a in pages {
            old.mark(a);
        }
    }
    // Trees waiting in the free queue are dropped by the rebuild, but their pages
    // belong to the old commit until the new one is durable. Marked last: a walk
    // skips what is marked, and queued trees share nodes with live ones.
    eng.mark_queued(&mut old);
    Ok(Salvage {
        records,
        hosts,
        lost,
        old,
    })
}

/// Steps 2 and 3: new space maps holding the references of what is kept, then the
/// new tables and the rebuilt mappings.
fn rebuild<D: BlockDevice>(eng: &mut Engine<D>, s: &mut Salvage) -> Result<()> {
    let g = eng.geometry();
    let es = u64::from(g.extent_size);
    // Metadata pages: one reference per record holding a kept mapping's root, one
    // per interior node pointing at a node (each node counted once).
    let mut meta_refs = vec![0u32; g.meta_pages as usize];
    let bump = |refs: &mut Vec<u32>, addr: u64| {
        if let Some(c) = addr
            .checked_sub(g.meta_start)
            .and_then(|i| refs.get_mut(i as usize))
        {
            *c = c.saturating_add(1);
        }
    };
    let whole: Vec<u64> = s
        .records
        .values()
        .filter(|k| k.whole && k.lun.mapping.root() != 0)
        .map(|k| k.lun.mapping.root())
        .collect();
    let damaged: Vec<(u64, u64)> = s
        .records
        .values()
        .filter(|k| !k.whole && k.lun.mapping.root() != 0)
        .map(|k| (k.lun.mapping.root(), k.lun.size.div_ceil(es)))
        .collect();
    let mut seen = Seen::new(eng);
    for &root in &whole {
        bump(&mut meta_refs, root);
        eng.salvage(
            root,
            (ENTRY_BYTES, ValueKind::Extents),
            0,
            &mut seen,
            &mut |f| {
                if let Salvaged::Node { children, .. } = f {
                    for &c in children {
                        bump(&mut meta_refs, c);
                    }
                }
                true
            },
        );
    }
    // New maps, which never hand out a page the old state uses until the commit.
    let old = core::mem::replace(&mut s.old, Seen::new(eng));
    let mut fresh = SpaceMaps::new(g.meta_start, g.meta_pages, g.data_extents);
    fresh.avoid = Some(old.into_bits());
    eng.sm = fresh;
    for (i, &c) in meta_refs.iter().enumerate() {
        if c > 0 {
            eng.sm
                .set_meta_count(&mut eng.st, g.meta_start + i as u64, c)?;
        }
    }
    drop(meta_refs);
    // Data extents, a chunk at a time: one reference per slot of each distinct leaf
    // of a kept mapping, and per readable slot of a damaged one (each goes into its
    // new mapping).
    let mut lo = 0;
    while lo < g.data_extents {
        let n = (g.data_extents - lo).min(DATA_CHUNK);
        let mut counts = vec![0u32; n as usize];
        let mut count = |x: u32| {
            if let Some(c) = u64::from(x)
                .checked_sub(1 + lo)
                .and_then(|i| counts.get_mut(i as usize))
            {
                *c = c.saturating_add(1);
            }
        };
        let mut seen = Seen::new(eng);
        for &root in &whole {
            eng.salvage(
                root,
                (ENTRY_BYTES, ValueKind::Extents),
                0,
                &mut seen,
                &mut |f| {
                    if let Salvaged::Entry { value, .. } = f {
                        unpack(value).iter().for_each(|&x| count(x));
                    }
                    true
                },
            );
        }
        for &(root, extents) in &damaged {
            eng.salvage(
                root,
                (ENTRY_BYTES, ValueKind::Extents),
                0,
                &mut Seen::new(eng),
                &mut |f| {
                    if let Salvaged::Entry { key, value } = f {
                        let slots = kept_slots(key, value, extents, g.data_extents);
                        slots.iter().for_each(|&x| count(x));
                    }
                    true
                },
            );
        }
        for (i, &c) in counts.iter().enumerate() {
            if c > 0 {
                eng.sm.set_data_count(&mut eng.st, lo + i as u64, c)?;
            }
        }
        lo += n;
    }
    // New mappings for the damaged LUNs, then the tables.
    let numbers: Vec<u32> = s.records.keys().copied().collect();
    for n in numbers {
        let Some(k) = s.records.get(&n) else {
            continue;
        };
        if k.whole || k.lun.mapping.root() == 0 {
            continue;
        }
        let (root, extents) = (k.lun.mapping.root(), k.lun.size.div_ceil(es));
        let mut t = Tree::empty(ENTRY_BYTES, ValueKind::Extents)?;
        let mut from = 0u64;
        loop {
            let mut batch: Vec<(u64, [u8; ENTRY_BYTES])> = Vec::new();
            let mut more = false;
            eng.salvage(
                root,
                (ENTRY_BYTES, ValueKind::Extents),
                from,
                &mut Seen::new(eng),
                &mut |f| {
                    if let Salvaged::Entry { key, value } = f {
                        if batch.len() == BATCH {
                            more = true;
                            return false;
                        }
                        let slots = kept_slots(key, value, extents, g.data_extents);
                        if slots.iter().any(|&x| x != 0) {
                            batch.push((key, pack(&slots)));
                        }
                    }
                    true
                },
            );
            for (key, v) in &batch {
                eng.insert(&mut t, *key, v)?;
            }
            match batch.last() {
                Some(&(key, _)) if more => from = key + 1,
                _ => break,
            }
        }
        if let Some(k) = s.records.get_mut(&n) {
            k.lun.mapping = t;
        }
    }
    let mut table = Tree::empty(RECORD_SIZE, ValueKind::Tree)?;
    for (&n, k) in &s.records {
        eng.insert(&mut table, u64::from(n), &k.lun.encode())?;
    }
    let hosts = if s.hosts.is_empty() {
        None
    } else {
        let mut t = Tree::empty(HOST_RECORD, ValueKind::Opaque)?;
        for (&id, v) in &s.hosts {
            eng.insert(&mut t, id, v)?;
        }
        Some(t)
    };
    for slot in 0..engine::ROOT_SLOTS {
        eng.set_root(slot, None)?;
    }
    // The counts were rebuilt from the kept trees alone: what the queue held is
    // free now.
    eng.forget_free_queue();
    eng.set_root(TABLE_SLOT, Some(table))?;
    eng.set_root(HOSTS_SLOT, hosts)?;
    s.lost.write_back(eng)?;
    eng.sm.avoid = None;
    Ok(())
}

/// Sorted ranges, overlapping or touching ones merged.
fn merge(ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(m) if a <= m.1 => m.1 = m.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

/// The slots of a readable mapping entry that the rebuilt mapping keeps: inside the
/// LUN's `extents` and pointing into the pool.
fn kept_slots(key: u64, value: &[u8], extents: u64, data_extents: u64) -> [u32; 16] {
    let mut slots = unpack(value);
    for (i, x) in slots.iter_mut().enumerate() {
        let le = key
            .saturating_mul(EXTENTS_PER_ENTRY)
            .saturating_add(i as u64);
        if *x != 0 && (le >= extents || u64::from(*x) > data_extents) {
            *x = 0;
        }
    }
    slots
}
