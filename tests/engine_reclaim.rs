//! The free queue (`Engine::drop_tree_later`, `Engine::reclaim`): a deferred drop frees
//! exactly what an eager one frees, a step at a time, with every count exact after
//! each step (the audit is clean), across commits and reopens, and never what a live
//! tree still shares.

mod common;

use common::assert_audit_clean;
use lunsnap::engine::{Engine, FormatOptions, OpenOptions, SpaceStats, Tree, ValueKind};
use lunsnap::{Error, MemDevice};

fn engine() -> Engine<MemDevice> {
    let opts = FormatOptions {
        extent_size: 4096,
        metadata_pages: Some(1024),
        ..Default::default()
    };
    Engine::format(MemDevice::new(512, 128 * 1024).expect("device"), &opts).expect("format")
}

/// A tree of `n` Data values, each holding a fresh extent, in root slot `slot`.
fn data_tree(e: &mut Engine<MemDevice>, slot: usize, n: u64) -> Tree {
    let mut t = e.create_tree(8, ValueKind::Data).expect("tree");
    for k in 0..n {
        let x = e.alloc_data().expect("extent");
        e.insert(&mut t, k, &x.to_le_bytes()).expect("insert");
    }
    e.set_root(slot, Some(t)).expect("slot");
    t
}

/// Space figures that must agree between an eager and a deferred drop.
fn used(e: &Engine<MemDevice>) -> (u64, u64) {
    let s: SpaceStats = e.space();
    (s.meta_allocated, s.data_allocated)
}

#[test]
fn a_deferred_drop_frees_exactly_what_an_eager_one_frees() {
    let (mut eager, mut lazy) = (engine(), engine());
    for e in [&mut eager, &mut lazy] {
        let t = data_tree(e, 0, 3000);
        // A second tree sharing everything, then diverging in a few places.
        let mut c = e.clone_tree(&t).expect("clone");
        for k in [0u64, 1500, 2999] {
            let x = e.alloc_data().expect("extent");
            e.insert(&mut c, k, &x.to_le_bytes()).expect("insert");
        }
        e.set_root(1, Some(c)).expect("slot");
        e.commit().expect("commit");
    }
    let t = eager.set_root(0, None).expect("slot").expect("tree");
    eager.drop_tree(t).expect("drop");
    let t = lazy.set_root(0, None).expect("slot").expect("tree");
    lazy.drop_tree_later(t).expect("queue");
    assert!(lazy.reclaim_pending());
    assert_eq!(lazy.reclaim_queue_len(), 1);
    // Nothing freed yet: the queue holds the tree's reference.
    assert!(used(&lazy).1 > used(&eager).1);
    assert_audit_clean(&mut lazy, "queued");
    let mut steps = 0;
    while lazy.reclaim_pending() {
        let s = lazy.reclaim(7).expect("reclaim");
        assert!(s.work >= 1, "{s:?}");
        assert_eq!(s.remaining, lazy.reclaim_queue_len());
        lazy.commit().expect("commit");
        assert_audit_clean(&mut lazy, &format!("step {steps}"));
        steps += 1;
        assert!(steps < 10_000, "reclamation does not end");
    }
    assert!(steps > 1, "a budget of 7 took {steps} steps");
    eager.commit().expect("commit");
    assert_eq!(used(&lazy), used(&eager));
    // The surviving tree reads the same in both.
    let c = lazy.root(1).expect("slot").expect("tree");
    for k in (0..3000).step_by(97) {
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        assert!(lazy.lookup(&c, k, &mut a).expect("lookup"));
        let c2 = eager.root(1).expect("slot").expect("tree");
        assert!(eager.lookup(&c2, k, &mut b).expect("lookup"));
        assert_eq!(a, b, "key {k}");
    }
}

#[test]
fn the_queue_survives_reopens_and_resumes_where_it_stopped() {
    let mut e = engine();
    let t = data_tree(&mut e, 0, 2000);
    e.commit().expect("commit");
    let before = used(&e);
    let t2 = e.set_root(0, None).expect("slot").expect("tree");
    assert_eq!(t2, t);
    e.drop_tree_later(t).expect("queue");
    e.commit().expect("commit");
    let mut dev = e.into_device();
    let mut rounds = 0;
    loop {
        let mut e = Engine::open(dev, &OpenOptions::default()).expect("open");
        assert_audit_clean(&mut e, &format!("reopen {rounds}"));
        if !e.reclaim_pending() {
            assert_eq!(used(&e).1, 0, "every extent freed");
            assert!(used(&e).0 < before.0);
            break;
        }
        e.reclaim(100).expect("reclaim");
        e.commit().expect("commit");
        dev = e.into_device();
        rounds += 1;
        assert!(rounds < 1000);
    }
    assert!(rounds > 2, "{rounds} rounds");
}

