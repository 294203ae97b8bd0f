//! What `Array::format` makes of a device: the default options, which options it
//! refuses, the spare extents kept out of the capacity, and how much metadata it
//! provisions. These figures decide how much of every pool users can reserve, so
//! they are pinned here; a change to them is a change of FORMAT.md §6.

mod common;

use common::mem;
use lunsnap::engine::{Engine, ValueKind};
use lunsnap::testing::layout::worst_case_metadata_pages;
use lunsnap::MAX_LUNS_LIMIT;
use lunsnap::{Array, Error, FormatOptions, MemDevice, OpenOptions};

const KIB: u64 = 1024;

fn format(bytes: u64, opts: &FormatOptions) -> Result<Array<MemDevice>, Error> {
    Array::format(mem(bytes), opts)
}

#[test]
fn default_options_give_16_kib_extents_and_1024_luns() {
    let opts = FormatOptions::default();
    assert_eq!(opts.extent_size, 16 * 1024);
    assert_eq!(opts.max_luns, 1024);
    let a = format(64 << 20, &opts).expect("format");
    let p = a.pool_info();
    assert_eq!(p.extent_size, 16 * 1024);
    assert_eq!(p.max_luns, 1024);
    assert_eq!((a.extent_size(), a.max_luns()), (16 * 1024, 1024));
    // And after a reopen.
    let a = open(a.close().expect("close")).expect("reopen");
    assert_eq!((a.extent_size(), a.max_luns()), (16 * 1024, 1024));
    assert_eq!(p.capacity_bytes % (16 * KIB), 0);
}

#[test]
fn validate_refuses_each_bad_option_alone() {
    let ok = FormatOptions {
        extent_size: 4096,
        max_luns: 8,
        ..Default::default()
    };
    assert_eq!(ok.validate(), Ok(()));
    let with = |extent_size: u32, max_luns: u32| FormatOptions {
        extent_size,
        max_luns,
        ..ok.clone()
    };
    // max_luns: 1 to 2^20, whatever the extent size.
    for luns in [0, MAX_LUNS_LIMIT + 1, u32::MAX] {
        let o = with(4096, luns);
        assert!(
            matches!(o.validate(), Err(Error::InvalidOptions(_))),
            "{luns}"
        );
        assert!(matches!(format(8 << 20, &o), Err(Error::InvalidOptions(_))));
    }
    for luns in [1, MAX_LUNS_LIMIT] {
        assert_eq!(with(4096, luns).validate(), Ok(()), "{luns}");
    }
    // Extent sizes: powers of two from 4 KiB to 1 MiB, whatever max_luns.
    for es in [0, 512, 2048, 4096 + 512, 12 * 1024, 2 << 20, 1 << 31] {
        let o = with(es, 8);
        assert!(
            matches!(o.validate(), Err(Error::InvalidOptions(_))),
            "{es}"
        );
    }
    for es in [4096, 8192, 64 * 1024, 1 << 20] {
        assert_eq!(with(es, 8).validate(), Ok(()), "{es}");
    }
}

/// The rule of docs/DESIGN.md / `Array::format`: 1/256 of the data extents are kept
/// spare, at least two (one in a pool of two extents), at most 256.
fn spare_rule(data_extents: u64) -> u64 {
    let least = if data_extents > 2 { 2 } else { 1 };
    (data_extents / 256).clamp(least, 256)
}

/// Formats `bytes` with 4 KiB extents; returns (data extents, capacity in extents),
/// or None if the device is too small.
fn pool(bytes: u64) -> Option<(u64, u64)> {
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 1,
        ..Default::default()
    };
    match format(bytes, &opts) {
        Ok(mut a) => {
            let de = a.engine().space().data_extents;
            Some((de, a.pool_info().capacity_bytes / 4096))
        }
        Err(Error::DeviceTooSmall { .. }) => None,
        Err(e) => panic!("format of {bytes} bytes: {e}"),
    }
}

