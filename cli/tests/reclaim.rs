//! Freeing in the background: an image whose free queue holds a dropped mapping (left
//! by the library, which frees it later) shows it in `info`, is freed by `reclaim`
//! (a budget at a time, or all of it), and by any command that changes the image; a
//! served one is freed by the server while it serves.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lunsnap::{Array, FileDevice, FormatOptions};

/// LUN 2's size: 4,096 extents of 4 KiB, many leaves of its mapping, and more work
/// than a flush's share of reclamation (`RECLAIM_PER_FLUSH`).
const DROPPED: u64 = 16 << 20;
/// What LUN 1 keeps written.
const KEPT: u64 = 64 << 10;

/// An image (`name` in `d`, 32 MiB, 4 KiB extents) with LUN 1 (its first 64 KiB
/// written) and LUN 2, written whole and deleted with the library: its 16 MiB wait in
/// the free queue.
fn pending_image(d: &Dir, name: &str) -> String {
    // Its extents alone are a flush's share; its nodes come on top.
    const { assert!(DROPPED / 4096 >= lunsnap::RECLAIM_PER_FLUSH) };
    let img = d.file(name);
    let dev = FileDevice::create(&img, 4096, 8192).unwrap();
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 16,
        ..FormatOptions::default()
    };
    let mut a = Array::format(dev, &opts).unwrap();
    a.create_lun(1, 1 << 20).unwrap();
    a.write(1, 0, &pattern(1, KEPT as usize)).unwrap();
    a.create_lun(2, DROPPED).unwrap();
    a.write(2, 0, &pattern(2, DROPPED as usize)).unwrap();
    a.flush().unwrap();
    // The delete commits; nothing after it commits, so nothing frees the queue.
    a.delete(2, false).unwrap();
    assert!(a.reclaim_pending());
    a.close().unwrap();
    img
}

/// `info --json`'s (allocated_bytes, pending_bytes, reclaim_queue).
fn pending(img: &str) -> (u64, u64, u64) {
    let v = json(&ok(&["info", img, "--json"]));
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k}: {v}"));
    (n("allocated_bytes"), n("pending_bytes"), n("reclaim_queue"))
}

fn clean(img: &str) {
    assert!(ok(&["check", img]).contains(": clean ("));
}

