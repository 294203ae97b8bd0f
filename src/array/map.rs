//! `Array::map` and `Array::diff`: which ranges of a LUN hold data (and whether
//! another LUN shares them), and where two LUNs may differ, found by walking only
//! the mapping entries inside the range, and for a diff only the parts of the two
//! mappings that are not shared.

use alloc::vec;
use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::Result;

use super::lun::{unpack, EXTENTS_PER_ENTRY};
use super::Array;
use crate::engine::LIVE_CHUNK;

/// One range of a LUN's address space, as [`Array::map`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MapRange {
    /// Byte offset in the LUN.
    pub offset: u64,
    /// Length in bytes (never 0).
    pub length: u64,
    /// True when the range is mapped to data extents; false for a hole, which reads
    /// as zeros and occupies no space.
    pub data: bool,
    /// True when another LUN maps the same extents (a copy and its parent before
    /// either wrote there): writing here copies the extent first. Always false for
    /// holes.
    pub shared: bool,
    /// True when the range's contents were lost to metadata damage (see
    /// [`Array::repair`](super::Array::repair) and
    /// [`Array::lost_ranges`](super::Array::lost_ranges)): reads of it fail with
    /// [`Error::LostData`](crate::Error::LostData) until it is written or discarded,
    /// whatever `data` says (`data` and `shared` still describe the mapping, which is
    /// usually a hole there). A lost range is neither zeros nor data a reader may
    /// skip.
    pub lost: bool,
}

/// A range where two LUNs may differ, as [`Array::diff`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DiffRange {
    /// Byte offset (the same in both LUNs).
    pub offset: u64,
    /// Length in bytes (never 0).
    pub length: u64,
}

/// Appends `[from, to)` (if not empty) to a map, extending the last range instead
/// when it ends at `from` and is of the same kind.
fn add_map(out: &mut Vec<MapRange>, from: u64, to: u64, data: bool, shared: bool, lost: bool) {
    if to <= from {
        return;
    }
    match out.last_mut() {
        Some(r)
            if (r.data, r.shared, r.lost) == (data, shared, lost)
                && r.offset + r.length == from =>
        {
            r.length += to - from;
        }
        _ => out.push(MapRange {
            offset: from,
            length: to - from,
            data,
            shared,
            lost,
        }),
    }
}

/// `map` (in order, tiling its request) with the parts that the lost byte ranges
/// `lost` (`[start, end)`, in order, apart) cover marked lost, alike neighbours
/// merged. Boundaries appear at the lost ranges' edges, which are sector aligned.
fn overlay_lost(map: Vec<MapRange>, lost: &[(u64, u64)]) -> Vec<MapRange> {
    if lost.is_empty() {
        return map;
    }
    let mut out = Vec::with_capacity(map.len() + 2 * lost.len());
    for r in map {
        let end = r.offset + r.length;
        let mut at = r.offset;
        for (s, e) in clipped(lost, r.offset, end) {
            add_map(&mut out, at, s, r.data, r.shared, false);
            add_map(&mut out, s, e, r.data, r.shared, true);
            at = e;
        }
        add_map(&mut out, at, end, r.data, r.shared, false);
    }
    out
}

/// The parts of the byte ranges `lost` (`[start, end)`, in order, apart) inside
/// `[from, to)`, in order; found by binary search, so the cost is that of the parts.
fn clipped(lost: &[(u64, u64)], from: u64, to: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let first = lost.partition_point(|&(_, e)| e <= from);
    lost[first..]
        .iter()
        .take_while(move |&&(s, _)| s < to)
        .map(move |&(s, e)| (s.max(from), e.min(to)))
}

/// Appends `[from, to)` to a diff of ranges sorted by start, extending the last
/// range when it reaches `from` (touching or overlapping).
fn add_diff(out: &mut Vec<DiffRange>, from: u64, to: u64) {
    if to <= from {
        return;
    }
    match out.last_mut() {
        Some(r) if r.offset + r.length >= from => {
            r.length = r.length.max(to - r.offset);
        }
        _ => out.push(DiffRange {
            offset: from,
            length: to - from,
        }),
    }
}

