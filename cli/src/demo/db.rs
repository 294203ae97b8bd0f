//! The demo's application: a toy database on the three LUNs of volume group `vg_db`,
//! and the checks that compare what the array reads with what the database wrote.
//! (Condensed from `examples/backup_cycle.rs`.)

use std::collections::BTreeMap;

use crate::fail::{Fail, Result};
use crate::image::Va;

pub const MIB: u64 = 1 << 20;
/// The database's block: the unit it writes and the unit the checks compare.
pub const BLOCK: u64 = 4096;
/// Read size for whole-LUN scans.
const CHUNK: u64 = MIB;

/// One LUN of the volume group `vg_db` and the business copy that backs it up.
pub struct Volume {
    pub name: &'static str,
    pub lun: u32,
    pub copy: u32,
    pub size: u64,
    /// Blocks the initial load writes (from block 0, the volume-group header).
    pub loaded: u64,
}

pub const VG: [Volume; 3] = [
    Volume {
        name: "data",
        lun: 1,
        copy: 11,
        size: 16 * MIB,
        loaded: 384,
    },
    Volume {
        name: "index",
        lun: 2,
        copy: 12,
        size: 8 * MIB,
        loaded: 128,
    },
    Volume {
        name: "redo",
        lun: 3,
        copy: 13,
        size: 4 * MIB,
        loaded: 32,
    },
];

/// What the database believes one LUN holds: the version of each block it wrote
/// (blocks never written read as zeros).
pub type Image = BTreeMap<u64, u32>;

/// Bytes written and read by the database and the checks.
#[derive(Default)]
pub struct Stats {
    pub written: u64,
    pub read: u64,
}

/// The toy database: every block it writes is recognisable (a header naming volume,
/// LUN, block and version, then deterministic noise); it remembers every version.
pub struct Database {
    pub images: [Image; 3],
    rng: u64,
    /// Next block of the redo log (a ring after the header block).
    pub redo_head: u64,
    pub stats: Stats,
}

