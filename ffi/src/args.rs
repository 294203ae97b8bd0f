//! The helpers every export shares: running its body (panics caught, the failure's
//! message kept for `lunsnap_last_error_message`), turning C pointer arguments into
//! Rust references after checking them, and writing out-parameters. A NULL pointer
//! where data is needed is `LUNSNAP_RESULT_NULL_POINTER`; a length no buffer can
//! have (over `isize::MAX` bytes) is `LUNSNAP_RESULT_INVALID_ARGUMENT`. Every check
//! names the argument in the message.

use alloc::format;
use core::ffi::c_char;

use lunsnap::Array;

use crate::device::AnyDevice;
use crate::fail::{self, Fail};
use crate::guard;
use crate::handle::{self, lunsnap_array, with_array};
use crate::result::lunsnap_result;

/// What an export's body returns: `Ok` becomes `LUNSNAP_RESULT_OK`.
pub(crate) type R = Result<(), Fail>;

/// Runs the body of the export `func` (a call without a handle): a panic becomes
/// `LUNSNAP_RESULT_PANIC`; a failure's message is kept for the calling thread.
pub(crate) fn run(func: &'static str, f: impl FnOnce() -> R) -> lunsnap_result {
    match guard::catch(f).and_then(|r| r) {
        Ok(()) => lunsnap_result::Ok,
        Err(e) => {
            fail::set_thread_message(fail::message(func, &e));
            e.code
        }
    }
}

/// [`run`] for an export on the handle `array`: a failure's message is kept for
/// the calling thread and, when `array` is a live handle, on it.
pub(crate) fn run_h(
    array: *const lunsnap_array,
    func: &'static str,
    f: impl FnOnce() -> R,
) -> lunsnap_result {
    match guard::catch(f).and_then(|r| r) {
        Ok(()) => lunsnap_result::Ok,
        Err(e) => {
            let m = fail::message(func, &e);
            handle::set_message(array, m.clone());
            fail::set_thread_message(m);
            e.code
        }
    }
}

/// Runs `op` on the array behind `array` as the body of the export `func` (the
/// lock held, its error and any panic turned into a result code and a message: see
/// [`with_array`] and [`run_h`]).
pub(crate) fn run_on(
    array: *mut lunsnap_array,
    func: &'static str,
    op: impl FnOnce(&mut Array<AnyDevice>) -> lunsnap::Result<()>,
) -> lunsnap_result {
    run_h(array, func, || with_array(array, |a| Ok(op(a)?)))
}

/// Checks that the out-parameter `out` (named `name`) is not NULL (before the
/// work whose result it receives, so that a refused call changes nothing).
pub(crate) fn out_arg<T>(out: *mut T, name: &'static str) -> R {
    if out.is_null() {
        Err(Fail::null(name))
    } else {
        Ok(())
    }
}

/// Writes `v` to the out-parameter `out` (named `name`).
pub(crate) fn put<T>(out: *mut T, v: T, name: &'static str) -> R {
    out_arg(out, name)?;
    // SAFETY: the caller passes a pointer to writable memory for a `T` (checked
    // non-null above); `write_unaligned` neither reads nor drops the old value.
    unsafe { out.write_unaligned(v) };
    Ok(())
}

/// Checks a pointer and length pair: `Ok(false)` when `len` is 0 (the pointer may
/// then be anything, NULL included), `Ok(true)` when `p` is not NULL and `len`
/// items of `T` fit in `isize::MAX` bytes, as a slice needs.
fn slice_args<T>(
    null: bool,
    len: usize,
    names: (&'static str, &'static str),
) -> Result<bool, Fail> {
    if len == 0 {
        Ok(false)
    } else if null {
        Err(Fail::new(
            lunsnap_result::NullPointer,
            format!("`{}` is NULL but `{}` is {len}", names.0, names.1),
        ))
    } else if !fits::<T>(len) {
        Err(too_long(len, names.1))
    } else {
        Ok(true)
    }
}

/// `LUNSNAP_RESULT_INVALID_ARGUMENT` for a length no buffer can have.
fn too_long(len: usize, name: &'static str) -> Fail {
    Fail::arg(format!("`{name}` is {len}: more than any buffer can hold"))
}

/// Whether `len` items of `T` fit in `isize::MAX` bytes (what any buffer can hold).
fn fits<T>(len: usize) -> bool {
    len <= isize::MAX as usize / core::mem::size_of::<T>().max(1)
}

