//! Salvage: walking a tree for what can still be read, for `repair`.
//!
//! Unlike every other walk, a salvage walk never stops at damage: a node that cannot
//! be read, or that does not fit where it is found (wrong level, wrong shape, keys out
//! of order or outside the range its parent gives it), is reported as a lost subtree
//! with the key range it covers, and the walk goes on beside it. Every node is
//! expanded once per `seen` bitmap, so the work is bounded by the metadata size even
//! on a hostile device.

use alloc::vec;
use alloc::vec::Vec;

use crate::btree::node::{self, ValueKind};
use crate::device::BlockDevice;
use crate::engine::Engine;
use crate::error::Error;
use crate::store::page::PageKind;

/// What a salvage walk finds.
pub(crate) enum Salvaged<'a> {
    /// A readable node that holds no entry: nothing is lost, but a tree may not
    /// hold one (the walk goes on beside it).
    Empty {
        /// Its address.
        addr: u64,
    },
    /// A readable node, and the children of an interior one.
    Node {
        /// Its address.
        addr: u64,
        /// Its children (empty for a leaf).
        children: &'a [u64],
    },
    /// An entry of a readable leaf.
    Entry {
        /// Its key.
        key: u64,
        /// Its value.
        value: &'a [u8],
    },
    /// A subtree that cannot be read: every key from `lo` to `hi` is unknown.
    Lost {
        /// The node that failed.
        addr: u64,
        /// The first key it may hold.
        lo: u64,
        /// The last key it may hold.
        hi: u64,
    },
}

/// A bitmap over the metadata area, for [`Engine::salvage`].
pub(crate) struct Seen {
    start: u64,
    bits: Vec<u64>,
}

impl Seen {
    /// An empty bitmap for the metadata area of `e`.
    pub fn new<D: BlockDevice>(e: &Engine<D>) -> Seen {
        let g = e.geometry();
        Seen {
            start: g.meta_start,
            bits: vec![0; (g.meta_pages as usize).div_ceil(64)],
        }
    }

    /// Marks `addr`; false if it was marked already or lies outside the area.
    pub fn mark(&mut self, addr: u64) -> bool {
        let Some(i) = addr.checked_sub(self.start) else {
            return false;
        };
        let Some(w) = self.bits.get_mut((i / 64) as usize) else {
            return false;
        };
        let bit = 1u64 << (i % 64);
        let new = *w & bit == 0;
        *w |= bit;
        new
    }

    /// The bitmap, a bit per metadata page.
    pub fn into_bits(self) -> Vec<u64> {
        self.bits
    }
}

/// A node still to visit: address, expected level (None for the root), key range.
type Pending = (u64, Option<u8>, u64, u64);

impl<D: BlockDevice> Engine<D> {
    /// Whether node `addr`, walked already (so its own keys ascend and its subtree
    /// was found sound under the range of its first parent), also fits at `level`
    /// in `[lo, hi]`: its first key and, down its rightmost path, its last key lie
    /// in the range. The path is as deep as the tree, at most `MAX_LEVEL` nodes.
    fn fits_again(&mut self, mut addr: u64, level: Option<u8>, lo: u64, hi: u64) -> bool {
        let mut want = level;
        let mut first = true;
        for _ in 0..=node::MAX_LEVEL {
            let Ok(b) = self.st.read(addr, PageKind::BtreeNode) else {
                return false;
            };
            let Ok(h) = node::header(b, addr) else {
                return false;
            };
            if want.is_some_and(|l| l != h.level) || h.nr == 0 {
                return false;
            }
            if first && node::key(b, 0) < lo {
                return false;
            }
            first = false;
            if node::key(b, h.nr - 1) > hi {
                return false;
            }
            if h.is_leaf() {
                return true;
            }
            addr = node::child(b, &h, h.nr - 1);
            want = Some(h.level - 1);
        }
        false
    }

    /// Walks the tree rooted at `root`, whose leaves hold values of `shape`, from key
    /// `from` on, and tells `f` what it finds (see [`Salvaged`]) until `f` returns
    /// false; nodes already in `seen` are skipped. Entries come in key order.
    pub(crate) fn salvage(
        &mut self,
        root: u64,
        shape: (usize, ValueKind),
        from: u64,
        seen: &mut Seen,
        f: &mut impl FnMut(Salvaged<'_>) -> bool,
    ) {
        if root == 0 {
            return;
        }
        let mut stack: Vec<Pending> = vec![(root, None, 0, u64::MAX)];
        let mut kids: Vec<u64> = Vec::new();
        let mut lows: Vec<u64> = Vec::new();
        let mut page = vec![0u8; crate::store::page::PAGE_SIZE];
        while let Some((addr, level, lo, hi)) = stack.pop() {
            if hi < from {
                continue;
            }
            let meta = self.geo.meta_start..self.geo.meta_start + self.geo.meta_pages;
            if !meta.contains(&addr) {
                if !f(Salvaged::Lost { addr, lo, hi }) {
                    return;
                }
                continue;
            }
            if !seen.mark(addr) {
                // Walked already, here or in another tree that shares it. Sharing
                // reaches a node where its keys belong; a forged pointer to a node
                // walked elsewhere (even in this tree) does not, and what it
                // should have covered is lost.
                if !self.fits_again(addr, level, lo, hi) && !f(Salvaged::Lost { addr, lo, hi }) {
                    return;
                }
                continue;
            }
            match self.st.read(addr, PageKind::BtreeNode) {
                Ok(b) => page.copy_from_slice(b),
                Err(_) => {
                    if !f(Salvaged::Lost { addr, lo, hi }) {
                        return;
                    }
                    continue;
                }
            };
            let b = &page[..];
            let fits = node::header(b, addr).and_then(|h| {
                let keys_ok = (0..h.nr).all(|j| {
                    let k = node::key(b, j);
                    k >= lo && k <= hi && (j == 0 || node::key(b, j - 1) < k)
                });
                if level.is_some_and(|l| l != h.level) {
                    Err(Error::corrupt(addr, "B-tree child at the wrong level"))
                } else if h.is_leaf() && (h.vs, h.kind) != shape {
                    Err(Error::corrupt(
                        addr,
                        "leaf does not match the tree's value shape",
                    ))
                } else if !keys_ok {
                    Err(Error::corrupt(addr, "keys out of order or out of range"))
                } else {
                    Ok(h)
                }
            });
            let h = match fits {
                Ok(h) => h,
                Err(_) => {
                    if !f(Salvaged::Lost { addr, lo, hi }) {
                        return;
                    }
                    continue;
                }
            };
            if h.nr == 0 {
                if !f(Salvaged::Empty { addr }) {
                    return;
                }
                continue;
            }
            kids.clear();
            lows.clear();
            if h.is_leaf() {
                if !f(Salvaged::Node {
                    addr,
                    children: &[],
                }) {
                    return;
                }
                for j in 0..h.nr {
                    let key = node::key(b, j);
                    if key >= from
                        && !f(Salvaged::Entry {
                            key,
                            value: node::value(b, &h, j),
                        })
                    {
                        return;
                    }
                }
                continue;
            }
            for j in 0..h.nr {
                kids.push(node::child(b, &h, j));
                lows.push(node::key(b, j));
            }
            if !f(Salvaged::Node {
                addr,
                children: &kids,
            }) {
                return;
            }
            // Children in reverse, so that entries come out in key order.
            for j in (0..kids.len()).rev() {
                let chi = match lows.get(j + 1) {
                    Some(&next) => next.saturating_sub(1),
                    None => hi,
                };
                stack.push((kids[j], Some(h.level - 1), lows[j], chi));
            }
        }
    }
}
