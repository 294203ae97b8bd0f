//! Byte layout of a B-tree node and accessors over a raw 4 KiB block.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 32 | common block header (kind `BtreeNode`) |
//! | 32 | 2 | number of entries |
//! | 34 | 2 | value size in bytes (8 in interior nodes) |
//! | 36 | 1 | level: 0 for leaves, parent = child + 1 |
//! | 37 | 1 | value kind ([`ValueKind`]; `Child` in interior nodes) |
//! | 38 | 2 | reserved, zero |
//! | 40 | 8 × max | keys, strictly ascending |
//! | 40 + 8 × max | value size × max | values |
//!
//! `max = (4096 − 40) / (8 + value size)`. In an interior node entry `i` holds the
//! lowest key its child `i` may contain and the child's address.

use crate::error::{Error, Result};
use crate::store::page::{get_u16, get_u64, put_u16, put_u64, HEADER_SIZE, PAGE_SIZE};

/// Offset of the node header.
const OFF_NR: usize = HEADER_SIZE;
const OFF_VS: usize = HEADER_SIZE + 2;
const OFF_LEVEL: usize = HEADER_SIZE + 4;
const OFF_KIND: usize = HEADER_SIZE + 5;
/// Offset of the key array.
pub const KEYS: usize = HEADER_SIZE + 8;
/// Largest value size a tree may use.
pub const MAX_VALUE_SIZE: usize = 256;
/// Deepest tree accepted (levels above the leaves); far beyond any real tree.
pub const MAX_LEVEL: u8 = 15;

/// What the values of a tree's leaves refer to, so shared nodes can be reference
/// counted without knowing the tree's purpose (dm-thin's "value type").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ValueKind {
    /// Plain bytes, no references.
    Opaque = 0,
    /// The value starts with a data extent number (little-endian; 4 bytes if the value
    /// is shorter than 8 bytes, else 8) that holds one reference to that extent.
    Data = 1,
    /// The value starts with the root address (u64, 0 = empty) of another tree that it
    /// holds one reference to.
    Tree = 2,
    /// Interior nodes: the value is a child node address.
    Child = 3,
    /// The value is `value_size / 4` little-endian u32 slots, each 0 (a hole) or a
    /// data extent number plus one that holds one reference to that extent. Packing
    /// several extents into one entry is what keeps a LUN mapping under 12 bytes per
    /// mapped extent.
    Extents = 4,
}

impl ValueKind {
    /// Decodes a kind byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => ValueKind::Opaque,
            1 => ValueKind::Data,
            2 => ValueKind::Tree,
            3 => ValueKind::Child,
            4 => ValueKind::Extents,
            _ => return None,
        })
    }
}

/// Entries that fit in a node with values of `vs` bytes.
pub const fn max_entries(vs: usize) -> usize {
    (PAGE_SIZE - KEYS) / (8 + vs)
}

/// Decoded node header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Entries in use.
    pub nr: usize,
    /// Value size (8 for interior nodes).
    pub vs: usize,
    /// Level (0 = leaf).
    pub level: u8,
    /// Value kind.
    pub kind: ValueKind,
}

impl Header {
    /// Capacity of this node.
    pub fn max(&self) -> usize {
        max_entries(self.vs)
    }
    /// Is this a leaf?
    pub fn is_leaf(&self) -> bool {
        self.level == 0
    }
}

/// Decodes and sanity-checks a node header (counts, sizes, kinds).
pub fn header(b: &[u8], addr: u64) -> Result<Header> {
    let nr = get_u16(b, OFF_NR) as usize;
    let vs = get_u16(b, OFF_VS) as usize;
    let level = b[OFF_LEVEL];
    let kind =
        ValueKind::from_u8(b[OFF_KIND]).ok_or(Error::corrupt(addr, "unknown B-tree value kind"))?;
    if vs == 0 || vs > MAX_VALUE_SIZE {
        return Err(Error::corrupt(addr, "B-tree value size out of range"));
    }
    if level > MAX_LEVEL {
        return Err(Error::corrupt(addr, "B-tree node level too high"));
    }
    if (level > 0) != (kind == ValueKind::Child) || (level > 0 && vs != 8) {
        return Err(Error::corrupt(addr, "B-tree interior/leaf layout mismatch"));
    }
    if (kind == ValueKind::Data && vs < 4)
        || (kind == ValueKind::Tree && vs < 8)
        || (kind == ValueKind::Extents && vs % 4 != 0)
    {
        return Err(Error::corrupt(addr, "B-tree value too small for its kind"));
    }
    if nr > max_entries(vs) {
        return Err(Error::corrupt(
            addr,
            "B-tree node has more entries than fit",
        ));
    }
    Ok(Header {
        nr,
        vs,
        level,
        kind,
    })
}

/// Writes a node header into a freshly created block.
pub fn set_header(b: &mut [u8], h: &Header) {
    put_u16(b, OFF_NR, h.nr as u16);
    put_u16(b, OFF_VS, h.vs as u16);
    b[OFF_LEVEL] = h.level;
    b[OFF_KIND] = h.kind as u8;
}

