//! What the model predicts of [`Array::map`] and [`Array::diff`], and the checks of
//! both against an array.
//!
//! The contract (docs/DESIGN.md §2), stated with the model's lineage tokens: logical
//! extent `le` of a LUN holds data when the LUN's map has a token for it, and that
//! data is shared when another LUN maps the same token. Two LUNs may differ in an
//! extent exactly when their tokens there differ, a hole counting as no token. Both
//! answers are clipped to the request, and runs of alike extents are merged.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::model::Model;
use super::verify::Mismatch;
use crate::array::{Array, DiffRange, MapRange, SECTOR};
use crate::device::BlockDevice;
use crate::error::Result;

/// The parts of the byte range `[offset, offset + len)` in each logical extent of
/// `es` bytes, in order: (extent, first byte, end byte).
fn pieces(es: u64, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    let end = offset + len;
    let extents = match len {
        0 => 0..0,
        _ => offset / es..(end - 1) / es + 1,
    };
    extents.map(move |le| (le, (le * es).max(offset), ((le + 1) * es).min(end)))
}

/// [`pieces`] cut further at the edges of the byte ranges `lost` (`[start, end)`),
/// each part saying whether it lies in one of them: (extent, first byte, end byte,
/// lost).
fn lost_pieces(
    es: u64,
    offset: u64,
    len: u64,
    lost: &[&[(u64, u64)]],
) -> Vec<(u64, u64, u64, bool)> {
    let inside = |b: u64| lost.iter().any(|l| l.iter().any(|&(s, e)| s <= b && b < e));
    let mut out = Vec::new();
    for (le, from, to) in pieces(es, offset, len) {
        let mut cuts: Vec<u64> = lost
            .iter()
            .flat_map(|l| l.iter().flat_map(|&(s, e)| [s, e]))
            .filter(|&c| from < c && c < to)
            .collect();
        cuts.push(to);
        cuts.sort_unstable();
        cuts.dedup();
        let mut at = from;
        for c in cuts {
            out.push((le, at, c, inside(at)));
            at = c;
        }
    }
    out
}

/// Joins touching parts that carry equal labels: (first byte, end byte, label).
fn runs<L: PartialEq>(parts: impl Iterator<Item = (u64, u64, L)>) -> Vec<(u64, u64, L)> {
    let mut out: Vec<(u64, u64, L)> = Vec::new();
    for (from, to, label) in parts {
        match out.last_mut() {
            Some(run) if run.1 == from && run.2 == label => run.1 = to,
            _ => out.push((from, to, label)),
        }
    }
    out
}

fn mismatch(what: String) -> Mismatch {
    Mismatch { what }
}

/// Judges an answer of the array (`got`) against the model's (`want`): the same
/// refusal, or a list in which `fault` finds nothing wrong and that, if `exact`, is
/// the model's.
fn judge<T: PartialEq + fmt::Debug>(
    what: String,
    got: Result<Vec<T>>,
    want: Result<Vec<T>>,
    exact: bool,
    fault: impl FnOnce(&[T]) -> Option<String>,
) -> Result<(), Mismatch> {
    match (got, want) {
        (Err(g), Err(w)) if g == w => Ok(()),
        (Ok(g), Ok(w)) => {
            let unlike = || (exact && g != w).then(|| format!("the model says {w:?}"));
            match fault(&g).or_else(unlike) {
                None => Ok(()),
                Some(f) => Err(mismatch(format!("{what} is {g:?}: {f}"))),
            }
        }
        (g, w) => Err(mismatch(format!("{what} returned {g:?}, the model {w:?}"))),
    }
}

