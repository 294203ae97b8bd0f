//! Read-only walks that look at more than one entry's worth of a tree's structure:
//! [`Ctx::range_shared`] (entries in a key range, each with whether the path to it
//! is shared with another tree) and [`Ctx::diff`] (the entries where two trees may
//! differ, skipping every subtree they share).
//!
//! Both are recursive over at most `MAX_LEVEL + 1` levels (twice that for `diff`,
//! which descends one side at a time where the trees' heights differ), copy each node
//! they read (so two nodes can be looked at together) and stop with `Corrupt` after
//! more node visits than a tree of the metadata area's size could need: a forged
//! structure that shares subtrees in a cycle cannot make them run without bound.

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::{Error, Result};

use super::node::{self, Header};
use super::{Ctx, LiveCounts, Tree};

/// What [`Ctx::diff`] calls for each key where the trees may differ.
pub type DiffFn<'f> = dyn FnMut(u64, Option<&[u8]>, Option<&[u8]>) + 'f;

/// A child of an interior node and the keys it may hold, `[lo, hi]`; `addr` 0 stands
/// for "no subtree" (keys below an interior node's first key).
#[derive(Clone, Copy)]
struct Span {
    lo: u64,
    hi: u64,
    addr: u64,
}

/// The children of interior node `b`, with their key spans, preceded by an empty
/// span for the keys below its first key.
fn spans(b: &[u8], h: &Header) -> Vec<Span> {
    let mut v = Vec::with_capacity(h.nr + 1);
    let first = node::key(b, 0);
    if first > 0 {
        v.push(Span {
            lo: 0,
            hi: first - 1,
            addr: 0,
        });
    }
    for i in 0..h.nr {
        let lo = node::key(b, i);
        let hi = if i + 1 < h.nr {
            node::key(b, i + 1).saturating_sub(1)
        } else {
            u64::MAX
        };
        v.push(Span {
            lo,
            hi: hi.max(lo),
            addr: node::child(b, h, i),
        });
    }
    v
}

/// One side of a diff, as much of a node as the diff needs (read once, without
/// keeping the page): nothing, a leaf's entries inside the range, or an interior
/// node's level and children.
enum Side {
    Empty,
    Leaf {
        keys: Vec<u64>,
        vals: Vec<u8>,
        vs: usize,
    },
    Inner {
        level: u8,
        spans: Vec<Span>,
    },
}

impl Side {
    fn level(&self) -> u8 {
        match self {
            Side::Inner { level, .. } => *level,
            _ => 0,
        }
    }

