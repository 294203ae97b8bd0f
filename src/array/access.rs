//! Host access control (the seed's Secure Manager), kept in the same crash-safe
//! metadata as the LUN table: a hosts tree (root slot 1: host id → index and name)
//! and a grants tree (root slot 2: LUN << 32 | host index → access). Both hold plain
//! bytes and are never cloned; every change is committed before it returns.
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
use crate::error::{Error, Result};
use crate::ValueKind;

use super::Array;

pub(crate) const HOSTS_SLOT: usize = 1;
pub(crate) const GRANTS_SLOT: usize = 2;
const HOST_RECORD: usize = 64;
/// Longest host name, in bytes of UTF-8.
pub const MAX_HOST_NAME: usize = 56;
/// Most hosts an array registers: metadata is provisioned at format for every LUN
/// granted to every host, so the number must be bounded.
pub const MAX_HOSTS: u32 = 64;

/// What a grant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Discover and read the LUN.
    Read,
    /// Discover, read and write the LUN.
    ReadWrite,
}

impl Access {
    fn code(self) -> u8 {
        match self {
            Access::Read => 1,
            Access::ReadWrite => 2,
        }
    }

    fn from_code(c: u8) -> Option<Access> {
        match c {
            1 => Some(Access::Read),
            2 => Some(Access::ReadWrite),
            _ => None,
        }
    }
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
    /// (LUN << 32 | host index) → access.
    grants: BTreeMap<u64, Access>,
    host_tree: Tree,
    grant_tree: Tree,
    pub(crate) security: bool,
}

fn grant_key(lun: u32, index: u32) -> u64 {
    (u64::from(lun) << 32) | u64::from(index)
}

fn corrupt(what: &'static str) -> Error {
    Error::Corrupt { addr: 0, what }
}

impl AccessTable {
    /// An empty table (a new array).
    pub(crate) fn new() -> Result<AccessTable> {
        Ok(AccessTable {
            hosts: BTreeMap::new(),
            grants: BTreeMap::new(),
            host_tree: Tree::empty(HOST_RECORD, ValueKind::Opaque)?,
            grant_tree: Tree::empty(1, ValueKind::Opaque)?,
            security: false,
        })
    }

    /// Loads the table from root slots 1 and 2 (absent: empty).
    pub(crate) fn load<D: BlockDevice>(eng: &mut Engine<D>, security: bool) -> Result<Self> {
        let mut t = AccessTable::new()?;
        t.security = security;
        if let Some(h) = eng.root(HOSTS_SLOT)? {
            if h.value_size() != HOST_RECORD || h.kind() != ValueKind::Opaque {
                return Err(corrupt("hosts table has the wrong shape"));
            }
            t.host_tree = h;
        }
        if let Some(g) = eng.root(GRANTS_SLOT)? {
            if g.value_size() != 1 || g.kind() != ValueKind::Opaque {
                return Err(corrupt("grants table has the wrong shape"));
            }
            t.grant_tree = g;
        }
        let mut bad = None;
        let hosts = &mut t.hosts;
        eng.range(&t.host_tree, 0, u64::MAX, |id, v| {
            let index = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            let len = usize::from(v[4]);
            let name = v.get(8..8 + len).and_then(|b| core::str::from_utf8(b).ok());
            match name {
                Some(n) if len <= MAX_HOST_NAME => {
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
                    bad = Some(corrupt("host record has an invalid name"));
                    false
                }
            }
        })?;
        let grants = &mut t.grants;
        eng.range(&t.grant_tree, 0, u64::MAX, |k, v| {
            match Access::from_code(v[0]) {
                Some(a) => {
                    grants.insert(k, a);
                    true
                }
                None => {
                    bad = Some(corrupt("grant record has an unknown access"));
                    false
                }
            }
        })?;
        match bad {
            Some(e) => Err(e),
            None => Ok(t),
        }
    }

    /// Stores both trees in their root slots (before a commit).
    pub(crate) fn write_back<D: BlockDevice>(&self, eng: &mut Engine<D>) -> Result<()> {
        eng.set_root(HOSTS_SLOT, Some(self.host_tree))?;
        eng.set_root(GRANTS_SLOT, Some(self.grant_tree))?;
        Ok(())
    }

    fn index_of(&self, host: u64) -> Option<u32> {
        self.hosts.get(&host).map(|h| h.index)
    }

    /// The grant of `host` on `lun`, if any.
    fn grant_of(&self, lun: u32, host: u64) -> Option<Access> {
        let i = self.index_of(host)?;
        self.grants.get(&grant_key(lun, i)).copied()
    }

    /// Grants referring to no registered host or no LUN in `luns`.
    pub(crate) fn dangling(&self, lun_exists: impl Fn(u32) -> bool) -> Vec<(u32, u32)> {
        self.grants
            .keys()
            .map(|&k| ((k >> 32) as u32, k as u32))
            .filter(|&(l, i)| !lun_exists(l) || !self.hosts.values().any(|h| h.index == i))
            .collect()
    }
}

