//! `repair`: an image whose mapping page is damaged in both copies is rebuilt from
//! what still reads, offline; the range the page mapped is lost and reads as an error
//! (never as zeros) until written; `--dry-run` changes nothing; a healthy image loses
//! nothing; a served image is refused.
//!
//! The images are damaged in place, as in heal.rs (docs/FORMAT.md: §2 the layout, §3
//! the page header, §4.4 B-tree nodes).

mod common;

use std::path::Path;

use common::*;

const MIB: usize = 1 << 20;

/// An image of 4 KiB extents (so that an 8 MiB LUN's mapping has several leaves):
/// LUN 1 written whole, its attached copy 2, LUN 3 half written, a host with a grant.
/// Returns it and LUN 1's data.
fn populated(d: &Dir, name: &str) -> (String, Vec<u8>) {
    let img = d.file(name);
    ok(&[
        "format",
        &img,
        "--size",
        "32M",
        "--max-luns",
        "16",
        "--extent-size",
        "4K",
    ]);
    ok(&["lun", "create", &img, "1", "--size", "8M"]);
    ok(&["lun", "create", &img, "3", "--size", "1M"]);
    let data = pattern(21, 8 * MIB);
    let file = d.file(&format!("{name}.data"));
    std::fs::write(&file, &data).unwrap();
    ok(&["write", &img, "1", &file]);
    std::fs::write(&file, &data[..MIB / 2]).unwrap();
    ok(&["write", &img, "3", &file]);
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
    ok(&["host", "add", &img, "50060b0000c26204", "--name", "backup"]);
    ok(&["grant", &img, "2", "50060b0000c26204", "--access", "read"]);
    (img, data)
}

/// A copy of `img` at `bad` with both copies of a leaf of LUN 1's mapping (not its
/// first) damaged; returns the lost range (offset, length) the dry run reports.
fn lose_a_leaf(img: &str, bad: &str) -> (u64, u64) {
    let geo = Geo::of(img);
    let leaves = geo.mapping_leaves(img);
    assert!(leaves.len() >= 3, "LUN 1's mapping is one leaf: {leaves:?}");
    for (p, first_key) in leaves {
        if first_key == 0 {
            continue;
        }
        std::fs::copy(img, bad).unwrap();
        damage(bad, p);
        damage(bad, geo.mirror(p));
        let r = run(&["repair", bad, "--dry-run", "--json"]);
        assert_eq!(r.code, 0, "{r:?}");
        let v = json(&r.out())["repaired"].clone();
        let lost = v["lost"].as_array().unwrap();
        // A leaf left from an earlier commit: nothing uses it.
        if lost.is_empty() {
            continue;
        }
        assert_eq!(v["unreadable_pages"], serde_json::json!([p]), "{v}");
        let (offset, length) = (
            lost[0]["offset"].as_u64().unwrap(),
            lost[0]["length"].as_u64().unwrap(),
        );
        assert!(offset > 0 && offset + length < 8 << 20, "{v}");
        return (offset, length);
    }
    panic!("no leaf of LUN 1's mapping is in use");
}

