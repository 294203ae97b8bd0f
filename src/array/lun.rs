//! LUN records: what the LUN table stores per LUN, and the packed mapping entries.

use crate::btree::Tree;
use crate::error::{Error, Result};

/// Bytes of one LUN-table value.
pub(crate) const RECORD_SIZE: usize = 64;
/// Extents per mapping entry: a mapping value packs this many extent slots.
pub(crate) const EXTENTS_PER_ENTRY: u64 = 16;
/// Bytes of one mapping value.
pub(crate) const ENTRY_BYTES: usize = EXTENTS_PER_ENTRY as usize * 4;

const FLAG_ATTACHED: u8 = 1;
const FLAG_HAS_PARENT: u8 = 2;
const FLAG_OFFLINE: u8 = 4;

/// What a LUN is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LunKind {
    /// A plain LUN, created with [`Array::create_lun`](super::Array::create_lun) or
    /// left standing alone when its parent was deleted.
    Lun,
    /// A business copy of another LUN.
    Copy,
}

/// One LUN as the array keeps it in RAM; written to the LUN table at each commit.
#[derive(Clone, Debug)]
pub(crate) struct Lun {
    /// Mapping: mapping entry index (logical extent / 16) → packed extent slots. Root 0 when empty or detached.
    pub mapping: Tree,
    pub size: u64,
    pub kind: LunKind,
    /// The LUN this copy was made from (None for plain LUNs and orphaned copies).
    pub parent: Option<u32>,
    pub attached: bool,
    /// False while the LUN is offline (I/O refused, management allowed).
    pub online: bool,
    pub created_gen: u64,
    pub attached_gen: u64,
    /// Bit i: the host with index i may read (discover) this LUN.
    pub grants_read: u64,
    /// Bit i: the host with index i may write it (always a subset of `grants_read`).
    pub grants_write: u64,
    /// Changed since it was last written to the table.
    pub dirty: bool,
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl Lun {
    /// Encodes the table value: mapping root, size, kind, flags, parent, generations.
    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[0..8].copy_from_slice(&self.mapping.root().to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16] = match self.kind {
            LunKind::Lun => 0,
            LunKind::Copy => 1,
        };
        let mut flags = 0;
        if self.attached {
            flags |= FLAG_ATTACHED;
        }
        if self.parent.is_some() {
            flags |= FLAG_HAS_PARENT;
        }
        if !self.online {
            flags |= FLAG_OFFLINE;
        }
        b[17] = flags;
        b[20..24].copy_from_slice(&self.parent.unwrap_or(0).to_le_bytes());
        b[24..32].copy_from_slice(&self.created_gen.to_le_bytes());
        b[32..40].copy_from_slice(&self.attached_gen.to_le_bytes());
        b[40..48].copy_from_slice(&self.grants_read.to_le_bytes());
        b[48..56].copy_from_slice(&self.grants_write.to_le_bytes());
        b
    }

    /// Decodes a table value, refusing any field a valid array cannot hold.
    pub fn decode(lun: u32, b: &[u8], max_luns: u32) -> Result<Lun> {
        let bad = |what| Error::Corrupt { addr: 0, what };
        if b.len() != RECORD_SIZE {
            return Err(bad("LUN record of the wrong size"));
        }
        if lun >= max_luns {
            return Err(bad("LUN table holds a number beyond the maximum"));
        }
        let root = u64_at(b, 0);
        let size = u64_at(b, 8);
        let kind = match b[16] {
            0 => LunKind::Lun,
            1 => LunKind::Copy,
            _ => return Err(bad("LUN record has an unknown kind")),
        };
        let flags = b[17];
        if flags & !(FLAG_ATTACHED | FLAG_HAS_PARENT | FLAG_OFFLINE) != 0
            || b[18] != 0
            || b[19] != 0
        {
            return Err(bad("LUN record has unknown flags"));
        }
        if b[56..].iter().any(|&x| x != 0) {
            return Err(bad("LUN record has non-zero reserved bytes"));
        }
        let (grants_read, grants_write) = (u64_at(b, 40), u64_at(b, 48));
        if grants_write & !grants_read != 0 {
            return Err(bad("LUN record grants writing without reading"));
        }
        let attached = flags & FLAG_ATTACHED != 0;
        let parent_no = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
        let parent = (flags & FLAG_HAS_PARENT != 0).then_some(parent_no);
        if size == 0 || size % super::SECTOR != 0 {
            return Err(bad("LUN record has an invalid size"));
        }
        if kind == LunKind::Lun && (!attached || parent.is_some()) {
            return Err(bad("plain LUN record marked detached or with a parent"));
        }
        if !attached && root != 0 {
            return Err(bad("detached copy record holds a mapping"));
        }
        if parent.is_some_and(|p| p >= max_luns || p == lun) {
            return Err(bad("LUN record names an impossible parent"));
        }
        let mapping = Tree::from_parts(root, ENTRY_BYTES, crate::engine::ValueKind::Extents)?;
        Ok(Lun {
            mapping,
            size,
            kind,
            parent,
            attached,
            online: flags & FLAG_OFFLINE == 0,
            created_gen: u64_at(b, 24),
            attached_gen: u64_at(b, 32),
            grants_read,
            grants_write,
            dirty: false,
        })
    }
}

