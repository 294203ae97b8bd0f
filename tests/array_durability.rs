//! Durability of the array (docs/DESIGN.md §2 "Durability") under simulated power cuts and
//! injected device errors, with [`PowerCutDevice`] in front of a [`MemDevice`]:
//!
//! * every management operation (create_lun, create_copy attached and detached, attach,
//!   detach, delete, restore, discard) is committed before it returns `Ok`: a power cut
//!   right after it, whatever happens to the unflushed writes, reopens to its effect;
//! * an operation that meets a device error part way takes full effect or none after a
//!   cut and a reopen, and the handle refuses further changes with `Error::Poisoned`;
//! * data written before a successful `flush()` survives any cut; after a cut every
//!   512-byte sector written since the last commit reads its committed content or one
//!   of the values written to it since, never anything else (another LUN's data, another
//!   offset's data, garbage);
//! * the content of a committed copy never changes because of a crash;
//! * a device error during a data write is an error, not a panic.
//!
//! Every data write fills each sector with a pattern naming the write (a unique tag)
//! and the sector's offset in the LUN, so any sector read back tells which write it
//! came from. The reference model, `lunsnap::testing::Model`, follows every operation
//! (results and generations must agree) and keeps the last commit and the values
//! written to each sector since; after every cut and reopen its `recover` checks the
//! rules above: the LUN records, accounting and generation of the last commit, every
//! sector its committed content (or, after commits the array made on its own during a
//! write, one of the values written to it since), and an empty `check()`.
#![cfg(feature = "testing")]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{assert_clean, tag_of, tagged};
use lunsnap::testing::{mix, CutOutcome, Model, PowerCutDevice, Rng};
use lunsnap::{Array, DeviceErrorKind, Error, FormatOptions, LunInfo, MemDevice, OpenOptions};

type Dev = PowerCutDevice<MemDevice>;
type Arr = Array<Dev>;

const SECTOR: u64 = 512;
const KIB: u64 = 1024;
/// The smallest cache budget (16 blocks): dirty metadata is evicted (written) long
/// before the commit, which exercises the write-ahead-of-commit paths.
const SMALL_CACHE: usize = 64 * 1024;
const BIG_CACHE: usize = 4 << 20;

/// The data of a new write (a tag no other write of this test binary uses) of
/// `sectors` sectors at byte `offset` of a LUN.
fn new_write(offset: u64, sectors: u64) -> Vec<u8> {
    static TAGS: AtomicU64 = AtomicU64::new(1);
    tagged(TAGS.fetch_add(1, Ordering::Relaxed), offset, sectors)
}

/// The content of LUN `n` (attached and online) in the model.
fn content(m: &Model, n: u32) -> Vec<u8> {
    let size = m.lun_info(n).expect("a LUN of the model").size;
    let mut buf = vec![0u8; size as usize];
    m.read(n, 0, &mut buf).expect("the model reads it");
    buf
}

// ---------------------------------------------------------------------------------
// Operations, on the array and on the model alike
// ---------------------------------------------------------------------------------

/// A management operation (or a flush).
#[derive(Clone, Copy, Debug)]
enum Op {
    CreateLun(u32, u64),
    CreateCopy {
        parent: u32,
        lun: u32,
        attached: bool,
    },
    Attach(u32),
    Detach(u32),
    Delete(u32, bool),
    Restore(u32),
    Discard(u32, u64, u64),
    Flush,
}

impl Op {
    fn run(self, a: &mut Arr) -> lunsnap::Result<()> {
        match self {
            Op::CreateLun(n, size) => a.create_lun(n, size),
            Op::CreateCopy {
                parent,
                lun,
                attached,
            } => a.create_copy(parent, lun, attached),
            Op::Attach(n) => a.attach(n),
            Op::Detach(n) => a.detach(n),
            Op::Delete(n, orphan) => a.delete(n, orphan),
            Op::Restore(n) => a.restore(n),
            Op::Discard(n, off, len) => a.discard(n, off, len),
            Op::Flush => a.flush(),
        }
    }

    /// The operation on the model, the array's generation having advanced by
    /// `commits` during it (a discard may commit the writes before it first).
    fn model(self, m: &mut Model, commits: u64) -> lunsnap::Result<()> {
        match self {
            Op::CreateLun(n, size) => m.create_lun(n, size),
            Op::CreateCopy {
                parent,
                lun,
                attached,
            } => m.create_copy(parent, lun, attached),
            Op::Attach(n) => m.attach(n),
            Op::Detach(n) => m.detach(n),
            Op::Delete(n, orphan) => m.delete(n, orphan),
            Op::Restore(n) => m.restore(n),
            Op::Discard(n, off, len) => m.discard_with_commits(n, off, len, commits),
            Op::Flush => m.flush(),
        }
    }
}

