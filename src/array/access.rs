//! Host access control (the Secure Manager of HP's Business Copy VA guide), kept in the same crash-safe
//! metadata as the LUN table: a hosts tree (root slot 1: host id → index 0..63 and
//! name; plain bytes, never cloned), and in each LUN record two bitmaps over host
//! indexes (may read, may write). Every change is committed before it returns, and a
//! LUN's grants come and go with its record.
//!
//! With security disabled every host sees every LUN. With it enabled, a host sees
//! (and may read) only the LUNs it has a grant on, and writes only those granted
//! read-write; to it, an ungranted LUN is indistinguishable from a missing one. The
//! plain `read`/`write`/`discard` calls are the array's own (administrator) access
//! and are not filtered.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::btree::Tree;
use crate::device::BlockDevice;
use crate::engine::Engine;
use crate::engine::ValueKind;
use crate::error::{Error, Result};

use super::Array;

pub(crate) const HOSTS_SLOT: usize = 1;
pub(crate) const HOST_RECORD: usize = 64;
/// Longest host name, in bytes of UTF-8.
pub const MAX_HOST_NAME: usize = 56;
/// Most hosts an array registers: a LUN record holds its grants as 64-bit bitmaps
/// over host indexes.
pub const MAX_HOSTS: u32 = 64;

/// What a grant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Discover and read the LUN.
    Read,
    /// Discover, read and write the LUN.
    ReadWrite,
}

/// A registered host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// The host's 64-bit id (WWN-like).
    pub id: u64,
    /// Its label (may be empty).
    pub name: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Host {
    index: u32,
    name: String,
}

/// The access-control state, loaded at open and written through on every change.
pub(crate) struct AccessTable {
    hosts: BTreeMap<u64, Host>,
    host_tree: Tree,
    pub(crate) security: bool,
}

fn corrupt(what: &'static str) -> Error {
    Error::Corrupt { addr: 0, what }
}

impl AccessTable {
    /// An empty table (a new array).
    pub(crate) fn new() -> Result<AccessTable> {
        Ok(AccessTable {
            hosts: BTreeMap::new(),
            host_tree: Tree::empty(HOST_RECORD, ValueKind::Opaque)?,
            security: false,
        })
    }

    /// Loads the hosts from root slot 1 (absent: none).
    pub(crate) fn load<D: BlockDevice>(eng: &mut Engine<D>, security: bool) -> Result<Self> {
        let mut t = AccessTable::new()?;
        t.security = security;
        if let Some(h) = eng.root(HOSTS_SLOT)? {
            if h.value_size() != HOST_RECORD || h.kind() != ValueKind::Opaque {
                return Err(corrupt("hosts table has the wrong shape"));
            }
            t.host_tree = h;
        }
        let mut bad = None;
        let hosts = &mut t.hosts;
        eng.range(&t.host_tree, 0, u64::MAX, |id, v| {
            let index = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            let len = usize::from(v[4]);
            let name = v.get(8..8 + len).and_then(|b| core::str::from_utf8(b).ok());
            match name {
                Some(n) if len <= MAX_HOST_NAME && index < MAX_HOSTS => {
                    hosts.insert(
                        id,
                        Host {
                            index,
                            name: String::from(n),
                        },
                    );
                    true
                }
                _ => {
                    bad = Some(corrupt("host record has an invalid name or index"));
                    false
                }
            }
        })?;
        match bad {
            Some(e) => Err(e),
            None => Ok(t),
        }
    }

    /// Stores the hosts tree in its root slot (before a commit).
    pub(crate) fn write_back<D: BlockDevice>(&self, eng: &mut Engine<D>) -> Result<()> {
        eng.set_root(HOSTS_SLOT, Some(self.host_tree))?;
        Ok(())
    }

    fn index_of(&self, host: u64) -> Option<u32> {
        self.hosts.get(&host).map(|h| h.index)
    }

    /// Bitmap of the host indexes in use.
    pub(crate) fn index_mask(&self) -> u64 {
        self.hosts.values().fold(0, |m, h| m | 1u64 << h.index)
    }
}

/// The access a LUN record grants host index `i`.
fn access_of(l: &super::lun::Lun, i: u32) -> Option<Access> {
    let bit = 1u64 << i;
    if l.grants_write & bit != 0 {
        Some(Access::ReadWrite)
    } else if l.grants_read & bit != 0 {
        Some(Access::Read)
    } else {
        None
    }
}