#[test]
fn a_lost_mapping_page_is_repaired_and_its_range_reads_as_an_error() {
    let d = Dir::new("repair-lost");
    let (img, data) = populated(&d, "a.img");
    let bad = d.file("bad.img");
    let (offset, length) = lose_a_leaf(&img, &bad);
    let (o, l) = (offset as usize, length as usize);
    let line = |lun: u32| {
        format!(
            "  LUN {lun}: offset {offset}, length {length} ({})\n",
            human(length)
        )
    };

    // A dry run: what a repair would keep and lose, and not a byte written.
    let before = read(&bad);
    let out = ok(&["repair", &bad, "--dry-run"]);
    for want in [
        "unreadable pages:  1 metadata page with no good copy: ",
        "LUNs kept:         3: LUNs 1, 2 and 3\n",
        "LUN records lost:  none\n",
        "bad records:       none\n",
        "orphaned copies:   none\n",
        "rebuilt mappings:  2: LUNs 1 and 2\n",
        "hosts:             1 kept, none lost\n",
        "of LUNs 1 and 2, in 2 ranges:\n",
        &line(1),
        &line(2),
        "nothing was changed",
        "DATA WOULD BE LOST: ",
    ] {
        assert!(out.contains(want), "lacks {want:?}: {out}");
    }
    assert!(!out.contains("clean"), "a dry run checked: {out}");
    let v = json(&ok(&["repair", &bad, "--dry-run", "--json"]));
    let r = &v["repaired"];
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["complete"], false);
    assert_eq!(r["check"], serde_json::Value::Null);
    assert_eq!(r["unreadable_count"], 1);
    assert_eq!(r["luns"], serde_json::json!([1, 2, 3]));
    assert_eq!(r["rebuilt"], serde_json::json!([1, 2]));
    assert_eq!(r["lost_records"], serde_json::json!([]));
    assert_eq!(r["bad_records"], serde_json::json!([]));
    assert_eq!(r["orphaned"], serde_json::json!([]));
    assert_eq!(r["hosts"], 1);
    assert_eq!(r["hosts_lost"], false);
    assert_eq!(r["lost_bytes"], 2 * length);
    assert_eq!(
        r["lost"],
        serde_json::json!([
            {"lun": 1, "offset": offset, "length": length},
            {"lun": 2, "offset": offset, "length": length},
        ])
    );
    let generation = r["generation"].as_u64().unwrap();
    assert!(read(&bad) == before, "a dry run wrote to the image");

    // The repair: the same findings, one new commit, and a clean check with notes.
    let r = run(&["repair", &bad]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.is_empty(), "{r:?}");
    let out = r.out();
    for want in [
        &line(1),
        &line(2),
        &format!("repaired {bad} in generation {}: ", generation + 1),
        "DATA WAS LOST: ",
        "read as errors until written or discarded",
        &format!("note: {length} bytes of LUN 1 were lost to metadata damage"),
        &format!("note: {length} bytes of LUN 2 were lost to metadata damage"),
        &format!("{bad}: clean (3 LUNs, generation {})\n", generation + 1),
    ] {
        assert!(out.contains(want), "lacks {want:?}: {out}");
    }
    assert!(!out.contains("nothing was changed"), "{out}");

    // What still reads is LUN 1's (and its copy's) data.
    let range = |lun: &str, from: usize, len: usize| {
        let r = run(&[
            "read",
            &bad,
            lun,
            "-",
            "--offset",
            &from.to_string(),
            "--length",
            &len.to_string(),
        ]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout == data[from..from + len], "LUN {lun} reads wrong");
    };
    for lun in ["1", "2"] {
        range(lun, 0, o);
        range(lun, o + l, (8 << 20) - o - l);
    }
    // The lost range is an error, wherever a read touches it; a read into a file
    // leaves no file behind.
    let said = format!("bytes of LUN 1 at offset {offset} were lost to metadata damage");
    let r = fails(&["read", &bad, "1", "-"], &said);
    assert!(r.stderr.contains("write or discard them"), "{r:?}");
    assert!(r.stdout.len() <= o, "the lost range was written out");
    fails(
        &[
            "read",
            &bad,
            "1",
            "-",
            "--offset",
            &(o + l - 4096).to_string(),
        ],
        &format!("4096 bytes of LUN 1 at offset {}", o + l - 4096),
    );
    fails(&["read", &bad, "2", "-"], "bytes of LUN 2 at offset");
    let file = d.file("lun1.raw");
    fails(&["read", &bad, "1", &file], &said);
    assert!(!Path::new(&file).exists(), "a failed read left {file}");
    let r = run(&["read", &bad, "3", "-", "--length", "512K"]);
    assert!(
        r.code == 0 && r.stdout == data[..MIB / 2],
        "LUN 3 lost: {r:?}"
    );

    // map marks the lost range (its mapping is gone: not data, not zeros either),
    // and diff reports it even between two LUNs that lost it alike.
    let v = json(&ok(&["map", &bad, "1", "--json"]));
    let extent = |start: u64, length: u64, data: bool, lost: bool| {
        serde_json::json!({"start": start, "length": length, "data": data,
            "zero": !data && !lost, "shared": data, "lost": lost})
    };
    let (o64, l64) = (o as u64, l as u64);
    assert_eq!(
        v,
        serde_json::json!([
            extent(0, o64, true, false),
            extent(o64, l64, false, true),
            extent(o64 + l64, (8 << 20) - o64 - l64, true, false),
        ])
    );
    let out = ok(&["map", &bad, "2"]);
    assert!(out.contains(&format!("{l:>15}  lost  -")), "{out}");
    assert!(out.contains("lost to metadata damage (kind lost)"), "{out}");
    let v = json(&ok(&["diff", &bad, "1", "2", "--json"]));
    assert_eq!(
        v["ranges"],
        serde_json::json!([{"start": o64, "length": l64}]),
        "{v}"
    );

    // lun list, info and check say what is lost.
    let list = ok(&["lun", "list", &bad]);
    let head = list.lines().next().unwrap();
    assert!(head.contains("LOST") && head.ends_with("GRANTS"), "{list}");
    let cell = format!(" {:>10}  ", human(length));
    assert_eq!(list.matches(&cell).count(), 2, "{list}");
    let v = json(&ok(&["lun", "list", &bad, "--json"]));
    let lost: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lost_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(lost, [length, length, 0]);
    let out = ok(&["info", &bad]);
    assert!(
        out.contains(&format!(
            "lost:            {} of LUNs 1 and 2 lost to metadata damage",
            both(2 * length)
        )),
        "{out}"
    );
    assert_eq!(
        json(&ok(&["info", &bad, "--json"]))["lost_bytes"],
        2 * length
    );
    let r = run(&["check", &bad]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.out().matches("note: ").count(), 2, "{r:?}");
    let v = json(&ok(&["check", &bad, "--json"]));
    assert_eq!(v["status"], "clean");
    assert_eq!(v["summary"]["notes"], 2);

    // Written again, the range reads what was written; its copy keeps its own loss.
    let fresh = pattern(22, l);
    let file = d.file("fresh.bin");
    std::fs::write(&file, &fresh).unwrap();
    ok(&["write", &bad, "1", &file, "--offset", &offset.to_string()]);
    let r = run(&["read", &bad, "1", "-"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout[..o] == data[..o], "LUN 1's start changed");
    assert!(
        r.stdout[o..o + l] == fresh[..],
        "LUN 1 does not read what was written"
    );
    assert!(r.stdout[o + l..] == data[o + l..], "LUN 1's end changed");
    fails(&["read", &bad, "2", "-"], "bytes of LUN 2 at offset");
    let v = json(&ok(&["lun", "list", &bad, "--json"]));
    assert_eq!(v[0]["lost_bytes"], 0);
    assert_eq!(v[1]["lost_bytes"], length);
    // Discarded, the copy's range reads as zeros: nothing is lost any more.
    ok(&[
        "discard",
        &bad,
        "2",
        "--offset",
        &offset.to_string(),
        "--length",
        &length.to_string(),
    ]);
    let r = run(&["read", &bad, "2", "-"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout[o..o + l].iter().all(|&b| b == 0));
    assert!(!ok(&["info", &bad]).contains("lost:"));
    assert!(!ok(&["lun", "list", &bad]).contains("LOST"));
    let out = ok(&["check", &bad]);
    assert!(!out.contains("note:") && out.contains(": clean ("), "{out}");
}

/// A size as the tool prints it: `3.4 MiB` (cli/src/size.rs).
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut i = 0;
    while i + 1 < UNITS.len() && n >> (10 * (i + 1)) > 0 {
        i += 1;
    }
    let unit = 1u64 << (10 * i);
    if n.is_multiple_of(unit) {
        format!("{} {}", n / unit, UNITS[i])
    } else {
        format!("{:.1} {}", n as f64 / unit as f64, UNITS[i])
    }
}