#[test]
fn spare_extents_follow_the_rule_at_every_pool_size() {
    // The smallest devices, one extent at a time: the first that formats has two
    // data extents (one spare), then three (two spare), ...
    let mut seen = Vec::new();
    let mut bytes = 4096;
    while seen.len() < 6 {
        if let Some((de, cap)) = pool(bytes) {
            assert_eq!(cap, de - spare_rule(de), "{de} data extents");
            seen.push(de);
        }
        bytes += 4096;
    }
    assert_eq!(&seen[..3], &[2, 3, 4], "the smallest pools");
    // Around the points where the rule changes: 2 -> 1/256 -> 256.
    for target in [511, 512, 767, 768, 1024, 65_535, 65_536, 65_537, 80_000] {
        let mut bytes = target * 4096;
        let (de, cap) = loop {
            // Metadata takes some of the device: grow it until the pool has
            // `target` extents.
            let (de, cap) = pool(bytes).expect("formats");
            if de >= target {
                break (de, cap);
            }
            bytes += (target - de) * 4096;
        };
        assert_eq!(de, target);
        assert_eq!(cap, de - spare_rule(de), "{de} data extents");
    }
    assert_eq!(spare_rule(65_536 + 256), 256);
}

#[test]
fn too_small_a_device_is_refused_with_the_least_size_that_formats() {
    for (extent_size, max_luns) in [(4096, 1), (4096, 1024), (16 * 1024, 64), (1 << 20, 8)] {
        let opts = FormatOptions {
            extent_size,
            max_luns,
            ..Default::default()
        };
        let what = format!("{extent_size}-byte extents, {max_luns} LUNs");
        let needed = match format(64 * KIB, &opts) {
            Err(Error::DeviceTooSmall { needed, available }) => {
                assert_eq!(available, 64 * KIB, "{what}");
                needed
            }
            r => panic!("{what}: {:?}", r.map(|a| a.pool_info())),
        };
        // That size formats, with one extent of capacity (the other is spare) ...
        let a = format(needed, &opts).unwrap_or_else(|e| panic!("{what}: {needed}: {e}"));
        assert_eq!(
            a.pool_info().capacity_bytes,
            u64::from(extent_size),
            "{what}"
        );
        // ... and 4 KiB less does not, asking for the same size.
        match format(needed - 4096, &opts) {
            Err(Error::DeviceTooSmall { needed: n, .. }) => assert_eq!(n, needed, "{what}"),
            r => panic!("{what}: {:?}", r.map(|a| a.pool_info())),
        }
    }
}

/// Metadata pages provisioned for (data extents, max_luns): the worst case the
/// engine can need, committed state and transaction together. `metadata_never_runs_out`
/// (tests/array_space.rs) checks that it is enough; this pins the figures.
#[test]
fn metadata_provisioning_is_pinned() {
    let pinned = [
        (0u64, 1u32, 174u64),
        (1, 1, 178),
        (2, 1, 178),
        (1000, 8, 212),
        (65_536, 1024, 5082),
        (1 << 26, 1024, 777_538),
        (u64::from(u32::MAX - 1), 1 << 20, 62_098_886),
        (4096, 1 << 20, 258_186),
    ];
    for (extents, luns, blocks) in pinned {
        assert_eq!(
            worst_case_metadata_pages(extents, luns),
            blocks,
            "{extents} extents, {luns} LUNs"
        );
    }
    // More extents or more LUNs never need less.
    let mut last = 0;
    for e in (0..200_000u64).step_by(997) {
        let b = worst_case_metadata_pages(e, 64);
        assert!(b >= last, "{e}");
        last = b;
    }
    let mut last = 0;
    for l in (1..=MAX_LUNS_LIMIT).step_by(4099) {
        let b = worst_case_metadata_pages(100_000, l);
        assert!(b >= last, "{l}");
        last = b;
    }
    // And the array provisions the least m that covers the worst case of the
    // extents left beside m pages (4 KiB extents: the data area starts right after
    // the metadata, at page m + 2, and ends before the second copies: the
    // superblocks' two pages, and the metadata area's m with two copies).
    for copies in [1u32, 2] {
        for (bytes, luns) in [(64u64 << 20, 16u32), (32 << 20, 1024), (16 << 20, 1024)] {
            let mut a = format(
                bytes,
                &FormatOptions {
                    extent_size: 4096,
                    max_luns: luns,
                    metadata_copies: copies,
                    ..Default::default()
                },
            )
            .expect("format");
            let pages = bytes / 4096;
            let m = a.engine().space().meta_pages;
            let mirror = |m: u64| 2 + if copies == 2 { m } else { 0 };
            let extents = a.engine().geometry().data_extents;
            assert_eq!(extents, pages - m - 2 - mirror(m));
            assert!(
                m >= worst_case_metadata_pages(extents, luns),
                "{bytes}: covers"
            );
            assert!(
                m - 1 < worst_case_metadata_pages(pages - (m - 1) - 2 - mirror(m - 1), luns),
                "{bytes}: the least that covers"
            );
            // Provisioned: every copy of the metadata area and of the superblocks.
            assert_eq!(
                a.pool_info().metadata_provisioned_bytes,
                (m * u64::from(copies) + 4) * 4096
            );
        }
    }
}

