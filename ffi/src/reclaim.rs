//! Background freeing: the mappings that management operations drop wait in a
//! durable free queue; `lunsnap_reclaim` works it off a budget at a time, and the
//! array says whether anything waits and how many bytes.

use crate::args::{out_arg, put, run_h};
use crate::handle::with_array;
use crate::sized::{caller_size, write_out};
use crate::types::lunsnap_reclaim_stats;
use crate::{lunsnap_array, lunsnap_result};

/// The units of work a `lunsnap_flush` that commits does on the free queue before
/// its commit (see `lunsnap_reclaim`).
pub const LUNSNAP_RECLAIM_PER_FLUSH: u64 = 4096;

/// Frees dropped mappings until `budget` units of work are done or nothing waits,
/// and commits what it freed (no commit when there was nothing to do). `*out`,
/// when `out` is not NULL, says what it did: set `out->struct_size` to `sizeof
/// *out` first (the library fills the fields inside it and never writes past it).
///
/// Background freeing: `lunsnap_delete`, `lunsnap_detach`, `lunsnap_attach`,
/// `lunsnap_attach_many` and `lunsnap_restore` return after the same small amount
/// of work whatever the size of the mapping they drop: they put it on a durable
/// free queue (`lunsnap_pool_info.reclaim_queue` counts its entries) and its space
/// is freed later. Until then the data only queued mappings hold still counts in
/// `lunsnap_pool_info.allocated_bytes` (`lunsnap_pending_bytes` says how much) and
/// is not yet passed to the device's `discard` callback (that happens after the
/// commit that frees it); it is promised to no LUN, so reservations stay exact and
/// no write fails for lack of it. The queue is worked off:
/// - by this function: hosts should call it when idle, until `remaining` is 0 (or
///   `lunsnap_reclaim_pending` says false), with any budget: a call that does work
///   commits once, so bigger budgets mean fewer commits and smaller ones shorter
///   calls (`LUNSNAP_RECLAIM_PER_FLUSH` units take well under a millisecond of
///   CPU, plus the commit's I/O);
/// - by every `lunsnap_flush` that commits (see `lunsnap_flush`), which first
///   does `LUNSNAP_RECLAIM_PER_FLUSH` units of work; a flush with nothing to
///   commit does none;
/// - synchronously, by a write that needs a data extent when none is free (or an
///   operation that finds metadata space short): it frees queued mappings until
///   enough is free and commits before it goes on, so that one call takes longer.
///
/// The queue is committed with the array: after a power cut or a close, the next
/// open resumes from what was committed.
///
/// A unit of work is one node of a dropped mapping visited (a metadata page: freed
/// when no other mapping shares it, else it only loses a reference) or one data
/// extent reference released. A leaf is handled whole, so the work done may pass
/// `budget` by the extent references of the last leaf. A `budget` of 0 does
/// nothing (no commit) and reports the entries waiting in `remaining`.
///
/// Errors: `LUNSNAP_RESULT_POISONED`; device errors (which poison the handle, as a
/// failed commit does); `LUNSNAP_RESULT_INVALID_ARGUMENT` for a bad
/// `out->struct_size` (as `lunsnap_get_lun_info`; checked before any work).
/// Nothing is written to `out` on error.
///
/// # Safety
///
/// `out`, when not NULL, must be valid for writing its `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn lunsnap_reclaim(
    array: *mut lunsnap_array,
    budget: u64,
    out: *mut lunsnap_reclaim_stats,
) -> lunsnap_result {
    run_h(array, "lunsnap_reclaim", || {
        let n = if out.is_null() {
            None
        } else {
            // SAFETY: not NULL; the caller passes a struct that starts with its size.
            Some(unsafe { caller_size(out, "out")? })
        };
        let stats = with_array(array, |a| Ok(a.reclaim(budget)?))?;
        if let Some(n) = n {
            // SAFETY: `n` checked, and the caller passes `n` writable bytes at `out`.
            unsafe { write_out(out, n, &lunsnap_reclaim_stats::from(stats)) };
        }
        Ok(())
    })
}

/// `*out` receives whether dropped mappings wait in the free queue
/// (`lunsnap_pool_info.reclaim_queue` > 0; see `lunsnap_reclaim`). Cheap: no
/// device access.
///
/// Errors: `LUNSNAP_RESULT_NULL_POINTER` for a NULL `out`.
#[no_mangle]
pub extern "C" fn lunsnap_reclaim_pending(
    array: *mut lunsnap_array,
    out: *mut bool,
) -> lunsnap_result {
    run_h(array, "lunsnap_reclaim_pending", || {
        out_arg(out, "out")?;
        let p = with_array(array, |a| Ok(a.reclaim_pending()))?;
        put(out, p, "out")
    })
}

/// `*out` receives the bytes of data that wait to be freed: the data extents that
/// only mappings in the free queue hold (see `lunsnap_reclaim`). They count in
/// `lunsnap_pool_info.allocated_bytes` until reclaimed, so `allocated_bytes`
/// drops by this much once the queue is worked off (unless writes allocate
/// meanwhile). Exact.
///
/// Cost: 0 at once when nothing waits; otherwise every live mapping is walked (as
/// `lunsnap_get_lun_info` walks one: time grows with the data the LUNs map), with
/// a byte of memory per metadata page and per data extent (extents counted in
/// chunks of at most 4 Mi). Nothing is written.
///
/// Errors: device errors and metadata damage met on the walk;
/// `LUNSNAP_RESULT_NULL_POINTER` for a NULL `out`.
#[no_mangle]
pub extern "C" fn lunsnap_pending_bytes(
    array: *mut lunsnap_array,
    out: *mut u64,
) -> lunsnap_result {
    run_h(array, "lunsnap_pending_bytes", || {
        out_arg(out, "out")?;
        let b = with_array(array, |a| Ok(a.pending_bytes()?))?;
        put(out, b, "out")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flush_budget_is_the_cores() {
        assert_eq!(LUNSNAP_RECLAIM_PER_FLUSH, 4096);
        assert_eq!(LUNSNAP_RECLAIM_PER_FLUSH, lunsnap::RECLAIM_PER_FLUSH);
    }
}
