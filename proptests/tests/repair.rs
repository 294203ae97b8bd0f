//! Repair property test: random operations on an array and the model side by side
//! (the harness of the state-machine test), then both copies of 1 to 3 random live
//! metadata pages destroyed, `Array::repair`, a reopen, and the repaired array checked
//! twice over:
//!
//! * against the model of the last commit before the damage, range by range, without
//!   `Model::repaired`: every LUN the report kept reads exactly as that model says
//!   outside its lost ranges and `LostData` (naming the range) inside them, a read
//!   across each edge of a lost range names the range; a LUN gone is one whose record
//!   the report says was lost; `lost_ranges` are the report's; `check()` finds notices
//!   only; a dry run first reported the same;
//! * by `Model::repaired` and `verify()`: LUN records (orphans standing alone), lost
//!   ranges and bytes, accounting, hosts and grants, every byte of every LUN (lost
//!   ranges refused as the model says), map, diff and `check()` (a `LostData` notice
//!   per LUN with lost ranges).
//!
//! Then more random operations, biased to the lost ranges (reads, writes, discards and
//! `write_zeroes` over and across them, copies made, attached and restored from LUNs
//! that have them, power cuts), with the same checks after every step as the
//! state-machine test; then all of it once more (a second repair meets the lost
//! ranges of the first, and may destroy their record), and a final verify and reopen.
//!
//! `PROPTEST_CASES` sets the number of cases (default 192). The three core bugs this
//! test found are fixed, and stated as regression tests at the end: zeros written
//! over a lost range were not committed, an empty write split a lost range, and a
//! second repair forgot the first one's lost ranges.

use std::collections::BTreeMap;
use std::sync::Mutex;

use lunsnap::testing::{CutOutcome, Model, PowerCutDevice, Rng};
use lunsnap::{
    Access, Array, BlockDevice, Error, FormatOptions, LunKind, MemDevice, OpenOptions,
    RepairOptions, RepairReport, Severity, SECTOR,
};
use lunsnap_proptests::pattern::{self, ZERO_BLOCKS};
use lunsnap_proptests::{env_count, Harness, Op};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

type Dev = PowerCutDevice<MemDevice>;

const PAGE: u64 = 4096;

/// One array geometry.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    block_size: u32,
    bytes: u64,
    extent_size: u32,
    cache_bytes: usize,
    max_luns: u32,
    copies: u32,
    /// Starts with enough LUNs, copies and hosts to split the LUN table and the hosts
    /// table: a repair then loses some records and keeps others (orphaned copies,
    /// hosts lost with their grants while others keep theirs).
    crowded: bool,
}

const GEOMETRIES: [Geometry; 5] = [
    // A pool large enough for LUNs of several mapping leaves: a lost leaf loses part
    // of a LUN.
    Geometry {
        block_size: 512,
        bytes: 8 << 20,
        extent_size: 4096,
        cache_bytes: 64 << 10,
        max_luns: 6,
        copies: 2,
        crowded: false,
    },
    // Device blocks larger than a sector, larger extents.
    Geometry {
        block_size: 4096,
        bytes: 3 << 20,
        extent_size: 8192,
        cache_bytes: 256 << 10,
        max_luns: 5,
        copies: 2,
        crowded: false,
    },
    // A small pool that fills up: early commits, discards that commit first.
    Geometry {
        block_size: 512,
        bytes: 1 << 20,
        extent_size: 4096,
        cache_bytes: 64 << 10,
        max_luns: 4,
        copies: 1,
        crowded: false,
    },
    // One copy of the metadata, room for several leaves per LUN.
    Geometry {
        block_size: 4096,
        bytes: 8 << 20,
        extent_size: 4096,
        cache_bytes: 128 << 10,
        max_luns: 8,
        copies: 1,
        crowded: false,
    },
    // Tables of several leaves (56 records a leaf).
    Geometry {
        block_size: 512,
        bytes: 4 << 20,
        extent_size: 4096,
        cache_bytes: 128 << 10,
        max_luns: 96,
        copies: 2,
        crowded: true,
    },
];

impl Geometry {
    fn format_options(&self) -> FormatOptions {
        FormatOptions {
            extent_size: self.extent_size,
            max_luns: self.max_luns,
            cache_bytes: self.cache_bytes,
            array_id: *b"lunsnap-repair-p",
            metadata_copies: self.copies,
        }
    }

    fn device(&self) -> Dev {
        let blocks = self.bytes / u64::from(self.block_size);
        PowerCutDevice::new(MemDevice::new(self.block_size, blocks).expect("device"))
    }
}

// ---------------------------------------------------------------------------------
// Statistics (printed with LUNSNAP_VERBOSE)
// ---------------------------------------------------------------------------------

/// Running totals over the cases of a run, by name.
static STATS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

