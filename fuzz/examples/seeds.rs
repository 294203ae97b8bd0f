//! Writes the starting inputs the fuzzers began with into `fuzz/corpus/TARGET/`
//! (`cargo run --example seeds` in `fuzz/`); `cargo fuzz cmin` then keeps those
//! that add coverage. The encodings are described in `src/lib.rs`.

use std::path::Path;

use lunsnap::testing::layout::{PAGE_MAGIC, PAGE_SIZE};
use lunsnap::{Array, BlockDevice, FormatOptions, MemDevice};

fn save(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
}

/// The first pages of a small array (up to its last metadata block), and its last
/// two pages (the second copies of the superblock slots), as a raw image. `full`:
/// detached copies, hosts and grants too (else fewer commits, so that the first
/// pages and the last two fit in 64 KiB).
fn raw_image(bs: u32, bytes: u64, metadata_copies: u32, full: bool) -> (Vec<u8>, Vec<u8>) {
    let dev = MemDevice::new(bs, bytes / u64::from(bs)).unwrap();
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 8,
        cache_bytes: 1 << 20,
        array_id: [1; 16],
        metadata_copies,
    };
    let mut a = Array::format(dev, &opts).unwrap();
    a.create_lun(1, 64 << 10).unwrap();
    a.write(1, 0, &[7u8; 4096]).unwrap();
    a.create_copy(1, 2, true).unwrap();
    a.write(1, 8192, &[9u8; 4096]).unwrap();
    if full {
        a.create_copy(1, 3, false).unwrap();
        a.add_host(5, "h").unwrap();
        a.grant(2, 5, lunsnap::Access::Read).unwrap();
    }
    let mut dev = a.close().unwrap();
    let per = (PAGE_SIZE / bs as usize) as u64;
    let mut out = Vec::new();
    let mut last = 0;
    for p in 0..32u64 {
        let mut page = vec![0u8; PAGE_SIZE];
        dev.read(p * per, &mut page).unwrap();
        if page[..4] == PAGE_MAGIC.to_le_bytes() {
            last = out.len() + PAGE_SIZE;
        }
        out.extend_from_slice(&page);
    }
    out.truncate(last);
    let pages = bytes / PAGE_SIZE as u64;
    let mut tail = vec![0u8; 2 * PAGE_SIZE];
    dev.read((pages - 2) * per, &mut tail).unwrap();
    (out, tail)
}

fn op(code: u8, l: [u8; 4], x: u8, s: u16, n: u8) -> [u8; 9] {
    let s = s.to_le_bytes();
    [code, l[0], l[1], l[2], l[3], x, s[0], s[1], n]
}

