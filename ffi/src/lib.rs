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
//! - one handle may be used by several threads at once: calls on it are serialised
//!   by a lock inside;
//! - no panic crosses the boundary: with the `std` feature every export catches
//!   them (`LUNSNAP_RESULT_PANIC`); without it the library is built with
//!   `panic = "abort"`.

extern crate alloc;

mod device;
mod guard;
mod handle;
mod result;
mod types;

use alloc::format;
use alloc::vec::Vec;
use core::ffi::c_char;

use lunsnap::{Array, FormatOptions, MemDevice, OpenOptions};

pub use device::lunsnap_device_callbacks;
use device::{AnyDevice, CallbackDevice};
pub use handle::lunsnap_array;
use handle::{register, unregister, with_array, with_open, State};
pub use result::lunsnap_result;
pub use types::{
    lunsnap_access, lunsnap_format_options, lunsnap_lun_info, lunsnap_lun_kind,
    lunsnap_open_options, lunsnap_pool_info,
};

/// Major version of this library (matches Cargo.toml).
pub const LUNSNAP_VERSION_MAJOR: u32 = 0;
/// Minor version of this library (matches Cargo.toml).
pub const LUNSNAP_VERSION_MINOR: u32 = 1;
/// Patch version of this library (matches Cargo.toml).
pub const LUNSNAP_VERSION_PATCH: u32 = 0;

type R = Result<(), lunsnap_result>;

/// Runs an export's body: a panic becomes `LUNSNAP_RESULT_PANIC`.
fn run(f: impl FnOnce() -> R) -> lunsnap_result {
    match guard::catch(f) {
        Some(Ok(())) => lunsnap_result::Ok,
        Some(Err(e)) => e,
        None => lunsnap_result::Panic,
    }
}

/// Writes `v` to the out-parameter `out`.
fn put<T>(out: *mut T, v: T) -> R {
    if out.is_null() {
        return Err(lunsnap_result::NullPointer);
    }
    // SAFETY: the caller passes a pointer to writable memory for a `T` (checked
    // non-null above); `write` does not read or drop the old value.
    unsafe { out.write(v) };
    Ok(())
}

/// Checks the pointers of a list out-parameter pair (`items` may be NULL only when
/// `capacity` is 0; `out_count` never).
fn list_args<T>(items: *mut T, capacity: usize, out_count: *mut usize) -> R {
    if out_count.is_null() || (items.is_null() && capacity > 0) {
        return Err(lunsnap_result::NullPointer);
    }
    Ok(())
}

/// Copies the first `min(capacity, list.len())` items of `list` to `items` and
/// stores `list.len()` in `out_count` (pointers checked by [`list_args`]).
///
/// # Safety
///
/// `items` must be valid for writing `capacity` items when `capacity` > 0.
unsafe fn put_list<T: Copy>(
    list: &[T],
    items: *mut T,
    capacity: usize,
    out_count: *mut usize,
) -> R {
    list_args(items, capacity, out_count)?;
    let n = list.len().min(capacity);
    if n > 0 {
        // SAFETY: non-null; the caller passes room for `capacity` >= `n` items.
        let dst = unsafe { core::slice::from_raw_parts_mut(items, n) };
        dst.copy_from_slice(&list[..n]);
    }
    put(out_count, list.len())
}

/// Checks the pointers of a text out-parameter (`buf` may be NULL only when
/// `buf_len` is 0; `out_len` never).
fn text_args(buf: *mut c_char, buf_len: usize, out_len: *mut usize) -> R {
    if out_len.is_null() || (buf.is_null() && buf_len > 0) {
        return Err(lunsnap_result::NullPointer);
    }
    Ok(())
}

