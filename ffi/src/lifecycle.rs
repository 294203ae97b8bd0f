//! The library and an array's life: version and messages, option defaults,
//! formatting and opening an array on a memory, file or host device, reopening,
//! closing, freeing and flushing it.

use alloc::format;
use core::ffi::c_char;
use core::mem::size_of;

use lunsnap::{Array, Error, FormatOptions, MemDevice, OpenOptions};

#[cfg(feature = "std")]
use crate::args::str_in;
use crate::args::{buffer_args, out_arg, put, put_text, run, run_h, run_on, R, TEXT};
use crate::device::{self, AnyDevice, CallbackDevice};
use crate::fail::{self, Fail};
use crate::handle::{self, register, unregister, State};
use crate::sized::{self, read_in};
use crate::{
    guard, lunsnap_array, lunsnap_device_callbacks, lunsnap_format_options, lunsnap_open_options,
    lunsnap_result, result,
};

/// Major version of this library (matches Cargo.toml).
pub const LUNSNAP_VERSION_MAJOR: u32 = 0;
/// Minor version of this library (matches Cargo.toml). 0.2 changed the ABI (growable
/// structs carry `struct_size`, `lunsnap_*_options_init` replaced
/// `lunsnap_*_options_default`): programs built against 0.1 must be rebuilt.
pub const LUNSNAP_VERSION_MINOR: u32 = 2;
/// Patch version of this library (matches Cargo.toml).
pub const LUNSNAP_VERSION_PATCH: u32 = 0;

/// The largest `struct_size` the library accepts in any struct (a larger value,
/// like one below `sizeof(size_t)`, is refused with
/// `LUNSNAP_RESULT_INVALID_ARGUMENT`: most likely the field was not set).
pub const LUNSNAP_STRUCT_SIZE_MAX: usize = 4096;

/// A C cache budget as a `usize` (`LUNSNAP_RESULT_INVALID_OPTIONS` if it does not fit).
fn cache_bytes(bytes: u64) -> Result<usize, Fail> {
    usize::try_from(bytes).map_err(|_| {
        Fail::new(
            lunsnap_result::InvalidOptions,
            format!("invalid options: cache_bytes {bytes} does not fit in this platform's size_t"),
        )
    })
}

/// The default format options in their C form.
fn format_defaults() -> lunsnap_format_options {
    let d = FormatOptions::default();
    lunsnap_format_options {
        struct_size: size_of::<lunsnap_format_options>(),
        extent_size: d.extent_size,
        max_luns: d.max_luns,
        cache_bytes: d.cache_bytes as u64,
        array_id: d.array_id,
        metadata_copies: d.metadata_copies,
    }
}

/// The default open options in their C form.
fn open_defaults() -> lunsnap_open_options {
    let d = OpenOptions::default();
    lunsnap_open_options {
        struct_size: size_of::<lunsnap_open_options>(),
        cache_bytes: d.cache_bytes as u64,
        allow_rollback: u8::from(d.allow_rollback),
    }
}

/// The core's format options from the C ones (`opts` NULL: the defaults).
fn format_opts(opts: *const lunsnap_format_options) -> Result<FormatOptions, Fail> {
    // SAFETY: the caller passes NULL or a valid `lunsnap_format_options` of its
    // `struct_size` bytes.
    let o = unsafe { read_in(opts, format_defaults(), "opts")? }.unwrap_or_else(format_defaults);
    Ok(FormatOptions {
        extent_size: o.extent_size,
        max_luns: o.max_luns,
        cache_bytes: cache_bytes(o.cache_bytes)?,
        array_id: o.array_id,
        // Checked with the others by `FormatOptions::validate` (1 or 2).
        metadata_copies: o.metadata_copies,
    })
}

