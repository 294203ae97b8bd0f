//! A discard is a management operation: all or nothing, even when the pool is so
//! full that zeroing the extent it only partly covers needs a fresh extent, and the
//! device fails at any write of it. A discard of length 0 changes nothing, and a
//! close whose commit fails hands the device back.

use lunsnap::testing::{ErrorDevice, Fault, FaultOp};
use lunsnap::{Array, FormatOptions, MemDevice, OpenOptions};

const ES: u64 = 4096;

/// LUN 0 over the whole capacity, written with 1s and committed; then committed
/// extents rewritten with 2s, copy-on-write, until no extent is free (no commit).
fn full_pool() -> (Array<ErrorDevice<MemDevice>>, u64) {
    pool_with_free(0, 0)
}

/// [`full_pool`], stopping the rewrites while `free` extents are left, with LUN 0
/// `short` bytes smaller than the capacity.
fn pool_with_free(free: u64, short: u64) -> (Array<ErrorDevice<MemDevice>>, u64) {
    let dev = ErrorDevice::new(MemDevice::new(512, 4096).unwrap());
    let opts = FormatOptions {
        extent_size: ES as u32,
        max_luns: 2,
        ..Default::default()
    };
    let mut a = Array::format(dev, &opts).unwrap();
    let cap = a.pool_info().capacity_bytes;
    a.create_lun(0, cap - short).unwrap();
    a.write(0, 0, &vec![1; (cap - short) as usize]).unwrap();
    a.flush().unwrap();
    let gen = a.pool_info().generation;
    let mut rewritten = 0;
    while a.engine().data_free() > free {
        a.write(0, rewritten * ES, &[2; ES as usize]).unwrap();
        rewritten += 1;
    }
    assert_eq!(a.pool_info().generation, gen, "no early commit");
    (a, rewritten)
}

#[test]
fn a_discard_in_a_full_pool_is_all_or_nothing_across_a_failure() {
    let (_, rewritten) = full_pool();
    assert!(rewritten >= 2);
    // Whole extents from `start`, and part of the extent at `end`.
    let start = (rewritten + 2) * ES;
    let end = (rewritten + 10) * ES + 1024;
    let mut completed = false;
    for n in 0.. {
        let (mut a, _) = full_pool();
        let gen = a.pool_info().generation;
        // Writes fail from the nth of the discard on (counted from now).
        a.device_mut()
            .set_fault(Some(Fault::sticky(FaultOp::Write, n)));
        let r = a.discard(0, start, end - start);
        let dev = a.into_device().into_inner();
        let mut b = Array::open(dev, &OpenOptions::default()).expect("reopen");
        let mut got = vec![0u8; (end - start) as usize];
        b.read(0, start, &mut got).unwrap();
        let zeros = got.iter().all(|&x| x == 0);
        let old = got.iter().all(|&x| x == 1);
        assert!(
            zeros || old,
            "failure at write {n} of the discard: part of it is durable"
        );
        // The rewrites before the discard: durable exactly when a commit was made.
        let mut first = vec![0u8; ES as usize];
        b.read(0, 0, &mut first).unwrap();
        let committed = b.pool_info().generation > gen;
        assert_eq!(first[0], if committed { 2 } else { 1 }, "write {n}");
        assert_eq!(
            zeros,
            r.is_ok() || b.pool_info().generation == gen + 2,
            "write {n}"
        );
        assert!(b.check().unwrap().is_empty());
        if r.is_ok() {
            // Committed first (the writes before it), then the discard.
            assert_eq!(b.pool_info().generation, gen + 2);
            assert!(n > 2, "the discard writes something before it completes");
            completed = true;
            break;
        }
    }
    assert!(completed);
}

/// Generations a discard of `[start, end)` advances a full pool by: 1 (its own
/// commit), or 2 when zeroing the extents it only partly covers needs fresh
/// extents and none is free, so that the writes before it are committed first.
fn generations(start: u64, end: u64) -> u64 {
    let (mut a, _) = full_pool();
    let gen = a.pool_info().generation;
    a.discard(0, start, end - start).unwrap();
    let mut got = vec![1u8; (end - start) as usize];
    a.read(0, start, &mut got).unwrap();
    assert!(got.iter().all(|&x| x == 0));
    assert!(a.check().unwrap().is_empty());
    a.pool_info().generation - gen
}