fn main() {
    // open_check: the four unchanged bases (two metadata copies, or one: mode bit
    // 3), with either cache size.
    for mode in [1u8, 3, 5, 7, 9, 11, 13, 15] {
        save("open_check", &format!("base-{mode}"), &[mode]);
    }
    // A one-byte patch in each of the first metadata pages, in the first copy (mode
    // bits 4-5 = 0), the second (1) or both (2), or in the base with one copy (mode
    // bit 3); resealed, or not (sel bit 7): a bad copy, which the other copy must
    // stand in for, or, in every copy, damage that must be reported.
    for sel in 0..16u8 {
        for (copies, target) in [(0u8, 0u8), (0, 16), (0, 32), (8, 0)] {
            let mode = 1 | (sel & 1) << 1 | copies | target;
            save(
                "open_check",
                &format!("patch-{mode}-{sel}"),
                &[mode, sel, 40, 0, 1, 0xff],
            );
            save(
                "open_check",
                &format!("patch-{mode}-{}", sel | 0x80),
                &[mode, sel | 0x80, 40, 0, 1, 0xff],
            );
        }
    }
    // The superblock slots' pages (raw pages 0 and 1) damaged in both copies: the
    // newest commit lost (open refuses; a rollback is allowed) or an older one.
    for mode in [1u8, 3, 9, 11] {
        for sel in [0x40u8, 0x41] {
            save(
                "open_check",
                &format!("superblocks-{mode}-{sel}"),
                &[mode | 32, sel | 0x80, 100, 0, 1, 0x5a],
            );
        }
    }
    // A field of every B-tree entry kind set to a boundary value: key or word w of
    // the value of entry w, in each of the first live metadata pages.
    for mode in [1u8, 3, 9, 11] {
        for sel in 0..12u8 {
            for (i, at) in [0x8000u16, 0xc000, 0xc100, 0xc200, 0xc300, 0xc400, 0xc500]
                .into_iter()
                .enumerate()
            {
                let len = 0xe0 + ((sel as usize + 3 * i) % 32) as u8;
                let at = (at | i as u16).to_le_bytes();
                save(
                    "open_check",
                    &format!("field-{mode}-{sel}-{i}"),
                    &[mode, sel, at[0], at[1], len],
                );
            }
        }
    }
    // Raw images: 512-byte blocks on 1 MiB (mode 0; one metadata copy, as two do
    // not fit), 4 KiB blocks on 4 MiB (mode 24; two copies), as is and with every
    // metadata page resealed; the first pages only (the second copies read as
    // zeros), or with the device's last two pages too (mode bit 5).
    for (mode, bs, bytes, copies) in [(0u8, 512u32, 1u64 << 20, 1), (24, 4096, 4 << 20, 2)] {
        for with_tail in [0u8, 32] {
            let (head, tail) = raw_image(bs, bytes, copies, with_tail == 0);
            for reseal in [0u8, 2] {
                let mode = mode | reseal | with_tail;
                let mut v = vec![mode];
                v.extend_from_slice(&head);
                if with_tail != 0 {
                    v.extend_from_slice(&tail);
                }
                save("open_check", &format!("raw-{mode}"), &v);
            }
        }
    }

    // ops_powercut: every operation, then the same with several countdowns.
    let ops = [
        op(0, [1, 0, 0, 0], 63, 0, 0),  // create LUN 1, 64 sectors
        op(0, [4, 0, 0, 0], 19, 0, 0),  // create LUN 4, 20 sectors
        op(11, [1, 0, 0, 0], 0, 0, 15), // write LUN 1
        op(2, [1, 2, 0, 0], 0, 0, 0),   // copy 2 of 1, attached
        op(12, [1, 0, 0, 0], 0, 8, 40), // write LUN 1
        op(16, [2, 0, 0, 0], 0, 0, 63), // read copy 2
        op(3, [1, 3, 0, 0], 1, 0, 0),   // copy 3 of 1, detached
        op(5, [3, 0, 0, 0], 0, 0, 0),   // attach 3
        op(13, [3, 0, 0, 0], 0, 30, 7), // write copy 3
        op(9, [3, 0, 0, 0], 0, 0, 0),   // restore 3 onto 1
        op(4, [4, 5, 1, 6], 0, 0, 0),   // group copies (4,5) (1,6)
        op(6, [5, 6, 0, 0], 0, 0, 0),   // attach_many 5, 6
        op(7, [2, 0, 0, 0], 0, 0, 0),   // detach 2
        op(15, [1, 0, 0, 0], 0, 4, 20), // discard LUN 1
        op(10, [4, 0, 0, 0], 0, 0, 0),  // LUN 4 offline
        op(18, [0; 4], 0, 0, 0),        // flush
        op(13, [6, 0, 0, 0], 0, 0, 3),  // write 6
        op(20, [0; 4], 0, 0, 0),        // reopen without flush
        op(8, [1, 0, 0, 0], 1, 0, 0),   // delete 1, orphaning its copies
        op(11, [3, 0, 0, 0], 0, 2, 2),  // write 3
        op(19, [0; 4], 0, 0, 0),        // reopen
        op(10, [4, 0, 0, 0], 1, 0, 0),  // LUN 4 online
        op(21, [0; 4], 0, 0, 0),        // check
        op(16, [4, 0, 0, 0], 0, 0, 19), // read 4
        op(14, [0; 4], 3, 2, 0x40),     // damage a page
        op(17, [0; 4], 0, 0, 0),        // scrub
        op(14, [0; 4], 200, 1, 7),      // damage a page
        op(14, [0; 4], 9, 5, 1),        // damage a page
        op(12, [3, 0, 0, 0], 0, 9, 9),  // write 3
        op(20, [0; 4], 0, 0, 0),        // reopen without flush
        op(16, [3, 0, 0, 0], 0, 0, 30), // read 3
        op(14, [0; 4], 0, 0, 0x10),     // damage superblock slot 0
        op(18, [0; 4], 0, 0, 0),        // flush
        op(17, [0; 4], 0, 0, 0),        // scrub
    ];
    let body: Vec<u8> = ops.iter().flatten().copied().collect();
    // Geometry bit 3: two metadata copies (2 MiB); bit 4: damage hits their
    // second copies.
    for (geo, countdown, outcome) in [
        (0u8, 0x8000u16, 2u8),
        (1, 0x8000, 0),
        (2, 0x8000, 1),
        (4, 0x8000, 2),
        (0, 3, 2),
        (1, 17, 0),
        (2, 40, 2),
        (3, 75, 1),
        (4, 120, 2),
        (0, 200, 2),
        (8, 0x8000, 2),
        (9, 0x8000, 0),
        (26, 0x8000, 1),
        (28, 0x8000, 2),
        (8, 3, 2),
        (25, 17, 0),
        (10, 40, 2),
        (27, 75, 1),
        (12, 120, 2),
        (24, 200, 2),
        (9, 400, 2),
        (26, 700, 0),
    ] {
        let c = countdown.to_le_bytes();
        let mut v = vec![geo, c[0], c[1], outcome];
        if outcome % 3 == 2 {
            v.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        }
        v.extend_from_slice(&body);
        save(
            "ops_powercut",
            &format!("all-ops-{geo}-{countdown}-{outcome}"),
            &v,
        );
    }
    nbd_seeds();
}

