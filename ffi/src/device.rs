//! The devices a C host can put an array on: memory, a file (with `std`), or its
//! own storage through callbacks. Every device failure leaves a detail (which
//! operation, where, and what the device said: a callback's errno, the file's I/O
//! error) that the failed call's message carries.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::ffi::c_void;
use core::mem::size_of;

use lunsnap::{BlockDevice, DeviceError, DeviceErrorKind, MemDevice};

use crate::fail::Fail;
use crate::lock::Lock;
use crate::sized::sized_struct;

/// A host-supplied block device: callbacks over the host's own storage. Set
/// `struct_size` to `sizeof(lunsnap_device_callbacks)` (a field this struct lacks,
/// in a program built against an older header, is taken as NULL or 0).
///
/// Every callback returns 0 on success and any other value on failure (the array
/// then reports `LUNSNAP_RESULT_DEVICE_IO` and stays consistent: a failed commit
/// leaves the handle refusing changes until it is reopened). Return a negative
/// errno (`-EIO`, `-ENOSPC`, ...) to say why: the failed call's message
/// (`lunsnap_last_error_message`) then names the callback, the blocks, the value
/// and, in the std build, the errno's text, e.g. "... (write of 8192 bytes at block
/// 40: the callback returned -28: No space left on device)"; any other non-zero
/// value is reported as is. `buf` always holds a whole number of blocks (`len`
/// bytes, `len / block_size` blocks from `lba`).
/// Power-loss contract: a write not followed by a successful `flush` may be lost or
/// torn at sector granularity; `flush` returns only once every earlier write is
/// durable. The callbacks may be called from any thread that uses the array, one
/// call at a time. A callback must not call a `lunsnap_` function on the same array
/// (the array is locked during the call: it would deadlock).
///
/// `discard` tells the host that blocks hold nothing useful any more (TRIM, a hole
/// in an image file), so that it may forget them. It is called only right after a
/// commit is durable (after that commit's last successful `flush`, before any later
/// write), for the data extents the commit freed (those of deleted LUNs, detached
/// copies and the images that attach and restore replace, by the commit that
/// takes them off the free queue: see `lunsnap_reclaim`; those unmapped by
/// `lunsnap_discard`, `lunsnap_write_zeroes` or zero detection, those replaced by
/// copy-on-write), in runs of whole extents: `lba` is the first block of an extent
/// and `count` a multiple of the blocks per extent (extent size / block size). No
/// extent that a durable commit maps is ever discarded, so the host may zero the
/// blocks, or leave them unchanged. Its failure is ignored (the commit has already
/// succeeded).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct lunsnap_device_callbacks {
    /// `sizeof(lunsnap_device_callbacks)` as the caller's program knows it.
    pub struct_size: usize,
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

sized_struct!(input lunsnap_device_callbacks {
    ctx,
    block_size,
    block_count,
    read,
    write,
    flush,
    discard
});

impl lunsnap_device_callbacks {
    /// Nothing set: what a field the caller's struct lacks reads as.
    pub(crate) fn empty() -> Self {
        lunsnap_device_callbacks {
            struct_size: size_of::<Self>(),
            ctx: core::ptr::null_mut(),
            block_size: 0,
            block_count: 0,
            read: None,
            write: None,
            flush: None,
            discard: None,
        }
    }
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
    /// The device, or the name of the first required callback that is missing.
    pub(crate) fn new(cb: lunsnap_device_callbacks) -> Result<Self, Fail> {
        let missing = |what: &'static str| Fail::null(what);
        Ok(CallbackDevice {
            read: cb.read.ok_or_else(|| missing("dev->read"))?,
            write: cb.write.ok_or_else(|| missing("dev->write"))?,
            flush: cb.flush.ok_or_else(|| missing("dev->flush"))?,
            cb,
        })
    }
}

/// What a callback's non-zero return value says.
fn callback_says(rc: i32) -> String {
    if (-4095..0).contains(&rc) {
        #[cfg(feature = "std")]
        {
            let text = std::io::Error::from_raw_os_error(-rc).to_string();
            let suffix = format!(" (os error {})", -rc);
            let text = text.strip_suffix(suffix.as_str()).unwrap_or(&text);
            format!("the callback returned {rc}: {text}")
        }
        #[cfg(not(feature = "std"))]
        {
            format!("the callback returned {rc} (errno {})", -rc)
        }
    } else {
        format!("the callback returned {rc}")
    }
}

