//! Background freeing at the array level: management operations queue what they drop,
//! reservations stay exact (a write never fails for space that only waits to be
//! freed, even in a full pool refilled at once), the figures are exact while trees
//! wait, and reclamation ends with every count exact.

mod common;

use common::{assert_clean, mem};
use lunsnap::{Array, FormatOptions, MemDevice};

const MIB: u64 = 1 << 20;

fn array(bytes: u64, max_luns: u32) -> Array<MemDevice> {
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns,
        ..Default::default()
    };
    Array::format(mem(bytes), &opts).expect("format")
}

/// Fills `len` bytes of LUN `n` from 0 with bytes of `tag`, 64 KiB at a time.
fn fill(a: &mut Array<MemDevice>, n: u32, len: u64, tag: u8) {
    let chunk = vec![tag; 64 * 1024];
    let mut pos = 0;
    while pos < len {
        let k = (len - pos).min(chunk.len() as u64) as usize;
        a.write(n, pos, &chunk[..k]).expect("write");
        pos += k as u64;
    }
}

fn reads_as(a: &mut Array<MemDevice>, n: u32, len: u64, tag: u8) {
    let mut buf = vec![0u8; len as usize];
    a.read(n, 0, &mut buf).expect("read");
    assert!(
        buf.iter().all(|&b| b == tag),
        "LUN {n} does not read as {tag}"
    );
}

/// The largest LUN size that fits the pool, rounded down to 64 KiB.
fn capacity(a: &Array<MemDevice>) -> u64 {
    a.pool_info().capacity_bytes / (64 * 1024) * (64 * 1024)
}

#[test]
fn a_full_pool_deleted_and_refilled_at_once_never_runs_out() {
    let mut a = array(16 * MIB, 8);
    let cap = capacity(&a);
    for round in 0..4u8 {
        a.create_lun(0, cap).expect("create");
        fill(&mut a, 0, cap, round + 1);
        a.flush().expect("flush");
        a.delete(0, false).expect("delete");
        // The delete returned at once: nearly the whole pool waits to be freed.
        assert!(a.reclaim_pending());
        assert!(a.pending_bytes().expect("pending") >= cap - 64 * 1024);
    }
    // The writes freed what they needed as they went; nothing was lost.
    a.create_lun(1, cap).expect("create");
    fill(&mut a, 1, cap, 9);
    reads_as(&mut a, 1, cap, 9);
    assert_clean(&mut a, "refilled");
    a.reclaim(u64::MAX).expect("reclaim");
    assert!(!a.reclaim_pending());
    assert_eq!(a.pending_bytes().expect("pending"), 0);
    assert_eq!(a.pool_info().allocated_bytes, cap);
    assert_clean(&mut a, "reclaimed");
}

#[test]
fn a_restored_parent_can_rewrite_the_whole_pool_without_reclaim_calls() {
    let mut a = array(16 * MIB, 8);
    let half = capacity(&a) / 2 / (64 * 1024) * (64 * 1024);
    a.create_lun(0, half).expect("create");
    fill(&mut a, 0, half, 1);
    a.create_copy(0, 1, true).expect("copy");
    fill(&mut a, 0, half, 2); // the parent diverges completely
    a.flush().expect("flush");
    a.restore(1).expect("restore"); // drops the parent's diverged mapping
    reads_as(&mut a, 0, half, 1);
    assert!(a.pending_bytes().expect("pending") >= half - 64 * 1024);
    // Both rewrite everything: the pool is fully reserved, and what the restore
    // dropped is freed by the writes that need it.
    fill(&mut a, 0, half, 3);
    fill(&mut a, 1, half, 4);
    reads_as(&mut a, 0, half, 3);
    reads_as(&mut a, 1, half, 4);
    assert_clean(&mut a, "rewritten");
}

#[test]
fn metadata_held_by_queued_trees_is_freed_before_it_runs_out() {
    // A parent written in full, and a copy of it. Each round the parent writes one
    // extent in every mapping leaf (so every leaf is copied on write) and is then
    // restored from the copy, which drops the parent's whole mapping: a queued tree
    // of fresh leaves that holds almost no data. Without a reclaim call, round after
    // round, far more such trees wait than the metadata area could hold.
    let mut a = array(128 * MIB, 2);
    let half = capacity(&a) / 2 / (64 * 1024) * (64 * 1024);
    a.create_lun(0, half).expect("create");
    fill(&mut a, 0, half, 1);
    a.create_copy(0, 1, true).expect("copy");
    a.flush().expect("flush");
    let provisioned = a.pool_info().metadata_provisioned_bytes;
    let mut peak = 0;
    let mut writes = 0u64;
    for round in 0..100u8 {
        // A mapping entry covers 16 extents (64 KiB); a leaf holds a few dozen.
        let mut pos = 0;
        while pos < half {
            a.write(0, pos, &[round + 2; 512]).expect("write");
            pos += 16 * 64 * 1024;
            writes += 1;
        }
        a.restore(1).expect("restore");
        let p = a.pool_info();
        peak = peak.max(p.metadata_used_bytes);
        assert!(p.metadata_used_bytes <= provisioned, "{p:?}");
    }
    reads_as(&mut a, 0, half, 1);
    // The queued trees pressed on the metadata area, and the writes freed them
    // before it ran out.
    println!("peak {peak} of {provisioned} bytes of metadata; {writes} writes");
    assert!(
        peak > provisioned / 2,
        "{peak} of {provisioned}: no pressure"
    );
    assert_clean(&mut a, "after the rounds");
    a.reclaim(u64::MAX).expect("reclaim");
    assert_eq!(a.pool_info().allocated_bytes, half);
    assert_clean(&mut a, "reclaimed");
}

