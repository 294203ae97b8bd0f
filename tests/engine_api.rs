//! Engine calls whose results the array relies on: root slots refuse foreign roots,
//! metadata and data reference counts (now and as committed).

use lunsnap::engine::{Engine, Tree, ValueKind};
use lunsnap::engine::{FormatOptions, OpenOptions};
use lunsnap::{Error, MemDevice};

fn engine() -> Engine<MemDevice> {
    let opts = FormatOptions {
        extent_size: 4096,
        metadata_pages: Some(64),
        ..Default::default()
    };
    Engine::format(MemDevice::new(512, 4096).expect("device"), &opts).expect("format")
}

#[test]
fn set_root_refuses_a_root_outside_the_metadata_area() {
    let mut e = engine();
    let g = e.geometry();
    let end = g.meta_start + g.meta_pages;
    for addr in [end, end + 1, 2 * end, g.data_start, u64::MAX] {
        let t = Tree::from_parts(addr, 8, ValueKind::Opaque).expect("tree");
        assert!(
            matches!(e.set_root(0, Some(t)), Err(Error::InvalidArgument(_))),
            "root at {addr}"
        );
    }
    assert_eq!(e.root(0).expect("slot"), None, "nothing stored");
    assert!(matches!(e.root(8), Err(Error::InvalidArgument(_))));
    // The last metadata page is inside.
    let t = Tree::from_parts(end - 1, 8, ValueKind::Opaque).expect("tree");
    assert_eq!(e.set_root(0, Some(t)).expect("inside"), None);
    assert_eq!(e.set_root(0, None).expect("back"), Some(t));
}

