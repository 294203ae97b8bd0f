//! Durability of the storage engine (docs/DESIGN.md §2 "Durability", §3 layer 5):
//!
//! * a commit survives a reopen, on a memory device and on a file;
//! * a power cut before a commit gives back exactly the last commit, whatever subset
//!   of the unflushed writes reached the medium;
//! * a device failure part way through a commit poisons the handle, and a reopen gives
//!   exactly the old or exactly the new commit, never a mix;
//! * a crash after any write of a longer workload recovers one of its commits;
//! * blocks the committed state uses are never overwritten before the next commit.
#![cfg(all(feature = "std", feature = "testing"))]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{assert_audit_clean, crc_ok, le16, le64, read_page, PAGE};
use lunsnap::engine::{Engine, Tree, ValueKind};
use lunsnap::engine::{FormatOptions, OpenOptions};
use lunsnap::testing::{CutOutcome, PowerCutDevice, Rng};
use lunsnap::{BlockDevice, Error, FileDevice, MemDevice};

/// The smallest cache the engine allows: dirty blocks are evicted (written) long
/// before the commit.
const SMALL_CACHE: usize = 16 * PAGE;
const BIG_CACHE: usize = 4 << 20;

/// Root slots used by the workloads.
const MAIN: usize = 0; // Opaque, 16-byte values
const SNAP: usize = 1; // clone of MAIN (or empty)
const DATA: usize = 2; // Data, 8-byte values (an extent number)
const AUX: usize = 3; // Opaque, 40-byte values, created and dropped as a whole
const MAIN_VS: usize = 16;
const DATA_VS: usize = 8;
const AUX_VS: usize = 40;

// ---------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------

/// The content of one root slot.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    vs: usize,
    kind: ValueKind,
    entries: BTreeMap<u64, Vec<u8>>,
}

/// The content of every root slot: what a commit must preserve.
type State = Vec<Option<Slot>>;

fn empty_state() -> State {
    vec![None; 8]
}

/// Reads every tree of every root slot through the engine.
fn read_state<D: BlockDevice>(e: &mut Engine<D>) -> State {
    let mut st = empty_state();
    for (s, out) in st.iter_mut().enumerate() {
        if let Some(t) = e.root(s).unwrap() {
            let mut entries = BTreeMap::new();
            let mut last = None;
            e.range(&t, 0, u64::MAX, |k, v| {
                assert!(last.map_or(true, |l| l < k), "range not ascending");
                last = Some(k);
                entries.insert(k, v.to_vec());
                true
            })
            .unwrap();
            *out = Some(Slot {
                vs: t.value_size(),
                kind: t.kind(),
                entries,
            });
        }
    }
    st
}

/// Checks every key of `st` with a point lookup, and a few absent keys.
fn check_lookups<D: BlockDevice>(e: &mut Engine<D>, st: &State) {
    let mut out = [0u8; 256];
    for (s, slot) in st.iter().enumerate() {
        let Some(slot) = slot else {
            assert_eq!(e.root(s).unwrap(), None, "slot {s}");
            continue;
        };
        let t = e.root(s).unwrap().expect("slot holds a tree");
        for (k, v) in &slot.entries {
            assert!(e.lookup(&t, *k, &mut out).unwrap(), "slot {s} key {k} lost");
            assert_eq!(&out[..slot.vs], &v[..], "slot {s} key {k}");
        }
        for k in [u64::MAX, u64::MAX - 1, 1 << 40] {
            assert_eq!(
                e.lookup(&t, k, &mut out).unwrap(),
                slot.entries.contains_key(&k)
            );
        }
    }
}

fn total_entries(st: &State) -> usize {
    st.iter().flatten().map(|s| s.entries.len()).sum()
}

fn fmt_opts(cache: usize, meta: Option<u64>) -> FormatOptions {
    FormatOptions {
        extent_size: 4096,
        cache_bytes: cache,
        metadata_pages: meta,
        ..Default::default()
    }
}

fn open<D: BlockDevice>(dev: D, cache: usize) -> Engine<D> {
    match Engine::open(
        dev,
        &OpenOptions {
            cache_bytes: cache,
            ..OpenOptions::default()
        },
    ) {
        Ok(e) => e,
        Err(err) => panic!("open failed: {err:?}"),
    }
}

/// The tree in `slot`, which must exist.
fn tree<D: BlockDevice>(e: &Engine<D>, slot: usize) -> Tree {
    e.root(slot).unwrap().expect("slot holds a tree")
}

// ---------------------------------------------------------------------------------
// A deterministic workload over an engine and a model of it
// ---------------------------------------------------------------------------------

