//! Integration tests of the array's operations (docs/DESIGN.md §2): every management
//! operation's success path and every refusal, sector I/O against a byte model,
//! discard, reopen, exact space accounting, and `check()` after every step.
//!
//! The tests drive the array through a [`Harness`] that applies each operation to
//! the array and to an independent model at the same time. The model keeps, per LUN,
//! its bytes and a map from logical extent to a "physical extent token"; a write
//! into an extent that another LUN also maps takes a fresh token (copy-on-write).
//! From it follow the exact expectations: an extent is exclusive to a LUN iff no
//! other LUN maps it, allocated bytes are the distinct tokens, reservations are the
//! rounded-up sizes of the LUNs that are not detached, and each management
//! operation is one commit (one generation). After every operation the harness
//! compares `luns()` and `pool_info()` field by field, the content of the LUNs the
//! operation touched (all of them in `verify_all`), and runs `check()`. When an
//! operation is refused, it also asserts that nothing changed.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::mem;
use lunsnap::testing::Rng;
use lunsnap::{
    Array, ArrayViolation, BlockDevice, Error, FormatOptions, LunInfo, LunKind, MemDevice,
    OpenOptions, PoolInfo, SECTOR,
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
// The model
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
                if let Some(p) = m.luns.get(&n).and_then(|l| l.parent) {
                    v.push(p);
                }
                v
            }
            Op::Flush | Op::Reopen => m.luns.keys().copied().collect(),
        }
    }
}

#[derive(Clone, Debug)]
struct MLun {
    size: u64,
    kind: LunKind,
    parent: Option<u32>,
    attached: bool,
    created_gen: u64,
    attached_gen: u64,
    /// The LUN's bytes (empty while detached).
    data: Vec<u8>,
    /// Logical extent → physical extent token.
    map: BTreeMap<u64, u64>,
}

struct Model {
    es: u64,
    /// Extents the pool holds for LUNs.
    cap: u64,
    max_luns: u32,
    luns: BTreeMap<u32, MLun>,
    next_token: u64,
    /// Generation of the newest commit.
    gen: u64,
    /// Uncommitted data writes exist.
    dirty: bool,
}

impl Model {
    fn ext(&self, size: u64) -> u64 {
        size.div_ceil(self.es)
    }

    fn reserved_extents(&self) -> u64 {
        self.luns
            .values()
            .filter(|l| l.attached)
            .map(|l| self.ext(l.size))
            .sum()
    }

    fn number(&self, n: u32) -> Result<(), Error> {
        if n >= self.max_luns {
            return Err(Error::LunOutOfRange {
                lun: n,
                max_luns: self.max_luns,
            });
        }
        Ok(())
    }

    fn get(&self, n: u32) -> Result<&MLun, Error> {
        self.number(n)?;
        self.luns.get(&n).ok_or(Error::NoSuchLun(n))
    }

    fn reserve(&self, extra: u64) -> Result<(), Error> {
        let free = self.cap - self.reserved_extents();
        if extra > free {
            return Err(Error::NoSpace {
                needed: extra * self.es,
                available: free * self.es,
            });
        }
        Ok(())
    }

    /// The parent whose image copy `n` takes (attach, restore).
    fn image_parent(&self, n: u32, c: &MLun) -> Result<u32, Error> {
        if c.kind != LunKind::Copy {
            return Err(Error::NotACopy(n));
        }
        let pn = c.parent.ok_or(Error::ParentGone(n))?;
        let p = self.luns.get(&pn).ok_or(Error::ParentGone(n))?;
        if !p.attached {
            return Err(Error::ParentDetached(n));
        }
        Ok(pn)
    }

    fn io_check(&self, n: u32, offset: u64, len: u64) -> Result<(), Error> {
        let l = self.get(n)?;
        if !l.attached {
            return Err(Error::Detached(n));
        }
        if offset % SECTOR != 0 || len % SECTOR != 0 {
            return Err(Error::Misaligned { offset, len });
        }
        if offset.checked_add(len).map_or(true, |e| e > l.size) {
            return Err(Error::OutOfRange {
                offset,
                len,
                size: l.size,
            });
        }
        Ok(())
    }

