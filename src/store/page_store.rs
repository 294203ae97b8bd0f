//! Layer 2b: the metadata page store — device access plus a bounded block cache.
//!
//! Every metadata read goes through [`PageStore`]: a block fetched from the device is
//! verified ([`page::verify`]) before anyone sees it, and every address is checked
//! against the metadata area first, so a hostile pointer is an error, not a read of
//! someone else's data. The cache holds at most `capacity` blocks (the caller's byte
//! budget divided by [`PAGE_SIZE`]); least-recently-used blocks are evicted, dirty
//! ones written out first. Writing a dirty block early is always safe: dirty blocks
//! live at addresses that are free in the committed state (copy-on-write).
//!
//! With two metadata copies ([`PageStore::set_mirror`]) every page is written to its
//! address and to the same offset in the mirror region, byte for byte the same (both
//! record the page's own address, so either proves where it belongs). A read that
//! finds its first copy bad (unreadable, wrong checksum, misplaced) takes the second,
//! and notes the page for healing: [`PageStore::heal`] rewrites the bad copy from the
//! good one, during the next commit. That is safe at any time, because a page of the
//! committed state never changes: the rewrite puts back the bytes it held.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use crate::device::{BlockDevice, DeviceError};
use crate::error::{Error, Result};
use crate::fast_map::FastMap;
use crate::store::page::{self, PageKind, PAGE_SIZE};

/// Fewest blocks a cache may hold, whatever the budget.
pub const MIN_CACHE_PAGES: usize = 16;
/// Most pages noted for healing between two commits; more are left to `scrub`.
const MAX_PENDING_HEALS: usize = 4096;

const NIL: u32 = u32::MAX;

struct Slot {
    addr: u64,
    buf: Box<[u8]>,
    dirty: bool,
    prev: u32,
    next: u32,
}

/// Counters for the cache, for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that read the device.
    pub misses: u64,
    /// Metadata pages written to the device.
    pub writes: u64,
    /// Blocks the cache holds now.
    pub resident: usize,
    /// Most blocks the cache may hold.
    pub capacity: usize,
    /// Reads that found the first copy of a page bad and used the second.
    pub second_copy_reads: u64,
}

/// What [`PageStore::scrub_page`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScrubOutcome {
    /// Every copy verified and they agree.
    Healthy,
    /// One copy was bad (or stale) and was rewritten from the other.
    Healed,
    /// No copy verifies: the error of the first.
    Lost(Error),
}

/// A page whose copy `bad` failed to verify while the other did.
#[derive(Clone, Copy)]
struct Heal {
    addr: u64,
    kind: PageKind,
    bad: u8,
}

/// Device plus block cache; see the module docs.
pub struct PageStore<D> {
    dev: D,
    lbas_per_block: u64,
    meta_start: u64,
    meta_end: u64,
    /// First page of the second copies: page `a` has its copy at `mirror + a`
    /// (`None`: one copy).
    mirror: Option<u64>,
    heals: Vec<Heal>,
    txid: u64,
    map: FastMap<u64, u32>,
    slots: Vec<Slot>,
    head: u32,
    tail: u32,
    capacity: usize,
    stats: CacheStats,
}

fn dev_err<E: DeviceError>(e: E) -> Error {
    Error::Device(e.kind())
}

