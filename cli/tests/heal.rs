//! Damaged metadata from the command line: two copies of every metadata page (`format
//! --metadata-copies`), read from the good copy and healed; `scrub`; `check`'s exit
//! status as qemu-img check's (0 clean, 1 could not check, 2 damage, 3 leaks only);
//! a lost newest commit refused unless `--allow-rollback`.
//!
//! The images are damaged in place, as a failing disk would: the layout is in
//! docs/FORMAT.md §2 (first copies of the metadata area from page 2, second copies
//! before the last two pages, superblock slot `s` at page `s` and at `P - 2 + s`).

mod common;

use std::os::unix::fs::FileExt;

use common::*;

/// CRC32C (Castagnoli), as the page headers use (docs/FORMAT.md §3).
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ if crc & 1 != 0 { 0x82f6_3b78 } else { 0 };
        }
    }
    !crc
}

/// Seals a metadata page: its CRC32C over bytes 0..8 and 12..4096, at 8.
fn seal(page: &mut [u8]) {
    let mut data = page[..8].to_vec();
    data.extend_from_slice(&page[12..]);
    let c = crc32c(&data);
    page[8..12].copy_from_slice(&c.to_le_bytes());
}

/// `info --json`.
fn info(img: &str, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["info", img, "--json"];
    a.extend_from_slice(extra);
    json(&ok(&a))
}

/// An image with every kind of metadata in use: LUN 1 written, its attached copy 2,
/// LUN 3 written, a host with a grant. Returns it and the data of LUN 1.
fn populated(d: &Dir, name: &str, copies: &str) -> (String, Vec<u8>) {
    let img = d.file(name);
    ok(&[
        "format",
        &img,
        "--size",
        "16M",
        "--max-luns",
        "16",
        "--metadata-copies",
        copies,
    ]);
    ok(&["lun", "create", &img, "1", "--size", "4M"]);
    ok(&["lun", "create", &img, "3", "--size", "1M"]);
    let data = pattern(11, 1 << 20);
    let file = d.file(&format!("{name}.data"));
    std::fs::write(&file, &data).unwrap();
    ok(&["write", &img, "1", &file]);
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
    let half = d.file(&format!("{name}.half"));
    std::fs::write(&half, &data[..512 << 10]).unwrap();
    ok(&["write", &img, "3", &half]);
    ok(&["host", "add", &img, "50060b0000c26204", "--name", "backup"]);
    ok(&["grant", &img, "2", "50060b0000c26204", "--access", "read"]);
    ok(&["write", &img, "1", &file, "--offset", "2M"]);
    (img, data)
}

/// Asserts no line of `out` is printed twice.
fn each_line_once(out: &str) {
    let lines: Vec<&str> = out.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        assert!(!lines[..i].contains(l), "printed twice: {l:?} in {out}");
    }
}

#[test]
fn format_with_one_or_two_copies_and_info_says_which() {
    let d = Dir::new("heal-format");
    let mut capacity = Vec::new();
    for (copies, extra) in [
        ("2", &[][..]),
        ("2", &["--metadata-copies", "2"]),
        ("1", &["--metadata-copies", "1"]),
    ] {
        let img = d.file(&format!("c{copies}-{}.img", extra.len()));
        let mut a = vec!["format", &img, "--size", "32M", "--max-luns", "64"];
        a.extend_from_slice(extra);
        let out = ok(&a);
        let every = if copies == "1" {
            "1 copy of every page"
        } else {
            "2 copies of every page"
        };
        assert!(out.contains(every), "{out}");
        let out = ok(&["info", &img]);
        assert!(
            out.contains(&format!("metadata copies: {copies} (")),
            "{out}"
        );
        assert!(
            out.contains("healed:          0 bad copies rewritten so far\n"),
            "{out}"
        );
        let v = info(&img, &[]);
        assert_eq!(v["metadata_copies"].to_string(), copies);
        assert_eq!(Geo::of(&img).copies.to_string(), copies);
        capacity.push(v["capacity_bytes"].as_u64().unwrap());
        let mut a = vec!["format", &img, "--size", "32M", "--force", "--json"];
        a.extend_from_slice(extra);
        let v = json(&ok(&a));
        assert_eq!(v["formatted"]["metadata_copies"].to_string(), copies);
    }
    // One copy leaves more of the image for data.
    assert_eq!(capacity[0], capacity[1]);
    assert!(capacity[2] > capacity[1], "{capacity:?}");
    // The help says what check and scrub exit with.
    let help = ok(&["--help"]);
    for k in [
        "scrub",
        "--allow-rollback",
        "3 only leaked space found",
        "2 damage found",
    ] {
        assert!(help.contains(k), "--help lacks {k}: {help}");
    }
    assert!(ok(&["format", "--help"]).contains("--metadata-copies"));
}

