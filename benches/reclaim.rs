//! Background freeing (issue 15): what the operations that drop a mapping cost now
//! that the mapping is only queued, how fast `Array::reclaim` frees what waits, and
//! what freeing a large mapping in the background costs the 4 KiB random writes that
//! run meanwhile. Figures and how to read them: `BENCHMARKS.md`, section "Background
//! freeing".
//!
//! Groups: `ops` (delete / detach / attach / restore of a mapping diverged by 1 MiB,
//! 1 GiB and 64 GiB, as the set-up left the CPU caches and with them evicted, then
//! the rate of `reclaim(RECLAIM_PER_FLUSH)`), `eager` (an operation plus
//! `reclaim(u64::MAX)`: freeing at once) and `writes` (4 KiB random writes while a
//! deleted 64 GiB LUN is freed, against an idle array, batch by batch).
//!
//! A plain program (`harness = false`, no criterion): every timed operation needs a
//! mapping that owns up to 64 GiB of extents of its own, which takes seconds of writes
//! to build and is used up by the operation, so each sample is set up by hand.
//!
//! ```sh
//! cargo bench --bench reclaim                           # 16 KiB extents (default), ~2 min
//! cargo bench --bench reclaim -- --extents 16,64,1024   # also 64 KiB and 1 MiB, ~2.7 min
//! cargo bench --bench reclaim -- writes                 # one group: ops, eager or writes
//! cargo bench --bench reclaim -- --quick                # a smoke run (1 GiB LUN), ~1 s
//! ```
//!
//! The LUNs are 64 GiB and fully written, which cannot be held in RAM, so everything
//! runs on [`MetaOnlyDevice`]: a [`MemDevice`] that keeps the superblocks and the
//! metadata area (both copies) and drops every write to the data area (which then
//! reads as zeros), as the copy-operation benchmarks of `benches/array.rs` do. The
//! array does all of its work up to the data transfer itself: every mapping, free
//! queue and reference count is real, and so is every metadata page read and written.
//! The write group also runs with the data copied to and from a RAM ring, for the
//! memory traffic of a real RAM disk.

use std::hint::black_box;
use std::time::{Duration, Instant};

use lunsnap::testing::layout::worst_case_metadata_pages;
use lunsnap::testing::Rng;
use lunsnap::{
    Array, BlockDevice, DeviceErrorKind, FormatOptions, MemDevice, OpenOptions,
    DEFAULT_EXTENT_SIZE, DEFAULT_MAX_LUNS, RECLAIM_PER_FLUSH,
};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Device block size (the metadata page size too).
const PAGE: u64 = 4096;
/// The large LUN, its copy, and the LUN the 4 KiB random writes go to.
const PARENT: u32 = 0;
const COPY: u32 = 1;
const WORK: u32 = 2;
/// Size of [`WORK`].
const WORK_LUN: u64 = 256 * MIB;
/// 4 KiB writes between two flushes of the write workload.
const BATCH: usize = 1000;

// ---------------------------------------------------------------------------------
// The metadata-only device (the same as `benches/array.rs`'s).
// ---------------------------------------------------------------------------------

/// A [`MemDevice`] that stores only the blocks outside the data area (the
/// superblocks, the metadata area and its second copies at the device's end) and
/// silently drops writes and discards inside it; dropped blocks read as zeros.
/// Requests are checked against the whole geometry like a real device. `Clone`
/// copies the stored blocks, so one built array can be opened several times.
///
/// With a RAM ring ([`MetaOnlyDevice::with_data_ram`]) data-area writes and reads
/// are copied to and from a fixed buffer instead (each 4 KiB block to a slot
/// chosen by a hash of its number): the memory traffic of a RAM disk without
/// keeping the data (reads return whatever the ring holds; the array does not
/// check data).
#[derive(Clone)]
struct MetaOnlyDevice {
    inner: MemDevice,
    /// The data area's blocks (empty until [`MetaOnlyDevice::drop_data_of`]).
    data: std::ops::Range<u64>,
    /// Blocks written outside the data area (metadata and superblock writes).
    meta_writes: u64,
    /// The RAM ring data-area transfers go to, if any.
    ram: Option<Vec<u8>>,
}

