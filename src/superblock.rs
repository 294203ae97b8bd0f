//! Layer 5a: the superblock — the root of everything, written to one of two slots.
//!
//! Pages 0 and 1 of the device hold the two superblock slots. A commit of
//! generation `g` writes slot `g % 2`, so the previous commit's slot is never
//! touched while a new one is written; open takes the valid slot with the highest
//! generation. Byte layout (after the 32-byte common block header, whose
//! transaction id is the generation):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 32 | 4 | format version ([`FORMAT_VERSION`]) |
//! | 36 | 4 | metadata block size (4096) |
//! | 40 | 8 | compatible feature flags (unknown ones ignored) |
//! | 48 | 8 | incompatible feature flags (unknown ones refuse open) |
//! | 56 | 8 | read-only-compatible feature flags (unknown ones refuse open) |
//! | 64 | 4 | device block size at format |
//! | 68 | 4 | data extent size in bytes |
//! | 72 | 8 | device size in 4 KiB pages at format |
//! | 80 | 8 | first metadata page |
//! | 88 | 8 | number of metadata blocks |
//! | 96 | 8 | first data page (extent 0) |
//! | 104 | 8 | number of data extents |
//! | 112 | 16 | array id |
//! | 128 | 24 | metadata space map: root, allocated, cursor (u64 each) |
//! | 152 | 24 | data space map: root, allocated, cursor |
//! | 176 | 128 | 8 tree root slots: root u64, value size u16, value kind u8, 5 reserved |
//! | 304 | 64 | client bytes (owned by the layer above the engine) |
//! | 368 | .. | zero |

use bitflags::bitflags;

use crate::block::{get_u32, get_u64, put_u32, put_u64, BlockKind, BLOCK_SIZE};
use crate::btree::node::ValueKind;
use crate::btree::Tree;
use crate::error::{Error, Result};

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Number of tree root slots in the superblock.
pub const ROOT_SLOTS: usize = 8;
/// Bytes of the superblock reserved for the engine's client.
pub const CLIENT_BYTES: usize = 64;

bitflags! {
    /// Features a reader must understand to open the device at all.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct IncompatFeatures: u64 {}
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
    /// Number of metadata blocks.
    pub meta_blocks: u64,
    /// First data page.
    pub data_start: u64,
    /// Number of data extents.
    pub data_extents: u64,
}

impl Geometry {
    /// Pages per data extent.
    pub fn extent_pages(&self) -> u64 {
        u64::from(self.extent_size) / BLOCK_SIZE as u64
    }

    /// Checks that the layout is self-consistent and fits `device_pages` pages.
    pub fn validate(&self, actual_pages: u64) -> Result<()> {
        let bad = |w| Err(Error::corrupt(0, w));
        if !self.extent_size.is_power_of_two() || !(4096..=1 << 20).contains(&self.extent_size) {
            return bad("extent size out of range");
        }
        if self.meta_start != 2 || self.meta_blocks == 0 || self.data_extents == 0 {
            return bad("impossible layout");
        }
        let meta_end = self.meta_start.checked_add(self.meta_blocks);
        let data_end = self
            .data_extents
            .checked_mul(self.extent_pages())
            .and_then(|n| n.checked_add(self.data_start));
        match (meta_end, data_end) {
            (Some(m), Some(d)) if m <= self.data_start && d <= self.device_pages => {}
            _ => return bad("layout regions overlap or overflow"),
        }
        if self.device_pages > actual_pages {
            return Err(Error::DeviceTooSmall {
                needed: self.device_pages.saturating_mul(BLOCK_SIZE as u64),
                available: actual_pages.saturating_mul(BLOCK_SIZE as u64),
            });
        }
        Ok(())
    }
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
}

const OFF_ROOTS: usize = 176;
const OFF_CLIENT: usize = 304;

