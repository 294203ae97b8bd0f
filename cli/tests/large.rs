//! Large images and transfers: a 1 TiB image stays a small file; a 64 MiB write
//! draws no progress bar when stderr is not a terminal.

mod common;

use common::*;

const TIB: u64 = 1 << 40;

/// Bytes of disk the file occupies.
fn allocated(path: &str) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512
}

#[test]
fn a_one_tib_image_stays_small() {
    let d = Dir::new("tib");
    let img = d.file("big.img");
    ok(&["format", &img, "--size", "1T"]);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), TIB);
    ok(&["lun", "create", &img, "1", "--size", "500G"]);
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
    let data = pattern(7, 1 << 20);
    let src = d.file("src.bin");
    std::fs::write(&src, &data).unwrap();
    ok(&["write", &img, "1", &src, "--offset", "400G"]);
    let got = d.file("got.bin");
    ok(&[
        "read", &img, "1", &got, "--offset", "400G", "--length", "1M",
    ]);
    assert_eq!(read(&got), data);
    // The copy still reads zeros there.
    ok(&[
        "read", &img, "2", &got, "--offset", "400G", "--length", "1M",
    ]);
    assert!(read(&got).iter().all(|&b| b == 0));

    let v = json(&ok(&["info", &img, "--json"]));
    assert_eq!(v["image_bytes"], TIB);
    assert_eq!(v["reserved_bytes"], 1000u64 << 30);
    assert_eq!(v["allocated_bytes"], 1 << 20);
    let on_disk = allocated(&img);
    assert!(
        on_disk < 32 << 20,
        "the 1 TiB image occupies {on_disk} bytes"
    );
    assert_eq!(v["image_allocated_bytes"], on_disk);
    let v = json(&ok(&["lun", "list", &img, "--json"]));
    assert_eq!(v[0]["size"], 500u64 << 30);
    assert_eq!(v[0]["exclusive_bytes"], 1 << 20);
}

#[test]
fn a_large_write_shows_no_progress_bar_off_a_terminal() {
    let d = Dir::new("bar");
    let img = d.file("a.img");
    ok(&["format", &img, "--size", "128M"]);
    ok(&["lun", "create", &img, "1", "--size", "64M"]);
    let data = pattern(8, 64 << 20);
    let src = d.file("src.bin");
    std::fs::write(&src, &data).unwrap();
    // stdout and stderr are pipes here: `ok` requires stderr to be empty.
    let out = ok(&["write", &img, "1", &src]);
    assert_eq!(out, "wrote 64 MiB (67108864 bytes) to LUN 1 at offset 0\n");
    // From stdin (length unknown until the end) too.
    let r = run_with(&["write", &img, "1", "-"], &data);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
    // Reading it back to stdout: the data and nothing else.
    let r = run(&["read", &img, "1", "-"]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    assert!(r.stdout == data, "read back differs");
    let v = json(&ok(&["info", &img, "--json"]));
    assert_eq!(v["allocated_bytes"], 64 << 20);
}

#[test]
fn reading_a_mostly_empty_lun_makes_a_sparse_file() {
    let d = Dir::new("sparse");
    let img = d.file("a.img");
    ok(&["format", &img, "--size", "1G"]);
    ok(&["lun", "create", &img, "1", "--size", "256M"]);
    let src = d.file("src.bin");
    std::fs::write(&src, pattern(9, 64 << 10)).unwrap();
    ok(&["write", &img, "1", &src, "--offset", "100M"]);
    let out = d.file("out.bin");
    ok(&["read", &img, "1", &out]);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 256 << 20);
    assert!(
        allocated(&out) < 8 << 20,
        "{} bytes on disk",
        allocated(&out)
    );
    let got = read(&out);
    assert_eq!(&got[100 << 20..(100 << 20) + (64 << 10)], &read(&src)[..]);
    assert!(got[..100 << 20].iter().all(|&b| b == 0));
}