/// What is wrong with the shape of an answer covering `[offset, end)` as `ranges`
/// (first byte, end byte): each range non-empty and inside the request, in order
/// without overlap, every boundary inside the request on an extent boundary or an
/// edge of one of the `lost` ranges, and (`tiles`) no gap between them.
fn shape_fault(
    es: u64,
    offset: u64,
    end: u64,
    ranges: &[(u64, u64)],
    lost: &[&[(u64, u64)]],
    tiles: bool,
) -> Option<String> {
    let edge = |b: u64| {
        lost.iter()
            .any(|l| l.iter().any(|&(s, e)| b == s || b == e))
    };
    let mut at = offset;
    for &(from, to) in ranges {
        let fault = if from >= to {
            Some("an empty range")
        } else if from < at || to > end {
            Some("a range out of order, overlapping or outside the request")
        } else if tiles && from != at {
            Some("a gap between ranges")
        } else if [from, to]
            .iter()
            .any(|&b| b != offset && b != end && b % es != 0 && !edge(b))
        {
            Some("a boundary inside an extent, not at a lost range's edge")
        } else {
            None
        };
        if let Some(f) = fault {
            return Some(format!("{f} at [{from}, {to})"));
        }
        at = to;
    }
    (tiles && at != end).then(|| format!("the ranges end at {at}, the request at {end}"))
}

impl Model {
    /// What [`Array::map`](crate::Array::map) must return: each extent of the range is
    /// a hole, data of this LUN alone, or data shared with another LUN (its lineage
    /// token is mapped by more than one LUN), and the parts inside the LUN's lost
    /// ranges are marked lost (cut at their edges); runs of one kind are merged and
    /// the first and last clipped to the request. Refusals as [`io_check`](Self::io_check),
    /// except that an offline LUN may be mapped. Exact while
    /// [`lineage_known`](Self::lineage_known). Its cost grows with the extents in the
    /// range.
    pub fn map(&self, n: u32, offset: u64, len: u64) -> Result<Vec<MapRange>> {
        self.range_check(n, offset, len, false)?;
        let tokens = &self.get(n)?.map;
        // None: a hole; Some(shared).
        let kind = |le| {
            let t = tokens.get(&le)?;
            Some(self.counts.get(t).is_some_and(|&c| c > 1))
        };
        let lost = &self.get(n)?.lost;
        let parts = lost_pieces(self.es, offset, len, &[lost])
            .into_iter()
            .map(|(le, from, to, lost)| (from, to, (kind(le), lost)));
        Ok(runs(parts)
            .into_iter()
            .map(|(from, to, (kind, lost))| MapRange {
                offset: from,
                length: to - from,
                data: kind.is_some(),
                shared: kind == Some(true),
                lost,
            })
            .collect())
    }

    /// What [`Array::diff`](crate::Array::diff) must return: the extents of the range
    /// where LUNs `a` and `b` hold different lineage tokens (data on one side and a
    /// hole on the other included) and the parts lost in either, runs merged and
    /// clipped to the request. Refusals
    /// as [`io_check`](Self::io_check) for `a`, then for `b`, except that offline
    /// LUNs may be compared. Exact while [`lineage_known`](Self::lineage_known).
    pub fn diff(&self, a: u32, b: u32, offset: u64, len: u64) -> Result<Vec<DiffRange>> {
        self.range_check(a, offset, len, false)?;
        self.range_check(b, offset, len, false)?;
        let (la, lb) = (self.get(a)?, self.get(b)?);
        let (ta, tb) = (&la.map, &lb.map);
        // A range lost in either LUN may differ: its contents are unknown.
        let parts = lost_pieces(self.es, offset, len, &[&la.lost, &lb.lost])
            .into_iter()
            .map(|(le, from, to, lost)| (from, to, lost || ta.get(&le) != tb.get(&le)));
        Ok(runs(parts)
            .into_iter()
            .filter(|&(_, _, differs)| differs)
            .map(|(from, to, _)| DiffRange {
                offset: from,
                length: to - from,
            })
            .collect())
    }

    /// As [`HostView::map`](crate::HostView::map): the host needs a read grant.
    pub fn map_as(&self, host: u64, n: u32, offset: u64, len: u64) -> Result<Vec<MapRange>> {
        self.authorize(host, n, false)?;
        self.map(n, offset, len)
    }

