//! Sector patterns that name the write they came from: a sector read back tells which
//! write (tag) and which LUN sector it was written for, so a mismatch message can say
//! what the array returned instead of printing bytes.

use lunsnap::testing::mix;
use lunsnap::SECTOR;

const S: usize = SECTOR as usize;

/// Fills one sector with the pattern of write `tag` at sector `sector` of LUN `lun`
/// (tag 0: zeros).
pub fn fill_sector(buf: &mut [u8], tag: u64, lun: u32, sector: u64) {
    if tag == 0 {
        buf.fill(0);
        return;
    }
    buf[..8].copy_from_slice(&tag.to_le_bytes());
    buf[8..16].copy_from_slice(&sector.to_le_bytes());
    buf[16..20].copy_from_slice(&lun.to_le_bytes());
    let mut x = tag ^ sector.rotate_left(32) ^ u64::from(lun).rotate_left(17);
    for c in buf[20..].chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        c.copy_from_slice(&mix(x).to_le_bytes()[..c.len()]);
    }
}

/// A tag with this bit writes zeros over some of the 4 KiB blocks it covers (blocks of
/// the LUN's address space, so that zero detection sees whole extents of zeros).
pub const ZERO_BLOCKS: u64 = 1 << 62;

/// Whether write `tag` leaves LUN block `block` (4 KiB) zero.
fn zero_block(tag: u64, block: u64) -> bool {
    tag & ZERO_BLOCKS != 0 && mix(tag ^ block.rotate_left(40)) & 1 == 0
}

/// The data of write `tag` of `len` bytes at byte `offset` of LUN `lun` (all zeros for
/// tag 0; with [`ZERO_BLOCKS`], zeros over about half of the 4 KiB blocks).
pub fn data(tag: u64, lun: u32, offset: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    for (i, c) in v.chunks_mut(S).enumerate() {
        let sector = offset / SECTOR + i as u64;
        if !zero_block(tag, sector * SECTOR / 4096) {
            fill_sector(c, tag, lun, sector);
        }
    }
    v
}

/// Describes a sector read back: `zeros`, `write T (for LUN l sector s)` or `garbage`.
pub fn describe(buf: &[u8]) -> String {
    if buf.iter().all(|&b| b == 0) {
        return "zeros".into();
    }
    let tag = u64::from_le_bytes(buf[..8].try_into().unwrap_or([0; 8]));
    let sector = u64::from_le_bytes(buf[8..16].try_into().unwrap_or([0; 8]));
    let lun = u32::from_le_bytes(buf[16..20].try_into().unwrap_or([0; 4]));
    let mut want = [0u8; S];
    fill_sector(&mut want, tag, lun, sector);
    if want[..] == buf[..S.min(buf.len())] {
        format!("write {tag} (for LUN {lun} sector {sector})")
    } else {
        "garbage".into()
    }
}
