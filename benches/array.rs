//! Array benchmarks: the cost of business-copy operations against the LUN size, the 4 KiB
//! random I/O path against the raw in-memory device, the first write into a shared
//! extent (copy-on-write), the cost of deleting a copy against its own changes, and the
//! on-device metadata per mapped extent. Figures and how to read them: `BENCHMARKS.md`
//! at the repository root, section "Array".
//!
//! Run with `cargo bench --bench array` (~3.5 minutes on 2 cores). A criterion filter
//! (`cargo bench --bench array -- array_delete_copy`) also skips the set-up of the
//! groups it does not select (the filter is matched as a plain substring here).
//!
//! Large LUNs (64 GiB, 1 TiB) cannot hold real data in RAM, so the copy-operation and
//! delete benchmarks run on [`MetaOnlyDevice`]: a [`MemDevice`] that keeps the metadata
//! area and drops every write to the data area (which then reads as zeros). The array
//! does the same work as on a real device up to the data transfer itself; the mapping
//! of every written extent and every reference count are real.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use lunsnap::testing::layout::max_entries;
use lunsnap::testing::layout::worst_case_metadata_pages;
use lunsnap::testing::Rng;
use lunsnap::DEFAULT_MAX_LUNS;
use lunsnap::{Array, BlockDevice, DeviceErrorKind, FormatOptions, MemDevice};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
/// Device block size used everywhere (the metadata page size too).
const PAGE: u64 = 4096;
/// The LUN every benchmark works on, and its copy.
const PARENT: u32 = 0;
const COPY: u32 = 1;
/// Extent size of the copy-operation, delete and metadata benchmarks (the default).
const META_EXTENT: u64 = 64 * KIB;
/// Size of the LUN of the 4 KiB random I/O benchmarks.
const IO_LUN: u64 = 256 * MIB;
/// Random 4 KiB writes between flushes in the "flush every N" variant.
const FLUSH_EVERY: u64 = 1000;
/// Size of the LUN of the first-write-into-a-shared-extent benchmarks.
const COW_LUN: u64 = GIB;
/// Most extents one mapping leaf can map: a mapping value is 16 extent slots of 4 bytes
/// (64 bytes), and a leaf holds `max_entries(64)` values. Writes this many extents apart
/// always land in different leaves.
const LEAF_SPAN: u64 = 16 * max_entries(64) as u64;

/// A [`MemDevice`] that stores only the blocks outside the data area (the superblocks,
/// the metadata area and its second copies at the device's end) and silently drops
/// writes inside it; dropped blocks read as zeros. Requests are checked against the
/// whole geometry like a real device.
struct MetaOnlyDevice {
    inner: MemDevice,
    /// The data area's blocks (empty until [`MetaOnlyDevice::drop_data_of`]).
    data: std::ops::Range<u64>,
    /// Blocks written outside the data area (metadata and superblock writes).
    meta_writes: u64,
}

impl MetaOnlyDevice {
    fn new(block_count: u64) -> Self {
        MetaOnlyDevice {
            inner: MemDevice::new(PAGE as u32, block_count).expect("device geometry"),
            data: 0..0,
            meta_writes: 0,
        }
    }

    /// Drops the data area of `a`'s geometry from now on.
    fn drop_data_of(a: &mut Array<MetaOnlyDevice>) {
        let g = a.engine().geometry();
        let end = g.data_start + g.data_extents * g.extent_pages();
        a.device_mut().data = g.data_start..end;
    }

    /// Validates a request and tells whether it is kept (outside the data area:
    /// metadata requests are single pages, data requests lie inside extents).
    fn kept(&self, lba: u64, len: usize) -> Result<bool, DeviceErrorKind> {
        let bs = PAGE as usize;
        if len % bs != 0 {
            return Err(DeviceErrorKind::OutOfRange);
        }
        let blocks = (len / bs) as u64;
        match lba.checked_add(blocks) {
            Some(end) if end <= self.inner.block_count() => {}
            _ => return Err(DeviceErrorKind::OutOfRange),
        }
        Ok(!self.data.contains(&lba))
    }
}