impl MetaOnlyDevice {
    fn new(block_count: u64) -> Self {
        MetaOnlyDevice {
            inner: MemDevice::new(PAGE as u32, block_count).expect("device geometry"),
            data: 0..0,
            meta_writes: 0,
            ram: None,
        }
    }

    /// The same device, with data-area transfers copied to and from a RAM ring of
    /// `bytes` (a multiple of the page size).
    fn with_data_ram(&self, bytes: usize) -> Self {
        let mut d = self.clone();
        d.ram = Some(pattern(bytes, 1));
        d
    }

    /// Byte offset in the RAM ring of data-area block `lba`: a multiplicative hash
    /// of the block number, so that blocks land all over the ring as a
    /// `MemDevice`'s separately allocated blocks do, and two arrays that allocate
    /// differently see the same memory locality on average.
    fn ring_at(&self, lba: u64, ram: usize) -> usize {
        let h = (lba - self.data.start).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        (h % (ram as u64 / PAGE)) as usize * PAGE as usize
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
            let bs = PAGE as usize;
            match self.ram.as_ref() {
                Some(ram) => {
                    for (b, chunk) in (lba..).zip(buf.chunks_exact_mut(bs)) {
                        let at = self.ring_at(b, ram.len());
                        chunk.copy_from_slice(&ram[at..at + bs]);
                    }
                }
                None => buf.fill(0),
            }
            Ok(())
        }
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        if self.kept(lba, buf.len())? {
            self.inner.write(lba, buf)?;
            self.meta_writes += (buf.len() / PAGE as usize) as u64;
        } else if let Some(mut ram) = self.ram.take() {
            let bs = PAGE as usize;
            for (b, chunk) in (lba..).zip(buf.chunks_exact(bs)) {
                let at = self.ring_at(b, ram.len());
                ram[at..at + bs].copy_from_slice(chunk);
            }
            self.ram = Some(ram);
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

type Arr = Array<MetaOnlyDevice>;

/// Device pages for a pool of at least `pool` bytes of `extent`-sized extents (as
/// `benches/array.rs` sizes them; the caller checks the capacity).
fn device_pages(pool: u64, extent: u64) -> u64 {
    let extents = pool / extent;
    let spare = extents.div_ceil(255).min(256) + 4;
    (extents + spare) * extent / PAGE
        + 2 * (worst_case_metadata_pages(2 * extents + 64, DEFAULT_MAX_LUNS) + 2)
}

/// A buffer of `len` bytes that is nowhere zero (zero extents would be unmapped).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn size_label(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / KIB)
    }
}

/// `bytes` in GiB or MiB with two decimals.
fn bytes_label(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.2} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{:.2} MiB", bytes as f64 / MIB as f64)
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The `p`-th percentile (0..=100) of sorted `v` (nearest rank).
fn pct<T: Copy>(v: &[T], p: f64) -> T {
    let i = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[i - 1]
}

// ---------------------------------------------------------------------------------
// Command line.
// ---------------------------------------------------------------------------------

struct Opts {
    /// Groups to run (empty: all): `ops`, `eager`, `writes`.
    groups: Vec<String>,
    /// Extent sizes in bytes.
    extents: Vec<u64>,
    /// Smoke run: 1 GiB LUN, few samples.
    quick: bool,
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            groups: Vec::new(),
            extents: vec![u64::from(DEFAULT_EXTENT_SIZE)],
            quick: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--bench" => {}
                "--quick" => o.quick = true,
                "--extents" => {
                    let list = args.next().expect("--extents KIB[,KIB...]");
                    o.extents = list
                        .split(',')
                        .map(|k| k.trim().parse::<u64>().expect("extent size in KiB") * KIB)
                        .collect();
                }
                g if !g.starts_with('-') => o.groups.push(g.to_string()),
                other => panic!("unknown option {other}"),
            }
        }
        o
    }

    fn runs(&self, group: &str) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| group.contains(g.as_str()))
    }

    /// The large LUN's size.
    fn lun(&self) -> u64 {
        if self.quick {
            GIB
        } else {
            64 * GIB
        }
    }
}

