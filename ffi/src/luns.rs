//! LUNs and business copies: creating, attaching, detaching, deleting, restoring
//! and taking them offline, consistency groups, and what the array reports about
//! them (LUN and pool information, the LUN list, the metadata check).

use alloc::format;
use alloc::vec::Vec;
use core::ffi::c_char;

use crate::args::{buffer_args, out_arg, put, put_list, put_text, run, run_on, slice_in};
use crate::handle::{with_array, with_open};
use crate::{lunsnap_array, lunsnap_lun_info, lunsnap_pool_info, lunsnap_result};

/// Creates LUN `lun` of `size` bytes (reads as zeros; reserves `size`).
#[no_mangle]
pub extern "C" fn lunsnap_create_lun(
    array: *mut lunsnap_array,
    lun: u32,
    size: u64,
) -> lunsnap_result {
    run_on(array, |a| a.create_lun(lun, size))
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
    run_on(array, |a| a.create_copy(parent, lun, attached))
}

/// Makes (or refreshes) copy `lun` as its parent's image now.
#[no_mangle]
pub extern "C" fn lunsnap_attach(array: *mut lunsnap_array, lun: u32) -> lunsnap_result {
    run_on(array, |a| a.attach(lun))
}

/// Discards copy `lun`'s data and reservation; the number stays a detached copy.
#[no_mangle]
pub extern "C" fn lunsnap_detach(array: *mut lunsnap_array, lun: u32) -> lunsnap_result {
    run_on(array, |a| a.detach(lun))
}

/// Deletes LUN `lun`. A LUN with copies is refused unless `orphan_copies`.
#[no_mangle]
pub extern "C" fn lunsnap_delete(
    array: *mut lunsnap_array,
    lun: u32,
    orphan_copies: bool,
) -> lunsnap_result {
    run_on(array, |a| a.delete(lun, orphan_copies))
}

/// Makes the parent of copy `lun` read the copy's current contents.
#[no_mangle]
pub extern "C" fn lunsnap_restore(array: *mut lunsnap_array, lun: u32) -> lunsnap_result {
    run_on(array, |a| a.restore(lun))
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
        out_arg(out)?;
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
        out_arg(out)?;
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
        buffer_args(numbers, capacity, out_count)?;
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
        out_arg(out_violations)?;
        let n = with_open(array, |o| {
            let v = o.array.check()?;
            o.report = v.iter().map(report_line).collect();
            Ok(o.report.len())
        })?;
        put(out_violations, n)
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
        buffer_args(buf, buf_len, out_len)?;
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

/// Takes LUN `lun` offline (`online` false: I/O refused with
/// `LUNSNAP_RESULT_OFFLINE`, management operations allowed) or brings it back
/// online. Persistent; committed before it returns.
#[no_mangle]
pub extern "C" fn lunsnap_set_online(
    array: *mut lunsnap_array,
    lun: u32,
    online: bool,
) -> lunsnap_result {
    run_on(array, |a| a.set_online(lun, online))
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
        let (ps, cs) = unsafe { (slice_in(parents, count)?, slice_in(copies, count)?) };
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
        let cs = unsafe { slice_in(copies, count)? };
        with_array(array, |a| Ok(a.attach_many(cs)?))
    })
}
