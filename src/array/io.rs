//! The I/O path: sector-granular read, write and discard of a LUN.
//!
//! A LUN's mapping takes logical extent `le` to slot `le % 16` of the value at key
//! `le / 16`. A write into an extent goes in place only when no committed state can
//! see that extent (it was allocated in this transaction and only this LUN maps
//! it); otherwise a fresh extent is taken from the data log, the old content that
//! the write does not cover is copied over, and the slot is switched. A crash thus
//! never changes what the last commit reads.

use alloc::vec;

use crate::device::{is_zero, BlockDevice, DeviceError};
use crate::error::{Error, Result};

use super::lun::{pack, unpack, EXTENTS_PER_ENTRY};
use super::{Array, SECTOR};

/// Bytes from `pos` to the end of its device block or to `end`, whichever is first.
fn piece(pos: u64, end: u64, bs: u64) -> usize {
    (bs - pos % bs).min(end - pos) as usize
}

fn dev_err<E: DeviceError>(e: E) -> Error {
    Error::Device(e.kind())
}

impl<D: BlockDevice> Array<D> {
    /// Validates an I/O request on LUN `n`.
    pub(super) fn io_check(&self, n: u32, offset: u64, len: u64) -> Result<()> {
        self.io_check_online(n, offset, len, true)
    }

    /// Validates an I/O request on LUN `n`, refusing an offline LUN if `online`.
    pub(super) fn io_check_online(
        &self,
        n: u32,
        offset: u64,
        len: u64,
        online: bool,
    ) -> Result<()> {
        let l = self.get(n)?;
        if !l.attached {
            return Err(Error::Detached(n));
        }
        if online && !l.online {
            return Err(Error::Offline(n));
        }
        if offset % SECTOR != 0 || len % SECTOR != 0 {
            return Err(Error::Misaligned { offset, len });
        }
        if offset.checked_add(len).map_or(true, |end| end > l.size) {
            return Err(Error::OutOfRange {
                offset,
                len,
                size: l.size,
            });
        }
        Ok(())
    }

    /// The extent mapped at logical extent `le` of LUN `n`, with its mapping entry's slots.
    fn mapped(
        &mut self,
        n: u32,
        le: u64,
    ) -> Result<(Option<u64>, [u32; EXTENTS_PER_ENTRY as usize])> {
        let t = self.get(n)?.mapping;
        let mut v = [0u8; super::lun::ENTRY_BYTES];
        let slots = if self.eng.lookup(&t, le / EXTENTS_PER_ENTRY, &mut v)? {
            unpack(&v)
        } else {
            [0; EXTENTS_PER_ENTRY as usize]
        };
        let s = slots[(le % EXTENTS_PER_ENTRY) as usize];
        let e = if s == 0 { None } else { Some(u64::from(s) - 1) };
        if e.is_some_and(|e| e >= self.eng.geometry().data_extents) {
            return Err(Error::Corrupt {
                addr: t.root(),
                what: "LUN mapping names an extent outside the pool",
            });
        }
        Ok((e, slots))
    }

    /// Byte span on the device of `len` bytes at `off` in extent `e`, and the
    /// device's block size.
    fn span(&mut self, e: u64, off: u64, len: usize) -> Result<(u64, u64, u64)> {
        let lba = self.eng.extent_lba(e)?;
        let bs = u64::from(self.eng.device_mut().block_size());
        let start = lba * bs + off;
        Ok((start, start + len as u64, bs))
    }

    /// Reads bytes at `off` within data extent `e` (sector-aligned).
    fn read_extent(&mut self, e: u64, off: u64, buf: &mut [u8]) -> Result<()> {
        let (start, end, bs) = self.span(e, off, buf.len())?;
        let dev = self.eng.device_mut();
        if start % bs == 0 && end % bs == 0 {
            return dev.read(start / bs, buf).map_err(dev_err);
        }
        // The device's blocks are larger than a sector: go through a bounce block.
        let mut blk = vec![0u8; bs as usize];
        let mut pos = start;
        while pos < end {
            let (b, within, n) = (pos / bs, (pos % bs) as usize, piece(pos, end, bs));
            dev.read(b, &mut blk).map_err(dev_err)?;
            let o = (pos - start) as usize;
            buf[o..o + n].copy_from_slice(&blk[within..within + n]);
            pos += n as u64;
        }
        Ok(())
    }

