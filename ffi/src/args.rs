//! The helpers every export shares: running its body (panics caught), turning C
//! pointer arguments into Rust references after checking them, and writing
//! out-parameters. A NULL pointer where data is needed is
//! `LUNSNAP_RESULT_NULL_POINTER`; a length no buffer can have (over `isize::MAX`
//! bytes) is `LUNSNAP_RESULT_INVALID_ARGUMENT`.

use core::ffi::c_char;

use lunsnap::Array;

use crate::device::AnyDevice;
use crate::guard;
use crate::handle::{lunsnap_array, with_array};
use crate::result::lunsnap_result;

/// What an export's body returns: `Ok` becomes `LUNSNAP_RESULT_OK`.
pub(crate) type R = Result<(), lunsnap_result>;

/// Runs an export's body: a panic becomes `LUNSNAP_RESULT_PANIC`.
pub(crate) fn run(f: impl FnOnce() -> R) -> lunsnap_result {
    match guard::catch(f) {
        Some(Ok(())) => lunsnap_result::Ok,
        Some(Err(e)) => e,
        None => lunsnap_result::Panic,
    }
}

/// Runs `op` on the array behind `array` as an export's body (the lock held, its
/// error and any panic turned into a result code: see [`with_array`]).
pub(crate) fn run_on(
    array: *mut lunsnap_array,
    op: impl FnOnce(&mut Array<AnyDevice>) -> lunsnap::Result<()>,
) -> lunsnap_result {
    run(|| with_array(array, |a| Ok(op(a)?)))
}

/// Checks that the out-parameter `out` is not NULL (before the work whose result
/// it receives, so that a refused call changes nothing).
pub(crate) fn out_arg<T>(out: *mut T) -> R {
    if out.is_null() {
        Err(lunsnap_result::NullPointer)
    } else {
        Ok(())
    }
}

/// Writes `v` to the out-parameter `out`.
pub(crate) fn put<T>(out: *mut T, v: T) -> R {
    out_arg(out)?;
    // SAFETY: the caller passes a pointer to writable memory for a `T` (checked
    // non-null above); `write` does not read or drop the old value.
    unsafe { out.write(v) };
    Ok(())
}

/// Checks a pointer and length pair: `Ok(false)` when `len` is 0 (the pointer may
/// then be anything, NULL included), `Ok(true)` when `p` is not NULL and `len`
/// items of `T` fit in `isize::MAX` bytes, as a slice needs.
fn slice_args<T>(null: bool, len: usize) -> Result<bool, lunsnap_result> {
    if len == 0 {
        Ok(false)
    } else if null {
        Err(lunsnap_result::NullPointer)
    } else if !fits::<T>(len) {
        Err(lunsnap_result::InvalidArgument)
    } else {
        Ok(true)
    }
}

/// Whether `len` items of `T` fit in `isize::MAX` bytes (what any buffer can hold).
fn fits<T>(len: usize) -> bool {
    len <= isize::MAX as usize / core::mem::size_of::<T>().max(1)
}

/// The `len` items at `p`, read-only (`p` may be NULL only when `len` is 0).
///
/// # Safety
///
/// When `len` > 0 and `p` is not NULL, `p` must be valid for reading `len` items
/// of `T` for the lifetime `'a`, and not written to during it.
pub(crate) unsafe fn slice_in<'a, T>(p: *const T, len: usize) -> Result<&'a [T], lunsnap_result> {
    if !slice_args::<T>(p.is_null(), len)? {
        return Ok(&[]);
    }
    // SAFETY: non-null, the byte length fits in isize (both checked above), and the
    // caller passes `len` readable items at `p` for `'a`.
    Ok(unsafe { core::slice::from_raw_parts(p, len) })
}

