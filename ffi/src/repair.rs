//! Repair: where both copies of some metadata are bad, rebuild what the rest allows
//! (in the manner of `thin_repair`), offline, on a device no handle holds; then the
//! host opens it as usual. The report's counts go to a sized struct; the ranges it
//! lost, which may be many, are kept for the calling thread and described one by one
//! by `lunsnap_repair_lost` (the `lunsnap_scrub_lost` pattern, without a handle).

use alloc::format;
use alloc::vec::Vec;
#[cfg(feature = "std")]
use core::ffi::c_char;

use lunsnap::{Array, RepairOptions};

use crate::args::{put, run, R};
use crate::device::AnyDevice;
use crate::fail::Fail;
#[cfg(feature = "std")]
use crate::lifecycle::file_device;
use crate::lifecycle::{callbacks, open_failed, open_opts};
use crate::sized::{caller_size, write_out};
use crate::{
    lunsnap_device_callbacks, lunsnap_open_options, lunsnap_repair_report, lunsnap_result,
};

/// A lost range: LUN, byte offset, length.
type Lost = (u32, u64, u64);

#[cfg(feature = "std")]
std::thread_local! {
    /// The lost ranges of the calling thread's last successful repair.
    static THREAD_LOST: core::cell::RefCell<Vec<Lost>> =
        const { core::cell::RefCell::new(Vec::new()) };
}

/// Without thread-locals: the lost ranges of the library's last successful repair.
#[cfg(not(feature = "std"))]
static GLOBAL_LOST: crate::lock::Lock<Vec<Lost>> = crate::lock::Lock::new(Vec::new());

/// Keeps `lost` as the calling thread's last repair's lost ranges.
fn keep(lost: Vec<Lost>) {
    #[cfg(feature = "std")]
    {
        // A thread being torn down has no slot any more: nothing to keep.
        let _ = THREAD_LOST.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = lost;
            }
        });
    }
    #[cfg(not(feature = "std"))]
    {
        *GLOBAL_LOST.lock() = lost;
    }
}

/// Lost range `index` of the calling thread's last repair, or how many it lost.
fn kept(index: usize) -> Result<Lost, usize> {
    #[cfg(feature = "std")]
    {
        THREAD_LOST
            .try_with(|s| {
                let s = s.try_borrow().map_err(|_| 0usize)?;
                s.get(index).copied().ok_or(s.len())
            })
            .unwrap_or(Err(0))
    }
    #[cfg(not(feature = "std"))]
    {
        let s = GLOBAL_LOST.lock();
        s.get(index).copied().ok_or(s.len())
    }
}

/// Repairs the array on `dev` with `opts` (NULL: the defaults) and `dry_run` (0 or
/// 1), writes its report to `out` and keeps its lost ranges. Arguments are checked
/// before the device is touched.
fn repair_on(
    dev: impl FnOnce() -> Result<AnyDevice, Fail>,
    opts: *const lunsnap_open_options,
    dry_run: u8,
    out: *mut lunsnap_repair_report,
) -> R {
    // SAFETY: the caller passes NULL or a struct that starts with its size.
    let n = unsafe { caller_size(out, "out")? };
    let dry_run = match dry_run {
        0 => false,
        1 => true,
        v => {
            return Err(Fail::arg(format!(
                "`dry_run` is {v}: it must be 0 (repair) or 1 (only report)"
            )))
        }
    };
    let open = open_opts(opts)?;
    let dev = dev()?;
    let detail = dev.detail();
    let (dev, report) = Array::repair(dev, &RepairOptions { open, dry_run })
        .map_err(|e| open_failed(e, &detail))?;
    drop(dev);
    let c = lunsnap_repair_report::from(&report);
    keep(report.lost);
    // SAFETY: `n` checked, and the caller passes `n` writable bytes at `out`.
    unsafe { write_out(out, n, &c) };
    Ok(())
}

