//! LUNs and business copies: creating, attaching, detaching, deleting, restoring
//! and taking them offline, consistency groups, and what the array reports about
//! them (LUN and pool information, the LUN list, the ranges lost to metadata
//! damage, the metadata check), and the scrub of the metadata's copies.

use alloc::format;
use alloc::vec::Vec;
use core::ffi::{c_char, c_void};

use crate::args::{
    buffer_args, out_arg, put, put_list, put_text, run_h, run_on, slice_in, LIST, TEXT,
};
use crate::fail::Fail;
use crate::handle::{with_array, with_open, Open};
use crate::sized::{caller_size, write_out};
use crate::types::{lunsnap_lost_range, lunsnap_severity};
use crate::{
    lunsnap_array, lunsnap_lun_info, lunsnap_pool_info, lunsnap_result, lunsnap_scrub_report,
};

/// Creates LUN `lun` of `size` bytes (reads as zeros). It reserves its size rounded
/// up to whole extents: a LUN of 1 KiB on an array of 16 KiB extents reserves
/// 16 KiB of the pool (`lunsnap_lun_info.reserved_bytes`).
#[no_mangle]
pub extern "C" fn lunsnap_create_lun(
    array: *mut lunsnap_array,
    lun: u32,
    size: u64,
) -> lunsnap_result {
    run_on(array, "lunsnap_create_lun", |a| a.create_lun(lun, size))
}

/// Creates copy `lun` of `parent`: attached (true) = the parent's image now,
/// reserving its size (rounded up to whole extents); detached (false) = the
/// relationship only, reserving nothing.
///
/// Errors, in the order checked: `LUNSNAP_RESULT_LUN_OUT_OF_RANGE` (`lun` or
/// `parent`), `LUNSNAP_RESULT_NO_SUCH_LUN` (`parent`), `LUNSNAP_RESULT_LUN_EXISTS`,
/// `LUNSNAP_RESULT_PARENT_DETACHED` (attached copy of a detached copy),
/// `LUNSNAP_RESULT_NO_SPACE`.
#[no_mangle]
pub extern "C" fn lunsnap_create_copy(
    array: *mut lunsnap_array,
    parent: u32,
    lun: u32,
    attached: bool,
) -> lunsnap_result {
    run_on(array, "lunsnap_create_copy", |a| {
        a.create_copy(parent, lun, attached)
    })
}

/// Makes (or refreshes) copy `lun` as its parent's image now. The image it had
/// before, if any, goes to the free queue: its space is freed in the background
/// (`lunsnap_reclaim`).
#[no_mangle]
pub extern "C" fn lunsnap_attach(array: *mut lunsnap_array, lun: u32) -> lunsnap_result {
    run_on(array, "lunsnap_attach", |a| a.attach(lun))
}

/// Discards copy `lun`'s data and reservation; the number stays a detached copy.
/// The reservation is released at once; the data's mapping goes to the free queue
/// and its space is freed in the background (`lunsnap_reclaim`).
#[no_mangle]
pub extern "C" fn lunsnap_detach(array: *mut lunsnap_array, lun: u32) -> lunsnap_result {
    run_on(array, "lunsnap_detach", |a| a.detach(lun))
}

/// Deletes LUN `lun`. A LUN with copies is refused (`LUNSNAP_RESULT_HAS_COPIES`)
/// unless `orphan_copies`: its attached copies then become plain LUNs
/// (`LUNSNAP_LUN_KIND_LUN`, no parent) that keep their data, and its detached copies
/// stay detached copies without a parent (they can only be deleted).
///
/// Returns after the same small amount of work whatever the LUN's size: its
/// reservation is released at once, and its mapping goes to the free queue, whose
/// space is freed in the background (`lunsnap_reclaim`; until then it counts in
/// `lunsnap_pool_info.allocated_bytes`, and `lunsnap_pending_bytes` says how
/// much).
#[no_mangle]
pub extern "C" fn lunsnap_delete(
    array: *mut lunsnap_array,
    lun: u32,
    orphan_copies: bool,
) -> lunsnap_result {
    run_on(array, "lunsnap_delete", |a| a.delete(lun, orphan_copies))
}

/// Makes the parent of copy `lun` read the copy's current contents. The parent's
/// previous mapping goes to the free queue: its space is freed in the background
/// (`lunsnap_reclaim`).
#[no_mangle]
pub extern "C" fn lunsnap_restore(array: *mut lunsnap_array, lun: u32) -> lunsnap_result {
    run_on(array, "lunsnap_restore", |a| a.restore(lun))
}

