//! I/O-error loops (docs/DESIGN.md §2, "a device error during a commit ..."): a workload of
//! every operation (consistency groups, offline LUNs, host access, `write_zeroes`, zero
//! writes with detection on and off, map and diff included) runs on an `ErrorDevice`
//! that fails the Nth read, write, flush or discard — once (a transient error) or from
//! then on (a dead device) — for every N until the workload completes without meeting
//! the fault.
//!
//! Each failed read, write or flush must surface as an error (a device error, or
//! `Poisoned` once an earlier one poisoned the handle), never a panic and never an `Ok`
//! that hides it. Then the power is cut (several outcomes) and the reopened array must
//! hold the last committed state: the state before the failed operation, or — when its
//! commit reached the medium before the error — the state after it; `check()` empty. A
//! transient read error in a read, map or diff leaves the handle working: the workload
//! goes on and its end state is verified too. A failed discard is a lost hint: every
//! result and state must be as without it.

use lunsnap::testing::Model;
use lunsnap::testing::{CutOutcome, ErrorDevice, Fault, FaultOp, PowerCutDevice};
use lunsnap::{Access, Array, Error, FormatOptions, MemDevice, OpenOptions};
use lunsnap_proptests::harness::write;
use lunsnap_proptests::pattern::ZERO_BLOCKS;
use lunsnap_proptests::{Harness, Op};

const KIB: u64 = 1024;

type Dev = ErrorDevice<PowerCutDevice<MemDevice>>;

/// A committed array with LUNs, copies and data; returns the device and its model.
fn base(block_size: u32, cache_bytes: usize) -> (PowerCutDevice<MemDevice>, Model) {
    let blocks = (2 << 20) / u64::from(block_size);
    let dev = PowerCutDevice::new(MemDevice::new(block_size, blocks).expect("device"));
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 8,
        cache_bytes,
        array_id: *b"io-error-loops!!",
        // One copy: with two, a failed read of a metadata page is survived from
        // the second copy (the damage tests cover that), so the Nth read failing
        // would not always reach the caller.
        metadata_copies: 1,
    };
    let mut h = Harness::format(dev, &opts);
    for op in [
        Op::CreateLun {
            lun: 0,
            size: 32 * KIB,
        },
        write(0, 0, 32 * KIB, 1),
        Op::CreateLun {
            lun: 1,
            size: 16 * KIB + 512,
        },
        write(1, 2048, 8 * KIB, 2),
        Op::CreateCopy {
            parent: 0,
            lun: 2,
            attached: true,
        },
        write(0, 4 * KIB, 4 * KIB, 3),
        Op::Flush,
    ] {
        let s = h.step(&op, false).expect("base");
        assert!(s.result.is_ok(), "base {op:?}: {:?}", s.result);
    }
    let m = h.m.clone();
    (h.take_device(), m)
}

