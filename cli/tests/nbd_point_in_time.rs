//! Business copies made while NBD clients write are point-in-time images (issue 12):
//! a copy (and a consistency group) holds every write acknowledged before the command
//! began and none issued after it returned, with nothing torn, at one instant across
//! every LUN of the group.
//!
//! `lunsnap serve` serves LUNs 1 and 2. fio (nbd engine, randwrite, 4 KiB blocks,
//! depth 32, two jobs, crc32c verify) loads a region of LUN 1 for the whole test, run
//! after run: each run writes 8 MiB per job and reads it all back verified, and must
//! end with exit 0 and error 0.
//! Four sequence writers, two on each LUN, each on its own connection and thread,
//! write 4 KiB blocks one at a time in a fixed order, pass after pass, over their own
//! 1 MiB region; every block written says which write put it there (writer, sequence
//! number, block), and each writer logs for every write the instant just before it
//! sent it and the instant its reply arrived. Meanwhile, once a second, the test
//! alternately creates a new consistency group of both LUNs (`copy create --parent 1
//! --copy C1 --parent 2 --copy C2 --attached`) and re-attaches a fixed pair (`copy
//! attach 11 12`, read out with `lunsnap read` before the next attach), timing each
//! command.
//!
//! Then, for every copy and every writer, with m the highest sequence number in the
//! copy's region of that writer:
//! - every block holds exactly the last write to it at or before m: a prefix of the
//!   writer's writes, nothing torn, nothing later;
//! - m is at least the last write whose reply arrived before the command started, and
//!   at most the last write sent before the command ended;
//! - across the writers of a group (both LUNs), one instant t explains every cut: the
//!   server applied write m of each writer before t and write m+1 after it, and a
//!   write is applied after it is sent and before its reply arrives, so t lies after
//!   every writer's send of m (and the command's start) and before every reply to
//!   m+1 (and the command's end). One monotonic clock (`Instant`) times everything.
//!
//! Finally the server stops cleanly and each writer's region of its LUN holds its last
//! write. (Timed from outside, a command's bounds include its process start-up, a few
//! tens of milliseconds: a write acknowledged before it was applied can only be seen
//! if it stays unapplied longer than that.)

mod nbd_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nbd_common::*;

const MIB: u64 = 1024 * 1024;

/// The unit of a sequence writer's writes.
const BLOCK: usize = 4096;
/// Blocks in a writer's region: 1 MiB, 64 extents of 16 KiB.
const BLOCKS: u64 = 256;
/// A writer's fixed order: write `seq` goes to block `(seq % BLOCKS) * STRIDE %
/// BLOCKS` (coprime with BLOCKS: every pass writes each block once, hopping between
/// extents).
const STRIDE: u64 = 97;
/// One 16-byte record, repeated over the block: writer, block, sequence number.
const RECORD: usize = 16;

/// Management rounds, one a second: even rounds create a group, odd ones re-attach
/// the fixed pair.
const ROUNDS: u32 = 8;
const ROUND_EVERY: Duration = Duration::from_secs(1);
/// The pair re-attached in odd rounds: copy 11 of LUN 1, copy 12 of LUN 2.
const PAIR: [(u32, u32); 2] = [(1, 11), (2, 12)];
/// fio's region of LUN 1: two jobs of 8 MiB from offset 0.
const FIO_JOB_SIZE: u64 = 8 * MIB;

/// A sequence writer: its own connection, writing its own region of a LUN.
#[derive(Clone, Copy, Debug)]
struct Writer {
    id: u32,
    lun: u32,
    /// The region's offset in the LUN.
    base: u64,
}

/// Two writers on each LUN, clear of fio's region of LUN 1.
const WRITERS: [Writer; 4] = [
    Writer {
        id: 1,
        lun: 1,
        base: 16 * MIB,
    },
    Writer {
        id: 2,
        lun: 1,
        base: 17 * MIB,
    },
    Writer {
        id: 3,
        lun: 2,
        base: 0,
    },
    Writer {
        id: 4,
        lun: 2,
        base: MIB,
    },
];