/// A callback's status: 0 is success, anything else an I/O error with its text.
fn status(rc: i32) -> Result<(), (DeviceErrorKind, String)> {
    if rc == 0 {
        Ok(())
    } else {
        Err((DeviceErrorKind::Io, callback_says(rc)))
    }
}

impl CallbackDevice {
    fn block_size(&self) -> u32 {
        self.cb.block_size
    }

    fn block_count(&self) -> u64 {
        self.cb.block_count
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), (DeviceErrorKind, String)> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of
        // the call; the host promised `read` is a valid callback for `ctx`.
        status(unsafe { (self.read)(self.cb.ctx, lba, buf.as_mut_ptr(), buf.len()) })
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), (DeviceErrorKind, String)> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of
        // the call; the host promised `write` is a valid callback for `ctx`.
        status(unsafe { (self.write)(self.cb.ctx, lba, buf.as_ptr(), buf.len()) })
    }

    fn flush(&mut self) -> Result<(), (DeviceErrorKind, String)> {
        // SAFETY: the host promised `flush` is a valid callback for `ctx`.
        status(unsafe { (self.flush)(self.cb.ctx) })
    }

    fn discard(&mut self, lba: u64, count: u64) -> Result<(), (DeviceErrorKind, String)> {
        match self.cb.discard {
            // SAFETY: the host promised `discard`, when set, is a valid callback.
            Some(d) => status(unsafe { d(self.cb.ctx, lba, count) }),
            None => Ok(()),
        }
    }
}

/// The last device failure's detail, shared by a device and whoever reports its
/// errors (the handle, or a format or open that consumed the device).
pub(crate) type Detail = Arc<Lock<Option<String>>>;

/// The devices an array handle can hold.
pub(crate) enum Inner {
    Mem(MemDevice),
    #[cfg(feature = "std")]
    File(lunsnap::FileDevice),
    Callbacks(CallbackDevice),
}

/// Any device an array handle can hold, with the detail of its last failure.
pub(crate) struct AnyDevice {
    inner: Inner,
    detail: Detail,
}

/// The result of one operation of an inner device, its failure with a text.
type Op = Result<(), (DeviceErrorKind, String)>;

/// An inner device's error as a kind and a text (the file device's I/O error).
fn plain<E: DeviceError + ErrorText>(e: E) -> (DeviceErrorKind, String) {
    (e.kind(), e.text())
}

/// What a device's error says, for the failed call's message.
trait ErrorText {
    fn text(&self) -> String;
}

impl ErrorText for DeviceErrorKind {
    fn text(&self) -> String {
        format!("{self}")
    }
}

#[cfg(feature = "std")]
impl ErrorText for lunsnap::FileDeviceError {
    fn text(&self) -> String {
        format!("the file device: {self}")
    }
}

impl AnyDevice {
    fn new(inner: Inner) -> Self {
        AnyDevice {
            inner,
            detail: Arc::new(Lock::new(None)),
        }
    }

    /// A memory device.
    pub(crate) fn mem(d: MemDevice) -> Self {
        AnyDevice::new(Inner::Mem(d))
    }

    /// A file device.
    #[cfg(feature = "std")]
    pub(crate) fn file(d: lunsnap::FileDevice) -> Self {
        AnyDevice::new(Inner::File(d))
    }

    /// The host's callback device.
    pub(crate) fn callbacks(d: CallbackDevice) -> Self {
        AnyDevice::new(Inner::Callbacks(d))
    }

    /// Where this device leaves the detail of its last failure.
    pub(crate) fn detail(&self) -> Detail {
        Arc::clone(&self.detail)
    }

    /// Keeps the detail of a failed operation and returns its kind.
    fn note(&self, what: impl FnOnce() -> String, r: Op) -> Result<(), DeviceErrorKind> {
        r.map_err(|(kind, text)| {
            *self.detail.lock() = Some(format!("{}: {text}", what()));
            kind
        })
    }
}

