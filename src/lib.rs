#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! lunsnap core (documentation filled in below).

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod block;
pub mod btree;
pub mod cache;
pub mod check;
pub mod device;
pub mod engine;
pub mod error;
pub mod space_map;
pub mod superblock;

pub use btree::node::ValueKind;
pub use btree::Tree;
#[cfg(feature = "std")]
pub use device::FileDevice;
pub use device::{BlockDevice, DeviceError, DeviceErrorKind, MemDevice};
pub use engine::{Engine, FormatOptions, OpenOptions, SpaceStats};
pub use error::{Error, Result};