impl<D: BlockDevice> Array<D> {
    /// Registers host `id` with a label (at most [`MAX_HOST_NAME`] bytes).
    ///
    /// Errors: [`Error::HostExists`], [`Error::InvalidArgument`] (name too long),
    /// [`Error::TooManyHosts`].
    pub fn add_host(&mut self, id: u64, name: &str) -> Result<()> {
        self.live()?;
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
        let index = self.access.index_of(id).ok_or(Error::NoSuchHost(id))?;
        let keys: Vec<u64> = self
            .access
            .grants
            .keys()
            .copied()
            .filter(|&k| k as u32 == index)
            .collect();
        for k in keys {
            self.eng.remove(&mut self.access.grant_tree, k)?;
            self.access.grants.remove(&k);
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
        self.get(lun)?;
        let index = self.access.index_of(host).ok_or(Error::NoSuchHost(host))?;
        let k = grant_key(lun, index);
        self.eng
            .insert(&mut self.access.grant_tree, k, &[access.code()])?;
        self.access.grants.insert(k, access);
        self.dirty = true;
        self.commit()
    }

    /// Removes the grant of `host` on LUN `lun`.
    ///
    /// Errors: [`Error::LunOutOfRange`], [`Error::NoSuchLun`], [`Error::NoSuchHost`],
    /// [`Error::NotGranted`].
    pub fn revoke(&mut self, lun: u32, host: u64) -> Result<()> {
        self.live()?;
        self.get(lun)?;
        let index = self.access.index_of(host).ok_or(Error::NoSuchHost(host))?;
        let k = grant_key(lun, index);
        if !self.access.grants.contains_key(&k) {
            return Err(Error::NotGranted { lun, host });
        }
        self.eng.remove(&mut self.access.grant_tree, k)?;
        self.access.grants.remove(&k);
        self.dirty = true;
        self.commit()
    }

    /// The grants on LUN `lun`, by host id.
    pub fn grants(&self, lun: u32) -> Result<Vec<(u64, Access)>> {
        self.get(lun)?;
        Ok(self
            .access
            .hosts
            .iter()
            .filter_map(|(&id, h)| {
                self.access
                    .grants
                    .get(&grant_key(lun, h.index))
                    .map(|&a| (id, a))
            })
            .collect())
    }

    /// Turns host access control on or off (committed).
    pub fn set_security(&mut self, enabled: bool) -> Result<()> {
        self.live()?;
        self.access.security = enabled;
        self.dirty = true;
        self.commit()
    }

    /// Whether host access control is on.
    pub fn security_enabled(&self) -> bool {
        self.access.security
    }

    /// Removes every grant on LUN `lun` (it is being deleted).
    pub(crate) fn drop_grants(&mut self, lun: u32) -> Result<()> {
        let lo = grant_key(lun, 0);
        let hi = grant_key(lun, u32::MAX);
        let keys: Vec<u64> = self.access.grants.range(lo..=hi).map(|(&k, _)| k).collect();
        for k in keys {
            self.eng.remove(&mut self.access.grant_tree, k)?;
            self.access.grants.remove(&k);
        }
        Ok(())
    }

    /// May `host` reach LUN `lun` (for writing if `write`)? A LUN the host may not
    /// see is reported missing.
    fn authorize(&self, host: u64, lun: u32, write: bool) -> Result<()> {
        self.get(lun)?;
        if !self.access.security {
            return Ok(());
        }
        match self.access.grant_of(lun, host) {
            None => Err(Error::NoSuchLun(lun)),
            Some(Access::Read) if write => Err(Error::ReadOnlyAccess { lun, host }),
            Some(_) => Ok(()),
        }
    }

    /// [`Array::read`] on behalf of `host`.
    pub fn read_as(&mut self, host: u64, lun: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.authorize(host, lun, false)?;
        self.read(lun, offset, buf)
    }

    /// [`Array::write`] on behalf of `host`.
    pub fn write_as(&mut self, host: u64, lun: u32, offset: u64, buf: &[u8]) -> Result<()> {
        self.authorize(host, lun, true)?;
        self.write(lun, offset, buf)
    }

    /// [`Array::discard`] on behalf of `host`.
    pub fn discard_as(&mut self, host: u64, lun: u32, offset: u64, len: u64) -> Result<()> {
        self.authorize(host, lun, true)?;
        self.discard(lun, offset, len)
    }

    /// The LUNs `host` may discover (all of them with security disabled).
    pub fn visible_luns(&self, host: u64) -> Vec<u32> {
        self.luns
            .keys()
            .copied()
            .filter(|&l| self.authorize(host, l, false).is_ok())
            .collect()
    }

    /// [`Array::lun_info`] as `host` sees it: a LUN it may not discover is missing.
    pub fn lun_info_as(&mut self, host: u64, lun: u32) -> Result<super::LunInfo> {
        self.authorize(host, lun, false)?;
        self.lun_info(lun)
    }
}