/// Copies `text` (no NUL inside) into `buf`, truncated to `buf_len - 1` bytes and
/// NUL-terminated (nothing is written when `buf_len` is 0), and stores its full
/// length in `out_len` (pointers checked by [`text_args`]).
///
/// # Safety
///
/// `buf` must be valid for writing `buf_len` bytes when `buf_len` > 0.
unsafe fn put_text(text: &[u8], buf: *mut c_char, buf_len: usize, out_len: *mut usize) -> R {
    text_args(buf, buf_len, out_len)?;
    if buf_len > 0 {
        let n = text.len().min(buf_len - 1);
        // SAFETY: non-null; the caller passes `buf_len` writable bytes at `buf`.
        let dst = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), buf_len) };
        dst[..n].copy_from_slice(&text[..n]);
        dst[n] = 0;
    }
    put(out_len, text.len())
}

/// The `count` numbers at `p` (which may be NULL only when `count` is 0).
///
/// # Safety
///
/// `p` must be valid for reading `count` numbers for the lifetime `'a` when
/// `count` > 0.
unsafe fn numbers_in<'a>(p: *const u32, count: usize) -> Result<&'a [u32], lunsnap_result> {
    if count == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(lunsnap_result::NullPointer);
    }
    if count > isize::MAX as usize / core::mem::size_of::<u32>() {
        return Err(lunsnap_result::InvalidArgument);
    }
    // SAFETY: non-null, the byte length fits in isize (checked above), and the
    // caller passes `count` readable numbers at `p`.
    Ok(unsafe { core::slice::from_raw_parts(p, count) })
}

fn format_opts(opts: *const lunsnap_format_options) -> Result<FormatOptions, lunsnap_result> {
    let o = if opts.is_null() {
        lunsnap_format_options_default()
    } else {
        // SAFETY: non-null; the caller passes a valid `lunsnap_format_options`.
        unsafe { *opts }
    };
    Ok(FormatOptions {
        extent_size: o.extent_size,
        max_luns: o.max_luns,
        cache_bytes: usize::try_from(o.cache_bytes).map_err(|_| lunsnap_result::InvalidOptions)?,
        array_id: o.array_id,
    })
}

fn open_opts(opts: *const lunsnap_open_options) -> Result<OpenOptions, lunsnap_result> {
    let o = if opts.is_null() {
        lunsnap_open_options_default()
    } else {
        // SAFETY: non-null; the caller passes a valid `lunsnap_open_options`.
        unsafe { *opts }
    };
    Ok(OpenOptions {
        cache_bytes: usize::try_from(o.cache_bytes).map_err(|_| lunsnap_result::InvalidOptions)?,
    })
}

fn callbacks(dev: *const lunsnap_device_callbacks) -> Result<CallbackDevice, lunsnap_result> {
    if dev.is_null() {
        return Err(lunsnap_result::NullPointer);
    }
    // SAFETY: non-null; the caller passes a valid `lunsnap_device_callbacks`.
    let cb = unsafe { *dev };
    CallbackDevice::new(cb).ok_or(lunsnap_result::NullPointer)
}

/// A device block size the array accepts (checked before any device is made or
/// touched, so that a refused call changes nothing).
fn check_block_size(bs: u32) -> R {
    if bs.is_power_of_two() && (512..=4096).contains(&bs) {
        Ok(())
    } else {
        Err(lunsnap_result::UnsupportedBlockSize)
    }
}

/// Formats `dev`, registers the array and stores its handle in `out`.
fn format_on(
    dev: AnyDevice,
    opts: *const lunsnap_format_options,
    out: *mut *mut lunsnap_array,
) -> R {
    if out.is_null() {
        return Err(lunsnap_result::NullPointer);
    }
    let opts = format_opts(opts)?;
    let a = Array::format(dev, &opts)?;
    put(out, register(a, opts.cache_bytes))
}

fn open_on(dev: AnyDevice, opts: *const lunsnap_open_options, out: *mut *mut lunsnap_array) -> R {
    if out.is_null() {
        return Err(lunsnap_result::NullPointer);
    }
    let opts = open_opts(opts)?;
    let a = Array::open(dev, &opts)?;
    put(out, register(a, opts.cache_bytes))
}