impl BlockDevice for MetaOnlyDevice {
    type Error = DeviceErrorKind;

    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }

    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        if self.kept(lba, buf.len())? {
            self.inner.read(lba, buf)
        } else {
            buf.fill(0);
            Ok(())
        }
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        if self.kept(lba, buf.len())? {
            self.inner.write(lba, buf)?;
            self.meta_writes += (buf.len() / PAGE as usize) as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()
    }

    fn discard(&mut self, lba: u64, count: u64) -> Result<(), Self::Error> {
        lba.checked_add(count)
            .filter(|&e| e <= self.inner.block_count())
            .ok_or(DeviceErrorKind::OutOfRange)?;
        if !self.data.contains(&lba) {
            self.inner.discard(lba, count)?;
        }
        Ok(())
    }
}

/// Device pages for a pool of at least `pool` bytes of `extent`-sized extents: the
/// superblocks and the worst-case metadata area the array provisions, each in two
/// copies (over-estimated: the array sizes it for the whole device, metadata area
/// included), the spare extents it keeps out of the capacity (at most 1/256 of the
/// pool, 1 to 256) and alignment. The caller checks the resulting capacity.
fn device_pages(pool: u64, extent: u64) -> u64 {
    let extents = pool / extent;
    let spare = extents.div_ceil(255).min(256) + 4;
    (extents + spare) * extent / PAGE
        + 2 * (worst_case_metadata_pages(2 * extents + 64, DEFAULT_MAX_LUNS) + 2)
}

fn format<D: BlockDevice>(dev: D, extent: u64) -> Array<D> {
    Array::format(
        dev,
        &FormatOptions {
            extent_size: extent as u32,
            ..Default::default()
        },
    )
    .expect("format")
}

/// A buffer of `len` bytes that is nowhere zero (a `MemDevice` does not store zero blocks).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn size_label(bytes: u64) -> String {
    if bytes >= TIB {
        format!("{}TiB", bytes / TIB)
    } else if bytes >= GIB {
        format!("{}GiB", bytes / GIB)
    } else if bytes >= MIB {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{}KiB", bytes / KIB)
    }
}

/// Criterion option flags that take a value (so the value is not a filter).
const VALUE_FLAGS: &[&str] = &[
    "--save-baseline",
    "-s",
    "--baseline",
    "-b",
    "--baseline-lenient",
    "--load-baseline",
    "--measurement-time",
    "--warm-up-time",
    "--sample-size",
    "--profile-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--plotting-backend",
    "--output-format",
    "--color",
    "-c",
    "--format",
];

/// True unless the command line holds a filter that cannot match anything in `group`.
fn selected(group: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let mut skip = false;
    for a in &args {
        if skip {
            skip = false;
        } else if a.starts_with('-') {
            skip = VALUE_FLAGS.contains(&a.as_str());
        } else {
            filters.push(a.as_str());
        }
    }
    filters.is_empty()
        || filters
            .iter()
            .any(|f| group.contains(f) || f.starts_with(group))
}

// ---------------------------------------------------------------------------------
// Copy operations, delete of a copy, metadata per extent (metadata-only device).
// ---------------------------------------------------------------------------------

/// A metadata-only array holding LUN [`PARENT`] of `size` bytes, every extent of it
/// written (one full 64 KiB extent per write, in order) and flushed.
struct Written {
    size: u64,
    array: Array<MetaOnlyDevice>,
}

/// Builds a [`Written`] array and prints the on-device metadata per mapped extent.
fn written_lun(size: u64) -> Written {
    let t0 = Instant::now();
    let es = META_EXTENT;
    // Room for the LUN and one attached copy of it (full-size reservation).
    let mut a = format(MetaOnlyDevice::new(device_pages(2 * size, es)), es);
    MetaOnlyDevice::drop_data_of(&mut a);
    assert!(a.pool_info().capacity_bytes >= 2 * size, "pool too small");
    a.create_lun(PARENT, size).expect("create_lun");
    let before = a.pool_info().metadata_used_bytes;
    let buf = pattern(es as usize, 7);
    let extents = size / es;
    for e in 0..extents {
        a.write(PARENT, e * es, &buf).expect("fill write");
    }
    a.flush().expect("flush");
    let p = a.pool_info();
    assert_eq!(p.allocated_bytes, size, "fill mapped what it wrote");
    println!(
        "filled a {} LUN ({} extents of {} KiB) in {:.2?}",
        size_label(size),
        extents,
        es / KIB,
        t0.elapsed()
    );
    println!(
        "metadata per mapped extent, {} LUN fully written, {} KiB extents, {} copies: {:.2} B ({:.2} B per copy; {} B in use / {} extents; {:.2} B of it added by the fill; {} MiB provisioned)",
        size_label(size),
        es / KIB,
        p.metadata_copies,
        p.metadata_used_bytes as f64 / extents as f64,
        p.metadata_used_bytes as f64 / extents as f64 / f64::from(p.metadata_copies),
        p.metadata_used_bytes,
        extents,
        (p.metadata_used_bytes - before) as f64 / extents as f64,
        p.metadata_provisioned_bytes >> 20,
    );
    Written { size, array: a }
}

