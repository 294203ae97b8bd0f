//! Checking an [`Array`] against the [`Model`]: side by side, and after a crash.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::model::{lost_add, set_sector, MLun, Model, Sector};
use crate::array::{Array, LunInfo, LunKind, RepairReport, SECTOR};
use crate::device::BlockDevice;
use crate::error::Error;

/// How the array differs from the model: a description for the test's failure message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// What differs.
    pub what: String,
}

impl Mismatch {
    fn new(what: String) -> Mismatch {
        Mismatch { what }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

fn err<T>(what: String) -> Result<T, Mismatch> {
    Err(Mismatch::new(what))
}

/// Bytes read per call while comparing contents.
const CHUNK: u64 = 64 * 1024;

impl Model {
    /// Checks `array` against the model: [`verify_records`](Self::verify_records),
    /// the content of every LUN ([`verify_lun`](Self::verify_lun)), every LUN's
    /// [`Array::map`] and pairs' [`Array::diff`]
    /// ([`verify_mappings`](Self::verify_mappings)) and [`Array::check`]
    /// ([`verify_check`](Self::verify_check): empty, but for the notices of lost
    /// ranges). Reads every LUN whole: its cost grows with the LUN sizes.
    pub fn verify<D: BlockDevice>(&self, array: &mut Array<D>) -> Result<(), Mismatch> {
        self.verify_records(array)?;
        for &n in self.luns.keys() {
            self.verify_lun(array, n)?;
        }
        self.verify_mappings(array)?;
        self.verify_check(array)
    }

    /// Checks that [`Array::check`] finds exactly what
    /// [`check_findings`](Self::check_findings) says: nothing, but a
    /// [`LostData`](crate::ArrayViolation::LostData) notice for each LUN with lost
    /// ranges.
    pub fn verify_check<D: BlockDevice>(&self, array: &mut Array<D>) -> Result<(), Mismatch> {
        let want = self.check_findings();
        match array.check() {
            Ok(v) if v == want => Ok(()),
            Ok(v) => err(format!(
                "check() reported {v:?}, the model expects {want:?}"
            )),
            Err(e) => err(format!("check() failed: {e}")),
        }
    }

    /// Checks the LUN numbers, every [`LunInfo`] (exclusive and shared bytes included
    /// while [`lineage_known`](Self::lineage_known)), every LUN's
    /// [`lost_ranges`](Array::lost_ranges) and every figure of
    /// [`PoolInfo`](crate::PoolInfo) but the metadata ones.
    pub fn verify_records<D: BlockDevice>(&self, array: &mut Array<D>) -> Result<(), Mismatch> {
        let numbers = array.lun_numbers();
        if numbers != self.lun_numbers() {
            return err(format!(
                "LUN numbers {numbers:?}, the model has {:?}",
                self.lun_numbers()
            ));
        }
        let got = array
            .luns()
            .map_err(|e| Mismatch::new(format!("luns() failed: {e}")))?;
        for (g, w) in got.iter().zip(self.luns()) {
            let g = if self.lineage_known {
                *g
            } else {
                LunInfo {
                    exclusive_bytes: 0,
                    shared_bytes: 0,
                    ..*g
                }
            };
            if g != w {
                return err(format!(
                    "lun_info({}) is {g:?}, the model says {w:?}",
                    w.lun
                ));
            }
            let n = w.lun;
            let (g, w) = (array.lost_ranges(n).map(merged), self.lost_ranges(n));
            if g != w {
                return err(format!("lost_ranges({n}) is {g:?}, the model says {w:?}"));
            }
        }
        let mut p = array.pool_info();
        let mut w = self.pool_info();
        w.metadata_used_bytes = p.metadata_used_bytes;
        w.metadata_provisioned_bytes = p.metadata_provisioned_bytes;
        // Healing follows from damage and torn superblock copies, which the model
        // does not know; no rollback is ever expected.
        w.metadata_copies = p.metadata_copies;
        w.healed_pages = p.healed_pages;
        w.pending_heals = p.pending_heals;
        // How far reclamation has got depends on budgets the model does not
        // follow; what waits is allocated until freed, and must be exactly the
        // extents no live LUN maps.
        w.reclaim_queue = p.reclaim_queue;
        let pending = array
            .pending_bytes()
            .map_err(|e| Mismatch::new(format!("pending_bytes() failed: {e}")))?;
        // What waits may fill the spare extents too (free_bytes saturates at 0).
        if pending > p.allocated_bytes {
            return err(format!(
                "{pending} bytes pending, more than allocated: {p:?}"
            ));
        }
        p.allocated_bytes -= pending;
        p.free_bytes = p.capacity_bytes.saturating_sub(p.allocated_bytes);
        if !self.lineage_known {
            p.allocated_bytes = 0;
            p.free_bytes = w.free_bytes;
        }
        if p != w {
            return err(format!(
                "pool_info() is {p:?} ({pending} bytes pending), the model says {w:?}"
            ));
        }
        if p.metadata_used_bytes > p.metadata_provisioned_bytes {
            return err(format!("metadata used beyond what was provisioned: {p:?}"));
        }
        self.verify_access(array)
    }

    /// Checks the hosts, the security switch, every LUN's grants and what each host
    /// (and one unregistered host id) may see.
    fn verify_access<D: BlockDevice>(&self, array: &mut Array<D>) -> Result<(), Mismatch> {
        let hosts = array.hosts();
        if hosts != self.hosts() {
            return err(format!(
                "hosts() is {hosts:?}, the model has {:?}",
                self.hosts()
            ));
        }
        if array.security_enabled() != self.security {
            return err(format!(
                "security_enabled() is {}, the model says {}",
                array.security_enabled(),
                self.security
            ));
        }
        for &n in self.luns.keys() {
            let (g, w) = (array.grants(n), self.grants(n));
            if g != w {
                return err(format!("grants({n}) is {g:?}, the model says {w:?}"));
            }
        }
        let stranger = (0..=u64::MAX).find(|h| !self.hosts.contains_key(h));
        for h in self.hosts.keys().copied().chain(stranger) {
            let (g, w) = (array.as_host(h).visible_luns(), self.visible_luns(h));
            if g != w {
                return err(format!(
                    "visible_luns({h:#x}) is {g:?}, the model says {w:?}"
                ));
            }
        }
        Ok(())
    }

    /// Checks the content of LUN `n` (or that a detached copy refuses reads).
    pub fn verify_lun<D: BlockDevice>(&self, array: &mut Array<D>, n: u32) -> Result<(), Mismatch> {
        let l = self
            .luns
            .get(&n)
            .ok_or_else(|| Mismatch::new(format!("the model has no LUN {n}")))?;
        if !l.attached {
            let mut b = [0u8; SECTOR as usize];
            let r = array.read(n, 0, &mut b);
            if r != Err(Error::Detached(n)) {
                return err(format!("read of detached copy {n} returned {r:?}"));
            }
            return Ok(());
        }
        if !l.online {
            let mut b = [0u8; SECTOR as usize];
            let r = array.read(n, 0, &mut b);
            if r != Err(Error::Offline(n)) {
                return err(format!("read of offline LUN {n} returned {r:?}"));
            }
        }
        let mut want = Vec::new();
        for_each_chunk(array, n, l.size, &l.lost, |first, got| {
            want.clear();
            want.resize(got.len(), 0);
            let end = first + (got.len() as u64) / SECTOR;
            for (&s, c) in l.data.range(first..end) {
                let o = ((s - first) * SECTOR) as usize;
                want[o..o + SECTOR as usize].copy_from_slice(&c[..]);
            }
            if got != &want[..] {
                let at = got.iter().zip(&want).position(|(a, b)| a != b);
                let byte = first * SECTOR + at.unwrap_or(0) as u64;
                return err(format!(
                    "LUN {n}: content differs from the model at byte {byte} (sector {})",
                    byte / SECTOR
                ));
            }
            Ok(())
        })
    }

    /// After a power cut and a reopen: checks that `array` obeys docs/DESIGN.md §2
    /// Durability relative to this model, and returns the model of what survived.
    ///
    /// The model is the state when the power was cut (every operation that returned,
    /// data writes included). What must have survived: the LUN table and generation of
    /// the last commit ([`committed_generation`](Self::committed_generation); a later
    /// one up to [`generation`](Self::generation) after
    /// [`note_early_commits`](Self::note_early_commits)); the content of every LUN as
    /// of that commit, exactly, committed copies included; and after noted early
    /// commits, each sector its committed content or a value written to it since
    /// (anything, if `garbled`: a [`CutOutcome::Harsh`](crate::testing::CutOutcome::Harsh)
    /// cut may garble unflushed sectors). Then [`verify_records`](Self::verify_records),
    /// [`verify_mappings`](Self::verify_mappings) (every LUN's map and pairs' diffs)
    /// and an empty [`Array::check`].
    ///
    /// To check a cut in the middle of an operation, keep the models of before and after
    /// it and recover with the one whose `committed_generation` is the array's
    /// generation.
    pub fn recover<D: BlockDevice>(
        &self,
        array: &mut Array<D>,
        garbled: bool,
    ) -> Result<Model, Mismatch> {
        let g = array.pool_info().generation;
        if !self.admits(g) {
            return err(format!(
                "reopened at generation {g}; the last commit is {} (newest possible {})",
                self.committed_gen, self.gen
            ));
        }
        let mut m = self.clone();
        m.luns = self.committed.clone();
        m.hosts = self.committed_hosts.clone();
        m.security = self.committed_security;
        m.gen = g;
        m.committed_gen = g;
        m.dirty = false;
        m.since.clear();
        m.exact = true;
        m.lineage_known = self.lineage_known && self.exact;
        m.detect_zeros = true;
        m.recount();
        // Records first (without content), then content sector by sector.
        let numbers = array.lun_numbers();
        if numbers != m.lun_numbers() {
            return err(format!(
                "after the crash: LUN numbers {numbers:?}, committed {:?}",
                m.lun_numbers()
            ));
        }
        // Lost ranges: the last commit's; after noted early commits, anything from
        // those down to the current ones (the writes since clear them).
        if !self.exact {
            for (&n, l) in m.luns.iter_mut() {
                let now = self.luns.get(&n).map_or(&[][..], |c| &c.lost[..]);
                let got = array
                    .lost_ranges(n)
                    .map(|r| r.iter().map(|&(o, len)| (o, o + len)).collect::<Vec<_>>())
                    .map_err(|e| Mismatch::new(format!("lost_ranges({n}) failed: {e}")))?;
                let mut got_merged = Vec::new();
                for &(a, b) in &got {
                    lost_add(&mut got_merged, a, b);
                }
                if !covers(&l.lost, &got_merged) || !covers(&got_merged, now) {
                    return err(format!(
                        "after the crash, LUN {n} has lost ranges {got:?}: the last commit \
                         had {:?}, the current state {now:?}",
                        l.lost
                    ));
                }
                l.lost = got_merged;
            }
        }
        let luns: Vec<(u32, MLun)> = m.luns.iter().map(|(&n, l)| (n, l.clone())).collect();
        for (n, l) in luns {
            if !l.attached {
                continue;
            }
            let read = self.recover_lun(array, n, &l, garbled)?;
            if let Some(ml) = m.luns.get_mut(&n) {
                ml.data = read;
            }
        }
        m.committed = m.luns.clone();
        m.verify_records(array)
            .map_err(|e| Mismatch::new(format!("after the crash: {e}")))?;
        for (&n, l) in &m.luns {
            if !l.attached {
                m.verify_lun(array, n)?;
            }
        }
        m.verify_mappings(array)
            .map_err(|e| Mismatch::new(format!("after the crash: {e}")))?;
        m.verify_check(array)?;
        Ok(m)
    }

    /// [`recover`](Self::recover) after a cut whose state may be one of several:
    /// `candidates` are the models of the states the array may have reached (for a cut
    /// during an operation: before it, after each commit it makes, after it), oldest
    /// first. Tries, newest first, those that admit the array's generation, and returns
    /// what the first that fits recovers. Err: the generation no candidate admits, or
    /// why each one failed.
    pub fn recover_one_of<D: BlockDevice>(
        candidates: &[Model],
        array: &mut Array<D>,
        garbled: bool,
    ) -> Result<Model, Mismatch> {
        let g = array.pool_info().generation;
        let mut why = Vec::new();
        for m in candidates.iter().rev().filter(|m| m.admits(g)) {
            match m.recover(array, garbled) {
                Ok(r) => return Ok(r),
                Err(e) => why.push(e.what),
            }
        }
        if why.is_empty() {
            let gens: Vec<u64> = candidates.iter().map(|m| m.committed_gen).collect();
            return err(format!(
                "reopened at generation {g}; the candidates' last commits are {gens:?}"
            ));
        }
        err(why.join("; or "))
    }

    /// After [`Array::repair`] and an [`Array::open`] of its device (`array`): makes
    /// the model the repaired array's, from its last commit (the one the repair read)
    /// and the `report`, and checks that the report is one this model allows.
    ///
    /// What the repair does, as the model follows it:
    /// * LUNs not in `report.luns` are gone; each must lie in a range of
    ///   `report.lost_records` (or be one of `report.bad_records`).
    /// * A kept copy whose parent is gone stands alone: no parent, and an attached one
    ///   becomes a plain LUN (a detached one stays a detached copy); they must be
    ///   exactly `report.orphaned`.
    /// * Each `(lun, offset, len)` of `report.lost` is lost (with what was lost
    ///   before): it reads as [`Error::LostData`] until written or discarded. Its
    ///   content is unknown, so the model forgets it. Each must lie in a kept,
    ///   attached LUN.
    /// * Hosts not kept are gone, with their grants. The report only counts the hosts
    ///   kept: the model reads which from [`Array::hosts`]; each must be one of the
    ///   model's, with its name, and all of them unless `report.hosts_lost`.
    /// * The security switch stays.
    /// * One commit: the generation is `report.generation`.
    ///
    /// The one thing the model takes from the array's mapping: which extents inside
    /// lost ranges are still mapped ([`Array::map`]). A range lost because its
    /// mapping could not be read is a hole in the rebuilt mapping; a range lost
    /// because the record of an earlier repair's ranges could not be read still has
    /// its mapping; the report does not tell them apart. Checked: the array maps no
    /// extent the model does not, and a mapping the repair kept whole (a LUN not in
    /// `report.rebuilt`) lost no extent. Everything else comes from the model and the
    /// report, and [`verify`](Self::verify) must then pass on the repaired array.
    ///
    /// Err: the report disagrees with the model (a dry run, a LUN or host the model
    /// never had, a vanished LUN not reported, orphans, lost ranges or mappings that
    /// cannot be), or the last commit is not known exactly (early commits noted since).
    pub fn repaired<D: BlockDevice>(
        &mut self,
        report: &RepairReport,
        array: &mut Array<D>,
    ) -> Result<(), Mismatch> {
        let hosts = array.hosts();
        if report.dry_run {
            return err("a dry run repairs nothing".into());
        }
        if !self.exact {
            return err("the last commit before the repair is not known exactly".into());
        }
        let mut luns = self.committed.clone();
        // Records: kept, or reported lost.
        for n in &report.luns {
            if !luns.contains_key(n) {
                return err(format!(
                    "the repair kept LUN {n}, which the model does not have"
                ));
            }
        }
        let gone: Vec<u32> = luns
            .keys()
            .copied()
            .filter(|n| !report.luns.contains(n))
            .collect();
        for &n in &gone {
            let reported = report
                .lost_records
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&u64::from(n)))
                || report.bad_records.contains(&u64::from(n));
            if !reported {
                return err(format!(
                    "LUN {n} is gone but the report does not say its record was lost: {report:?}"
                ));
            }
            luns.remove(&n);
        }
        // Orphans.
        let mut orphaned = Vec::new();
        let kept: Vec<u32> = luns.keys().copied().collect();
        for (&n, l) in luns.iter_mut() {
            if l.parent.is_some_and(|p| !kept.contains(&p)) {
                l.parent = None;
                if l.attached {
                    l.kind = LunKind::Lun;
                }
                orphaned.push(n);
            }
        }
        let mut reported = report.orphaned.clone();
        reported.sort_unstable();
        if reported != orphaned {
            return err(format!(
                "the repair orphaned {:?}, the model expects {orphaned:?}",
                report.orphaned
            ));
        }
        // Hosts.
        let mut kept_hosts = BTreeMap::new();
        for h in &hosts {
            match self.committed_hosts.get(&h.id) {
                Some(name) if *name == h.name => {
                    kept_hosts.insert(h.id, name.clone());
                }
                _ => {
                    return err(format!(
                        "the repair kept host {h:?}, which the model does not have"
                    ))
                }
            }
        }
        if report.hosts as usize != kept_hosts.len()
            || (!report.hosts_lost && kept_hosts.len() != self.committed_hosts.len())
        {
            return err(format!(
                "the repair kept {} hosts (hosts lost: {}), the array has {hosts:?}, the model had {:?}",
                report.hosts, report.hosts_lost, self.committed_hosts
            ));
        }
        for l in luns.values_mut() {
            l.grants.retain(|h, _| kept_hosts.contains_key(h));
        }
        // Lost ranges: the report's (all of them, those of an earlier repair too)
        // added to the model's.
        for &(n, offset, len) in &report.lost {
            let fits = luns.get(&n).is_some_and(|l| {
                l.attached && len > 0 && offset.checked_add(len).is_some_and(|e| e <= l.size)
            });
            if !fits {
                return err(format!(
                    "the repair lost ({n}, {offset}, {len}), which LUN {n} cannot have"
                ));
            }
            if let Some(l) = luns.get_mut(&n) {
                lost_add(&mut l.lost, offset, offset + len);
            }
        }
        // Their content is unknown (never read until written), so the model forgets
        // it. Their mapping: where the repair could not read a LUN's mapping, its
        // rebuilt mapping has no entries; where it lost the record of an earlier
        // repair's ranges, the mapping is intact. The report does not say which
        // extents are which, so inside lost ranges (and only there) the model takes
        // the array's word, checked: an extent the array maps must be one the model
        // maps (it keeps its lineage token), and a mapping kept whole (not in
        // `report.rebuilt`) drops nothing.
        let es = self.es;
        for (&n, l) in luns.iter_mut() {
            if l.lost.is_empty() {
                continue;
            }
            for &(a, b) in &l.lost {
                let sectors: Vec<u64> = l
                    .data
                    .range(a / SECTOR..b.div_ceil(SECTOR))
                    .map(|(&s, _)| s)
                    .collect();
                for s in sectors {
                    l.data.remove(&s);
                }
            }
            let mut extents: Vec<u64> = Vec::new();
            for &(a, b) in &l.lost {
                for le in a / es..b.div_ceil(es) {
                    if extents.last() != Some(&le) {
                        extents.push(le);
                    }
                }
            }
            let mut mapped = alloc::collections::BTreeSet::new();
            for &(a, b) in &l.lost {
                let (from, to) = (a / es * es, (b.div_ceil(es) * es).min(l.size));
                let ranges = array.map(n, from, to - from).map_err(|e| {
                    Mismatch::new(format!("map({n}, {from}, {}) failed: {e}", to - from))
                })?;
                for r in ranges.iter().filter(|r| r.data) {
                    mapped.extend(r.offset / es..(r.offset + r.length).div_ceil(es));
                }
            }
            for le in extents {
                match (mapped.contains(&le), l.map.contains_key(&le)) {
                    (true, false) => {
                        return err(format!(
                            "after the repair LUN {n} maps extent {le}, in a lost range, \
                             which the model never mapped"
                        ))
                    }
                    (false, true) if !report.rebuilt.contains(&n) => {
                        return err(format!(
                            "LUN {n}'s mapping was kept whole, but extent {le} (in a lost \
                             range) is a hole after the repair"
                        ))
                    }
                    (false, true) => {
                        l.map.remove(&le);
                    }
                    _ => {}
                }
            }
        }
        for n in &report.rebuilt {
            if !luns.contains_key(n) {
                return err(format!("the repair rebuilt LUN {n}, which it did not keep"));
            }
        }
        self.luns = luns;
        self.hosts = kept_hosts;
        self.security = self.committed_security;
        self.gen = report.generation;
        self.dirty = false;
        self.detect_zeros = true;
        self.recount();
        self.committed = self.luns.clone();
        self.committed_hosts = self.hosts.clone();
        self.committed_gen = self.gen;
        self.since.clear();
        Ok(())
    }

