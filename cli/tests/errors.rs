//! Every error exit: status 1 with one clear line on stderr and the image unchanged,
//! or status 2 for usage errors; the image lock; images that are not images.

mod common;

use std::fs::File;

use common::*;

/// Runs a command that must be refused as a usage error (exit 2) saying `needle`,
/// and checks that the image's bytes did not change.
fn usage_unchanged(img: &str, args: &[&str], needle: &str) {
    let before = read(img);
    usage_says(args, needle);
    assert!(
        read(img) == before,
        "lunsnap {args:?} was refused but changed the image"
    );
}

/// Runs a command that must fail with `needle`, and checks that the image's bytes
/// did not change.
fn fails_unchanged(img: &str, args: &[&str], needle: &str) {
    let before = read(img);
    fails(args, needle);
    assert!(
        read(img) == before,
        "lunsnap {args:?} failed but changed the image"
    );
}

#[test]
fn operation_errors_exit_1_and_change_nothing() {
    let d = Dir::new("errors");
    let img = small_image(&d);
    let data = d.file("data.bin");
    std::fs::write(&data, pattern(1, 8192)).unwrap();
    ok(&["write", &img, "1", &data]);
    ok(&[
        "copy",
        "create",
        &img,
        "--parent",
        "1",
        "--copy",
        "2",
        "--detached",
    ]);
    let out = d.file("out.bin");

    // No such LUN.
    for args in [
        &["lun", "delete", &img, "5"][..],
        &["copy", "attach", &img, "5"],
        &["copy", "detach", &img, "5"],
        &["copy", "restore", &img, "5"],
        &[
            "copy",
            "create",
            &img,
            "--parent",
            "5",
            "--copy",
            "6",
            "--attached",
        ],
        &["write", &img, "5", &data],
    ] {
        fails_unchanged(&img, args, "no such LUN: 5");
    }
    fails(&["read", &img, "5", &out], "no such LUN: 5");
    assert!(
        !std::path::Path::new(&out).exists(),
        "a failed read created its output"
    );
    // Number in use.
    fails_unchanged(
        &img,
        &["lun", "create", &img, "1", "--size", "1M"],
        "already in use",
    );
    fails_unchanged(
        &img,
        &[
            "copy",
            "create",
            &img,
            "--parent",
            "1",
            "--copy",
            "2",
            "--attached",
        ],
        "already in use",
    );
    // Out of range.
    fails_unchanged(
        &img,
        &["lun", "create", &img, "16", "--size", "1M"],
        "out of range",
    );
    // Not enough space to reserve (the pool holds less than 16 MiB).
    let cap = json(&ok(&["info", &img, "--json"]))["unreserved_bytes"]
        .as_u64()
        .unwrap();
    let too_big = (cap / 512 + 1) * 512;
    fails_unchanged(
        &img,
        &["lun", "create", &img, "3", "--size", &too_big.to_string()],
        "not enough space to reserve",
    );
    // Leave one extent less than copy 2 needs.
    ok(&[
        "lun",
        "create",
        &img,
        "3",
        "--size",
        &(cap - (4 << 20) + (16 << 10)).to_string(),
    ]);
    fails_unchanged(
        &img,
        &["copy", "attach", &img, "2"],
        "not enough space to reserve",
    );
    fails_unchanged(
        &img,
        &[
            "copy",
            "create",
            &img,
            "--parent",
            "1",
            "--copy",
            "4",
            "--attached",
        ],
        "not enough space to reserve",
    );
    ok(&["lun", "delete", &img, "3"]);
    // Invalid LUN sizes are usage errors (exit 2), as for `format`.
    usage_unchanged(
        &img,
        &["lun", "create", &img, "3", "--size", "1000"],
        "multiple of 512",
    );
    usage_unchanged(
        &img,
        &["lun", "create", &img, "3", "--size", "0"],
        "multiple of 512",
    );
    // Too large for the pool: the operation fails (exit 1), in human units.
    fails_unchanged(
        &img,
        &["lun", "create", &img, "3", "--size", "1G"],
        "invalid LUN size 1 GiB (1073741824 bytes): larger than the pool's capacity, ",
    );
    // Detached copy: no I/O, no restore.
    fails_unchanged(&img, &["write", &img, "2", &data], "detached");
    fails(&["read", &img, "2", &out], "detached");
    fails_unchanged(&img, &["copy", "restore", &img, "2"], "detached");
    // Not a copy; has copies.
    fails_unchanged(&img, &["copy", "attach", &img, "1"], "not a copy");
    fails_unchanged(&img, &["copy", "restore", &img, "1"], "not a copy");
    let r = fails(
        &["lun", "delete", &img, "1"],
        "LUN 1 has 1 copy (2): delete it first",
    );
    assert!(r.stderr.contains("use --orphan-copies"), "{r:?}");
    // I/O outside the LUN or not in whole sectors.
    fails_unchanged(
        &img,
        &["write", &img, "1", &data, "--offset", "4092K"],
        "beyond the end",
    );
    usage_unchanged(
        &img,
        &["write", &img, "1", &data, "--offset", "100"],
        "\"100\" is not a multiple of 512",
    );
    fails(
        &["read", &img, "1", &out, "--offset", "4M", "--length", "512"],
        "beyond the end",
    );
    fails(
        &["read", &img, "1", &out, "--offset", "5M"],
        "beyond the end",
    );
    usage_says(
        &["read", &img, "1", &out, "--length", "100"],
        "\"100\" is not a multiple of 512",
    );
    assert!(!std::path::Path::new(&out).exists());
    // Input length not a multiple of 512, from a file or a pipe.
    let odd = d.file("odd.bin");
    std::fs::write(&odd, pattern(2, 1000)).unwrap();
    fails_unchanged(&img, &["write", &img, "1", &odd], "multiple of 512");
    // From a pipe the length is known only at the end: the chunks before it may have
    // gone to free space, but nothing is committed, so the array reads as before.
    let state = |img: &str| {
        let r = run(&["read", img, "1", "-"]);
        assert_eq!(r.code, 0);
        let mut info = json(&ok(&["info", img, "--json"]));
        // The file's disk usage may grow; the array's figures must not change.
        info["image_allocated_bytes"] = serde_json::Value::Null;
        (r.stdout, info, ok(&["lun", "list", img, "--json"]))
    };
    let before = state(&img);
    let r = run_with(&["write", &img, "1", "-"], &pattern(3, (1 << 20) + 1000));
    assert_fails(&r, &["write", "-"], "multiple of 512");
    assert!(
        state(&img) == before,
        "a refused write from stdin changed the array"
    );
    let r = run_with(
        &["write", &img, "1", "-", "--offset", "3M"],
        &pattern(3, 2 << 20),
    );
    assert_fails(&r, &["write", "-"], "beyond the end");
    assert!(
        state(&img) == before,
        "a refused write from stdin changed the array"
    );
    // A missing input file, a read onto the image itself.
    fails_unchanged(
        &img,
        &["write", &img, "1", &d.file("missing.bin")],
        "cannot open",
    );
    fails_unchanged(&img, &["read", &img, "1", &img], "the image itself");
    // Nothing was lost along the way.
    ok(&["read", &img, "1", &out, "--length", "8K"]);
    assert_eq!(read(&out), read(&data));
    ok(&["check", &img]);
}