/// A size with its exact bytes, as the tool prints it: `6.9 MiB (7208960 bytes)`.
fn both(n: u64) -> String {
    format!("{} ({n} bytes)", human(n))
}

#[test]
fn a_healthy_image_loses_nothing() {
    let d = Dir::new("repair-healthy");
    let (img, data) = populated(&d, "a.img");
    let before = read(&img);
    let out = ok(&["repair", &img, "--dry-run"]);
    assert!(out.contains("unreadable pages:  none\n"), "{out}");
    assert!(out.contains("lost data:         none\n"), "{out}");
    assert!(
        out.ends_with("nothing was changed; a repair would lose nothing\n"),
        "{out}"
    );
    assert!(read(&img) == before, "a dry run wrote to the image");
    let generation = json(&ok(&["info", &img, "--json"]))["generation"]
        .as_u64()
        .unwrap();
    let out = ok(&["repair", &img]);
    assert!(
        out.contains(&format!(
            "repaired {img} in generation {}: nothing was lost",
            generation + 1
        )),
        "{out}"
    );
    assert!(out.ends_with(&format!(
        ": clean (3 LUNs, generation {})\n",
        generation + 1
    )));
    assert!(!out.contains("LOST") && !out.contains("note:"), "{out}");
    let v = json(&ok(&["repair", &img, "--json"]));
    let r = &v["repaired"];
    assert_eq!(r["complete"], true);
    assert_eq!(r["dry_run"], false);
    assert_eq!(r["lost"], serde_json::json!([]));
    assert_eq!(r["lost_bytes"], 0);
    assert_eq!(r["rebuilt"], serde_json::json!([]));
    assert_eq!(r["check"]["status"], "clean");
    assert_eq!(r["check"]["summary"]["notes"], 0);
    let r = run(&["read", &img, "1", "-"]);
    assert!(r.code == 0 && r.stdout == data, "{}", r.stderr);
    assert_eq!(
        json(&ok(&["lun", "list", &img, "--json"]))[1]["grants"][0]["access"],
        "read"
    );
    ok(&["check", &img]);
}

