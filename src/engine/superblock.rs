//! Layer 5a: the superblock — the root of everything, written to one of two slots,
//! each kept in two copies.
//!
//! Pages 0 and 1 of the device hold the first copies of the two superblock slots,
//! and the last two pages of the device (as formatted) the second copies. A commit of
//! generation `g` writes slot `g % 2`, first copy then (after a flush) second copy,
//! so the previous commit's slot is never touched while a new one is written, and a
//! power cut tears at most one copy; open takes the valid copy with the highest
//! generation. Byte layout (after the 32-byte common page header, whose
//! transaction id is the generation):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 32 | 4 | format version ([`FORMAT_VERSION`]) |
//! | 36 | 4 | metadata page size (4096) |
//! | 40 | 8 | compatible feature flags (unknown ones ignored) |
//! | 48 | 8 | incompatible feature flags (unknown ones refuse open) |
//! | 56 | 8 | read-only-compatible feature flags (unknown ones refuse open) |
//! | 64 | 4 | device block size at format |
//! | 68 | 4 | data extent size in bytes |
//! | 72 | 8 | device size in 4 KiB pages at format |
//! | 80 | 8 | first metadata page |
//! | 88 | 8 | number of metadata pages |
//! | 96 | 8 | first data page (extent 0) |
//! | 104 | 8 | number of data extents |
//! | 112 | 16 | array id |
//! | 128 | 24 | metadata space map: root, allocated, cursor (u64 each) |
//! | 152 | 24 | data space map: root, allocated, cursor |
//! | 176 | 128 | 8 tree root slots: root u64, value size u16, value kind u8, 5 reserved |
//! | 304 | 64 | client bytes (owned by the layer above the engine) |
//! | 368 | 4 | metadata copies: 1 or 2 |
//! | 372 | 4 | reserved, zero |
//! | 376 | 8 | metadata page copies healed so far (a running count) |
//! | 384 | 8 | generation lost by an open that allowed a rollback (0: never) |
//! | 392 | 8 | generation that open rolled back to |
//! | 400 | 8 | free queue root (0: empty) |
//! | 408 | 8 | free queue front key counter |
//! | 416 | 8 | free queue back key counter |
//! | 424 | 8 | free queue entries |
//! | 432 | .. | zero |
//!
//! A superblock whose free queue is not empty sets the incompatible feature
//! [`IncompatFeatures::FREE_QUEUE`]: a build that does not know the queue would
//! leak what it holds, so it refuses the image instead.

use bitflags::bitflags;

use crate::btree::node::ValueKind;
use crate::btree::Tree;
use crate::error::{Error, Result};
use crate::store::page::{self, get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};
use crate::store::page::{PageKind, PAGE_SIZE};

use super::reclaim::FreeQueue;

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// Pages at each end of the device that hold the superblock slots.
pub const SUPERBLOCK_PAGES: u64 = 2;
/// Number of tree root slots in the superblock.
pub const ROOT_SLOTS: usize = 8;
/// Bytes of the superblock reserved for the engine's client.
pub const CLIENT_BYTES: usize = 64;
/// Smallest data extent size: 4 KiB (one metadata page).
pub const MIN_EXTENT_SIZE: u32 = 4 << 10;
/// Largest data extent size: 1 MiB.
pub const MAX_EXTENT_SIZE: u32 = 1 << 20;
/// Most data extents a pool may have: extent numbers are stored as 32-bit values
/// plus one (0 means "unmapped") in mapping entries, so 2^32 - 2 is the largest
/// number that fits, and 2^32 - 1 extents would overflow.
pub const MAX_DATA_EXTENTS: u64 = u32::MAX as u64 - 1;

/// The extent-size rule, stated once: a power of two from [`MIN_EXTENT_SIZE`] to
/// [`MAX_EXTENT_SIZE`].
pub const fn is_valid_extent_size(bytes: u32) -> bool {
    bytes.is_power_of_two() && bytes >= MIN_EXTENT_SIZE && bytes <= MAX_EXTENT_SIZE
}

