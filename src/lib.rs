#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! # lunsnap
//!
//! An embeddable snapshot engine: the logic of a virtual disk array — LUNs carved
//! from a pool on one block device, and point-in-time copies of LUNs that are made
//! instantly because they share metadata, not data, with their parent.
//!
//! The crate is `#![no_std]` (it needs `alloc`) and runs over any [`BlockDevice`].
//! It is built in layers, each using only those below it (see `DESIGN.md` §3):
//!
//! 1. [`device`] — the [`BlockDevice`] trait, [`MemDevice`], `FileDevice` (feature
//!    `std`) and, with feature `testing`, a power-cut simulator.
//! 2. [`block`] and [`cache`] — checksummed 4 KiB metadata blocks read through a
//!    cache bounded by a byte budget.
//! 3. [`space_map`] — persistent reference counts for metadata blocks and data
//!    extents; data extents are handed out in log order.
//! 4. [`btree`] — the copy-on-write B+tree whose nodes are shared between trees by
//!    reference count: a clone costs one increment.
//! 5. [`superblock`] and [`engine`] — atomic commits through two superblock slots;
//!    [`check`] verifies every invariant.
//!
//! The on-disk format, the commit protocol and what a crash at each step leaves
//! behind are described in `docs/FORMAT.md`.
//!
//! ## Example
//!
//! ```
//! use lunsnap::engine::{FormatOptions, OpenOptions};
//! use lunsnap::{Engine, MemDevice, ValueKind};
//!
//! # fn main() -> Result<(), lunsnap::Error> {
//! // A sparse 1 GiB in-memory device: untouched blocks cost no RAM.
//! let dev = MemDevice::new(4096, 1 << 18)?;
//! let mut engine = Engine::format(dev, &FormatOptions::default())?;
//!
//! // A tree of u64 keys to 8-byte values, kept in root slot 0.
//! let mut tree = engine.create_tree(8, ValueKind::Opaque)?;
//! for key in 0..10_000u64 {
//!     engine.insert(&mut tree, key, &(key * 2).to_le_bytes())?;
//! }
//!
//! // An O(1) snapshot: both trees now share every node.
//! let mut snap = engine.clone_tree(&tree)?;
//! engine.insert(&mut snap, 7, &0u64.to_le_bytes())?; // shadows one path only
//! engine.set_root(0, Some(tree))?;
//! engine.set_root(1, Some(snap))?;
//! engine.commit()?;
//!
//! // Reopen: the newest commit comes back, checksums verified on every read.
//! let dev = engine.into_device();
//! let mut engine = Engine::open(dev, &OpenOptions::default())?;
//! let (tree, snap) = (engine.root(0)?.unwrap(), engine.root(1)?.unwrap());
//! let mut v = [0u8; 8];
//! assert!(engine.lookup(&tree, 7, &mut v)?);
//! assert_eq!(u64::from_le_bytes(v), 14);
//! assert!(engine.lookup(&snap, 7, &mut v)?);
//! assert_eq!(u64::from_le_bytes(v), 0);
//! assert!(engine.audit().is_empty());
//! # Ok(())
//! # }
//! ```

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod array;
pub mod block;
pub mod btree;
pub mod cache;
pub mod check;
pub mod device;
pub mod engine;
pub mod error;
pub mod space_map;
pub mod superblock;

pub use array::{
    Array, ArrayViolation, FormatOptions, LunInfo, LunKind, OpenOptions, PoolInfo, SECTOR,
};
pub use btree::node::ValueKind;
pub use btree::Tree;
pub use check::Violation;
#[cfg(feature = "std")]
pub use device::FileDevice;
pub use device::{BlockDevice, DeviceError, DeviceErrorKind, MemDevice};
pub use engine::{Engine, SpaceStats};
pub use error::{Error, Result};