// ---------------------------------------------------------------------------------
// Set-up and reclamation.
// ---------------------------------------------------------------------------------

/// A metadata-only array of `es`-byte extents with LUN [`PARENT`] of `lun` bytes,
/// every extent written (one full-extent write each, in order) and flushed, with
/// room for a copy of it that rewrites every extent and for [`WORK`].
fn build(es: u64, lun: u64) -> Arr {
    let t0 = Instant::now();
    let pool = 2 * lun + 2 * WORK_LUN;
    let mut a = Array::format(
        MetaOnlyDevice::new(device_pages(pool, es)),
        &FormatOptions {
            extent_size: es as u32,
            ..Default::default()
        },
    )
    .expect("format");
    MetaOnlyDevice::drop_data_of(&mut a);
    assert!(a.pool_info().capacity_bytes >= pool, "pool too small");
    a.create_lun(PARENT, lun).expect("create_lun");
    write_extents(&mut a, PARENT, lun, es, 7);
    a.flush().expect("flush");
    println!(
        "built: {} LUN fully written, {} extents ({}), in {:.2?}; metadata in use {} MiB",
        size_label(lun),
        size_label(es),
        lun / es,
        t0.elapsed(),
        a.pool_info().metadata_used_bytes >> 20
    );
    a
}

/// Writes the first `bytes` of LUN `n`, one full-extent write per extent.
fn write_extents(a: &mut Arr, n: u32, bytes: u64, es: u64, seed: u8) {
    let buf = pattern(es as usize, seed);
    for e in 0..bytes / es {
        a.write(n, e * es, &buf).expect("write");
    }
}

/// What working off the free queue took.
#[derive(Default, Clone, Copy)]
struct Drain {
    /// `reclaim` calls that did work.
    calls: u64,
    /// Time inside them (their commits included).
    time: Duration,
    /// The longest call.
    longest: Duration,
    /// Work units done, and data bytes freed (allocated bytes before minus after).
    work: u64,
    freed: u64,
}

impl Drain {
    fn add(&mut self, o: &Drain) {
        self.calls += o.calls;
        self.time += o.time;
        self.longest = self.longest.max(o.longest);
        self.work += o.work;
        self.freed += o.freed;
    }

    /// GiB of data freed per second inside `reclaim`.
    fn gib_per_s(&self) -> f64 {
        self.freed as f64 / GIB as f64 / self.time.as_secs_f64()
    }
}

/// Calls `reclaim(budget)` until nothing waits.
fn drain(a: &mut Arr, budget: u64) -> Drain {
    let before = a.pool_info().allocated_bytes;
    let mut d = Drain::default();
    while a.reclaim_pending() {
        let t0 = Instant::now();
        let s = a.reclaim(budget).expect("reclaim");
        let el = t0.elapsed();
        d.calls += 1;
        d.time += el;
        d.longest = d.longest.max(el);
        d.work += s.work;
        if s.remaining == 0 {
            break;
        }
    }
    assert!(!a.reclaim_pending(), "queue drained");
    d.freed = before - a.pool_info().allocated_bytes;
    d
}

// ---------------------------------------------------------------------------------
// Group `ops`: delete, detach, attach, restore of a mapping diverged by S; then the
// queue is drained with reclaim(RECLAIM_PER_FLUSH) (the reclamation rate).
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Delete,
    Detach,
    Attach,
    Restore,
}