impl<D: BlockDevice> Array<D> {
    /// The ranges of LUN `n` from `offset` for `len` bytes, in order, each mapped to
    /// data (shared with another LUN or not) or a hole, and marked
    /// [`lost`](MapRange::lost) where [`Array::lost_ranges`] says so; adjacent ranges
    /// of the same kind merged. Mapping is per extent: a range boundary inside the
    /// request falls on an extent boundary or on the edge of a lost range (a sector
    /// boundary). The cost is that of the mapping entries inside the range
    /// plus the tree's depth, whatever the LUN's size.
    ///
    /// Errors: as [`Array::read`], but an offline LUN may be mapped (only its metadata
    /// is read).
    pub fn map(&mut self, n: u32, offset: u64, len: u64) -> Result<Vec<MapRange>> {
        self.map_inner(n, offset, len, true)
    }

    /// [`Array::map`] without the sharing: every range's `shared` is false. Cheaper:
    /// no reference count is read, and while dropped mappings wait to be freed it
    /// does not walk the live mappings as `map` then does to keep `shared` exact.
    /// For hosts that only ask where data is (NBD block status).
    ///
    /// Errors: as [`Array::map`].
    pub fn map_allocation(&mut self, n: u32, offset: u64, len: u64) -> Result<Vec<MapRange>> {
        self.map_inner(n, offset, len, false)
    }

    fn map_inner(&mut self, n: u32, offset: u64, len: u64, sharing: bool) -> Result<Vec<MapRange>> {
        self.io_check_online(n, offset, len, false)?;
        let mut out: Vec<MapRange> = Vec::new();
        if len == 0 {
            return Ok(out);
        }

        let es = self.extent_size;
        let end = offset + len;
        let (first, last) = (offset / es, (end - 1) / es);
        let mapping = self.get(n)?.mapping;
        // (logical extent, data extent, path shared), in order, inside the request.
        let mut mapped: Vec<(u64, u64, bool)> = Vec::new();
        let (lo, hi) = (first / EXTENTS_PER_ENTRY, last / EXTENTS_PER_ENTRY);
        let collect = |key: u64, v: &[u8], shared: bool| {
            for (i, &s) in unpack(v).iter().enumerate() {
                let le = key * EXTENTS_PER_ENTRY + i as u64;
                if s != 0 && (first..=last).contains(&le) {
                    mapped.push((le, u64::from(s) - 1, shared));
                }
            }
        };
        // Whether each mapped extent is shared, when the stored counts cannot say:
        // dropped mappings that wait to be freed still count.
        let mut live_shared: Option<Vec<bool>> = None;
        if sharing && self.reclaim_pending() {
            let live = self.live_mappings();
            let counts = self.eng.live_counts(&live, 0)?;
            self.eng
                .range_shared_live(&mapping, lo, hi, &counts, collect)?;
            let mut flags = vec![false; mapped.len()];
            let mut chunks: Vec<u64> = mapped.iter().map(|m| m.1 / LIVE_CHUNK).collect();
            chunks.sort_unstable();
            chunks.dedup();
            let mut counts = Some(counts);
            for c in chunks {
                let counts = match counts.take() {
                    Some(k) if c == 0 => k,
                    _ => self.eng.live_counts(&live, c * LIVE_CHUNK)?,
                };
                for (m, f) in mapped.iter().zip(flags.iter_mut()) {
                    if let Some(n) = counts.extent(m.1) {
                        *f = n > 1;
                    }
                }
            }
            live_shared = Some(flags);
        } else {
            self.eng.range_shared(&mapping, lo, hi, collect)?;
        }
        let mut pos = offset;
        for (i, (le, extent, path_shared)) in mapped.into_iter().enumerate() {
            let shared = sharing
                && (path_shared
                    || match &live_shared {
                        Some(f) => f.get(i).copied().unwrap_or(false),
                        None => self.eng.data_refcount(extent)? > 1,
                    });
            let start = (le * es).max(offset);
            let stop = ((le + 1) * es).min(end);
            add_map(&mut out, pos, start, false, false, false);
            add_map(&mut out, start, stop, true, shared, false);
            pos = stop;
        }
        add_map(&mut out, pos, end, false, false, false);
        Ok(overlay_lost(out, self.lost.of(n)))
    }

