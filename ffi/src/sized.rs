//! Structs that may grow: each starts with `size_t struct_size`, the size of the
//! struct as the caller's program knows it (`sizeof` under the header it was built
//! with). The library reads, or writes, only the fields that lie wholly inside that
//! size, so that a program built against an older header, whose structs end
//! earlier, keeps working when fields are appended:
//! - an input struct (options, device callbacks) shorter than the library's gives
//!   the defaults for the fields it lacks; a longer one (a newer program on an
//!   older library) has its unknown tail ignored;
//! - an output struct (LUN and pool information) is written field by field up to
//!   the caller's size, never past it; bytes the library does not fill (padding,
//!   and a newer program's fields this library does not know) are set to 0.
//!
//! The fields are read and written one by one at their offsets (never the Rust
//! value's bytes, whose padding is not initialised), unaligned.

use alloc::format;
use core::mem::size_of;

use crate::fail::Fail;

/// The largest `struct_size` accepted: far above any struct of this library, and
/// low enough that an uninitialised `struct_size` is likely to be refused instead of
/// letting the library write that many bytes.
pub(crate) const STRUCT_SIZE_MAX: usize = 4096;

/// Reads field `F` at byte `off` of the caller's struct at `p` into `dst`, if it
/// lies wholly inside the caller's `n` bytes.
///
/// # Safety
///
/// `p` must be valid for reading `n` bytes, and the bytes of the field, when read,
/// must be a valid `F` (any bit pattern is, for the integers, pointers, byte arrays
/// and optional function pointers of the input structs).
pub(crate) unsafe fn read_field<F: Copy>(p: *const u8, n: usize, off: usize, dst: &mut F) {
    if off + size_of::<F>() <= n {
        // SAFETY: `off + size_of::<F>() <= n` and the caller passes `n` readable
        // bytes at `p`, holding a valid `F` there; unaligned read.
        *dst = unsafe { p.add(off).cast::<F>().read_unaligned() };
    }
}

/// Writes `v` at byte `off` of the caller's struct at `p`, if it lies wholly inside
/// the caller's `n` bytes.
///
/// # Safety
///
/// `p` must be valid for writing `n` bytes.
pub(crate) unsafe fn write_field<F: Copy>(p: *mut u8, n: usize, off: usize, v: F) {
    if off + size_of::<F>() <= n {
        // SAFETY: `off + size_of::<F>() <= n` and the caller passes `n` writable
        // bytes at `p`; unaligned write, the old bytes neither read nor dropped.
        unsafe { p.add(off).cast::<F>().write_unaligned(v) };
    }
}

/// An input struct: read field by field from a caller's prefix.
pub(crate) trait Input: Copy {
    /// Overwrites the fields of `self` (but `struct_size`) that lie wholly inside
    /// the caller's `n` bytes at `p` with the caller's values.
    ///
    /// # Safety
    ///
    /// `p` must be valid for reading `n` bytes.
    unsafe fn read_prefix(&mut self, p: *const u8, n: usize);
}

/// An output struct: written field by field into a caller's prefix.
pub(crate) trait Output: Copy {
    /// Writes the fields of `self` (but `struct_size`) that lie wholly inside the
    /// caller's `n` bytes at `p`.
    ///
    /// # Safety
    ///
    /// `p` must be valid for writing `n` bytes.
    unsafe fn write_prefix(&self, p: *mut u8, n: usize);
}

/// Implements [`Input`] or [`Output`] for a struct from the list of its fields
/// after `struct_size`.
macro_rules! sized_struct {
    (input $t:ty { $($f:ident),* $(,)? }) => {
        impl $crate::sized::Input for $t {
            unsafe fn read_prefix(&mut self, p: *const u8, n: usize) {
                $(
                    // SAFETY: the caller passes `n` readable bytes at `p`; the
                    // field's type accepts any bit pattern (an input struct has
                    // only integers, pointers, byte arrays and optional function
                    // pointers).
                    unsafe {
                        $crate::sized::read_field(p, n, core::mem::offset_of!($t, $f), &mut self.$f)
                    };
                )*
            }
        }
    };
    (output $t:ty { $($f:ident),* $(,)? }) => {
        impl $crate::sized::Output for $t {
            unsafe fn write_prefix(&self, p: *mut u8, n: usize) {
                $(
                    // SAFETY: the caller passes `n` writable bytes at `p`.
                    unsafe {
                        $crate::sized::write_field(p, n, core::mem::offset_of!($t, $f), self.$f)
                    };
                )*
            }
        }
    };
}
pub(crate) use sized_struct;

/// Checks a caller's `struct_size` (`arg` names the struct in the message).
pub(crate) fn check_size(n: usize, arg: &'static str) -> Result<usize, Fail> {
    if (size_of::<usize>()..=STRUCT_SIZE_MAX).contains(&n) {
        Ok(n)
    } else {
        Err(Fail::arg(format!(
            "`{arg}->struct_size` is {n}: set it to sizeof the struct (at least {}, at most {STRUCT_SIZE_MAX})",
            size_of::<usize>()
        )))
    }
}

