//! The background reclaimer: a served array's free queue drains while a client reads
//! and writes; a device that refuses the reclaimer's commit is logged, and the
//! server goes on serving and stops cleanly; wakes reach a waiting reclaimer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lunsnap::{Array, FileDevice, FormatOptions, OpenOptions, RECLAIM_PER_FLUSH};

use crate::hostile_tests::{client, reply_of, request, SERIAL};
use crate::proto::cmd;
use crate::shared::{ServedArray, Shared};
use crate::{Addr, Config, ListenSpec, Server};

const PAGE: u32 = 4096;
/// LUN 1: served to the test's client.
const LUN1: u64 = 8 << 20;
/// LUN 2: written whole with 4 KiB extents, then deleted: 8,192 extent references,
/// two steps of the reclaimer at least.
const LUN2: u64 = 32 << 20;

/// A fresh directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("lunsnap-reclaim-{tag}-{}", std::process::id()));
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

/// An array in `path` with LUN 1 (its first 64 KiB written) and the whole of a
/// deleted LUN 2 waiting in the free queue.
fn pending_array(path: &Path) -> ServedArray {
    let dev = FileDevice::create(path, PAGE, 16384).unwrap();
    let opts = FormatOptions {
        extent_size: PAGE,
        max_luns: 16,
        ..FormatOptions::default()
    };
    let mut a = Array::format(dev, &opts).unwrap();
    a.create_lun(1, LUN1).unwrap();
    a.write(1, 0, &[7u8; 64 << 10]).unwrap();
    a.create_lun(2, LUN2).unwrap();
    a.write(2, 0, &vec![9u8; LUN2 as usize]).unwrap();
    a.flush().unwrap();
    // The delete commits; nothing flushes after it, so all of LUN 2 waits.
    a.delete(2, false).unwrap();
    assert!(a.reclaim_pending());
    assert_eq!(a.pending_bytes().unwrap(), LUN2);
    const { assert!(LUN2 / PAGE as u64 > RECLAIM_PER_FLUSH) };
    a
}

fn config(sock: &Path) -> Config {
    Config {
        listen: vec![ListenSpec {
            addr: Addr::Unix(sock.to_path_buf()),
            host: None,
        }],
        control: None,
        tls: None,
        max_connections: 8,
    }
}

/// Waits up to 20 s for `done`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_free_queue_drains_while_a_client_reads_and_writes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    crate::log::set_quiet(true);
    let d = Dir::new("drain");
    let img = d.0.join("img");
    let a = pending_array(&img);
    let generation = a.pool_info().generation;
    let sock = d.0.join("nbd");
    let server = Server::start(a, config(&sock)).unwrap();
    let mut s = client(&sock);
    let mut handle = 1;
    // The client's requests go on while the queue drains (no flush from it: only
    // the reclaimer frees).
    wait_until("the free queue to drain", || {
        request(&mut s, cmd::READ, 0, 0, 4096, handle);
        assert_eq!(reply_of(&mut s, handle), (0, vec![7u8; 4096]));
        handle += 1;
        !server.shared().lock().reclaim_pending()
    });
    {
        let mut a = server.shared().lock();
        assert_eq!(a.pending_bytes().unwrap(), 0);
        assert_eq!(a.pool_info().reclaim_queue, 0);
        // Each step committed: more than one step was needed.
        assert!(a.pool_info().generation >= generation + 2);
        assert_eq!(a.pool_info().allocated_bytes, 64 << 10);
    }
    request(&mut s, cmd::DISC, 0, 0, 0, handle);
    drop(s);
    server.shutdown().unwrap();
    let dev = FileDevice::open(&img, PAGE).unwrap();
    let mut a = Array::open(dev, &OpenOptions::default()).unwrap();
    assert!(!a.reclaim_pending());
    assert_eq!(a.pool_info().allocated_bytes, 64 << 10);
    assert!(a.check().unwrap().is_empty());
}

#[test]
fn a_device_error_in_reclamation_is_survived() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    crate::log::set_quiet(true);
    let d = Dir::new("error");
    let img = d.0.join("img");
    drop(pending_array(&img).close().unwrap());
    // The image opened read-only: reads work, the reclaimer's commit fails.
    let file = std::fs::File::open(&img).unwrap();
    let blocks = file.metadata().unwrap().len() / u64::from(PAGE);
    let dev = FileDevice::from_file(file, PAGE, blocks).unwrap();
    let a = Array::open(dev, &OpenOptions::default()).unwrap();
    let sock = d.0.join("nbd");
    let server = Server::start(a, config(&sock)).unwrap();
    wait_until("the reclaimer's step to fail", || {
        server.shared().lock().is_poisoned()
    });
    // The server is still there: a client connects and reads (the array refuses
    // changes once a commit failed, not reads).
    let mut s = client(&sock);
    request(&mut s, cmd::READ, 0, 0, 4096, 1);
    assert_eq!(reply_of(&mut s, 1), (0, vec![7u8; 4096]));
    // Woken again (as a command would), it does not try a poisoned array again.
    server.shared().wake_reclaimer();
    std::thread::sleep(Duration::from_millis(20));
    request(&mut s, cmd::DISC, 0, 0, 0, 2);
    drop(s);
    let t = Instant::now();
    let r = server.shutdown();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(r.is_err_and(|e| e.contains("final commit failed")));
    // The image is as it was: the queue still holds LUN 2.
    let dev = FileDevice::open(&img, PAGE).unwrap();
    let mut a = Array::open(dev, &OpenOptions::default()).unwrap();
    assert_eq!(a.pending_bytes().unwrap(), LUN2);
    assert!(a.check().unwrap().is_empty());
}

#[test]
fn wakes_and_the_shutdown_reach_a_waiting_reclaimer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = Dir::new("wake");
    let dev = FileDevice::create(d.0.join("img"), PAGE, 4096).unwrap();
    let a = Array::format(
        dev,
        &FormatOptions {
            max_luns: 4,
            ..FormatOptions::default()
        },
    )
    .unwrap();
    let shared = Shared::new(a);
    let waiter = |sh: &Arc<Shared>| {
        let sh = sh.clone();
        let seen = sh.reclaim_wakes();
        std::thread::spawn(move || {
            let t = Instant::now();
            (sh.wait_for_wake(seen, None), t.elapsed())
        })
    };
    let seen = shared.reclaim_wakes();
    // A timeout with no wake returns what it saw.
    assert_eq!(
        shared.wait_for_wake(seen, Some(Duration::from_millis(10))),
        seen
    );
    let w = waiter(&shared);
    std::thread::sleep(Duration::from_millis(50));
    shared.wake_reclaimer();
    let (now, took) = w.join().unwrap();
    assert_eq!(now, seen + 1);
    assert!(took < Duration::from_secs(1), "{took:?}");
    let w = waiter(&shared);
    std::thread::sleep(Duration::from_millis(50));
    shared.shut_down();
    let (_, took) = w.join().unwrap();
    assert!(took < Duration::from_secs(1), "{took:?}");
}