bitflags! {
    /// Features a reader must understand to open the device at all.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct IncompatFeatures: u64 {
        /// Trees wait in the free queue (bytes 400..432) to be freed.
        const FREE_QUEUE = 1;
    }
}

/// Where everything is on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Device block size at format.
    pub device_block_size: u32,
    /// Data extent size in bytes.
    pub extent_size: u32,
    /// Device size in 4 KiB pages at format.
    pub device_pages: u64,
    /// First metadata page.
    pub meta_start: u64,
    /// Number of metadata pages.
    pub meta_pages: u64,
    /// First data page.
    pub data_start: u64,
    /// Number of data extents.
    pub data_extents: u64,
    /// Copies of every metadata page: 1, or 2 (the second copies in a mirror
    /// region just before the superblocks' second copies at the device's end).
    pub metadata_copies: u32,
}

impl Geometry {
    /// Pages per data extent.
    pub fn extent_pages(&self) -> u64 {
        u64::from(self.extent_size) / PAGE_SIZE as u64
    }

    /// Page of the second copy of superblock slot `slot`.
    pub fn superblock_copy(&self, slot: u64) -> u64 {
        second_superblock(self.device_pages, slot)
    }

    /// Pages at the device's end that hold second copies: the superblocks', and
    /// the metadata area's when there are two copies.
    pub fn mirror_pages(&self) -> u64 {
        SUPERBLOCK_PAGES
            + if self.metadata_copies == 2 {
                self.meta_pages
            } else {
                0
            }
    }

    /// With two copies, the offset from a metadata page to its second copy.
    pub fn mirror_offset(&self) -> Option<u64> {
        (self.metadata_copies == 2).then(|| {
            self.device_pages
                .saturating_sub(SUPERBLOCK_PAGES + self.meta_pages + self.meta_start)
        })
    }

    /// Checks that the layout is self-consistent and fits `device_pages` pages.
    pub fn validate(&self, actual_pages: u64) -> Result<()> {
        let bad = |w| Err(Error::corrupt(0, w));
        if !is_valid_extent_size(self.extent_size) {
            return bad("extent size out of range");
        }
        if !matches!(self.metadata_copies, 1 | 2) {
            return bad("metadata copies must be 1 or 2");
        }
        if self.meta_start != 2 || self.meta_pages == 0 || self.data_extents == 0 {
            return bad("impossible layout");
        }
        if self.data_extents > MAX_DATA_EXTENTS {
            return bad("more than 2^32 - 2 data extents");
        }
        let meta_end = self.meta_start.checked_add(self.meta_pages);
        let data_end = self
            .data_extents
            .checked_mul(self.extent_pages())
            .and_then(|n| n.checked_add(self.data_start));
        let mirror = self
            .meta_pages
            .checked_add(SUPERBLOCK_PAGES)
            .filter(|_| self.metadata_copies == 2)
            .unwrap_or(SUPERBLOCK_PAGES);
        let usable = self.device_pages.checked_sub(mirror);
        match (meta_end, data_end, usable) {
            (Some(m), Some(d), Some(u)) if m <= self.data_start && d <= u => {}
            _ => return bad("layout regions overlap or overflow"),
        }
        if self.device_pages > actual_pages {
            return Err(Error::DeviceTooSmall {
                needed: self.device_pages.saturating_mul(PAGE_SIZE as u64),
                available: actual_pages.saturating_mul(PAGE_SIZE as u64),
            });
        }
        Ok(())
    }
}

/// Page of the second copy of superblock slot `slot` on a device of `device_pages`.
pub fn second_superblock(device_pages: u64, slot: u64) -> u64 {
    device_pages.saturating_sub(SUPERBLOCK_PAGES) + slot
}

