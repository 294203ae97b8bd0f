//! The operations, and a harness that applies each to an array and to the model.

use lunsnap::testing::{Mismatch, Model};
use lunsnap::{Access, Array, BlockDevice, Error, FormatOptions, OpenOptions, SECTOR};

use crate::pattern;

/// One operation of a test: an array method, or (for the tests that handle them)
/// a reopen and a power cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `create_lun(lun, size)`.
    CreateLun { lun: u32, size: u64 },
    /// `create_copy(parent, lun, attached)`.
    CreateCopy {
        parent: u32,
        lun: u32,
        attached: bool,
    },
    /// `attach(lun)`.
    Attach(u32),
    /// `detach(lun)`.
    Detach(u32),
    /// `delete(lun, orphan)`.
    Delete { lun: u32, orphan: bool },
    /// `restore(lun)`.
    Restore(u32),
    /// `write(lun, offset, pattern of tag)`; tag 0 writes zeros.
    Write {
        lun: u32,
        offset: u64,
        len: u64,
        tag: u64,
    },
    /// `read(lun, offset, len)`, compared with the model.
    Read { lun: u32, offset: u64, len: u64 },
    /// `discard(lun, offset, len)`.
    Discard { lun: u32, offset: u64, len: u64 },
    /// `create_copies(pairs, attached)`: a consistency group.
    CreateCopies {
        pairs: Vec<(u32, u32)>,
        attached: bool,
    },
    /// `attach_many(copies)`.
    AttachMany(Vec<u32>),
    /// `set_online(lun, online)`.
    SetOnline { lun: u32, online: bool },
    /// `add_host(id, name)`.
    AddHost { id: u64, name: String },
    /// `remove_host(id)`.
    RemoveHost(u64),
    /// `grant(lun, host, access)`.
    Grant { lun: u32, host: u64, access: Access },
    /// `revoke(lun, host)`.
    Revoke { lun: u32, host: u64 },
    /// `set_security(enabled)`.
    SetSecurity(bool),
    /// `write_as(host, lun, offset, pattern of tag)`.
    WriteAs {
        host: u64,
        lun: u32,
        offset: u64,
        len: u64,
        tag: u64,
    },
    /// `read_as(host, lun, offset, len)`, compared with the model.
    ReadAs {
        host: u64,
        lun: u32,
        offset: u64,
        len: u64,
    },
    /// `discard_as(host, lun, offset, len)`.
    DiscardAs {
        host: u64,
        lun: u32,
        offset: u64,
        len: u64,
    },
    /// `write_zeroes(lun, offset, len, punch)`, on behalf of `host` if given.
    WriteZeroes {
        host: Option<u64>,
        lun: u32,
        offset: u64,
        len: u64,
        punch: bool,
    },
    /// `set_detect_zeros(on)` (a setting of the handle: a reopen turns it back on).
    SetDetectZeros(bool),
    /// `map(lun, offset, len)`, on behalf of `host` if given, compared with the model.
    Map {
        host: Option<u64>,
        lun: u32,
        offset: u64,
        len: u64,
    },
    /// `diff(a, b, offset, len)`, on behalf of `host` if given, compared with the model.
    Diff {
        host: Option<u64>,
        a: u32,
        b: u32,
        offset: u64,
        len: u64,
    },
    /// `flush()`.
    Flush,
    /// `reclaim(budget)`: frees dropped mappings from the free queue (commits when
    /// anything waited and the budget is not 0).
    Reclaim(u64),
    /// `close()` (or `flush()` and `into_device()` under faults) and `open()`.
    Reopen,
    /// A power cut with this outcome, then `open()` (state-machine test only).
    PowerCut(lunsnap::testing::CutOutcome),
}

/// `Op::Write` of `len` bytes at `offset` of LUN `lun`, with the pattern of `tag`.
pub fn write(lun: u32, offset: u64, len: u64, tag: u64) -> Op {
    Op::Write {
        lun,
        offset,
        len,
        tag,
    }
}

