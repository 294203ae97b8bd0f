//! `Array::check` reports each kind of damage to the array's own metadata that
//! `Array::open` lets through (the engine's audit is tested in tests/corruption.rs):
//! images are changed through the engine, with valid checksums and reference counts,
//! so that only the array's invariants are broken.

use lunsnap::engine::OpenOptions as EngineOpen;
use lunsnap::engine::{Engine, Tree, ValueKind};
use lunsnap::{Access, Array, ArrayViolation, Error, FormatOptions, MemDevice, OpenOptions};

const ES: u64 = 4096;

/// LUN 0 of 20 extents (written), LUN 1 of one extent, copy 2 of LUN 0, host 7
/// with a grant on LUN 1; committed.
fn image() -> MemDevice {
    let opts = FormatOptions {
        extent_size: ES as u32,
        max_luns: 8,
        ..Default::default()
    };
    let mut a = Array::format(MemDevice::new(512, 16384).unwrap(), &opts).unwrap();
    a.create_lun(0, 20 * ES).unwrap();
    a.write(0, 0, &vec![1; 20 * ES as usize]).unwrap();
    a.create_lun(1, ES).unwrap();
    a.write(1, 0, &[2; 512]).unwrap();
    a.create_copy(0, 2, true).unwrap();
    a.add_host(7, "h").unwrap();
    a.grant(1, 7, Access::Read).unwrap();
    assert_eq!(a.check().unwrap(), vec![]);
    a.close().unwrap()
}

/// Changes LUN `n`'s table record and mapping through the engine: `f` gets the
/// engine, the mapping (which it may change) and the 64-byte record.
fn edit(
    dev: MemDevice,
    n: u32,
    f: impl FnOnce(&mut Engine<MemDevice>, &mut Tree, &mut [u8; 64]),
) -> Array<MemDevice> {
    edit_raw(dev, n, f).expect("open lets it through")
}

/// [`edit`], returning what `Array::open` makes of the result.
fn edit_raw(
    dev: MemDevice,
    n: u32,
    f: impl FnOnce(&mut Engine<MemDevice>, &mut Tree, &mut [u8; 64]),
) -> Result<Array<MemDevice>, Error> {
    let mut e = Engine::open(dev, &EngineOpen::default()).unwrap();
    let mut table = e.root(0).unwrap().unwrap();
    let mut rec = [0u8; 64];
    assert!(e.lookup(&table, u64::from(n), &mut rec).unwrap());
    let root = u64::from_le_bytes(rec[..8].try_into().unwrap());
    let mut mapping = Tree::from_parts(root, 64, ValueKind::Extents).unwrap();
    f(&mut e, &mut mapping, &mut rec);
    rec[..8].copy_from_slice(&mapping.root().to_le_bytes());
    e.replace_owned(&mut table, u64::from(n), &rec).unwrap();
    e.set_root(0, Some(table)).unwrap();
    e.commit().unwrap();
    assert_eq!(e.audit(), vec![], "the engine's invariants hold");
    Array::open(e.into_device(), &OpenOptions::default())
}

/// A mapping value: slot `i` maps extent `x` (stored as x + 1).
fn slots(pairs: &[(usize, u64)]) -> [u8; 64] {
    let mut v = [0u8; 64];
    for &(i, x) in pairs {
        v[4 * i..4 * i + 4].copy_from_slice(&(x as u32 + 1).to_le_bytes());
    }
    v
}

fn check(a: &mut Array<MemDevice>) -> Vec<ArrayViolation> {
    let v = a.check().unwrap();
    for x in &v {
        assert!(!x.to_string().is_empty());
    }
    v
}

#[test]
fn a_mapping_beyond_the_lun_size_is_reported() {
    // LUN 1 is one extent long; map logical extents 1 and 17 too.
    let mut a = edit(image(), 1, |e, m, _| {
        let (x, y) = (e.alloc_data().unwrap(), e.alloc_data().unwrap());
        let mut v = [0u8; 64];
        e.lookup(m, 0, &mut v).unwrap();
        let mut first = v;
        first[4..8].copy_from_slice(&(x as u32 + 1).to_le_bytes());
        e.replace_owned(m, 0, &first).unwrap();
        e.insert(m, 1, &slots(&[(1, y)])).unwrap();
    });
    let v = check(&mut a);
    assert!(
        v.contains(&ArrayViolation::MappingBeyondSize {
            lun: 1,
            logical_extent: 1
        }),
        "{v:?}"
    );
    assert!(
        v.contains(&ArrayViolation::MappingBeyondSize {
            lun: 1,
            logical_extent: 17
        }),
        "{v:?}"
    );
    assert_eq!(v.len(), 2, "{v:?}");
    // The last extent of a 20-extent LUN (key 1, slot 3) is within it.
    let mut a = edit(image(), 0, |e, m, _| {
        let mut v = [0u8; 64];
        assert!(e.lookup(m, 1, &mut v).unwrap());
        assert_ne!(v[12..16], [0; 4], "extent 19 is mapped");
    });
    assert_eq!(check(&mut a), vec![]);
}

#[test]
fn an_all_hole_mapping_entry_is_reported() {
    let mut a = edit(image(), 0, |e, m, _| {
        e.insert(m, 2, &[0; 64]).unwrap();
    });
    assert_eq!(
        check(&mut a),
        vec![ArrayViolation::EmptyMappingEntry { lun: 0, key: 2 }]
    );
}