#[test]
fn uncommitted_reclamation_is_lost_by_a_crash_and_redone() {
    let mut e = engine();
    let t = data_tree(&mut e, 0, 500);
    e.set_root(0, None).expect("slot");
    e.drop_tree_later(t).expect("queue");
    e.commit().expect("commit");
    let queued = e.reclaim_queue_len();
    e.reclaim(u64::MAX).expect("reclaim");
    assert!(!e.reclaim_pending());
    // No commit: reopening finds the queue as committed.
    let mut e = Engine::open(e.into_device(), &OpenOptions::default()).expect("open");
    assert_eq!(e.reclaim_queue_len(), queued);
    assert_audit_clean(&mut e, "reopened");
    e.reclaim(u64::MAX).expect("reclaim");
    e.commit().expect("commit");
    assert_eq!(used(&e).1, 0);
    assert_audit_clean(&mut e, "done");
}

#[test]
fn a_budget_bounds_the_work_of_a_call() {
    let mut e = engine();
    let t = data_tree(&mut e, 0, 3000);
    e.set_root(0, None).expect("slot");
    e.drop_tree_later(t).expect("queue");
    assert_eq!(e.reclaim(0).expect("nothing").work, 0);
    let one = e.reclaim(1).expect("one step");
    // The root is interior: one node visited, its children queued in its place.
    assert_eq!((one.work, one.nodes_freed, one.extent_refs), (1, 1, 0));
    assert!(one.remaining > 1, "{one:?}");
    // A leaf is released whole: the overshoot is at most one leaf's references.
    let s = e.reclaim(2).expect("leaf");
    assert!(s.work >= 2 && s.extent_refs > 0, "{s:?}");
    assert!(s.work <= 2 + 256, "{s:?}");
}

#[test]
fn a_queued_tree_never_frees_what_a_live_one_shares() {
    let mut e = engine();
    let t = data_tree(&mut e, 0, 1500);
    let c = e.clone_tree(&t).expect("clone");
    e.set_root(1, Some(c)).expect("slot");
    e.commit().expect("commit");
    let before = used(&e);
    e.set_root(0, None).expect("slot");
    e.drop_tree_later(t).expect("queue");
    let s = e.reclaim(u64::MAX).expect("reclaim");
    // The root was shared: one reference given back, nothing freed.
    assert_eq!(
        (s.work, s.nodes_freed, s.extent_refs, s.remaining),
        (1, 0, 0, 0)
    );
    e.commit().expect("commit");
    assert_eq!(used(&e), before);
    assert_audit_clean(&mut e, "after");
}

#[test]
fn trees_held_in_values_are_queued_and_freed_too() {
    let mut e = engine();
    let inner = data_tree(&mut e, 0, 300);
    e.set_root(0, None).expect("slot");
    let mut outer = e.create_tree(8, ValueKind::Tree).expect("tree");
    e.insert(&mut outer, 1, &inner.root().to_le_bytes())
        .expect("insert");
    e.set_root(0, Some(outer)).expect("slot");
    e.commit().expect("commit");
    assert_audit_clean(&mut e, "before");
    e.set_root(0, None).expect("slot");
    e.drop_tree_later(outer).expect("queue");
    while e.reclaim_pending() {
        e.reclaim(3).expect("reclaim");
        e.commit().expect("commit");
        assert_audit_clean(&mut e, "step");
    }
    assert_eq!(used(&e).1, 0);
}

#[test]
fn a_queue_entry_that_names_a_free_node_is_damage_not_a_panic() {
    let mut e = engine();
    let t = data_tree(&mut e, 0, 10);
    e.set_root(0, None).expect("slot");
    // Give the reference back twice: the second queue entry names a freed node.
    let copy = t;
    e.drop_tree_later(t).expect("queue");
    e.drop_tree_later(copy).expect("queue");
    e.reclaim(1).expect("the first entry frees the tree's root");
    let r = e.reclaim(u64::MAX);
    assert!(
        matches!(r, Err(Error::Corrupt { .. })),
        "a second drop of a freed tree: {r:?}"
    );
    // The engine refuses changes until reopened.
    assert_eq!(e.reclaim(1), Err(Error::Poisoned));
}

/// Counts per space-map leaf and child pointers per index block (docs/FORMAT.md
/// §4.2–4.3): a map of more than their product has three levels.
const COUNTS_PER_LEAF: u64 = (4096 - 32) / 4;
const PTRS_PER_INDEX: u64 = (4096 - 32) / 8;