impl Op {
    /// LUNs whose content the operation may change (all of them for flush and reopen).
    pub fn touched(&self, m: &Model) -> Vec<u32> {
        match self {
            &(Op::CreateLun { lun, .. }
            | Op::CreateCopy { lun, .. }
            | Op::Attach(lun)
            | Op::Detach(lun)
            | Op::SetOnline { lun, .. }
            | Op::Write { lun, .. }
            | Op::WriteAs { lun, .. }
            | Op::Discard { lun, .. }
            | Op::DiscardAs { lun, .. }
            | Op::WriteZeroes { lun, .. }) => vec![lun],
            Op::CreateCopies { pairs, .. } => pairs.iter().map(|&(_, c)| c).collect(),
            Op::AttachMany(copies) => copies.clone(),
            &Op::Restore(lun) => {
                let mut v = vec![lun];
                v.extend(m.lun_info(lun).ok().and_then(|i| i.parent));
                v
            }
            Op::Delete { .. }
            | Op::Read { .. }
            | Op::ReadAs { .. }
            | Op::AddHost { .. }
            | Op::RemoveHost(_)
            | Op::Grant { .. }
            | Op::Revoke { .. }
            | Op::SetSecurity(_)
            | Op::SetDetectZeros(_)
            | Op::Map { .. }
            | Op::Diff { .. } => Vec::new(),
            Op::Flush | Op::Reclaim(_) | Op::Reopen | Op::PowerCut(_) => m.lun_numbers(),
        }
    }

    /// Whether the operation commits when it succeeds (possibly: flush and reopen).
    pub fn is_management(&self) -> bool {
        !matches!(
            self,
            Op::Write { .. }
                | Op::WriteAs { .. }
                | Op::WriteZeroes { .. }
                | Op::Read { .. }
                | Op::ReadAs { .. }
                | Op::Map { .. }
                | Op::Diff { .. }
                | Op::SetDetectZeros(_)
        )
    }
}

/// What [`Harness::step`] did.
#[derive(Debug)]
pub struct Step {
    /// The array's result.
    pub result: Result<(), Error>,
    /// Models of every state a crash during the step may recover to, in order: the
    /// state before it, after each commit in it, and after it (for a failed step, the
    /// state had it succeeded, in case its commit reached the medium).
    pub candidates: Vec<Model>,
}

/// An array and its model, driven together.
pub struct Harness<D: BlockDevice> {
    /// The array (None while it could not be reopened).
    pub a: Option<Array<D>>,
    /// The device, when a reopen failed.
    pub dead: Option<D>,
    /// The model.
    pub m: Model,
    /// Options of every reopen.
    pub open: OpenOptions,
    /// Commits the write path made on its own.
    pub early_commits: u64,
    /// Writes issued one extent at a time because the pool was nearly full.
    pub split_writes: u64,
}

fn device_or_poisoned(e: &Error) -> bool {
    matches!(e, Error::Device(_) | Error::Poisoned)
}

impl<D: BlockDevice + Clone> Harness<D> {
    /// Formats `dev` and models the empty array.
    pub fn format(dev: D, opts: &FormatOptions) -> Self {
        let a = Array::format(dev, opts).expect("format");
        let m = Model::new(&a.pool_info());
        Harness {
            a: Some(a),
            dead: None,
            m,
            open: OpenOptions {
                cache_bytes: opts.cache_bytes,
                ..OpenOptions::default()
            },
            early_commits: 0,
            split_writes: 0,
        }
    }

    /// An open array and its model.
    pub fn new(a: Array<D>, m: Model, open: OpenOptions) -> Self {
        Harness {
            a: Some(a),
            dead: None,
            m,
            open,
            early_commits: 0,
            split_writes: 0,
        }
    }

    /// The array.
    pub fn array(&mut self) -> &mut Array<D> {
        self.a.as_mut().expect("the array is open")
    }

    /// The device, without committing anything (what a crash leaves).
    pub fn take_device(&mut self) -> D {
        match self.a.take() {
            Some(a) => a.into_device(),
            None => self.dead.take().expect("a device"),
        }
    }

    fn generation(&self) -> u64 {
        self.a.as_ref().map_or(0, |a| a.pool_info().generation)
    }

