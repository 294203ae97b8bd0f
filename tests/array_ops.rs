//! Integration tests of the array's operations (docs/DESIGN.md §2): every management
//! operation's success path and every refusal, sector I/O against a byte model,
//! discard, reopen, exact space accounting, and `check()` after every step.
//!
//! The tests drive the array through a [`Harness`] that applies each operation to
//! the array and to the reference model, `lunsnap::testing::Model`, at the same time.
//! The model keeps, per LUN, its sectors and a lineage token per mapped logical
//! extent; a write into an extent that another LUN also maps takes a fresh token
//! (copy-on-write). From it follow the exact expectations: an extent is exclusive to a
//! LUN iff no other LUN maps it, allocated bytes are the distinct tokens, reservations
//! are the rounded-up sizes of the LUNs that are not detached, each management
//! operation is one commit (one generation), and every refusal is the contract's
//! error. After every operation the harness compares `luns()` and `pool_info()` field
//! by field, the content of the LUNs the operation touched (all of them in
//! `verify_all`), and runs `check()`. When an operation is refused, it also asserts
//! that nothing changed.

mod common;

use std::collections::BTreeMap;

use common::{assert_clean, mem};
use lunsnap::testing::{Model, Rng};
use lunsnap::{
    Array, ArrayViolation, BlockDevice, Error, FormatOptions, LunInfo, LunKind, MemDevice,
    OpenOptions, PoolInfo,
};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

type A = Array<MemDevice>;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// `len` bytes of a pattern determined by `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// Asserts equal contents without printing megabytes of them.
#[track_caller]
fn same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: contents differ (lengths {} and {}, first difference at byte {at:?})",
            got.len(),
            want.len()
        );
    }
}

fn fopts(extent_size: u32, max_luns: u32) -> FormatOptions {
    FormatOptions {
        extent_size,
        max_luns,
        ..Default::default()
    }
}

/// Same error; `InvalidLunSize` is compared by size only (its text is free).
fn same_err(a: &Error, b: &Error) -> bool {
    match (a, b) {
        (Error::InvalidLunSize { size: x, .. }, Error::InvalidLunSize { size: y, .. }) => x == y,
        _ => a == b,
    }
}

fn lun_size_err(size: u64) -> Error {
    Error::InvalidLunSize { size, why: "" }
}

// ---------------------------------------------------------------------------------
// The operations, for the array and for the model alike
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    CreateLun(u32, u64),
    /// parent, lun, attached
    CreateCopy(u32, u32, bool),
    Attach(u32),
    Detach(u32),
    /// lun, orphan_copies
    Delete(u32, bool),
    Restore(u32),
    /// lun, offset, len, pattern seed
    Write(u32, u64, u64, u64),
    /// lun, offset, len
    Read(u32, u64, u64),
    /// lun, offset, len
    Discard(u32, u64, u64),
    Flush,
    /// close + open
    Reopen,
}

