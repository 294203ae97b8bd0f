//! Layer 4: the copy-on-write B+tree (Rodeh 2008; dm-thin persistent-data).
//!
//! Keys are `u64`, values are fixed-size byte strings. Nodes are shared between
//! trees and counted in the metadata space map: cloning a tree increments its root's
//! count (O(1)); a modification walks top-down and *shadows* each node on its path
//! that it may not change in place — a node may change in place only if this
//! transaction wrote it and exactly one parent refers to it. Shadowing a shared node
//! gives each of its children (or, in a leaf, each value's referent) one more
//! reference, since now two nodes point at them. Dropping a tree decrements its root
//! and recurses only into nodes whose count reaches zero, so it frees exactly what
//! that tree alone owned.
//!
//! Inserts split full nodes on the way down (appends at the right edge split
//! unevenly, so a sequentially filled tree has full leaves); removes merge or
//! rebalance thin nodes on the way down, so every node but the root stays at least a
//! third full.

mod live;
pub mod node;
mod walk;

pub use live::{LiveCounts, CHUNK as LIVE_CHUNK};

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::store::page::{PageKind, PAGE_SIZE};
use crate::store::page_store::PageStore;
use crate::store::space_map::SpaceMaps;
use node::{Header, Ref, ValueKind, MAX_LEVEL, MAX_VALUE_SIZE};

/// A handle on one tree: its root and the shape of its values.
///
/// A `Tree` value *is* a reference to its root: whoever holds it owns one count of
/// the root block. Copying the struct does not take a new reference; use
/// [`Engine::clone_tree`](crate::engine::Engine::clone_tree) for that and [`Engine::drop_tree`](crate::engine::Engine::drop_tree) to give one back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tree {
    pub(crate) root: u64,
    pub(crate) value_size: u16,
    pub(crate) kind: ValueKind,
}

impl Tree {
    /// An empty tree (no blocks yet) whose values are `value_size` bytes of `kind`.
    pub fn empty(value_size: usize, kind: ValueKind) -> Result<Tree> {
        let ok = match kind {
            ValueKind::Opaque => (1..=MAX_VALUE_SIZE).contains(&value_size),
            ValueKind::Data => (4..=MAX_VALUE_SIZE).contains(&value_size),
            ValueKind::Tree => (8..=MAX_VALUE_SIZE).contains(&value_size),
            ValueKind::Extents => (4..=MAX_VALUE_SIZE).contains(&value_size) && value_size % 4 == 0,
            ValueKind::Child => false,
        };
        if !ok {
            return Err(Error::InvalidArgument(
                "value size must be 1..=256 bytes (at least 4 for Data, 8 for Tree values, a multiple of 4 for Extents)",
            ));
        }
        Ok(Tree {
            root: 0,
            value_size: value_size as u16,
            kind,
        })
    }

    /// Root block address (0 for an empty tree).
    pub fn root(&self) -> u64 {
        self.root
    }
    /// Size of each value in bytes.
    pub fn value_size(&self) -> usize {
        self.value_size as usize
    }
    /// What the values refer to.
    pub fn kind(&self) -> ValueKind {
        self.kind
    }
    /// True if the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.root == 0
    }
    /// Rebuilds a handle from persisted parts, validating them.
    pub fn from_parts(root: u64, value_size: usize, kind: ValueKind) -> Result<Tree> {
        let mut t = Tree::empty(value_size, kind)?;
        t.root = root;
        Ok(t)
    }
}

/// The metadata a tree operation works on: the block store and the space maps.
pub struct Ctx<'a, D> {
    /// Block store.
    pub st: &'a mut PageStore<D>,
    /// Space maps.
    pub sm: &'a mut SpaceMaps,
}

type Block = [u8; PAGE_SIZE];