/// The library version, e.g. "0.1.0" (static, NUL-terminated).
#[no_mangle]
pub extern "C" fn lunsnap_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A static, NUL-terminated message for `code` (any value; unknown codes get a
/// message saying so).
#[no_mangle]
pub extern "C" fn lunsnap_strerror(code: u32) -> *const c_char {
    result::message(code).as_ptr().cast()
}

/// Default format options: 16 KiB extents, 1024 LUNs, 4 MiB cache, zero array id.
#[no_mangle]
pub extern "C" fn lunsnap_format_options_default() -> lunsnap_format_options {
    let d = FormatOptions::default();
    lunsnap_format_options {
        extent_size: d.extent_size,
        max_luns: d.max_luns,
        cache_bytes: d.cache_bytes as u64,
        array_id: d.array_id,
    }
}

/// Default open options: 4 MiB cache.
#[no_mangle]
pub extern "C" fn lunsnap_open_options_default() -> lunsnap_open_options {
    lunsnap_open_options {
        cache_bytes: OpenOptions::default().cache_bytes as u64,
    }
}

/// Formats an array on a new in-memory device of `block_count` blocks of
/// `block_size` bytes (sparse: untouched blocks cost no memory). `opts` may be NULL
/// for the defaults. On success `*out` is the new handle.
#[no_mangle]
pub extern "C" fn lunsnap_format_mem(
    block_size: u32,
    block_count: u64,
    opts: *const lunsnap_format_options,
    out: *mut *mut lunsnap_array,
) -> lunsnap_result {
    run(|| {
        check_block_size(block_size)?;
        let dev = MemDevice::new(block_size, block_count).map_err(|_| {
            if block_count == 0 {
                lunsnap_result::DeviceTooSmall
            } else {
                // block_size * block_count overflows u64.
                lunsnap_result::InvalidArgument
            }
        })?;
        format_on(AnyDevice::Mem(dev), opts, out)
    })
}

/// Formats an array on the host's device `dev` (copied; its callbacks must stay
/// valid until the handle is freed). `opts` may be NULL.
#[no_mangle]
pub extern "C" fn lunsnap_format_callbacks(
    dev: *const lunsnap_device_callbacks,
    opts: *const lunsnap_format_options,
    out: *mut *mut lunsnap_array,
) -> lunsnap_result {
    run(|| format_on(AnyDevice::Callbacks(callbacks(dev)?), opts, out))
}

/// Opens the array on the host's device `dev` at its newest commit.
#[no_mangle]
pub extern "C" fn lunsnap_open_callbacks(
    dev: *const lunsnap_device_callbacks,
    opts: *const lunsnap_open_options,
    out: *mut *mut lunsnap_array,
) -> lunsnap_result {
    run(|| open_on(AnyDevice::Callbacks(callbacks(dev)?), opts, out))
}

#[cfg(feature = "std")]
fn path_arg<'a>(path: *const c_char) -> Result<&'a str, lunsnap_result> {
    if path.is_null() {
        return Err(lunsnap_result::NullPointer);
    }
    // SAFETY: non-null; the caller passes a NUL-terminated string that outlives the call
    // (the returned reference is used only during it).
    let s = unsafe { core::ffi::CStr::from_ptr(path) };
    s.to_str().map_err(|_| lunsnap_result::InvalidPath)
}

/// Creates (or truncates) the file at `path` as a sparse device of `block_count`
/// blocks of `block_size` bytes and formats an array on it.
#[cfg(feature = "std")]
#[no_mangle]
pub extern "C" fn lunsnap_format_file(
    path: *const c_char,
    block_size: u32,
    block_count: u64,
    opts: *const lunsnap_format_options,
    out: *mut *mut lunsnap_array,
) -> lunsnap_result {
    run(|| {
        let p = path_arg(path)?;
        if out.is_null() {
            return Err(lunsnap_result::NullPointer);
        }
        check_block_size(block_size)?;
        let opts = format_opts(opts)?;
        opts.validate()?;
        let dev = lunsnap::FileDevice::create(p, block_size, block_count)
            .map_err(|_| lunsnap_result::InvalidPath)?;
        let a = Array::format(AnyDevice::File(dev), &opts)?;
        put(out, register(a, opts.cache_bytes))
    })
}

/// Opens the array in the file at `path` (device blocks of `block_size` bytes).
#[cfg(feature = "std")]
#[no_mangle]
pub extern "C" fn lunsnap_open_file(
    path: *const c_char,
    block_size: u32,
    opts: *const lunsnap_open_options,
    out: *mut *mut lunsnap_array,
) -> lunsnap_result {
    run(|| {
        let p = path_arg(path)?;
        check_block_size(block_size)?;
        let dev =
            lunsnap::FileDevice::open(p, block_size).map_err(|_| lunsnap_result::InvalidPath)?;
        open_on(AnyDevice::File(dev), opts, out)
    })
}

/// Closes the array *without* committing and opens it again on the same device, as
/// after a power cut: what was committed comes back, with the cache budget the handle
/// was opened with. The handle stays the same; if the reopen fails, every later call
/// on it returns `LUNSNAP_RESULT_UNUSABLE` (free it and open the device again).
#[no_mangle]
pub extern "C" fn lunsnap_reopen(array: *mut lunsnap_array) -> lunsnap_result {
    run(|| {
        let h = handle::lookup(array)?;
        let mut st = h.state.lock();
        let o = match core::mem::replace(&mut *st, State::Broken(lunsnap_result::Unusable)) {
            State::Open(o) => o,
            State::Broken(why) => {
                *st = State::Broken(why);
                return Err(why);
            }
        };
        let cache_bytes = o.cache_bytes;
        let dev = o.array.into_device();
        let a = Array::open(dev, &OpenOptions { cache_bytes })?;
        *st = State::Open(alloc::boxed::Box::new(handle::Open {
            array: a,
            report: Vec::new(),
            cache_bytes,
        }));
        Ok(())
    })
}

/// Commits and frees the array. The handle is freed even when the commit fails
/// (the result then says why; the device keeps the previous commit).
#[no_mangle]
pub extern "C" fn lunsnap_close(array: *mut lunsnap_array) -> lunsnap_result {
    run(|| {
        let h = unregister(array).ok_or(if array.is_null() {
            lunsnap_result::NullPointer
        } else {
            lunsnap_result::InvalidHandle
        })?;
        let mut st = h.state.lock();
        match core::mem::replace(&mut *st, State::Broken(lunsnap_result::InvalidHandle)) {
            State::Open(o) => o.array.close().map(drop).map_err(Into::into),
            State::Broken(why) => Err(why),
        }
    })
}

/// Frees the array without committing (uncommitted writes are lost, as at a power
/// cut). NULL, and a handle already freed, are ignored.
#[no_mangle]
pub extern "C" fn lunsnap_free(array: *mut lunsnap_array) {
    let _ = guard::catch(|| drop(unregister(array)));
}

/// Creates LUN `lun` of `size` bytes (reads as zeros; reserves `size`).
#[no_mangle]
pub extern "C" fn lunsnap_create_lun(
    array: *mut lunsnap_array,
    lun: u32,
    size: u64,
) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.create_lun(lun, size)?)))
}

