//! The library and an array's life: version and messages, option defaults,
//! formatting and opening an array on a memory, file or host device, reopening,
//! closing, freeing and flushing it.

use core::ffi::c_char;

use lunsnap::{Array, FormatOptions, MemDevice, OpenOptions};

#[cfg(feature = "std")]
use crate::args::str_in;
use crate::args::{out_arg, put, run, run_on, R};
use crate::device::{AnyDevice, CallbackDevice};
use crate::handle::{self, register, unregister, State};
use crate::{
    guard, lunsnap_array, lunsnap_device_callbacks, lunsnap_format_options, lunsnap_open_options,
    lunsnap_result, result,
};

/// Major version of this library (matches Cargo.toml).
pub const LUNSNAP_VERSION_MAJOR: u32 = 0;
/// Minor version of this library (matches Cargo.toml).
pub const LUNSNAP_VERSION_MINOR: u32 = 1;
/// Patch version of this library (matches Cargo.toml).
pub const LUNSNAP_VERSION_PATCH: u32 = 0;

/// A C cache budget as a `usize` (`LUNSNAP_RESULT_INVALID_OPTIONS` if it does not fit).
fn cache_bytes(bytes: u64) -> Result<usize, lunsnap_result> {
    usize::try_from(bytes).map_err(|_| lunsnap_result::InvalidOptions)
}

/// The core's format options from the C ones (`opts` NULL: the defaults).
fn format_opts(opts: *const lunsnap_format_options) -> Result<FormatOptions, lunsnap_result> {
    // SAFETY: the caller passes NULL or a valid `lunsnap_format_options`.
    let o = unsafe { opts.as_ref() }
        .copied()
        .unwrap_or_else(|| lunsnap_format_options_default());
    Ok(FormatOptions {
        extent_size: o.extent_size,
        max_luns: o.max_luns,
        cache_bytes: cache_bytes(o.cache_bytes)?,
        array_id: o.array_id,
    })
}

/// The core's open options from the C ones (`opts` NULL: the defaults).
fn open_opts(opts: *const lunsnap_open_options) -> Result<OpenOptions, lunsnap_result> {
    // SAFETY: the caller passes NULL or a valid `lunsnap_open_options`.
    let o = unsafe { opts.as_ref() }
        .copied()
        .unwrap_or_else(|| lunsnap_open_options_default());
    Ok(OpenOptions {
        cache_bytes: cache_bytes(o.cache_bytes)?,
    })
}

/// The host's callback device (`LUNSNAP_RESULT_NULL_POINTER` for NULL or a missing
/// required callback).
fn callbacks(dev: *const lunsnap_device_callbacks) -> Result<AnyDevice, lunsnap_result> {
    // SAFETY: the caller passes NULL or a valid `lunsnap_device_callbacks`.
    let cb = unsafe { dev.as_ref() }.ok_or(lunsnap_result::NullPointer)?;
    let dev = CallbackDevice::new(*cb).ok_or(lunsnap_result::NullPointer)?;
    Ok(AnyDevice::Callbacks(dev))
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

/// Formats the device `make` gives, registers the array and stores its handle in
/// `out`. The arguments are checked before `make` runs, so that a refused call
/// creates no device (a file is not truncated).
fn format_on(
    opts: *const lunsnap_format_options,
    out: *mut *mut lunsnap_array,
    make: impl FnOnce() -> Result<AnyDevice, lunsnap_result>,
) -> R {
    out_arg(out)?;
    let opts = format_opts(opts)?;
    opts.validate()?;
    let a = Array::format(make()?, &opts)?;
    put(out, register(a, opts.cache_bytes))
}

/// Opens the array on `dev`, registers it and stores its handle in `out`.
fn open_on(dev: AnyDevice, opts: *const lunsnap_open_options, out: *mut *mut lunsnap_array) -> R {
    out_arg(out)?;
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
        format_on(opts, out, || Ok(AnyDevice::Mem(dev)))
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
    run(|| {
        let dev = callbacks(dev)?;
        format_on(opts, out, || Ok(dev))
    })
}

/// Opens the array on the host's device `dev` at its newest commit.
#[no_mangle]
pub extern "C" fn lunsnap_open_callbacks(
    dev: *const lunsnap_device_callbacks,
    opts: *const lunsnap_open_options,
    out: *mut *mut lunsnap_array,
) -> lunsnap_result {
    run(|| open_on(callbacks(dev)?, opts, out))
}

/// The path argument of the file functions: not NULL, UTF-8.
#[cfg(feature = "std")]
fn path_arg<'a>(path: *const c_char) -> Result<&'a str, lunsnap_result> {
    // SAFETY: the caller passes NULL or a NUL-terminated string that outlives the
    // call (the returned reference is used only during it).
    let p = unsafe { str_in(path, lunsnap_result::InvalidPath)? };
    p.ok_or(lunsnap_result::NullPointer)
}

/// The device in the existing file at `path`, of blocks of `block_size` bytes.
#[cfg(feature = "std")]
fn file_device(path: *const c_char, block_size: u32) -> Result<AnyDevice, lunsnap_result> {
    let p = path_arg(path)?;
    check_block_size(block_size)?;
    let dev = lunsnap::FileDevice::open(p, block_size).map_err(|_| lunsnap_result::InvalidPath)?;
    Ok(AnyDevice::File(dev))
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
        out_arg(out)?;
        check_block_size(block_size)?;
        format_on(opts, out, || {
            let dev = lunsnap::FileDevice::create(p, block_size, block_count);
            Ok(AnyDevice::File(
                dev.map_err(|_| lunsnap_result::InvalidPath)?,
            ))
        })
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
    run(|| open_on(file_device(path, block_size)?, opts, out))
}

/// Closes the array *without* committing and opens it again on the same device, as
/// after a power cut: what was committed comes back, with the handle's settings (the
/// cache budget it was opened with, zero detection). The handle stays the same; if
/// the reopen fails, every later call on it returns `LUNSNAP_RESULT_UNUSABLE` (free
/// it and open the device again).
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
        let detect_zeros = o.array.detect_zeros();
        let mut a = Array::open(o.array.into_device(), &OpenOptions { cache_bytes })?;
        a.set_detect_zeros(detect_zeros);
        *st = State::open(a, cache_bytes);
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
            State::Open(o) => o.array.close().map(drop).map_err(|e| e.error.into()),
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

/// Makes every write so far durable.
#[no_mangle]
pub extern "C" fn lunsnap_flush(array: *mut lunsnap_array) -> lunsnap_result {
    run_on(array, |a| a.flush())
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
}