#[test]
fn format_errors() {
    let d = Dir::new("format");
    let img = small_image(&d);
    // An existing file is refused without --force, and left as it was.
    fails_unchanged(&img, &["format", &img, "--size", "16M"], "--force");
    let other = d.file("notes.txt");
    std::fs::write(&other, b"keep me").unwrap();
    fails(&["format", &other, "--size", "16M"], "already exists");
    assert_eq!(read(&other), b"keep me");
    // Too small for an array: a usage error naming the least size, and no file is
    // left behind.
    let tiny = d.file("tiny.img");
    usage_says(&["format", &tiny, "--size", "64K"], "too small");
    assert!(!std::path::Path::new(&tiny).exists());
    // --force over an image that is too small for the layout keeps the old image.
    usage_unchanged(
        &img,
        &["format", &img, "--size", "64K", "--force"],
        "too small",
    );
    ok(&["check", &img]);
    // A directory that does not exist.
    fails(
        &["format", &d.file("no/such/dir.img"), "--size", "16M"],
        "cannot create",
    );
}

#[test]
fn usage_errors_exit_2() {
    let d = Dir::new("usage");
    let img = small_image(&d);
    for size in ["12X", "abc", "", "-1", "1.5G", "99999999999T"] {
        usage_error(&["lun", "create", &img, "2", "--size", size]);
    }
    usage_error(&["format", &d.file("b.img"), "--size", "1000"]); // not a multiple of 4K
    usage_error(&["format", &d.file("b.img"), "--size", "0"]);
    usage_error(&[
        "format",
        &d.file("b.img"),
        "--size",
        "16M",
        "--extent-size",
        "3K",
    ]);
    usage_error(&[
        "format",
        &d.file("b.img"),
        "--size",
        "16M",
        "--extent-size",
        "2M",
    ]);
    usage_error(&[
        "format",
        &d.file("b.img"),
        "--size",
        "16M",
        "--max-luns",
        "0",
    ]);
    usage_error(&["format", &d.file("b.img")]);
    assert!(!std::path::Path::new(&d.file("b.img")).exists());
    usage_error(&["frobnicate", &img]);
    usage_error(&[]);
    usage_error(&["lun", "create", &img, "x", "--size", "1M"]);
    usage_error(&["lun", "create", &img, "-1", "--size", "1M"]);
    usage_error(&["copy", "create", &img, "--parent", "1", "--copy", "2"]);
    usage_error(&[
        "copy",
        "create",
        &img,
        "--parent",
        "1",
        "--copy",
        "2",
        "--attached",
        "--detached",
    ]);
    usage_error(&["read", &img, "1", "-", "--offset", "1Q"]);
    usage_error(&["info"]);
    usage_error(&["demo", "a", "b"]);
    assert_eq!(
        json(&ok(&["lun", "list", &img, "--json"]))
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn files_that_are_not_images() {
    let d = Dir::new("notimage");
    // Random bytes, a whole number of 4 KiB blocks: no superblock.
    let random = d.file("random.img");
    std::fs::write(&random, pattern(9, 1 << 20)).unwrap();
    for args in [
        &["info", &random][..],
        &["check", &random],
        &["lun", "list", &random, "--json"],
        &["lun", "create", &random, "1", "--size", "1M"],
    ] {
        fails_unchanged(&random, args, "not a lunsnap");
    }
    // Zeros: not formatted either.
    let zeros = d.file("zeros.img");
    std::fs::write(&zeros, vec![0u8; 1 << 20]).unwrap();
    fails_unchanged(&zeros, &["info", &zeros], "not a lunsnap");
    // A length that is not whole blocks, an empty file.
    let odd = d.file("odd.img");
    std::fs::write(&odd, pattern(9, 5000)).unwrap();
    fails(&["info", &odd], "not a lunsnap image");
    let empty = d.file("empty.img");
    std::fs::write(&empty, b"").unwrap();
    fails(&["lun", "list", &empty], "not a lunsnap image");
    // Missing, a directory.
    fails(&["info", &d.file("missing.img")], "cannot open");
    fails(&["info", &d.file("")], "directory");
}

/// Flips a byte at `offset` in the file.
fn flip(path: &str, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], offset).unwrap();
}

