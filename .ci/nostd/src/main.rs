//! A freestanding `#![no_std]` program that uses lunsnap through `core` + `alloc` only.
//!
//! It provides what `std` would: a panic handler, a global allocator (a bump allocator
//! over a static array) and a C `main` called by the C runtime's startup code. It
//! formats an in-memory device, builds and commits a tree, reopens the device and reads
//! the tree back, then exits 0 on success and 1 on any failure (with a message on
//! stderr). If `std` leaks into lunsnap, this crate no longer links.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use lunsnap::engine::{Engine, FormatOptions, OpenOptions, ValueKind};
use lunsnap::{Array, MemDevice};
use lunsnap::{FormatOptions as ArrayFormat, OpenOptions as ArrayOpen};

// --- The C library: the only outside code we call. ----------------------------------

#[link(name = "c")]
extern "C" {
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn abort() -> !;
}

/// Writes formatted text to a file descriptor (best effort, unbuffered).
struct Fd(i32);

impl Write for Fd {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut b = s.as_bytes();
        while !b.is_empty() {
            // SAFETY: `b` is a valid, initialised byte slice for its whole length.
            let n = unsafe { write(self.0, b.as_ptr(), b.len()) };
            if n <= 0 {
                return Err(fmt::Error);
            }
            b = &b[n as usize..];
        }
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(Fd(2), "nostd check: panic: {info}");
    // SAFETY: abort() takes no arguments and never returns.
    unsafe { abort() }
}

/// The unwinder's personality routine, which `std` would define.
///
/// The prebuilt `core` and `alloc` for this target are compiled with `panic=unwind`, so
/// their unwind tables name `rust_eh_personality` even though this program (built with
/// `panic = "abort"`, whose panic handler aborts) can never unwind: without `std` the
/// symbol is simply missing at link time (rust-lang/rust#106864; the rustc maintainers
/// propose exactly this stub, see rust-lang/rust#137854). It is never called; if it
/// were, aborting is the only right answer.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {
    // SAFETY: abort() takes no arguments and never returns.
    unsafe { abort() }
}

// --- A bump allocator over a static array. -------------------------------------------

const HEAP_SIZE: usize = 4 << 20;

#[repr(C, align(4096))]
struct Heap(UnsafeCell<[u8; HEAP_SIZE]>);

// SAFETY: the array is only reached through `BumpAlloc`, which hands out disjoint
// ranges of it (claimed atomically through `next`), so no two threads ever alias one.
unsafe impl Sync for Heap {}

static HEAP: Heap = Heap(UnsafeCell::new([0; HEAP_SIZE]));

/// Hands out memory from `HEAP` in increasing addresses. Memory is reclaimed only when
/// the most recent allocation is freed (or grown/shrunk in place): enough for a short
/// program, and simple enough to be obviously correct.
struct BumpAlloc {
    /// Offset of the first free byte of `HEAP`.
    next: AtomicUsize,
    /// Highest value `next` reached (for the report).
    peak: AtomicUsize,
}

impl BumpAlloc {
    fn base() -> usize {
        HEAP.0.get() as usize
    }
}