/// Persisted state of one space map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapRoot {
    /// Root node (0 = all zero).
    pub root: u64,
    /// Entries in use.
    pub allocated: u64,
    /// Allocation cursor.
    pub cursor: u64,
}

/// A decoded superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Generation (transaction id) of this commit.
    pub generation: u64,
    /// Layout.
    pub geo: Geometry,
    /// Array id chosen at format.
    pub array_id: [u8; 16],
    /// Metadata space map.
    pub meta_map: MapRoot,
    /// Data space map.
    pub data_map: MapRoot,
    /// Tree root slots.
    pub roots: [Option<Tree>; ROOT_SLOTS],
    /// Client bytes.
    pub client: [u8; CLIENT_BYTES],
    /// Metadata page copies healed so far.
    pub healed: u64,
    /// The last rollback an open allowed: (generation lost, generation kept).
    pub rollback: Option<(u64, u64)>,
    /// Trees waiting to be freed.
    pub queue: FreeQueue,
}

/// Byte offsets of the superblock's fields (the table in the module docs), used by
/// both [`Superblock::encode`] and [`Superblock::decode`].
mod off {
    pub const VERSION: usize = 32;
    pub const PAGE_SIZE: usize = 36;
    pub const COMPAT: usize = 40;
    pub const INCOMPAT: usize = 48;
    pub const RO_COMPAT: usize = 56;
    pub const DEVICE_BLOCK_SIZE: usize = 64;
    pub const EXTENT_SIZE: usize = 68;
    pub const DEVICE_PAGES: usize = 72;
    pub const META_START: usize = 80;
    pub const META_PAGES: usize = 88;
    pub const DATA_START: usize = 96;
    pub const DATA_EXTENTS: usize = 104;
    pub const ARRAY_ID: usize = 112;
    pub const META_MAP: usize = 128;
    pub const DATA_MAP: usize = 152;
    /// A space map's root, allocated count and cursor, 8 bytes each from its offset.
    pub const MAP_ALLOCATED: usize = 8;
    pub const MAP_CURSOR: usize = 16;
    pub const ROOTS: usize = 176;
    /// Each root slot: root u64, value size u16, value kind u8, in-use flag u8.
    pub const ROOT_STRIDE: usize = 16;
    pub const ROOT_VALUE_SIZE: usize = 8;
    pub const ROOT_KIND: usize = 10;
    pub const ROOT_IN_USE: usize = 11;
    pub const CLIENT: usize = 304;
    pub const METADATA_COPIES: usize = 368;
    pub const HEALED: usize = 376;
    pub const ROLLBACK_LOST: usize = 384;
    pub const ROLLBACK_TO: usize = 392;
    pub const QUEUE_ROOT: usize = 400;
    pub const QUEUE_FRONT: usize = 408;
    pub const QUEUE_BACK: usize = 416;
    pub const QUEUE_ENTRIES: usize = 424;
}

