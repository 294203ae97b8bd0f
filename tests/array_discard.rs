//! A discard is a management operation: all or nothing, even when the pool is so
//! full that zeroing the extent it only partly covers needs a fresh extent, and the
//! device fails at any write of it.

use lunsnap::device::testing::{ErrorDevice, Fault, FaultOp};
use lunsnap::{Array, FormatOptions, MemDevice, OpenOptions};

const ES: u64 = 4096;

/// LUN 0 over the whole capacity, written with 1s and committed; then committed
/// extents rewritten with 2s, copy-on-write, until no extent is free (no commit).
fn full_pool() -> (Array<ErrorDevice<MemDevice>>, u64) {
    let dev = ErrorDevice::new(MemDevice::new(512, 4096).unwrap());
    let opts = FormatOptions {
        extent_size: ES as u32,
        max_luns: 2,
        ..Default::default()
    };
    let mut a = Array::format(dev, &opts).unwrap();
    let cap = a.pool_info().capacity_bytes;
    a.create_lun(0, cap).unwrap();
    a.write(0, 0, &vec![1; cap as usize]).unwrap();
    a.flush().unwrap();
    let gen = a.pool_info().generation;
    let mut rewritten = 0;
    while a.engine().data_free() > 0 {
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