// SAFETY: `alloc` returns either null or a block of `layout.size()` bytes aligned to
// `layout.align()` inside `HEAP` that no other live allocation overlaps, because the
// range [start, end) is claimed by a successful compare-exchange of `next`; `dealloc`
// and `realloc` only move `next` back when the block is the last one handed out.
unsafe impl GlobalAlloc for BumpAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = Self::base();
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            // Align the absolute address; `align` is a power of two (Layout invariant).
            let Some(start) = (base + cur).checked_add(layout.align() - 1) else {
                return ptr::null_mut();
            };
            let start = (start & !(layout.align() - 1)) - base;
            let Some(end) = start.checked_add(layout.size()) else {
                return ptr::null_mut();
            };
            if end > HEAP_SIZE {
                return ptr::null_mut();
            }
            match self
                .next
                .compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(end, Ordering::Relaxed);
                    // SAFETY: start <= end <= HEAP_SIZE, so the pointer stays in HEAP.
                    return unsafe { (HEAP.0.get() as *mut u8).add(start) };
                }
                Err(now) => cur = now,
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Give the block back only if it is the last one handed out.
        let start = ptr as usize - Self::base();
        let end = start + layout.size();
        let _ = self
            .next
            .compare_exchange(end, start, Ordering::Relaxed, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize - Self::base();
        let end = start + layout.size();
        // The last block grows or shrinks in place when it fits.
        if let Some(new_end) = start.checked_add(new_size) {
            if new_end <= HEAP_SIZE
                && self
                    .next
                    .compare_exchange(end, new_end, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.peak.fetch_max(new_end, Ordering::Relaxed);
                return ptr;
            }
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `layout.align()` is valid and `new_size`, rounded
        // up to it, does not overflow isize (GlobalAlloc::realloc contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` has a non-zero size (new_size > layout.size() >= 0).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for `layout.size()` bytes and do not overlap
            // (the new one was just claimed past `next`).
            unsafe { ptr::copy_nonoverlapping(ptr, new, layout.size()) };
            // SAFETY: `ptr` was allocated by us with `layout` and is not used again.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[global_allocator]
static ALLOC: BumpAlloc = BumpAlloc {
    next: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
};

// --- The check itself. ---------------------------------------------------------------

const KEYS: u64 = 1000;

fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
}

fn fail<T: fmt::Display>(step: &str, e: T) -> i32 {
    let _ = writeln!(Fd(2), "nostd check: {step} failed: {e}");
    1
}

fn run() -> i32 {
    // 32 MiB device: room for the 64 KiB default extents. MemDevice is sparse, so only
    // the few metadata blocks written use heap.
    let dev = match MemDevice::new(4096, 8192) {
        Ok(d) => d,
        Err(e) => return fail("MemDevice::new", e),
    };
    let mut e = match Engine::format(dev, &FormatOptions::default()) {
        Ok(e) => e,
        Err(err) => return fail("format", err),
    };
    let mut t = match e.create_tree(8, ValueKind::Opaque) {
        Ok(t) => t,
        Err(err) => return fail("create_tree", err),
    };
    for i in 0..KEYS {
        if let Err(err) = e.insert(&mut t, key(i), &i.to_le_bytes()) {
            return fail("insert", err);
        }
    }
    if let Err(err) = e.set_root(0, Some(t)).and_then(|_| e.commit()) {
        return fail("commit", err);
    }
    let generation = e.generation();

    let dev = e.into_device();
    let mut e = match Engine::open(dev, &OpenOptions::default()) {
        Ok(e) => e,
        Err(err) => return fail("open", err),
    };
    if e.generation() != generation {
        return fail("open", "reopened at another generation");
    }
    let t = match e.root(0) {
        Ok(Some(t)) => t,
        Ok(None) => return fail("root", "root slot 0 is empty after reopen"),
        Err(err) => return fail("root", err),
    };
    let mut out = [0u8; 8];
    for i in 0..KEYS {
        match e.lookup(&t, key(i), &mut out) {
            Ok(true) if u64::from_le_bytes(out) == i => {}
            Ok(true) => return fail("lookup", "wrong value"),
            Ok(false) => return fail("lookup", "key missing"),
            Err(err) => return fail("lookup", err),
        }
    }
    let violations = e.audit();
    if let Some(v) = violations.first() {
        return fail("audit", v);
    }
    drop(e);
    if let Err(err) = array_round_trip() {
        return fail("array", err);
    }
    let _ = writeln!(
        Fd(1),
        "nostd check: ok ({KEYS} keys committed, reopened and read back; audit clean; \
         array LUN + copy written, reopened, read back, checked; heap high-water {} KiB)",
        ALLOC.peak.load(Ordering::Relaxed) / 1024
    );
    0
}

/// The array on top: a LUN, a copy, a write to the parent, reopen, read both.
fn array_round_trip() -> Result<(), lunsnap::Error> {
    let dev = MemDevice::new(512, 16384)?;
    let opts = ArrayFormat {
        extent_size: 4096,
        max_luns: 4,
        cache_bytes: 0,
        ..ArrayFormat::default()
    };
    let mut a = Array::format(dev, &opts)?;
    a.create_lun(0, 1 << 20)?;
    a.write(0, 0, &[7u8; 4096])?;
    a.create_copy(0, 1, true)?;
    a.write(0, 0, &[9u8; 4096])?;
    a.flush()?;
    let mut a = Array::open(
        a.into_device(),
        &ArrayOpen {
            cache_bytes: 0,
            ..ArrayOpen::default()
        },
    )?;
    let mut b = [0u8; 4096];
    a.read(1, 0, &mut b)?;
    if b != [7u8; 4096] {
        return Err(lunsnap::Error::InvalidArgument("copy changed"));
    }
    a.read(0, 0, &mut b)?;
    if b != [9u8; 4096] {
        return Err(lunsnap::Error::InvalidArgument("parent lost its write"));
    }
    if !a.check()?.is_empty() {
        return Err(lunsnap::Error::InvalidArgument("check found violations"));
    }
    Ok(())
}

/// Called by the C runtime (crt1.o's `_start` → `__libc_start_main`).
#[no_mangle]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    run()
}
