//! B-tree benchmarks: lookup and insert rate with a cache smaller than the tree and with
//! one that holds it whole, and the cost of cloning (snapshotting) a tree against its
//! size. Figures and how to read them: `BENCHMARKS.md` at the repository root.
//!
//! Run with `cargo bench --bench btree`. The 10^6-key tree is built once (sequential
//! inserts, then a commit) on an in-memory device; every benchmark opens its own engine
//! on a copy of that device with the cache budget it needs, so no benchmark sees
//! another's changes and none pays for the build.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lunsnap::engine::{Engine, Tree, ValueKind};
use lunsnap::engine::{FormatOptions, OpenOptions};
use lunsnap::testing::Rng;
use lunsnap::MemDevice;

/// Keys in the big tree.
const BIG: u64 = 1_000_000;
/// Keys in the small tree (clone benchmarks).
const SMALL: u64 = 1_000;
/// Key `i` of a tree is `i << SHIFT`, so random new keys can fall between existing ones
/// anywhere in the tree (a new key at the right edge would always hit the same leaf).
const SHIFT: u32 = 20;
/// Cache budget smaller than the tree: 1 MiB = 256 blocks, against ~4,000 nodes.
const SMALL_CACHE: usize = 1 << 20;
/// Cache budget that holds the whole tree and its space-map blocks.
const BIG_CACHE: usize = 64 << 20;
/// Metadata pages provisioned: room for the tree to grow during the insert runs.
const META_BLOCKS: u64 = 1 << 17;
/// Inserts per transaction in the insert benchmarks.
const COMMIT_EVERY: u64 = 1_000;
/// Root slots used for the trees.
const SLOT_BIG: usize = 0;
const SLOT_SMALL: usize = 1;
const SLOT_CLONE: usize = 2;

/// An existing key of a tree of `n` keys.
fn existing(rng: &mut Rng, n: u64) -> u64 {
    (rng.next_u64() % n) << SHIFT
}

/// A key that is not in the tree (odd low bits), spread uniformly over its range.
fn fresh(rng: &mut Rng, n: u64) -> u64 {
    let r = rng.next_u64();
    ((r % n) << SHIFT) | ((r >> 44) & ((1 << SHIFT) - 1)) | 1
}

/// Builds a device holding a committed tree of [`BIG`] keys in slot [`SLOT_BIG`] and one
/// of [`SMALL`] keys in slot [`SLOT_SMALL`]; values are 8 bytes (the key's index).
fn build_device() -> MemDevice {
    let t0 = Instant::now();
    // Two superblock pages, the metadata area, and a few data extents.
    let dev = MemDevice::new(4096, 2 + META_BLOCKS + 64).expect("device");
    let mut e = Engine::format(
        dev,
        &FormatOptions {
            extent_size: 4096,
            cache_bytes: BIG_CACHE,
            metadata_pages: Some(META_BLOCKS),
            ..Default::default()
        },
    )
    .expect("format");
    for (slot, n) in [(SLOT_BIG, BIG), (SLOT_SMALL, SMALL)] {
        let mut t = e.create_tree(8, ValueKind::Opaque).expect("tree");
        for i in 0..n {
            e.insert(&mut t, i << SHIFT, &i.to_le_bytes())
                .expect("insert");
        }
        e.set_root(slot, Some(t)).expect("set_root");
    }
    e.commit().expect("commit");
    let s = e.space();
    println!(
        "built trees of {BIG} and {SMALL} keys in {:.2?}: {} metadata pages in use ({:.1} MiB)",
        t0.elapsed(),
        s.meta_allocated,
        s.meta_allocated as f64 * 4096.0 / f64::from(1 << 20),
    );
    e.into_device()
}

fn open(base: &MemDevice, cache_bytes: usize) -> Engine<MemDevice> {
    Engine::open(
        base.clone(),
        &OpenOptions {
            cache_bytes,
            ..OpenOptions::default()
        },
    )
    .expect("open")
}

fn tree(e: &Engine<MemDevice>, slot: usize) -> Tree {
    e.root(slot).expect("slot").expect("tree in slot")
}

fn cache_label(bytes: usize) -> String {
    format!("cache_{}MiB", bytes >> 20)
}

/// Hits and misses counted over the measured (and warm-up) iterations of one benchmark.
#[derive(Default)]
struct Tally {
    ops: u64,
    hits: u64,
    misses: u64,
}

impl Tally {
    fn add(&mut self, ops: u64, before: lunsnap::engine::CacheStats, e: &Engine<MemDevice>) {
        let after = e.cache_stats();
        self.ops += ops;
        self.hits += after.hits - before.hits;
        self.misses += after.misses - before.misses;
    }

    fn report(&self, what: &str, e: &Engine<MemDevice>) {
        let total = (self.hits + self.misses).max(1);
        let s = e.cache_stats();
        println!(
            "{what}: cache hit ratio {:.1}% ({:.2} block reads/op, {:.2} misses/op) over {} ops; cache {} of {} blocks resident",
            100.0 * self.hits as f64 / total as f64,
            total as f64 / self.ops.max(1) as f64,
            self.misses as f64 / self.ops.max(1) as f64,
            self.ops,
            s.resident,
            s.capacity,
        );
    }
}

/// Brings the cache to its steady state before measuring.
fn warm(e: &mut Engine<MemDevice>, t: &Tree, rng: &mut Rng) {
    let mut out = [0u8; 8];
    e.range(t, 0, u64::MAX, |_, _| true).expect("range");
    for _ in 0..100_000 {
        e.lookup(t, existing(rng, BIG), &mut out).expect("lookup");
    }
}