/// Every operation once, with unflushed writes before the management operations.
fn script() -> Vec<Op> {
    vec![
        Op::Read {
            lun: 0,
            offset: 0,
            len: 32 * KIB,
        },
        write(0, 512, 1024, 10), // committed shared extent: copy-on-write
        write(0, 1024, 512, 11), // allocated in this transaction: in place
        write(2, 6 * KIB, 4 * KIB, 12), // two extents of the copy
        Op::CreateCopy {
            parent: 2,
            lun: 3,
            attached: true,
        },
        Op::CreateCopy {
            parent: 0,
            lun: 4,
            attached: false,
        },
        write(3, 0, 512, 13),
        Op::Attach(4),
        Op::Read {
            lun: 4,
            offset: 0,
            len: 8 * KIB,
        },
        Op::Restore(3),
        write(1, 16 * KIB, 512, 14),
        Op::Discard {
            lun: 0,
            offset: 2 * KIB,
            len: 12 * KIB,
        },
        Op::Detach(4),
        Op::Flush,
        write(2, 0, 32 * KIB, 15),
        Op::Reopen,
        Op::Delete {
            lun: 0,
            orphan: true,
        },
        Op::Read {
            lun: 2,
            offset: 0,
            len: 32 * KIB,
        },
        Op::CreateLun {
            lun: 5,
            size: 8 * KIB,
        },
        write(5, 0, 8 * KIB, 16),
        Op::Delete {
            lun: 4,
            orphan: false,
        },
        Op::Flush,
        Op::CreateCopy {
            parent: 3,
            lun: 6,
            attached: true,
        },
        write(6, 3 * KIB, 20 * KIB, 17), // a copy of a copy, across six extents
        write(3, 0, 32 * KIB, 18),
        Op::Attach(6),
        write(6, 30 * KIB, 2 * KIB, 19),
        Op::Restore(6),
        Op::Discard {
            lun: 3,
            offset: 0,
            len: 32 * KIB,
        },
        Op::Read {
            lun: 6,
            offset: 0,
            len: 32 * KIB,
        },
        Op::Delete {
            lun: 3,
            orphan: true,
        },
        // Consistency groups, offline LUNs, hosts, grants, security, host I/O.
        Op::CreateCopies {
            pairs: vec![(2, 0), (5, 4)],
            attached: true,
        },
        write(2, 0, 4 * KIB, 20),
        Op::AttachMany(vec![0, 4]),
        // Zeros: holes punched, zeros stored, zero detection on and off.
        zeroes(None, 2, 2 * KIB, 8 * KIB, true),
        zeroes(None, 2, 12 * KIB, 6 * KIB, false),
        write(2, 16 * KIB, 8 * KIB, 0),
        Op::SetDetectZeros(false),
        write(2, 24 * KIB, 4 * KIB, 0),
        Op::SetDetectZeros(true),
        write(2, 0, 16 * KIB, ZERO_BLOCKS | 22),
        Op::Map {
            host: None,
            lun: 2,
            offset: 0,
            len: 32 * KIB,
        },
        Op::Diff {
            host: None,
            a: 2,
            b: 0,
            offset: 0,
            len: 32 * KIB,
        },
        Op::Flush,
        Op::AddHost {
            id: 7,
            name: "host-7".into(),
        },
        Op::Grant {
            lun: 2,
            host: 7,
            access: Access::ReadWrite,
        },
        Op::SetSecurity(true),
        Op::WriteAs {
            host: 7,
            lun: 2,
            offset: 8 * KIB,
            len: 4 * KIB,
            tag: 21,
        },
        zeroes(Some(7), 2, 4 * KIB, 8 * KIB, true),
        Op::Diff {
            host: Some(7),
            a: 2,
            b: 0, // refused: not granted
            offset: 0,
            len: 512,
        },
        Op::SetOnline {
            lun: 5,
            online: false,
        },
        Op::Map {
            host: None,
            lun: 5, // offline: its metadata may be read
            offset: 0,
            len: 8 * KIB,
        },
        Op::Revoke { lun: 2, host: 7 },
        Op::RemoveHost(7),
        Op::Reopen,
    ]
}

fn zeroes(host: Option<u64>, lun: u32, offset: u64, len: u64, punch: bool) -> Op {
    Op::WriteZeroes {
        host,
        lun,
        offset,
        len,
        punch,
    }
}

#[derive(Default, Debug)]
struct Tally {
    runs: u64,
    failures: u64,
    poisoned: u64,
    continued: u64,
    open_failures: u64,
    crashes: u64,
    /// Failed discards the array ignored, as it must.
    hints_lost: u64,
}