    /// Applies `op` to the array and the model and compares the results. Without
    /// `faults` they must agree exactly; with `faults`, the array may also fail with a
    /// device error or `Poisoned`, and the model then stays as it was (the step's
    /// candidates say what a crash may recover). Err: how they disagreed.
    pub fn step(&mut self, op: &Op, faults: bool) -> Result<Step, String> {
        let pre = self.m.clone();
        let mut candidates = vec![pre.clone()];
        let result = match *op {
            Op::Write {
                lun,
                offset,
                len,
                tag,
            } => {
                let kind = Data::Pattern(tag);
                self.write(None, lun, offset, len, kind, faults, &mut candidates)?
            }
            Op::WriteAs {
                host,
                lun,
                offset,
                len,
                tag,
            } => {
                let kind = Data::Pattern(tag);
                self.write(Some(host), lun, offset, len, kind, faults, &mut candidates)?
            }
            Op::WriteZeroes {
                host,
                lun,
                offset,
                len,
                punch,
            } => {
                let kind = Data::Zeroes { punch };
                self.write(host, lun, offset, len, kind, faults, &mut candidates)?
            }
            Op::SetDetectZeros(on) => {
                self.array().set_detect_zeros(on);
                self.m.set_detect_zeros(on);
                Ok(())
            }
            Op::Map {
                host,
                lun,
                offset,
                len,
            } => {
                let got = match host {
                    Some(h) => self.array().as_host(h).map(lun, offset, len),
                    None => self.array().map(lun, offset, len),
                };
                let want = match host {
                    Some(h) => self.m.map_as(h, lun, offset, len),
                    None => self.m.map(lun, offset, len),
                };
                self.compare_query(op, got, want, faults)?
            }
            Op::Diff {
                host,
                a,
                b,
                offset,
                len,
            } => {
                let got = match host {
                    Some(h) => self.array().as_host(h).diff(a, b, offset, len),
                    None => self.array().diff(a, b, offset, len),
                };
                let want = match host {
                    Some(h) => self.m.diff_as(h, a, b, offset, len),
                    None => self.m.diff(a, b, offset, len),
                };
                self.compare_query(op, got, want, faults)?
            }
            Op::Read { lun, offset, len }
            | Op::ReadAs {
                lun, offset, len, ..
            } => {
                let host = match *op {
                    Op::ReadAs { host, .. } => Some(host),
                    _ => None,
                };
                let mut got = vec![0xEEu8; len as usize];
                let mut want = vec![0u8; len as usize];
                let (w, g) = match host {
                    None => (
                        self.m.read(lun, offset, &mut want),
                        self.array().read(lun, offset, &mut got),
                    ),
                    Some(h) => (
                        self.m.read_as(h, lun, offset, &mut want),
                        self.array().as_host(h).read(lun, offset, &mut got),
                    ),
                };
                match (&g, &w) {
                    (Ok(()), Ok(())) if got != want => {
                        let at = got.iter().zip(&want).position(|(x, y)| x != y);
                        let s = at.unwrap_or(0) / SECTOR as usize;
                        let r = s * SECTOR as usize..(s + 1) * SECTOR as usize;
                        return Err(format!(
                            "{op:?}: sector {s} of the read holds {}, the model {}",
                            pattern::describe(&got[r.clone()]),
                            pattern::describe(&want[r])
                        ));
                    }
                    (Ok(()), Ok(())) => {}
                    (Err(a), Err(b)) if a == b => {}
                    (Err(a), _) if faults && device_or_poisoned(a) => {}
                    _ => return Err(format!("{op:?}: the array returned {g:?}, the model {w:?}")),
                }
                g
            }
            Op::Reopen => {
                self.m.reopen();
                let r = self.reopen(faults);
                if r.is_ok() {
                    candidates.push(self.m.clone());
                } else if faults && r.as_ref().is_err_and(device_or_poisoned) {
                    candidates.push(self.m.clone());
                    self.m = pre;
                } else {
                    return Err(format!("{op:?}: the array returned {r:?}"));
                }
                r
            }
            Op::PowerCut(_) => return Err("the harness does not cut power".into()),
            Op::Reclaim(budget) => {
                let pending = self.array().reclaim_pending();
                // Reclamation changes no content: it commits what was written
                // before it, as a flush would, when anything waited.
                let commits = pending && budget > 0;
                let mut committed = self.m.clone();
                committed.commit();
                match self.array().reclaim(budget) {
                    Ok(stats) => {
                        if !commits && stats.work > 0 {
                            return Err(format!("{op:?}: worked with nothing waiting"));
                        }
                        if budget == u64::MAX && stats.remaining != 0 {
                            return Err(format!("{op:?}: {stats:?} left work"));
                        }
                        if stats.remaining != self.array().pool_info().reclaim_queue {
                            return Err(format!("{op:?}: {stats:?} disagrees with pool_info"));
                        }
                        if commits {
                            self.m = committed;
                            candidates.push(self.m.clone());
                        }
                        Ok(())
                    }
                    Err(e) if faults && device_or_poisoned(&e) => {
                        if commits {
                            candidates.push(committed);
                        }
                        Err(e)
                    }
                    Err(e) => return Err(format!("{op:?}: failed with {e:?}")),
                }
            }
            _ => {
                let want = model_op(&mut self.m, op);
                let got = array_op(self.array(), op);
                // A discard commits the writes before it first when the pool is
                // too full for the copy-on-write of its partly covered extents.
                let precommit =
                    matches!(op, Op::Discard { .. } | Op::DiscardAs { .. }) && pre.is_dirty();
                match (&got, &want) {
                    (Ok(()), Ok(())) => {
                        if precommit && self.generation() == self.m.generation() + 1 {
                            self.early_commits += 1;
                            self.m = pre.clone();
                            self.m.commit();
                            candidates.push(self.m.clone());
                            model_op(&mut self.m, op).map_err(|e| format!("{e}"))?;
                        }
                        candidates.push(self.m.clone());
                    }
                    (Err(a), Err(b)) if a == b => {}
                    (Err(a), Ok(())) if faults && device_or_poisoned(a) => {
                        if precommit {
                            let mut c = pre.clone();
                            c.commit();
                            candidates.push(c);
                        }
                        candidates.push(self.m.clone());
                        self.m = pre;
                    }
                    (Err(a), Err(_)) if faults && *a == Error::Poisoned => {}
                    _ => {
                        return Err(format!(
                            "{op:?}: the array returned {got:?}, the model {want:?}"
                        ))
                    }
                }
                got
            }
        };
        if result.is_ok() || !faults {
            let (g, w) = (self.generation(), self.m.generation());
            if g != w {
                return Err(format!(
                    "{op:?}: generation {g} after it, the model expects {w}"
                ));
            }
        }
        Ok(Step { result, candidates })
    }