    /// What the contract says the operation returns.
    fn predict(&self, op: &Op) -> Result<(), Error> {
        match *op {
            Op::CreateLun(n, size) => {
                self.number(n)?;
                if self.luns.contains_key(&n) {
                    return Err(Error::LunExists(n));
                }
                if size == 0 || size % SECTOR != 0 || self.ext(size) > self.cap {
                    return Err(lun_size_err(size));
                }
                self.reserve(self.ext(size))
            }
            Op::CreateCopy(parent, n, attached) => {
                self.number(n)?;
                let p = self.get(parent)?;
                if self.luns.contains_key(&n) {
                    return Err(Error::LunExists(n));
                }
                if attached && !p.attached {
                    return Err(Error::ParentDetached(n));
                }
                if attached {
                    self.reserve(self.ext(p.size))?;
                }
                Ok(())
            }
            Op::Attach(n) => {
                let c = self.get(n)?;
                self.image_parent(n, c)?;
                if !c.attached {
                    self.reserve(self.ext(c.size))?;
                }
                Ok(())
            }
            Op::Detach(n) => {
                if self.get(n)?.kind != LunKind::Copy {
                    return Err(Error::NotACopy(n));
                }
                Ok(())
            }
            Op::Delete(n, orphan) => {
                self.get(n)?;
                let copies = self.luns.values().filter(|l| l.parent == Some(n)).count() as u32;
                if copies > 0 && !orphan {
                    return Err(Error::HasCopies { lun: n, copies });
                }
                Ok(())
            }
            Op::Restore(n) => {
                let c = self.get(n)?;
                if c.kind == LunKind::Copy && !c.attached {
                    return Err(Error::Detached(n));
                }
                self.image_parent(n, c).map(|_| ())
            }
            Op::Write(n, off, len, _) | Op::Read(n, off, len) | Op::Discard(n, off, len) => {
                self.io_check(n, off, len)
            }
            Op::Flush | Op::Reopen => Ok(()),
        }
    }

    fn fresh_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Tokens mapped by LUNs other than `n`.
    fn others(&self, n: u32) -> HashSet<u64> {
        self.luns
            .iter()
            .filter(|(&o, _)| o != n)
            .flat_map(|(_, l)| l.map.values().copied())
            .collect()
    }

    /// Logical extent `le` of LUN `n` is written: it keeps its extent only if it
    /// is mapped and no other LUN maps that extent.
    fn touch(&mut self, n: u32, le: u64, others: &HashSet<u64>) {
        let keep = self.luns[&n]
            .map
            .get(&le)
            .is_some_and(|t| !others.contains(t));
        if !keep {
            let t = self.fresh_token();
            self.luns.get_mut(&n).unwrap().map.insert(le, t);
        }
    }

    fn commit(&mut self) {
        self.gen += 1;
        self.dirty = false;
    }

    /// Applies an operation that succeeded.
    fn apply(&mut self, op: &Op) {
        let next = self.gen + 1;
        match *op {
            Op::CreateLun(n, size) => {
                self.luns.insert(
                    n,
                    MLun {
                        size,
                        kind: LunKind::Lun,
                        parent: None,
                        attached: true,
                        created_gen: next,
                        attached_gen: next,
                        data: vec![0; size as usize],
                        map: BTreeMap::new(),
                    },
                );
                self.commit();
            }
            Op::CreateCopy(parent, n, attached) => {
                let p = self.luns[&parent].clone();
                self.luns.insert(
                    n,
                    MLun {
                        size: p.size,
                        kind: LunKind::Copy,
                        parent: Some(parent),
                        attached,
                        created_gen: next,
                        attached_gen: if attached { next } else { 0 },
                        data: if attached { p.data } else { Vec::new() },
                        map: if attached { p.map } else { BTreeMap::new() },
                    },
                );
                self.commit();
            }
            Op::Attach(n) => {
                let pn = self.luns[&n].parent.unwrap();
                let p = self.luns[&pn].clone();
                let c = self.luns.get_mut(&n).unwrap();
                c.data = p.data;
                c.map = p.map;
                c.attached = true;
                c.attached_gen = next;
                self.commit();
            }
            Op::Detach(n) => {
                let c = self.luns.get_mut(&n).unwrap();
                if c.attached {
                    c.attached = false;
                    c.data = Vec::new();
                    c.map.clear();
                    self.commit();
                }
            }
            Op::Delete(n, _) => {
                for l in self.luns.values_mut().filter(|l| l.parent == Some(n)) {
                    l.parent = None;
                    if l.attached {
                        l.kind = LunKind::Lun;
                    }
                }
                self.luns.remove(&n);
                self.commit();
            }
            Op::Restore(n) => {
                let c = self.luns[&n].clone();
                let p = self.luns.get_mut(&c.parent.unwrap()).unwrap();
                p.data = c.data;
                p.map = c.map;
                self.commit();
            }
            Op::Write(n, off, len, seed) => {
                let buf = pattern(seed, len as usize);
                let (o, l) = (off as usize, len as usize);
                self.luns.get_mut(&n).unwrap().data[o..o + l].copy_from_slice(&buf);
                let others = self.others(n);
                if len > 0 {
                    for le in off / self.es..=(off + len - 1) / self.es {
                        self.touch(n, le, &others);
                    }
                    self.dirty = true;
                }
            }
            Op::Read(..) => {}
            Op::Discard(_, _, 0) => {} // checks its arguments, changes nothing
            Op::Discard(n, off, len) => {
                let (o, l) = (off as usize, len as usize);
                self.luns.get_mut(&n).unwrap().data[o..o + l].fill(0);
                let others = self.others(n);
                let end = off + len;
                let mut pos = off;
                while pos < end {
                    let le = pos / self.es;
                    let within = pos % self.es;
                    let chunk = (self.es - within).min(end - pos);
                    // A chunk reaching the end of the LUN covers its (partial) last
                    // extent whole.
                    let whole =
                        within == 0 && (chunk == self.es || pos + chunk == self.luns[&n].size);
                    if self.luns[&n].map.contains_key(&le) {
                        if whole {
                            self.luns.get_mut(&n).unwrap().map.remove(&le);
                        } else {
                            self.touch(n, le, &others);
                        }
                    }
                    pos += chunk;
                }
                self.commit();
            }
            Op::Flush | Op::Reopen => {
                if self.dirty {
                    self.commit();
                }
            }
        }
    }

