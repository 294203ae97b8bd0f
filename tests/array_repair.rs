//! `Array::repair` where both copies of some metadata are bad: it never panics, never
//! returns wrong data, keeps every range whose mapping survives, lists the rest as
//! lost (read as `LostData` until written or discarded), and a power cut during it
//! leaves the old state or the repaired one.

use lunsnap::testing::{CutOutcome, Model, PowerCutDevice, Rng};
use lunsnap::{
    Access, Array, BlockDevice, Error, FormatOptions, MemDevice, OpenOptions, RepairOptions,
    RepairReport, Severity,
};

const PAGE: usize = 4096;
const KIB: u64 = 1024;

fn pattern(seed: u64, len: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.below(255) as u8 + 1).collect()
}

/// An array with several LUNs, copies sharing and diverging, a detached copy, hosts
/// and grants; its model. Small pages of cache, so reads reach the device.
fn build(copies: u32) -> (MemDevice, Model) {
    let dev = MemDevice::new(4096, 8192).expect("device");
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 16,
        cache_bytes: 64 << 10,
        array_id: *b"repair-tests-v2!",
        metadata_copies: copies,
    };
    let mut a = Array::format(dev, &opts).expect("format");
    let mut m = Model::new(&a.pool_info());
    macro_rules! both {
        ($($op:tt)*) => {{
            let want = m.$($op)*;
            assert_eq!(a.$($op)*, want, stringify!($($op)*));
        }};
    }
    // LUN 0 maps 3,072 extents: four mapping leaves under an interior node.
    both!(create_lun(0, 12 << 20));
    both!(write(0, 0, &pattern(1, 12 << 20)));
    both!(create_copy(0, 1, true));
    both!(write(0, 64 * KIB, &pattern(2, 40 * KIB)));
    both!(create_copy(0, 2, false));
    both!(create_lun(3, 128 * KIB + 512));
    both!(write(3, 4096, &pattern(3, 100 * KIB)));
    both!(create_copies(&[(3, 4)], true));
    both!(write(4, 0, &pattern(4, 8 * KIB)));
    both!(add_host(0x5000_0000_0000_0001, "host-a"));
    both!(grant(3, 0x5000_0000_0000_0001, Access::ReadWrite));
    both!(flush());
    m.verify(&mut a).expect("the undamaged array");
    (a.close().expect("close"), m)
}

/// Metadata pages in use (first copies), superblocks excepted.
fn live_pages(dev: &MemDevice) -> (Vec<u64>, lunsnap::engine::Geometry) {
    let mut a = Array::open(dev.clone(), &OpenOptions::default()).expect("open");
    let g = a.engine().geometry();
    let pages = (g.meta_start..g.meta_start + g.meta_pages)
        .filter(|&p| a.engine().meta_refcount(p).expect("count") > 0)
        .collect();
    (pages, g)
}

fn garble(dev: &mut impl BlockDevice, page: u64, seed: u64) {
    let bs = u64::from(dev.block_size());
    let lba = page * PAGE as u64 / bs;
    dev.write(lba, &pattern(seed, PAGE as u64)).expect("write");
}

/// Both copies of `page` garbled.
fn destroy(dev: &mut impl BlockDevice, g: &lunsnap::engine::Geometry, page: u64, seed: u64) {
    garble(dev, page, seed);
    if let Some(off) = g.mirror_offset() {
        garble(dev, page + off, seed + 1);
    }
}

fn repair<D: BlockDevice>(dev: D) -> (D, RepairReport) {
    Array::repair(dev, &RepairOptions::default()).expect("repair")
}

/// Every LUN the report kept reads as the model says outside its lost ranges, and
/// as `LostData` inside them; a LUN it did not keep lies in a lost range of numbers.
fn verify_repaired(a: &mut Array<MemDevice>, m: &Model, r: &RepairReport, what: &str) {
    for n in m.lun_numbers() {
        if !r.luns.contains(&n) {
            assert!(
                r.lost_records
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&u64::from(n))),
                "{what}: LUN {n} vanished without its record being reported lost: {r:?}"
            );
            continue;
        }
        let info = m.lun_info(n).expect("model");
        let lost = a.lost_ranges(n).expect("lost ranges");
        let in_report: Vec<(u64, u64)> = r
            .lost
            .iter()
            .filter(|l| l.0 == n)
            .map(|&(_, o, l)| (o, l))
            .collect();
        assert_eq!(lost, in_report, "{what}: LUN {n}");
        if !info.attached {
            continue;
        }
        let mut want = vec![0u8; 4096];
        let mut got = vec![0u8; 4096];
        let mut off = 0;
        while off < info.size {
            let len = (info.size - off).min(4096) as usize;
            m.read(n, off, &mut want[..len]).expect("model read");
            let overlaps = lost
                .iter()
                .any(|&(o, l)| o < off + len as u64 && off < o + l);
            match a.read(n, off, &mut got[..len]) {
                Ok(()) => {
                    assert!(!overlaps, "{what}: LUN {n} at {off}: a lost range read");
                    assert!(
                        got[..len] == want[..len],
                        "{what}: LUN {n} at {off}: wrong data after repair"
                    );
                }
                Err(Error::LostData { lun, .. }) => {
                    assert_eq!(lun, n);
                    assert!(
                        overlaps,
                        "{what}: LUN {n} at {off}: LostData outside lost ranges"
                    );
                }
                Err(e) => panic!("{what}: LUN {n} at {off}: {e}"),
            }
            off += len as u64;
        }
    }
    let found = a.check().expect("check");
    assert!(
        found.iter().all(|v| v.severity() == Severity::Notice),
        "{what}: check after repair: {found:#?}"
    );
}