/// Creates copy `lun` of `parent`: attached (non-zero) = the parent's image now,
/// reserving its size; detached (0) = the relationship only.
#[no_mangle]
pub extern "C" fn lunsnap_create_copy(
    array: *mut lunsnap_array,
    parent: u32,
    lun: u32,
    attached: bool,
) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.create_copy(parent, lun, attached)?)))
}

/// Makes (or refreshes) copy `lun` as its parent's image now.
#[no_mangle]
pub extern "C" fn lunsnap_attach(array: *mut lunsnap_array, lun: u32) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.attach(lun)?)))
}

/// Discards copy `lun`'s data and reservation; the number stays a detached copy.
#[no_mangle]
pub extern "C" fn lunsnap_detach(array: *mut lunsnap_array, lun: u32) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.detach(lun)?)))
}

/// Deletes LUN `lun`. A LUN with copies is refused unless `orphan_copies`.
#[no_mangle]
pub extern "C" fn lunsnap_delete(
    array: *mut lunsnap_array,
    lun: u32,
    orphan_copies: bool,
) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.delete(lun, orphan_copies)?)))
}

/// Makes the parent of copy `lun` read the copy's current contents.
#[no_mangle]
pub extern "C" fn lunsnap_restore(array: *mut lunsnap_array, lun: u32) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.restore(lun)?)))
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
    run(|| {
        if buf.is_null() && len > 0 {
            return Err(lunsnap_result::NullPointer);
        }
        with_array(array, |a| {
            let b: &mut [u8] = if len == 0 {
                &mut []
            } else {
                // SAFETY: non-null; the caller passes `len` writable bytes at `buf`,
                // not aliased during the call.
                unsafe { core::slice::from_raw_parts_mut(buf, len) }
            };
            Ok(a.read(lun, offset, b)?)
        })
    })
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
    run(|| {
        if buf.is_null() && len > 0 {
            return Err(lunsnap_result::NullPointer);
        }
        with_array(array, |a| {
            let b: &[u8] = if len == 0 {
                &[]
            } else {
                // SAFETY: non-null; the caller passes `len` readable bytes at `buf`.
                unsafe { core::slice::from_raw_parts(buf, len) }
            };
            Ok(a.write(lun, offset, b)?)
        })
    })
}