// ---------------------------------------------------------------------------------
// The array and its model together
// ---------------------------------------------------------------------------------

struct H {
    a: Arr,
    m: Model,
}

impl H {
    fn format(bytes: u64, extent_size: u32, cache_bytes: usize) -> H {
        H::format_blocks(512, bytes, extent_size, cache_bytes)
    }

    /// As [`H::format`] on a device of `block_size`-byte blocks.
    fn format_blocks(block_size: u32, bytes: u64, extent_size: u32, cache_bytes: usize) -> H {
        let dev =
            PowerCutDevice::new(MemDevice::new(block_size, bytes / u64::from(block_size)).unwrap());
        let opts = FormatOptions {
            extent_size,
            max_luns: 16,
            cache_bytes,
            array_id: *b"durability-tests",
            ..FormatOptions::default()
        };
        let a = Array::format(dev, &opts).unwrap();
        let m = Model::new(&a.pool_info());
        H { a, m }
    }

    fn generation(&self) -> u64 {
        self.a.pool_info().generation
    }

    /// Runs `op` on the array and on the model: the same result, the same generation.
    fn op(&mut self, op: Op) -> lunsnap::Result<()> {
        let g = self.generation();
        let r = op.run(&mut self.a);
        let commits = self.generation() - g;
        let want = op.model(&mut self.m, commits);
        assert_eq!(r, want, "{op:?}: the array's result and the model's");
        assert_eq!(self.generation(), self.m.generation(), "{op:?}: generation");
        r
    }

    fn must(&mut self, op: Op) {
        if let Err(e) = self.op(op) {
            panic!("{op:?} failed: {e:?}");
        }
    }

    /// Writes `sectors` sectors at `offset` of LUN `n`; the pools in this file are big
    /// enough that a write never commits early, which keeps the model exact.
    fn write(&mut self, n: u32, offset: u64, sectors: u64) {
        let early = self.write_any(n, offset, sectors);
        assert_eq!(early, 0, "a write committed early: make the pool bigger");
    }

    /// Writes like [`H::write`] but lets the array commit early; returns the number of
    /// commits the write made (the model takes them as `Model::write_with_commits`
    /// says: a durable state from them is checked per sector, each its committed
    /// content or a value written since).
    fn write_any(&mut self, n: u32, offset: u64, sectors: u64) -> u64 {
        let buf = new_write(offset, sectors);
        let g = self.generation();
        self.a.write(n, offset, &buf).unwrap();
        let commits = self.generation() - g;
        self.m.write_with_commits(n, offset, &buf, commits).unwrap();
        commits
    }

    /// `count` writes of 1 to `max_sectors` sectors at random places of attached LUNs.
    fn scribble(&mut self, rng: &mut Rng, count: usize, max_sectors: u64) {
        let targets: Vec<(u32, u64)> = self
            .m
            .luns()
            .iter()
            .filter(|l| l.attached)
            .map(|l| (l.lun, l.size))
            .collect();
        if targets.is_empty() {
            return;
        }
        for _ in 0..count {
            let (n, size) = targets[rng.below(targets.len() as u64) as usize];
            let total = size / SECTOR;
            let len = 1 + rng.below(max_sectors.min(total));
            let first = rng.below(total - len + 1);
            self.write(n, first * SECTOR, len);
        }
    }

    /// A copy of the device as it is now, unflushed writes included.
    fn snapshot(&mut self) -> Dev {
        self.a.device_mut().clone()
    }
}

fn outcomes(seeds: u64, salt: u64) -> Vec<CutOutcome> {
    let mut v = vec![CutOutcome::DropAll, CutOutcome::KeepAll];
    v.extend((0..seeds).map(|i| CutOutcome::Random {
        seed: mix(salt.wrapping_mul(1000).wrapping_add(i + 1)),
    }));
    v
}