#[test]
fn info_shows_what_waits_and_reclaim_frees_it_a_budget_at_a_time() {
    let d = Dir::new("reclaim");
    let img = pending_image(&d, "p.img");
    assert_eq!(pending(&img), (KEPT + DROPPED, DROPPED, 1));
    let out = ok(&["info", &img]);
    assert!(
        out.contains(
            "pending free:    16 MiB (1 queue entry) of dropped mappings, counted as \
             allocated until `lunsnap reclaim` (or any change) frees it\n"
        ),
        "{out}"
    );
    // The row comes right after the pool's free space.
    let rows: Vec<&str> = out.lines().map(|l| l.split(':').next().unwrap()).collect();
    let at = rows.iter().position(|&r| r == "free").unwrap();
    assert_eq!(rows[at + 1], "pending free", "{out}");

    // One unit of work: the mapping's root is freed, its leaves take its place.
    let v = json(&ok(&["reclaim", &img, "--budget", "1", "--json"]));
    let r = &v["reclaimed"];
    assert_eq!(r["image"], img.as_str());
    assert_eq!(
        (r["work"].as_u64(), r["nodes_freed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (r["extent_refs"].as_u64(), r["bytes_freed"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(r["pending_bytes"].as_u64(), Some(DROPPED));
    let leaves = r["remaining"].as_u64().unwrap();
    assert!(leaves > 1, "{v}");
    assert_eq!(pending(&img), (KEPT + DROPPED, DROPPED, leaves));
    clean(&img);

    // A leaf more, in text: some extents are freed, and the rest still waits.
    let out = ok(&["reclaim", &img, "--budget", "1"]);
    assert!(
        out.starts_with(&format!("reclaimed {img}: freed ")),
        "{out}"
    );
    assert!(
        out.contains(" and 1 metadata page, in ")
            && out.contains(&format!("; {} queue entries still wait (", leaves - 1))
            && out.ends_with("): `lunsnap reclaim` (or any change) frees it\n"),
        "{out}"
    );
    let (allocated, left, entries) = pending(&img);
    assert!(
        left > 0 && left < DROPPED && allocated == KEPT + left,
        "{left}"
    );
    assert_eq!(entries, leaves - 1);

    // All the rest.
    let v = json(&ok(&["reclaim", &img, "--json"]));
    let r = &v["reclaimed"];
    assert_eq!(r["bytes_freed"].as_u64(), Some(left));
    assert_eq!(r["extent_refs"].as_u64(), Some(left / 4096));
    assert_eq!(
        (r["pending_bytes"].as_u64(), r["remaining"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(pending(&img), (KEPT, 0, 0));
    let out = ok(&["info", &img]);
    assert!(!out.contains("pending"), "{out}");
    clean(&img);
    // LUN 1 is untouched.
    let back = d.file("lun1.raw");
    ok(&["read", &img, "1", &back, "--length", "64K"]);
    assert_eq!(read(&back), pattern(1, KEPT as usize));

    // Nothing waits: said so, and exit 0.
    assert_eq!(
        ok(&["reclaim", &img]),
        format!("nothing to reclaim in {img}: no dropped mapping waits to be freed\n")
    );
    let v = json(&ok(&["reclaim", &img, "--json"]));
    assert_eq!(v["reclaimed"]["work"].as_u64(), Some(0));
    usage_error(&["reclaim", &img, "--budget", "0"]);
}

#[test]
fn reclaim_frees_everything_in_one_go() {
    let d = Dir::new("reclaim-all");
    let img = pending_image(&d, "p.img");
    let out = ok(&["reclaim", &img]);
    assert!(
        out.starts_with(&format!(
            "reclaimed {img}: freed 16 MiB (16777216 bytes) of data (4096 extent references) \
             and "
        )) && out.ends_with("; nothing waits any more\n"),
        "{out}"
    );
    assert_eq!(pending(&img), (KEPT, 0, 0));
    clean(&img);
}

#[test]
fn every_change_leaves_nothing_waiting() {
    let d = Dir::new("reclaim-change");
    let changes: [&[&str]; 6] = [
        &["lun", "create", "IMG", "3", "--size", "1M"],
        &["lun", "delete", "IMG", "1"],
        &["host", "add", "IMG", "50060b0000c26204"],
        &["discard", "IMG", "1", "--offset", "0", "--length", "4K"],
        &["scrub", "IMG"],
        &[
            "copy",
            "create",
            "IMG",
            "--parent",
            "1",
            "--copy",
            "5",
            "--attached",
        ],
    ];
    for (i, change) in changes.iter().enumerate() {
        let img = pending_image(&d, &format!("c{i}.img"));
        let args: Vec<&str> = change
            .iter()
            .map(|&a| if a == "IMG" { img.as_str() } else { a })
            .collect();
        ok(&args);
        let (_, left, entries) = pending(&img);
        assert_eq!((left, entries), (0, 0), "{change:?}");
        clean(&img);
    }
    // A write, from stdin.
    let img = pending_image(&d, "w.img");
    let r = run_with(&["write", &img, "1", "-"], &pattern(3, 4096));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(pending(&img), (KEPT, 0, 0));
    clean(&img);
    // A refused change frees nothing (it changed nothing).
    let img = pending_image(&d, "refused.img");
    fails(
        &["lun", "create", &img, "1", "--size", "1M"],
        "already in use",
    );
    assert_eq!(pending(&img).1, DROPPED);
}

#[test]
fn a_served_image_is_freed_in_the_background() {
    let d = Dir::new("reclaim-serve");
    let img = pending_image(&d, "s.img");
    assert_eq!(pending(&img).1, DROPPED);
    let server = Server::start(&d.0, "s.img", &[]);
    // `info` runs in the server (the image is locked): only its reclaimer frees.
    let info = |args: &[&str]| {
        let r = run_in(&d.0, args, b"", &[]);
        assert_eq!(r.code, 0, "{r:?}\n{}", server.log());
        r.out()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = json(&info(&["info", "s.img", "--json"]));
        if v["pending_bytes"] == 0 && v["reclaim_queue"] == 0 {
            assert_eq!(v["allocated_bytes"].as_u64(), Some(KEPT));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never freed: {v}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!info(&["info", "s.img"]).contains("pending"));
    // Over the control socket, `reclaim` finds nothing left.
    assert_eq!(
        info(&["reclaim", "s.img"]),
        "nothing to reclaim in s.img: no dropped mapping waits to be freed\n"
    );
    server.stop();
    assert_eq!(pending(&img), (KEPT, 0, 0));
    clean(&img);
}

#[test]
fn reclaim_is_in_the_help() {
    let out = ok(&["--help"]);
    assert!(out.contains("reclaim"), "{out}");
    let out = ok(&["reclaim", "--help"]);
    assert!(
        out.contains("--budget <UNITS>") && out.contains("--json"),
        "{out}"
    );
}