impl Op {
    /// The operation's name.
    fn kind(&self) -> &'static str {
        match self {
            Op::CreateLun(..) => "create_lun",
            Op::CreateCopy(..) => "create_copy",
            Op::Attach(_) => "attach",
            Op::Detach(_) => "detach",
            Op::Delete(..) => "delete",
            Op::Restore(_) => "restore",
            Op::Write(..) => "write",
            Op::Read(..) => "read",
            Op::Discard(..) => "discard",
            Op::Flush => "flush",
            Op::Reopen => "reopen",
        }
    }

    /// LUNs whose content the operation may change or read.
    fn luns(&self, m: &Model) -> Vec<u32> {
        match *self {
            Op::CreateLun(n, _)
            | Op::CreateCopy(_, n, _)
            | Op::Attach(n)
            | Op::Detach(n)
            | Op::Delete(n, _)
            | Op::Write(n, ..)
            | Op::Read(n, ..)
            | Op::Discard(n, ..) => vec![n],
            Op::Restore(n) => {
                let mut v = vec![n];
                v.extend(m.lun_info(n).ok().and_then(|i| i.parent));
                v
            }
            Op::Flush | Op::Reopen => m.lun_numbers(),
        }
    }

    /// What the contract says the operation returns, from the model as it is now.
    fn predict(&self, m: &Model) -> Result<(), Error> {
        match *self {
            Op::Write(n, off, len, _) | Op::Read(n, off, len) | Op::Discard(n, off, len) => {
                m.io_check(n, off, len)
            }
            _ => self.model(&mut m.clone(), 1),
        }
    }

    /// Applies the operation to the model (which changes nothing when it refuses),
    /// the array's generation having advanced by `commits` during it.
    fn model(&self, m: &mut Model, commits: u64) -> Result<(), Error> {
        match *self {
            Op::CreateLun(n, size) => m.create_lun(n, size),
            Op::CreateCopy(p, n, attached) => m.create_copy(p, n, attached),
            Op::Attach(n) => m.attach(n),
            Op::Detach(n) => m.detach(n),
            Op::Delete(n, orphan) => m.delete(n, orphan),
            Op::Restore(n) => m.restore(n),
            Op::Write(n, off, len, seed) => {
                m.write_with_commits(n, off, &pattern(seed, len as usize), commits)
            }
            Op::Read(n, off, len) => m.read(n, off, &mut vec![0; len as usize]),
            Op::Discard(n, off, len) => m.discard_with_commits(n, off, len, commits),
            Op::Flush => m.flush(),
            Op::Reopen => {
                m.reopen();
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// The harness: array and model side by side
// ---------------------------------------------------------------------------------

struct Harness {
    a: Option<A>,
    /// The reference model, `lunsnap::testing::Model`.
    m: Model,
    /// Commits the write path made on its own (to reuse freed extents).
    early_commits: u64,
}

impl Harness {
    fn new(dev_bytes: u64, extent_size: u32, max_luns: u32) -> Harness {
        Harness::on(mem(dev_bytes), extent_size, max_luns)
    }

    fn on(dev: MemDevice, extent_size: u32, max_luns: u32) -> Harness {
        let dev_bytes = u64::from(dev.block_size()) * dev.block_count();
        let a = Array::format(dev, &fopts(extent_size, max_luns)).expect("format");
        let p = a.pool_info();
        assert_eq!(p.extent_size, extent_size);
        assert_eq!(p.max_luns, max_luns);
        assert_eq!(p.luns, 0);
        assert_eq!(p.allocated_bytes, 0);
        assert_eq!(p.reserved_bytes, 0);
        assert_eq!(p.unreserved_bytes, p.capacity_bytes);
        assert_eq!(p.free_bytes, p.capacity_bytes);
        assert_eq!(p.capacity_bytes % u64::from(extent_size), 0);
        assert!(
            p.capacity_bytes > 0 && p.capacity_bytes < dev_bytes,
            "{p:?}"
        );
        let mut h = Harness {
            m: Model::new(&p),
            a: Some(a),
            early_commits: 0,
        };
        assert!(h.a().luns().unwrap().is_empty());
        assert!(h.a().lun_numbers().is_empty());
        h.verify_all("after format");
        h
    }

    fn a(&mut self) -> &mut A {
        self.a.as_mut().expect("array")
    }

    fn es(&self) -> u64 {
        self.m.extent_size()
    }

    fn cap_bytes(&self) -> u64 {
        self.m.pool_info().capacity_bytes
    }

    fn info(&mut self, n: u32) -> LunInfo {
        self.a().lun_info(n).expect("lun_info")
    }

    fn pool(&mut self) -> PoolInfo {
        self.a().pool_info()
    }

    /// (exclusive, shared, reserved) of LUN `n`, in extents.
    fn acct(&mut self, n: u32) -> (u64, u64, u64) {
        let i = self.info(n);
        let es = self.es();
        (
            i.exclusive_bytes / es,
            i.shared_bytes / es,
            i.reserved_bytes / es,
        )
    }

    /// Allocated extents of the pool.
    /// Frees everything that waits in the free queue (a commit, if anything did).
    fn reclaim_all(&mut self) {
        let pending = self.a().reclaim_pending();
        let before = self.pool().allocated_bytes;
        let freed = self.a().pending_bytes().expect("pending_bytes");
        let r = self.a().reclaim(u64::MAX).expect("reclaim");
        assert_eq!(r.remaining, 0);
        assert!(!self.a().reclaim_pending());
        assert_eq!(
            self.pool().allocated_bytes,
            before - freed,
            "reclaim frees what was pending"
        );
        if pending {
            self.m.commit();
        }
    }

    /// Extents the LUNs map: allocated, less what waits in the free queue.
    fn allocated(&mut self) -> u64 {
        let pending = self.a().pending_bytes().expect("pending_bytes");
        (self.pool().allocated_bytes - pending) / self.es()
    }

    fn read_all(&mut self, n: u32) -> Vec<u8> {
        let size = self.info(n).size;
        let mut buf = vec![0u8; size as usize];
        self.a().read(n, 0, &mut buf).expect("read whole LUN");
        buf
    }

    fn snapshot(&mut self) -> (Vec<LunInfo>, PoolInfo, Vec<u32>) {
        let a = self.a();
        (a.luns().expect("luns"), a.pool_info(), a.lun_numbers())
    }

    /// Performs `op` on the array; reads return their bytes.
    fn exec(&mut self, op: &Op) -> Result<Option<Vec<u8>>, Error> {
        let a = self.a.as_mut().expect("array");
        match *op {
            Op::CreateLun(n, size) => a.create_lun(n, size),
            Op::CreateCopy(p, n, att) => a.create_copy(p, n, att),
            Op::Attach(n) => a.attach(n),
            Op::Detach(n) => a.detach(n),
            Op::Delete(n, orphan) => a.delete(n, orphan),
            Op::Restore(n) => a.restore(n),
            Op::Write(n, off, len, seed) => a.write(n, off, &pattern(seed, len as usize)),
            Op::Read(n, off, len) => {
                let mut buf = vec![0xEEu8; len as usize];
                a.read(n, off, &mut buf)?;
                return Ok(Some(buf));
            }
            Op::Discard(n, off, len) => a.discard(n, off, len),
            Op::Flush => a.flush(),
            Op::Reopen => {
                let dev = self.a.take().expect("array").close()?;
                let a = Array::open(dev, &OpenOptions::default()).expect("reopen");
                self.a = Some(a);
                Ok(())
            }
        }
        .map(|()| None)
    }

    /// Runs `op` on both sides, asserts the array did what the model predicts and
    /// verifies accounting, the touched LUNs and `check()`.
    fn run(&mut self, op: &Op) -> Result<(), Error> {
        // A management operation goes to the model first (it changes nothing when it
        // refuses); I/O after the array, which may commit on its own during it.
        let io = matches!(op, Op::Write(..) | Op::Read(..) | Op::Discard(..));
        let predicted = if io {
            op.predict(&self.m)
        } else {
            op.model(&mut self.m, 0)
        };
        let g0 = self.pool().generation;
        if io {
            assert_eq!(g0, self.m.generation(), "generation before {op:?}");
        }
        let before = predicted.is_err().then(|| self.snapshot());
        let got = self.exec(op);
        match (&got, &predicted) {
            (Ok(_), Ok(())) => {}
            (Err(g), Err(p)) if same_err(g, p) => {}
            _ => panic!("{op:?}: the array returned {got:?}, the contract says {predicted:?}"),
        }
        match &got {
            Ok(bytes) => {
                if let (Op::Read(n, off, len), Some(b)) = (op, bytes) {
                    let mut want = vec![0u8; *len as usize];
                    self.m.read(*n, *off, &mut want).expect("the model reads");
                    assert!(
                        b[..] == want[..],
                        "{op:?}: read returned other bytes than were written"
                    );
                }
                let actual = self.pool().generation;
                if io {
                    // The write path may commit early to reuse freed extents (a
                    // discard, before it starts): every commit but a discard's own.
                    let commits = actual - g0;
                    let own = u64::from(matches!(op, Op::Discard(_, _, len) if *len > 0));
                    self.early_commits += commits - own;
                    if let Err(e) = op.model(&mut self.m, commits) {
                        panic!("{op:?}: the model refuses what it predicted: {e:?}");
                    }
                }
                assert_eq!(actual, self.m.generation(), "generation after {op:?}");
            }
            Err(_) => {
                let after = self.snapshot();
                assert_eq!(
                    before.as_ref(),
                    Some(&after),
                    "{op:?} was refused but changed luns()/pool_info()"
                );
            }
        }
        let touched = op.luns(&self.m);
        self.verify(&format!("after {op:?}"), &touched);
        got.map(|_| ())
    }

    /// `op` must succeed.
    #[track_caller]
    fn ok(&mut self, op: Op) {
        if let Err(e) = self.run(&op) {
            panic!("{op:?} failed: {e:?}");
        }
    }

    /// `op` must fail with exactly `expected` and change nothing.
    #[track_caller]
    fn err(&mut self, op: Op, expected: Error) {
        let predicted = op.predict(&self.m);
        assert!(
            predicted.as_ref().is_err_and(|p| same_err(p, &expected)),
            "test bug: the model predicts {predicted:?} for {op:?}, the test expects {expected:?}"
        );
        let got = self.run(&op);
        match &got {
            Err(e) if same_err(e, &expected) => {}
            _ => panic!("{op:?}: expected Err({expected:?}), got {got:?}"),
        }
        self.verify_all(&format!("after refused {op:?}"));
    }

    fn write(&mut self, n: u32, off: u64, len: u64, seed: u64) {
        self.ok(Op::Write(n, off, len, seed));
    }

    /// LUN numbers, every `lun_info()` and `pool_info()` figure (the model's
    /// `verify_records`: accounting, generations, metadata used within what was
    /// provisioned), the content of `luns` (a detached copy must refuse reads) and
    /// `check()`.
    fn verify(&mut self, ctx: &str, luns: &[u32]) {
        let a = self.a.as_mut().expect("array");
        if let Err(e) = self.m.verify_records(a) {
            panic!("{ctx}: {e}");
        }
        for &n in luns {
            if self.m.lun_info(n).is_ok() {
                if let Err(e) = self.m.verify_lun(a, n) {
                    panic!("{ctx}: {e}");
                }
            }
        }
        assert_clean(a, ctx);
    }

    fn verify_all(&mut self, ctx: &str) {
        let all = self.m.lun_numbers();
        self.verify(ctx, &all);
    }
}

/// The usual array of these tests: 64 MiB, 512-byte blocks, 16 KiB extents.
fn harness() -> Harness {
    Harness::new(64 * MIB, 16 * 1024, 64)
}

// ---------------------------------------------------------------------------------
// 1. Success paths
// ---------------------------------------------------------------------------------

#[test]
fn create_lun_reads_zeros_and_reserves_its_size() {
    let mut h = harness();
    let es = h.es();
    let g0 = h.pool().generation;
    h.ok(Op::CreateLun(3, MIB));
    let i = h.info(3);
    assert_eq!(
        i,
        LunInfo {
            lun: 3,
            size: MIB,
            kind: LunKind::Lun,
            parent: None,
            attached: true,
            online: true,
            created_generation: g0 + 1,
            attached_generation: g0 + 1,
            reserved_bytes: MIB,
            exclusive_bytes: 0,
            shared_bytes: 0,
            lost_bytes: 0,
        }
    );
    assert_eq!(h.pool().generation, g0 + 1, "create_lun is one commit");
    assert!(
        h.read_all(3).iter().all(|&b| b == 0),
        "a new LUN reads zeros"
    );
    // A size that is not a multiple of the extent reserves whole extents; its last
    // sector is usable.
    let odd = es + 4 * KIB + 512;
    h.ok(Op::CreateLun(0, odd));
    assert_eq!(h.info(0).reserved_bytes, 2 * es);
    assert_eq!(h.pool().reserved_bytes, MIB + 2 * es);
    h.write(0, odd - 512, 512, 1);
    h.write(0, 0, odd, 2);
    h.ok(Op::Read(0, odd - 1024, 1024));
    assert_eq!(h.acct(0), (2, 0, 2));
    // The highest number is usable; a single sector LUN too.
    h.ok(Op::CreateLun(63, 512));
    assert_eq!(h.info(63).reserved_bytes, es);
    h.write(63, 0, 512, 3);
    assert_eq!(h.a().lun_numbers(), vec![0, 3, 63]);
    h.ok(Op::Flush);
    h.verify_all("end");
}

#[test]
fn create_lun_of_exactly_the_unreserved_space() {
    let mut h = harness();
    let cap = h.cap_bytes();
    let es = h.es();
    h.ok(Op::CreateLun(0, cap));
    assert_eq!(h.pool().unreserved_bytes, 0);
    assert_eq!(h.pool().reserved_bytes, cap);
    h.err(
        Op::CreateLun(1, 512),
        Error::NoSpace {
            needed: es,
            available: 0,
        },
    );
    h.write(0, cap - es, es, 10);
    h.ok(Op::Delete(0, false));
    assert_eq!(h.allocated(), 0);
    h.ok(Op::CreateLun(0, cap - es));
    h.ok(Op::CreateLun(1, es));
    h.verify_all("end");
}

#[test]
fn a_fully_reserved_pool_can_be_rewritten_without_flushes() {
    // Small pool: with every extent reserved, each copy-on-write of committed data
    // has to commit early to reuse the extent it released.
    let mut h = Harness::new(4 * MIB, 16 * 1024, 8);
    let cap = h.cap_bytes();
    let es = h.es();
    let half = cap / es / 2 * es;
    h.ok(Op::CreateLun(0, half));
    h.write(0, 0, half, 1);
    h.ok(Op::CreateCopy(0, 1, true));
    if cap > 2 * half {
        h.ok(Op::CreateLun(2, cap - 2 * half));
    }
    assert_eq!(h.pool().unreserved_bytes, 0);
    // Never fails for lack of space, even without flushes.
    h.write(0, 0, half, 2); // parent: copies every shared extent
    h.write(1, 0, half, 3); // copy: its extents are committed
    h.write(1, es / 2, half - es, 4);
    h.write(0, 512, half - 1024, 5);
    assert_eq!(h.allocated(), 2 * half / es);
    assert!(
        h.early_commits > 0,
        "the full pool never forced an early commit"
    );
    h.ok(Op::Restore(1));
    assert_eq!(h.allocated(), half / es);
    h.verify_all("end");
}

#[test]
fn io_unaligned_to_extents_matches_a_byte_model() {
    let mut h = harness();
    let es = h.es();
    let size = MIB + 3 * 512;
    h.ok(Op::CreateLun(1, size));
    h.ok(Op::CreateLun(2, 256 * KIB));
    let cases: &[(u64, u64)] = &[
        (0, 512),
        (512, 1024),
        (es - 512, 1024),               // straddles extents 0 and 1
        (es + 512, es - 1024),          // inside extent 1, neither end aligned
        (3 * es - 1536, 2 * es + 2048), // four extents, unaligned both ends
        (5 * es, es),                   // exactly one extent
        (7 * es, 3 * es),               // three whole extents
        (size - 512, 512),              // the last sector
        (size - es - 1024, es + 1024),  // the tail, across the last boundary
        (40 * es + 4096, 7 * es + 512),
        (0, size), // everything
    ];
    for (i, &(off, len)) in cases.iter().enumerate() {
        h.write(1, off, len, 100 + i as u64);
        // Reads at other, unaligned places.
        let start = off.saturating_sub(1024);
        let end = (off + len + 512).min(size);
        h.ok(Op::Read(1, start, end - start));
        h.ok(Op::Read(1, (off + len) / 2 / 512 * 512, 512));
    }
    // Interleaved writes to two LUNs never mix.
    let mut r = Rng::new(7);
    for i in 0..120 {
        let n = 1 + r.below(2) as u32;
        let size = h.m.lun_info(n).unwrap().size;
        let sectors = size / 512;
        let off = r.below(sectors) * 512;
        let len = (1 + r.below((sectors - off / 512).min(3 * es / 512))) * 512;
        if i % 3 == 0 {
            h.ok(Op::Read(n, off, len));
        } else {
            h.write(n, off, len, 1000 + i);
        }
        if i % 40 == 39 {
            h.ok(Op::Flush);
        }
    }
    // Zero-length I/O at the very end is valid and changes nothing.
    h.ok(Op::Read(1, size, 0));
    h.ok(Op::Write(1, size, 0, 0));
    h.verify_all("end");
}

#[test]
fn never_written_areas_read_zeros() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, 2 * MIB));
    h.write(0, 10 * es + 1024, 512, 1);
    h.write(0, 30 * es, es, 2);
    h.ok(Op::Flush);
    let data = h.read_all(0);
    for (i, &b) in data.iter().enumerate() {
        let i = i as u64;
        let written =
            (10 * es + 1024..10 * es + 1536).contains(&i) || (30 * es..31 * es).contains(&i);
        if !written {
            assert_eq!(b, 0, "byte {i} was never written but reads {b:#x}");
        }
    }
    // The sectors around a partial write in its extent read zeros too.
    let mut b = vec![0xFFu8; 1024];
    h.a().read(0, 10 * es, &mut b).unwrap();
    assert_eq!(b, vec![0u8; 1024]);
    assert_eq!(h.acct(0), (2, 0, 2 * MIB / es));
}

