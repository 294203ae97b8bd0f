//! Metadata that heals itself (docs/DESIGN.md §2 "Durability"): with two copies of
//! every metadata page, damage to one copy of any page (zeroed, filled with garbage,
//! or one bit flipped) loses nothing. The array opens at its newest commit, every
//! byte of every LUN reads back as the model says, `check()` is clean, and the next
//! commit rewrites the bad copy from the good one. Both copies of the newest
//! superblock damaged: open refuses, naming the lost generation, and rolls back only
//! when allowed, saying so from then on.
//!
//! `LUNSNAP_DAMAGE_CASES` sets the number of random single-copy damages (default
//! 10,000).

use lunsnap::testing::{Model, Rng};
use lunsnap::{Access, Array, ArrayViolation, Error, FormatOptions, MemDevice, OpenOptions};

const PAGE: usize = 4096;
const KIB: u64 = 1024;

fn opts(copies: u32) -> FormatOptions {
    FormatOptions {
        extent_size: 4096,
        max_luns: 16,
        // A small cache: reads during the checks below really reach the device.
        cache_bytes: 64 << 10,
        array_id: *b"damage-tests-v2!",
        metadata_copies: copies,
    }
}

fn pattern(seed: u64, len: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.below(256) as u8).collect()
}

/// An array with every kind of metadata page in use: a LUN table of several
/// records, mappings shared by attached copies and diverged from them, a detached
/// copy, a consistency group, hosts and grants, both space maps; and its model.
fn build(copies: u32) -> (MemDevice, Model) {
    let dev = MemDevice::new(4096, 1536).expect("device");
    let mut a = Array::format(dev, &opts(copies)).expect("format");
    let mut m = Model::new(&a.pool_info());
    macro_rules! both {
        ($($op:tt)*) => {{
            let want = m.$($op)*;
            assert_eq!(a.$($op)*, want, stringify!($($op)*));
        }};
    }
    both!(create_lun(0, 256 * KIB));
    both!(write(0, 0, &pattern(1, 256 * KIB)));
    both!(create_copy(0, 1, true));
    both!(write(0, 64 * KIB, &pattern(2, 40 * KIB)));
    both!(create_copy(0, 2, false));
    both!(create_lun(3, 128 * KIB + 512));
    both!(write(3, 4096, &pattern(3, 100 * KIB)));
    both!(create_copies(&[(3, 4), (0, 5)], true));
    both!(write(3, 0, &pattern(4, 8 * KIB)));
    both!(write(5, 128 * KIB, &pattern(5, 12 * KIB)));
    both!(add_host(0x5000_0000_0000_0001, "host-a"));
    both!(add_host(0x5000_0000_0000_0002, "host-b"));
    both!(grant(3, 0x5000_0000_0000_0001, Access::ReadWrite));
    both!(grant(4, 0x5000_0000_0000_0002, Access::Read));
    both!(flush());
    m.verify(&mut a).expect("the undamaged array");
    (a.close().expect("close"), m)
}

/// The pages that hold committed metadata, by first-copy address: the superblock
/// slots and every metadata page in use.
fn live_pages(dev: &MemDevice) -> (Vec<u64>, lunsnap::engine::Geometry) {
    let mut a = Array::open(dev.clone(), &OpenOptions::default()).expect("open");
    let g = a.engine().geometry();
    let mut pages = vec![0, 1];
    for p in g.meta_start..g.meta_start + g.meta_pages {
        if a.engine().meta_refcount(p).expect("count") > 0 {
            pages.push(p);
        }
    }
    (pages, g)
}

/// Where copy `copy` (0 or 1) of page `p` lives.
fn copy_page(g: &lunsnap::engine::Geometry, p: u64, copy: u8) -> u64 {
    match (copy, p < g.meta_start) {
        (0, _) => p,
        (_, true) => g.superblock_copy(p),
        (_, false) => p + g.mirror_offset().expect("two copies"),
    }
}

fn read_page(dev: &mut MemDevice, p: u64) -> Vec<u8> {
    use lunsnap::BlockDevice;
    let mut b = vec![0u8; PAGE];
    dev.read(p, &mut b).expect("read");
    b
}

fn write_page(dev: &mut MemDevice, p: u64, b: &[u8]) {
    use lunsnap::BlockDevice;
    dev.write(p, b).expect("write");
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Zeroed,
    Garbage(u64),
    BitFlip(usize),
}