    /// As [`HostView::diff`](crate::HostView::diff): both LUNs must be visible to the
    /// host (`a` checked first).
    pub fn diff_as(
        &self,
        host: u64,
        a: u32,
        b: u32,
        offset: u64,
        len: u64,
    ) -> Result<Vec<DiffRange>> {
        self.authorize(host, a, false)?;
        self.authorize(host, b, false)?;
        self.diff(a, b, offset, len)
    }

    /// Checks [`Array::map`] of the whole of LUN `n` (see
    /// [`verify_map_range`](Self::verify_map_range)).
    pub fn verify_map<D: BlockDevice>(&self, array: &mut Array<D>, n: u32) -> Result<(), Mismatch> {
        let size = self.luns.get(&n).map_or(0, |l| l.size);
        self.verify_map_range(array, n, 0, size)
    }

    /// Checks [`Array::map`] of `len` bytes at `offset` of LUN `n`: the same refusal as
    /// [`map`](Self::map) (a detached copy's), or ranges that tile the request, each
    /// boundary inside it on an extent boundary, alike neighbours merged, holes never
    /// shared, every sector holding anything but zeros inside a data range, and —
    /// while [`lineage_known`](Self::lineage_known) — exactly the model's ranges.
    pub fn verify_map_range<D: BlockDevice>(
        &self,
        array: &mut Array<D>,
        n: u32,
        offset: u64,
        len: u64,
    ) -> Result<(), Mismatch> {
        judge(
            format!("map({n}, {offset}, {len})"),
            array.map(n, offset, len),
            self.map(n, offset, len),
            self.lineage_known,
            |got| self.map_fault(n, offset, len, got),
        )
    }

    /// What is wrong with `got` as the map of `[offset, offset + len)` of LUN `n`,
    /// whatever the lineage.
    fn map_fault(&self, n: u32, offset: u64, len: u64, got: &[MapRange]) -> Option<String> {
        let spans: Vec<(u64, u64)> = got
            .iter()
            .map(|r| (r.offset, r.offset + r.length))
            .collect();
        let kinds: Vec<(bool, bool, bool)> =
            got.iter().map(|r| (r.data, r.shared, r.lost)).collect();
        let l = self.luns.get(&n)?;
        let data = &l.data;
        shape_fault(self.es, offset, offset + len, &spans, &[&l.lost], true)
            .or_else(|| {
                let i = kinds.windows(2).position(|k| k[0] == k[1])?;
                Some(format!("two alike ranges not merged at {}", spans[i + 1].0))
            })
            .or_else(|| {
                let r = got.iter().find(|r| !r.data && r.shared)?;
                Some(format!("a shared hole at {}", r.offset))
            })
            .or_else(|| {
                let holes = got.iter().filter(|r| !r.data);
                let mut inside = holes.map(|r| r.offset / SECTOR..(r.offset + r.length) / SECTOR);
                let s = inside.find_map(|sectors| data.range(sectors).next())?.0;
                Some(format!("a hole over data at byte {}", s * SECTOR))
            })
            .or_else(|| {
                let wrong = got.iter().find(|r| {
                    let end = r.offset + r.length;
                    let within = l.lost.iter().any(|&(s, e)| s <= r.offset && end <= e);
                    let touches = l.lost.iter().any(|&(s, e)| s < end && r.offset < e);
                    if r.lost {
                        !within
                    } else {
                        touches
                    }
                })?;
                Some(format!("lost marked wrongly at {}", wrong.offset))
            })
    }

    /// Checks [`Array::diff`] of `len` bytes at `offset` of LUNs `a` and `b`: the same
    /// refusal as [`diff`](Self::diff), or ranges in order, apart (merged), each
    /// boundary inside the request on an extent boundary, covering every sector whose
    /// content differs between the two, and — while
    /// [`lineage_known`](Self::lineage_known) — exactly the model's ranges.
    pub fn verify_diff<D: BlockDevice>(
        &self,
        array: &mut Array<D>,
        a: u32,
        b: u32,
        offset: u64,
        len: u64,
    ) -> Result<(), Mismatch> {
        judge(
            format!("diff({a}, {b}, {offset}, {len})"),
            array.diff(a, b, offset, len),
            self.diff(a, b, offset, len),
            self.lineage_known,
            |got| self.diff_fault(a, b, offset, len, got),
        )
    }