#[test]
fn metadata_reference_counts_follow_clones_and_drops() {
    let mut e = engine();
    let mut t = e.create_tree(8, ValueKind::Opaque).expect("tree");
    e.insert(&mut t, 1, &[1; 8]).expect("insert");
    let root = t.root();
    assert_eq!(e.meta_refcount(root).expect("count"), 1);
    let c = e.clone_tree(&t).expect("clone");
    assert_eq!(e.meta_refcount(root).expect("count"), 2);
    e.drop_tree(c).expect("drop");
    assert_eq!(e.meta_refcount(root).expect("count"), 1);
    let g = e.geometry();
    assert!(matches!(
        e.meta_refcount(g.meta_start + g.meta_pages),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn data_reference_counts_now_and_as_committed() {
    let mut e = engine();
    let x = e.alloc_data().expect("extent");
    assert_eq!(e.data_refcounts(x).expect("counts"), (1, 0));
    let mut t = e.create_tree(8, ValueKind::Data).expect("tree");
    e.insert(&mut t, 0, &x.to_le_bytes()).expect("insert");
    e.set_root(0, Some(t)).expect("root");
    e.commit().expect("commit");
    assert_eq!(e.data_refcounts(x).expect("counts"), (1, 1));
    e.inc_data(x).expect("inc");
    assert_eq!(e.data_refcounts(x).expect("counts"), (2, 1));
    e.dec_data(x).expect("dec");
    e.dec_data(x).expect("dec");
    assert_eq!(e.data_refcounts(x).expect("counts"), (0, 1));
    assert_eq!(e.data_refcount(x).expect("count"), 0);
    let mut e = Engine::open(e.into_device(), &OpenOptions::default()).expect("reopen");
    assert_eq!(
        e.data_refcounts(x).expect("counts"),
        (1, 1),
        "the commit holds"
    );
    // Extents beyond the pool are refused, changing nothing.
    let past = e.space().data_extents;
    for x in [past, past + 1, u64::MAX] {
        assert!(
            matches!(e.data_refcounts(x), Err(Error::InvalidArgument(_))),
            "{x}"
        );
        assert!(
            matches!(e.data_refcount(x), Err(Error::InvalidArgument(_))),
            "{x}"
        );
        assert!(
            matches!(e.inc_data(x), Err(Error::InvalidArgument(_))),
            "{x}"
        );
        assert!(
            matches!(e.dec_data(x), Err(Error::InvalidArgument(_))),
            "{x}"
        );
        assert!(
            matches!(e.extent_lba(x), Err(Error::InvalidArgument(_))),
            "{x}"
        );
    }
    assert!(!e.is_poisoned());
    assert_eq!(e.audit(), vec![]);
}

#[test]
fn value_sizes_follow_the_value_kind() {
    // (kind, sizes accepted, sizes refused)
    let cases: [(ValueKind, &[usize], &[usize]); 5] = [
        (ValueKind::Opaque, &[1, 7, 256], &[0, 257]),
        (ValueKind::Data, &[4, 5, 256], &[0, 3, 257]),
        (ValueKind::Tree, &[8, 9, 256], &[0, 7, 257]),
        (ValueKind::Extents, &[4, 8, 256], &[0, 2, 6, 10, 257, 260]),
        (ValueKind::Child, &[], &[8, 16]),
    ];
    for (kind, good, bad) in cases {
        for &vs in good {
            let t = Tree::empty(vs, kind).unwrap_or_else(|e| panic!("{kind:?} of {vs}: {e}"));
            assert_eq!((t.root(), t.value_size()), (0, vs));
        }
        for &vs in bad {
            assert!(
                matches!(Tree::empty(vs, kind), Err(Error::InvalidArgument(_))),
                "{kind:?} values of {vs} bytes accepted"
            );
        }
    }
}

/// Node splits leave room where later keys will go: appends at the end of the tree
/// keep the left node full, a split anywhere else halves the node, so keys added
/// below it afterwards fit without another split.
#[test]
fn a_split_inside_the_tree_halves_the_node() {
    let mut e = engine();
    let mut t = e.create_tree(8, ValueKind::Opaque).expect("tree");
    let nodes = |e: &Engine<MemDevice>| e.space().meta_allocated;
    // Ascending appends until the first split (a new leaf and a new root): the leaf
    // held `cap` keys, of which the left keeps all but the last.
    let mut k = 1000u64;
    e.insert(&mut t, k, &k.to_le_bytes()).expect("first");
    let cap = loop {
        let before = nodes(&e);
        k += 1000;
        e.insert(&mut t, k, &k.to_le_bytes()).expect("insert");
        if nodes(&e) == before + 2 {
            break k / 1000 - 1;
        }
        assert!(k < 10_000_000, "no split");
    };
    assert!(cap >= 8, "leaves of {cap} keys");
    // The left leaf has one slot free: fill it with a key past its last one, then
    // add another there. The leaf is not the tree's last, so it splits in half.
    let last_left = (cap - 1) * 1000;
    e.insert(&mut t, last_left + 1, &[1; 8]).expect("fill");
    let before = nodes(&e);
    e.insert(&mut t, last_left + 2, &[2; 8]).expect("split");
    assert_eq!(
        nodes(&e),
        before + 1,
        "inserting into a full leaf splits it"
    );
    // Half a leaf's worth of keys below it fits in the left half.
    let before = nodes(&e);
    for key in 0..cap / 2 - 2 {
        e.insert(&mut t, key, &key.to_le_bytes()).expect("below");
    }
    assert_eq!(
        nodes(&e),
        before,
        "the split kept the left leaf full: keys below it split it again"
    );
    for key in (0..cap / 2 - 2).chain([last_left + 1, last_left + 2]) {
        let mut v = [0u8; 8];
        assert!(e.lookup(&t, key, &mut v).expect("lookup"), "key {key}");
    }
}

/// A tree of `leaves` leaves of 8-byte values filled by ascending appends (keys
/// 0, 10, 20, ...), committed; returns it and the number of keys.
fn ascending_tree(e: &mut Engine<MemDevice>, leaves: u64) -> (Tree, u64) {
    let mut t = e.create_tree(8, ValueKind::Opaque).expect("tree");
    e.insert(&mut t, 0, &[0; 8]).expect("first");
    let (mut n, mut splits) = (1u64, 0);
    while splits < leaves - 1 || n % 16 != 0 {
        let before = e.space().meta_allocated;
        e.insert(&mut t, n * 10, &n.to_le_bytes()).expect("insert");
        splits += (e.space().meta_allocated > before) as u64;
        n += 1;
    }
    e.set_root(0, Some(t)).expect("root");
    e.commit().expect("commit");
    (t, n)
}

/// Removals leave leaves at least about a third full: thin ones are merged.
#[test]
fn removals_merge_thin_leaves() {
    let mut e = engine();
    let (mut t, n) = ascending_tree(&mut e, 6);
    let before = e.space().meta_allocated;
    for k in (0..n).filter(|k| k % 10 != 0) {
        assert!(e.remove(&mut t, k * 10).expect("remove"), "key {}", k * 10);
    }
    e.set_root(0, Some(t)).expect("root");
    e.commit().expect("commit");
    let after = e.space().meta_allocated;
    // Six leaves (and a root) of which a tenth of the keys are left: two leaves'
    // worth at most, and the root.
    assert!(
        after + 3 <= before,
        "{before} metadata pages before, {after} after"
    );
    for k in 0..n {
        let mut v = [0u8; 8];
        assert_eq!(e.lookup(&t, k * 10, &mut v).expect("lookup"), k % 10 == 0);
    }
}

/// A removal from a leaf well above a third full touches its own path only, not
/// its siblings.
#[test]
fn a_removal_from_a_healthy_leaf_touches_only_its_path() {
    let mut e = engine();
    let (mut t, n) = ascending_tree(&mut e, 6);
    // The first removal after the commit shadows the root, a leaf and the space
    // maps; a second one in another leaf shadows that leaf alone.
    // (Each page shadowed releases its old copy until the commit: pinned.)
    assert!(e.remove(&mut t, 10).expect("remove"));
    let before = e.space().meta_pinned;
    let mid = n / 2 * 10;
    assert!(e.remove(&mut t, mid).expect("remove"));
    assert_eq!(
        e.space().meta_pinned,
        before + 1,
        "a sibling was rewritten too"
    );
}

/// A tree of two leaves made by ascending appends of 8-byte values (keys 0, 10,
/// 20, ...): the left holds `cap - 1` keys (`cap` is a leaf's capacity), the right
/// two. Returns the tree, uncommitted, and `cap`.
fn two_leaves(e: &mut Engine<MemDevice>) -> (Tree, u64) {
    let mut t = e.create_tree(8, ValueKind::Opaque).expect("tree");
    e.insert(&mut t, 0, &[0; 8]).expect("first");
    let mut n = 1u64;
    loop {
        let before = e.space().meta_allocated;
        e.insert(&mut t, n * 10, &n.to_le_bytes()).expect("insert");
        n += 1;
        if e.space().meta_allocated > before {
            return (t, n - 1);
        }
    }
}

/// The rebalancing threshold is "below a third of a leaf": a removal from a leaf
/// below it evens the leaf out with its sibling, one from a leaf at it does not.
#[test]
fn leaves_below_a_third_full_are_rebalanced() {
    let mut e = engine();
    let (mut warm, _) = two_leaves(&mut e);
    let (mut t, cap) = two_leaves(&mut e);
    let (mut u, _) = two_leaves(&mut e);
    e.set_root(0, Some(warm)).expect("root");
    e.set_root(1, Some(t)).expect("root");
    e.set_root(2, Some(u)).expect("root");
    e.commit().expect("commit");
    // Shadow the space maps once, so that what follows counts tree nodes only.
    assert!(e.remove(&mut warm, 0).expect("remove"));
    // The right leaf of `t` has 2 keys: removing one rewrites the root, the leaf
    // and its sibling (evened out).
    let before = e.space().meta_pinned;
    assert!(e.remove(&mut t, cap * 10).expect("remove"));
    assert_eq!(
        e.space().meta_pinned,
        before + 3,
        "the thin leaf was not rebalanced"
    );
    // The left leaf of `u`, brought down to a third: no rebalancing on the way, nor
    // at a third exactly.
    let third = cap / 3;
    let before = e.space().meta_pinned;
    for k in third..cap - 1 {
        assert!(e.remove(&mut u, k * 10).expect("remove"));
    }
    assert_eq!(e.space().meta_pinned, before + 2, "root and left leaf only");
    assert!(e.remove(&mut u, 0).expect("remove"));
    assert_eq!(
        e.space().meta_pinned,
        before + 2,
        "a leaf a third full was rebalanced"
    );
    for (tree, gone) in [(&t, vec![cap]), (&u, (third..cap - 1).chain([0]).collect())] {
        for k in 0..=cap {
            let mut v = [0u8; 8];
            let there = e.lookup(tree, k * 10, &mut v).expect("lookup");
            assert_eq!(there, !gone.contains(&k), "key {}", k * 10);
        }
    }
}

/// Two neighbours that fit in one leaf are merged into it (the tree shrinks to one
/// leaf), not evened out.
#[test]
fn neighbours_that_fit_in_one_leaf_merge() {
    let mut e = engine();
    let (mut t, cap) = two_leaves(&mut e);
    let third = cap / 3;
    // The right leaf grows to a third and one; the left shrinks to a third less one.
    for k in cap + 1..cap + third {
        e.insert(&mut t, k * 10, &k.to_le_bytes()).expect("append");
    }
    for k in third - 1..cap - 1 {
        assert!(e.remove(&mut t, k * 10).expect("remove"));
    }
    let before = e.space().meta_allocated;
    assert!(e.remove(&mut t, 0).expect("remove"));
    // The merged leaf replaces both, and the root with one child collapses.
    assert_eq!(
        e.space().meta_allocated,
        before - 2,
        "the leaves were not merged"
    );
    let mut n = 0;
    e.range(&t, 0, u64::MAX, |_, _| {
        n += 1;
        true
    })
    .expect("range");
    assert_eq!(n, (third - 2) + (third + 1), "keys left");
}

/// A diff compares two trees of one value shape: another size or another kind is
/// refused.
#[test]
fn diff_needs_trees_of_one_value_shape() {
    let mut e = engine();
    let mut a = e.create_tree(8, ValueKind::Opaque).expect("tree");
    e.insert(&mut a, 1, &[1; 8]).expect("insert");
    let shapes = [
        (8, ValueKind::Tree),
        (16, ValueKind::Opaque),
        (4, ValueKind::Opaque),
    ];
    for (vs, kind) in shapes {
        let b = e.create_tree(vs, kind).expect("tree");
        let r = e.diff(&a, &b, 0, u64::MAX, |_, _, _| panic!("compared"));
        assert!(
            matches!(r, Err(Error::InvalidArgument(_))),
            "{vs}-byte {kind:?} values: {r:?}"
        );
    }
    let b = e.create_tree(8, ValueKind::Opaque).expect("tree");
    let mut n = 0;
    e.diff(&a, &b, 0, u64::MAX, |_, _, _| n += 1)
        .expect("same shape");
    assert_eq!(n, 1);
}

/// Metadata pages the engine has read so far (from its cache or the device).
fn page_reads(e: &Engine<MemDevice>) -> u64 {
    let s = e.cache_stats();
    s.hits + s.misses
}

/// Keys in a [`dense_tree`].
const DENSE: u64 = 2000;

/// A tree of keys `0..DENSE` (two levels of 8-byte values), key `k` holding `k +
/// add`.
fn dense_tree(e: &mut Engine<MemDevice>, add: u64) -> Tree {
    keyed_tree(e, DENSE, add)
}

/// A tree of 8-byte values, keys `0..n`, key `k` holding `k + add`.
fn keyed_tree(e: &mut Engine<MemDevice>, n: u64, add: u64) -> Tree {
    let mut t = e.create_tree(8, ValueKind::Opaque).expect("tree");
    for k in 0..n {
        e.insert(&mut t, k, &(k + add).to_le_bytes())
            .expect("insert");
    }
    t
}

/// `range_shared` of one key reads that key's path and nothing else, whichever
/// leaf it is in and wherever in the leaf (first, last, between).
#[test]
fn range_shared_of_one_key_reads_its_path_only() {
    let mut e = engine();
    let t = dense_tree(&mut e, 0);
    for k in 0..DENSE {
        let before = page_reads(&e);
        let mut got = Vec::new();
        e.range_shared(&t, k, k, |key, v, _| got.push((key, v.to_vec())))
            .expect("range_shared");
        assert_eq!(
            got,
            [(k, k.to_le_bytes().to_vec())],
            "range_shared({k}, {k})"
        );
        // Each node on the path, and the space-map page that counts its references.
        let n = page_reads(&e) - before;
        assert!(
            n <= 4,
            "range_shared({k}, {k}) read {n} pages of a two-level tree"
        );
    }
}

/// `diff` of one key of two trees that share nothing reads the key's path in each
/// and nothing else.
#[test]
fn diff_of_one_key_reads_its_paths_only() {
    let mut e = engine();
    let (a, b) = (dense_tree(&mut e, 0), dense_tree(&mut e, 1));
    for k in 0..DENSE {
        let before = page_reads(&e);
        let mut got = Vec::new();
        e.diff(&a, &b, k, k, |key, _, _| got.push(key))
            .expect("diff");
        assert_eq!(got, [k], "diff({k}, {k})");
        let n = page_reads(&e) - before;
        assert!(
            n <= 4,
            "diff({k}, {k}) read {n} nodes of two two-level trees"
        );
    }
}

/// `diff` of a tree and its clone after the clone grew a level (its root split)
/// pairs the nodes they still share and skips them: it reads a few nodes, not the
/// hundreds of leaves they share.
#[test]
fn diff_across_a_grown_level_skips_what_is_shared() {
    let opts = FormatOptions {
        extent_size: 4096,
        metadata_pages: Some(1024),
        ..Default::default()
    };
    let dev = MemDevice::new(4096, 4096).expect("device");
    let mut e = Engine::format(dev, &opts).expect("format");
    let value = [1u8; 256];
    // How many ascending appends of 256-byte values a two-level tree takes before
    // its root splits (one insert then allocates an interior node and a new root
    // at once; the first leaf split, a leaf and a root, comes at 16 keys).
    let mut scratch = e.create_tree(256, ValueKind::Opaque).expect("tree");
    let mut keys = 0u64;
    loop {
        let before = e.space().meta_allocated;
        e.insert(&mut scratch, keys, &value).expect("insert");
        if e.space().meta_allocated >= before + 2 && keys > 16 {
            break;
        }
        keys += 1;
    }
    e.drop_tree(scratch).expect("drop");
    assert!(keys > 1000, "the root split after {keys} keys");
    // The tree just before that split, committed, and a clone that splits it.
    let mut a = e.create_tree(256, ValueKind::Opaque).expect("tree");
    for k in 0..keys {
        e.insert(&mut a, k, &value).expect("insert");
    }
    e.set_root(0, Some(a)).expect("root");
    e.commit().expect("commit");
    let mut b = e.clone_tree(&a).expect("clone");
    e.insert(&mut b, keys, &[2; 256]).expect("the split");
    assert_ne!(a.root(), b.root());
    let before = page_reads(&e);
    let mut got = Vec::new();
    e.diff(&a, &b, 0, u64::MAX, |k, _, _| got.push(k))
        .expect("diff");
    assert_eq!(got, [keys]);
    let reads = page_reads(&e) - before;
    assert!(
        reads <= 16,
        "diff read {reads} nodes of trees sharing all leaves but one"
    );
}

/// The cache's counters: pages written by a commit (both copies of each, and of
/// the superblock), pages held, never more than it may hold.
#[test]
fn cache_counters_follow_commits_and_reads() {
    let mut e = engine();
    let t = dense_tree(&mut e, 0);
    e.set_root(0, Some(t)).expect("root");
    let before = e.cache_stats();
    e.commit().expect("commit");
    let after = e.cache_stats();
    // Nine nodes at least (a root and eight leaves), each in two copies, and the
    // superblock's two.
    assert!(
        after.writes >= before.writes + 2 * 9 + 2,
        "a commit wrote {} pages",
        after.writes - before.writes
    );
    // A commit that changes the superblock alone writes its two copies.
    let w = e.cache_stats().writes;
    e.set_client_bytes(&[7; lunsnap::engine::CLIENT_BYTES])
        .expect("client bytes");
    e.commit().expect("commit");
    assert_eq!(e.cache_stats().writes - w, 2, "pages written");
    let dev = e.into_device();
    let opts = OpenOptions {
        cache_bytes: 16 * 4096,
        ..Default::default()
    };
    let mut e = Engine::open(dev, &opts).expect("open");
    let t = e.root(0).expect("slot").expect("tree");
    assert_eq!(e.cache_stats().capacity, 16);
    let walk = |e: &mut Engine<MemDevice>| {
        let mut n = 0;
        e.range(&t, 0, u64::MAX, |_, _| {
            n += 1;
            true
        })
        .expect("range");
        assert_eq!(n, DENSE);
    };
    // The tree's nine nodes fit: a second walk reads them all from the cache.
    let s0 = e.cache_stats();
    walk(&mut e);
    let s1 = e.cache_stats();
    assert!(s1.resident >= 9, "{} pages resident", s1.resident);
    assert!(s1.misses - s0.misses >= 9, "the first walk read the device");
    walk(&mut e);
    let s2 = e.cache_stats();
    let first = (s1.hits + s1.misses) - (s0.hits + s0.misses);
    assert_eq!(
        (s2.hits - s1.hits, s2.misses),
        (first, s1.misses),
        "the second walk"
    );
    // A tree of 30 nodes: the cache holds 16 pages at the most.
    keyed_tree(&mut e, 7000, 0);
    let s = e.cache_stats();
    assert_eq!(s.resident, s.capacity, "pages resident");
}
