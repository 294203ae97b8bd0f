//! In-memory media for the exhaustive crash test.
//!
//! A workload runs once on a [`Tracer`], which records every device write and flush.
//! The test then replays that trace: a [`Medium`] holds what was durable at the last
//! flush, and each crash is tried on a [`View`] of it (a copy-on-write overlay, so a
//! crash costs what it changes, not a copy of the device) behind a fresh
//! [`PowerCutDevice`](lunsnap::testing::PowerCutDevice) that is handed the
//! writes made since that flush, then cut.

use std::collections::HashMap;

use lunsnap::{BlockDevice, DeviceErrorKind};

/// One device call of a traced workload.
#[derive(Clone, Debug)]
pub enum Event {
    /// A write of whole blocks at an LBA.
    Write(u64, Box<[u8]>),
    /// A flush.
    Flush,
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
}

/// A [`Medium`] that records every write and flush made through it.
#[derive(Clone, Debug)]
pub struct Tracer {
    /// The newest content (what reads see).
    pub medium: Medium,
    /// Every write and flush so far.
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
}
