//! I/O on LUNs: reading, writing and discarding, either as the array itself (the
//! plain calls, which bypass host security) or on behalf of a host (the `*_as`
//! calls, through [`lunsnap::Array::as_host`]). Each pair of exports shares one
//! function, given the host as an `Option` (`None`: the array itself).

use crate::args::{run, run_on, slice_in, slice_out};
use crate::handle::with_array;
use crate::{lunsnap_array, lunsnap_result};

/// Reads `len` bytes of LUN `lun` at `offset` into `buf`, as the array itself
/// (`host` None) or as `host`.
///
/// # Safety
///
/// `buf`, when not NULL, must be valid for writing `len` bytes for the duration of
/// the call, and not accessed otherwise during it.
unsafe fn read(
    array: *mut lunsnap_array,
    host: Option<u64>,
    lun: u32,
    offset: u64,
    buf: *mut u8,
    len: usize,
) -> lunsnap_result {
    run(|| {
        // SAFETY: the caller passes `len` writable bytes at `buf`, not aliased
        // during the call.
        let b = unsafe { slice_out(buf, len)? };
        with_array(array, |a| match host {
            None => Ok(a.read(lun, offset, b)?),
            Some(h) => Ok(a.as_host(h).read(lun, offset, b)?),
        })
    })
}

/// Writes the `len` bytes at `buf` to LUN `lun` at `offset`, as the array itself
/// (`host` None) or as `host`.
///
/// # Safety
///
/// `buf`, when not NULL, must be valid for reading `len` bytes for the duration of
/// the call, and not written to during it.
unsafe fn write(
    array: *mut lunsnap_array,
    host: Option<u64>,
    lun: u32,
    offset: u64,
    buf: *const u8,
    len: usize,
) -> lunsnap_result {
    run(|| {
        // SAFETY: the caller passes `len` readable bytes at `buf`.
        let b = unsafe { slice_in(buf, len)? };
        with_array(array, |a| match host {
            None => Ok(a.write(lun, offset, b)?),
            Some(h) => Ok(a.as_host(h).write(lun, offset, b)?),
        })
    })
}

/// Unmaps `len` bytes of LUN `lun` from `offset`, as the array itself (`host` None)
/// or as `host`.
fn discard(
    array: *mut lunsnap_array,
    host: Option<u64>,
    lun: u32,
    offset: u64,
    len: u64,
) -> lunsnap_result {
    run_on(array, |a| match host {
        None => a.discard(lun, offset, len),
        Some(h) => a.as_host(h).discard(lun, offset, len),
    })
}

/// Reads `len` bytes of LUN `lun` at byte `offset` into `buf` (offset and length
/// multiples of 512). `buf` may be NULL only when `len` is 0.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (buffers for
/// their whole length) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_read(
    array: *mut lunsnap_array,
    lun: u32,
    offset: u64,
    buf: *mut u8,
    len: usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `read`'s.
    unsafe { read(array, None, lun, offset, buf, len) }
}

/// Writes `len` bytes from `buf` to LUN `lun` at byte `offset` (multiples of 512).
/// Durable at the next `lunsnap_flush` or management operation.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (buffers for
/// their whole length) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_write(
    array: *mut lunsnap_array,
    lun: u32,
    offset: u64,
    buf: *const u8,
    len: usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `write`'s.
    unsafe { write(array, None, lun, offset, buf, len) }
}

/// Unmaps `len` bytes of LUN `lun` from `offset` (they read as zeros) and commits.
#[no_mangle]
pub extern "C" fn lunsnap_discard(
    array: *mut lunsnap_array,
    lun: u32,
    offset: u64,
    len: u64,
) -> lunsnap_result {
    discard(array, None, lun, offset, len)
}

/// `lunsnap_read` on behalf of host `host`. With security enabled, a LUN the host
/// has no grant on gives `LUNSNAP_RESULT_NO_SUCH_LUN`, as a missing one does.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (buffers for
/// their whole length) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_read_as(
    array: *mut lunsnap_array,
    host: u64,
    lun: u32,
    offset: u64,
    buf: *mut u8,
    len: usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `read`'s.
    unsafe { read(array, Some(host), lun, offset, buf, len) }
}

/// `lunsnap_write` on behalf of host `host`. With security enabled, a LUN the host
/// has no grant on gives `LUNSNAP_RESULT_NO_SUCH_LUN`, and one it may only read
/// `LUNSNAP_RESULT_READ_ONLY_ACCESS`.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (buffers for
/// their whole length) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_write_as(
    array: *mut lunsnap_array,
    host: u64,
    lun: u32,
    offset: u64,
    buf: *const u8,
    len: usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `write`'s.
    unsafe { write(array, Some(host), lun, offset, buf, len) }
}

/// `lunsnap_discard` on behalf of host `host` (a write: refused as
/// `lunsnap_write_as` refuses).
#[no_mangle]
pub extern "C" fn lunsnap_discard_as(
    array: *mut lunsnap_array,
    host: u64,
    lun: u32,
    offset: u64,
    len: u64,
) -> lunsnap_result {
    discard(array, Some(host), lun, offset, len)
}
