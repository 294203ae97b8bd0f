//! The tool as a shell user meets it (issue 16): a closed pipe ends a command quietly,
//! binary data is not written to a terminal unasked, messages give sizes in human units
//! with their bytes and name the option to use, every usage error exits with 2,
//! `--help` describes the arguments, `--progress` and `--no-progress`, `--wait`.

mod common;

use std::fs::File;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let d = Dir::new("pipe");
    let img = small_image(&d); // LUN 1, 4 MiB: more than a pipe holds
    let data = d.file("d.bin");
    std::fs::write(&data, pattern(1, 1 << 20)).unwrap();
    ok(&["write", &img, "1", &data]);
    // `lunsnap read IMG 1 - | head -c 100`
    let mut child = Command::new(bin())
        .args(["read", &img, "1", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(&head[..], &pattern(1, 100)[..]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A reader gone before anything is printed: `lun list`, `map`, `info`.
    for args in [
        &["lun", "list", &img][..],
        &["map", &img, "1"],
        &["info", &img, "--json"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(bin())
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {out:?}");
    }
    ok(&["check", &img]);
}

/// Runs `lunsnap args` with a terminal as its stdin, stdout and stderr (`script`);
/// `None` where `script` is not available.
fn on_a_terminal(args: &[&str]) -> Option<(i32, Vec<u8>)> {
    let line = std::iter::once(bin())
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    Some((out.status.code().unwrap_or(-1), out.stdout))
}

#[test]
fn binary_data_is_not_written_to_a_terminal_unless_forced() {
    let d = Dir::new("tty");
    let img = small_image(&d);
    let Some((code, said)) = on_a_terminal(&["read", &img, "1", "-", "--length", "4K"]) else {
        eprintln!("skipped: no `script` to run the command on a terminal");
        return;
    };
    let said = String::from_utf8_lossy(&said);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains(
            "lunsnap: refusing to write binary data to a terminal; redirect it or use --force"
        ),
        "{said}"
    );
    let (code, said) =
        on_a_terminal(&["read", &img, "1", "-", "--length", "4K", "--force"]).unwrap_or_default();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&said));
    // Text is fine on a terminal; so is binary data sent elsewhere.
    let (code, said) = on_a_terminal(&["lun", "list", &img]).unwrap_or_default();
    assert_eq!(code, 0);
    assert!(String::from_utf8_lossy(&said).contains("KIND"));
    let r = run(&["read", &img, "1", "-", "--length", "4K"]);
    assert_eq!((r.code, r.stdout.len()), (0, 4096), "{r:?}");
}

#[test]
fn messages_give_sizes_in_human_units_and_name_the_option() {
    let d = Dir::new("messages");
    let img = d.file("a.img");
    ok(&["format", &img, "--size", "300M", "--max-luns", "16"]);
    ok(&["lun", "create", &img, "1", "--size", "64M"]);
    let unreserved = json(&ok(&["info", &img, "--json"]))["unreserved_bytes"]
        .as_u64()
        .unwrap();
    let r = fails(
        &["lun", "create", &img, "2", "--size", "256M"],
        "not enough space to reserve: needs 256 MiB (268435456 bytes), ",
    );
    assert!(
        r.stderr.contains(&format!(" ({unreserved} bytes) free")),
        "{r:?}"
    );
    // The offset, not "I/O of 0 bytes ... is not aligned".
    let data = d.file("d.bin");
    std::fs::write(&data, pattern(1, 4096)).unwrap();
    let r = usage_says(
        &["write", &img, "1", &data, "--offset", "100"],
        "invalid value '100' for '--offset <BYTES>': \"100\" is not a multiple of 512",
    );
    assert!(!r.stderr.contains("I/O of"), "{r:?}");
    // Beyond the end, in human units.
    fails(
        &["read", &img, "1", "-", "--offset", "64M", "--length", "4K"],
        "4 KiB (4096 bytes) at offset 67108864 runs beyond the end of the LUN, which is 64 MiB \
         (67108864 bytes)",
    );
    // Deleting a parent names --orphan-copies; plurals.
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
    fails(
        &["lun", "delete", &img, "1"],
        "LUN 1 has 1 copy (11): delete it first, or use --orphan-copies to delete LUN 1 and \
         leave it standing alone",
    );
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
    fails(
        &["lun", "delete", &img, "1"],
        "LUN 1 has 2 copies (11 and 12): delete them first",
    );
    ok(&["lun", "delete", &img, "12"]);
    ok(&["lun", "delete", &img, "11"]);
    let out = ok(&["check", &img]);
    assert!(out.contains("clean (1 LUN, generation"), "{out}");
    ok(&["lun", "create", &img, "2", "--size", "1M"]);
    assert!(ok(&["check", &img]).contains("clean (2 LUNs,"));
}

