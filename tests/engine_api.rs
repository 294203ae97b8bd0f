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
