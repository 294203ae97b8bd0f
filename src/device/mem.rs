//! A sparse in-memory block device.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use super::{check_request, BlockDevice, DeviceErrorKind, SECTOR_SIZE};
use crate::fast_map::FastMap;

/// Returns true if every byte of `buf` is zero.
#[inline]
pub(crate) fn is_zero(buf: &[u8]) -> bool {
    // OR-reduce fixed-size chunks (which the compiler vectorises) with an early exit
    // per chunk, rather than a byte-by-byte early-exit loop.
    let mut chunks = buf.chunks_exact(64);
    for chunk in &mut chunks {
        if chunk.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// Validates a block geometry: `block_size` a power of two of at least [`SECTOR_SIZE`]
/// that fits in `usize`, `block_count` non-zero, and the total byte size fits in `u64`.
/// Returns the block size as `usize`.
pub(crate) fn check_geometry(block_size: u32, block_count: u64) -> Option<usize> {
    if !block_size.is_power_of_two() || (block_size as u64) < SECTOR_SIZE as u64 {
        return None;
    }
    if block_count == 0 {
        return None;
    }
    block_count.checked_mul(u64::from(block_size))?;
    usize::try_from(block_size).ok()
}

/// A sparse block device held in RAM.
///
/// Only blocks that hold non-zero data use memory (one heap allocation of
/// `block_size` bytes each, plus a map entry), so a device of any size can be simulated:
/// a 1 TiB device with a few written blocks needs a few KiB. Blocks never written, blocks
/// last written with all zeros, and discarded blocks read as zeros.
///
/// Writes are durable as soon as they return (there is no power to lose), so
/// [`flush`](BlockDevice::flush) does nothing; wrap it in
/// `lunsnap::testing::PowerCutDevice` (feature `testing`) to
/// simulate a volatile write cache.
///
/// `Clone` copies the whole content, which makes it easy to snapshot a device in tests.
#[derive(Clone)]
pub struct MemDevice {
    block_size: u32,
    bs: usize,
    block_count: u64,
    blocks: FastMap<u64, Box<[u8]>>,
}

impl fmt::Debug for MemDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemDevice")
            .field("block_size", &self.block_size)
            .field("block_count", &self.block_count)
            .field("resident_blocks", &self.blocks.len())
            .finish()
    }
}

impl MemDevice {
    /// Creates a device of `block_count` blocks of `block_size` bytes, reading as zeros.
    ///
    /// No memory is used for the blocks until they are written.
    ///
    /// # Errors
    /// [`DeviceErrorKind::OutOfRange`] if the geometry is invalid: `block_size` is not a
    /// power of two of at least 512, `block_count` is zero, or the total size in bytes
    /// does not fit in a `u64`.
    pub fn new(block_size: u32, block_count: u64) -> Result<MemDevice, DeviceErrorKind> {
        let bs = check_geometry(block_size, block_count).ok_or(DeviceErrorKind::OutOfRange)?;
        Ok(MemDevice {
            block_size,
            bs,
            block_count,
            blocks: FastMap::default(),
        })
    }

    /// Number of blocks currently holding RAM (written with non-zero data and not
    /// discarded since).
    pub fn resident_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Stores one block (`data.len() == self.bs`).
    fn put_block(&mut self, lba: u64, data: &[u8]) -> Result<(), DeviceErrorKind> {
        if is_zero(data) {
            self.blocks.remove(&lba);
            return Ok(());
        }
        if let Some(block) = self.blocks.get_mut(&lba) {
            block.copy_from_slice(data);
            return Ok(());
        }
        // Allocation failure is reported rather than aborting: a simulated 1 TiB device
        // can easily be asked to hold more than the host's RAM.
        self.blocks
            .try_reserve(1)
            .map_err(|_| DeviceErrorKind::Other)?;
        let mut block = Vec::new();
        block
            .try_reserve_exact(data.len())
            .map_err(|_| DeviceErrorKind::Other)?;
        block.extend_from_slice(data);
        self.blocks.insert(lba, block.into_boxed_slice());
        Ok(())
    }
}

