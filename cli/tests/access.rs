//! Issue 7 from the command line: hosts, grants and security (`--as HOST`), online and
//! offline LUNs, consistency groups (`copy create` with several pairs, `copy attach`
//! with several copies). Each command is a separate process, so every check after a
//! change also checks that the change persisted in the image.

mod common;

use common::*;

const BACKUP: &str = "50060b0000c26204";
const PROD: &str = "50060b0000c26205";
/// Registered nowhere.
const STRANGER: &str = "00000000000000ff";

/// Runs a command that must fail with exit 1 and `needle`, and checks that the
/// image's bytes did not change.
fn fails_unchanged(img: &str, args: &[&str], needle: &str) {
    let before = read(img);
    fails(args, needle);
    assert!(
        read(img) == before,
        "lunsnap {args:?} failed but changed the image"
    );
}

fn lun_json(img: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["lun", "list", img, "--json"];
    args.extend_from_slice(extra);
    json(&ok(&args)).as_array().expect("an array").clone()
}

fn numbers(luns: &[serde_json::Value]) -> Vec<u64> {
    luns.iter().map(|l| l["lun"].as_u64().unwrap()).collect()
}

fn lun(luns: &[serde_json::Value], n: u64) -> &serde_json::Value {
    luns.iter()
        .find(|l| l["lun"] == n)
        .unwrap_or_else(|| panic!("LUN {n} not listed: {luns:?}"))
}

/// `copy create IMAGE --parent P --copy C ... --attached|--detached`.
fn create_args<'a>(img: &'a str, pairs: &[(&'a str, &'a str)], state: &'a str) -> Vec<&'a str> {
    let mut a = vec!["copy", "create", img];
    for &(p, c) in pairs {
        a.extend_from_slice(&["--parent", p, "--copy", c]);
    }
    a.push(state);
    a
}

#[test]
fn hosts_are_added_listed_and_removed() {
    let d = Dir::new("hosts");
    let img = small_image(&d);
    assert_eq!(
        json(&ok(&["host", "list", &img, "--json"])),
        serde_json::json!([])
    );
    let out = ok(&["host", "add", &img, BACKUP, "--name", "backup-host"]);
    assert!(out.contains(BACKUP) && out.contains("backup-host"), "{out}");
    // Upper case is accepted and printed in lower case; the name is optional.
    ok(&["host", "add", &img, &PROD.to_uppercase()]);

    let v = json(&ok(&["host", "list", &img, "--json"]));
    assert_eq!(
        v,
        serde_json::json!([
            {"host": BACKUP, "name": "backup-host"},
            {"host": PROD, "name": ""},
        ])
    );
    let out = ok(&["host", "list", &img]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[0].contains("HOST") && rows[0].contains("NAME"),
        "{out}"
    );
    assert!(
        rows[1].contains(BACKUP) && rows[1].contains("backup-host"),
        "{out}"
    );
    assert!(rows[2].contains(PROD), "{out}");

    let v = json(&ok(&["info", &img, "--json"]));
    assert_eq!(v["hosts"], 2);
    assert_eq!(v["security"], false);
    let out = ok(&["info", &img]);
    assert!(out.contains("hosts:") && out.contains("security:"), "{out}");

    fails_unchanged(
        &img,
        &["host", "add", &img, BACKUP, "--name", "again"],
        &format!("host {BACKUP} is already registered"),
    );
    let long = "x".repeat(57);
    // A name too long is a usage error (exit 2), as every error of the command line.
    usage_says(
        &["host", "add", &img, "0000000000000003", "--name", &long],
        "a host's name is at most 56 bytes",
    );
    ok(&[
        "host",
        "add",
        &img,
        "0000000000000003",
        "--name",
        &long[..56],
    ]);
    ok(&["host", "remove", &img, "0000000000000003"]);
    fails_unchanged(
        &img,
        &["host", "remove", &img, STRANGER],
        &format!("no such host: {STRANGER}"),
    );

    let out = ok(&["host", "remove", &img, PROD]);
    assert!(out.contains(PROD), "{out}");
    assert_eq!(
        json(&ok(&["host", "list", &img, "--json"])),
        serde_json::json!([{"host": BACKUP, "name": "backup-host"}])
    );
    fails_unchanged(&img, &["host", "remove", &img, PROD], "no such host");
    ok(&["check", &img]);
}