    /// The result of a query (map, diff) compared with the model's: equal (the lists
    /// too, while the model knows the lineage), or under faults a device error.
    fn compare_query<T: PartialEq + std::fmt::Debug>(
        &self,
        op: &Op,
        got: Result<T, Error>,
        want: Result<T, Error>,
        faults: bool,
    ) -> Result<Result<(), Error>, String> {
        match (&got, &want) {
            (Ok(g), Ok(w)) if g != w && self.m.lineage_known() => {
                Err(format!("{op:?}: the array returned {g:?}, the model {w:?}"))
            }
            (Ok(_), Ok(_)) => Ok(Ok(())),
            (Err(a), Err(b)) if a == b => Ok(Err(a.clone())),
            (Err(a), _) if faults && device_or_poisoned(a) => Ok(Err(a.clone())),
            _ => Err(format!(
                "{op:?}: the array returned {got:?}, the model {want:?}"
            )),
        }
    }

    /// A data write (a pattern, or zeroes), one extent at a time when the pool is so
    /// full that the array may commit on its own during it (or under faults, so that a
    /// failure is modelled exactly).
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        host: Option<u64>,
        lun: u32,
        offset: u64,
        len: u64,
        kind: Data,
        faults: bool,
        candidates: &mut Vec<Model>,
    ) -> Result<Result<(), Error>, String> {
        let data = match kind {
            Data::Pattern(tag) => pattern::data(tag, lun, offset, len),
            Data::Zeroes { .. } => Vec::new(),
        };
        let op = match kind {
            Data::Pattern(tag) => Op::Write {
                lun,
                offset,
                len,
                tag,
            },
            Data::Zeroes { punch } => Op::WriteZeroes {
                host,
                lun,
                offset,
                len,
                punch,
            },
        };
        let allowed = match host {
            Some(h) => self.m.authorize(h, lun, true),
            None => Ok(()),
        };
        if let Err(e) = allowed.and_then(|()| self.m.io_check(lun, offset, len)) {
            let got = self.array_write(host, lun, offset, len, kind, &data);
            return match got {
                Err(g) if g == e || (faults && g == Error::Poisoned) => Ok(Err(g)),
                _ => Err(format!(
                    "{op:?}: the array returned {got:?}, the model {e:?}"
                )),
            };
        }
        let es = self.m.extent_size();
        let mut pieces = Vec::new();
        let mut pos = offset;
        while pos < offset + len {
            let n = (es - pos % es).min(offset + len - pos);
            pieces.push((pos, n));
            pos += n;
        }
        let free = self.array().engine().data_free();
        if !faults && free >= pieces.len() as u64 {
            let g0 = self.generation();
            let r = self.array_write(host, lun, offset, len, kind, &data);
            if let Err(e) = r {
                return Err(format!("{op:?}: failed with {e:?}"));
            }
            if self.generation() != g0 {
                return Err(format!("{op:?}: committed with {free} extents free"));
            }
            model_write(&mut self.m, lun, offset, len, kind, &data)?;
            return Ok(Ok(()));
        }
        if pieces.len() > 1 {
            self.split_writes += 1;
        }
        for (pos, n) in pieces {
            let piece = match kind {
                Data::Pattern(_) => &data[(pos - offset) as usize..(pos - offset + n) as usize],
                Data::Zeroes { .. } => &[],
            };
            let g0 = self.generation();
            let r = self.array_write(host, lun, pos, n, kind, piece);
            let g1 = self.generation();
            if g1 != g0 {
                if g1 != g0 + 1 {
                    return Err(format!("{op:?}: {} commits in one extent", g1 - g0));
                }
                self.early_commits += 1;
                self.m.commit();
                candidates.push(self.m.clone());
            }
            match r {
                Ok(()) => model_write(&mut self.m, lun, pos, n, kind, piece)?,
                Err(e) if faults && device_or_poisoned(&e) => {
                    if g1 == g0 {
                        // The early commit may have reached the medium and failed after.
                        let mut c = self.m.clone();
                        c.commit();
                        candidates.push(c);
                    }
                    return Ok(Err(e));
                }
                Err(e) => return Err(format!("{op:?}: piece at {pos} failed with {e:?}")),
            }
        }
        Ok(Ok(()))
    }

    /// `write` of `data` or `write_zeroes` of `len` bytes, on behalf of `host` if given.
    fn array_write(
        &mut self,
        host: Option<u64>,
        lun: u32,
        pos: u64,
        len: u64,
        kind: Data,
        data: &[u8],
    ) -> Result<(), Error> {
        let a = self.array();
        match (host, kind) {
            (Some(h), Data::Pattern(_)) => a.as_host(h).write(lun, pos, data),
            (None, Data::Pattern(_)) => a.write(lun, pos, data),
            (Some(h), Data::Zeroes { punch }) => a.as_host(h).write_zeroes(lun, pos, len, punch),
            (None, Data::Zeroes { punch }) => a.write_zeroes(lun, pos, len, punch),
        }
    }

    fn reopen(&mut self, faults: bool) -> Result<(), Error> {
        let a = self.a.take().expect("the array is open");
        let dev = if faults {
            let mut a = a;
            if let Err(e) = a.flush() {
                self.dead = Some(a.into_device());
                return Err(e);
            }
            a.into_device()
        } else {
            a.close()?
        };
        // Array::open consumes the device; under faults keep a copy to crash-test.
        let spare = faults.then(|| dev.clone());
        match Array::open(dev, &self.open) {
            Ok(a) => {
                self.a = Some(a);
                Ok(())
            }
            Err(e) => {
                self.dead = spare;
                Err(e)
            }
        }
    }

    /// Checks LUN records, pool accounting, the content of `luns` (all when None),
    /// every LUN's map and pairs' diffs, and `check()` (empty but for the notices of
    /// lost ranges the model expects).
    pub fn verify(&mut self, luns: Option<&[u32]>) -> Result<(), Mismatch> {
        let m = &self.m;
        let a = self.a.as_mut().expect("the array is open");
        match luns {
            None => m.verify(a),
            Some(luns) => {
                m.verify_records(a)?;
                for &n in luns {
                    if m.lun_info(n).is_ok() {
                        m.verify_lun(a, n)?;
                    }
                }
                m.verify_mappings(a)?;
                m.verify_check(a)
            }
        }
    }
}

