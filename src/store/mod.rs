//! Layers 2 to 4 below the B-tree: how metadata lives on the device.
//!
//! - [`page`]: the layout every 4 KiB metadata page shares (header, checksum, own
//!   address, transaction id) and the little-endian field helpers;
//! - [`page_store`]: [`PageStore`](page_store::PageStore), the metadata page cache over
//!   the device, bounded by a byte budget;
//! - [`space_map`]: persistent reference counts of metadata pages and data extents,
//!   and the data-log allocation cursor.
//!
//! The superblock slots and the geometry they record are the engine's
//! (`engine/superblock.rs`, `engine/slots.rs`).
//!
//! In this crate "page" always means a 4 KiB metadata page and "block" the device's
//! own block (of [`BlockDevice::block_size`](crate::BlockDevice::block_size) bytes).

pub(crate) mod page;
pub(crate) mod page_store;
pub(crate) mod space_map;