/// The `len` items at `p`, read-only (`p` may be NULL only when `len` is 0);
/// `names` are the pointer's and the length's, for messages.
///
/// # Safety
///
/// When `len` > 0 and `p` is not NULL, `p` must be valid for reading `len` items
/// of `T` for the lifetime `'a`, and not written to during it.
pub(crate) unsafe fn slice_in<'a, T>(
    p: *const T,
    len: usize,
    names: (&'static str, &'static str),
) -> Result<&'a [T], Fail> {
    if !slice_args::<T>(p.is_null(), len, names)? {
        return Ok(&[]);
    }
    // SAFETY: non-null, the byte length fits in isize (both checked above), and the
    // caller passes `len` readable items at `p` for `'a`.
    Ok(unsafe { core::slice::from_raw_parts(p, len) })
}

/// The `len` items at `p`, writable (`p` may be NULL only when `len` is 0);
/// `names` are the pointer's and the length's, for messages.
///
/// # Safety
///
/// When `len` > 0 and `p` is not NULL, `p` must be valid for reading and writing
/// `len` items of `T` for the lifetime `'a`, and not accessed otherwise during it.
pub(crate) unsafe fn slice_out<'a, T>(
    p: *mut T,
    len: usize,
    names: (&'static str, &'static str),
) -> Result<&'a mut [T], Fail> {
    if !slice_args::<T>(p.is_null(), len, names)? {
        return Ok(&mut []);
    }
    // SAFETY: non-null, the byte length fits in isize (both checked above), and the
    // caller passes `len` writable items at `p`, not aliased for `'a`.
    Ok(unsafe { core::slice::from_raw_parts_mut(p, len) })
}