/// Sets the entry count.
pub fn set_nr(b: &mut [u8], nr: usize) {
    put_u16(b, OFF_NR, nr as u16);
}

/// Key `i`.
#[inline]
pub fn key(b: &[u8], i: usize) -> u64 {
    get_u64(b, KEYS + 8 * i)
}

/// Sets key `i`.
#[inline]
pub fn set_key(b: &mut [u8], i: usize, k: u64) {
    put_u64(b, KEYS + 8 * i, k)
}

/// Offset of value `i` in a node of header `h`.
#[inline]
pub fn value_off(h: &Header, i: usize) -> usize {
    KEYS + 8 * h.max() + h.vs * i
}

/// Value `i`.
#[inline]
pub fn value<'a>(b: &'a [u8], h: &Header, i: usize) -> &'a [u8] {
    let o = value_off(h, i);
    &b[o..o + h.vs]
}

/// Child address `i` of an interior node.
#[inline]
pub fn child(b: &[u8], h: &Header, i: usize) -> u64 {
    get_u64(b, value_off(h, i))
}

/// Sets child address `i` of an interior node.
#[inline]
pub fn set_child(b: &mut [u8], h: &Header, i: usize, c: u64) {
    put_u64(b, value_off(h, i), c)
}

/// Index of the first key `>= k` and whether it equals `k`.
pub fn search(b: &[u8], nr: usize, k: u64) -> (usize, bool) {
    let (mut lo, mut hi) = (0usize, nr);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if key(b, mid) < k {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (lo, lo < nr && key(b, lo) == k)
}

/// Interior nodes: index of the child whose range holds `k`, or `None` if `k` is
/// below the node's first key.
pub fn child_index(b: &[u8], nr: usize, k: u64) -> Option<usize> {
    let (i, found) = search(b, nr, k);
    if found {
        Some(i)
    } else {
        i.checked_sub(1)
    }
}

/// Opens a gap at `i` and stores `(k, v)` there. The node must have room.
pub fn insert_at(b: &mut [u8], h: &Header, i: usize, k: u64, v: &[u8]) {
    let n = h.nr;
    b.copy_within(KEYS + 8 * i..KEYS + 8 * n, KEYS + 8 * (i + 1));
    let vo = value_off(h, 0);
    b.copy_within(vo + h.vs * i..vo + h.vs * n, vo + h.vs * (i + 1));
    set_key(b, i, k);
    b[vo + h.vs * i..vo + h.vs * (i + 1)].copy_from_slice(&v[..h.vs]);
    set_nr(b, n + 1);
}

/// Removes entry `i`.
pub fn remove_at(b: &mut [u8], h: &Header, i: usize) {
    let n = h.nr;
    b.copy_within(KEYS + 8 * (i + 1)..KEYS + 8 * n, KEYS + 8 * i);
    let vo = value_off(h, 0);
    b.copy_within(vo + h.vs * (i + 1)..vo + h.vs * n, vo + h.vs * i);
    set_nr(b, n - 1);
}

/// Copies entries `from..from+count` of node `src` to position `at` of node `dst`
/// (both with header layout `h`; `dst` must have room; its count is not updated).
pub fn copy_entries(dst: &mut [u8], at: usize, src: &[u8], from: usize, count: usize, h: &Header) {
    dst[KEYS + 8 * at..KEYS + 8 * (at + count)]
        .copy_from_slice(&src[KEYS + 8 * from..KEYS + 8 * (from + count)]);
    let vo = value_off(h, 0);
    dst[vo + h.vs * at..vo + h.vs * (at + count)]
        .copy_from_slice(&src[vo + h.vs * from..vo + h.vs * (from + count)]);
}

/// Shifts entries `from..nr` to start at `to` (within one node).
pub fn shift_entries(b: &mut [u8], from: usize, nr: usize, to: usize, h: &Header) {
    b.copy_within(KEYS + 8 * from..KEYS + 8 * nr, KEYS + 8 * to);
    let vo = value_off(h, 0);
    b.copy_within(vo + h.vs * from..vo + h.vs * nr, vo + h.vs * to);
}

/// A reference a leaf value holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ref {
    /// One reference to a data extent.
    Data(u64),
    /// One reference to the root node of another tree.
    Tree(u64),
}

/// The references a leaf value of `kind` holds, in slot order.
pub fn value_refs(kind: ValueKind, v: &[u8]) -> Refs<'_> {
    Refs { kind, v, i: 0 }
}

/// Iterator returned by [`value_refs`].
pub struct Refs<'a> {
    kind: ValueKind,
    v: &'a [u8],
    i: usize,
}

