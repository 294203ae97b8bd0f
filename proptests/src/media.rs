//! In-memory media for the exhaustive crash test.
//!
//! A workload runs once on a [`Tracer`], which records every device write, flush and
//! discard. The test then replays that trace: a [`Medium`] holds what was durable at
//! the last flush (discards included: like
//! [`PowerCutDevice`](lunsnap::testing::PowerCutDevice), the harshest reading of the
//! hint, a discard zeroes the durable blocks at once), and each crash is tried on a
//! [`View`] of it (a copy-on-write overlay, so a crash costs what it changes, not a
//! copy of the device) behind a fresh `PowerCutDevice` that is handed the writes made
//! since that flush, then cut.

use std::collections::HashMap;

use lunsnap::{BlockDevice, DeviceErrorKind};

/// One device call of a traced workload.
#[derive(Clone, Debug)]
pub enum Event {
    /// A write of whole blocks at an LBA.
    Write(u64, Box<[u8]>),
    /// A flush.
    Flush,
    /// A discard of `count` blocks at an LBA: they read as zeros from then on, durably.
    Discard(u64, u64),
}

/// Sparse blocks (absent: zeros).
#[derive(Clone, Debug)]
pub struct Medium {
    bs: usize,
    count: u64,
    blocks: HashMap<u64, Box<[u8]>>,
}

fn check(bs: usize, count: u64, lba: u64, len: usize) -> Result<(), DeviceErrorKind> {
    let ok = len % bs == 0
        && lba
            .checked_add((len / bs) as u64)
            .is_some_and(|e| e <= count);
    if ok {
        Ok(())
    } else {
        Err(DeviceErrorKind::OutOfRange)
    }
}

impl Medium {
    /// `count` blocks of `bs` bytes, all zeros.
    pub fn new(bs: u32, count: u64) -> Medium {
        Medium {
            bs: bs as usize,
            count,
            blocks: HashMap::new(),
        }
    }

    fn read_into(&self, lba: u64, buf: &mut [u8]) {
        for (c, a) in buf.chunks_exact_mut(self.bs).zip(lba..) {
            match self.blocks.get(&a) {
                Some(b) => c.copy_from_slice(b),
                None => c.fill(0),
            }
        }
    }

    fn store(&mut self, lba: u64, buf: &[u8]) {
        for (c, a) in buf.chunks_exact(self.bs).zip(lba..) {
            self.blocks.insert(a, c.into());
        }
    }

    /// Applies a traced write.
    pub fn apply(&mut self, lba: u64, data: &[u8]) {
        self.store(lba, data);
    }

    /// Applies a traced discard: the blocks read as zeros.
    pub fn discard(&mut self, lba: u64, count: u64) {
        if count > self.blocks.len() as u64 {
            let end = lba.saturating_add(count);
            self.blocks.retain(|&a, _| a < lba || a >= end);
        } else {
            for a in lba..lba + count {
                self.blocks.remove(&a);
            }
        }
    }
}

impl BlockDevice for Medium {
    type Error = DeviceErrorKind;
    fn block_size(&self) -> u32 {
        self.bs as u32
    }
    fn block_count(&self) -> u64 {
        self.count
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceErrorKind> {
        check(self.bs, self.count, lba, buf.len())?;
        self.read_into(lba, buf);
        Ok(())
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceErrorKind> {
        check(self.bs, self.count, lba, buf.len())?;
        self.store(lba, buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DeviceErrorKind> {
        Ok(())
    }
    fn discard(&mut self, lba: u64, count: u64) -> Result<(), DeviceErrorKind> {
        check_blocks(self.count, lba, count)?;
        Medium::discard(self, lba, count);
        Ok(())
    }
}

/// `count` blocks at `lba` lie inside a device of `blocks` blocks.
fn check_blocks(blocks: u64, lba: u64, count: u64) -> Result<(), DeviceErrorKind> {
    match lba.checked_add(count) {
        Some(end) if end <= blocks => Ok(()),
        _ => Err(DeviceErrorKind::OutOfRange),
    }
}

/// A [`Medium`] that records every write, flush and discard made through it.
#[derive(Clone, Debug)]
pub struct Tracer {
    /// The newest content (what reads see).
    pub medium: Medium,
    /// Every write, flush and discard so far.
    pub events: Vec<Event>,
}

impl Tracer {
    /// A blank traced device.
    pub fn new(bs: u32, count: u64) -> Tracer {
        Tracer {
            medium: Medium::new(bs, count),
            events: Vec::new(),
        }
    }
}

impl BlockDevice for Tracer {
    type Error = DeviceErrorKind;
    fn block_size(&self) -> u32 {
        self.medium.block_size()
    }
    fn block_count(&self) -> u64 {
        self.medium.count
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceErrorKind> {
        self.medium.read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceErrorKind> {
        self.medium.write(lba, buf)?;
        self.events.push(Event::Write(lba, buf.into()));
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DeviceErrorKind> {
        self.events.push(Event::Flush);
        Ok(())
    }
    fn discard(&mut self, lba: u64, count: u64) -> Result<(), DeviceErrorKind> {
        BlockDevice::discard(&mut self.medium, lba, count)?;
        self.events.push(Event::Discard(lba, count));
        Ok(())
    }
}

/// A copy-on-write view of a [`Medium`]: reads see the view's own writes first.
#[derive(Debug)]
pub struct View<'a> {
    base: &'a Medium,
    delta: HashMap<u64, Box<[u8]>>,
}

impl<'a> View<'a> {
    /// A view of `base` with no changes.
    pub fn new(base: &'a Medium) -> View<'a> {
        View {
            base,
            delta: HashMap::new(),
        }
    }
}

impl BlockDevice for View<'_> {
    type Error = DeviceErrorKind;
    fn block_size(&self) -> u32 {
        self.base.bs as u32
    }
    fn block_count(&self) -> u64 {
        self.base.count
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceErrorKind> {
        let bs = self.base.bs;
        check(bs, self.base.count, lba, buf.len())?;
        for (c, a) in buf.chunks_exact_mut(bs).zip(lba..) {
            match self.delta.get(&a) {
                Some(b) => c.copy_from_slice(b),
                None => self.base.read_into(a, c),
            }
        }
        Ok(())
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceErrorKind> {
        let bs = self.base.bs;
        check(bs, self.base.count, lba, buf.len())?;
        for (c, a) in buf.chunks_exact(bs).zip(lba..) {
            self.delta.insert(a, c.into());
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DeviceErrorKind> {
        Ok(())
    }
    fn discard(&mut self, lba: u64, count: u64) -> Result<(), DeviceErrorKind> {
        check_blocks(self.base.count, lba, count)?;
        for a in lba..lba + count {
            self.delta.insert(a, vec![0u8; self.base.bs].into());
        }
        Ok(())
    }
}