/// The block that write `seq` of any writer goes to.
fn block_of(seq: u64) -> u64 {
    (seq % BLOCKS) * STRIDE % BLOCKS
}

/// The position in a pass of the write to `block`.
fn slot_of(block: u64) -> u64 {
    (0..BLOCKS).find(|&i| block_of(i) == block).unwrap()
}

/// The last write to `block` at or before write `m` (none if `m` is none or comes
/// before the block's first write).
fn last_write(block: u64, m: Option<u64>) -> Option<u64> {
    let (m, slot) = (m?, slot_of(block));
    (m >= slot).then(|| m - (m - slot) % BLOCKS)
}

/// What write `seq` of `writer` puts in its block.
fn content(writer: u32, block: u64, seq: u64) -> Vec<u8> {
    let mut rec = [0u8; RECORD];
    rec[..4].copy_from_slice(&writer.to_le_bytes());
    rec[4..8].copy_from_slice(&(block as u32).to_le_bytes());
    rec[8..].copy_from_slice(&seq.to_le_bytes());
    rec.repeat(BLOCK / RECORD)
}

/// Which write a block read back holds: `Ok(None)` for zeros (never written),
/// `Ok(Some((writer, block, seq)))`, or `Err` if its records disagree (torn).
fn decode(data: &[u8]) -> Result<Option<(u32, u64, u64)>, String> {
    let rec = |i: usize| {
        let r = &data[i * RECORD..(i + 1) * RECORD];
        (
            u32::from_le_bytes(r[..4].try_into().unwrap()),
            u64::from(u32::from_le_bytes(r[4..8].try_into().unwrap())),
            u64::from_le_bytes(r[8..].try_into().unwrap()),
        )
    };
    if data.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let first = rec(0);
    match (1..BLOCK / RECORD).find(|&i| rec(i) != first) {
        None => Ok(Some(first)),
        Some(i) => Err(format!(
            "torn: record 0 is (writer, block, seq) {first:?} but record {i} (byte {}) is {:?}",
            i * RECORD,
            rec(i)
        )),
    }
}

/// A writer's log: for write `seq`, the instant just before it was sent and the
/// instant its reply arrived (depth 1: both increase with `seq`).
struct Log {
    sent: Vec<Instant>,
    replied: Vec<Instant>,
}

impl Log {
    fn len(&self) -> u64 {
        self.sent.len() as u64
    }

    /// The last write whose reply arrived before `t`.
    fn acked_before(&self, t: Instant) -> Option<u64> {
        (self.replied.partition_point(|&r| r < t) as u64).checked_sub(1)
    }

    /// The last write sent before `t`.
    fn sent_before(&self, t: Instant) -> Option<u64> {
        (self.sent.partition_point(|&s| s < t) as u64).checked_sub(1)
    }
}

impl Writer {
    /// Writes until `stop`, counting writes done in `done`; returns the log.
    fn run(self, sock: &str, stop: &AtomicBool, done: &AtomicU64) -> Log {
        let mut c = NbdClient::connect(sock, &self.lun.to_string());
        let mut log = Log {
            sent: Vec::with_capacity(1 << 18),
            replied: Vec::with_capacity(1 << 18),
        };
        let mut seq = 0u64;
        while !stop.load(Ordering::Acquire) {
            let block = block_of(seq);
            let data = content(self.id, block, seq);
            let offset = self.base + block * BLOCK as u64;
            let sent = Instant::now();
            if let Err(e) = c.write(offset, &data) {
                panic!(
                    "writer {} (LUN {}): write {seq} at {offset} failed: {e}",
                    self.id, self.lun
                );
            }
            let replied = Instant::now();
            log.sent.push(sent);
            log.replied.push(replied);
            seq += 1;
            done.store(seq, Ordering::Release);
        }
        c.disconnect();
        log
    }
}

/// The span of LUN `lun` that its writers' regions cover: (offset, length).
fn span(lun: u32) -> (u64, u64) {
    let bases = WRITERS.iter().filter(|w| w.lun == lun).map(|w| w.base);
    let from = bases.clone().min().unwrap();
    let to = bases.max().unwrap() + BLOCKS * BLOCK as u64;
    (from, to - from)
}