impl Database {
    pub fn new() -> Self {
        Database {
            images: [Image::new(), Image::new(), Image::new()],
            rng: 0x2001_0701_7100_0001,
            redo_head: VG[2].loaded,
            stats: Stats::default(),
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn write(&mut self, va: &mut Va, vi: usize, block: u64, version: u32) -> Result<()> {
        let mut buf = vec![0u8; BLOCK as usize];
        fill_block(&VG[vi], block, version, &mut buf);
        va.write(VG[vi].lun, block * BLOCK, &buf)?;
        self.images[vi].insert(block, version);
        self.stats.written += BLOCK;
        Ok(())
    }

    /// Writes every volume's first `loaded` blocks at version 1; returns the blocks.
    pub fn load(&mut self, va: &mut Va) -> Result<u64> {
        let mut n = 0;
        for (vi, v) in VG.iter().enumerate() {
            for b in 0..v.loaded {
                self.write(va, vi, b, 1)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// `count` transactions: each updates a data block and an index block and
    /// appends a redo record. Returns each write as (volume, block, version).
    pub fn transactions(
        &mut self,
        va: &mut Va,
        count: u32,
        version: u32,
    ) -> Result<Vec<(usize, u64, u32)>> {
        let mut log = Vec::new();
        for _ in 0..count {
            // Block 0 is the volume-group header: the database leaves it alone.
            for (vi, v) in VG.iter().enumerate().take(2) {
                let b = 1 + self.next() % (v.loaded - 1);
                self.write(va, vi, b, version)?;
                log.push((vi, b, version));
            }
            let b = self.redo_head;
            self.write(va, 2, b, version)?;
            log.push((2, b, version));
            self.redo_head = if b + 1 == VG[2].size / BLOCK {
                1
            } else {
                b + 1
            };
        }
        Ok(log)
    }

    /// After a power cut: each block written since the last commit must read its
    /// committed content or one of the versions written since. Adopts what the array
    /// reads; returns how many of those blocks read a newer version, and how many
    /// blocks were written.
    pub fn settle(
        &mut self,
        va: &mut Va,
        committed: &[Image; 3],
        pending: &[(usize, u64, u32)],
    ) -> Result<(usize, usize)> {
        self.images = committed.clone();
        let mut candidates: BTreeMap<(usize, u64), Vec<Option<u32>>> = BTreeMap::new();
        for &(vi, b, version) in pending {
            candidates
                .entry((vi, b))
                .or_insert_with(|| vec![committed[vi].get(&b).copied()])
                .push(Some(version));
        }
        let mut got = vec![0u8; BLOCK as usize];
        let mut want = vec![0u8; BLOCK as usize];
        let mut newer = 0;
        let touched = candidates.len();
        for ((vi, b), versions) in candidates {
            va.read(VG[vi].lun, b * BLOCK, &mut got)?;
            let found = versions.iter().position(|ver| {
                match ver {
                    Some(ver) => fill_block(&VG[vi], b, *ver, &mut want),
                    None => want.fill(0),
                }
                got == want
            });
            match found {
                Some(0) => {}
                Some(i) => {
                    newer += 1;
                    if let Some(ver) = versions[i] {
                        self.images[vi].insert(b, ver);
                    }
                }
                None => {
                    return Err(Fail(format!(
                        "demo: after the power cut LUN {} block {b} reads neither its \
                         committed content nor anything written since",
                        VG[vi].lun
                    )))
                }
            }
        }
        Ok((newer, touched))
    }
}

/// Deterministic content of one block: a header line, then noise seeded by it.
fn fill_block(v: &Volume, block: u64, version: u32, out: &mut [u8]) {
    let header = format!(
        "vg_db/{} lun {} block {block} version {version}\n",
        v.name, v.lun
    );
    let mut x = fnv1a(FNV_OFFSET, header.as_bytes()) | 1;
    for word in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
    out[..header.len()].copy_from_slice(header.as_bytes());
}

/// What `image` says LUN-relative bytes `offset..offset + out.len()` hold.
fn expected(v: &Volume, image: &Image, offset: u64, out: &mut [u8]) {
    out.fill(0);
    let first = offset / BLOCK;
    let end = (offset + out.len() as u64) / BLOCK;
    for (&b, &ver) in image.range(first..end) {
        let o = ((b - first) * BLOCK) as usize;
        fill_block(v, b, ver, &mut out[o..o + BLOCK as usize]);
    }
}

/// Number of blocks of LUN `lun` (holding volume `v`) that differ from `image`.
pub fn diff(va: &mut Va, lun: u32, v: &Volume, image: &Image, s: &mut Stats) -> Result<u64> {
    let mut got = vec![0u8; CHUNK as usize];
    let mut want = vec![0u8; CHUNK as usize];
    let mut bad = 0;
    let mut off = 0;
    while off < v.size {
        va.read(lun, off, &mut got)?;
        s.read += CHUNK;
        expected(v, image, off, &mut want);
        bad += got
            .chunks(BLOCK as usize)
            .zip(want.chunks(BLOCK as usize))
            .filter(|(g, w)| g != w)
            .count() as u64;
        off += CHUNK;
    }
    Ok(bad)
}

/// Fails unless every LUN `lun_of(volume)` reads `images`.
pub fn verify(
    va: &mut Va,
    images: &[Image; 3],
    lun_of: fn(&Volume) -> u32,
    what: &str,
    s: &mut Stats,
) -> Result<()> {
    for (v, image) in VG.iter().zip(images) {
        let lun = lun_of(v);
        let bad = diff(va, lun, v, image, s)?;
        ensure(
            bad == 0,
            &format!("LUN {lun}: {bad} blocks differ from {what}"),
        )?;
    }
    Ok(())
}

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

pub fn fnv1a(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a 64 of LUN `lun` (of `size` bytes), read whole: the demo's "backup".
pub fn checksum(va: &mut Va, lun: u32, size: u64, s: &mut Stats) -> Result<u64> {
    checksum_as(va, None, lun, size, s)
}

/// [`checksum`], reading on behalf of `host` (`None`: the array's own access).
pub fn checksum_as(
    va: &mut Va,
    host: Option<u64>,
    lun: u32,
    size: u64,
    s: &mut Stats,
) -> Result<u64> {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut h = FNV_OFFSET;
    let mut off = 0;
    while off < size {
        match host {
            Some(host) => va.as_host(host).read(lun, off, &mut buf)?,
            None => va.read(lun, off, &mut buf)?,
        }
        s.read += CHUNK;
        h = fnv1a(h, &buf);
        off += CHUNK;
    }
    Ok(h)
}

/// FNV-1a 64 of what `image` says volume `v` holds.
pub fn image_checksum(v: &Volume, image: &Image) -> u64 {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut h = FNV_OFFSET;
    let mut off = 0;
    while off < v.size {
        expected(v, image, off, &mut buf);
        h = fnv1a(h, &buf);
        off += CHUNK;
    }
    h
}

/// The first line of block 0: the volume-group header.
pub fn read_header(va: &mut Va, lun: u32) -> Result<String> {
    let mut buf = vec![0u8; BLOCK as usize];
    va.read(lun, 0, &mut buf)?;
    let end = buf.iter().take(128).position(|&c| c == b'\n').unwrap_or(0);
    if end == 0 {
        return Ok(String::from(if buf.iter().all(|&c| c == 0) {
            "zeros"
        } else {
            "garbage"
        }));
    }
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Fails with `what` unless `ok`.
pub fn ensure(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Fail(format!("demo: check failed: {what}")))
    }
}
