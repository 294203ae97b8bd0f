//! `Engine::diff` and `Engine::range_shared` against brute force: random trees of
//! several levels, cloned and changed on both sides (inserts, overwrites, removes,
//! trees of other heights, unrelated trees, empty ones), compared over random key
//! ranges with a full walk of both trees. Also checks that a diff of two trees of
//! one lineage reads few nodes (it skips what they share).

use std::collections::BTreeMap;

use lunsnap::engine::{Engine, FormatOptions, Tree, ValueKind};
use lunsnap::testing::Rng;
use lunsnap::MemDevice;

fn engine() -> Engine<MemDevice> {
    let opts = FormatOptions {
        extent_size: 4096,
        metadata_pages: Some(8192),
        cache_bytes: 256 << 10,
        ..Default::default()
    };
    Engine::format(MemDevice::new(4096, 32768).expect("device"), &opts).expect("format")
}

fn all(e: &mut Engine<MemDevice>, t: &Tree) -> BTreeMap<u64, Vec<u8>> {
    let mut m = BTreeMap::new();
    e.range(t, 0, u64::MAX, |k, v| {
        m.insert(k, v.to_vec());
        true
    })
    .expect("range");
    m
}

/// What diff must report over `[lo, hi]`: keys whose presence or value differ.
fn brute(a: &BTreeMap<u64, Vec<u8>>, b: &BTreeMap<u64, Vec<u8>>, lo: u64, hi: u64) -> Vec<u64> {
    let mut keys: Vec<u64> = a
        .range(lo..=hi)
        .chain(b.range(lo..=hi))
        .map(|(&k, _)| k)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(k) != b.get(k)).collect()
}

fn diff(e: &mut Engine<MemDevice>, a: &Tree, b: &Tree, lo: u64, hi: u64) -> Vec<u64> {
    let mut got = Vec::new();
    e.diff(a, b, lo, hi, |k, va, vb| {
        assert!(va != vb, "key {k} reported with equal values");
        got.push(k);
    })
    .expect("diff");
    got
}

fn value(rng: &mut Rng) -> [u8; 8] {
    rng.next_u64().to_le_bytes()
}

/// Applies `n` random changes to `t` over keys below `span`.
fn churn(e: &mut Engine<MemDevice>, t: &mut Tree, rng: &mut Rng, n: u64, span: u64) {
    for _ in 0..n {
        let k = rng.below(span);
        if rng.chance(25) {
            e.remove(t, k).expect("remove");
        } else {
            e.insert(t, k, &value(rng)).expect("insert");
        }
    }
}

#[test]
fn diff_equals_brute_force_on_clones() {
    let mut rng = Rng::new(0xd1ff);
    for round in 0..12u64 {
        let mut e = engine();
        let mut a = e.create_tree(8, ValueKind::Opaque).expect("tree");
        // From a single leaf to three levels (a leaf holds 252 entries of 8 bytes).
        let size = [10u64, 300, 5_000, 40_000][round as usize % 4];
        let span = size * 3;
        for i in 0..size {
            e.insert(&mut a, i * 3, &value(&mut rng)).expect("insert");
        }
        e.commit().expect("commit");
        let mut b = e.clone_tree(&a).expect("clone");
        let mut c = e.clone_tree(&a).expect("clone");
        churn(&mut e, &mut a, &mut rng, 1 + round * 7, span);
        churn(&mut e, &mut b, &mut rng, round * 5, span);
        // c grows by many keys (other height), or is emptied.
        if round % 3 == 2 {
            for i in 0..size {
                e.remove(&mut c, i * 3).expect("remove");
            }
        } else {
            churn(&mut e, &mut c, &mut rng, size / 2, span * 4);
        }
        let unrelated = {
            let mut u = e.create_tree(8, ValueKind::Opaque).expect("tree");
            churn(&mut e, &mut u, &mut rng, size, span);
            u
        };
        let trees = [a, b, c, unrelated];
        let maps: Vec<_> = trees.iter().map(|t| all(&mut e, t)).collect();
        for i in 0..trees.len() {
            for j in 0..trees.len() {
                for _ in 0..6 {
                    let lo = rng.below(span * 4);
                    let hi = if rng.chance(30) {
                        u64::MAX
                    } else {
                        lo + rng.below(span)
                    };
                    let lo = if rng.chance(20) { 0 } else { lo };
                    let want = brute(&maps[i], &maps[j], lo, hi);
                    let got = diff(&mut e, &trees[i], &trees[j], lo, hi);
                    assert_eq!(got, want, "round {round}, trees {i} and {j}, [{lo}, {hi}]");
                }
            }
        }
        // range_shared sees the same entries as range, and a clone's as shared.
        for (t, m) in trees.iter().zip(&maps) {
            let mut seen = BTreeMap::new();
            e.range_shared(t, 0, u64::MAX, |k, v, _| {
                seen.insert(k, v.to_vec());
            })
            .expect("range_shared");
            assert_eq!(&seen, m, "round {round}");
        }
    }
}

#[test]
fn range_shared_tells_shared_paths() {
    let mut e = engine();
    let mut a = e.create_tree(8, ValueKind::Opaque).expect("tree");
    for i in 0..5_000u64 {
        e.insert(&mut a, i, &i.to_le_bytes()).expect("insert");
    }
    e.commit().expect("commit");
    let shared = |e: &mut Engine<MemDevice>, t: &Tree| {
        let mut v = Vec::new();
        e.range_shared(t, 0, u64::MAX, |k, _, s| v.push((k, s)))
            .expect("walk");
        v
    };
    assert!(
        shared(&mut e, &a).iter().all(|&(_, s)| !s),
        "alone: nothing shared"
    );
    let mut b = e.clone_tree(&a).expect("clone");
    assert!(
        shared(&mut e, &a).iter().all(|&(_, s)| s),
        "cloned: all shared"
    );
    e.insert(&mut b, 10, &[9; 8]).expect("insert");
    let after = shared(&mut e, &b);
    // The leaf holding key 10 was shadowed: its entries are b's own now.
    assert!(!after.iter().find(|&&(k, _)| k == 10).expect("key 10").1);
    assert!(
        after
            .iter()
            .find(|&&(k, _)| k == 4_999)
            .expect("last key")
            .1
    );
}

#[test]
fn a_diff_of_one_lineage_reads_what_changed() {
    let mut e = engine();
    let mut a = e.create_tree(8, ValueKind::Opaque).expect("tree");
    for i in 0..200_000u64 {
        e.insert(&mut a, i, &i.to_le_bytes()).expect("insert");
    }
    e.commit().expect("commit");
    let mut b = e.clone_tree(&a).expect("clone");
    for k in [5u64, 77_777, 199_999] {
        e.insert(&mut b, k, &[1; 8]).expect("insert");
    }
    let misses = e.cache_stats().misses + e.cache_stats().hits;
    assert_eq!(diff(&mut e, &a, &b, 0, u64::MAX), vec![5, 77_777, 199_999]);
    let reads = e.cache_stats().misses + e.cache_stats().hits - misses;
    // Three changed paths of a three-level tree, from two roots: a few dozen pages
    // (the whole trees are about 800 leaves each).
    assert!(reads < 40, "diff read {reads} pages");
}