#[test]
fn one_damaged_copy_of_every_page_loses_nothing_and_is_healed() {
    let d = Dir::new("heal-one");
    let (img, data) = populated(&d, "a.img", "2");
    let geo = Geo::of(&img);
    assert_eq!(geo.copies, 2);
    let pages = geo.written(&img);
    assert!(pages.len() >= 6, "{pages:?}");
    let clean_map = ok(&["map", &img, "2", "--json"]);
    let clean_list = ok(&["lun", "list", &img, "--json"]);
    let clean_diff = ok(&["diff", &img, "1", "2", "--json"]);
    assert!(
        clean_diff.contains("\"total_bytes\": 1048576"),
        "{clean_diff}"
    );
    // Either copy, of every page.
    for first in [true, false] {
        let bad = d.file(if first { "first.img" } else { "second.img" });
        std::fs::copy(&img, &bad).unwrap();
        for &p in &pages {
            damage(&bad, if first { p } else { geo.mirror(p) });
        }
        // Reading commands open read-only, write nothing, and see everything.
        let before = read(&bad);
        let out = run(&["read", &bad, "1", "-", "--length", "1M"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout == data, "LUN 1 reads wrong");
        let out = run(&["read", &bad, "1", "-", "--offset", "2M", "--length", "1M"]);
        assert!(out.code == 0 && out.stdout == data, "{}", out.stderr);
        let out = run(&["read", &bad, "2", "-", "--length", "1M"]);
        assert!(
            out.code == 0 && out.stdout == data,
            "copy 2 reads wrong: {}",
            out.stderr
        );
        assert_eq!(ok(&["map", &bad, "2", "--json"]), clean_map);
        assert_eq!(ok(&["lun", "list", &bad, "--json"]), clean_list);
        assert_eq!(ok(&["diff", &bad, "1", "2", "--json"]), clean_diff);
        ok(&["host", "list", &bad]);
        let out = ok(&["check", &bad]);
        assert!(out.contains("clean (3 LUNs, generation"), "{out}");
        assert_eq!(out.lines().count(), 1, "{out}");
        // A bad first copy is found as the page is read (a second copy is read only
        // when its first is bad: scrub finds those).
        let v = info(&bad, &[]);
        assert_eq!(v["pending_heals"].as_u64().unwrap() > 0, first, "{v}");
        assert_eq!(v["healed_pages"], 0, "{v}");
        let out = ok(&["info", &bad]);
        assert_eq!(
            out.contains("found since the last commit, rewritten at the next"),
            first,
            "{out}"
        );
        assert!(read(&bad) == before, "a reading command wrote to the image");
        // A change rewrites the bad copies it read.
        ok(&["lun", "create", &bad, "4", "--size", "1M"]);
        let v = info(&bad, &[]);
        let healed = v["healed_pages"].as_u64().unwrap();
        assert_eq!(healed > 0, first, "{v}");
        assert!(!ok(&["info", &bad]).contains("since the last commit"));
        // Scrub finds and heals the rest, and a second scrub finds nothing.
        let r = run(&["scrub", &bad]);
        assert_eq!(r.code, 0, "{r:?}");
        let out = r.out();
        assert!(
            out.starts_with(&format!("scrubbed {bad}: read "))
                && out.contains("metadata pages (both copies of each), healed ")
                && out.ends_with("every page has a good copy\n"),
            "{out}"
        );
        assert_eq!(out.lines().count(), 1, "{out}");
        let v = json(&ok(&["scrub", &bad, "--json"]));
        assert_eq!(v["scrubbed"]["healed"], 0, "{v}");
        assert_eq!(v["scrubbed"]["healthy"], true, "{v}");
        let total = info(&bad, &[])["healed_pages"].as_u64().unwrap();
        assert!(total > healed, "scrub healed nothing: {total}");
        // Every copy is whole again: the other copy can go now.
        for &p in &geo.written(&bad) {
            damage(&bad, if first { geo.mirror(p) } else { p });
        }
        let out = run(&["read", &bad, "1", "-", "--length", "1M"]);
        assert!(out.code == 0 && out.stdout == data, "{}", out.stderr);
        ok(&["check", &bad]);
    }
}

#[test]
fn a_page_with_no_good_copy_is_named_by_scrub_and_check() {
    let d = Dir::new("heal-lost");
    let (img, _) = populated(&d, "a.img", "2");
    let geo = Geo::of(&img);
    let bad = d.file("bad.img");
    let (mut lost, mut unopenable) = (0, 0);
    for p in geo.written(&img) {
        std::fs::copy(&img, &bad).unwrap();
        damage(&bad, p);
        damage(&bad, geo.mirror(p));
        let check = run(&["check", &bad]);
        let scrub = run(&["scrub", &bad]);
        match scrub.code {
            // A page left from an earlier commit: nothing uses it.
            0 => assert_eq!(check.code, 0, "page {p}: {check:?}"),
            // The array cannot open without it: nothing can be checked.
            1 => {
                unopenable += 1;
                assert_fails(&check, &["check"], &format!("metadata page {p}"));
                assert_fails(&scrub, &["scrub"], &format!("metadata page {p}"));
            }
            2 => {
                lost += 1;
                let out = scrub.out();
                assert!(
                    out.starts_with(&format!("metadata page {p}: no good copy left: ")),
                    "{out}"
                );
                assert!(out.contains("1 page has no good copy left"), "{out}");
                assert!(scrub.stderr.is_empty(), "{scrub:?}");
                each_line_once(&out);
                // check: exit 2, the page named once, as damage.
                assert_eq!(check.code, 2, "page {p}: {check:?}");
                let out = check.out();
                assert!(
                    out.contains(&format!("damage: block {p} unreadable")),
                    "{out}"
                );
                assert!(out.lines().last().unwrap().contains("damaged: "), "{out}");
                each_line_once(&out);
                let v = json(&run(&["check", &bad, "--json"]).out());
                assert_eq!(v["status"], "damage");
                assert_eq!(v["clean"], false);
                assert!(v["summary"]["damage"].as_u64().unwrap() >= 1, "{v}");
                let v = &v["findings"][0];
                assert_eq!(v["severity"], "damage");
                assert!(v["message"].as_str().unwrap().contains("unreadable"), "{v}");
                // Scrub again, in JSON: the page, still lost.
                let r = run(&["scrub", &bad, "--json"]);
                assert_eq!(r.code, 2, "{r:?}");
                let v = json(&r.out());
                assert_eq!(v["scrubbed"]["healthy"], false);
                assert_eq!(v["scrubbed"]["lost_count"], 1);
                assert_eq!(v["scrubbed"]["lost"][0]["page"], p);
            }
            c => panic!("scrub exited {c}: {scrub:?}"),
        }
    }
    assert!(lost > 0, "no page was lost for good");
    assert!(unopenable > 0, "every page could go");

    // With one copy, one damaged copy is a page lost: scrub names it too.
    let (one, _) = populated(&d, "one.img", "1");
    let geo = Geo::of(&one);
    assert_eq!(geo.copies, 1);
    let mut named = 0;
    for p in geo.written(&one) {
        std::fs::copy(&one, &bad).unwrap();
        damage(&bad, p);
        let r = run(&["scrub", &bad]);
        if r.code == 2 {
            named += 1;
            assert!(
                r.out()
                    .contains(&format!("metadata page {p}: no good copy")),
                "{r:?}"
            );
            assert!(
                r.out().contains(
                    "(one copy of each, two of the superblocks: a damaged page cannot be healed)"
                ),
                "{r:?}"
            );
        }
    }
    assert!(named > 0);
}

/// Every command that opens `img` must fail with exit 1, naming `lost` and the flag.
fn refused_everywhere(img: &str, lost: u64) {
    let before = read(img);
    let said = format!("both copies of the superblock of generation {lost} are damaged");
    for args in [
        &["info", img][..],
        &["info", img, "--json"],
        &["lun", "list", img],
        &["lun", "create", img, "5", "--size", "1M"],
        &["lun", "delete", img, "3"],
        &["read", img, "1", "-"],
        &["write", img, "3", "-"],
        &["map", img, "1"],
        &["diff", img, "1", "2"],
        &["discard", img, "1", "--offset", "0", "--length", "4K"],
        &["copy", "attach", img, "2"],
        &["host", "list", img],
        &["grant", img, "1", "50060b0000c26204", "--access", "read"],
        &["security", "enable", img],
        &["check", img],
        &["check", img, "--json"],
        &["scrub", img],
    ] {
        let r = fails(args, &said);
        assert!(r.stderr.contains("--allow-rollback"), "{r:?}");
        assert!(r.stdout.is_empty(), "{r:?}");
    }
    assert!(read(img) == before, "a refused command changed the image");
}

#[test]
fn a_lost_newest_commit_is_refused_unless_the_rollback_is_allowed() {
    let d = Dir::new("heal-rollback");
    let (img, data) = populated(&d, "a.img", "2");
    // The newest commit writes other data over LUN 1's first MiB.
    let newer = pattern(12, 1 << 20);
    let file = d.file("newer.bin");
    std::fs::write(&file, &newer).unwrap();
    let kept = info(&img, &[])["generation"].as_u64().unwrap();
    ok(&["write", &img, "1", &file]);
    let geo = Geo::of(&img);
    assert_eq!(
        geo.generation,
        kept + 1,
        "the write took more than one commit"
    );
    assert_eq!(info(&img, &[])["generation"], geo.generation);
    for p in geo.newest_superblock() {
        damage(&img, p);
    }
    refused_everywhere(&img, geo.generation);

    // Allowed: the commands run on the array as of the commit before, read-only ones
    // without writing anything.
    let before = read(&img);
    let r = run(&["--allow-rollback", "read", &img, "1", "-", "--length", "1M"]);
    assert!(r.code == 0 && r.stdout == data, "{}", r.stderr);
    let out = ok(&["info", &img, "--allow-rollback"]);
    let line = format!(
        "rollback:        generation {} was lost to damage: an open that allowed it \
         (--allow-rollback) went back to generation {kept}; the next change records it",
        geo.generation
    );
    assert!(out.contains(&line), "{out}");
    assert!(out.contains(&format!("generation:      {kept}\n")), "{out}");
    let v = info(&img, &["--allow-rollback"]);
    assert_eq!(
        v["rollback"],
        serde_json::json!({"lost_generation": geo.generation, "kept_generation": kept})
    );
    let note = format!(
        "note: generation {} was lost to damage and the array was rolled back to \
         generation {kept}",
        geo.generation
    );
    let r = run(&["check", &img, "--allow-rollback"]);
    assert_eq!(r.code, 0, "{r:?}");
    let out = r.out();
    assert!(out.starts_with(&note), "{out}");
    assert_eq!(out.matches("note:").count(), 1, "{out}");
    assert!(
        out.lines().nth(1).unwrap().contains(": clean (3 LUNs"),
        "{out}"
    );
    let v = json(&ok(&["check", &img, "--allow-rollback", "--json"]));
    assert_eq!(v["clean"], true);
    assert_eq!(v["status"], "clean");
    assert_eq!(v["summary"]["notes"], 1);
    assert_eq!(v["findings"][0]["severity"], "note");
    assert!(
        !v["findings"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("note:"),
        "{v}"
    );
    ok(&["lun", "list", &img, "--allow-rollback"]);
    ok(&["map", &img, "1", "--allow-rollback"]);
    assert!(read(&img) == before, "a reading command wrote to the image");
    // Nothing recorded yet: still refused without the flag.
    fails(&["info", &img], "--allow-rollback");

    // A served image: the server opens it with the flag (or refuses to serve it);
    // a forwarded command's --allow-rollback changes nothing, and the first change
    // records the rollback.
    let r = run(&["serve", &img]);
    assert_fails(&r, &["serve"], &format!("generation {}", geo.generation));
    let server = Server::start(&d.0, "a.img", &["--allow-rollback"]);
    let r = run_in(&d.0, &["info", "a.img"], &[], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out().contains(&line), "{r:?}");
    let r = run_in(&d.0, &["--allow-rollback", "check", "a.img"], &[], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out().starts_with(&note), "{r:?}");
    let r = run_in(
        &d.0,
        &["lun", "create", "a.img", "5", "--size", "1M"],
        &[],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = run_in(&d.0, &["info", "a.img"], &[], &[]);
    assert!(r.out().contains("rollback:        generation"), "{r:?}");
    assert!(!r.out().contains("the next change records it"), "{r:?}");
    server.stop();

    // Recorded: no flag needed from now on, and check still notes it.
    let out = ok(&["info", &img]);
    assert!(out.contains("rollback:        generation"), "{out}");
    let r = run(&["check", &img]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out().starts_with(&note), "{r:?}");
    let r = run(&["read", &img, "1", "-", "--length", "1M"]);
    assert!(r.code == 0 && r.stdout == data, "{}", r.stderr);

    // A cold change records it too: scrub.
    let (img, _) = populated(&d, "b.img", "1");
    let geo = Geo::of(&img);
    for p in geo.newest_superblock() {
        damage(&img, p);
    }
    fails(&["scrub", &img], "--allow-rollback");
    let r = run(&["scrub", &img, "--allow-rollback"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(&["check", &img]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out().starts_with("note: generation "), "{r:?}");
    assert!(ok(&["info", &img]).contains("rollback:"));
}

#[test]
fn check_exits_3_when_it_finds_only_leaks() {
    let d = Dir::new("heal-leak");
    for copies in ["1", "2"] {
        let (img, _) = populated(&d, &format!("c{copies}.img"), copies);
        let geo = Geo::of(&img);
        // The data space map's root: one leaf for these few extents (§4.3). Count one
        // reference too many for the first extent in use, in every copy.
        let b = read(&img);
        let sb = &b[((geo.generation % 2) * PAGE) as usize..][..PAGE as usize];
        let root = u64_at(sb, 152);
        let mut leaf = b[(root * PAGE) as usize..][..PAGE as usize].to_vec();
        assert_eq!(leaf[4], 3, "the data space map's root is not a leaf");
        let i = (0..1016)
            .find(|&i| u32_at(&leaf, 32 + 4 * i) > 0)
            .expect("an extent in use");
        let n = u32_at(&leaf, 32 + 4 * i);
        leaf[32 + 4 * i..][..4].copy_from_slice(&(n + 1).to_le_bytes());
        seal(&mut leaf);
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&leaf, root * PAGE).unwrap();
        if geo.copies == 2 {
            f.write_all_at(&leaf, geo.mirror(root) * PAGE).unwrap();
        }
        drop(f);
        let r = run(&["check", &img]);
        assert_eq!(r.code, 3, "{r:?}");
        let out = r.out();
        assert!(
            out.starts_with(&format!(
                "leak: data extent {i}: reference count {} but {n} references",
                n + 1
            )),
            "{out}"
        );
        assert!(out.contains(": 1 leak found: "), "{out}");
        assert!(r.stderr.is_empty(), "{r:?}");
        each_line_once(&out);
        let r = run(&["check", &img, "--json"]);
        assert_eq!(r.code, 3, "{r:?}");
        let v = json(&r.out());
        assert_eq!(v["clean"], false);
        assert_eq!(v["status"], "leaks");
        assert_eq!(
            v["summary"],
            serde_json::json!({"notes": 0, "leaks": 1, "damage": 0})
        );
        assert_eq!(v["findings"][0]["severity"], "leak");
        // A leak wastes space; everything still reads and scrubs.
        ok(&["lun", "list", &img]);
        assert_eq!(run(&["scrub", &img]).code, 0);
    }
}

#[test]
fn scrub_prints_and_exits_the_same_on_a_served_image() {
    let d = Dir::new("heal-served");
    let (img, _) = populated(&d, "a.img", "2");
    let geo = Geo::of(&img);
    let pages = geo.written(&img);
    // One page that a scrub finds lost: it does not keep the array from opening.
    let probe = d.file("probe.img");
    let lost = pages
        .iter()
        .copied()
        .find(|&p| {
            std::fs::copy(&img, &probe).unwrap();
            damage(&probe, p);
            damage(&probe, geo.mirror(p));
            run(&["scrub", &probe]).code == 2
        })
        .expect("a page scrub names");
    let (cold, live) = (d.0.join("cold"), d.0.join("live"));
    for dir in [&cold, &live] {
        std::fs::create_dir_all(dir).unwrap();
        let copy = dir.join("va.img").to_string_lossy().into_owned();
        std::fs::copy(&img, &copy).unwrap();
        // One copy of every page bad, and both copies of one page.
        for &p in &pages {
            damage(&copy, p);
        }
        damage(&copy, geo.mirror(lost));
    }
    let server = Server::start(&live, "va.img", &[]);
    let steps: [&[&str]; 7] = [
        &["info", "va.img"],
        &["scrub", "va.img", "--progress"],
        &["scrub", "va.img", "--json"],
        &["check", "va.img"],
        &["check", "va.img", "--json"],
        &["--allow-rollback", "scrub", "va.img"],
        &["info", "va.img", "--json"],
    ];
    for args in steps {
        let c = run_in(&cold, args, &[], &[]);
        let l = run_in(&live, args, &[], &[]);
        let masked = |s: String| {
            s.lines()
                .filter(|l| !l.contains("image_allocated_bytes") && !l.starts_with("image:"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            (c.code, masked(c.out()), &c.stderr),
            (l.code, masked(l.out()), &l.stderr),
            "lunsnap {args:?}: cold (left) and served (right) differ"
        );
        if args.contains(&"scrub") {
            assert_eq!(c.code, 2, "{c:?}");
            assert!(c.out().contains(&format!("page {lost}")), "{args:?}: {c:?}");
        }
        if args.contains(&"--progress") {
            assert!(c.stderr.contains("lunsnap: scrub 100% of "), "{c:?}");
        }
    }
    // The first scrub healed the pages that had a good copy.
    let r = run_in(&cold, &["scrub", "va.img", "--json"], &[], &[]);
    assert_eq!(json(&r.out())["scrubbed"]["healed"], 0, "{r:?}");
    server.stop();
}