/// Information about LUN `lun` (exclusive and shared bytes are computed by walking
/// its mapping; while dropped mappings wait to be freed, `lunsnap_reclaim_pending`,
/// every live mapping is walked, so that they stay exact), as the array sees it
/// (host security does not apply). Set `out->struct_size` to `sizeof *out` first:
/// the library fills the fields inside it and never writes past it.
///
/// Errors: `LUNSNAP_RESULT_LUN_OUT_OF_RANGE`, `LUNSNAP_RESULT_NO_SUCH_LUN`, device
/// errors; `LUNSNAP_RESULT_NULL_POINTER` for a NULL `out`,
/// `LUNSNAP_RESULT_INVALID_ARGUMENT` for a `struct_size` below `sizeof(size_t)` or
/// above `LUNSNAP_STRUCT_SIZE_MAX`.
///
/// # Safety
///
/// `out`, when not NULL, must be valid for writing its `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_get_lun_info(
    array: *mut lunsnap_array,
    lun: u32,
    out: *mut lunsnap_lun_info,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `lun_info`'s.
    unsafe { lun_info(array, None, lun, out, "lunsnap_get_lun_info") }
}

/// `lunsnap_get_lun_info` on behalf of host `host`: with security enabled, a LUN
/// the host has no grant on gives `LUNSNAP_RESULT_NO_SUCH_LUN`, as a missing one
/// does (a read grant is enough).
///
/// # Safety
///
/// `out`, when not NULL, must be valid for writing its `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_get_lun_info_as(
    array: *mut lunsnap_array,
    host: u64,
    lun: u32,
    out: *mut lunsnap_lun_info,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `lun_info`'s.
    unsafe { lun_info(array, Some(host), lun, out, "lunsnap_get_lun_info_as") }
}

/// LUN `lun`'s information into `out`, as the array itself (`host` None) or as
/// `host`.
///
/// # Safety
///
/// `out`, when not NULL, must be valid for writing its `struct_size` bytes.
unsafe fn lun_info(
    array: *mut lunsnap_array,
    host: Option<u64>,
    lun: u32,
    out: *mut lunsnap_lun_info,
    func: &'static str,
) -> lunsnap_result {
    run_h(array, func, || {
        // SAFETY: the caller passes NULL or a struct that starts with its size.
        let n = unsafe { caller_size(out, "out")? };
        let i = with_array(array, |a| {
            Ok(match host {
                None => a.lun_info(lun)?,
                Some(h) => a.as_host(h).lun_info(lun)?,
            })
        })?;
        // SAFETY: `n` checked, and the caller passes `n` writable bytes at `out`.
        unsafe { write_out(out, n, &lunsnap_lun_info::from(i)) };
        Ok(())
    })
}

/// Pool accounting. Set `out->struct_size` to `sizeof *out` first: the library
/// fills the fields inside it and never writes past it.
///
/// Errors: `LUNSNAP_RESULT_NULL_POINTER` for a NULL `out`,
/// `LUNSNAP_RESULT_INVALID_ARGUMENT` for a bad `struct_size` (as
/// `lunsnap_get_lun_info`).
///
/// # Safety
///
/// `out`, when not NULL, must be valid for writing its `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_get_pool_info(
    array: *mut lunsnap_array,
    out: *mut lunsnap_pool_info,
) -> lunsnap_result {
    run_h(array, "lunsnap_get_pool_info", || {
        // SAFETY: the caller passes NULL or a struct that starts with its size.
        let n = unsafe { caller_size(out, "out")? };
        let p = with_array(array, |a| Ok(a.pool_info()))?;
        // SAFETY: `n` checked, and the caller passes `n` writable bytes at `out`.
        unsafe { write_out(out, n, &lunsnap_pool_info::from(p)) };
        Ok(())
    })
}