#[test]
fn a_three_level_data_space_map_counts_every_extent() {
    // 4 KiB extents on a sparse device just large enough for a third level: the
    // extents past COUNTS_PER_LEAF * PTRS_PER_INDEX sit under a second index block.
    let level2 = COUNTS_PER_LEAF * PTRS_PER_INDEX;
    let extents = level2 + COUNTS_PER_LEAF + 7;
    let opts = FormatOptions {
        extent_size: 4096,
        metadata_copies: 1,
        ..Default::default()
    };
    let pages = extents + 16 * 1024;
    let dev = MemDevice::new(4096, pages).expect("device");
    let mut e = Engine::format(dev, &opts).expect("format");
    let have = e.geometry().data_extents;
    assert!(have > level2 + COUNTS_PER_LEAF, "{have} extents");
    let mut t = e.create_tree(8, ValueKind::Data).expect("tree");
    // Allocate up to just past the second index block's first leaf; keep a few.
    let last = level2 + COUNTS_PER_LEAF + 2;
    let keep = [0, COUNTS_PER_LEAF, level2 - 1, level2, level2 + 1, last];
    for x in 0..=last {
        let got = e.alloc_data().expect("extent");
        assert_eq!(got, x, "extents are handed out in order");
        if keep.contains(&x) {
            e.insert(&mut t, x, &x.to_le_bytes()).expect("insert");
        } else {
            e.dec_data(x).expect("free");
        }
    }
    e.set_root(0, Some(t)).expect("slot");
    e.commit().expect("commit");
    let mut e = Engine::open(e.into_device(), &OpenOptions::default()).expect("open");
    for x in [
        0,
        1,
        COUNTS_PER_LEAF - 1,
        COUNTS_PER_LEAF,
        level2 - 1,
        level2,
        level2 + 1,
    ] {
        let want = u32::from(keep.contains(&x));
        assert_eq!(e.data_refcount(x).expect("count"), want, "extent {x}");
    }
    assert_eq!(e.data_refcount(last).expect("count"), 1);
    assert_eq!(e.space().data_allocated, keep.len() as u64);
    assert_audit_clean(&mut e, "three levels");
    // Dropped later, a step at a time: the counts under the second index go too.
    let t = e.set_root(0, None).expect("slot").expect("tree");
    e.drop_tree_later(t).expect("queue");
    while e.reclaim_pending() {
        e.reclaim(2).expect("reclaim");
    }
    e.commit().expect("commit");
    assert_eq!(e.data_refcount(level2 + 1).expect("count"), 0);
    assert_eq!(e.space().data_allocated, 0);
    assert_audit_clean(&mut e, "freed");
}

#[test]
fn references_outside_the_areas_are_named_as_such_when_freed() {
    // A forged root just past the metadata area, dropped now or later.
    let mut e = engine();
    let g = e.geometry();
    let end = g.meta_start + g.meta_pages;
    let forged = Tree::from_parts(end, 8, ValueKind::Opaque).expect("tree");
    let outside = Error::Corrupt {
        addr: end,
        what: "pointer outside the metadata area",
    };
    assert_eq!(e.drop_tree(forged), Err(outside.clone()));
    let mut e = engine();
    e.drop_tree_later(forged)
        .expect("queued: nothing is read yet");
    assert_eq!(e.reclaim(1), Err(outside));
    // A Data value naming an extent past the pool, in a leaf that dies.
    let mut e = engine();
    let past = e.geometry().data_extents + 5;
    let mut t = e.create_tree(8, ValueKind::Data).expect("tree");
    e.insert(&mut t, 1, &past.to_le_bytes()).expect("insert");
    e.drop_tree_later(t).expect("queue");
    assert_eq!(
        e.reclaim(u64::MAX),
        Err(Error::Corrupt {
            addr: past,
            what: "data extent number outside the data area",
        })
    );
}

#[test]
fn a_reference_to_a_free_page_is_damage_not_a_count() {
    // A handle forged on a page no tree uses: cloning it would count a reference
    // to a free page, which the next allocation would hand out again.
    let mut e = engine();
    let g = e.geometry();
    let free = g.meta_start + g.meta_pages - 1;
    assert_eq!(e.meta_refcount(free).expect("count"), 0);
    let forged = Tree::from_parts(free, 8, ValueKind::Opaque).expect("tree");
    assert_eq!(
        e.clone_tree(&forged),
        Err(Error::Corrupt {
            addr: free,
            what: "reference to a free block",
        })
    );
}
