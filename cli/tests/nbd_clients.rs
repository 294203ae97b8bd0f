//! `lunsnap serve` proved with real NBD clients (issue 12): qemu-io, qemu-img,
//! nbdinfo, nbdcopy, libnbd itself (its Python binding, behind nbdsh), fio's nbd
//! engine, nbdfuse with mkfs.ext4/fuse2fs/e2fsck, and TLS with openssl-made
//! certificates.
//!
//! Each test formats an image in a temporary directory, sets it up (LUNs, hosts,
//! grants) with the CLI, starts `lunsnap serve` as a child, runs the clients, and
//! stops the server with SIGTERM: it must exit 0 and `lunsnap check` must find the
//! image clean. Crash tests kill the server with SIGKILL instead and check what a
//! completed flush promised. A missing client tool skips the test, or fails it when
//! LUNSNAP_REQUIRE_CLIENTS=1 (`make test` sets it; `.ci/install-tools` installs them).
//!
//! Two tests also manage the array while it is served (commands forwarded over the
//! control socket): a copy made while fio writes, and a copy of a live ext4.

mod nbd_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nbd_common::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Host ids for the security tests.
const ALPHA: &str = "50060b0000c26201";
const BETA: &str = "50060b0000c26202";

// ---------------------------------------------------------------------------------
// Client helpers

