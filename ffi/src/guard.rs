//! Panics must never cross the C boundary. With `std` every export runs its body
//! under `catch_unwind`; without `std` the library is built with `panic = "abort"`
//! (profile `firmware`) and the panic handler aborts through the host's C `abort`.

use crate::fail::Fail;

/// Runs `f`; `LUNSNAP_RESULT_PANIC` (with the panic's message) if it panicked.
#[cfg(feature = "std")]
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Fail> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|p| crate::fail::panic_fail(&*p))
}

/// Runs `f` (a panic aborts the process: nothing can unwind without `std`).
#[cfg(not(feature = "std"))]
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Fail> {
    Ok(f())
}

#[cfg(not(feature = "std"))]
mod nostd {
    use core::alloc::{GlobalAlloc, Layout};

    extern "C" {
        fn malloc(size: usize) -> *mut u8;
        fn free(ptr: *mut u8);
        fn aligned_alloc(align: usize, size: usize) -> *mut u8;
        fn abort() -> !;
    }

    /// Allocates through the host's C library.
    struct HostAlloc;

    // SAFETY: malloc/aligned_alloc return blocks of at least `size` bytes aligned to
    // at least `align` (malloc: 16 on the supported targets, so larger alignments go
    // to aligned_alloc with the size rounded up to a multiple of the alignment, as C11
    // requires), or null; free releases what they returned.
    unsafe impl GlobalAlloc for HostAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if layout.align() <= 16 {
                // SAFETY: plain C allocation of a non-zero size (GlobalAlloc contract).
                unsafe { malloc(layout.size()) }
            } else {
                let size = layout.size().next_multiple_of(layout.align());
                // SAFETY: `align` is a power of two and `size` a multiple of it.
                unsafe { aligned_alloc(layout.align(), size) }
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            // SAFETY: `ptr` came from malloc or aligned_alloc above.
            unsafe { free(ptr) }
        }
    }

    #[global_allocator]
    static ALLOC: HostAlloc = HostAlloc;

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        // SAFETY: abort takes no arguments and never returns.
        unsafe { abort() }
    }

    /// The unwinder personality `core` refers to even with `panic = "abort"`
    /// (rust-lang/rust#106864); never called.
    #[no_mangle]
    pub extern "C" fn rust_eh_personality() {
        // SAFETY: abort takes no arguments and never returns.
        unsafe { abort() }
    }
}