impl BlockDevice for MemDevice {
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
        // check_request guarantees lba + i cannot overflow.
        for (chunk, addr) in buf.chunks_exact_mut(self.bs).zip(lba..) {
            match self.blocks.get(&addr) {
                Some(block) => chunk.copy_from_slice(block),
                None => chunk.fill(0),
            }
        }
        Ok(())
    }

    /// Writes whole blocks. All-zero blocks are not stored (they free their RAM).
    ///
    /// If memory runs out part-way, fails with [`DeviceErrorKind::Other`]; the blocks
    /// before the failing one have then been written.
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        if !check_request(self.block_size, self.block_count, lba, buf.len()) {
            return Err(DeviceErrorKind::OutOfRange);
        }
        let bs = self.bs;
        for (chunk, addr) in buf.chunks_exact(bs).zip(lba..) {
            self.put_block(addr, chunk)?;
        }
        Ok(())
    }

    /// Does nothing: writes to a `MemDevice` are durable when they return.
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Frees the blocks; they read as zeros afterwards.
    ///
    /// Fails with [`DeviceErrorKind::OutOfRange`] (changing nothing) if the range runs
    /// past the end of the device.
    fn discard(&mut self, lba: u64, count: u64) -> Result<(), Self::Error> {
        let end = lba
            .checked_add(count)
            .filter(|&end| end <= self.block_count)
            .ok_or(DeviceErrorKind::OutOfRange)?;
        if count > self.blocks.len() as u64 {
            // Cheaper to scan what is resident than the (possibly huge) range.
            self.blocks.retain(|&addr, _| addr < lba || addr >= end);
        } else {
            for addr in lba..end {
                self.blocks.remove(&addr);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const TIB_BLOCKS: u64 = 1 << 28; // 2^28 * 4096 = 1 TiB

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    #[test]
    fn geometry_is_validated() {
        assert_eq!(
            MemDevice::new(0, 8).unwrap_err(),
            DeviceErrorKind::OutOfRange
        );
        assert_eq!(
            MemDevice::new(256, 8).unwrap_err(),
            DeviceErrorKind::OutOfRange
        );
        assert_eq!(
            MemDevice::new(1000, 8).unwrap_err(),
            DeviceErrorKind::OutOfRange
        );
        assert_eq!(
            MemDevice::new(4096, 0).unwrap_err(),
            DeviceErrorKind::OutOfRange
        );
        assert_eq!(
            MemDevice::new(4096, u64::MAX).unwrap_err(),
            DeviceErrorKind::OutOfRange
        );
        let d = MemDevice::new(512, 1).unwrap();
        assert_eq!((d.block_size(), d.block_count()), (512, 1));
        let d = MemDevice::new(1 << 31, 2).unwrap();
        assert_eq!(d.block_size(), 1 << 31);
    }

    #[test]
    fn sparse_tebibyte() {
        let mut d = MemDevice::new(4096, TIB_BLOCKS).unwrap();
        assert_eq!(d.resident_blocks(), 0);
        let a = pattern(1, 4096);
        let b = pattern(2, 4096);
        d.write(0, &a).unwrap();
        d.write(TIB_BLOCKS - 1, &b).unwrap();
        d.write(TIB_BLOCKS / 2, &a).unwrap();
        assert_eq!(d.resident_blocks(), 3);
        let mut buf = vec![0xAAu8; 4096];
        d.read(TIB_BLOCKS - 1, &mut buf).unwrap();
        assert_eq!(buf, b);
        d.read(12345, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        // Overwriting in place does not grow; writing zeros frees.
        d.write(0, &b).unwrap();
        assert_eq!(d.resident_blocks(), 3);
        d.write(0, &[0u8; 4096]).unwrap();
        assert_eq!(d.resident_blocks(), 2);
        d.read(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        // Discarding the whole device is fast (scans the resident blocks only).
        d.discard(0, TIB_BLOCKS).unwrap();
        assert_eq!(d.resident_blocks(), 0);
        d.flush().unwrap();
    }

    #[test]
    fn bounds_errors_transfer_nothing() {
        let mut d = MemDevice::new(512, 16).unwrap();
        let data = pattern(3, 512);
        let mut buf = vec![0u8; 512];
        let e = DeviceErrorKind::OutOfRange;
        // past end
        assert_eq!(d.write(16, &data), Err(e));
        assert_eq!(d.read(16, &mut buf), Err(e));
        assert_eq!(d.write(15, &pattern(3, 1024)), Err(e));
        assert_eq!(d.resident_blocks(), 0);
        // non-multiple lengths
        assert_eq!(d.write(0, &data[..511]), Err(e));
        assert_eq!(d.read(0, &mut buf[..100]), Err(e));
        assert_eq!(d.write(0, &pattern(3, 513)), Err(e));
        // lba overflow
        assert_eq!(d.write(u64::MAX, &data), Err(e));
        assert_eq!(d.read(u64::MAX - 1, &mut vec![0u8; 1024]), Err(e));
        assert_eq!(d.discard(u64::MAX, 2), Err(e));
        assert_eq!(d.discard(10, 7), Err(e));
        assert_eq!(d.resident_blocks(), 0);
        // empty requests inside the device are fine; at the very end too
        d.write(16, &[]).unwrap();
        d.read(0, &mut []).unwrap();
        d.discard(16, 0).unwrap();
        d.write(15, &data).unwrap();
        d.read(15, &mut buf).unwrap();
        assert_eq!(buf, data);

        let mut big = MemDevice::new(4096, u64::MAX / 4096).unwrap();
        let last = big.block_count() - 1;
        big.write(last, &pattern(9, 4096)).unwrap();
        assert_eq!(big.write(last, &pattern(9, 8192)), Err(e));
        assert_eq!(big.discard(last, u64::MAX), Err(e));
    }

    #[test]
    fn multi_block_io() {
        let mut d = MemDevice::new(512, 64).unwrap();
        let mut data = pattern(5, 512 * 8);
        data[512..1024].fill(0); // one all-zero block in the middle
        d.write(10, &data).unwrap();
        assert_eq!(d.resident_blocks(), 7);
        let mut buf = vec![0xFFu8; 512 * 10];
        d.read(9, &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&x| x == 0));
        assert_eq!(&buf[512..512 * 9], &data[..]);
        assert!(buf[512 * 9..].iter().all(|&x| x == 0));
    }

    #[test]
    fn discard_reads_zeros() {
        let mut d = MemDevice::new(512, 64).unwrap();
        d.write(0, &pattern(7, 512 * 64)).unwrap();
        assert_eq!(d.resident_blocks(), 64);
        d.discard(8, 4).unwrap();
        assert_eq!(d.resident_blocks(), 60);
        let mut buf = vec![0xFFu8; 512 * 6];
        d.read(7, &mut buf).unwrap();
        assert_eq!(&buf[..512], &pattern(7, 512 * 64)[7 * 512..8 * 512]);
        assert!(buf[512..512 * 5].iter().all(|&x| x == 0));
        assert!(buf[512 * 5..].iter().any(|&x| x != 0));
        d.discard(0, 64).unwrap();
        assert_eq!(d.resident_blocks(), 0);
    }

    #[test]
    fn clone_is_independent() {
        let mut d = MemDevice::new(512, 4).unwrap();
        d.write(1, &pattern(1, 512)).unwrap();
        let snap = d.clone();
        d.write(1, &pattern(2, 512)).unwrap();
        let mut s = snap;
        let mut buf = vec![0u8; 512];
        s.read(1, &mut buf).unwrap();
        assert_eq!(buf, pattern(1, 512));
        assert!(alloc::format!("{d:?}").contains("resident_blocks: 1"));
    }

    #[test]
    fn works_through_mut_ref() {
        fn use_dev<D: BlockDevice>(mut d: D) -> u64 {
            d.write(0, &[1u8; 512]).unwrap();
            d.block_count()
        }
        let mut d = MemDevice::new(512, 4).unwrap();
        assert_eq!(use_dev(&mut d), 4);
        assert_eq!(d.resident_blocks(), 1);
    }

    #[test]
    fn is_zero_works() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0u8; 4096]));
        for i in [0usize, 63, 64, 100, 4095] {
            let mut b = vec![0u8; 4096];
            b[i] = 1;
            assert!(!is_zero(&b));
        }
        let mut b = vec![0u8; 70];
        b[69] = 1;
        assert!(!is_zero(&b));
    }
}