    /// Writes bytes at `off` within data extent `e` (sector-aligned).
    fn write_extent(&mut self, e: u64, off: u64, buf: &[u8]) -> Result<()> {
        let (start, end, bs) = self.span(e, off, buf.len())?;
        let dev = self.eng.device_mut();
        if start % bs == 0 && end % bs == 0 {
            return dev.write(start / bs, buf).map_err(dev_err);
        }
        let mut blk = vec![0u8; bs as usize];
        let mut pos = start;
        while pos < end {
            let (b, within, n) = (pos / bs, (pos % bs) as usize, piece(pos, end, bs));
            if n < bs as usize {
                dev.read(b, &mut blk).map_err(dev_err)?;
            }
            let o = (pos - start) as usize;
            blk[within..within + n].copy_from_slice(&buf[o..o + n]);
            dev.write(b, &blk).map_err(dev_err)?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes of LUN `n` at byte `offset`; never-written areas read
    /// as zeros.
    ///
    /// Errors: [`Error::NoSuchLun`], [`Error::LunOutOfRange`], [`Error::Detached`],
    /// [`Error::Misaligned`], [`Error::OutOfRange`], device errors.
    pub fn read(&mut self, n: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_online(n, offset, buf, true)
    }

    /// [`Array::read`], of an offline LUN too unless `online` (the testing model
    /// checks offline LUNs' contents with it).
    pub(crate) fn read_online(
        &mut self,
        n: u32,
        offset: u64,
        buf: &mut [u8],
        online: bool,
    ) -> Result<()> {
        self.io_check_online(n, offset, buf.len() as u64, online)?;
        self.lost.check_read(n, offset, buf.len() as u64)?;
        let es = self.extent_size;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let le = pos / es;
            let within = pos % es;
            let len = ((es - within) as usize).min(buf.len() - done);
            let chunk = &mut buf[done..done + len];
            match self.mapped(n, le)?.0 {
                None => chunk.fill(0),
                Some(e) => self.read_extent(e, within, chunk)?,
            }
            done += len;
        }
        Ok(())
    }

    /// Writes `buf` to LUN `n` at byte `offset`. Durable at the next [`Array::flush`]
    /// or management operation; never fails for lack of space (the LUN's size is
    /// reserved), though it may commit early to reuse extents freed since the last
    /// commit.
    ///
    /// Errors: as [`Array::read`], plus [`Error::Poisoned`].
    pub fn write(&mut self, n: u32, offset: u64, buf: &[u8]) -> Result<()> {
        self.live_io()?;
        self.io_check(n, offset, buf.len() as u64)?;
        self.write_detecting(n, offset, buf, self.detect_zeros)?;
        self.dirty |= self.lost.clear(n, offset, buf.len() as u64);
        Ok(())
    }

    /// [`Array::write`], unmapping whole extents of zeros if `detect`.
    fn write_detecting(&mut self, n: u32, offset: u64, buf: &[u8], detect: bool) -> Result<()> {
        let es = self.extent_size;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let le = pos / es;
            let within = pos % es;
            let len = ((es - within) as usize).min(buf.len() - done);
            let chunk = &buf[done..done + len];
            if detect && is_zero(chunk) {
                if len as u64 == es {
                    self.make_room(0)?;
                    self.unmap(n, le)?;
                } else if self.mapped(n, le)?.0.is_some() {
                    self.write_in_extent(n, le, within, chunk)?;
                }
                // Zeros into part of a hole: it reads as zeros already.
            } else {
                self.write_in_extent(n, le, within, chunk)?;
            }
            done += len;
        }
        Ok(())
    }