fn count(what: &'static str, n: u64) {
    let mut s = STATS.lock().unwrap_or_else(|e| e.into_inner());
    *s.entry(what).or_default() += n;
}

// ---------------------------------------------------------------------------------
// Random operations, from the model's state
// ---------------------------------------------------------------------------------

/// Host ids the operations register, grant and act as.
const HOSTS: [u64; 4] = [0x10, 0x20, 0x5000_0000_0000_0001, u64::MAX];

fn pick<T: Clone>(r: &mut Rng, v: &[T]) -> T {
    v[r.below(v.len() as u64) as usize].clone()
}

/// Picks by weight: the index of the chosen weight.
fn weighted(r: &mut Rng, weights: &[u64]) -> usize {
    let mut k = r.below(weights.iter().sum());
    for (i, &w) in weights.iter().enumerate() {
        if k < w {
            return i;
        }
        k -= w;
    }
    weights.len() - 1
}

/// Makes random operations from the model's state: mostly valid, sometimes not, and
/// (once there are lost ranges) often over, inside or across them.
struct Gen<'a> {
    m: &'a Model,
    g: Geometry,
    cap: u64,
    r: &'a mut Rng,
}

impl Gen<'_> {
    fn number(&mut self) -> u32 {
        let used = self.m.lun_numbers();
        if !used.is_empty() && self.r.chance(80) {
            pick(self.r, &used)
        } else {
            self.r.below(u64::from(self.g.max_luns) + 1) as u32
        }
    }

    fn new_number(&mut self) -> u32 {
        let used = self.m.lun_numbers();
        let free: Vec<u32> = (0..self.g.max_luns).filter(|n| !used.contains(n)).collect();
        if !free.is_empty() && self.r.chance(85) {
            pick(self.r, &free)
        } else {
            self.r.below(u64::from(self.g.max_luns) + 1) as u32
        }
    }

    fn copy_number(&mut self) -> u32 {
        let copies: Vec<u32> = self
            .m
            .luns()
            .iter()
            .filter(|i| i.kind == LunKind::Copy)
            .map(|i| i.lun)
            .collect();
        if !copies.is_empty() && self.r.chance(80) {
            pick(self.r, &copies)
        } else {
            self.number()
        }
    }

    /// A LUN with lost ranges (a copy of it, attach or restore carries them), or any.
    fn lost_or_any(&mut self) -> u32 {
        let lost = self.lost_luns();
        if !lost.is_empty() && self.r.chance(60) {
            pick(self.r, &lost).0
        } else {
            self.number()
        }
    }

    /// Attached LUNs that have lost ranges, with their sizes.
    fn lost_luns(&self) -> Vec<(u32, u64)> {
        self.m
            .luns()
            .iter()
            .filter(|i| i.attached && i.lost_bytes > 0)
            .map(|i| (i.lun, i.size))
            .collect()
    }

    fn host(&mut self) -> u64 {
        let registered: Vec<u64> = self.m.hosts().iter().map(|h| h.id).collect();
        if !registered.is_empty() && self.r.chance(80) {
            pick(self.r, &registered)
        } else {
            pick(self.r, &HOSTS)
        }
    }

    fn on_behalf(&mut self) -> Option<u64> {
        self.r.chance(20).then(|| self.host())
    }

    fn tag(&mut self) -> u64 {
        match weighted(self.r, &[1, 2, 7]) {
            0 => 0,
            1 => (1 + self.r.below(ZERO_BLOCKS - 1)) | ZERO_BLOCKS,
            _ => 1 + self.r.below(ZERO_BLOCKS - 1),
        }
    }

    fn lun_size(&mut self) -> u64 {
        let es = u64::from(self.g.extent_size);
        let cap = self.cap;
        match weighted(self.r, &[5, 6, 3, 3, 1, 1]) {
            0 => (1 + self.r.below(24)) * SECTOR,
            1 => (1 + self.r.below(12)) * es,
            2 => (1 + self.r.below(6)) * es + (1 + self.r.below(es / SECTOR - 1)) * SECTOR,
            3 => cap / 3 / es * es,
            4 => cap,
            _ => pick(self.r, &[0, 1000, cap + es]),
        }
    }

    /// An attached LUN to do I/O on, and a range of it: half the time (when there are
    /// lost ranges) over one of them.
    fn io(&mut self) -> Option<(u32, u64, u64)> {
        let lost = self.lost_luns();
        if !lost.is_empty() && self.r.chance(50) {
            let (n, size) = pick(self.r, &lost);
            let ranges = self.m.lost_ranges(n).unwrap_or_default();
            let (s, len) = pick(self.r, &ranges);
            let (off, l) = self.around(s, len, size);
            return Some((n, off, l));
        }
        let attached: Vec<(u32, u64)> = self
            .m
            .luns()
            .iter()
            .filter(|i| i.attached)
            .map(|i| (i.lun, i.size))
            .collect();
        if attached.is_empty() {
            return None;
        }
        let (n, size) = pick(self.r, &attached);
        let (off, l) = self.io_range(size);
        Some((n, off, l))
    }

    /// A range over the lost range `[s, s + len)` of a LUN of `size` bytes: all of it,
    /// inside it, across its start or its end.
    fn around(&mut self, s: u64, len: u64, size: u64) -> (u64, u64) {
        let es = u64::from(self.g.extent_size);
        let sectors = len / SECTOR;
        let (from, to) = match self.r.below(5) {
            0 => (s, s + len),
            1 => {
                let a = self.r.below(sectors);
                let b = a + 1 + self.r.below((sectors - a).min(3 * es / SECTOR));
                (s + a * SECTOR, s + b * SECTOR)
            }
            2 => {
                let back = (1 + self.r.below(2 * es / SECTOR)) * SECTOR;
                let fwd = (1 + self.r.below(sectors.min(2 * es / SECTOR))) * SECTOR;
                (s.saturating_sub(back), s + fwd)
            }
            3 => {
                let back = (1 + self.r.below(sectors.min(2 * es / SECTOR))) * SECTOR;
                let fwd = (1 + self.r.below(2 * es / SECTOR)) * SECTOR;
                (s + len - back, (s + len + fwd).min(size))
            }
            _ => (s, (s + es).min(s + len)),
        };
        (from, to - from)
    }

    /// As the state-machine test: mostly inside the LUN, biased to extent boundaries;
    /// sometimes the whole LUN, empty, misaligned or out of range.
    fn io_range(&mut self, size: u64) -> (u64, u64) {
        let es = u64::from(self.g.extent_size);
        let sectors = size / SECTOR;
        let extents = size.div_ceil(es);
        match weighted(self.r, &[12, 4, 2, 1, 1]) {
            0 => {
                let s = self.r.below(sectors);
                let l = 1 + self.r.below(sectors.min(3 * es / SECTOR + 2));
                (s * SECTOR, l.min(sectors - s) * SECTOR)
            }
            1 => {
                let off = self.r.below(extents) * es;
                let k = 1 + self.r.below(3);
                (off, (k * es).min(size - off))
            }
            2 => (0, size),
            3 => (self.r.below(sectors + 3) * SECTOR, 0),
            _ => pick(
                self.r,
                &[
                    (size - SECTOR, 2 * SECTOR),
                    (size, SECTOR),
                    (1, SECTOR),
                    (0, 100),
                    (u64::MAX - 511, SECTOR),
                ],
            ),
        }
    }

    /// One operation. Before the repair (`building`) LUNs are created and written more.
    fn op(&mut self, building: bool) -> Op {
        let has_io = self.m.luns().iter().any(|i| i.attached);
        let io = u64::from(has_io);
        let b = u64::from(building);
        // Weights, in the order of the match below.
        let weights = [
            4 + 6 * b, // create LUN
            6,         // create copy
            2,         // create copies
            4,         // attach
            2,         // attach many
            2,         // detach
            4,         // restore
            3,         // delete
            2,         // online/offline
            2,         // add host
            1,         // remove host
            3,         // grant
            1,         // revoke
            1,         // security
            3,         // flush
            2,         // reopen
            2,         // power cut
            1,         // detect zeros
            io * 24,   // write
            io * 8,    // read
            io * 3,    // discard
            io * 3,    // write as
            io * 2,    // read as
            io * 4,    // write zeroes
            io * 4,    // map
            io * 3,    // diff
            io,        // discard as
        ];
        match weighted(self.r, &weights) {
            0 => Op::CreateLun {
                lun: self.new_number(),
                size: self.lun_size(),
            },
            1 => Op::CreateCopy {
                parent: self.lost_or_any(),
                lun: self.new_number(),
                attached: self.r.chance(70),
            },
            2 => {
                let k = 1 + self.r.below(3);
                let pairs = (0..k)
                    .map(|_| (self.lost_or_any(), self.new_number()))
                    .collect();
                Op::CreateCopies {
                    pairs,
                    attached: self.r.chance(70),
                }
            }
            3 => Op::Attach(self.copy_number()),
            4 => {
                let k = 1 + self.r.below(3);
                Op::AttachMany((0..k).map(|_| self.copy_number()).collect())
            }
            5 => Op::Detach(self.copy_number()),
            6 => Op::Restore(self.copy_number()),
            7 => Op::Delete {
                lun: self.number(),
                orphan: self.r.chance(40),
            },
            8 => Op::SetOnline {
                lun: self.number(),
                online: self.r.chance(70),
            },
            9 => {
                let name = match self.r.below(8) {
                    0 => String::new(),
                    1 => "x".repeat(57),
                    _ => format!("h{}", self.r.below(1000)),
                };
                Op::AddHost {
                    id: self.host(),
                    name,
                }
            }
            10 => Op::RemoveHost(self.host()),
            11 => Op::Grant {
                lun: self.number(),
                host: self.host(),
                access: pick(self.r, &[Access::Read, Access::ReadWrite]),
            },
            12 => Op::Revoke {
                lun: self.number(),
                host: self.host(),
            },
            13 => Op::SetSecurity(self.r.chance(50)),
            14 => Op::Flush,
            15 => Op::Reopen,
            16 => Op::PowerCut(match self.r.below(4) {
                0 => CutOutcome::DropAll,
                1 => CutOutcome::KeepAll,
                2 => CutOutcome::Random {
                    seed: self.r.next_u64(),
                },
                _ => CutOutcome::Harsh {
                    seed: self.r.next_u64(),
                },
            }),
            17 => Op::SetDetectZeros(self.r.chance(50)),
            k => {
                let Some((lun, offset, len)) = self.io() else {
                    return Op::Flush;
                };
                match k {
                    18 => Op::Write {
                        lun,
                        offset,
                        len,
                        tag: self.tag(),
                    },
                    19 => Op::Read { lun, offset, len },
                    20 => Op::Discard { lun, offset, len },
                    21 => Op::WriteAs {
                        host: self.host(),
                        lun,
                        offset,
                        len,
                        tag: self.tag(),
                    },
                    22 => Op::ReadAs {
                        host: self.host(),
                        lun,
                        offset,
                        len,
                    },
                    23 => Op::WriteZeroes {
                        host: self.on_behalf(),
                        lun,
                        offset,
                        len,
                        punch: self.r.chance(50),
                    },
                    24 => Op::Map {
                        host: self.on_behalf(),
                        lun,
                        offset,
                        len,
                    },
                    25 => {
                        let b = self.number();
                        Op::Diff {
                            host: self.on_behalf(),
                            a: lun,
                            b,
                            offset,
                            len,
                        }
                    }
                    _ => Op::DiscardAs {
                        host: self.host(),
                        lun,
                        offset,
                        len,
                    },
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Steps, damage and repair
// ---------------------------------------------------------------------------------

/// Lost bytes of every LUN in the model.
fn lost_total(m: &Model) -> u64 {
    m.luns().iter().map(|i| i.lost_bytes).sum()
}

/// Applies `op` to the array and the model (a power cut: cut, reopen, recover) and
/// checks them as the state-machine test does after every step.
fn step(h: &mut Harness<Dev>, op: &Op, what: &str) -> Result<(), String> {
    if let Op::PowerCut(outcome) = *op {
        let mut dev = h.take_device();
        let point = dev.crash_point();
        dev.power_cut(outcome)
            .map_err(|e| format!("{what}: cut: {e:?}"))?;
        let what = format!("{what}: power cut {point}, outcome {outcome}");
        let mut a = Array::open(dev, &h.open).map_err(|e| format!("{what}: reopen: {e}"))?;
        let garbled = matches!(outcome, CutOutcome::Harsh { .. });
        h.m =
            h.m.recover(&mut a, garbled)
                .map_err(|e| format!("{what}: {e}"))?;
        h.a = Some(a);
        count("power cuts", 1);
        return Ok(());
    }
    let lost_before = lost_total(&h.m);
    let s = h.step(op, false).map_err(|e| format!("{what}: {e}"))?;
    let lost_after = lost_total(&h.m);
    match (&s.result, op) {
        (Err(Error::LostData { .. }), _) => count("reads refused with LostData", 1),
        (Ok(()), _) if lost_after < lost_before => {
            count("lost bytes written over", lost_before - lost_after)
        }
        (
            Ok(()),
            Op::CreateCopy { .. }
            | Op::CreateCopies { .. }
            | Op::Attach(_)
            | Op::AttachMany(_)
            | Op::Restore(_),
        ) if lost_after > lost_before => {
            count("copies, attaches, restores inheriting lost ranges", 1)
        }
        _ => {}
    }
    let touched = op.touched(&h.m);
    h.verify(Some(&touched))
        .map_err(|e| format!("{what}, after {op:?}: {e}"))
}

/// Garbles page `page` of `dev` (4 KiB at its address).
fn garble(dev: &mut MemDevice, page: u64, r: &mut Rng) {
    let bs = u64::from(dev.block_size());
    dev.write(page * PAGE / bs, &r.bytes(PAGE as usize))
        .expect("garble");
}

/// Flushes, destroys both copies of 1 to 3 random live metadata pages, repairs,
/// reopens, and checks the repaired array against the model of before (range by
/// range) and against `Model::repaired` (`verify()`).
fn damage_and_repair(h: &mut Harness<Dev>, r: &mut Rng, what: &str) -> Result<(), String> {
    h.step(&Op::Flush, false)
        .map_err(|e| format!("{what}: flush: {e}"))?;
    let a = h.array();
    let geo = a.engine().geometry();
    let mut live = Vec::new();
    for p in geo.meta_start..geo.meta_start + geo.meta_pages {
        if a.engine().meta_refcount(p).map_err(|e| format!("{e}"))? > 0 {
            live.push(p);
        }
    }
    let k = (1 + r.below(3) as usize).min(live.len());
    let mut victims = Vec::new();
    while victims.len() < k {
        let p = pick(r, &live);
        if !victims.contains(&p) {
            victims.push(p);
        }
    }
    // Everything is committed and flushed: the device as a crash would leave it.
    let mut mem = h.take_device().into_inner();
    for &p in &victims {
        garble(&mut mem, p, r);
        if let Some(off) = geo.mirror_offset() {
            garble(&mut mem, p + off, r);
        }
    }
    count("repairs", 1);
    count("pages destroyed (both copies)", victims.len() as u64);
    let what = format!("{what}: pages {victims:?} of {} live destroyed", live.len());
    let pre = h.m.clone();
    let opts = |dry_run| RepairOptions {
        open: h.open.clone(),
        dry_run,
    };
    let (mem, dry) =
        Array::repair(mem, &opts(true)).map_err(|e| format!("{what}: dry run: {e}"))?;
    let (dev, rep) = Array::repair(PowerCutDevice::new(mem), &opts(false))
        .map_err(|e| format!("{what}: repair: {e}"))?;
    let what = format!("{what}, {rep:?}");
    let mut as_real = dry.clone();
    as_real.dry_run = false;
    as_real.generation = rep.generation;
    if as_real != rep {
        return Err(format!("{what}: the dry run reported {dry:?}"));
    }
    let mut a = Array::open(dev, &h.open).map_err(|e| format!("{what}: open: {e}"))?;
    let g = a.pool_info().generation;
    if rep.generation != g || g != pre.generation() + 1 {
        return Err(format!(
            "{what}: generation {g} after the repair, {} before it",
            pre.generation()
        ));
    }
    check_against(&mut a, &pre, &rep).map_err(|e| format!("{what}: {e}"))?;
    let found = a.check().map_err(|e| format!("{what}: check: {e}"))?;
    if found.iter().any(|v| v.severity() != Severity::Notice) {
        return Err(format!("{what}: check after the repair: {found:?}"));
    }
    h.m.repaired(&rep, &mut a)
        .map_err(|e| format!("{what}: Model::repaired: {e}"))?;
    h.a = Some(a);
    h.verify(None)
        .map_err(|e| format!("{what}: verify after the repair: {e}"))?;
    if rep.is_complete() {
        count("repairs that lost nothing", 1);
    }
    if !rep.lost.is_empty() {
        count("repairs with lost ranges", 1);
    }
    count("lost ranges", rep.lost.len() as u64);
    let kept_mapping = rep.lost.iter().filter(|&&(n, o, l)| {
        let before = pre.lost_ranges(n).unwrap_or_default();
        !rep.rebuilt.contains(&n) && !before.iter().any(|&(bo, bl)| bo <= o && o + l <= bo + bl)
    });
    count(
        "lost ranges of a mapping kept whole (their record lost)",
        kept_mapping.count() as u64,
    );
    let partial = rep.lost.iter().filter(|&&(n, o, l)| {
        let size = pre.lun_info(n).map_or(0, |i| i.size);
        o > 0 || l < size
    });
    count("lost ranges covering part of a LUN", partial.count() as u64);
    count("lost bytes", rep.lost.iter().map(|l| l.2).sum());
    if !rep.lost_records.is_empty() {
        count("repairs that lost LUN records", 1);
    }
    count(
        "LUNs gone",
        (pre.lun_numbers().len() - rep.luns.len()) as u64,
    );
    count("copies orphaned", rep.orphaned.len() as u64);
    count("mappings rebuilt", rep.rebuilt.len() as u64);
    if rep.hosts_lost {
        count("repairs that lost hosts", 1);
    }
    Ok(())
}

/// The repaired array against `pre`, the model of the last commit before the damage,
/// and the report, range by range (without `Model::repaired`).
fn check_against(a: &mut Array<Dev>, pre: &Model, rep: &RepairReport) -> Result<(), String> {
    for &n in &rep.luns {
        if pre.lun_info(n).is_err() {
            return Err(format!("LUN {n} kept, but there was none"));
        }
    }
    if a.lun_numbers() != rep.luns {
        return Err(format!("LUNs {:?} after the repair", a.lun_numbers()));
    }
    for n in pre.lun_numbers() {
        if !rep.luns.contains(&n) {
            let reported = rep
                .lost_records
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&u64::from(n)));
            if !reported {
                return Err(format!("LUN {n} vanished, its record not reported lost"));
            }
            continue;
        }
        let info = pre.lun_info(n).map_err(|e| format!("{e}"))?;
        // Lost: what was lost before and what the repair lost.
        let mut lost: Vec<(u64, u64)> = Vec::new();
        let before = pre.lost_ranges(n).map_err(|e| format!("{e}"))?;
        let now = rep
            .lost
            .iter()
            .filter(|l| l.0 == n)
            .map(|&(_, o, l)| (o, l));
        for (o, l) in before.into_iter().chain(now) {
            lost.push((o, o + l));
        }
        lost.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in lost {
            match merged.last_mut() {
                Some(m) if s <= m.1 => m.1 = m.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let got: Vec<(u64, u64)> = a
            .lost_ranges(n)
            .map_err(|e| format!("{e}"))?
            .iter()
            .map(|&(o, l)| (o, o + l))
            .collect();
        if got != merged {
            return Err(format!("LUN {n}: lost ranges {got:?}, expected {merged:?}"));
        }
        if !info.attached {
            if !got.is_empty() {
                return Err(format!("detached copy {n} has lost ranges"));
            }
            continue;
        }
        if !info.online {
            // Not readable through the API; verify() reads it after Model::repaired.
            continue;
        }
        let size = info.size;
        let mut pos = 0;
        let mut buf = vec![0u8; 64 << 10];
        let mut want = vec![0u8; 64 << 10];
        while pos < size {
            let inside = got.iter().find(|&&(s, e)| s <= pos && pos < e).copied();
            let stop = match inside {
                Some((_, e)) => e,
                None => got
                    .iter()
                    .map(|&(s, _)| s)
                    .find(|&s| s > pos)
                    .unwrap_or(size),
            };
            let len = (stop.min(size) - pos).min(64 << 10);
            let b = &mut buf[..len as usize];
            let r = a.read(n, pos, b);
            if inside.is_some() {
                let w = Err(Error::LostData {
                    lun: n,
                    offset: pos,
                    len,
                });
                if r != w {
                    return Err(format!("LUN {n} at {pos}: read {r:?} in a lost range"));
                }
            } else {
                r.map_err(|e| format!("LUN {n} at {pos}: read failed: {e}"))?;
                let w = &mut want[..len as usize];
                pre.read(n, pos, w)
                    .map_err(|e| format!("LUN {n} at {pos}: model: {e}"))?;
                if b != w {
                    let at = b.iter().zip(w.iter()).position(|(x, y)| x != y);
                    let s = at.unwrap_or(0) / SECTOR as usize;
                    let sec = s * SECTOR as usize..(s + 1) * SECTOR as usize;
                    return Err(format!(
                        "LUN {n}: sector {} after the repair holds {}, before it {}",
                        pos / SECTOR + s as u64,
                        pattern::describe(&b[sec.clone()]),
                        pattern::describe(&w[sec])
                    ));
                }
            }
            pos += len;
        }
        // Reads across each edge of a lost range name the lost part only.
        for &(s, e) in &got {
            for (from, to, lost_from, lost_to) in [
                (s.saturating_sub(SECTOR), s + SECTOR, s, s + SECTOR),
                (e - SECTOR, (e + SECTOR).min(size), e - SECTOR, e),
            ] {
                let mut b = vec![0u8; (to - from) as usize];
                let r = a.read(n, from, &mut b);
                let w = Err(Error::LostData {
                    lun: n,
                    offset: lost_from,
                    len: lost_to - lost_from,
                });
                if r != w {
                    return Err(format!(
                        "LUN {n}: read of [{from}, {to}) across lost [{s}, {e}) returned {r:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Fills a crowded geometry: 50 to 90 small LUNs and copies, 57 to 64 hosts and
/// grants, some data.
fn crowd(h: &mut Harness<Dev>, r: &mut Rng, g: Geometry) -> Result<(), String> {
    let luns = 50 + r.below(41) as u32;
    let es = u64::from(g.extent_size);
    let mut ops = Vec::new();
    for n in 0..luns {
        let made: Vec<u32> = (0..n).collect();
        ops.push(if n > 0 && r.chance(40) {
            Op::CreateCopy {
                parent: pick(r, &made),
                lun: n,
                attached: r.chance(80),
            }
        } else {
            Op::CreateLun {
                lun: n,
                size: (1 + r.below(2 * es / SECTOR)) * SECTOR,
            }
        });
    }
    for i in 0..57 + r.below(8) {
        ops.push(Op::AddHost {
            id: 0x1000 + i,
            name: format!("host-{i}"),
        });
    }
    for _ in 0..40 {
        ops.push(Op::Grant {
            lun: r.below(u64::from(luns)) as u32,
            host: 0x1000 + r.below(64),
            access: pick(r, &[Access::Read, Access::ReadWrite]),
        });
    }
    for _ in 0..30 {
        let n = r.below(u64::from(luns)) as u32;
        let size = h.m.lun_info(n).map_or(SECTOR, |i| i.size);
        let s = r.below(size / SECTOR);
        ops.push(Op::Write {
            lun: n,
            offset: s * SECTOR,
            len: SECTOR * (1 + r.below(size / SECTOR - s)),
            tag: 1 + r.below(1 << 40),
        });
    }
    // Refusals (a copy of a detached copy, no space) are compared with the model too.
    for (i, op) in ops.iter().enumerate() {
        h.step(op, false).map_err(|e| format!("crowd {i}: {e}"))?;
    }
    h.verify(None).map_err(|e| format!("crowded: {e}"))
}

/// One case, twice: `before` random operations, damage and repair, `after` more (the
/// second repair meets the first one's lost ranges, and may damage their record).
/// Strict: no detours around the known core bugs.
fn run(geometry: usize, seed: u64, before: usize, after: usize) -> Result<(), String> {
    let g = GEOMETRIES[geometry];
    let mut h = Harness::format(g.device(), &g.format_options());
    let cap = h.array().pool_info().capacity_bytes;
    let mut r = Rng::new(seed);
    if g.crowded {
        crowd(&mut h, &mut r, g)?;
    }
    let mut n = 0;
    for round in 0..2 {
        for i in 0..before + after {
            if i == before {
                damage_and_repair(&mut h, &mut r, &format!("after step {n}"))?;
            }
            n += 1;
            let op = Gen {
                m: &h.m,
                g,
                cap,
                r: &mut r,
            }
            .op(round == 0 && i < before);
            step(&mut h, &op, &format!("step {n}"))?;
        }
        if after == 0 {
            damage_and_repair(&mut h, &mut r, &format!("after step {n}"))?;
        }
    }
    h.verify(None).map_err(|e| format!("at the end: {e}"))?;
    step(&mut h, &Op::Reopen, "the final reopen")?;
    h.verify(None)
        .map_err(|e| format!("after the final reopen: {e}"))?;
    count("cases", 1);
    count("steps", n as u64);
    if std::env::var_os("LUNSNAP_VERBOSE").is_some() {
        let s = STATS.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!("repair test so far: {s:?}");
    }
    Ok(())
}

fn config(default_cases: u64, file: &'static str) -> Config {
    Config {
        cases: env_count("PROPTEST_CASES", default_cases) as u32,
        max_shrink_iters: 1024,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(192, "proptest-regressions/repair.txt"))]

    #[test]
    fn repair_matches_the_model(
        geometry in 0..GEOMETRIES.len(),
        seed in any::<u64>(),
        before in 0..60usize,
        after in 0..60usize,
    ) {
        if let Err(e) = run(geometry, seed, before, after) {
            return Err(TestCaseError::fail(format!("geometry {geometry}, seed {seed:#x}: {e}")));
        }
    }
}

// ---------------------------------------------------------------------------------
// The core bugs this test found, stated directly (fixed; kept as regressions)
// ---------------------------------------------------------------------------------

/// An array whose LUN 0 (12 MiB, written whole) lost part of its mapping to a
/// repair, the report, and the model of the array before the damage.
fn repaired_with_model() -> (MemDevice, RepairReport, Model) {
    let opts = FormatOptions {
        extent_size: 4096,
        max_luns: 16,
        cache_bytes: 64 << 10,
        ..FormatOptions::default()
    };
    let mut a = Array::format(MemDevice::new(4096, 8192).expect("device"), &opts).expect("format");
    let mut m = Model::new(&a.pool_info());
    let data = pattern::data(5, 0, 0, 12 << 20);
    a.create_lun(0, 12 << 20).expect("create");
    m.create_lun(0, 12 << 20).expect("model");
    a.write(0, 0, &data).expect("write");
    m.write(0, 0, &data).expect("model");
    a.flush().expect("flush");
    m.flush().expect("model");
    let geo = a.engine().geometry();
    let live: Vec<u64> = (geo.meta_start..geo.meta_start + geo.meta_pages)
        .filter(|&p| a.engine().meta_refcount(p).expect("count") > 0)
        .collect();
    let dev = a.close().expect("close");
    for p in live {
        let mut d = dev.clone();
        for at in [Some(0), geo.mirror_offset()].into_iter().flatten() {
            d.write(p + at, &[0x55; PAGE as usize]).expect("garble");
        }
        let (d, r) = Array::repair(d, &RepairOptions::default()).expect("repair");
        if r.lost.iter().any(|l| l.2 < 12 << 20) {
            return (d, r, m);
        }
    }
    panic!("no page's loss lost part of LUN 0");
}

fn repaired_with_lost_range() -> (MemDevice, RepairReport) {
    let (d, r, _) = repaired_with_model();
    (d, r)
}

/// After a power cut the lost ranges are the last commit's; after noted early commits
/// (commits at unknown points of a write), anything from those down to the current
/// ones, each sector its committed content or a value written since.
#[test]
fn a_power_cut_leaves_the_committed_lost_ranges() {
    let (dev, r, m0) = repaired_with_model();
    let (n, off, len) = r.lost[0];
    let part = pattern::data(9, n, off + 4096, 8192);
    // flush: whether the write was committed; early: whether the model is told of an
    // early commit at an unknown point instead of the flush.
    for (flush, early) in [(false, false), (true, false), (false, true), (true, true)] {
        let what = format!("flush {flush}, early commit noted {early}");
        let mut a =
            Array::open(PowerCutDevice::new(dev.clone()), &OpenOptions::default()).expect("open");
        let mut m = m0.clone();
        m.repaired(&r, &mut a).expect("repaired");
        m.verify(&mut a).expect("verify after the repair");
        a.write(n, off + 4096, &part).expect("write");
        m.write(n, off + 4096, &part).expect("model write");
        assert_eq!(
            m.lost_ranges(n).expect("model"),
            a.lost_ranges(n).expect("array"),
            "{what}"
        );
        if flush {
            a.flush().expect("flush");
        }
        match (flush, early) {
            (true, false) => m.flush().expect("model flush"),
            (_, true) => m.note_early_commits(1),
            (false, false) => {}
        }
        let mut d = a.into_device();
        d.power_cut(CutOutcome::DropAll).expect("cut");
        let mut b = Array::open(d, &OpenOptions::default()).expect("reopen");
        let m = m
            .recover(&mut b, false)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let want = if flush {
            vec![(off, 4096), (off + 4096 + 8192, len - 4096 - 8192)]
        } else {
            vec![(off, len)]
        };
        assert_eq!(b.lost_ranges(n).expect("ranges"), want, "{what}");
        assert_eq!(m.lost_ranges(n).expect("model"), want, "{what}");
        m.verify(&mut b).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

/// Bug 1, fixed: a write of zeros (zero detection on) over a lost range cleared the
/// range and read back zeros, but marked nothing dirty: the flush committed nothing,
/// and after a reopen the range was lost again. `write_zeroes` with `punch` did the
/// same.
#[test]
fn zeros_over_a_lost_range_are_committed() {
    let (dev, r) = repaired_with_lost_range();
    let (n, off, _) = r.lost[0];
    for punch in [None, Some(true)] {
        let mut a = Array::open(dev.clone(), &OpenOptions::default()).expect("open");
        let g = a.pool_info().generation;
        match punch {
            None => a.write(n, off, &[0u8; 4096]).expect("write zeros"),
            Some(p) => a.write_zeroes(n, off, 4096, p).expect("write_zeroes"),
        }
        let mut b = [1u8; 4096];
        a.read(n, off, &mut b).expect("read before the flush");
        a.flush().expect("flush");
        assert_eq!(
            a.pool_info().generation,
            g + 1,
            "{punch:?}: the flush committed nothing"
        );
        let mut a =
            Array::open(a.close().expect("close"), &OpenOptions::default()).expect("reopen");
        assert_eq!(
            a.read(n, off, &mut b),
            Ok(()),
            "{punch:?}: lost again after a reopen"
        );
    }
}

/// Bug 3, fixed: a write of 0 bytes strictly inside a lost range split it (`LostRanges::clear`
/// found an overlap for an empty range): the LUN then had two touching lost ranges, and
/// a read over both was refused naming only the first.
#[test]
fn an_empty_write_leaves_a_lost_range_whole() {
    let (dev, r) = repaired_with_lost_range();
    let (n, off, len) = r.lost[0];
    let mut a = Array::open(dev, &OpenOptions::default()).expect("open");
    a.write(n, off + 4096, &[]).expect("empty write");
    assert_eq!(a.lost_ranges(n).expect("ranges"), vec![(off, len)]);
    let mut b = vec![0u8; 8192];
    assert_eq!(
        a.read(n, off, &mut b),
        Err(Error::LostData {
            lun: n,
            offset: off,
            len: 8192
        })
    );
}

/// Bug 2, fixed (commit fcf3342): a second repair dropped the lost ranges of the first
/// (salvage started from an empty set and never read the lost-range tree) and
/// reported nothing lost: the ranges then read as zeros, which is wrong data.
#[test]
fn a_second_repair_keeps_lost_ranges() {
    let (dev, r) = repaired_with_lost_range();
    let (n, off, len) = r.lost[0];
    let (dev, r2) = Array::repair(dev, &RepairOptions::default()).expect("second repair");
    let mut a = Array::open(dev, &OpenOptions::default()).expect("open");
    assert_eq!(
        a.lost_ranges(n).expect("ranges"),
        vec![(off, len)],
        "{r2:?}"
    );
    let mut b = [1u8; 4096];
    assert!(
        matches!(a.read(n, off, &mut b), Err(Error::LostData { .. })),
        "a lost range reads as {:?}",
        &b[..8]
    );
}