#[test]
fn format_too_small_names_the_least_size_and_max_luns() {
    let d = Dir::new("too-small");
    // `format --size` too small names the least size, and --max-luns when fewer LUN
    // numbers would fit (two copies of the metadata by default, which it names).
    let r = usage_says(
        &["format", &d.file("b.img"), "--size", "2M"],
        "--size 2 MiB (2097152 bytes) is too small: with LUN numbers 0 to 1023 (--max-luns), \
         16 KiB extents and 2 copies of the metadata (--metadata-copies), an array needs",
    );
    assert!(r.stderr.contains("an array needs at least "), "{r:?}");
    assert!(
        r.stderr.contains("or allow fewer LUNs: --max-luns "),
        "{r:?}"
    );
    let n: String = r
        .stderr
        .split("--max-luns ")
        .nth(1)
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    // The suggestion works.
    ok(&["format", &d.file("b.img"), "--size", "2M", "--max-luns", &n]);
    let more = (n.parse::<u32>().unwrap() + 1).to_string();
    usage_says(
        &[
            "format",
            &d.file("c.img"),
            "--size",
            "2M",
            "--max-luns",
            &more,
        ],
        "too small",
    );
    // With one copy of the metadata, less is needed: 1 MiB holds an array of fewer
    // LUN numbers, and the message counts that copy.
    let r = usage_says(
        &[
            "format",
            &d.file("d.img"),
            "--size",
            "1M",
            "--metadata-copies",
            "1",
        ],
        "16 KiB extents and 1 copy of the metadata (--metadata-copies)",
    );
    let one: String = r
        .stderr
        .split("--max-luns ")
        .nth(1)
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(!one.is_empty(), "{r:?}");
    ok(&[
        "format",
        &d.file("d.img"),
        "--size",
        "1M",
        "--metadata-copies",
        "1",
        "--max-luns",
        &one,
    ]);
    // Two copies need more than 1 MiB, whatever the LUN numbers: only the size is named.
    let r = usage_says(
        &[
            "format",
            &d.file("e.img"),
            "--size",
            "1M",
            "--max-luns",
            "1",
        ],
        "give --size 2M or more",
    );
    assert!(!r.stderr.contains("fewer LUNs"), "{r:?}");
    // Already as few LUN numbers as can be: only the size is named.
    let r = usage_says(
        &[
            "format",
            &d.file("c.img"),
            "--size",
            "64K",
            "--max-luns",
            "1",
        ],
        "give --size ",
    );
    assert!(!r.stderr.contains("fewer LUNs"), "{r:?}");
}

#[test]
fn an_image_of_another_block_size_is_named_as_such() {
    use lunsnap::{Array, FileDevice, FormatOptions};
    let d = Dir::new("blocksize");
    let img = d.file("512.img");
    let dev = FileDevice::create(&img, 512, (32 << 20) / 512).unwrap();
    let opts = FormatOptions {
        max_luns: 16,
        ..FormatOptions::default()
    };
    Array::format(dev, &opts).unwrap().close().unwrap();
    for args in [
        &["info", &img][..],
        &["lun", "list", &img],
        &["check", &img],
    ] {
        fails(
            args,
            "its array was formatted on 512-byte blocks, but lunsnap opens images of \
             4096-byte blocks",
        );
    }
}

/// Runs each command line of `lines` (words apart by spaces, `IMG` for `img`), which
/// must be refused as a usage error (exit 2) with a message, never clap's tip.
fn refused_as_usage(img: &str, lines: &[&str]) {
    for line in lines {
        let words: Vec<String> = line.split(' ').map(|w| w.replace("IMG", img)).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let r = usage_error(&words);
        assert!(
            !r.stderr.contains("tip: to pass"),
            "{line}: clap's tip instead of a message: {}",
            r.stderr
        );
        if words.contains(&"-1") {
            let said = r.stderr.contains("not a LUN number") || r.stderr.contains("not a size");
            assert!(said, "{line}: {}", r.stderr);
        }
    }
}

