//! Map, diff, discard and sparse transfers: `map` and `diff` JSON exact on an image
//! with copies; `discard` unmaps and frees; `read` leaves holes as holes (a 100 GiB
//! never-written LUN reads at once) and `write` stores no zeros unless `--allocate`;
//! full and incremental backups (`read --changed-since`, `write --ranges`) restore
//! every copy of a chain bit-identically.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const K: u64 = 1024;
const M: u64 = 1 << 20;

/// Bytes of disk the file occupies.
fn allocated(path: &str) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Writes `data` to LUN `lun` of `img` at `offset` through a file in `d`.
fn put(d: &Dir, img: &str, lun: &str, offset: u64, data: &[u8]) {
    let f = d.file("put.bin");
    std::fs::write(&f, data).unwrap();
    ok(&["write", img, lun, &f, "--offset", &offset.to_string()]);
}

/// LUN `lun` of `img`, read whole to stdout.
fn lun(img: &str, lun: &str) -> Vec<u8> {
    let r = run(&["read", img, lun, "-"]);
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout
}

fn pool(img: &str, field: &str) -> u64 {
    json(&ok(&["info", img, "--json"]))[field].as_u64().unwrap()
}

/// LUN 1 (4 MiB, extents of 16 KiB) and its copy 2, after writes on both sides:
/// extents 0 and 2 shared, 1 written by LUN 1 after the copy, 64 by LUN 1 and 128 by
/// the copy.
fn copies(d: &Dir) -> String {
    let img = small_image(d);
    put(d, &img, "1", 0, &pattern(1, 48 << 10));
    ok(&[
        "copy",
        "create",
        &img,
        "--parent",
        "1",
        "--copy",
        "2",
        "--attached",
    ]);
    put(d, &img, "1", 16 * K, &pattern(2, 16 << 10));
    put(d, &img, "1", M, &pattern(3, 16 << 10));
    put(d, &img, "2", 2 * M, &pattern(4, 512));
    img
}

fn extent(start: u64, length: u64, data: bool, shared: bool) -> serde_json::Value {
    json!({"start": start, "length": length, "data": data, "zero": !data, "shared": shared, "lost": false})
}