    /// Whether a power cut may leave generation `g`: the last commit, or after commits
    /// at unknown points (noted early commits) any up to the newest.
    fn admits(&self, g: u64) -> bool {
        if self.exact {
            g == self.committed_gen
        } else {
            (self.committed_gen..=self.gen).contains(&g)
        }
    }

    /// Reads LUN `n` after a crash and checks each sector against the committed
    /// content `l` and the values written since; returns the sectors read.
    fn recover_lun<D: BlockDevice>(
        &self,
        array: &mut Array<D>,
        n: u32,
        l: &MLun,
        garbled: bool,
    ) -> Result<BTreeMap<u64, Sector>, Mismatch> {
        let mut out = BTreeMap::new();
        let zero = [0u8; SECTOR as usize];
        for_each_chunk(array, n, l.size, &l.lost, |first, got| {
            for (s, c) in (first..).zip(got.chunks_exact(SECTOR as usize)) {
                let committed = l.data.get(&s).map_or(&zero[..], |v| &v[..]);
                if c != committed {
                    let since = self.since.get(&(n, s));
                    let allowed = !self.exact
                        && since.is_some_and(|v| garbled || v.iter().any(|x| x[..] == *c));
                    if !allowed {
                        let what = match since {
                            None => "never written since",
                            Some(_) if self.exact => {
                                "written since, but no commit made a write durable"
                            }
                            Some(_) => "written since, but it reads none of those values",
                        };
                        return err(format!(
                            "after the crash, LUN {n} sector {s} differs from its committed content ({what})"
                        ));
                    }
                }
                set_sector(&mut out, s, c);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// Reads LUN `n` (`size` bytes, attached) in chunks, online or not: a chunk inside
/// one of the `lost` ranges (`[start, end)`, sorted) must be refused with the
/// [`Error::LostData`] that names it whole, and each other chunk, which touches none,
/// is handed to `f` as (first sector, bytes). Every byte is read.
fn for_each_chunk<D: BlockDevice>(
    array: &mut Array<D>,
    n: u32,
    size: u64,
    lost: &[(u64, u64)],
    mut f: impl FnMut(u64, &[u8]) -> Result<(), Mismatch>,
) -> Result<(), Mismatch> {
    let mut buf = vec![0u8; CHUNK.min(size) as usize];
    let mut pos = 0;
    while pos < size {
        let inside = lost.iter().find(|&&(s, e)| s <= pos && pos < e).copied();
        let stop = match inside {
            Some((_, e)) => e,
            None => lost
                .iter()
                .map(|&(s, _)| s)
                .find(|&s| s > pos)
                .unwrap_or(size),
        };
        let len = (stop.min(size) - pos).min(CHUNK);
        let b = &mut buf[..len as usize];
        let r = array.read_online(n, pos, b, false);
        if inside.is_some() {
            let want = Err(Error::LostData {
                lun: n,
                offset: pos,
                len,
            });
            if r != want {
                return err(format!(
                    "read of LUN {n} at {pos} ({len} bytes, lost) returned {r:?}, the model \
                     says {want:?}"
                ));
            }
        } else {
            r.map_err(|e| Mismatch::new(format!("read of LUN {n} at {pos} failed: {e}")))?;
            f(pos / SECTOR, b)?;
        }
        pos += len;
    }
    Ok(())
}

/// Lost ranges given as (offset, length), as `[start, end)` with touching ones merged:
/// the model's form.
fn merged(ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for (o, len) in ranges {
        lost_add(&mut out, o, o + len);
    }
    out.into_iter().map(|(s, e)| (s, e - s)).collect()
}

/// Every byte of `small` lies in `big` (both `[start, end)`, sorted, merged).
fn covers(big: &[(u64, u64)], small: &[(u64, u64)]) -> bool {
    small
        .iter()
        .all(|&(s, e)| big.iter().any(|&(bs, be)| bs <= s && e <= be))
}
