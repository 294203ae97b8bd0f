//! Hosts and security: registering hosts, their grants on LUNs, the security
//! switch, and which LUNs a host may discover.

use alloc::vec::Vec;
use core::ffi::c_char;

use alloc::format;

use crate::args::{
    buffer_args, out_arg, put, put_list, put_text, run_h, run_on, str_in, BufNames, LIST, TEXT,
};
use crate::fail::Fail;
use crate::handle::with_array;
use crate::types::lunsnap_host_grant;
use crate::{lunsnap_access, lunsnap_array, lunsnap_result};

/// Registers host `host` (a 64-bit, WWN-like id) with the label `name` (UTF-8, at
/// most 56 bytes; NULL is the empty label). Committed before it returns.
///
/// Errors: `LUNSNAP_RESULT_HOST_EXISTS`; `LUNSNAP_RESULT_TOO_MANY_HOSTS` when the
/// array already has 64 hosts; `LUNSNAP_RESULT_INVALID_ARGUMENT` for a name that is
/// not UTF-8 or is longer than 56 bytes; `LUNSNAP_RESULT_POISONED`, device errors.
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
    run_h(array, "lunsnap_add_host", || {
        // SAFETY: the caller passes NULL or a NUL-terminated string that outlives
        // the call (the reference is used only during it).
        let name = unsafe { str_in(name, "name", lunsnap_result::InvalidArgument)? };
        with_array(array, |a| Ok(a.add_host(host, name.unwrap_or(""))?))
    })
}

/// Unregisters host `host` and removes its grants.
///
/// Errors: `LUNSNAP_RESULT_NO_SUCH_HOST`.
#[no_mangle]
pub extern "C" fn lunsnap_remove_host(array: *mut lunsnap_array, host: u64) -> lunsnap_result {
    run_on(array, "lunsnap_remove_host", |a| a.remove_host(host))
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
    const NAMES: BufNames = ("ids", "capacity", "out_count");
    run_h(array, "lunsnap_hosts", || {
        buffer_args(ids, capacity, out_count, NAMES)?;
        let hs: Vec<u64> = with_array(array, |a| Ok(a.hosts().iter().map(|h| h.id).collect()))?;
        // SAFETY: the caller passes room for `capacity` ids at `ids`.
        unsafe { put_list(&hs, ids, capacity, out_count, NAMES) }
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
    run_h(array, "lunsnap_host_name", || {
        buffer_args(buf, buf_len, out_len, TEXT)?;
        let name = with_array(array, |a| {
            a.hosts()
                .into_iter()
                .find(|h| h.id == host)
                .map(|h| h.name)
                .ok_or_else(|| lunsnap::Error::NoSuchHost(host).into())
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
    run_h(array, "lunsnap_grant", || {
        let access = lunsnap_access::from_c(access).ok_or_else(|| {
            Fail::arg(format!(
                "`access` is {access}: not a lunsnap_access value (LUNSNAP_ACCESS_READ or LUNSNAP_ACCESS_READ_WRITE)"
            ))
        })?;
        with_array(array, |a| Ok(a.grant(lun, host, access)?))
    })
}

/// Removes the grant of host `host` on LUN `lun`.
///
/// Errors: `LUNSNAP_RESULT_NOT_GRANTED`, `LUNSNAP_RESULT_NO_SUCH_HOST`,
/// `LUNSNAP_RESULT_NO_SUCH_LUN`, `LUNSNAP_RESULT_LUN_OUT_OF_RANGE`.
#[no_mangle]
pub extern "C" fn lunsnap_revoke(array: *mut lunsnap_array, lun: u32, host: u64) -> lunsnap_result {
    run_on(array, "lunsnap_revoke", |a| a.revoke(lun, host))
}

/// Turns host access control on (`enabled`) or off (every host sees every LUN).
/// Committed before it returns. It governs the `*_as` calls only: the plain calls
/// (`lunsnap_read`, `lunsnap_write`, ...) act as the array itself and bypass host
/// security.
#[no_mangle]
pub extern "C" fn lunsnap_set_security(array: *mut lunsnap_array, enabled: bool) -> lunsnap_result {
    run_on(array, "lunsnap_set_security", |a| a.set_security(enabled))
}

/// `*out` receives whether host access control is on.
#[no_mangle]
pub extern "C" fn lunsnap_security_enabled(
    array: *mut lunsnap_array,
    out: *mut bool,
) -> lunsnap_result {
    run_h(array, "lunsnap_security_enabled", || {
        out_arg(out, "out")?;
        let on = with_array(array, |a| Ok(a.security_enabled()))?;
        put(out, on, "out")
    })
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
    const NAMES: BufNames = ("numbers", "capacity", "out_count");
    run_h(array, "lunsnap_visible_luns", || {
        buffer_args(numbers, capacity, out_count, NAMES)?;
        let ns = with_array(array, |a| Ok(a.as_host(host).visible_luns()))?;
        // SAFETY: the caller passes room for `capacity` numbers at `numbers`.
        unsafe { put_list(&ns, numbers, capacity, out_count, NAMES) }
    })
}

/// The grants on LUN `lun`, by increasing host id: each a host and its access (a
/// `lunsnap_access` value), whether security is enabled or not. Same list
/// convention as `lunsnap_luns`: `*out_count` receives how many there are, the
/// first `min(capacity, count)` go to `items` (NULL allowed when `capacity` is 0).
///
/// Errors: `LUNSNAP_RESULT_LUN_OUT_OF_RANGE`, `LUNSNAP_RESULT_NO_SUCH_LUN`; the
/// pointer and capacity errors of `lunsnap_luns`. Nothing is written on error.
///
/// # Safety
///
/// Every non-NULL pointer must be valid for the access described (`items` for
/// `capacity` items) for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_grants(
    array: *mut lunsnap_array,
    lun: u32,
    items: *mut lunsnap_host_grant,
    capacity: usize,
    out_count: *mut usize,
) -> lunsnap_result {
    run_h(array, "lunsnap_grants", || {
        buffer_args(items, capacity, out_count, LIST)?;
        let gs = with_array(array, |a| Ok(a.grants(lun)?))?;
        // SAFETY: the caller passes room for `capacity` items at `items`.
        unsafe { put_list(&gs, items, capacity, out_count, LIST) }
    })
}