const OPS: [Op; 4] = [Op::Delete, Op::Detach, Op::Attach, Op::Restore];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Delete => "delete (copy)",
            Op::Detach => "detach",
            Op::Attach => "attach (refresh)",
            Op::Restore => "restore",
        }
    }
}

/// Makes copy [`COPY`] of the fully written parent and makes the mapping that `op`
/// drops own `div` bytes of extents of its own: the copy rewrites its first `div`
/// bytes (delete, detach and attach drop the copy's image), or the parent does
/// after the copy was made (restore drops the parent's mapping). Then flushes, so
/// the operation's commit carries the operation alone.
fn prepare(a: &mut Arr, op: Op, div: u64, es: u64) {
    a.create_copy(PARENT, COPY, true).expect("create_copy");
    let who = if op == Op::Restore { PARENT } else { COPY };
    write_extents(a, who, div, es, 9);
    a.flush().expect("flush");
}

fn run_op(a: &mut Arr, op: Op) {
    match op {
        Op::Delete => a.delete(black_box(COPY), false),
        Op::Detach => a.detach(black_box(COPY)),
        Op::Attach => a.attach(black_box(COPY)),
        Op::Restore => a.restore(black_box(COPY)),
    }
    .expect("operation");
}

/// Puts the array back as [`build`] left it: no copy, nothing queued.
fn cleanup(a: &mut Arr, lun: u64) {
    if a.lun_numbers().contains(&COPY) {
        a.delete(COPY, false).expect("delete");
    }
    drain(a, u64::MAX);
    assert_eq!(
        a.pool_info().allocated_bytes,
        lun,
        "reclamation leaked or lost extents"
    );
}

/// The samples of one divergence.
struct SizeFigures {
    div: u64,
    /// Operation times per operation (in [`OPS`] order).
    times: [Vec<Duration>; 4],
    /// Metadata pages the operations wrote, and metadata cache misses (pages read
    /// from the device), per operation.
    pages: [u64; 4],
    misses: [u64; 4],
    /// The drains after them.
    drain: Drain,
}

/// Bytes walked to evict the CPU caches before a "cold" sample: far more than the
/// cores' L1 and L2 caches (2 MiB of L2 per core on the build machine) and TLBs.
const THRASH: usize = 64 << 20;

/// One sample: prepares a divergence of `div`, evicts the CPU caches if `thrash`
/// is given, times `op`, drains the queue with `reclaim(RECLAIM_PER_FLUSH)` and
/// puts the array back.
fn sample(
    a: &mut Arr,
    op: Op,
    div: u64,
    es: u64,
    lun: u64,
    f: &mut SizeFigures,
    thrash: Option<&mut [u8]>,
) {
    let i = OPS.iter().position(|&o| o == op).expect("op");
    prepare(a, op, div, es);
    if let Some(t) = thrash {
        for x in t.iter_mut().step_by(64) {
            *x = x.wrapping_add(1);
        }
        black_box(&t[..]);
    }
    let w0 = a.device_mut().meta_writes;
    let m0 = a.engine().cache_stats().misses;
    let t0 = Instant::now();
    run_op(a, op);
    f.times[i].push(t0.elapsed());
    f.pages[i] += a.device_mut().meta_writes - w0;
    f.misses[i] += a.engine().cache_stats().misses - m0;
    assert!(a.reclaim_pending(), "the operation queued its mapping");
    let d = drain(a, RECLAIM_PER_FLUSH);
    assert!(
        d.freed >= div,
        "{op:?}: freed {} of a divergence of {div}",
        d.freed
    );
    f.drain.add(&d);
    cleanup(a, lun);
}

