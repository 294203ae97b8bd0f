//! Model test of the copy-on-write B-tree: random sequences of tree operations on a
//! few root slots, checked after every step against `std::collections::BTreeMap`s.
//!
//! What is checked after every operation:
//! - `audit()` finds no violation (every stored metadata/data reference count equals
//!   the references actually found, keys ordered and in range, no empty node);
//! - every slot holds a tree iff the model has one, with the model's value shape, and
//!   an empty model tree is an empty handle (root 0);
//! - a full `range` of every tree yields exactly the model's entries, in order; a
//!   bounded `range` with early stop agrees; `lookup`s (hits and misses) agree and
//!   write nothing past the value;
//! - data extents: every extent the model references has a count of at least 1 and
//!   at most the number of (tree, key) pairs holding it, exactly that number when no
//!   tree shares nodes with another, and `data_allocated` is the number of distinct
//!   extents in the model (so nothing else is allocated: no leak, no early free);
//! - the root of every tree has at least as many references as slots holding it.
//!
//! Note on counting: cloning shares *nodes*, not values. An extent held by a leaf
//! shared by three clones has one reference (from that one leaf); it gains references
//! only when a shared leaf is shadowed. That is why the exact per-extent equality is
//! only asserted when no two live trees descend from the same clone family.

use std::collections::{BTreeMap, BTreeSet};

use lunsnap::engine::{Engine, Tree, ValueKind};
use lunsnap::engine::{FormatOptions, OpenOptions};
use lunsnap::{BlockDevice, Error, MemDevice};
use proptest::prelude::*;
use proptest::test_runner::Config;

const SLOTS: usize = 4;
const SMALL_CACHE: usize = 16 * 4096;
const BIG_CACHE: usize = 1 << 20;

/// Device geometry and key distribution of one test.
#[derive(Clone, Copy, Debug)]
struct Params {
    /// Device size in 4 KiB blocks.
    blocks: u64,
    /// Metadata pages provisioned.
    meta: u64,
    /// Most keys are drawn from `0..key_space`.
    key_space: u64,
    /// Longest burst of inserts.
    burst: u64,
    /// Relative frequency of insert bursts (single inserts: 30).
    burst_weight: u32,
}

/// Small trees, many operations. `audit()` visits every space-map entry, so a small
/// device keeps the per-step check cheap (about 5 ms per audit in a debug build).
const SMALL: Params = Params {
    blocks: 4300,
    meta: 512,
    key_space: 2000,
    burst: 400,
    burst_weight: 8,
};

/// A pool so small that allocation keeps wrapping around into blocks and extents
/// freed moments ago, and metadata sometimes runs out (the engine must then refuse
/// changes until reopened, and reopen at the last commit).
const TIGHT: Params = Params {
    blocks: 2 + 96 + 400,
    meta: 96,
    key_space: 400,
    burst: 100,
    burst_weight: 8,
};

/// Trees of thousands of 256-byte values (15 per leaf): two interior levels, so
/// interior nodes split, merge and rebalance too.
const DEEP: Params = Params {
    blocks: 1 << 14,
    meta: 4096,
    key_space: 12_000,
    burst: 4000,
    burst_weight: 16,
};

// ---------------------------------------------------------------------------
// Values

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    kind: ValueKind,
    vs: usize,
}

/// Shapes a tree may have. The 250/256-byte ones give 15 entries per leaf, so a few
/// thousand keys already make trees with two interior levels (interior splits,
/// interior merges and rebalancing).
const SHAPES: [Shape; 6] = [
    Shape {
        kind: ValueKind::Data,
        vs: 8,
    },
    Shape {
        kind: ValueKind::Data,
        vs: 4,
    },
    Shape {
        kind: ValueKind::Data,
        vs: 250,
    },
    Shape {
        kind: ValueKind::Opaque,
        vs: 12,
    },
    Shape {
        kind: ValueKind::Opaque,
        vs: 256,
    },
    Shape {
        kind: ValueKind::Opaque,
        vs: 1,
    },
];

impl Shape {
    /// Bytes at the start of a value that hold an extent number.
    fn ref_bytes(self) -> usize {
        match self.kind {
            ValueKind::Data if self.vs < 8 => 4,
            ValueKind::Data => 8,
            _ => 0,
        }
    }

    fn is_data(self) -> bool {
        self.kind == ValueKind::Data
    }

    /// A value: `extent` (Data trees) followed by payload bytes derived from `seed`.
    fn value(self, extent: Option<u64>, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; self.vs];
        let mut s = seed;
        for chunk in v.chunks_mut(8) {
            let x = splitmix(&mut s).to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
        if let Some(e) = extent {
            let n = self.ref_bytes();
            v[..n].copy_from_slice(&e.to_le_bytes()[..n]);
        }
        v
    }

    fn extent(self, v: &[u8]) -> Option<u64> {
        let n = self.ref_bytes();
        if n == 0 {
            return None;
        }
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&v[..n]);
        Some(u64::from_le_bytes(b))
    }
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------
// Model

#[derive(Clone, Debug)]
struct MTree {
    shape: Shape,
    map: BTreeMap<u64, Vec<u8>>,
    /// Trees of one family may share nodes (a clone and its origin).
    family: u64,
}

