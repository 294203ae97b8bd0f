//! Full and incremental backups made with `Array::diff` restore a LUN bit-identical to
//! each point in time.
//!
//! A LUN is changed in ten rounds (random writes; writes of zeros, detected or stored;
//! `write_zeroes` with and without holes; discards; the same bytes written again) and
//! copied after each round (copies 11 to 20). The backup is the whole of copy 11, then
//! for each next copy the ranges `diff(previous, next)` names, read from the next copy.
//! Restoring onto a fresh LUN of another array the full backup and then each
//! increment in order must give, after each, exactly that copy's bytes, and those are
//! the bytes the LUN held when the copy was made. The diffs are also exact at extent
//! granularity: an extent the round did not touch is never reported.

use std::collections::BTreeSet;

use lunsnap::testing::Rng;
use lunsnap::{Array, FormatOptions, MemDevice, SECTOR};

const ES: u64 = 4096;
/// 96 extents and a partial last one.
const SIZE: u64 = 96 * ES + 1536;
const SOURCE: u32 = 0;
const FIRST_COPY: u32 = 11;
const ROUNDS: u32 = 10;

fn array(max_luns: u32) -> Array<MemDevice> {
    let opts = FormatOptions {
        extent_size: ES as u32,
        max_luns,
        ..FormatOptions::default()
    };
    Array::format(MemDevice::new(512, (8 << 20) / 512).unwrap(), &opts).unwrap()
}

fn read_all(a: &mut Array<MemDevice>, lun: u32) -> Vec<u8> {
    let mut buf = vec![0u8; SIZE as usize];
    a.read(lun, 0, &mut buf).unwrap();
    buf
}

/// The extents `[offset, offset + len)` touches.
fn extents(offset: u64, len: u64) -> std::ops::Range<u64> {
    offset / ES..(offset + len).div_ceil(ES)
}

/// One round of changes to the source LUN, mirrored on `image` (its expected bytes);
/// returns the extents it touched and those it rewrote with the bytes they held. Round
/// 3 writes zeros, round 5 discards, round 7 writes bytes the LUN already holds, round
/// 9 writes zeros with detection off; every round also writes at random, and some
/// extents of zeros.
fn round(
    a: &mut Array<MemDevice>,
    image: &mut [u8],
    r: u32,
    rng: &mut Rng,
) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let mut touched = BTreeSet::new();
    let mut rewritten = BTreeSet::new();
    let sectors = SIZE / SECTOR;
    let range = |rng: &mut Rng, max_sectors: u64| {
        let s = rng.below(sectors);
        let n = 1 + rng.below(max_sectors.min(sectors - s));
        (s * SECTOR, n * SECTOR)
    };
    // Random writes, some spanning several extents.
    for _ in 0..4 + rng.below(6) {
        let (off, len) = range(rng, 3 * ES / SECTOR);
        let data = rng.bytes(len as usize);
        a.write(SOURCE, off, &data).unwrap();
        image[off as usize..(off + len) as usize].copy_from_slice(&data);
        touched.extend(extents(off, len));
    }
    // A whole extent of zeros (zero detection unmaps it) and a partial one.
    let e = rng.below(SIZE / ES);
    a.write(SOURCE, e * ES, &[0u8; ES as usize]).unwrap();
    image[(e * ES) as usize..((e + 1) * ES) as usize].fill(0);
    touched.insert(e);
    let (off, len) = range(rng, ES / SECTOR);
    a.write(SOURCE, off, &vec![0u8; len as usize]).unwrap();
    image[off as usize..(off + len) as usize].fill(0);
    touched.extend(extents(off, len));
    let mut zero = |a: &mut Array<MemDevice>, off: u64, len: u64, how: u32| {
        match how {
            0 => a.write_zeroes(SOURCE, off, len, true).unwrap(),
            1 => a.write_zeroes(SOURCE, off, len, false).unwrap(),
            _ => a.discard(SOURCE, off, len).unwrap(),
        }
        image[off as usize..(off + len) as usize].fill(0);
        touched.extend(extents(off, len));
    };
    match r {
        3 => {
            for how in [0, 1, 0, 1] {
                let (off, len) = range(rng, 4 * ES / SECTOR);
                zero(a, off, len, how);
            }
        }
        5 => {
            for _ in 0..3 {
                let (off, len) = range(rng, 6 * ES / SECTOR);
                zero(a, off, len, 2);
            }
            // To the end of the LUN: the partial last extent is unmapped too.
            zero(a, SIZE - ES - 1536, ES + 1536, 2);
        }
        _ => {}
    }
    if r == 7 {
        // The same bytes again, over whole extents that hold data: each gets a new
        // extent that reads the same, which the diff must report.
        let mut done = 0;
        while done < 3 {
            let e = rng.below(SIZE / ES);
            let mut same = vec![0u8; ES as usize];
            a.read(SOURCE, e * ES, &mut same).unwrap();
            if same.iter().all(|&x| x == 0) {
                continue;
            }
            a.write(SOURCE, e * ES, &same).unwrap();
            touched.insert(e);
            rewritten.insert(e);
            done += 1;
        }
    }
    if r == 9 {
        a.set_detect_zeros(false);
        let e = rng.below(SIZE / ES);
        a.write(SOURCE, e * ES, &[0u8; ES as usize]).unwrap();
        image[(e * ES) as usize..((e + 1) * ES) as usize].fill(0);
        touched.insert(e);
        a.set_detect_zeros(true);
    }
    (touched, rewritten)
}