#[test]
fn host_ids_and_access_levels_are_checked_as_usage_errors() {
    let d = Dir::new("host-usage");
    let img = small_image(&d);
    ok(&["host", "add", &img, BACKUP]);
    for bad in [
        "1",
        "0x50060b0000c262",
        "50060b0000c2620",
        "50060b0000c262040",
        "50060b0000c2620g",
        "",
    ] {
        let r = usage_error(&["host", "add", &img, bad]);
        assert!(r.stderr.contains("16 hex digits"), "{r:?}");
        usage_error(&["host", "remove", &img, bad]);
        usage_error(&["grant", &img, "1", bad, "--access", "read"]);
        usage_error(&["revoke", &img, "1", bad]);
        usage_error(&["lun", "list", &img, "--as", bad]);
        usage_error(&["read", &img, "1", "-", "--as", bad]);
        usage_error(&["write", &img, "1", "-", "--as", bad]);
    }
    usage_error(&["grant", &img, "1", BACKUP]); // --access is required
    usage_error(&["grant", &img, "1", BACKUP, "--access", "rw"]);
    usage_error(&["grant", &img, "1", BACKUP, "--access", "read-write"]);
    usage_error(&["security", &img]);
    usage_error(&["security", "on", &img]);
    usage_error(&["lun", "offline", &img]);
    usage_error(&["host", "list"]);
    let out = ok(&["--help"]);
    for c in ["host", "grant", "revoke", "security"] {
        assert!(out.contains(c), "--help lacks {c}");
    }
    assert!(ok(&["read", "--help"]).contains("--as <HOST>"));
}