/// Unmaps `len` bytes of LUN `lun` from `offset` (they read as zeros) and commits.
#[no_mangle]
pub extern "C" fn lunsnap_discard(
    array: *mut lunsnap_array,
    lun: u32,
    offset: u64,
    len: u64,
) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.discard(lun, offset, len)?)))
}

/// Makes every write so far durable.
#[no_mangle]
pub extern "C" fn lunsnap_flush(array: *mut lunsnap_array) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.flush()?)))
}

/// Information about LUN `lun` (exclusive and shared bytes are computed by walking
/// its mapping).
#[no_mangle]
pub extern "C" fn lunsnap_get_lun_info(
    array: *mut lunsnap_array,
    lun: u32,
    out: *mut lunsnap_lun_info,
) -> lunsnap_result {
    run(|| {
        if out.is_null() {
            return Err(lunsnap_result::NullPointer);
        }
        let i = with_array(array, |a| Ok(a.lun_info(lun)?))?;
        put(out, i.into())
    })
}

/// Pool accounting.
#[no_mangle]
pub extern "C" fn lunsnap_get_pool_info(
    array: *mut lunsnap_array,
    out: *mut lunsnap_pool_info,
) -> lunsnap_result {
    run(|| {
        if out.is_null() {
            return Err(lunsnap_result::NullPointer);
        }
        let p = with_array(array, |a| Ok(a.pool_info()))?;
        put(out, p.into())
    })
}

/// The LUN numbers in use, in order: `*out_count` receives how many there are, and
/// the first `min(capacity, count)` go to `numbers` (which may be NULL when
/// `capacity` is 0, to ask for the count).
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (buffers for
/// their whole length) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_luns(
    array: *mut lunsnap_array,
    numbers: *mut u32,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    run(|| {
        list_args(numbers, capacity, out_count)?;
        let ns = with_array(array, |a| Ok(a.lun_numbers()))?;
        // SAFETY: the caller passes room for `capacity` numbers at `numbers`.
        unsafe { put_list(&ns, numbers, capacity, out_count) }
    })
}

/// Verifies every invariant of the metadata. `*out_violations` receives the number
/// of violations found (0: consistent); `lunsnap_check_message` gives each one.
#[no_mangle]
pub extern "C" fn lunsnap_check(
    array: *mut lunsnap_array,
    out_violations: *mut usize,
) -> lunsnap_result {
    run(|| {
        if out_violations.is_null() {
            return Err(lunsnap_result::NullPointer);
        }
        let n = with_open(array, |o| {
            let v = o.array.check()?;
            o.report = v
                .iter()
                .map(|x| {
                    let mut m = format!("{x}").into_bytes();
                    m.retain(|&b| b != 0);
                    m.push(0);
                    m
                })
                .collect();
            Ok(o.report.len())
        })?;
        put(out_violations, n)
    })
}

