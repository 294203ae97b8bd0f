//! Test devices (feature `testing`): simulated power loss and injected I/O errors.
//!
//! [`PowerCutDevice`] wraps any [`BlockDevice`] standing for the durable medium and puts
//! a volatile write cache in front of it, exactly as loose as the power-loss model of
//! [`BlockDevice`] allows: at a [`power_cut`](PowerCutDevice::power_cut) each unflushed
//! block may be lost, kept, or torn sector by sector ([`CutOutcome::Random`]), or even
//! garbled ([`CutOutcome::Harsh`]), chosen by a seeded generator so that every crash can
//! be replayed from its [`CutOutcome`] and [`CrashPoint`] (both print compactly).
//! [`ErrorDevice`] fails the Nth read, write or flush, once or for good. The reference
//! model to check an [`Array`](crate::Array) against is
//! [`lunsnap::testing::Model`](crate::testing::Model). Use them in crash tests:
//!
//! ```
//! use lunsnap::{BlockDevice, MemDevice};
//! use lunsnap::testing::{CutOutcome, PowerCutDevice};
//!
//! let mut dev = PowerCutDevice::new(MemDevice::new(512, 8).unwrap());
//! dev.write(0, &[1u8; 512]).unwrap();
//! dev.flush().unwrap();
//! dev.write(1, &[2u8; 512]).unwrap();
//! dev.power_cut(CutOutcome::DropAll).unwrap();
//! let mut buf = [0u8; 1024];
//! dev.read(0, &mut buf).unwrap();
//! assert!(buf[..512].iter().all(|&b| b == 1)); // flushed: kept
//! assert!(buf[512..].iter().all(|&b| b == 0)); // unflushed: lost
//! ```

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use super::Rng as SplitMix64;
use crate::device::{check_request, BlockDevice, DeviceError, DeviceErrorKind, SECTOR_SIZE};
use crate::fast_map::FastMap;

/// What happens to the unflushed writes at a [`PowerCutDevice::power_cut`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CutOutcome {
    /// Every unflushed write is lost.
    DropAll,
    /// Every unflushed write reaches the medium (as if flushed just in time).
    KeepAll,
    /// Each unflushed write of each block, in order, is independently dropped,
    /// persisted, or torn (each 512-byte sector holding its old or its new content),
    /// chosen by a pseudo-random generator seeded with `seed`: the same seed on the same
    /// history gives the same result.
    Random {
        /// Seed of the pseudo-random generator.
        seed: u64,
    },
    /// As [`Random`](Self::Random), with a fourth possibility for each unflushed
    /// write of each block: *garbled*, each 512-byte sector independently holding its
    /// old content, its new content, or garbage (a medium that does not even keep
    /// sectors atomic). Only blocks written since the last flush are affected.
    Harsh {
        /// Seed of the pseudo-random generator.
        seed: u64,
    },
}

impl CutOutcome {
    /// The generator seed of a [`Random`](Self::Random) or [`Harsh`](Self::Harsh) outcome.
    pub fn seed(&self) -> Option<u64> {
        match *self {
            CutOutcome::Random { seed } | CutOutcome::Harsh { seed } => Some(seed),
            CutOutcome::DropAll | CutOutcome::KeepAll => None,
        }
    }
}

/// Prints the outcome so that a failing test can be reproduced:
/// `drop-all`, `keep-all`, `random(seed=0x…)`, `harsh(seed=0x…)`.
impl fmt::Display for CutOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CutOutcome::DropAll => f.write_str("drop-all"),
            CutOutcome::KeepAll => f.write_str("keep-all"),
            CutOutcome::Random { seed } => write!(f, "random(seed={seed:#x})"),
            CutOutcome::Harsh { seed } => write!(f, "harsh(seed={seed:#x})"),
        }
    }
}

/// Where a [`PowerCutDevice`] is in its history: what a crash test prints, with the
/// [`CutOutcome`], to name the crash it tried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CrashPoint {
    /// Successful writes so far.
    pub writes: u64,
    /// Successful flushes so far.
    pub flushes: u64,
    /// Writes not yet made durable by a flush.
    pub unflushed: u64,
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "after write {} and flush {} ({} writes unflushed)",
            self.writes, self.flushes, self.unflushed
        )
    }
}

/// What the last [`PowerCutDevice::power_cut`] did to the unflushed blocks (one count
/// per block of each unflushed write).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CutStats {
    /// Blocks whose write was lost.
    pub dropped: u64,
    /// Blocks whose write reached the medium whole.
    pub kept: u64,
    /// Blocks torn: each sector old or new.
    pub torn: u64,
    /// Blocks garbled: each sector old, new or garbage ([`CutOutcome::Harsh`]).
    pub garbled: u64,
}