/// Repairs the array on the host's device `dev` where both copies of some of its
/// metadata are bad, offline (no handle may hold the device: open it afterwards with
/// `lunsnap_open_callbacks`). It keeps every LUN record, host and mapping entry that
/// still reads, rebuilds the reference counts and each damaged mapping from its
/// readable entries, and writes all of it in one new commit (a crash during the
/// repair leaves the array as it was). The ranges of LUNs whose mapping could not be
/// read are lost: from then on they read as `LUNSNAP_RESULT_LOST_DATA` (never as
/// zeros or stale data) until written or discarded. With `dry_run` 1 it only
/// reports, and writes nothing.
///
/// `*out` says what it found and did (set `out->struct_size` to `sizeof *out`
/// first); `lunsnap_repair_lost` describes each lost range. A repair of an
/// undamaged array loses nothing (`out->complete` is 1) and commits once.
///
/// Errors: what an open gives before the LUN table is read
/// (`LUNSNAP_RESULT_COMMIT_LOST` unless `opts->allow_rollback` is 1, then the
/// rollback is recorded by the repair's commit; `LUNSNAP_RESULT_NOT_FORMATTED`,
/// `LUNSNAP_RESULT_NOT_AN_ARRAY`, `LUNSNAP_RESULT_BLOCK_SIZE_MISMATCH`, ...); device
/// errors; `LUNSNAP_RESULT_NULL_POINTER` for a NULL `dev` or `out`, or a missing
/// required callback; `LUNSNAP_RESULT_INVALID_ARGUMENT` for a bad `struct_size` or a
/// `dry_run` other than 0 or 1; `LUNSNAP_RESULT_INVALID_OPTIONS`. Nothing is
/// written to `out`, and the last repair's lost ranges are kept, on error.
#[no_mangle]
pub extern "C" fn lunsnap_repair_callbacks(
    dev: *const lunsnap_device_callbacks,
    opts: *const lunsnap_open_options,
    dry_run: u8,
    out: *mut lunsnap_repair_report,
) -> lunsnap_result {
    run("lunsnap_repair_callbacks", || {
        repair_on(|| callbacks(dev), opts, dry_run, out)
    })
}

/// `lunsnap_repair_callbacks` on the array in the file at `path` (device blocks of
/// `block_size` bytes, as `lunsnap_open_file`). No handle may have the file open.
#[cfg(feature = "std")]
#[no_mangle]
pub extern "C" fn lunsnap_repair_file(
    path: *const c_char,
    block_size: u32,
    opts: *const lunsnap_open_options,
    dry_run: u8,
    out: *mut lunsnap_repair_report,
) -> lunsnap_result {
    run("lunsnap_repair_file", || {
        repair_on(|| file_device(path, block_size), opts, dry_run, out)
    })
}

/// Lost range `index` (below its report's `lost_ranges`) of the calling thread's
/// last successful `lunsnap_repair_file` or `lunsnap_repair_callbacks` (in the
/// no_std build: the library's last, from any thread): `*out_lun` receives the LUN,
/// `*out_offset` and `*out_length` the range in bytes. In LUN order, then offset
/// order. After a real repair (not a dry run) the opened array lists the same
/// ranges with `lunsnap_lost_ranges`.
///
/// Errors: `LUNSNAP_RESULT_INVALID_ARGUMENT` for an `index` not below the number of
/// ranges the last repair lost (every `index` before the first repair);
/// `LUNSNAP_RESULT_NULL_POINTER` for a NULL out-parameter. Nothing is written on
/// error.
#[no_mangle]
pub extern "C" fn lunsnap_repair_lost(
    index: usize,
    out_lun: *mut u32,
    out_offset: *mut u64,
    out_length: *mut u64,
) -> lunsnap_result {
    run("lunsnap_repair_lost", || {
        crate::args::out_arg(out_lun, "out_lun")?;
        crate::args::out_arg(out_offset, "out_offset")?;
        crate::args::out_arg(out_length, "out_length")?;
        let (lun, offset, length) = kept(index).map_err(|n| {
            Fail::arg(format!(
                "`index` is {index}: the calling thread's last repair lost {n} ranges"
            ))
        })?;
        put(out_lun, lun, "out_lun")?;
        put(out_offset, offset, "out_offset")?;
        put(out_length, length, "out_length")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_keeps_its_own_lost_ranges() {
        keep(alloc::vec![(1, 4096, 8192), (2, 0, 512)]);
        assert_eq!(kept(1), Ok((2, 0, 512)));
        assert_eq!(kept(2), Err(2));
        std::thread::spawn(|| {
            assert_eq!(kept(0), Err(0));
            keep(alloc::vec![(7, 0, 512)]);
            assert_eq!(kept(0), Ok((7, 0, 512)));
        })
        .join()
        .unwrap();
        assert_eq!(kept(0), Ok((1, 4096, 8192)));
    }
}