/// The `len` items at `p`, writable (`p` may be NULL only when `len` is 0).
///
/// # Safety
///
/// When `len` > 0 and `p` is not NULL, `p` must be valid for reading and writing
/// `len` items of `T` for the lifetime `'a`, and not accessed otherwise during it.
pub(crate) unsafe fn slice_out<'a, T>(
    p: *mut T,
    len: usize,
) -> Result<&'a mut [T], lunsnap_result> {
    if !slice_args::<T>(p.is_null(), len)? {
        return Ok(&mut []);
    }
    // SAFETY: non-null, the byte length fits in isize (both checked above), and the
    // caller passes `len` writable items at `p`, not aliased for `'a`.
    Ok(unsafe { core::slice::from_raw_parts_mut(p, len) })
}

/// The NUL-terminated string at `p` (`None` for NULL); `Err(not_utf8)` when it is
/// not UTF-8.
///
/// # Safety
///
/// `p`, when not NULL, must point to a NUL-terminated string that stays valid and
/// unchanged for the lifetime `'a`.
pub(crate) unsafe fn str_in<'a>(
    p: *const c_char,
    not_utf8: lunsnap_result,
) -> Result<Option<&'a str>, lunsnap_result> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null; the caller passes a NUL-terminated string valid for `'a`.
    let s = unsafe { core::ffi::CStr::from_ptr(p) };
    s.to_str().map(Some).map_err(|_| not_utf8)
}

/// Checks a buffer out-parameter with its length out-parameter (a list, or a
/// text): `buf` may be NULL only when `capacity` is 0, `out_len` never, and
/// `capacity` items of `T` must fit in `isize::MAX` bytes
/// (`LUNSNAP_RESULT_INVALID_ARGUMENT` otherwise, as for any buffer length). Called
/// before the work, so that a refused call does nothing.
pub(crate) fn buffer_args<T>(buf: *mut T, capacity: usize, out_len: *mut usize) -> R {
    if buf.is_null() && capacity > 0 {
        return Err(lunsnap_result::NullPointer);
    }
    if !fits::<T>(capacity) {
        return Err(lunsnap_result::InvalidArgument);
    }
    out_arg(out_len)
}

/// Writes the first `min(capacity, list.len())` items of `list`, each converted to
/// its C form, to `items`, and stores `list.len()` in `out_count` (arguments
/// checked by [`buffer_args`]). The items are written through the pointer, never
/// read or referenced, so the C buffer may be uninitialised.
///
/// # Safety
///
/// `items` must be valid for writing `capacity` items when `capacity` > 0, and not
/// accessed otherwise during the call.
pub(crate) unsafe fn put_list<S: Copy, T: From<S>>(
    list: &[S],
    items: *mut T,
    capacity: usize,
    out_count: *mut usize,
) -> R {
    buffer_args(items, capacity, out_count)?;
    for (i, &s) in list.iter().take(capacity).enumerate() {
        // SAFETY: `i < capacity`, `items` is not NULL when `capacity` > 0 and the
        // buffer's byte length fits in isize (both checked above), and the caller
        // passes room for `capacity` items at `items`: `items.add(i)` stays inside
        // that buffer and may be written. `write_unaligned` neither reads nor drops
        // the old contents and needs no alignment.
        unsafe { items.add(i).write_unaligned(T::from(s)) };
    }
    put(out_count, list.len())
}

/// Copies `text` (no NUL inside) into `buf`, truncated to `buf_len - 1` bytes and
/// NUL-terminated (nothing is written when `buf_len` is 0), and stores its full
/// length in `out_len` (pointers checked by [`buffer_args`]).
///
/// # Safety
///
/// `buf` must be valid for writing `buf_len` bytes when `buf_len` > 0.
pub(crate) unsafe fn put_text(
    text: &[u8],
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> R {
    buffer_args(buf, buf_len, out_len)?;
    if buf_len > 0 {
        let n = text.len().min(buf_len - 1);
        // SAFETY: the caller passes `buf_len` >= `n + 1` writable bytes at `buf`.
        let dst = unsafe { slice_out(buf.cast::<u8>(), n + 1)? };
        dst[..n].copy_from_slice(&text[..n]);
        dst[n] = 0;
    }
    put(out_len, text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_slices_ignore_the_pointer() {
        // SAFETY: a length of 0 reads nothing.
        let s = unsafe { slice_in(core::ptr::null::<u32>(), 0) };
        assert_eq!(s, Ok(&[][..]));
        // SAFETY: a length of 0 writes nothing.
        let s = unsafe { slice_out(core::ptr::null_mut::<u8>(), 0) };
        assert_eq!(s.map(|s| s.len()), Ok(0));
    }

    #[test]
    fn null_and_oversized_slices_are_refused() {
        // SAFETY: refused before any access.
        let s = unsafe { slice_in(core::ptr::null::<u8>(), 1) };
        assert_eq!(s, Err(lunsnap_result::NullPointer));
        let mut x = [0u32; 2];
        // SAFETY: refused before any access (the length overflows isize in bytes).
        let s = unsafe { slice_out(x.as_mut_ptr(), usize::MAX / 2) };
        assert_eq!(s.err(), Some(lunsnap_result::InvalidArgument));
        // SAFETY: `x` holds 2 numbers.
        let s = unsafe { slice_out(x.as_mut_ptr(), 2) };
        assert_eq!(s.map(|s| s.len()), Ok(2));
    }

    #[test]
    fn lists_report_the_full_count_and_fill_what_fits() {
        let mut buf = [7u64; 4];
        let mut n = 0;
        // SAFETY: `buf` holds 4 numbers; 2 are asked for.
        let r = unsafe { put_list(&[1u32, 2, 3], buf.as_mut_ptr(), 2, &mut n) };
        assert_eq!((r, n, buf), (Ok(()), 3, [1, 2, 7, 7]));
        // SAFETY: room for 4; the list has 3.
        let r = unsafe { put_list(&[4u32, 5, 6], buf.as_mut_ptr(), 4, &mut n) };
        assert_eq!((r, n, buf), (Ok(()), 3, [4, 5, 6, 7]));
        // SAFETY: nothing is written with a capacity of 0 (NULL allowed).
        let r = unsafe { put_list(&[1u32], core::ptr::null_mut::<u64>(), 0, &mut n) };
        assert_eq!((r, n), (Ok(()), 1));
    }

    #[test]
    fn bad_list_buffers_are_refused_before_any_write() {
        let mut buf = [7u64; 2];
        let mut n = 99;
        let p = buf.as_mut_ptr();
        let cases = [
            (core::ptr::null_mut(), 1, lunsnap_result::NullPointer),
            (p, usize::MAX, lunsnap_result::InvalidArgument),
            (
                p,
                isize::MAX as usize / 8 + 1,
                lunsnap_result::InvalidArgument,
            ),
        ];
        for (items, capacity, want) in cases {
            // SAFETY: refused before any write.
            let r = unsafe { put_list(&[1u32], items, capacity, &mut n) };
            assert_eq!(r, Err(want));
        }
        // SAFETY: refused before any write (no count pointer).
        let r = unsafe { put_list(&[1u32], p, 2, core::ptr::null_mut()) };
        assert_eq!(r, Err(lunsnap_result::NullPointer));
        assert_eq!((n, buf), (99, [7, 7]));
    }

    #[test]
    fn text_is_truncated_and_terminated() {
        let mut buf = [0x55 as c_char; 4];
        let mut len = 0;
        // SAFETY: `buf` holds 4 bytes.
        let r = unsafe { put_text(b"hello", buf.as_mut_ptr(), buf.len(), &mut len) };
        assert_eq!(r, Ok(()));
        assert_eq!(len, 5);
        assert_eq!(buf.map(|c| c as u8), *b"hel\0");
    }

    #[test]
    fn strings_may_be_null() {
        // SAFETY: NULL is allowed.
        let s = unsafe { str_in(core::ptr::null(), lunsnap_result::InvalidPath) };
        assert_eq!(s, Ok(None));
        // SAFETY: a NUL-terminated literal.
        let s = unsafe { str_in(c"abc".as_ptr(), lunsnap_result::InvalidPath) };
        assert_eq!(s, Ok(Some("abc")));
        // SAFETY: a NUL-terminated literal.
        let s = unsafe { str_in(c"\xff".as_ptr(), lunsnap_result::InvalidPath) };
        assert_eq!(s, Err(lunsnap_result::InvalidPath));
    }
}