/// Sets the flag when dropped: the writers stop if the test panics.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A command run with its instants: `start` just before it was started, `end` just
/// after it exited.
struct Timed {
    start: Instant,
    end: Instant,
}

/// Runs `lunsnap args`, which must succeed, timing it.
#[track_caller]
fn timed(args: &[&str]) -> Timed {
    let what = format!("lunsnap {}", args.join(" "));
    let start = Instant::now();
    let child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((Instant::now(), out));
    });
    let Ok((end, out)) = rx.recv_timeout(CLIENT_TIMEOUT) else {
        signal(pid, "KILL");
        panic!("{what} did not finish within {CLIENT_TIMEOUT:?}: killed");
    };
    let out = out.expect("wait for lunsnap");
    Out {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
    .ok(&what);
    Timed { start, end }
}

/// Reads the span of copy `copy` (or of LUN `lun` itself) that holds the regions of
/// LUN `lun`'s writers, with `lunsnap read IMG COPY FILE --offset --length`.
fn read_span(img: &Image, copy: u32, lun: u32) -> Vec<u8> {
    let (offset, len) = span(lun);
    let file = img.dir.file(&format!("copy-{copy}.bin"));
    img.ok(&[
        "read",
        "IMG",
        &copy.to_string(),
        &file,
        "--offset",
        &offset.to_string(),
        "--length",
        &len.to_string(),
    ]);
    let data = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(data.len() as u64, len, "lunsnap read of copy {copy}");
    data
}

/// One copy command and what its copies held.
struct Snapshot {
    /// "round 2: copy create 23, 24".
    what: String,
    cmd: Timed,
    /// (parent, copy) for LUN 1 and LUN 2.
    copies: [(u32, u32); 2],
    /// The copies' spans, as `copies` (empty until read).
    data: [Vec<u8>; 2],
}

impl Snapshot {
    fn copy_of(&self, lun: u32) -> (u32, &[u8]) {
        let i = self.copies.iter().position(|c| c.0 == lun).unwrap();
        (self.copies[i].1, &self.data[i])
    }
}

/// Milliseconds since `t0`, for messages.
fn at(t: Instant, t0: Instant) -> String {
    format!(
        "{:.3} ms",
        t.saturating_duration_since(t0).as_secs_f64() * 1e3
    )
}

fn seq_text(s: Option<u64>) -> String {
    s.map_or("no write (zeros)".into(), |s| format!("seq {s}"))
}