/// Prints one divergence's samples.
fn print_size(f: &mut SizeFigures, what: &str) {
    let n = f.times[0].len();
    println!(
        "diverged by {}, {what}: {n} samples of each operation",
        size_label(f.div)
    );
    for (i, op) in OPS.iter().enumerate() {
        let t = &mut f.times[i];
        t.sort();
        println!(
            "  {:<17} median {:>7.2} us  min {:>7.2} us  max {:>8.2} us  ({:.1} metadata pages written, {:.1} read)",
            op.name(),
            us(pct(t, 50.0)),
            us(t[0]),
            us(*t.last().expect("samples")),
            f.pages[i] as f64 / n as f64,
            f.misses[i] as f64 / n as f64
        );
    }
}

/// Prints the median times of each operation by divergence, and their spread.
fn print_summary(figs: &[SizeFigures], what: &str) {
    println!("\nmedian operation time (µs), {what}:");
    println!("| diverged by | delete | detach | attach | restore |");
    for f in figs {
        let meds: Vec<String> = f
            .times
            .iter()
            .map(|t| format!("{:.1}", us(pct(t, 50.0))))
            .collect();
        println!("| {} | {} |", size_label(f.div), meds.join(" | "));
    }
    for (i, op) in OPS.iter().enumerate() {
        let meds: Vec<f64> = figs.iter().map(|f| us(pct(&f.times[i], 50.0))).collect();
        let (lo, hi) = meds
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), &m| (l.min(m), h.max(m)));
        println!(
            "{}: medians {:.1}-{:.1} us across the divergences, largest/smallest {:.2}x",
            op.name(),
            lo,
            hi,
            hi / lo
        );
    }
}

fn ops_group(a: &mut Arr, o: &Opts, es: u64) {
    let lun = o.lun();
    // (divergence, samples of each operation per pass, as is and cold each). The
    // passes go round the sizes, so that load from other jobs on the machine falls
    // on all of them.
    let (divs, passes): (Vec<(u64, usize)>, usize) = if o.quick {
        (vec![(MIB.max(es), 10), (64 * MIB, 3), (GIB, 1)], 2)
    } else {
        (vec![(MIB.max(es), 70), (GIB, 7), (64 * GIB, 1)], 3)
    };
    println!(
        "\n== ops: {} LUN, {} extents: operation timed (commit included), then the queue drained with reclaim({RECLAIM_PER_FLUSH}); {passes} passes over the sizes; each sample as the divergence's writes left the CPU caches (as is), and again after evicting them (cold)",
        size_label(lun),
        size_label(es)
    );
    let new_figs = || -> Vec<SizeFigures> {
        divs.iter()
            .map(|&(div, _)| SizeFigures {
                div,
                times: Default::default(),
                pages: [0; 4],
                misses: [0; 4],
                drain: Drain::default(),
            })
            .collect()
    };
    let (mut warm, mut cold) = (new_figs(), new_figs());
    let mut thrash = vec![0u8; THRASH];
    for pass in 0..passes {
        let t_pass = Instant::now();
        for (k, &(div, reps)) in divs.iter().enumerate() {
            for op in OPS {
                for _ in 0..reps {
                    sample(a, op, div, es, lun, &mut warm[k], None);
                    sample(a, op, div, es, lun, &mut cold[k], Some(&mut thrash));
                }
            }
        }
        println!("pass {} done in {:.1?}", pass + 1, t_pass.elapsed());
    }
    for (w, c) in warm.iter_mut().zip(cold.iter_mut()) {
        print_size(w, "as is");
        print_size(c, "cold CPU caches");
        let mut d = w.drain;
        d.add(&c.drain);
        println!(
            "  reclaim({RECLAIM_PER_FLUSH}) drains: {} freed in {:.2?} inside {} calls ({:.2} us mean, {:.2} us longest, {:.0} units each): {:.1} GiB/s, {:.1} ns per extent freed",
            bytes_label(d.freed),
            d.time,
            d.calls,
            us(d.time) / d.calls as f64,
            us(d.longest),
            d.work as f64 / d.calls as f64,
            d.gib_per_s(),
            d.time.as_secs_f64() * 1e9 / (d.freed / es) as f64
        );
    }
    println!("\nsummary, {} extents", size_label(es));
    print_summary(&warm, "as is");
    print_summary(&cold, "cold CPU caches");
}

