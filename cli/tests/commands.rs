//! Every command's success path, and the JSON shapes scripts depend on.

mod common;

use common::*;

#[test]
fn format_info_and_the_lun_and_copy_lifecycle() {
    let d = Dir::new("lifecycle");
    let img = d.file("a.img");
    let out = ok(&["format", &img, "--size", "64M"]);
    assert!(out.contains("formatted") && out.contains("64 MiB"), "{out}");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);
    let out = ok(&["info", &img]);
    for k in [
        "capacity:",
        "reserved:",
        "allocated:",
        "free:",
        "metadata:",
        "extent size:",
        "metadata copies: 2 (",
        "healed:          0 bad copies",
    ] {
        assert!(out.contains(k), "info lacks {k}: {out}");
    }
    // Nothing pending, no rollback: no such lines.
    assert!(
        !out.contains("rollback") && !out.contains("next commit"),
        "{out}"
    );

    ok(&["lun", "create", &img, "1", "--size", "8M"]);
    ok(&["lun", "create", &img, "2", "--size", "1048576"]);
    ok(&[
        "copy",
        "create",
        &img,
        "--parent",
        "1",
        "--copy",
        "11",
        "--attached",
    ]);
    ok(&[
        "copy",
        "create",
        &img,
        "--parent",
        "1",
        "--copy",
        "12",
        "--detached",
    ]);
    let list = ok(&["lun", "list", &img]);
    let rows: Vec<&str> = list.lines().collect();
    assert_eq!(rows.len(), 5, "{list}");
    assert!(
        rows[0].contains("LUN") && rows[0].contains("KIND"),
        "{list}"
    );
    assert!(
        rows[3].contains("11") && rows[3].contains("attached"),
        "{list}"
    );
    assert!(
        rows[4].contains("12") && rows[4].contains("detached"),
        "{list}"
    );

    ok(&["copy", "attach", &img, "12"]);
    ok(&["copy", "detach", &img, "12"]);
    ok(&["copy", "detach", &img, "12"]); // detaching a detached copy changes nothing
    ok(&["copy", "restore", &img, "11"]);
    ok(&["lun", "delete", &img, "12"]);
    ok(&["lun", "delete", &img, "2"]);
    // Deleting a parent orphaning its copies: copy 11 stands alone as a plain LUN.
    ok(&["lun", "delete", &img, "1", "--orphan-copies"]);
    let v = json(&ok(&["lun", "list", &img, "--json"]));
    let luns = v.as_array().unwrap();
    assert_eq!(luns.len(), 1);
    assert_eq!(luns[0]["lun"], 11);
    assert_eq!(luns[0]["kind"], "lun");
    assert!(luns[0]["parent"].is_null());
    let out = ok(&["check", &img]);
    assert!(out.contains("clean"), "{out}");
}

