//! The server against hostile and broken clients, in-process: malformed and
//! truncated handshakes, unknown options and commands, requests past the end and
//! over the size limit, clients that vanish mid-request, and a thousand
//! connect/disconnect cycles, with a well-behaved client served throughout and the
//! process's memory flat.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lunsnap::{Array, FileDevice, FormatOptions};

use crate::proto::{self, cmd, opt, rep, reply};
use crate::{Addr, Config, ListenSpec, Server};

/// The tests of this module (and those of others that start servers) run one at a
/// time: the memory test measures the whole process.
pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Env {
    _serial: std::sync::MutexGuard<'static, ()>,
    dir: PathBuf,
    sock: PathBuf,
    server: Option<Server>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn env(tag: &str) -> Env {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    crate::log::set_quiet(true);
    let dir = std::env::temp_dir().join(format!("lunsnap-hostile-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dev = FileDevice::create(dir.join("img"), 4096, 16384).unwrap();
    let opts = FormatOptions {
        max_luns: 16,
        ..FormatOptions::default()
    };
    let mut a = Array::format(dev, &opts).unwrap();
    a.create_lun(1, 8 << 20).unwrap();
    a.write(1, 0, &[7u8; 4096]).unwrap();
    a.flush().unwrap();
    let sock = dir.join("nbd");
    let config = Config {
        listen: vec![ListenSpec {
            addr: Addr::Unix(sock.clone()),
            host: None,
        }],
        control: None,
        tls: None,
        max_connections: 64,
    };
    let server = Server::start(a, config).unwrap();
    Env {
        _serial: serial,
        dir,
        sock,
        server: Some(server),
    }
}

fn connect(p: &Path) -> UnixStream {
    let s = UnixStream::connect(p).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).unwrap();
    b
}

/// Reads the greeting and sends fixed-newstyle + no-zeroes client flags.
fn greet(s: &mut UnixStream) {
    let g = read_n(s, 18);
    assert_eq!(&g[..8], b"NBDMAGIC");
    s.write_all(&3u32.to_be_bytes()).unwrap();
}

fn send_option(s: &mut UnixStream, option: u32, data: &[u8]) {
    let mut m = proto::IHAVEOPT.to_be_bytes().to_vec();
    m.extend_from_slice(&option.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    s.write_all(&m).unwrap();
}

/// Reads one option reply: (option, type, payload).
fn option_reply(s: &mut UnixStream) -> (u32, u32, Vec<u8>) {
    let h = read_n(s, 20);
    assert_eq!(h[..8], proto::REP_MAGIC.to_be_bytes());
    let option = u32::from_be_bytes(h[8..12].try_into().unwrap());
    let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
    (option, kind, read_n(s, len as usize))
}

fn go_payload(name: &str) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&0u16.to_be_bytes());
    d
}

/// A well-behaved client: handshake with structured replies and GO on LUN 1.
pub(crate) fn client(p: &Path) -> UnixStream {
    let mut s = connect(p);
    greet(&mut s);
    send_option(&mut s, opt::STRUCTURED_REPLY, &[]);
    assert_eq!(option_reply(&mut s).1, rep::ACK);
    send_option(&mut s, opt::GO, &go_payload("1"));
    loop {
        let (_, kind, _) = option_reply(&mut s);
        if kind == rep::ACK {
            return s;
        }
        assert_eq!(kind, rep::INFO);
    }
}

pub(crate) fn request(
    s: &mut UnixStream,
    kind: u16,
    flags: u16,
    offset: u64,
    len: u32,
    handle: u64,
) {
    let mut r = proto::REQUEST_MAGIC.to_be_bytes().to_vec();
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&kind.to_be_bytes());
    r.extend_from_slice(&handle.to_be_bytes());
    r.extend_from_slice(&offset.to_be_bytes());
    r.extend_from_slice(&len.to_be_bytes());
    s.write_all(&r).unwrap();
}