/// The NUL-terminated string `name` at `p` (`None` for NULL); `Err` with the code
/// `not_utf8` when it is not UTF-8.
///
/// # Safety
///
/// `p`, when not NULL, must point to a NUL-terminated string that stays valid and
/// unchanged for the lifetime `'a`.
pub(crate) unsafe fn str_in<'a>(
    p: *const c_char,
    name: &'static str,
    not_utf8: lunsnap_result,
) -> Result<Option<&'a str>, Fail> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null; the caller passes a NUL-terminated string valid for `'a`.
    let s = unsafe { core::ffi::CStr::from_ptr(p) };
    s.to_str()
        .map(Some)
        .map_err(|e| Fail::new(not_utf8, format!("`{name}` is not valid UTF-8 ({e})")))
}

/// The names of a buffer out-parameter and its length and count arguments: the
/// buffer, its capacity, and where the full length goes.
pub(crate) type BufNames = (&'static str, &'static str, &'static str);

/// A list's names: `items`, `capacity`, `out_count`.
pub(crate) const LIST: BufNames = ("items", "capacity", "out_count");

/// A text's names: `buf`, `buf_len`, `out_len`.
pub(crate) const TEXT: BufNames = ("buf", "buf_len", "out_len");

/// Checks a buffer out-parameter with its length out-parameter (a list, or a
/// text): `buf` may be NULL only when `capacity` is 0, `out_len` never, and
/// `capacity` items of `T` must fit in `isize::MAX` bytes
/// (`LUNSNAP_RESULT_INVALID_ARGUMENT` otherwise, as for any buffer length). Called
/// before the work, so that a refused call does nothing.
pub(crate) fn buffer_args<T>(
    buf: *mut T,
    capacity: usize,
    out_len: *mut usize,
    names: BufNames,
) -> R {
    if buf.is_null() && capacity > 0 {
        return Err(Fail::new(
            lunsnap_result::NullPointer,
            format!("`{}` is NULL but `{}` is {capacity}", names.0, names.1),
        ));
    }
    if !fits::<T>(capacity) {
        return Err(too_long(capacity, names.1));
    }
    out_arg(out_len, names.2)
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
    names: BufNames,
) -> R {
    buffer_args(items, capacity, out_count, names)?;
    for (i, &s) in list.iter().take(capacity).enumerate() {
        // SAFETY: `i < capacity`, `items` is not NULL when `capacity` > 0 and the
        // buffer's byte length fits in isize (both checked above), and the caller
        // passes room for `capacity` items at `items`: `items.add(i)` stays inside
        // that buffer and may be written. `write_unaligned` neither reads nor drops
        // the old contents and needs no alignment.
        unsafe { items.add(i).write_unaligned(T::from(s)) };
    }
    put(out_count, list.len(), names.2)
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
    buffer_args(buf, buf_len, out_len, TEXT)?;
    if buf_len > 0 {
        let n = text.len().min(buf_len - 1);
        // SAFETY: the caller passes `buf_len` >= `n + 1` writable bytes at `buf`.
        let dst = unsafe { slice_out(buf.cast::<u8>(), n + 1, ("buf", "buf_len"))? };
        dst[..n].copy_from_slice(&text[..n]);
        dst[n] = 0;
    }
    put(out_len, text.len(), TEXT.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_slices_ignore_the_pointer() {
        // SAFETY: a length of 0 reads nothing.
        let s = unsafe { slice_in(core::ptr::null::<u32>(), 0, ("p", "n")) };
        assert_eq!(s.ok(), Some(&[][..]));
        // SAFETY: a length of 0 writes nothing.
        let s = unsafe { slice_out(core::ptr::null_mut::<u8>(), 0, ("p", "n")) };
        assert_eq!(s.ok().map(|s| s.len()), Some(0));
    }

    #[test]
    fn null_and_oversized_slices_are_refused() {
        // SAFETY: refused before any access.
        let s = unsafe { slice_in(core::ptr::null::<u8>(), 1, ("buf", "len")) };
        let e = s.unwrap_err();
        assert_eq!(e.code, lunsnap_result::NullPointer);
        assert_eq!(e.text, "`buf` is NULL but `len` is 1");
        let mut x = [0u32; 2];
        // SAFETY: refused before any access (the length overflows isize in bytes).
        let s = unsafe { slice_out(x.as_mut_ptr(), usize::MAX / 2, ("buf", "len")) };
        assert_eq!(
            s.err().map(|e| e.code),
            Some(lunsnap_result::InvalidArgument)
        );
        // SAFETY: `x` holds 2 numbers.
        let s = unsafe { slice_out(x.as_mut_ptr(), 2, ("buf", "len")) };
        assert_eq!(s.ok().map(|s| s.len()), Some(2));
    }

    #[test]
    fn lists_report_the_full_count_and_fill_what_fits() {
        let mut buf = [7u64; 4];
        let mut n = 0;
        // SAFETY: `buf` holds 4 numbers; 2 are asked for.
        let r = unsafe { put_list(&[1u32, 2, 3], buf.as_mut_ptr(), 2, &mut n, LIST) };
        assert_eq!((r.is_ok(), n, buf), (true, 3, [1, 2, 7, 7]));
        // SAFETY: room for 4; the list has 3.
        let r = unsafe { put_list(&[4u32, 5, 6], buf.as_mut_ptr(), 4, &mut n, LIST) };
        assert_eq!((r.is_ok(), n, buf), (true, 3, [4, 5, 6, 7]));
        // SAFETY: nothing is written with a capacity of 0 (NULL allowed).
        let r = unsafe { put_list(&[1u32], core::ptr::null_mut::<u64>(), 0, &mut n, LIST) };
        assert_eq!((r.is_ok(), n), (true, 1));
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
            let r = unsafe { put_list(&[1u32], items, capacity, &mut n, LIST) };
            assert_eq!(r.unwrap_err().code, want);
        }
        // SAFETY: refused before any write (no count pointer).
        let r = unsafe { put_list(&[1u32], p, 2, core::ptr::null_mut(), LIST) };
        let e = r.unwrap_err();
        assert_eq!(
            (e.code, &*e.text),
            (lunsnap_result::NullPointer, "`out_count` is NULL")
        );
        assert_eq!((n, buf), (99, [7, 7]));
    }

    #[test]
    fn text_is_truncated_and_terminated() {
        let mut buf = [0x55 as c_char; 4];
        let mut len = 0;
        // SAFETY: `buf` holds 4 bytes.
        let r = unsafe { put_text(b"hello", buf.as_mut_ptr(), buf.len(), &mut len) };
        assert!(r.is_ok());
        assert_eq!(len, 5);
        assert_eq!(buf.map(|c| c as u8), *b"hel\0");
    }

    #[test]
    fn strings_may_be_null() {
        // SAFETY: NULL is allowed.
        let s = unsafe { str_in(core::ptr::null(), "p", lunsnap_result::InvalidPath) };
        assert_eq!(s.ok(), Some(None));
        // SAFETY: a NUL-terminated literal.
        let s = unsafe { str_in(c"abc".as_ptr(), "p", lunsnap_result::InvalidPath) };
        assert_eq!(s.ok(), Some(Some("abc")));
        // SAFETY: a NUL-terminated literal.
        let s = unsafe { str_in(c"\xff".as_ptr(), "path", lunsnap_result::InvalidPath) };
        let e = s.unwrap_err();
        assert_eq!(e.code, lunsnap_result::InvalidPath);
        assert!(
            e.text.starts_with("`path` is not valid UTF-8"),
            "{}",
            e.text
        );
    }
}