impl Superblock {
    /// Encodes into a full page (header included, sealed) for slot page `slot`.
    pub fn encode(&self, b: &mut [u8], slot: u64) {
        page::init(b, PageKind::Superblock, slot, self.generation);
        put_u32(b, off::VERSION, FORMAT_VERSION);
        put_u32(b, off::PAGE_SIZE, PAGE_SIZE as u32);
        put_u64(b, off::COMPAT, 0);
        let features = if self.queue.is_empty() {
            IncompatFeatures::empty()
        } else {
            IncompatFeatures::FREE_QUEUE
        };
        put_u64(b, off::INCOMPAT, features.bits());
        put_u64(b, off::RO_COMPAT, 0);
        let g = &self.geo;
        put_u32(b, off::DEVICE_BLOCK_SIZE, g.device_block_size);
        put_u32(b, off::EXTENT_SIZE, g.extent_size);
        put_u64(b, off::DEVICE_PAGES, g.device_pages);
        put_u64(b, off::META_START, g.meta_start);
        put_u64(b, off::META_PAGES, g.meta_pages);
        put_u64(b, off::DATA_START, g.data_start);
        put_u64(b, off::DATA_EXTENTS, g.data_extents);
        b[off::ARRAY_ID..off::ARRAY_ID + 16].copy_from_slice(&self.array_id);
        for (o, m) in [
            (off::META_MAP, &self.meta_map),
            (off::DATA_MAP, &self.data_map),
        ] {
            put_u64(b, o, m.root);
            put_u64(b, o + off::MAP_ALLOCATED, m.allocated);
            put_u64(b, o + off::MAP_CURSOR, m.cursor);
        }
        for (i, r) in self.roots.iter().enumerate() {
            let o = off::ROOTS + off::ROOT_STRIDE * i;
            if let Some(t) = r {
                put_u64(b, o, t.root());
                put_u16(b, o + off::ROOT_VALUE_SIZE, t.value_size() as u16);
                b[o + off::ROOT_KIND] = t.kind() as u8;
                b[o + off::ROOT_IN_USE] = 1;
            }
        }
        b[off::CLIENT..off::CLIENT + CLIENT_BYTES].copy_from_slice(&self.client);
        put_u32(b, off::METADATA_COPIES, g.metadata_copies);
        put_u64(b, off::HEALED, self.healed);
        let (lost, to) = self.rollback.unwrap_or((0, 0));
        put_u64(b, off::ROLLBACK_LOST, lost);
        put_u64(b, off::ROLLBACK_TO, to);
        put_u64(b, off::QUEUE_ROOT, self.queue.tree.root());
        put_u64(b, off::QUEUE_FRONT, self.queue.front);
        put_u64(b, off::QUEUE_BACK, self.queue.back);
        put_u64(b, off::QUEUE_ENTRIES, self.queue.entries);
        page::seal(b);
    }

    /// Decodes a superblock page whose page header has been verified.
    pub fn decode(b: &[u8]) -> Result<Superblock> {
        let version = get_u32(b, off::VERSION);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        if get_u32(b, off::PAGE_SIZE) != PAGE_SIZE as u32 {
            return Err(Error::corrupt(
                0,
                "superblock records another metadata page size",
            ));
        }
        let incompat = get_u64(b, off::INCOMPAT);
        // No read-only-compatible feature exists yet: every one is unknown.
        let unknown = (incompat & !IncompatFeatures::all().bits()) | get_u64(b, off::RO_COMPAT);
        if unknown != 0 {
            return Err(Error::IncompatibleFeatures(unknown));
        }
        let queue = match get_u64(b, off::QUEUE_ROOT) {
            // Images written before the queue existed hold zeros here.
            0 if get_u64(b, off::QUEUE_FRONT) == 0 => FreeQueue::empty(),
            root => FreeQueue::from_parts(
                root,
                get_u64(b, off::QUEUE_FRONT),
                get_u64(b, off::QUEUE_BACK),
                get_u64(b, off::QUEUE_ENTRIES),
            )?,
        };
        if queue.is_empty() == (incompat & IncompatFeatures::FREE_QUEUE.bits() != 0) {
            return Err(Error::corrupt(
                0,
                "superblock's free queue flag does not match its queue",
            ));
        }
        let geo = Geometry {
            device_block_size: get_u32(b, off::DEVICE_BLOCK_SIZE),
            extent_size: get_u32(b, off::EXTENT_SIZE),
            device_pages: get_u64(b, off::DEVICE_PAGES),
            meta_start: get_u64(b, off::META_START),
            meta_pages: get_u64(b, off::META_PAGES),
            data_start: get_u64(b, off::DATA_START),
            data_extents: get_u64(b, off::DATA_EXTENTS),
            metadata_copies: get_u32(b, off::METADATA_COPIES),
        };
        let mut array_id = [0u8; 16];
        array_id.copy_from_slice(&b[off::ARRAY_ID..off::ARRAY_ID + 16]);
        let map = |o| MapRoot {
            root: get_u64(b, o),
            allocated: get_u64(b, o + off::MAP_ALLOCATED),
            cursor: get_u64(b, o + off::MAP_CURSOR),
        };
        let mut roots = [None; ROOT_SLOTS];
        for (i, r) in roots.iter_mut().enumerate() {
            *r = decode_root(b, off::ROOTS + off::ROOT_STRIDE * i)?;
        }
        let mut client = [0u8; CLIENT_BYTES];
        client.copy_from_slice(&b[off::CLIENT..off::CLIENT + CLIENT_BYTES]);
        Ok(Superblock {
            generation: page::txid(b),
            geo,
            array_id,
            meta_map: map(off::META_MAP),
            data_map: map(off::DATA_MAP),
            roots,
            client,
            healed: get_u64(b, off::HEALED),
            rollback: match get_u64(b, off::ROLLBACK_LOST) {
                0 => None,
                lost => Some((lost, get_u64(b, off::ROLLBACK_TO))),
            },
            queue,
        })
    }
}