#[test]
fn figures_are_exact_while_trees_wait_and_reading_them_writes_nothing() {
    let mut a = array(16 * MIB, 8);
    a.create_lun(0, MIB).expect("create");
    fill(&mut a, 0, MIB, 1);
    a.create_copy(0, 1, true).expect("copy");
    a.create_copy(0, 2, true).expect("copy");
    // Copy 1 diverges in its first quarter.
    let quarter = MIB / 4;
    a.write(1, 0, &vec![7u8; quarter as usize]).expect("write");
    a.flush().expect("flush");
    let i0 = a.lun_info(0).expect("info");
    assert_eq!((i0.exclusive_bytes, i0.shared_bytes), (0, MIB));
    // Delete copy 2: LUN 0 still shares its last three quarters with copy 1, and
    // its first quarter with nobody any more.
    a.delete(2, false).expect("delete");
    assert!(a.reclaim_pending());
    let g = a.pool_info().generation;
    let i0 = a.lun_info(0).expect("info");
    assert_eq!(
        (i0.exclusive_bytes, i0.shared_bytes),
        (quarter, MIB - quarter)
    );
    let i1 = a.lun_info(1).expect("info");
    assert_eq!(
        (i1.exclusive_bytes, i1.shared_bytes),
        (quarter, MIB - quarter)
    );
    let all = a.luns().expect("luns");
    assert_eq!(all[0], i0);
    assert_eq!(all[1], i1);
    let m = a.map(0, 0, MIB).expect("map");
    assert_eq!(
        m.iter()
            .map(|r| (r.offset, r.length, r.data, r.shared))
            .collect::<Vec<_>>(),
        [
            (0, quarter, true, false),
            (quarter, MIB - quarter, true, true)
        ]
    );
    let m = a.map_allocation(0, 0, MIB).expect("map");
    assert_eq!(
        m.iter()
            .map(|r| (r.offset, r.length, r.data, r.shared))
            .collect::<Vec<_>>(),
        [(0, MIB, true, false)]
    );
    // Nothing was freed or committed by looking.
    assert!(a.reclaim_pending());
    assert_eq!(a.pool_info().generation, g);
    // Deleting a copy that shares everything with its parent frees no data.
    assert_eq!(a.pending_bytes().expect("pending"), 0);
    a.reclaim(u64::MAX).expect("reclaim");
    assert_eq!(a.lun_info(0).expect("info"), i0);
    assert_clean(&mut a, "reclaimed");
}

#[test]
fn pending_bytes_count_what_only_dropped_mappings_hold() {
    let mut a = array(64 * MIB, 8);
    const L: u64 = 16 * MIB;
    a.create_lun(0, L).expect("create");
    fill(&mut a, 0, L, 1);
    a.create_copy(0, 1, true).expect("copy");
    fill(&mut a, 1, L / 2, 2); // half of the copy diverges
    a.flush().expect("flush");
    let allocated = a.pool_info().allocated_bytes;
    assert_eq!(allocated, L + L / 2);
    a.detach(1).expect("detach"); // the copy's own half waits
    assert_eq!(a.pending_bytes().expect("pending"), L / 2);
    assert_eq!(a.pool_info().allocated_bytes, allocated);
    // A little at a time: the pending figure only goes down.
    let mut last = L / 2;
    let mut steps = 0;
    while a.reclaim_pending() {
        let s = a.reclaim(1).expect("reclaim");
        let now = a.pending_bytes().expect("pending");
        assert!(now <= last, "{now} after {last}");
        assert_eq!(a.pool_info().allocated_bytes, L + now, "{s:?}");
        last = now;
        steps += 1;
    }
    assert!(steps >= 3, "{steps} steps");
    assert_eq!(a.pool_info().reclaim_queue, 0);
    assert_clean(&mut a, "reclaimed");
}

#[test]
fn a_committing_flush_reclaims_a_bounded_share() {
    let mut a = array(16 * MIB, 8);
    a.create_lun(0, 4 * MIB).expect("create");
    fill(&mut a, 0, 4 * MIB, 1);
    a.flush().expect("flush");
    a.delete(0, false).expect("delete");
    let before = a.pending_bytes().expect("pending");
    // A flush with nothing to commit does not touch the queue.
    a.flush().expect("flush");
    assert_eq!(a.pending_bytes().expect("pending"), before);
    a.create_lun(1, MIB).expect("create");
    a.write(1, 0, &[5u8; 4096]).expect("write");
    a.flush().expect("flush");
    let after = a.pending_bytes().expect("pending");
    assert!(after < before, "{after} after {before}");
    // Flushes alone finish the job.
    for _ in 0..100 {
        if !a.reclaim_pending() {
            break;
        }
        a.write(1, 0, &[6u8; 4096]).expect("write");
        a.flush().expect("flush");
    }
    assert!(!a.reclaim_pending());
    assert_clean(&mut a, "flushed");
}