/// Cuts the power of `dev` with several outcomes and checks each reopened array
/// against the candidates.
fn crash_check(
    dev: PowerCutDevice<MemDevice>,
    candidates: &[Model],
    cache: usize,
    what: &str,
) -> u64 {
    let outcomes = [
        CutOutcome::DropAll,
        CutOutcome::KeepAll,
        CutOutcome::Random { seed: 7 },
        CutOutcome::Harsh { seed: 11 },
    ];
    for outcome in outcomes {
        let mut d = dev.clone();
        d.power_cut(outcome).expect("power cut");
        let mut a = Array::open(
            d.into_inner(),
            &OpenOptions {
                cache_bytes: cache,
                ..OpenOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{what}, {outcome}: reopen failed: {e}"));
        let garbled = matches!(outcome, CutOutcome::Harsh { .. });
        if let Err(e) = Model::recover_one_of(candidates, &mut a, garbled) {
            panic!("{what}, {outcome}: {e}");
        }
    }
    outcomes.len() as u64
}

/// Runs the script with `fault` armed; false once the fault never triggered.
fn run(
    base: &(PowerCutDevice<MemDevice>, Model),
    fault: Fault,
    cache: usize,
    t: &mut Tally,
) -> bool {
    let what = format!("{fault}");
    let open = OpenOptions {
        cache_bytes: cache,
        ..OpenOptions::default()
    };
    t.runs += 1;
    let dev: Dev = ErrorDevice::with_fault(base.0.clone(), fault);
    let spare = dev.clone();
    let a = match Array::open(dev, &open) {
        Ok(a) => a,
        Err(e) => {
            assert_eq!(e, Error::Device(fault.kind), "{what}: open");
            t.open_failures += 1;
            t.failures += 1;
            t.crashes += crash_check(
                spare.into_inner(),
                std::slice::from_ref(&base.1),
                cache,
                &what,
            );
            return true;
        }
    };
    let mut h = Harness::new(a, base.1.clone(), open);
    for (i, op) in script().iter().enumerate() {
        let what = format!("{what}, op {i} {op:?}");
        let before = h.a.as_mut().map_or(0, |a| a.device_mut().failures());
        // A failed discard is a hint lost: nothing may show.
        let hint = fault.op == FaultOp::Discard;
        let step = h.step(op, !hint).unwrap_or_else(|e| panic!("{what}: {e}"));
        let after = match h.a.as_mut() {
            Some(a) => a.device_mut().failures(),
            None => h.dead.as_ref().map_or(0, |d| d.failures()),
        };
        let device_error = matches!(step.result, Err(Error::Device(_)) | Err(Error::Poisoned));
        if !device_error {
            if hint {
                t.hints_lost += after - before;
            } else {
                assert_eq!(
                    before, after,
                    "{what}: a device error was swallowed: {:?}",
                    step.result
                );
            }
            continue;
        }
        // (A failed reopen leaves a copy of the device taken before open.)
        assert!(
            after > before || step.result == Err(Error::Poisoned) || h.a.is_none(),
            "{what}: {:?} without a device error",
            step.result
        );
        t.failures += 1;
        let poisoned = h.a.as_ref().is_some_and(|a| a.is_poisoned());
        if poisoned {
            t.poisoned += 1;
            let a = h.array();
            assert_eq!(
                a.flush(),
                Err(Error::Poisoned),
                "{what}: flush after poison"
            );
            assert_eq!(a.create_lun(7, 512), Err(Error::Poisoned), "{what}");
        }
        let query = matches!(op, Op::Read { .. } | Op::Map { .. } | Op::Diff { .. });
        if !fault.sticky && !poisoned && query && h.a.is_some() {
            // A transient read error changes nothing: go on.
            t.continued += 1;
            continue;
        }
        if !fault.sticky && !poisoned && h.a.is_some() {
            // The handle is usable: it must be consistent.
            let v = h.array().check();
            assert!(
                v.as_ref().is_ok_and(|v| v.is_empty()),
                "{what}: check() {v:?}"
            );
        }
        let dev = h.take_device().into_inner();
        t.crashes += crash_check(dev, &step.candidates, cache, &what);
        return true;
    }
    // The script completed: verify everything, disarmed, then after a reopen.
    let triggered = h.array().device_mut().triggered();
    h.array().device_mut().set_fault(None);
    if let Err(e) = h.verify(None) {
        panic!("{what}: at the end: {e}");
    }
    let s = h.step(&Op::Reopen, false).expect("reopen");
    assert!(s.result.is_ok());
    if let Err(e) = h.verify(None) {
        panic!("{what}: after the final reopen: {e}");
    }
    triggered
}

fn loops(op: FaultOp, block_size: u32, cache: usize) {
    let base = base(block_size, cache);
    for sticky in [false, true] {
        let mut t = Tally::default();
        let mut n = 0;
        loop {
            let fault = if sticky {
                Fault::sticky(op, n)
            } else {
                Fault::once(op, n)
            };
            if !run(&base, fault, cache, &mut t) {
                break;
            }
            n += 1;
            assert!(n < 100_000, "the workload never completes");
        }
        println!(
            "{op:?} {}, {block_size}-byte blocks, cache {} KiB: completes from N = {n}; {t:?}",
            if sticky { "sticky" } else { "once" },
            cache >> 10
        );
        assert!(t.failures + t.hints_lost > 0);
    }
}

#[test]
fn every_read_fails_in_turn() {
    loops(FaultOp::Read, 512, 64 << 10);
    loops(FaultOp::Read, 4096, 1 << 20);
}

#[test]
fn every_write_fails_in_turn() {
    loops(FaultOp::Write, 512, 64 << 10);
    loops(FaultOp::Write, 4096, 1 << 20);
}

/// Discards are hints: each failing (once or for good) changes no result and no state.
#[test]
fn every_discard_fails_in_turn() {
    loops(FaultOp::Discard, 512, 64 << 10);
    loops(FaultOp::Discard, 4096, 1 << 20);
}

#[test]
fn every_flush_fails_in_turn() {
    loops(FaultOp::Flush, 512, 64 << 10);
    loops(FaultOp::Flush, 4096, 1 << 20);
}