/// A device with a volatile write cache in front of a durable inner device.
///
/// * [`write`](BlockDevice::write) goes to the cache (the *overlay*), kept in order.
/// * [`read`](BlockDevice::read) returns the newest content: overlay first, then inner.
/// * [`flush`](BlockDevice::flush) writes the overlay to the inner device in order,
///   flushes it, and empties the overlay.
/// * [`power_cut`](Self::power_cut) decides what of the overlay reaches the inner
///   device (see [`CutOutcome`]), empties the overlay, and lets the device go on as if
///   the host had rebooted.
/// * [`discard`](BlockDevice::discard) goes to the inner device at once, past the
///   cache, so it is durable as soon as it is made (over a
///   [`MemDevice`](crate::MemDevice) the blocks then read as zeros): the harshest
///   reading of the hint, under which a discard made before the commit that frees the
///   blocks is durable shows after a power cut.
///
/// Errors of the inner device are reported as their [`DeviceErrorKind`]. With
/// [`fail_after_writes`](Self::fail_after_writes), writes, flushes and discards start
/// failing with [`DeviceErrorKind::Io`] after a chosen number of writes, to test error
/// paths.
///
/// The overlay keeps every unflushed write (not only the latest per block), so memory
/// grows with the data written between flushes.
#[derive(Clone)]
pub struct PowerCutDevice<D: BlockDevice> {
    inner: D,
    block_size: u32,
    bs: usize,
    block_count: u64,
    /// Unflushed writes in the order they were made: (first block, data).
    log: Vec<(u64, Box<[u8]>)>,
    /// For each block with unflushed data: (index in `log`, block offset in that record)
    /// of its newest write.
    latest: FastMap<u64, (usize, usize)>,
    writes: u64,
    flushes: u64,
    /// Writes still allowed before every write and flush fails; `None`: never fail.
    writes_left: Option<u64>,
    last_cut: CutStats,
}

impl<D: BlockDevice + fmt::Debug> fmt::Debug for PowerCutDevice<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerCutDevice")
            .field("inner", &self.inner)
            .field("unflushed_writes", &self.log.len())
            .field("writes", &self.writes)
            .field("flushes", &self.flushes)
            .field("writes_left", &self.writes_left)
            .finish()
    }
}

impl<D: BlockDevice> PowerCutDevice<D> {
    /// Wraps `inner`, which stands for the durable medium. The inner device's geometry
    /// is read once here and must not change.
    pub fn new(inner: D) -> Self {
        let block_size = inner.block_size();
        PowerCutDevice {
            block_size,
            // A block size that does not fit in usize makes every non-empty request
            // fail in check_request's multiple test (usize::MAX is never a multiple).
            bs: usize::try_from(block_size).unwrap_or(usize::MAX),
            block_count: inner.block_count(),
            inner,
            log: Vec::new(),
            latest: FastMap::default(),
            writes: 0,
            flushes: 0,
            writes_left: None,
            last_cut: CutStats::default(),
        }
    }

    /// The inner (durable) device. It does not contain the unflushed writes.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The inner (durable) device, mutably: for example to corrupt the medium in a test.
    /// Unflushed writes still take precedence over its content when reading.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Returns the inner device, **discarding every unflushed write** (as a power cut
    /// with [`CutOutcome::DropAll`] would). Call [`flush`](BlockDevice::flush) first to
    /// keep them.
    pub fn into_inner(self) -> D {
        self.inner
    }

    /// Number of write calls not yet made durable by a flush or a power cut.
    pub fn unflushed_writes(&self) -> usize {
        self.log.len()
    }

    /// Number of successful write calls so far (empty writes included; rejected and
    /// failed ones not counted). Not reset by a power cut.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Number of successful flush calls so far. Not reset by a power cut.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Injects failures: after `n` more successful writes, every write, flush and
    /// discard fails with [`DeviceErrorKind::Io`] (reads keep working) until this is
    /// called again or a [`power_cut`](Self::power_cut) happens. `Some(0)` fails from
    /// the next call; `None` turns injection off.
    pub fn fail_after_writes(&mut self, n: Option<u64>) {
        self.writes_left = n;
    }

    /// Whether injected failures are currently active.
    pub fn is_failing(&self) -> bool {
        self.writes_left == Some(0)
    }

