//! I/O on LUNs: reading, writing, discarding and zeroing, what a LUN maps and where
//! two LUNs differ, either as the array itself (the plain calls, which bypass host
//! security) or on behalf of a host (the `*_as` calls, through
//! [`lunsnap::Array::as_host`]); and the zero-detection switch. Each pair of
//! exports shares one function, given the host as an `Option` (`None`: the array
//! itself).

use crate::args::{buffer_args, out_arg, put, put_list, run_h, run_on, slice_in, slice_out, LIST};
use crate::handle::with_array;
use crate::{lunsnap_array, lunsnap_diff_range, lunsnap_map_range, lunsnap_result};

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
    let func = if host.is_some() {
        "lunsnap_read_as"
    } else {
        "lunsnap_read"
    };
    run_h(array, func, || {
        // SAFETY: the caller passes `len` writable bytes at `buf`, not aliased
        // during the call.
        let b = unsafe { slice_out(buf, len, ("buf", "len"))? };
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
    let func = if host.is_some() {
        "lunsnap_write_as"
    } else {
        "lunsnap_write"
    };
    run_h(array, func, || {
        // SAFETY: the caller passes `len` readable bytes at `buf`.
        let b = unsafe { slice_in(buf, len, ("buf", "len"))? };
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
    let func = if host.is_some() {
        "lunsnap_discard_as"
    } else {
        "lunsnap_discard"
    };
    run_on(array, func, |a| match host {
        None => a.discard(lun, offset, len),
        Some(h) => a.as_host(h).discard(lun, offset, len),
    })
}

/// Makes `len` bytes of LUN `lun` from `offset` read as zeros (unmapping whole
/// extents if `punch`), as the array itself (`host` None) or as `host`.
fn write_zeroes(
    array: *mut lunsnap_array,
    host: Option<u64>,
    lun: u32,
    offset: u64,
    len: u64,
    punch: bool,
) -> lunsnap_result {
    let func = if host.is_some() {
        "lunsnap_write_zeroes_as"
    } else {
        "lunsnap_write_zeroes"
    };
    run_on(array, func, |a| match host {
        None => a.write_zeroes(lun, offset, len, punch),
        Some(h) => a.as_host(h).write_zeroes(lun, offset, len, punch),
    })
}

/// The ranges of LUN `lun` from `offset` for `len` bytes, as the array itself
/// (`host` None) or as `host`, with their sharing (`sharing`: see `lunsnap_map`)
/// or without (see `lunsnap_map_allocation`), into `items`.
///
/// # Safety
///
/// `items`, when not NULL, must be valid for writing `capacity` items for the
/// duration of the call, and not accessed otherwise during it.
#[allow(clippy::too_many_arguments)]
unsafe fn map(
    array: *mut lunsnap_array,
    host: Option<u64>,
    sharing: bool,
    lun: u32,
    offset: u64,
    len: u64,
    items: *mut lunsnap_map_range,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    let func = match (host.is_some(), sharing) {
        (false, true) => "lunsnap_map",
        (true, true) => "lunsnap_map_as",
        (false, false) => "lunsnap_map_allocation",
        (true, false) => "lunsnap_map_allocation_as",
    };
    run_h(array, func, || {
        buffer_args(items, capacity, out_count, LIST)?;
        let ranges = with_array(array, |a| {
            Ok(match (host, sharing) {
                (None, true) => a.map(lun, offset, len)?,
                (Some(h), true) => a.as_host(h).map(lun, offset, len)?,
                (None, false) => a.map_allocation(lun, offset, len)?,
                (Some(h), false) => a.as_host(h).map_allocation(lun, offset, len)?,
            })
        })?;
        // SAFETY: the caller passes room for `capacity` items at `items`.
        unsafe { put_list(&ranges, items, capacity, out_count, LIST) }
    })
}

/// The ranges where LUNs `lun_a` and `lun_b` may differ from `offset` for `len`
/// bytes, as the array itself (`host` None) or as `host`, into `items` (see
/// `lunsnap_diff`).
///
/// # Safety
///
/// `items`, when not NULL, must be valid for writing `capacity` items for the
/// duration of the call, and not accessed otherwise during it.
#[allow(clippy::too_many_arguments)]
unsafe fn diff(
    array: *mut lunsnap_array,
    host: Option<u64>,
    lun_a: u32,
    lun_b: u32,
    offset: u64,
    len: u64,
    items: *mut lunsnap_diff_range,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    let func = if host.is_some() {
        "lunsnap_diff_as"
    } else {
        "lunsnap_diff"
    };
    run_h(array, func, || {
        buffer_args(items, capacity, out_count, LIST)?;
        let ranges = with_array(array, |a| {
            Ok(match host {
                None => a.diff(lun_a, lun_b, offset, len)?,
                Some(h) => a.as_host(h).diff(lun_a, lun_b, offset, len)?,
            })
        })?;
        // SAFETY: the caller passes room for `capacity` items at `items`.
        unsafe { put_list(&ranges, items, capacity, out_count, LIST) }
    })
}

/// Reads `len` bytes of LUN `lun` at byte `offset` into `buf` (offset and length
/// multiples of 512). `buf` may be NULL only when `len` is 0. As the array itself:
/// host security does not apply (`lunsnap_read_as` reads on behalf of a host).
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
/// Durable at the next `lunsnap_flush` or management operation. As the array
/// itself: host security does not apply, whatever the grants (`lunsnap_write_as`
/// writes on behalf of a host).
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
/// The data extents this frees are then discarded on the device (a host device's
/// `discard` callback; see `lunsnap_device_callbacks`).
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

/// Makes `len` bytes of LUN `lun` from byte `offset` read as zeros (offset and
/// length multiples of 512), as a data write: durable at the next `lunsnap_flush`
/// or management operation, and no commit of its own (unlike `lunsnap_discard`).
///
/// With `punch` (NBD's TRIM and WRITE_ZEROES), every whole extent in the range is
/// unmapped: it then occupies no space and is no longer shared with copies; the
/// parts of extents the range covers only in part are written with zeros (an
/// extent shared with a copy is copied first). Without `punch` (NBD's WRITE_ZEROES
/// with NO_HOLE: allocation follows writes), the whole range is written with zeros
/// and stays allocated, whatever `lunsnap_set_detect_zeros` says.
///
/// Cost: with `punch`, a mapping update per whole extent (no data written) and at
/// most two partial extents written; without, as `lunsnap_write` of `len` bytes
/// (through a zero buffer of at most 1 MiB, allocated per call). Extents this
/// frees are discarded on the device after the commit that makes the change
/// durable. `len` 0 checks the arguments and changes nothing.
///
/// Errors: as `lunsnap_write`: `LUNSNAP_RESULT_MISALIGNED`,
/// `LUNSNAP_RESULT_OUT_OF_RANGE` (also when `offset + len` overflows),
/// `LUNSNAP_RESULT_NO_SUCH_LUN`, `LUNSNAP_RESULT_LUN_OUT_OF_RANGE`,
/// `LUNSNAP_RESULT_DETACHED`, `LUNSNAP_RESULT_OFFLINE`, `LUNSNAP_RESULT_POISONED`,
/// device errors.
#[no_mangle]
pub extern "C" fn lunsnap_write_zeroes(
    array: *mut lunsnap_array,
    lun: u32,
    offset: u64,
    len: u64,
    punch: bool,
) -> lunsnap_result {
    write_zeroes(array, None, lun, offset, len, punch)
}

/// `lunsnap_write_zeroes` on behalf of host `host` (a write: refused as
/// `lunsnap_write_as` refuses, with `LUNSNAP_RESULT_NO_SUCH_LUN` for a LUN the host
/// may not see and `LUNSNAP_RESULT_READ_ONLY_ACCESS` for one it may only read).
#[no_mangle]
pub extern "C" fn lunsnap_write_zeroes_as(
    array: *mut lunsnap_array,
    host: u64,
    lun: u32,
    offset: u64,
    len: u64,
    punch: bool,
) -> lunsnap_result {
    write_zeroes(array, Some(host), lun, offset, len, punch)
}

/// What LUN `lun` maps from byte `offset` for `len` bytes (multiples of 512): its
/// ranges in order, covering the request exactly, each data (`data` true; `shared`
/// true when another LUN maps the same extents) or a hole (reads as zeros, occupies
/// no space), and `lost` where the contents were lost to metadata damage
/// (`lunsnap_lost_ranges`), adjacent ranges of the same kind merged. Mapping is per
/// extent: a boundary inside the request falls on an extent boundary or on the edge
/// of a lost range (a sector boundary). `len` 0 gives no ranges.
///
/// `*out_count` receives how many ranges there are, and the first
/// `min(capacity, count)` go to `items` (which may be NULL when `capacity` is 0, to
/// ask for the count); with too small a buffer, call again with a bigger one (or
/// ask for the rest of the LUN from the end of the last range received).
///
/// Cost: reads the mapping entries inside the range plus the mapping tree's depth,
/// and one reference count per mapped extent, whatever the LUN's size; but while
/// dropped mappings wait to be freed (`lunsnap_reclaim_pending`), whose references
/// still count, every live mapping is walked instead to keep `shared` exact
/// (`lunsnap_map_allocation` does without `shared`). The whole list is built
/// (memory in proportion to the number of ranges) even when `capacity` is
/// smaller.
///
/// Errors: as `lunsnap_read` (`LUNSNAP_RESULT_MISALIGNED`,
/// `LUNSNAP_RESULT_OUT_OF_RANGE`, `LUNSNAP_RESULT_NO_SUCH_LUN`,
/// `LUNSNAP_RESULT_LUN_OUT_OF_RANGE`, `LUNSNAP_RESULT_DETACHED`, device errors),
/// except that an offline LUN may be mapped (only its metadata is read);
/// `LUNSNAP_RESULT_NULL_POINTER` for a
/// NULL `out_count`, or a NULL `items` with `capacity` > 0;
/// `LUNSNAP_RESULT_INVALID_ARGUMENT` for a `capacity` no buffer can have. Nothing
/// is written on error.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (`items` for
/// `capacity` items) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_map(
    array: *mut lunsnap_array,
    lun: u32,
    offset: u64,
    len: u64,
    items: *mut lunsnap_map_range,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `map`'s.
    unsafe {
        map(
            array, None, true, lun, offset, len, items, capacity, out_count,
        )
    }
}

/// `lunsnap_map` on behalf of host `host`. With security enabled, a LUN the host
/// has no grant on gives `LUNSNAP_RESULT_NO_SUCH_LUN`, as a missing one does; a
/// read grant is enough.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (`items` for
/// `capacity` items) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_map_as(
    array: *mut lunsnap_array,
    host: u64,
    lun: u32,
    offset: u64,
    len: u64,
    items: *mut lunsnap_map_range,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `map`'s.
    unsafe {
        map(
            array,
            Some(host),
            true,
            lun,
            offset,
            len,
            items,
            capacity,
            out_count,
        )
    }
}

/// `lunsnap_map` without the sharing: the same ranges of data, holes and lost
/// contents, but `shared` is always false (adjacent data ranges that `lunsnap_map`
/// tells apart only by their sharing come merged). For hosts that only ask where
/// the data is (NBD's block status): no reference count is read, and while dropped
/// mappings wait to be freed (`lunsnap_reclaim_pending`) the other LUNs' mappings
/// are not walked, as `lunsnap_map` then walks them to keep `shared` exact, so the
/// cost is the mapping entries inside the range plus the tree's depth. Same
/// arguments, list convention and errors as `lunsnap_map`.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (`items` for
/// `capacity` items) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_map_allocation(
    array: *mut lunsnap_array,
    lun: u32,
    offset: u64,
    len: u64,
    items: *mut lunsnap_map_range,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `map`'s.
    unsafe {
        map(
            array, None, false, lun, offset, len, items, capacity, out_count,
        )
    }
}