/// A formatted array with LUNs 0 and 1 (and security on), its header rewritten by
/// `patch` through the engine, committed.
fn patched_header(patch: impl FnOnce(&mut [u8; 64])) -> MemDevice {
    let mut a = format(
        16 << 20,
        &FormatOptions {
            extent_size: 4096,
            max_luns: 8,
            ..Default::default()
        },
    )
    .expect("format");
    a.create_lun(0, 64 * KIB).expect("lun 0");
    a.create_lun(1, 64 * KIB).expect("lun 1");
    a.set_security(true).expect("security");
    let dev = a.close().expect("close");
    let mut eng = Engine::open(dev, &lunsnap::engine::OpenOptions::default()).expect("engine");
    let mut c = *eng.client_bytes();
    patch(&mut c);
    eng.set_client_bytes(&c).expect("client bytes");
    eng.commit().expect("commit");
    eng.into_device()
}

fn open(dev: MemDevice) -> Result<Array<MemDevice>, Error> {
    Array::open(dev, &OpenOptions::default())
}

#[test]
fn open_refuses_each_bad_header_field_alone() {
    // Untouched: opens, with security on.
    let a = open(patched_header(|_| {})).expect("the unpatched image");
    assert!(a.security_enabled());
    let bad_header = |r: Result<Array<MemDevice>, Error>, what: &str| match r {
        Err(Error::Corrupt {
            what: "array header is invalid",
            ..
        }) => {}
        r => panic!("{what}: {:?}", r.map(|a| a.pool_info())),
    };
    let set_luns = |c: &mut [u8; 64], n: u32| c[12..16].copy_from_slice(&n.to_le_bytes());
    bad_header(open(patched_header(|c| set_luns(c, 0))), "max_luns 0");
    bad_header(
        open(patched_header(|c| set_luns(c, MAX_LUNS_LIMIT + 1))),
        "max_luns 2^20 + 1",
    );
    for bit in 1..8 {
        bad_header(
            open(patched_header(|c| c[16] |= 1 << bit)),
            &format!("flag bit {bit}"),
        );
    }
    for byte in [17, 40, 63] {
        bad_header(
            open(patched_header(|c| c[byte] = 1)),
            &format!("reserved byte {byte}"),
        );
    }
    // The largest max_luns is a valid header.
    let a = open(patched_header(|c| set_luns(c, MAX_LUNS_LIMIT))).expect("max_luns 2^20");
    assert_eq!(a.pool_info().max_luns, MAX_LUNS_LIMIT);
    // Security off in the header: the array opens with it off.
    let a = open(patched_header(|c| c[16] = 0)).expect("flags 0");
    assert!(!a.security_enabled());
    // Magic and version.
    assert!(matches!(
        open(patched_header(|c| c[0] ^= 1)),
        Err(Error::NotAnArray)
    ));
    assert!(matches!(
        open(patched_header(|c| c[8] = 2)),
        Err(Error::UnsupportedVersion(2))
    ));
    // Fewer LUN numbers than the table holds LUNs: refused before any record is
    // decoded.
    match open(patched_header(|c| set_luns(c, 1))) {
        Err(Error::Corrupt {
            what: "LUN table holds more LUNs than the maximum",
            ..
        }) => {}
        r => panic!("max_luns 1 with 2 LUNs: {:?}", r.map(|a| a.pool_info())),
    }
    // As many as it holds.
    match open(patched_header(|c| set_luns(c, 2))) {
        Ok(a) => assert_eq!(a.lun_numbers(), vec![0, 1]),
        r => panic!(
            "max_luns 2 with LUNs 0 and 1: {:?}",
            r.map(|a| a.pool_info())
        ),
    }
}

