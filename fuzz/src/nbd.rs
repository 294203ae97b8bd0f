//! `nbd_session`: an NBD client session given as bytes, against the real server
//! code (handshake and transmission, `lunsnap_server::conn::session_from_bytes`) on
//! a small served array. Used by `fuzz_targets/nbd_session.rs` and replayed on stable
//! by `server/tests/fuzz_replay.rs` (both include this file with `#[path]`).
//!
//! Input: `[who][client bytes...]`. `who` even: the administrator (every LUN,
//! read-write); odd: host 0x5006_0b00_00c2_6204, which with security on sees LUN 2
//! read-write and copy 11 read-only. The client bytes are what a client sends: the
//! client flags, options, then requests with their payloads; the session ends where
//! the bytes end.
//!
//! Oracles: no panic (debug assertions and overflow checks on), no hang, bounded
//! memory (a request's data is at most 32 MiB, and nothing is kept across requests),
//! and the array stays consistent: every 256 sessions `check()` must be clean.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use lunsnap::{Access, Array, FileDevice, FormatOptions};
use lunsnap_server::exports::Identity;
use lunsnap_server::Shared;

const HOST: u64 = 0x5006_0b00_00c2_6204;

fn shared() -> &'static Arc<Shared> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    SHARED.get_or_init(|| {
        lunsnap_server::log::set_quiet(true);
        let path =
            std::env::temp_dir().join(format!("lunsnap-fuzz-nbd-{}.img", std::process::id()));
        let dev = FileDevice::create(&path, 4096, 4096).expect("create the image");
        // The file is not needed by name once open.
        let _ = std::fs::remove_file(&path);
        let opts = FormatOptions {
            extent_size: 4096,
            max_luns: 16,
            cache_bytes: 1 << 20,
            array_id: [3; 16],
            ..FormatOptions::default()
        };
        let mut a = Array::format(dev, &opts).expect("format");
        a.create_lun(1, 1 << 20).expect("LUN 1");
        a.write(1, 0, &[0x11; 8192]).expect("write");
        a.create_lun(2, (1 << 20) + 512).expect("LUN 2");
        a.write(2, 4096, &[0x22; 4096]).expect("write");
        a.create_copy(1, 11, true).expect("copy 11");
        a.create_copy(1, 12, false).expect("copy 12");
        a.create_lun(3, 65536).expect("LUN 3");
        a.set_online(3, false).expect("offline");
        a.add_host(HOST, "backup").expect("host");
        a.grant(2, HOST, Access::ReadWrite).expect("grant");
        a.grant(11, HOST, Access::Read).expect("grant");
        a.set_security(true).expect("security");
        Shared::new(a)
    })
}

/// The target.
pub fn nbd_session(data: &[u8]) {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let Some((&who, client)) = data.split_first() else {
        return;
    };
    let who = if who % 2 == 0 {
        Identity::Admin
    } else {
        Identity::Host(HOST)
    };
    let s = shared();
    lunsnap_server::conn::session_from_bytes(s, who, client);
    if RUNS.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
        let v = s.lock().check().expect("check runs");
        assert!(v.is_empty(), "the served array is inconsistent: {v:?}");
    }
}