/// The checked `struct_size` of the caller's struct at `p` (the struct's first
/// field).
///
/// # Safety
///
/// `p` must be NULL or point to at least a readable `size_t`.
pub(crate) unsafe fn caller_size<T>(p: *const T, arg: &'static str) -> Result<usize, Fail> {
    if p.is_null() {
        return Err(Fail::null(arg));
    }
    // SAFETY: not NULL; the caller passes a struct that starts with its size.
    let n = unsafe { p.cast::<usize>().read_unaligned() };
    check_size(n, arg)
}

/// The caller's input struct at `p` (its `struct_size` checked), with the fields it
/// lacks taken from `default`; `Ok(None)` for NULL.
///
/// # Safety
///
/// `p`, when not NULL, must be valid for reading its `struct_size` bytes.
pub(crate) unsafe fn read_in<T: Input>(
    p: *const T,
    default: T,
    arg: &'static str,
) -> Result<Option<T>, Fail> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL; the caller passes a struct that starts with its size.
    let n = unsafe { caller_size(p, arg)? };
    let mut v = default;
    // SAFETY: the caller passes `n` readable bytes at `p`.
    unsafe { v.read_prefix(p.cast(), n) };
    Ok(Some(v))
}

/// Writes `v` into the caller's output struct at `p` of `n` bytes (already
/// checked with [`check_size`]): zeros after `struct_size`, then every field that
/// fits.
///
/// # Safety
///
/// `p` must be valid for writing `n` bytes, `n` at least `size_of::<usize>()`.
pub(crate) unsafe fn write_out<T: Output>(p: *mut T, n: usize, v: &T) {
    let w = size_of::<usize>();
    // SAFETY: the caller passes `n >= w` writable bytes at `p`: the bytes after
    // `struct_size` are zeroed, then each field inside `n` is written.
    unsafe {
        p.cast::<u8>().add(w).write_bytes(0, n - w);
        v.write_prefix(p.cast(), n);
    }
}

/// Writes `v` into the caller's output struct at `p`, whose `struct_size` says how
/// much of it the caller has.
///
/// # Safety
///
/// `p`, when not NULL, must be valid for writing its `struct_size` bytes.
#[cfg(test)]
pub(crate) unsafe fn put_sized<T: Output>(p: *mut T, v: &T, arg: &'static str) -> Result<(), Fail> {
    // SAFETY: the caller passes NULL or a struct that starts with its size.
    let n = unsafe { caller_size(p, arg)? };
    // SAFETY: `n` checked, and the caller passes `n` writable bytes at `p`.
    unsafe { write_out(p, n, v) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct S {
        struct_size: usize,
        a: u32,
        b: u64,
        c: u8,
    }
    sized_struct!(input S { a, b, c });
    sized_struct!(output S { a, b, c });

    #[test]
    fn inputs_take_the_prefix_and_default_the_rest() {
        let d = S {
            struct_size: size_of::<S>(),
            a: 1,
            b: 2,
            c: 3,
        };
        // An "older" caller: struct_size, a (and padding): b and c default.
        let caller = S {
            struct_size: 16,
            a: 10,
            b: 20,
            c: 30,
        };
        // SAFETY: `caller` is a whole S, so more than 16 bytes are readable.
        let v = unsafe { read_in(&caller, d, "s") }.unwrap().unwrap();
        assert_eq!((v.a, v.b, v.c), (10, 2, 3));
        // SAFETY: NULL is allowed.
        assert!(unsafe { read_in(core::ptr::null::<S>(), d, "s") }
            .unwrap()
            .is_none());
    }

    #[test]
    fn outputs_never_pass_the_callers_size() {
        let mut buf = [0xAAu8; 64];
        buf[..8].copy_from_slice(&12usize.to_ne_bytes());
        let v = S {
            struct_size: 0,
            a: 7,
            b: 8,
            c: 9,
        };
        // SAFETY: `buf` has 64 bytes; its struct_size says 12.
        unsafe { put_sized(buf.as_mut_ptr().cast::<S>(), &v, "s") }.unwrap();
        assert_eq!(&buf[..8], &12usize.to_ne_bytes());
        assert_eq!(&buf[8..12], &7u32.to_ne_bytes());
        assert!(buf[12..].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for n in [0usize, 7, STRUCT_SIZE_MAX + 1, usize::MAX] {
            let mut buf = [0u8; 16];
            buf[..8].copy_from_slice(&n.to_ne_bytes());
            let v = S {
                struct_size: 0,
                a: 1,
                b: 2,
                c: 3,
            };
            // SAFETY: refused before any write.
            let r = unsafe { put_sized(buf.as_mut_ptr().cast::<S>(), &v, "s") };
            assert_eq!(r.unwrap_err().code, crate::lunsnap_result::InvalidArgument);
            assert!(buf[8..].iter().all(|&b| b == 0));
        }
    }
}