/// The core's open options from the C ones (`opts` NULL: the defaults).
pub(crate) fn open_opts(opts: *const lunsnap_open_options) -> Result<OpenOptions, Fail> {
    // SAFETY: the caller passes NULL or a valid `lunsnap_open_options` of its
    // `struct_size` bytes.
    let o = unsafe { read_in(opts, open_defaults(), "opts")? }.unwrap_or_else(open_defaults);
    let allow_rollback = match o.allow_rollback {
        0 => false,
        1 => true,
        v => {
            return Err(Fail::new(
                lunsnap_result::InvalidOptions,
                format!("invalid options: allow_rollback is {v}: it must be 0 or 1"),
            ))
        }
    };
    Ok(OpenOptions {
        cache_bytes: cache_bytes(o.cache_bytes)?,
        allow_rollback,
    })
}

/// The host's callback device (`LUNSNAP_RESULT_NULL_POINTER` for NULL or a missing
/// required callback).
pub(crate) fn callbacks(dev: *const lunsnap_device_callbacks) -> Result<AnyDevice, Fail> {
    // SAFETY: the caller passes NULL or a valid `lunsnap_device_callbacks` of its
    // `struct_size` bytes.
    let cb = unsafe { read_in(dev, lunsnap_device_callbacks::empty(), "dev")? }
        .ok_or_else(|| Fail::null("dev"))?;
    Ok(AnyDevice::callbacks(CallbackDevice::new(cb)?))
}

/// A device block size the array accepts (checked before any device is made or
/// touched, so that a refused call changes nothing).
fn check_block_size(bs: u32) -> R {
    if bs.is_power_of_two() && (512..=4096).contains(&bs) {
        Ok(())
    } else {
        Err(Error::UnsupportedBlockSize(bs).into())
    }
}

/// Formats the device `make` gives, registers the array and stores its handle in
/// `out`. The arguments are checked before `make` runs, so that a refused call
/// creates no device (a file is not truncated).
fn format_on(
    opts: *const lunsnap_format_options,
    out: *mut *mut lunsnap_array,
    make: impl FnOnce() -> Result<AnyDevice, Fail>,
) -> R {
    out_arg(out, "out")?;
    let opts = format_opts(opts)?;
    opts.validate()?;
    let dev = make()?;
    let detail = dev.detail();
    let a = Array::format(dev, &opts).map_err(|e| device::explain(e.into(), &detail))?;
    let reopen = OpenOptions {
        cache_bytes: opts.cache_bytes,
        ..OpenOptions::default()
    };
    put(out, register(a, reopen), "out")
}

/// An open's failure, with how a C program accepts a rollback when that is what
/// was refused (the core's message names the command-line option).
pub(crate) fn open_failed(e: Error, detail: &device::Detail) -> Fail {
    let f = device::explain(e.into(), detail);
    if f.code == lunsnap_result::CommitLost {
        f.with_detail("from C: open with lunsnap_open_options.allow_rollback set to 1")
    } else {
        f
    }
}

/// Opens the array on `dev`, registers it and stores its handle in `out`.
fn open_on(dev: AnyDevice, opts: *const lunsnap_open_options, out: *mut *mut lunsnap_array) -> R {
    out_arg(out, "out")?;
    let opts = open_opts(opts)?;
    let detail = dev.detail();
    let a = Array::open(dev, &opts).map_err(|e| open_failed(e, &detail))?;
    put(out, register(a, opts), "out")
}