    /// What is wrong with `got` as the diff of `[offset, offset + len)` of LUNs `a`
    /// and `b`, whatever the lineage.
    fn diff_fault(
        &self,
        a: u32,
        b: u32,
        offset: u64,
        len: u64,
        got: &[DiffRange],
    ) -> Option<String> {
        let spans: Vec<(u64, u64)> = got
            .iter()
            .map(|r| (r.offset, r.offset + r.length))
            .collect();
        let covered = |byte: u64| {
            let i = spans.partition_point(|&(_, to)| to <= byte);
            spans.get(i).is_some_and(|&(from, _)| from <= byte)
        };
        let lost = |n| self.luns.get(&n).map_or(&[][..], |l| l.lost.as_slice());
        shape_fault(
            self.es,
            offset,
            offset + len,
            &spans,
            &[lost(a), lost(b)],
            false,
        )
        .or_else(|| {
            let w = spans.windows(2).find(|w| w[0].1 == w[1].0)?;
            Some(format!("two touching ranges not merged at {}", w[1].0))
        })
        .or_else(|| {
            let differing = self.differing_sectors(a, b, offset, len);
            let byte = differing
                .into_iter()
                .map(|s| s * SECTOR)
                .find(|&b| !covered(b))?;
            Some(format!(
                "the contents differ at byte {byte}, outside every range"
            ))
        })
        .or_else(|| {
            let (s, _) = [lost(a), lost(b)]
                .into_iter()
                .flatten()
                .map(|&(s, e)| (s.max(offset), e.min(offset + len)))
                .filter(|&(s, e)| s < e)
                .find(|&(s, e)| !spans.iter().any(|&(from, to)| from <= s && e <= to))?;
            Some(format!("a lost range at byte {s} is not reported"))
        })
    }

    /// The sectors of `[offset, offset + len)` whose content differs between LUNs `a`
    /// and `b` in the model.
    fn differing_sectors(&self, a: u32, b: u32, offset: u64, len: u64) -> BTreeSet<u64> {
        let (Some(la), Some(lb)) = (self.luns.get(&a), self.luns.get(&b)) else {
            return BTreeSet::new();
        };
        let span = offset / SECTOR..(offset + len) / SECTOR;
        let keys = la.data.range(span.clone()).chain(lb.data.range(span));
        keys.map(|(&s, _)| s)
            .filter(|s| la.data.get(s) != lb.data.get(s))
            .collect()
    }

    /// Checks [`Array::map`] of every LUN ([`verify_map`](Self::verify_map)) and
    /// [`Array::diff`] of pairs of attached LUNs over the range both have
    /// ([`verify_diff`](Self::verify_diff)): every pair while there are at most eight,
    /// else each copy with its parent and each LUN with the next one.
    pub fn verify_mappings<D: BlockDevice>(&self, array: &mut Array<D>) -> Result<(), Mismatch> {
        for &n in self.luns.keys() {
            self.verify_map(array, n)?;
        }
        let attached: Vec<(u32, u64)> = self
            .luns
            .iter()
            .filter(|(_, l)| l.attached)
            .map(|(&n, l)| (n, l.size))
            .collect();
        let mut pairs = Vec::new();
        for (i, &(a, sa)) in attached.iter().enumerate() {
            for &(b, sb) in &attached[i + 1..] {
                let related = [(a, b), (b, a)]
                    .iter()
                    .any(|&(p, c)| self.luns.get(&c).is_some_and(|l| l.parent == Some(p)));
                let next = attached.get(i + 1).is_some_and(|&(x, _)| x == b);
                if attached.len() <= 8 || related || next {
                    pairs.push((a, b, sa.min(sb)));
                }
            }
        }
        for (a, b, len) in pairs {
            self.verify_diff(array, a, b, 0, len)?;
        }
        Ok(())
    }
}