/// `qemu-io -f raw -c CMD... URI`.
fn qemu_io(uri: &str, cmds: &[String]) -> Out {
    let mut c = tool("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    run(c.arg(uri))
}

/// Asserts that a qemu-io run succeeded: exit 0, no failed command or pattern
/// check, and `reads` reads done.
#[track_caller]
fn assert_qemu_io(out: &Out, reads: usize, what: &str) {
    let text = out.ok(what);
    assert!(
        !out.all().contains("failed"),
        "{what}: a command failed:\n{}",
        out.all()
    );
    let done = text.lines().filter(|l| l.starts_with("read ")).count();
    assert_eq!(done, reads, "{what}: reads done:\n{text}");
}

/// `read -P BYTE OFFSET LEN` commands that check `model[from..to]`, one per run of
/// equal bytes.
fn pattern_reads(model: &[u8], from: usize, to: usize) -> Vec<String> {
    let mut cmds = Vec::new();
    let mut i = from;
    while i < to {
        let b = model[i];
        let mut j = i;
        while j < to && model[j] == b {
            j += 1;
        }
        cmds.push(format!("read -P 0x{b:02x} {i} {}", j - i));
        i = j;
    }
    cmds
}

/// `nbdinfo ARGS...`.
fn nbdinfo(args: &[&str]) -> Out {
    run(tool("nbdinfo").args(args))
}

/// The exports `nbdinfo --list --json URI` shows: (name, read-only), in order.
#[track_caller]
fn list_exports(uri: &str) -> Vec<(String, bool)> {
    let out = nbdinfo(&["--list", "--json", uri]);
    let text = out.ok(&format!("nbdinfo --list {uri}"));
    let v = json_in(&text, "nbdinfo --list");
    v["exports"]
        .as_array()
        .unwrap_or_else(|| panic!("no exports array: {text}"))
        .iter()
        .map(|e| {
            (
                e["export-name"].as_str().unwrap().to_owned(),
                e["is_read_only"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn exports(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(n, ro)| (n.to_string(), *ro)).collect()
}

/// `nbdinfo --map --json URI` as (offset, length, data) with neighbours of the same
/// kind merged; asserts the extents tile the export.
#[track_caller]
fn map(uri: &str, size: u64) -> Vec<(u64, u64, bool)> {
    let out = nbdinfo(&["--map", "--json", uri]);
    let text = out.ok(&format!("nbdinfo --map {uri}"));
    let mut merged: Vec<(u64, u64, bool)> = Vec::new();
    let mut next = 0;
    for e in json_in(&text, "nbdinfo --map").as_array().unwrap() {
        let (off, len, ty) = (
            e["offset"].as_u64().unwrap(),
            e["length"].as_u64().unwrap(),
            e["type"].as_u64().unwrap(),
        );
        assert_eq!(off, next, "extents do not tile the export: {text}");
        next = off + len;
        // base:allocation: 0 data, 3 hole and zero; nothing else is expected here.
        assert!(ty == 0 || ty == 3, "unexpected extent type {ty}: {text}");
        let data = ty == 0;
        match merged.last_mut() {
            Some(last) if last.2 == data => last.1 += len,
            _ => merged.push((off, len, data)),
        }
    }
    assert_eq!(next, size, "extents do not cover the export: {text}");
    merged
}

/// Starts a server whose arguments name a TCP port on loopback, retrying with
/// another port if the one picked was taken in between.
fn start_on_free_port(image: &Image, args: impl Fn(u16) -> Vec<String>) -> (Server, u16) {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let a = args(port);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match Server::try_start(image, &a) {
            Ok(s) => return (s, port),
            Err(log) if log.contains("cannot listen") => last = log,
            Err(log) => panic!("lunsnap serve did not start:\n{log}"),
        }
    }
    panic!("no free port found:\n{last}");
}

/// fio's JSON report: per job (error, bytes written, bytes read).
fn fio_jobs(out: &Out) -> Vec<(u64, u64, u64)> {
    let v = json_in(&out.text(), "fio --output-format=json");
    v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["error"].as_u64().unwrap(),
                j["write"]["io_bytes"].as_u64().unwrap(),
                j["read"]["io_bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Runs fio with `job` (a job file's text) in `dir` (its state files land there).
fn fio(dir: &Dir, job: &str, extra: &[&str]) -> Out {
    let path = dir.path("job.fio");
    std::fs::write(&path, job).unwrap();
    run(tool("fio")
        .current_dir(&dir.0)
        .arg(&path)
        .args(["--output-format=json"])
        .args(extra))
}

// ---------------------------------------------------------------------------------
// qemu-io, qemu-img

enum Op {
    /// `write -P byte offset len`.
    Write(u8, u64, u64),
    /// `write -z offset len` (NBD_CMD_WRITE_ZEROES with NO_HOLE), or with `-u`
    /// (holes may be punched).
    Zero(u64, u64, bool),
    /// `discard offset len` (NBD_CMD_TRIM): a lunsnap discard reads back as zeros.
    Discard(u64, u64),
}

impl Op {
    fn cmd(&self) -> String {
        match *self {
            Op::Write(b, o, l) => format!("write -P 0x{b:02x} {o} {l}"),
            Op::Zero(o, l, false) => format!("write -z {o} {l}"),
            Op::Zero(o, l, true) => format!("write -z -u {o} {l}"),
            Op::Discard(o, l) => format!("discard {o} {l}"),
        }
    }

    fn apply(&self, model: &mut [u8]) -> (usize, usize) {
        let (b, o, l) = match *self {
            Op::Write(b, o, l) => (b, o, l),
            Op::Zero(o, l, _) | Op::Discard(o, l) => (0, o, l),
        };
        let (from, to) = (o as usize, (o + l) as usize);
        model[from..to].fill(b);
        (from, to)
    }
}

/// qemu-io's pattern writes and verified reads, at sector-aligned and odd offsets,
/// write-zeroes with and without unmap, discard and flush; everything reads back on
/// a new connection and, once the server stopped, with `lunsnap read`.
#[test]
fn qemu_io_patterns_read_back() {
    if !need("qemu_io_patterns_read_back", &["qemu-io"]) {
        return;
    }
    let img = Image::new("qemu-io", "256M");
    const SIZE: u64 = 16 * MIB;
    img.lun(1, "16M");
    let srv = Server::start(&img, &[]);
    let uri = srv.uri(1);

    let ops = [
        Op::Write(0xab, 0, MIB),
        // Odd offsets and lengths: read-modify-write of partial sectors.
        Op::Write(0xcd, 1000, 3001),
        // Across a 16 KiB extent boundary, 13 bytes.
        Op::Write(0x11, 16 * KIB - 7, 13),
        // From inside written data into never-written extents.
        Op::Write(0x5a, MIB - 511, 70_000),
        // A partial sector at the start of a never-written extent.
        Op::Write(0x77, 3 * MIB + 100, 200),
        Op::Zero(3000, 5000, false),
        Op::Zero(256 * KIB, 64 * KIB, false),
        Op::Zero(768 * KIB, 64 * KIB, true),
        Op::Discard(512 * KIB, 128 * KIB),
    ];
    let mut model = vec![0u8; SIZE as usize];
    let mut cmds = Vec::new();
    let mut reads = 0;
    for op in &ops {
        cmds.push(op.cmd());
        let (from, to) = op.apply(&mut model);
        // Read back what this operation changed, and a little around it.
        let around = pattern_reads(
            &model,
            from.saturating_sub(700),
            (to + 700).min(model.len()),
        );
        reads += around.len();
        cmds.extend(around);
    }
    cmds.push("flush".into());
    assert_qemu_io(&qemu_io(&uri, &cmds), reads, "qemu-io writes");

    // A new connection sees every byte of the model.
    let mut check = pattern_reads(&model, 0, 4 * MIB as usize);
    check.push(format!("read -P 0 {} {}", 4 * MIB, SIZE - 4 * MIB));
    let n = check.len();
    assert_qemu_io(
        &qemu_io(&uri, &check),
        n,
        "qemu-io reads on a new connection",
    );

    srv.stop();
    img.assert_clean();
    assert_same(
        &img.read_lun(1),
        &model,
        "lunsnap read of LUN 1 after the server stopped",
    );
}

/// qemu-img converts a raw file (data and zero runs) into an export and back out,
/// and `qemu-img compare` finds the export identical to the file (and tells a
/// changed file apart).
#[test]
fn qemu_img_convert_and_compare() {
    if !need("qemu_img_convert_and_compare", &["qemu-img"]) {
        return;
    }
    let img = Image::new("qemu-img", "256M");
    img.lun(1, "16M");
    let mut reference = random_bytes(1, 16 * MIB as usize);
    reference[3 * MIB as usize..8 * MIB as usize].fill(0);
    reference[12 * MIB as usize + 777..].fill(0);
    let ref_path = img.dir.file("ref.raw");
    std::fs::write(&ref_path, &reference).unwrap();

    let srv = Server::start(&img, &[]);
    let uri = srv.uri(1);
    run(tool("qemu-img").args(["convert", "-n", "-f", "raw", "-O", "raw", &ref_path, &uri]))
        .ok("qemu-img convert into the export");
    let out_path = img.dir.file("out.raw");
    run(tool("qemu-img").args(["convert", "-f", "raw", "-O", "raw", &uri, &out_path]))
        .ok("qemu-img convert out of the export");
    assert_same(
        &std::fs::read(&out_path).unwrap(),
        &reference,
        "converted back out",
    );
    let same = run(tool("qemu-img").args(["compare", "-f", "raw", "-F", "raw", &ref_path, &uri]));
    assert!(
        same.ok("qemu-img compare").contains("Images are identical"),
        "{same:?}"
    );
    let mut changed = reference.clone();
    changed[9 * MIB as usize + 4321] ^= 0x40;
    let changed_path = img.dir.file("changed.raw");
    std::fs::write(&changed_path, &changed).unwrap();
    let differ =
        run(tool("qemu-img").args(["compare", "-f", "raw", "-F", "raw", &changed_path, &uri]));
    assert_eq!(
        differ.code,
        Some(1),
        "qemu-img compare of a changed file: {differ:?}"
    );

    srv.stop();
    img.assert_clean();
    assert_same(
        &img.read_lun(1),
        &reference,
        "lunsnap read after qemu-img convert",
    );
}

// ---------------------------------------------------------------------------------
// Exports and host security

/// `nbdinfo --list` shows exactly the exports the listener's host may open: its
/// granted LUNs that are online and attached, read-only where its grant is read;
/// offline LUNs, detached copies and LUNs of other hosts cannot be opened (the
/// server's message says why).
#[test]
fn nbdinfo_lists_what_the_host_may_see() {
    if !need(
        "nbdinfo_lists_what_the_host_may_see",
        &["nbdinfo", "qemu-io"],
    ) {
        return;
    }
    let img = Image::new("list", "256M");
    for lun in [1, 2, 3] {
        img.lun(lun, "16M");
    }
    img.ok(&[
        "copy",
        "create",
        "IMG",
        "--parent",
        "1",
        "--copy",
        "11",
        "--attached",
    ]);
    img.ok(&[
        "copy",
        "create",
        "IMG",
        "--parent",
        "2",
        "--copy",
        "12",
        "--detached",
    ]);
    img.ok(&["lun", "offline", "IMG", "3"]);
    img.ok(&["host", "add", "IMG", ALPHA, "--name", "alpha"]);
    img.ok(&["host", "add", "IMG", BETA, "--name", "beta"]);
    for (lun, host, access) in [
        ("1", ALPHA, "write"),
        ("2", ALPHA, "read"),
        ("3", ALPHA, "write"),
        ("12", ALPHA, "read"),
        ("2", BETA, "write"),
        ("11", BETA, "read"),
    ] {
        img.ok(&["grant", "IMG", lun, host, "--access", access]);
    }
    img.ok(&["security", "enable", "IMG"]);

    let admin = img.dir.file("admin.sock");
    let alpha = img.dir.file("alpha.sock");
    let (srv, port) = start_on_free_port(&img, |port| {
        vec![
            "--listen".into(),
            format!("unix:{admin}"),
            "--listen".into(),
            format!("unix:{alpha},host={ALPHA}"),
            // Plain TCP is allowed on loopback.
            "--listen".into(),
            format!("tcp:127.0.0.1:{port},host={BETA}"),
        ]
    });
    let beta_uri = |lun: u32| format!("nbd://127.0.0.1:{port}/{lun}");

    // No host: every LUN that can be opened (3 is offline, 12 detached).
    assert_eq!(
        list_exports(&format!("nbd+unix:///?socket={admin}")),
        exports(&[("1", false), ("2", false), ("11", false)])
    );
    assert_eq!(
        list_exports(&format!("nbd+unix:///?socket={alpha}")),
        exports(&[("1", false), ("2", true)])
    );
    assert_eq!(
        list_exports(&format!("nbd://127.0.0.1:{port}/")),
        exports(&[("2", false), ("11", true)])
    );
    let info = nbdinfo(&["--json", &beta_uri(11)]);
    let v = json_in(&info.ok("nbdinfo of copy 11 as beta"), "nbdinfo");
    assert_eq!(
        v["exports"][0]["description"],
        "LUN 11: business copy of LUN 1"
    );
    assert_eq!(v["exports"][0]["export-size"], 16 * MIB);

    // What cannot be opened, with the server's reason.
    for (uri, reason) in [
        (unix_uri(&admin, 3), "LUN 3 is offline"),
        (unix_uri(&alpha, 3), "LUN 3 is offline"),
        (unix_uri(&admin, 12), "LUN 12 is a detached copy"),
        (unix_uri(&alpha, 12), "LUN 12 is a detached copy"),
        (unix_uri(&alpha, 11), "no export named \"11\""),
        (beta_uri(1), "no export named \"1\""),
        (unix_uri(&admin, 99), "no export named \"99\""),
    ] {
        let out = qemu_io(&uri, &["read 0 512".into()]);
        out.failed(&format!("qemu-io {uri}"));
        assert!(
            out.stderr.contains(reason),
            "qemu-io {uri}: expected {reason:?} in {:?}",
            out.stderr
        );
        nbdinfo(&[&uri]).failed(&format!("nbdinfo {uri}"));
    }
    srv.stop();
    img.assert_clean();
}

/// A read grant makes the export read-only: nbdinfo says `is_read_only: true`,
/// qemu-io will not open it for writing, and the writes, zeroes and trims that
/// libnbd sends anyway (strict mode off) fail with EPERM and change nothing.
#[test]
fn read_only_grant_refuses_writes() {
    let tools = ["nbdinfo", "qemu-io", "python3-libnbd"];
    if !need("read_only_grant_refuses_writes", &tools) {
        return;
    }
    let img = Image::new("ro", "256M");
    img.lun(2, "16M");
    let data = random_bytes(2, MIB as usize);
    let data_path = img.dir.file("data.raw");
    std::fs::write(&data_path, &data).unwrap();
    img.ok(&["write", "IMG", "2", &data_path]);
    img.ok(&["host", "add", "IMG", ALPHA]);
    img.ok(&["grant", "IMG", "2", ALPHA, "--access", "read"]);
    img.ok(&["security", "enable", "IMG"]);
    let sock = img.dir.file("alpha.sock");
    let srv = Server::start(&img, &["--listen", &format!("unix:{sock},host={ALPHA}")]);
    let uri = unix_uri(&sock, 2);

    let v = json_in(&nbdinfo(&["--json", &uri]).ok("nbdinfo"), "nbdinfo");
    assert_eq!(v["exports"][0]["is_read_only"], true, "{v}");
    assert_eq!(v["exports"][0]["can_multi_conn"], true, "{v}");

    let rw = qemu_io(&uri, &["write -P 0x99 0 4096".into()]);
    rw.failed("qemu-io opening a read-only export for writing");
    assert!(rw.stderr.contains("Permission denied"), "{rw:?}");
    let ro = run(tool("qemu-io")
        .args(["-r", "-f", "raw", "-c", "read -v 0 16"])
        .arg(&uri));
    ro.ok("qemu-io -r");

    // libnbd refuses writes to a read-only export itself unless strict mode is off.
    let script = r#"
import nbd, sys
h = nbd.NBD()
h.set_strict_mode(0)
h.connect_uri(sys.argv[1])
print("read_only", h.is_read_only())
for name, f in [("pwrite", lambda: h.pwrite(b"\x99" * 4096, 0)),
                ("zero", lambda: h.zero(4096, 8192)),
                ("trim", lambda: h.trim(65536, 65536))]:
    try:
        f()
        print(name, "succeeded")
    except nbd.Error as e:
        print(name, e.errno, e.string)
h.shutdown()
"#;
    let py = python_with_nbd().unwrap();
    let out = run(Command::new(py).args(["-c", script, &uri]));
    let text = out.ok("libnbd writes to a read-only export");
    assert!(text.contains("read_only True"), "{text}");
    for name in ["pwrite", "zero", "trim"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.starts_with(&format!("{name} EPERM")) && line.contains("Operation not permitted"),
            "{name} on a read-only export: {line}"
        );
    }
    srv.stop();
    img.assert_clean();
    let lun = img.read_lun(2);
    assert_same(&lun[..data.len()], &data, "LUN 2 after refused writes");
}

/// `nbdinfo --map` (base:allocation) reports holes for never-written and discarded
/// extents and data where written, at the array's 16 KiB extent granularity.
#[test]
fn nbdinfo_map_reports_holes_and_data() {
    if !need(
        "nbdinfo_map_reports_holes_and_data",
        &["nbdinfo", "qemu-io"],
    ) {
        return;
    }
    let img = Image::new("map", "256M");
    img.lun(1, "8M");
    img.lun(2, "4M");
    let srv = Server::start(&img, &[]);
    let uri = srv.uri(1);
    assert_eq!(map(&uri, 8 * MIB), vec![(0, 8 * MIB, false)], "a new LUN");
    let k16 = 16 * KIB;
    let cmds = [
        "write -P 1 0 64k".to_owned(),
        "write -P 2 1M 4k".to_owned(),
        // 1 KiB across the boundary between two extents: both become data.
        format!("write -P 3 {} 1024", 2 * MIB - k16 - 512),
        "discard 16k 16k".to_owned(),
        "flush".to_owned(),
    ];
    assert_qemu_io(&qemu_io(&uri, &cmds), 0, "qemu-io");
    let want = vec![
        (0, k16, true),
        (k16, k16, false),
        (2 * k16, 2 * k16, true),
        (4 * k16, MIB - 4 * k16, false),
        (MIB, k16, true),
        (MIB + k16, MIB - 3 * k16, false),
        (2 * MIB - 2 * k16, 2 * k16, true),
        (2 * MIB, 6 * MIB, false),
    ];
    assert_eq!(map(&uri, 8 * MIB), want);
    assert_eq!(
        map(&srv.uri(2), 4 * MIB),
        vec![(0, 4 * MIB, false)],
        "LUN 2 untouched"
    );
    srv.stop();
    img.assert_clean();
}

/// nbdcopy copies a file into one LUN, that LUN into another, and the other out to a
/// file, identical to the first (nbdcopy uses several connections: CAN_MULTI_CONN).
#[test]
fn nbdcopy_round_trip() {
    if !need("nbdcopy_round_trip", &["nbdcopy"]) {
        return;
    }
    let img = Image::new("nbdcopy", "256M");
    img.lun(1, "16M");
    img.lun(2, "16M");
    let mut reference = random_bytes(3, 16 * MIB as usize);
    reference[5 * MIB as usize..9 * MIB as usize].fill(0);
    reference[14 * MIB as usize + 12345..].fill(0);
    let ref_path = img.dir.file("ref.raw");
    std::fs::write(&ref_path, &reference).unwrap();
    let out_path = img.dir.file("out.raw");

    let srv = Server::start(&img, &[]);
    let (u1, u2) = (srv.uri(1), srv.uri(2));
    run(tool("nbdcopy").args(["--flush", &ref_path, &u1])).ok("nbdcopy file -> LUN 1");
    run(tool("nbdcopy").args(["--flush", &u1, &u2])).ok("nbdcopy LUN 1 -> LUN 2");
    run(tool("nbdcopy").args([&u2, &out_path])).ok("nbdcopy LUN 2 -> file");
    let cmp = run(tool("cmp").args([&ref_path, &out_path]));
    cmp.ok("cmp of the copy with the original");
    srv.stop();
    img.assert_clean();
    assert_same(&img.read_lun(2), &reference, "LUN 2 read with lunsnap read");
}

/// fio's nbd engine: random writes at queue depth 32 from three jobs, each on its
/// own region, verified with crc32c; after a restart `--verify_only` finds them all.
#[test]
fn fio_randwrite_verifies() {
    if !need("fio_randwrite_verifies", &["fio-nbd"]) {
        return;
    }
    let img = Image::new("fio", "256M");
    img.lun(1, "32M");
    let srv = Server::start(&img, &[]);
    let job = format!(
        "[global]\nioengine=nbd\nuri={}\nrw=randwrite\nbsrange=512-64k\nblockalign=512\n\
         iodepth=32\nsize=8m\noffset_increment=8m\nnumjobs=3\nverify=crc32c\n\
         verify_fatal=1\ndo_verify=1\n[regions]\n",
        srv.uri(1)
    );
    let out = fio(&img.dir, &job, &[]);
    out.ok("fio randwrite with verify");
    let jobs = fio_jobs(&out);
    assert_eq!(jobs.len(), 3, "{}", out.text());
    for (error, written, verified) in jobs {
        assert_eq!(
            (error, written, verified),
            (0, 8 * MIB, 8 * MIB),
            "{}",
            out.stderr
        );
    }
    srv.stop();
    img.assert_clean();

    let srv = Server::start(&img, &[]);
    let out = fio(&img.dir, &job, &["--verify_only"]);
    out.ok("fio --verify_only after a restart");
    for (error, _, verified) in fio_jobs(&out) {
        assert_eq!((error, verified), (0, 8 * MIB), "{}", out.stderr);
    }
    srv.stop();
    img.assert_clean();
}

// ---------------------------------------------------------------------------------
// Durability

/// A write on one connection, a flush on another (the server sets CAN_MULTI_CONN:
/// a flush covers every connection's writes), then kill -9: the write is in the
/// image, which is clean.
#[test]
fn flush_on_another_connection_survives_kill9() {
    if !need(
        "flush_on_another_connection_survives_kill9",
        &["qemu-io", "nbdinfo"],
    ) {
        return;
    }
    let img = Image::new("multiconn", "256M");
    img.lun(1, "16M");
    let srv = Server::start(&img, &[]);
    let uri = srv.uri(1);
    let v = json_in(&nbdinfo(&["--json", &uri]).ok("nbdinfo"), "nbdinfo");
    assert_eq!(v["exports"][0]["can_multi_conn"], true, "{v}");

    // Connection A writes, never flushes, and stays connected.
    let mut writer = tool("qemu-io");
    writer.args([
        "-f",
        "raw",
        "-c",
        "write -P 0x77 4M 1M",
        "-c",
        "sleep 60000",
        &uri,
    ]);
    let writer = Bg::start(writer, img.dir.path("writer.log"));
    // Its write has been executed once another connection reads it.
    let probe = || {
        let o = qemu_io(&uri, &["read -P 0x77 4M 1M".into()]);
        o.code == Some(0) && !o.all().contains("failed")
    };
    assert!(
        wait_until(Duration::from_secs(30), probe),
        "A's write never showed"
    );
    // Connection B flushes.
    let flush = qemu_io(&uri, &["flush".into()]);
    assert_qemu_io(&flush, 0, "qemu-io flush on connection B");
    let log = srv.kill9();
    writer.kill();
    assert!(log.contains("opened LUN 1"), "{log}");

    img.assert_clean();
    let lun = img.read_lun(1);
    let mut want = vec![0u8; 16 * MIB as usize];
    want[4 * MIB as usize..5 * MIB as usize].fill(0x77);
    assert_same(&lun, &want, "LUN 1 after kill -9");
}

/// kill -9 under load: fio writes LUN 2 at queue depth 16 with a flush every 8
/// writes, while qemu-io writes LUN 1 in rounds (round r: four 16 KiB writes in
/// flight with byte r%250+1 in [64K*r, 64K*(r+1)), drain, flush, then a FUA write of
/// the round's first sector that qemu-io logs). The server is killed mid-run; the
/// image is clean, and every logged round, whose writes were acknowledged before a
/// completed flush, reads back whole after a restart.
#[test]
fn kill9_under_load_keeps_flushed_writes() {
    if !need(
        "kill9_under_load_keeps_flushed_writes",
        &["qemu-io", "fio-nbd", "nbdinfo"],
    ) {
        return;
    }
    let img = Image::new("kill9", "256M");
    img.lun(1, "64M");
    img.lun(2, "32M");
    let srv = Server::start(&img, &[]);
    const ROUNDS: u64 = 1024;
    const ROUND: u64 = 64 * KIB;
    let byte = |r: u64| (r % 250 + 1) as u8;

    let load_job = format!(
        "[load]\nioengine=nbd\nuri={}\nrw=randwrite\nbs=64k\niodepth=16\nfsync=8\n\
         size=32m\ntime_based=1\nruntime=120\n",
        srv.uri(2)
    );
    std::fs::write(img.dir.path("load.fio"), load_job).unwrap();
    let mut load = tool("fio");
    load.current_dir(&img.dir.0).arg("load.fio");
    let load = Bg::start(load, img.dir.path("load.log"));
    // The load runs once LUN 2 has data.
    let u2 = srv.uri(2);
    let fio_in = wait_until(Duration::from_secs(30), || {
        map(&u2, 32 * MIB).iter().any(|e| e.2)
    });
    assert!(fio_in, "fio did not write:\n{}", load.output());

    let mut marker = tool("qemu-io");
    marker.args(["-f", "raw"]);
    for r in 0..ROUNDS {
        let (b, at) = (byte(r), r * ROUND);
        for i in 0..4 {
            marker
                .arg("-c")
                .arg(format!("aio_write -P {b} {} 16k", at + i * 16 * KIB));
        }
        marker.args(["-c", "aio_flush", "-c", "flush", "-c"]);
        marker.arg(format!("write -f -P {b} {at} 512"));
    }
    marker.arg(srv.uri(1));
    let marker = Bg::start(marker, img.dir.path("marker.log"));

    // Kill once round 32 has begun (its data reads back on another connection):
    // rounds 0 to 31 are logged by then.
    const KILL_AT: u64 = 32;
    let uri = srv.uri(1);
    let probe = format!("read -P {} {} 512", byte(KILL_AT), KILL_AT * ROUND);
    let started = Instant::now();
    let reached = wait_until(Duration::from_secs(60), || {
        let o = qemu_io(&uri, std::slice::from_ref(&probe));
        o.code == Some(0) && !o.all().contains("failed")
    });
    assert!(
        reached,
        "round {KILL_AT} not reached in 60 s:\n{}",
        marker.output()
    );
    let log = srv.kill9();
    let killed_after = started.elapsed();

    let (_, out) = marker.wait(Duration::from_secs(60));
    let (_, load_out) = load.wait(Duration::from_secs(60));
    let logged: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("wrote 512/512 bytes at offset "))
        .map(|o| o.trim().parse::<u64>().unwrap() / ROUND)
        .collect();
    let n = logged.len() as u64;
    assert_eq!(logged, (0..n).collect::<Vec<_>>(), "rounds logged in order");
    assert!(n >= KILL_AT, "only {n} rounds logged:\n{out}");
    assert!(
        n < ROUNDS && out.contains("failed"),
        "the server was not killed mid-run ({n} rounds):\n{out}"
    );
    assert!(
        load_out.contains("fio: connected") && !load_out.contains("Connection refused"),
        "the fio load did not run:\n{load_out}"
    );
    eprintln!("killed after {killed_after:?}, {n} rounds logged");
    assert!(log.contains("opened LUN 2"), "fio never connected:\n{log}");

    img.assert_clean();
    let srv = Server::start(&img, &[]);
    let checks: Vec<String> = (0..n)
        .map(|r| format!("read -P {} {} {}", byte(r), r * ROUND, ROUND))
        .collect();
    assert_qemu_io(
        &qemu_io(&srv.uri(1), &checks),
        n as usize,
        "rounds after kill -9",
    );
    srv.stop();
    img.assert_clean();
}

// ---------------------------------------------------------------------------------
// A real filesystem

/// The tools of the filesystem tests.
const FS_TOOLS: [&str; 7] = [
    "/dev/fuse",
    "nbdfuse",
    "fusermount3",
    "mkfs.ext4",
    "fuse2fs",
    "e2fsck",
    "debugfs",
];

/// nbdfuse shows export `lun` as the file `DIR/fuse/nbd`.
fn nbdfuse(dir: &Dir, uri: &str) -> (Mount, std::path::PathBuf) {
    let mnt = dir.path("fuse");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut c = tool("nbdfuse");
    c.arg(&mnt).arg(uri);
    let file = mnt.join("nbd");
    let f2 = file.clone();
    let m = Mount::start(c, &mnt, dir.path("nbdfuse.log"), move || f2.exists());
    (m, file)
}

/// fuse2fs mounts the ext4 image `file` on `DIR/mnt` (in the foreground, so that
/// its exit after the unmount means everything is written back).
fn fuse2fs(dir: &Dir, file: &Path) -> Mount {
    let mnt = dir.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut c = tool("fuse2fs");
    c.arg(file).arg(&mnt).arg("-f");
    let lf = mnt.join("lost+found");
    Mount::start(c, &mnt, dir.path("fuse2fs.log"), move || lf.exists())
}

/// Writes `n` files of pseudo-random sizes and contents in `dir/sub` and fsyncs each
/// (and the directory); returns (name, contents).
fn write_files(root: &Path, sub: &str, n: u64, seed: u64) -> Vec<(String, Vec<u8>)> {
    let d = root.join(sub);
    std::fs::create_dir_all(&d).unwrap();
    let mut files = Vec::new();
    for i in 0..n {
        let len = (random_bytes(seed * 1000 + i, 8)[0] as usize) * 1531 + (i as usize) * 17;
        let data = random_bytes(seed * 1000 + i + 500, len);
        let name = format!("f{i:02}");
        let mut f = std::fs::File::create(d.join(&name)).unwrap();
        std::io::Write::write_all(&mut f, &data).unwrap();
        f.sync_all().unwrap();
        files.push((name, data));
    }
    std::fs::File::open(&d).unwrap().sync_all().unwrap();
    files
}

/// `e2fsck -fn FILE` must find the filesystem clean.
#[track_caller]
fn assert_fsck_clean(file: &Path) {
    let out = run(tool("e2fsck").arg("-fn").arg(file));
    out.ok(&format!("e2fsck -fn {}", file.display()));
}

/// Dumps directory `/sub` of the ext4 image `file` with debugfs and compares it with
/// `files`.
#[track_caller]
fn assert_files_in(file: &Path, sub: &str, files: &[(String, Vec<u8>)], dir: &Dir, tag: &str) {
    let out_dir = dir.path(&format!("dump-{tag}"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let req = format!("rdump /{sub} {}", out_dir.display());
    run(tool("debugfs").arg("-R").arg(&req).arg(file)).ok("debugfs rdump");
    for (name, data) in files {
        let got = std::fs::read(out_dir.join(sub).join(name))
            .unwrap_or_else(|e| panic!("/{sub}/{name} missing from {}: {e}", file.display()));
        assert_same(&got, data, &format!("/{sub}/{name} in {}", file.display()));
    }
}

/// ext4 on a LUN: nbdfuse shows the export as a file, mkfs.ext4 formats it, fuse2fs
/// mounts it, files are written and fsynced, and after the unmount e2fsck finds the
/// filesystem clean, through NBD and again in the LUN's bytes once the server
/// stopped, with every file there.
#[test]
fn ext4_on_nbdfuse_and_fuse2fs() {
    if !need("ext4_on_nbdfuse_and_fuse2fs", &FS_TOOLS) {
        return;
    }
    let img = Image::new("ext4", "256M");
    img.lun(1, "64M");
    let srv = Server::start(&img, &[]);
    let (nbd, file) = nbdfuse(&img.dir, &srv.uri(1));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 * MIB);
    run(tool("mkfs.ext4").args(["-q", "-F"]).arg(&file)).ok("mkfs.ext4");
    let fs = fuse2fs(&img.dir, &file);
    let files = write_files(&fs.dir, "data", 24, 1);
    for (name, data) in &files {
        assert_same(
            &std::fs::read(fs.dir.join("data").join(name)).unwrap(),
            data,
            name,
        );
    }
    fs.unmount();
    assert_fsck_clean(&file);
    nbd.unmount();
    srv.stop();
    img.assert_clean();

    let scratch = img.dir.path("lun1.ext4");
    std::fs::write(&scratch, img.read_lun(1)).unwrap();
    assert_fsck_clean(&scratch);
    assert_files_in(&scratch, "data", &files, &img.dir, "lun1");
}

// ---------------------------------------------------------------------------------
// TLS

/// Runs openssl in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    run(tool("openssl").current_dir(dir).args(args)).ok(&format!("openssl {}", args.join(" ")));
}

/// A CA (`NAME-ca-cert.pem`, `NAME-ca-key.pem`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=lunsnap test {name} CA"),
            "-keyout",
            &format!("{name}-ca-key.pem"),
            "-out",
            &format!("{name}-ca-cert.pem"),
        ],
    );
}

/// A key and a certificate for `cn` signed by CA `ca`, with extensions `ext`.
fn make_cert(dir: &Path, ca: &str, cn: &str, key: &str, cert: &str, ext: &str) {
    let csr = format!("{cert}.csr");
    let extfile = format!("{cert}.ext");
    std::fs::write(dir.join(&extfile), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            key,
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}-ca-cert.pem"),
            "-CAkey",
            &format!("{ca}-ca-key.pem"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extfile,
            "-out",
            cert,
        ],
    );
}