    /// Its entries (a leaf's, or none).
    fn entries(&self) -> Vec<(u64, &[u8])> {
        match self {
            Side::Leaf { keys, vals, vs } => keys
                .iter()
                .zip(vals.chunks_exact(*vs))
                .map(|(&k, v)| (k, v))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A visit budget: walks stop with `Corrupt` when it runs out.
struct Budget(u64);

impl Budget {
    fn take(&mut self, addr: u64) -> Result<()> {
        self.0 = self.0.checked_sub(1).ok_or(Error::corrupt(
            addr,
            "B-tree walk revisits nodes: forged cycle",
        ))?;
        Ok(())
    }
}

impl<D: BlockDevice> Ctx<'_, D> {
    /// Calls `f(key, value, path_shared)` for each entry of `t` with `lo <= key <= hi`,
    /// in key order; `path_shared` is true when a node on the path from the root to the
    /// entry's leaf (the leaf included) is referenced more than once, so that another
    /// tree reaches the entry too.
    pub fn range_shared(
        &mut self,
        t: &Tree,
        lo: u64,
        hi: u64,
        live: Option<&LiveCounts>,
        f: &mut dyn FnMut(u64, &[u8], bool),
    ) -> Result<()> {
        if t.root == 0 || lo > hi {
            return Ok(());
        }
        let mut budget = Budget(self.sm.meta.entries);
        self.shared_walk(t, t.root, None, false, (lo, hi), &mut budget, live, f)
    }

    #[allow(clippy::too_many_arguments)]
    fn shared_walk(
        &mut self,
        t: &Tree,
        addr: u64,
        level: Option<u8>,
        above: bool,
        (lo, hi): (u64, u64),
        budget: &mut Budget,
        live: Option<&LiveCounts>,
        f: &mut dyn FnMut(u64, &[u8], bool),
    ) -> Result<()> {
        budget.take(addr)?;
        let count = match live {
            Some(l) => l.node(addr),
            None => self.sm.meta_count(self.st, addr)?,
        };
        let shared = above || count > 1;
        let (b, h) = self.copy_node(addr, level, t)?;
        if h.is_leaf() {
            let start = node::search(&b, h.nr, lo).0;
            for i in start..h.nr {
                let k = node::key(&b, i);
                if k > hi {
                    break;
                }
                f(k, node::value(&b, &h, i), shared);
            }
            return Ok(());
        }
        for s in spans(&b, &h) {
            if s.addr == 0 || s.hi < lo || s.lo > hi {
                continue;
            }
            let (l, r) = (s.lo.max(lo), s.hi.min(hi));
            self.shared_walk(
                t,
                s.addr,
                Some(h.level - 1),
                shared,
                (l, r),
                budget,
                live,
                f,
            )?;
        }
        Ok(())
    }

    /// Calls `f(key, a_value, b_value)` for each key in `[lo, hi]` where trees `a` and
    /// `b` may differ: a key only one of them holds, or one both hold with different
    /// value bytes. Subtrees the two trees share (the same node, reached for the same
    /// keys) are skipped without being read, so two trees of one lineage cost what
    /// changed between them times the depth; trees that share nothing are compared in
    /// full. Keys come in ascending order. The trees must have the same value shape.
    pub fn diff(&mut self, a: &Tree, b: &Tree, lo: u64, hi: u64, f: &mut DiffFn<'_>) -> Result<()> {
        if a.value_size != b.value_size || a.kind != b.kind {
            return Err(Error::InvalidArgument(
                "diff needs two trees with the same value shape",
            ));
        }
        if lo > hi {
            return Ok(());
        }
        let mut budget = Budget(self.sm.meta.entries.saturating_mul(2));
        let pair = (a, b);
        self.diff_walk(pair, (a.root, None), (b.root, None), lo, hi, &mut budget, f)
    }

    /// Reads one side of a diff: for a leaf, its entries in `[lo, hi]`.
    fn side(
        &mut self,
        t: &Tree,
        addr: u64,
        level: Option<u8>,
        (lo, hi): (u64, u64),
        budget: &mut Budget,
    ) -> Result<Side> {
        if addr == 0 {
            return Ok(Side::Empty);
        }
        budget.take(addr)?;
        let (b, h) = self.node(addr, level, t)?;
        if !h.is_leaf() {
            return Ok(Side::Inner {
                level: h.level,
                spans: spans(b, &h),
            });
        }
        let start = node::search(b, h.nr, lo).0;
        let mut keys = Vec::new();
        let mut vals = Vec::new();
        for i in start..h.nr {
            let k = node::key(b, i);
            if k > hi {
                break;
            }
            keys.push(k);
            vals.extend_from_slice(node::value(b, &h, i));
        }
        Ok(Side::Leaf {
            keys,
            vals,
            vs: h.vs,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn diff_walk(
        &mut self,
        trees: (&Tree, &Tree),
        a: (u64, Option<u8>),
        b: (u64, Option<u8>),
        lo: u64,
        hi: u64,
        budget: &mut Budget,
        f: &mut DiffFn<'_>,
    ) -> Result<()> {
        if a.0 == b.0 {
            // The same subtree (or both empty) for the same keys: identical.
            return Ok(());
        }
        let sa = self.side(trees.0, a.0, a.1, (lo, hi), budget)?;
        let sb = self.side(trees.1, b.0, b.1, (lo, hi), budget)?;
        let (la, lb) = (sa.level(), sb.level());
        if la == 0 && lb == 0 {
            return diff_leaves(&sa, &sb, f);
        }
        // Split the higher side (both, where their levels are equal) into its
        // children's spans, and pair them with the other side's.
        let split = |s: Side, addr: u64, level: Option<u8>, other: u8| match s {
            Side::Inner { level: l, spans } if l >= other => (spans, Some(l - 1)),
            _ => (
                alloc::vec![Span {
                    lo: 0,
                    hi: u64::MAX,
                    addr
                }],
                level,
            ),
        };
        let (spans_a, next_a) = split(sa, a.0, a.1, lb);
        let (spans_b, next_b) = split(sb, b.0, b.1, la);
        // Sweep the two span lists over [lo, hi].
        let (mut i, mut j) = (0usize, 0usize);
        while i < spans_a.len() && j < spans_b.len() {
            let (x, y) = (spans_a[i], spans_b[j]);
            let (l, r) = (x.lo.max(y.lo).max(lo), x.hi.min(y.hi).min(hi));
            // Spans that lead to the same subtree are skipped here, without a call.
            if l <= r && x.addr != y.addr {
                let la = if x.addr == 0 { None } else { next_a };
                let lb = if y.addr == 0 { None } else { next_b };
                self.diff_walk(trees, (x.addr, la), (y.addr, lb), l, r, budget, f)?;
            }
            if x.hi <= y.hi {
                i += 1;
            } else {
                j += 1;
            }
            if x.hi == y.hi {
                j += 1;
            }
        }
        Ok(())
    }
}

/// Compares two leaves (or empty sides), read for the same range.
fn diff_leaves(a: &Side, b: &Side, f: &mut DiffFn<'_>) -> Result<()> {
    let (ea, eb) = (a.entries(), b.entries());
    let (mut i, mut j) = (0usize, 0usize);
    while i < ea.len() || j < eb.len() {
        match (ea.get(i), eb.get(j)) {
            (Some(&(ka, va)), Some(&(kb, vb))) if ka == kb => {
                if va != vb {
                    f(ka, Some(va), Some(vb));
                }
                i += 1;
                j += 1;
            }
            (Some(&(ka, va)), Some(&(kb, _))) if ka < kb => {
                f(ka, Some(va), None);
                i += 1;
            }
            (Some(&(ka, va)), None) => {
                f(ka, Some(va), None);
                i += 1;
            }
            (_, Some(&(kb, vb))) => {
                f(kb, None, Some(vb));
                j += 1;
            }
            (None, None) => break,
        }
    }
    Ok(())
}
