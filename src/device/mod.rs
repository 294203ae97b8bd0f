//! Layer 1: the block device the pool lives on.
//!
//! [`BlockDevice`] is deliberately tiny and synchronous, in the style of
//! `embedded-storage`: geometry known up front, whole-block reads and writes at a
//! logical block address (LBA), and [`BlockDevice::flush`] as the only durability
//! barrier. Every method documents what a power loss during it may leave behind;
//! the engine above relies on exactly those guarantees and no more.

#[cfg(feature = "std")]
mod file;
mod mem;

#[cfg(feature = "std")]
pub use file::{FileDevice, FileDeviceError};
pub(crate) use mem::is_zero;
pub use mem::MemDevice;

use core::fmt;

/// The size of one sector: the smallest unit a power cut is assumed never to tear.
pub const SECTOR_SIZE: usize = 512;

/// The class of a device error, so the engine can react without knowing the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceErrorKind {
    /// The medium or transport failed; retrying later may or may not help.
    Io,
    /// The request lay outside the device or was not a whole number of blocks.
    OutOfRange,
    /// The device has been removed, closed or disconnected.
    NotConnected,
    /// Any other failure.
    Other,
}

impl fmt::Display for DeviceErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceErrorKind::Io => "input/output error",
            DeviceErrorKind::OutOfRange => "request outside the device or not whole blocks",
            DeviceErrorKind::NotConnected => "device not connected",
            DeviceErrorKind::Other => "device error",
        })
    }
}

/// An error returned by a [`BlockDevice`]: anything that can say what kind it is.
pub trait DeviceError: fmt::Debug {
    /// The class of this error.
    fn kind(&self) -> DeviceErrorKind;
}

impl DeviceError for DeviceErrorKind {
    fn kind(&self) -> DeviceErrorKind {
        *self
    }
}

/// A block device: the only thing lunsnap needs from its host.
///
/// Geometry is fixed for the life of the value: [`block_size`](Self::block_size) is a
/// power of two of at least 512 bytes and [`block_count`](Self::block_count) never
/// changes. Buffers passed to [`read`](Self::read) and [`write`](Self::write) are a
/// whole number of blocks long; a request that is not, or that runs past the end,
/// must fail with [`DeviceErrorKind::OutOfRange`] and transfer nothing.
///
/// # Power-loss model
/// A write that has returned but has not been followed by a successful
/// [`flush`](Self::flush) is *volatile*: a power cut may lose it, keep it, or tear it,
/// each 512-byte sector independently holding its old or its new content. A flush
/// makes every write that returned before it durable. Reads always return the most
/// recent write, durable or not. Nothing else is assumed: writes to different blocks
/// may reach the medium in any order.
pub trait BlockDevice {
    /// The device's error type.
    type Error: DeviceError;

    /// Size of one block in bytes: a power of two, at least 512.
    fn block_size(&self) -> u32;

    /// Number of blocks on the device.
    fn block_count(&self) -> u64;

    /// Reads `buf.len() / block_size` consecutive blocks starting at `lba` into `buf`.
    ///
    /// Power loss during a read changes nothing on the device.
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// Writes `buf` to consecutive blocks starting at `lba`.
    ///
    /// The new content is volatile until the next successful [`flush`](Self::flush):
    /// after a power cut each sector of it may hold its old or its new content.
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error>;

    /// Makes every write that returned before this call durable.
    ///
    /// If it fails, the durability of earlier unflushed writes is unknown. A power cut
    /// during a flush leaves each unflushed write either durable or as described for
    /// [`write`](Self::write).
    fn flush(&mut self) -> Result<(), Self::Error>;

    /// Tells the device that `count` blocks from `lba` no longer hold useful data.
    ///
    /// A hint (TRIM / UNMAP): afterwards those blocks read as their old content or as
    /// zeros. The default does nothing.
    fn discard(&mut self, lba: u64, count: u64) -> Result<(), Self::Error> {
        let _ = (lba, count);
        Ok(())
    }
}

impl<T: BlockDevice + ?Sized> BlockDevice for &mut T {
    type Error = T::Error;

    fn block_size(&self) -> u32 {
        (**self).block_size()
    }
    fn block_count(&self) -> u64 {
        (**self).block_count()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        (**self).write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        (**self).flush()
    }
    fn discard(&mut self, lba: u64, count: u64) -> Result<(), Self::Error> {
        (**self).discard(lba, count)
    }
}

/// Checks a request against a device geometry: `len` bytes at `lba` must be whole
/// blocks inside `block_count` blocks. Shared by the devices in this module.
pub(crate) fn check_request(block_size: u32, block_count: u64, lba: u64, len: usize) -> bool {
    let bs = block_size as u64;
    let len = len as u64;
    if bs == 0 || len % bs != 0 {
        return false;
    }
    match lba.checked_add(len / bs) {
        Some(end) => end <= block_count,
        None => false,
    }
}