    /// The ranges of LUNs `a` and `b` from `offset` for `len` bytes where their
    /// contents may differ, in order, adjacent ranges merged: every extent one of them
    /// maps and the other maps to a different extent or not at all. Exact at extent
    /// granularity: an extent both wrote since they diverged is reported even if the
    /// bytes happen to be equal, and a range not reported is equal. Ranges lost in
    /// either LUN ([`Array::lost_ranges`]) are reported too, to the sector: their
    /// contents are unknown, so they are never claimed equal. The two mappings
    /// are walked together and every subtree they share is skipped, so for LUNs of one
    /// lineage (a copy and its parent, two copies of one parent, copies taken at
    /// different times) the cost grows with what changed, not with the LUNs' size;
    /// for unrelated LUNs it compares their mappings in full, and is still exact.
    ///
    /// Errors: as [`Array::read`] for each LUN (the range must lie inside both; an
    /// offline LUN may be compared).
    pub fn diff(&mut self, a: u32, b: u32, offset: u64, len: u64) -> Result<Vec<DiffRange>> {
        self.io_check_online(a, offset, len, false)?;
        self.io_check_online(b, offset, len, false)?;
        let mut out: Vec<DiffRange> = Vec::new();
        if len == 0 {
            return Ok(out);
        }
        let es = self.extent_size;
        let end = offset + len;
        let (first, last) = (offset / es, (end - 1) / es);
        let (ta, tb) = (self.get(a)?.mapping, self.get(b)?.mapping);
        let (lo, hi) = (first / EXTENTS_PER_ENTRY, last / EXTENTS_PER_ENTRY);
        let mut changed: Vec<u64> = Vec::new();
        self.eng.diff(&ta, &tb, lo, hi, |key, va, vb| {
            let sa = va.map(unpack).unwrap_or_default();
            let sb = vb.map(unpack).unwrap_or_default();
            for i in 0..EXTENTS_PER_ENTRY as usize {
                let le = key * EXTENTS_PER_ENTRY + i as u64;
                if sa[i] != sb[i] && (first..=last).contains(&le) {
                    changed.push(le);
                }
            }
        })?;
        // Changed extents and both LUNs' lost ranges, clipped, by start: a lost range
        // reads as an error, never as contents equal to the other LUN's.
        let mut spans: Vec<(u64, u64)> = changed
            .into_iter()
            .map(|le| ((le * es).max(offset), ((le + 1) * es).min(end)))
            .collect();
        for n in [a, b] {
            spans.extend(clipped(self.lost.of(n), offset, end));
        }
        spans.sort_unstable();
        for (from, to) in spans {
            add_diff(&mut out, from, to);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Array, FormatOptions, MemDevice};

    fn array() -> Array<MemDevice> {
        let opts = FormatOptions {
            extent_size: 4096,
            max_luns: 4,
            ..FormatOptions::default()
        };
        let mut a = Array::format(MemDevice::new(4096, 4096).unwrap(), &opts).unwrap();
        a.create_lun(0, 64 * 4096).unwrap();
        a
    }

    #[test]
    fn holes_and_data_merge_and_clip() {
        let mut a = array();
        assert_eq!(a.map(0, 0, 0).unwrap(), []);
        let all = a.map(0, 0, 64 * 4096).unwrap();
        assert_eq!(all.len(), 1);
        assert!(!all[0].data && all[0].length == 64 * 4096);
        // Extents 1, 2 and 20 written (20 is in the second mapping entry).
        a.write(0, 4096, &[1; 8192]).unwrap();
        a.write(0, 20 * 4096 + 512, &[1; 512]).unwrap();
        let r = a.map(0, 512, 30 * 4096).unwrap();
        let got: alloc::vec::Vec<(u64, u64, bool, bool)> = r
            .iter()
            .map(|r| (r.offset, r.length, r.data, r.shared))
            .collect();
        assert_eq!(
            got,
            [
                (512, 4096 - 512, false, false),
                (4096, 8192, true, false),
                (3 * 4096, 17 * 4096, false, false),
                (20 * 4096, 4096, true, false),
                (21 * 4096, 9 * 4096 + 512, false, false),
            ]
        );
        // Inside one mapped extent: one data range, clipped to the request.
        let r = a.map(0, 4096 + 512, 1024).unwrap();
        assert_eq!(
            (r.len(), r[0].offset, r[0].length, r[0].data),
            (1, 4608, 1024, true)
        );
        assert!(a.map(0, 1, 512).is_err());
        assert!(a.map(0, 63 * 4096, 2 * 4096).is_err());
        assert!(a.map(1, 0, 512).is_err());
    }

    #[test]
    fn sharing_and_diff_follow_copies() {
        let mut a = array();
        a.write(0, 0, &[1; 4 * 4096]).unwrap();
        a.create_copy(0, 1, true).unwrap();
        let r = a.map(1, 0, 4 * 4096).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r[0].data && r[0].shared);
        assert_eq!(a.diff(0, 1, 0, 64 * 4096).unwrap(), []);
        // The parent writes extent 2: it is no longer shared, and the diff names it.
        a.write(0, 2 * 4096, &[2; 512]).unwrap();
        let d = a.diff(0, 1, 0, 64 * 4096).unwrap();
        assert_eq!((d.len(), d[0].offset, d[0].length), (1, 2 * 4096, 4096));
        let r = a.map(0, 0, 4 * 4096).unwrap();
        let kinds: alloc::vec::Vec<(u64, bool)> = r.iter().map(|r| (r.length, r.shared)).collect();
        assert_eq!(kinds, [(2 * 4096, true), (4096, false), (4096, true)]);
        // An extent written with the bytes it already held is still reported (merged
        // with extent 2 into one range).
        a.write(1, 3 * 4096, &[1; 512]).unwrap();
        let d = a.diff(1, 0, 0, 64 * 4096).unwrap();
        assert_eq!((d.len(), d[0].offset, d[0].length), (1, 2 * 4096, 2 * 4096));
        // A hole on one side, data on the other.
        a.write(0, 40 * 4096, &[3; 512]).unwrap();
        let d = a.diff(0, 1, 30 * 4096, 20 * 4096).unwrap();
        assert_eq!((d.len(), d[0].offset, d[0].length), (1, 40 * 4096, 4096));
        assert!(a.diff(0, 3, 0, 512).is_err());
    }

