//! Management operations: create, copy, attach, detach, delete, restore. Each one
//! validates everything first (an error changes nothing), then changes the trees and
//! commits before returning `Ok`.

use crate::btree::Tree;
use crate::device::BlockDevice;
use crate::engine::ValueKind;
use crate::error::{Error, Result};

use super::lun::{Lun, LunKind, ENTRY_BYTES};
use super::{Array, SECTOR};

impl<D: BlockDevice> Array<D> {
    pub(crate) fn live(&self) -> Result<()> {
        if self.eng.is_poisoned() {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    pub(crate) fn empty_mapping() -> Result<Tree> {
        Tree::empty(ENTRY_BYTES, ValueKind::Extents)
    }

    pub(crate) fn check_free_number(&self, n: u32) -> Result<()> {
        self.check_number(n)?;
        if self.luns.contains_key(&n) {
            return Err(Error::LunExists(n));
        }
        Ok(())
    }

    /// Creates LUN `n` of `size` bytes, reading as zeros, and reserves `size` bytes
    /// of the pool for it (rounded up to whole extents).
    ///
    /// Errors: [`Error::LunOutOfRange`], [`Error::LunExists`], [`Error::InvalidLunSize`]
    /// (0, not a multiple of 512, larger than the pool), [`Error::NoSpace`].
    pub fn create_lun(&mut self, n: u32, size: u64) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        self.check_free_number(n)?;
        let why = if size == 0 {
            Some("a LUN must not be empty")
        } else if size % SECTOR != 0 {
            Some("the size must be a multiple of 512 bytes")
        } else if self.extents_for(size) > self.capacity_extents() {
            Some("larger than the pool's capacity")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::InvalidLunSize { size, why });
        }
        self.reserve(self.extents_for(size))?;
        let g = self.next_gen();
        self.luns.insert(
            n,
            Lun {
                mapping: Self::empty_mapping()?,
                size,
                kind: LunKind::Lun,
                parent: None,
                attached: true,
                online: true,
                created_gen: g,
                attached_gen: g,
                grants_read: 0,
                grants_write: 0,
                dirty: true,
            },
        );
        self.dirty = true;
        self.commit()
    }