/// `*out` receives whether the handle is poisoned: an earlier device error (a
/// failed commit or write) left it refusing changes with `LUNSNAP_RESULT_POISONED`
/// until `lunsnap_reopen` (reads still work). A handle broken by a caught panic or
/// a failed reopen is not poisoned but refuses every call, this one included, with
/// `LUNSNAP_RESULT_PANIC` or `LUNSNAP_RESULT_UNUSABLE`.
#[no_mangle]
pub extern "C" fn lunsnap_is_poisoned(array: *mut lunsnap_array, out: *mut bool) -> lunsnap_result {
    run_h(array, "lunsnap_is_poisoned", || {
        out_arg(out, "out")?;
        let p = with_array(array, |a| Ok(a.is_poisoned()))?;
        put(out, p, "out")
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
    const NAMES: crate::args::BufNames = ("numbers", "capacity", "out_count");
    run_h(array, "lunsnap_luns", || {
        buffer_args(numbers, capacity, out_count, NAMES)?;
        let ns = with_array(array, |a| Ok(a.lun_numbers()))?;
        // SAFETY: the caller passes room for `capacity` numbers at `numbers`.
        unsafe { put_list(&ns, numbers, capacity, out_count, NAMES) }
    })
}

/// The ranges of LUN `lun` lost to metadata damage (a repair, `lunsnap_repair_file`
/// or `lunsnap_repair_callbacks`, could not read their mapping back), in order:
/// they read as `LUNSNAP_RESULT_LOST_DATA`, never as zeros or stale data, until
/// written or discarded (`lunsnap_write`, `lunsnap_write_zeroes` and
/// `lunsnap_discard` remove what they cover; a copy made or attached from the LUN
/// gets its ranges, a restore gives them to the parent). None unless the array was
/// repaired; `lunsnap_lun_info.lost_bytes` is their total.
///
/// `*out_count` receives how many there are, and the first `min(capacity, count)`
/// go to `items` (which may be NULL when `capacity` is 0, to ask for the count).
///
/// Errors: `LUNSNAP_RESULT_LUN_OUT_OF_RANGE`, `LUNSNAP_RESULT_NO_SUCH_LUN`;
/// `LUNSNAP_RESULT_NULL_POINTER` for a NULL `out_count`, or a NULL `items` with
/// `capacity` > 0; `LUNSNAP_RESULT_INVALID_ARGUMENT` for a `capacity` no buffer
/// can have. Nothing is written on error.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (`items` for
/// `capacity` items) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_lost_ranges(
    array: *mut lunsnap_array,
    lun: u32,
    items: *mut lunsnap_lost_range,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    run_h(array, "lunsnap_lost_ranges", || {
        buffer_args(items, capacity, out_count, LIST)?;
        let ranges = with_array(array, |a| Ok(a.lost_ranges(lun)?))?;
        // SAFETY: the caller passes room for `capacity` items at `items`.
        unsafe { put_list(&ranges, items, capacity, out_count, LIST) }
    })
}

/// Verifies every invariant of the metadata (an fsck). `*out_violations` receives
/// the number of violations found (0: consistent); `lunsnap_check_message` gives
/// each one's message and `lunsnap_check_severity` how much it matters. An array
/// rolled back by an open that allowed it (`lunsnap_open_options.allow_rollback`)
/// reports that as one violation of severity `LUNSNAP_SEVERITY_NOTICE`, from then
/// on: an array whose violations are all notices is consistent.
///
/// Errors: `LUNSNAP_RESULT_POISONED`, device errors; `LUNSNAP_RESULT_NULL_POINTER`
/// for a NULL `out_violations`. A failed check keeps the previous report.
#[no_mangle]
pub extern "C" fn lunsnap_check(
    array: *mut lunsnap_array,
    out_violations: *mut usize,
) -> lunsnap_result {
    run_h(array, "lunsnap_check", || {
        out_arg(out_violations, "out_violations")?;
        let n = with_open(array, |o| {
            let v = o.array.check()?;
            o.report = v.iter().map(|v| (report_line(v), v.severity())).collect();
            Ok(o.report.len())
        })?;
        put(out_violations, n, "out_violations")
    })
}

/// A violation as `lunsnap_check_message` gives it: NUL-terminated, no NUL inside.
fn report_line(v: &impl core::fmt::Display) -> Vec<u8> {
    let mut m = format!("{v}").into_bytes();
    m.retain(|&b| b != 0);
    m.push(0);
    m
}

/// Copies message `index` of the last `lunsnap_check` on this handle into `buf`
/// (NUL-terminated, truncated to `buf_len` bytes); `*out_len` receives the full
/// length without the NUL.
///
/// Errors: `LUNSNAP_RESULT_INVALID_ARGUMENT` for an `index` not below the number of
/// violations the last check found (every `index` before the first check);
/// `LUNSNAP_RESULT_NULL_POINTER` for a NULL `out_len`, or a NULL `buf` with
/// `buf_len` > 0.
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
    run_h(array, "lunsnap_check_message", || {
        buffer_args(buf, buf_len, out_len, TEXT)?;
        let msg = with_open(array, |o| Ok(violation(o, index)?.0.clone()))?;
        // SAFETY: the caller passes `buf_len` writable bytes at `buf`.
        unsafe { put_text(&msg[..msg.len() - 1], buf, buf_len, out_len) }
    })
}