#[derive(Clone, Debug, Default)]
struct Model {
    slots: [Option<MTree>; SLOTS],
    next_family: u64,
    /// Data extent -> the tag written into it when it was allocated.
    tags: BTreeMap<u64, u64>,
}

impl Model {
    /// Extent -> number of (tree, key) pairs holding it.
    fn extent_pairs(&self) -> BTreeMap<u64, u32> {
        let mut m = BTreeMap::new();
        for t in self.slots.iter().flatten() {
            for v in t.map.values() {
                if let Some(e) = t.shape.extent(v) {
                    *m.entry(e).or_insert(0) += 1;
                }
            }
        }
        m
    }

    /// True if no two live trees can share a node.
    fn unshared(&self) -> bool {
        let mut seen = BTreeSet::new();
        self.slots
            .iter()
            .flatten()
            .all(|t| t.map.is_empty() || seen.insert(t.family))
    }

    fn new_family(&mut self) -> u64 {
        self.next_family += 1;
        self.next_family
    }
}

// ---------------------------------------------------------------------------
// Operations

#[derive(Clone, Debug)]
enum Op {
    /// Insert or replace one key (a fresh extent for Data trees).
    Insert {
        slot: usize,
        key: u64,
        seed: u64,
    },
    /// Data trees: insert a key whose value is an extent already held elsewhere
    /// (after `inc_data`), so one extent is referenced by several keys.
    InsertShared {
        slot: usize,
        key: u64,
        pick: usize,
        seed: u64,
    },
    /// A burst of keys `start, start+step, ...` (right-edge splits, deep trees).
    InsertMany {
        slot: usize,
        start: u64,
        count: u64,
        step: u64,
        seed: u64,
    },
    Remove {
        slot: usize,
        key: u64,
    },
    /// A burst of removes (merges, rebalancing, root collapse).
    RemoveMany {
        slot: usize,
        start: u64,
        count: u64,
        step: u64,
    },
    /// Remove every key of the tree, in an order given by `seed`.
    RemoveAll {
        slot: usize,
        seed: u64,
    },
    /// `dst` becomes a clone of `src` (whatever `dst` held is dropped).
    Clone {
        src: usize,
        dst: usize,
    },
    Drop {
        slot: usize,
    },
    Commit,
    /// Commit, close, reopen.
    Reopen,
    /// Close without committing, reopen: back to the last commit.
    ReopenWithoutCommit,
    /// Open a copy of the device as it is now (a power cut without torn writes):
    /// it must show exactly the last commit. The engine goes on unaffected.
    CrashImage,
}

fn key_strategy(p: Params) -> impl Strategy<Value = u64> + Clone {
    prop_oneof![
        20 => 0..p.key_space,
        1 => Just(0u64),
        1 => Just(u64::MAX),
        1 => (u64::MAX - 64)..=u64::MAX,
        1 => any::<u64>(),
    ]
}

fn op_strategy(p: Params) -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let key = key_strategy(p);
    prop_oneof![
        30 => (slot.clone(), key.clone(), any::<u64>())
            .prop_map(|(slot, key, seed)| Op::Insert { slot, key, seed }),
        6 => (slot.clone(), key.clone(), any::<usize>(), any::<u64>())
            .prop_map(|(slot, key, pick, seed)| Op::InsertShared { slot, key, pick, seed }),
        p.burst_weight => (slot.clone(), key.clone(), 1..p.burst, 1..4u64, any::<u64>()).prop_map(
            |(slot, start, count, step, seed)| Op::InsertMany { slot, start, count, step, seed }
        ),
        20 => (slot.clone(), key.clone()).prop_map(|(slot, key)| Op::Remove { slot, key }),
        6 => (slot.clone(), key, 1..p.burst * 3 / 2, 1..4u64).prop_map(
            |(slot, start, count, step)| Op::RemoveMany { slot, start, count, step }
        ),
        1 => (slot.clone(), any::<u64>()).prop_map(|(slot, seed)| Op::RemoveAll { slot, seed }),
        5 => (slot.clone(), slot.clone()).prop_map(|(src, dst)| Op::Clone { src, dst }),
        3 => slot.prop_map(|slot| Op::Drop { slot }),
        4 => Just(Op::Commit),
        2 => Just(Op::Reopen),
        2 => Just(Op::ReopenWithoutCommit),
        3 => Just(Op::CrashImage),
    ]
}

// ---------------------------------------------------------------------------
// Harness

struct Harness {
    e: Option<Engine<MemDevice>>,
    model: Model,
    committed: Model,
    /// Shape of a tree created in an empty slot.
    default_shape: [Shape; SLOTS],
    cache: usize,
    /// Extents the model referenced when the current operation began.
    live_at_start: BTreeSet<u64>,
    /// Fresh extents the current operation may still allocate.
    budget: u64,
    /// Operations abandoned because the pool ran out of metadata or data space.
    exhausted: u32,
    /// Next data extent tag (never reused, not even after a roll-back).
    next_tag: u64,
}

fn fmt_violations(v: &[lunsnap::engine::Violation]) -> String {
    let mut s = format!("{} violation(s):", v.len());
    for x in v.iter().take(8) {
        s.push_str(&format!("\n  {x}"));
    }
    s
}