impl<D: BlockDevice> Array<D> {
    /// Registers host `id` with a label (at most [`MAX_HOST_NAME`] bytes).
    ///
    /// Errors: [`Error::HostExists`], [`Error::InvalidArgument`] (name too long),
    /// [`Error::TooManyHosts`].
    pub fn add_host(&mut self, id: u64, name: &str) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        if self.access.hosts.contains_key(&id) {
            return Err(Error::HostExists(id));
        }
        if name.len() > MAX_HOST_NAME {
            return Err(Error::InvalidArgument("host name longer than 56 bytes"));
        }
        if self.access.hosts.len() >= MAX_HOSTS as usize {
            return Err(Error::TooManyHosts { max: MAX_HOSTS });
        }
        let mut index = 0u32;
        let used: Vec<u32> = self.access.hosts.values().map(|h| h.index).collect();
        while used.contains(&index) {
            index += 1;
        }
        let mut v = [0u8; HOST_RECORD];
        v[..4].copy_from_slice(&index.to_le_bytes());
        v[4] = name.len() as u8;
        v[8..8 + name.len()].copy_from_slice(name.as_bytes());
        self.eng.insert(&mut self.access.host_tree, id, &v)?;
        self.access.hosts.insert(
            id,
            Host {
                index,
                name: String::from(name),
            },
        );
        self.dirty = true;
        self.commit()
    }

    /// Unregisters host `id` and removes its grants.
    ///
    /// Errors: [`Error::NoSuchHost`].
    pub fn remove_host(&mut self, id: u64) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        let index = self.access.index_of(id).ok_or(Error::NoSuchHost(id))?;
        let bit = 1u64 << index;
        for l in self.luns.values_mut() {
            if (l.grants_read | l.grants_write) & bit != 0 {
                l.grants_read &= !bit;
                l.grants_write &= !bit;
                l.dirty = true;
            }
        }
        self.eng.remove(&mut self.access.host_tree, id)?;
        self.access.hosts.remove(&id);
        self.dirty = true;
        self.commit()
    }

    /// The registered hosts, by id.
    pub fn hosts(&self) -> Vec<HostInfo> {
        self.access
            .hosts
            .iter()
            .map(|(&id, h)| HostInfo {
                id,
                name: h.name.clone(),
            })
            .collect()
    }

    /// Grants `host` `access` to LUN `lun` (replacing an earlier grant).
    ///
    /// Errors: [`Error::LunOutOfRange`], [`Error::NoSuchLun`], [`Error::NoSuchHost`].
    pub fn grant(&mut self, lun: u32, host: u64, access: Access) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        self.get(lun)?;
        let bit = 1u64 << self.access.index_of(host).ok_or(Error::NoSuchHost(host))?;
        let l = self.luns.get_mut(&lun).ok_or(Error::NoSuchLun(lun))?;
        l.grants_read |= bit;
        match access {
            Access::Read => l.grants_write &= !bit,
            Access::ReadWrite => l.grants_write |= bit,
        }
        l.dirty = true;
        self.dirty = true;
        self.commit()
    }

    /// Removes the grant of `host` on LUN `lun`.
    ///
    /// Errors: [`Error::LunOutOfRange`], [`Error::NoSuchLun`], [`Error::NoSuchHost`],
    /// [`Error::NotGranted`].
    pub fn revoke(&mut self, lun: u32, host: u64) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        self.get(lun)?;
        let bit = 1u64 << self.access.index_of(host).ok_or(Error::NoSuchHost(host))?;
        let l = self.luns.get_mut(&lun).ok_or(Error::NoSuchLun(lun))?;
        if l.grants_read & bit == 0 {
            return Err(Error::NotGranted { lun, host });
        }
        l.grants_read &= !bit;
        l.grants_write &= !bit;
        l.dirty = true;
        self.dirty = true;
        self.commit()
    }

    /// The grants on LUN `lun`, by host id.
    pub fn grants(&self, lun: u32) -> Result<Vec<(u64, Access)>> {
        let l = self.get(lun)?;
        Ok(self
            .access
            .hosts
            .iter()
            .filter_map(|(&id, h)| access_of(l, h.index).map(|a| (id, a)))
            .collect())
    }

    /// Turns host access control on or off (committed).
    pub fn set_security(&mut self, enabled: bool) -> Result<()> {
        self.live()?;
        self.make_room(0)?;
        self.access.security = enabled;
        self.dirty = true;
        self.commit()
    }

    /// Whether host access control is on.
    pub fn security_enabled(&self) -> bool {
        self.access.security
    }

    /// May `host` reach LUN `lun` (for writing if `write`)? A LUN the host may not
    /// see is reported missing.
    pub(crate) fn authorize(&self, host: u64, lun: u32, write: bool) -> Result<()> {
        let l = self.get(lun)?;
        if !self.access.security {
            return Ok(());
        }
        match self.access.index_of(host).and_then(|i| access_of(l, i)) {
            None => Err(Error::NoSuchLun(lun)),
            Some(Access::Read) if write => Err(Error::ReadOnlyAccess { lun, host }),
            Some(_) => Ok(()),
        }
    }

    /// The array as host `host` sees it: its I/O and discovery filtered by host
    /// security (see [`HostView`]).
    pub fn as_host(&mut self, host: u64) -> HostView<'_, D> {
        HostView { array: self, host }
    }
}

