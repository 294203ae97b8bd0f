//! RAM (docs/DESIGN.md §3 and §5: "a 1 TiB LUN must work with a few MiB of RAM"; heap
//! bounded by the cache budget plus a small amount per LUN, whatever the LUN sizes).
//!
//! A counting global allocator measures the heap while a 1 TiB LUN on a sparse
//! `MemDevice` takes scattered writes, reads, a copy and copy-on-write. `MemDevice`
//! keeps every written block on the heap too, so the figure asserted is the peak
//! minus the blocks the device held when the measured step began (device RAM only
//! grows during a step, so this over-estimates the array's own use a little).
//!
//! The measurements need the heap to themselves: the tests of this file take one lock
//! and nothing else runs in this test binary. Heap in use before a test makes its
//! array (the harness, a cached backtrace after a panic) is not counted. The second
//! test runs `check()` on the same pool (about 20 s in a debug build).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use lunsnap::testing::Rng;
use lunsnap::{Array, FormatOptions, MemDevice, OpenOptions};

// ---------------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------------

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// Peak since the last `reset_peak`.
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(n: usize) {
    CURRENT.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the counters have no effect
// on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Serialises the tests of this file: each measures the whole process's heap.
static HEAP: Mutex<()> = Mutex::new(());

fn reset_peak() {
    PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;
const BLOCK: u64 = 4096;
const CACHE: usize = 2 << 20;
const LIMIT: usize = 8 << 20;

type Arr = Array<MemDevice>;

/// 4 KiB that name their LUN, offset and version.
fn block(lun: u32, offset: u64, version: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK as usize];
    let mut x = offset ^ (u64::from(lun) << 56) ^ version.rotate_left(17);
    for c in b.chunks_mut(8) {
        x = x
            .wrapping_mul(0x5851_f42d_4c95_7f2d)
            .wrapping_add(0x1405_7b7e_f767_814f);
        c.copy_from_slice(&(x | 1).to_le_bytes());
    }
    b
}

/// Heap figures of the measured steps.
struct Meter {
    /// Heap in use before the array was made (the test harness, a panic's backtrace
    /// cache...): not counted.
    base: usize,
    /// Highest heap peak of any step.
    total: usize,
    /// Highest (peak - device bytes at the start of the call) of any step.
    array: usize,
    /// Per step: name, heap peak, peak without device blocks, seconds.
    steps: Vec<(String, usize, usize, f64)>,
}

/// Measures one call: the heap peak during it, and that peak less the bytes of the
/// blocks the device held when it began.
fn call<T>(a: &mut Arr, base: usize, f: impl FnOnce(&mut Arr) -> T) -> (T, usize, usize) {
    let dev = a.device_mut().resident_blocks() * BLOCK as usize;
    reset_peak();
    let r = f(a);
    let p = peak().saturating_sub(base);
    (r, p, p.saturating_sub(dev))
}

impl Meter {
    /// Runs `f` on each item as one measured step made of one measured call per item
    /// (so that the device blocks written by earlier calls are not counted).
    fn each<I, T>(&mut self, name: &str, a: &mut Arr, items: I, mut f: impl FnMut(&mut Arr, T))
    where
        I: IntoIterator<Item = T>,
    {
        let t = Instant::now();
        let (mut total, mut own) = (0, 0);
        for x in items {
            let ((), p, o) = call(a, self.base, |a| f(a, x));
            total = total.max(p);
            own = own.max(o);
        }
        self.record(name, total, own, t.elapsed().as_secs_f64());
    }

    /// Runs `f` as one measured step.
    fn step<T>(&mut self, name: &str, a: &mut Arr, f: impl FnOnce(&mut Arr) -> T) -> T {
        let t = Instant::now();
        let (r, p, own) = call(a, self.base, f);
        self.record(name, p, own, t.elapsed().as_secs_f64());
        r
    }

    fn record(&mut self, name: &str, p: usize, own: usize, secs: f64) {
        self.total = self.total.max(p);
        self.array = self.array.max(own);
        self.steps.push((name.to_string(), p, own, secs));
    }

    fn print(&self) {
        for (name, p, own, secs) in &self.steps {
            println!(
                "{name:<32} heap peak {:>7.2} MiB, without device blocks {:>6.2} MiB ({secs:.2} s)",
                mib(*p),
                mib(*own)
            );
        }
    }
}

fn mib(x: usize) -> f64 {
    x as f64 / MIB as f64
}

/// A pool that holds a 1 TiB LUN and a full-size copy of it (2 TiB of data plus room
/// for the metadata) on a sparse `MemDevice`, 64 KiB extents (so that `check()`, which
/// visits every extent's count, stays quick in a debug build), 2 MiB cache.
fn tebibyte_array() -> Arr {
    let blocks = (2 * TIB + 8 * (TIB >> 10)) / BLOCK;
    let dev = MemDevice::new(BLOCK as u32, blocks).unwrap();
    let opts = FormatOptions {
        cache_bytes: CACHE,
        extent_size: 64 << 10,
        max_luns: 16,
        ..Default::default()
    };
    let a = Array::format(dev, &opts).unwrap();
    let p = a.pool_info();
    assert!(p.capacity_bytes >= 2 * TIB, "{p:?}");
    println!(
        "pool: capacity {:.3} TiB, extent {} KiB, metadata provisioned {} MiB, cache {} MiB",
        p.capacity_bytes as f64 / TIB as f64,
        u64::from(p.extent_size) / KIB,
        p.metadata_provisioned_bytes / MIB,
        CACHE as u64 / MIB
    );
    a
}

/// Random 4 KiB-aligned offsets inside 1 TiB.
fn offsets(rng: &mut Rng, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| (rng.next_u64() % (TIB / BLOCK)) * BLOCK)
        .collect()
}