#[test]
fn map_json_is_exact() {
    let d = Dir::new("map");
    let img = copies(&d);
    let v = json(&ok(&["map", &img, "1", "--json"]));
    assert_eq!(
        v,
        json!([
            extent(0, 16 * K, true, true),
            extent(16 * K, 16 * K, true, false),
            extent(32 * K, 16 * K, true, true),
            extent(48 * K, M - 48 * K, false, false),
            extent(M, 16 * K, true, false),
            extent(M + 16 * K, 3 * M - 16 * K, false, false),
        ])
    );
    let v = json(&ok(&["map", &img, "2", "--json"]));
    assert_eq!(
        v,
        json!([
            extent(0, 16 * K, true, true),
            extent(16 * K, 16 * K, true, false),
            extent(32 * K, 16 * K, true, true),
            extent(48 * K, 2 * M - 48 * K, false, false),
            extent(2 * M, 16 * K, true, false),
            extent(2 * M + 16 * K, 2 * M - 16 * K, false, false),
        ])
    );
    // A range: clipped to it, at sector granularity.
    let v = json(&ok(&[
        "map", &img, "1", "--offset", "20K", "--length", "30K", "--json",
    ]));
    assert_eq!(
        v,
        json!([
            extent(20 * K, 12 * K, true, false),
            extent(32 * K, 16 * K, true, true),
            extent(48 * K, 2 * K, false, false),
        ])
    );
    // The table, and its total line.
    let out = ok(&["map", &img, "1"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    assert!(
        lines[0].contains("START") && lines[0].contains("SHARED"),
        "{out}"
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["16384", "16384", "data", "no"]
    );
    assert_eq!(
        lines[4].split_whitespace().collect::<Vec<_>>(),
        ["49152", "999424", "hole", "-"]
    );
    assert_eq!(
        lines[7],
        "LUN 1: 64 KiB (65536 bytes) of 4 MiB mapped, 32 KiB (32768 bytes) of it shared \
         with other LUNs; the rest are holes"
    );
    // A never-written LUN is one hole; refusals are the read's.
    ok(&["lun", "create", &img, "3", "--size", "1M"]);
    assert_eq!(
        json(&ok(&["map", &img, "3", "--json"])),
        json!([extent(0, M, false, false)])
    );
    fails(&["map", &img, "9"], "no such LUN: 9");
    usage_says(
        &["map", &img, "1", "--offset", "100"],
        "not a multiple of 512",
    );
    fails(&["map", &img, "1", "--offset", "4M", "--length", "512"], "");
}

#[test]
fn diff_json_is_exact() {
    let d = Dir::new("diff");
    let img = copies(&d);
    let span = |start: u64, length: u64| json!({"start": start, "length": length});
    let v = json(&ok(&["diff", &img, "1", "2", "--json"]));
    assert_eq!(
        v,
        json!({
            "ranges": [span(16 * K, 16 * K), span(M, 16 * K), span(2 * M, 16 * K)],
            "total_bytes": 48 * K,
        })
    );
    // Symmetric, and clipped to a range.
    assert_eq!(json(&ok(&["diff", &img, "2", "1", "--json"])), v);
    let v = json(&ok(&[
        "diff", &img, "1", "2", "--offset", "24K", "--length", "1M", "--json",
    ]));
    assert_eq!(
        v,
        json!({"ranges": [span(24 * K, 8 * K), span(M, 16 * K)], "total_bytes": 24 * K})
    );
    // An extent written with the bytes it held is still reported (never a false
    // "unchanged"); a LUN against itself differs nowhere.
    put(&d, &img, "2", 32 * K, &pattern(1, 48 << 10)[32 << 10..]);
    let v = json(&ok(&["diff", &img, "1", "2", "--json"]));
    assert_eq!(v["total_bytes"], 64 * K);
    assert_eq!(
        json(&ok(&["diff", &img, "1", "1", "--json"])),
        json!({"ranges": [], "total_bytes": 0})
    );
    let out = ok(&["diff", &img, "1", "2"]);
    assert!(
        out.ends_with(
            "LUNs 1 and 2 may differ in 3 ranges, 64 KiB (65536 bytes) of 4 MiB; the rest \
             reads the same\n"
        ),
        "{out}"
    );
    // Unrelated LUNs: compared by their mappings, still exact.
    ok(&["lun", "create", &img, "3", "--size", "4M"]);
    let v = json(&ok(&["diff", &img, "3", "1", "--json"]));
    assert_eq!(
        v,
        json!({"ranges": [span(0, 48 * K), span(M, 16 * K)], "total_bytes": 64 * K})
    );
    // LUNs of different sizes need a range inside both.
    ok(&["lun", "create", &img, "4", "--size", "1M"]);
    fails(&["diff", &img, "1", "4"], "differ in size");
    let v = json(&ok(&["diff", &img, "1", "4", "--length", "1M", "--json"]));
    assert_eq!(v["total_bytes"], 48 * K);
    fails(&["diff", &img, "1", "9"], "no such LUN: 9");
}

#[test]
fn discard_unmaps_frees_and_commits() {
    let d = Dir::new("discard");
    let img = copies(&d);
    let before = lun(&img, "1");
    let copy = lun(&img, "2");
    let allocated_before = pool(&img, "allocated_bytes");
    // Extent 1 is LUN 1's own: freed. Extent 0 is shared: only LUN 1 lets go of it.
    let out = ok(&["discard", &img, "1", "--offset", "0", "--length", "32K"]);
    assert_eq!(
        out,
        "discarded 32 KiB (32768 bytes) of LUN 1 at offset 0: it reads as zeros, and what \
         only it used is free\n"
    );
    let after = lun(&img, "1");
    assert!(after[..32 << 10].iter().all(|&b| b == 0));
    assert_eq!(after[32 << 10..], before[32 << 10..]);
    assert_eq!(lun(&img, "2"), copy, "the copy changed");
    assert_eq!(pool(&img, "allocated_bytes"), allocated_before - 16 * K);
    let v = json(&ok(&["map", &img, "1", "--length", "48K", "--json"]));
    assert_eq!(
        v,
        json!([
            extent(0, 32 * K, false, false),
            extent(32 * K, 16 * K, true, true)
        ])
    );
    // Part of an extent: zeroed, the rest kept.
    ok(&["discard", &img, "1", "--offset", "33K", "--length", "1K"]);
    let now = lun(&img, "1");
    assert!(now[33 << 10..34 << 10].iter().all(|&b| b == 0));
    assert_eq!(now[34 << 10..48 << 10], before[34 << 10..48 << 10]);
    ok(&["check", &img]);
    // Refusals change nothing.
    usage_says(
        &["discard", &img, "1", "--offset", "100", "--length", "512"],
        "not a multiple of 512",
    );
    fails(
        &["discard", &img, "1", "--offset", "4M", "--length", "512"],
        "",
    );
    fails(
        &["discard", &img, "9", "--offset", "0", "--length", "512"],
        "no such LUN",
    );
    usage_error(&["discard", &img, "1", "--offset", "0"]);
    let host = "50060b0000c26204";
    ok(&["host", "add", &img, host]);
    ok(&["grant", &img, "1", host, "--access", "read"]);
    ok(&["security", "enable", &img]);
    fails(
        &[
            "discard", &img, "1", "--offset", "0", "--length", "512", "--as", host,
        ],
        "may only read LUN 1",
    );
    assert_eq!(lun(&img, "1"), now);
}

#[test]
fn reading_a_never_written_100_gib_lun_leaves_a_sparse_file_at_once() {
    let d = Dir::new("sparse-big");
    let img = d.file("big.img");
    ok(&["format", &img, "--size", "101G"]);
    ok(&["lun", "create", &img, "1", "--size", "100G"]);
    let out = d.file("out.raw");
    let t = Instant::now();
    ok(&["read", &img, "1", &out]);
    let took = t.elapsed();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 100 << 30);
    assert_eq!(allocated(&out), 0);
    // Well under a second in a release build; a debug build gets some slack.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Data in the middle lands at its offset, and only it takes space.
    put(&d, &img, "1", 50 << 30, &pattern(5, 64 << 10));
    ok(&["read", &img, "1", &out]);
    assert!(allocated(&out) <= 64 << 10, "{}", allocated(&out));
    let mut f = std::fs::File::open(&out).unwrap();
    let mut got = vec![0u8; 64 << 10];
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(50 << 30)).unwrap();
    std::io::Read::read_exact(&mut f, &mut got).unwrap();
    assert!(got == pattern(5, 64 << 10));
    // To stdout the holes are zeros.
    let at = ((50u64 << 30) - (64 << 10)).to_string();
    let r = run(&["read", &img, "1", "-", "--offset", &at, "--length", "192K"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout[..64 << 10].iter().all(|&b| b == 0));
    assert!(r.stdout[64 << 10..128 << 10] == pattern(5, 64 << 10));
    assert!(r.stdout[128 << 10..].iter().all(|&b| b == 0));
}

#[test]
fn zeros_are_not_stored_unless_allocate() {
    let d = Dir::new("zeros");
    let img = small_image(&d);
    let zeros = d.file("zeros.bin");
    std::fs::write(&zeros, vec![0u8; M as usize]).unwrap();
    ok(&["write", &img, "1", &zeros]);
    assert_eq!(pool(&img, "allocated_bytes"), 0);
    // Not aligned to extents: only the two extents it covers in part are stored.
    ok(&["write", &img, "1", &zeros, "--offset", "1536K"]);
    assert_eq!(pool(&img, "allocated_bytes"), 0);
    ok(&["write", &img, "1", &zeros, "--offset", "2560512"]);
    let partial = pool(&img, "allocated_bytes");
    assert!(partial <= 32 * K, "{partial}");
    // --allocate stores them.
    ok(&["write", &img, "1", &zeros, "--allocate"]);
    assert_eq!(pool(&img, "allocated_bytes"), M + partial);
    let v = json(&ok(&["map", &img, "1", "--length", "1M", "--json"]));
    assert_eq!(v, json!([extent(0, M, true, false)]));
    // Zeros over data shared with a copy unmap the LUN's side only.
    put(&d, &img, "1", 0, &pattern(6, 64 << 10));
    ok(&[
        "copy",
        "create",
        &img,
        "--parent",
        "1",
        "--copy",
        "2",
        "--attached",
    ]);
    let r = run_with(&["write", &img, "1", "-"], &vec![0u8; 64 << 10]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(lun(&img, "1")[..64 << 10].iter().all(|&b| b == 0));
    assert!(lun(&img, "2")[..64 << 10] == pattern(6, 64 << 10));
    let v = json(&ok(&["map", &img, "1", "--length", "64K", "--json"]));
    assert_eq!(v, json!([extent(0, 64 * K, false, false)]));
    ok(&["check", &img]);
}

/// Applies the incremental `file` over `target` as `dd conv=notrunc` of each range
/// of `file.ranges` would.
fn apply_by_hand(file: &str, target: &mut [u8]) {
    let inc = read(file);
    let r = json(&String::from_utf8(read(&format!("{file}.ranges"))).unwrap());
    for s in r["ranges"].as_array().unwrap() {
        let (a, n) = (
            s["start"].as_u64().unwrap() as usize,
            s["length"].as_u64().unwrap() as usize,
        );
        target[a..a + n].copy_from_slice(&inc[a..a + n]);
    }
}

#[test]
fn full_and_incremental_backups_restore_every_copy_bit_identically() {
    let d = Dir::new("chain");
    let img = d.file("a.img");
    ok(&["format", &img, "--size", "64M", "--max-luns", "32"]);
    ok(&["lun", "create", &img, "1", "--size", "4M"]);
    ok(&["lun", "create", &img, "9", "--size", "4M"]);
    put(&d, &img, "1", 0, &pattern(10, 1 << 20));
    let zeros = vec![0u8; 48 << 10];
    // Day k: some writes (data, zeros over data, a discard), then copy 10 + k.
    for k in 0..6u64 {
        put(&d, &img, "1", (k * 300 + 7) * K, &pattern(20 + k, 40 << 10));
        put(&d, &img, "1", (2 + k / 3) * M, &pattern(30 + k, 4096));
        if k % 3 == 0 {
            put(&d, &img, "1", k * 64 * K, &zeros);
        }
        if k % 3 == 1 {
            let at = (k * 80 * K).to_string();
            ok(&["discard", &img, "1", "--offset", &at, "--length", "32K"]);
        }
        let copy = (10 + k).to_string();
        ok(&[
            "copy",
            "create",
            &img,
            "--parent",
            "1",
            "--copy",
            &copy,
            "--attached",
        ]);
    }
    let full = d.file("full.raw");
    ok(&["read", &img, "10", &full]);
    ok(&["write", &img, "9", &full]);
    assert!(lun(&img, "9") == lun(&img, "10"));
    let mut by_hand = read(&full);
    for k in 1..6u64 {
        let (base, copy) = ((9 + k).to_string(), (10 + k).to_string());
        let inc = d.file(&format!("inc{k}.raw"));
        let out = ok(&["read", &img, &copy, &inc, "--changed-since", &base]);
        assert!(out.contains(&format!("changed since LUN {base}")), "{out}");
        let listed = json(&String::from_utf8(read(&format!("{inc}.ranges"))).unwrap());
        let changed = json(&ok(&["diff", &img, &base, &copy, "--json"]));
        assert_eq!(listed, changed, "the ranges are the diff's");
        assert!(changed["total_bytes"].as_u64().unwrap() > 0);
        assert_eq!(std::fs::metadata(&inc).unwrap().len(), 4 * M);
        assert!(allocated(&inc) <= changed["total_bytes"].as_u64().unwrap());
        // Every other incremental goes through stdin.
        let ranges = format!("{inc}.ranges");
        if k % 2 == 0 {
            let r = run_with(&["write", &img, "9", "-", "--ranges", &ranges], &read(&inc));
            assert_eq!(r.code, 0, "{r:?}");
        } else {
            ok(&["write", &img, "9", &inc, "--ranges", &ranges]);
        }
        let want = lun(&img, &copy);
        assert!(lun(&img, "9") == want, "restore to copy {copy} differs");
        apply_by_hand(&inc, &mut by_hand);
        assert!(by_hand == want, "dd of the ranges to copy {copy} differs");
    }
    ok(&["check", &img]);
}

#[test]
fn incremental_reads_and_ranged_writes_refuse_what_cannot_work() {
    let d = Dir::new("inc-errors");
    let img = copies(&d);
    let inc = d.file("inc.raw");
    // The ranges file needs FILE.
    let r = usage_error(&["read", &img, "2", "-", "--changed-since", "1"]);
    assert!(r.stderr.contains("give a file"), "{r:?}");
    ok(&["lun", "create", &img, "3", "--size", "1M"]);
    fails(
        &["read", &img, "1", &inc, "--changed-since", "3"],
        "copies of one LUN",
    );
    fails(
        &["read", &img, "1", &inc, "--changed-since", "9"],
        "no such LUN: 9",
    );
    assert!(!std::path::Path::new(&inc).exists());
    ok(&["read", &img, "2", &inc, "--changed-since", "1"]);
    let ranges = format!("{inc}.ranges");
    // A broken ranges file, or one that FILE or the LUN do not hold, writes nothing.
    let before = lun(&img, "3");
    let bad = d.file("bad.ranges");
    for (text, needle) in [
        ("[1, 2]", "is not a ranges file"),
        (
            r#"{"ranges": [{"start": 100, "length": 512}], "total_bytes": 512}"#,
            "not whole 512-byte sectors",
        ),
        (
            r#"{"ranges": [{"start": 1024, "length": 512}, {"start": 0, "length": 512}], "total_bytes": 1024}"#,
            "out of order",
        ),
        (
            r#"{"ranges": [{"start": 0, "length": 512}], "total_bytes": 1024}"#,
            "add up to 512",
        ),
        (
            r#"{"ranges": [{"start": 4194304, "length": 512}], "total_bytes": 512}"#,
            "reach byte 4194816",
        ),
    ] {
        std::fs::write(&bad, text).unwrap();
        fails(&["write", &img, "3", &inc, "--ranges", &bad], needle);
    }
    fails(&["write", &img, "3", &inc, "--ranges", &ranges], "");
    fails(
        &[
            "write",
            &img,
            "3",
            &inc,
            "--ranges",
            &d.file("missing.ranges"),
        ],
        "missing.ranges",
    );
    assert!(lun(&img, "3") == before);
    // A stream that ends before the ranges do.
    let r = run_with(
        &["write", &img, "1", "-", "--ranges", &ranges],
        &[0u8; 4096],
    );
    assert_fails(&r, &["write -"], "ends before the ranges do");
}