#[test]
fn attached_copy_is_the_image_now_and_independent() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, MIB));
    h.write(0, 0, MIB, 1);
    h.write(0, es + 512, 2048, 2); // uncommitted when the copy is made
    let before = h.read_all(0);
    let g = h.pool().generation;
    h.ok(Op::CreateCopy(0, 1, true));
    let i = h.info(1);
    assert_eq!(
        (i.kind, i.parent, i.attached, i.size),
        (LunKind::Copy, Some(0), true, MIB)
    );
    assert_eq!(
        (i.created_generation, i.attached_generation),
        (g + 1, g + 1)
    );
    assert_eq!(i.reserved_bytes, MIB);
    same_bytes(&h.read_all(1), &before, "the copy is the parent's image");
    // Writes to the parent do not reach the copy.
    h.write(0, 0, 3 * es, 3);
    h.write(0, 20 * es + 512, 512, 4);
    same_bytes(&h.read_all(1), &before, "parent writes reached the copy");
    // Writes to the copy do not reach the parent.
    let parent_now = h.read_all(0);
    h.write(1, 5 * es, 2 * es + 1024, 5);
    h.write(1, MIB - 512, 512, 6);
    same_bytes(
        &h.read_all(0),
        &parent_now,
        "copy writes reached the parent",
    );
    // A second copy taken later sees the later image.
    h.ok(Op::CreateCopy(0, 2, true));
    same_bytes(&h.read_all(2), &parent_now, "LUN 2");
    h.ok(Op::Flush);
    h.verify_all("end");
}

#[test]
fn detached_copy_then_attach_takes_the_parent_image_at_attach_time() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, 512 * KIB));
    h.write(0, 0, 64 * KIB, 1);
    let reserved = h.pool().reserved_bytes;
    let allocated = h.pool().allocated_bytes;
    let g = h.pool().generation;
    h.ok(Op::CreateCopy(0, 1, false));
    let i = h.info(1);
    assert_eq!(
        i,
        LunInfo {
            lun: 1,
            size: 512 * KIB,
            kind: LunKind::Copy,
            parent: Some(0),
            attached: false,
            online: true,
            created_generation: g + 1,
            attached_generation: 0,
            reserved_bytes: 0,
            exclusive_bytes: 0,
            shared_bytes: 0,
            lost_bytes: 0,
        }
    );
    assert_eq!(
        h.pool().reserved_bytes,
        reserved,
        "a detached copy reserves nothing"
    );
    assert_eq!(h.pool().allocated_bytes, allocated);
    // The parent changes after the detached copy was defined.
    h.write(0, 2 * es, 3 * es, 2);
    let parent_now = h.read_all(0);
    h.ok(Op::Attach(1));
    let i = h.info(1);
    assert!(i.attached);
    assert_eq!(i.created_generation, g + 1);
    assert_eq!(i.attached_generation, h.pool().generation);
    assert_eq!(i.reserved_bytes, 512 * KIB);
    assert_eq!(h.pool().reserved_bytes, reserved + 512 * KIB);
    same_bytes(
        &h.read_all(1),
        &parent_now,
        "attach gives the parent's image now",
    );
    assert_eq!(h.acct(1), (0, 5, 512 * KIB / es));
    h.verify_all("end");
}

#[test]
fn attach_refreshes_an_attached_copy_discarding_its_writes() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, MIB));
    h.write(0, 0, 8 * es, 1);
    h.ok(Op::CreateCopy(0, 1, true));
    let created = h.info(1).created_generation;
    // The copy's own writes, over shared extents and over holes.
    h.write(1, 0, 2 * es, 2);
    h.write(1, 30 * es, es + 512, 3);
    // The parent's later writes.
    h.write(0, 4 * es, es, 4);
    h.write(0, 50 * es, 512, 5);
    // Copy: 0, 1, 30, 31 written, 4 left alone when the parent wrote it.
    assert_eq!(h.acct(1), (5, 5, MIB / es));
    let allocated = h.allocated();
    let parent_now = h.read_all(0);
    h.ok(Op::Attach(1));
    same_bytes(
        &h.read_all(1),
        &parent_now,
        "refresh: the copy reads the parent now",
    );
    same_bytes(&h.read_all(0), &parent_now, "refresh changed the parent");
    let i = h.info(1);
    assert_eq!(i.created_generation, created);
    assert_eq!(i.attached_generation, h.pool().generation);
    assert_eq!(h.acct(1), (0, 9, MIB / es), "after refresh all is shared");
    assert_eq!(h.acct(0), (0, 9, MIB / es));
    assert_eq!(
        h.allocated(),
        allocated - 5,
        "the copy's own extents are freed"
    );
    assert_eq!(
        h.pool().reserved_bytes,
        2 * MIB,
        "refresh does not reserve twice"
    );
    h.verify_all("end");
}