fn format(p: Params, cache: usize) -> Engine<MemDevice> {
    Engine::format(
        MemDevice::new(4096, p.blocks).unwrap(),
        &FormatOptions {
            extent_size: 4096,
            cache_bytes: cache,
            metadata_pages: Some(p.meta),
            ..Default::default()
        },
    )
    .unwrap()
}

fn open(dev: MemDevice, cache: usize) -> Engine<MemDevice> {
    Engine::open(
        dev,
        &OpenOptions {
            cache_bytes: cache,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

impl Harness {
    fn new(p: Params, shapes: [Shape; SLOTS], cache: usize) -> Self {
        Harness {
            e: Some(format(p, cache)),
            model: Model::default(),
            committed: Model::default(),
            default_shape: shapes,
            cache,
            live_at_start: BTreeSet::new(),
            budget: 0,
            exhausted: 0,
            next_tag: 1,
        }
    }

    fn e(&mut self) -> &mut Engine<MemDevice> {
        self.e.as_mut().unwrap()
    }

    /// The slot's tree, created (empty, default shape) if the slot is empty.
    fn take_tree(&mut self, slot: usize) -> Result<Tree, Error> {
        if let Some(t) = self.e().root(slot)? {
            return Ok(t);
        }
        assert!(self.model.slots[slot].is_none());
        let shape = self.default_shape[slot];
        let t = self.e().create_tree(shape.vs, shape.kind)?;
        self.e().set_root(slot, Some(t))?;
        let family = self.model.new_family();
        self.model.slots[slot] = Some(MTree {
            shape,
            map: BTreeMap::new(),
            family,
        });
        Ok(t)
    }

    fn put_tree(&mut self, slot: usize, t: Tree) -> Result<(), Error> {
        self.e().set_root(slot, Some(t))?;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Error> {
        let g = self.e().generation();
        self.e().commit()?;
        assert_eq!(self.e().generation(), g + 1);
        let s = self.e().space();
        assert_eq!(
            (s.meta_pinned, s.data_pinned),
            (0, 0),
            "pinned after commit"
        );
        self.committed = self.model.clone();
        Ok(())
    }

    /// Before an operation: note the live extents and how many fresh ones may be
    /// allocated. Data extents freed in a transaction are pinned until it commits, so
    /// commit first when the pool is nearly out of free extents.
    fn begin(&mut self) -> Result<(), Error> {
        let s = self.e().space();
        if s.data_allocated + s.data_pinned + 8 > s.data_extents && s.data_pinned > 0 {
            self.commit()?;
        }
        let s = self.e().space();
        self.budget = s
            .data_extents
            .saturating_sub(s.data_allocated + s.data_pinned + 1);
        self.live_at_start = self.model.extent_pairs().into_keys().collect();
        Ok(())
    }

    /// Inserts `key` into the slot's tree `t` (already taken from the slot); for a
    /// Data tree does nothing once the allocation budget is spent.
    fn insert_one(&mut self, t: &mut Tree, slot: usize, key: u64, seed: u64) -> Result<(), Error> {
        let shape = self.model.slots[slot].as_ref().unwrap().shape;
        let extent = if shape.is_data() {
            if self.budget == 0 {
                return Ok(());
            }
            self.budget -= 1;
            let x = self.e().alloc_data()?;
            assert_eq!(self.e().data_refcount(x)?, 1, "fresh extent {x}");
            // (An extent freed earlier in this operation may come back at once.)
            assert!(
                !self.live_at_start.contains(&x) || !self.model.extent_pairs().contains_key(&x),
                "alloc_data handed out extent {x}, which the model still references"
            );
            // Write to the extent as the array would, to see that nothing still
            // referencing an extent (committed state included) ever gets it back.
            let tag = self.next_tag;
            self.next_tag += 1;
            let mut block = vec![0u8; 4096];
            block[..16].copy_from_slice(&tag_bytes(x, tag));
            let lba = self.e().extent_lba(x)?;
            self.e().device_mut().write(lba, &block).unwrap();
            self.model.tags.insert(x, tag);
            Some(x)
        } else {
            None
        };
        let v = shape.value(extent, seed);
        self.e().insert(t, key, &v)?;
        self.model.slots[slot].as_mut().unwrap().map.insert(key, v);
        Ok(())
    }

    fn remove_one(&mut self, t: &mut Tree, slot: usize, key: u64) -> Result<(), Error> {
        let was = self.e().remove(t, key)?;
        let m = self.model.slots[slot].as_mut().unwrap();
        assert_eq!(was, m.map.remove(&key).is_some(), "remove({key}) result");
        Ok(())
    }

    fn reopen(&mut self) {
        let dev = self.e.take().unwrap().into_device();
        let e = open(dev, self.cache);
        assert_eq!(e.space().meta_pinned, 0);
        assert_eq!(e.space().data_pinned, 0);
        assert!(!e.is_poisoned());
        self.e = Some(e);
    }

    /// Closes without committing and reopens: the model goes back to the last commit.
    fn roll_back(&mut self) {
        let g = self.e().generation();
        self.reopen();
        assert_eq!(self.e().generation(), g);
        self.model = self.committed.clone();
    }

    fn apply(&mut self, op: &Op) -> Result<(), Error> {
        self.begin()?;
        match *op {
            Op::Insert { slot, key, seed } => {
                let mut t = self.take_tree(slot)?;
                self.insert_one(&mut t, slot, key, seed)?;
                self.put_tree(slot, t)?;
            }
            Op::InsertShared {
                slot,
                key,
                pick,
                seed,
            } => {
                let mut t = self.take_tree(slot)?;
                let shape = self.model.slots[slot].as_ref().unwrap().shape;
                if shape.is_data() && !self.live_at_start.is_empty() {
                    let n = self.live_at_start.len();
                    let x = *self.live_at_start.iter().nth(pick % n).unwrap();
                    let before = self.e().data_refcount(x)?;
                    self.e().inc_data(x)?;
                    assert_eq!(self.e().data_refcount(x)?, before + 1);
                    let v = shape.value(Some(x), seed);
                    self.e().insert(&mut t, key, &v)?;
                    self.model.slots[slot].as_mut().unwrap().map.insert(key, v);
                } else {
                    self.insert_one(&mut t, slot, key, seed)?;
                }
                self.put_tree(slot, t)?;
            }
            Op::InsertMany {
                slot,
                start,
                count,
                step,
                seed,
            } => {
                let mut t = self.take_tree(slot)?;
                let mut s = seed;
                for i in 0..count {
                    let Some(key) = i.checked_mul(step).and_then(|d| start.checked_add(d)) else {
                        break;
                    };
                    let vseed = splitmix(&mut s);
                    self.insert_one(&mut t, slot, key, vseed)?;
                }
                self.put_tree(slot, t)?;
            }
            Op::Remove { slot, key } => {
                if self.model.slots[slot].is_some() {
                    let mut t = self.take_tree(slot)?;
                    self.remove_one(&mut t, slot, key)?;
                    self.put_tree(slot, t)?;
                }
            }
            Op::RemoveMany {
                slot,
                start,
                count,
                step,
            } => {
                if self.model.slots[slot].is_some() {
                    let mut t = self.take_tree(slot)?;
                    for i in 0..count {
                        let Some(key) = i.checked_mul(step).and_then(|d| start.checked_add(d))
                        else {
                            break;
                        };
                        self.remove_one(&mut t, slot, key)?;
                    }
                    self.put_tree(slot, t)?;
                }
            }
            Op::RemoveAll { slot, seed } => {
                if let Some(m) = &self.model.slots[slot] {
                    let mut keys: Vec<u64> = m.map.keys().copied().collect();
                    let mut s = seed;
                    for i in (1..keys.len()).rev() {
                        let j = (splitmix(&mut s) % (i as u64 + 1)) as usize;
                        keys.swap(i, j);
                    }
                    let mut t = self.take_tree(slot)?;
                    for k in keys {
                        self.remove_one(&mut t, slot, k)?;
                    }
                    assert!(t.is_empty(), "tree not empty after removing every key");
                    self.put_tree(slot, t)?;
                }
            }
            Op::Clone { src, dst } => {
                if let Some(t) = self.e().root(src)? {
                    let before = self.e().space().meta_allocated;
                    let c = self.e().clone_tree(&t)?;
                    assert_eq!(c, t);
                    // A clone allocates no tree node (the counts' own map may shadow).
                    assert!(self.e().space().meta_allocated <= before + 2);
                    if let Some(old) = self.e().set_root(dst, Some(c))? {
                        self.e().drop_tree(old)?;
                    }
                    self.model.slots[dst] = self.model.slots[src].clone();
                }
            }
            Op::Drop { slot } => {
                let old = self.e().set_root(slot, None)?;
                assert_eq!(old.is_some(), self.model.slots[slot].is_some());
                if let Some(old) = old {
                    self.e().drop_tree(old)?;
                }
                self.model.slots[slot] = None;
            }
            Op::Commit => self.commit()?,
            Op::Reopen => {
                self.commit()?;
                let before = self.e().space();
                let g = self.e().generation();
                self.reopen();
                assert_eq!(self.e().space(), before, "space accounting after reopen");
                assert_eq!(self.e().generation(), g);
            }
            Op::ReopenWithoutCommit => self.roll_back(),
            Op::CrashImage => {
                let image = self.e().device_mut().clone();
                let mut e = open(image, SMALL_CACHE);
                assert_eq!(e.generation(), self.e().generation());
                check_engine(&mut e, &self.committed, &[0, 1000], "crash image: ");
            }
        }
        Ok(())
    }

    /// Everything the engine says agrees with the model.
    fn check(&mut self, probes: &[u64]) {
        let e = self.e.as_mut().unwrap();
        check_engine(e, &self.model, probes, "");
    }

    /// Drops every tree; then nothing may remain allocated but the space maps' nodes.
    fn finish(&mut self) {
        for slot in 0..SLOTS {
            if let Some(t) = self.e().set_root(slot, None).unwrap() {
                self.e().drop_tree(t).unwrap();
            }
            self.model.slots[slot] = None;
        }
        let v = self.e().audit();
        assert!(
            v.is_empty(),
            "audit after dropping all: {}",
            fmt_violations(&v)
        );
        self.e().commit().unwrap();
        let s = self.e().space();
        assert_eq!(s.data_allocated, 0, "{s:?}");
        assert!(s.meta_allocated <= map_nodes_bound(&s), "leak: {s:?}");
        self.reopen();
        let v = self.e().audit();
        assert!(v.is_empty(), "audit after reopen: {}", fmt_violations(&v));
        assert_eq!(self.e().space(), s);
    }
}

/// Everything `e` says agrees with `model`; `what` prefixes failure messages.
fn check_engine(e: &mut Engine<MemDevice>, model: &Model, probes: &[u64], what: &str) {
    let v = e.audit();
    assert!(v.is_empty(), "{what}audit: {}", fmt_violations(&v));

    let mut root_holders: BTreeMap<u64, u32> = BTreeMap::new();
    for slot in 0..SLOTS {
        let t = e.root(slot).unwrap();
        let (t, m) = match (t, &model.slots[slot]) {
            (None, None) => continue,
            (Some(t), Some(m)) => (t, m),
            (t, m) => panic!(
                "{what}slot {slot}: engine holds {t:?}, model holds a tree: {}",
                m.is_some()
            ),
        };
        assert_eq!(
            (t.kind(), t.value_size()),
            (m.shape.kind, m.shape.vs),
            "{what}slot {slot}: shape"
        );
        assert_eq!(
            t.is_empty(),
            m.map.is_empty(),
            "{what}slot {slot}: emptiness"
        );
        if !t.is_empty() {
            *root_holders.entry(t.root()).or_insert(0) += 1;
        }
        check_range(e, slot, &t, &m.map, 0, u64::MAX, usize::MAX);
        for (i, &p) in probes.iter().enumerate() {
            let hi = p.saturating_add(1 + (p % 97) * (i as u64 + 1));
            check_range(e, slot, &t, &m.map, p, hi, 1 + (p as usize % 40));
            check_range(e, slot, &t, &m.map, hi, p, usize::MAX);
            for k in [p, p.wrapping_add(1), p.wrapping_sub(1)] {
                check_lookup(e, slot, &t, m, k);
            }
        }
        let ends = [m.map.first_key_value(), m.map.last_key_value()];
        for (&k, _) in ends.into_iter().flatten() {
            check_lookup(e, slot, &t, m, k);
        }
    }
    for (&root, &holders) in &root_holders {
        let rc = e.meta_refcount(root).unwrap();
        assert!(
            rc >= holders,
            "{what}root {root} held by {holders} slots has count {rc}"
        );
    }

    let pairs = model.extent_pairs();
    let exact = model.unshared();
    let mut block = vec![0u8; 4096];
    for (&x, &n) in &pairs {
        let rc = e.data_refcount(x).unwrap();
        if exact {
            assert_eq!(
                rc, n,
                "{what}extent {x}: count vs (tree, key) pairs, no sharing"
            );
        } else {
            assert!(
                (1..=n).contains(&rc),
                "{what}extent {x}: count {rc} outside 1..={n}"
            );
        }
        // The extent still holds what was written when it was allocated: it was
        // never handed out again while referenced.
        let lba = e.extent_lba(x).unwrap();
        e.device_mut().read(lba, &mut block).unwrap();
        assert_eq!(
            &block[..16],
            &tag_bytes(x, model.tags[&x]),
            "{what}extent {x}: content overwritten"
        );
    }
    assert_eq!(
        e.space().data_allocated,
        pairs.len() as u64,
        "{what}data_allocated vs distinct extents in the model"
    );
}

fn check_range(
    e: &mut Engine<MemDevice>,
    slot: usize,
    t: &Tree,
    map: &BTreeMap<u64, Vec<u8>>,
    lo: u64,
    hi: u64,
    limit: usize,
) {
    let mut it = map
        .range(lo..=hi.max(lo))
        .take(if lo > hi { 0 } else { limit });
    let mut seen = 0usize;
    let mut bad: Option<String> = None;
    e.range(t, lo, hi, |k, v| {
        match it.next() {
            Some((mk, mv)) if *mk == k && mv.as_slice() == v => {}
            Some((mk, mv)) => {
                bad = Some(format!(
                    "entry {seen}: engine ({k}, {:?}), model ({mk}, {:?})",
                    &v[..v.len().min(8)],
                    &mv[..mv.len().min(8)]
                ))
            }
            None => bad = Some(format!("entry {seen}: engine has extra key {k}")),
        }
        seen += 1;
        bad.is_none() && seen < limit
    })
    .unwrap();
    if bad.is_none() {
        if let Some((mk, _)) = it.next() {
            bad = Some(format!(
                "engine stopped after {seen} entries, model has {mk}"
            ));
        }
    }
    if let Some(b) = bad {
        panic!("slot {slot}: range({lo}, {hi}, limit {limit}): {b}");
    }
}

fn check_lookup(e: &mut Engine<MemDevice>, slot: usize, t: &Tree, m: &MTree, key: u64) {
    let mut out = vec![0xA5u8; m.shape.vs + 3];
    let hit = e.lookup(t, key, &mut out).unwrap();
    match m.map.get(&key) {
        Some(v) => {
            assert!(hit, "slot {slot}: lookup({key}) missed");
            assert_eq!(
                &out[..m.shape.vs],
                v.as_slice(),
                "slot {slot}: lookup({key})"
            );
        }
        None => assert!(!hit, "slot {slot}: lookup({key}) found an absent key"),
    }
    assert_eq!(
        &out[m.shape.vs..],
        &[0xA5; 3],
        "lookup wrote past the value"
    );
}

/// What a data extent's first bytes hold: its number and the tag it got when allocated.
fn tag_bytes(extent: u64, tag: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&extent.to_le_bytes());
    b[8..].copy_from_slice(&tag.to_le_bytes());
    b
}

/// Most blocks the two space maps' own nodes can occupy (leaves plus index nodes).
fn map_nodes_bound(s: &lunsnap::engine::SpaceStats) -> u64 {
    let per_leaf = lunsnap::testing::layout::COUNTS_PER_LEAF;
    let nodes = |entries: u64| {
        let leaves = entries.div_ceil(per_leaf);
        leaves + leaves.div_ceil(lunsnap::testing::layout::PTRS_PER_INDEX) + 1
    };
    nodes(s.meta_pages) + nodes(s.data_extents)
}

/// The probe keys checked after `op`: around the keys it touched.
fn probes(i: usize, op: &Op) -> [u64; 3] {
    let p = match *op {
        Op::Insert { key, .. } | Op::InsertShared { key, .. } | Op::Remove { key, .. } => key,
        Op::InsertMany { start, .. } | Op::RemoveMany { start, .. } => start,
        _ => i as u64 * 37,
    };
    [p, p / 2, u64::MAX - p]
}

/// Runs `ops` from a fresh format, checking the model after each.
fn run(p: Params, shapes: [Shape; SLOTS], small_cache: bool, ops: &[Op]) -> Harness {
    let cache = if small_cache { SMALL_CACHE } else { BIG_CACHE };
    let mut h = Harness::new(p, shapes, cache);
    h.check(&[0, 1, u64::MAX]);
    for (i, op) in ops.iter().enumerate() {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match h.apply(op) {
                Ok(()) => {}
                // Running out of space is allowed; the engine must then refuse further
                // changes until reopened, and reopening gives back the last commit.
                Err(Error::MetadataSpaceExhausted | Error::DataSpaceExhausted) => {
                    assert!(h.e().is_poisoned());
                    assert!(matches!(h.e().commit(), Err(Error::Poisoned)));
                    h.exhausted += 1;
                    h.roll_back();
                }
                Err(e) => panic!("engine error: {e:?}"),
            }
            h.check(&probes(i, op));
        }));
        if let Err(panic) = r {
            eprintln!("failed at op #{i}: {op:?}");
            std::panic::resume_unwind(panic);
        }
    }
    h.finish();
    h
}

fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        // Keep the crate tree clean: no proptest-regressions/ directory.
        failure_persistence: None,
        ..Config::default()
    }
}

fn shapes_strategy() -> impl Strategy<Value = [Shape; SLOTS]> {
    proptest::array::uniform4((0..SHAPES.len()).prop_map(|i| SHAPES[i]))
}

proptest! {
    #![proptest_config(config(24))]

    /// Four Data trees of 8-byte values (extent numbers): the configuration of the
    /// array's LUN mappings.
    #[test]
    fn data_trees_match_model(
        small_cache in any::<bool>(),
        ops in proptest::collection::vec(op_strategy(SMALL), 50..150),
    ) {
        run(SMALL, [SHAPES[0]; SLOTS], small_cache, &ops);
    }

    /// Mixed shapes per slot (4/8/250-byte Data values, 1/12/256-byte Opaque ones);
    /// clones carry their shape into the destination slot.
    #[test]
    fn mixed_shape_trees_match_model(
        shapes in shapes_strategy(),
        small_cache in any::<bool>(),
        ops in proptest::collection::vec(op_strategy(SMALL), 50..150),
    ) {
        run(SMALL, shapes, small_cache, &ops);
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// Nearly full pools: every freed block or extent is soon handed out again.
    #[test]
    fn tight_pool_trees_match_model(
        shapes in shapes_strategy(),
        small_cache in any::<bool>(),
        ops in proptest::collection::vec(op_strategy(TIGHT), 50..150),
    ) {
        run(TIGHT, shapes, small_cache, &ops);
    }
}

proptest! {
    #![proptest_config(config(6))]

    /// Big bursts into trees of 256-byte values: thousands of keys per tree, so
    /// interior nodes split, merge and rebalance too.
    #[test]
    fn deep_trees_match_model(
        small_cache in any::<bool>(),
        ops in proptest::collection::vec(op_strategy(DEEP), 20..50),
    ) {
        run(DEEP, [SHAPES[4], SHAPES[2], SHAPES[4], SHAPES[3]], small_cache, &ops);
    }
}

// ---------------------------------------------------------------------------
// Plain tests

fn assert_audit(e: &mut Engine<MemDevice>) {
    let v = e.audit();
    assert!(v.is_empty(), "audit: {}", fmt_violations(&v));
}

fn count(e: &mut Engine<MemDevice>, t: &Tree) -> u64 {
    let mut n = 0;
    e.range(t, 0, u64::MAX, |_, _| {
        n += 1;
        true
    })
    .unwrap();
    n
}

/// A scripted run through the model that surely builds trees with two interior
/// levels, then clones, thins and empties them.
#[test]
fn deep_tree_script_matches_model() {
    use Op::*;
    let ops = [
        InsertMany {
            slot: 0,
            start: 0,
            count: 4000,
            step: 3,
            seed: 1,
        },
        InsertMany {
            slot: 0,
            start: 1,
            count: 4000,
            step: 3,
            seed: 2,
        },
        Commit,
        Clone { src: 0, dst: 1 },
        RemoveMany {
            slot: 0,
            start: 0,
            count: 6000,
            step: 2,
        },
        InsertMany {
            slot: 1,
            start: 20_000,
            count: 3000,
            step: 1,
            seed: 3,
        },
        Clone { src: 1, dst: 2 },
        Reopen,
        RemoveMany {
            slot: 1,
            start: 2,
            count: 12_000,
            step: 1,
        },
        ReopenWithoutCommit,
        RemoveAll { slot: 2, seed: 4 },
        InsertMany {
            slot: 3,
            start: u64::MAX - 999,
            count: 1000,
            step: 1,
            seed: 5,
        },
        RemoveMany {
            slot: 1,
            start: 1,
            count: 4000,
            step: 3,
        },
        Commit,
        RemoveAll { slot: 0, seed: 6 },
        Drop { slot: 1 },
        Reopen,
    ];
    let h = run(
        DEEP,
        [SHAPES[4], SHAPES[4], SHAPES[4], SHAPES[2]],
        true,
        &ops,
    );
    assert_eq!(h.exhausted, 0);
}

#[test]
fn sequential_fill_is_dense_and_clone_is_one_refcount_change() {
    const N: u64 = 100_000;
    let mut e = format(DEEP, BIG_CACHE);
    let base = e.space().meta_allocated;
    let mut t = e.create_tree(8, ValueKind::Opaque).unwrap();
    for k in 0..N {
        e.insert(&mut t, k, &(k ^ 0xABCD).to_le_bytes()).unwrap();
    }
    e.set_root(0, Some(t)).unwrap();
    e.commit().unwrap();
    assert_audit(&mut e);
    // Appends split unevenly, so the leaves are full (253 entries of 8 bytes).
    let leaves = N.div_ceil(253);
    let nodes = e.space().meta_allocated - base;
    assert!(
        nodes <= leaves + 2 + 8,
        "{nodes} metadata pages for {leaves} full leaves"
    );

    let before = e.space();
    assert_eq!(e.meta_refcount(t.root()).unwrap(), 1);
    let c = e.clone_tree(&t).unwrap();
    assert_eq!(c.root(), t.root());
    assert_eq!(e.meta_refcount(t.root()).unwrap(), 2);
    // One count changed: at most the counts' leaf (and its index) got shadowed.
    let after = e.space();
    assert_eq!(after.meta_allocated, before.meta_allocated);
    assert!(after.meta_pinned <= 2, "{after:?}");
    e.set_root(1, Some(c)).unwrap();
    assert_audit(&mut e);

    // Changing the clone shadows one root-to-leaf path and leaves the original intact.
    let mut c = c;
    let a0 = e.space().meta_allocated;
    e.insert(&mut c, N / 2, &[0xFF; 8]).unwrap();
    e.set_root(1, Some(c)).unwrap();
    assert!(e.space().meta_allocated - a0 <= 3 + 2, "{:?}", e.space());
    assert_eq!(e.meta_refcount(t.root()).unwrap(), 1);
    assert_eq!(e.meta_refcount(c.root()).unwrap(), 1);
    let mut out = [0u8; 8];
    assert!(e.lookup(&t, N / 2, &mut out).unwrap());
    assert_eq!(u64::from_le_bytes(out), (N / 2) ^ 0xABCD);
    assert!(e.lookup(&c, N / 2, &mut out).unwrap());
    assert_eq!(out, [0xFF; 8]);
    assert_eq!(count(&mut e, &t), N);
    assert_eq!(count(&mut e, &c), N);
    assert_audit(&mut e);
}

#[test]
fn removing_every_key_empties_the_tree_and_frees_its_nodes() {
    for (kind, vs) in [(ValueKind::Data, 8), (ValueKind::Opaque, 256)] {
        for cache in [SMALL_CACHE, BIG_CACHE] {
            let mut e = format(DEEP, cache);
            let mut t = e.create_tree(vs, kind).unwrap();
            let mut keys: Vec<u64> = (0..3000u64).map(|i| i.wrapping_mul(0x9E37_79B9)).collect();
            for (i, &k) in keys.iter().enumerate() {
                let mut v = vec![i as u8; vs];
                if kind == ValueKind::Data {
                    v[..8].copy_from_slice(&e.alloc_data().unwrap().to_le_bytes());
                }
                e.insert(&mut t, k, &v).unwrap();
            }
            e.set_root(0, Some(t)).unwrap();
            e.commit().unwrap();
            assert_audit(&mut e);
            // Remove in another order than inserted.
            keys.sort_unstable_by_key(|k| k.rotate_left(17) ^ 0x5555);
            for (i, &k) in keys.iter().enumerate() {
                assert!(e.remove(&mut t, k).unwrap(), "key {k}");
                assert!(!e.remove(&mut t, k).unwrap(), "key {k} twice");
                if i % 500 == 0 {
                    e.set_root(0, Some(t)).unwrap();
                    assert_audit(&mut e);
                }
            }
            assert!(t.is_empty());
            e.set_root(0, Some(t)).unwrap();
            assert_audit(&mut e);
            e.commit().unwrap();
            let s = e.space();
            assert_eq!(s.data_allocated, 0, "{s:?}");
            assert!(s.meta_allocated <= map_nodes_bound(&s), "{s:?}");
            assert_eq!(count(&mut e, &t), 0);
        }
    }
}

#[test]
fn replacing_or_removing_a_value_releases_its_extent() {
    let mut e = format(SMALL, BIG_CACHE);
    let mut t = e.create_tree(8, ValueKind::Data).unwrap();
    let x = e.alloc_data().unwrap();
    e.insert(&mut t, 7, &x.to_le_bytes()).unwrap();
    assert_eq!(e.data_refcount(x).unwrap(), 1);
    let y = e.alloc_data().unwrap();
    e.insert(&mut t, 7, &y.to_le_bytes()).unwrap();
    assert_eq!(
        e.data_refcount(x).unwrap(),
        0,
        "replaced extent not released"
    );
    assert_eq!(e.data_refcount(y).unwrap(), 1);
    assert_eq!(e.space().data_allocated, 1);
    e.set_root(0, Some(t)).unwrap();
    e.commit().unwrap();
    assert_audit(&mut e);

    // Replace in a clone: the original keeps its extent.
    let mut c = e.clone_tree(&t).unwrap();
    let z = e.alloc_data().unwrap();
    e.insert(&mut c, 7, &z.to_le_bytes()).unwrap();
    e.set_root(1, Some(c)).unwrap();
    assert_eq!(e.data_refcount(y).unwrap(), 1);
    assert_eq!(e.data_refcount(z).unwrap(), 1);
    assert_audit(&mut e);
    let mut out = [0u8; 8];
    assert!(e.lookup(&t, 7, &mut out).unwrap());
    assert_eq!(u64::from_le_bytes(out), y);
    assert!(e.lookup(&c, 7, &mut out).unwrap());
    assert_eq!(u64::from_le_bytes(out), z);

    // Remove from the clone: its extent goes; the original's stays.
    assert!(e.remove(&mut c, 7).unwrap());
    e.set_root(1, Some(c)).unwrap();
    assert_eq!(e.data_refcount(z).unwrap(), 0);
    assert_eq!(e.data_refcount(y).unwrap(), 1);
    assert!(c.is_empty());
    assert_audit(&mut e);
    let t = e.set_root(0, None).unwrap().unwrap();
    e.drop_tree(t).unwrap();
    assert_eq!(e.data_refcount(y).unwrap(), 0);
    assert_eq!(e.space().data_allocated, 0);
    assert_audit(&mut e);
}

#[test]
fn reopen_without_commit_forgets_evicted_changes() {
    let mut e = format(SMALL, SMALL_CACHE);
    let mut t = e.create_tree(256, ValueKind::Opaque).unwrap();
    for k in 0..500u64 {
        e.insert(&mut t, k, &[k as u8; 256]).unwrap();
    }
    e.set_root(0, Some(t)).unwrap();
    e.commit().unwrap();
    let committed = e.space();
    let mut e = open(e.into_device(), SMALL_CACHE);
    // Far more changes than the cache holds, so dirty blocks reach the device.
    let mut t = e.root(0).unwrap().unwrap();
    let mut c = e.clone_tree(&t).unwrap();
    for k in 0..2000u64 {
        e.insert(&mut c, k * 3, &[0xEE; 256]).unwrap();
        if k % 2 == 0 {
            e.remove(&mut t, k / 2).unwrap();
        }
    }
    e.set_root(0, Some(t)).unwrap();
    e.set_root(1, Some(c)).unwrap();
    assert_audit(&mut e);
    assert!(e.cache_stats().writes > 0, "nothing was evicted");
    let mut e = open(e.into_device(), SMALL_CACHE);
    assert_eq!(e.space(), committed);
    assert!(e.root(1).unwrap().is_none());
    let t = e.root(0).unwrap().unwrap();
    let mut out = [0u8; 256];
    for k in 0..500u64 {
        assert!(e.lookup(&t, k, &mut out).unwrap());
        assert_eq!(out, [k as u8; 256]);
    }
    assert_eq!(count(&mut e, &t), 500);
    assert_audit(&mut e);
    // And the engine works on from there, reusing the abandoned blocks.
    let mut t = t;
    for k in 500..1500u64 {
        e.insert(&mut t, k, &[1; 256]).unwrap();
    }
    e.set_root(0, Some(t)).unwrap();
    assert_audit(&mut e);
    e.commit().unwrap();
    assert_audit(&mut e);
    assert_eq!(count(&mut e, &t), 1500);
}