    /// Creates copy `n` of LUN `parent`. Attached: it is the parent's image now (an
    /// O(1) clone of the parent's mapping) and reserves the parent's size. Detached:
    /// only the relationship is recorded; no data, no reservation, I/O refused until
    /// [`Array::attach`].
    ///
    /// Errors: [`Error::LunOutOfRange`], [`Error::NoSuchLun`] (parent),
    /// [`Error::LunExists`], [`Error::ParentDetached`] (attached copy of a detached
    /// copy), [`Error::NoSpace`] (attached).
    pub fn create_copy(&mut self, parent: u32, n: u32, attached: bool) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        self.check_number(n)?;
        let p = self.get(parent)?.clone();
        self.check_free_number(n)?;
        if attached && !p.attached {
            return Err(Error::ParentDetached(n));
        }
        if attached {
            self.reserve(self.extents_for(p.size))?;
        }
        let mapping = if attached {
            self.eng.clone_tree(&p.mapping)?
        } else {
            Self::empty_mapping()?
        };
        let g = self.next_gen();
        self.luns.insert(
            n,
            Lun {
                mapping,
                size: p.size,
                kind: LunKind::Copy,
                parent: Some(parent),
                attached,
                online: true,
                created_gen: g,
                attached_gen: if attached { g } else { 0 },
                grants_read: 0,
                grants_write: 0,
                dirty: true,
            },
        );
        if attached {
            self.lost.copy(parent, n);
        }
        self.dirty = true;
        self.commit()
    }

    /// The parent of copy `n`, which must have an image to copy.
    pub(crate) fn image_parent(&self, n: u32) -> Result<(Lun, u32, Lun)> {
        let c = self.get(n)?.clone();
        if c.kind != LunKind::Copy {
            return Err(Error::NotACopy(n));
        }
        let pn = c.parent.ok_or(Error::ParentGone(n))?;
        let p = self.luns.get(&pn).ok_or(Error::ParentGone(n))?.clone();
        if !p.attached {
            return Err(Error::ParentDetached(n));
        }
        Ok((c, pn, p))
    }

    /// Makes copy `n` the parent's image now, discarding its previous contents and
    /// writes (the guide's "attach", also used to refresh an attached copy). A
    /// detached copy reserves its size again. Its number and record are kept.
    ///
    /// Errors: [`Error::NoSuchLun`], [`Error::NotACopy`], [`Error::ParentGone`],
    /// [`Error::ParentDetached`], [`Error::NoSpace`].
    pub fn attach(&mut self, n: u32) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        let (c, pn, p) = self.image_parent(n)?;
        if !c.attached {
            self.reserve(self.extents_for(c.size))?;
        }
        self.lost.copy(pn, n);
        let fresh = self.eng.clone_tree(&p.mapping)?;
        let g = self.next_gen();
        let old = {
            let l = self.luns.get_mut(&n).ok_or(Error::NoSuchLun(n))?;
            let old = core::mem::replace(&mut l.mapping, fresh);
            l.attached = true;
            l.attached_gen = g;
            l.dirty = true;
            old
        };
        self.eng.drop_tree_later(old)?;
        self.dirty = true;
        self.commit()
    }

    /// Discards copy `n`'s data and reservation; the number stays defined as a
    /// detached copy of the same parent and refuses I/O until attached again.
    /// Detaching a detached copy changes nothing.
    ///
    /// Errors: [`Error::NoSuchLun`], [`Error::NotACopy`].
    pub fn detach(&mut self, n: u32) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        let c = self.get(n)?;
        if c.kind != LunKind::Copy {
            return Err(Error::NotACopy(n));
        }
        if !c.attached {
            return Ok(());
        }
        let old = {
            let l = self.luns.get_mut(&n).ok_or(Error::NoSuchLun(n))?;
            l.attached = false;
            l.dirty = true;
            core::mem::replace(&mut l.mapping, Self::empty_mapping()?)
        };
        self.lost.remove(n);
        self.eng.drop_tree_later(old)?;
        self.dirty = true;
        self.commit()
    }

    /// Deletes LUN `n`, freeing the extents nobody else maps. A LUN that still has
    /// copies is refused unless `orphan_copies`: its attached copies then stand
    /// alone as plain LUNs with their data, its detached copies stay detached copies
    /// without a parent (they can only be deleted).
    ///
    /// Errors: [`Error::LunOutOfRange`], [`Error::NoSuchLun`], [`Error::HasCopies`].
    pub fn delete(&mut self, n: u32, orphan_copies: bool) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        self.get(n)?;
        let copies = self.luns.values().filter(|l| l.parent == Some(n)).count() as u32;
        if copies > 0 && !orphan_copies {
            return Err(Error::HasCopies { lun: n, copies });
        }
        for l in self.luns.values_mut().filter(|l| l.parent == Some(n)) {
            l.parent = None;
            if l.attached {
                l.kind = LunKind::Lun;
            }
            l.dirty = true;
        }
        let l = self.luns.get(&n).ok_or(Error::NoSuchLun(n))?.clone();
        self.lost.remove(n);
        self.forget_record(n)?;
        self.eng.drop_tree_later(l.mapping)?;
        self.dirty = true;
        self.commit()
    }

    /// Makes the parent's contents the current contents of copy `n` (the guide's copy
    /// to parent, `armcopy -r`), in time that does not depend on the LUN size. The
    /// copy and every other copy of the parent are unchanged.
    ///
    /// Errors: [`Error::NoSuchLun`], [`Error::NotACopy`], [`Error::Detached`],
    /// [`Error::ParentGone`], [`Error::ParentDetached`].
    pub fn restore(&mut self, n: u32) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        let c = self.get(n)?;
        if c.kind == LunKind::Copy && !c.attached {
            return Err(Error::Detached(n));
        }
        let (c, pn, _) = self.image_parent(n)?;
        let fresh = self.eng.clone_tree(&c.mapping)?;
        self.lost.copy(n, pn);
        let old = {
            let p = self.luns.get_mut(&pn).ok_or(Error::ParentGone(n))?;
            p.dirty = true;
            core::mem::replace(&mut p.mapping, fresh)
        };
        self.eng.drop_tree_later(old)?;
        self.dirty = true;
        self.commit()
    }

    /// Takes LUN `n` offline (I/O refused with [`Error::Offline`], management
    /// operations allowed) or brings it back online. Persistent.
    ///
    /// Errors: [`Error::LunOutOfRange`], [`Error::NoSuchLun`].
    pub fn set_online(&mut self, n: u32, online: bool) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        self.get(n)?;
        let l = self.luns.get_mut(&n).ok_or(Error::NoSuchLun(n))?;
        l.online = online;
        l.dirty = true;
        self.dirty = true;
        self.commit()
    }
}