/// Times create_copy, attach (refresh) and restore on a fully written LUN, and prints
/// the metadata pages each writes.
fn copy_ops(c: &mut Criterion, w: &mut Written) {
    let mut g = c.benchmark_group("array_copy_ops");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let label = size_label(w.size);
    let a = &mut w.array;

    // create_copy: timed; the delete that makes room for the next one is not.
    let (mut ops, mut blocks) = (0u64, 0u64);
    g.bench_function(BenchmarkId::new("create_copy", &label), |b| {
        b.iter_custom(|iters| {
            let mut el = Duration::ZERO;
            for _ in 0..iters {
                let w0 = a.device_mut().meta_writes;
                let t0 = Instant::now();
                a.create_copy(PARENT, black_box(COPY), true)
                    .expect("create_copy");
                el += t0.elapsed();
                blocks += a.device_mut().meta_writes - w0;
                a.delete(COPY, false).expect("delete");
            }
            ops += iters;
            el
        })
    });
    let create_blocks = blocks as f64 / ops.max(1) as f64;

    // attach: refresh of an attached copy (drops the previous copy mapping).
    a.create_copy(PARENT, COPY, true).expect("create_copy");
    let (mut ops, mut blocks) = (0u64, 0u64);
    g.bench_function(BenchmarkId::new("attach_refresh", &label), |b| {
        b.iter_custom(|iters| {
            let w0 = a.device_mut().meta_writes;
            let t0 = Instant::now();
            for _ in 0..iters {
                a.attach(black_box(COPY)).expect("attach");
            }
            let el = t0.elapsed();
            blocks += a.device_mut().meta_writes - w0;
            ops += iters;
            el
        })
    });
    let attach_blocks = blocks as f64 / ops.max(1) as f64;

    // restore: the parent takes the copy's contents.
    let (mut ops, mut blocks) = (0u64, 0u64);
    g.bench_function(BenchmarkId::new("restore", &label), |b| {
        b.iter_custom(|iters| {
            let w0 = a.device_mut().meta_writes;
            let t0 = Instant::now();
            for _ in 0..iters {
                a.restore(black_box(COPY)).expect("restore");
            }
            let el = t0.elapsed();
            blocks += a.device_mut().meta_writes - w0;
            ops += iters;
            el
        })
    });
    let restore_blocks = blocks as f64 / ops.max(1) as f64;
    a.delete(COPY, false).expect("delete");
    g.finish();
    let p = a.pool_info();
    assert_eq!(
        p.allocated_bytes, w.size,
        "copy operations leaked or lost extents"
    );
    println!(
        "copy ops {label}: metadata pages written per op (superblock included): create_copy {create_blocks:.2}, attach {attach_blocks:.2}, restore {restore_blocks:.2}"
    );
}

/// Delete of a copy with `n` own-written extents, contiguous or spread evenly
/// over the LUN (each in a different mapping leaf while `n` is below the leaf count).
fn delete_copy(c: &mut Criterion, ws: &mut [Written]) {
    let mut g = c.benchmark_group("array_delete_copy");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(50))
        .measurement_time(Duration::from_secs(2));
    let es = META_EXTENT;
    let buf = pattern(es as usize, 9);
    for w in ws.iter_mut() {
        let label = size_label(w.size);
        let extents = w.size / es;
        let a = &mut w.array;
        for (n, spread) in [
            (0u64, false),
            (100, false),
            (100, true),
            (10_000, false),
            (10_000, true),
        ] {
            let id = if n == 0 {
                "own_0".to_string()
            } else {
                format!("own_{n}_{}", if spread { "spread" } else { "contiguous" })
            };
            g.bench_function(BenchmarkId::new(&label, &id), |b| {
                b.iter_custom(|iters| {
                    let mut el = Duration::ZERO;
                    for _ in 0..iters {
                        a.create_copy(PARENT, COPY, true).expect("create_copy");
                        for k in 0..n {
                            let e = if spread { k * extents / n } else { k };
                            a.write(COPY, e * es, &buf).expect("copy write");
                        }
                        // Commit the copy's writes first: the delete's own commit then
                        // carries only the delete.
                        a.flush().expect("flush");
                        let t0 = Instant::now();
                        a.delete(black_box(COPY), false).expect("delete");
                        el += t0.elapsed();
                    }
                    el
                })
            });
        }
        let p = a.pool_info();
        assert_eq!(p.allocated_bytes, w.size, "delete leaked or lost extents");
    }
    g.finish();
}