#[test]
fn repair_needs_an_image_and_allow_rollback_for_a_lost_commit() {
    let d = Dir::new("repair-refused");
    let junk = d.file("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    fails(&["repair", &junk], &format!("cannot repair {junk}: "));
    fails(&["repair", &d.file("missing.img")], "cannot open");
    let (img, data) = populated(&d, "a.img");
    let geo = Geo::of(&img);
    for p in geo.newest_superblock() {
        damage(&img, p);
    }
    let before = read(&img);
    let r = fails(&["repair", &img], "--allow-rollback");
    assert!(
        r.stderr.contains(&format!("generation {}", geo.generation)),
        "{r:?}"
    );
    fails(&["repair", &img, "--dry-run"], "--allow-rollback");
    assert!(read(&img) == before, "a refused repair wrote to the image");
    let out = ok(&["--allow-rollback", "repair", &img]);
    assert!(out.contains("nothing was lost"), "{out}");
    assert!(out.contains("note: generation"), "{out}");
    // The rollback is recorded: no flag needed from now on.
    ok(&["info", &img]);
    let r = run(&["read", &img, "1", "-"]);
    assert!(r.code == 0 && r.stdout == data, "{}", r.stderr);
}

#[test]
fn a_served_image_is_refused_and_its_lost_ranges_are_errors_there_too() {
    let d = Dir::new("repair-served");
    let (img, _) = populated(&d, "a.img");
    let bad = d.file("bad.img");
    let (offset, _) = lose_a_leaf(&img, &bad);
    ok(&["repair", &bad]);
    let server = Server::start(&d.0, "bad.img", &[]);
    for args in [
        &["repair", "bad.img"][..],
        &["repair", "bad.img", "--dry-run"],
        &["repair", "bad.img", "--json"],
    ] {
        let r = run_in(&d.0, args, &[], &[]);
        assert_fails(&r, args, "repair cannot run on a served image");
        assert!(r.stderr.contains("stop its `lunsnap serve` first"), "{r:?}");
        assert!(r.stdout.is_empty(), "{r:?}");
    }
    // A read through the server fails as a cold one does, before FILE is made.
    let said = format!("bytes of LUN 1 at offset {offset} were lost to metadata damage");
    let r = run_in(&d.0, &["read", "bad.img", "1", "-"], &[], &[]);
    assert_fails(&r, &["read"], &said);
    let r = run_in(&d.0, &["read", "bad.img", "1", "out.raw"], &[], &[]);
    assert_fails(&r, &["read"], &said);
    assert!(!d.0.join("out.raw").exists());
    let r = run_in(&d.0, &["lun", "list", "bad.img", "--json"], &[], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(json(&r.out())[0]["lost_bytes"].as_u64().unwrap() > 0);
    server.stop();
}