    /// Makes `len` bytes of LUN `n` from `offset` read as zeros, as a data write: it
    /// becomes durable at the next [`Array::flush`] or management operation, and does
    /// not commit (unlike [`Array::discard`]). With `punch`, whole extents in the range
    /// are unmapped (they occupy no space and stop being shared) and the parts of
    /// extents it covers in part are zeroed; without, the whole range is written with
    /// zeros and stays allocated (for users who need allocation to follow writes,
    /// such as NBD's `WRITE_ZEROES` with `NO_HOLE`).
    ///
    /// Errors: as [`Array::write`].
    pub fn write_zeroes(&mut self, n: u32, offset: u64, len: u64, punch: bool) -> Result<()> {
        self.live_io()?;
        self.io_check(n, offset, len)?;
        if punch {
            return self.discard_range(n, offset, len);
        }
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; len.min(CHUNK) as usize];
        let mut pos = offset;
        while pos < offset + len {
            let k = (offset + len - pos).min(CHUNK);
            self.write_detecting(n, pos, &zeros[..k as usize], false)?;
            pos += k;
        }
        self.dirty |= self.lost.clear(n, offset, len);
        Ok(())
    }

    /// Unmaps logical extent `le` of LUN `n` (nothing if it is a hole).
    fn unmap(&mut self, n: u32, le: u64) -> Result<()> {
        let (old, mut slots) = self.mapped(n, le)?;
        if let Some(e) = old {
            slots[(le % EXTENTS_PER_ENTRY) as usize] = 0;
            self.set_entry(n, le / EXTENTS_PER_ENTRY, &slots)?;
            self.eng.dec_data(e)?;
        }
        Ok(())
    }

    fn live_io(&self) -> Result<()> {
        if self.eng.is_poisoned() {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Writes `data` at `within` in logical extent `le` of LUN `n`.
    fn write_in_extent(&mut self, n: u32, le: u64, within: u64, data: &[u8]) -> Result<()> {
        let (old, mut slots) = self.mapped(n, le)?;
        if let Some(e) = old {
            let (now, committed) = self.eng.data_refcounts(e)?;
            if now == 1 && committed == 0 {
                // Allocated in this transaction, by this LUN: nobody else can see it.
                return self.write_extent(e, within, data);
            }
        }
        // Extents released in this transaction become free at commit. The
        // reservation (plus the spare extent) guarantees one is free then, once
        // the trees waiting in the free queue are freed: one commit either way.
        if !self.make_room(1)? && self.eng.data_free() == 0 {
            self.commit()?;
        }

        let new = self.eng.alloc_data()?;
        let es = self.extent_size as usize;
        let r = if data.len() == es {
            self.write_extent(new, 0, data)
        } else {
            let mut scratch = core::mem::take(&mut self.scratch);
            scratch.resize(es, 0);
            let r = match old {
                Some(e) => self.read_extent(e, 0, &mut scratch),
                None => {
                    scratch.fill(0);
                    Ok(())
                }
            };
            let w = within as usize;
            scratch[w..w + data.len()].copy_from_slice(data);
            let r = r.and_then(|()| self.write_extent(new, 0, &scratch));
            self.scratch = scratch;
            r
        };
        if let Err(err) = r {
            // Give the fresh extent back; nothing else changed.
            self.eng.dec_data(new)?;
            return Err(err);
        }
        // The engine never hands out an extent past MAX_DATA_EXTENTS (2^32 - 2), so
        // the slot (extent + 1) fits; refuse rather than truncate if it ever did not.
        slots[(le % EXTENTS_PER_ENTRY) as usize] =
            u32::try_from(new + 1).map_err(|_| Error::Corrupt {
                addr: 0,
                what: "data extent number does not fit a mapping slot",
            })?;
        self.set_entry(n, le / EXTENTS_PER_ENTRY, &slots)?;
        if let Some(e) = old {
            self.eng.dec_data(e)?;
        }
        Ok(())
    }

    /// Stores mapping entry `g` of LUN `n`'s mapping (removing it when all holes). The
    /// slots' references are the caller's: the old value's are not released.
    fn set_entry(
        &mut self,
        n: u32,
        g: u64,
        slots: &[u32; EXTENTS_PER_ENTRY as usize],
    ) -> Result<()> {
        let l = self.luns.get_mut(&n).ok_or(Error::NoSuchLun(n))?;
        let mut t = l.mapping;
        let r = if slots.iter().all(|&s| s == 0) {
            self.eng.remove_owned(&mut t, g).map(|_| ())
        } else {
            self.eng.replace_owned(&mut t, g, &pack(slots))
        };
        // The handle moved even if the change failed half way (the engine is then
        // poisoned and nothing more is committed).
        l.mapping = t;
        l.dirty = true;
        self.dirty = true;
        r
    }

    /// Unmaps LUN `n` from `offset` for `len` bytes and commits: the range reads as
    /// zeros afterwards. Whole extents are released (freed if nobody else maps
    /// them); the parts of extents the range only partly covers are zeroed.
    ///
    /// Errors: as [`Array::write`].
    /// A discard of length 0 checks its arguments and changes nothing (no commit).
    pub fn discard(&mut self, n: u32, offset: u64, len: u64) -> Result<()> {
        self.live_io()?;
        self.io_check(n, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let r = self
            .discard_prepare(n, offset, len)
            .and_then(|()| self.discard_range(n, offset, len))
            .and_then(|()| {
                self.dirty = true;
                self.commit()
            });
        if r.is_err() {
            // Part of the range may be unmapped already: a management operation
            // takes effect whole or not at all, so that part must never be committed.
            self.eng.poison();
        }
        r
    }

    /// Zeroing the extents a discard only partly covers (at most two: its first and
    /// its last) may need fresh extents. Commits first if fewer are free, so that
    /// the write path never commits early in the middle of the discard: that commit
    /// would make part of the discard durable on its own. Committing here only makes
    /// the writes before the discard durable, as a flush would; afterwards the spare
    /// extents (at least two) guarantee enough are free.
    /// When trees wait in the free queue, that commit frees what is short first.
    fn discard_prepare(&mut self, n: u32, offset: u64, len: u64) -> Result<()> {
        let size = self.get(n)?.size;
        let es = self.extent_size;
        let end = offset + len;
        if len == 0 {
            return Ok(());
        }
        // Where the chunks in the first and the last extent of the range start.
        let last = (end - 1) / es * es;
        let ends = if last / es == offset / es { 1 } else { 2 };
        let mut needed = 0;
        for &pos in [offset, last].iter().take(ends) {
            let within = pos % es;
            let chunk = (es - within).min(end - pos);
            let whole = within == 0 && (chunk == es || pos + chunk == size);
            if whole {
                continue;
            }
            if let (Some(e), _) = self.mapped(n, pos / es)? {
                let (now, committed) = self.eng.data_refcounts(e)?;
                if now != 1 || committed != 0 {
                    needed += 1;
                }
            }
        }
        if !self.make_room(needed)? && self.eng.data_free() < needed {
            self.commit()?;
        }
        Ok(())
    }

    fn discard_range(&mut self, n: u32, offset: u64, len: u64) -> Result<()> {
        let size = self.get(n)?.size;
        let es = self.extent_size;
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let le = pos / es;
            let within = pos % es;
            let chunk = (es - within).min(end - pos);
            // The last extent of a LUN whose size is not a multiple of the extent
            // size is whole once the range reaches the LUN's end.
            let whole = within == 0 && (chunk == es || pos + chunk == size);
            if whole {
                self.unmap(n, le)?;
            } else if self.mapped(n, le)?.0.is_some() {
                let zeros = vec![0u8; chunk as usize];
                self.write_in_extent(n, le, within, &zeros)?;
            }
            pos += chunk;
        }
        self.dirty |= self.lost.clear(n, offset, len);
        Ok(())
    }
}
