//! Exhaustive power-cut test (docs/DESIGN.md §2 Durability, §4): scripted workloads that
//! cover every operation run once on a tracing device; then a power cut is tried after
//! every device write and every flush, each with several outcomes of the volatile
//! cache (drop all, keep all, random subsets torn per sector, harsh garbling), and each
//! crash is reopened, `check()`ed and verified with `Model::recover`: the state of the
//! last commit exactly (a management operation cut part way is wholly done or not at
//! all), committed copies included.
//!
//! The crash states are built incrementally (see `lunsnap_proptests::media`): a medium
//! holding what was durable at the last flush, and per crash a copy-on-write view of
//! it that receives the writes since that flush and is then cut.
//!
//! It prints `crash scenarios: N`. `LUNSNAP_CRASH_SCENARIOS` (default 200,000; CI needs
//! at least 100,000) is the minimum: the workloads are replayed with fresh seeds until
//! it is reached.

use std::time::Instant;

use lunsnap::testing::Model;
use lunsnap::testing::{mix, CutOutcome, PowerCutDevice, Rng};
use lunsnap::{Access, Array, BlockDevice, FormatOptions, OpenOptions, SECTOR};
use lunsnap_proptests::harness::write;
use lunsnap_proptests::media::{Event, Medium, Tracer, View};
use lunsnap_proptests::pattern::ZERO_BLOCKS;
use lunsnap_proptests::{env_count, Harness, Op};

const KIB: u64 = 1024;

/// One workload: a geometry and a script.
struct Workload {
    name: &'static str,
    block_size: u32,
    bytes: u64,
    extent_size: u32,
    cache_bytes: usize,
    /// Copies of every metadata page (the tight pool has room for one only).
    copies: u32,
    script: Vec<Op>,
    /// Every operation of the script must succeed (no refusals written in).
    strict: bool,
}

/// An operation of the traced run, with the device events it made and the models a
/// crash during it may recover to.
struct Record {
    op: Op,
    events: std::ops::Range<usize>,
    candidates: Vec<Model>,
}

fn copy(parent: u32, lun: u32, attached: bool) -> Op {
    Op::CreateCopy {
        parent,
        lun,
        attached,
    }
}

fn discard(lun: u32, offset: u64, len: u64) -> Op {
    Op::Discard { lun, offset, len }
}

fn delete(lun: u32, orphan: bool) -> Op {
    Op::Delete { lun, orphan }
}

fn lun(lun: u32, size: u64) -> Op {
    Op::CreateLun { lun, size }
}

/// Every operation and refusal, on a small cache (metadata evicted before commits).
fn basic() -> Workload {
    let es = 4 * KIB;
    let script = vec![
        lun(0, 64 * KIB),
        lun(1, 40 * KIB + 1536),
        write(0, 0, 64 * KIB, 1),
        write(1, 1024, 20 * KIB, 2),
        Op::Flush,
        copy(0, 2, true),
        write(0, es + 512, 3 * KIB, 3),
        write(2, 5 * es - 1024, es + 2048, 4),
        copy(0, 3, false),
        Op::Attach(3),
        write(3, 0, 512, 5),
        copy(2, 4, true),
        write(4, 8 * es, 2 * es, 6),
        Op::Attach(2),
        write(2, 0, 1024, 7),
        Op::Restore(4),
        discard(0, 3 * KIB, 3 * es),
        discard(2, 0, 64 * KIB),
        Op::Detach(3),
        write(1, 40 * KIB, 1536, 8),
        Op::Read {
            lun: 1,
            offset: 0,
            len: 40 * KIB + 1536,
        },
        Op::Flush,
        Op::Reopen,
        write(4, 0, 8 * KIB, 9),
        delete(4, false),
        delete(0, false), // refused: copies 2 and 3
        delete(0, true),  // orphans 2 (attached) and 3 (detached)
        Op::Restore(2),   // refused: not a copy any more
        Op::Attach(3),    // refused: parent gone
        delete(3, false),
        copy(2, 5, false),
        lun(6, 1 << 30), // refused: larger than the pool
        write(2, 12 * KIB, 4 * KIB, 10),
        Op::Attach(5),
        Op::Restore(5),
        Op::Detach(5),
        delete(5, false),
        write(1, 0, 40 * KIB + 1536, 0), // zeros
        delete(1, false),
        Op::Reopen,
    ];
    Workload {
        name: "basic",
        block_size: 512,
        bytes: 2 << 20,
        extent_size: 4096,
        cache_bytes: 64 * KIB as usize,
        copies: 2,
        script,
        strict: false,
    }
}