#[test]
fn detach_discards_data_and_reservation() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, MIB));
    h.write(0, 0, 4 * es, 1);
    h.ok(Op::CreateCopy(0, 1, true));
    h.write(1, 10 * es, 3 * es, 2);
    assert_eq!(h.allocated(), 7);
    let attached_gen = h.info(1).attached_generation;
    let parent = h.read_all(0);
    h.ok(Op::Detach(1));
    let i = h.info(1);
    assert_eq!(
        (i.attached, i.kind, i.parent, i.reserved_bytes),
        (false, LunKind::Copy, Some(0), 0)
    );
    assert_eq!((i.exclusive_bytes, i.shared_bytes), (0, 0));
    assert_eq!(
        i.attached_generation, attached_gen,
        "detach keeps the attach generation"
    );
    assert_eq!(h.allocated(), 4, "the copy's own extents are freed");
    assert_eq!(h.pool().reserved_bytes, MIB);
    assert_eq!(h.acct(0), (4, 0, MIB / es));
    same_bytes(&h.read_all(0), &parent, "LUN 0");
    // I/O is refused.
    h.err(Op::Read(1, 0, 512), Error::Detached(1));
    h.err(Op::Write(1, 0, 512, 0), Error::Detached(1));
    h.err(Op::Discard(1, 0, 512), Error::Detached(1));
    // Detaching again changes nothing, not even the generation.
    let snap = h.snapshot();
    h.ok(Op::Detach(1));
    assert_eq!(h.snapshot(), snap);
    // Re-attach gives the parent's image again.
    h.ok(Op::Attach(1));
    same_bytes(&h.read_all(1), &parent, "LUN 1");
    h.verify_all("end");
}

#[test]
fn delete_frees_what_nobody_else_maps() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, MIB));
    h.write(0, 0, 6 * es, 1);
    h.ok(Op::CreateCopy(0, 1, true));
    h.write(1, 0, 2 * es, 2);
    h.ok(Op::CreateLun(2, 256 * KIB));
    h.write(2, 0, 256 * KIB, 3);
    assert_eq!(h.allocated(), 6 + 2 + 16);
    // Deleting a copy frees its own extents; the parent's become exclusive again.
    let parent = h.read_all(0);
    h.ok(Op::Delete(1, false));
    assert_eq!(h.allocated(), 6 + 16);
    assert_eq!(h.acct(0), (6, 0, MIB / es));
    same_bytes(&h.read_all(0), &parent, "LUN 0");
    // Deleting a plain LUN frees everything it maps.
    h.ok(Op::Delete(2, false));
    assert_eq!(h.allocated(), 6);
    assert_eq!(h.pool().reserved_bytes, MIB);
    h.err(Op::Read(2, 0, 512), Error::NoSuchLun(2));
    // The number can be reused: the new LUN reads zeros.
    h.ok(Op::CreateLun(2, 512 * KIB));
    assert!(
        h.read_all(2).iter().all(|&b| b == 0),
        "a reused number reads zeros"
    );
    // Deleting a detached copy.
    h.ok(Op::CreateCopy(0, 5, false));
    h.ok(Op::Delete(5, false));
    h.ok(Op::Delete(0, false));
    h.ok(Op::Delete(2, false));
    h.reclaim_all();
    let p = h.pool();
    assert_eq!((p.allocated_bytes, p.reserved_bytes, p.luns), (0, 0, 0));
    h.verify_all("end");
}

#[test]
fn delete_with_orphan_copies() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, MIB));
    h.write(0, 0, 5 * es, 1);
    h.ok(Op::CreateCopy(0, 1, true));
    h.ok(Op::CreateCopy(0, 2, false));
    h.ok(Op::CreateCopy(1, 3, true)); // grandchild: not a copy of 0
    h.write(1, 0, es, 2);
    let one = h.read_all(1);
    h.err(Op::Delete(0, false), Error::HasCopies { lun: 0, copies: 2 });
    h.ok(Op::Delete(0, true));
    let i1 = h.info(1);
    assert_eq!(
        (i1.kind, i1.parent, i1.attached),
        (LunKind::Lun, None, true),
        "an attached copy stands alone as a plain LUN"
    );
    same_bytes(&h.read_all(1), &one, "with its data");
    let i2 = h.info(2);
    assert_eq!(
        (i2.kind, i2.parent, i2.attached),
        (LunKind::Copy, None, false),
        "a detached copy stays a detached copy without a parent"
    );
    let i3 = h.info(3);
    assert_eq!((i3.kind, i3.parent), (LunKind::Copy, Some(1)));
    // What an orphan can and cannot do.
    h.err(Op::Attach(2), Error::ParentGone(2));
    h.err(Op::Restore(2), Error::Detached(2));
    h.err(Op::CreateCopy(2, 4, true), Error::ParentDetached(4));
    h.err(Op::Attach(1), Error::NotACopy(1));
    h.err(Op::Restore(1), Error::NotACopy(1));
    h.err(Op::Detach(1), Error::NotACopy(1));
    h.ok(Op::Detach(2)); // already detached: nothing to do
                         // Reusing the deleted number makes no one its copy.
    h.ok(Op::CreateLun(0, 128 * KIB));
    assert_eq!(h.info(2).parent, None);
    h.ok(Op::Delete(0, false));
    // The grandchild still works against its parent, now a plain LUN.
    h.write(3, 2 * es, 512, 3);
    h.ok(Op::Restore(3));
    same_bytes(&h.read_all(1), &h.read_all(3), "LUN 1");
    h.ok(Op::Delete(1, true));
    assert_eq!(h.info(3).kind, LunKind::Lun);
    h.ok(Op::Delete(2, false));
    h.ok(Op::Delete(3, false));
    assert_eq!(h.allocated(), 0);
    h.verify_all("end");
}

#[test]
fn restore_gives_the_parent_the_copy_content_and_changes_no_copy() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, MIB));
    h.write(0, 0, MIB, 1);
    h.ok(Op::CreateCopy(0, 1, true));
    h.write(0, 3 * es, 2 * es, 2);
    h.ok(Op::CreateCopy(0, 2, true));
    h.ok(Op::CreateCopy(0, 3, false));
    h.write(1, 10 * es + 512, es, 3);
    h.write(2, 20 * es, 512, 4);
    h.write(0, 40 * es, 4 * es, 5);
    let (c1, c2) = (h.read_all(1), h.read_all(2));
    let infos: Vec<LunInfo> = [1, 2, 3].iter().map(|&n| h.info(n)).collect();
    h.ok(Op::Restore(1));
    same_bytes(&h.read_all(0), &c1, "the parent reads the copy's content");
    same_bytes(&h.read_all(1), &c1, "the copy is unchanged");
    same_bytes(&h.read_all(2), &c2, "the other copy is unchanged");
    for (n, old) in [1, 2, 3].into_iter().zip(infos) {
        let new = h.info(n);
        assert_eq!(
            (
                new.kind,
                new.parent,
                new.attached,
                new.created_generation,
                new.attached_generation
            ),
            (
                old.kind,
                old.parent,
                old.attached,
                old.created_generation,
                old.attached_generation
            ),
            "restore changed the record of copy {n}"
        );
    }
    assert_eq!(
        h.acct(0).0,
        0,
        "the parent now shares everything with copy 1"
    );
    // Afterwards they are independent again.
    h.write(0, 0, es, 6);
    same_bytes(&h.read_all(1), &c1, "LUN 1");
    h.write(1, es, es, 7);
    h.ok(Op::Read(0, 0, 2 * es));
    // Restoring from a copy that never diverged, and twice in a row.
    h.ok(Op::Restore(2));
    h.ok(Op::Restore(2));
    same_bytes(&h.read_all(0), &c2, "LUN 0");
    h.verify_all("end");
}

#[test]
fn copies_of_copies() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, 512 * KIB));
    h.write(0, 0, 512 * KIB, 1);
    h.ok(Op::CreateCopy(0, 1, true));
    h.write(1, 0, es, 2);
    h.ok(Op::CreateCopy(1, 2, true));
    h.write(2, es, es, 3);
    h.ok(Op::CreateCopy(2, 3, true));
    h.write(3, 2 * es, 512, 4);
    assert_eq!(h.info(3).parent, Some(2));
    let (l0, l1) = (h.read_all(0), h.read_all(1));
    // Restoring 3 changes 2 only.
    h.ok(Op::Restore(3));
    same_bytes(&h.read_all(2), &h.read_all(3), "LUN 2");
    same_bytes(&h.read_all(1), &l1, "LUN 1");
    same_bytes(&h.read_all(0), &l0, "LUN 0");
    // Refreshing 2 takes 1's image.
    h.ok(Op::Attach(2));
    same_bytes(&h.read_all(2), &l1, "LUN 2");
    // A detached copy in the middle of the chain.
    h.ok(Op::Detach(1));
    h.err(Op::CreateCopy(1, 4, true), Error::ParentDetached(4));
    h.ok(Op::CreateCopy(1, 4, false));
    h.err(Op::Attach(2), Error::ParentDetached(2));
    h.err(Op::Restore(2), Error::ParentDetached(2));
    h.err(Op::Attach(4), Error::ParentDetached(4));
    same_bytes(
        &h.read_all(2),
        &l1,
        "a copy keeps its data when its parent is detached",
    );
    h.write(2, 3 * es, 1024, 5); // still writable
    h.ok(Op::Attach(1));
    h.ok(Op::Attach(4));
    same_bytes(&h.read_all(4), &l0, "LUN 4");
    let l2 = h.read_all(2);
    assert!(l2 != l1);
    h.ok(Op::Restore(2));
    same_bytes(&h.read_all(1), &l2, "LUN 1");
    h.verify_all("end");
}

