#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
//! The C ABI of lunsnap: LUNs and instant business copies over a block device.
//!
//! Conventions (the model is rustls-ffi):
//! - every fallible function returns a [`lunsnap_result`]; its numbers are stable
//!   and never reused, and [`lunsnap_strerror`] gives each a static message;
//! - out-parameters come last and are written only on success;
//! - a NULL pointer, a bad length, an out-of-range number or an overflowing size is
//!   an error code, never undefined behaviour; `lunsnap_free(NULL)` does nothing;
//! - array handles are keys into a registry, checked on every call, so a freed
//!   handle gives `LUNSNAP_RESULT_INVALID_HANDLE`;
//! - every failure has a full message, kept per handle and per thread for
//!   `lunsnap_last_error_message` (module `fail`);
//! - the structs that may grow start with `size_t struct_size`, and the library
//!   reads and writes only the fields inside the caller's size (module `sized`);
//! - one handle may be used by several threads at once: calls on it are serialised
//!   by a lock inside (sleeping with `std`, spinning without);
//! - no panic crosses the boundary: with the `std` feature every export catches
//!   them (`LUNSNAP_RESULT_PANIC`); without it the library is built with
//!   `panic = "abort"`.

extern crate alloc;

// Shared by the exports.
mod args;
mod device;
mod fail;
mod guard;
mod handle;
mod lock;
mod result;
mod sized;
mod types;

// The exports, by domain. The header lists the functions in this order (cbindgen
// reads a module's items, then its modules in the order they are declared), so
// the modules stay apart: rustfmt would otherwise sort them.
mod lifecycle; // version, messages, options, format, open, reopen, close, free, flush

mod luns; // LUNs and copies, consistency groups, LUN and pool information, check, scrub

mod reclaim; // background freeing: the free queue worked off, what waits in it

mod io; // read, write, discard, zeroes, map, diff, as the array or for a host; zero detection

mod hosts; // hosts, grants, security, the LUNs a host may discover

mod repair; // offline repair of damaged metadata, and the ranges it lost

pub use device::lunsnap_device_callbacks;
pub use handle::lunsnap_array;
pub use result::lunsnap_result;
pub use types::{
    lunsnap_access, lunsnap_diff_range, lunsnap_format_options, lunsnap_host_grant,
    lunsnap_lost_range, lunsnap_lun_info, lunsnap_lun_kind, lunsnap_map_range,
    lunsnap_open_options, lunsnap_pool_info, lunsnap_reclaim_stats, lunsnap_repair_report,
    lunsnap_scrub_report, lunsnap_severity,
};

pub use hosts::*;
pub use io::*;
pub use lifecycle::*;
pub use luns::*;
pub use reclaim::*;
pub use repair::*;