/// Device blocks larger than a sector (read-modify-write), a large cache.
fn big_blocks() -> Workload {
    let es = 8 * KIB;
    let script = vec![
        lun(3, 96 * KIB),
        write(3, 512, 90 * KIB, 1),
        copy(3, 1, true),
        write(3, 2048, 1024, 2),
        write(1, es - 512, 1024, 3),
        copy(1, 2, true),
        write(2, 0, 96 * KIB, 4),
        Op::Restore(2),
        write(3, 5 * es + 1536, 2 * es, 5),
        Op::Attach(1),
        discard(3, es + 512, es),
        discard(1, 10 * es, 2 * es),
        copy(3, 4, false),
        Op::Attach(4),
        Op::Detach(2),
        Op::Attach(2), // refused: its parent (1) is attached, so this works
        write(4, 0, 512, 6),
        Op::Flush,
        delete(3, true),
        Op::Reopen,
        write(4, 40 * KIB, 8 * KIB, 7),
        delete(1, true),
        discard(4, 0, 96 * KIB),
        Op::Flush,
    ];
    Workload {
        name: "4k-blocks",
        block_size: 4096,
        bytes: 3 << 20,
        extent_size: 8192,
        cache_bytes: 1 << 20,
        copies: 2,
        script,
        strict: false,
    }
}

/// A pool reserved to the last extent: rewrites of committed extents commit early, a
/// discard whose range ends in two partly covered extents has to commit first.
fn tight() -> Workload {
    let es = 4 * KIB;
    // The pool of a 1 MiB device with 4 KiB extents (measured at run time below).
    let cap = Array::format(
        PowerCutDevice::new(lunsnap::MemDevice::new(512, 2048).expect("device")),
        &FormatOptions {
            extent_size: 4096,
            max_luns: 8,
            cache_bytes: 64 * 1024,
            array_id: [0; 16],
            metadata_copies: 1,
        },
    )
    .expect("format")
    .pool_info()
    .capacity_bytes;
    let half = cap / 2 / es * es;
    let mut script = vec![lun(0, half), write(0, 0, half, 1), copy(0, 1, true)];
    if cap > 2 * half {
        script.push(lun(2, cap - 2 * half));
        script.push(write(2, 0, cap - 2 * half, 2));
    }
    script.extend([
        write(0, 0, half, 3), // the parent leaves every shared extent
        Op::Flush,
        write(1, 0, half, 4),         // the copy rewrites every committed extent
        discard(1, es + 512, 4 * es), // two partly covered extents
        write(0, 512, half - 1024, 5),
        discard(0, 3 * es - 1024, 2 * es + 2048),
        write(1, 0, half, 6),
        Op::Restore(1),
        write(0, 0, half, 7),
        lun(5, 512), // refused: no space
        Op::Detach(1),
        lun(5, 512),
        write(5, 0, 512, 8),
        Op::Flush,
    ]);
    Workload {
        name: "tight",
        block_size: 512,
        bytes: 1 << 20,
        extent_size: 4096,
        cache_bytes: 64 * KIB as usize,
        copies: 1,
        script,
        strict: false,
    }
}