/// Engine calls that change slot `s`'s tree handle store it back before returning.
fn put<D: BlockDevice>(e: &mut Engine<D>, s: usize, t: Tree) -> lunsnap::Result<()> {
    // The slot's old handle is the same reference (its root moved): do not drop it.
    e.set_root(s, Some(t)).map(|_| ())
}

fn main_value(k: u64, tag: u64) -> Vec<u8> {
    let mut v = k.to_le_bytes().to_vec();
    v.extend_from_slice(&tag.to_le_bytes());
    v
}

fn insert_main<D: BlockDevice>(
    e: &mut Engine<D>,
    m: &mut State,
    k: u64,
    tag: u64,
) -> lunsnap::Result<()> {
    let mut t = tree(e, MAIN);
    let v = main_value(k, tag);
    e.insert(&mut t, k, &v)?;
    put(e, MAIN, t)?;
    m[MAIN].as_mut().unwrap().entries.insert(k, v);
    Ok(())
}

/// Any existing key of `slot` near a random point (None if the slot is empty).
fn pick_key(m: &State, slot: usize, rng: &mut Rng) -> Option<u64> {
    let entries = &m[slot].as_ref()?.entries;
    let probe = rng.next_u64();
    entries
        .range(probe..)
        .next()
        .or_else(|| entries.iter().next())
        .map(|(k, _)| *k)
}

/// Sets up the slots the workload uses: MAIN with `main_keys` keys, DATA with
/// `data_keys` extents, a SNAP clone of MAIN, then more changes to MAIN.
fn populate<D: BlockDevice>(
    e: &mut Engine<D>,
    m: &mut State,
    rng: &mut Rng,
    main_keys: u64,
    data_keys: u64,
) -> lunsnap::Result<()> {
    if m[MAIN].is_none() {
        let t = e.create_tree(MAIN_VS, ValueKind::Opaque)?;
        e.set_root(MAIN, Some(t))?;
        m[MAIN] = Some(Slot {
            vs: MAIN_VS,
            kind: ValueKind::Opaque,
            entries: BTreeMap::new(),
        });
    }
    if m[DATA].is_none() {
        let t = e.create_tree(DATA_VS, ValueKind::Data)?;
        e.set_root(DATA, Some(t))?;
        m[DATA] = Some(Slot {
            vs: DATA_VS,
            kind: ValueKind::Data,
            entries: BTreeMap::new(),
        });
    }
    for i in 0..main_keys {
        // Half sequential (full leaves), half scattered.
        let k = if i % 2 == 0 {
            i * 3
        } else {
            rng.below(1 << 20)
        };
        insert_main(e, m, k, i)?;
    }
    for i in 0..data_keys {
        data_insert(e, m, i * 7)?;
    }
    clone_main(e, m)?;
    for i in 0..main_keys / 4 {
        insert_main(e, m, rng.below(1 << 20), i + 1_000_000)?;
    }
    Ok(())
}

fn clone_main<D: BlockDevice>(e: &mut Engine<D>, m: &mut State) -> lunsnap::Result<()> {
    let t = tree(e, MAIN);
    let c = e.clone_tree(&t)?;
    if let Some(old) = e.set_root(SNAP, Some(c))? {
        e.drop_tree(old)?;
    }
    m[SNAP] = m[MAIN].clone();
    Ok(())
}

fn data_insert<D: BlockDevice>(e: &mut Engine<D>, m: &mut State, k: u64) -> lunsnap::Result<()> {
    let x = e.alloc_data()?;
    let mut t = tree(e, DATA);
    e.insert(&mut t, k, &x.to_le_bytes())?;
    put(e, DATA, t)?;
    m[DATA]
        .as_mut()
        .unwrap()
        .entries
        .insert(k, x.to_le_bytes().to_vec());
    Ok(())
}