/// Violation `index` of the last `lunsnap_check` on the handle.
fn violation(o: &Open, index: usize) -> Result<&(Vec<u8>, lunsnap::Severity), Fail> {
    let n = o.report.len();
    o.report.get(index).ok_or_else(|| {
        Fail::arg(format!(
            "`index` is {index}: the last lunsnap_check on this handle found {n} violations"
        ))
    })
}

/// `*out` receives the severity of violation `index` of the last `lunsnap_check` on
/// this handle, a `lunsnap_severity` value: `LUNSNAP_SEVERITY_NOTICE` (nothing to
/// repair: a rollback an open allowed), `LUNSNAP_SEVERITY_LEAK` (space counted as
/// used that nothing references: wasted, never wrong data) or
/// `LUNSNAP_SEVERITY_DAMAGE` (metadata unreadable or inconsistent). The values
/// grow with the severity, so the worst of a report is the largest.
///
/// Errors: `LUNSNAP_RESULT_INVALID_ARGUMENT` for an `index` not below the number of
/// violations the last check found (as `lunsnap_check_message`);
/// `LUNSNAP_RESULT_NULL_POINTER` for a NULL `out`.
#[no_mangle]
pub extern "C" fn lunsnap_check_severity(
    array: *mut lunsnap_array,
    index: usize,
    out: *mut u32,
) -> lunsnap_result {
    run_h(array, "lunsnap_check_severity", || {
        out_arg(out, "out")?;
        let s = with_open(array, |o| Ok(violation(o, index)?.1))?;
        put(out, lunsnap_severity::from(s) as u32, "out")
    })
}

/// The most lost pages a scrub describes one by one (`lunsnap_scrub_report`'s
/// `lost_listed`); more are only counted.
pub const LUNSNAP_SCRUB_LOST_MAX: u64 = 1000;

/// A scrub's progress: called with `ctx` as given to `lunsnap_scrub`, the number
/// of metadata pages scrubbed so far (one more at each call) and the number of
/// metadata pages in use (`done` may stop short of `total`: pages below a lost one
/// are not read).
#[allow(non_camel_case_types)]
pub type lunsnap_progress_fn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, done: u64, total: u64)>;

/// Scrubs the metadata: commits what is pending (changes, or bad copies reads
/// found), then reads both copies of every metadata page the array uses
/// (superblocks, space maps, the LUN table, every mapping, the hosts) and rewrites
/// each bad copy from its good one, durably, before it returns; `*out` says what
/// it did (set `out->struct_size` to `sizeof *out` first). Pages with no good copy
/// left are counted in `out->lost_count` and described by `lunsnap_scrub_lost`;
/// with one metadata copy (`lunsnap_format_options.metadata_copies`) only the
/// superblock can be healed, and a scrub tells which pages are damaged. Memory: a
/// bit per metadata page.
///
/// `progress`, when not NULL, is called as pages are read, with `ctx`, on the
/// calling thread, while the array is locked: it must not call a `lunsnap_`
/// function on the same array (that would deadlock).
///
/// Errors: `LUNSNAP_RESULT_POISONED`; device errors (which poison the handle, as a
/// failed commit does); `LUNSNAP_RESULT_NULL_POINTER` for a NULL `out`,
/// `LUNSNAP_RESULT_INVALID_ARGUMENT` for a bad `struct_size` (checked before any
/// work). A failed scrub keeps the previous scrub's list.
///
/// # Safety
///
/// `out`, when not NULL, must be valid for writing its `struct_size` bytes;
/// `progress`, when not NULL, must be safe to call with `ctx` for the duration of
/// the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_scrub(
    array: *mut lunsnap_array,
    progress: lunsnap_progress_fn,
    ctx: *mut c_void,
    out: *mut lunsnap_scrub_report,
) -> lunsnap_result {
    run_h(array, "lunsnap_scrub", || {
        // SAFETY: the caller passes NULL or a struct that starts with its size.
        let n = unsafe { caller_size(out, "out")? };
        let report = with_open(array, |o| {
            let r = o.array.scrub(|done, total| {
                if let Some(f) = progress {
                    // SAFETY: the caller passes a callback that may be called with
                    // `ctx` during the call.
                    unsafe { f(ctx, done, total) }
                }
            })?;
            o.scrub_lost = r.lost.iter().map(|p| (p.addr, report_line(p))).collect();
            Ok(lunsnap_scrub_report::from(&r))
        })?;
        // SAFETY: `n` checked, and the caller passes `n` writable bytes at `out`.
        unsafe { write_out(out, n, &report) };
        Ok(())
    })
}