/// The array as one host sees it: the I/O and discovery calls of [`Array`], each
/// authorized against the host's grants when security is enabled. To the host, a
/// LUN it has no grant on is missing ([`Error::NoSuchLun`]), and a read grant refuses
/// writes ([`Error::ReadOnlyAccess`]). With security disabled every call passes
/// through unchanged. Made by [`Array::as_host`]; it holds the array borrowed, so
/// authorization and the operation happen under one borrow.
pub struct HostView<'a, D: BlockDevice> {
    array: &'a mut Array<D>,
    host: u64,
}

impl<D: BlockDevice> HostView<'_, D> {
    /// The host this view acts for.
    pub fn host(&self) -> u64 {
        self.host
    }

    /// Checks that the host may reach `lun` (for writing if `write`) without doing
    /// anything: the error the I/O calls would give, or `Ok`.
    pub fn authorize(&self, lun: u32, write: bool) -> Result<()> {
        self.array.authorize(self.host, lun, write)
    }

    /// [`Array::read`] on behalf of the host.
    pub fn read(&mut self, lun: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.authorize(lun, false)?;
        self.array.read(lun, offset, buf)
    }

    /// [`Array::write`] on behalf of the host.
    pub fn write(&mut self, lun: u32, offset: u64, buf: &[u8]) -> Result<()> {
        self.authorize(lun, true)?;
        self.array.write(lun, offset, buf)
    }

    /// [`Array::discard`] on behalf of the host.
    pub fn discard(&mut self, lun: u32, offset: u64, len: u64) -> Result<()> {
        self.authorize(lun, true)?;
        self.array.discard(lun, offset, len)
    }

    /// [`Array::write_zeroes`] on behalf of the host.
    pub fn write_zeroes(&mut self, lun: u32, offset: u64, len: u64, punch: bool) -> Result<()> {
        self.authorize(lun, true)?;
        self.array.write_zeroes(lun, offset, len, punch)
    }

    /// [`Array::diff`] as the host sees it: both LUNs must be visible to it.
    pub fn diff(&mut self, a: u32, b: u32, offset: u64, len: u64) -> Result<Vec<super::DiffRange>> {
        self.authorize(a, false)?;
        self.authorize(b, false)?;
        self.array.diff(a, b, offset, len)
    }

    /// The LUNs the host may discover (all of them with security disabled).
    pub fn visible_luns(&self) -> Vec<u32> {
        self.array
            .luns
            .keys()
            .copied()
            .filter(|&l| self.authorize(l, false).is_ok())
            .collect()
    }

    /// [`Array::lun_status`] as the host sees it: a LUN it may not discover is missing.
    pub fn lun_status(&self, lun: u32) -> Result<super::LunStatus> {
        self.authorize(lun, false)?;
        self.array.lun_status(lun)
    }

    /// [`Array::map`] on behalf of the host (it needs a read grant).
    pub fn map(&mut self, lun: u32, offset: u64, len: u64) -> Result<Vec<super::MapRange>> {
        self.authorize(lun, false)?;
        self.array.map(lun, offset, len)
    }

    /// [`Array::map_allocation`] on behalf of the host (it needs a read grant).
    pub fn map_allocation(
        &mut self,
        lun: u32,
        offset: u64,
        len: u64,
    ) -> Result<Vec<super::MapRange>> {
        self.authorize(lun, false)?;
        self.array.map_allocation(lun, offset, len)
    }

    /// [`Array::lun_info`] as the host sees it: a LUN it may not discover is missing.
    pub fn lun_info(&mut self, lun: u32) -> Result<super::LunInfo> {
        self.authorize(lun, false)?;
        self.array.lun_info(lun)
    }
}