fn lookups(c: &mut Criterion, base: &MemDevice) {
    let mut g = c.benchmark_group("btree_lookup_1M");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    for cache in [SMALL_CACHE, BIG_CACHE] {
        let mut e = open(base, cache);
        let t = tree(&e, SLOT_BIG);
        let mut rng = Rng::new(1);
        warm(&mut e, &t, &mut rng);
        let mut tally = Tally::default();
        let mut out = [0u8; 8];
        g.bench_function(BenchmarkId::new("random", cache_label(cache)), |b| {
            b.iter_custom(|iters| {
                let before = e.cache_stats();
                let start = Instant::now();
                for _ in 0..iters {
                    let k = existing(&mut rng, BIG);
                    let found = e.lookup(&t, black_box(k), &mut out).expect("lookup");
                    debug_assert!(found);
                    black_box((found, &out));
                }
                let el = start.elapsed();
                tally.add(iters, before, &e);
                el
            })
        });
        tally.report(&format!("lookup {}", cache_label(cache)), &e);
        // Spot-check that the benchmark read what it meant to.
        for _ in 0..1000 {
            let i = rng.next_u64() % BIG;
            assert!(e.lookup(&t, i << SHIFT, &mut out).expect("lookup"));
            assert_eq!(u64::from_le_bytes(out), i);
        }
    }
    g.finish();
}

fn inserts(c: &mut Criterion, base: &MemDevice) {
    let mut g = c.benchmark_group("btree_insert_1M");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    for cache in [SMALL_CACHE, BIG_CACHE] {
        let mut e = open(base, cache);
        let mut t = tree(&e, SLOT_BIG);
        let mut rng = Rng::new(2);
        warm(&mut e, &t, &mut rng);
        let mut tally = Tally::default();
        let mut pending = 0u64;
        let mut in_commit = Duration::ZERO;
        let value = 7u64.to_le_bytes();
        g.bench_function(
            BenchmarkId::new("random_new_key", cache_label(cache)),
            |b| {
                b.iter_custom(|iters| {
                    let before = e.cache_stats();
                    let start = Instant::now();
                    for _ in 0..iters {
                        e.insert(&mut t, fresh(&mut rng, BIG), black_box(&value))
                            .expect("insert");
                        pending += 1;
                        if pending == COMMIT_EVERY {
                            let c0 = Instant::now();
                            e.set_root(SLOT_BIG, Some(t)).expect("set_root");
                            e.commit().expect("commit");
                            in_commit += c0.elapsed();
                            pending = 0;
                        }
                    }
                    let el = start.elapsed();
                    tally.add(iters, before, &e);
                    el
                })
            },
        );
        e.set_root(SLOT_BIG, Some(t)).expect("set_root");
        e.commit().expect("commit");
        tally.report(&format!("insert {}", cache_label(cache)), &e);
        let mut keys = 0u64;
        e.range(&t, 0, u64::MAX, |_, _| {
            keys += 1;
            true
        })
        .expect("range");
        let s = e.space();
        println!(
            "insert {}: commits (one per {COMMIT_EVERY} inserts) took {:.2} us per insert; tree grew from {BIG} to {keys} keys; {} metadata pages in use",
            cache_label(cache),
            in_commit.as_secs_f64() * 1e6 / tally.ops.max(1) as f64,
            s.meta_allocated
        );
    }
    g.finish();
}

fn clones(c: &mut Criterion, base: &MemDevice) {
    let mut g = c.benchmark_group("btree_clone");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (slot, n) in [(SLOT_SMALL, SMALL), (SLOT_BIG, BIG)] {
        // The small cache: cloning must not need the tree in memory.
        let mut e = open(base, SMALL_CACHE);
        let t = tree(&e, slot);
        g.bench_function(BenchmarkId::new("clone_drop", n), |b| {
            b.iter(|| {
                let c = e.clone_tree(black_box(&t)).expect("clone");
                e.drop_tree(black_box(c)).expect("drop");
            })
        });
        let (mut ops, mut writes) = (0u64, 0u64);
        g.bench_function(BenchmarkId::new("clone_commit", n), |b| {
            b.iter_custom(|iters| {
                let mut el = Duration::ZERO;
                for _ in 0..iters {
                    // Untimed: give back the previous clone in its own transaction.
                    if let Some(old) = e.set_root(SLOT_CLONE, None).expect("set_root") {
                        e.drop_tree(old).expect("drop");
                        e.commit().expect("commit");
                    }
                    let w0 = e.cache_stats().writes;
                    let start = Instant::now();
                    let c = e.clone_tree(black_box(&t)).expect("clone");
                    e.set_root(SLOT_CLONE, Some(c)).expect("set_root");
                    e.commit().expect("commit");
                    el += start.elapsed();
                    writes += e.cache_stats().writes - w0;
                }
                ops += iters;
                el
            })
        });
        println!(
            "clone_commit {n}: {:.2} blocks written per clone + commit (superblock included)",
            writes as f64 / ops.max(1) as f64
        );
        // The clones shared everything: nothing was copied or leaked.
        if let Some(old) = e.set_root(SLOT_CLONE, None).expect("set_root") {
            e.drop_tree(old).expect("drop");
        }
        e.commit().expect("commit");
        assert_eq!(
            e.meta_refcount(t.root()).expect("refcount"),
            1,
            "clones left references behind"
        );
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let base = build_device();
    lookups(c, &base);
    inserts(c, &base);
    clones(c, &base);
}

criterion_group!(btree, benches);
criterion_main!(btree);
