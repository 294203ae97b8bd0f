//! `Array::map`: which ranges of a LUN hold data and which are holes, found by
//! walking only the mapping entries inside the range.

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::Result;

use super::lun::{unpack, EXTENTS_PER_ENTRY};
use super::Array;

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
}

impl<D: BlockDevice> Array<D> {
    /// The ranges of LUN `n` from `offset` for `len` bytes, in order, each mapped to
    /// data or a hole, adjacent ranges of the same kind merged. Mapping is per extent:
    /// a range boundary inside the request falls on an extent boundary. The cost is
    /// that of the mapping entries inside the range plus the tree's depth, whatever
    /// the LUN's size.
    ///
    /// Errors: as [`Array::read`].
    pub fn map(&mut self, n: u32, offset: u64, len: u64) -> Result<Vec<MapRange>> {
        self.io_check(n, offset, len)?;
        let mut out: Vec<MapRange> = Vec::new();
        if len == 0 {
            return Ok(out);
        }
        let es = self.extent_size;
        let end = offset + len;
        let (first, last) = (offset / es, (end - 1) / es);
        let mapping = self.get(n)?.mapping;
        let lo = first / EXTENTS_PER_ENTRY;
        let hi = last / EXTENTS_PER_ENTRY;
        // Logical extents that hold data, in order (bounded by the request).
        let mut mapped: Vec<u64> = Vec::new();
        self.eng.range(&mapping, lo, hi, |key, v| {
            for (i, &s) in unpack(v).iter().enumerate() {
                let le = key * EXTENTS_PER_ENTRY + i as u64;
                if s != 0 && (first..=last).contains(&le) {
                    mapped.push(le);
                }
            }
            true
        })?;
        let mut pos = offset;
        let mut push = |out: &mut Vec<MapRange>, to: u64, data: bool| {
            if to <= pos {
                return;
            }
            match out.last_mut() {
                Some(r) if r.data == data && r.offset + r.length == pos => r.length += to - pos,
                _ => out.push(MapRange {
                    offset: pos,
                    length: to - pos,
                    data,
                }),
            }
            pos = to;
        };
        for le in mapped {
            let start = (le * es).max(offset);
            push(&mut out, start, false);
            push(&mut out, ((le + 1) * es).min(end), true);
        }
        push(&mut out, end, false);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Array, FormatOptions, MemDevice};

    #[test]
    fn holes_and_data_merge_and_clip() {
        let opts = FormatOptions {
            extent_size: 4096,
            max_luns: 4,
            ..FormatOptions::default()
        };
        let mut a = Array::format(MemDevice::new(4096, 1024).unwrap(), &opts).unwrap();
        a.create_lun(0, 64 * 4096).unwrap();
        assert_eq!(a.map(0, 0, 0).unwrap(), []);
        let all = a.map(0, 0, 64 * 4096).unwrap();
        assert_eq!(all.len(), 1);
        assert!(!all[0].data && all[0].length == 64 * 4096);
        // Extents 1, 2 and 20 written (20 is in the second mapping entry).
        a.write(0, 4096, &[1; 8192]).unwrap();
        a.write(0, 20 * 4096 + 512, &[1; 512]).unwrap();
        let r = a.map(0, 512, 30 * 4096).unwrap();
        let got: alloc::vec::Vec<(u64, u64, bool)> =
            r.iter().map(|r| (r.offset, r.length, r.data)).collect();
        assert_eq!(
            got,
            [
                (512, 4096 - 512, false),
                (4096, 8192, true),
                (3 * 4096, 17 * 4096, false),
                (20 * 4096, 4096, true),
                (21 * 4096, 9 * 4096 + 512, false),
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
}