impl<D: BlockDevice> PageStore<D> {
    /// Wraps `dev`; metadata addresses are valid in `meta_start..meta_end`.
    pub fn new(dev: D, cache_bytes: usize, meta_start: u64, meta_end: u64) -> Result<Self> {
        let bs = dev.block_size();
        if !bs.is_power_of_two() || !(512..=PAGE_SIZE as u32).contains(&bs) {
            return Err(Error::UnsupportedBlockSize(bs));
        }
        let capacity = (cache_bytes / PAGE_SIZE).max(MIN_CACHE_PAGES);
        Ok(PageStore {
            dev,
            lbas_per_block: (PAGE_SIZE as u64) / u64::from(bs),
            meta_start,
            meta_end,
            mirror: None,
            heals: Vec::new(),
            txid: 0,
            map: FastMap::default(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity,
            stats: CacheStats {
                capacity,
                ..CacheStats::default()
            },
        })
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The device, mutably (for data I/O, which bypasses the cache).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Gives the device back, dropping the cache (dirty blocks are *not* written).
    pub fn into_device(self) -> D {
        self.dev
    }

    /// Number of 4 KiB pages on the device.
    pub fn device_pages(&self) -> u64 {
        self.dev.block_count() / self.lbas_per_block
    }

    /// Sets the metadata area once the superblock is known.
    pub fn set_meta_range(&mut self, start: u64, end: u64) {
        self.meta_start = start;
        self.meta_end = end;
    }

    /// Keeps a second copy of every metadata page `a` at page `mirror + a`
    /// (`None`: one copy).
    pub fn set_mirror(&mut self, mirror: Option<u64>) {
        self.mirror = mirror;
    }

    /// Device block (LBA) of copy `copy` (0 or 1) of page `addr`.
    fn copy_lba(&self, addr: u64, copy: u8) -> Result<u64> {
        let page = match (copy, self.mirror) {
            (0, _) => Some(addr),
            (_, Some(m)) => m.checked_add(addr),
            (_, None) => None,
        };
        page.and_then(|p| p.checked_mul(self.lbas_per_block))
            .ok_or(Error::corrupt(addr, "page number overflows"))
    }

    /// Copies each page has: 1 or 2.
    fn copies(&self) -> u8 {
        if self.mirror.is_some() {
            2
        } else {
            1
        }
    }

    /// The transaction now being built; blocks stamped with it may change in place.
    pub fn txid(&self) -> u64 {
        self.txid
    }

    /// Starts building transaction `txid`.
    pub fn set_txid(&mut self, txid: u64) {
        self.txid = txid;
    }

    /// Cache counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            resident: self.map.len(),
            ..self.stats
        }
    }

    /// Reads a 4 KiB page straight from the device, bypassing the cache.
    pub fn read_page(&mut self, page: u64, buf: &mut [u8]) -> Result<()> {
        let lba = page
            .checked_mul(self.lbas_per_block)
            .ok_or(Error::corrupt(page, "page number overflows"))?;
        self.dev.read(lba, &mut buf[..PAGE_SIZE]).map_err(dev_err)
    }

    /// Writes a 4 KiB page straight to the device, bypassing the cache.
    pub fn write_page(&mut self, page: u64, buf: &[u8]) -> Result<()> {
        let lba = page
            .checked_mul(self.lbas_per_block)
            .ok_or(Error::corrupt(page, "page number overflows"))?;
        self.stats.writes += 1;
        self.dev.write(lba, &buf[..PAGE_SIZE]).map_err(dev_err)
    }

    /// Flushes the device.
    pub fn flush_device(&mut self) -> Result<()> {
        self.dev.flush().map_err(dev_err)
    }

    fn check_addr(&self, addr: u64) -> Result<()> {
        if addr < self.meta_start || addr >= self.meta_end {
            return Err(Error::corrupt(addr, "pointer outside the metadata area"));
        }
        Ok(())
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        if p != NIL {
            self.slots[p as usize].next = n;
        } else {
            self.head = n;
        }
        if n != NIL {
            self.slots[n as usize].prev = p;
        } else {
            self.tail = p;
        }
    }