#[test]
fn a_grant_to_an_unregistered_host_index_is_reported() {
    for (offset, index) in [(40, 5u32), (48, 63), (40, 0)] {
        let mut a = edit(image(), 0, |_, _, rec| {
            let mut bits = u64::from_le_bytes(rec[offset..offset + 8].try_into().unwrap());
            bits |= 1 << index;
            if offset == 48 {
                // A write grant comes with a read grant.
                let r = u64::from_le_bytes(rec[40..48].try_into().unwrap()) | 1 << index;
                rec[40..48].copy_from_slice(&r.to_le_bytes());
            }
            rec[offset..offset + 8].copy_from_slice(&bits.to_le_bytes());
        });
        let v = check(&mut a);
        if index == 0 {
            // Host 7 holds index 0: a valid grant.
            assert_eq!(v, vec![], "{v:?}");
        } else {
            assert_eq!(
                v,
                vec![ArrayViolation::DanglingGrant {
                    lun: 0,
                    host_index: index
                }],
                "offset {offset}"
            );
        }
    }
}

#[test]
fn reservations_beyond_the_pool_are_reported() {
    // LUN 0 claims the whole capacity, LUN 1 and copy 2 still reserve theirs.
    let dev = image();
    let cap = Array::open(dev.clone(), &OpenOptions::default())
        .unwrap()
        .pool_info()
        .capacity_bytes;
    let mut a = edit(dev, 0, |_, _, rec| {
        rec[8..16].copy_from_slice(&cap.to_le_bytes());
    });
    let v = check(&mut a);
    assert!(
        v.iter().any(
            |x| matches!(x, ArrayViolation::OverReserved { capacity, reserved }
            if *capacity == cap / ES && *reserved == cap / ES + 1 + 20)
        ),
        "{v:?}"
    );
}

#[test]
fn the_report_of_one_mapping_is_bounded() {
    // LUN 1 (one extent) maps 5 more entries of 16 extents each: 80 violations,
    // reported up to the first 64.
    let mut a = edit(image(), 1, |e, m, _| {
        for k in 1..=5 {
            let all: Vec<(usize, u64)> = (0..16).map(|i| (i, e.alloc_data().unwrap())).collect();
            e.insert(m, k, &slots(&all)).unwrap();
        }
    });
    let v = check(&mut a);
    assert_eq!(v.len(), 64, "{v:?}");
    assert!(v
        .iter()
        .all(|x| matches!(x, ArrayViolation::MappingBeyondSize { lun: 1, .. })));
}

/// Sets bytes of a LUN record.
fn put(rec: &mut [u8; 64], at: usize, bytes: &[u8]) {
    rec[at..at + bytes.len()].copy_from_slice(bytes);
}

#[test]
fn open_refuses_each_invalid_field_of_a_lun_record_alone() {
    type Patch = fn(&mut [u8; 64]);
    // (LUN, what is changed, the error open must give)
    let cases: [(u32, Patch, &str); 15] = [
        (0, |r| r[16] = 2, "LUN record has an unknown kind"),
        (0, |r| r[17] |= 8, "LUN record has unknown flags"),
        (0, |r| r[17] |= 0x80, "LUN record has unknown flags"),
        (0, |r| r[18] = 1, "LUN record has unknown flags"),
        (0, |r| r[19] = 1, "LUN record has unknown flags"),
        (0, |r| r[56] = 1, "LUN record has non-zero reserved bytes"),
        (0, |r| r[63] = 1, "LUN record has non-zero reserved bytes"),
        (
            0,
            |r| put(r, 48, &1u64.to_le_bytes()),
            "LUN record grants writing without reading",
        ),
        (
            0,
            |r| put(r, 8, &0u64.to_le_bytes()),
            "LUN record has an invalid size",
        ),
        (
            0,
            |r| put(r, 8, &1000u64.to_le_bytes()),
            "LUN record has an invalid size",
        ),
        (
            0,
            |r| r[17] &= !1,
            "plain LUN record marked detached or with a parent",
        ),
        (
            0,
            |r| r[17] |= 2,
            "plain LUN record marked detached or with a parent",
        ),
        (2, |r| r[17] &= !1, "detached copy record holds a mapping"),
        (
            2,
            |r| put(r, 20, &8u32.to_le_bytes()),
            "LUN record names an impossible parent",
        ),
        (
            2,
            |r| put(r, 20, &2u32.to_le_bytes()),
            "LUN record names an impossible parent",
        ),
    ];
    for (i, (lun, patch, want)) in cases.into_iter().enumerate() {
        match edit_raw(image(), lun, |_, _, rec| patch(rec)) {
            Err(Error::Corrupt { what, .. }) if what == want => {}
            r => panic!(
                "case {i}: {:?}, expected {want}",
                r.map(|a| a.lun_numbers())
            ),
        }
    }
    // What stays valid: an offline LUN, another size, a copy without a parent (an
    // orphan).
    let ok: [(u32, Patch); 3] = [
        (0, |r| r[17] |= 4),
        (1, |r| put(r, 8, &4096u64.to_le_bytes())),
        (2, |r| r[17] &= !2),
    ];
    for (i, (lun, patch)) in ok.into_iter().enumerate() {
        edit_raw(image(), lun, |_, _, rec| patch(rec))
            .unwrap_or_else(|e| panic!("valid case {i}: {e}"));
    }
}

#[test]
fn a_copy_of_another_size_than_its_parent_is_reported() {
    // Copy 2 of LUN 0 (20 extents) claims 19: restore would give LUN 0 a mapping
    // of the wrong size.
    let mut a = edit(image(), 2, |_, _, rec| {
        rec[8..16].copy_from_slice(&(19 * ES).to_le_bytes());
    });
    let v = check(&mut a);
    assert!(
        v.contains(&ArrayViolation::CopySizeMismatch {
            lun: 2,
            size: 19 * ES,
            parent: 0,
            parent_size: 20 * ES,
        }),
        "{v:?}"
    );
}