/// Lost page `index` of the last `lunsnap_scrub` on this handle (below its
/// report's `lost_listed`): `*out_addr` receives the page's address (in 4 KiB
/// pages from the device's start), and its message (which page, and why its
/// copies are bad, e.g. "metadata page 37: no good copy left: checksum mismatch in
/// metadata page 37: the metadata is corrupt") goes to `buf` with the text
/// convention of `lunsnap_check_message`.
///
/// Errors: `LUNSNAP_RESULT_INVALID_ARGUMENT` for an `index` not below the number of
/// pages the last scrub listed (every `index` before the first scrub, or after a
/// scrub that lost nothing); `LUNSNAP_RESULT_NULL_POINTER` for a NULL `out_addr` or
/// `out_len`, or a NULL `buf` with `buf_len` > 0.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (buffers for
/// their whole length) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_scrub_lost(
    array: *mut lunsnap_array,
    index: usize,
    out_addr: *mut u64,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> lunsnap_result {
    run_h(array, "lunsnap_scrub_lost", || {
        out_arg(out_addr, "out_addr")?;
        buffer_args(buf, buf_len, out_len, TEXT)?;
        let (addr, msg) = with_open(array, |o| {
            let n = o.scrub_lost.len();
            o.scrub_lost.get(index).cloned().ok_or_else(|| {
                Fail::arg(format!(
                    "`index` is {index}: the last lunsnap_scrub on this handle listed {n} lost pages"
                ))
            })
        })?;
        // SAFETY: the caller passes `buf_len` writable bytes at `buf`.
        unsafe { put_text(&msg[..msg.len() - 1], buf, buf_len, out_len)? };
        put(out_addr, addr, "out_addr")
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
    run_on(array, "lunsnap_set_online", |a| a.set_online(lun, online))
}

/// A consistency group: creates copy `copies[i]` of `parents[i]` for every `i` below
/// `count`, all at one point in time, attached or detached (as
/// `lunsnap_create_copy`). All or nothing: any error changes nothing. The arrays
/// may be NULL only when `count` is 0.
///
/// The checks come in this order, so that the code does not depend on the order
/// of the pairs: first the arguments (`LUNSNAP_RESULT_NULL_POINTER`, and
/// `LUNSNAP_RESULT_INVALID_ARGUMENT` for a `count` no array can have); then the
/// group's shape, `LUNSNAP_RESULT_INVALID_ARGUMENT` for `count` 0, a copy number
/// given twice, or a copy number that is also a parent in the group (so
/// `{0,10},{10,11}` and `{10,11},{0,10}` both give it, whether LUN 10 exists or
/// not); then each pair in turn as `lunsnap_create_copy` checks it (the copy's
/// number in range, `LUNSNAP_RESULT_LUN_OUT_OF_RANGE`; the parent existing,
/// `LUNSNAP_RESULT_NO_SUCH_LUN` or `LUNSNAP_RESULT_LUN_OUT_OF_RANGE`; the copy's
/// number free, `LUNSNAP_RESULT_LUN_EXISTS`; an attached copy's parent attached,
/// `LUNSNAP_RESULT_PARENT_DETACHED`); then the reservation of the whole group,
/// `LUNSNAP_RESULT_NO_SPACE`.
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
    run_h(array, "lunsnap_create_copies", || {
        // SAFETY: the caller passes `count` readable numbers at each pointer.
        let (ps, cs) = unsafe {
            (
                slice_in(parents, count, ("parents", "count"))?,
                slice_in(copies, count, ("copies", "count"))?,
            )
        };
        let pairs: Vec<(u32, u32)> = ps.iter().copied().zip(cs.iter().copied()).collect();
        with_array(array, |a| Ok(a.create_copies(&pairs, attached)?))
    })
}

/// A consistency group: attaches (or refreshes) every copy in `copies[0..count]` at
/// one point in time, each its parent's image as it was before any of them changed.
/// All or nothing: any error `lunsnap_attach` gives, `count` 0 or a copy given twice
/// (`LUNSNAP_RESULT_INVALID_ARGUMENT`) changes nothing. `copies` may be NULL only
/// when `count` is 0. The images the copies had go to the free queue, as with
/// `lunsnap_attach`.
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
    run_h(array, "lunsnap_attach_many", || {
        // SAFETY: the caller passes `count` readable numbers at `copies`.
        let cs = unsafe { slice_in(copies, count, ("copies", "count"))? };
        with_array(array, |a| Ok(a.attach_many(cs)?))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_lost_page_limit_is_the_cores() {
        assert_eq!(
            super::LUNSNAP_SCRUB_LOST_MAX,
            lunsnap::engine::MAX_PROBLEMS as u64
        );
    }
}