    /// Simulates losing power and rebooting.
    ///
    /// The unflushed writes meet `outcome`; those that persist (entirely, torn or
    /// garbled) are written to the inner device in their original order and the inner
    /// device is flushed; [`last_cut`](Self::last_cut) tells what happened to how many
    /// blocks. Afterwards the overlay is empty, failure injection is turned off, and
    /// the device can be used (reopened) normally.
    ///
    /// # Errors
    /// The kind of any error from the inner device while applying the outcome; the
    /// overlay is emptied anyway, so what reached the medium is then unspecified (as on a
    /// real device).
    pub fn power_cut(&mut self, outcome: CutOutcome) -> Result<(), DeviceErrorKind> {
        let log = core::mem::take(&mut self.log);
        self.latest.clear();
        self.writes_left = None;
        let mut stats = CutStats::default();
        let blocks: u64 = log.iter().map(|(_, d)| (d.len() / self.bs) as u64).sum();
        let (mut rng, choices) = match outcome {
            CutOutcome::DropAll => {
                stats.dropped = blocks;
                self.last_cut = stats;
                return Ok(());
            }
            CutOutcome::KeepAll => (None, 0),
            CutOutcome::Random { seed } => (Some(SplitMix64::new(seed)), 3),
            CutOutcome::Harsh { seed } => (Some(SplitMix64::new(seed)), 4),
        };
        let r = self.apply_cut(&log, rng.as_mut(), choices, &mut stats);
        self.last_cut = stats;
        r?;
        self.inner.flush().map_err(|e| e.kind())
    }

    /// What the last [`power_cut`](Self::power_cut) did (zeros before the first).
    pub fn last_cut(&self) -> CutStats {
        self.last_cut
    }

    /// Writes, flushes and unflushed writes so far: where a power cut now would happen.
    pub fn crash_point(&self) -> CrashPoint {
        CrashPoint {
            writes: self.writes,
            flushes: self.flushes,
            unflushed: self.log.len() as u64,
        }
    }