impl Superblock {
    /// Encodes into a full block (header included, sealed) for slot page `slot`.
    pub fn encode(&self, b: &mut [u8], slot: u64) {
        crate::block::init(b, BlockKind::Superblock, slot, self.generation);
        put_u32(b, 32, FORMAT_VERSION);
        put_u32(b, 36, BLOCK_SIZE as u32);
        put_u64(b, 40, 0);
        put_u64(b, 48, IncompatFeatures::empty().bits());
        put_u64(b, 56, 0);
        let g = &self.geo;
        put_u32(b, 64, g.device_block_size);
        put_u32(b, 68, g.extent_size);
        put_u64(b, 72, g.device_pages);
        put_u64(b, 80, g.meta_start);
        put_u64(b, 88, g.meta_blocks);
        put_u64(b, 96, g.data_start);
        put_u64(b, 104, g.data_extents);
        b[112..128].copy_from_slice(&self.array_id);
        for (off, m) in [(128, &self.meta_map), (152, &self.data_map)] {
            put_u64(b, off, m.root);
            put_u64(b, off + 8, m.allocated);
            put_u64(b, off + 16, m.cursor);
        }
        for (i, r) in self.roots.iter().enumerate() {
            let o = OFF_ROOTS + 16 * i;
            if let Some(t) = r {
                put_u64(b, o, t.root());
                b[o + 8..o + 10].copy_from_slice(&(t.value_size() as u16).to_le_bytes());
                b[o + 10] = t.kind() as u8;
                b[o + 11] = 1;
            }
        }
        b[OFF_CLIENT..OFF_CLIENT + CLIENT_BYTES].copy_from_slice(&self.client);
        crate::block::seal(b);
    }

    /// Decodes slot `slot` after its block header has been verified.
    pub fn decode(b: &[u8]) -> Result<Superblock> {
        let version = get_u32(b, 32);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        if get_u32(b, 36) != BLOCK_SIZE as u32 {
            return Err(Error::corrupt(
                0,
                "superblock records another metadata block size",
            ));
        }
        let incompat = get_u64(b, 48) | get_u64(b, 56);
        let unknown = incompat & !IncompatFeatures::all().bits();
        if unknown != 0 {
            return Err(Error::IncompatibleFeatures(unknown));
        }
        let geo = Geometry {
            device_block_size: get_u32(b, 64),
            extent_size: get_u32(b, 68),
            device_pages: get_u64(b, 72),
            meta_start: get_u64(b, 80),
            meta_blocks: get_u64(b, 88),
            data_start: get_u64(b, 96),
            data_extents: get_u64(b, 104),
        };
        let mut array_id = [0u8; 16];
        array_id.copy_from_slice(&b[112..128]);
        let map = |off| MapRoot {
            root: get_u64(b, off),
            allocated: get_u64(b, off + 8),
            cursor: get_u64(b, off + 16),
        };
        let mut roots = [None; ROOT_SLOTS];
        for (i, r) in roots.iter_mut().enumerate() {
            let o = OFF_ROOTS + 16 * i;
            match b[o + 11] {
                0 => {}
                1 => {
                    let vs = u16::from_le_bytes([b[o + 8], b[o + 9]]) as usize;
                    let kind = ValueKind::from_u8(b[o + 10]).ok_or(Error::corrupt(
                        0,
                        "superblock root slot has an unknown value kind",
                    ))?;
                    let t = Tree::from_parts(get_u64(b, o), vs, kind).map_err(|_| {
                        Error::corrupt(0, "superblock root slot has an invalid value shape")
                    })?;
                    *r = Some(t);
                }
                _ => return Err(Error::corrupt(0, "superblock root slot flag invalid")),
            }
        }
        let mut client = [0u8; CLIENT_BYTES];
        client.copy_from_slice(&b[OFF_CLIENT..OFF_CLIENT + CLIENT_BYTES]);
        Ok(Superblock {
            generation: crate::block::txid(b),
            geo,
            array_id,
            meta_map: map(128),
            data_map: map(152),
            roots,
            client,
        })
    }
}