/// Checks writer `w`'s region in the copy of `snap` against its log: a prefix of its
/// writes, cut within the command's bounds. Returns the cut (the highest sequence
/// number found; none if the region is all zeros), or `None` if a block holds what
/// this writer never wrote there.
fn check_writer(
    w: &Writer,
    log: &Log,
    snap: &Snapshot,
    t0: Instant,
    fails: &mut Vec<String>,
) -> Option<Option<u64>> {
    let (copy, data) = snap.copy_of(w.lun);
    let what = if copy == w.lun {
        format!("LUN {copy}")
    } else {
        format!("copy {copy} of LUN {}", w.lun)
    };
    let who = format!(
        "{}: {what}, writer {} (region at {} MiB)",
        snap.what,
        w.id,
        w.base / MIB
    );
    let start = (w.base - span(w.lun).0) as usize;
    let region = &data[start..start + (BLOCKS as usize) * BLOCK];
    let mut found = Vec::with_capacity(BLOCKS as usize);
    let mut foreign = Vec::new();
    for b in 0..BLOCKS {
        let block = &region[b as usize * BLOCK..(b as usize + 1) * BLOCK];
        match decode(block) {
            Ok(None) => found.push(None),
            Ok(Some((id, blk, seq))) if id == w.id && blk == b && seq < log.len() => {
                found.push(Some(seq))
            }
            Ok(Some((id, blk, seq))) => foreign.push(format!(
                "block {b} holds writer {id}'s write {seq} to block {blk} (writer {} wrote {} blocks)",
                w.id,
                log.len()
            )),
            Err(e) => foreign.push(format!("block {b}: {e}")),
        }
    }
    if !foreign.is_empty() {
        for f in foreign.iter().take(8) {
            fails.push(format!("{who}: {f}"));
        }
        if foreign.len() > 8 {
            fails.push(format!("{who}: ... {} more such blocks", foreign.len() - 8));
        }
        return None;
    }
    let m = found.iter().flatten().copied().max();
    let sent = |s: u64| at(log.sent[s as usize], t0);
    let replied = |s: u64| at(log.replied[s as usize], t0);
    let explain = |s: Option<u64>| match s {
        Some(s) => format!("seq {s} (sent {}, reply {})", sent(s), replied(s)),
        None => seq_text(None),
    };
    // A prefix: every block holds the last write to it at or before m.
    let wrong: Vec<u64> = (0..BLOCKS)
        .filter(|&b| found[b as usize] != last_write(b, m))
        .collect();
    for &b in wrong.iter().take(8) {
        fails.push(format!(
            "{who}: block {b} (offset {}) holds {}, but a copy cut after {} must hold {} \
             (not a prefix of the writer's writes)",
            w.base + b * BLOCK as u64,
            explain(found[b as usize]),
            seq_text(m),
            explain(last_write(b, m)),
        ));
    }
    if wrong.len() > 8 {
        fails.push(format!("{who}: ... {} more such blocks", wrong.len() - 8));
    }
    // Every write acknowledged before the command started is in the copy.
    let lo = log.acked_before(snap.cmd.start);
    if m < lo {
        fails.push(format!(
            "{who}: the copy holds writes up to {} only, but {} was acknowledged before \
             the command started at {}",
            seq_text(m),
            explain(lo),
            at(snap.cmd.start, t0)
        ));
    }
    // No write sent after the command ended is.
    let hi = log.sent_before(snap.cmd.end);
    if m > hi {
        fails.push(format!(
            "{who}: the copy holds {}, sent after the command ended at {}",
            explain(m),
            at(snap.cmd.end, t0)
        ));
    }
    eprintln!(
        "  {who}: cut after {} (acknowledged before the start: {}, sent before the end: {})",
        seq_text(m),
        seq_text(lo),
        seq_text(hi)
    );
    Some(m)
}

/// One instant explains the cuts of every writer of a group: after each writer's
/// send of its write m and the command's start, before each reply to a write m+1 and
/// the command's end. Returns the interval where that instant lies.
fn check_group(
    cuts: &[(&Writer, &Log, Option<u64>)],
    snap: &Snapshot,
    t0: Instant,
) -> Result<(Instant, Instant), String> {
    let mut after = (snap.cmd.start, "the command started".to_owned());
    let mut before = (snap.cmd.end, "the command ended".to_owned());
    for &(w, log, m) in cuts {
        if let Some(m) = m {
            let s = log.sent[m as usize];
            if s > after.0 {
                after = (
                    s,
                    format!(
                        "writer {} (LUN {}) sent write {m}, which the copy holds,",
                        w.id, w.lun
                    ),
                );
            }
        }
        let next = m.map_or(0, |m| m + 1);
        if let Some(&r) = log.replied.get(next as usize) {
            if r < before.0 {
                before = (
                    r,
                    format!(
                        "writer {} (LUN {}) had the reply to write {next}, which the copy \
                         does not hold,",
                        w.id, w.lun
                    ),
                );
            }
        }
    }
    if after.0 < before.0 {
        return Ok((after.0, before.0));
    }
    Err(format!(
        "{}: no single instant explains the group's copies: {} at {}, yet {} at {}",
        snap.what,
        after.1,
        at(after.0, t0),
        before.1,
        at(before.0, t0)
    ))
}

