//! Consistency groups: copies of several parent LUNs made, or refreshed, in one
//! operation that is all-or-nothing and gives one point in time for all of them
//! (every parent's mapping is cloned before any copy changes, then one commit).

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::{Error, Result};

use super::lun::{Lun, LunKind};
use super::Array;

fn distinct(ns: &[u32]) -> Result<()> {
    for (i, n) in ns.iter().enumerate() {
        if ns[..i].contains(n) {
            return Err(Error::InvalidArgument(
                "a LUN number appears twice in the group",
            ));
        }
    }
    Ok(())
}

impl<D: BlockDevice> Array<D> {
    /// Creates copy `c` of parent `p` for every `(p, c)` in `pairs`, all at one
    /// point in time, attached (each reserving its parent's size) or detached. All
    /// or nothing: any error changes nothing.
    ///
    /// The checks come in this order, so that the error does not depend on the order
    /// of the pairs where the group itself is wrong: first the group's shape
    /// ([`Error::InvalidArgument`] for an empty group, a copy number given twice, or a
    /// copy number that is also a parent in the group); then each pair in turn as
    /// [`Array::create_copy`] checks it (the copy's number in range, the parent
    /// existing, the copy's number free, an attached copy's parent attached); then the
    /// reservation of the whole group ([`Error::NoSpace`]).
    pub fn create_copies(&mut self, pairs: &[(u32, u32)], attached: bool) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        if pairs.is_empty() {
            return Err(Error::InvalidArgument("an empty consistency group"));
        }
        let copies: Vec<u32> = pairs.iter().map(|&(_, c)| c).collect();
        distinct(&copies)?;
        if pairs.iter().any(|(p, _)| copies.contains(p)) {
            return Err(Error::InvalidArgument(
                "a copy in the group is also a parent in the group",
            ));
        }
        let mut need = 0u64;
        let mut parents = Vec::with_capacity(pairs.len());
        for &(p, c) in pairs {
            self.check_number(c)?;
            let pl = self.get(p)?.clone();
            self.check_free_number(c)?;
            if attached && !pl.attached {
                return Err(Error::ParentDetached(c));
            }
            need += if attached {
                self.extents_for(pl.size)
            } else {
                0
            };
            parents.push(pl);
        }
        self.reserve(need)?;
        let g = self.next_gen();
        let mut made = Vec::with_capacity(pairs.len());
        for (pl, &(p, c)) in parents.iter().zip(pairs) {
            let mapping = if attached {
                self.eng.clone_tree(&pl.mapping)?
            } else {
                Self::empty_mapping()?
            };
            made.push((
                c,
                Lun {
                    mapping,
                    size: pl.size,
                    kind: LunKind::Copy,
                    parent: Some(p),
                    attached,
                    online: true,
                    created_gen: g,
                    attached_gen: if attached { g } else { 0 },
                    grants_read: 0,
                    grants_write: 0,
                    dirty: true,
                },
            ));
        }
        self.luns.extend(made);
        if attached {
            for &(p, c) in pairs {
                self.lost.copy(p, c);
            }
        }
        self.dirty = true;
        self.commit()
    }

    /// Attaches (or refreshes) every copy in `copies` at one point in time: each
    /// becomes its parent's image as it was before any of them changed. All or
    /// nothing: any error [`Array::attach`] gives, an empty group or a copy given
    /// twice changes nothing.
    pub fn attach_many(&mut self, copies: &[u32]) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        if copies.is_empty() {
            return Err(Error::InvalidArgument("an empty consistency group"));
        }
        distinct(copies)?;
        let mut need = 0u64;
        let mut images = Vec::with_capacity(copies.len());
        let mut parents = Vec::with_capacity(copies.len());
        for &c in copies {
            let (cl, pn, pl) = self.image_parent(c)?;
            if !cl.attached {
                need += self.extents_for(cl.size);
            }
            images.push(pl.mapping);
            parents.push(pn);
        }
        self.reserve(need)?;
        // Clone every image first: one point in time even if a copy in the group is
        // the parent of another.
        let mut fresh = Vec::with_capacity(copies.len());
        for m in &images {
            fresh.push(self.eng.clone_tree(m)?);
        }
        // Lost ranges as of the same point in time.
        let lost: Vec<Vec<(u64, u64)>> =
            parents.iter().map(|&p| self.lost.of(p).to_vec()).collect();
        for (&c, l) in copies.iter().zip(lost) {
            self.lost.set(c, l);
        }
        let g = self.next_gen();
        for (&c, f) in copies.iter().zip(fresh) {
            let old = {
                let l = self.luns.get_mut(&c).ok_or(Error::NoSuchLun(c))?;
                l.attached = true;
                l.attached_gen = g;
                l.dirty = true;
                core::mem::replace(&mut l.mapping, f)
            };
            self.eng.drop_tree_later(old)?;
        }
        self.dirty = true;
        self.commit()
    }
}
