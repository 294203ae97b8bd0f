//! The application: a toy database on the three LUNs of volume group `vg_db`. Every
//! block it writes is recognisable (a header line naming volume, LUN, block and
//! version, then deterministic noise), and it remembers the version of every block it
//! wrote, so the checks can tell what each LUN must read.

use std::collections::BTreeMap;

use super::{Result, Va};

/// One MiB.
pub(super) const MIB: u64 = 1 << 20;
/// The database's block: the unit it writes and the unit the checks compare.
pub(super) const BLOCK: u64 = 4096;

/// One LUN of the volume group `vg_db` and the business copy that backs it up.
pub(super) struct Volume {
    /// The volume's name in `vg_db`.
    pub name: &'static str,
    /// The parent LUN.
    pub lun: u32,
    /// Its business copy.
    pub copy: u32,
    /// Bytes.
    pub size: u64,
    /// Blocks the initial load writes (from block 0, the volume-group header).
    pub loaded: u64,
}

/// The volume group: data, index and redo log.
pub(super) const VG: [Volume; 3] = [
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
pub(super) type Image = BTreeMap<u64, u32>;

/// One write of a transaction: (volume, block, version).
pub(super) type Write = (usize, u64, u32);

/// Bytes written by the database and read by the checks.
#[derive(Default)]
pub(super) struct Stats {
    /// Bytes the database wrote.
    pub written: u64,
    /// Bytes the checks and the backup read.
    pub read: u64,
}

/// The toy database and what it believes the volume group holds.
pub(super) struct Database {
    /// Each volume's image, in `VG`'s order.
    pub images: [Image; 3],
    rng: u64,
    /// Next block of the redo log (a ring after the header block).
    pub redo_head: u64,
    /// What it and the checks wrote and read.
    pub stats: Stats,
}

impl Database {
    /// An empty database: nothing written yet.
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

    fn write(&mut self, va: &mut Va, (vi, block, version): Write) -> Result<()> {
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
                self.write(va, (vi, b, 1))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// `count` transactions: each updates a data block and an index block and appends
    /// a redo record. Returns the writes, in order.
    pub fn transactions(&mut self, va: &mut Va, count: u32, version: u32) -> Result<Vec<Write>> {
        let mut log = Vec::new();
        for _ in 0..count {
            // Block 0 is the volume-group header: the database leaves it alone.
            for (vi, v) in VG.iter().enumerate().take(2) {
                let w = (vi, 1 + self.next() % (v.loaded - 1), version);
                self.write(va, w)?;
                log.push(w);
            }
            // The redo log is a ring after the header block.
            let w = (2, self.redo_head, version);
            self.write(va, w)?;
            log.push(w);
            self.redo_head += 1;
            if self.redo_head == VG[2].size / BLOCK {
                self.redo_head = 1;
            }
        }
        Ok(log)
    }

    /// After a power cut: each block written since the last commit must read its
    /// `committed` content or one of the versions written since (`pending`). Adopts
    /// what the array reads; returns how many of those blocks read a newer version,
    /// and how many blocks were written.
    pub fn settle(
        &mut self,
        va: &mut Va,
        committed: &[Image; 3],
        pending: &[Write],
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
            match found.map(|i| (i, versions[i])) {
                Some((0, _)) => {}
                Some((_, ver)) => {
                    newer += 1;
                    if let Some(ver) = ver {
                        self.images[vi].insert(b, ver);
                    }
                }
                None => {
                    return Err(format!(
                        "after the power cut LUN {} block {b} reads neither its committed \
                         content nor anything written since",
                        VG[vi].lun
                    )
                    .into())
                }
            }
        }
        Ok((newer, touched))
    }
}

/// Deterministic content of one block: a header line, then noise seeded by it.
pub(super) fn fill_block(v: &Volume, block: u64, version: u32, out: &mut [u8]) {
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

/// What `image` says LUN-relative bytes `offset..offset + out.len()` of volume `v`
/// hold.
pub(super) fn expected(v: &Volume, image: &Image, offset: u64, out: &mut [u8]) {
    out.fill(0);
    let first = offset / BLOCK;
    let end = (offset + out.len() as u64) / BLOCK;
    for (&b, &ver) in image.range(first..end) {
        let o = ((b - first) * BLOCK) as usize;
        fill_block(v, b, ver, &mut out[o..o + BLOCK as usize]);
    }
}

/// FNV-1a 64's starting value.
pub(super) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64 of `data`, going on from `h`.
pub(super) fn fnv1a(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