/// `diff` of a fully written LUN and a copy of it that then wrote 100 extents spread
/// over the LUN (what changed is constant, the LUN grows), beside a full comparison
/// of the two mappings (a `map` of each, what a diff that cannot skip shared subtrees
/// would at least walk).
fn diff_lineage(c: &mut Criterion, w: &mut Written) {
    let mut g = c.benchmark_group("array_map_diff");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let label = size_label(w.size);
    let es = META_EXTENT;
    let extents = w.size / es;
    let a = &mut w.array;
    a.create_copy(PARENT, COPY, true).expect("create_copy");
    let buf = pattern(es as usize, 11);
    for k in 0..100 {
        a.write(COPY, k * extents / 100 * es, &buf)
            .expect("copy write");
    }
    a.flush().expect("flush");
    let d = a.diff(PARENT, COPY, 0, w.size).expect("diff");
    assert_eq!(d.iter().map(|r| r.length).sum::<u64>(), 100 * es);
    g.bench_function(BenchmarkId::new("diff_100_changed", &label), |b| {
        b.iter(|| a.diff(PARENT, black_box(COPY), 0, w.size).expect("diff"))
    });
    if w.size <= 64 * GIB {
        g.sample_size(10);
        g.bench_function(BenchmarkId::new("full_map_compare", &label), |b| {
            b.iter(|| {
                let x = a.map(PARENT, 0, w.size).expect("map");
                let y = a.map(black_box(COPY), 0, w.size).expect("map");
                (x.len(), y.len())
            })
        });
    }
    a.delete(COPY, false).expect("delete");
    g.finish();
}

/// `map` of a 1 TiB LUN with 1,000 extents written, spread over it.
fn map_sparse(c: &mut Criterion) {
    let es = META_EXTENT;
    let mut a = format(MetaOnlyDevice::new(device_pages(TIB, es)), es);
    MetaOnlyDevice::drop_data_of(&mut a);
    a.create_lun(PARENT, TIB).expect("create_lun");
    let buf = pattern(es as usize, 5);
    let extents = TIB / es;
    for k in 0..1000 {
        a.write(PARENT, k * extents / 1000 * es, &buf)
            .expect("write");
    }
    a.flush().expect("flush");
    let m = a.map(PARENT, 0, TIB).expect("map");
    assert_eq!(m.iter().filter(|r| r.data).count(), 1000);
    let mut g = c.benchmark_group("array_map_diff");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function(BenchmarkId::new("map_1000_extents", "1TiB"), |b| {
        b.iter(|| a.map(black_box(PARENT), 0, TIB).expect("map"))
    });
    g.finish();
}

/// The benchmarks on [`MetaOnlyDevice`] arrays. Building the 1 GiB and 64 GiB arrays
/// prints the metadata per mapped extent (a filter `array_metadata` runs just that).
fn metadata_only(c: &mut Criterion) {
    let copy = selected("array_copy_ops");
    let delete = selected("array_delete_copy");
    let meta = selected("array_metadata");
    let diff = selected("array_map_diff");
    if !(copy || delete || meta || diff) {
        return;
    }
    let mut ws = vec![written_lun(GIB), written_lun(64 * GIB)];
    if copy {
        for w in ws.iter_mut() {
            copy_ops(c, w);
        }
    }
    if diff {
        for w in ws.iter_mut() {
            diff_lineage(c, w);
        }
        map_sparse(c);
    }
    if copy || diff {
        // 1 TiB, fully written too: 2^24 writes of 64 KiB (~11–15 s on the build machine).
        let mut tib = written_lun(TIB);
        if copy {
            copy_ops(c, &mut tib);
        }
        if diff {
            diff_lineage(c, &mut tib);
        }
    }
    if delete {
        delete_copy(c, &mut ws);
    }
}

