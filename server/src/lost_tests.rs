//! Ranges lost to metadata damage (an array `repair` rebuilt without one of its
//! mapping pages) over NBD: a read that touches one fails with EIO, in a simple
//! reply and in a structured one (never a hole chunk, which would read as zeros),
//! block status reports it as data (a client must not skip it as zeros), and a write
//! makes it readable again. The requests go through [`ops::execute`], then once
//! through a real server and socket.

use std::path::{Path, PathBuf};

use lunsnap::{Array, FileDevice, FormatOptions, OpenOptions, RepairOptions};

use crate::exports::Identity;
use crate::hostile_tests::{client, reply_of, request, SERIAL};
use crate::ops::{self, Session};
use crate::proto::{self, cflag, cmd, errno, reply, Request};
use crate::shared::ServedArray;
use crate::{Addr, Config, ListenSpec, Server};

const PAGE: usize = 4096;
const LUN_SIZE: u64 = 8 << 20;

/// A fresh directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("lunsnap-lost-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic non-zero bytes.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 1
        })
        .collect()
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// An array in `dir/img` whose LUN 1 (8 MiB of 4 KiB extents, written whole) lost a
/// leaf of its mapping, both copies, and was repaired: it, LUN 1's data, and the
/// lost range (offset, length).
fn lost_array(dir: &Path) -> (ServedArray, Vec<u8>, (u64, u64)) {
    let path = dir.join("img");
    let dev = FileDevice::create(&path, PAGE as u32, 8192).unwrap();
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 16,
        ..FormatOptions::default()
    };
    let mut a = Array::format(dev, &opts).unwrap();
    a.create_lun(1, LUN_SIZE).unwrap();
    let data = pattern(5, LUN_SIZE as usize);
    a.write(1, 0, &data).unwrap();
    drop(a.close().unwrap());
    let clean = std::fs::read(&path).unwrap();
    // Leaves of extent slots (docs/FORMAT.md §4.4) other than the first: both copies
    // of a page are byte for byte the same.
    for leaf in clean.chunks(PAGE) {
        let mapping_leaf = leaf[..4] == *b"LSNP" && leaf[4] == 4 && leaf[36] == 0 && leaf[37] == 4;
        if !mapping_leaf || u64_at(leaf, 40) == 0 {
            continue;
        }
        let mut img = clean.clone();
        for (i, p) in clean.chunks(PAGE).enumerate() {
            if p == leaf {
                img[i * PAGE + 100] ^= 0xff;
            }
        }
        std::fs::write(&path, &img).unwrap();
        let dev = FileDevice::open(&path, PAGE as u32).unwrap();
        let (dev, rep) = Array::repair(dev, &RepairOptions::default()).unwrap();
        if let [(1, offset, len)] = rep.lost[..] {
            let a = Array::open(dev, &OpenOptions::default()).unwrap();
            assert_eq!(a.lost_ranges(1).unwrap(), [(offset, len)]);
            return (a, data, (offset, len));
        }
    }
    panic!("no leaf of LUN 1's mapping could be lost");
}

fn session(structured: bool) -> Session {
    Session {
        lun: 1,
        size: LUN_SIZE,
        who: Identity::Admin,
        structured,
        base_allocation: true,
        read_only: false,
    }
}

fn req(kind: u16, flags: u16, offset: u64, length: u32) -> Request {
    Request {
        flags,
        kind,
        handle: 9,
        offset,
        length,
    }
}

/// What a structured reply says: its error (0: none) and message, the bytes it
/// returns (holes as zeros), and its chunk types in order.
#[derive(Debug, Default)]
struct Said {
    error: u32,
    message: String,
    data: Vec<u8>,
    kinds: Vec<u16>,
    payloads: Vec<Vec<u8>>,
}

fn structured(out: &[u8]) -> Said {
    let mut s = Said::default();
    let mut at = 0;
    while at < out.len() {
        let h = &out[at..at + 20];
        assert_eq!(h[..4], proto::STRUCTURED_REPLY_MAGIC.to_be_bytes());
        let kind = u16::from_be_bytes([h[6], h[7]]);
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
        let p = &out[at + 20..at + 20 + len];
        s.kinds.push(kind);
        s.payloads.push(p.to_vec());
        match kind {
            reply::ERROR => {
                s.error = u32::from_be_bytes(p[..4].try_into().unwrap());
                s.message = String::from_utf8_lossy(&p[6..]).into_owned();
            }
            reply::OFFSET_DATA => s.data.extend_from_slice(&p[8..]),
            reply::OFFSET_HOLE => {
                let n = u32::from_be_bytes(p[8..12].try_into().unwrap());
                s.data.extend(std::iter::repeat_n(0u8, n as usize));
            }
            _ => {}
        }
        at += 20 + len;
    }
    s
}

fn run(a: &mut ServedArray, s: &Session, r: &Request, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ops::execute(a, s, r, payload, &mut out);
    out
}