/// What a data write writes.
#[derive(Clone, Copy, Debug)]
enum Data {
    /// The pattern of a tag ([`pattern::data`]).
    Pattern(u64),
    /// `write_zeroes`, punching holes or not.
    Zeroes { punch: bool },
}

/// A data write applied to the model, which accepted it before (its authorization and
/// range were checked).
fn model_write(
    m: &mut Model,
    lun: u32,
    pos: u64,
    len: u64,
    kind: Data,
    data: &[u8],
) -> Result<(), String> {
    let r = match kind {
        Data::Pattern(_) => m.write(lun, pos, data),
        Data::Zeroes { punch } => m.write_zeroes(lun, pos, len, punch),
    };
    r.map_err(|e| format!("{e}"))
}

/// Applies a management operation (or flush) to the model.
pub fn model_op(m: &mut Model, op: &Op) -> Result<(), Error> {
    match *op {
        Op::CreateLun { lun, size } => m.create_lun(lun, size),
        Op::CreateCopy {
            parent,
            lun,
            attached,
        } => m.create_copy(parent, lun, attached),
        Op::Attach(n) => m.attach(n),
        Op::Detach(n) => m.detach(n),
        Op::Delete { lun, orphan } => m.delete(lun, orphan),
        Op::Restore(n) => m.restore(n),
        Op::Discard { lun, offset, len } => m.discard(lun, offset, len),
        Op::CreateCopies {
            ref pairs,
            attached,
        } => m.create_copies(pairs, attached),
        Op::AttachMany(ref copies) => m.attach_many(copies),
        Op::SetOnline { lun, online } => m.set_online(lun, online),
        Op::AddHost { id, ref name } => m.add_host(id, name),
        Op::RemoveHost(id) => m.remove_host(id),
        Op::Grant { lun, host, access } => m.grant(lun, host, access),
        Op::Revoke { lun, host } => m.revoke(lun, host),
        Op::SetSecurity(on) => m.set_security(on),
        Op::DiscardAs {
            host,
            lun,
            offset,
            len,
        } => m.discard_as(host, lun, offset, len),
        Op::Flush => m.flush(),
        Op::Write { .. }
        | Op::WriteAs { .. }
        | Op::WriteZeroes { .. }
        | Op::SetDetectZeros(_)
        | Op::Read { .. }
        | Op::ReadAs { .. }
        | Op::Map { .. }
        | Op::Diff { .. }
        | Op::Reclaim(_)
        | Op::Reopen
        | Op::PowerCut(_) => {
            unreachable!("not a management operation: {op:?}")
        }
    }
}