/// Where an image keeps the copies of its pages, read from the first copy of its
/// newest superblock slot (the superblock's fields: docs/FORMAT.md).
struct Layout {
    device_pages: u64,
    meta_start: u64,
    meta_pages: u64,
    copies: u32,
}

impl Layout {
    fn of(img: &str) -> Layout {
        let b = read(img);
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let slot = (0..2).max_by_key(|&s| u64_at(s * 4096 + 24)).unwrap() * 4096;
        Layout {
            device_pages: u64_at(slot + 72),
            meta_start: u64_at(slot + 80),
            meta_pages: u64_at(slot + 88),
            copies: u32::from_le_bytes(b[slot + 368..slot + 372].try_into().unwrap()),
        }
    }

    /// The copies of page `page`: itself, and its second copy if it has one (a
    /// superblock slot's at the device's end; with two metadata copies, a metadata
    /// page's in the mirror area before it).
    fn copies(&self, page: u64) -> Vec<u64> {
        let mut v = vec![page];
        if page < 2 {
            v.push(self.device_pages - 2 + page);
        } else if self.copies == 2 && page < self.meta_start + self.meta_pages {
            v.push(page + self.device_pages - 2 - self.meta_pages - self.meta_start);
        }
        v
    }
}

/// An image of 16 MiB with `copies` metadata copies, LUN 1 written in two places,
/// its attached copy 2; and what LUN 1 reads.
fn written_image(d: &Dir, copies: &str) -> (String, Vec<u8>) {
    let img = d.file(&format!("copies-{copies}.img"));
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
    let data = d.file("data.bin");
    std::fs::write(&data, pattern(4, 256 << 10)).unwrap();
    ok(&["write", &img, "1", &data]);
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
    ok(&["write", &img, "1", &data, "--offset", "1M"]);
    let out = d.file("lun1.bin");
    ok(&["read", &img, "1", &out]);
    (img, read(&out))
}