/// `lunsnap_map_allocation` on behalf of host `host` (as `lunsnap_map_as`: with
/// security enabled, a LUN the host has no grant on gives
/// `LUNSNAP_RESULT_NO_SUCH_LUN`; a read grant is enough).
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (`items` for
/// `capacity` items) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_map_allocation_as(
    array: *mut lunsnap_array,
    host: u64,
    lun: u32,
    offset: u64,
    len: u64,
    items: *mut lunsnap_map_range,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `map`'s.
    unsafe {
        map(
            array,
            Some(host),
            false,
            lun,
            offset,
            len,
            items,
            capacity,
            out_count,
        )
    }
}

/// Where LUNs `lun_a` and `lun_b` may differ, from byte `offset` for `len` bytes
/// (multiples of 512, inside both LUNs): the ranges in order, adjacent ones merged.
/// Exact at extent granularity: every extent one of them maps and the other maps to
/// a different extent or not at all is reported (even if the bytes happen to be
/// equal), and a range not reported is equal in both; ranges lost to metadata
/// damage in either LUN (`lunsnap_lost_ranges`) are reported too, to the sector,
/// never claimed equal. Same list convention as
/// `lunsnap_map`: `*out_count` receives how many ranges there are, the first
/// `min(capacity, count)` go to `items` (NULL allowed when `capacity` is 0).
///
/// Cost: the two mappings are walked together and every subtree they share is
/// skipped, so for LUNs of one lineage (a copy and its parent, two copies of one
/// parent, copies taken at different times) it grows with what changed between
/// them times the tree's depth, not with their size; unrelated LUNs are compared
/// in full. The whole list is built even when `capacity` is smaller.
///
/// Errors: as `lunsnap_read` for each LUN, except that an offline LUN may be
/// compared (`LUNSNAP_RESULT_MISALIGNED`, `LUNSNAP_RESULT_OUT_OF_RANGE` when the
/// range is not inside both, `LUNSNAP_RESULT_NO_SUCH_LUN`,
/// `LUNSNAP_RESULT_LUN_OUT_OF_RANGE`, `LUNSNAP_RESULT_DETACHED`, device errors);
/// the pointer and capacity errors of `lunsnap_map`. Nothing is written on error.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (`items` for
/// `capacity` items) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_diff(
    array: *mut lunsnap_array,
    lun_a: u32,
    lun_b: u32,
    offset: u64,
    len: u64,
    items: *mut lunsnap_diff_range,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `diff`'s.
    unsafe {
        diff(
            array, None, lun_a, lun_b, offset, len, items, capacity, out_count,
        )
    }
}