/// Consistency groups, offline LUNs, hosts, grants, security and I/O on behalf of
/// hosts, with their refusals.
fn access() -> Workload {
    let es = 4 * KIB;
    let (h1, h2) = (0x5000_0000_0000_00a1, 0x5000_0000_0000_00b2);
    let grant = |lun, host, access| Op::Grant { lun, host, access };
    let write_as = |host, lun, offset, len, tag| Op::WriteAs {
        host,
        lun,
        offset,
        len,
        tag,
    };
    let script = vec![
        lun(0, 32 * KIB),
        lun(1, 20 * KIB + 512),
        write(0, 0, 32 * KIB, 1),
        write(1, 512, 12 * KIB, 2),
        Op::CreateCopies {
            pairs: vec![(0, 2), (1, 3)],
            attached: true,
        },
        write(0, es, 2 * es, 3),
        write(3, 0, 4 * KIB, 4),
        Op::CreateCopies {
            pairs: vec![(0, 4), (2, 0)], // refused: 0 is a copy and a parent
            attached: false,
        },
        Op::CreateCopies {
            pairs: vec![(2, 4), (3, 5)],
            attached: false,
        },
        Op::AttachMany(vec![4, 5, 2]),
        write(2, 0, 8 * KIB, 5),
        Op::AttachMany(vec![2, 4]), // 4's parent is 2: it takes 2's image before 2 changes
        Op::AttachMany(vec![3, 3]), // refused: twice
        Op::AddHost {
            id: h1,
            name: "backup-server".into(),
        },
        Op::AddHost {
            id: h2,
            name: String::new(),
        },
        Op::AddHost {
            id: h1,
            name: "again".into(), // refused: exists
        },
        grant(2, h1, Access::Read),
        grant(0, h1, Access::ReadWrite),
        grant(3, h2, Access::ReadWrite),
        Op::SetSecurity(true),
        write_as(h1, 0, 0, 4 * KIB, 6),
        write_as(h1, 2, 0, 512, 7), // refused: read-only
        write_as(h2, 0, 0, 512, 8), // refused: not visible
        Op::ReadAs {
            host: h1,
            lun: 2,
            offset: 0,
            len: 8 * KIB,
        },
        Op::DiscardAs {
            host: h2,
            lun: 3,
            offset: es,
            len: 2 * es,
        },
        Op::Revoke { lun: 2, host: h1 },
        Op::Revoke { lun: 2, host: h1 }, // refused: not granted
        Op::SetOnline {
            lun: 1,
            online: false,
        },
        write(1, 0, 512, 9), // refused: offline
        Op::Restore(3),      // management works on an offline parent
        Op::Flush,
        Op::Reopen,
        Op::SetOnline {
            lun: 1,
            online: true,
        },
        write(1, 0, 2 * es, 10),
        Op::RemoveHost(h1),
        grant(0, h1, Access::Read), // refused: no such host
        Op::SetSecurity(false),
        write_as(h1, 0, es, 512, 11),
        delete(0, true),
        Op::Reopen,
    ];
    Workload {
        name: "access",
        block_size: 512,
        bytes: 2 << 20,
        extent_size: 4096,
        cache_bytes: 64 * KIB as usize,
        copies: 2,
        script,
        strict: false,
    }
}

/// A random mix of valid operations (a fixed seed).
fn random() -> Workload {
    let es = 4 * KIB;
    let mut rng = Rng::new(0x5eed_0005);
    let mut script = vec![lun(0, 48 * KIB), lun(1, 24 * KIB + 512)];
    // (lun, size, attached) of the LUNs the script creates, to keep the ops valid.
    let mut luns: Vec<(u32, u64, bool)> = vec![(0, 48 * KIB, true), (1, 24 * KIB + 512, true)];
    let mut next = 2;
    for i in 0..60 {
        let att: Vec<(u32, u64)> = luns.iter().filter(|l| l.2).map(|l| (l.0, l.1)).collect();
        let (n, size) = att[rng.below(att.len() as u64) as usize];
        let sectors = size / SECTOR;
        let s = rng.below(sectors);
        let len = 1 + rng.below((sectors - s).min(3 * es / SECTOR));
        let op = match rng.below(20) {
            0..=8 => write(n, s * SECTOR, len * SECTOR, 100 + i),
            9 => discard(n, s * SECTOR, len * SECTOR),
            10 => Op::Flush,
            11 | 12 if next < 7 => {
                let attached = rng.below(3) > 0;
                luns.push((next, size, attached));
                next += 1;
                copy(n, next - 1, attached)
            }
            13 => Op::Attach(luns[rng.below(luns.len() as u64) as usize].0),
            14 => Op::Restore(n),
            15 => Op::Detach(n),
            16 => Op::Reopen,
            17 => Op::Reclaim([1, 5, 50, u64::MAX][rng.below(4) as usize]),
            _ => Op::Read {
                lun: n,
                offset: s * SECTOR,
                len: len * SECTOR,
            },
        };
        // Keep the bookkeeping of attached LUNs right (refused ops change nothing).
        match op {
            Op::Detach(d) => {
                if let Some(l) = luns.iter_mut().find(|l| l.0 == d && d >= 2) {
                    l.2 = false;
                }
            }
            Op::Attach(d) if d >= 2 => {
                if let Some(l) = luns.iter_mut().find(|l| l.0 == d) {
                    l.2 = true;
                }
            }
            _ => {}
        }
        script.push(op);
    }
    Workload {
        name: "random",
        block_size: 512,
        bytes: 2 << 20,
        extent_size: 4096,
        cache_bytes: 128 * KIB as usize,
        copies: 2,
        script,
        strict: false,
    }
}

