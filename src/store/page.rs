//! Layer 2a: the layout every metadata page shares.
//!
//! A metadata page is [`PAGE_SIZE`] bytes. Its first [`HEADER_SIZE`] bytes are a
//! header that lets every read prove the block is the one expected:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `LSNP` ([`MAGIC`]) |
//! | 4 | 1 | kind ([`PageKind`]) |
//! | 5 | 3 | reserved, zero |
//! | 8 | 4 | CRC32C (Castagnoli) of bytes 0..8 followed by 12..4096 |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | the block's own address (in 4 KiB pages from the device start) |
//! | 24 | 8 | transaction id that wrote it |
//!
//! All integers on the device are little-endian, always through the helpers below.

use crate::error::{Error, Result};

/// Size of a metadata page (and the unit of metadata addresses): 4 KiB.
pub const PAGE_SIZE: usize = 4096;
/// Size of the common header at the start of every metadata page.
pub const HEADER_SIZE: usize = 32;
/// Magic number at offset 0 of every metadata page: the bytes `LSNP`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"LSNP");

/// The kind of a metadata page, byte 4 of its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageKind {
    /// One of the two superblock slots.
    Superblock = 1,
    /// Interior node of a reference-count array (space map index).
    RcIndex = 2,
    /// Leaf of a reference-count array: a run of 32-bit counts.
    RcLeaf = 3,
    /// A copy-on-write B-tree node (leaf or interior).
    BtreeNode = 4,
}

const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// Reads a little-endian `u16` at `off`.
#[inline]
pub fn get_u16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[off..off + 2]);
    u16::from_le_bytes(a)
}
/// Reads a little-endian `u32` at `off`.
#[inline]
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
/// Reads a little-endian `u64` at `off`.
#[inline]
pub fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}
/// Writes a little-endian `u16` at `off`.
#[inline]
pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
/// Writes a little-endian `u32` at `off`.
#[inline]
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
/// Writes a little-endian `u64` at `off`.
#[inline]
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

const OFF_KIND: usize = 4;
const OFF_CSUM: usize = 8;
const OFF_ADDR: usize = 16;
const OFF_TXID: usize = 24;

/// Computes the checksum of a block as stored at offset 8.
pub fn checksum(b: &[u8]) -> u32 {
    let mut d = CRC.digest();
    d.update(&b[..OFF_CSUM]);
    d.update(&b[OFF_CSUM + 4..PAGE_SIZE]);
    d.finalize()
}

/// Clears `b` and writes a fresh header for a block of `kind` at `addr` in `txid`.
pub fn init(b: &mut [u8], kind: PageKind, addr: u64, txid: u64) {
    b[..PAGE_SIZE].fill(0);
    put_u32(b, 0, MAGIC);
    b[OFF_KIND] = kind as u8;
    put_u64(b, OFF_ADDR, addr);
    put_u64(b, OFF_TXID, txid);
}

/// Rewrites the address and transaction of an existing block (used when shadowing).
pub fn relocate(b: &mut [u8], addr: u64, txid: u64) {
    put_u64(b, OFF_ADDR, addr);
    put_u64(b, OFF_TXID, txid);
}

/// Stores the checksum; call just before the block goes to the device.
pub fn seal(b: &mut [u8]) {
    let c = checksum(b);
    put_u32(b, OFF_CSUM, c);
}

/// The transaction id in a block's header.
#[inline]
pub fn txid(b: &[u8]) -> u64 {
    get_u64(b, OFF_TXID)
}

/// The kind byte of a block's header.
#[inline]
pub fn kind(b: &[u8]) -> u8 {
    b[OFF_KIND]
}

/// Verifies a block just read from the device: checksum, magic, kind, own address,
/// and a transaction id no newer than `max_txid`. Anything else is an error, never data.
pub fn verify(b: &[u8], addr: u64, kind: PageKind, max_txid: u64) -> Result<()> {
    if b.len() < PAGE_SIZE {
        return Err(Error::corrupt(addr, "short metadata page"));
    }
    if get_u32(b, OFF_CSUM) != checksum(b) {
        return Err(Error::Checksum { addr });
    }
    if get_u32(b, 0) != MAGIC {
        return Err(Error::Misplaced {
            addr,
            what: "bad magic",
        });
    }
    if b[OFF_KIND] != kind as u8 {
        return Err(Error::Misplaced {
            addr,
            what: "unexpected block kind",
        });
    }
    if get_u64(b, OFF_ADDR) != addr {
        return Err(Error::Misplaced {
            addr,
            what: "block records another address",
        });
    }
    if txid(b) > max_txid {
        return Err(Error::Misplaced {
            addr,
            what: "block is newer than the committed state",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn sealed_block_verifies() {
        let mut b = vec![0u8; PAGE_SIZE];
        init(&mut b, PageKind::BtreeNode, 42, 7);
        b[100] = 9;
        seal(&mut b);
        assert_eq!(verify(&b, 42, PageKind::BtreeNode, 7), Ok(()));
    }

    #[test]
    fn every_single_bit_flip_is_a_checksum_error() {
        let mut b = vec![0u8; PAGE_SIZE];
        init(&mut b, PageKind::RcLeaf, 3, 1);
        seal(&mut b);
        for bit in (0..PAGE_SIZE * 8).step_by(7) {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                verify(&c, 3, PageKind::RcLeaf, 1),
                Err(Error::Checksum { addr: 3 })
            );
        }
    }

    #[test]
    fn wrong_place_kind_or_future_txid_is_rejected() {
        let mut b = vec![0u8; PAGE_SIZE];
        init(&mut b, PageKind::RcIndex, 10, 5);
        seal(&mut b);
        assert!(matches!(
            verify(&b, 11, PageKind::RcIndex, 5),
            Err(Error::Misplaced { .. })
        ));
        assert!(matches!(
            verify(&b, 10, PageKind::RcLeaf, 5),
            Err(Error::Misplaced { .. })
        ));
        assert!(matches!(
            verify(&b, 10, PageKind::RcIndex, 4),
            Err(Error::Misplaced { .. })
        ));
        let zero = vec![0u8; PAGE_SIZE];
        assert!(verify(&zero, 10, PageKind::RcIndex, 5).is_err());
        assert!(verify(&zero[..100], 10, PageKind::RcIndex, 5).is_err());
    }
}
