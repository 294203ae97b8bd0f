//! Freed extents reach the device as discards once the commit that frees them is
//! durable: deleting a LUN on a `FileDevice` image punches holes worth about the LUN's
//! exclusive bytes (the file's disk usage, `st_blocks`, drops by that much), extents a
//! copy still shares stay, and `write_zeroes` with holes frees nothing on the device
//! until the next commit. On a `MemDevice` the resident blocks drop the same way.

use lunsnap::{Array, BlockDevice, FormatOptions, LunInfo, MemDevice};

const MIB: u64 = 1 << 20;
const ES: u64 = 64 * 1024;

fn options() -> FormatOptions {
    FormatOptions {
        extent_size: ES as u32,
        max_luns: 4,
        ..FormatOptions::default()
    }
}

/// Fills `len` bytes of LUN `lun` from `offset` with non-zero bytes that depend on
/// `seed` and the position, 1 MiB per write.
fn fill<D: BlockDevice>(a: &mut Array<D>, lun: u32, offset: u64, len: u64, seed: u8) {
    let mut pos = offset;
    while pos < offset + len {
        let n = MIB.min(offset + len - pos);
        let buf: Vec<u8> = (0..n).map(|i| ((pos + i) / 512) as u8 ^ seed | 1).collect();
        a.write(lun, pos, &buf).unwrap();
        pos += n;
    }
}

/// LUN 0 of 16 MiB written whole; copy 1 of it; LUN 0 then rewrites 4 MiB, so that
/// each of them has 4 MiB of its own and 12 MiB shared. Committed.
fn two_that_share<D: BlockDevice>(a: &mut Array<D>) -> (LunInfo, LunInfo) {
    a.create_lun(0, 16 * MIB).unwrap();
    fill(a, 0, 0, 16 * MIB, 1);
    a.create_copy(0, 1, true).unwrap();
    fill(a, 0, 2 * MIB, 4 * MIB, 2);
    a.flush().unwrap();
    let (l0, l1) = (a.lun_info(0).unwrap(), a.lun_info(1).unwrap());
    assert_eq!((l0.exclusive_bytes, l0.shared_bytes), (4 * MIB, 12 * MIB));
    assert_eq!((l1.exclusive_bytes, l1.shared_bytes), (4 * MIB, 12 * MIB));
    (l0, l1)
}

/// Copy 1 still reads what LUN 0 held when it was copied.
fn copy_intact<D: BlockDevice>(a: &mut Array<D>) {
    let mut got = vec![0u8; MIB as usize];
    for m in 0..16 {
        a.read(1, m * MIB, &mut got).unwrap();
        let want: Vec<u8> = (0..MIB)
            .map(|i| ((m * MIB + i) / 512) as u8 ^ 1 | 1)
            .collect();
        assert!(got == want, "copy 1 changed in MiB {m}");
    }
}

#[test]
fn deleting_a_lun_drops_the_mem_device_s_resident_blocks() {
    let dev = MemDevice::new(512, 64 * MIB / 512).unwrap();
    let mut a = Array::format(dev, &options()).unwrap();
    let (l0, _) = two_that_share(&mut a);
    let blocks = |a: &mut Array<MemDevice>| a.device_mut().resident_blocks() as u64 * 512;
    let before = blocks(&mut a);
    a.delete(0, true).unwrap();
    // Freed (and discarded) by reclamation, after the delete's commit.
    a.reclaim(u64::MAX).unwrap();
    let after = blocks(&mut a);
    println!(
        "MemDevice: delete of LUN 0 ({} exclusive bytes): {before} -> {after} resident bytes",
        l0.exclusive_bytes
    );
    // The metadata the commit wrote may add a few pages.
    let dropped = before.saturating_sub(after);
    assert!(
        dropped <= l0.exclusive_bytes && dropped + 256 * 1024 >= l0.exclusive_bytes,
        "dropped {dropped} bytes for {} exclusive",
        l0.exclusive_bytes
    );
    copy_intact(&mut a);
    // Now the rest: the last LUN's 16 MiB.
    let before = blocks(&mut a);
    a.delete(1, false).unwrap();
    a.reclaim(u64::MAX).unwrap();
    let dropped = before.saturating_sub(blocks(&mut a));
    assert!(
        dropped <= 16 * MIB && dropped + 256 * 1024 >= 16 * MIB,
        "dropped {dropped}"
    );
    assert!(a.check().unwrap().is_empty());
}