#[test]
fn grants_decide_what_a_host_sees_reads_and_writes() {
    let d = Dir::new("grants");
    let img = small_image(&d); // LUN 1, 4 MiB
    ok(&["lun", "create", &img, "2", "--size", "1M"]);
    ok(&["lun", "create", &img, "3", "--size", "1M"]);
    let data = d.file("data.bin");
    let other = d.file("other.bin");
    let got = d.file("got.bin");
    std::fs::write(&data, pattern(1, 64 << 10)).unwrap();
    std::fs::write(&other, pattern(2, 64 << 10)).unwrap();
    ok(&["write", &img, "1", &data]);
    ok(&["host", "add", &img, BACKUP, "--name", "backup"]);
    ok(&["host", "add", &img, PROD, "--name", "prod"]);

    // Grants: refused for a missing host or LUN, replaced by a later grant.
    fails_unchanged(
        &img,
        &["grant", &img, "1", STRANGER, "--access", "read"],
        &format!("no such host: {STRANGER}"),
    );
    fails_unchanged(
        &img,
        &["grant", &img, "9", BACKUP, "--access", "read"],
        "no such LUN: 9",
    );
    fails_unchanged(
        &img,
        &["grant", &img, "16", BACKUP, "--access", "read"],
        "out of range",
    );
    let out = ok(&["grant", &img, "1", BACKUP, "--access", "write"]);
    assert!(out.contains("read-write") && out.contains(BACKUP), "{out}");
    ok(&["grant", &img, "1", BACKUP, "--access", "read"]); // replaces the write grant
    ok(&["grant", &img, "1", PROD, "--access", "write"]);
    ok(&["grant", &img, "2", PROD, "--access", "read"]);

    let luns = lun_json(&img, &[]);
    assert_eq!(
        lun(&luns, 1)["grants"],
        serde_json::json!([
            {"host": BACKUP, "access": "read"},
            {"host": PROD, "access": "write"},
        ])
    );
    assert_eq!(
        lun(&luns, 2)["grants"],
        serde_json::json!([{"host": PROD, "access": "read"}])
    );
    assert_eq!(lun(&luns, 3)["grants"], serde_json::json!([]));
    let table = ok(&["lun", "list", &img]);
    assert!(table.lines().next().unwrap().contains("GRANTS"), "{table}");
    assert!(table.contains(&format!("{BACKUP}:read")), "{table}");

    // Security disabled: every host sees, reads and writes everything.
    assert_eq!(numbers(&lun_json(&img, &["--as", BACKUP])), [1, 2, 3]);
    assert_eq!(numbers(&lun_json(&img, &["--as", STRANGER])), [1, 2, 3]);
    ok(&["write", &img, "3", &other, "--as", BACKUP]);
    ok(&["read", &img, "3", &got, "--length", "64K", "--as", STRANGER]);
    assert_eq!(read(&got), read(&other));

    let out = ok(&["security", "enable", &img]);
    assert!(out.contains("enabled"), "{out}");
    assert_eq!(json(&ok(&["info", &img, "--json"]))["security"], true);
    // Discovery: only granted LUNs; the administrator (no --as) still sees all.
    assert_eq!(numbers(&lun_json(&img, &["--as", BACKUP])), [1]);
    assert_eq!(numbers(&lun_json(&img, &["--as", PROD])), [1, 2]);
    assert_eq!(
        numbers(&lun_json(&img, &["--as", STRANGER])),
        [] as [u64; 0]
    );
    assert_eq!(numbers(&lun_json(&img, &[])), [1, 2, 3]);
    let table = ok(&["lun", "list", &img, "--as", BACKUP]);
    assert_eq!(table.lines().count(), 2, "{table}");

    // An ungranted LUN is "no such LUN" to the host, for reads and writes alike.
    let missing = d.file("missing.bin");
    fails(
        &["read", &img, "3", &missing, "--as", BACKUP],
        "no such LUN: 3",
    );
    assert!(!std::path::Path::new(&missing).exists());
    fails(
        &["read", &img, "1", &missing, "--as", STRANGER],
        "no such LUN: 1",
    );
    fails_unchanged(
        &img,
        &["write", &img, "2", &data, "--as", BACKUP],
        "no such LUN: 2",
    );
    // A read grant reads but does not write.
    ok(&["read", &img, "1", &got, "--length", "64K", "--as", BACKUP]);
    assert_eq!(read(&got), read(&data));
    let r = run(&["read", &img, "1", "-", "--length", "4K", "--as", BACKUP]);
    assert_eq!((r.code, &r.stdout[..]), (0, &read(&data)[..4096]), "{r:?}");
    fails_unchanged(
        &img,
        &["write", &img, "1", &other, "--as", BACKUP],
        &format!("host {BACKUP} may only read LUN 1"),
    );
    fails_unchanged(
        &img,
        &["write", &img, "2", &other, "--as", PROD],
        "may only read LUN 2",
    );
    // Even from a pipe, nothing is read or written before the refusal.
    let r = run_with(
        &["write", &img, "1", "-", "--as", BACKUP],
        &pattern(3, 4096),
    );
    assert_fails(&r, &["write", "-", "--as", BACKUP], "may only read");
    // A write grant writes; the administrator reads it back.
    ok(&["write", &img, "1", &other, "--as", PROD]);
    ok(&["read", &img, "1", &got, "--length", "64K"]);
    assert_eq!(read(&got), read(&other));

    // Revoke: the LUN disappears for that host; revoking again is refused.
    fails_unchanged(
        &img,
        &["revoke", &img, "3", BACKUP],
        &format!("host {BACKUP} has no grant on LUN 3"),
    );
    fails_unchanged(&img, &["revoke", &img, "1", STRANGER], "no such host");
    fails_unchanged(&img, &["revoke", &img, "7", BACKUP], "no such LUN: 7");
    ok(&["revoke", &img, "1", BACKUP]);
    assert_eq!(numbers(&lun_json(&img, &["--as", BACKUP])), [] as [u64; 0]);
    fails(&["read", &img, "1", &got, "--as", BACKUP], "no such LUN: 1");

    // Removing a host removes its grants.
    ok(&["host", "remove", &img, PROD]);
    let luns = lun_json(&img, &[]);
    for l in &luns {
        assert_eq!(l["grants"], serde_json::json!([]), "{l}");
    }

    // Security disabled again: everything visible; the grants were kept meanwhile.
    ok(&["grant", &img, "2", BACKUP, "--access", "read"]);
    let out = ok(&["security", "disable", &img]);
    assert!(out.contains("disabled"), "{out}");
    assert_eq!(numbers(&lun_json(&img, &["--as", BACKUP])), [1, 2, 3]);
    ok(&["write", &img, "2", &other, "--as", BACKUP]);
    assert_eq!(json(&ok(&["info", &img, "--json"]))["security"], false);
    assert_eq!(
        lun(&lun_json(&img, &[]), 2)["grants"],
        serde_json::json!([{"host": BACKUP, "access": "read"}])
    );
    ok(&["check", &img]);
}

