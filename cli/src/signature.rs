//! What a device (or file) already holds, from the magic numbers in its first 68 KiB:
//! `format` refuses to format over a file system or an array unless `--force`, as
//! `mkfs` does.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// How many leading bytes [`probe`] reads: up to btrfs's superblock magic at 64 KiB.
pub const HEAD: usize = 68 << 10;

/// Known signatures: (byte offset, magic, what holds it), most specific first (a FAT
/// or NTFS boot sector also ends in the MBR's 55 AA).
const SIGNATURES: &[(usize, &[u8], &str)] = &[
    (0, b"LSNP\x01", "a lunsnap array"),
    (4096, b"LSNP\x01", "a lunsnap array"),
    (1080, &[0x53, 0xef], "an ext2/3/4 file system"),
    (0, b"XFSB", "an XFS file system"),
    (65600, b"_BHRfS_M", "a btrfs file system"),
    (1024, &[0x10, 0x20, 0xf5, 0xf2], "an F2FS file system"),
    (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
    (512, b"LABELONE", "an LVM physical volume"),
    (4086, b"SWAPSPACE2", "Linux swap space"),
    (4086, b"SWAP-SPACE", "Linux swap space"),
    (8182, b"SWAPSPACE2", "Linux swap space"),
    (16374, b"SWAPSPACE2", "Linux swap space"),
    (65526, b"SWAPSPACE2", "Linux swap space"),
    (32769, b"CD001", "an ISO 9660 file system"),
    (3, b"NTFS    ", "an NTFS file system"),
    (82, b"FAT32   ", "a FAT file system"),
    (54, b"FAT1", "a FAT file system"),
    (512, b"EFI PART", "a GPT partition table"),
    (4096, b"EFI PART", "a GPT partition table"),
    (510, &[0x55, 0xaa], "an MBR partition table or boot sector"),
];

/// What `head` (the first bytes of a device) holds, if it carries a known signature.
pub fn identify(head: &[u8]) -> Option<&'static str> {
    SIGNATURES.iter().find_map(|&(at, magic, what)| {
        (head.get(at..at + magic.len()) == Some(magic)).then_some(what)
    })
}

/// What the device or file `f` holds, from its first [`HEAD`] bytes (fewer if it is
/// shorter).
pub fn probe(f: &File) -> std::io::Result<Option<&'static str>> {
    let mut head = vec![0u8; HEAD];
    let mut n = 0;
    while n < head.len() {
        match f.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(n);
    Ok(identify(&head))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `magic` at `at` in an otherwise empty head.
    fn with(at: usize, magic: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; HEAD];
        v[at..at + magic.len()].copy_from_slice(magic);
        v
    }

    #[test]
    fn signatures_are_recognized() {
        assert_eq!(identify(&vec![0u8; HEAD]), None);
        assert_eq!(identify(&[]), None);
        assert_eq!(
            identify(&with(1080, &[0x53, 0xef])),
            Some("an ext2/3/4 file system")
        );
        assert_eq!(identify(&with(0, b"XFSB")), Some("an XFS file system"));
        assert_eq!(
            identify(&with(65600, b"_BHRfS_M")),
            Some("a btrfs file system")
        );
        assert_eq!(
            identify(&with(4086, b"SWAPSPACE2")),
            Some("Linux swap space")
        );
        assert_eq!(
            identify(&with(512, b"EFI PART")),
            Some("a GPT partition table")
        );
        assert_eq!(
            identify(&with(510, &[0x55, 0xaa])),
            Some("an MBR partition table or boot sector")
        );
        assert_eq!(identify(&with(4096, b"LSNP\x01")), Some("a lunsnap array"));
        // A FAT boot sector is named as such, not as an MBR.
        let mut fat = with(510, &[0x55, 0xaa]);
        fat[82..90].copy_from_slice(b"FAT32   ");
        assert_eq!(identify(&fat), Some("a FAT file system"));
        // A head too short for a magic's place does not match it.
        assert_eq!(identify(&with(0, b"XFSB")[..3]), None);
    }
}