/// Cuts the power of a copy of `dev` and reopens the array on the surviving medium.
fn crash(dev: &Dev, outcome: CutOutcome, cache_bytes: usize) -> Arr {
    let mut d = dev.clone();
    d.power_cut(outcome).unwrap();
    let medium = d.into_inner();
    Array::open(
        PowerCutDevice::new(medium),
        &OpenOptions {
            cache_bytes,
            ..OpenOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("reopen after {outcome:?} failed: {e:?}"))
}

/// Checks a reopened array against `m`, the model when the power was cut (the model's
/// `recover`: the last commit's LUN records, accounting and generation; every sector of
/// every attached LUN its committed content, or after commits the array made on its
/// own a value written to it since; `check()` clean). Returns the model of what
/// survived.
fn recover(a: &mut Arr, m: &Model, what: &str) -> Model {
    m.recover(a, false)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `got` holds the sectors of `want` (a LUN from its first sector).
#[track_caller]
fn same_sectors(got: &[u8], want: &[u8], what: &str) {
    let s = SECTOR as usize;
    for (i, (c, w)) in (0u64..).zip(got.chunks(s).zip(want.chunks(s))) {
        assert!(
            c == w,
            "{what}: sector {i} changed: reads {:?}, committed {:?}",
            tag_of(c, i),
            tag_of(w, i)
        );
    }
}

/// LUN records and pool accounting as the array reports them.
fn state(a: &mut Arr) -> (Vec<LunInfo>, lunsnap::PoolInfo) {
    (a.luns().unwrap(), a.pool_info())
}

// ---------------------------------------------------------------------------------
// Management operations are committed before they return
// ---------------------------------------------------------------------------------

#[test]
fn management_ops_are_committed_before_they_return() {
    let mut h = H::format(4 << 20, 8192, SMALL_CACHE);
    let mut rng = Rng::new(11);
    let script = [
        Op::CreateLun(0, 64 * KIB),
        Op::CreateLun(1, 40 * KIB + 1536),
        Op::CreateCopy {
            parent: 0,
            lun: 2,
            attached: true,
        },
        Op::CreateCopy {
            parent: 0,
            lun: 3,
            attached: false,
        },
        Op::Attach(3),
        Op::CreateCopy {
            parent: 2,
            lun: 4,
            attached: true,
        },
        Op::Attach(2), // refresh of an attached copy
        Op::Restore(4),
        Op::Discard(0, 4 * KIB, 24 * KIB),
        Op::Discard(2, 0, 64 * KIB),
        Op::Detach(3),
        Op::CreateCopy {
            parent: 1,
            lun: 5,
            attached: true,
        },
        Op::Restore(5),
        Op::Delete(4, false),
        Op::Delete(0, true), // orphans 2 (attached) and 3 (detached)
        Op::Delete(3, false),
        Op::CreateCopy {
            parent: 2,
            lun: 6,
            attached: false,
        },
        Op::Delete(1, true),
        Op::Attach(6),
        Op::Detach(6),
        Op::Delete(6, false),
        Op::Delete(5, false),
        Op::CreateLun(7, 512),
        Op::Flush,
    ];
    let cuts = outcomes(6, 1);
    let mut reopens = 0;
    for (step, &op) in script.iter().enumerate() {
        h.must(op);
        // Right after the operation returns: its effect, exactly.
        let want = state(&mut h.a);
        let dev = h.snapshot();
        for &cut in &cuts {
            let what = format!("step {step} {op:?}, cut {cut:?} right after");
            let mut a = crash(&dev, cut, SMALL_CACHE);
            recover(&mut a, &h.m, &what);
            assert_eq!(state(&mut a), want, "{what}: LUN records and pool");
            reopens += 1;
        }
        // The same after unflushed writes that followed it: the operation's effect,
        // each written sector old or new.
        h.scribble(&mut rng, 8, 24);
        let dev = h.snapshot();
        for &cut in &cuts {
            let what = format!("step {step} {op:?}, cut after later writes {cut:?}");
            let mut a = crash(&dev, cut, SMALL_CACHE);
            recover(&mut a, &h.m, &what);
            assert_eq!(a.pool_info().generation, want.1.generation, "{what}");
            reopens += 1;
        }
    }
    println!("{} operations, {reopens} reopens", script.len());
}

// ---------------------------------------------------------------------------------
// Device errors part way through an operation
// ---------------------------------------------------------------------------------

/// A committed array with plain LUNs, attached and detached copies and a copy of a
/// copy, all holding data; returns its device (nothing unflushed) and model.
fn failure_base() -> (Dev, Model) {
    let mut h = H::format(4 << 20, 4096, SMALL_CACHE);
    let mut rng = Rng::new(21);
    h.must(Op::CreateLun(0, 64 * KIB));
    h.must(Op::CreateLun(3, 32 * KIB + 512));
    h.scribble(&mut rng, 30, 40);
    h.must(Op::CreateCopy {
        parent: 0,
        lun: 1,
        attached: true,
    });
    h.must(Op::CreateCopy {
        parent: 0,
        lun: 2,
        attached: false,
    });
    h.scribble(&mut rng, 20, 20);
    h.must(Op::CreateCopy {
        parent: 1,
        lun: 4,
        attached: true,
    });
    h.scribble(&mut rng, 20, 20);
    h.must(Op::Flush);
    assert_clean(&mut h.a, "failure base");
    (h.a.into_device(), h.m)
}

fn expect_poisoned(a: &mut Arr, what: &str) {
    assert!(a.is_poisoned(), "{what}: not poisoned");
    let p = Err(Error::Poisoned);
    assert_eq!(a.create_lun(15, 512), p, "{what}: create_lun");
    assert_eq!(a.create_copy(0, 14, false), p, "{what}: create_copy");
    assert_eq!(a.write(0, 0, &[7u8; 512]), p, "{what}: write");
    assert_eq!(a.discard(0, 0, 4096), p, "{what}: discard");
    assert_eq!(a.detach(1), p, "{what}: detach");
    assert_eq!(a.attach(2), p, "{what}: attach");
    assert_eq!(a.restore(1), p, "{what}: restore");
    assert_eq!(a.delete(3, false), p, "{what}: delete");
    assert_eq!(a.flush(), p, "{what}: flush");
    assert_eq!(a.check(), Err(Error::Poisoned), "{what}: check");
}

#[test]
fn failed_op_takes_full_effect_or_none_and_poisons_the_handle() {
    let (base, base_m) = failure_base();
    let base_gen = Array::open(base.clone(), &OpenOptions::default())
        .unwrap()
        .pool_info()
        .generation;
    let ops = [
        Op::CreateLun(5, 48 * KIB),
        Op::CreateCopy {
            parent: 3,
            lun: 5,
            attached: true,
        },
        Op::CreateCopy {
            parent: 0,
            lun: 5,
            attached: false,
        },
        Op::Attach(2),
        Op::Attach(1),
        Op::Detach(1),
        Op::Delete(3, false),
        Op::Delete(0, true),
        Op::Restore(1),
        Op::Restore(4),
        Op::Discard(0, 2 * KIB, 40 * KIB),
        Op::Flush,
    ];
    let cuts = outcomes(3, 2);
    let mut total_failures = 0;
    for (k, &op) in ops.iter().enumerate() {
        let (mut saw_old, mut saw_new) = (0, 0);
        let mut n = 0u64;
        loop {
            assert!(n < 1000, "{op:?} never succeeds");
            // Half the operations run with the smallest cache: dirty metadata is then
            // written (evicted) during the operation, before its commit.
            let cache_bytes = if k % 2 == 0 { SMALL_CACHE } else { BIG_CACHE };
            let mut h = H {
                a: Array::open(
                    base.clone(),
                    &OpenOptions {
                        cache_bytes,
                        ..OpenOptions::default()
                    },
                )
                .unwrap(),
                m: base_m.clone(),
            };
            // Unflushed writes that the operation's commit makes durable.
            h.scribble(&mut Rng::new(100 + k as u64), 10, 16);
            let H { mut a, m } = h;
            let pre = m.clone();
            let mut post = m.clone();
            if let Err(e) = op.model(&mut post, 1) {
                panic!("the model refuses {op:?}: {e:?}");
            }

            a.device_mut().fail_after_writes(Some(n));
            let r = op.run(&mut a);
            a.device_mut().fail_after_writes(None);
            let what = format!("{op:?} failing after {n} writes");
            match r {
                Ok(()) => {
                    // Enough writes: it took effect, and stays so after a cut.
                    assert!(!a.is_poisoned(), "{what}");
                    let dev = a.into_device();
                    for &cut in &cuts {
                        let mut b = crash(&dev, cut, BIG_CACHE);
                        recover(&mut b, &post, &format!("{what}, Ok, {cut:?}"));
                    }
                    break;
                }
                Err(e) => {
                    assert_eq!(e, Error::Device(DeviceErrorKind::Io), "{what}");
                    expect_poisoned(&mut a, &what);
                    total_failures += 1;
                    let dev = a.into_device();
                    for &cut in &cuts {
                        let what = format!("{what}, {cut:?}");
                        let mut b = crash(&dev, cut, BIG_CACHE);
                        let g = b.pool_info().generation;
                        if g == base_gen {
                            saw_old += 1;
                            recover(&mut b, &pre, &what);
                        } else if g == base_gen + 1 {
                            saw_new += 1;
                            recover(&mut b, &post, &what);
                        } else {
                            panic!("{what}: generation {g}, expected {base_gen} or +1");
                        }
                        // The reopened array works again.
                        b.create_lun(15, 4096).unwrap();
                        assert_clean(&mut b, &what);
                    }
                }
            }
            n += 1;
        }
        println!("{op:?}: fails until {n} writes; after a cut: {saw_old} old, {saw_new} new");
        assert!(saw_old > 0, "{op:?}: no failure left the old state");
        assert!(
            saw_new > 0,
            "{op:?}: no failure late enough to leave the new state"
        );
    }
    println!("{total_failures} failed operations checked");
}

// ---------------------------------------------------------------------------------
// Data writes
// ---------------------------------------------------------------------------------

/// Rounds of random writes with a flush part way through each and power cuts at the
/// end: flushed writes survive; each sector written since reads old or new.
fn unflushed_rounds(block_size: u32, extent_size: u32, cache_bytes: usize, salt: u64) {
    let mut h = H::format_blocks(block_size, 8 << 20, extent_size, cache_bytes);
    let mut rng = Rng::new(salt);
    h.must(Op::CreateLun(0, 96 * KIB));
    h.must(Op::CreateLun(1, 64 * KIB + 1024));
    h.scribble(&mut rng, 20, 64);
    h.must(Op::CreateCopy {
        parent: 0,
        lun: 2,
        attached: true,
    });
    h.must(Op::CreateCopy {
        parent: 2,
        lun: 3,
        attached: true,
    });
    let cuts = outcomes(10, salt);
    let (mut old_reads, mut new_reads) = (0u64, 0u64);
    for round in 0..5 {
        h.scribble(&mut rng, 25, 40);
        h.must(Op::Flush);
        let flushed = h.m.clone();
        // Right after the flush: exactly what was written.
        let dev = h.snapshot();
        for &cut in &cuts[..3] {
            let what = format!("round {round}, cut {cut:?} right after flush");
            recover(&mut crash(&dev, cut, cache_bytes), &h.m, &what);
        }
        // Overwrites of flushed data, including whole LUNs, then cuts.
        h.scribble(&mut rng, 40, 40);
        if round % 2 == 1 {
            let size = h.m.lun_info(3).unwrap().size;
            h.write(3, 0, size / SECTOR);
        }
        let dev = h.snapshot();
        let mut last = None;
        for &cut in &cuts {
            let what = format!("round {round}, cut {cut:?} after unflushed writes");
            let mut a = crash(&dev, cut, cache_bytes);
            let survived = recover(&mut a, &h.m, &what);
            // Sectors written since the flush (every write has its own tag, so they
            // are those whose content changed): read back old or new.
            for n in h.m.lun_numbers() {
                let (old, now) = (content(&flushed, n), content(&h.m, n));
                let read = content(&survived, n);
                let s = SECTOR as usize;
                for ((o, w), r) in old.chunks(s).zip(now.chunks(s)).zip(read.chunks(s)) {
                    if o == w {
                        continue;
                    }
                    if r == o {
                        old_reads += 1;
                    } else {
                        new_reads += 1;
                    }
                }
            }
            last = Some((a, survived));
        }
        // Go on from the last reopened state.
        let (a, survived) = last.unwrap();
        h.a = a;
        h.m = survived;
    }
    println!(
        "blocks {block_size}, extent {extent_size}: sectors written since the commit read back old {old_reads}, new {new_reads} times"
    );
}

#[test]
fn unflushed_writes_read_old_or_new_and_flushed_writes_survive() {
    unflushed_rounds(512, 4096, SMALL_CACHE, 31);
    unflushed_rounds(512, 16384, BIG_CACHE, 32);
    // Device blocks larger than a sector: sector writes read-modify-write a block.
    unflushed_rounds(4096, 8192, SMALL_CACHE, 33);
}

#[test]
fn committed_copy_never_changes_in_a_crash() {
    for (extent_size, cache) in [(4096, SMALL_CACHE), (16384, BIG_CACHE)] {
        let mut h = H::format(8 << 20, extent_size, cache);
        let mut rng = Rng::new(41);
        h.must(Op::CreateLun(0, 128 * KIB));
        let all = 128 * KIB / SECTOR;
        h.write(0, 0, all);
        h.scribble(&mut rng, 20, 30);
        h.must(Op::CreateCopy {
            parent: 0,
            lun: 1,
            attached: true,
        });
        h.must(Op::CreateCopy {
            parent: 1,
            lun: 2,
            attached: true,
        });
        // Committed: each copy's creation committed it.
        let copies: BTreeMap<u32, Vec<u8>> =
            [1, 2].iter().map(|&n| (n, content(&h.m, n))).collect();
        let cuts = outcomes(12, 4);
        for round in 0..4 {
            // Copy-on-write into the shared extents of parent and copies: partial
            // sectors, whole extents, everything.
            h.scribble(&mut rng, 30, 20);
            if round == 2 {
                h.write(0, 0, all);
                h.write(1, 0, all);
            }
            let dev = h.snapshot();
            for &cut in &cuts {
                let what = format!("extent {extent_size}, round {round}, {cut:?}");
                let mut a = crash(&dev, cut, cache);
                recover(&mut a, &h.m, &what);
                for (&n, want) in &copies {
                    let mut buf = vec![0u8; (all * SECTOR) as usize];
                    a.read(n, 0, &mut buf).unwrap();
                    same_sectors(&buf, want, &format!("{what}: copy {n}"));
                }
            }
        }
    }
}

/// A pool reserved to the last extent: overwrites of shared extents make the array
/// commit early. A cut at any point still reads, per sector, the last explicit commit
/// or a value written since; a committed copy nobody wrote is unchanged.
#[test]
fn early_commits_keep_the_durability_rules() {
    let mut h = H::format(3 << 20, 4096, SMALL_CACHE);
    let es = 4096;
    let third = h.a.pool_info().capacity_bytes / 3 / es * es;
    h.must(Op::CreateLun(0, third));
    h.write(0, 0, third / SECTOR);
    h.must(Op::Flush);
    h.must(Op::CreateCopy {
        parent: 0,
        lun: 1,
        attached: true,
    });
    h.must(Op::CreateCopy {
        parent: 0,
        lun: 2,
        attached: true,
    });
    assert!(h.a.pool_info().unreserved_bytes < 3 * es);
    let untouched = content(&h.m, 2); // committed by the copy's creation
                                      // LUN 0 and copy 1 stop sharing anything with copy 2: the pool is then full, and
                                      // rewriting a committed extent needs the one it replaces freed by a commit.
    h.write(0, 0, third / SECTOR);
    h.write(1, 0, third / SECTOR);
    h.must(Op::Flush);
    let base_gen = h.a.pool_info().generation;
    let mut rng = Rng::new(61);
    let extents = third / es;
    let (mut early, mut cuts) = (0, 0);
    for round in 0..8 {
        // Whole extents, single sectors and spans, into LUN 0 and copy 1, no flush.
        for _ in 0..extents / 2 {
            let n = rng.below(2) as u32;
            let e = rng.below(extents);
            let (off, len) = match rng.below(3) {
                0 => (e * es, es / SECTOR),
                1 => (e * es + rng.below(8) * SECTOR, 1),
                _ => (
                    e * es + 1024,
                    (es / SECTOR).min((third - e * es - 1024) / SECTOR),
                ),
            };
            early += h.write_any(n, off, len);
        }
        let dev = h.snapshot();
        for cut in outcomes(2, 70 + round) {
            let what = format!("round {round}, {cut:?}");
            let mut a = crash(&dev, cut, SMALL_CACHE);
            assert!(a.pool_info().generation >= base_gen, "{what}");
            recover(&mut a, &h.m, &what);
            let mut buf = vec![0u8; third as usize];
            a.read(2, 0, &mut buf).unwrap();
            same_sectors(&buf, &untouched, &format!("{what}: copy 2"));
            cuts += 1;
        }
    }
    println!("{early} early commits, {cuts} cuts");
    assert!(early > 0, "no early commit: the pool is not full enough");
    h.must(Op::Flush);
    let dev = h.snapshot();
    recover(
        &mut crash(&dev, CutOutcome::Random { seed: 5 }, SMALL_CACHE),
        &h.m,
        "flushed",
    );
}

/// Writes of every kind (into shared, committed, new and unmapped extents; partial and
/// whole extents; spanning extents) with the device failing after `n` writes, for every
/// `n` until the writes all succeed. No panic; an error is a device error (or
/// `Poisoned` once an earlier one poisoned the handle); the array stays consistent.
fn data_write_errors(tight: bool) {
    let mut h = H::format(if tight { 2 << 20 } else { 4 << 20 }, 4096, SMALL_CACHE);
    let lun_size = if tight {
        // Parent and copy reserve the whole pool: overwrites must commit early.
        (h.a.pool_info().capacity_bytes / 2) / 4096 * 4096
    } else {
        64 * KIB
    };
    h.must(Op::CreateLun(0, lun_size));
    h.write(0, 0, lun_size / SECTOR);
    h.must(Op::CreateCopy {
        parent: 0,
        lun: 1,
        attached: true,
    });
    h.write(1, 8 * KIB, 8);
    h.must(Op::Flush);
    let base = h.a.into_device();
    let base_m = h.m;
    let base_gen = base_m.generation();
    let sectors = lun_size / SECTOR;
    let plan: Vec<(u32, u64, u64)> = {
        let mut rng = Rng::new(51);
        let mut v = vec![
            (0, 4 * KIB, 8),             // whole shared extent
            (0, 4 * KIB + 1024, 2),      // extent allocated in this transaction: in place
            (1, 9 * KIB, 1),             // committed extent only the copy maps
            (1, 3 * KIB, 4),             // spans two extents
            (0, 0, sectors),             // the whole LUN
            (1, 20 * KIB + 512, 3),      // partial shared extent
            (1, 0, sectors),             // the whole copy
            (0, lun_size - 512, 1),      // last sector
            (0, 12 * KIB + 2048, 20),    // spans three extents
            (1, lun_size - 8 * KIB, 16), // two whole extents at the end
        ];
        for _ in 0..10 {
            let n = rng.below(2) as u32;
            let len = 1 + rng.below(24);
            v.push((n, rng.below(sectors - len + 1) * SECTOR, len));
        }
        if tight {
            // Overwrite everything again and again: early commits are certain.
            for _ in 0..2 {
                v.push((0, 0, sectors));
                v.push((1, 0, sectors));
            }
        }
        v
    };
    let (mut errors, mut poisoned, mut recovered) = (0, 0, 0);
    let mut n = 0;
    loop {
        let a = Array::open(base.clone(), &OpenOptions::default()).unwrap();
        let mut h = H {
            a,
            m: base_m.clone(),
        };
        h.a.device_mut().fail_after_writes(Some(n));
        // The write that failed, its data, and the generation before it.
        let mut failed = None;
        for (i, &(lun, off, len)) in plan.iter().enumerate() {
            let buf = new_write(off, len);
            let g = h.generation();
            match h.a.write(lun, off, &buf) {
                Ok(()) => {
                    let commits = h.generation() - g;
                    h.m.write_with_commits(lun, off, &buf, commits).unwrap();
                }
                Err(e) => {
                    assert!(
                        matches!(e, Error::Device(DeviceErrorKind::Io) | Error::Poisoned),
                        "write {i} failing after {n} device writes: {e:?}"
                    );
                    failed = Some((i, buf, g));
                    break;
                }
            }
        }
        let what = format!("tight {tight}, failing after {n} device writes");
        h.a.device_mut().fail_after_writes(None);
        let Some((i, buf, g)) = failed else {
            h.must(Op::Flush);
            if let Err(e) = h.m.verify(&mut h.a) {
                panic!("{what}: {e}");
            }
            break;
        };
        errors += 1;
        let (lun, off, len) = plan[i];
        // Commits the failed write made before it failed.
        let commits = h.generation() - g;
        if h.a.is_poisoned() {
            // An early commit failed: everything refuses changes; a cut and a reopen
            // recover the last commit (the base or an early commit of these writes,
            // the failed one's included: it may have reached the medium).
            poisoned += 1;
            assert_eq!(h.a.flush(), Err(Error::Poisoned), "{what}");
            assert_eq!(h.a.write(0, 0, &[1u8; 512]), Err(Error::Poisoned), "{what}");
            h.m.write(lun, off, &buf).unwrap();
            h.m.note_early_commits(commits + 1);
            let dev = h.a.into_device();
            for cut in outcomes(2, n) {
                let mut b = crash(&dev, cut, SMALL_CACHE);
                assert!(b.pool_info().generation >= base_gen, "{what}");
                recover(&mut b, &h.m, &format!("{what}, {cut:?}"));
            }
        } else {
            // Not poisoned: the failed write left each sector old or new; the array
            // is consistent and keeps working once the device does.
            recovered += 1;
            let failed_tag = tag_of(&buf[..SECTOR as usize], off / SECTOR).unwrap();
            let mut landed = Vec::new();
            for &l in &[0u32, 1] {
                let mut got = vec![0u8; lun_size as usize];
                h.a.read(l, 0, &mut got).unwrap();
                let before = content(&h.m, l);
                let chunks = got
                    .chunks(SECTOR as usize)
                    .zip(before.chunks(SECTOR as usize));
                for (s, (c, was)) in (0u64..).zip(chunks) {
                    let t = tag_of(c, s).unwrap();
                    let in_failed = l == lun && (off / SECTOR..off / SECTOR + len).contains(&s);
                    if in_failed && t == failed_tag {
                        landed.push(s);
                    } else {
                        assert!(
                            c == was,
                            "{what}: LUN {l} sector {s} reads write {t}, the model {:?}",
                            tag_of(was, s)
                        );
                    }
                }
            }
            assert_clean(&mut h.a, &what);
            // The model takes what landed: the commits the write made came before
            // all of it within one extent, else at unknown points.
            let es = h.m.extent_size();
            let one_extent = off / es == (off + len * SECTOR - 1) / es;
            for _ in 0..if one_extent { commits } else { 0 } {
                h.m.commit();
            }
            for s in landed {
                let at = (s - off / SECTOR) * SECTOR;
                let sector = &buf[at as usize..(at + SECTOR) as usize];
                h.m.write(lun, s * SECTOR, sector).unwrap();
            }
            if !one_extent {
                h.m.note_early_commits(commits);
            }
            if let Err(e) = h.m.verify_records(&mut h.a) {
                panic!("{what}: after the failed write: {e}");
            }
            // Flush, cut and reopen: exactly that.
            h.write_any(0, 0, 1);
            h.must(Op::Flush);
            let dev = h.a.into_device();
            let mut b = crash(&dev, CutOutcome::Random { seed: n }, SMALL_CACHE);
            recover(&mut b, &h.m, &what);
        }
        // Every failure point early on; then sampled (the tight plan makes thousands
        // of device writes).
        n += 1 + n / 16;
        assert!(n < 100_000, "the writes never succeed");
    }
    println!(
        "tight {tight}: {errors} failing runs ({poisoned} poisoned, {recovered} not), success from {n} device writes"
    );
    assert!(errors > 0);
}

#[test]
fn device_error_during_data_write_is_an_error_not_a_panic() {
    data_write_errors(false);
    data_write_errors(true);
}

/// A discard that fails part way with a device error (here while zeroing the partly
/// covered extent at the end of its range, after it has unmapped the whole extents
/// before it) returns the error and poisons the handle: docs/DESIGN.md §2, a management
/// operation takes effect exactly, or not at all, so the half-applied discard must
/// never be committed. The handle refuses the flush that would commit it, and the
/// device, reopened, holds the state before the discard.
#[test]
fn failed_discard_poisons_and_is_never_committed() {
    let mut h = H::format(4 << 20, 4096, BIG_CACHE);
    h.must(Op::CreateLun(0, 64 * KIB));
    h.write(0, 0, 64 * KIB / SECTOR);
    h.must(Op::Flush);
    let before = h.m.clone();
    // Whole extents 0 and 1, then 1 KiB of extent 2: the zeroing write fails.
    h.a.device_mut().fail_after_writes(Some(0));
    let r = h.a.discard(0, 0, 8 * KIB + 1024);
    h.a.device_mut().fail_after_writes(None);
    assert_eq!(r, Err(Error::Device(DeviceErrorKind::Io)));
    assert!(h.a.is_poisoned(), "a failed discard poisons the handle");
    assert_eq!(
        h.a.flush(),
        Err(Error::Poisoned),
        "nothing more is committed"
    );
    let dev = h.a.into_device();
    for cut in [CutOutcome::DropAll, CutOutcome::KeepAll] {
        let mut b = crash(&dev, cut, BIG_CACHE);
        let mut buf = vec![0u8; 64 * KIB as usize];
        b.read(0, 0, &mut buf).unwrap();
        let want = content(&before, 0);
        let durable: Vec<usize> = buf
            .chunks(SECTOR as usize)
            .zip(want.chunks(SECTOR as usize))
            .enumerate()
            .filter(|(_, (c, w))| c != w)
            .map(|(s, _)| s)
            .collect();
        assert!(
            durable.is_empty(),
            "{cut:?}: after the failed discard, sectors {durable:?} read changed"
        );
        recover(&mut b, &before, "reopened after the failed discard");
    }
}