    /// Applies `log` to the inner device: everything when `rng` is `None`, else for
    /// each block one of `choices` fates (drop, keep, tear, garble).
    fn apply_cut(
        &mut self,
        log: &[(u64, Box<[u8]>)],
        mut rng: Option<&mut SplitMix64>,
        choices: u64,
        stats: &mut CutStats,
    ) -> Result<(), DeviceErrorKind> {
        let bs = self.bs;
        let mut old = Vec::new();
        for (lba, data) in log {
            for (block, addr) in data.chunks_exact(bs).zip(*lba..) {
                let Some(rng) = rng.as_deref_mut() else {
                    stats.kept += 1;
                    self.inner.write(addr, block).map_err(|e| e.kind())?;
                    continue;
                };
                let fate = rng.below(choices);
                match fate {
                    0 => stats.dropped += 1,
                    1 => {
                        stats.kept += 1;
                        self.inner.write(addr, block).map_err(|e| e.kind())?;
                    }
                    _ => {
                        // torn: each sector independently old or new; garbled: old,
                        // new or garbage
                        old.resize(bs, 0);
                        self.inner.read(addr, &mut old).map_err(|e| e.kind())?;
                        let garble = fate == 3;
                        if garble {
                            stats.garbled += 1;
                        } else {
                            stats.torn += 1;
                        }
                        let mut bits = 0u64;
                        for (i, (o, n)) in old
                            .chunks_mut(SECTOR_SIZE)
                            .zip(block.chunks(SECTOR_SIZE))
                            .enumerate()
                        {
                            if garble {
                                match rng.below(3) {
                                    0 => {}
                                    1 => o.copy_from_slice(n),
                                    _ => {
                                        for c in o.chunks_mut(8) {
                                            let x = rng.next_u64().to_le_bytes();
                                            c.copy_from_slice(&x[..c.len()]);
                                        }
                                    }
                                }
                                continue;
                            }
                            if i % 64 == 0 {
                                bits = rng.next_u64();
                            }
                            if bits & 1 == 1 {
                                o.copy_from_slice(n);
                            }
                            bits >>= 1;
                        }
                        self.inner.write(addr, &old).map_err(|e| e.kind())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn check_failing(&self) -> Result<(), DeviceErrorKind> {
        if self.is_failing() {
            Err(DeviceErrorKind::Io)
        } else {
            Ok(())
        }
    }
}

impl<D: BlockDevice> BlockDevice for PowerCutDevice<D> {
    type Error = DeviceErrorKind;

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn block_count(&self) -> u64 {
        self.block_count
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        if !check_request(self.block_size, self.block_count, lba, buf.len()) {
            return Err(DeviceErrorKind::OutOfRange);
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.inner.read(lba, buf).map_err(|e| e.kind())?;
        if self.latest.is_empty() {
            return Ok(());
        }
        let bs = self.bs;
        for (chunk, addr) in buf.chunks_exact_mut(bs).zip(lba..) {
            if let Some(&(rec, off)) = self.latest.get(&addr) {
                let start = off * bs;
                let src = self
                    .log
                    .get(rec)
                    .and_then(|(_, data)| data.get(start..start + bs))
                    .ok_or(DeviceErrorKind::Other)?;
                chunk.copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        if !check_request(self.block_size, self.block_count, lba, buf.len()) {
            return Err(DeviceErrorKind::OutOfRange);
        }
        self.check_failing()?;
        if !buf.is_empty() {
            let rec = self.log.len();
            for (off, addr) in (lba..lba + (buf.len() / self.bs) as u64).enumerate() {
                self.latest.insert(addr, (rec, off));
            }
            self.log.push((lba, Box::from(buf)));
        }
        self.writes += 1;
        if let Some(n) = self.writes_left.as_mut() {
            *n -= 1; // n > 0: check_failing passed
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.check_failing()?;
        // On an inner error the log is kept: re-applying it later is harmless because
        // the records are written again in the same order.
        for (lba, data) in &self.log {
            self.inner.write(*lba, data).map_err(|e| e.kind())?;
        }
        self.inner.flush().map_err(|e| e.kind())?;
        self.log.clear();
        self.latest.clear();
        self.flushes += 1;
        Ok(())
    }

    /// Discards on the durable medium at once (the inner device's discard: a
    /// [`MemDevice`](crate::MemDevice) then reads zeros), the harshest reading of the
    /// hint: a discard that came too early, before the commit that frees the blocks
    /// was durable, is then seen by the next reopen.
    fn discard(&mut self, lba: u64, count: u64) -> Result<(), Self::Error> {
        match lba.checked_add(count) {
            Some(end) if end <= self.block_count => {
                self.check_failing()?;
                self.inner.discard(lba, count).map_err(|e| e.kind())
            }
            _ => Err(DeviceErrorKind::OutOfRange),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use alloc::string::ToString;
    use alloc::vec;

    fn dev(blocks: u64) -> PowerCutDevice<MemDevice> {
        PowerCutDevice::new(MemDevice::new(4096, blocks).unwrap())
    }

    fn read_block(d: &mut impl BlockDevice, lba: u64) -> Vec<u8> {
        let mut buf = vec![0u8; d.block_size() as usize];
        d.read(lba, &mut buf).unwrap();
        buf
    }

    #[test]
    fn reads_see_overlay_and_flush_persists() {
        let mut d = dev(16);
        d.write(1, &[1u8; 4096 * 2]).unwrap();
        d.write(2, &[2u8; 4096]).unwrap();
        assert_eq!(d.unflushed_writes(), 2);
        let mut buf = vec![0u8; 4096 * 4];
        d.read(0, &mut buf).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0));
        assert!(buf[4096..8192].iter().all(|&b| b == 1));
        assert!(buf[8192..12288].iter().all(|&b| b == 2));
        assert!(buf[12288..].iter().all(|&b| b == 0));
        // Not yet on the medium.
        assert_eq!(d.inner().resident_blocks(), 0);
        d.flush().unwrap();
        assert_eq!(d.unflushed_writes(), 0);
        assert_eq!(d.inner().resident_blocks(), 2);
        let mut inner = d.clone().into_inner();
        assert_eq!(read_block(&mut inner, 2), vec![2u8; 4096]);
        assert_eq!((d.writes(), d.flushes()), (2, 1));
    }

    #[test]
    fn drop_all_loses_only_unflushed() {
        let mut d = dev(16);
        d.write(0, &[1u8; 4096]).unwrap();
        d.flush().unwrap();
        d.write(0, &[2u8; 4096]).unwrap();
        d.write(5, &[3u8; 4096]).unwrap();
        d.power_cut(CutOutcome::DropAll).unwrap();
        assert_eq!(d.unflushed_writes(), 0);
        assert_eq!(read_block(&mut d, 0), vec![1u8; 4096]);
        assert_eq!(read_block(&mut d, 5), vec![0u8; 4096]);
        // Keeps working after the "reboot".
        d.write(5, &[4u8; 4096]).unwrap();
        d.flush().unwrap();
        assert_eq!(read_block(&mut d, 5), vec![4u8; 4096]);
    }

    #[test]
    fn keep_all_keeps_everything_in_order() {
        let mut d = dev(16);
        d.write(0, &[1u8; 4096 * 3]).unwrap();
        d.write(1, &[2u8; 4096]).unwrap();
        d.power_cut(CutOutcome::KeepAll).unwrap();
        let mut inner = d.into_inner();
        assert_eq!(read_block(&mut inner, 0), vec![1u8; 4096]);
        assert_eq!(read_block(&mut inner, 1), vec![2u8; 4096]);
        assert_eq!(read_block(&mut inner, 2), vec![1u8; 4096]);
    }

    #[test]
    fn into_inner_discards_unflushed() {
        let mut d = dev(4);
        d.write(0, &[1u8; 4096]).unwrap();
        assert_eq!(d.into_inner().resident_blocks(), 0);
    }

    /// Runs a fixed history and a Random power cut, returning the medium's blocks.
    fn random_history(seed: u64) -> (Vec<Vec<u8>>, Vec<u8>, Vec<u8>) {
        let mut d = dev(64);
        let old: Vec<u8> = (0..4096u32).map(|i| (i / 512) as u8 + 1).collect();
        let new: Vec<u8> = (0..4096u32).map(|i| (i / 512) as u8 + 101).collect();
        for lba in 0..64 {
            d.write(lba, &old).unwrap();
        }
        d.flush().unwrap();
        d.write(0, &vec![0xAB; 4096 * 32]).unwrap(); // overwritten below
        for lba in 0..64 {
            d.write(lba, &new).unwrap();
        }
        d.power_cut(CutOutcome::Random { seed }).unwrap();
        let blocks = (0..64).map(|lba| read_block(&mut d, lba)).collect();
        (blocks, old, new)
    }

    #[test]
    fn random_is_reproducible_and_sector_granular() {
        let (a, old, new) = random_history(42);
        let (b, _, _) = random_history(42);
        assert_eq!(a, b);
        let (c, _, _) = random_history(43);
        assert_ne!(a, c);
        let (mut saw_old, mut saw_new, mut saw_torn, mut saw_ab) = (false, false, false, false);
        for (lba, block) in a.iter().enumerate() {
            let mut olds = 0;
            let mut news = 0;
            for s in 0..8 {
                let r = s * 512..(s + 1) * 512;
                let sec = &block[r.clone()];
                if sec == &old[r.clone()] {
                    olds += 1;
                } else if sec == &new[r.clone()] {
                    news += 1;
                } else {
                    // The only other value ever written: the 0xAB write (blocks 0..32).
                    assert!(lba < 32 && sec.iter().all(|&x| x == 0xAB), "block {lba}");
                    saw_ab = true;
                }
            }
            saw_old |= olds == 8;
            saw_new |= news == 8;
            saw_torn |= olds > 0 && news > 0;
        }
        assert!(saw_old && saw_new && saw_torn && saw_ab);
    }

    #[test]
    fn harsh_garbles_only_unflushed_blocks_and_reports() {
        let mut d = dev(64);
        let flushed: Vec<u8> = (0..4096u32).map(|i| (i / 512) as u8 + 1).collect();
        for lba in 0..64 {
            d.write(lba, &flushed).unwrap();
        }
        d.flush().unwrap();
        let fresh: Vec<u8> = (0..4096u32).map(|i| (i / 512) as u8 + 101).collect();
        for lba in 0..32 {
            d.write(lba, &fresh).unwrap();
        }
        assert_eq!(
            d.crash_point(),
            CrashPoint {
                writes: 96,
                flushes: 1,
                unflushed: 32
            }
        );
        assert!(alloc::format!("{}", d.crash_point()).contains("after write 96"));
        let mut e = d.clone();
        d.power_cut(CutOutcome::Harsh { seed: 9 }).unwrap();
        e.power_cut(CutOutcome::Harsh { seed: 9 }).unwrap();
        let s = d.last_cut();
        assert_eq!(s, e.last_cut(), "reproducible");
        assert_eq!(s.dropped + s.kept + s.torn + s.garbled, 32);
        assert!(
            s.dropped > 0 && s.kept > 0 && s.torn > 0 && s.garbled > 0,
            "{s:?}"
        );
        let mut garbage = 0;
        for lba in 0..64u64 {
            let b = read_block(&mut d, lba);
            assert_eq!(b, read_block(&mut e, lba));
            for (i, sec) in b.chunks(512).enumerate() {
                let r = i * 512..(i + 1) * 512;
                if lba >= 32 {
                    assert_eq!(sec, &flushed[r], "flushed block {lba} changed");
                } else if sec != &flushed[r.clone()] && sec != &fresh[r] {
                    garbage += 1;
                }
            }
        }
        assert!(garbage > 0);
        assert_eq!(CutOutcome::Harsh { seed: 9 }.to_string(), "harsh(seed=0x9)");
        assert_eq!(
            CutOutcome::Random { seed: 255 }.to_string(),
            "random(seed=0xff)"
        );
        assert_eq!(CutOutcome::DropAll.to_string(), "drop-all");
        assert_eq!(CutOutcome::KeepAll.to_string(), "keep-all");
        assert_eq!(CutOutcome::Harsh { seed: 3 }.seed(), Some(3));
        assert_eq!(CutOutcome::KeepAll.seed(), None);
        let mut f = dev(4);
        f.write(0, &[1u8; 4096 * 4]).unwrap();
        f.power_cut(CutOutcome::DropAll).unwrap();
        assert_eq!(f.last_cut().dropped, 4);
        f.write(0, &[1u8; 4096 * 4]).unwrap();
        f.power_cut(CutOutcome::KeepAll).unwrap();
        assert_eq!(f.last_cut().kept, 4);
    }

    #[test]
    fn fail_after_writes_is_sticky() {
        let mut d = dev(16);
        d.fail_after_writes(Some(2));
        d.write(0, &[1u8; 4096]).unwrap();
        d.flush().unwrap();
        d.write(1, &[2u8; 4096]).unwrap();
        assert!(d.is_failing());
        assert_eq!(d.write(2, &[3u8; 4096]), Err(DeviceErrorKind::Io));
        assert_eq!(d.flush(), Err(DeviceErrorKind::Io));
        assert_eq!(d.write(2, &[3u8; 4096]), Err(DeviceErrorKind::Io));
        assert_eq!(d.discard(0, 1), Err(DeviceErrorKind::Io));
        // Bad requests are still reported as such.
        assert_eq!(d.write(16, &[3u8; 4096]), Err(DeviceErrorKind::OutOfRange));
        // Reads still work and see the accepted writes.
        assert_eq!(read_block(&mut d, 1), vec![2u8; 4096]);
        assert_eq!(read_block(&mut d, 2), vec![0u8; 4096]);
        assert_eq!((d.writes(), d.flushes()), (2, 1));
        d.power_cut(CutOutcome::DropAll).unwrap();
        assert!(!d.is_failing());
        assert_eq!(read_block(&mut d, 0), vec![1u8; 4096]);
        assert_eq!(read_block(&mut d, 1), vec![0u8; 4096]);
        d.write(2, &[3u8; 4096]).unwrap();

        d.fail_after_writes(Some(0));
        assert_eq!(d.flush(), Err(DeviceErrorKind::Io));
        d.fail_after_writes(None);
        d.flush().unwrap();
        assert_eq!(read_block(&mut d.into_inner(), 2), vec![3u8; 4096]);
    }

    #[test]
    fn bounds_errors() {
        let mut d = dev(16);
        let e = Err(DeviceErrorKind::OutOfRange);
        let mut buf = vec![0u8; 4096];
        assert_eq!(d.write(16, &buf), e);
        assert_eq!(d.write(0, &buf[..100]), e);
        assert_eq!(d.write(u64::MAX, &buf), e);
        assert_eq!(d.read(u64::MAX, &mut buf), e);
        assert_eq!(d.read(15, &mut vec![0u8; 8192]), e);
        assert_eq!(d.discard(u64::MAX, 1), e);
        assert_eq!(d.writes(), 0);
        assert_eq!(d.unflushed_writes(), 0);
        d.write(16, &[]).unwrap();
        d.read(16, &mut []).unwrap();
        d.discard(0, 16).unwrap();
        assert_eq!(d.unflushed_writes(), 0);
    }

    #[test]
    fn sparse_tebibyte_inner() {
        let mut d = PowerCutDevice::new(MemDevice::new(4096, 1 << 28).unwrap());
        d.write((1 << 28) - 1, &[9u8; 4096]).unwrap();
        d.power_cut(CutOutcome::Random { seed: 7 }).unwrap();
        assert!(d.inner().resident_blocks() <= 1);
        assert!(alloc::format!("{d:?}").contains("PowerCutDevice"));
    }
}