/// Writing 1 GiB of zeros (whole extents: unmapped by zero detection, nothing
/// allocated) against writing 1 GiB of data, in 1 MiB writes, on a `MemDevice`.
fn zero_writes(c: &mut Criterion) {
    if !selected("array_zero_write") {
        return;
    }
    let mut g = c.benchmark_group("array_zero_write");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(GIB));
    let es = 16 * KIB;
    let dev = MemDevice::new(PAGE as u32, device_pages(GIB, es)).expect("device");
    let mut a = format(dev, es);
    a.create_lun(PARENT, GIB).expect("create_lun");
    let zeros = vec![0u8; MIB as usize];
    let data = pattern(MIB as usize, 3);
    for (name, buf) in [("zeros_1GiB", &zeros), ("data_1GiB", &data)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for k in 0..GIB / MIB {
                    a.write(PARENT, k * MIB, black_box(buf)).expect("write");
                }
            })
        });
        let allocated = a.pool_info().allocated_bytes;
        println!("{name}: {allocated} bytes allocated after the writes");
        a.write_zeroes(PARENT, 0, GIB, true).expect("clear");
        a.flush().expect("flush");
    }
    g.finish();
}

// ---------------------------------------------------------------------------------
// 4 KiB random write / read on an unshared LUN, against the raw MemDevice.
// ---------------------------------------------------------------------------------

/// 4 KiB random reads and writes at the same offsets on the raw device and on a fully
/// written 256 MiB LUN, for several extent sizes: writes with no flush (all in place),
/// and with a flush every [`FLUSH_EVERY`] writes (after which the first write into each
/// committed extent copies it whole).
fn random_io(c: &mut Criterion) {
    if !selected("array_4k_random") {
        return;
    }
    let blocks = IO_LUN / PAGE;
    let mut rng = Rng::new(0x5eed);
    // The same offsets (in 4 KiB blocks) for the raw device and every array.
    let offs: Vec<u64> = (0..1 << 20).map(|_| rng.below(blocks)).collect();
    let mask = offs.len() - 1;
    let buf = pattern(PAGE as usize, 3);
    let mut out = vec![0u8; PAGE as usize];

    let mut g = c.benchmark_group("array_4k_random_256MiB");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));

    // The raw device: fully written, kept for the interleaved comparisons below.
    let mut raw = MemDevice::new(PAGE as u32, blocks).expect("device");
    {
        let fill = pattern(MIB as usize, 5);
        for b in (0..blocks).step_by((MIB / PAGE) as usize) {
            raw.write(b, &fill).expect("raw fill");
        }
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("write", "raw_memdevice"), |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let lba = offs[i & mask];
                    i += 1;
                    raw.write(black_box(lba), black_box(&buf)).expect("write");
                }
                t0.elapsed()
            })
        });
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("read", "raw_memdevice"), |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let lba = offs[i & mask];
                    i += 1;
                    raw.read(black_box(lba), &mut out).expect("read");
                    black_box(&out);
                }
                t0.elapsed()
            })
        });
    }

    for es in [4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB] {
        let label = format!("ext_{}", size_label(es));
        // A pool twice the LUN: copy-on-write after a flush finds free extents.
        let mut a = format(
            MemDevice::new(PAGE as u32, device_pages(2 * IO_LUN, es)).expect("device"),
            es,
        );
        assert!(a.pool_info().capacity_bytes >= 2 * IO_LUN, "pool too small");
        a.create_lun(PARENT, IO_LUN).expect("create_lun");
        let t0 = Instant::now();
        let fill = pattern(es as usize, 5);
        for e in 0..IO_LUN / es {
            a.write(PARENT, e * es, &fill).expect("fill write");
        }
        // No flush: every extent was allocated in this transaction, so writes go in place.
        println!(
            "filled the {} LUN with {} extents in {:.2?}",
            size_label(IO_LUN),
            size_label(es),
            t0.elapsed()
        );
        interleaved(&label, &mut raw, &mut a, &offs);

        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("read", &label), |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let off = offs[i & mask] * PAGE;
                    i += 1;
                    a.read(PARENT, black_box(off), &mut out).expect("read");
                    black_box(&out);
                }
                t0.elapsed()
            })
        });

        let mut i = 0usize;
        let a0 = a.pool_info().allocated_bytes;
        g.bench_function(BenchmarkId::new("write_no_flush", &label), |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let off = offs[i & mask] * PAGE;
                    i += 1;
                    a.write(PARENT, black_box(off), black_box(&buf))
                        .expect("write");
                }
                t0.elapsed()
            })
        });
        assert_eq!(
            a.pool_info().allocated_bytes,
            a0,
            "in-place writes allocated"
        );

        let mut i = 0usize;
        let mut pending = 0u64;
        let (mut ops, mut in_flush) = (0u64, Duration::ZERO);
        g.bench_function(
            BenchmarkId::new(format!("write_flush_every_{FLUSH_EVERY}"), &label),
            |b| {
                b.iter_custom(|iters| {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        let off = offs[i & mask] * PAGE;
                        i += 1;
                        a.write(PARENT, black_box(off), black_box(&buf))
                            .expect("write");
                        pending += 1;
                        if pending == FLUSH_EVERY {
                            let f0 = Instant::now();
                            a.flush().expect("flush");
                            in_flush += f0.elapsed();
                            pending = 0;
                        }
                    }
                    ops += iters;
                    t0.elapsed()
                })
            },
        );
        println!(
            "{label}: flush every {FLUSH_EVERY} writes: the flushes took {:.2} us per write",
            in_flush.as_secs_f64() * 1e6 / ops.max(1) as f64
        );
        // Spot check: what the last writes left reads back.
        let off = offs[(i - 1) & mask] * PAGE;
        a.read(PARENT, off, &mut out).expect("read");
        assert!(out == buf, "last write reads back");
    }
    g.finish();
}

