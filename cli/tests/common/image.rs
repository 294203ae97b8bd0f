//! The on-disk layout as the CLI tests damage it (docs/FORMAT.md: §2 the layout,
//! §3 the page header, §4.1 the superblock, §4.4 B-tree nodes).

use std::os::unix::fs::FileExt;

use super::read;

/// Bytes of a metadata page.
pub const PAGE: u64 = 4096;

/// The little-endian `u64` at `off`.
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// The little-endian `u32` at `off`.
pub fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

/// The little-endian `u16` at `off`.
pub fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

/// The layout of an image, from its newest superblock (docs/FORMAT.md §4.1).
#[derive(Debug, Clone, Copy)]
pub struct Geo {
    pub generation: u64,
    pub device_pages: u64,
    pub meta_start: u64,
    pub meta_pages: u64,
    pub copies: u32,
}

impl Geo {
    /// Read from the first copies of the two slots (the newest wins; both are whole
    /// when this is called).
    pub fn of(img: &str) -> Geo {
        let b = read(img);
        let slot = (0..2usize)
            .max_by_key(|&s| u64_at(&b[s * 4096..], 24))
            .unwrap();
        let sb = &b[slot * 4096..(slot + 1) * 4096];
        assert_eq!(&sb[..4], b"LSNP", "not a superblock");
        Geo {
            generation: u64_at(sb, 24),
            device_pages: u64_at(sb, 72),
            meta_start: u64_at(sb, 80),
            meta_pages: u64_at(sb, 88),
            copies: u32_at(sb, 368),
        }
    }

    /// Where the second copy of metadata page `page` is (two copies only).
    pub fn mirror(&self, page: u64) -> u64 {
        assert_eq!(self.copies, 2);
        page + self.device_pages - 2 - self.meta_pages - self.meta_start
    }

    /// The pages of the metadata area's first copies that hold a metadata page (in
    /// use, or left from an earlier commit).
    pub fn written(&self, img: &str) -> Vec<u64> {
        let b = read(img);
        (self.meta_start..self.meta_start + self.meta_pages)
            .filter(|&p| &b[(p * PAGE) as usize..][..4] == b"LSNP")
            .collect()
    }

    /// The leaves of LUN mappings in the metadata area (B-tree nodes of level 0
    /// holding extent slots, §4.4), with their first key, in use or left from an
    /// earlier commit.
    pub fn mapping_leaves(&self, img: &str) -> Vec<(u64, u64)> {
        let b = read(img);
        (self.meta_start..self.meta_start + self.meta_pages)
            .filter_map(|p| {
                let pg = &b[(p * PAGE) as usize..][..PAGE as usize];
                let leaf = &pg[..4] == b"LSNP" && pg[4] == 4 && pg[36] == 0 && pg[37] == 4;
                (leaf && u16_at(pg, 32) > 0).then(|| (p, u64_at(pg, 40)))
            })
            .collect()
    }

    /// The two pages of the newest commit's superblock.
    pub fn newest_superblock(&self) -> [u64; 2] {
        let slot = self.generation % 2;
        [slot, self.device_pages - 2 + slot]
    }
}

/// Damages page `page` of `img` as a bad sector would: its checksum no longer holds.
pub fn damage(img: &str, page: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(&[0xa5; 16], page * PAGE + 100).unwrap();
}