/// One random change. The model is updated only once the engine has made it.
fn step<D: BlockDevice>(e: &mut Engine<D>, m: &mut State, rng: &mut Rng) -> lunsnap::Result<()> {
    let r = rng.below(100);
    match r {
        0..=44 => insert_main(e, m, rng.below(1 << 20), rng.next_u64()),
        45..=59 => {
            let Some(k) = pick_key(m, MAIN, rng) else {
                return Ok(());
            };
            let mut t = tree(e, MAIN);
            assert!(e.remove(&mut t, k)?, "model key {k} missing from MAIN");
            put(e, MAIN, t)?;
            m[MAIN].as_mut().unwrap().entries.remove(&k);
            Ok(())
        }
        60..=63 => clone_main(e, m),
        64..=65 => {
            if let Some(old) = e.set_root(SNAP, None)? {
                e.drop_tree(old)?;
            }
            m[SNAP] = None;
            Ok(())
        }
        66..=79 => data_insert(e, m, rng.below(4000)),
        80..=84 => {
            let Some(k) = pick_key(m, DATA, rng) else {
                return Ok(());
            };
            let mut t = tree(e, DATA);
            assert!(e.remove(&mut t, k)?);
            put(e, DATA, t)?;
            m[DATA].as_mut().unwrap().entries.remove(&k);
            Ok(())
        }
        85..=96 => {
            if m[AUX].is_none() {
                let t = e.create_tree(AUX_VS, ValueKind::Opaque)?;
                e.set_root(AUX, Some(t))?;
                m[AUX] = Some(Slot {
                    vs: AUX_VS,
                    kind: ValueKind::Opaque,
                    entries: BTreeMap::new(),
                });
            }
            let mut t = tree(e, AUX);
            let n = 1 + rng.below(40);
            for _ in 0..n {
                let k = rng.below(5000);
                let v = vec![(k as u8) ^ 0x5A; AUX_VS];
                e.insert(&mut t, k, &v)?;
                put(e, AUX, t)?;
                m[AUX].as_mut().unwrap().entries.insert(k, v);
            }
            Ok(())
        }
        _ => {
            if let Some(old) = e.set_root(AUX, None)? {
                e.drop_tree(old)?;
            }
            m[AUX] = None;
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------
// Raw view of the device: which blocks the newest commit uses
// ---------------------------------------------------------------------------------

/// Every metadata page the newest valid superblock reaches (space map nodes and tree
/// nodes, nested trees included), with its bytes. Independent of the engine's code.
fn live_blocks<D: BlockDevice>(dev: &mut D) -> BTreeMap<u64, Vec<u8>> {
    let mut best: Option<Vec<u8>> = None;
    for slot in 0..2 {
        let b = read_page(dev, slot);
        let newer = best.as_ref().map_or(true, |o| le64(&b, 24) > le64(o, 24));
        if &b[..4] == b"LSNP" && b[4] == 1 && crc_ok(&b) && le64(&b, 16) == slot && newer {
            best = Some(b);
        }
    }
    let sb = best.expect("a valid superblock");
    let mut out = BTreeMap::new();
    // Space maps: depth from the number of entries.
    for (off, entries) in [(128usize, le64(&sb, 88)), (152, le64(&sb, 104))] {
        let root = le64(&sb, off);
        let leaves = entries.div_ceil(1016).max(1);
        let (mut depth, mut reach) = (0u32, 1u64);
        while reach < leaves {
            reach *= 508;
            depth += 1;
        }
        let mut stack = vec![(root, depth)];
        while let Some((a, lvl)) = stack.pop() {
            if a == 0 {
                continue;
            }
            let b = read_page(dev, a);
            assert!(crc_ok(&b) && le64(&b, 16) == a, "space map block {a} bad");
            if lvl > 0 {
                assert_eq!(b[4], 2);
                for i in 0..508 {
                    stack.push((le64(&b, 32 + 8 * i), lvl - 1));
                }
            } else {
                assert_eq!(b[4], 3);
            }
            out.insert(a, b);
        }
    }
    let mut stack: Vec<u64> = (0..8)
        .filter(|i| sb[176 + 16 * i + 11] == 1)
        .map(|i| le64(&sb, 176 + 16 * i))
        .filter(|&r| r != 0)
        .collect();
    let mut seen = BTreeSet::new();
    while let Some(a) = stack.pop() {
        if !seen.insert(a) {
            continue;
        }
        let b = read_page(dev, a);
        assert!(crc_ok(&b) && b[4] == 4 && le64(&b, 16) == a, "node {a} bad");
        let nr = le16(&b, 32) as usize;
        let vs = le16(&b, 34) as usize;
        let level = b[36];
        let kind = b[37];
        let max = (PAGE - 40) / (8 + vs);
        let vo = 40 + 8 * max;
        for i in 0..nr {
            if level > 0 {
                stack.push(le64(&b, vo + 8 * i));
            } else if kind == 2 {
                let r = le64(&b, vo + vs * i);
                if r != 0 {
                    stack.push(r);
                }
            }
        }
        out.insert(a, b);
    }
    out
}

/// Asserts that every block of `live` still has exactly its bytes on `dev`.
fn assert_untouched<D: BlockDevice>(dev: &mut D, live: &BTreeMap<u64, Vec<u8>>, what: &str) {
    for (a, bytes) in live {
        assert!(
            &read_page(dev, *a) == bytes,
            "{what}: committed block {a} was overwritten before the next commit"
        );
    }
}

// ---------------------------------------------------------------------------------
// Reopen after commit
// ---------------------------------------------------------------------------------

/// Builds several commits on `e`, checking each against a reopen made by `reopen`.
fn commit_reopen_cycle<D: BlockDevice>(
    mut e: Engine<D>,
    reopen: &mut dyn FnMut(Engine<D>) -> Engine<D>,
) -> (Engine<D>, State) {
    let mut rng = Rng::new(11);
    let mut m = empty_state();
    populate(&mut e, &mut m, &mut rng, 6000, 600).unwrap();
    e.commit().unwrap();
    assert_eq!(read_state(&mut e), m);
    assert!(total_entries(&m) > 10_000);
    for round in 0..3 {
        let gen = e.generation();
        e = reopen(e);
        assert_eq!(e.generation(), gen, "round {round}");
        let st = read_state(&mut e);
        assert!(st == m, "round {round}: reopened state differs");
        check_lookups(&mut e, &m);
        assert_audit_clean(&mut e, "after reopen");
        for _ in 0..1500 {
            step(&mut e, &mut m, &mut rng).unwrap();
        }
        assert_eq!(read_state(&mut e), m);
        e.commit().unwrap();
        assert_eq!(e.generation(), gen + 1);
        // Uncommitted changes after the commit must vanish at the reopen.
        let mut scratch = m.clone();
        for _ in 0..300 {
            step(&mut e, &mut scratch, &mut rng).unwrap();
        }
    }
    e = reopen(e);
    assert_eq!(read_state(&mut e), m);
    assert_audit_clean(&mut e, "final reopen");
    (e, m)
}

#[test]
fn reopen_after_commit_mem_device() {
    for (cache, open_cache) in [(BIG_CACHE, BIG_CACHE), (SMALL_CACHE, SMALL_CACHE)] {
        let dev = MemDevice::new(4096, 1 << 14).unwrap();
        let e = Engine::format(dev, &fmt_opts(cache, Some(2048))).unwrap();
        let mut reopen = |e: Engine<MemDevice>| open(e.into_device(), open_cache);
        let (mut e, m) = commit_reopen_cycle(e, &mut reopen);
        // The device is a plain value: a copy of it opens to the same state.
        let copy = e.device_mut().clone();
        let mut e2 = open(copy, BIG_CACHE);
        assert_eq!(read_state(&mut e2), m);
        assert_eq!(e2.generation(), e.generation());
    }
}

#[test]
fn reopen_after_commit_512_byte_blocks() {
    let dev = MemDevice::new(512, 8 << 14).unwrap();
    let mut e = Engine::format(dev, &fmt_opts(SMALL_CACHE, Some(1100))).unwrap();
    let mut rng = Rng::new(5);
    let mut m = empty_state();
    populate(&mut e, &mut m, &mut rng, 3000, 300).unwrap();
    e.commit().unwrap();
    let mut e = open(e.into_device(), SMALL_CACHE);
    assert_eq!(read_state(&mut e), m);
    assert_audit_clean(&mut e, "512-byte device");
}

/// A temporary file path, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        TempFile(std::env::temp_dir().join(format!(
            "lunsnap-durability-{}-{tag}-{nanos}.img",
            std::process::id()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn reopen_after_commit_file_device() {
    let tmp = TempFile::new("reopen");
    let path = tmp.0.clone();
    let blocks = 1 << 14;
    let dev = FileDevice::create(&path, 4096, blocks).unwrap();
    let e = Engine::format(dev, &fmt_opts(BIG_CACHE, Some(2048))).unwrap();
    // Each reopen drops the engine and the file handle and opens the path again.
    let mut reopen = |e: Engine<FileDevice>| {
        drop(e);
        open(FileDevice::open(&path, 4096).unwrap(), BIG_CACHE)
    };
    let (e, m) = commit_reopen_cycle(e, &mut reopen);
    drop(e);

    // As if another process opened the file: nothing of the old handles survives.
    let dev = FileDevice::open(&path, 4096).unwrap();
    assert_eq!(dev.block_count(), blocks);
    let mut e = open(dev, SMALL_CACHE);
    assert_eq!(read_state(&mut e), m);
    check_lookups(&mut e, &m);
    assert_audit_clean(&mut e, "file reopened");

    // Change, commit, reopen through a fresh `std::fs::File` as well.
    let mut m2 = m.clone();
    let mut rng = Rng::new(99);
    for _ in 0..500 {
        step(&mut e, &mut m2, &mut rng).unwrap();
    }
    e.commit().unwrap();
    let gen = e.generation();
    drop(e);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let dev = FileDevice::from_file(file, 4096, blocks).unwrap();
    let mut e = open(dev, BIG_CACHE);
    assert_eq!(e.generation(), gen);
    assert_eq!(read_state(&mut e), m2);
    assert_audit_clean(&mut e, "file reopened via from_file");
    drop(e);
    drop(tmp);
    assert!(!path.exists(), "temporary file not removed");
}

// ---------------------------------------------------------------------------------
// Power cut before the commit
// ---------------------------------------------------------------------------------

type CutDev = PowerCutDevice<MemDevice>;

fn new_cut_dev(pages: u64) -> CutDev {
    PowerCutDevice::new(MemDevice::new(4096, pages).unwrap())
}

/// Formats, fills and commits "state A"; returns the engine and A.
fn state_a(cache: usize) -> (Engine<CutDev>, State) {
    let mut e = Engine::format(new_cut_dev(1 << 14), &fmt_opts(cache, Some(2048))).unwrap();
    let mut m = empty_state();
    let mut rng = Rng::new(1);
    populate(&mut e, &mut m, &mut rng, 3000, 400).unwrap();
    e.commit().unwrap();
    for _ in 0..200 {
        step(&mut e, &mut m, &mut rng).unwrap();
    }
    e.commit().unwrap();
    assert_eq!(read_state(&mut e), m);
    (e, m)
}

#[test]
fn power_cut_before_commit_recovers_last_commit() {
    let (mut e, a) = state_a(SMALL_CACHE);
    let gen_a = e.generation();
    let live_a = live_blocks(e.device_mut());
    assert!(live_a.len() > 20);
    let flushed = e.device_mut().flushes();

    // Many uncommitted changes through a 16-block cache: dirty blocks get written.
    let mut m = a.clone();
    let mut rng = Rng::new(2);
    for _ in 0..3000 {
        step(&mut e, &mut m, &mut rng).unwrap();
    }
    assert_ne!(m, a);
    let dev = e.device_mut();
    assert!(
        dev.unflushed_writes() > 100,
        "the changes must reach the device"
    );
    assert_eq!(dev.flushes(), flushed, "no commit happened");
    // Copy-on-write: not one block of the committed state was overwritten.
    assert_untouched(dev, &live_a, "uncommitted changes");
    let dev = e.into_device();

    let mut outcomes = vec![CutOutcome::DropAll, CutOutcome::KeepAll];
    outcomes.extend((0..40).map(|seed| CutOutcome::Random { seed }));
    for o in outcomes {
        let mut d = dev.clone();
        d.power_cut(o).unwrap();
        let mut e = open(d.into_inner(), SMALL_CACHE);
        assert_eq!(e.generation(), gen_a, "{o:?}");
        assert!(read_state(&mut e) == a, "{o:?}: state differs from A");
        assert_audit_clean(&mut e, &format!("{o:?}"));
        if matches!(o, CutOutcome::KeepAll | CutOutcome::Random { seed: 0 }) {
            // The recovered engine goes on working (no stale allocation state).
            check_lookups(&mut e, &a);
            let mut m = a.clone();
            let mut rng = Rng::new(3);
            for _ in 0..1000 {
                step(&mut e, &mut m, &mut rng).unwrap();
            }
            e.commit().unwrap();
            assert_eq!(read_state(&mut e), m);
            assert_audit_clean(&mut e, "continued after recovery");
            let mut e = open(e.into_device(), SMALL_CACHE);
            assert_eq!(read_state(&mut e), m);
        }
    }
}

#[test]
fn freed_blocks_are_not_reused_before_commit() {
    let mut e = Engine::format(new_cut_dev(1 << 13), &fmt_opts(SMALL_CACHE, Some(512))).unwrap();
    let mut t = e.create_tree(8, ValueKind::Opaque).unwrap();
    for k in 0..10u64 {
        e.insert(&mut t, k, &k.to_le_bytes()).unwrap();
    }
    e.set_root(0, Some(t)).unwrap();
    e.commit().unwrap();
    let old_root = t.root();
    let old_bytes = read_page(e.device_mut(), old_root);
    let live = live_blocks(e.device_mut());
    assert!(live.contains_key(&old_root));

    // Shadowing the committed root frees it in this transaction...
    e.insert(&mut t, 100, &[7; 8]).unwrap();
    e.set_root(0, Some(t)).unwrap();
    assert_ne!(t.root(), old_root, "a committed node must be shadowed");
    assert_eq!(e.meta_refcount(old_root).unwrap(), 0);
    assert!(e.space().meta_pinned > 0);
    // ...but a flood of allocations in the same transaction must not reuse it.
    let mut other = e.create_tree(200, ValueKind::Opaque).unwrap();
    for k in 0..2000u64 {
        e.insert(&mut other, k * 13, &[k as u8; 200]).unwrap();
    }
    e.set_root(1, Some(other)).unwrap();
    assert!(e.space().meta_allocated > 100);
    assert_eq!(read_page(e.device_mut(), old_root), old_bytes);
    assert_untouched(e.device_mut(), &live, "flood of allocations");

    // After the commit it may be reused; the new state is intact either way.
    e.commit().unwrap();
    let live2 = live_blocks(e.device_mut());
    assert!(!live2.contains_key(&old_root));
    let mut more = e.create_tree(200, ValueKind::Opaque).unwrap();
    for k in 0..500u64 {
        e.insert(&mut more, k, &[1; 200]).unwrap();
    }
    e.set_root(2, Some(more)).unwrap();
    assert_untouched(e.device_mut(), &live2, "second transaction");
    let st = read_state(&mut e);
    let mut e = open(e.into_device().into_inner(), SMALL_CACHE);
    let mut expected = st;
    expected[2] = None;
    assert_eq!(read_state(&mut e), expected);
    assert_audit_clean(&mut e, "after second commit");
}

// ---------------------------------------------------------------------------------
// Device failure during a commit
// ---------------------------------------------------------------------------------

/// Opens `base` and makes the "state B" changes (deterministic).
fn prepare_b(base: &CutDev, cache: usize, a: &State) -> (Engine<CutDev>, State) {
    let mut e = open(base.clone(), cache);
    let mut m = a.clone();
    let mut rng = Rng::new(77);
    for _ in 0..400 {
        step(&mut e, &mut m, &mut rng).unwrap();
    }
    (e, m)
}

fn assert_refuses_changes<D: BlockDevice>(e: &mut Engine<D>) {
    assert!(e.is_poisoned());
    let mut t = tree(e, MAIN);
    assert_eq!(e.insert(&mut t, 12345, &[0; MAIN_VS]), Err(Error::Poisoned));
    assert_eq!(e.remove(&mut t, 0), Err(Error::Poisoned));
    assert_eq!(e.clone_tree(&t), Err(Error::Poisoned));
    assert_eq!(e.alloc_data(), Err(Error::Poisoned));
    assert_eq!(e.set_root(7, None), Err(Error::Poisoned));
    assert_eq!(e.commit(), Err(Error::Poisoned));
}

fn crash_during_commit(cache: usize) {
    let (e, a) = state_a(cache);
    let gen_a = e.generation();
    let base = e.into_device();

    // A clean run tells how many writes the commit makes.
    let (mut e, b) = prepare_b(&base, cache, &a);
    assert_ne!(a, b);
    let w0 = e.device_mut().writes();
    e.commit().unwrap();
    let commit_writes = e.device_mut().writes() - w0;
    assert!(commit_writes >= 3, "commit wrote {commit_writes} blocks");
    assert_eq!(read_state(&mut e), b);
    drop(e);

    for n in 0..=commit_writes {
        let (mut e, b2) = prepare_b(&base, cache, &a);
        assert_eq!(b2, b);
        e.device_mut().fail_after_writes(Some(n));
        let r = e.commit();
        assert_eq!(r, Err(Error::Device(lunsnap::DeviceErrorKind::Io)), "n={n}");
        assert_refuses_changes(&mut e);
        // Reads still work and see the uncommitted state.
        let mut out = [0u8; MAIN_VS];
        let t = tree(&e, MAIN);
        if let Some((k, v)) = b[MAIN].as_ref().unwrap().entries.iter().next() {
            assert!(e.lookup(&t, *k, &mut out).unwrap());
            assert_eq!(&out[..], &v[..]);
        }
        let dev = e.into_device();
        // The commit point is the superblock's first copy, the second write from
        // the end; the device fails every write and flush after n writes. With
        // n = commit_writes - 1 the first copy was accepted but its flush failed:
        // it is in the volatile cache and either fate is possible. With all writes
        // accepted that flush succeeded and the new state is durable; with fewer,
        // the old state stays.
        let in_cache = n + 1 == commit_writes;
        let durable = n >= commit_writes;
        let outcomes = [
            CutOutcome::DropAll,
            CutOutcome::KeepAll,
            CutOutcome::Random { seed: n },
            CutOutcome::Harsh { seed: n },
        ];
        for o in outcomes {
            let mut d = dev.clone();
            d.power_cut(o).unwrap();
            let mut e = open(d.into_inner(), cache);
            let st = read_state(&mut e);
            let is_a = st == a;
            let is_b = st == b;
            assert!(is_a || is_b, "n={n} {o:?}: a mix of old and new state");
            let want_b = match o {
                _ if durable => Some(true),
                _ if !in_cache => Some(false),
                CutOutcome::DropAll => Some(false),
                CutOutcome::KeepAll => Some(true),
                _ => None,
            };
            if let Some(want_b) = want_b {
                assert_eq!(is_b, want_b, "n={n} {o:?}");
            }
            assert_eq!(e.generation(), if is_b { gen_a + 1 } else { gen_a });
            assert_audit_clean(&mut e, &format!("n={n} {o:?}"));
        }
    }
}

#[test]
fn crash_during_commit_big_cache() {
    crash_during_commit(BIG_CACHE);
}

#[test]
fn crash_during_commit_small_cache() {
    crash_during_commit(SMALL_CACHE);
}

// ---------------------------------------------------------------------------------
// A crash after every write of a longer workload
// ---------------------------------------------------------------------------------

const SWEEP_STEPS: usize = 150;
const SWEEP_COMMIT_EVERY: usize = 30;

struct Run {
    /// (generation, state) of the base and of every commit that returned Ok.
    commits: Vec<(u64, State)>,
    /// Writes made (relative to the run's start) before and after each commit attempt.
    commit_writes: Vec<(u64, u64)>,
    /// Set if an operation failed: the state being committed if it was a commit.
    failed: Option<Option<State>>,
    /// Writes accepted in the run.
    writes: u64,
    dev: CutDev,
}

fn sweep_run(base: &CutDev, a: &State, fail_after: Option<u64>) -> Run {
    let mut e = open(base.clone(), SMALL_CACHE);
    let w0 = e.device_mut().writes();
    e.device_mut().fail_after_writes(fail_after);
    let mut m = a.clone();
    let mut rng = Rng::new(0xC0FFEE);
    let mut run = Run {
        commits: vec![(e.generation(), a.clone())],
        commit_writes: Vec::new(),
        failed: None,
        writes: 0,
        dev: new_cut_dev(1),
    };
    for i in 0..SWEEP_STEPS {
        let r = if i % SWEEP_COMMIT_EVERY == SWEEP_COMMIT_EVERY - 1 {
            let before = e.device_mut().writes() - w0;
            let r = e.commit();
            run.commit_writes
                .push((before, e.device_mut().writes() - w0));
            match &r {
                Ok(()) => run.commits.push((e.generation(), m.clone())),
                Err(_) => run.failed = Some(Some(m.clone())),
            }
            r
        } else {
            let r = step(&mut e, &mut m, &mut rng);
            if r.is_err() {
                run.failed = Some(None);
            }
            r
        };
        if let Err(err) = r {
            assert_eq!(err, Error::Device(lunsnap::DeviceErrorKind::Io), "step {i}");
            assert_refuses_changes(&mut e);
            break;
        }
    }
    run.writes = e.device_mut().writes() - w0;
    run.dev = e.into_device();
    run
}

#[test]
fn crash_after_every_write_of_a_workload() {
    let (mut e, a) = {
        let mut e =
            Engine::format(new_cut_dev(1 << 13), &fmt_opts(SMALL_CACHE, Some(1100))).unwrap();
        let mut m = empty_state();
        let mut rng = Rng::new(8);
        populate(&mut e, &mut m, &mut rng, 1200, 150).unwrap();
        e.commit().unwrap();
        (e, m)
    };
    assert_eq!(read_state(&mut e), a);
    let base = e.into_device();

    // The clean run: every commit matches the model.
    let clean = sweep_run(&base, &a, None);
    assert!(clean.failed.is_none());
    assert_eq!(clean.commits.len(), 1 + SWEEP_STEPS / SWEEP_COMMIT_EVERY);
    {
        let mut e = open(clean.dev.clone(), SMALL_CACHE);
        let (g, last) = clean.commits.last().unwrap();
        assert_eq!(e.generation(), *g);
        assert_eq!(&read_state(&mut e), last);
        assert_audit_clean(&mut e, "clean run");
    }
    let total = clean.writes;
    assert!(total > 50, "workload made only {total} writes");

    for k in 0..=total {
        let run = sweep_run(&base, &a, Some(k));
        // Up to the failure the run is the clean run.
        assert_eq!(run.commits[..], clean.commits[..run.commits.len()]);
        let (gen_ok, old) = run.commits.last().unwrap().clone();
        let in_commit = run.failed.as_ref().and_then(|f| f.as_ref());
        // The commit point is the superblock's first copy (the second write from the
        // end of a commit); the device fails every write and flush after k writes.
        // With k = after - 1 that copy is in the volatile cache (its flush failed):
        // either fate. With k >= after it was flushed: the new state is durable.
        let end = clean.commit_writes[run.commits.len() - 1].1;
        let in_cache = in_commit.is_some() && k + 1 == end;
        let durable = in_commit.is_some() && k >= end;
        let mut outcomes = vec![
            CutOutcome::Random { seed: k },
            if k % 2 == 0 {
                CutOutcome::DropAll
            } else {
                CutOutcome::KeepAll
            },
        ];
        if in_cache {
            outcomes.extend([CutOutcome::DropAll, CutOutcome::KeepAll]);
            outcomes.dedup();
        }
        for o in outcomes {
            let mut d = run.dev.clone();
            d.power_cut(o).unwrap();
            let mut e = open(d.into_inner(), SMALL_CACHE);
            let st = read_state(&mut e);
            let gen = e.generation();
            if st == old {
                assert_eq!(gen, gen_ok, "k={k} {o:?}");
                assert!(!durable, "k={k} {o:?}: durable superblock lost");
                assert!(
                    !(in_cache && o == CutOutcome::KeepAll),
                    "k={k}: kept superblock lost"
                );
            } else {
                let new = in_commit.unwrap_or_else(|| {
                    panic!("k={k} {o:?}: state is not the last commit (gen {gen_ok})")
                });
                assert!(&st == new, "k={k} {o:?}: state is neither commit");
                assert!(
                    durable || in_cache,
                    "k={k} {o:?}: new state without its superblock"
                );
                assert!(durable || o != CutOutcome::DropAll);
                assert_eq!(gen, gen_ok + 1);
            }
            assert_audit_clean(&mut e, &format!("k={k} {o:?}"));
            if k % 16 == 0 {
                // Recovery leaves a working engine.
                let mut m = st.clone();
                let mut rng = Rng::new(k);
                for _ in 0..50 {
                    step(&mut e, &mut m, &mut rng).unwrap();
                }
                e.commit().unwrap();
                assert_audit_clean(&mut e, &format!("k={k} continued"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Crashes during format, and crash after crash
// ---------------------------------------------------------------------------------

#[test]
fn crash_during_format_gives_no_pool_or_an_empty_one() {
    // An old pool on the device, then a new format that fails part way.
    let (e, a) = state_a(BIG_CACHE);
    let old = e.into_device();
    let mut probe = old.clone();
    let w0 = probe.writes();
    drop(Engine::format(&mut probe, &fmt_opts(BIG_CACHE, Some(2048))).unwrap());
    let format_writes = probe.writes() - w0;
    for n in 0..=format_writes {
        let mut d = old.clone();
        d.fail_after_writes(Some(n));
        let r = Engine::format(&mut d, &fmt_opts(BIG_CACHE, Some(2048)));
        assert!(r.is_err(), "n={n}");
        drop(r);
        for o in [
            CutOutcome::DropAll,
            CutOutcome::KeepAll,
            CutOutcome::Random { seed: n },
        ] {
            let mut c = d.clone();
            c.power_cut(o).unwrap();
            match Engine::open(c.into_inner(), &OpenOptions::default()) {
                // The old pool, untouched, or the new empty one.
                Ok(mut e) => {
                    let st = read_state(&mut e);
                    assert!(st == empty_state() || st == a, "n={n} {o:?}");
                    assert_audit_clean(&mut e, &format!("format n={n} {o:?}"));
                }
                Err(err) => assert_eq!(err, Error::NotFormatted, "n={n} {o:?}"),
            }
        }
    }
}

#[test]
fn crash_after_crash() {
    let (e, a) = state_a(SMALL_CACHE);
    let mut committed = (e.generation(), a);
    let mut dev = e.into_device();
    let mut rng = Rng::new(4242);
    for round in 0..25u64 {
        let mut e = open(dev, SMALL_CACHE);
        assert_eq!(e.generation(), committed.0, "round {round}");
        assert!(read_state(&mut e) == committed.1, "round {round}");
        if round % 5 == 0 {
            assert_audit_clean(&mut e, &format!("round {round}"));
        }
        let mut m = committed.1.clone();
        let mut history = vec![committed.clone()];
        let mut pending = None;
        e.device_mut().fail_after_writes(Some(rng.below(120)));
        for i in 0..240 {
            if i % 40 == 39 {
                match e.commit() {
                    Ok(()) => history.push((e.generation(), m.clone())),
                    Err(_) => {
                        pending = Some((history.last().unwrap().0 + 1, m.clone()));
                        break;
                    }
                }
            } else if step(&mut e, &mut m, &mut rng).is_err() {
                break;
            }
        }
        dev = e.into_device();
        let o = match round % 3 {
            0 => CutOutcome::KeepAll,
            _ => CutOutcome::Random { seed: round },
        };
        dev.power_cut(o).unwrap();
        let mut e = open(dev, SMALL_CACHE);
        let st = (e.generation(), read_state(&mut e));
        let last = history.last().unwrap();
        assert!(
            st == *last || pending.as_ref() == Some(&st),
            "round {round} {o:?}: recovered generation {} is neither the last commit {} nor the pending one",
            st.0,
            last.0
        );
        committed = st;
        dev = e.into_device();
    }
}