/// Rounds and operations per round of the interleaved raw/array comparison.
const ROUNDS: usize = 101;
const ROUND_OPS: usize = 2_000;

/// Alternates rounds of the same 4 KiB random writes (then reads) on the raw device and
/// on the array (in place: nothing flushed since the fill), and prints the array's
/// throughput as a fraction of the raw device's: the median over the rounds, and the
/// quartiles. Each round pair runs back to back, so load from other jobs on the machine
/// affects both sides alike, which the separate criterion figures cannot promise.
fn interleaved(label: &str, raw: &mut MemDevice, a: &mut Array<MemDevice>, offs: &[u64]) {
    let buf = pattern(PAGE as usize, 13);
    let mut out = vec![0u8; PAGE as usize];
    let report = |what: &str, ratios: &mut Vec<f64>| {
        ratios.sort_by(f64::total_cmp);
        println!(
            "{label} interleaved {what}: array throughput = {:.0}% of raw (median of {ROUNDS} rounds of {ROUND_OPS} ops; quartiles {:.0}-{:.0}%)",
            100.0 * ratios[ratios.len() / 2],
            100.0 * ratios[ratios.len() / 4],
            100.0 * ratios[3 * ratios.len() / 4],
        );
    };
    for write in [true, false] {
        let mut ratios = Vec::with_capacity(ROUNDS);
        // Round 0 only warms both sides up.
        for r in 0..=ROUNDS {
            let o = &offs[r * ROUND_OPS..(r + 1) * ROUND_OPS];
            let t0 = Instant::now();
            for &b in o {
                if write {
                    raw.write(b, black_box(&buf)).expect("raw write");
                } else {
                    raw.read(b, &mut out).expect("raw read");
                    black_box(&out);
                }
            }
            let t_raw = t0.elapsed();
            let t0 = Instant::now();
            for &b in o {
                if write {
                    a.write(PARENT, b * PAGE, black_box(&buf)).expect("write");
                } else {
                    a.read(PARENT, b * PAGE, &mut out).expect("read");
                    black_box(&out);
                }
            }
            let t_arr = t0.elapsed();
            if r == 0 {
                continue;
            }
            ratios.push(t_raw.as_secs_f64() / t_arr.as_secs_f64());
        }
        report(if write { "write" } else { "read" }, &mut ratios);
    }
}

// ---------------------------------------------------------------------------------
// First 4 KiB write into a shared extent (copy-on-write).
// ---------------------------------------------------------------------------------

