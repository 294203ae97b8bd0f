//! End-to-end sanity of the array: LUN, copies, I/O, restore, reopen, check.

mod common;

use common::{assert_clean, mem};
use lunsnap::{Array, FormatOptions, OpenOptions};

const MIB: u64 = 1 << 20;

#[test]
fn lun_copy_write_restore_reopen() {
    let dev = mem(64 * MIB);
    let opts = FormatOptions {
        extent_size: 16 * 1024,
        max_luns: 16,
        ..Default::default()
    };
    let mut a = Array::format(dev, &opts).unwrap();
    a.create_lun(0, 8 * MIB).unwrap();
    let pattern: Vec<u8> = (0..MIB as usize).map(|i| (i % 251) as u8).collect();
    a.write(0, 0, &pattern).unwrap();
    a.write(0, 3 * MIB + 512, &pattern[..4096]).unwrap();
    assert_clean(&mut a, "");
    a.create_copy(0, 1, true).unwrap();
    assert_clean(&mut a, "");
    // Parent changes after the copy do not reach the copy.
    a.write(0, 0, &[0xAA; 4096]).unwrap();
    let mut b = vec![0u8; 4096];
    a.read(1, 0, &mut b).unwrap();
    assert_eq!(b, pattern[..4096]);
    a.read(0, 0, &mut b).unwrap();
    assert_eq!(b, [0xAA; 4096]);
    let i0 = a.lun_info(0).unwrap();
    let i1 = a.lun_info(1).unwrap();
    assert_eq!(i0.exclusive_bytes, 16 * 1024);
    assert_eq!(i1.exclusive_bytes, 16 * 1024);
    assert_eq!(i0.shared_bytes, i1.shared_bytes);
    assert_clean(&mut a, "");
    // Restore: the parent reads the copy again.
    a.restore(1).unwrap();
    a.read(0, 0, &mut b).unwrap();
    assert_eq!(b, pattern[..4096]);
    assert_clean(&mut a, "");
    a.flush().unwrap();
    let dev = a.into_device();
    let mut a = Array::open(dev, &OpenOptions::default()).unwrap();
    assert_clean(&mut a, "");
    a.read(0, 3 * MIB + 512, &mut b).unwrap();
    assert_eq!(b, pattern[..4096]);
    a.read(1, 7 * MIB, &mut b).unwrap();
    assert_eq!(b, [0; 4096]);
    a.detach(1).unwrap();
    assert!(matches!(
        a.delete(0, false),
        Err(lunsnap::Error::HasCopies { lun: 0, copies: 1 })
    ));
    a.delete(0, true).unwrap();
    assert_eq!(a.attach(1), Err(lunsnap::Error::ParentGone(1)));
    a.delete(1, false).unwrap();
    assert_clean(&mut a, "");
    // What the deletes dropped waits to be freed, then is.
    let p = a.pool_info();
    assert_eq!(a.pending_bytes().unwrap(), p.allocated_bytes, "{p:?}");
    assert!(p.reclaim_queue > 0, "{p:?}");
    let r = a.reclaim(u64::MAX).unwrap();
    assert_eq!(r.remaining, 0);
    assert_clean(&mut a, "after reclaim");
    let p = a.pool_info();
    assert_eq!((p.allocated_bytes, p.reclaim_queue), (0, 0), "{p:?}");
    assert_eq!(a.pending_bytes().unwrap(), 0);
}

/// A LUN record forged with a size larger than the pool (found by fuzzing: the
/// reservation arithmetic overflowed) is refused at open, never a panic.
#[test]
fn open_refuses_a_lun_record_larger_than_the_pool() {
    let dev = mem(16 * MIB);
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 4,
        ..Default::default()
    };
    let mut a = Array::format(dev, &opts).unwrap();
    a.create_lun(0, MIB).unwrap();
    let dev = a.close().unwrap();
    for size in [u64::MAX - 511, 1 << 40, 64 * MIB] {
        let mut e =
            lunsnap::engine::Engine::open(dev.clone(), &lunsnap::engine::OpenOptions::default())
                .unwrap();
        let mut table = e.root(0).unwrap().unwrap();
        let mut rec = [0u8; 64];
        assert!(e.lookup(&table, 0, &mut rec).unwrap());
        rec[8..16].copy_from_slice(&size.to_le_bytes());
        e.replace_owned(&mut table, 0, &rec).unwrap();
        e.set_root(0, Some(table)).unwrap();
        e.commit().unwrap();
        let r = Array::open(e.into_device(), &OpenOptions::default());
        assert!(
            matches!(r, Err(lunsnap::Error::Corrupt { .. })),
            "size {size}: {:?}",
            r.err()
        );
    }
}