/// Decodes a mapping value into its slots (0 = hole, else extent + 1).
pub(crate) fn unpack(v: &[u8]) -> [u32; EXTENTS_PER_ENTRY as usize] {
    let mut s = [0u32; EXTENTS_PER_ENTRY as usize];
    for (i, c) in v
        .chunks_exact(4)
        .take(EXTENTS_PER_ENTRY as usize)
        .enumerate()
    {
        s[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    s
}

/// Encodes slots into a mapping value.
pub(crate) fn pack(s: &[u32; EXTENTS_PER_ENTRY as usize]) -> [u8; ENTRY_BYTES] {
    let mut v = [0u8; ENTRY_BYTES];
    for (i, x) in s.iter().enumerate() {
        v[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
    }
    v
}

/// What [`Array::lun_info`](super::Array::lun_info) reports about one LUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LunInfo {
    /// The LUN number.
    pub lun: u32,
    /// Size in bytes.
    pub size: u64,
    /// Plain LUN or copy.
    pub kind: LunKind,
    /// For a copy, the LUN it was made from; `None` for plain LUNs and for copies
    /// whose parent was deleted.
    pub parent: Option<u32>,
    /// False for a detached copy (no data, no reservation, I/O refused).
    pub attached: bool,
    /// False while the LUN is offline: I/O is refused, management is allowed.
    pub online: bool,
    /// Generation of the commit that created the LUN.
    pub created_generation: u64,
    /// Generation of the commit that last attached (or created attached) the copy;
    /// for LUNs created plain, the creation generation; a copy left standing alone
    /// by its parent's deletion keeps its last one. 0 for a copy never attached.
    pub attached_generation: u64,
    /// Pool bytes reserved for it: its size rounded up to whole extents, 0 when detached.
    pub reserved_bytes: u64,
    /// Bytes of extents only this LUN maps: what deleting it would free.
    pub exclusive_bytes: u64,
    /// Bytes of extents this LUN maps that another LUN maps too.
    pub shared_bytes: u64,
    /// Bytes that [`Array::repair`](super::Array::repair) could not recover: they
    /// read as [`Error::LostData`] until written or discarded (0 unless repaired).
    pub lost_bytes: u64,
}

/// What [`Array::lun_status`](super::Array::lun_status) reports about one LUN: its
/// shape and state, without the space accounting that [`LunInfo`] walks the mapping
/// for (O(1) whatever the LUN's size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LunStatus {
    /// The LUN number.
    pub lun: u32,
    /// Size in bytes.
    pub size: u64,
    /// Plain LUN or copy.
    pub kind: LunKind,
    /// For a copy, the LUN it was made from (as in [`LunInfo::parent`]).
    pub parent: Option<u32>,
    /// False for a detached copy.
    pub attached: bool,
    /// False while the LUN is offline.
    pub online: bool,
}

/// What [`Array::pool_info`](super::Array::pool_info) reports about the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolInfo {
    /// Bytes of data the pool can hold for LUNs (1/256 of the extents, 2 to 256 — 1
    /// in a pool of two — are kept spare so that copy-on-write rarely has to commit
    /// early).
    pub capacity_bytes: u64,
    /// Bytes of data extents in use, including those that only dropped mappings
    /// still hold while they wait to be freed ([`Array::pending_bytes`](super::Array::pending_bytes) says how
    /// many: they are not free yet, but a write that needs them frees them first).
    pub allocated_bytes: u64,
    /// Bytes reserved by the LUNs that are not detached.
    pub reserved_bytes: u64,
    /// Bytes not reserved: the most a new LUN or an attach can reserve.
    pub unreserved_bytes: u64,
    /// Bytes of data extents not in use (`capacity_bytes - allocated_bytes`).
    pub free_bytes: u64,
    /// Bytes of metadata pages in use on the device, every copy and the
    /// superblocks' four pages included.
    pub metadata_used_bytes: u64,
    /// Bytes of metadata provisioned at format (sized for the worst case), every
    /// copy and the superblocks' four pages included.
    pub metadata_provisioned_bytes: u64,
    /// Copies of every metadata page: 1 or 2.
    pub metadata_copies: u32,
    /// Metadata page copies found bad and rewritten from their good copy, over
    /// the array's life (kept in the superblock, as of the last commit).
    pub healed_pages: u64,
    /// Bad copies found since the last commit, which the next commit rewrites.
    pub pending_heals: u64,
    /// The last rollback an open allowed: (generation lost, generation opened
    /// instead); `None` if the array never lost a commit.
    pub rollback: Option<(u64, u64)>,
    /// Data extent size in bytes.
    pub extent_size: u32,
    /// Number of LUNs (plain and copies, attached or not).
    pub luns: u32,
    /// LUN numbers run from 0 to `max_luns - 1`.
    pub max_luns: u32,
    /// Generation of the newest commit.
    pub generation: u64,
    /// Entries in the free queue: dropped mappings, and parts of them, waiting to
    /// be freed ([`Array::reclaim`](super::Array::reclaim)); 0 when nothing waits.
    pub reclaim_queue: u64,
}