/// fio's JSON report: per job (error, bytes written, bytes read back to verify).
fn fio_jobs(text: &str) -> Vec<(u64, u64, u64)> {
    let v = json_in(text, "fio --output-format=json");
    v["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs in fio's report: {text}"))
        .iter()
        .map(|j| {
            (
                j["error"].as_u64().unwrap(),
                j["write"]["io_bytes"].as_u64().unwrap(),
                j["read"]["io_bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// fio's totals over its runs.
#[derive(Debug, Default)]
struct FioTotals {
    runs: u32,
    written: u64,
    verified: u64,
}

/// Runs the fio job `load.fio` in `dir` again and again until `stop`: each run must
/// exit 0, with every job's error 0 and all it wrote read back and verified.
fn fio_runs(dir: &Path, stop: &AtomicBool) -> Result<FioTotals, String> {
    let mut t = FioTotals::default();
    while !stop.load(Ordering::Acquire) {
        let out = run(tool("fio")
            .current_dir(dir)
            .args(["load.fio", "--output-format=json"]));
        let n = t.runs + 1;
        if out.code != Some(0) {
            return Err(format!(
                "fio run {n} exited with {:?}:\n{}",
                out.code,
                out.all()
            ));
        }
        let jobs = fio_jobs(&out.text());
        if jobs.len() != 2 || jobs.iter().any(|&j| j != (0, FIO_JOB_SIZE, FIO_JOB_SIZE)) {
            return Err(format!(
                "fio run {n}: (error, written, verified) per job {jobs:?}:\n{}",
                out.all()
            ));
        }
        t.runs = n;
        t.written += jobs.iter().map(|j| j.1).sum::<u64>();
        t.verified += jobs.iter().map(|j| j.2).sum::<u64>();
    }
    Ok(t)
}

/// Copies made every second under fio and four sequence writers on two LUNs, as
/// consistency groups (`copy create`) and by re-attaching a pair (`copy attach`), are
/// each one point in time within their command: see the module's documentation.
#[test]
fn copies_under_load_are_points_in_time() {
    if !need("copies_under_load_are_points_in_time", &["fio-nbd"]) {
        return;
    }
    let t0 = Instant::now();
    let img = Image::new("pit", "1G");
    img.lun(1, "32M");
    img.lun(2, "32M");
    img.ok(&[
        "copy",
        "create",
        "IMG",
        "--parent",
        "1",
        "--copy",
        "11",
        "--parent",
        "2",
        "--copy",
        "12",
        "--detached",
    ]);
    let srv = Server::start(&img, &[]);

    // fio: write and verify passes over [0, 16 MiB) of LUN 1, run after run.
    let job = format!(
        "[global]\nioengine=nbd\nuri={}\nrw=randwrite\nbs=4k\niodepth=32\nsize={FIO_JOB_SIZE}\n\
         offset_increment={FIO_JOB_SIZE}\nnumjobs=2\nverify=crc32c\nverify_fatal=1\n\
         do_verify=1\n[load]\n",
        srv.uri(1)
    );
    std::fs::write(img.dir.path("load.fio"), job).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let fio = {
        let (dir, stop) = (img.dir.0.clone(), stop.clone());
        std::thread::spawn(move || fio_runs(&dir, &stop))
    };

    // The sequence writers.
    let done: Vec<Arc<AtomicU64>> = WRITERS.iter().map(|_| Arc::default()).collect();
    let writers: Vec<JoinHandle<Log>> = WRITERS
        .iter()
        .zip(&done)
        .map(|(&w, d)| {
            let (sock, stop, d) = (srv.sock.clone(), stop.clone(), d.clone());
            std::thread::spawn(move || w.run(&sock, &stop, &d))
        })
        .collect();
    // Under way: every writer has made a pass, and fio's jobs and the LUN 1 writers
    // have LUN 1 open.
    let going = wait_until(Duration::from_secs(30), || {
        done.iter().all(|d| d.load(Ordering::Acquire) >= BLOCKS)
            && srv.log_text().matches("opened LUN 1 ").count() >= 4
    });
    assert!(
        going && !fio.is_finished(),
        "the load did not start: writes done {:?}",
        done.iter()
            .map(|d| d.load(Ordering::Acquire))
            .collect::<Vec<_>>(),
    );

    // The copy commands, one a second.
    let mut snaps: Vec<Snapshot> = Vec::new();
    let first = Instant::now();
    for round in 0..ROUNDS {
        let due = first + ROUND_EVERY * round;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        assert!(
            writers.iter().all(|h| !h.is_finished()),
            "a writer stopped before round {round}"
        );
        if fio.is_finished() {
            panic!("fio stopped before round {round}: {:?}", fio.join());
        }
        if round % 2 == 0 {
            let (c1, c2) = (21 + round, 22 + round);
            let (s1, s2) = (c1.to_string(), c2.to_string());
            let cmd = timed(&[
                "copy",
                "create",
                &img.img,
                "--parent",
                "1",
                "--copy",
                &s1,
                "--parent",
                "2",
                "--copy",
                &s2,
                "--attached",
            ]);
            snaps.push(Snapshot {
                what: format!("round {round}: copy create {c1}, {c2}"),
                cmd,
                copies: [(1, c1), (2, c2)],
                data: [Vec::new(), Vec::new()],
            });
        } else {
            let cmd = timed(&["copy", "attach", &img.img, "11", "12"]);
            // Read out before the next attach replaces it.
            let data = PAIR.map(|(lun, copy)| read_span(&img, copy, lun));
            snaps.push(Snapshot {
                what: format!("round {round}: copy attach 11 12"),
                cmd,
                copies: PAIR,
                data,
            });
        }
    }
    let load_time = first.elapsed();

    // Stop the writers, then fio: every run must have ended with error 0, verified.
    stop.store(true, Ordering::Release);
    let logs: Vec<Log> = writers
        .into_iter()
        .map(|h| h.join().expect("a writer panicked"))
        .collect();
    let fio = fio
        .join()
        .expect("the fio thread panicked")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(fio.runs > 0, "{fio:?}");

    // Read the groups' copies, which no one wrote.
    for s in snaps.iter_mut().filter(|s| s.data[0].is_empty()) {
        s.data = s.copies.map(|(lun, copy)| read_span(&img, copy, lun));
    }

    // Check every copy.
    let mut fails = Vec::new();
    for s in &snaps {
        eprintln!(
            "{} took {:.1} ms (from {} to {})",
            s.what,
            (s.cmd.end - s.cmd.start).as_secs_f64() * 1e3,
            at(s.cmd.start, t0),
            at(s.cmd.end, t0)
        );
        let mut cuts = Vec::new();
        for (w, log) in WRITERS.iter().zip(&logs) {
            if let Some(m) = check_writer(w, log, s, t0, &mut fails) {
                cuts.push((w, log, m));
            }
        }
        if cuts.len() == WRITERS.len() {
            match check_group(&cuts, s, t0) {
                Ok((from, to)) => eprintln!(
                    "  one instant explains the group: it lies in [{}, {}]",
                    at(from, t0),
                    at(to, t0)
                ),
                Err(e) => fails.push(e),
            }
        }
    }
    let writes: Vec<u64> = logs.iter().map(Log::len).collect();
    eprintln!(
        "{} copy commands ({} copies) in {load_time:.1?}; writes per writer: {writes:?}; fio: \
         {fio:?}",
        snaps.len(),
        snaps.len() * 2,
    );
    assert!(
        fails.is_empty(),
        "{} point-in-time violations:\n{}",
        fails.len(),
        fails.join("\n")
    );

    // The parents hold every acknowledged write, after a clean stop.
    srv.stop();
    img.assert_clean();
    let spans = [1, 2].map(|lun| read_span(&img, lun, lun));
    for (w, log) in WRITERS.iter().zip(&logs) {
        let last = Snapshot {
            what: "after the stop".to_owned(),
            cmd: Timed {
                start: Instant::now(),
                end: Instant::now(),
            },
            copies: [(w.lun, w.lun), (0, 0)],
            data: [spans[w.lun as usize - 1].clone(), Vec::new()],
        };
        let m = check_writer(w, log, &last, t0, &mut fails);
        assert_eq!(
            m,
            Some(log.len().checked_sub(1)),
            "writer {}: LUN {} does not end with its last write",
            w.id,
            w.lun
        );
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