/// Reads structured chunks until DONE; returns (error or 0, data bytes seen).
pub(crate) fn reply_of(s: &mut UnixStream, handle: u64) -> (u32, Vec<u8>) {
    let mut data = Vec::new();
    loop {
        let h = read_n(s, 20);
        assert_eq!(h[..4], proto::STRUCTURED_REPLY_MAGIC.to_be_bytes());
        let flags = u16::from_be_bytes([h[4], h[5]]);
        let kind = u16::from_be_bytes([h[6], h[7]]);
        assert_eq!(u64::from_be_bytes(h[8..16].try_into().unwrap()), handle);
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let p = read_n(s, len as usize);
        match kind {
            reply::ERROR => return (u32::from_be_bytes(p[..4].try_into().unwrap()), data),
            reply::OFFSET_DATA => data.extend_from_slice(&p[8..]),
            reply::OFFSET_HOLE => {
                let n = u32::from_be_bytes(p[8..12].try_into().unwrap());
                data.extend(std::iter::repeat_n(0u8, n as usize));
            }
            _ => {}
        }
        if flags & reply::FLAG_DONE != 0 {
            return (0, data);
        }
    }
}

/// The well-behaved client still gets its data (bytes 2048..4096 were never
/// overwritten; 4096..8192 never written).
fn still_served(p: &Path) {
    let mut s = client(p);
    request(&mut s, cmd::READ, 0, 2048, 6144, 42);
    let (err, data) = reply_of(&mut s, 42);
    assert_eq!(err, 0);
    assert!(data[..2048].iter().all(|&b| b == 7), "written data");
    assert!(data[2048..].iter().all(|&b| b == 0), "a hole");
    request(&mut s, cmd::DISC, 0, 0, 0, 43);
}

/// True when the server closed the connection (EOF).
fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return true,
        }
    }
}

#[test]
fn broken_handshakes_end_only_their_connection() {
    let e = env("handshake");
    // Unknown client flags: the server must drop the connection.
    let mut s = connect(&e.sock);
    read_n(&mut s, 18);
    s.write_all(&0xffu32.to_be_bytes()).unwrap();
    assert!(closed(&mut s));
    // Truncated flags, then gone.
    let mut s = connect(&e.sock);
    read_n(&mut s, 18);
    s.write_all(&[0, 0]).unwrap();
    drop(s);
    // Bad option magic.
    let mut s = connect(&e.sock);
    greet(&mut s);
    s.write_all(&[0u8; 16]).unwrap();
    assert!(closed(&mut s));
    // Unknown options are refused politely; malformed GO is invalid; unknown export.
    let mut s = connect(&e.sock);
    greet(&mut s);
    send_option(&mut s, 0x7777, b"junk");
    assert_eq!(option_reply(&mut s).1, rep::ERR_UNSUP);
    send_option(&mut s, opt::GO, &[0, 0, 0, 9, b'1']);
    assert_eq!(option_reply(&mut s).1, rep::ERR_INVALID);
    send_option(&mut s, opt::GO, &go_payload("99"));
    assert_eq!(option_reply(&mut s).1, rep::ERR_UNKNOWN);
    send_option(&mut s, opt::LIST, b"x");
    assert_eq!(option_reply(&mut s).1, rep::ERR_INVALID);
    send_option(&mut s, opt::SET_META_CONTEXT, &[]);
    assert_eq!(
        option_reply(&mut s).1,
        rep::ERR_INVALID,
        "before structured replies"
    );
    send_option(&mut s, opt::STARTTLS, &[]);
    assert_eq!(option_reply(&mut s).1, rep::ERR_POLICY);
    // An option too long to take is refused after its bytes are skipped.
    send_option(&mut s, 0x7777, &vec![0u8; proto::MAX_OPTION as usize + 1]);
    assert_eq!(option_reply(&mut s).1, rep::ERR_TOO_BIG);
    send_option(&mut s, opt::ABORT, &[]);
    assert_eq!(option_reply(&mut s).1, rep::ACK);
    // EXPORT_NAME of an unknown export ends the session.
    let mut s = connect(&e.sock);
    greet(&mut s);
    send_option(&mut s, opt::EXPORT_NAME, b"nope");
    assert!(closed(&mut s));
    still_served(&e.sock);
}