/// An option: IHAVEOPT, the option, its length, its data.
fn option(out: &mut Vec<u8>, opt: u32, data: &[u8]) {
    out.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// A request header (and its payload for a write).
fn request(out: &mut Vec<u8>, kind: u16, flags: u16, offset: u64, len: u32) {
    out.extend_from_slice(&0x2560_9513u32.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&7u64.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    if kind == 1 {
        out.extend(std::iter::repeat_n(0x5a, len as usize));
    }
}

fn name_and_infos(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        d.extend_from_slice(&i.to_be_bytes());
    }
    d
}

fn meta(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        d.extend_from_slice(&(q.len() as u32).to_be_bytes());
        d.extend_from_slice(q.as_bytes());
    }
    d
}

/// nbd_session: whole sessions as qemu, nbdinfo and old clients send them, as the
/// administrator and as the host, on each export.
fn nbd_seeds() {
    for (who, export) in [
        (0u8, "1"),
        (0, "2"),
        (1, "2"),
        (1, "11"),
        (0, "12"),
        (0, "3"),
    ] {
        let mut v = vec![who, 0, 0, 0, 3];
        option(&mut v, 8, &[]); // structured replies
        option(&mut v, 3, &[]); // list
        option(&mut v, 9, &meta(export, &[])); // list meta contexts
        option(&mut v, 10, &meta(export, &["base:allocation"]));
        option(&mut v, 6, &name_and_infos(export, &[1, 2, 3]));
        option(&mut v, 7, &name_and_infos(export, &[3]));
        request(&mut v, 0, 0, 0, 16384); // read
        request(&mut v, 1, 1, 1000, 3000); // write, FUA, unaligned
        request(&mut v, 7, 0, 0, 1 << 20); // block status
        request(&mut v, 7, 8, 4096, 65536); // block status, REQ_ONE
        request(&mut v, 6, 0, 8192, 8192); // write zeroes
        request(&mut v, 6, 2, 16384, 4096); // write zeroes, NO_HOLE
        request(&mut v, 4, 0, 512, 65536); // trim
        request(&mut v, 3, 0, 0, 0); // flush
        request(&mut v, 0, 4, 0, 4096); // read, DF
        request(&mut v, 0, 0, (1 << 20) - 512, 1024); // past the end
        request(&mut v, 2, 0, 0, 0); // disconnect
        save("nbd_session", &format!("go-{who}-{export}"), &v);
    }
    // An old client: no structured replies, EXPORT_NAME, simple replies.
    let mut v = vec![0u8, 0, 0, 0, 1];
    option(&mut v, 1, b"1");
    request(&mut v, 0, 0, 0, 4096);
    request(&mut v, 1, 0, 4096, 512);
    request(&mut v, 3, 0, 0, 0);
    request(&mut v, 2, 0, 0, 0);
    save("nbd_session", "export-name", &v);
    // Refusals: unknown option, STARTTLS without TLS, unknown export, abort.
    let mut v = vec![1u8, 0, 0, 0, 3];
    option(&mut v, 99, b"junk");
    option(&mut v, 5, &[]);
    option(&mut v, 7, &name_and_infos("99", &[]));
    option(&mut v, 2, &[]);
    save("nbd_session", "refusals", &v);
}
