//! What `Engine::format` makes of a device with its defaults, and which options it
//! refuses (each bad option alone).

mod common;

use common::mem;
use lunsnap::engine::Engine;
use lunsnap::engine::{self, default_metadata_pages, DEFAULT_CACHE_BYTES, DEFAULT_EXTENT_SIZE};
use lunsnap::Error;

#[test]
fn defaults_are_64_kib_extents_a_4_mib_cache_and_48_bytes_of_metadata_per_extent() {
    assert_eq!(DEFAULT_EXTENT_SIZE, 64 * 1024);
    assert_eq!(DEFAULT_CACHE_BYTES, 4 << 20);
    // 48 bytes per extent, rounded up to blocks, plus 64 blocks.
    assert_eq!(default_metadata_pages(0, 16), 64);
    assert_eq!(default_metadata_pages(16, 16), 65);
    assert_eq!(default_metadata_pages(1 << 20, 16), 65_536 * 48 / 4096 + 64);
    assert_eq!(
        default_metadata_pages(1000, 1),
        (1000 * 48u64).div_ceil(4096) + 64
    );
    assert_eq!(
        default_metadata_pages(100, 0),
        (100 * 48u64).div_ceil(4096) + 64
    );

    let opts = engine::FormatOptions::default();
    assert_eq!(opts.extent_size, DEFAULT_EXTENT_SIZE);
    assert_eq!(opts.metadata_pages, None);
    assert_eq!(opts.cache_bytes, DEFAULT_CACHE_BYTES);
    let e = Engine::format(mem(256 << 20), &opts).expect("format");
    let g = e.geometry();
    assert_eq!(g.extent_size, 64 * 1024);
    assert_eq!(g.meta_pages, default_metadata_pages(65_536, 16));
    assert_eq!(e.space().meta_pages, g.meta_pages);
    assert_eq!(e.cache_stats().capacity, (4 << 20) / 4096);
}

#[test]
fn format_refuses_each_bad_option_alone() {
    let with = |extent_size: u32, metadata_pages: Option<u64>| engine::FormatOptions {
        extent_size,
        metadata_pages,
        ..Default::default()
    };
    // Extent sizes: a power of two (in range or not), in range (power of two or not).
    for es in [0, 2048, 12 * 1024, 4096 + 512, 2 << 20, 1 << 31] {
        let r = Engine::format(mem(64 << 20), &with(es, None));
        assert!(
            matches!(r, Err(Error::InvalidOptions(_))),
            "extent size {es}"
        );
    }
    for es in [4096, 1 << 20] {
        Engine::format(mem(64 << 20), &with(es, None)).expect("valid extent size");
    }
    // At least 16 metadata pages.
    let r = Engine::format(mem(64 << 20), &with(4096, Some(15)));
    assert!(matches!(r, Err(Error::InvalidOptions(_))));
    let e = Engine::format(mem(64 << 20), &with(4096, Some(16))).expect("16 blocks");
    assert_eq!(e.geometry().meta_pages, 16);
}

#[test]
fn too_small_a_device_is_refused_with_the_least_size_that_formats() {
    for (extent_size, metadata_pages) in [
        (4096, None),
        (64 * 1024, None),
        (64 * 1024, Some(16)),
        (1 << 20, Some(300)),
        (16 * 1024, Some(1000)),
    ] {
        let opts = engine::FormatOptions {
            extent_size,
            metadata_pages,
            ..Default::default()
        };
        let what = format!("{extent_size}-byte extents, {metadata_pages:?} metadata pages");
        let needed = match Engine::format(mem(8192), &opts) {
            Err(Error::DeviceTooSmall { needed, available }) => {
                assert_eq!(available, 8192, "{what}");
                needed
            }
            r => panic!("{what}: {:?}", r.map(|e| e.geometry())),
        };
        let e = Engine::format(mem(needed), &opts).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(e.space().data_extents, 1, "{what}");
        match Engine::format(mem(needed - 4096), &opts) {
            Err(Error::DeviceTooSmall { needed: n, .. }) => assert_eq!(n, needed, "{what}"),
            r => panic!("{what}: {:?}", r.map(|e| e.geometry())),
        }
    }
}

#[test]
fn the_array_id_is_stored_and_survives_a_reopen() {
    let id = *b"lunsnap-array-42";
    let opts = engine::FormatOptions {
        extent_size: 4096,
        array_id: id,
        ..Default::default()
    };
    let e = Engine::format(mem(4 << 20), &opts).expect("format");
    assert_eq!(e.array_id(), id);
    let e = Engine::open(e.into_device(), &engine::OpenOptions::default()).expect("open");
    assert_eq!(e.array_id(), id);
}