/// The library version, e.g. "0.2.0" (static, NUL-terminated).
#[no_mangle]
pub extern "C" fn lunsnap_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A static, NUL-terminated message for `code` (any value; unknown codes get a
/// message saying so). `lunsnap_last_error_message` gives the full message of a
/// failed call.
#[no_mangle]
pub extern "C" fn lunsnap_strerror(code: u32) -> *const c_char {
    result::message(code).as_ptr().cast()
}

/// Copies the full message of the last failed call into `buf`, with the text
/// convention of `lunsnap_host_name` (NUL-terminated, truncated to `buf_len - 1`
/// bytes, `buf` NULL allowed when `buf_len` is 0; `*out_len` receives the full
/// length without the NUL): the function, then what exactly went wrong, e.g.
/// "lunsnap_create_lun: not enough space to reserve: 268435456 bytes needed,
/// 1048576 unreserved" or "lunsnap_read: `buf` is NULL but `len` is 4096".
///
/// - `array` a live handle: the last failed call on that handle, from any thread;
/// - `array` NULL: the calling thread's last failed call, with or without a handle
///   (the only place for the failures of calls that have no handle: a format or
///   open, a NULL, forged or freed handle, `lunsnap_close`). In the no_std build
///   there are no thread-local variables: this is then one slot for the whole
///   library, the last failed call of any thread.
///
/// A message stays until the next failed call replaces it: a successful call does
/// not clear it, so read it right after the failure (in a multi-threaded program,
/// from the thread that failed, with `array` NULL: the handle's message may be
/// another thread's by then). The empty string when no call has failed yet. The
/// text is copied: it stays valid however the library is used afterwards.
///
/// This function records nothing (it never replaces a message). Errors:
/// `LUNSNAP_RESULT_INVALID_HANDLE` for an `array` that is not a live handle,
/// `LUNSNAP_RESULT_NULL_POINTER` for a NULL `out_len` or a NULL `buf` with
/// `buf_len` > 0.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (`buf` for
/// `buf_len` bytes) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_last_error_message(
    array: *const lunsnap_array,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> lunsnap_result {
    let r = guard::catch(|| {
        buffer_args(buf, buf_len, out_len, TEXT)?;
        let m = if array.is_null() {
            fail::thread_message()
        } else {
            let h = handle::lookup(array)?;
            let m = h.last_error.lock().clone();
            m.unwrap_or_default()
        };
        // SAFETY: the caller passes `buf_len` writable bytes at `buf`.
        unsafe { put_text(m.as_bytes(), buf, buf_len, out_len) }
    });
    match r.and_then(|r| r) {
        Ok(()) => lunsnap_result::Ok,
        Err(e) => e.code,
    }
}

/// Fills `*opts` with the default format options (16 KiB extents, 1024 LUNs, 4 MiB
/// cache, zero array id, two metadata copies) and sets `opts->struct_size` to
/// `struct_size`, which must be `sizeof *opts` (the library writes the fields that
/// fit in it, and zeros the rest):
/// `lunsnap_format_options o; lunsnap_format_options_init(&o, sizeof o);`.
///
/// Errors: `LUNSNAP_RESULT_NULL_POINTER`; `LUNSNAP_RESULT_INVALID_ARGUMENT` for a
/// `struct_size` below `sizeof(size_t)` or above `LUNSNAP_STRUCT_SIZE_MAX`.
///
/// # Safety
///
/// `opts`, when not NULL, must be valid for writing `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_format_options_init(
    opts: *mut lunsnap_format_options,
    struct_size: usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `init_sized`'s.
    unsafe {
        init_sized(
            "lunsnap_format_options_init",
            opts,
            struct_size,
            &format_defaults(),
        )
    }
}

/// Fills `*opts` with the default open options (4 MiB cache, no rollback) and sets
/// `opts->struct_size` to `struct_size` (`sizeof *opts`), as
/// `lunsnap_format_options_init`.
///
/// # Safety
///
/// `opts`, when not NULL, must be valid for writing `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_open_options_init(
    opts: *mut lunsnap_open_options,
    struct_size: usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `init_sized`'s.
    unsafe {
        init_sized(
            "lunsnap_open_options_init",
            opts,
            struct_size,
            &open_defaults(),
        )
    }
}

/// Writes `struct_size` and then the defaults `v` into the caller's struct at `p`.
///
/// # Safety
///
/// `p`, when not NULL, must be valid for writing `struct_size` bytes.
unsafe fn init_sized<T: sized::Output>(
    func: &'static str,
    p: *mut T,
    struct_size: usize,
    v: &T,
) -> lunsnap_result {
    run(func, || {
        out_arg(p, "opts")?;
        let n = sized::check_size(struct_size, "opts")?;
        // SAFETY: not NULL; the caller passes `struct_size` writable bytes at `p`
        // (at least a `size_t`: checked), where the struct's size goes first.
        unsafe {
            p.cast::<usize>().write_unaligned(n);
            sized::write_out(p, n, v);
        }
        Ok(())
    })
}