#[test]
fn repair_of_a_whole_array_changes_nothing_but_the_generation() {
    let (dev, m) = build(2);
    let (dev, r) = repair(dev);
    assert!(r.is_complete(), "{r:?}");
    assert_eq!(r.luns, m.lun_numbers());
    let mut a = Array::open(dev, &OpenOptions::default()).expect("open");
    let mut m = m;
    while m.generation() < a.pool_info().generation {
        m.commit();
    }
    m.verify(&mut a).expect("repaired");
}

#[test]
fn a_dry_run_writes_nothing() {
    let (mut dev, _) = build(1);
    let (pages, g) = live_pages(&dev);
    destroy(&mut dev, &g, pages[pages.len() / 2], 9);
    let before = dev.clone();
    let (after, r) = Array::repair(
        dev,
        &RepairOptions {
            dry_run: true,
            ..RepairOptions::default()
        },
    )
    .expect("dry run");
    assert!(r.dry_run);
    let mut x = before;
    let mut y = after;
    let mut bx = vec![0u8; PAGE];
    let mut by = vec![0u8; PAGE];
    for p in 0..x.block_count() {
        x.read(p, &mut bx).expect("read");
        y.read(p, &mut by).expect("read");
        assert!(bx == by, "page {p} changed by a dry run");
    }
}

#[test]
fn both_copies_of_any_page_destroyed_repair_keeps_what_survives() {
    for copies in [1, 2] {
        let (base, m) = build(copies);
        let (pages, g) = live_pages(&base);
        let mut lost_somewhere = 0;
        for (i, &p) in pages.iter().enumerate() {
            let mut dev = base.clone();
            destroy(&mut dev, &g, p, 100 + i as u64);
            let what = format!("{copies} copies, page {p}");
            let (dev, r) = match Array::repair(dev, &RepairOptions::default()) {
                Ok(x) => x,
                // The array header and geometry live in the superblock, not here.
                Err(e) => panic!("{what}: repair: {e}"),
            };
            let mut a = Array::open(dev, &OpenOptions::default())
                .unwrap_or_else(|e| panic!("{what}: open after repair: {e} ({r:?})"));
            verify_repaired(&mut a, &m, &r, &what);
            // A second repair keeps what the first lost lost (its mapping has holes
            // there now, which must not read as zeros).
            let (again, r2) = repair(a.close().expect("close"));
            assert_eq!(r2.lost, r.lost, "{what}: a second repair");
            assert!(r2.unreadable_pages.is_empty(), "{what}: {r2:?}");
            let mut a = Array::open(again, &OpenOptions::default()).expect("reopen");
            verify_repaired(&mut a, &m, &r, &what);
            if !r.lost.is_empty() || !r.lost_records.is_empty() {
                lost_somewhere += 1;
            }
            // A lost range written again reads what was written.
            if let Some(&(n, off, len)) = r.lost.first() {
                let data = pattern(7, len);
                a.write(n, off, &data).expect("rewrite a lost range");
                let mut back = vec![0u8; len as usize];
                a.read(n, off, &mut back).expect("read it back");
                assert!(back == data, "{what}");
                assert_eq!(a.lost_ranges(n).expect("ranges"), vec![]);
                a.flush().expect("flush");
                let mut a = Array::open(a.close().expect("close"), &OpenOptions::default())
                    .expect("reopen");
                assert_eq!(a.lost_ranges(n).expect("ranges"), vec![], "{what}");
                assert_eq!(a.lun_info(n).expect("info").lost_bytes, 0, "{what}");
                let found = a.check().expect("check");
                assert!(
                    found.iter().all(|v| v.severity() == Severity::Notice),
                    "{what}: {found:#?}"
                );
            }
        }
        assert!(lost_somewhere > 0, "{copies}: no page mattered?");
    }
}

#[test]
fn a_power_cut_during_repair_leaves_the_old_state_or_the_repaired_one() {
    let (base, m) = build(2);
    let (pages, g) = live_pages(&base);
    let mut dev = base.clone();
    // A mapping leaf of LUN 0 is among the last pages written by the fill.
    let victim = pages[pages.len() / 3];
    destroy(&mut dev, &g, victim, 5);
    let mut probe = PowerCutDevice::new(dev.clone());
    let w0 = probe.writes();
    probe = repair(probe).0;
    let writes = probe.writes() - w0;
    assert!(writes > 3);
    for k in 0..writes {
        let mut d = PowerCutDevice::new(dev.clone());
        d.fail_after_writes(Some(k));
        assert!(Array::repair(&mut d, &RepairOptions::default()).is_err());
        for o in [
            CutOutcome::DropAll,
            CutOutcome::KeepAll,
            CutOutcome::Random { seed: k },
        ] {
            let mut c = d.clone();
            c.power_cut(o).expect("cut");
            let (fixed, r) = repair(c.into_inner());
            let mut a = Array::open(fixed, &OpenOptions::default()).expect("open");
            verify_repaired(&mut a, &m, &r, &format!("cut after {k} writes, {o:?}"));
        }
    }
}
