use lunsnap::engine::{Engine, ValueKind};
use lunsnap::engine::{FormatOptions, OpenOptions};
use lunsnap::MemDevice;

fn fresh(cache: usize) -> Engine<MemDevice> {
    let dev = MemDevice::new(4096, 1 << 16).unwrap();
    Engine::format(
        dev,
        &FormatOptions {
            cache_bytes: cache,
            extent_size: 4096,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn insert_lookup_remove_many() {
    let mut e = fresh(64 * 4096);
    let mut t = e.create_tree(8, ValueKind::Opaque).unwrap();
    let n = 20_000u64;
    for i in 0..n {
        let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
        e.insert(&mut t, k, &i.to_le_bytes()).unwrap();
    }
    e.set_root(0, Some(t)).unwrap();
    assert!(
        e.audit().is_empty(),
        "{:?}",
        &e.audit()[..3.min(e.audit().len())]
    );
    e.commit().unwrap();
    let mut out = [0u8; 8];
    for i in 0..n {
        let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
        assert!(e.lookup(&t, k, &mut out).unwrap());
        assert_eq!(u64::from_le_bytes(out), i);
    }
    let c = e.clone_tree(&t).unwrap();
    e.set_root(1, Some(c)).unwrap();
    for i in 0..n / 2 {
        let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
        assert!(e.remove(&mut t, k).unwrap());
    }
    e.set_root(0, Some(t)).unwrap();
    let v = e.audit();
    assert!(v.is_empty(), "{:?}", &v[..3.min(v.len())]);
    let mut count = 0;
    e.range(&t, 0, u64::MAX, |_, _| {
        count += 1;
        true
    })
    .unwrap();
    assert_eq!(count, n / 2);
    let mut count = 0;
    e.range(&c, 0, u64::MAX, |_, _| {
        count += 1;
        true
    })
    .unwrap();
    assert_eq!(count, n);
    e.commit().unwrap();
    let dev = e.into_device();
    let mut e = Engine::open(
        dev,
        &OpenOptions {
            cache_bytes: 64 * 4096,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert!(e.audit().is_empty());
    let t = e.set_root(0, None).unwrap().unwrap();
    let c = e.set_root(1, None).unwrap().unwrap();
    e.drop_tree(t).unwrap();
    e.drop_tree(c).unwrap();
    let v = e.audit();
    assert!(v.is_empty(), "{:?}", &v[..3.min(v.len())]);
    e.commit().unwrap();
    let s = e.space();
    assert_eq!(
        s.meta_allocated, 1,
        "only the metadata map leaf itself remains: {s:?}"
    );
    assert_eq!(s.data_allocated, 0);
}

#[test]
fn data_refs_shared_and_freed() {
    let mut e = fresh(32 * 4096);
    let mut t = e.create_tree(8, ValueKind::Data).unwrap();
    for k in 0..3000u64 {
        let x = e.alloc_data().unwrap();
        e.insert(&mut t, k, &x.to_le_bytes()).unwrap();
    }
    e.set_root(0, Some(t)).unwrap();
    e.commit().unwrap();
    let mut c = e.clone_tree(&t).unwrap();
    for k in (0..3000u64).step_by(7) {
        let x = e.alloc_data().unwrap();
        e.insert(&mut c, k, &x.to_le_bytes()).unwrap();
    }
    e.set_root(1, Some(c)).unwrap();
    let v = e.audit();
    assert!(v.is_empty(), "{:?}", &v[..3.min(v.len())]);
    assert_eq!(e.space().data_allocated, 3000 + 429);
    let t = e.set_root(0, None).unwrap().unwrap();
    e.drop_tree(t).unwrap();
    let v = e.audit();
    assert!(v.is_empty(), "{:?}", &v[..3.min(v.len())]);
    assert_eq!(e.space().data_allocated, 3000);
}