/// Forgets the detail of an earlier failure (at the start of a call).
pub(crate) fn clear(detail: &Detail) {
    *detail.lock() = None;
}

/// `fail` with the device's detail appended, when the device failed and left one.
pub(crate) fn explain(fail: Fail, detail: &Detail) -> Fail {
    if !fail.is_device() {
        return fail;
    }
    match detail.lock().clone() {
        Some(d) => fail.with_detail(&d),
        None => fail,
    }
}

/// "read of 4096 bytes at block 12".
fn at(op: &str, len: usize, lba: u64) -> impl FnOnce() -> String + '_ {
    move || format!("{op} of {len} bytes at block {lba}")
}

impl BlockDevice for AnyDevice {
    type Error = DeviceErrorKind;

    fn block_size(&self) -> u32 {
        match &self.inner {
            Inner::Mem(d) => d.block_size(),
            #[cfg(feature = "std")]
            Inner::File(d) => d.block_size(),
            Inner::Callbacks(d) => d.block_size(),
        }
    }

    fn block_count(&self) -> u64 {
        match &self.inner {
            Inner::Mem(d) => d.block_count(),
            #[cfg(feature = "std")]
            Inner::File(d) => d.block_count(),
            Inner::Callbacks(d) => d.block_count(),
        }
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DeviceErrorKind> {
        let len = buf.len();
        let r = match &mut self.inner {
            Inner::Mem(d) => d.read(lba, buf).map_err(plain),
            #[cfg(feature = "std")]
            Inner::File(d) => d.read(lba, buf).map_err(plain),
            Inner::Callbacks(d) => d.read(lba, buf),
        };
        self.note(at("read", len, lba), r)
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DeviceErrorKind> {
        let r = match &mut self.inner {
            Inner::Mem(d) => d.write(lba, buf).map_err(plain),
            #[cfg(feature = "std")]
            Inner::File(d) => d.write(lba, buf).map_err(plain),
            Inner::Callbacks(d) => d.write(lba, buf),
        };
        self.note(at("write", buf.len(), lba), r)
    }

    fn flush(&mut self) -> Result<(), DeviceErrorKind> {
        let r = match &mut self.inner {
            Inner::Mem(d) => d.flush().map_err(plain),
            #[cfg(feature = "std")]
            Inner::File(d) => d.flush().map_err(plain),
            Inner::Callbacks(d) => d.flush(),
        };
        self.note(|| String::from("flush"), r)
    }

    fn discard(&mut self, lba: u64, count: u64) -> Result<(), DeviceErrorKind> {
        let r = match &mut self.inner {
            Inner::Mem(d) => d.discard(lba, count).map_err(plain),
            #[cfg(feature = "std")]
            Inner::File(d) => d.discard(lba, count).map_err(plain),
            Inner::Callbacks(d) => d.discard(lba, count),
        };
        self.note(|| format!("discard of {count} blocks at block {lba}"), r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_errnos_are_named() {
        let s = callback_says(-5);
        assert_eq!(s, "the callback returned -5: Input/output error");
        assert_eq!(callback_says(7), "the callback returned 7");
        assert_eq!(
            callback_says(i32::MIN),
            format!("the callback returned {}", i32::MIN)
        );
    }

    #[test]
    fn a_failure_leaves_its_detail_for_device_errors_only() {
        let mut d = AnyDevice::mem(MemDevice::new(512, 8).unwrap());
        let detail = d.detail();
        let mut buf = [0u8; 512];
        assert_eq!(d.read(8, &mut buf), Err(DeviceErrorKind::OutOfRange));
        let f = explain(Fail::from(lunsnap_result_device_out_of_range()), &detail);
        assert!(
            f.text.contains("(read of 512 bytes at block 8: "),
            "{}",
            f.text
        );
        let g = explain(Fail::from(crate::lunsnap_result::NoSuchLun), &detail);
        assert_eq!(g.text, "no such LUN");
        clear(&detail);
        let h = explain(Fail::from(lunsnap_result_device_out_of_range()), &detail);
        assert!(!h.text.contains("block 8"));
    }

    fn lunsnap_result_device_out_of_range() -> crate::lunsnap_result {
        crate::lunsnap_result::DeviceOutOfRange
    }
}
