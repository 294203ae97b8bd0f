//! Helpers shared by the integration tests; each test binary that needs them says
//! `mod common;`. Random numbers come from `lunsnap::testing::Rng` and the reference
//! model of an array is `lunsnap::testing::Model`; what is here is the small glue
//! around them: in-memory devices, sector patterns that name the write they came from,
//! "nothing is wrong" checks, and raw access to 4 KiB metadata pages for the tests that
//! read the on-disk format without the engine.
//!
//! Each test binary compiles this whole module, so an item that some binary does not
//! use is marked `#[allow(dead_code)]`.

use lunsnap::engine::Engine;
use lunsnap::testing::mix;
use lunsnap::{Array, BlockDevice, MemDevice, SECTOR};

/// Bytes of a 4 KiB metadata page.
#[allow(dead_code)]
pub const PAGE: usize = 4096;

/// A [`MemDevice`] of `bytes` bytes in 512-byte blocks.
#[allow(dead_code)]
pub fn mem(bytes: u64) -> MemDevice {
    MemDevice::new(512, bytes / 512).expect("MemDevice::new")
}

// ---------------------------------------------------------------------------------
// Sectors that name their write
// ---------------------------------------------------------------------------------

/// Fills one 512-byte sector with the pattern of write `tag` at sector `sector` of a
/// LUN: the tag and the sector number, then bytes that depend on both. Tag 0 gives
/// zeros, what a never-written sector reads. A sector read back thus tells which
/// write, for which offset, it holds ([`tag_of`]).
#[allow(dead_code)]
pub fn fill_sector(buf: &mut [u8], tag: u64, sector: u64) {
    if tag == 0 {
        buf.fill(0);
        return;
    }
    buf[..8].copy_from_slice(&tag.to_le_bytes());
    buf[8..16].copy_from_slice(&sector.to_le_bytes());
    let seed = tag ^ sector.rotate_left(32);
    for (i, c) in (1u64..).zip(buf[16..].chunks_mut(8)) {
        c.copy_from_slice(&mix(seed.wrapping_add(i)).to_le_bytes()[..c.len()]);
    }
}

/// The data of write `tag`: `sectors` sectors from byte `offset` of a LUN, each filled
/// by [`fill_sector`].
#[allow(dead_code)]
pub fn tagged(tag: u64, offset: u64, sectors: u64) -> Vec<u8> {
    let mut buf = vec![0u8; (sectors * SECTOR) as usize];
    for (s, c) in (offset / SECTOR..).zip(buf.chunks_mut(SECTOR as usize)) {
        fill_sector(c, tag, s);
    }
    buf
}

/// Which write a sector read at `sector` comes from (0: zeros); an error describes a
/// sector that is no write's pattern for this offset.
#[allow(dead_code)]
pub fn tag_of(buf: &[u8], sector: u64) -> Result<u64, String> {
    if buf.iter().all(|&b| b == 0) {
        return Ok(0);
    }
    let tag = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    let at = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    let mut want = [0u8; SECTOR as usize];
    fill_sector(&mut want, tag, sector);
    if want[..] == buf[..] {
        Ok(tag)
    } else {
        Err(format!(
            "sector {sector} holds no write's pattern for this offset (claims tag {tag} at sector {at})"
        ))
    }
}

// ---------------------------------------------------------------------------------
// Nothing is wrong
// ---------------------------------------------------------------------------------

/// `what: ` before a failure message (nothing for an empty `what`).
fn context(what: &str) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!("{what}: ")
    }
}

/// `check()` of the array finds nothing (`what` names the moment in the message).
#[allow(dead_code)]
#[track_caller]
pub fn assert_clean<D: BlockDevice>(a: &mut Array<D>, what: &str) {
    let v = a.check().expect("check()");
    assert!(v.is_empty(), "{}check() found {v:?}", context(what));
}

/// The engine's invariant checker finds nothing (`what` names the moment).
#[allow(dead_code)]
#[track_caller]
pub fn assert_audit_clean<D: BlockDevice>(e: &mut Engine<D>, what: &str) {
    let v = e.audit();
    assert!(
        v.is_empty(),
        "{}audit found {} violations, first: {:?}",
        context(what),
        v.len(),
        &v[..v.len().min(5)]
    );
}

// ---------------------------------------------------------------------------------
// Raw metadata pages, read without the engine
// ---------------------------------------------------------------------------------

/// The little-endian `u64` at byte `o` of `b`.
#[allow(dead_code)]
pub fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// The little-endian `u32` at byte `o` of `b`.
#[allow(dead_code)]
pub fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

/// The little-endian `u16` at byte `o` of `b`.
#[allow(dead_code)]
pub fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().expect("2 bytes"))
}

/// Byte offset of the CRC32C in a metadata page's header.
const OFF_CSUM: usize = 8;

/// The CRC32C (Castagnoli) of a metadata page: every byte but the checksum's own four.
#[allow(dead_code)]
pub fn crc_of(page: &[u8]) -> u32 {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let mut d = CRC.digest();
    d.update(&page[..OFF_CSUM]);
    d.update(&page[OFF_CSUM + 4..PAGE]);
    d.finalize()
}

/// The page carries the checksum of its content.
#[allow(dead_code)]
pub fn crc_ok(page: &[u8]) -> bool {
    crc_of(page) == le32(page, OFF_CSUM)
}

/// Page `page` of `dev` (4 KiB, whatever its block size).
#[allow(dead_code)]
pub fn read_page<D: BlockDevice>(dev: &mut D, page: u64) -> Vec<u8> {
    let per = PAGE as u64 / u64::from(dev.block_size());
    let mut b = vec![0u8; PAGE];
    dev.read(page * per, &mut b).expect("read a page");
    b
}