/// Copies message `index` of the last `lunsnap_check` on this handle into `buf`
/// (NUL-terminated, truncated to `buf_len` bytes); `*out_len` receives the full
/// length without the NUL.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (buffers for
/// their whole length) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_check_message(
    array: *mut lunsnap_array,
    index: usize,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> lunsnap_result {
    run(|| {
        text_args(buf, buf_len, out_len)?;
        let msg = with_open(array, |o| {
            o.report
                .get(index)
                .cloned()
                .ok_or(lunsnap_result::InvalidArgument)
        })?;
        // SAFETY: the caller passes `buf_len` writable bytes at `buf`.
        unsafe { put_text(&msg[..msg.len() - 1], buf, buf_len, out_len) }
    })
}

/// Registers host `host` (a 64-bit, WWN-like id) with the label `name` (UTF-8, at
/// most 56 bytes; NULL is the empty label). Committed before it returns.
///
/// Errors: `LUNSNAP_RESULT_HOST_EXISTS`; `LUNSNAP_RESULT_INVALID_ARGUMENT` for a
/// name that is not UTF-8 or is longer than 56 bytes.
///
/// # Safety
///
/// `name`, when not NULL, must point to a NUL-terminated string valid for the
/// duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_add_host(
    array: *mut lunsnap_array,
    host: u64,
    name: *const c_char,
) -> lunsnap_result {
    run(|| {
        let name = if name.is_null() {
            ""
        } else {
            // SAFETY: non-null; the caller passes a NUL-terminated string that
            // outlives the call (the reference is used only during it).
            let s = unsafe { core::ffi::CStr::from_ptr(name) };
            s.to_str().map_err(|_| lunsnap_result::InvalidArgument)?
        };
        with_array(array, |a| Ok(a.add_host(host, name)?))
    })
}

/// Unregisters host `host` and removes its grants.
///
/// Errors: `LUNSNAP_RESULT_NO_SUCH_HOST`.
#[no_mangle]
pub extern "C" fn lunsnap_remove_host(array: *mut lunsnap_array, host: u64) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.remove_host(host)?)))
}

/// The registered host ids, in increasing order: `*out_count` receives how many
/// there are, and the first `min(capacity, count)` go to `ids` (which may be NULL
/// when `capacity` is 0, to ask for the count).
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (buffers for
/// their whole length) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_hosts(
    array: *mut lunsnap_array,
    ids: *mut u64,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    run(|| {
        list_args(ids, capacity, out_count)?;
        let hs: Vec<u64> = with_array(array, |a| Ok(a.hosts().iter().map(|h| h.id).collect()))?;
        // SAFETY: the caller passes room for `capacity` ids at `ids`.
        unsafe { put_list(&hs, ids, capacity, out_count) }
    })
}

/// Copies the label of host `host` into `buf` (NUL-terminated, truncated to
/// `buf_len` bytes; `buf` may be NULL when `buf_len` is 0); `*out_len` receives the
/// full length without the NUL.
///
/// Errors: `LUNSNAP_RESULT_NO_SUCH_HOST`.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (buffers for
/// their whole length) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_host_name(
    array: *mut lunsnap_array,
    host: u64,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> lunsnap_result {
    run(|| {
        text_args(buf, buf_len, out_len)?;
        let name = with_array(array, |a| {
            a.hosts()
                .into_iter()
                .find(|h| h.id == host)
                .map(|h| h.name)
                .ok_or(lunsnap_result::NoSuchHost)
        })?;
        // SAFETY: the caller passes `buf_len` writable bytes at `buf`.
        unsafe { put_text(name.as_bytes(), buf, buf_len, out_len) }
    })
}