#[test]
fn twenty_copies_of_one_parent() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, MIB));
    h.write(0, 0, 4 * es, 1);
    for c in 1..=20u32 {
        // A marker in the parent before each copy: copy c sees markers 1..=c.
        h.write(0, u64::from(c) * 2 * es, 512, 100 + u64::from(c));
        h.ok(Op::CreateCopy(0, c, true));
    }
    for c in 1..=20u32 {
        h.write(c, u64::from(c) * 2 * es + es, 1024, 200 + u64::from(c));
    }
    h.write(0, 0, es, 300);
    assert_eq!(h.pool().reserved_bytes, 21 * MIB);
    let copies = h.m.luns().iter().filter(|l| l.parent == Some(0)).count();
    assert_eq!(copies, 20);
    h.verify_all("after 20 copies");
    h.err(
        Op::Delete(0, false),
        Error::HasCopies { lun: 0, copies: 20 },
    );
    h.ok(Op::Restore(13));
    h.ok(Op::Attach(7));
    h.ok(Op::Detach(8));
    h.ok(Op::Delete(9, false));
    h.err(
        Op::Delete(0, false),
        Error::HasCopies { lun: 0, copies: 19 },
    );
    h.verify_all("end");
}

#[test]
fn discard_reads_zeros_and_frees_unshared_extents() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, MIB));
    h.write(0, 0, MIB, 1);
    h.ok(Op::Flush);
    assert_eq!(h.allocated(), 64);
    // Four whole extents: freed.
    h.ok(Op::Discard(0, es, 4 * es));
    assert_eq!(h.allocated(), 60);
    assert_eq!(h.acct(0), (60, 0, 64));
    // Part of one extent: zeros, but the extent stays.
    h.ok(Op::Discard(0, 512, 1024));
    assert_eq!(h.allocated(), 60);
    // Unaligned to extents: the two whole extents inside are freed, the ends zeroed.
    h.ok(Op::Discard(0, 10 * es - 512, 2 * es + 1024));
    assert_eq!(h.allocated(), 58);
    // Discarding a hole allocates nothing.
    h.ok(Op::Discard(0, es, es + 512));
    assert_eq!(h.allocated(), 58);
    // Shared extents: discarding them in one LUN frees nothing.
    h.ok(Op::CreateCopy(0, 1, true));
    h.ok(Op::Discard(1, 20 * es, 8 * es));
    assert_eq!(h.allocated(), 58);
    assert_eq!(h.acct(1), (0, 50, 64));
    assert_eq!(h.acct(0), (8, 50, 64));
    h.ok(Op::Discard(0, 20 * es, 8 * es));
    assert_eq!(h.allocated(), 50, "now nobody maps them");
    // A partial discard of a shared extent copies it (like a write).
    h.ok(Op::Discard(1, 30 * es + 512, 512));
    assert_eq!(h.allocated(), 51);
    // Discard the whole LUN.
    h.ok(Op::Discard(0, 0, MIB));
    assert!(
        h.read_all(0).iter().all(|&b| b == 0),
        "discarded LUN reads zeros"
    );
    assert_eq!(h.acct(0), (0, 0, 64));
    assert_eq!(h.allocated(), 50);
    // Zero length is valid.
    h.ok(Op::Discard(1, MIB, 0));
    h.verify_all("end");
}

/// The last extent of a LUN whose size is not a multiple of the extent size is
/// never a "whole extent" for discard: discarding all of the LUN only zeroes it,
/// so it stays allocated, and when it is shared a fresh extent of zeros is even
/// allocated for it.
#[test]
fn discard_of_the_whole_lun_unmaps_its_partial_tail_extent() {
    let es = 16 * KIB;
    let size = 2 * es + 4096; // the third extent is only partly inside the LUN
    let mut a = Array::format(mem(64 * MIB), &fopts(es as u32, 64)).unwrap();
    a.create_lun(0, size).unwrap();
    a.write(0, 0, &pattern(1, size as usize)).unwrap();
    a.create_copy(0, 1, true).unwrap();
    let before = a.pool_info().allocated_bytes;
    assert_eq!(before, 3 * es);
    a.discard(1, 0, size).unwrap();
    assert_eq!(
        a.pool_info().allocated_bytes,
        before,
        "discarding all of a copy allocated a new extent"
    );
    let i = a.lun_info(1).unwrap();
    assert_eq!((i.exclusive_bytes, i.shared_bytes), (0, 0), "{i:?}");
    a.discard(0, 0, size).unwrap();
    assert_eq!(a.pool_info().allocated_bytes, 0, "{:?}", a.pool_info());
    assert!(a.check().unwrap().is_empty());
}

#[test]
fn reopen_keeps_everything() {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, MIB));
    h.write(0, 0, MIB, 1);
    h.ok(Op::CreateCopy(0, 1, true));
    h.ok(Op::CreateCopy(0, 2, false));
    h.ok(Op::CreateCopy(1, 3, true));
    h.write(1, 3 * es + 512, 2 * es, 2);
    h.ok(Op::CreateLun(7, 100 * KIB + 512));
    h.write(7, 100 * KIB - 512, 1024, 3);
    h.ok(Op::CreateCopy(7, 8, true));
    h.ok(Op::Delete(7, true)); // 8 becomes a plain LUN
    h.ok(Op::CreateCopy(0, 9, false));
    h.ok(Op::CreateLun(10, 64 * KIB));
    h.ok(Op::Delete(0, true)); // 9, 2: detached orphans; 1: plain
    h.ok(Op::CreateLun(0, 2 * MIB)); // number reused
    h.write(0, MIB, es, 4);
    h.write(3, 0, 512, 5); // not flushed: close commits it
    let before = h.snapshot();
    h.ok(Op::Reopen);
    h.verify_all("after reopen");
    let after = h.snapshot();
    assert_eq!(before.0, after.0, "luns() after reopen");
    assert_eq!(before.2, after.2, "lun_numbers() after reopen");
    assert_eq!(
        after.1.generation,
        before.1.generation + 1,
        "close committed the pending writes"
    );
    // A clean close and open changes nothing at all.
    h.ok(Op::Reopen);
    assert_eq!(h.snapshot().1.generation, after.1.generation);
    // The reopened array works on.
    h.err(Op::Attach(9), Error::ParentGone(9));
    h.ok(Op::Restore(3));
    h.ok(Op::CreateCopy(3, 11, true));
    h.write(11, 0, 3 * es, 6);
    h.ok(Op::Detach(11));
    h.ok(Op::Attach(11));
    h.ok(Op::Discard(1, 0, 4 * es));
    h.ok(Op::Reopen);
    // A flush then a crash (no close) keeps everything too.
    h.write(1, 0, es, 7);
    h.ok(Op::Flush);
    let dev = h.a.take().unwrap().into_device();
    h.a = Some(Array::open(dev, &OpenOptions::default()).expect("open after crash"));
    h.verify_all("after flush and crash");
}

// ---------------------------------------------------------------------------------
// 2. Error paths: exact error, nothing changed, check() clean
// ---------------------------------------------------------------------------------