/// Damage reaching every copy of a metadata page is reported (exit 1, or `check`'s 2
/// for damage found), never a crash; damage to one copy of a page whose other copy
/// is intact is read around: every command succeeds and reads what was written.
#[test]
fn corrupt_images_are_reported_never_a_panic() {
    let d = Dir::new("corrupt");
    let data = d.file("data.bin");
    let out = d.file("out.bin");
    let bad = d.file("bad.img");
    for copies in ["2", "1"] {
        let (img, lun1) = written_image(&d, copies);
        let layout = Layout::of(&img);
        assert_eq!(layout.copies.to_string(), copies);

        // Damage the first copy of all the metadata in use (the pages after the two
        // superblocks). With two copies the second copies serve.
        std::fs::copy(&img, &bad).unwrap();
        for page in 2..24u64 {
            flip(&bad, page * 4096 + 100);
        }
        if copies == "2" {
            assert!(ok(&["check", &bad]).contains("clean"));
            ok(&["read", &bad, "1", &out]);
            assert!(
                read(&out) == lun1,
                "LUN 1 reads wrong from the second copies"
            );
            ok(&["lun", "list", &bad]);
            // Both copies damaged: nothing left to read.
            for page in 2..24u64 {
                flip(&bad, layout.copies(page)[1] * 4096 + 100);
            }
        }
        let r = run(&["check", &bad]);
        assert!(r.code == 1 || r.code == 2, "{r:?}");
        assert!(
            r.stderr.contains("corrupt") || r.out().contains("corrupt"),
            "check did not report the corruption: {r:?}"
        );
        fails(&["lun", "list", &bad], "corrupt");

        // One damaged page at a time (the superblocks, the start of the metadata
        // area), in each copy alone and in all its copies, under every command.
        let mut reported = 0;
        for page in 0..12u64 {
            let all = layout.copies(page);
            let mut damages: Vec<Vec<u64>> = Vec::new();
            if all.len() == 2 {
                damages.extend(all.iter().map(|&c| vec![c]));
            }
            damages.push(all.clone());
            for damaged in damages {
                // A copy alone, with an intact twin, must not show.
                let healed = damaged.len() < all.len();
                std::fs::copy(&img, &bad).unwrap();
                for &c in &damaged {
                    flip(&bad, c * 4096 + 64);
                }
                let what = format!("{copies} copies, page {page} damaged at {damaged:?}");
                if healed {
                    ok(&["read", &bad, "1", &out]);
                    assert!(read(&out) == lun1, "{what}: LUN 1 reads wrong");
                }
                for args in [
                    &["check", &bad][..],
                    &["info", &bad, "--json"],
                    &["lun", "list", &bad, "--json"],
                    &["read", &bad, "1", &out],
                    &["write", &bad, "1", &data],
                    &["copy", "attach", &bad, "2"],
                    &["copy", "restore", &bad, "2"],
                    &["lun", "delete", &bad, "1", "--orphan-copies"],
                ] {
                    let r = run(args);
                    if healed {
                        assert_eq!(r.code, 0, "{what}: lunsnap {args:?}: {r:?}");
                        continue;
                    }
                    // `check` exits 2 when it finds damage.
                    let ok_codes: &[i32] = if args[0] == "check" {
                        &[0, 1, 2]
                    } else {
                        &[0, 1]
                    };
                    assert!(
                        ok_codes.contains(&r.code),
                        "{what}: lunsnap {args:?}: {r:?}"
                    );
                    if r.code != 0 {
                        assert!(
                            !r.stderr.is_empty() || !r.stdout.is_empty(),
                            "{what}: {args:?}: silent"
                        );
                        reported += 1;
                    }
                }
            }
        }
        assert!(reported > 0, "{copies} copies: no damaged page was noticed");
    }
}

