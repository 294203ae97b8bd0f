//! `format` on a block device: sized from the device, refused over a file system or
//! an array (their signatures in the first bytes) unless `--force`. Files stand in for
//! devices where loop devices cannot be used (not root, or no `losetup`): an existing
//! file is refused naming what it holds.

mod common;

use std::os::unix::fs::FileExt;
use std::process::Command;

use common::*;

/// (offset, magic, what the refusal names)
const SIGNATURES: &[(u64, &[u8], &str)] = &[
    (1080, &[0x53, 0xef], "an ext2/3/4 file system"),
    (0, b"XFSB", "an XFS file system"),
    (65600, b"_BHRfS_M", "a btrfs file system"),
    (4086, b"SWAPSPACE2", "Linux swap space"),
    (510, &[0x55, 0xaa], "an MBR partition table or boot sector"),
    (512, b"EFI PART", "a GPT partition table"),
    (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
];

/// Writes `magic` at `at` in the file at `path`.
fn stamp(path: &str, at: u64, magic: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(magic, at).unwrap();
}

#[test]
fn an_existing_file_is_refused_naming_what_it_holds() {
    let d = Dir::new("sig-files");
    for &(at, magic, what) in SIGNATURES {
        let f = d.file("disk.raw");
        std::fs::write(&f, vec![0u8; 1 << 20]).unwrap();
        stamp(&f, at, magic);
        let before = read(&f);
        fails(
            &["format", &f, "--size", "16M"],
            &format!("already exists and holds {what}: use --force to replace it"),
        );
        assert!(read(&f) == before, "{what}: changed");
    }
    // An image: "holds a lunsnap array".
    let img = small_image(&d);
    fails(
        &["format", &img, "--size", "16M"],
        "already exists and holds a lunsnap array",
    );
    // Nothing recognized: only that it exists.
    let plain = d.file("plain.raw");
    std::fs::write(&plain, vec![7u8; 8192]).unwrap();
    let r = fails(
        &["format", &plain, "--size", "16M"],
        "already exists: use --force",
    );
    assert!(!r.stderr.contains("holds"), "{r:?}");
    // --force replaces a file whatever it holds.
    ok(&["format", &plain, "--size", "16M", "--force"]);
    ok(&["check", &plain]);
    // A file needs --size; a character device is not formatted.
    usage_says(&["format", &d.file("new.img")], "--size is required");
    fails(
        &["format", "/dev/null", "--size", "16M", "--force"],
        "neither a regular file nor a block device",
    );
}

/// A loop device over a file, detached on drop.
struct Loop(String);

impl Loop {
    /// A loop device over `file`, or `None` where that cannot be done here (not root,
    /// no `losetup`, no loop devices).
    fn attach(file: &str) -> Option<Loop> {
        let out = Command::new("losetup")
            .args(["--find", "--show", file])
            .output()
            .ok()?;
        let dev = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && dev.starts_with("/dev/")).then_some(Loop(dev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn a_block_device_is_formatted_whole_unless_it_holds_something() {
    let d = Dir::new("loop");
    let backing = d.file("backing.raw");
    std::fs::write(&backing, b"").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&backing)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let Some(dev) = Loop::attach(&backing) else {
        eprintln!("skipped: no loop device here (needs root and losetup); files stood in");
        return;
    };
    let dev = dev.0.clone();
    // Blank: formatted whole, sized from the device, without --size.
    usage_says(
        &["format", &dev, "--size", "16M"],
        "is a block device: it is formatted whole",
    );
    let v = json(&ok(&["format", &dev, "--max-luns", "16", "--json"]));
    assert_eq!(v["formatted"]["image_bytes"], 32 << 20);
    assert_eq!(v["formatted"]["block_device"], true);
    let out = ok(&["info", &dev]);
    assert!(
        out.contains("(32 MiB)") && !out.contains("on disk"),
        "{out}"
    );
    ok(&["lun", "create", &dev, "1", "--size", "4M"]);
    let data = d.file("d.bin");
    std::fs::write(&data, pattern(1, 64 << 10)).unwrap();
    ok(&["write", &dev, "1", &data]);
    let r = run(&["read", &dev, "1", "-", "--length", "64K"]);
    assert_eq!(r.stdout, read(&data));
    ok(&["check", &dev]);
    // It holds an array now: refused, then formatted over with --force.
    let r = fails(
        &["format", &dev],
        "holds a lunsnap array: use --force to format over it",
    );
    assert!(r.stderr.contains(&dev), "{r:?}");
    assert_eq!(
        json(&ok(&["lun", "list", &dev, "--json"]))
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let out = ok(&["format", &dev, "--force", "--max-luns", "16"]);
    assert!(out.contains("32 MiB block device"), "{out}");
    assert_eq!(
        json(&ok(&["lun", "list", &dev, "--json"])),
        serde_json::json!([])
    );
    // File systems, swap and partition tables are refused too.
    for &(at, magic, what) in SIGNATURES {
        let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        f.write_all_at(&vec![0u8; 72 << 10], 0).unwrap();
        f.write_all_at(magic, at).unwrap();
        f.sync_all().unwrap();
        drop(f);
        fails(&["format", &dev], &format!("holds {what}: use --force"));
    }
    if Command::new("mkfs.ext4").arg("-V").output().is_ok() {
        let made = Command::new("mkfs.ext4").args(["-q", "-F", &dev]).status();
        if made.is_ok_and(|s| s.success()) {
            fails(&["format", &dev], "holds an ext2/3/4 file system");
        }
    }
    // A device locked by another process is in use.
    let holder = std::fs::File::open(&dev).unwrap();
    holder.try_lock().unwrap();
    fails(&["format", &dev, "--force"], "image in use");
    drop(holder);
    ok(&["format", &dev, "--force", "--max-luns", "16"]);
}

#[test]
fn a_block_device_too_small_names_the_least_size() {
    let d = Dir::new("loop-small");
    let backing = d.file("backing.raw");
    std::fs::write(&backing, vec![0u8; 256 << 10]).unwrap();
    let Some(dev) = Loop::attach(&backing) else {
        eprintln!("skipped: no loop device here (needs root and losetup)");
        return;
    };
    let r = fails(&["format", &dev.0], "is too small");
    assert!(r.stderr.contains("an array needs at least"), "{r:?}");
    assert!(r.stderr.contains("use a larger device"), "{r:?}");
}