#[test]
fn format_and_open_errors() {
    for es in [
        0u32,
        3000,
        4095,
        2048,
        512,
        1 << 21,
        3 << 12,
        (1 << 20) + 4096,
    ] {
        let r = Array::format(mem(64 * MIB), &fopts(es, 16));
        assert!(
            matches!(r, Err(Error::InvalidOptions(_))),
            "extent size {es}: {:?}",
            r.err()
        );
    }
    for ml in [0u32, (1 << 20) + 1, u32::MAX] {
        let r = Array::format(mem(64 * MIB), &fopts(16384, ml));
        assert!(
            matches!(r, Err(Error::InvalidOptions(_))),
            "max_luns {ml}: {:?}",
            r.err()
        );
    }
    // The bounds themselves are accepted.
    for es in [4096u32, 1 << 20] {
        Array::format(mem(64 * MIB), &fopts(es, 1)).expect("valid extent size");
    }
    let r = Array::format(mem(64 * KIB), &fopts(16384, 16));
    assert!(
        matches!(r, Err(Error::DeviceTooSmall { .. })),
        "tiny device: {:?}",
        r.err()
    );
    let r = Array::open(mem(64 * MIB), &OpenOptions::default());
    assert!(
        matches!(r, Err(Error::NotFormatted)),
        "blank device: {:?}",
        r.err()
    );
    // A storage engine without the array header is not an array.
    let eng = lunsnap::engine::Engine::format(mem(16 * MIB), &Default::default()).expect("engine");
    let r = Array::open(eng.into_device(), &OpenOptions::default());
    assert!(
        matches!(r, Err(Error::NotAnArray)),
        "bare engine: {:?}",
        r.err()
    );
    // Device blocks must be 512 to 4096 bytes.
    let r = Array::format(MemDevice::new(8192, 8192).unwrap(), &fopts(16384, 16));
    assert!(
        matches!(r, Err(Error::UnsupportedBlockSize(8192))),
        "8 KiB blocks: {:?}",
        r.err()
    );
    // The largest max_luns is accepted, but its worst-case metadata provisioning
    // does not fit a small device.
    let r = Array::format(mem(64 * MIB), &fopts(16384, 1 << 20));
    assert!(
        matches!(r, Err(Error::DeviceTooSmall { needed, available }) if needed > available),
        "max_luns = 2^20 on 64 MiB: {:?}",
        r.err()
    );
    let r = Array::format(mem(2048 * MIB), &fopts(1 << 20, 1 << 20));
    let mut a = r.expect("max_luns = 2^20 on 2 GiB");
    a.create_lun((1 << 20) - 1, 4096).unwrap();
    assert_eq!(
        a.create_lun(1 << 20, 4096),
        Err(Error::LunOutOfRange {
            lun: 1 << 20,
            max_luns: 1 << 20
        })
    );
    assert!(a.check().unwrap().is_empty());
    // max_luns = 1: only LUN 0.
    let mut a = Array::format(mem(16 * MIB), &fopts(4096, 1)).unwrap();
    assert_eq!(
        a.create_lun(1, 4096),
        Err(Error::LunOutOfRange {
            lun: 1,
            max_luns: 1
        })
    );
    a.create_lun(0, 4096).unwrap();
    assert_eq!(
        a.create_copy(0, 1, true),
        Err(Error::LunOutOfRange {
            lun: 1,
            max_luns: 1
        })
    );
    assert!(a.check().unwrap().is_empty());
}

/// An array with some of everything: LUN 0 with data, attached copy 1 with its
/// own data, detached copy 2, plain LUN 5.
fn populated() -> Harness {
    let mut h = harness();
    let es = h.es();
    h.ok(Op::CreateLun(0, MIB));
    h.write(0, 0, 10 * es + 512, 1);
    h.ok(Op::CreateCopy(0, 1, true));
    h.write(1, 2 * es, es, 2);
    h.ok(Op::CreateCopy(0, 2, false));
    h.ok(Op::CreateLun(5, 300 * KIB));
    h.write(5, 4096, 8192, 3);
    h.write(0, 20 * es, 1024, 4); // left uncommitted on purpose
    h
}

#[test]
fn create_lun_errors() {
    let mut h = populated();
    let cap = h.cap_bytes();
    let es = h.es();
    let oor = |lun| Error::LunOutOfRange { lun, max_luns: 64 };
    h.err(Op::CreateLun(64, MIB), oor(64));
    h.err(Op::CreateLun(u32::MAX, MIB), oor(u32::MAX));
    h.err(Op::CreateLun(0, MIB), Error::LunExists(0));
    h.err(Op::CreateLun(1, MIB), Error::LunExists(1));
    h.err(Op::CreateLun(2, MIB), Error::LunExists(2)); // a detached copy
    for size in [
        0,
        1,
        511,
        513,
        1000,
        MIB + 1,
        cap + 512,
        cap + es,
        u64::MAX - 511,
        u64::MAX,
    ] {
        h.err(Op::CreateLun(3, size), lun_size_err(size));
    }
    // Not enough unreserved space.
    let unreserved = h.pool().unreserved_bytes;
    assert_eq!(unreserved, cap - 2 * MIB - 304 * KIB);
    h.err(
        Op::CreateLun(3, unreserved + 512),
        Error::NoSpace {
            needed: unreserved + es,
            available: unreserved,
        },
    );
    // Exactly the rest is fine; then nothing more.
    h.ok(Op::CreateLun(3, unreserved));
    h.err(
        Op::CreateLun(4, 512),
        Error::NoSpace {
            needed: es,
            available: 0,
        },
    );
    h.verify_all("end");
}

#[test]
fn create_copy_errors() {
    let mut h = populated();
    let es = h.es();
    let oor = |lun| Error::LunOutOfRange { lun, max_luns: 64 };
    h.err(Op::CreateCopy(0, 64, true), oor(64));
    h.err(Op::CreateCopy(0, u32::MAX, false), oor(u32::MAX));
    h.err(Op::CreateCopy(64, 3, true), oor(64));
    h.err(Op::CreateCopy(3, 4, true), Error::NoSuchLun(3));
    h.err(Op::CreateCopy(3, 4, false), Error::NoSuchLun(3));
    h.err(Op::CreateCopy(0, 5, true), Error::LunExists(5));
    h.err(Op::CreateCopy(0, 1, false), Error::LunExists(1));
    h.err(Op::CreateCopy(0, 0, true), Error::LunExists(0));
    h.err(Op::CreateCopy(2, 6, true), Error::ParentDetached(6));
    // No space for an attached copy; a detached one needs none.
    let unreserved = h.pool().unreserved_bytes;
    let filler = unreserved - MIB + es;
    h.ok(Op::CreateLun(10, filler));
    assert_eq!(h.pool().unreserved_bytes, MIB - es);
    h.err(
        Op::CreateCopy(0, 6, true),
        Error::NoSpace {
            needed: MIB,
            available: MIB - es,
        },
    );
    h.ok(Op::CreateCopy(0, 6, false));
    h.ok(Op::CreateCopy(5, 7, true)); // 300 KiB fits
    h.verify_all("end");
}

#[test]
fn attach_errors() {
    let mut h = populated();
    let es = h.es();
    let oor = |lun| Error::LunOutOfRange { lun, max_luns: 64 };
    h.err(Op::Attach(64), oor(64));
    h.err(Op::Attach(3), Error::NoSuchLun(3));
    h.err(Op::Attach(0), Error::NotACopy(0));
    h.err(Op::Attach(5), Error::NotACopy(5));
    // Parent detached.
    h.ok(Op::CreateCopy(1, 3, false));
    h.ok(Op::CreateCopy(1, 4, true));
    h.ok(Op::Detach(1));
    h.err(Op::Attach(3), Error::ParentDetached(3));
    h.err(Op::Attach(4), Error::ParentDetached(4)); // refresh of an attached copy
    h.ok(Op::Attach(1));
    // Parent gone.
    h.ok(Op::CreateCopy(5, 6, false));
    h.ok(Op::Delete(5, true));
    h.err(Op::Attach(6), Error::ParentGone(6));
    // No space to reserve again.
    let unreserved = h.pool().unreserved_bytes;
    h.ok(Op::CreateLun(10, unreserved - es));
    h.err(
        Op::Attach(2),
        Error::NoSpace {
            needed: MIB,
            available: es,
        },
    );
    // Refreshing an attached copy needs no new reservation.
    h.ok(Op::Attach(1));
    h.ok(Op::Attach(4));
    h.verify_all("end");
}

#[test]
fn detach_errors() {
    let mut h = populated();
    h.err(
        Op::Detach(64),
        Error::LunOutOfRange {
            lun: 64,
            max_luns: 64,
        },
    );
    h.err(Op::Detach(3), Error::NoSuchLun(3));
    h.err(Op::Detach(0), Error::NotACopy(0));
    h.err(Op::Detach(5), Error::NotACopy(5));
    // A copy left standing alone by its parent's deletion is a plain LUN.
    h.ok(Op::CreateCopy(5, 6, true));
    h.ok(Op::Delete(5, true));
    h.err(Op::Detach(6), Error::NotACopy(6));
    h.verify_all("end");
}