#[test]
fn a_lun_of_the_whole_capacity_reopens_and_one_larger_is_refused() {
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 4,
        ..Default::default()
    };
    let mut a = format(8 << 20, &opts).expect("format");
    let cap = a.pool_info().capacity_bytes;
    assert!(matches!(
        a.create_lun(0, cap + 512),
        Err(Error::InvalidLunSize { .. })
    ));
    a.create_lun(0, cap).expect("the whole capacity");
    a.write(0, cap - 4096, &[7; 4096]).expect("last extent");
    let mut a = open(a.close().expect("close")).expect("reopen");
    assert_eq!(a.lun_info(0).expect("lun 0").size, cap);
    assert_eq!(a.pool_info().unreserved_bytes, 0);
    let used = a.engine().space().meta_allocated;
    assert!(used > 0);
    // Two copies of each page in use, and of each superblock slot.
    assert_eq!(a.pool_info().metadata_used_bytes, (2 * used + 4) * 4096);
    let mut b = [0u8; 4096];
    a.read(0, cap - 4096, &mut b).expect("read");
    assert_eq!(b, [7; 4096]);
    assert!(a.check().expect("check").is_empty());
}

#[test]
fn open_refuses_a_lun_table_of_the_wrong_shape() {
    // Right kind with the wrong record size, and the right size with the wrong kind.
    for (value_size, kind) in [(32, ValueKind::Tree), (64, ValueKind::Opaque)] {
        let a = format(
            16 << 20,
            &FormatOptions {
                extent_size: 4096,
                max_luns: 8,
                ..Default::default()
            },
        )
        .expect("format");
        let dev = a.close().expect("close");
        let mut e = Engine::open(dev, &lunsnap::engine::OpenOptions::default()).expect("engine");
        let t = e.create_tree(value_size, kind).expect("tree");
        if let Some(old) = e.set_root(0, Some(t)).expect("root") {
            e.drop_tree(old).expect("drop");
        }
        e.commit().expect("commit");
        match open(e.into_device()) {
            Err(Error::Corrupt {
                what: "LUN table has the wrong shape",
                ..
            }) => {}
            r => panic!("{value_size} {kind:?}: {:?}", r.map(|a| a.pool_info())),
        }
    }
}

