//! Layer 2b: the metadata page store — device access plus a bounded block cache.
//!
//! Every metadata read goes through [`PageStore`]: a block fetched from the device is
//! verified ([`page::verify`]) before anyone sees it, and every address is checked
//! against the metadata area first, so a hostile pointer is an error, not a read of
//! someone else's data. The cache holds at most `capacity` blocks (the caller's byte
//! budget divided by [`PAGE_SIZE`]); least-recently-used blocks are evicted, dirty
//! ones written out first. Writing a dirty block early is always safe: dirty blocks
//! live at addresses that are free in the committed state (copy-on-write).

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use crate::device::{BlockDevice, DeviceError};
use crate::error::{Error, Result};
use crate::fast_map::FastMap;
use crate::store::page::{self, PageKind, PAGE_SIZE};

/// Fewest blocks a cache may hold, whatever the budget.
pub const MIN_CACHE_PAGES: usize = 16;

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
}

/// Device plus block cache; see the module docs.
pub struct PageStore<D> {
    dev: D,
    lbas_per_block: u64,
    meta_start: u64,
    meta_end: u64,
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

    fn write_slot(&mut self, i: u32) -> Result<()> {
        let lpb = self.lbas_per_block;
        let s = &mut self.slots[i as usize];
        page::seal(&mut s.buf);
        let lba = s.addr * lpb;
        self.dev.write(lba, &s.buf).map_err(dev_err)?;
        s.dirty = false;
        self.stats.writes += 1;
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
        let lba = addr * self.lbas_per_block;
        let res = match self.dev.read(lba, &mut self.slots[i as usize].buf) {
            Ok(()) => page::verify(&self.slots[i as usize].buf, addr, kind, self.txid),
            Err(e) => Err(dev_err(e)),
        };
        if let Err(e) = res {
            self.release_slot(i);
            return Err(e);
        }
        Ok(i)
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
        for (_, i) in dirty {
            self.write_slot(i)?;
        }
        Ok(())
    }
}