/// 4 KiB writes into the parent of a fresh copy, each the first write into its
/// extent (so each allocates a new extent and copies the old one whole), on a fully
/// written 1 GiB LUN with real data. Orders: `sequential` (neighbouring extents, so
/// shadowing each shared mapping leaf is shared by the writes into it), `random` (a
/// random permutation of all the extents) and `one_per_leaf` (extents [`LEAF_SPAN`]
/// apart, so every write also shadows a mapping leaf still shared with the copy, which
/// gives every extent that leaf maps one more reference: the worst case, and the common
/// one for the first random writes after a copy of a large LUN).
fn first_shared_write(c: &mut Criterion) {
    if !selected("array_first_write_shared") {
        return;
    }
    let mut g = c.benchmark_group("array_first_write_shared_1GiB");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let buf = pattern(PAGE as usize, 11);
    for es in [4 * KIB, 16 * KIB, 64 * KIB, MIB] {
        let label = format!("ext_{}", size_label(es));
        let mut a = format(
            MemDevice::new(PAGE as u32, device_pages(2 * COW_LUN, es)).expect("device"),
            es,
        );
        assert!(
            a.pool_info().capacity_bytes >= 2 * COW_LUN,
            "pool too small"
        );
        a.create_lun(PARENT, COW_LUN).expect("create_lun");
        let t0 = Instant::now();
        let fill = pattern(es as usize, 5);
        let extents = COW_LUN / es;
        for e in 0..extents {
            a.write(PARENT, e * es, &fill).expect("fill write");
        }
        a.create_copy(PARENT, COPY, true).expect("create_copy");
        let p = a.pool_info();
        println!(
            "filled the {} LUN with {} extents and copied it in {:.2?}; metadata per mapped extent {:.2} B",
            size_label(COW_LUN),
            size_label(es),
            t0.elapsed(),
            p.metadata_used_bytes as f64 / extents as f64,
        );
        let mut rng = Rng::new(es);
        let mut shuffled: Vec<u64> = (0..extents).collect();
        for k in (1..shuffled.len()).rev() {
            shuffled.swap(k, rng.below(k as u64 + 1) as usize);
        }
        let sequential: Vec<u64> = (0..extents).collect();
        let per_leaf: Vec<u64> = (0..extents).step_by(LEAF_SPAN as usize).collect();
        for (order_name, order) in [
            ("sequential", &sequential),
            ("random", &shuffled),
            ("one_per_leaf", &per_leaf),
        ] {
            // Every extent of the parent is shared with the copy; each timed write is the
            // first into its extent. When all are used up, the copy is deleted and made
            // again (untimed), which shares everything again.
            let mut cursor = 0usize;
            let (mut recopies, mut recopy_time) = (0u64, Duration::ZERO);
            g.bench_function(BenchmarkId::new(&label, order_name), |b| {
                b.iter_custom(|iters| {
                    let mut left = iters;
                    let mut el = Duration::ZERO;
                    while left > 0 {
                        if cursor == order.len() {
                            let r0 = Instant::now();
                            a.delete(COPY, false).expect("delete");
                            a.create_copy(PARENT, COPY, true).expect("create_copy");
                            recopy_time += r0.elapsed();
                            recopies += 1;
                            cursor = 0;
                        }
                        let n = left.min((order.len() - cursor) as u64);
                        let t0 = Instant::now();
                        for &e in &order[cursor..cursor + n as usize] {
                            a.write(PARENT, black_box(e * es), black_box(&buf))
                                .expect("write");
                        }
                        el += t0.elapsed();
                        cursor += n as usize;
                        left -= n;
                    }
                    el
                })
            });
            println!(
                "{label} {order_name}: {recopies} re-copies (delete + create_copy, untimed, {:.2?} each)",
                recopy_time / recopies.max(1) as u32
            );
            // Next order starts from a fully shared parent again.
            a.delete(COPY, false).expect("delete");
            a.create_copy(PARENT, COPY, true).expect("create_copy");
        }
        // The written block reads back, and the copy-on-write kept the rest of the extent.
        let mut out = vec![0u8; 2 * PAGE as usize];
        let n = if es > PAGE { 2 * PAGE } else { PAGE } as usize;
        a.read(PARENT, 0, &mut out[..n]).expect("read");
        assert!(out[..PAGE as usize] == buf[..], "written block reads back");
        assert!(
            out[PAGE as usize..n] == fill[PAGE as usize..n],
            "copy-on-write kept the rest of the extent"
        );
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    metadata_only(c);
    zero_writes(c);
    random_io(c);
    first_shared_write(c);
}

criterion_group!(array, benches);
criterion_main!(array);
