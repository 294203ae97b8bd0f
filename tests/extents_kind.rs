//! `ValueKind::Extents`: one B-tree value holding several extent references
//! (the packed LUN mapping). Shadowing a shared leaf must add one reference per
//! non-hole slot, and dropping the last tree must free every extent.

mod common;

use common::assert_audit_clean;
use lunsnap::engine::FormatOptions;
use lunsnap::engine::{Engine, ValueKind};
use lunsnap::{Error, MemDevice};

const SLOTS: usize = 16;

fn fresh() -> Engine<MemDevice> {
    let dev = MemDevice::new(4096, 1 << 14).unwrap();
    let opts = FormatOptions {
        extent_size: 4096,
        ..Default::default()
    };
    Engine::format(dev, &opts).unwrap()
}

fn pack(slots: &[u32; SLOTS]) -> [u8; SLOTS * 4] {
    let mut v = [0u8; SLOTS * 4];
    for (i, s) in slots.iter().enumerate() {
        v[4 * i..4 * i + 4].copy_from_slice(&s.to_le_bytes());
    }
    v
}

#[test]
fn packed_values_count_each_slot_and_free_on_drop() {
    let mut e = fresh();
    let mut t = e.create_tree(SLOTS * 4, ValueKind::Extents).unwrap();
    let mut all = Vec::new();
    // 600 entries, every third slot a hole: enough for several leaves.
    for key in 0..600u64 {
        let mut slots = [0u32; SLOTS];
        for (i, s) in slots.iter_mut().enumerate() {
            if (key as usize + i) % 3 != 0 {
                let x = e.alloc_data().unwrap();
                all.push(x);
                *s = u32::try_from(x + 1).unwrap();
            }
        }
        e.insert(&mut t, key, &pack(&slots)).unwrap();
    }
    e.set_root(0, Some(t)).unwrap();
    assert_audit_clean(&mut e, "");
    e.commit().unwrap();
    for &x in &all {
        assert_eq!(e.data_refcount(x).unwrap(), 1);
    }

    // A clone shares every leaf; changing one entry of the clone shadows one leaf,
    // which gives every extent in that leaf a second reference.
    let mut c = e.clone_tree(&t).unwrap();
    let first = all[0];
    e.insert(&mut c, 0, &pack(&[0; SLOTS])).unwrap();
    e.set_root(1, Some(c)).unwrap();
    assert_audit_clean(&mut e, "");
    assert_eq!(
        e.data_refcount(first).unwrap(),
        1,
        "only the original holds it"
    );
    let shared = all
        .iter()
        .filter(|&&x| e.data_refcount(x).unwrap() == 2)
        .count();
    assert!(
        shared > 0 && shared < all.len(),
        "{shared} of {}",
        all.len()
    );

    // Dropping the original leaves the clone whole; dropping it too frees everything.
    let t = e.set_root(0, None).unwrap().unwrap();
    e.drop_tree(t).unwrap();
    assert_audit_clean(&mut e, "");
    // Key 0's old value held the first ten extents; only the original had them.
    assert!(all[..10].iter().all(|&x| e.data_refcount(x).unwrap() == 0));
    assert!(all[10..].iter().all(|&x| e.data_refcount(x).unwrap() == 1));
    let c = e.set_root(1, None).unwrap().unwrap();
    e.drop_tree(c).unwrap();
    assert_audit_clean(&mut e, "");
    assert_eq!(e.space().data_allocated, 0);
}

#[test]
fn extents_value_size_must_be_a_multiple_of_four() {
    let e = fresh();
    for vs in [0, 3, 5, 258] {
        assert!(matches!(
            e.create_tree(vs, ValueKind::Extents),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(e.create_tree(4, ValueKind::Extents).is_ok());
}

/// Replacing values must not split full nodes (a replace adds no entry): a tree
/// whose every key was written twice in a row is as small as one written once.
#[test]
fn replacing_values_does_not_split_full_nodes() {
    let mut e = fresh();
    let mut trees = Vec::new();
    for twice in [false, true] {
        let before = e.space().meta_allocated;
        let mut t = e.create_tree(64, ValueKind::Opaque).unwrap();
        for k in 0..5600 {
            e.insert(&mut t, k, &[7u8; 64]).unwrap();
            if twice {
                e.insert(&mut t, k, &[8u8; 64]).unwrap();
            }
        }
        trees.push(e.space().meta_allocated - before);
        e.set_root(usize::from(twice), Some(t)).unwrap();
        let mut out = [0u8; 64];
        assert!(e.lookup(&t, 5599, &mut out).unwrap());
        assert_eq!(out, [if twice { 8 } else { 7 }; 64]);
    }
    assert_audit_clean(&mut e, "");
    // (A block or two of space-map growth may fall on either side.)
    assert!(
        trees[1] <= trees[0] + 2,
        "nodes used: written once {}, twice {}",
        trees[0],
        trees[1]
    );
}