/// `lunsnap_diff` on behalf of host `host`: with security enabled, both LUNs must
/// be visible to it (a read grant is enough), else `LUNSNAP_RESULT_NO_SUCH_LUN`.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (`items` for
/// `capacity` items) for the duration of the call.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lunsnap_diff_as(
    array: *mut lunsnap_array,
    host: u64,
    lun_a: u32,
    lun_b: u32,
    offset: u64,
    len: u64,
    items: *mut lunsnap_diff_range,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    // SAFETY: the caller's contract is `diff`'s.
    unsafe {
        diff(
            array,
            Some(host),
            lun_a,
            lun_b,
            offset,
            len,
            items,
            capacity,
            out_count,
        )
    }
}

/// Turns zero detection on (`on`; the default) or off. With it on, a write (plain
/// or `*_as`) that covers a whole extent with zeros unmaps that extent instead of
/// storing the zeros: the range reads as zeros either way, but occupies no space
/// and is no longer shared with copies (the cost: each whole extent a write covers
/// is scanned for zeros). Turn it off where allocation must follow writes.
/// A setting of this handle, not stored on the device: a newly formatted or opened
/// handle starts with it on; `lunsnap_reopen` keeps it.
#[no_mangle]
pub extern "C" fn lunsnap_set_detect_zeros(array: *mut lunsnap_array, on: bool) -> lunsnap_result {
    run_h(array, "lunsnap_set_detect_zeros", || {
        with_array(array, |a| {
            a.set_detect_zeros(on);
            Ok(())
        })
    })
}

/// `*out` receives whether zero detection is on (see `lunsnap_set_detect_zeros`).
#[no_mangle]
pub extern "C" fn lunsnap_detect_zeros(
    array: *mut lunsnap_array,
    out: *mut bool,
) -> lunsnap_result {
    run_h(array, "lunsnap_detect_zeros", || {
        out_arg(out, "out")?;
        let on = with_array(array, |a| Ok(a.detect_zeros()))?;
        put(out, on, "out")
    })
}
