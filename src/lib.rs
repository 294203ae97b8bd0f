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
//! The public API is the [`Array`] and its types, the [`BlockDevice`] trait with
//! [`MemDevice`] and `FileDevice` (feature `std`), the errors, the storage
//! [`engine`] underneath as a standalone API, and with feature `testing` the
//! `testing` module. Inside, the crate is built in layers, each using only those
//! below it (docs/DESIGN.md §3 explains each and why it exists):
//!
//! 1. `device` — the [`BlockDevice`] trait and the devices;
//! 2. `store::page`, `store::page_store` — checksummed 4 KiB metadata pages, read
//!    through a page cache bounded by a byte budget;
//! 3. `store::space_map` — persistent reference counts of metadata pages and data
//!    extents; data extents are handed out in log order;
//! 4. `btree` — the copy-on-write B+tree whose nodes are shared between trees by
//!    reference count: a clone costs one increment;
//! 5. [`engine`] — the superblock's two slots, atomic commits, and the audit that
//!    verifies every invariant;
//! 6. `array` — the [`Array`]: the LUN table, business copies (create attached or
//!    detached, attach, detach, delete, restore), full-size reservation, hosts and
//!    grants ([`HostView`]), the I/O path and [`Array::check`].
//!
//! The on-disk format, the commit protocol and what a crash at each step leaves
//! behind are described in docs/FORMAT.md.
//!
//! ## Example
//!
//! (The same example is in README.md.)
//!
//! ```
//! use lunsnap::{Array, FormatOptions, MemDevice};
//!
//! fn main() -> Result<(), lunsnap::Error> {
//!     // A sparse 256 MiB in-memory device (4 KiB blocks); any `BlockDevice` works.
//!     let dev = MemDevice::new(4096, 65_536)?;
//!     let mut array = Array::format(dev, &FormatOptions::default())?;
//!
//!     // LUN 1: 64 MiB, reserved in full, reading as zeros until written.
//!     array.create_lun(1, 64 << 20)?;
//!     array.write(1, 0, &[1u8; 4096])?;
//!
//!     // Business copy 11, created attached: LUN 1's image now (an O(1) clone of its
//!     // mapping; no data moves). It reserves 64 MiB too.
//!     array.create_copy(1, 11, true)?;
//!
//!     // The parent moves on; the copy stays frozen.
//!     array.write(1, 0, &[2u8; 4096])?;
//!     let mut buf = [0u8; 4096];
//!     array.read(11, 0, &mut buf)?;
//!     assert_eq!(buf, [1u8; 4096]);
//!     assert_eq!(array.lun_info(11)?.exclusive_bytes, 16 << 10); // one 16 KiB extent
//!
//!     // Copy to parent (`armcopy -r` in HP's Business Copy VA guide): LUN 1 reads
//!     // the copy's content again.
//!     array.restore(11)?;
//!     array.read(1, 0, &mut buf)?;
//!     assert_eq!(buf, [1u8; 4096]);
//!
//!     // Every invariant of the metadata holds.
//!     assert!(array.check()?.is_empty());
//!     Ok(())
//! }
//! ```
//!
//! The storage engine underneath can be used on its own: see [`engine::Engine`].
//!
//! With feature `testing`, the `testing` module ships what lunsnap is verified
//! with, for users' own tests: a reference model of the array, a power-loss simulator
//! and an error-injecting device.

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

/// README.md's code blocks are compiled and run as doctests too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod array;
mod btree;
mod device;
pub mod engine;
mod error;
mod fast_map;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use array::{
    Access, Array, ArrayViolation, DiffRange, FormatOptions, HostInfo, HostView, LunInfo, LunKind,
    LunStatus, MapRange, OpenOptions, PoolInfo, RepairOptions, RepairReport, Severity,
    DEFAULT_EXTENT_SIZE, DEFAULT_MAX_LUNS, MAX_HOSTS, MAX_HOST_NAME, MAX_LUNS_LIMIT,
    RECLAIM_PER_FLUSH, SECTOR,
};
pub use device::{BlockDevice, DeviceError, DeviceErrorKind, MemDevice};
#[cfg(feature = "std")]
pub use device::{FileDevice, FileDeviceError};
pub use engine::ReclaimStats;
pub use engine::{is_valid_extent_size, MAX_EXTENT_SIZE, MIN_EXTENT_SIZE};
pub use engine::{ScrubProblem, ScrubReport};
pub use error::{CloseError, Error, Result};