#[test]
fn delete_errors() {
    let mut h = populated();
    h.err(
        Op::Delete(64, true),
        Error::LunOutOfRange {
            lun: 64,
            max_luns: 64,
        },
    );
    h.err(Op::Delete(3, false), Error::NoSuchLun(3));
    h.err(Op::Delete(0, false), Error::HasCopies { lun: 0, copies: 2 });
    h.ok(Op::CreateCopy(0, 3, true));
    h.err(Op::Delete(0, false), Error::HasCopies { lun: 0, copies: 3 });
    h.ok(Op::CreateCopy(1, 4, false));
    h.err(Op::Delete(1, false), Error::HasCopies { lun: 1, copies: 1 });
    h.ok(Op::Delete(2, false));
    h.err(Op::Delete(0, false), Error::HasCopies { lun: 0, copies: 2 });
    h.ok(Op::Delete(3, false));
    h.ok(Op::Delete(4, false));
    h.ok(Op::Delete(1, false));
    h.ok(Op::Delete(0, false));
    h.err(Op::Delete(0, false), Error::NoSuchLun(0));
    h.verify_all("end");
}

#[test]
fn restore_errors() {
    let mut h = populated();
    h.err(
        Op::Restore(64),
        Error::LunOutOfRange {
            lun: 64,
            max_luns: 64,
        },
    );
    h.err(Op::Restore(3), Error::NoSuchLun(3));
    h.err(Op::Restore(0), Error::NotACopy(0));
    h.err(Op::Restore(5), Error::NotACopy(5));
    h.err(Op::Restore(2), Error::Detached(2));
    // Parent detached.
    h.ok(Op::CreateCopy(1, 3, true));
    h.ok(Op::Detach(1));
    h.err(Op::Restore(3), Error::ParentDetached(3));
    // Orphans: attached ones are plain LUNs, detached ones are detached.
    h.ok(Op::Attach(1));
    h.ok(Op::CreateCopy(5, 6, true));
    h.ok(Op::CreateCopy(5, 7, false));
    h.ok(Op::Delete(5, true));
    h.err(Op::Restore(6), Error::NotACopy(6));
    h.err(Op::Restore(7), Error::Detached(7));
    h.verify_all("end");
}

#[test]
fn io_errors() {
    let mut h = populated();
    let size = MIB;
    let oor = |lun| Error::LunOutOfRange { lun, max_luns: 64 };
    let out = |offset, len| Error::OutOfRange { offset, len, size };
    let bad = |offset, len| Error::Misaligned { offset, len };
    type Mk = fn(u32, u64, u64) -> Op;
    let kinds: [(&str, Mk); 3] = [
        ("read", |n, o, l| Op::Read(n, o, l)),
        ("write", |n, o, l| Op::Write(n, o, l, 9)),
        ("discard", |n, o, l| Op::Discard(n, o, l)),
    ];
    for (name, mk) in kinds {
        let cases: Vec<(Op, Error)> = vec![
            (mk(64, 0, 512), oor(64)),
            (mk(u32::MAX, 0, 512), oor(u32::MAX)),
            (mk(3, 0, 512), Error::NoSuchLun(3)),
            (mk(2, 0, 512), Error::Detached(2)),
            (mk(2, 1, 3), Error::Detached(2)),
            (mk(0, 1, 512), bad(1, 512)),
            (mk(0, 511, 512), bad(511, 512)),
            (mk(0, 4096, 100), bad(4096, 100)),
            (mk(0, 512, 513), bad(512, 513)),
            (mk(0, size + 1, 1), bad(size + 1, 1)),
            (mk(0, size, 512), out(size, 512)),
            (mk(0, size - 512, 1024), out(size - 512, 1024)),
            (mk(0, 0, size + 512), out(0, size + 512)),
            (mk(0, size + 512, 0), out(size + 512, 0)),
            (mk(0, u64::MAX - 511, 512), out(u64::MAX - 511, 512)),
        ];
        for (op, e) in cases {
            eprintln!("{name}: {op:?}");
            h.err(op, e);
        }
    }
    // Lengths that overflow the offset (no buffer can be that big: discard only).
    h.err(
        Op::Discard(0, 512, u64::MAX - 511),
        out(512, u64::MAX - 511),
    );
    h.err(Op::Discard(0, 0, u64::MAX), bad(0, u64::MAX));
    h.err(
        Op::Discard(0, u64::MAX - 511, 1024),
        out(u64::MAX - 511, 1024),
    );
    // Info about LUNs that do not exist.
    let snap = h.snapshot();
    assert_eq!(h.a().lun_info(64), Err(oor(64)));
    assert_eq!(h.a().lun_info(u32::MAX), Err(oor(u32::MAX)));
    assert_eq!(h.a().lun_info(3), Err(Error::NoSuchLun(3)));
    assert_eq!(h.snapshot(), snap);
    h.verify_all("end");
}

// ---------------------------------------------------------------------------------
// 3. Accounting, step by step with numbers worked out by hand
// ---------------------------------------------------------------------------------

#[test]
fn accounting_is_exact_step_by_step() {
    let mut h = harness();
    let es = h.es();
    let cap = h.cap_bytes() / es;
    let lun = MIB / es; // 64 extents
    let pool = |h: &mut Harness| {
        let p = h.pool();
        assert_eq!(p.unreserved_bytes, p.capacity_bytes - p.reserved_bytes);
        assert_eq!(p.free_bytes, p.capacity_bytes - p.allocated_bytes);
        (h.allocated(), p.reserved_bytes / es, p.luns)
    };
    h.ok(Op::CreateLun(0, MIB));
    assert_eq!(h.acct(0), (0, 0, lun));
    assert_eq!(pool(&mut h), (0, lun, 1));
    // k = 5 extents written (whole and partial).
    h.write(0, 0, 3 * es, 1);
    h.write(0, 11 * es - 512, 1024, 2); // the end of 10 and the start of 11
    assert_eq!(h.acct(0), (5, 0, lun));
    assert_eq!(pool(&mut h), (5, lun, 1));
    // Rewriting them (uncommitted: in place) changes nothing.
    h.write(0, 0, 3 * es, 4);
    assert_eq!(h.acct(0), (5, 0, lun));
    assert_eq!(pool(&mut h), (5, lun, 1));
    // An attached copy shares all of them.
    h.ok(Op::CreateCopy(0, 1, true));
    assert_eq!(h.acct(0), (0, 5, lun));
    assert_eq!(h.acct(1), (0, 5, lun));
    assert_eq!(pool(&mut h), (5, 2 * lun, 2));
    // j = 3 new extents in the parent.
    h.write(0, 30 * es, 3 * es, 5);
    assert_eq!(h.acct(0), (3, 5, lun));
    assert_eq!(h.acct(1), (0, 5, lun));
    assert_eq!(pool(&mut h), (8, 2 * lun, 2));
    // The parent overwrites 2 shared extents: they are copied.
    h.write(0, 0, 512, 6);
    h.write(0, es + 1024, 512, 7);
    assert_eq!(h.acct(0), (5, 3, lun));
    assert_eq!(h.acct(1), (2, 3, lun));
    assert_eq!(pool(&mut h), (10, 2 * lun, 2));
    // The copy writes an extent the parent maps alone and it does not.
    h.write(1, 30 * es, 512, 8);
    assert_eq!(h.acct(1), (3, 3, lun));
    assert_eq!(h.acct(0), (5, 3, lun));
    assert_eq!(pool(&mut h), (11, 2 * lun, 2));
    // A committed exclusive extent rewritten: a new extent replaces it.
    h.ok(Op::Flush);
    h.write(1, 30 * es + 512, 512, 9);
    assert_eq!(h.acct(1), (3, 3, lun));
    assert_eq!(pool(&mut h), (11, 2 * lun, 2));
    // A detached copy changes no figure but the LUN count.
    h.ok(Op::CreateCopy(0, 2, false));
    assert_eq!(h.acct(2), (0, 0, 0));
    assert_eq!(pool(&mut h), (11, 2 * lun, 3));
    // An attached copy of the copy: 1 and 3 share all 6 of 1's.
    h.ok(Op::CreateCopy(1, 3, true));
    assert_eq!(h.acct(1), (0, 6, lun));
    assert_eq!(h.acct(3), (0, 6, lun));
    assert_eq!(h.acct(0), (5, 3, lun));
    assert_eq!(pool(&mut h), (11, 3 * lun, 4));
    // Restore 1 into 0: 0 maps 1's 6 extents, its 5 own are freed.
    h.ok(Op::Restore(1));
    assert_eq!(h.acct(0), (0, 6, lun));
    assert_eq!(h.acct(1), (0, 6, lun));
    assert_eq!(h.acct(3), (0, 6, lun));
    assert_eq!(pool(&mut h), (6, 3 * lun, 4));
    // Attach 2: it shares 0's 6 too.
    h.ok(Op::Attach(2));
    assert_eq!(h.acct(2), (0, 6, lun));
    assert_eq!(pool(&mut h), (6, 4 * lun, 4));
    h.ok(Op::Detach(2));
    assert_eq!(pool(&mut h), (6, 3 * lun, 4));
    h.ok(Op::Delete(3, false));
    assert_eq!(h.acct(0), (0, 6, lun));
    assert_eq!(pool(&mut h), (6, 2 * lun, 3));
    // Discard all of 0: 1 keeps them, now exclusively.
    h.ok(Op::Discard(0, 0, MIB));
    assert_eq!(h.acct(0), (0, 0, lun));
    assert_eq!(h.acct(1), (6, 0, lun));
    assert_eq!(pool(&mut h), (6, 2 * lun, 3));
    // An odd-sized LUN reserves whole extents.
    h.ok(Op::CreateLun(4, 2 * es + 512));
    h.write(4, 0, 2 * es + 512, 10);
    assert_eq!(h.acct(4), (3, 0, 3));
    assert_eq!(pool(&mut h), (9, 2 * lun + 3, 4));
    h.ok(Op::Delete(0, true));
    assert_eq!(h.info(1).kind, LunKind::Lun);
    assert_eq!(pool(&mut h), (9, lun + 3, 3));
    h.ok(Op::Delete(1, false));
    h.ok(Op::Delete(2, false));
    h.ok(Op::Delete(4, false));
    h.reclaim_all();
    let p = h.pool();
    assert_eq!(
        (
            p.allocated_bytes,
            p.reserved_bytes,
            p.unreserved_bytes,
            p.luns
        ),
        (0, 0, cap * es, 0)
    );
    h.verify_all("end");
}