impl<D: BlockDevice> Ctx<'_, D> {
    /// Reads node `addr`, checks its header and that it sits at `level` (if known)
    /// and, for leaves, that it has the tree's value shape.
    fn node(&mut self, addr: u64, level: Option<u8>, t: &Tree) -> Result<(&[u8], Header)> {
        let b = self.st.read(addr, PageKind::BtreeNode)?;
        let h = node::header(b, addr)?;
        if level.is_some_and(|l| l != h.level) {
            return Err(Error::corrupt(addr, "B-tree child at the wrong level"));
        }
        if h.is_leaf() && (h.vs != t.value_size as usize || h.kind != t.kind) {
            return Err(Error::corrupt(
                addr,
                "B-tree leaf does not match the tree's value shape",
            ));
        }
        if !h.is_leaf() && h.nr == 0 {
            return Err(Error::corrupt(addr, "empty interior B-tree node"));
        }
        Ok((b, h))
    }

    fn header_of(&mut self, addr: u64, level: Option<u8>, t: &Tree) -> Result<Header> {
        Ok(self.node(addr, level, t)?.1)
    }

    fn copy_node(&mut self, addr: u64, level: Option<u8>, t: &Tree) -> Result<(Block, Header)> {
        let mut buf = [0u8; PAGE_SIZE];
        let (b, h) = self.node(addr, level, t)?;
        buf.copy_from_slice(b);
        Ok((buf, h))
    }

    fn modify(&mut self, addr: u64) -> Result<&mut [u8]> {
        self.st.modify(addr, PageKind::BtreeNode)
    }

    /// Looks up `key`; on a hit copies its value into `out` (value-size bytes).
    pub fn lookup(&mut self, t: &Tree, key: u64, out: &mut [u8]) -> Result<bool> {
        if out.len() < t.value_size as usize {
            return Err(Error::InvalidArgument(
                "output buffer smaller than the tree's value size",
            ));
        }
        let mut addr = t.root;
        let mut level = None;
        if addr == 0 {
            return Ok(false);
        }
        loop {
            let (b, h) = self.node(addr, level, t)?;
            if h.is_leaf() {
                let (i, found) = node::search(b, h.nr, key);
                if found {
                    out[..h.vs].copy_from_slice(node::value(b, &h, i));
                }
                return Ok(found);
            }
            let Some(i) = node::child_index(b, h.nr, key) else {
                return Ok(false);
            };
            addr = node::child(b, &h, i);
            level = Some(h.level - 1);
        }
    }

    /// Releases the reference a value holds (dropping a nested tree if it was the last).
    pub fn release_value(&mut self, kind: ValueKind, v: &[u8]) -> Result<()> {
        for r in node::value_refs(kind, v) {
            match r {
                Ref::Data(e) => self.sm.dec_data(self.st, e)?,
                Ref::Tree(r) => self.release_node(r, None)?,
            }
        }
        Ok(())
    }

    /// Returns `addr` if it may be modified in place, else a shadow copy of it;
    /// the caller must store the returned address in the node's parent.
    fn shadow(&mut self, addr: u64, level: Option<u8>, t: &Tree) -> Result<u64> {
        let txid = {
            let (b, _) = self.node(addr, level, t)?;
            crate::store::page::txid(b)
        };
        let rc = self.sm.meta_count(self.st, addr)?;
        if rc == 0 {
            return Err(Error::corrupt(
                addr,
                "reachable B-tree node has reference count 0",
            ));
        }
        if rc == 1 && txid == self.st.txid() {
            return Ok(addr);
        }
        let new = self.sm.alloc_meta(self.st)?;
        self.st.copy(addr, new, PageKind::BtreeNode)?;
        if rc > 1 {
            // Both the old and the new node now point at every child.
            let (b, h) = self.copy_node(new, level, t)?;
            if h.is_leaf() {
                let mut extents = Vec::new();
                for i in 0..h.nr {
                    for r in node::value_refs(h.kind, node::value(&b, &h, i)) {
                        match r {
                            Ref::Data(e) => extents.push(e),
                            Ref::Tree(r) => self.sm.inc_meta(self.st, r)?,
                        }
                    }
                }
                self.sm.adjust_data_many(self.st, &mut extents, true)?;
            } else {
                for i in 0..h.nr {
                    self.sm.inc_meta(self.st, node::child(&b, &h, i))?;
                }
            }
        }
        self.sm.dec_meta(self.st, addr)?;
        Ok(new)
    }

    /// Shadows child `i` of the writable interior node `p` and stores the new address.
    fn shadow_child(&mut self, p: u64, ph: &Header, i: usize, t: &Tree) -> Result<u64> {
        let c = node::child(self.st.read(p, PageKind::BtreeNode)?, ph, i);
        let n = self.shadow(c, Some(ph.level - 1), t)?;
        if n != c {
            node::set_child(self.modify(p)?, ph, i, n);
        }
        Ok(n)
    }

    fn new_node(&mut self, h: &Header) -> Result<u64> {
        let a = self.sm.alloc_meta(self.st)?;
        let b = self.st.create(a, PageKind::BtreeNode)?;
        node::set_header(b, h);
        Ok(a)
    }

    /// Inserts or replaces `key`. The tree takes over the reference `value` holds
    /// (see [`ValueKind`]); a replaced value's reference is released.
    pub fn insert(&mut self, t: &mut Tree, key: u64, value: &[u8]) -> Result<()> {
        self.insert_value(t, key, value, true)
    }

    /// Like [`Ctx::insert`], but a replaced value's references are released only if
    /// `release_old`; otherwise they pass to the caller, who already accounts for them.
    pub fn insert_value(
        &mut self,
        t: &mut Tree,
        key: u64,
        value: &[u8],
        release_old: bool,
    ) -> Result<()> {
        let vs = t.value_size as usize;
        if value.len() != vs {
            return Err(Error::InvalidArgument(
                "value length differs from the tree's value size",
            ));
        }
        let leaf_h = Header {
            nr: 0,
            vs,
            level: 0,
            kind: t.kind,
        };
        if t.root == 0 {
            let a = self.new_node(&leaf_h)?;
            node::insert_at(self.modify(a)?, &leaf_h, 0, key, value);
            t.root = a;
            return Ok(());
        }
        let mut scratch = [0u8; MAX_VALUE_SIZE];
        if self.lookup(t, key, &mut scratch[..vs])? {
            // Replacing adds no entry: shadow the path but split nothing, or full
            // nodes (a sequentially filled tree) would be halved for no reason.
            return self.replace_existing(t, key, value, release_old);
        }
        t.root = self.shadow(t.root, None, t)?;
        let rh = self.header_of(t.root, None, t)?;
        if rh.nr >= rh.max() {
            if rh.level >= MAX_LEVEL {
                return Err(Error::corrupt(
                    t.root,
                    "B-tree would exceed the maximum depth",
                ));
            }
            let first = node::key(self.st.read(t.root, PageKind::BtreeNode)?, 0);
            let ih = Header {
                nr: 0,
                vs: 8,
                level: rh.level + 1,
                kind: ValueKind::Child,
            };
            let nr = self.new_node(&ih)?;
            node::insert_at(self.modify(nr)?, &ih, 0, first, &t.root.to_le_bytes());
            t.root = nr;
            self.split_child(nr, 0, key, true, t)?;
        }
        let mut addr = t.root;
        let mut level = None;
        let mut rightmost = true;
        loop {
            let (b, h) = self.node(addr, level, t)?;
            let (i, found) = node::search(b, h.nr, key);
            if h.is_leaf() {
                // The lookup above missed the key: finding it now means the path
                // read differently the second time (replace_existing handles keys
                // that exist).
                if found {
                    return Err(Error::corrupt(addr, "key appeared during insert"));
                }
                if h.nr >= h.max() {
                    return Err(Error::corrupt(addr, "full leaf reached during insert"));
                }
                node::insert_at(self.modify(addr)?, &h, i, key, value);
                return Ok(());
            }
            let mut ci = if found { i } else { i.saturating_sub(1) };
            if !found && i == 0 {
                // New smallest key: lower the first separator.
                node::set_key(self.modify(addr)?, 0, key);
            }
            rightmost &= ci + 1 == h.nr;
            let child = self.shadow_child(addr, &h, ci, t)?;
            let chh = self.header_of(child, Some(h.level - 1), t)?;
            if chh.nr >= chh.max() {
                if h.nr >= h.max() {
                    return Err(Error::corrupt(
                        addr,
                        "full interior node reached during insert",
                    ));
                }
                self.split_child(addr, ci, key, rightmost, t)?;
                let b = self.st.read(addr, PageKind::BtreeNode)?;
                if key >= node::key(b, ci + 1) {
                    ci += 1;
                }
            }
            let b = self.st.read(addr, PageKind::BtreeNode)?;
            addr = node::child(b, &h, ci);
            level = Some(h.level - 1);
        }
    }

    /// Replaces the value of `key`, which is present: shadows the path, no splits.
    fn replace_existing(
        &mut self,
        t: &mut Tree,
        key: u64,
        value: &[u8],
        release_old: bool,
    ) -> Result<()> {
        let vs = value.len();
        t.root = self.shadow(t.root, None, t)?;
        let mut addr = t.root;
        let mut level = None;
        loop {
            let (b, h) = self.node(addr, level, t)?;
            if h.is_leaf() {
                let (i, found) = node::search(b, h.nr, key);
                if !found {
                    return Err(Error::corrupt(addr, "key vanished during replace"));
                }
                let mut old = [0u8; MAX_VALUE_SIZE];
                old[..vs].copy_from_slice(node::value(b, &h, i));
                let o = node::value_off(&h, i);
                self.modify(addr)?[o..o + vs].copy_from_slice(value);
                if release_old {
                    self.release_value(h.kind, &old[..vs])?;
                }
                return Ok(());
            }
            let ci = node::child_index(b, h.nr, key)
                .ok_or(Error::corrupt(addr, "key below node range"))?;
            addr = self.shadow_child(addr, &h, ci, t)?;
            level = Some(h.level - 1);
        }
    }

    /// Splits the full, writable child `i` of writable interior node `p` in two.
    fn split_child(&mut self, p: u64, i: usize, key: u64, rightmost: bool, t: &Tree) -> Result<()> {
        let ph = self.header_of(p, None, t)?;
        let c = node::child(self.st.read(p, PageKind::BtreeNode)?, &ph, i);
        let (cb, ch) = self.copy_node(c, Some(ph.level - 1), t)?;
        let n = ch.nr;
        // Appending past the end of the tree: keep the left node full.
        let mid = if rightmost && key > node::key(&cb, n - 1) {
            n - 1
        } else {
            n / 2
        };
        let rh = Header { nr: 0, ..ch };
        let r = self.new_node(&rh)?;
        {
            let rb = self.modify(r)?;
            node::copy_entries(rb, 0, &cb, mid, n - mid, &ch);
            node::set_nr(rb, n - mid);
        }
        node::set_nr(self.modify(c)?, mid);
        let sep = node::key(&cb, mid);
        let ph = self.header_of(p, None, t)?;
        node::insert_at(self.modify(p)?, &ph, i + 1, sep, &r.to_le_bytes());
        Ok(())
    }

    /// Removes `key`; returns whether it was present. Its value's reference is released.
    pub fn remove(&mut self, t: &mut Tree, key: u64) -> Result<bool> {
        self.remove_key(t, key, true)
    }

    /// Like [`Ctx::remove`], but the value's references are released only if
    /// `release`; otherwise they pass to the caller.
    pub fn remove_key(&mut self, t: &mut Tree, key: u64, release: bool) -> Result<bool> {
        let mut scratch = [0u8; MAX_VALUE_SIZE];
        if !self.lookup(t, key, &mut scratch)? {
            return Ok(false);
        }
        t.root = self.shadow(t.root, None, t)?;
        let mut addr = t.root;
        let mut level = None;
        loop {
            let (b, h) = self.node(addr, level, t)?;
            if h.is_leaf() {
                let (i, found) = node::search(b, h.nr, key);
                if !found {
                    return Err(Error::corrupt(addr, "key vanished during remove"));
                }
                scratch[..h.vs].copy_from_slice(node::value(b, &h, i));
                node::remove_at(self.modify(addr)?, &h, i);
                if release {
                    self.release_value(h.kind, &scratch[..h.vs])?;
                }
                break;
            }
            let ci = node::child_index(b, h.nr, key)
                .ok_or(Error::corrupt(addr, "key below node range"))?;
            let child = self.shadow_child(addr, &h, ci, t)?;
            let chh = self.header_of(child, Some(h.level - 1), t)?;
            let ci = if chh.nr < chh.max() / 3 && h.nr >= 2 {
                self.rebalance(addr, &h, ci, key, t)?
            } else {
                ci
            };
            let b = self.st.read(addr, PageKind::BtreeNode)?;
            let ph = node::header(b, addr)?;
            addr = node::child(b, &ph, ci);
            level = Some(h.level - 1);
        }
        self.collapse_root(t)?;
        Ok(true)
    }

    /// Merges thin child `i` of `p` with a sibling, or evens them out; returns the
    /// index of the child that now covers `key`.
    fn rebalance(&mut self, p: u64, ph: &Header, i: usize, key: u64, t: &Tree) -> Result<usize> {
        let (l, r) = if i + 1 < ph.nr {
            (i, i + 1)
        } else {
            (i - 1, i)
        };
        let la = self.shadow_child(p, ph, l, t)?;
        let ra = self.shadow_child(p, ph, r, t)?;
        let clevel = Some(ph.level - 1);
        let (rb, h) = self.copy_node(ra, clevel, t)?;
        let (lb, lh) = self.copy_node(la, clevel, t)?;
        let (nl, nr) = (lh.nr, h.nr);
        if nl + nr <= h.max() {
            let b = self.modify(la)?;
            node::copy_entries(b, nl, &rb, 0, nr, &h);
            node::set_nr(b, nl + nr);
            let cur = node::header(self.st.read(p, PageKind::BtreeNode)?, p)?;
            node::remove_at(self.modify(p)?, &cur, r);
            // `ra`'s children now belong to `la`; free only the node itself.
            self.sm.dec_meta(self.st, ra)?;
            return Ok(l);
        }
        let want_l = (nl + nr) / 2;
        if nl > want_l {
            let mv = nl - want_l;
            let b = self.modify(ra)?;
            node::shift_entries(b, 0, nr, mv, &h);
            node::copy_entries(b, 0, &lb, want_l, mv, &h);
            node::set_nr(b, nr + mv);
            node::set_nr(self.modify(la)?, want_l);
        } else {
            let mv = want_l - nl;
            let b = self.modify(la)?;
            node::copy_entries(b, nl, &rb, 0, mv, &h);
            node::set_nr(b, want_l);
            let b = self.modify(ra)?;
            node::shift_entries(b, mv, nr, 0, &h);
            node::set_nr(b, nr - mv);
        }
        let sep = node::key(self.st.read(ra, PageKind::BtreeNode)?, 0);
        node::set_key(self.modify(p)?, r, sep);
        Ok(if key >= sep { r } else { l })
    }

    /// Replaces an interior root with a single child by that child; frees an empty leaf root.
    fn collapse_root(&mut self, t: &mut Tree) -> Result<()> {
        loop {
            let (b, h) = self.node(t.root, None, t)?;
            if h.is_leaf() {
                if h.nr == 0 {
                    let r = t.root;
                    t.root = 0;
                    self.sm.dec_meta(self.st, r)?;
                }
                return Ok(());
            }
            if h.nr != 1 {
                return Ok(());
            }
            let c = node::child(b, &h, 0);
            let r = t.root;
            t.root = c;
            self.sm.dec_meta(self.st, r)?;
        }
    }

    /// Takes a new reference to `t`'s root: O(1) whatever the tree's size.
    pub fn clone_tree(&mut self, t: &Tree) -> Result<Tree> {
        if t.root != 0 {
            self.sm.inc_meta(self.st, t.root)?;
        }
        Ok(*t)
    }

    /// Gives back the reference `t` holds, freeing whatever only it used.
    pub fn drop_tree(&mut self, t: Tree) -> Result<()> {
        if t.root == 0 {
            return Ok(());
        }
        self.release_node(t.root, None)
    }

    /// Decrements node `root`; for every node whose count reaches zero, releases what
    /// it points to. Iterative: nodes are expanded at most once (when they die), so the
    /// work is bounded by the metadata size even on a hostile device.
    fn release_node(&mut self, root: u64, level: Option<u8>) -> Result<()> {
        let mut work: Vec<(u64, Option<u8>)> = Vec::new();
        work.push((root, level));
        let mut vals: Vec<u8> = Vec::new();
        let mut extents: Vec<u64> = Vec::new();
        while let Some((addr, level)) = work.pop() {
            let rc = self.sm.meta_count(self.st, addr)?;
            if rc == 0 {
                return Err(Error::corrupt(addr, "reference to a free B-tree node"));
            }
            if rc == 1 {
                // Read what it points to before its block can be reused.
                let b = self.st.read(addr, PageKind::BtreeNode)?;
                let h = node::header(b, addr)?;
                if level.is_some_and(|l| l != h.level) {
                    return Err(Error::corrupt(addr, "B-tree child at the wrong level"));
                }
                if h.is_leaf() {
                    vals.clear();
                    for i in 0..h.nr {
                        vals.extend_from_slice(node::value(b, &h, i));
                    }
                    self.sm.dec_meta(self.st, addr)?;
                    extents.clear();
                    for v in vals.chunks(h.vs) {
                        for r in node::value_refs(h.kind, v) {
                            match r {
                                Ref::Data(e) => extents.push(e),
                                Ref::Tree(r) => work.push((r, None)),
                            }
                        }
                    }
                    self.sm.adjust_data_many(self.st, &mut extents, false)?;
                } else {
                    if h.nr == 0 {
                        return Err(Error::corrupt(addr, "empty interior B-tree node"));
                    }
                    let kids: Vec<u64> = (0..h.nr).map(|i| node::child(b, &h, i)).collect();
                    self.sm.dec_meta(self.st, addr)?;
                    work.extend(kids.into_iter().map(|c| (c, Some(h.level - 1))));
                }
            } else {
                self.sm.dec_meta(self.st, addr)?;
            }
        }
        Ok(())
    }

    /// Counts the data-extent references of `t`'s values (see [`node::value_refs`]),
    /// split into (exclusive, shared): a reference is exclusive when no other tree
    /// reaches its leaf (every node on the path has one reference) and the extent
    /// has a single reference. Visits every node of `t` once; RAM stays constant.
    ///
    /// With `live`, the counts are those of the live trees ([`Ctx::live_counts`])
    /// rather than the stored ones, and only the extents of its chunk are counted.
    pub fn data_sharing(&mut self, t: &Tree, live: Option<&LiveCounts>) -> Result<(u64, u64)> {
        let (mut exclusive, mut shared) = (0u64, 0u64);
        if t.root == 0 {
            return Ok((0, 0));
        }
        let limit = self.sm.meta.entries;
        let mut entered = 0u64;
        let mut vals: Vec<u8> = Vec::new();
        let mut stack: Vec<(u64, Option<u8>, bool)> = alloc::vec![(t.root, None, false)];
        while let Some((addr, level, above)) = stack.pop() {
            entered += 1;
            if entered > limit {
                return Err(Error::corrupt(
                    addr,
                    "B-tree walk revisits nodes: forged cycle",
                ));
            }
            let count = match live {
                Some(l) => l.node(addr),
                None => self.sm.meta_count(self.st, addr)?,
            };
            let path_shared = above || count > 1;
            let (b, h) = self.node(addr, level, t)?;
            if h.is_leaf() {
                vals.clear();
                for i in 0..h.nr {
                    vals.extend_from_slice(node::value(b, &h, i));
                }
                for v in vals.chunks(h.vs) {
                    for r in node::value_refs(h.kind, v) {
                        if let Ref::Data(e) = r {
                            let count = match live {
                                Some(l) => match l.extent(e) {
                                    Some(c) => c,
                                    None => continue,
                                },
                                None => self.sm.data_count(self.st, e)?,
                            };
                            if path_shared || count > 1 {
                                shared += 1;
                            } else {
                                exclusive += 1;
                            }
                        }
                    }
                }
            } else {
                for i in (0..h.nr).rev() {
                    stack.push((node::child(b, &h, i), Some(h.level - 1), path_shared));
                }
            }
        }
        Ok((exclusive, shared))
    }

    /// Calls `f(key, value)` for each entry with `lo <= key <= hi` in key order until
    /// `f` returns `false`.
    pub fn range(
        &mut self,
        t: &Tree,
        lo: u64,
        hi: u64,
        mut f: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<()> {
        if t.root == 0 || lo > hi {
            return Ok(());
        }
        // Path of (interior node, index of the child being visited).
        let mut path: heapless::Vec<(u64, usize), { MAX_LEVEL as usize + 1 }> =
            heapless::Vec::new();
        // A valid tree holds each node once, so a walk that enters more nodes than the
        // metadata area has is going round a forged cycle or shared subtree.
        let limit = self.sm.meta.entries;
        let mut entered = 0u64;
        let mut last: Option<u64> = None;
        let mut addr = t.root;
        let mut level = None;
        let mut from = Some(lo);
        loop {
            entered += 1;
            if entered > limit {
                return Err(Error::corrupt(
                    addr,
                    "B-tree walk revisits nodes: forged cycle",
                ));
            }
            let (b, h) = self.node(addr, level, t)?;
            if !h.is_leaf() {
                let i = match from {
                    Some(k) => node::child_index(b, h.nr, k).unwrap_or(0),
                    None => 0,
                };
                let c = node::child(b, &h, i);
                path.push((addr, i))
                    .map_err(|_| Error::corrupt(addr, "B-tree deeper than allowed"))?;
                addr = c;
                level = Some(h.level - 1);
                continue;
            }
            let start = match from {
                Some(k) => node::search(b, h.nr, k).0,
                None => 0,
            };
            for i in start..h.nr {
                let k = node::key(b, i);
                if k > hi {
                    return Ok(());
                }
                if last.is_some_and(|l| k <= l) {
                    return Err(Error::corrupt(
                        addr,
                        "B-tree keys out of order across nodes",
                    ));
                }
                last = Some(k);
                if !f(k, node::value(b, &h, i)) {
                    return Ok(());
                }
            }
            from = None;
            // Climb to the next unvisited child.
            loop {
                let Some((p, i)) = path.pop() else {
                    return Ok(());
                };
                let (pb, ph) = self.node(p, None, t)?;
                if i + 1 < ph.nr {
                    if node::key(pb, i + 1) > hi {
                        return Ok(());
                    }
                    let c = node::child(pb, &ph, i + 1);
                    path.push((p, i + 1))
                        .map_err(|_| Error::corrupt(p, "B-tree deeper than allowed"))?;
                    addr = c;
                    level = Some(ph.level - 1);
                    break;
                }
            }
        }
    }
}