fn zeroes(lun: u32, offset: u64, len: u64, punch: bool) -> Op {
    Op::WriteZeroes {
        host: None,
        lun,
        offset,
        len,
        punch,
    }
}

/// Extents freed in every way, each freeing committed before the next operation, in a
/// pool small enough that freed (and discarded) extents are handed out again: the
/// delete of a written LUN, a detach, an attach over a copy that diverged, a restore
/// over a parent that diverged, a discard, `write_zeroes` with and without holes,
/// writes of zeros with zero detection on and off, a write with whole extents of
/// zeros, rewrites of exclusive committed extents. The device discards freed extents
/// right after each commit (durably at once: see `lunsnap_proptests::media`), so a
/// discard that came too early, or hit an extent mapped again, reads as zeros in the
/// trace or after a cut.
fn frees() -> Workload {
    let k = KIB;
    // A pool of 38 extents: 8 for LUN 0, 6 for LUN 1 (a partial last extent).
    let (s0, s1) = (32 * k, 20 * k + 1536);
    let map = |lun, len| Op::Map {
        host: None,
        lun,
        offset: 0,
        len,
    };
    let diff = |a, b, len| Op::Diff {
        host: None,
        a,
        b,
        offset: 0,
        len,
    };
    let script = vec![
        lun(0, s0),
        lun(1, s1),
        write(0, 0, s0, 1),
        write(1, 0, s1, 2),
        Op::Flush,
        copy(0, 2, true),
        write(0, 0, 12 * k, 3), // the old extents are copy 2's alone
        copy(1, 3, true),
        write(3, 4 * k, 8 * k, 4),
        Op::Flush,
        delete(1, true), // its diverged extents wait to be freed; copy 3 stands alone
        Op::Reclaim(3),
        Op::Reclaim(u64::MAX),
        write(0, 12 * k, 8 * k, 5),
        Op::Flush,
        Op::Detach(2), // frees the extents LUN 0 left to it
        write(3, 0, s1, 6),
        Op::Flush,
        copy(0, 4, true),
        write(4, 0, 16 * k, 7),
        Op::Flush,
        Op::Attach(4), // frees what copy 4 wrote
        copy(0, 5, true),
        write(0, 16 * k, 12 * k, 8),
        Op::Flush,
        Op::Restore(5), // frees what LUN 0 wrote since copy 5
        diff(0, 5, s0),
        zeroes(3, 8 * k, 4 * k, false), // copy-on-write of zeros: frees the old extent
        Op::Flush,
        discard(3, 2 * k, 6 * k), // one extent in part, one whole
        zeroes(3, 12 * k, s1 - 12 * k, true), // whole extents and the partial last one
        Op::Flush,
        write(3, 8 * k, 4 * k, 0), // zeros, detected: unmapped
        Op::Flush,
        write(0, 0, s0, ZERO_BLOCKS | 9), // some whole extents of zeros
        Op::Flush,
        map(0, s0),
        Op::SetDetectZeros(false),
        write(0, 16 * k, 8 * k, 0), // zeros, stored
        Op::SetDetectZeros(true),
        Op::Flush,
        delete(5, false),
        write(0, 0, 12 * k, 10),
        write(3, 4 * k, 12 * k, 11),
        Op::Flush,
        copy(3, 6, true),
        zeroes(3, 0, s1, true), // only unmapped: copy 6 still holds the extents
        Op::Flush,
        delete(6, false), // now they are freed
        Op::Reopen,
        write(3, 0, s1, 12),
        delete(3, false),
        write(0, 0, s0, 13),
        Op::Reopen,
        lun(7, 20 * 4 * k),
        write(7, 0, 20 * 4 * k, 14),
        Op::Flush,
        write(0, 0, 4 * k, 15),      // a fresh extent,
        write(0, 0, 4 * k, 0),       // unmapped in the same transaction: free at once
        write(7, 0, 20 * 4 * k, 16), // takes every free extent, that one too
        Op::Flush,                   // which must not be discarded now
        Op::Reopen,
    ];
    Workload {
        name: "frees",
        block_size: 512,
        bytes: 1 << 20,
        extent_size: 4096,
        cache_bytes: 64 * KIB as usize,
        copies: 1,
        script,
        strict: true,
    }
}