fn damage(dev: &mut MemDevice, p: u64, how: Damage) {
    let mut b = read_page(dev, p);
    match how {
        Damage::Zeroed => b.fill(0),
        Damage::Garbage(seed) => b.copy_from_slice(&pattern(seed, PAGE as u64)),
        Damage::BitFlip(bit) => b[bit / 8] ^= 1 << (bit % 8),
    }
    write_page(dev, p, &b);
}

#[test]
fn one_bad_copy_of_any_metadata_page_loses_nothing() {
    let cases: u64 = std::env::var("LUNSNAP_DAMAGE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (base, m) = build(2);
    let (pages, g) = live_pages(&base);
    assert!(pages.len() >= 12, "every kind of page: {}", pages.len());
    let mut rng = Rng::new(14);
    let mut healed = 0u64;
    for case in 0..cases {
        // Every page, both copies and every kind of damage come round in turn;
        // the garbage and the flipped bit are drawn at random.
        let p = pages[(case % pages.len() as u64) as usize];
        let copy = (case / pages.len() as u64 % 2) as u8;
        let how = match case / pages.len() as u64 / 2 % 3 {
            0 => Damage::Zeroed,
            1 => Damage::Garbage(rng.next_u64()),
            _ => Damage::BitFlip(rng.below((PAGE * 8) as u64) as usize),
        };
        let at = copy_page(&g, p, copy);
        let mut dev = base.clone();
        damage(&mut dev, at, how);
        let what = format!("case {case}: page {p} copy {copy} ({at}) {how:?}");
        let mut a = Array::open(dev, &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{what}: open: {e}"));
        m.verify(&mut a).unwrap_or_else(|e| panic!("{what}: {e}"));
        // A bad first copy was found by the reads: the next commit rewrites it.
        // Reads never look at a good first copy's twin: a bad second copy is
        // found by a scrub, which rewrites it too.
        a.flush().unwrap_or_else(|e| panic!("{what}: flush: {e}"));
        if copy == 1 && p >= g.meta_start {
            let r = a
                .scrub(|_, _| {})
                .unwrap_or_else(|e| panic!("{what}: scrub: {e}"));
            assert_eq!((r.healed, r.lost_count), (1, 0), "{what}: {r:?}");
        }
        let info = a.pool_info();
        assert_eq!(info.pending_heals, 0, "{what}");
        healed += info.healed_pages;
        let mut dev = a.close().expect("close");
        if p >= g.meta_start {
            let (first, second) = (copy_page(&g, p, 0), copy_page(&g, p, 1));
            assert!(
                read_page(&mut dev, first) == read_page(&mut dev, second),
                "{what}: the bad copy was not rewritten"
            );
        }
        for slot in 0..2 {
            assert!(
                read_page(&mut dev, slot) == read_page(&mut dev, g.superblock_copy(slot)),
                "{what}: superblock slot {slot} copies differ after a commit"
            );
        }
    }
    // Every case healed its copy (a bad copy of the older superblock slot is
    // rewritten too, whatever the damage).
    assert_eq!(healed, cases, "{healed} heals in {cases} cases");
}

#[test]
fn scrub_heals_every_bad_copy_and_lists_what_it_cannot() {
    let (base, m) = build(2);
    let (pages, g) = live_pages(&base);
    let mut dev = base.clone();
    // Damage a copy of every other page, alternating which copy.
    let damaged: Vec<u64> = pages.iter().copied().step_by(2).collect();
    for (i, &p) in damaged.iter().enumerate() {
        damage(&mut dev, copy_page(&g, p, (i % 2) as u8), Damage::Zeroed);
    }
    let mut a = Array::open(dev, &OpenOptions::default()).expect("open");
    let mut calls = 0;
    let r = a.scrub(|done, total| {
        calls += 1;
        assert!(done <= total, "{done}/{total}");
    });
    let r = r.expect("scrub");
    assert!(r.is_healthy(), "{:?}", r.lost);
    assert!(calls > 0);
    assert!(r.healed >= damaged.len() as u64 - 1, "{r:?}");
    assert!(r.pages >= pages.len() as u64, "{r:?}");
    // Scrub commits (and once more to record what it healed).
    let mut m = m;
    while m.generation() < a.pool_info().generation {
        m.commit();
    }
    m.verify(&mut a).expect("after scrub");
    let mut dev = a.close().expect("close");
    for &p in &pages[2..] {
        assert!(
            read_page(&mut dev, copy_page(&g, p, 0)) == read_page(&mut dev, copy_page(&g, p, 1)),
            "page {p}"
        );
    }
    // A second scrub finds nothing to do.
    let mut a = Array::open(dev.clone(), &OpenOptions::default()).expect("open");
    let r = a.scrub(|_, _| {}).expect("scrub");
    assert_eq!((r.healed, r.lost_count), (0, 0), "{r:?}");

    // Both copies of a mapping page gone: scrub lists it, heals nothing else wrong.
    let victim = *pages.last().expect("pages");
    damage(&mut dev, copy_page(&g, victim, 0), Damage::Garbage(1));
    damage(&mut dev, copy_page(&g, victim, 1), Damage::Garbage(2));
    match Array::open(dev, &OpenOptions::default()) {
        Ok(mut a) => {
            let r = a.scrub(|_, _| {}).expect("scrub");
            assert_eq!(r.lost_count, 1, "{r:?}");
            assert_eq!(r.lost[0].addr, victim);
            assert!(!r.is_healthy());
        }
        // The LUN table or the hosts are read at open: refusing is right too.
        Err(e) => assert!(e.is_corruption(), "{e}"),
    }
}

/// The newest commit's generation and its slot.
fn newest(dev: &MemDevice) -> u64 {
    Array::open(dev.clone(), &OpenOptions::default())
        .expect("open")
        .pool_info()
        .generation
}

#[test]
fn both_copies_of_the_newest_superblock_bad_is_never_a_silent_rollback() {
    let (base, _) = build(2);
    let (_, g) = live_pages(&base);
    let gen = newest(&base);
    let slot = gen % 2;
    for how in [
        Damage::Zeroed,
        Damage::Garbage(7),
        Damage::BitFlip(4000 * 8),
    ] {
        let mut dev = base.clone();
        damage(&mut dev, slot, how);
        damage(&mut dev, g.superblock_copy(slot), how);
        let err = Array::open(dev.clone(), &OpenOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{how:?}: opened"));
        match err {
            Error::CommitLost {
                lost,
                kept,
                certain,
            } => {
                assert_eq!((lost, kept), (gen, gen - 1), "{how:?}");
                // A flipped bit leaves the generation readable in the damaged pages.
                assert_eq!(certain, matches!(how, Damage::BitFlip(_)), "{how:?}");
            }
            e => panic!("{how:?}: {e}"),
        }
        assert!(
            err.to_string().contains(&format!("generation {gen}")),
            "{err}"
        );
        // Allowed, the rollback opens the generation before and says so, durably.
        let allow = OpenOptions {
            allow_rollback: true,
            ..OpenOptions::default()
        };
        // A flush records the rollback even with nothing else to commit.
        let mut a = Array::open(dev.clone(), &allow).expect("rollback allowed");
        assert_eq!(a.pool_info().pending_heals, 1, "the rollback, to record");
        a.flush().expect("flush");
        let b = Array::open(a.close().expect("close"), &OpenOptions::default())
            .expect("a recorded rollback opens without allow_rollback");
        assert_eq!(b.pool_info().rollback, Some((gen, gen - 1)));
        let mut a = Array::open(dev, &allow).expect("rollback allowed");
        assert_eq!(a.pool_info().generation, gen - 1);
        assert_eq!(a.pool_info().rollback, Some((gen, gen - 1)));
        a.create_lun(9, 512).expect("a change after the rollback");
        let dev = a.close().expect("close");
        let mut a = Array::open(dev, &OpenOptions::default()).expect("reopen");
        assert_eq!(a.pool_info().rollback, Some((gen, gen - 1)));
        let found = a.check().expect("check");
        assert!(
            found
                .iter()
                .any(|v| matches!(v, ArrayViolation::RolledBack { lost, .. } if *lost == gen)),
            "{found:?}"
        );
        assert!(found
            .iter()
            .all(|v| v.severity() == lunsnap::Severity::Notice));
    }
    // The older slot's copies both damaged where the generation survives (a bit
    // flipped in the body): they held an older commit, nothing can have been lost.
    let mut dev = base.clone();
    damage(&mut dev, 1 - slot, Damage::BitFlip(4000 * 8));
    damage(
        &mut dev,
        g.superblock_copy(1 - slot),
        Damage::BitFlip(100 * 8),
    );
    let a = Array::open(dev, &OpenOptions::default()).expect("older slot damaged");
    assert_eq!(a.pool_info().generation, gen);
    assert_eq!(a.pool_info().rollback, None);
    // Zeroed, nothing tells what they held: it may have been a newer commit.
    let mut dev = base.clone();
    damage(&mut dev, 1 - slot, Damage::Zeroed);
    damage(&mut dev, g.superblock_copy(1 - slot), Damage::Garbage(3));
    assert_eq!(
        Array::open(dev, &OpenOptions::default()).err(),
        Some(Error::CommitLost {
            lost: gen + 1,
            kept: gen,
            certain: false
        })
    );
}

#[test]
fn one_copy_reports_damage_instead_of_healing_it() {
    let (base, _) = build(1);
    let (pages, g) = live_pages(&base);
    assert_eq!(g.mirror_offset(), None);
    let mut detected = 0;
    for &p in &pages[2..] {
        let mut dev = base.clone();
        damage(&mut dev, p, Damage::BitFlip(100 * 8));
        match Array::open(dev, &OpenOptions::default()) {
            Err(e) => {
                assert!(e.is_corruption(), "page {p}: {e}");
                detected += 1;
            }
            Ok(mut a) => {
                let found = a.check().expect("check");
                assert!(!found.is_empty(), "page {p}: damage not reported");
                detected += 1;
                // Each unreadable block is reported once.
                let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
                let mut unique = lines.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), lines.len(), "page {p}: {lines:#?}");
                // A scrub names the page and heals nothing.
                let r = a.scrub(|_, _| {}).expect("scrub");
                assert_eq!(r.healed, 0);
                assert!(r.lost.iter().any(|l| l.addr == p), "page {p}: {r:?}");
            }
        }
    }
    assert_eq!(detected, pages.len() - 2);
}

#[test]
fn scrub_commits_what_is_uncommitted_first_and_nothing_on_a_clean_array() {
    let (base, mut m) = build(2);
    let mut a = Array::open(base, &OpenOptions::default()).expect("open");
    // Clean: a scrub writes no commit.
    let gen = a.pool_info().generation;
    let r = a.scrub(|_, _| {}).expect("scrub");
    assert_eq!((r.healed, r.lost_count), (0, 0), "{r:?}");
    assert_eq!(a.pool_info().generation, gen, "a clean scrub committed");
    // Uncommitted writes (new mapping pages only in the cache): scrubbed after
    // being committed, so none of them is taken for a page with no good copy.
    let data = pattern(77, 96 * KIB);
    m.write(3, 0, &data).expect("model");
    a.write(3, 0, &data).expect("write");
    let r = a.scrub(|_, _| {}).expect("scrub");
    assert!(r.is_healthy(), "{r:?}");
    assert_eq!(
        a.pool_info().generation,
        gen + 1,
        "one commit, of the writes"
    );
    m.commit();
    m.verify(&mut a).expect("after scrub");
    let a = Array::open(a.close().expect("close"), &OpenOptions::default()).expect("reopen");
    assert_eq!(a.pool_info().generation, gen + 1);
}

#[test]
fn a_page_with_no_good_copy_is_named_in_words() {
    let p = lunsnap::ScrubProblem {
        addr: 42,
        error: Error::Checksum { addr: 42 },
    };
    let s = p.to_string();
    assert!(
        s.starts_with("metadata page 42: no good copy left: checksum mismatch"),
        "{s}"
    );
}

#[test]
fn scrub_reads_every_page_once_and_heals_a_superblock_damaged_while_open() {
    let (base, _) = build(2);
    let (_, g) = live_pages(&base);
    let mut a = Array::open(base, &OpenOptions::default()).expect("open");
    // A copy made now shares its parent's whole mapping, root and all: the walk
    // meets those nodes twice and must read them once.
    a.create_copy(0, 6, true).expect("copy");
    let live = a.engine().space().meta_allocated;
    let mut seen = Vec::new();
    let r = a
        .scrub(|done, total| seen.push((done, total)))
        .expect("scrub");
    // Each page in use once (copies share mapping nodes: each is read once), and
    // the four superblock copies.
    assert_eq!(r.pages, live + 4, "{r:?}");
    assert_eq!(
        seen.last(),
        Some(&(live, live)),
        "progress ends at the total"
    );
    assert!(
        seen.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "progress by one page"
    );
    // A superblock copy damaged under the open array: scrub rewrites it.
    let gen = a.pool_info().generation;
    let at = g.superblock_copy(gen % 2);
    damage(a.device_mut(), at, Damage::Zeroed);
    let r = a.scrub(|_, _| {}).expect("scrub");
    assert_eq!((r.healed, r.lost_count), (1, 0), "{r:?}");
    let mut dev = a.close().expect("close");
    for slot in 0..2 {
        assert!(
            read_page(&mut dev, slot) == read_page(&mut dev, g.superblock_copy(slot)),
            "slot {slot}"
        );
    }
}

#[test]
fn scrub_rewrites_a_stale_superblock_copy_from_its_newer_twin() {
    for stale_copy in [0u8, 1] {
        let (base, _) = build(2);
        let (_, g) = live_pages(&base);
        let mut a = Array::open(base, &OpenOptions::default()).expect("open");
        let gen = a.pool_info().generation;
        let slot = gen % 2;
        let old = read_page(a.device_mut(), slot);
        // Two more commits: the slot holds generation gen + 2 in both copies.
        a.create_lun(10, 512).expect("a commit");
        a.create_lun(11, 512).expect("another");
        assert_eq!(a.pool_info().generation, gen + 2);
        // One copy goes back to generation gen, as a lost write would leave it:
        // valid, but older than its twin.
        let at = if stale_copy == 0 {
            slot
        } else {
            g.superblock_copy(slot)
        };
        write_page(a.device_mut(), at, &old);
        let other = copy_page(&g, slot, 1 - stale_copy);
        let newer = read_page(a.device_mut(), other);
        let r = a.scrub(|_, _| {}).expect("scrub");
        assert_eq!((r.healed, r.lost_count), (1, 0), "copy {stale_copy}: {r:?}");
        let mut dev = a.close().expect("close");
        for p in [at, other] {
            assert!(
                read_page(&mut dev, p) == newer,
                "copy {stale_copy}: page {p} does not hold the newer generation"
            );
        }
        let a = Array::open(dev, &OpenOptions::default()).expect("reopen");
        assert!(a.pool_info().generation > gen + 2);
    }
}

#[test]
fn a_superblock_copy_naming_a_generation_of_the_other_slot_is_refused() {
    let (base, _) = build(2);
    let gen = newest(&base);
    let slot = gen % 2;
    let mut dev = base.clone();
    // The newest slot's first copy, resealed to claim generation gen + 1, which
    // belongs in the other slot: a misdirected write, not a newer commit.
    let mut b = read_page(&mut dev, slot);
    b[24..32].copy_from_slice(&(gen + 1).to_le_bytes());
    lunsnap::testing::layout::seal(&mut b);
    write_page(&mut dev, slot, &b);
    let a = Array::open(dev, &OpenOptions::default()).expect("open");
    assert_eq!(a.pool_info().generation, gen);
    assert_eq!(
        a.pool_info().pending_heals,
        1,
        "the forged copy is rewritten"
    );
}

#[test]
fn a_device_error_during_scrub_is_an_error_not_a_lost_page() {
    use lunsnap::testing::{ErrorDevice, Fault, FaultOp};
    let (base, _) = build(2);
    let (pages, g) = live_pages(&base);
    let mut a = Array::open(ErrorDevice::new(base), &OpenOptions::default()).expect("open");
    // A second copy damaged under the open array (no read notices it), then every
    // write fails: the scrub's rewrite of that copy fails, and scrub must say the
    // device failed rather than list the page as lost.
    let p = pages[pages.len() / 2];
    {
        use lunsnap::BlockDevice;
        let zeros = vec![0u8; PAGE];
        a.device_mut()
            .write(copy_page(&g, p, 1), &zeros)
            .expect("damage");
    }
    a.device_mut()
        .set_fault(Some(Fault::sticky(FaultOp::Write, 0)));
    match a.scrub(|_, _| {}) {
        Err(Error::Device(_)) => {}
        r => panic!("scrub whose rewrite fails: {r:?}"),
    }
    assert!(a.is_poisoned());
}