/// An image with LUN 1 and its attached copy 2.
fn with_a_copy(d: &Dir) -> String {
    let img = small_image(d);
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
    img
}

#[test]
fn a_lun_of_minus_one_is_a_usage_error_everywhere() {
    let d = Dir::new("minus-one");
    let img = with_a_copy(&d);
    let before = read(&img);
    refused_as_usage(
        &img,
        &[
            "lun create IMG -1 --size 1M",
            "lun delete IMG -1",
            "lun offline IMG -1",
            "lun online IMG -1",
            "lun list IMG --copies-of -1",
            "copy attach IMG -1",
            "copy detach IMG -1",
            "copy restore IMG -1",
            "copy create IMG --parent -1 --copy 3 --attached",
            "copy create IMG --parent 1 --copy -1 --attached",
            "read IMG -1 -",
            "read IMG 1 out.bin --changed-since -1",
            "write IMG -1 -",
            "map IMG -1",
            "diff IMG 1 -1",
            "discard IMG -1 --offset 0 --length 512",
            "grant IMG -1 50060b0000c26204 --access read",
            "revoke IMG -1 50060b0000c26204",
        ],
    );
    assert!(read(&img) == before, "a usage error changed the image");
}

#[test]
fn every_usage_error_exits_2_in_every_command() {
    let d = Dir::new("usage2");
    let img = with_a_copy(&d);
    let before = read(&img);
    let name = format!("host add IMG 50060b0000c26204 --name {}", "x".repeat(57));
    refused_as_usage(
        &img,
        &[
            // LUN sizes and image sizes that are not whole, or too small.
            "lun create IMG 3 --size 1000",
            "lun create IMG 3 --size 0",
            "lun create IMG 3 --size -1",
            "format IMG.new --size 1000",
            "format IMG.new --size 64K",
            "format IMG.new",
            // Offsets and lengths that are not whole sectors.
            "write IMG 1 - --offset 100",
            "read IMG 1 - --length 100",
            "read IMG 1 - --offset -512",
            "map IMG 1 --offset 100",
            "diff IMG 1 2 --offset 100",
            "discard IMG 1 --offset 0 --length 100",
            // A name too long; groups that name a copy twice or as a parent.
            &name,
            "copy create IMG --parent 1 --copy 3 --parent 1 --copy 3 --attached",
            "copy create IMG --parent 1 --copy 3 --parent 3 --copy 4 --attached",
            "copy attach IMG 2 2",
            "lun list IMG --wait soon",
            "format IMG.new --size 16M --metadata-copies 3",
            "format IMG.new --size 16M --metadata-copies 0",
            "format IMG.new --size 16M --metadata-copies two",
            "info IMG --allow-rollback=yes",
        ],
    );
    assert!(read(&img) == before, "a usage error changed the image");
    assert!(!std::path::Path::new(&format!("{img}.new")).exists());
    // Operations that fail keep exit status 1.
    fails(
        &["lun", "create", &img, "1", "--size", "1M"],
        "already in use",
    );
    fails(
        &["lun", "create", &img, "99", "--size", "1M"],
        "out of range",
    );
    fails(&["lun", "delete", &img, "1"], "--orphan-copies");
}

#[test]
fn help_describes_image_lun_host_and_size() {
    let out = ok(&["--help"]);
    for k in ["IMAGE:", "LUN:", "HOST:", "SIZE, BYTES:", "Exit status"] {
        assert!(out.contains(k), "--help lacks {k}: {out}");
    }
    let out = ok(&["lun", "create", "--help"]);
    assert!(
        out.contains("<IMAGE>") && out.contains("The image file"),
        "{out}"
    );
    assert!(
        out.contains("<LUN>") && out.contains("LUN's number"),
        "{out}"
    );
    assert!(out.contains("multiple of 512"), "{out}");
    let out = ok(&["grant", "--help"]);
    assert!(
        out.contains("<HOST>") && out.contains("16 hex digits"),
        "{out}"
    );
    for cmd in [&["read"][..], &["write"], &["lun", "list"], &["format"]] {
        let mut a = cmd.to_vec();
        a.push("--help");
        let out = ok(&a);
        assert!(out.contains("The image file"), "{cmd:?}: {out}");
        assert!(out.contains("--wait <SECONDS>"), "{cmd:?}: {out}");
        assert!(out.contains("--no-progress"), "{cmd:?}: {out}");
    }
}