/// Grants host `host` `access` (a `lunsnap_access` value) on LUN `lun`, replacing
/// an earlier grant. Committed before it returns.
///
/// Errors: `LUNSNAP_RESULT_INVALID_ARGUMENT` for an `access` that is not a
/// `lunsnap_access` value; `LUNSNAP_RESULT_NO_SUCH_LUN`,
/// `LUNSNAP_RESULT_LUN_OUT_OF_RANGE`, `LUNSNAP_RESULT_NO_SUCH_HOST`.
#[no_mangle]
pub extern "C" fn lunsnap_grant(
    array: *mut lunsnap_array,
    lun: u32,
    host: u64,
    access: u32,
) -> lunsnap_result {
    run(|| {
        let access = lunsnap_access::from_c(access).ok_or(lunsnap_result::InvalidArgument)?;
        with_array(array, |a| Ok(a.grant(lun, host, access)?))
    })
}

/// Removes the grant of host `host` on LUN `lun`.
///
/// Errors: `LUNSNAP_RESULT_NOT_GRANTED`, `LUNSNAP_RESULT_NO_SUCH_HOST`,
/// `LUNSNAP_RESULT_NO_SUCH_LUN`, `LUNSNAP_RESULT_LUN_OUT_OF_RANGE`.
#[no_mangle]
pub extern "C" fn lunsnap_revoke(array: *mut lunsnap_array, lun: u32, host: u64) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.revoke(lun, host)?)))
}

/// Turns host access control on (`enabled`) or off (every host sees every LUN).
/// Committed before it returns.
#[no_mangle]
pub extern "C" fn lunsnap_set_security(array: *mut lunsnap_array, enabled: bool) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.set_security(enabled)?)))
}

/// `*out` receives whether host access control is on.
#[no_mangle]
pub extern "C" fn lunsnap_security_enabled(
    array: *mut lunsnap_array,
    out: *mut bool,
) -> lunsnap_result {
    run(|| {
        if out.is_null() {
            return Err(lunsnap_result::NullPointer);
        }
        let on = with_array(array, |a| Ok(a.security_enabled()))?;
        put(out, on)
    })
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
    run(|| {
        if buf.is_null() && len > 0 {
            return Err(lunsnap_result::NullPointer);
        }
        with_array(array, |a| {
            let b: &mut [u8] = if len == 0 {
                &mut []
            } else {
                // SAFETY: non-null; the caller passes `len` writable bytes at `buf`,
                // not aliased during the call.
                unsafe { core::slice::from_raw_parts_mut(buf, len) }
            };
            Ok(a.as_host(host).read(lun, offset, b)?)
        })
    })
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
    run(|| {
        if buf.is_null() && len > 0 {
            return Err(lunsnap_result::NullPointer);
        }
        with_array(array, |a| {
            let b: &[u8] = if len == 0 {
                &[]
            } else {
                // SAFETY: non-null; the caller passes `len` readable bytes at `buf`.
                unsafe { core::slice::from_raw_parts(buf, len) }
            };
            Ok(a.as_host(host).write(lun, offset, b)?)
        })
    })
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
    run(|| with_array(array, |a| Ok(a.as_host(host).discard(lun, offset, len)?)))
}

/// The LUN numbers host `host` may discover, in order (every LUN with security
/// disabled; none for an unregistered host with it enabled). Same convention as
/// `lunsnap_luns`: `*out_count` receives how many there are, the first
/// `min(capacity, count)` go to `numbers` (NULL allowed when `capacity` is 0).
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (buffers for
/// their whole length) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_visible_luns(
    array: *mut lunsnap_array,
    host: u64,
    numbers: *mut u32,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    run(|| {
        list_args(numbers, capacity, out_count)?;
        let ns = with_array(array, |a| Ok(a.as_host(host).visible_luns()))?;
        // SAFETY: the caller passes room for `capacity` numbers at `numbers`.
        unsafe { put_list(&ns, numbers, capacity, out_count) }
    })
}

/// Takes LUN `lun` offline (`online` false: I/O refused with
/// `LUNSNAP_RESULT_OFFLINE`, management operations allowed) or brings it back
/// online. Persistent; committed before it returns.
#[no_mangle]
pub extern "C" fn lunsnap_set_online(
    array: *mut lunsnap_array,
    lun: u32,
    online: bool,
) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(a.set_online(lun, online)?)))
}

