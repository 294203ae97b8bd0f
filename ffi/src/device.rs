//! The devices a C host can put an array on: memory, a file (with `std`), or its
//! own storage through callbacks.

use core::ffi::c_void;

use lunsnap::{BlockDevice, DeviceError, DeviceErrorKind, MemDevice};

/// A host-supplied block device: callbacks over the host's own storage.
///
/// Every callback returns 0 on success and any other value on failure (the array
/// then reports `LUNSNAP_RESULT_DEVICE_IO` and stays consistent: a failed commit
/// leaves the handle refusing changes until it is reopened). `buf` always holds a
/// whole number of blocks (`len` bytes, `len / block_size` blocks from `lba`).
/// Power-loss contract: a write not followed by a successful `flush` may be lost or
/// torn at sector granularity; `flush` returns only once every earlier write is
/// durable. The callbacks may be called from any thread that uses the array, one
/// call at a time. A callback must not call a `lunsnap_` function on the same array
/// (the array is locked during the call: it would wait for ever).
///
/// `discard` tells the host that blocks hold nothing useful any more (TRIM, a hole
/// in an image file), so that it may forget them. It is called only right after a
/// commit is durable (after that commit's last successful `flush`, before any later
/// write), for the data extents the commit freed (a deleted LUN's, a detached
/// copy's, those unmapped by `lunsnap_discard`, `lunsnap_write_zeroes` or zero
/// detection, those replaced by copy-on-write), in runs of whole extents: `lba` is
/// the first block of an extent and `count` a multiple of the blocks per extent
/// (extent size / block size). No extent that a durable commit maps is ever
/// discarded, so the host may zero the blocks, or leave them unchanged. Its failure
/// is ignored (the commit has already succeeded).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct lunsnap_device_callbacks {
    /// Passed unchanged to every callback.
    pub ctx: *mut c_void,
    /// Block size in bytes: a power of two from 512 to 4096.
    pub block_size: u32,
    /// Number of blocks.
    pub block_count: u64,
    /// Reads `len` bytes from block `lba` on into `buf`.
    pub read:
        Option<unsafe extern "C" fn(ctx: *mut c_void, lba: u64, buf: *mut u8, len: usize) -> i32>,
    /// Writes `len` bytes from `buf` to block `lba` on.
    pub write:
        Option<unsafe extern "C" fn(ctx: *mut c_void, lba: u64, buf: *const u8, len: usize) -> i32>,
    /// Makes every earlier write durable.
    pub flush: Option<unsafe extern "C" fn(ctx: *mut c_void) -> i32>,
    /// Optional (may be NULL): the host may forget `count` blocks from `lba` on (see
    /// above for when it is called).
    pub discard: Option<unsafe extern "C" fn(ctx: *mut c_void, lba: u64, count: u64) -> i32>,
}

/// A callback device with its required callbacks checked present.
pub(crate) struct CallbackDevice {
    cb: lunsnap_device_callbacks,
    read: unsafe extern "C" fn(*mut c_void, u64, *mut u8, usize) -> i32,
    write: unsafe extern "C" fn(*mut c_void, u64, *const u8, usize) -> i32,
    flush: unsafe extern "C" fn(*mut c_void) -> i32,
}

// SAFETY: the header documents that the host's callbacks and `ctx` may be used from
// any thread that uses the array; the array serialises all calls (one at a time).
unsafe impl Send for CallbackDevice {}

impl CallbackDevice {
    /// None if a required callback is missing.
    pub(crate) fn new(cb: lunsnap_device_callbacks) -> Option<Self> {
        Some(CallbackDevice {
            read: cb.read?,
            write: cb.write?,
            flush: cb.flush?,
            cb,
        })
    }
}

fn status(rc: i32) -> Result<(), DeviceErrorKind> {
    if rc == 0 {
        Ok(())
    } else {
        Err(DeviceErrorKind::Io)
    }
}

impl BlockDevice for CallbackDevice {
    type Error = DeviceErrorKind;

    fn block_size(&self) -> u32 {
        self.cb.block_size
    }

    fn block_count(&self) -> u64 {
        self.cb.block_count
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceErrorKind> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of
        // the call; the host promised `read` is a valid callback for `ctx`.
        status(unsafe { (self.read)(self.cb.ctx, lba, buf.as_mut_ptr(), buf.len()) })
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceErrorKind> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of
        // the call; the host promised `write` is a valid callback for `ctx`.
        status(unsafe { (self.write)(self.cb.ctx, lba, buf.as_ptr(), buf.len()) })
    }

    fn flush(&mut self) -> Result<(), DeviceErrorKind> {
        // SAFETY: the host promised `flush` is a valid callback for `ctx`.
        status(unsafe { (self.flush)(self.cb.ctx) })
    }

    fn discard(&mut self, lba: u64, count: u64) -> Result<(), DeviceErrorKind> {
        match self.cb.discard {
            // SAFETY: the host promised `discard`, when set, is a valid callback.
            Some(d) => status(unsafe { d(self.cb.ctx, lba, count) }),
            None => Ok(()),
        }
    }
}

/// Any device an array handle can hold.
pub(crate) enum AnyDevice {
    Mem(MemDevice),
    #[cfg(feature = "std")]
    File(lunsnap::FileDevice),
    Callbacks(CallbackDevice),
}

impl BlockDevice for AnyDevice {
    type Error = DeviceErrorKind;

    fn block_size(&self) -> u32 {
        match self {
            AnyDevice::Mem(d) => d.block_size(),
            #[cfg(feature = "std")]
            AnyDevice::File(d) => d.block_size(),
            AnyDevice::Callbacks(d) => d.block_size(),
        }
    }

    fn block_count(&self) -> u64 {
        match self {
            AnyDevice::Mem(d) => d.block_count(),
            #[cfg(feature = "std")]
            AnyDevice::File(d) => d.block_count(),
            AnyDevice::Callbacks(d) => d.block_count(),
        }
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceErrorKind> {
        match self {
            AnyDevice::Mem(d) => d.read(lba, buf).map_err(|e| e.kind()),
            #[cfg(feature = "std")]
            AnyDevice::File(d) => d.read(lba, buf).map_err(|e| e.kind()),
            AnyDevice::Callbacks(d) => d.read(lba, buf),
        }
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceErrorKind> {
        match self {
            AnyDevice::Mem(d) => d.write(lba, buf).map_err(|e| e.kind()),
            #[cfg(feature = "std")]
            AnyDevice::File(d) => d.write(lba, buf).map_err(|e| e.kind()),
            AnyDevice::Callbacks(d) => d.write(lba, buf),
        }
    }

    fn flush(&mut self) -> Result<(), DeviceErrorKind> {
        match self {
            AnyDevice::Mem(d) => d.flush().map_err(|e| e.kind()),
            #[cfg(feature = "std")]
            AnyDevice::File(d) => d.flush().map_err(|e| e.kind()),
            AnyDevice::Callbacks(d) => d.flush(),
        }
    }

    fn discard(&mut self, lba: u64, count: u64) -> Result<(), DeviceErrorKind> {
        match self {
            AnyDevice::Mem(d) => d.discard(lba, count).map_err(|e| e.kind()),
            #[cfg(feature = "std")]
            AnyDevice::File(d) => d.discard(lba, count).map_err(|e| e.kind()),
            AnyDevice::Callbacks(d) => d.discard(lba, count),
        }
    }
}