#[test]
fn write_and_read_files_and_pipes() {
    let d = Dir::new("io");
    let img = d.file("a.img");
    ok(&["format", &img, "--size", "32M"]);
    ok(&["lun", "create", &img, "1", "--size", "4M"]);
    let data = pattern(1, 3 << 20);
    let src = d.file("src.bin");
    std::fs::write(&src, &data).unwrap();

    let out = ok(&["write", &img, "1", &src, "--offset", "512K"]);
    assert!(out.contains("wrote 3 MiB"), "{out}");
    // Part of it, at an offset given with a suffix.
    let part = d.file("part.bin");
    ok(&[
        "read", &img, "1", &part, "--offset", "1M", "--length", "64K",
    ]);
    assert_eq!(read(&part), &data[512 << 10..(512 + 64) << 10]);
    // The whole LUN by default: zeros around the data.
    let all = d.file("all.bin");
    ok(&["read", &img, "1", &all]);
    let got = read(&all);
    assert_eq!(got.len(), 4 << 20);
    assert!(got[..512 << 10].iter().all(|&b| b == 0));
    assert_eq!(&got[512 << 10..(512 << 10) + data.len()], &data[..]);
    assert!(got[(512 << 10) + data.len()..].iter().all(|&b| b == 0));
    // From the offset to the end of the LUN.
    let tail = d.file("tail.bin");
    ok(&["read", &img, "1", &tail, "--offset", "3584K"]);
    assert_eq!(read(&tail).len(), 512 << 10);

    // stdin and stdout.
    let small = pattern(2, 8192);
    let r = run_with(&["write", &img, "1", "-", "--offset", "4096"], &small);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(&[
        "read", &img, "1", "-", "--offset", "4096", "--length", "8192",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, small, "read to stdout prints only the data");
    assert!(r.stderr.is_empty(), "{r:?}");
    // An empty input writes nothing.
    let r = run_with(&["write", &img, "1", "-"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn copies_keep_their_image_and_restore_brings_it_back() {
    let d = Dir::new("copies");
    let img = small_image(&d);
    let one = d.file("one.bin");
    let two = d.file("two.bin");
    let got = d.file("got.bin");
    std::fs::write(&one, pattern(1, 64 << 10)).unwrap();
    std::fs::write(&two, pattern(2, 64 << 10)).unwrap();
    ok(&["write", &img, "1", &one]);
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
    ok(&["write", &img, "1", &two]);
    ok(&["read", &img, "2", &got, "--length", "64K"]);
    assert_eq!(read(&got), read(&one), "the copy changed with its parent");
    let v = json(&ok(&["lun", "list", &img, "--json"]));
    assert_eq!(v[1]["lun"], 2);
    assert!(v[1]["exclusive_bytes"].as_u64().unwrap() > 0);

    ok(&["copy", "restore", &img, "2"]);
    ok(&["read", &img, "1", &got, "--length", "64K"]);
    assert_eq!(
        read(&got),
        read(&one),
        "restore did not bring the copy's data back"
    );
    // Attach refreshes the copy from its parent.
    ok(&["write", &img, "1", &two]);
    ok(&["copy", "attach", &img, "2"]);
    ok(&["read", &img, "2", &got, "--length", "64K"]);
    assert_eq!(read(&got), read(&two));
    ok(&["check", &img]);
}

#[test]
fn json_shapes() {
    let d = Dir::new("json");
    let img = d.file("a.img");
    ok(&[
        "format",
        &img,
        "--size",
        "64M",
        "--extent-size",
        "64K",
        "--max-luns",
        "32",
    ]);
    ok(&["lun", "create", &img, "3", "--size", "4M"]);
    ok(&[
        "copy",
        "create",
        &img,
        "--parent",
        "3",
        "--copy",
        "7",
        "--attached",
    ]);
    ok(&[
        "copy",
        "create",
        &img,
        "--parent",
        "3",
        "--copy",
        "8",
        "--detached",
    ]);
    let src = d.file("src.bin");
    std::fs::write(&src, pattern(3, 128 << 10)).unwrap();
    ok(&["write", &img, "3", &src]);

    let v = json(&ok(&["lun", "list", &img, "--json"]));
    let luns = v.as_array().expect("lun list --json is an array");
    assert_eq!(luns.len(), 3);
    for l in luns {
        for k in [
            "lun",
            "size",
            "kind",
            "parent",
            "attached",
            "reserved_bytes",
            "exclusive_bytes",
            "shared_bytes",
            "online",
            "grants",
        ] {
            assert!(l.get(k).is_some(), "LUN object lacks {k}: {l}");
        }
        assert_eq!(l["size"], 4 << 20);
        assert_eq!(l["online"], true);
        assert_eq!(l["grants"], serde_json::json!([]));
    }
    let (lun, copy, detached) = (&luns[0], &luns[1], &luns[2]);
    assert_eq!(lun["lun"], 3);
    assert_eq!(lun["kind"], "lun");
    assert!(lun["parent"].is_null());
    assert_eq!(lun["attached"], true);
    assert_eq!(lun["reserved_bytes"], 4 << 20);
    assert_eq!(lun["exclusive_bytes"], 128 << 10);
    assert_eq!(copy["kind"], "copy");
    assert_eq!(copy["parent"], 3);
    assert_eq!(copy["attached"], true);
    assert_eq!(copy["shared_bytes"], 0);
    assert_eq!(detached["parent"], 3);
    assert_eq!(detached["attached"], false);
    assert_eq!(detached["reserved_bytes"], 0);

    let v = json(&ok(&["info", &img, "--json"]));
    assert!(v.is_object());
    for k in [
        "capacity_bytes",
        "allocated_bytes",
        "reserved_bytes",
        "free_bytes",
        "metadata_used_bytes",
        "metadata_provisioned_bytes",
        "metadata_copies",
        "healed_pages",
        "pending_heals",
        "extent_size",
        "luns",
    ] {
        assert!(v[k].is_u64(), "info --json: {k} is not a number: {v}");
    }
    assert_eq!(v["metadata_copies"], 2);
    assert_eq!(v["healed_pages"], 0);
    assert_eq!(v["pending_heals"], 0);
    assert!(v["rollback"].is_null(), "{v}");
    assert_eq!(v["extent_size"], 64 << 10);
    assert_eq!(v["luns"], 3);
    assert_eq!(v["max_luns"], 32);
    assert_eq!(v["reserved_bytes"], 8 << 20);
    assert_eq!(v["allocated_bytes"], 128 << 10);
    let cap = v["capacity_bytes"].as_u64().unwrap();
    assert_eq!(v["free_bytes"].as_u64().unwrap(), cap - (128 << 10));
    assert_eq!(v["image_bytes"], 64 << 20);
    assert_eq!(v["security"], false);
    assert_eq!(v["hosts"], 0);

    let v = json(&ok(&["check", &img, "--json"]));
    assert_eq!(v["clean"], true);
    assert_eq!(v["status"], "clean");
    assert_eq!(v["violations"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        v["summary"],
        serde_json::json!({"notes": 0, "leaks": 0, "damage": 0})
    );
    let v = json(&ok(&["scrub", &img, "--json"]));
    let s = &v["scrubbed"];
    assert_eq!(s["healthy"], true, "{v}");
    assert_eq!(s["healed"], 0, "{v}");
    assert_eq!(s["lost_count"], 0, "{v}");
    assert_eq!(s["lost"], serde_json::json!([]), "{v}");
    assert_eq!(s["metadata_copies"], 2, "{v}");
    assert!(s["pages"].as_u64().unwrap() >= 4, "{v}");

    // An empty image lists no LUNs.
    let empty = d.file("empty.img");
    ok(&["format", &empty, "--size", "16M", "--max-luns", "4"]);
    assert_eq!(
        json(&ok(&["lun", "list", &empty, "--json"])),
        serde_json::json!([])
    );
}

#[test]
fn format_force_replaces_an_image() {
    let d = Dir::new("force");
    let img = small_image(&d);
    ok(&["format", &img, "--size", "32M", "--force"]);
    let v = json(&ok(&["info", &img, "--json"]));
    assert_eq!(v["luns"], 0);
    assert_eq!(v["image_bytes"], 32 << 20);
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(&d.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn help_and_version() {
    let out = ok(&["--help"]);
    for c in [
        "format", "info", "lun", "copy", "write", "read", "check", "scrub", "demo",
    ] {
        assert!(out.contains(c), "--help lacks {c}");
    }
    assert!(ok(&["--version"]).contains("lunsnap"));
    assert!(ok(&["copy", "create", "--help"]).contains("--attached"));
}

#[test]
fn demo_runs_the_seed_cycle_and_keeps_its_image_in_dir() {
    let d = Dir::new("demo");
    let dir = d.file("kept");
    let out = ok(&["demo", &dir]);
    for step in [
        "1c.",
        "2c.",
        "4c.",
        "5c.",
        "6c.",
        "7c.",
        "8c.",
        "3c.",
        "9c.",
        "1r.",
        "2r.",
        "3r.",
        "4r.",
        "10c.",
        "armcopy -p 1 -s 11 -a false",
        "armcopy -r 1",
        "armcfg -L 13 -d",
        "copy restore $IMG 11",
        "copy attach $IMG 11 12 13",
        "grant $IMG 11 50060b0000c26204 --access read",
        "security enable $IMG",
        "no such LUN: 11",
        "may only read LUN 11",
        "--as 50060b0000c26204",
        "summary:",
    ] {
        assert!(out.contains(step), "demo output lacks {step:?}:\n{out}");
    }
    let img = format!("{dir}/lunsnap-demo.img");
    ok(&["check", &img]);
    let v = json(&ok(&["lun", "list", &img, "--json"]));
    assert_eq!(v.as_array().map(Vec::len), Some(5));
    // 5c's permissions stay: the backup host sees its copies (11 detached, 13 deleted).
    let v = json(&ok(&["info", &img, "--json"]));
    assert_eq!(
        (v["security"].as_bool(), v["hosts"].as_u64()),
        (Some(true), Some(2))
    );
    let v = json(&ok(&[
        "lun",
        "list",
        &img,
        "--json",
        "--as",
        "50060b0000c26204",
    ]));
    let seen: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lun"].clone())
        .collect();
    assert_eq!(seen, [11, 12]);
    // Run again in the same directory: the old demo image is replaced.
    ok(&["demo", &dir]);
}

#[test]
fn demo_in_a_temporary_directory_removes_it() {
    let out = ok(&["demo"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("IMG="))
        .expect("IMG= line");
    let path = line["IMG=".len()..].split(" (").next().unwrap();
    let dir = std::path::Path::new(path).parent().unwrap();
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

/// An image with LUNs 1 and 2, copies 11 (attached) and 12 (detached) of LUN 1, copy
/// 14 of copy 11, and copy 13 of LUN 2.
fn lineage_image(d: &Dir) -> String {
    let img = small_image(d); // LUN 1, 4 MiB
    ok(&["lun", "create", &img, "2", "--size", "1M"]);
    for (p, c, state) in [
        ("1", "11", "--attached"),
        ("1", "12", "--detached"),
        ("11", "14", "--attached"),
        ("2", "13", "--attached"),
    ] {
        ok(&["copy", "create", &img, "--parent", p, "--copy", c, state]);
    }
    img
}

/// The LUN numbers of a `lun list --json` array.
fn numbers(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| l["lun"].as_u64().unwrap())
        .collect()
}

/// `lun list IMAGE extra... --json`
fn listed(img: &str, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["lun", "list", img, "--json"];
    a.extend_from_slice(extra);
    json(&ok(&a))
}

#[test]
fn lun_list_copies_of_lists_the_copies_of_one_lun() {
    let d = Dir::new("copies-of");
    let img = lineage_image(&d);
    // The copies that name N as their parent, as `lun list` shows them.
    let v = listed(&img, &["--copies-of", "1"]);
    assert_eq!(numbers(&v), [11, 12]);
    assert_eq!(v[0]["parent"], 1);
    assert_eq!(numbers(&listed(&img, &["--copies-of", "11"])), [14]);
    assert_eq!(
        numbers(&listed(&img, &["--copies-of", "14"])),
        Vec::<u64>::new()
    );
    let out = ok(&["lun", "list", &img, "--copies-of", "1"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    fails(&["lun", "list", &img, "--copies-of", "5"], "no such LUN: 5");
    usage_says(
        &["lun", "list", &img, "--copies-of", "-1"],
        "not a LUN number",
    );
    // Only those a host may discover.
    let host = "50060b0000c26204";
    ok(&["host", "add", &img, host]);
    ok(&["grant", &img, "12", host, "--access", "read"]);
    ok(&["grant", &img, "1", host, "--access", "read"]);
    ok(&["security", "enable", &img]);
    let v = listed(&img, &["--copies-of", "1", "--as", host]);
    assert_eq!(numbers(&v), [12]);
    fails(
        &["lun", "list", &img, "--copies-of", "2", "--as", host],
        "no such LUN: 2",
    );
}

#[test]
fn lun_list_tree_shows_the_lineage() {
    let d = Dir::new("tree");
    let img = lineage_image(&d);
    // Each LUN, then its copies indented, copies of copies deeper.
    let out = ok(&["lun", "list", &img, "--tree"]);
    let firsts: Vec<&str> = out
        .lines()
        .map(|l| l.split("  ").find(|s| !s.is_empty()).unwrap_or(""))
        .collect();
    let lead: Vec<usize> = out
        .lines()
        .map(|l| l.len() - l.trim_start().len())
        .collect();
    assert_eq!(firsts, ["LUN", "1", "11", "14", "12", "2", "13"], "{out}");
    assert_eq!(lead, [0, 0, 2, 4, 2, 0, 2], "{out}");
    // With --json: each object carries its copies, nested.
    let v = listed(&img, &["--tree"]);
    assert_eq!(numbers(&v), [1, 2]);
    assert_eq!(numbers(&v[0]["copies"]), [11, 12]);
    assert_eq!(numbers(&v[0]["copies"][0]["copies"]), [14]);
    assert_eq!(
        v[0]["copies"][0]["copies"][0]["copies"],
        serde_json::json!([])
    );
    assert_eq!(numbers(&v[1]["copies"]), [13]);
    assert_eq!(v[0]["copies"][1]["attached"], false);
    // The subtree of one LUN.
    let v = listed(&img, &["--tree", "--copies-of", "1"]);
    assert_eq!(numbers(&v), [11, 12]);
    assert_eq!(numbers(&v[0]["copies"]), [14]);
    // A copy whose parent was deleted heads its own line of descent.
    ok(&["lun", "delete", &img, "1", "--orphan-copies"]);
    let v = listed(&img, &["--tree"]);
    assert_eq!(numbers(&v), [2, 11, 12]);
    assert_eq!(numbers(&v[1]["copies"]), [14]);
    ok(&["check", &img]);
}

/// Runs `lunsnap args --json`, which must succeed; returns its JSON.
fn said(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    json(&ok(&a))
}

#[test]
fn lun_and_copy_changes_say_what_they_did_in_json() {
    use serde_json::json;
    let d = Dir::new("change-json");
    let img = d.file("a.img");
    let v = said(&["format", &img, "--size", "32M", "--max-luns", "64"]);
    assert_eq!(v["formatted"]["image_bytes"], 32 << 20);
    assert_eq!(v["formatted"]["max_luns"], 64);
    assert_eq!(v["formatted"]["block_device"], false);
    assert!(v["formatted"]["capacity_bytes"].as_u64().unwrap() > 16 << 20);
    assert_eq!(v["formatted"]["metadata_copies"], 2);
    let v = said(&["lun", "create", &img, "1", "--size", "4M"]);
    assert_eq!(v, json!({"created": {"lun": 1, "size": 4 << 20}}));
    let v = said(&create(&img, &[("1", "11")], "--attached"));
    let made = json!([{"lun": 11, "parent": 1, "size": 4 << 20}]);
    assert_eq!(v, json!({"created": {"copies": made, "attached": true}}));
    let v = said(&create(&img, &[("1", "12"), ("11", "21")], "--detached"));
    let made = json!([
        {"lun": 12, "parent": 1, "size": 4 << 20},
        {"lun": 21, "parent": 11, "size": 4 << 20},
    ]);
    assert_eq!(v, json!({"created": {"copies": made, "attached": false}}));
    // Commands that may end NBD connections list them (none on a cold image).
    let none = json!([]);
    let v = said(&["copy", "attach", &img, "12", "21"]);
    assert_eq!(
        v,
        json!({"attached": {"copies": [12, 21]}, "ended_connections": none})
    );
    let v = said(&["copy", "detach", &img, "21"]);
    assert_eq!(
        v,
        json!({"detached": {"copy": 21}, "ended_connections": none})
    );
    let v = said(&["copy", "restore", &img, "11"]);
    assert_eq!(
        v,
        json!({"restored": {"lun": 1, "from_copy": 11}, "ended_connections": none})
    );
    let v = said(&["lun", "offline", &img, "12"]);
    assert_eq!(
        v,
        json!({"offline": {"lun": 12}, "ended_connections": none})
    );
    let v = said(&["lun", "online", &img, "12"]);
    assert_eq!(v, json!({"online": {"lun": 12}, "ended_connections": none}));
    let v = said(&["lun", "delete", &img, "1", "--orphan-copies"]);
    let gone = json!({"lun": 1, "orphaned_copies": [11, 12]});
    assert_eq!(v, json!({"deleted": gone, "ended_connections": none}));
    let v = said(&["lun", "delete", &img, "21"]);
    let gone = json!({"lun": 21, "orphaned_copies": []});
    assert_eq!(v, json!({"deleted": gone, "ended_connections": none}));
    // A failure prints no JSON: its message goes to stderr, exit 1.
    let r = fails(
        &["lun", "create", &img, "11", "--size", "1M", "--json"],
        "already in use",
    );
    assert!(r.stdout.is_empty());
    ok(&["check", &img]);
}

/// `copy create IMAGE --parent P --copy C ... STATE`
fn create<'a>(img: &'a str, pairs: &[(&'a str, &'a str)], state: &'a str) -> Vec<&'a str> {
    let mut a = vec!["copy", "create", img];
    for &(p, c) in pairs {
        a.extend_from_slice(&["--parent", p, "--copy", c]);
    }
    a.push(state);
    a
}

#[test]
fn io_and_access_changes_say_what_they_did_in_json() {
    use serde_json::json;
    let d = Dir::new("change-json-io");
    let img = small_image(&d); // LUN 1, 4 MiB
    let data = d.file("d.bin");
    std::fs::write(&data, pattern(1, 64 << 10)).unwrap();
    let host = "50060b0000c26204";
    let v = said(&["write", &img, "1", &data, "--offset", "1M"]);
    let wrote = json!({"lun": 1, "offset": 1 << 20, "bytes": 64 << 10, "ranges": null});
    assert_eq!(v, json!({ "wrote": wrote }));
    let r = run_with(&["write", &img, "1", "-", "--json"], &pattern(2, 4096));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(json(&r.out())["wrote"]["bytes"], 4096);
    // An incremental applied with --ranges reports its ranges.
    let ranges = d.file("r.json");
    let list = r#"{"ranges": [{"start": 0, "length": 4096}], "total_bytes": 4096}"#;
    std::fs::write(&ranges, list).unwrap();
    let v = said(&["write", &img, "1", &data, "--ranges", &ranges]);
    let wrote = json!({"lun": 1, "offset": 0, "bytes": 4096, "ranges": 1});
    assert_eq!(v, json!({ "wrote": wrote }));
    let v = said(&["discard", &img, "1", "--offset", "0", "--length", "64K"]);
    let gone = json!({"lun": 1, "offset": 0, "length": 64 << 10});
    assert_eq!(v, json!({ "discarded": gone }));
    let v = said(&["host", "add", &img, host, "--name", "backup"]);
    assert_eq!(v, json!({"registered": {"host": host, "name": "backup"}}));
    let v = said(&["grant", &img, "1", host, "--access", "read"]);
    let granted = json!({"lun": 1, "host": host, "access": "read", "security": false});
    assert_eq!(v, json!({ "granted": granted }));
    let v = said(&["security", "enable", &img]);
    assert_eq!(v, json!({"security": {"enabled": true}}));
    let v = said(&["revoke", &img, "1", host]);
    assert_eq!(v, json!({"revoked": {"lun": 1, "host": host}}));
    let v = said(&["host", "remove", &img, host]);
    assert_eq!(v, json!({"removed": {"host": host}}));
    let v = said(&["security", "disable", &img]);
    assert_eq!(v, json!({"security": {"enabled": false}}));
    ok(&["check", &img]);
}