/// A consistency group: creates copy `copies[i]` of `parents[i]` for every `i` below
/// `count`, all at one point in time, attached or detached (as
/// `lunsnap_create_copy`). All or nothing: any error changes nothing. `count` 0, a
/// copy number given twice, or a copy number that is also a parent in the group
/// give `LUNSNAP_RESULT_INVALID_ARGUMENT`. The arrays may be NULL only when `count`
/// is 0.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (arrays of
/// `count` numbers) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_create_copies(
    array: *mut lunsnap_array,
    parents: *const u32,
    copies: *const u32,
    count: usize,
    attached: bool,
) -> lunsnap_result {
    run(|| {
        // SAFETY: the caller passes `count` readable numbers at each pointer.
        let (ps, cs) = unsafe { (numbers_in(parents, count)?, numbers_in(copies, count)?) };
        let pairs: Vec<(u32, u32)> = ps.iter().copied().zip(cs.iter().copied()).collect();
        with_array(array, |a| Ok(a.create_copies(&pairs, attached)?))
    })
}

/// A consistency group: attaches (or refreshes) every copy in `copies[0..count]` at
/// one point in time, each its parent's image as it was before any of them changed.
/// All or nothing: any error `lunsnap_attach` gives, `count` 0 or a copy given twice
/// (`LUNSNAP_RESULT_INVALID_ARGUMENT`) changes nothing. `copies` may be NULL only
/// when `count` is 0.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (an array of
/// `count` numbers) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_attach_many(
    array: *mut lunsnap_array,
    copies: *const u32,
    count: usize,
) -> lunsnap_result {
    run(|| {
        // SAFETY: the caller passes `count` readable numbers at `copies`.
        let cs = unsafe { numbers_in(copies, count)? };
        with_array(array, |a| Ok(a.attach_many(cs)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_match_cargo_toml() {
        assert_eq!(
            LUNSNAP_VERSION_MAJOR.to_string(),
            env!("CARGO_PKG_VERSION_MAJOR")
        );
        assert_eq!(
            LUNSNAP_VERSION_MINOR.to_string(),
            env!("CARGO_PKG_VERSION_MINOR")
        );
        assert_eq!(
            LUNSNAP_VERSION_PATCH.to_string(),
            env!("CARGO_PKG_VERSION_PATCH")
        );
    }

    #[test]
    fn access_control_errors_have_their_own_codes() {
        use lunsnap::Error;
        let cases = [
            (Error::NoSuchHost(7), lunsnap_result::NoSuchHost, 60),
            (Error::HostExists(7), lunsnap_result::HostExists, 61),
            (
                Error::NotGranted { lun: 1, host: 7 },
                lunsnap_result::NotGranted,
                62,
            ),
            (
                Error::ReadOnlyAccess { lun: 1, host: 7 },
                lunsnap_result::ReadOnlyAccess,
                63,
            ),
            (Error::Offline(1), lunsnap_result::Offline, 64),
        ];
        for (e, want, code) in cases {
            assert_eq!(lunsnap_result::from(&e), want, "{e}");
            assert_eq!(want as u32, code);
        }
    }

    #[test]
    fn access_values_from_c() {
        assert_eq!(lunsnap_access::from_c(1), Some(lunsnap::Access::Read));
        assert_eq!(lunsnap_access::from_c(2), Some(lunsnap::Access::ReadWrite));
        for v in [0, 3, 4, 0x100, u32::MAX] {
            assert_eq!(lunsnap_access::from_c(v), None);
        }
    }

    #[test]
    fn every_code_has_a_distinct_message() {
        let mut seen = std::collections::HashSet::new();
        for (r, m) in result::MESSAGES {
            assert_eq!(result::message(*r as u32), *m);
            assert!(m.ends_with(b"\0"));
            assert!(seen.insert(*r as u32), "{r:?} listed twice");
        }
    }
}