#[test]
fn more_extents_than_32_bit_numbers_hold_are_refused() {
    // 2^32 - 1 extents of 4 KiB (16 TiB, sparse): extent numbers are 32-bit and
    // 2^32 - 1 is reserved, so this is one too many; bigger extents would fit.
    let extents = u64::from(u32::MAX);
    let dev = MemDevice::new(4096, extents).expect("device");
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 1,
        ..Default::default()
    };
    assert!(matches!(
        Array::format(dev, &opts),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn a_new_array_reports_its_superblocks_as_metadata_in_use() {
    let a = format(64 << 20, &FormatOptions::default()).expect("format");
    let p = a.pool_info();
    assert_eq!(
        p.metadata_used_bytes,
        4 * 4096,
        "the two superblock slots, two copies each"
    );
    assert!(p.metadata_provisioned_bytes > p.metadata_used_bytes);
}

#[test]
fn min_device_bytes_is_the_least_device_that_formats() {
    for opts in [
        FormatOptions::default(),
        FormatOptions {
            extent_size: 4096,
            max_luns: 4,
            ..Default::default()
        },
        FormatOptions {
            extent_size: 1 << 20,
            max_luns: 64,
            ..Default::default()
        },
    ] {
        let least = opts.min_device_bytes().expect("valid options");
        format(least, &opts).expect("the least device formats");
        match format(least - 4096, &opts) {
            Err(Error::DeviceTooSmall { needed, .. }) => assert_eq!(needed, least),
            other => panic!("4 KiB less: {:?}", other.map(|_| ())),
        }
    }
    let bad = FormatOptions {
        extent_size: 1000,
        ..Default::default()
    };
    assert!(matches!(
        bad.min_device_bytes(),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn opening_with_another_block_size_says_so() {
    let opts = FormatOptions {
        max_luns: 4,
        ..Default::default()
    };
    let a = Array::format(MemDevice::new(4096, 8192).expect("device"), &opts).expect("format");
    let dev = a.close().expect("close");
    // The same bytes seen as 512-byte blocks.
    let mut small = MemDevice::new(512, 8 * 8192).expect("device");
    let mut page = vec![0u8; 4096];
    let mut big = dev;
    for p in 0..8192u64 {
        lunsnap::BlockDevice::read(&mut big, p, &mut page).expect("read");
        lunsnap::BlockDevice::write(&mut small, p * 8, &page).expect("write");
    }
    match Array::open(small, &OpenOptions::default()) {
        Err(
            e @ Error::BlockSizeMismatch {
                formatted: 4096,
                device: 512,
            },
        ) => {
            assert!(
                e.to_string().contains("open it with a block size of 4096"),
                "{e}"
            )
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

/// The README's table of metadata overhead by device size (printed with
/// `--nocapture`): two copies provision twice the metadata pages of one, plus the
/// same four superblock pages, and leave less capacity.
#[test]
fn metadata_overhead_table() {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    for (bytes, luns) in [
        (16u64 << 20, 1024u32),
        (64 << 20, 1024),
        (256 << 20, 1024),
        (1 << 30, 1024),
        (16 << 30, 1024),
        (16 << 20, 64),
        (64 << 20, 64),
        (1 << 30, 64),
    ] {
        let mut row = Vec::new();
        for copies in [2u32, 1] {
            let opts = FormatOptions {
                max_luns: luns,
                metadata_copies: copies,
                ..Default::default()
            };
            let dev = lunsnap::MemDevice::new(4096, bytes / 4096).expect("device");
            let a = Array::format(dev, &opts).expect("format");
            let p = a.pool_info();
            println!(
                "| {} MiB | {luns} | {copies} | {:.1} MiB | {:.1} MiB | {:.1} % |",
                bytes >> 20,
                mib(p.capacity_bytes),
                mib(p.metadata_provisioned_bytes),
                100.0 * (bytes - p.capacity_bytes) as f64 / bytes as f64
            );
            row.push(p);
        }
        assert!(row[0].capacity_bytes < row[1].capacity_bytes);
        assert!(row[0].metadata_provisioned_bytes > row[1].metadata_provisioned_bytes);
    }
    for (luns, copies) in [(1024u32, 2u32), (1024, 1), (64, 2), (64, 1)] {
        let opts = FormatOptions {
            max_luns: luns,
            metadata_copies: copies,
            ..Default::default()
        };
        println!(
            "least device, {luns} LUN numbers, {copies} copies: {} bytes",
            opts.min_device_bytes().expect("valid")
        );
    }
}