#[test]
fn bad_requests_get_errors_and_the_connection_goes_on() {
    let e = env("requests");
    let mut s = client(&e.sock);
    let size = 8u64 << 20;
    request(&mut s, cmd::READ, 0, size - 512, 1024, 1);
    assert_eq!(
        reply_of(&mut s, 1).0,
        proto::errno::EINVAL,
        "read past the end"
    );
    request(&mut s, cmd::WRITE, 0, size, 512, 2);
    s.write_all(&[1u8; 512]).unwrap();
    assert_eq!(
        reply_of(&mut s, 2).0,
        proto::errno::ENOSPC,
        "write past the end"
    );
    request(&mut s, cmd::READ, 0, 0, proto::MAX_REQUEST + 1, 3);
    assert_eq!(
        reply_of(&mut s, 3).0,
        proto::errno::EOVERFLOW,
        "read over the limit"
    );
    request(&mut s, 99, 0, 0, 0, 4);
    assert_eq!(
        reply_of(&mut s, 4).0,
        proto::errno::EINVAL,
        "unknown command"
    );
    request(&mut s, cmd::READ, 0x8000, 0, 512, 5);
    assert_eq!(reply_of(&mut s, 5).0, proto::errno::EINVAL, "unknown flag");
    request(&mut s, cmd::BLOCK_STATUS, 0, 0, 512, 6);
    assert_eq!(
        reply_of(&mut s, 6).0,
        proto::errno::EINVAL,
        "no context selected"
    );
    // A write over the limit: its payload is read and dropped, then refused.
    request(&mut s, cmd::WRITE, 0, 0, proto::MAX_REQUEST + 512, 7);
    let junk = vec![9u8; (proto::MAX_REQUEST + 512) as usize];
    s.write_all(&junk).unwrap();
    assert_ne!(reply_of(&mut s, 7).0, 0);
    // Unaligned write and read round trip.
    request(&mut s, cmd::WRITE, 0, 1000, 3, 8);
    s.write_all(b"abc").unwrap();
    assert_eq!(reply_of(&mut s, 8).0, 0);
    request(&mut s, cmd::READ, 0, 999, 5, 9);
    assert_eq!(reply_of(&mut s, 9), (0, vec![7, b'a', b'b', b'c', 7]));
    request(&mut s, cmd::DISC, 0, 0, 0, 10);
    assert!(closed(&mut s));
    still_served(&e.sock);
}

#[test]
fn clients_that_vanish_mid_request_harm_nobody() {
    let e = env("vanish");
    for cut in [3usize, 27, 28, 100] {
        let mut s = client(&e.sock);
        let mut r = proto::REQUEST_MAGIC.to_be_bytes().to_vec();
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&cmd::WRITE.to_be_bytes());
        r.extend_from_slice(&1u64.to_be_bytes());
        r.extend_from_slice(&0u64.to_be_bytes());
        r.extend_from_slice(&4096u32.to_be_bytes());
        r.extend_from_slice(&[5u8; 4096]);
        s.write_all(&r[..cut]).unwrap();
        drop(s);
    }
    // A bad request magic ends the connection.
    let mut s = client(&e.sock);
    s.write_all(&[0u8; 28]).unwrap();
    assert!(closed(&mut s));
    still_served(&e.sock);
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_thousand_connect_cycles_leak_nothing() {
    let e = env("cycles");
    let cycle = |i: u32| {
        let mut s = connect(&e.sock);
        match i % 4 {
            0 => drop(s),
            1 => {
                greet(&mut s);
                drop(s);
            }
            2 => {
                let mut c = client(&e.sock);
                request(&mut c, cmd::READ, 0, u64::from(i) * 512 % (1 << 20), 512, 1);
                assert_eq!(reply_of(&mut c, 1).0, 0);
                drop(c);
                drop(s);
            }
            _ => {
                greet(&mut s);
                send_option(&mut s, opt::ABORT, &[]);
                let _ = option_reply(&mut s);
            }
        }
    };
    for i in 0..200 {
        cycle(i);
    }
    let settle = |e: &Env| {
        for _ in 0..500 {
            if e.server.as_ref().is_some_and(|s| s.shared().clients() == 0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("connections did not end");
    };
    settle(&e);
    let before = rss_kib();
    for i in 0..1000 {
        cycle(i);
    }
    settle(&e);
    let after = rss_kib();
    assert!(
        after <= before + 4096,
        "RSS grew from {before} KiB to {after} KiB"
    );
    still_served(&e.sock);
}