    #[test]
    fn lost_ranges_are_marked_in_maps_and_reported_by_diffs() {
        let mut a = array();
        a.write(0, 0, &[1; 2 * 4096]).unwrap();
        a.create_copy(0, 1, true).unwrap();
        // As a repair leaves them: LUN 0 lost a sector range inside extent 1 and
        // one from inside extent 3 to inside extent 5.
        a.lost.set(
            0,
            alloc::vec![(4096 + 512, 4096 + 1024), (3 * 4096 + 512, 5 * 4096 + 512)],
        );
        let got: alloc::vec::Vec<(u64, u64, bool, bool, bool)> = a
            .map(0, 0, 8 * 4096)
            .unwrap()
            .iter()
            .map(|r| (r.offset, r.length, r.data, r.shared, r.lost))
            .collect();
        assert_eq!(
            got,
            [
                (0, 4096 + 512, true, true, false),
                (4096 + 512, 512, true, true, true),
                (4096 + 1024, 4096 - 1024, true, true, false),
                (2 * 4096, 4096 + 512, false, false, false),
                (3 * 4096 + 512, 2 * 4096, false, false, true),
                (5 * 4096 + 512, 3 * 4096 - 512, false, false, false),
            ]
        );
        // Clipped to a request that starts inside a lost range.
        let r = a.map(0, 4 * 4096, 4096).unwrap();
        assert_eq!((r.len(), r[0].length, r[0].lost), (1, 4096, true));
        // The copy lost nothing: its map has no lost range, but the diff reports
        // LUN 0's, to the sector, merged with the extent LUN 0 wrote since.
        assert!(a.map(1, 0, 8 * 4096).unwrap().iter().all(|r| !r.lost));
        a.write(0, 5 * 4096 + 1024, &[2; 512]).unwrap();
        let got: alloc::vec::Vec<(u64, u64)> = a
            .diff(1, 0, 0, 8 * 4096)
            .unwrap()
            .iter()
            .map(|d| (d.offset, d.length))
            .collect();
        assert_eq!(got, [(4096 + 512, 512), (3 * 4096 + 512, 3 * 4096 - 512)]);
        let d = a.diff(0, 1, 4 * 4096, 1024).unwrap();
        assert_eq!((d.len(), d[0].offset, d[0].length), (1, 4 * 4096, 1024));
    }
}