/// 2000 scattered 4 KiB writes over a 1 TiB LUN, read back, an attached copy, 1500
/// more writes to each (copy on write), read back, close, reopen, more writes, restore:
/// the heap without the device's own blocks stays under 8 MiB at every step.
#[test]
fn one_tebibyte_lun_in_a_few_mib_of_heap() {
    let _serial = HEAP.lock().unwrap_or_else(|e| e.into_inner());
    let mut m = Meter {
        base: CURRENT.load(Ordering::Relaxed),
        total: 0,
        array: 0,
        steps: Vec::new(),
    };
    let mut a = tebibyte_array();
    let mut rng = Rng::new(2024);
    let first = offsets(&mut rng, 2000);
    let later = offsets(&mut rng, 1000);
    let reopened = offsets(&mut rng, 500);
    let mut buf = vec![0u8; BLOCK as usize];

    m.step("create 1 TiB LUN", &mut a, |a| {
        a.create_lun(0, TIB).unwrap()
    });
    m.each("2000 scattered 4 KiB writes", &mut a, &first, |a, &o| {
        a.write(0, o, &block(0, o, 0)).unwrap()
    });
    m.step("flush", &mut a, |a| a.flush().unwrap());
    m.each("read them back", &mut a, &first, |a, &o| {
        a.read(0, o, &mut buf).unwrap();
        assert!(buf == block(0, o, 0), "LUN 0 at {o}");
    });
    m.step("attached copy of 1 TiB", &mut a, |a| {
        a.create_copy(0, 1, true).unwrap()
    });
    // Into extents the copy shares with the parent (copy on write) and elsewhere.
    let cow: Vec<u64> = first[..500].iter().chain(&later).copied().collect();
    m.each("1500 writes to parent and copy", &mut a, &cow, |a, &o| {
        a.write(0, o, &block(0, o, 1)).unwrap();
        a.write(1, o ^ BLOCK, &block(1, o ^ BLOCK, 1)).unwrap();
    });
    m.step("flush", &mut a, |a| a.flush().unwrap());
    m.each("read parent and copy back", &mut a, &cow, |a, &o| {
        a.read(0, o, &mut buf).unwrap();
        assert!(buf == block(0, o, 1), "LUN 0 at {o}");
        a.read(1, o ^ BLOCK, &mut buf).unwrap();
        assert!(buf == block(1, o ^ BLOCK, 1), "LUN 1 at {}", o ^ BLOCK);
    });
    m.each(
        "the copy keeps the old data",
        &mut a,
        &first[500..],
        |a, &o| {
            if cow.contains(&(o ^ BLOCK)) {
                return;
            }
            a.read(1, o, &mut buf).unwrap();
            assert!(buf == block(0, o, 0), "LUN 1 at {o}");
        },
    );
    m.step("lun_info of both", &mut a, |a| {
        let (i0, i1) = (a.lun_info(0).unwrap(), a.lun_info(1).unwrap());
        assert_eq!((i0.size, i1.size), (TIB, TIB));
        assert!(i0.shared_bytes > 0 && i1.exclusive_bytes > 0);
    });
    // close and open consume and make the array: measured by hand.
    let before = a.device_mut().resident_blocks() * BLOCK as usize;
    reset_peak();
    let t = Instant::now();
    let dev = a.close().unwrap();
    let mut a = Array::open(
        dev,
        &OpenOptions {
            cache_bytes: CACHE,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let p = peak() - m.base;
    m.record("close and reopen", p, p - before, t.elapsed().as_secs_f64());
    m.each("500 writes after reopen", &mut a, &reopened, |a, &o| {
        a.write(1, o, &block(1, o, 2)).unwrap()
    });
    m.step("restore the copy", &mut a, |a| a.restore(1).unwrap());
    m.each("read the restored parent", &mut a, &reopened, |a, &o| {
        a.read(0, o, &mut buf).unwrap();
        assert!(buf == block(1, o, 2), "LUN 0 at {o}");
    });
    m.print();
    println!(
        "peak heap: {:.2} MiB in all, {:.2} MiB without the device's blocks ({} blocks resident at the end)",
        mib(m.total),
        mib(m.array),
        a.device_mut().resident_blocks()
    );
    assert!(
        m.array < LIMIT,
        "the array used {:.2} MiB of heap",
        mib(m.array)
    );
}

/// `check()` of the same pool: one `u32` per data extent in chunks of `DATA_CHUNK`
/// (2^20) extents, so 4 MiB plus a little per metadata page, within the 8 MiB target
/// (docs/DESIGN.md §5) for any pool size. (Before the fix: 2^22-extent chunks, allocated
/// while the previous one was still held: ~35 MiB.)
#[test]
fn check_of_a_one_tebibyte_lun_in_a_few_mib_of_heap() {
    let _serial = HEAP.lock().unwrap_or_else(|e| e.into_inner());
    let base = CURRENT.load(Ordering::Relaxed);
    let mut a = tebibyte_array();
    let mut rng = Rng::new(7);
    a.create_lun(0, TIB).unwrap();
    for o in offsets(&mut rng, 1000) {
        a.write(0, o, &block(0, o, 0)).unwrap();
    }
    a.create_copy(0, 1, true).unwrap();
    for o in offsets(&mut rng, 500) {
        a.write(1, o, &block(1, o, 0)).unwrap();
    }
    a.flush().unwrap();
    let t = Instant::now();
    let (v, total, own) = call(&mut a, base, |a| a.check().unwrap());
    assert!(v.is_empty(), "{v:?}");
    println!(
        "check(): heap peak {:.2} MiB, {:.2} MiB without device blocks, {:.1} s",
        mib(total),
        mib(own),
        t.elapsed().as_secs_f64()
    );
    assert!(own < LIMIT, "check() used {:.2} MiB of heap", mib(own));
}