#[test]
fn copies_start_without_grants_keep_them_across_attach_and_lose_them_on_delete() {
    let d = Dir::new("copy-grants");
    let img = small_image(&d);
    ok(&["host", "add", &img, BACKUP]);
    ok(&["security", "enable", &img]);
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
    assert_eq!(
        lun(&lun_json(&img, &[]), 11)["grants"],
        serde_json::json!([])
    );
    assert_eq!(numbers(&lun_json(&img, &["--as", BACKUP])), [] as [u64; 0]);
    // The guide's step 5c: permissions are set after the copy is made, before it is used.
    ok(&["grant", &img, "11", BACKUP, "--access", "read"]);
    ok(&["copy", "detach", &img, "11"]);
    ok(&["copy", "attach", &img, "11"]);
    assert_eq!(numbers(&lun_json(&img, &["--as", BACKUP])), [11]);
    ok(&["read", &img, "11", &d.file("b.bin"), "--as", BACKUP]);
    ok(&["lun", "delete", &img, "11"]);
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
    assert_eq!(
        lun(&lun_json(&img, &[]), 11)["grants"],
        serde_json::json!([])
    );
    fails(
        &["read", &img, "11", &d.file("c.bin"), "--as", BACKUP],
        "no such LUN: 11",
    );
    ok(&["check", &img]);
}

#[test]
fn an_offline_lun_refuses_io_but_not_management() {
    let d = Dir::new("offline");
    let img = small_image(&d);
    let data = d.file("data.bin");
    let got = d.file("got.bin");
    std::fs::write(&data, pattern(4, 32 << 10)).unwrap();
    ok(&["write", &img, "1", &data]);
    assert_eq!(lun(&lun_json(&img, &[]), 1)["online"], true);
    fails_unchanged(&img, &["lun", "offline", &img, "5"], "no such LUN: 5");

    let out = ok(&["lun", "offline", &img, "1"]);
    assert!(out.contains("offline"), "{out}");
    assert_eq!(lun(&lun_json(&img, &[]), 1)["online"], false);
    let table = ok(&["lun", "list", &img]);
    assert!(table.lines().next().unwrap().contains("ONLINE"), "{table}");
    assert!(table.lines().nth(1).unwrap().contains(" no "), "{table}");
    fails(&["read", &img, "1", &got], "LUN 1 is offline");
    assert!(!std::path::Path::new(&got).exists());
    fails_unchanged(&img, &["write", &img, "1", &data], "LUN 1 is offline");
    let r = run_with(&["write", &img, "1", "-"], &pattern(5, 4096));
    assert_fails(&r, &["write", "-"], "LUN 1 is offline");
    ok(&["host", "add", &img, BACKUP]);
    ok(&["grant", &img, "1", BACKUP, "--access", "write"]);
    ok(&["security", "enable", &img]);
    fails(&["read", &img, "1", &got, "--as", BACKUP], "offline");
    fails_unchanged(
        &img,
        &["write", &img, "1", &data, "--as", BACKUP],
        "offline",
    );

    // Management works: a copy of the offline LUN is made, online, and readable.
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
    let luns = lun_json(&img, &[]);
    assert_eq!(lun(&luns, 11)["online"], true);
    ok(&["read", &img, "11", &got, "--length", "32K"]);
    assert_eq!(read(&got), read(&data));
    ok(&["lun", "offline", &img, "1"]); // again: no change, no error

    ok(&["lun", "online", &img, "1"]);
    assert_eq!(lun(&lun_json(&img, &[]), 1)["online"], true);
    ok(&["read", &img, "1", &got, "--length", "32K", "--as", BACKUP]);
    assert_eq!(read(&got), read(&data));
    ok(&["write", &img, "1", &data, "--offset", "1M"]);
    ok(&["check", &img]);
}