/// A libnbd certificates directory `dir/name` (ca-cert.pem, and the client's
/// client-cert.pem and client-key.pem when `cn` is given), signed by CA `ca`.
fn client_dir(dir: &Path, name: &str, ca: &str, cn: Option<&str>) -> String {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(dir.join("main-ca-cert.pem"), d.join("ca-cert.pem")).unwrap();
    if let Some(cn) = cn {
        let ext =
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n";
        let key = format!("{name}/client-key.pem");
        let cert = format!("{name}/client-cert.pem");
        make_cert(dir, ca, cn, &key, &cert, ext);
    }
    d.to_str().unwrap().to_owned()
}

/// TLS on a TCP listener: a client certificate from the server's CA whose common
/// name is a registered host's name or id gets in as that host and sees only its
/// LUNs; no certificate, a certificate from another CA, one naming no registered
/// host, and a client without TLS are refused. qemu-io writes and reads over TLS.
#[test]
fn tls_client_certificates_name_hosts() {
    if !need(
        "tls_client_certificates_name_hosts",
        &["openssl", "nbdinfo", "qemu-io"],
    ) {
        return;
    }
    let img = Image::new("tls", "256M");
    for lun in [1, 2, 3] {
        img.lun(lun, "16M");
    }
    img.ok(&["host", "add", "IMG", ALPHA, "--name", "alpha"]);
    img.ok(&["host", "add", "IMG", BETA, "--name", "beta"]);
    img.ok(&["grant", "IMG", "1", ALPHA, "--access", "write"]);
    img.ok(&["grant", "IMG", "2", BETA, "--access", "read"]);
    img.ok(&["grant", "IMG", "3", BETA, "--access", "write"]);
    img.ok(&["security", "enable", "IMG"]);

    let t = img.dir.path("tls");
    std::fs::create_dir_all(&t).unwrap();
    make_ca(&t, "main");
    make_ca(&t, "other");
    let server_ext = "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                      keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n";
    make_cert(
        &t,
        "main",
        "localhost",
        "server-key.pem",
        "server-cert.pem",
        server_ext,
    );
    // alpha by its registered name, beta by its id.
    let alpha = client_dir(&t, "alpha", "main", Some("alpha"));
    let beta = client_dir(&t, "beta", "main", Some(BETA));
    let gamma = client_dir(&t, "gamma", "main", Some("gamma"));
    let other = client_dir(&t, "other", "other", Some("alpha"));
    let nocert = client_dir(&t, "nocert", "main", None);

    let tls_file = |f: &str| t.join(f).to_str().unwrap().to_owned();
    let (srv, port) = start_on_free_port(&img, |port| {
        vec![
            "--listen".into(),
            format!("tcp:127.0.0.1:{port}"),
            "--tls-cert".into(),
            tls_file("server-cert.pem"),
            "--tls-key".into(),
            tls_file("server-key.pem"),
            "--tls-ca".into(),
            tls_file("main-ca-cert.pem"),
        ]
    });
    let uri = |lun: Option<u32>, certs: &str| {
        let l = lun.map_or(String::new(), |l| l.to_string());
        format!("nbds://127.0.0.1:{port}/{l}?tls-certificates={certs}")
    };

    assert_eq!(list_exports(&uri(None, &alpha)), exports(&[("1", false)]));
    assert_eq!(
        list_exports(&uri(None, &beta)),
        exports(&[("2", true), ("3", false)])
    );
    let v = json_in(
        &nbdinfo(&["--json", &uri(Some(1), &alpha)]).ok("nbdinfo"),
        "nbdinfo",
    );
    assert_eq!(v["TLS"], true, "{v}");
    nbdinfo(&[&uri(Some(2), &alpha)]).failed("alpha opening LUN 2");

    for (certs, why) in [
        (&nocert, "no client certificate"),
        (&other, "a certificate from another CA"),
        (&gamma, "a certificate naming no registered host"),
    ] {
        nbdinfo(&["--list", &uri(None, certs)]).failed(why);
        nbdinfo(&[&uri(Some(1), certs)]).failed(why);
    }
    nbdinfo(&[&format!("nbd://127.0.0.1:{port}/1")]).failed("a client without TLS");
    nbdinfo(&["--list", &format!("nbd://127.0.0.1:{port}/")]).failed("a client without TLS");

    let qemu = run(tool("qemu-io")
        .arg("--object")
        .arg(format!("tls-creds-x509,id=tls0,dir={alpha},endpoint=client"))
        .args(["-c", "write -P 0x5a 0 1M", "-c", "read -P 0x5a 0 1M", "-c", "flush"])
        .arg("--image-opts")
        .arg(format!(
            "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={port},export=1,tls-creds=tls0"
        )));
    assert_qemu_io(&qemu, 1, "qemu-io over TLS");

    let log = srv.stop();
    assert!(log.contains("peer sent no certificates"), "{log}");
    assert!(log.contains("names no registered host"), "{log}");
    assert!(log.contains(&format!("host {ALPHA} opened LUN 1")), "{log}");
    img.assert_clean();
    let lun = img.read_lun(1);
    assert!(lun[..MIB as usize].iter().all(|&b| b == 0x5a));
    assert!(lun[MIB as usize..].iter().all(|&b| b == 0));
}