// ---------------------------------------------------------------------------------
// 4. check() reports corruption
// ---------------------------------------------------------------------------------

#[test]
fn check_reports_a_wrong_refcount() {
    let mut h = harness();
    h.ok(Op::CreateLun(0, MIB));
    h.write(0, 0, 512, 1);
    h.ok(Op::Flush);
    // Extents are allocated in log order: the first write took extent 0.
    assert_eq!(h.a().engine().data_refcounts(0).unwrap(), (1, 1));
    h.a().engine().inc_data(0).unwrap();
    let v = h.a().check().unwrap();
    assert!(
        v.contains(&ArrayViolation::Engine(
            lunsnap::engine::Violation::DataRefcount {
                extent: 0,
                stored: 2,
                found: 1
            }
        )),
        "check() missed the wrong refcount: {v:#?}"
    );
    assert!(
        v.iter().all(|x| matches!(
            x,
            ArrayViolation::Engine(lunsnap::engine::Violation::DataRefcount { extent: 0, .. })
        )),
        "unexpected other violations: {v:#?}"
    );
    // Repairing it makes the array consistent again.
    h.a().engine().dec_data(0).unwrap();
    h.verify_all("after repair");

    // A shared extent: one reference from one (shared) mapping leaf.
    h.ok(Op::CreateCopy(0, 1, true));
    assert_eq!(h.a().engine().data_refcounts(0).unwrap(), (1, 1));
    h.a().engine().inc_data(0).unwrap();
    let v = h.a().check().unwrap();
    assert!(
        v.contains(&ArrayViolation::Engine(
            lunsnap::engine::Violation::DataRefcount {
                extent: 0,
                stored: 2,
                found: 1
            }
        )),
        "{v:#?}"
    );
    h.a().engine().dec_data(0).unwrap();
    h.verify_all("after second repair");
}

// ---------------------------------------------------------------------------------
// Deterministic random sequences against the model
// ---------------------------------------------------------------------------------

fn random_op(r: &mut Rng, m: &Model) -> Op {
    let es = m.extent_size();
    let max_luns = m.pool_info().max_luns;
    let luns = m.luns();
    // A LUN number: mostly one that satisfies `want`, else any number including
    // a few out of range.
    let pick = |r: &mut Rng, want: &dyn Fn(&LunInfo) -> bool| -> u32 {
        let ks: Vec<u32> = luns.iter().filter(|l| want(l)).map(|l| l.lun).collect();
        if r.chance(85) && !ks.is_empty() {
            ks[r.below(ks.len() as u64) as usize]
        } else {
            r.below(u64::from(max_luns) + 2) as u32
        }
    };
    // A number: mostly a free one.
    let free = |r: &mut Rng| -> u32 {
        let ks: Vec<u32> = (0..max_luns)
            .filter(|&n| luns.iter().all(|l| l.lun != n))
            .collect();
        if r.chance(85) && !ks.is_empty() {
            ks[r.below(ks.len() as u64) as usize]
        } else {
            r.below(u64::from(max_luns) + 2) as u32
        }
    };
    let any = |_: &LunInfo| true;
    let attached = |l: &LunInfo| l.attached;
    let copy = |l: &LunInfo| l.kind == LunKind::Copy;
    let sizes = [
        512,
        es,
        es + es / 2,
        5 * es,
        64 * KIB + 512,
        256 * KIB,
        256 * KIB,
        MIB,
        MIB,
        2 * MIB,
        0,
        777,
    ];
    // An I/O range of LUN n: mostly valid, sometimes misaligned or out of range.
    let range = |r: &mut Rng, n: u32| -> (u64, u64) {
        let size = m.lun_info(n).map_or(MIB, |l| l.size);
        let sectors = size / 512;
        let off = r.below(sectors) * 512;
        let max = (sectors - off / 512).min(4 * es / 512);
        let len = (1 + r.below(max)) * 512;
        match r.below(25) {
            0 => (off + 1, len),
            1 => (off, len + 100),
            2 => (off, len + size),
            3 | 4 => {
                // Whole extents.
                let start = off / es * es;
                let n = 1 + r.below(3);
                (start, (n * es).min(size - start))
            }
            _ => (off, len),
        }
    };
    match r.below(100) {
        0..=29 => {
            let n = pick(r, &attached);
            let (o, l) = range(r, n);
            Op::Write(n, o, l, r.next_u64())
        }
        30..=36 => {
            let n = pick(r, &attached);
            let (o, l) = range(r, n);
            Op::Read(n, o, l)
        }
        37..=43 => {
            let n = pick(r, &attached);
            let (o, l) = range(r, n);
            Op::Discard(n, o, l)
        }
        44..=52 => {
            let size = sizes[r.below(sizes.len() as u64) as usize];
            Op::CreateLun(free(r), size)
        }
        53..=63 => Op::CreateCopy(pick(r, &any), free(r), r.chance(75)),
        64..=71 => Op::Attach(pick(r, &copy)),
        72..=76 => Op::Detach(pick(r, &copy)),
        77..=83 => Op::Delete(pick(r, &any), r.chance(50)),
        84..=92 => Op::Restore(pick(r, &copy)),
        93..=97 => Op::Flush,
        _ => Op::Reopen,
    }
}

/// `steps` random operations (seeded) on an array over `dev`, checked against
/// the model after each one.
fn random_sequence(seed: u64, steps: usize, dev: MemDevice, extent_size: u32) {
    let mut h = Harness::on(dev, extent_size, 8);
    let mut r = Rng::new(seed);
    let (mut oks, mut errs) = (0u32, 0u32);
    // Per kind of operation: (succeeded, refused).
    let mut kinds: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for step in 0..steps {
        let op = random_op(&mut r, &h.m);
        let kind = kinds.entry(op.kind()).or_default();
        match h.run(&op) {
            Ok(()) => {
                oks += 1;
                kind.0 += 1;
            }
            Err(_) => {
                errs += 1;
                kind.1 += 1;
            }
        }
        if step % 25 == 24 {
            h.verify_all(&format!("seed {seed} step {step}"));
        }
    }
    h.ok(Op::Reopen);
    println!(
        "seed {seed}: {oks} succeeded, {errs} refused; (succeeded, refused) by kind {kinds:?}"
    );
    h.verify_all(&format!("seed {seed} end"));
    assert!(
        oks > steps as u32 / 3,
        "seed {seed}: only {oks} ops succeeded"
    );
    assert!(errs > 0, "seed {seed}: no refusal exercised");
}

/// A small pool (4 MiB, 4 KiB extents) so that reservations run out often.
#[test]
fn random_sequences_match_the_model_seed_1() {
    random_sequence(1, 1000, mem(4 * MIB), 4096);
}

#[test]
fn random_sequences_match_the_model_seed_2() {
    random_sequence(2, 1000, mem(4 * MIB), 4096);
}

#[test]
fn random_sequences_match_the_model_seed_3() {
    random_sequence(3, 1000, mem(4 * MIB), 4096);
}

/// Device blocks larger than a sector: sector I/O goes through read-modify-write.
#[test]
fn random_sequences_on_a_4k_block_device() {
    let dev = MemDevice::new(4096, 4 * MIB / 4096).unwrap();
    random_sequence(4, 600, dev, 16 * 1024);
}

/// The largest extent size: every copy-on-write copies 1 MiB.
#[test]
fn random_sequences_with_1m_extents() {
    random_sequence(5, 300, mem(32 * MIB), 1 << 20);
}