#[test]
fn consistency_groups_are_one_point_in_time_and_all_or_nothing() {
    let d = Dir::new("groups");
    let img = d.file("g.img");
    ok(&["format", &img, "--size", "32M", "--max-luns", "16"]);
    ok(&["lun", "create", &img, "1", "--size", "4M"]);
    ok(&["lun", "create", &img, "2", "--size", "2M"]);
    let (a, b, c, got) = (d.file("a"), d.file("b"), d.file("c"), d.file("got"));
    std::fs::write(&a, pattern(6, 16 << 10)).unwrap();
    std::fs::write(&b, pattern(7, 16 << 10)).unwrap();
    std::fs::write(&c, pattern(8, 16 << 10)).unwrap();
    ok(&["write", &img, "1", &a]);
    ok(&["write", &img, "2", &b]);

    // Mismatched pairs are a usage error; nothing is touched.
    let before = read(&img);
    let r = usage_error(&[
        "copy",
        "create",
        &img,
        "--parent",
        "1",
        "--parent",
        "2",
        "--copy",
        "11",
        "--attached",
    ]);
    assert!(r.stderr.contains("--copy"), "{r:?}");
    usage_error(&["copy", "create", &img, "--copy", "11", "--attached"]);
    usage_error(&["copy", "attach", &img]);
    assert!(read(&img) == before);

    // One pair in the group is bad: nothing changes, neither copy exists.
    for (pairs, needle) in [
        (vec![("1", "11"), ("5", "12")], "no such LUN: 5"),
        (vec![("1", "11"), ("1", "2")], "already in use"),
        (vec![("1", "11"), ("2", "16")], "out of range"),
    ] {
        fails_unchanged(&img, &create_args(&img, &pairs, "--attached"), needle);
    }
    // A group the command line alone makes wrong is a usage error (exit 2).
    for (pairs, needle) in [
        (
            vec![("1", "11"), ("2", "1")],
            "1 is both a --copy and a --parent",
        ),
        (
            vec![("2", "1"), ("1", "11")],
            "1 is both a --copy and a --parent",
        ),
        (vec![("1", "11"), ("2", "11")], "--copy 11 is given twice"),
    ] {
        usage_says(&create_args(&img, &pairs, "--attached"), needle);
    }
    assert!(read(&img) == before);
    // Not enough space for both reservations: the first alone would fit.
    let unreserved = json(&ok(&["info", &img, "--json"]))["unreserved_bytes"]
        .as_u64()
        .unwrap();
    let filler = unreserved - (5 << 20); // room for copy of 1 (4M), not also 2 (2M)
    ok(&["lun", "create", &img, "9", "--size", &filler.to_string()]);
    fails_unchanged(
        &img,
        &create_args(&img, &[("1", "11"), ("2", "12")], "--attached"),
        "not enough space to reserve",
    );
    ok(&["lun", "delete", &img, "9"]);
    assert_eq!(numbers(&lun_json(&img, &[])), [1, 2]);

    // A good group: both copies hold their parents' images at one point in time.
    let out = ok(&create_args(
        &img,
        &[("1", "11"), ("2", "12")],
        "--attached",
    ));
    assert!(out.contains("one point in time"), "{out}");
    ok(&["write", &img, "1", &c]);
    ok(&["write", &img, "2", &c]);
    ok(&["read", &img, "11", &got, "--length", "16K"]);
    assert_eq!(read(&got), read(&a));
    ok(&["read", &img, "12", &got, "--length", "16K"]);
    assert_eq!(read(&got), read(&b));
    let luns = lun_json(&img, &[]);
    let (c11, c12) = (lun(&luns, 11), lun(&luns, 12));
    assert_eq!(
        (c11["kind"].as_str(), c11["parent"].as_u64()),
        (Some("copy"), Some(1))
    );
    assert_eq!(
        (c12["kind"].as_str(), c12["parent"].as_u64()),
        (Some("copy"), Some(2))
    );
    assert_eq!(c11["created_generation"], c12["created_generation"]);

    // Detached group, then attached together.
    ok(&create_args(
        &img,
        &[("1", "13"), ("2", "14")],
        "--detached",
    ));
    let luns = lun_json(&img, &[]);
    assert_eq!(lun(&luns, 13)["attached"], false);
    assert_eq!(lun(&luns, 14)["attached"], false);
    // A group attach with one bad member changes nothing.
    fails_unchanged(&img, &["copy", "attach", &img, "13", "1"], "not a copy");
    fails_unchanged(
        &img,
        &["copy", "attach", &img, "13", "15"],
        "no such LUN: 15",
    );
    usage_says(
        &["copy", "attach", &img, "13", "14", "13"],
        "copy 13 is given twice",
    );
    assert_eq!(lun(&lun_json(&img, &[]), 13)["attached"], false);

    let out = ok(&["copy", "attach", &img, "13", "14", "11"]);
    assert!(
        out.contains("13, 14 and 11") && out.contains("one point in time"),
        "{out}"
    );
    let luns = lun_json(&img, &[]);
    for n in [11, 13, 14] {
        assert_eq!(lun(&luns, n)["attached"], true);
        assert_eq!(
            lun(&luns, n)["attached_generation"],
            lun(&luns, 13)["attached_generation"]
        );
    }
    for n in ["11", "13", "14"] {
        ok(&["read", &img, n, &got, "--length", "16K"]);
        assert_eq!(read(&got), read(&c), "copy {n}");
    }
    // A single copy still attaches alone.
    ok(&["copy", "attach", &img, "12"]);
    ok(&["check", &img]);
}