    /// Expected `luns()` and the expected pool figures (allocated, reserved).
    fn expected_infos(&self) -> (Vec<LunInfo>, u64, u64) {
        let mut count: HashMap<u64, u32> = HashMap::new();
        for l in self.luns.values() {
            for &t in l.map.values() {
                *count.entry(t).or_default() += 1;
            }
        }
        let infos = self
            .luns
            .iter()
            .map(|(&n, l)| {
                let shared = l.map.values().filter(|t| count[t] > 1).count() as u64;
                let exclusive = l.map.len() as u64 - shared;
                LunInfo {
                    lun: n,
                    size: l.size,
                    kind: l.kind,
                    parent: l.parent,
                    attached: l.attached,
                    online: true,
                    created_generation: l.created_gen,
                    attached_generation: l.attached_gen,
                    reserved_bytes: if l.attached {
                        self.ext(l.size) * self.es
                    } else {
                        0
                    },
                    exclusive_bytes: exclusive * self.es,
                    shared_bytes: shared * self.es,
                }
            })
            .collect();
        (
            infos,
            count.len() as u64 * self.es,
            self.reserved_extents() * self.es,
        )
    }
}

// ---------------------------------------------------------------------------------
// The harness: array and model side by side
// ---------------------------------------------------------------------------------