/// Background freeing: mappings dropped by a delete, a restore and a detach wait in
/// the free queue and are freed a few units at a time (each `Reclaim` commits), by
/// the writes that need their space (the pool is small), by a committing flush, and
/// across reopens: a cut at any write of any step recovers a queue whose counts are
/// exact (`check()` is clean) and LUNs that read as the model says.
fn reclaim() -> Workload {
    let k = KIB;
    let script = vec![
        lun(0, 64 * k),
        write(0, 0, 64 * k, 1),
        Op::Flush,
        copy(0, 1, true),
        write(0, 0, 32 * k, 2),
        write(1, 32 * k, 16 * k, 3),
        Op::Flush,
        lun(2, 24 * k),
        write(2, 0, 24 * k, 4),
        Op::Flush,
        delete(2, false),
        Op::Restore(1), // drops LUN 0's 8 diverged extents
        Op::Reclaim(1),
        Op::Reclaim(2),
        write(0, 4 * k, 4 * k, 5),
        Op::Reclaim(5),
        Op::Detach(1),
        Op::Reclaim(1),
        Op::Reopen,
        Op::Reclaim(3),
        lun(3, 80 * k),
        write(3, 0, 80 * k, 6), // needs the space that still waits
        Op::Flush,
        copy(3, 4, true),
        write(3, 0, 80 * k, 7),
        Op::Flush,
        Op::Attach(4), // drops the copy's old image: shared with nothing now
        write(0, 0, 64 * k, 8),
        Op::Flush, // frees some, then commits
        Op::Reclaim(u64::MAX),
        Op::Reopen,
    ];
    Workload {
        name: "reclaim",
        block_size: 512,
        bytes: 1 << 20,
        extent_size: 4096,
        cache_bytes: 64 * KIB as usize,
        copies: 1,
        script,
        strict: true,
    }
}

/// Runs the workload once on a tracing device, checking every step against the model.
fn trace(w: &Workload) -> (Vec<Event>, usize, Vec<Record>) {
    let dev = Tracer::new(w.block_size, w.bytes / u64::from(w.block_size));
    let opts = FormatOptions {
        extent_size: w.extent_size,
        max_luns: 8,
        cache_bytes: w.cache_bytes,
        metadata_copies: w.copies,
        array_id: *b"crash-test-array",
    };
    let mut h = Harness::format(dev, &opts);
    let base = h.array().device_mut().events.len();
    let mut records = Vec::new();
    for (i, op) in w.script.iter().enumerate() {
        let start = h.array().device_mut().events.len();
        let step = h
            .step(op, false)
            .unwrap_or_else(|e| panic!("{}: op {i}: {e}", w.name));
        if w.strict {
            if let Err(e) = &step.result {
                panic!("{}: op {i} {op:?} was refused: {e}", w.name);
            }
        }
        let touched = op.touched(&h.m);
        if let Err(e) = h.verify(Some(&touched)) {
            panic!("{}: after op {i} {op:?}: {e}", w.name);
        }
        let end = h.array().device_mut().events.len();
        records.push(Record {
            op: op.clone(),
            events: start..end,
            candidates: step.candidates,
        });
    }
    let events = std::mem::take(&mut h.array().device_mut().events);
    (events, base, records)
}

/// The outcomes tried at a cut in round `round`: drop-all and keep-all in round 0, and
/// random and harsh ones with seeds of this workload, event and round.
fn outcomes(salt: u64, event: usize, round: u64) -> Vec<CutOutcome> {
    let mut v = Vec::new();
    if round == 0 {
        v.extend([CutOutcome::DropAll, CutOutcome::KeepAll]);
    }
    let seed = |j: u64| mix(salt ^ mix(event as u64) ^ mix(round * 16 + j + 1));
    v.extend((0..3).map(|j| CutOutcome::Random { seed: seed(j) }));
    v.push(CutOutcome::Harsh { seed: seed(3) });
    v
}