#[test]
fn a_locked_image_is_in_use() {
    let d = Dir::new("lock");
    let img = small_image(&d);

    // Another process (here, this test) holds an exclusive lock: nothing may open it.
    let holder = File::open(&img).unwrap();
    holder.try_lock().unwrap();
    fails(&["info", &img], "image in use");
    fails(&["lun", "list", &img], "image in use");
    fails_unchanged(
        &img,
        &["lun", "create", &img, "2", "--size", "1M"],
        "image in use",
    );
    fails_unchanged(
        &img,
        &["format", &img, "--size", "16M", "--force"],
        "image in use",
    );
    holder.unlock().unwrap();

    // A shared lock (a reader): reads go on, changes are refused.
    holder.try_lock_shared().unwrap();
    ok(&["info", &img]);
    ok(&["check", &img]);
    fails_unchanged(
        &img,
        &["lun", "create", &img, "2", "--size", "1M"],
        "image in use",
    );
    drop(holder);
    ok(&["lun", "create", &img, "2", "--size", "1M"]);
}

#[test]
fn a_second_process_gets_image_in_use() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let d = Dir::new("lock2");
    let img = small_image(&d);
    // The first process holds the image while it waits for its input.
    let mut writer = Command::new(bin())
        .args(["write", &img, "1", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = writer.stdin.take().unwrap();
    input.write_all(&pattern(5, 4096)).unwrap();
    // Wait until it holds the lock (it takes it before reading its input). Probing
    // with a lock of our own could make it fail, so look in /proc/locks instead.
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&img).unwrap());
    let held = || {
        std::fs::read_to_string("/proc/locks").is_ok_and(|s| {
            s.lines().any(|l| {
                l.contains("FLOCK")
                    && l.split_whitespace()
                        .nth(5)
                        .and_then(|d| d.rsplit(':').next())
                        == Some(ino.to_string().as_str())
            })
        })
    };
    let mut seen = false;
    for _ in 0..1000 {
        if held() {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(seen, "the writer never locked the image");
    fails(&["info", &img], "image in use");
    fails(
        &[
            "copy",
            "create",
            &img,
            "--parent",
            "1",
            "--copy",
            "2",
            "--attached",
        ],
        "image in use",
    );
    drop(input);
    let out = writer.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    ok(&["check", &img]);
}