    fn push_front(&mut self, i: u32) {
        let h = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = h;
        }
        if h != NIL {
            self.slots[h as usize].prev = i;
        } else {
            self.tail = i;
        }
        self.head = i;
    }

    fn touch(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    /// Writes copy `copy` of slot `i`, sealing it first when it is the first copy
    /// (both copies are the same bytes: one checksum).
    fn write_copy(&mut self, i: u32, copy: u8) -> Result<()> {
        let addr = self.slots[i as usize].addr;
        let lba = self.copy_lba(addr, copy)?;
        let s = &mut self.slots[i as usize];
        if copy == 0 {
            page::seal(&mut s.buf);
        }
        self.dev.write(lba, &s.buf).map_err(dev_err)?;
        self.stats.writes += 1;
        Ok(())
    }

    fn write_slot(&mut self, i: u32) -> Result<()> {
        for copy in 0..self.copies() {
            self.write_copy(i, copy)?;
        }
        self.slots[i as usize].dirty = false;
        Ok(())
    }

    /// Finds a slot for a new entry at `addr`, evicting the least recently used
    /// block if the cache is full. The slot is linked at the front and mapped.
    fn take_slot(&mut self, addr: u64) -> Result<u32> {
        let i = if self.slots.len() < self.capacity {
            self.slots.push(Slot {
                addr,
                buf: vec![0u8; PAGE_SIZE].into_boxed_slice(),
                dirty: false,
                prev: NIL,
                next: NIL,
            });
            (self.slots.len() - 1) as u32
        } else {
            let i = self.tail;
            if i == NIL {
                return Err(Error::corrupt(addr, "block cache has no slots"));
            }
            if self.slots[i as usize].dirty {
                self.write_slot(i)?;
            }
            let old = self.slots[i as usize].addr;
            self.map.remove(&old);
            self.unlink(i);
            self.slots[i as usize].addr = addr;
            i
        };
        self.push_front(i);
        self.map.insert(addr, i);
        Ok(i)
    }

    fn release_slot(&mut self, i: u32) {
        // Move a slot whose load failed to the LRU end, unmapped, so it is reused first.
        let addr = self.slots[i as usize].addr;
        self.map.remove(&addr);
        self.slots[i as usize].dirty = false;
        self.slots[i as usize].addr = u64::MAX;
        self.unlink(i);
        let t = self.tail;
        self.slots[i as usize].prev = t;
        self.slots[i as usize].next = NIL;
        if t != NIL {
            self.slots[t as usize].next = i;
        } else {
            self.head = i;
        }
        self.tail = i;
    }

    fn load(&mut self, addr: u64, kind: PageKind) -> Result<u32> {
        if let Some(&i) = self.map.get(&addr) {
            self.stats.hits += 1;
            self.touch(i);
            if page::kind(&self.slots[i as usize].buf) != kind as u8 {
                return Err(Error::Misplaced {
                    addr,
                    what: "unexpected block kind",
                });
            }
            return Ok(i);
        }
        self.check_addr(addr)?;
        self.stats.misses += 1;
        let i = self.take_slot(addr)?;
        let mut res = self.read_copy(i, addr, kind, 0);
        if res.is_err() && self.mirror.is_some() && self.read_copy(i, addr, kind, 1).is_ok() {
            self.stats.second_copy_reads += 1;
            self.note_heal(addr, kind, 0);
            res = Ok(());
        }
        if let Err(e) = res {
            self.release_slot(i);
            return Err(e);
        }
        Ok(i)
    }

    /// Reads copy `copy` of page `addr` into slot `i` and verifies it.
    fn read_copy(&mut self, i: u32, addr: u64, kind: PageKind, copy: u8) -> Result<()> {
        let lba = self.copy_lba(addr, copy)?;
        let buf = &mut self.slots[i as usize].buf;
        self.dev.read(lba, buf).map_err(dev_err)?;
        page::verify(buf, addr, kind, self.txid)
    }

    fn note_heal(&mut self, addr: u64, kind: PageKind, bad: u8) {
        if self.heals.len() < MAX_PENDING_HEALS && !self.heals.iter().any(|h| h.addr == addr) {
            self.heals.push(Heal { addr, kind, bad });
        }
    }

    /// Pages whose bad copy waits for [`PageStore::heal`].
    pub fn pending_heals(&self) -> usize {
        self.heals.len()
    }

    /// Rewrites the bad copy of every page a read found bad, from its good copy
    /// (read and verified again), and returns how many were rewritten. Part of a
    /// commit, before its flush; a page that no longer verifies in its good copy is
    /// left to `scrub`.
    pub fn heal(&mut self) -> Result<u64> {
        let heals = core::mem::take(&mut self.heals);
        let mut healed = 0;
        let mut buf = vec![0u8; PAGE_SIZE];
        for h in heals {
            let good = self.copy_lba(h.addr, 1 - h.bad)?;
            let bad = self.copy_lba(h.addr, h.bad)?;
            self.dev.read(good, &mut buf).map_err(dev_err)?;
            if page::verify(&buf, h.addr, h.kind, self.txid).is_ok() {
                self.dev.write(bad, &buf).map_err(dev_err)?;
                self.stats.writes += 1;
                healed += 1;
            }
        }
        Ok(healed)
    }

    /// Reads every copy of committed page `addr` straight from the device, and
    /// rewrites a copy that does not verify, or that is older than the other (a
    /// write the device lost), from the good one. The rewrite is durable at the
    /// next device flush.
    pub fn scrub_page(&mut self, addr: u64, kind: PageKind) -> Result<ScrubOutcome> {
        self.check_addr(addr)?;
        let mut bufs = [vec![0u8; PAGE_SIZE], vec![0u8; PAGE_SIZE]];
        let mut ok = [false; 2];
        let mut first_err = None;
        for copy in 0..self.copies() {
            let lba = self.copy_lba(addr, copy)?;
            let b = &mut bufs[copy as usize];
            let r = self
                .dev
                .read(lba, b)
                .map_err(dev_err)
                .and_then(|()| page::verify(b, addr, kind, self.txid));
            match r {
                Ok(()) => ok[copy as usize] = true,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if self.mirror.is_none() {
            return Ok(match first_err {
                None => ScrubOutcome::Healthy,
                Some(e) => ScrubOutcome::Lost(e),
            });
        }
        let good = match ok {
            [true, true] if bufs[0] == bufs[1] => return Ok(ScrubOutcome::Healthy),
            [true, true] if page::txid(&bufs[1]) > page::txid(&bufs[0]) => 1,
            [true, _] => 0,
            [false, true] => 1,
            [false, false] => {
                return Ok(ScrubOutcome::Lost(
                    first_err.unwrap_or(Error::corrupt(addr, "unreadable")),
                ))
            }
        };
        let bad = 1 - good;
        let lba = self.copy_lba(addr, bad as u8)?;
        self.dev.write(lba, &bufs[good]).map_err(dev_err)?;
        self.stats.writes += 1;
        // A cached copy read before the damage is the good content; one read from
        // a stale copy is dropped, to be read again.
        if bad == 0 {
            self.forget_clean(addr);
        }
        Ok(ScrubOutcome::Healed)
    }

    /// Drops `addr` from the cache unless it is dirty.
    fn forget_clean(&mut self, addr: u64) {
        if let Some(&i) = self.map.get(&addr) {
            if !self.slots[i as usize].dirty {
                self.release_slot(i);
            }
        }
    }

    /// Returns the verified content of metadata page `addr`, which must be of `kind`.
    pub fn read(&mut self, addr: u64, kind: PageKind) -> Result<&[u8]> {
        let i = self.load(addr, kind)?;
        Ok(&self.slots[i as usize].buf)
    }

    /// Returns block `addr` for modification in place. Only blocks written in the
    /// current transaction may be modified; anything else is refused.
    pub fn modify(&mut self, addr: u64, kind: PageKind) -> Result<&mut [u8]> {
        let i = self.load(addr, kind)?;
        let txid = self.txid;
        let s = &mut self.slots[i as usize];
        if page::txid(&s.buf) != txid {
            return Err(Error::corrupt(
                addr,
                "attempt to modify a committed block in place",
            ));
        }
        s.dirty = true;
        Ok(&mut s.buf)
    }

    /// Creates block `addr` with a fresh header of `kind` and an all-zero body.
    pub fn create(&mut self, addr: u64, kind: PageKind) -> Result<&mut [u8]> {
        self.check_addr(addr)?;
        // A page written anew is healed by that write (both copies).
        self.heals.retain(|h| h.addr != addr);
        let i = match self.map.get(&addr) {
            Some(&i) => {
                self.touch(i);
                i
            }
            None => self.take_slot(addr)?,
        };
        let txid = self.txid;
        let s = &mut self.slots[i as usize];
        page::init(&mut s.buf, kind, addr, txid);
        s.dirty = true;
        Ok(&mut s.buf)
    }

    /// Creates block `dst` as a copy of `src` (its header relocated to `dst`).
    pub fn copy(&mut self, src: u64, dst: u64, kind: PageKind) -> Result<&mut [u8]> {
        let mut tmp = [0u8; PAGE_SIZE];
        tmp.copy_from_slice(self.read(src, kind)?);
        let txid = self.txid;
        let b = self.create(dst, kind)?;
        b.copy_from_slice(&tmp);
        page::relocate(b, dst, txid);
        Ok(b)
    }

    /// Drops block `addr` from the cache without writing it (it was freed).
    pub fn forget(&mut self, addr: u64) {
        if let Some(&i) = self.map.get(&addr) {
            self.release_slot(i);
        }
    }

    /// Writes every dirty block, in address order.
    pub fn write_dirty(&mut self) -> Result<()> {
        let mut dirty: Vec<(u64, u32)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.dirty)
            .map(|(i, s)| (s.addr, i as u32))
            .collect();
        dirty.sort_unstable();
        // All first copies, then all second ones: two sequential runs.
        for copy in 0..self.copies() {
            for &(_, i) in &dirty {
                self.write_copy(i, copy)?;
            }
        }
        for (_, i) in dirty {
            self.slots[i as usize].dirty = false;
        }
        Ok(())
    }
}
