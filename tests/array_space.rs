//! Space (docs/DESIGN.md §2 "Space"):
//!
//! * full-size reservation: with the pool reserved to the last extent and copies
//!   sharing every extent, overwriting everything again and again without a flush
//!   never fails (the array commits early to reuse freed extents);
//! * create / attach that cannot reserve fail with `NoSpace` and change nothing;
//!   operations that need no new reservation (refresh, restore, detach, delete,
//!   detached copies) still work on a full pool;
//! * metadata is provisioned for the worst case: filling every LUN of a pool whose
//!   sizes add up to its capacity, densely and sparsely, with copies of copies, deleted
//!   and recreated copies, restores and attaches, never runs out of metadata.

mod common;

use std::collections::BTreeMap;

use common::{assert_clean, fill_sector, mem};
use lunsnap::testing::Rng;
use lunsnap::{Array, Error, FormatOptions, LunKind, MemDevice, OpenOptions, PoolInfo};

type Arr = Array<MemDevice>;

const SECTOR: u64 = 512;
const KIB: u64 = 1024;

/// Shuffles `v` (Fisher-Yates).
fn shuffle<T>(rng: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

// ---------------------------------------------------------------------------------
// The array with a model of its contents (one write tag per sector)
// ---------------------------------------------------------------------------------

struct H {
    a: Arr,
    /// Tags of the sectors of every attached LUN.
    data: BTreeMap<u32, Vec<u64>>,
    next_tag: u64,
    /// Largest metadata_used_bytes seen.
    meta_peak: u64,
    /// Commits made by writes (early commits), counted by generation.
    early_commits: u64,
}

impl H {
    fn format(bytes: u64, extent_size: u32, cache_bytes: usize) -> H {
        let dev = mem(bytes);
        let opts = FormatOptions {
            extent_size,
            max_luns: 16,
            cache_bytes,
            array_id: *b"space-tests-0001",
            ..FormatOptions::default()
        };
        let a = Array::format(dev, &opts).unwrap();
        H {
            a,
            data: BTreeMap::new(),
            next_tag: 1,
            meta_peak: 0,
            early_commits: 0,
        }
    }

    fn pool(&mut self) -> PoolInfo {
        let p = self.a.pool_info();
        self.meta_peak = self.meta_peak.max(p.metadata_used_bytes);
        p
    }

    fn extent(&self) -> u64 {
        u64::from(self.a.extent_size())
    }

    fn size(&self, n: u32) -> u64 {
        self.data[&n].len() as u64 * SECTOR
    }

    /// Writes `sectors` sectors at `offset` of LUN `n`; any error fails the test.
    fn write(&mut self, n: u32, offset: u64, sectors: u64) {
        let tag = self.next_tag;
        self.next_tag += 1;
        let first = offset / SECTOR;
        let mut buf = vec![0u8; (sectors * SECTOR) as usize];
        let tags = self.data.get_mut(&n).unwrap();
        for (i, c) in buf.chunks_mut(SECTOR as usize).enumerate() {
            let s = first + i as u64;
            fill_sector(c, tag, s);
            tags[s as usize] = tag;
        }
        let g = self.a.pool_info().generation;
        if let Err(e) = self.a.write(n, offset, &buf) {
            let p = self.pool();
            panic!("write to LUN {n} at {offset} ({sectors} sectors) failed: {e:?}; pool {p:?}");
        }
        self.early_commits += self.pool().generation - g;
    }

    fn ok(&mut self, what: &str, r: lunsnap::Result<()>) {
        if let Err(e) = r {
            let p = self.pool();
            panic!("{what} failed: {e:?}; pool {p:?}");
        }
        self.pool();
    }

    fn create_lun(&mut self, n: u32, size: u64) {
        let r = self.a.create_lun(n, size);
        self.ok(&format!("create_lun({n}, {size})"), r);
        self.data.insert(n, vec![0; (size / SECTOR) as usize]);
    }

    fn create_copy(&mut self, parent: u32, n: u32, attached: bool) {
        let r = self.a.create_copy(parent, n, attached);
        self.ok(&format!("create_copy({parent}, {n}, {attached})"), r);
        if attached {
            let d = self.data[&parent].clone();
            self.data.insert(n, d);
        }
    }

    fn attach(&mut self, n: u32) {
        let r = self.a.attach(n);
        self.ok(&format!("attach({n})"), r);
        let p = self.a.lun_info(n).unwrap().parent.unwrap();
        let d = self.data[&p].clone();
        self.data.insert(n, d);
    }

    fn detach(&mut self, n: u32) {
        let r = self.a.detach(n);
        self.ok(&format!("detach({n})"), r);
        self.data.remove(&n);
    }

    fn delete(&mut self, n: u32, orphan: bool) {
        let r = self.a.delete(n, orphan);
        self.ok(&format!("delete({n}, {orphan})"), r);
        self.data.remove(&n);
    }

    fn restore(&mut self, n: u32) {
        let r = self.a.restore(n);
        self.ok(&format!("restore({n})"), r);
        let p = self.a.lun_info(n).unwrap().parent.unwrap();
        let d = self.data[&n].clone();
        self.data.insert(p, d);
    }

    fn flush(&mut self) {
        let r = self.a.flush();
        self.ok("flush", r);
    }

    /// Every sector of every attached LUN reads what the model says.
    fn verify(&mut self, what: &str) {
        let mut want = vec![0u8; SECTOR as usize];
        for (&n, tags) in &self.data {
            let mut buf = vec![0u8; tags.len() * SECTOR as usize];
            self.a.read(n, 0, &mut buf).unwrap();
            for (s, c) in buf.chunks(SECTOR as usize).enumerate() {
                fill_sector(&mut want, tags[s], s as u64);
                assert!(
                    c == &want[..],
                    "{what}: LUN {n} sector {s} differs from write {}",
                    tags[s]
                );
            }
        }
    }

    fn clean(&mut self, what: &str) {
        assert_clean(&mut self.a, what);
    }

    /// Closes (commits) and reopens the array.
    fn reopen(self, cache_bytes: usize) -> H {
        let dev = self.a.close().unwrap();
        H {
            a: Array::open(
                dev,
                &OpenOptions {
                    cache_bytes,
                    ..OpenOptions::default()
                },
            )
            .unwrap(),
            ..self
        }
    }

    /// Overwrites all of LUN `n`, extent by extent in random order, each extent with
    /// one of: a whole-extent write, a single sector, a few sectors, or two writes.
    fn overwrite_random(&mut self, n: u32, rng: &mut Rng) {
        let es = self.extent();
        let size = self.size(n);
        let mut order: Vec<u64> = (0..size.div_ceil(es)).collect();
        shuffle(rng, &mut order);
        for e in order {
            let start = e * es;
            let len = es.min(size - start) / SECTOR;
            match rng.below(4) {
                0 => self.write(n, start, len),
                1 => {
                    let s = rng.below(len);
                    self.write(n, start + s * SECTOR, 1);
                }
                2 => {
                    let k = 1 + rng.below(len);
                    let s = rng.below(len - k + 1);
                    self.write(n, start + s * SECTOR, k);
                }
                _ => {
                    self.write(n, start, len);
                    let s = rng.below(len);
                    self.write(n, start + s * SECTOR, 1);
                }
            }
        }
    }

    /// Writes all of LUN `n` front to back in chunks of `chunk` bytes.
    fn fill_sequential(&mut self, n: u32, chunk: u64) {
        let size = self.size(n);
        let mut pos = 0;
        while pos < size {
            let len = chunk.min(size - pos);
            self.write(n, pos, len / SECTOR);
            pos += len;
        }
    }

    /// One sector in one extent of every mapping group (16 extents) of LUN `n`, in
    /// random order: as many mapping entries as a full LUN, for a sixteenth of the data.
    fn fill_groups(&mut self, n: u32, rng: &mut Rng) {
        let es = self.extent();
        let size = self.size(n);
        let group = 16 * es;
        let mut order: Vec<u64> = (0..size.div_ceil(group)).collect();
        shuffle(rng, &mut order);
        for g in order {
            let start = g * group;
            let len = group.min(size - start) / SECTOR;
            self.write(n, start + rng.below(len) * SECTOR, 1);
        }
    }

    /// One sector in every extent of LUN `n`, in random extent order: every extent
    /// mapped, each holding one sector of data.
    fn fill_sparse(&mut self, n: u32, rng: &mut Rng) {
        let es = self.extent();
        let size = self.size(n);
        let mut order: Vec<u64> = (0..size.div_ceil(es)).collect();
        shuffle(rng, &mut order);
        for e in order {
            let start = e * es;
            let len = es.min(size - start) / SECTOR;
            self.write(n, start + rng.below(len) * SECTOR, 1);
        }
    }
}

// ---------------------------------------------------------------------------------
// Writes to an accessible LUN never fail for space
// ---------------------------------------------------------------------------------

#[test]
fn writes_to_a_fully_reserved_pool_never_fail_for_space() {
    for (bytes, extent_size, cache) in [(6 << 20, 16384u32, 256 * 1024), (3 << 20, 4096, 65536)] {
        let mut h = H::format(bytes, extent_size, cache);
        let es = h.extent();
        let cap = h.pool().capacity_bytes;
        assert_eq!(cap % es, 0);
        let ce = cap / es;
        // LUN 0 and its copy 1, LUN 2 (not a whole number of extents) and its copy 3,
        // and LUN 4 taking what is left: sizes add up to the capacity exactly.
        let a = ce / 4;
        let b = (ce - 2 * a) / 2;
        let rest = ce - 2 * a - 2 * b;
        h.create_lun(0, a * es);
        h.create_lun(2, b * es - 1024);
        h.fill_sequential(0, 64 * KIB);
        h.fill_sequential(2, 3 * es + 512);
        h.flush();
        h.create_copy(0, 1, true);
        h.create_copy(2, 3, true);
        if rest > 0 {
            h.create_lun(4, rest * es - 512);
        }
        let p = h.pool();
        assert_eq!(p.reserved_bytes, cap, "{p:?}");
        assert_eq!(p.unreserved_bytes, 0, "{p:?}");
        assert!(matches!(h.a.create_lun(9, 512), Err(Error::NoSpace { .. })));

        // Every write below goes to a shared or committed extent at first: copy on
        // write into a full pool. Never a flush.
        let mut rng = Rng::new(u64::from(extent_size));
        let luns: Vec<u32> = h.data.keys().copied().collect();
        for pass in 0..4 {
            let mut order = luns.clone();
            shuffle(&mut rng, &mut order);
            for &n in &order {
                if pass % 2 == 0 {
                    h.overwrite_random(n, &mut rng);
                } else {
                    h.fill_sequential(n, es * 2 + 1536);
                }
            }
            let p = h.pool();
            assert!(p.allocated_bytes <= cap, "pass {pass}: {p:?}");
            if pass == 1 {
                // Re-share everything: a refresh and a restore need no new space.
                h.attach(1);
                h.restore(3);
            }
        }
        h.verify("after the overwrites");
        h.clean("after the overwrites");
        let early = h.early_commits;
        println!(
            "extent {es}: capacity {} extents, {early} early commits during the overwrites",
            ce
        );
        assert!(early > 0, "expected the writes to commit early");
        let mut h = h.reopen(cache);
        h.verify("reopened");
        h.clean("reopened");
    }
}

// ---------------------------------------------------------------------------------
// create / attach that cannot reserve fail with NoSpace and change nothing
// ---------------------------------------------------------------------------------

/// What must not change when an operation is refused.
fn snapshot(h: &mut H) -> (Vec<lunsnap::LunInfo>, PoolInfo) {
    (h.a.luns().unwrap(), h.a.pool_info())
}

/// Runs `op`, which must fail with `NoSpace { needed, available: unreserved }` and
/// change nothing.
fn check_refusal(
    h: &mut H,
    what: &str,
    op: impl FnOnce(&mut Arr) -> lunsnap::Result<()>,
    needed: u64,
) {
    let before = snapshot(h);
    let available = before.1.unreserved_bytes;
    let r = op(&mut h.a);
    assert_eq!(r, Err(Error::NoSpace { needed, available }), "{what}");
    assert_eq!(snapshot(h), before, "{what} changed something");
    h.verify(what);
    h.clean(what);
}

#[test]
fn create_and_attach_without_space_fail_and_change_nothing() {
    let mut h = H::format(4 << 20, 8192, 1 << 20);
    let es = h.extent();
    let ce = h.pool().capacity_bytes / es;
    let k = ce / 2 + 1; // more than half the pool
    h.create_lun(0, k * es);
    h.fill_sequential(0, 40 * KIB);
    h.flush();
    h.create_copy(0, 1, false); // detached: no reservation
    assert_eq!(h.pool().unreserved_bytes, (ce - k) * es);

    check_refusal(
        &mut h,
        "attached copy",
        |a| a.create_copy(0, 2, true),
        k * es,
    );
    check_refusal(&mut h, "attach", |a| a.attach(1), k * es);
    check_refusal(
        &mut h,
        "LUN one sector too big",
        |a| a.create_lun(2, (ce - k) * es + 512),
        (ce - k + 1) * es,
    );
    // Unflushed writes pending: still nothing changes but the refusal.
    h.write(0, 512, 3);
    check_refusal(
        &mut h,
        "attach with writes pending",
        |a| a.attach(1),
        k * es,
    );

    // Exactly what is left fits; then nothing more.
    h.create_lun(2, (ce - k) * es);
    assert_eq!(h.pool().unreserved_bytes, 0);
    check_refusal(&mut h, "one-sector LUN", |a| a.create_lun(3, 512), es);
    check_refusal(
        &mut h,
        "attached copy of the small LUN",
        |a| a.create_copy(2, 3, true),
        (ce - k) * es,
    );
    let before = snapshot(&mut h);
    assert!(matches!(
        h.a.create_lun(3, (ce + 1) * es),
        Err(Error::InvalidLunSize { .. })
    ));
    assert_eq!(snapshot(&mut h), before);

    // What needs no new reservation works on a full pool.
    h.create_copy(2, 3, false); // detached copy
    h.write(2, 0, 16);
    h.create_copy(0, 4, false);
    h.delete(4, false);
    h.detach(1); // already detached: nothing
                 // Free LUN 2's space by deleting it (with its detached copy orphaned), then an
                 // attached copy of LUN 0 still does not fit, a smaller LUN does.
    h.delete(2, true);
    check_refusal(&mut h, "attach after delete", |a| a.attach(1), k * es);
    h.create_lun(2, es);
    // A plain LUN made from a copy: refresh (attach of an attached copy) and restore
    // on a full pool.
    h.delete(3, false);
    h.delete(2, false);
    let small = (ce - k) / 2;
    h.create_lun(5, small * es);
    h.fill_sequential(5, 24 * KIB);
    h.create_copy(5, 6, true);
    let left = h.pool().unreserved_bytes;
    if left > 0 {
        h.create_lun(7, left);
    }
    assert_eq!(h.pool().unreserved_bytes, 0);
    h.write(6, 1024, 4);
    h.attach(6); // refresh: no new reservation
    h.write(6, 0, 8);
    h.restore(6);
    h.detach(6);
    assert_eq!(h.pool().unreserved_bytes, small * es);
    check_refusal(
        &mut h,
        "attached copy after detach",
        |a| a.create_copy(0, 8, true),
        k * es,
    );
    h.attach(6);
    assert_eq!(h.pool().unreserved_bytes, 0);

    // The refusals left the committed state alone too.
    let before = snapshot(&mut h);
    let mut h = h.reopen(1 << 20);
    assert_eq!(snapshot(&mut h).0, before.0);
    h.verify("reopened");
    h.clean("reopened");
    let p = h.pool();
    let sum: u64 = h.a.luns().unwrap().iter().map(|l| l.reserved_bytes).sum();
    assert_eq!(sum, p.reserved_bytes);
    assert!(p.reserved_bytes <= p.capacity_bytes);
}

// ---------------------------------------------------------------------------------
// Metadata never runs out
// ---------------------------------------------------------------------------------

#[test]
fn metadata_never_runs_out() {
    // 4 KiB extents: mapping trees are large against their fanout.
    let mut h = H::format(64 << 20, 4096, 128 * 1024);
    let es = h.extent();
    let p = h.pool();
    let ce = p.capacity_bytes / es;
    println!(
        "capacity {} extents, metadata provisioned {} KiB",
        ce,
        p.metadata_provisioned_bytes / KIB
    );
    let mut rng = Rng::new(77);
    // Sizes: A (30%) with copy A1 and copy-of-copy A2 (90%), B (5%) with copy B1,
    // C the rest. Reservations add up to the capacity.
    let a = ce * 3 / 10;
    let b = ce / 20;
    let c = ce - 3 * a - 2 * b;
    assert!(c > 0);
    h.create_lun(0, a * es);
    h.create_lun(3, b * es);
    h.create_lun(5, c * es - 512);
    let mut fills = 0u64;
    for cycle in 0..6u64 {
        // (Re)make the copies, attached, sharing everything.
        let copies: &[(u32, u32)] = &[(0, 1), (1, 2), (3, 4)];
        for &(p, n) in copies {
            match h.a.lun_info(n) {
                Err(Error::NoSuchLun(_)) => h.create_copy(p, n, true),
                Ok(i) if !i.attached => h.attach(n),
                Ok(_) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(h.pool().unreserved_bytes, 0);
        // Fill every attached LUN completely, each its own way; the first cycles do
        // it all in one transaction (the commit then shadows every mapping at once).
        let mut luns: Vec<u32> = h.data.keys().copied().collect();
        shuffle(&mut rng, &mut luns);
        for (i, &n) in luns.iter().enumerate() {
            match (cycle + i as u64) % 4 {
                0 => h.fill_sequential(n, 64 * es),
                1 => h.overwrite_random(n, &mut rng),
                2 => h.fill_sparse(n, &mut rng),
                _ => h.fill_groups(n, &mut rng),
            }
            fills += 1;
            h.pool();
            if cycle >= 2 {
                h.flush();
            }
        }
        h.flush();
        h.clean(&format!("cycle {cycle} filled"));
        // Management churn.
        match cycle % 3 {
            0 => {
                h.delete(2, false);
                h.restore(1);
                h.detach(4);
                h.fill_sparse(3, &mut rng);
                h.attach(4);
                h.fill_sparse(4, &mut rng);
            }
            1 => {
                h.detach(1); // its copy 2 then has a detached parent
                h.delete(2, false);
                h.attach(1);
                h.restore(4);
                h.overwrite_random(0, &mut rng);
            }
            _ => {
                // Orphan the copies of A: 1 becomes a plain LUN; recreate A from it.
                h.delete(2, false);
                h.delete(0, true);
                h.create_copy(1, 2, true);
                h.overwrite_random(1, &mut rng);
                h.delete(2, false);
                h.create_lun(0, a * es);
                h.fill_sparse(0, &mut rng);
                h.delete(1, false);
            }
        }
        h.pool();
        h.verify(&format!("cycle {cycle}"));
        h.clean(&format!("cycle {cycle}"));
    }
    let mut h = h.reopen(128 * 1024);
    h.verify("reopened");
    h.clean("reopened");
    // As many trees as LUN numbers: one LUN and 15 copies (some of copies), each
    // sixteenth of the pool, each then mapping every group of its own, all in one
    // transaction, twice.
    for n in h.a.lun_numbers() {
        h.delete(n, true);
    }
    let sixteenth = ce / 16;
    h.create_lun(0, sixteenth * es);
    h.fill_groups(0, &mut rng);
    for n in 1..16u32 {
        let parent = if n % 3 == 0 { n - 1 } else { 0 };
        h.create_copy(parent, n, true);
    }
    for round in 0..2 {
        for n in 0..16u32 {
            h.fill_groups(n, &mut rng);
        }
        h.flush();
        h.clean(&format!("16 LUNs, round {round}"));
    }
    h.verify("16 LUNs");
    let p = h.pool();
    println!(
        "{fills} LUN fills, {} early commits: metadata used peak {} KiB of {} KiB provisioned ({:.1}%), now {} KiB",
        h.early_commits,
        h.meta_peak / KIB,
        p.metadata_provisioned_bytes / KIB,
        100.0 * h.meta_peak as f64 / p.metadata_provisioned_bytes as f64,
        p.metadata_used_bytes / KIB
    );
    assert!(h.meta_peak <= p.metadata_provisioned_bytes);
    let kinds: Vec<(u32, LunKind)> =
        h.a.luns()
            .unwrap()
            .iter()
            .map(|l| (l.lun, l.kind))
            .collect();
    println!("LUNs at the end: {kinds:?}");
}

/// Copy-on-write only where it is needed: an extent written since the last commit
/// and mapped by one LUN is rewritten in place (no new extent, nothing pinned);
/// after a commit, or while a copy shares it, a rewrite takes a fresh extent.
#[test]
fn rewrites_are_in_place_until_a_commit_or_a_copy() {
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 4,
        ..Default::default()
    };
    let mut a = Array::format(mem(4 << 20), &opts).unwrap();
    a.create_lun(0, 64 * KIB).unwrap();
    let base = a.engine().space();
    a.write(0, 0, &[1; 4096]).unwrap();
    a.write(0, 512, &[2; 512]).unwrap();
    a.write(0, 0, &[3; 4096]).unwrap();
    let s = a.engine().space();
    assert_eq!(s.data_allocated, base.data_allocated + 1, "one extent");
    assert_eq!(s.data_pinned, 0, "none released: rewritten in place");
    // After a commit the extent belongs to the committed state: copy-on-write.
    a.flush().unwrap();
    a.write(0, 0, &[4; 512]).unwrap();
    let s = a.engine().space();
    assert_eq!(
        s.data_allocated,
        base.data_allocated + 1,
        "the old one released"
    );
    assert_eq!(
        s.data_pinned, 1,
        "kept for the committed state until the next commit"
    );
    // Written again in this transaction: in place.
    a.write(0, 1024, &[5; 512]).unwrap();
    assert_eq!(a.engine().space().data_pinned, 1);
    // Shared with a copy: copy-on-write, the copy keeps its content.
    a.create_copy(0, 1, true).unwrap();
    let before = a.engine().space().data_allocated;
    a.write(0, 0, &[6; 512]).unwrap();
    assert_eq!(a.engine().space().data_allocated, before + 1);
    let mut b = [0u8; 512];
    a.read(1, 0, &mut b).unwrap();
    assert_eq!(b, [4; 512]);
    assert!(a.check().unwrap().is_empty());
}

/// The worst cases the provisioning counts for many LUN numbers on a small pool (the
/// default 1,024 on 32 MiB of 4 KiB extents): as many LUNs as the pool can reserve,
/// each with its own mapping leaf, all rewritten in one transaction (every leaf
/// shadowed beside its committed copy); then as many two-leaf trees as the pool can
/// hold (each has an interior node), with copies written apart from their parents,
/// again in one transaction. Metadata in use never exceeds what was provisioned.
#[test]
fn many_small_trees_never_run_out_of_metadata() {
    let opts = FormatOptions {
        extent_size: 4096,
        ..Default::default()
    };
    let mut a = Array::format(mem(32 << 20), &opts).unwrap();
    let p = a.pool_info();
    let es = u64::from(p.extent_size);
    let provisioned = a.engine().space().meta_pages;
    let mut peak = 0u64;
    // Pages in use or pinned (released in this transaction, kept for the last commit).
    let mut note = |a: &mut Array<MemDevice>| {
        let s = a.engine().space();
        peak = peak.max(s.meta_allocated + s.meta_pinned);
    };
    // One extent per LUN, as many LUNs as numbers or extents allow.
    let capacity = p.capacity_bytes / es;
    let luns = capacity.min(u64::from(p.max_luns)) as u32;
    for n in 0..luns {
        a.create_lun(n, es).unwrap();
        a.write(n, 0, &[n as u8 | 1; 512]).unwrap();
    }
    a.flush().unwrap();
    note(&mut a);
    for n in 0..luns {
        a.write(n, 512, &[2; 512]).unwrap();
        note(&mut a);
    }
    a.flush().unwrap();
    note(&mut a);
    assert!(a.check().unwrap().is_empty());
    for n in 0..luns {
        a.delete(n, false).unwrap();
    }
    // Two-leaf trees: 18 mapping entries (one extent each, 16 extents apart), and a
    // copy of each written in every entry too.
    let size = 18 * 16 * es;
    let pairs = (a.pool_info().capacity_bytes / es / (2 * 18 * 16)) as u32;
    assert!(pairs >= 2, "room for two-leaf trees");
    for n in 0..pairs {
        a.create_lun(n, size).unwrap();
        for e in 0..18 {
            a.write(n, e * 16 * es, &[3; 512]).unwrap();
        }
        a.create_copy(n, 512 + n, true).unwrap();
    }
    for n in 0..pairs {
        for e in 0..18 {
            a.write(512 + n, e * 16 * es + 512, &[4; 512]).unwrap();
            a.write(n, e * 16 * es + 1024, &[5; 512]).unwrap();
        }
        note(&mut a);
    }
    a.flush().unwrap();
    note(&mut a);
    assert!(a.check().unwrap().is_empty());
    println!(
        "{luns} one-leaf LUNs, then {pairs} two-leaf LUNs with their copies: metadata pages \
         in use or pinned at the peak {peak} of {provisioned} provisioned"
    );
    assert!(peak <= provisioned, "{peak} > {provisioned}");
}