/// The root slot at byte `o`: `None` when not in use.
fn decode_root(b: &[u8], o: usize) -> Result<Option<Tree>> {
    match b[o + off::ROOT_IN_USE] {
        0 => Ok(None),
        1 => {
            let vs = usize::from(get_u16(b, o + off::ROOT_VALUE_SIZE));
            let kind = ValueKind::from_u8(b[o + off::ROOT_KIND]).ok_or(Error::corrupt(
                0,
                "superblock root slot has an unknown value kind",
            ))?;
            let t = Tree::from_parts(get_u64(b, o), vs, kind).map_err(|_| {
                Error::corrupt(0, "superblock root slot has an invalid value shape")
            })?;
            Ok(Some(t))
        }
        _ => Err(Error::corrupt(0, "superblock root slot flag invalid")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(data_extents: u64) -> Geometry {
        Geometry {
            device_block_size: 4096,
            extent_size: MIN_EXTENT_SIZE,
            device_pages: 2 + 16 + data_extents + 2,
            meta_start: 2,
            meta_pages: 16,
            data_start: 18,
            data_extents,
            metadata_copies: 1,
        }
    }

    #[test]
    fn the_extent_limit_is_checked_at_every_open() {
        let at_limit = geometry(MAX_DATA_EXTENTS);
        assert_eq!(at_limit.validate(at_limit.device_pages), Ok(()));
        // One more extent would not fit a mapping slot (stored as extent + 1 in 32 bits).
        let over = geometry(MAX_DATA_EXTENTS + 1);
        assert_eq!(
            over.validate(over.device_pages),
            Err(Error::corrupt(0, "more than 2^32 - 2 data extents"))
        );
    }

    #[test]
    fn the_extent_size_rule() {
        for ok in [4096u32, 8192, 16384, 1 << 20] {
            assert!(is_valid_extent_size(ok), "{ok}");
        }
        for bad in [0u32, 512, 2048, 4095, 12288, 2 << 20, u32::MAX] {
            assert!(!is_valid_extent_size(bad), "{bad}");
        }
    }

    #[test]
    fn encode_and_decode_use_one_layout() {
        let sb = Superblock {
            generation: 7,
            geo: geometry(100),
            array_id: [9; 16],
            meta_map: MapRoot {
                root: 3,
                allocated: 4,
                cursor: 5,
            },
            data_map: MapRoot {
                root: 6,
                allocated: 7,
                cursor: 8,
            },
            roots: [None; ROOT_SLOTS],
            client: [1; CLIENT_BYTES],
            healed: 3,
            rollback: Some((9, 8)),
            queue: FreeQueue::from_parts(40, 1 << 62, (1 << 63) + 5, 3).unwrap(),
        };
        let mut b = alloc::vec![0u8; PAGE_SIZE];
        sb.encode(&mut b, 1);
        assert_eq!(Superblock::decode(&b), Ok(sb));
    }
}