/// A TCP listener beyond loopback without TLS is refused at start: exit 1 with a
/// message, and the image is left unlocked and clean.
#[test]
fn tcp_beyond_loopback_needs_tls() {
    let img = Image::new("notls", "64M");
    img.lun(1, "4M");
    let listen = format!("tcp:0.0.0.0:{}", free_port());
    let out = run_for(
        Command::new(bin()).args(["serve", &img.img, "--listen", &listen]),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("is not a loopback address") && out.stderr.contains("needs TLS"),
        "{out:?}"
    );
    assert!(!Path::new(&img.sock()).exists(), "a socket was left behind");
    img.assert_clean();
}

// ---------------------------------------------------------------------------------
// Management while serving (the control socket)

/// `lunsnap copy create` on a served image while fio writes LUN 1 with verification:
/// the copy is made (and becomes an export) without disturbing fio.
#[test]
fn copy_create_while_fio_writes() {
    if !need("copy_create_while_fio_writes", &["fio-nbd", "nbdinfo"]) {
        return;
    }
    let img = Image::new("copy-fio", "512M");
    img.lun(1, "64M");
    let srv = Server::start(&img, &[]);
    let job = format!(
        "[global]\nioengine=nbd\nuri={}\nrw=randwrite\nbs=4k\niodepth=32\nsize=16m\n\
         offset_increment=16m\nnumjobs=2\nverify=crc32c\nverify_fatal=1\ndo_verify=1\n\
         [regions]\n",
        srv.uri(1)
    );
    std::fs::write(img.dir.path("job.fio"), &job).unwrap();
    let mut c = tool("fio");
    c.current_dir(&img.dir.0)
        .args(["job.fio", "--output-format=json"]);
    let mut fio = Bg::start(c, img.dir.path("fio.log"));
    // Wait until fio has written something, then make the copy while it runs.
    let uri = srv.uri(1);
    assert!(wait_until(Duration::from_secs(30), || map(&uri, 64 * MIB)
        .iter()
        .any(|e| e.2)));
    assert!(
        fio.running(),
        "fio finished before the copy was made: make its job longer"
    );
    img.ok(&[
        "copy",
        "create",
        "IMG",
        "--parent",
        "1",
        "--copy",
        "11",
        "--attached",
    ]);
    let (st, out) = fio.wait(CLIENT_TIMEOUT);
    assert!(st.success(), "fio failed:\n{out}");
    let out = Out {
        code: st.code(),
        stdout: out.into_bytes(),
        stderr: String::new(),
    };
    for (error, written, verified) in fio_jobs(&out) {
        assert_eq!((error, written, verified), (0, 16 * MIB, 16 * MIB));
    }
    let listed = list_exports(&format!("nbd+unix:///?socket={}", srv.sock));
    assert!(listed.contains(&("11".to_owned(), false)), "{listed:?}");
    srv.stop();
    img.assert_clean();
}