/// Tries one crash: the medium as of the last flush, plus the unflushed `pending`
/// writes meeting `outcome`; reopens and recovers with the step's candidates.
fn crash(
    medium: &Medium,
    pending: &[&Event],
    outcome: CutOutcome,
    cache_bytes: usize,
    candidates: &[Model],
) -> Result<(), String> {
    let mut d = PowerCutDevice::new(View::new(medium));
    for e in pending {
        if let Event::Write(lba, data) = e {
            d.write(*lba, data).map_err(|e| format!("{e:?}"))?;
        }
    }
    d.power_cut(outcome).map_err(|e| format!("{e:?}"))?;
    let mut a = Array::open(
        d.into_inner(),
        &OpenOptions {
            cache_bytes,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| format!("reopen failed: {e}"))?;
    let garbled = matches!(outcome, CutOutcome::Harsh { .. });
    Model::recover_one_of(candidates, &mut a, garbled)
        .map(|_| ())
        .map_err(|e| e.what)
}

/// Replays the trace, cutting after every event; returns the scenarios tried.
fn replay(w: &Workload, salt: u64, traced: &(Vec<Event>, usize, Vec<Record>), round: u64) -> u64 {
    let (events, base, records) = traced;
    let mut medium = Medium::new(w.block_size, w.bytes / u64::from(w.block_size));
    let mut pending: Vec<&Event> = Vec::new();
    for e in &events[..*base] {
        advance(&mut medium, &mut pending, e);
    }
    let (mut scenarios, mut writes, mut flushes, mut discards) = (0u64, 0u64, 0u64, 0u64);
    for (i, r) in records.iter().enumerate() {
        for k in r.events.clone() {
            let e = &events[k];
            advance(&mut medium, &mut pending, e);
            match e {
                Event::Write(..) => writes += 1,
                Event::Flush => flushes += 1,
                Event::Discard(..) => discards += 1,
            }
            let tries = if pending.is_empty() {
                // Nothing volatile: every outcome gives the same medium.
                if round > 0 {
                    continue;
                }
                vec![CutOutcome::DropAll]
            } else {
                outcomes(salt, k, round)
            };
            for outcome in tries {
                scenarios += 1;
                if let Err(e) = crash(&medium, &pending, outcome, w.cache_bytes, &r.candidates) {
                    panic!(
                        "{}: power cut during op {i} {:?}, after device write {writes}, \
                         flush {flushes} and discard {discards} of the workload ({} \
                         unflushed), outcome {outcome}: {e}",
                        w.name,
                        r.op,
                        pending.len()
                    );
                }
            }
        }
    }
    scenarios
}

/// Applies an event to the durable medium: a write waits for the next flush, a
/// discard is durable at once.
fn advance<'e>(medium: &mut Medium, pending: &mut Vec<&'e Event>, e: &'e Event) {
    match e {
        Event::Write(..) => pending.push(e),
        &Event::Discard(lba, count) => medium.discard(lba, count),
        Event::Flush => {
            for p in pending.drain(..) {
                if let Event::Write(lba, data) = p {
                    medium.apply(*lba, data);
                }
            }
        }
    }
}

#[test]
fn power_cut_after_every_device_write_and_flush() {
    let target = env_count("LUNSNAP_CRASH_SCENARIOS", 200_000);
    let workloads = [
        basic(),
        big_blocks(),
        tight(),
        random(),
        access(),
        frees(),
        reclaim(),
    ];
    let share = target.div_ceil(workloads.len() as u64);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = workloads
            .iter()
            .enumerate()
            .map(|(i, w)| {
                s.spawn(move || {
                    let t = Instant::now();
                    let traced = trace(w);
                    let salt = mix(0xC0FFEE + i as u64);
                    let mut n = 0;
                    let mut round = 0;
                    while n < share {
                        n += replay(w, salt, &traced, round);
                        round += 1;
                    }
                    let events = &traced.0[traced.1..];
                    let discards = events
                        .iter()
                        .filter(|e| matches!(e, Event::Discard(..)))
                        .count();
                    println!(
                        "{}: {} ops, {} device events ({discards} discards), {round} rounds, \
                         {n} scenarios in {:.1?}",
                        w.name,
                        w.script.len(),
                        events.len(),
                        t.elapsed()
                    );
                    n
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("workload thread"))
            .sum()
    });
    println!("crash scenarios: {total} in {:.1?}", start.elapsed());
    assert!(total >= target);
}