#[test]
fn a_discard_commits_first_only_when_it_needs_fresh_extents() {
    let (a, r) = full_pool();
    let cap = a.pool_info().capacity_bytes;
    // Extents 0..r were rewritten in this transaction (in place from now on);
    // extents from r on are as committed.
    let c = r * ES;
    for (start, end, want) in [
        (c, c + 3 * ES, 1),                // whole extents only
        (cap - 2 * ES, cap, 1),            // whole extents up to the LUN's end
        (512, 1024, 1),                    // part of an extent written since: in place
        (512, c - 512, 1),                 // parts of two such extents
        (c + 512, c + 1024, 2),            // part of one committed extent
        (c + 2 * ES, c + 3 * ES + 512, 2), // whole, then part of a committed one
        (c + 512, c + 3 * ES, 2),          // part of a committed one, then whole
        (c + 512, c + 3 * ES + 512, 2),    // parts of two committed extents
        (c - 512, c + 512, 2),             // part of a rewritten and a committed one
    ] {
        assert_eq!(generations(start, end), want, "discard [{start}, {end})");
    }
    // One extent free: enough for a discard inside one committed extent, not for
    // one that partly covers two.
    for (start, end, want) in [(c + 512, c + 1024, 1), (c + 512, c + ES + 512, 2)] {
        let (mut a, r1) = pool_with_free(1, 0);
        assert_eq!(r1, r - 1);
        let gen = a.pool_info().generation;
        a.discard(0, start, end - start).unwrap();
        assert_eq!(
            a.pool_info().generation - gen,
            want,
            "[{start}, {end}), one free"
        );
    }
    // A LUN whose last extent is partial: a range reaching its end unmaps that
    // extent whole, so a full pool needs no fresh extent for it.
    let (mut a, _) = pool_with_free(0, 1024);
    let size = a.lun_info(0).unwrap().size;
    let gen = a.pool_info().generation;
    a.discard(0, size - (ES - 1024), ES - 1024).unwrap();
    assert_eq!(a.pool_info().generation - gen, 1, "the partial last extent");
    // With free extents (a flush frees the ones the rewrites released): once.
    let (mut a, r) = full_pool();
    a.flush().unwrap();
    assert!(a.engine().data_free() >= 2);
    let (c, gen) = (r * ES, a.pool_info().generation);
    a.discard(0, c + 512, 3 * ES).unwrap();
    assert_eq!(a.pool_info().generation, gen + 1);
}

#[test]
fn a_zero_length_discard_changes_nothing() {
    let (mut a, _) = pool_with_free(4, 0);
    let before = a.pool_info();
    let writes = a.device().writes();
    a.discard(0, 0, 0).unwrap();
    a.discard(0, ES, 0).unwrap();
    assert_eq!(a.pool_info(), before, "no commit, no generation");
    assert_eq!(a.device().writes(), writes, "nothing written");
    // Its arguments are still checked.
    assert!(a.discard(0, 1, 0).is_err());
    assert!(a.discard(1, 0, 0).is_err());
    assert_eq!(a.check().unwrap(), vec![]);
}

#[test]
fn close_hands_the_device_back_when_its_commit_fails() {
    let dev = ErrorDevice::new(MemDevice::new(512, 4096).unwrap());
    let opts = FormatOptions {
        extent_size: ES as u32,
        max_luns: 2,
        ..Default::default()
    };
    let mut a = Array::format(dev, &opts).unwrap();
    a.create_lun(0, 4 * ES).unwrap();
    a.write(0, 0, &[1; ES as usize]).unwrap();
    a.flush().unwrap();
    let gen = a.pool_info().generation;
    a.write(0, 0, &[2; ES as usize]).unwrap();
    a.device_mut()
        .set_fault(Some(Fault::sticky(FaultOp::Write, 0)));
    let err = a.close().expect_err("the commit cannot write");
    assert!(
        err.to_string().contains("closing the array failed"),
        "{err}"
    );
    let mut dev = err.device;
    dev.set_fault(None);
    // The device still holds the last commit: the 1s.
    let mut a = Array::open(dev, &OpenOptions::default()).unwrap();
    assert_eq!(a.pool_info().generation, gen);
    let mut buf = vec![0u8; ES as usize];
    a.read(0, 0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 1));
    assert_eq!(a.check().unwrap(), vec![]);
}