#[test]
fn full_and_incremental_backups_restore_every_point_in_time() {
    let mut a = array(32);
    let mut rng = Rng::new(0xBAC0_0001);
    a.create_lun(SOURCE, SIZE).unwrap();
    let mut image = vec![0u8; SIZE as usize];
    // The LUN's bytes after each round, and the extents each round touched.
    let (mut images, mut touched) = (Vec::new(), Vec::new());
    for r in 1..=ROUNDS {
        touched.push(round(&mut a, &mut image, r, &mut rng));
        let copy = FIRST_COPY + r - 1;
        a.create_copy(SOURCE, copy, true).unwrap();
        assert!(
            read_all(&mut a, copy) == image,
            "copy {copy}: not the LUN as of round {r}"
        );
        images.push(image.clone());
    }
    // A round after the last copy: the copies must not change.
    round(&mut a, &mut image, 0, &mut rng);

    // The backups: copy 11 whole, then what changed from each copy to the next.
    let full = read_all(&mut a, FIRST_COPY);
    let mut increments: Vec<Vec<(u64, Vec<u8>)>> = Vec::new();
    let (mut full_bytes, mut incremental_bytes) = (SIZE, 0);
    for copy in FIRST_COPY + 1..FIRST_COPY + ROUNDS {
        let ranges = a.diff(copy - 1, copy, 0, SIZE).unwrap();
        assert_eq!(
            ranges,
            a.diff(copy, copy - 1, 0, SIZE).unwrap(),
            "symmetric"
        );
        assert!(a.diff(copy, copy, 0, SIZE).unwrap().is_empty());
        let (round_touched, rewritten) = &touched[(copy - FIRST_COPY) as usize];
        let mut reported = BTreeSet::new();
        let mut inc = Vec::new();
        let mut end = 0;
        for d in &ranges {
            assert!(d.length > 0 && d.offset >= end, "copy {copy}: {ranges:?}");
            assert!(d.offset > end || end == 0, "copy {copy}: ranges not merged");
            assert!(
                d.offset % ES == 0,
                "copy {copy}: {d:?} starts inside an extent"
            );
            let stop = d.offset + d.length;
            assert!(stop % ES == 0 || stop == SIZE, "copy {copy}: {d:?}");
            end = stop;
            reported.extend(extents(d.offset, d.length));
            let mut data = vec![0u8; d.length as usize];
            a.read(copy, d.offset, &mut data).unwrap();
            incremental_bytes += d.length;
            inc.push((d.offset, data));
        }
        assert!(
            reported.is_subset(round_touched),
            "copy {copy}: diff reports extents {:?} the round never touched",
            reported.difference(round_touched).collect::<Vec<_>>()
        );
        assert!(
            rewritten.is_subset(&reported),
            "copy {copy}: extents rewritten with the same bytes are not reported"
        );
        increments.push(inc);
        full_bytes += SIZE;
    }
    println!(
        "backup chain: full {SIZE} bytes, {} increments of {incremental_bytes} bytes in all \
         ({full_bytes} as full backups)",
        ROUNDS - 1
    );
    assert!(incremental_bytes < full_bytes / 2);

    // The restore, onto a fresh LUN of another array.
    let mut b = array(2);
    b.create_lun(0, SIZE).unwrap();
    b.write(0, 0, &full).unwrap();
    for (i, copy) in (FIRST_COPY..FIRST_COPY + ROUNDS).enumerate() {
        if i > 0 {
            for (off, data) in &increments[i - 1] {
                b.write(0, *off, data).unwrap();
            }
        }
        let got = read_all(&mut b, 0);
        for (what, want) in [
            ("copy", read_all(&mut a, copy)),
            ("round", images[i].clone()),
        ] {
            if let Some(at) = got.iter().zip(&want).position(|(x, y)| x != y) {
                panic!(
                    "restored with {i} increments: byte {at} differs from {what} {}",
                    if what == "copy" { copy } else { i as u32 + 1 }
                );
            }
        }
    }
    assert!(a.check().unwrap().is_empty() && b.check().unwrap().is_empty());
}