/// `*out` receives the smallest device, in bytes, that `opts` (NULL: the defaults)
/// format on: the worst-case metadata for that device (each of its
/// `metadata_copies`) and two data extents. A smaller device is refused by the
/// `lunsnap_format_*` functions with `LUNSNAP_RESULT_DEVICE_TOO_SMALL` (whose
/// message names this figure).
///
/// Errors: `LUNSNAP_RESULT_INVALID_OPTIONS` (the message says which option),
/// `LUNSNAP_RESULT_NULL_POINTER` for a NULL `out`, the `struct_size` errors.
#[no_mangle]
pub extern "C" fn lunsnap_min_device_bytes(
    opts: *const lunsnap_format_options,
    out: *mut u64,
) -> lunsnap_result {
    run("lunsnap_min_device_bytes", || {
        out_arg(out, "out")?;
        let n = format_opts(opts)?.min_device_bytes()?;
        put(out, n, "out")
    })
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
    run("lunsnap_format_mem", || {
        check_block_size(block_size)?;
        let dev = MemDevice::new(block_size, block_count).map_err(|_| {
            if block_count == 0 {
                Fail::new(
                    lunsnap_result::DeviceTooSmall,
                    "device too small: `block_count` is 0",
                )
            } else {
                Fail::arg(format!(
                    "{block_count} blocks of {block_size} bytes overflow a 64-bit byte count"
                ))
            }
        })?;
        format_on(opts, out, || Ok(AnyDevice::mem(dev)))
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
    run("lunsnap_format_callbacks", || {
        let dev = callbacks(dev)?;
        format_on(opts, out, || Ok(dev))
    })
}

/// Opens the array on the host's device `dev` at its newest commit. A device
/// whose `block_size` is not the one the array was formatted with gives
/// `LUNSNAP_RESULT_BLOCK_SIZE_MISMATCH` (the message names both).
///
/// A damaged copy of a metadata page is read from its other copy (and rewritten
/// by the next commit: `lunsnap_pool_info.pending_heals`). When both copies of the
/// superblock that may hold the newest commit are damaged, the open fails with
/// `LUNSNAP_RESULT_COMMIT_LOST`, whose message names the generation lost and the
/// one a rollback would open (e.g. "lunsnap_open_callbacks: both copies of the
/// superblock of generation 12 are damaged: that commit is lost and opening would
/// roll the array back to generation 11; ..."), unless `opts->allow_rollback` is 1.
#[no_mangle]
pub extern "C" fn lunsnap_open_callbacks(
    dev: *const lunsnap_device_callbacks,
    opts: *const lunsnap_open_options,
    out: *mut *mut lunsnap_array,
) -> lunsnap_result {
    run("lunsnap_open_callbacks", || {
        open_on(callbacks(dev)?, opts, out)
    })
}

/// The path argument of the file functions: not NULL, UTF-8.
#[cfg(feature = "std")]
fn path_arg<'a>(path: *const c_char) -> Result<&'a str, Fail> {
    // SAFETY: the caller passes NULL or a NUL-terminated string that outlives the
    // call (the returned reference is used only during it).
    let p = unsafe { str_in(path, "path", lunsnap_result::InvalidPath)? };
    p.ok_or_else(|| Fail::null("path"))
}

/// `LUNSNAP_RESULT_INVALID_PATH` for a file that cannot be used.
#[cfg(feature = "std")]
fn bad_path(what: &str, path: &str, e: &std::io::Error) -> Fail {
    Fail::new(
        lunsnap_result::InvalidPath,
        format!("cannot {what} {path:?}: {e}"),
    )
}

/// The device in the existing file at `path`, of blocks of `block_size` bytes. A
/// file whose length is not a whole number of such blocks is probed: if it holds
/// an array formatted with another block size, that is
/// `LUNSNAP_RESULT_BLOCK_SIZE_MISMATCH`, as for a file of the right length.
#[cfg(feature = "std")]
pub(crate) fn file_device(path: *const c_char, block_size: u32) -> Result<AnyDevice, Fail> {
    let p = path_arg(path)?;
    check_block_size(block_size)?;
    match lunsnap::FileDevice::open(p, block_size) {
        Ok(dev) => Ok(AnyDevice::file(dev)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            Err(probe_block_size(p, block_size).unwrap_or_else(|| bad_path("open", p, &e)))
        }
        Err(e) => Err(bad_path("open", p, &e)),
    }
}

/// The block size mismatch of the file at `path` opened with `block_size` blocks,
/// if it holds an array (formatted on other blocks: its length is not a whole
/// number of `block_size` blocks). Reads the superblocks only, and writes nothing
/// (so a lost newest commit does not hide the block size: every generation has
/// the same one).
#[cfg(feature = "std")]
fn probe_block_size(path: &str, block_size: u32) -> Option<Fail> {
    let dev = lunsnap::FileDevice::open(path, 512).ok()?;
    let opts = lunsnap::engine::OpenOptions {
        cache_bytes: 0,
        allow_rollback: true,
    };
    let formatted = match lunsnap::engine::Engine::open(dev, &opts) {
        Ok(_) => 512,
        Err(Error::BlockSizeMismatch { formatted, .. }) => formatted,
        Err(_) => return None,
    };
    Some(
        Error::BlockSizeMismatch {
            formatted,
            device: block_size,
        }
        .into(),
    )
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
    run("lunsnap_format_file", || {
        let p = path_arg(path)?;
        out_arg(out, "out")?;
        check_block_size(block_size)?;
        format_on(opts, out, || {
            let dev = lunsnap::FileDevice::create(p, block_size, block_count);
            Ok(AnyDevice::file(dev.map_err(|e| bad_path("create", p, &e))?))
        })
    })
}

/// Opens the array in the file at `path` (device blocks of `block_size` bytes).
/// Another block size than the array was formatted with gives
/// `LUNSNAP_RESULT_BLOCK_SIZE_MISMATCH` (the message names the right one), also
/// when the file's length is not a whole number of `block_size` blocks. Damaged
/// metadata and `LUNSNAP_RESULT_COMMIT_LOST`: as `lunsnap_open_callbacks`.
#[cfg(feature = "std")]
#[no_mangle]
pub extern "C" fn lunsnap_open_file(
    path: *const c_char,
    block_size: u32,
    opts: *const lunsnap_open_options,
    out: *mut *mut lunsnap_array,
) -> lunsnap_result {
    run("lunsnap_open_file", || {
        open_on(file_device(path, block_size)?, opts, out)
    })
}

/// Closes the array *without* committing and opens it again on the same device, as
/// after a power cut: what was committed comes back, with the handle's settings (the
/// cache budget and `allow_rollback` it was opened with, zero detection; a handle
/// from a format reopens with the default `allow_rollback`, 0). The handle stays
/// the same; if the reopen fails, every later call on it returns
/// `LUNSNAP_RESULT_UNUSABLE` (free it and open the device again).
#[no_mangle]
pub extern "C" fn lunsnap_reopen(array: *mut lunsnap_array) -> lunsnap_result {
    run_h(array, "lunsnap_reopen", || {
        let h = handle::lookup(array)?;
        let mut st = h.state.lock();
        let o = match core::mem::replace(&mut *st, State::Broken(lunsnap_result::Unusable)) {
            State::Open(o) => o,
            State::Broken(why) => {
                *st = State::Broken(why);
                return Err(why.into());
            }
        };
        let opts = o.opts.clone();
        let detect_zeros = o.array.detect_zeros();
        device::clear(&h.detail);
        let mut a =
            Array::open(o.array.into_device(), &opts).map_err(|e| open_failed(e, &h.detail))?;
        a.set_detect_zeros(detect_zeros);
        *st = State::open(a, opts);
        Ok(())
    })
}

/// Commits and frees the array. The handle is freed even when the commit fails
/// (the result then says why, and the calling thread's message,
/// `lunsnap_last_error_message(NULL, ...)`, how; the device keeps the previous
/// commit). A NULL handle gives `LUNSNAP_RESULT_NULL_POINTER`, one already freed
/// `LUNSNAP_RESULT_INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn lunsnap_close(array: *mut lunsnap_array) -> lunsnap_result {
    run("lunsnap_close", || {
        let h = unregister(array).ok_or_else(|| {
            if array.is_null() {
                Fail::null("array")
            } else {
                handle::not_live(array)
            }
        })?;
        let mut st = h.state.lock();
        match core::mem::replace(&mut *st, State::Broken(lunsnap_result::InvalidHandle)) {
            State::Open(o) => {
                device::clear(&h.detail);
                o.array
                    .close()
                    .map(drop)
                    .map_err(|e| device::explain(e.error.into(), &h.detail))
            }
            State::Broken(why) => Err(why.into()),
        }
    })
}

/// Frees the array without committing (uncommitted writes are lost, as at a power
/// cut). NULL, and a handle already freed, are ignored.
#[no_mangle]
pub extern "C" fn lunsnap_free(array: *mut lunsnap_array) {
    let _ = guard::catch(|| drop(unregister(array)));
}

/// Makes every write so far durable. A flush that commits (there are writes or
/// changes to make durable, or metadata copies to heal) first frees up to
/// `LUNSNAP_RECLAIM_PER_FLUSH` units of work of the mappings that wait in the free
/// queue (see `lunsnap_reclaim`), in the same commit; a flush with nothing to
/// commit does nothing.
#[no_mangle]
pub extern "C" fn lunsnap_flush(array: *mut lunsnap_array) -> lunsnap_result {
    run_on(array, "lunsnap_flush", |a| a.flush())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_defaults_are_the_cores() {
        let f = format_opts(core::ptr::null()).unwrap();
        assert_eq!(f.metadata_copies, FormatOptions::default().metadata_copies);
        assert_eq!(f.metadata_copies, 2);
        assert_eq!(format_defaults().metadata_copies, 2);
        let o = open_opts(core::ptr::null()).unwrap();
        assert_eq!(o, OpenOptions::default());
        assert_eq!(open_defaults().allow_rollback, 0);
    }

    #[test]
    fn allow_rollback_is_0_or_1() {
        let mut c = open_defaults();
        c.allow_rollback = 1;
        assert!(open_opts(&c).unwrap().allow_rollback);
        c.allow_rollback = 0;
        assert!(!open_opts(&c).unwrap().allow_rollback);
        for v in [2u8, 0x80, 0xff] {
            c.allow_rollback = v;
            let e = open_opts(&c).unwrap_err();
            assert_eq!(e.code, lunsnap_result::InvalidOptions);
            assert!(e.text.contains("allow_rollback is"), "{}", e.text);
        }
        // An older caller's struct without the field: the default.
        c.allow_rollback = 1;
        c.struct_size = core::mem::offset_of!(lunsnap_open_options, allow_rollback);
        assert!(!open_opts(&c).unwrap().allow_rollback);
    }

    #[test]
    fn metadata_copies_other_than_1_or_2_are_refused() {
        let mut c = format_defaults();
        for (v, ok) in [
            (0, false),
            (1, true),
            (2, true),
            (3, false),
            (u32::MAX, false),
        ] {
            c.metadata_copies = v;
            let r = format_opts(&c).unwrap().validate();
            assert_eq!(r.is_ok(), ok, "metadata_copies {v}");
            if let Err(e) = r {
                assert_eq!(lunsnap_result::from(&e), lunsnap_result::InvalidOptions);
            }
        }
        // An older caller's struct without the field: the default, 2.
        c.metadata_copies = 0;
        c.struct_size = core::mem::offset_of!(lunsnap_format_options, metadata_copies);
        assert_eq!(format_opts(&c).unwrap().metadata_copies, 2);
    }

    #[test]
    fn the_struct_size_limit_is_the_one_checked() {
        assert_eq!(LUNSNAP_STRUCT_SIZE_MAX, sized::STRUCT_SIZE_MAX);
    }

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