struct Harness {
    a: Option<A>,
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
        let mut a = Array::format(dev, &fopts(extent_size, max_luns)).expect("format");
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
        assert!(a.luns().unwrap().is_empty());
        assert!(a.lun_numbers().is_empty());
        let mut h = Harness {
            m: Model {
                es: u64::from(extent_size),
                cap: p.capacity_bytes / u64::from(extent_size),
                max_luns,
                luns: BTreeMap::new(),
                next_token: 0,
                gen: p.generation,
                dirty: false,
            },
            a: Some(a),
            early_commits: 0,
        };
        h.verify_all("after format");
        h
    }

    fn a(&mut self) -> &mut A {
        self.a.as_mut().expect("array")
    }

    fn es(&self) -> u64 {
        self.m.es
    }

    fn cap_bytes(&self) -> u64 {
        self.m.cap * self.m.es
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
    fn allocated(&mut self) -> u64 {
        self.pool().allocated_bytes / self.es()
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
        let predicted = self.m.predict(op);
        assert_eq!(
            self.pool().generation,
            self.m.gen,
            "generation before {op:?}"
        );
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
                    let (o, l) = (*off as usize, *len as usize);
                    assert!(
                        b[..] == self.m.luns[n].data[o..o + l],
                        "{op:?}: read returned other bytes than were written"
                    );
                }
                self.m.apply(op);
                let actual = self.pool().generation;
                if matches!(op, Op::Write(..) | Op::Discard(..)) && actual > self.m.gen {
                    // The write path may commit early to reuse freed extents.
                    self.early_commits += actual - self.m.gen;
                    self.m.gen = actual;
                }
                assert_eq!(actual, self.m.gen, "generation after {op:?}");
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
        let predicted = self.m.predict(&op);
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

    /// Accounting of every LUN and the pool, content of `luns`, `check()`.
    fn verify(&mut self, ctx: &str, luns: &[u32]) {
        let (infos, allocated, reserved) = self.m.expected_infos();
        let expected_numbers: Vec<u32> = self.m.luns.keys().copied().collect();
        let cap = self.cap_bytes();
        let (es, max_luns, gen, count) = (
            self.m.es as u32,
            self.m.max_luns,
            self.m.gen,
            self.m.luns.len() as u32,
        );
        let a = self.a();
        assert_eq!(a.lun_numbers(), expected_numbers, "{ctx}: lun_numbers()");
        let got = a.luns().expect("luns()");
        assert_eq!(got.len(), infos.len(), "{ctx}: luns() {got:#?}");
        for (g, e) in got.iter().zip(&infos) {
            assert_eq!(g, e, "{ctx}: lun_info({})", e.lun);
        }
        let p = a.pool_info();
        let expected_pool = PoolInfo {
            capacity_bytes: cap,
            allocated_bytes: allocated,
            reserved_bytes: reserved,
            unreserved_bytes: cap - reserved,
            free_bytes: cap - allocated,
            metadata_used_bytes: p.metadata_used_bytes,
            metadata_provisioned_bytes: p.metadata_provisioned_bytes,
            extent_size: es,
            luns: count,
            max_luns,
            generation: gen,
        };
        assert_eq!(p, expected_pool, "{ctx}: pool_info()");
        assert!(
            p.metadata_used_bytes <= p.metadata_provisioned_bytes,
            "{ctx}: {p:?}"
        );
        for &n in luns {
            let Some(l) = self.m.luns.get(&n) else {
                continue;
            };
            if l.attached {
                let want = l.data.clone();
                let got = self.read_all(n);
                assert!(
                    got == want,
                    "{ctx}: content of LUN {n} differs from the model"
                );
            } else {
                let mut b = [0u8; 512];
                assert_eq!(
                    self.a().read(n, 0, &mut b),
                    Err(Error::Detached(n)),
                    "{ctx}: read of detached copy {n}"
                );
            }
        }
        let v = self.a().check().expect("check()");
        assert!(v.is_empty(), "{ctx}: check() reported {v:#?}");
    }

    fn verify_all(&mut self, ctx: &str) {
        let all: Vec<u32> = self.m.luns.keys().copied().collect();
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
        let size = h.m.luns[&n].size;
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
    let copies = h.m.luns.values().filter(|l| l.parent == Some(0)).count();
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
        (p.allocated_bytes / es, p.reserved_bytes / es, p.luns)
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
    let es = m.es;
    // A LUN number: mostly one that satisfies `want`, else any number including
    // a few out of range.
    let pick = |r: &mut Rng, want: &dyn Fn(&MLun) -> bool| -> u32 {
        let ks: Vec<u32> = m
            .luns
            .iter()
            .filter(|(_, l)| want(l))
            .map(|(&n, _)| n)
            .collect();
        if r.chance(85) && !ks.is_empty() {
            ks[r.below(ks.len() as u64) as usize]
        } else {
            r.below(u64::from(m.max_luns) + 2) as u32
        }
    };
    // A number: mostly a free one.
    let free = |r: &mut Rng| -> u32 {
        let ks: Vec<u32> = (0..m.max_luns)
            .filter(|n| !m.luns.contains_key(n))
            .collect();
        if r.chance(85) && !ks.is_empty() {
            ks[r.below(ks.len() as u64) as usize]
        } else {
            r.below(u64::from(m.max_luns) + 2) as u32
        }
    };
    let any = |_: &MLun| true;
    let attached = |l: &MLun| l.attached;
    let copy = |l: &MLun| l.kind == LunKind::Copy;
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
        let size = m.luns.get(&n).map_or(MIB, |l| l.size);
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
    for step in 0..steps {
        let op = random_op(&mut r, &h.m);
        match h.run(&op) {
            Ok(()) => oks += 1,
            Err(_) => errs += 1,
        }
        if step % 25 == 24 {
            h.verify_all(&format!("seed {seed} step {step}"));
        }
    }
    h.ok(Op::Reopen);
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