// ---------------------------------------------------------------------------------
// Group `eager`: the operation plus reclaim(u64::MAX), i.e. freeing everything at
// once as before issue 15, timed together.
// ---------------------------------------------------------------------------------

fn eager_group(a: &mut Arr, o: &Opts, es: u64) {
    let lun = o.lun();
    let divs: Vec<(u64, usize)> = if o.quick {
        vec![(64 * MIB, 2)]
    } else {
        vec![(MIB.max(es), 20), (GIB, 5), (4 * GIB, 3)]
    };
    println!(
        "\n== eager: operation + reclaim(u64::MAX) in one go (one commit each), {} LUN, {} extents",
        size_label(lun),
        size_label(es)
    );
    for &(div, reps) in &divs {
        for op in [Op::Delete, Op::Restore] {
            let mut times = Vec::with_capacity(reps);
            let mut freed = 0;
            for _ in 0..reps {
                prepare(a, op, div, es);
                let before = a.pool_info().allocated_bytes;
                let t0 = Instant::now();
                run_op(a, op);
                let s = a.reclaim(u64::MAX).expect("reclaim");
                times.push(t0.elapsed());
                assert_eq!(s.remaining, 0);
                freed = before - a.pool_info().allocated_bytes;
                cleanup(a, lun);
            }
            times.sort();
            println!(
                "  {} diverged by {}: median {:.2} ms (min {:.2}, max {:.2}), {} freed each: {:.0} GiB/s",
                op.name(),
                size_label(div),
                us(pct(&times, 50.0)) / 1e3,
                us(times[0]) / 1e3,
                us(*times.last().expect("samples")) / 1e3,
                size_label(freed),
                freed as f64 / GIB as f64 / pct(&times, 50.0).as_secs_f64()
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Group `writes`: 4 KiB random writes while the large LUN is reclaimed, against the
// same writes on an idle array, interleaved batch by batch.
// ---------------------------------------------------------------------------------

/// The host's reclamation policy during the writes. Every batch of [`BATCH`] writes
/// ends with `reclaim(RECLAIM_PER_FLUSH)` then `flush()`: on the array that
/// reclaims, the reclaim call commits the batch with what it freed and the flush
/// finds nothing left to do (a bare `flush()` does exactly the same: it frees
/// `RECLAIM_PER_FLUSH` first); on the idle array the reclaim call returns at once
/// and the flush commits.
#[derive(Clone, Copy)]
struct Policy {
    name: &'static str,
    /// One more `reclaim(RECLAIM_PER_FLUSH)` after this many writes of each batch
    /// (0: none).
    mid_batch: usize,
}

const POLICIES: [Policy; 2] = [
    Policy {
        name: "A: reclaim(RECLAIM_PER_FLUSH) + flush() after every 1,000 writes",
        mid_batch: 0,
    },
    Policy {
        name:
            "B: A + reclaim(RECLAIM_PER_FLUSH) after the 500th write of each batch (twice the rate)",
        mid_batch: 500,
    },
];

/// Bytes of the RAM ring of the data-carrying variant.
const RING: usize = 256 << 20;

/// Per-array figures of the write workload.
#[derive(Default)]
struct Side {
    /// Each write call's time, ns.
    lat: Vec<u32>,
    /// Each flush / reclaim call's time between writes, ns.
    stalls: Vec<u32>,
    /// Wall time of all batches (writes, reclaim calls and flushes).
    total: Duration,
    writes: u64,
}

/// One batch: the writes at `offs` (4 KiB blocks of [`WORK`]) with `p`'s reclaim
/// calls, then a flush. Returns its wall time.
fn batch(a: &mut Arr, offs: &[u64], p: Policy, buf: &[u8], s: &mut Side) -> Duration {
    let t0 = Instant::now();
    for (i, &b) in offs.iter().enumerate() {
        let w0 = Instant::now();
        a.write(WORK, black_box(b * PAGE), black_box(buf))
            .expect("write");
        s.lat.push(w0.elapsed().as_nanos() as u32);
        if p.mid_batch > 0 && i + 1 == p.mid_batch {
            let r0 = Instant::now();
            a.reclaim(RECLAIM_PER_FLUSH).expect("reclaim");
            s.stalls.push(r0.elapsed().as_nanos() as u32);
        }
    }
    let f0 = Instant::now();
    a.reclaim(RECLAIM_PER_FLUSH).expect("reclaim");
    a.flush().expect("flush");
    s.stalls.push(f0.elapsed().as_nanos() as u32);
    let el = t0.elapsed();
    s.total += el;
    s.writes += offs.len() as u64;
    el
}

fn open(dev: MetaOnlyDevice) -> Arr {
    Array::open(dev, &OpenOptions::default()).expect("open")
}

fn writes_group(a: &mut Arr, o: &Opts, es: u64) {
    let lun = o.lun();
    // The LUN the writes go to, fully written and flushed.
    a.create_lun(WORK, WORK_LUN).expect("create_lun");
    write_extents(a, WORK, WORK_LUN, es, 5);
    a.flush().expect("flush");
    let dev = a.device_mut().clone();
    // Times of the deletes of the large LUN that start each run, with the metadata
    // pages each read.
    let mut deletes: Vec<(Duration, u64)> = Vec::new();
    println!(
        "\n== writes: 4 KiB random writes to a fully written {} LUN, {} extents, in batches of {BATCH}, while a deleted, fully written {} LUN is reclaimed (reclaiming) and on an idle array, batch by batch",
        size_label(WORK_LUN),
        size_label(es),
        size_label(lun)
    );
    for ram in [false, true] {
        let variant = || {
            if ram {
                dev.with_data_ram(RING)
            } else {
                dev.clone()
            }
        };
        println!(
            "data: {}",
            if ram {
                "copied to and from a 256 MiB RAM ring"
            } else {
                "dropped (metadata only)"
            }
        );
        let n = write_run(&variant, lun, POLICIES[0], None, &mut deletes);
        write_run(&variant, lun, POLICIES[0], Some(n), &mut deletes);
        write_run(&variant, lun, POLICIES[1], None, &mut deletes);
    }
    deletes.sort();
    println!(
        "delete of the fully written {} LUN, just after opening the array (empty metadata cache): median {:.2} us, min {:.2}, max {:.2} ({} samples, {:.1} metadata pages read each)",
        size_label(lun),
        us(pct(&deletes, 50.0).0),
        us(deletes[0].0),
        us(deletes.last().expect("deletes").0),
        deletes.len(),
        deletes.iter().map(|d| d.1).sum::<u64>() as f64 / deletes.len() as f64
    );
    a.delete(WORK, false).expect("delete");
    drain(a, u64::MAX);
}

/// Runs batches of writes on two arrays opened on `variant()` after deleting the
/// large LUN: one drained at once (idle), the other (reclaiming) freeing it in the
/// background by policy `p`, until it is freed. `control`: both idle, for that
/// many batches (what separates two identical arrays). Prints the figures and
/// returns the number of batches.
fn write_run(
    variant: &dyn Fn() -> MetaOnlyDevice,
    lun: u64,
    p: Policy,
    control: Option<u64>,
    deletes: &mut Vec<(Duration, u64)>,
) -> u64 {
    let blocks = WORK_LUN / PAGE;
    let buf = pattern(PAGE as usize, 3);
    let mut timed_delete = |a: &mut Arr| {
        let m0 = a.engine().cache_stats().misses;
        let t0 = Instant::now();
        a.delete(black_box(PARENT), false).expect("delete");
        deletes.push((t0.elapsed(), a.engine().cache_stats().misses - m0));
    };
    let mut idle = open(variant());
    timed_delete(&mut idle);
    drain(&mut idle, u64::MAX);
    let mut busy = open(variant());
    timed_delete(&mut busy);
    if control.is_some() {
        drain(&mut busy, u64::MAX);
    } else {
        let queued = busy.pending_bytes().expect("pending_bytes");
        assert_eq!(queued, lun, "the whole LUN waits to be freed");
    }
    let (mut si, mut sb) = (Side::default(), Side::default());
    let mut ratios = Vec::new();
    let mut rng = Rng::new(0x5eed);
    let mut offs = vec![0u64; BATCH];
    let t_run = Instant::now();
    let mut round = 0u64;
    while control.map_or(busy.reclaim_pending(), |n| round < n) {
        for x in offs.iter_mut() {
            *x = rng.below(blocks);
        }
        // Alternate which side goes first.
        let (ti, tb) = if round % 2 == 0 {
            let ti = batch(&mut idle, &offs, p, &buf, &mut si);
            (ti, batch(&mut busy, &offs, p, &buf, &mut sb))
        } else {
            let tb = batch(&mut busy, &offs, p, &buf, &mut sb);
            (batch(&mut idle, &offs, p, &buf, &mut si), tb)
        };
        ratios.push(ti.as_secs_f64() / tb.as_secs_f64());
        round += 1;
    }
    let run_time = t_run.elapsed();
    assert_eq!(
        busy.pool_info().allocated_bytes,
        idle.pool_info().allocated_bytes,
        "the reclaimed array ends where the idle one is"
    );
    ratios.sort_by(f64::total_cmp);
    let other = if control.is_some() {
        println!("  control, both arrays idle, policy {}", p.name);
        "idle twin"
    } else {
        println!("  policy {}", p.name);
        println!(
            "  {} reclaimed during {} batches ({} writes; {:.2?} for both sides)",
            size_label(lun),
            round,
            sb.writes,
            run_time
        );
        "reclaiming"
    };
    println!(
        "  | | writes/s | write p50 (µs) | p99 | p99.9 | max | flush/reclaim calls: p50 (µs) | p99 | max |"
    );
    for (name, s) in [("idle", &mut si), (other, &mut sb)] {
        s.lat.sort_unstable();
        s.stalls.sort_unstable();
        let n = |v: u32| v as f64 / 1e3;
        println!(
            "  | {name} | {:.0} k | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {:.0} | {:.0} |",
            s.writes as f64 / s.total.as_secs_f64() / 1e3,
            n(pct(&s.lat, 50.0)),
            n(pct(&s.lat, 99.0)),
            n(pct(&s.lat, 99.9)),
            n(*s.lat.last().expect("writes")),
            n(pct(&s.stalls, 50.0)),
            n(pct(&s.stalls, 99.0)),
            n(*s.stalls.last().expect("stalls")),
        );
    }
    println!(
        "  throughput of {other}: {:.1}% of idle over the whole run (per-batch median {:.1}%, quartiles {:.1}-{:.1}%); write p99.9 {:.2}x idle's",
        100.0 * si.total.as_secs_f64() / sb.total.as_secs_f64(),
        100.0 * pct(&ratios, 50.0),
        100.0 * pct(&ratios, 25.0),
        100.0 * pct(&ratios, 75.0),
        pct(&sb.lat, 99.9) as f64 / pct(&si.lat, 99.9) as f64,
    );
    round
}

fn main() {
    let o = Opts::parse();
    let t0 = Instant::now();
    for &es in &o.extents {
        let mut a = build(es, o.lun());
        if o.runs("ops") {
            ops_group(&mut a, &o, es);
        }
        if o.runs("eager") {
            eager_group(&mut a, &o, es);
        }
        if o.runs("writes") {
            writes_group(&mut a, &o, es);
        }
    }
    println!("\nreclaim bench done in {:.1?}", t0.elapsed());
}