#[test]
fn reads_of_a_lost_range_fail_with_eio_and_never_read_as_holes() {
    let d = Dir::new("reads");
    let (mut a, data, (offset, len)) = lost_array(&d.0);
    let (o, l) = (offset as usize, len as usize);
    let st = session(true);
    // The lost range alone: the array maps nothing there, yet it is not a hole.
    for (from, n, flags) in [
        (offset, 4096u32, 0),
        (offset, len.min(1 << 20) as u32, 0),
        (offset + len - 4096, 4096, 0),
        (offset, 4096, cflag::DF),
        // Partial sectors, read around.
        (offset + 1, 100, 0),
        // Straddling its start and its end.
        (offset - 4096, 8192, 0),
        (offset + len - 512, 1024, 0),
    ] {
        let s = structured(&run(&mut a, &st, &req(cmd::READ, flags, from, n), &[]));
        assert_eq!(s.error, errno::EIO, "read of {n} at {from}: {s:?}");
        assert_eq!(s.kinds, [reply::ERROR], "read of {n} at {from}: {s:?}");
        assert!(
            s.message.contains("lost to metadata damage") && s.message.contains("LUN 1"),
            "{}",
            s.message
        );
        assert!(s.data.is_empty());
        // A simple reply: the error, and no data.
        let out = run(&mut a, &session(false), &req(cmd::READ, 0, from, n), &[]);
        assert_eq!(
            out,
            proto::simple_reply(errno::EIO, 9),
            "simple read at {from}"
        );
    }
    // Around it, the data.
    for (from, n) in [(0, o.min(1 << 20)), (o - 8192, 8192), (o + l, 8192)] {
        let s = structured(&run(
            &mut a,
            &st,
            &req(cmd::READ, 0, from as u64, n as u32),
            &[],
        ));
        assert_eq!(s.error, 0, "{s:?}");
        assert!(s.data == data[from..from + n], "read of {n} at {from}");
    }
    // Block status: data (not a hole, not zeros) where it is lost.
    let out = run(
        &mut a,
        &st,
        &req(cmd::BLOCK_STATUS, 0, offset - 8192, 16384),
        &[],
    );
    let s = structured(&out);
    assert_eq!(s.kinds, [reply::BLOCK_STATUS], "{s:?}");
    let p = &s.payloads[0];
    let descs: Vec<(u32, u32)> = p[4..]
        .chunks(8)
        .map(|c| {
            (
                u32::from_be_bytes(c[..4].try_into().unwrap()),
                u32::from_be_bytes(c[4..].try_into().unwrap()),
            )
        })
        .collect();
    assert_eq!(descs, [(16384, 0)], "lost range reported as a hole");
}

#[test]
fn a_write_makes_a_lost_range_readable_and_a_trim_makes_it_a_hole() {
    let d = Dir::new("writes");
    let (mut a, _, (offset, len)) = lost_array(&d.0);
    let st = session(true);
    let fresh = pattern(6, 8192);
    let out = run(&mut a, &st, &req(cmd::WRITE, 0, offset, 8192), &fresh);
    assert_eq!(structured(&out).error, 0);
    let s = structured(&run(&mut a, &st, &req(cmd::READ, 0, offset, 8192), &[]));
    assert!(s.error == 0 && s.data == fresh, "{:?}", s.error);
    // The rest of the range is still lost; trimmed, it reads as zeros (a hole).
    let rest = offset + 8192;
    let n = (len - 8192).min(1 << 20) as u32;
    let s = structured(&run(&mut a, &st, &req(cmd::READ, 0, rest, n), &[]));
    assert_eq!(s.error, errno::EIO);
    let out = run(&mut a, &st, &req(cmd::TRIM, 0, rest, n), &[]);
    assert_eq!(structured(&out).error, 0);
    let s = structured(&run(&mut a, &st, &req(cmd::READ, 0, rest, n), &[]));
    assert_eq!(s.error, 0);
    assert_eq!(s.kinds, [reply::OFFSET_HOLE]);
    assert!(s.data.iter().all(|&b| b == 0) && s.data.len() == n as usize);
    let out = run(&mut a, &st, &req(cmd::BLOCK_STATUS, 0, rest, n), &[]);
    let p = &structured(&out).payloads[0];
    let flags = u32::from_be_bytes(p[8..12].try_into().unwrap());
    assert_eq!(flags, proto::STATE_HOLE | proto::STATE_ZERO);
}

#[test]
fn a_served_lost_range_is_eio_over_the_socket() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    crate::log::set_quiet(true);
    let d = Dir::new("served");
    let (a, data, (offset, _)) = lost_array(&d.0);
    let sock = d.0.join("nbd");
    let config = Config {
        listen: vec![ListenSpec {
            addr: Addr::Unix(sock.clone()),
            host: None,
        }],
        control: None,
        tls: None,
        max_connections: 8,
    };
    let server = Server::start(a, config).unwrap();
    let mut s = client(&sock);
    request(&mut s, cmd::READ, 0, offset, 4096, 1);
    assert_eq!(reply_of(&mut s, 1).0, errno::EIO);
    request(&mut s, cmd::READ, 0, 0, 4096, 2);
    assert_eq!(reply_of(&mut s, 2), (0, data[..4096].to_vec()));
    request(&mut s, cmd::DISC, 0, 0, 0, 3);
    drop(s);
    server.shutdown().unwrap();
}