impl Iterator for Refs<'_> {
    type Item = Ref;

    fn next(&mut self) -> Option<Ref> {
        match self.kind {
            ValueKind::Extents => {
                while let Some(s) = self.v.get(self.i..self.i + 4) {
                    self.i += 4;
                    let x = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    if x != 0 {
                        return Some(Ref::Data(u64::from(x) - 1));
                    }
                }
                None
            }
            _ if self.i > 0 => None,
            ValueKind::Data if self.v.len() < 8 => {
                self.i = 1;
                let s = self.v.get(..4)?;
                Some(Ref::Data(u64::from(u32::from_le_bytes([
                    s[0], s[1], s[2], s[3],
                ]))))
            }
            ValueKind::Data => {
                self.i = 1;
                Some(Ref::Data(get_u64(self.v, 0)))
            }
            ValueKind::Tree => {
                self.i = 1;
                Some(Ref::Tree(get_u64(self.v, 0))).filter(|r| *r != Ref::Tree(0))
            }
            ValueKind::Opaque | ValueKind::Child => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node page with these header fields (nothing else filled in).
    fn page(nr: usize, vs: usize, level: u8, kind: u8) -> alloc::vec::Vec<u8> {
        let mut b = alloc::vec![0u8; PAGE_SIZE];
        put_u16(&mut b, OFF_NR, nr as u16);
        put_u16(&mut b, OFF_VS, vs as u16);
        b[OFF_LEVEL] = level;
        b[OFF_KIND] = kind;
        b
    }

    fn ok(nr: usize, vs: usize, level: u8, kind: ValueKind) -> bool {
        header(&page(nr, vs, level, kind as u8), 7).is_ok()
    }

    #[test]
    fn headers_are_checked_field_by_field() {
        use ValueKind::*;
        // Value sizes: 1 to 256 bytes.
        assert!(ok(0, 1, 0, Opaque) && ok(0, MAX_VALUE_SIZE, 0, Opaque));
        assert!(!ok(0, 0, 0, Opaque) && !ok(0, MAX_VALUE_SIZE + 1, 0, Opaque));
        // Levels: up to MAX_LEVEL, interior nodes only with 8-byte child values.
        assert!(ok(1, 8, MAX_LEVEL, Child) && ok(1, 8, 1, Child));
        assert!(!ok(1, 8, MAX_LEVEL + 1, Child));
        assert!(!ok(1, 8, 0, Child), "a leaf of child pointers");
        assert!(!ok(1, 8, 1, Opaque), "an interior node of opaque values");
        assert!(!ok(1, 16, 1, Child), "interior values of 16 bytes");
        assert!(!ok(1, 4, 2, Child), "interior values of 4 bytes");
        // The smallest value each kind allows.
        assert!(ok(1, 4, 0, Data) && !ok(1, 3, 0, Data));
        assert!(ok(1, 8, 0, Tree) && !ok(1, 7, 0, Tree));
        assert!(ok(1, 4, 0, Extents) && ok(1, 64, 0, Extents));
        assert!(!ok(1, 6, 0, Extents) && !ok(1, 2, 0, Extents));
        assert!(ok(1, 3, 0, Opaque) && ok(1, 6, 0, Opaque));
        // Entries: as many as fit.
        assert!(ok(max_entries(8), 8, 0, Opaque) && !ok(max_entries(8) + 1, 8, 0, Opaque));
        // Unknown kinds.
        assert!(header(&page(0, 8, 0, 5), 7).is_err());
        let h = header(&page(3, 64, 0, Extents as u8), 7).expect("valid");
        assert_eq!((h.nr, h.vs, h.level, h.kind), (3, 64, 0, Extents));
    }

    #[test]
    fn values_name_their_references() {
        use alloc::vec::Vec;
        let refs = |kind, v: &[u8]| value_refs(kind, v).collect::<Vec<Ref>>();
        let mut v = [0u8; 12];
        v[..8].copy_from_slice(&0x1_0000_0005u64.to_le_bytes());
        v[8..].copy_from_slice(&[9; 4]);
        // Data values of 8 bytes or more hold a 64-bit extent number, shorter ones 32.
        assert_eq!(refs(ValueKind::Data, &v), [Ref::Data(0x1_0000_0005)]);
        assert_eq!(refs(ValueKind::Data, &v[..8]), [Ref::Data(0x1_0000_0005)]);
        assert_eq!(refs(ValueKind::Data, &v[..4]), [Ref::Data(5)]);
        assert_eq!(refs(ValueKind::Data, &v[..6]), [Ref::Data(5)]);
        // A tree root of 0 is an empty tree: no reference.
        assert_eq!(refs(ValueKind::Tree, &v), [Ref::Tree(0x1_0000_0005)]);
        assert_eq!(refs(ValueKind::Tree, &[0; 8]), []);
        assert_eq!(refs(ValueKind::Opaque, &v), []);
        assert_eq!(refs(ValueKind::Child, &v[..8]), []);
        // Extents: one reference per non-zero slot, the extent being the slot less 1.
        let mut x = [0u8; 16];
        x[4..8].copy_from_slice(&8u32.to_le_bytes());
        x[12..16].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(refs(ValueKind::Extents, &x), [Ref::Data(7), Ref::Data(0)]);
    }
}