/// Applies a management operation (or flush) to the array.
pub fn array_op<D: BlockDevice>(a: &mut Array<D>, op: &Op) -> Result<(), Error> {
    match *op {
        Op::CreateLun { lun, size } => a.create_lun(lun, size),
        Op::CreateCopy {
            parent,
            lun,
            attached,
        } => a.create_copy(parent, lun, attached),
        Op::Attach(n) => a.attach(n),
        Op::Detach(n) => a.detach(n),
        Op::Delete { lun, orphan } => a.delete(lun, orphan),
        Op::Restore(n) => a.restore(n),
        Op::Discard { lun, offset, len } => a.discard(lun, offset, len),
        Op::CreateCopies {
            ref pairs,
            attached,
        } => a.create_copies(pairs, attached),
        Op::AttachMany(ref copies) => a.attach_many(copies),
        Op::SetOnline { lun, online } => a.set_online(lun, online),
        Op::AddHost { id, ref name } => a.add_host(id, name),
        Op::RemoveHost(id) => a.remove_host(id),
        Op::Grant { lun, host, access } => a.grant(lun, host, access),
        Op::Revoke { lun, host } => a.revoke(lun, host),
        Op::SetSecurity(on) => a.set_security(on),
        Op::DiscardAs {
            host,
            lun,
            offset,
            len,
        } => a.as_host(host).discard(lun, offset, len),
        Op::Flush => a.flush(),
        Op::Write { .. }
        | Op::WriteAs { .. }
        | Op::WriteZeroes { .. }
        | Op::SetDetectZeros(_)
        | Op::Read { .. }
        | Op::ReadAs { .. }
        | Op::Map { .. }
        | Op::Diff { .. }
        | Op::Reclaim(_)
        | Op::Reopen
        | Op::PowerCut(_) => {
            unreachable!("not a management operation: {op:?}")
        }
    }
}