#[cfg(target_os = "linux")]
mod file {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    use lunsnap::{Array, FileDevice};

    use super::{copy_intact, options, two_that_share, MIB};

    /// A file path in the temporary directory, removed when dropped.
    struct Temp(PathBuf);

    impl Temp {
        fn new(what: &str) -> Temp {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!("lunsnap-{what}-{}-{nanos}.img", std::process::id());
            Temp(std::env::temp_dir().join(name))
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Bytes of disk the file occupies.
    fn usage(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    /// Whether the temporary directory's file system punches holes: a 1 MiB file
    /// written whole must occupy 512 KiB less after a hole of 512 KiB is punched.
    fn punches_holes() -> Result<(), String> {
        use rustix::fs::{fallocate, FallocateFlags};
        let t = Temp::new("probe");
        let f = std::fs::File::create(&t.0).map_err(|e| format!("{e}"))?;
        std::io::Write::write_all(&mut &f, &vec![7u8; MIB as usize]).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        let before = usage(&t.0);
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        fallocate(&f, flags, 0, MIB / 2).map_err(|e| format!("fallocate: {e}"))?;
        let after = usage(&t.0);
        if before >= after + MIB / 2 {
            Ok(())
        } else {
            Err(format!(
                "punching 512 KiB took usage from {before} to {after} bytes"
            ))
        }
    }

    /// `dropped` is `want` bytes, less what new metadata pages took (at most 256 KiB).
    fn about(dropped: i64, want: u64, what: &str) {
        let want = want as i64;
        assert!(
            dropped <= want && dropped + 256 * 1024 >= want,
            "{what}: disk usage dropped by {dropped} bytes, expected about {want}"
        );
    }

    #[test]
    fn deleting_a_lun_punches_holes_in_the_image_file() {
        if let Err(why) = punches_holes() {
            eprintln!(
                "skipped: {} does not punch holes ({why})",
                std::env::temp_dir().display()
            );
            return;
        }
        let t = Temp::new("discard");
        let dev = FileDevice::create(&t.0, 4096, 64 * MIB / 4096).unwrap();
        let mut a = Array::format(dev, &options()).unwrap();
        let (l0, _) = two_that_share(&mut a);
        let before = usage(&t.0);
        assert!(
            before >= 20 * MIB,
            "the image holds 20 MiB of data: {before}"
        );

        // The delete commits, then LUN 0's own 4 MiB are discarded; the 12 MiB the
        // copy shares stay.
        a.delete(0, true).unwrap();
        a.reclaim(u64::MAX).unwrap();
        let after = usage(&t.0);
        println!(
            "FileDevice: delete of LUN 0 ({} exclusive bytes): {before} -> {after} bytes on disk",
            l0.exclusive_bytes
        );
        about(
            before as i64 - after as i64,
            l0.exclusive_bytes,
            "delete of LUN 0",
        );
        copy_intact(&mut a);

        // Holes punched by write_zeroes free their extents in the open transaction:
        // nothing reaches the file before the flush commits it.
        let before = usage(&t.0);
        a.write_zeroes(1, 0, 3 * MIB, true).unwrap();
        assert_eq!(usage(&t.0), before, "discarded before the commit");
        a.flush().unwrap();
        let after = usage(&t.0);
        about(
            before as i64 - after as i64,
            3 * MIB,
            "write_zeroes of 3 MiB",
        );

        // The last LUN: its remaining 13 MiB.
        let before = usage(&t.0);
        let info = a.lun_info(1).unwrap();
        assert_eq!(info.exclusive_bytes, 13 * MIB);
        a.delete(1, false).unwrap();
        a.reclaim(u64::MAX).unwrap();
        about(
            before as i64 - usage(&t.0) as i64,
            13 * MIB,
            "delete of LUN 1",
        );
        assert!(a.check().unwrap().is_empty());

        // What a reopen finds: an empty array, consistent.
        let dev = a.close().unwrap();
        drop(dev);
        let dev = FileDevice::open(&t.0, 4096).unwrap();
        let mut a = Array::open(dev, &lunsnap::OpenOptions::default()).unwrap();
        assert!(a.lun_numbers().is_empty());
        assert!(a.check().unwrap().is_empty());
    }
}