/// A copy made while ext4 is mounted (through nbdfuse and fuse2fs) and being written
/// is a consistent filesystem: after journal replay on a scratch copy of its bytes
/// e2fsck finds it clean, and every file fsynced before the copy command is in it.
#[test]
fn copy_of_live_ext4_is_consistent() {
    if !need("copy_of_live_ext4_is_consistent", &FS_TOOLS) {
        return;
    }
    let img = Image::new("copy-ext4", "512M");
    img.lun(1, "64M");
    let srv = Server::start(&img, &[]);
    let (nbd, file) = nbdfuse(&img.dir, &srv.uri(1));
    run(tool("mkfs.ext4").args(["-q", "-F"]).arg(&file)).ok("mkfs.ext4");
    let fs = fuse2fs(&img.dir, &file);
    let before = write_files(&fs.dir, "before", 16, 2);
    img.ok(&[
        "copy",
        "create",
        "IMG",
        "--parent",
        "1",
        "--copy",
        "11",
        "--attached",
    ]);
    let after = write_files(&fs.dir, "after", 16, 3);
    fs.unmount();
    assert_fsck_clean(&file);
    nbd.unmount();
    srv.stop();
    img.assert_clean();

    let lun1 = img.dir.path("lun1.ext4");
    std::fs::write(&lun1, img.read_lun(1)).unwrap();
    assert_fsck_clean(&lun1);
    assert_files_in(&lun1, "before", &before, &img.dir, "lun1-before");
    assert_files_in(&lun1, "after", &after, &img.dir, "lun1-after");

    let copy = img.dir.path("copy11.ext4");
    std::fs::write(&copy, img.read_lun(11)).unwrap();
    // Replay the journal if the copy needs it (exit 0 or 1: nothing else done).
    let replay = run(tool("e2fsck").args(["-y", "-E", "journal_only"]).arg(&copy));
    assert!(
        matches!(replay.code, Some(0 | 1)),
        "journal replay: {replay:?}"
    );
    assert_fsck_clean(&copy);
    assert_files_in(&copy, "before", &before, &img.dir, "copy-before");
}