#[test]
fn progress_is_shown_as_asked() {
    let d = Dir::new("progress");
    let img = small_image(&d); // LUN 1, 4 MiB
    let data = d.file("d.bin");
    std::fs::write(&data, pattern(1, 1 << 20)).unwrap();
    let out = d.file("out.bin");
    // Not a terminal: nothing by default, nor with --no-progress.
    for extra in [
        &[][..],
        &["--no-progress"],
        &["--progress", "--no-progress"],
    ] {
        let mut a = vec!["read", &img, "1", &out];
        a.extend_from_slice(extra);
        let r = run(&a);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stderr.is_empty(), "{extra:?}: {r:?}");
    }
    // --progress: a line per tenth, whatever the transfer's size.
    let tenths: String = (1..=10)
        .map(|k| format!("lunsnap: read {}% of 4 MiB\n", k * 10))
        .collect();
    for a in [
        &["read", &img, "1", &out, "--progress"][..],
        &["--progress", "read", &img, "1", &out],
        &["read", &img, "1", &out, "--no-progress", "--progress"],
    ] {
        let r = run(a);
        assert_eq!((r.code, r.stderr.as_str()), (0, tenths.as_str()), "{a:?}");
        assert!(r.out().starts_with("read 4 MiB"), "{r:?}");
    }
    let r = run(&["read", &img, "1", "-", "--progress", "--length", "1M"]);
    assert_eq!(r.stdout.len(), 1 << 20);
    assert!(r.stderr.ends_with("lunsnap: read 100% of 1 MiB\n"), "{r:?}");
    let r = run(&["write", &img, "1", &data, "--progress"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stderr.lines().count(), 10, "{r:?}");
    assert!(
        r.stderr.ends_with("lunsnap: write 100% of 1 MiB\n"),
        "{r:?}"
    );
    // From a pipe the length is unknown: the total at the end.
    let r = run_with(&["write", &img, "1", "-", "--progress"], &pattern(2, 8192));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stderr, "lunsnap: write 8 KiB (8192 bytes) in all\n");
    // A failed transfer stops short of 100%.
    let r = run_with(&["write", &img, "1", "-", "--progress"], &pattern(2, 1000));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(!r.stderr.contains("in all"), "{r:?}");
}

/// Takes an exclusive lock on `img` (as another lunsnap would).
fn hold(img: &str) -> File {
    let f = File::open(img).unwrap();
    f.try_lock().unwrap();
    f
}

#[test]
fn wait_retries_a_locked_image() {
    let d = Dir::new("wait");
    let img = small_image(&d);
    // Without --wait (or with 0), a locked image is refused at once.
    let holder = hold(&img);
    for extra in [&[][..], &["--wait", "0"]] {
        let mut a = vec!["lun", "list", &img];
        a.extend_from_slice(extra);
        let t = Instant::now();
        fails(&a, "image in use");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    // With --wait, it is refused only once the time is up, saying so.
    let t = Instant::now();
    let r = fails(&["--wait", "0.5", "lun", "list", &img], "image in use");
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    assert!(r.stderr.contains("after waiting 0.5 s"), "{r:?}");
    // It goes ahead as soon as the lock is released.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        drop(holder);
    });
    let t = Instant::now();
    let out = ok(&["lun", "create", &img, "2", "--size", "1M", "--wait", "30"]);
    let took = t.elapsed();
    release.join().unwrap();
    assert!(out.contains("created LUN 2"), "{out}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(20),
        "{took:?}"
    );
    // Readers wait for a writer, and share with each other.
    let holder = File::open(&img).unwrap();
    holder.try_lock_shared().unwrap();
    ok(&["info", &img, "--wait", "1"]);
    fails(
        &["lun", "delete", &img, "2", "--wait", "0.2"],
        "image in use",
    );
    drop(holder);
    // format --force waits too.
    let holder = hold(&img);
    fails(
        &["format", &img, "--size", "16M", "--force", "--wait", "0.2"],
        "image in use",
    );
    drop(holder);
    ok(&["check", &img]);
}
