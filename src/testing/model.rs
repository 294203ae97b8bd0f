//! The reference model: every array operation's semantics and errors, on plain maps.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::array::{
    Access, ArrayViolation, HostInfo, LunInfo, LunKind, PoolInfo, MAX_HOSTS, MAX_HOST_NAME, SECTOR,
};
use crate::error::{Error, Result};

const SECTOR_BYTES: usize = SECTOR as usize;

/// The content of one 512-byte sector.
pub(crate) type Sector = Box<[u8; SECTOR_BYTES]>;

pub(crate) fn sector_of(bytes: &[u8]) -> Sector {
    let mut s = Box::new([0u8; SECTOR_BYTES]);
    s.copy_from_slice(bytes);
    s
}

/// A LUN's sectors, its lineage map and its lost ranges: what a copy of it takes.
type Image = (BTreeMap<u64, Sector>, BTreeMap<u64, u64>, Vec<(u64, u64)>);

/// One LUN of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MLun {
    pub size: u64,
    pub kind: LunKind,
    pub parent: Option<u32>,
    pub attached: bool,
    pub online: bool,
    /// Host id → what it was granted on this LUN.
    pub grants: BTreeMap<u64, Access>,
    pub created_gen: u64,
    pub attached_gen: u64,
    /// Sectors holding anything but zeros: sector number → content.
    pub data: BTreeMap<u64, Sector>,
    /// Mapped logical extents → lineage token. Two LUNs share an extent exactly when
    /// they map the same token.
    pub map: BTreeMap<u64, u64>,
    /// Lost ranges, `[start, end)` in bytes, sorted and apart: what a repair could not
    /// recover ([`Model::repaired`]). They read as [`Error::LostData`] until written or
    /// discarded; their sectors hold nothing in `data` and their extents nothing in
    /// `map` (the rebuilt mapping has no entries there), except what was written since.
    pub lost: Vec<(u64, u64)>,
}

/// A reference model of an [`Array`](crate::Array): the state docs/DESIGN.md §2 promises
/// after each operation, computed as plainly as possible.
///
/// Each LUN is a sparse map of sectors (only non-zero sectors use memory, so LUNs of
/// any size can be modelled), with its kind, parent, attachment and generations. The
/// operations ([`create_lun`](Self::create_lun), [`create_copy`](Self::create_copy),
/// [`attach`](Self::attach), [`detach`](Self::detach), [`delete`](Self::delete),
/// [`restore`](Self::restore), [`write`](Self::write), [`read`](Self::read),
/// [`discard`](Self::discard), [`write_zeroes`](Self::write_zeroes) and zero
/// detection ([`set_detect_zeros`](Self::set_detect_zeros)),
/// [`flush`](Self::flush), [`reopen`](Self::reopen), the
/// consistency groups [`create_copies`](Self::create_copies) and
/// [`attach_many`](Self::attach_many), [`set_online`](Self::set_online), and host
/// access control: [`add_host`](Self::add_host), [`remove_host`](Self::remove_host),
/// [`grant`](Self::grant), [`revoke`](Self::revoke),
/// [`set_security`](Self::set_security) and the `*_as` calls) take the same arguments
/// as the array's and return exactly the array's errors, changing nothing when they
/// fail. [`lun_info`](Self::lun_info) and
/// [`pool_info`](Self::pool_info) predict the array's accounting, exclusive and shared
/// bytes included: each mapped logical extent carries a lineage token, shared by copies
/// until one side writes into that extent, as the array's copy-on-write does. From the
/// same tokens [`map`](Self::map) predicts [`Array::map`](crate::Array::map) (which
/// extents hold data, and which of those another LUN shares) and
/// [`diff`](Self::diff) predicts [`Array::diff`](crate::Array::diff) (the extents two
/// LUNs map differently).
///
/// For crash tests the model also keeps the state of the last commit and every value
/// written to each sector since: [`recover`](Self::recover) checks an array reopened
/// after a power cut against them.
///
/// # Lost ranges, after a repair
/// [`repaired`](Self::repaired) takes the model to the state of an array that
/// [`Array::repair`](crate::Array::repair) rebuilt: LUNs whose records were lost are
/// gone, copies left without a parent stand alone, hosts not kept are gone with their
/// grants, and each LUN has the *lost ranges* the report lists. As in the array, a
/// read ([`read`](Self::read), [`read_as`](Self::read_as)) that touches a lost range
/// fails with [`Error::LostData`] naming the first lost piece it touches, clipped to
/// the read; a write, `write_zeroes` or discard clears what it covers (a change that
/// the next flush commits); a copy made or attached takes its parent's lost ranges
/// with its image, a restore gives the parent the copy's, and detach and delete drop
/// them. They are committed with the LUN table, so after a power cut they are the last
/// commit's. A lost range holds no mapping (it is a hole to [`map`](Self::map) and
/// [`diff`](Self::diff), as in the array) and its content is unknown until written.
/// [`lost_ranges`](Self::lost_ranges), [`lun_info`](Self::lun_info)`.lost_bytes` and
/// [`check_findings`](Self::check_findings) (a notice per LUN with lost ranges) say
/// what the array must report.
///
/// # Commits the array makes on its own
/// When nearly every extent of the pool is in use, [`Array::write`](crate::Array::write)
/// may commit before taking a fresh extent, so that extents released since the last
/// commit can be reused; [`pool_info().generation`](crate::PoolInfo::generation) then
/// advances during the write. Tell the model: if the write lay within one extent, the
/// commit happened before any of it, so call [`commit`](Self::commit) and then
/// [`write`](Self::write); otherwise call [`write`](Self::write) and then
/// [`note_early_commits`](Self::note_early_commits), after which the model checks a
/// crash with the looser per-sector rule and no longer predicts exclusive/shared bytes
/// (see [`lineage_known`](Self::lineage_known)). Writes split at extent boundaries keep
/// the model exact; `array.engine().data_free()` tells whether a write of `k` extents
/// can need an early commit (only when it is below `k`). Likewise
/// [`Array::discard`](crate::Array::discard) commits the writes made before it first
/// when too few extents are free to zero the extents it only partly covers: if the
/// generation advanced by two, call [`commit`](Self::commit) and then
/// [`discard`](Self::discard). [`write_with_commits`](Self::write_with_commits) and
/// [`discard_with_commits`](Self::discard_with_commits) do this given how far the
/// generation advanced.
///
/// # Example
/// ```
/// use lunsnap::testing::Model;
/// use lunsnap::{Array, FormatOptions, MemDevice, OpenOptions};
///
/// let opts = FormatOptions { extent_size: 4096, max_luns: 8, ..Default::default() };
/// let mut a = Array::format(MemDevice::new(512, 8192).unwrap(), &opts).unwrap();
/// let mut m = Model::new(&a.pool_info());
///
/// // The same operations on both, with the same results.
/// assert_eq!(a.create_lun(0, 64 << 10), m.create_lun(0, 64 << 10));
/// assert_eq!(a.write(0, 4096, &[7u8; 1024]), m.write(0, 4096, &[7u8; 1024]));
/// assert_eq!(a.create_copy(0, 1, true), m.create_copy(0, 1, true));
/// assert_eq!(a.write(0, 4096, &[8u8; 512]), m.write(0, 4096, &[8u8; 512]));
/// assert_eq!(a.restore(5), m.restore(5)); // Err(NoSuchLun(5)) from both
/// assert_eq!(a.detach(0), m.detach(0)); // Err(NotACopy(0)) from both
///
/// // Contents, LUN records, accounting (exclusive/shared too) and check().
/// m.verify(&mut a).unwrap();
/// assert_eq!(m.lun_info(1).unwrap().exclusive_bytes, 4096); // the old extent
///
/// // A crash: the unflushed write is gone, the committed copy is intact.
/// let dev = a.into_device(); // no commit: what a power cut leaves
/// let mut b = Array::open(dev, &OpenOptions::default()).unwrap();
/// let m = m.recover(&mut b, false).unwrap();
/// let mut buf = [0u8; 512];
/// b.read(0, 4096, &mut buf).unwrap();
/// assert_eq!(buf, [7u8; 512]);
/// m.verify(&mut b).unwrap();
/// ```
#[derive(Clone)]
pub struct Model {
    pub(crate) es: u64,
    /// Extents the pool holds for LUNs.
    pub(crate) cap: u64,
    pub(crate) max_luns: u32,
    /// Generation of the newest commit.
    pub(crate) gen: u64,
    /// Data written since the last commit.
    pub(crate) dirty: bool,
    pub(crate) next_token: u64,
    pub(crate) luns: BTreeMap<u32, MLun>,
    /// Registered hosts: id → name.
    pub(crate) hosts: BTreeMap<u64, String>,
    /// Host access control on.
    pub(crate) security: bool,
    /// How many LUNs map each lineage token.
    pub(crate) counts: BTreeMap<u64, u32>,
    /// The LUNs as of the last commit the model knows exactly, and its generation.
    pub(crate) committed: BTreeMap<u32, MLun>,
    pub(crate) committed_hosts: BTreeMap<u64, String>,
    pub(crate) committed_security: bool,
    pub(crate) committed_gen: u64,
    /// Values written to each (LUN, sector) since that commit, without repeats.
    pub(crate) since: BTreeMap<(u32, u64), Vec<Sector>>,
    /// No commit at an unknown point since `committed`.
    pub(crate) exact: bool,
    /// Lineage tokens reflect the array's sharing.
    pub(crate) lineage_known: bool,
    /// Whole extents written with zeros are unmapped (the array's default).
    pub(crate) detect_zeros: bool,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let luns: Vec<_> = self
            .luns
            .iter()
            .map(|(n, l)| {
                (
                    *n,
                    l.size,
                    l.kind,
                    l.parent,
                    l.attached,
                    l.data.len(),
                    l.map.len(),
                )
            })
            .collect();
        f.debug_struct("Model")
            .field("generation", &self.gen)
            .field("committed_generation", &self.committed_gen)
            .field("dirty", &self.dirty)
            .field("exact", &self.exact)
            .field("lineage_known", &self.lineage_known)
            .field("hosts", &self.hosts)
            .field("security", &self.security)
            .field(
                "luns (n, size, kind, parent, attached, sectors, extents)",
                &luns,
            )
            .finish()
    }
}

impl Model {
    /// The model of an empty array whose [`pool_info`](crate::Array::pool_info) is
    /// `pool` (take it right after [`Array::format`](crate::Array::format)).
    pub fn new(pool: &PoolInfo) -> Model {
        let es = u64::from(pool.extent_size.max(1));
        Model {
            es,
            cap: pool.capacity_bytes / es,
            max_luns: pool.max_luns,
            gen: pool.generation,
            dirty: false,
            next_token: 0,
            luns: BTreeMap::new(),
            hosts: BTreeMap::new(),
            security: false,
            counts: BTreeMap::new(),
            committed: BTreeMap::new(),
            committed_hosts: BTreeMap::new(),
            committed_security: false,
            committed_gen: pool.generation,
            since: BTreeMap::new(),
            exact: true,
            lineage_known: true,
            detect_zeros: true,
        }
    }

    // -----------------------------------------------------------------------------
    // Queries
    // -----------------------------------------------------------------------------

    /// Generation of the newest commit (the array's `pool_info().generation`).
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// Generation of the last commit whose state the model knows exactly: what a power
    /// cut now recovers to, unless early commits were noted since.
    pub fn committed_generation(&self) -> u64 {
        self.committed_gen
    }

    /// True while data written since the last commit is not yet durable.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// False once a crash was recovered after
    /// [`note_early_commits`](Self::note_early_commits): which extents LUNs share is
    /// then unknown, and exclusive/shared/allocated bytes are not predicted (they
    /// read as 0) nor checked.
    pub fn lineage_known(&self) -> bool {
        self.lineage_known
    }

    /// Data extent size in bytes.
    pub fn extent_size(&self) -> u64 {
        self.es
    }

    /// The LUN numbers in use, in order.
    pub fn lun_numbers(&self) -> Vec<u32> {
        self.luns.keys().copied().collect()
    }

    /// What [`Array::lun_info`](crate::Array::lun_info) must return.
    pub fn lun_info(&self, n: u32) -> Result<LunInfo> {
        let l = self.get(n)?;
        let (mut exclusive, mut shared) = (0, 0);
        if self.lineage_known {
            for t in l.map.values() {
                if self.counts.get(t).copied().unwrap_or(0) > 1 {
                    shared += 1;
                } else {
                    exclusive += 1;
                }
            }
        }
        Ok(LunInfo {
            // What it is,
            lun: n,
            kind: l.kind,
            parent: l.parent,
            // the space it takes,
            size: l.size,
            reserved_bytes: self.reservation(l) * self.es,
            exclusive_bytes: exclusive * self.es,
            shared_bytes: shared * self.es,
            // and its state.
            attached: l.attached,
            online: l.online,
            created_generation: l.created_gen,
            attached_generation: l.attached_gen,
            lost_bytes: l.lost.iter().map(|(s, e)| e - s).sum(),
        })
    }

    /// What [`Array::lost_ranges`](crate::Array::lost_ranges) must return: LUN `n`'s
    /// lost ranges as (offset, length) in bytes, in order. Empty unless the model was
    /// [`repaired`](Self::repaired); they follow the LUN's image (copies made or
    /// attached take their parent's, a restore gives the parent the copy's) and
    /// shrink as they are written or discarded.
    pub fn lost_ranges(&self, n: u32) -> Result<Vec<(u64, u64)>> {
        Ok(self.get(n)?.lost.iter().map(|&(s, e)| (s, e - s)).collect())
    }

    /// What [`Array::check`](crate::Array::check) must find: nothing but a
    /// [`LostData`](ArrayViolation::LostData) notice for each LUN with lost ranges, in
    /// number order.
    pub fn check_findings(&self) -> Vec<ArrayViolation> {
        self.luns
            .iter()
            .filter(|(_, l)| !l.lost.is_empty())
            .map(|(&lun, l)| ArrayViolation::LostData {
                lun,
                bytes: l.lost.iter().map(|(s, e)| e - s).sum(),
            })
            .collect()
    }

    /// What [`Array::luns`](crate::Array::luns) must return.
    pub fn luns(&self) -> Vec<LunInfo> {
        self.luns
            .keys()
            .filter_map(|&n| self.lun_info(n).ok())
            .collect()
    }

    /// What [`Array::pool_info`](crate::Array::pool_info) must return, except the
    /// metadata figures (bytes, copies, heals), which the model does not know (0
    /// here).
    pub fn pool_info(&self) -> PoolInfo {
        let reserved = self.reserved_extents();
        let allocated = if self.lineage_known {
            self.counts.len() as u64
        } else {
            0
        };
        PoolInfo {
            capacity_bytes: self.cap * self.es,
            allocated_bytes: allocated * self.es,
            reserved_bytes: reserved * self.es,
            unreserved_bytes: self.cap.saturating_sub(reserved) * self.es,
            free_bytes: self.cap.saturating_sub(allocated) * self.es,
            metadata_used_bytes: 0,
            metadata_provisioned_bytes: 0,
            metadata_copies: 0,
            healed_pages: 0,
            pending_heals: 0,
            rollback: None,
            extent_size: self.es as u32,
            luns: self.luns.len() as u32,
            max_luns: self.max_luns,
            generation: self.gen,
            reclaim_queue: 0,
        }
    }

    /// Reads like [`Array::read`](crate::Array::read): a read that touches a lost
    /// range fails with [`Error::LostData`] naming the first lost piece it touches,
    /// clipped to the read.
    pub fn read(&self, n: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.io_check(n, offset, buf.len() as u64)?;
        let l = self.get(n)?;
        lost_check(&l.lost, n, offset, buf.len() as u64)?;
        buf.fill(0);
        let first = offset / SECTOR;
        let end = first + (buf.len() / SECTOR_BYTES) as u64;
        for (&s, c) in l.data.range(first..end) {
            let o = ((s - first) * SECTOR) as usize;
            buf[o..o + SECTOR_BYTES].copy_from_slice(&c[..]);
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------
    // Management operations
    // -----------------------------------------------------------------------------

    /// As [`Array::create_lun`](crate::Array::create_lun).
    pub fn create_lun(&mut self, n: u32, size: u64) -> Result<()> {
        self.unused(n)?;
        let bad_size = |why| Error::InvalidLunSize { size, why };
        first_refusal([
            (size == 0, bad_size("a LUN must not be empty")),
            (
                size % SECTOR != 0,
                bad_size("the size must be a multiple of 512 bytes"),
            ),
            (
                self.extents(size) > self.cap,
                bad_size("larger than the pool's capacity"),
            ),
        ])?;
        self.reserve(self.extents(size))?;
        let g = self.gen + 1;
        self.luns.insert(
            n,
            MLun {
                size,
                kind: LunKind::Lun,
                parent: None,
                attached: true,
                online: true,
                grants: BTreeMap::new(),
                created_gen: g,
                attached_gen: g,
                data: BTreeMap::new(),
                map: BTreeMap::new(),
                lost: Vec::new(),
            },
        );
        self.commit();
        Ok(())
    }

    /// As [`Array::create_copy`](crate::Array::create_copy).
    pub fn create_copy(&mut self, parent: u32, n: u32, attached: bool) -> Result<()> {
        self.reserve(self.copy_needs(parent, n, attached)?)?;
        self.add_copy(parent, n, attached, self.gen + 1);
        self.commit();
        Ok(())
    }

    /// As [`Array::attach`](crate::Array::attach).
    pub fn attach(&mut self, n: u32) -> Result<()> {
        let c = self.get(n)?;
        let pn = self.image_parent(n, c)?;
        if !c.attached {
            self.reserve(self.extents(c.size))?;
        }
        let image = self.image_of(pn).ok_or(Error::ParentGone(n))?;
        self.take_image(n, image, self.gen + 1);
        self.commit();
        Ok(())
    }

    /// As [`Array::detach`](crate::Array::detach).
    pub fn detach(&mut self, n: u32) -> Result<()> {
        let c = self.get(n)?;
        if c.kind != LunKind::Copy {
            return Err(Error::NotACopy(n));
        }
        if !c.attached {
            return Ok(());
        }
        let old = match self.luns.get_mut(&n) {
            Some(c) => {
                c.attached = false;
                c.data.clear();
                c.lost.clear();
                core::mem::take(&mut c.map)
            }
            None => return Err(Error::NoSuchLun(n)),
        };
        self.count_map(&old, false);
        self.commit();
        Ok(())
    }

    /// As [`Array::delete`](crate::Array::delete).
    pub fn delete(&mut self, n: u32, orphan_copies: bool) -> Result<()> {
        self.get(n)?;
        let copies = self.copies_of(n);
        if !(copies.is_empty() || orphan_copies) {
            return Err(Error::HasCopies {
                lun: n,
                copies: copies.len() as u32,
            });
        }
        // Orphaned: an attached copy stands alone as a plain LUN with its data, a
        // detached one stays a detached copy, without a parent.
        for c in copies {
            if let Some(l) = self.luns.get_mut(&c) {
                l.parent = None;
                l.kind = if l.attached {
                    LunKind::Lun
                } else {
                    LunKind::Copy
                };
            }
        }
        if let Some(l) = self.luns.remove(&n) {
            self.count_map(&l.map, false);
        }
        self.commit();
        Ok(())
    }

    /// As [`Array::restore`](crate::Array::restore).
    pub fn restore(&mut self, n: u32) -> Result<()> {
        let c = self.get(n)?;
        if c.kind == LunKind::Copy && !c.attached {
            return Err(Error::Detached(n));
        }
        let pn = self.image_parent(n, c)?;
        let (data, map, lost) = (c.data.clone(), c.map.clone(), c.lost.clone());
        self.count_map(&map, true);
        let old = match self.luns.get_mut(&pn) {
            Some(p) => {
                p.data = data;
                p.lost = lost;
                core::mem::replace(&mut p.map, map)
            }
            None => return Err(Error::ParentGone(n)),
        };
        self.count_map(&old, false);
        self.commit();
        Ok(())
    }

    /// As [`Array::create_copies`](crate::Array::create_copies): copy `c` of parent
    /// `p` for every `(p, c)`, all at one point in time, all or nothing.
    pub fn create_copies(&mut self, pairs: &[(u32, u32)], attached: bool) -> Result<()> {
        if pairs.is_empty() {
            return Err(Error::InvalidArgument("an empty consistency group"));
        }
        let copies: Vec<u32> = pairs.iter().map(|&(_, c)| c).collect();
        each_once(&copies)?;
        // The group's shape is judged before any pair.
        if pairs.iter().any(|(p, _)| copies.contains(p)) {
            return Err(Error::InvalidArgument(
                "a copy in the group is also a parent in the group",
            ));
        }
        let need = pairs
            .iter()
            .map(|&(p, c)| self.copy_needs(p, c, attached))
            .sum::<Result<u64>>()?;
        self.reserve(need)?;
        let g = self.gen + 1;
        for &(p, c) in pairs {
            self.add_copy(p, c, attached, g);
        }
        self.commit();
        Ok(())
    }

    /// As [`Array::attach_many`](crate::Array::attach_many): every copy becomes its
    /// parent's image as it was before any of them changed, all or nothing.
    pub fn attach_many(&mut self, copies: &[u32]) -> Result<()> {
        if copies.is_empty() {
            return Err(Error::InvalidArgument("an empty consistency group"));
        }
        each_once(copies)?;
        let mut need = 0;
        let mut images = Vec::with_capacity(copies.len());
        for &c in copies {
            let cl = self.get(c)?;
            let pn = self.image_parent(c, cl)?;
            if !cl.attached {
                need += self.extents(cl.size);
            }
            images.push(self.image_of(pn).ok_or(Error::ParentGone(c))?);
        }
        self.reserve(need)?;
        let g = self.gen + 1;
        for (&c, image) in copies.iter().zip(images) {
            self.take_image(c, image, g);
        }
        self.commit();
        Ok(())
    }

    /// As [`Array::set_online`](crate::Array::set_online) (commits even when nothing
    /// changes).
    pub fn set_online(&mut self, n: u32, online: bool) -> Result<()> {
        self.get(n)?;
        if let Some(l) = self.luns.get_mut(&n) {
            l.online = online;
        }
        self.commit();
        Ok(())
    }

    // -----------------------------------------------------------------------------
    // Host access control
    // -----------------------------------------------------------------------------

    /// As [`Array::add_host`](crate::Array::add_host).
    pub fn add_host(&mut self, id: u64, name: &str) -> Result<()> {
        if self.hosts.contains_key(&id) {
            return Err(Error::HostExists(id));
        }
        if name.len() > MAX_HOST_NAME {
            return Err(Error::InvalidArgument("host name longer than 56 bytes"));
        }
        if self.hosts.len() >= MAX_HOSTS as usize {
            return Err(Error::TooManyHosts { max: MAX_HOSTS });
        }
        self.hosts.insert(id, String::from(name));
        self.commit();
        Ok(())
    }

    /// As [`Array::remove_host`](crate::Array::remove_host): its grants go too.
    pub fn remove_host(&mut self, id: u64) -> Result<()> {
        if self.hosts.remove(&id).is_none() {
            return Err(Error::NoSuchHost(id));
        }
        for l in self.luns.values_mut() {
            l.grants.remove(&id);
        }
        self.commit();
        Ok(())
    }

    /// What [`Array::hosts`](crate::Array::hosts) must return.
    pub fn hosts(&self) -> Vec<HostInfo> {
        self.hosts
            .iter()
            .map(|(&id, name)| HostInfo {
                id,
                name: name.clone(),
            })
            .collect()
    }

    /// As [`Array::grant`](crate::Array::grant) (replaces an earlier grant).
    pub fn grant(&mut self, lun: u32, host: u64, access: Access) -> Result<()> {
        self.get(lun)?;
        if !self.hosts.contains_key(&host) {
            return Err(Error::NoSuchHost(host));
        }
        if let Some(l) = self.luns.get_mut(&lun) {
            l.grants.insert(host, access);
        }
        self.commit();
        Ok(())
    }

    /// As [`Array::revoke`](crate::Array::revoke).
    pub fn revoke(&mut self, lun: u32, host: u64) -> Result<()> {
        self.get(lun)?;
        if !self.hosts.contains_key(&host) {
            return Err(Error::NoSuchHost(host));
        }
        match self.luns.get_mut(&lun).map(|l| l.grants.remove(&host)) {
            Some(Some(_)) => {}
            _ => return Err(Error::NotGranted { lun, host }),
        }
        self.commit();
        Ok(())
    }

    /// What [`Array::grants`](crate::Array::grants) must return.
    pub fn grants(&self, lun: u32) -> Result<Vec<(u64, Access)>> {
        Ok(self
            .get(lun)?
            .grants
            .iter()
            .map(|(&h, &a)| (h, a))
            .collect())
    }

    /// As [`Array::set_security`](crate::Array::set_security) (commits even when
    /// nothing changes).
    pub fn set_security(&mut self, enabled: bool) -> Result<()> {
        self.security = enabled;
        self.commit();
        Ok(())
    }

    /// What [`Array::security_enabled`](crate::Array::security_enabled) must return.
    pub fn security_enabled(&self) -> bool {
        self.security
    }

    /// The error an access by `host` to LUN `lun` (for writing if `write`) must
    /// give, if any: with security on, a LUN the host has no grant on is missing,
    /// and a read grant refuses writes.
    pub fn authorize(&self, host: u64, lun: u32, write: bool) -> Result<()> {
        let l = self.get(lun)?;
        if !self.security {
            return Ok(());
        }
        match l.grants.get(&host) {
            None => Err(Error::NoSuchLun(lun)),
            Some(Access::Read) if write => Err(Error::ReadOnlyAccess { lun, host }),
            Some(_) => Ok(()),
        }
    }

    /// As [`HostView::read`](crate::HostView::read).
    pub fn read_as(&self, host: u64, n: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.authorize(host, n, false)?;
        self.read(n, offset, buf)
    }

    /// As [`HostView::write`](crate::HostView::write).
    pub fn write_as(&mut self, host: u64, n: u32, offset: u64, data: &[u8]) -> Result<()> {
        self.authorize(host, n, true)?;
        self.write(n, offset, data)
    }

    /// As [`HostView::discard`](crate::HostView::discard).
    pub fn discard_as(&mut self, host: u64, n: u32, offset: u64, len: u64) -> Result<()> {
        self.authorize(host, n, true)?;
        self.discard(n, offset, len)
    }

    /// As [`HostView::write_zeroes`](crate::HostView::write_zeroes).
    pub fn write_zeroes_as(
        &mut self,
        host: u64,
        n: u32,
        offset: u64,
        len: u64,
        punch: bool,
    ) -> Result<()> {
        self.authorize(host, n, true)?;
        self.write_zeroes(n, offset, len, punch)
    }

    /// What [`HostView::visible_luns`](crate::HostView::visible_luns) must return.
    pub fn visible_luns(&self, host: u64) -> Vec<u32> {
        self.luns
            .keys()
            .copied()
            .filter(|&n| self.authorize(host, n, false).is_ok())
            .collect()
    }

    /// What [`HostView::lun_info`](crate::HostView::lun_info) must return.
    pub fn lun_info_as(&self, host: u64, n: u32) -> Result<LunInfo> {
        self.authorize(host, n, false)?;
        self.lun_info(n)
    }

    // -----------------------------------------------------------------------------
    // I/O
    // -----------------------------------------------------------------------------

    /// As [`Array::set_detect_zeros`](crate::Array::set_detect_zeros).
    pub fn set_detect_zeros(&mut self, on: bool) {
        self.detect_zeros = on;
    }

    /// As [`Array::detect_zeros`](crate::Array::detect_zeros): on in a new model and
    /// after [`reopen`](Self::reopen) or [`recover`](Self::recover), as in an array
    /// just opened.
    pub fn detect_zeros(&self) -> bool {
        self.detect_zeros
    }

    /// As [`Array::write`](crate::Array::write) (`data.len()` a multiple of 512): with
    /// zero detection on, an extent the write covers whole with zeros is unmapped, and
    /// zeros written into part of a hole are not stored (it stays a hole).
    pub fn write(&mut self, n: u32, offset: u64, data: &[u8]) -> Result<()> {
        self.write_detecting(n, offset, data, self.detect_zeros)
    }

    /// As [`Array::write_zeroes`](crate::Array::write_zeroes): with `punch`, like a
    /// discard that does not commit; without, a write of zeros that stays allocated.
    pub fn write_zeroes(&mut self, n: u32, offset: u64, len: u64, punch: bool) -> Result<()> {
        self.io_check(n, offset, len)?;
        if punch {
            self.dirty |= self.unmap_range(n, offset, len)?;
            return Ok(());
        }
        let zeros = alloc::vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.write_detecting(n, offset, &zeros, false)
    }

    fn write_detecting(&mut self, n: u32, offset: u64, data: &[u8], detect: bool) -> Result<()> {
        self.io_check(n, offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let first = offset / SECTOR;
        if let Some(l) = self.luns.get_mut(&n) {
            for (s, c) in (first..).zip(data.chunks_exact(SECTOR_BYTES)) {
                set_sector(&mut l.data, s, c);
                let vals = self.since.entry((n, s)).or_default();
                if !vals.iter().any(|v| v[..] == *c) {
                    vals.push(sector_of(c));
                }
            }
        }
        let end = offset + data.len() as u64;
        let last = (end - 1) / self.es;
        for le in offset / self.es..=last {
            let (lo, hi) = (le * self.es, (le + 1) * self.es);
            let whole = offset <= lo && hi <= end;
            // The part of the write in this extent is all zeros.
            let zero = || {
                let (a, b) = (lo.max(offset) - offset, hi.min(end) - offset);
                data[a as usize..b as usize].iter().all(|&x| x == 0)
            };
            let hole = self.luns.get(&n).is_some_and(|l| !l.map.contains_key(&le));
            // Only a change makes the array dirty: zeros over a hole change nothing.
            if detect && (whole || hole) && zero() {
                self.dirty |= self.unmap_extent(n, le);
            } else {
                self.touch(n, le);
                self.dirty = true;
            }
        }
        // Written bytes are no longer lost: a change to commit like any other.
        self.dirty |= self.clear_lost(n, offset, data.len() as u64);
        Ok(())
    }

    /// Bytes `offset .. offset + len` of LUN `n` were written or discarded: no longer
    /// lost. True if some were.
    fn clear_lost(&mut self, n: u32, offset: u64, len: u64) -> bool {
        self.luns
            .get_mut(&n)
            .is_some_and(|l| lost_clear(&mut l.lost, offset, len))
    }

    /// Logical extent `le` of LUN `n` becomes a hole; true if it was mapped.
    fn unmap_extent(&mut self, n: u32, le: u64) -> bool {
        let t = self.luns.get_mut(&n).and_then(|l| l.map.remove(&le));
        if let Some(t) = t {
            self.uncount(t);
        }
        t.is_some()
    }

    /// As [`Array::discard`](crate::Array::discard): the range reads as zeros, whole
    /// extents are unmapped (a LUN's partial last extent counts as whole when the
    /// range reaches the LUN's end), and the array commits.
    pub fn discard(&mut self, n: u32, offset: u64, len: u64) -> Result<()> {
        self.io_check(n, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.unmap_range(n, offset, len)?;
        self.commit();
        Ok(())
    }

    /// The range reads as zeros; whole extents are unmapped (a LUN's partial last
    /// extent counts as whole when the range reaches the LUN's end), extents covered
    /// in part are rewritten if mapped. True if a mapped extent changed.
    fn unmap_range(&mut self, n: u32, offset: u64, len: u64) -> Result<bool> {
        let size = self.get(n)?.size;
        let end = offset + len;
        let mut touched = Vec::new();
        let mut unmapped = Vec::new();
        if let Some(l) = self.luns.get_mut(&n) {
            let keys: Vec<u64> = l
                .data
                .range(offset / SECTOR..end / SECTOR)
                .map(|(&s, _)| s)
                .collect();
            for s in keys {
                l.data.remove(&s);
                let vals = self.since.entry((n, s)).or_default();
                if !vals.iter().any(|v| v.iter().all(|&b| b == 0)) {
                    vals.push(sector_of(&[0u8; SECTOR_BYTES]));
                }
            }
            let mut pos = offset;
            while pos < end {
                let le = pos / self.es;
                let within = pos % self.es;
                let chunk = (self.es - within).min(end - pos);
                let whole = within == 0 && (chunk == self.es || pos + chunk == size);
                if l.map.contains_key(&le) {
                    if whole {
                        unmapped.extend(l.map.remove(&le));
                    } else {
                        touched.push(le);
                    }
                }
                pos += chunk;
            }
        }
        let cleared = self.clear_lost(n, offset, len);
        let changed = !unmapped.is_empty() || !touched.is_empty() || cleared;
        for t in unmapped {
            self.uncount(t);
        }
        for le in touched {
            self.touch(n, le);
        }
        Ok(changed)
    }

    /// As [`Array::flush`](crate::Array::flush): commits if anything was written.
    pub fn flush(&mut self) -> Result<()> {
        if self.dirty {
            self.commit();
        }
        Ok(())
    }

    /// As [`Array::close`](crate::Array::close) followed by
    /// [`Array::open`](crate::Array::open): commits if anything was written.
    pub fn reopen(&mut self) {
        if self.dirty {
            self.commit();
        }
        // A setting of the handle, not of the array: an opened array detects zeros.
        self.detect_zeros = true;
    }

    /// Records a commit made now: every write so far is durable. Call it for a commit
    /// the array made on its own during a write that lies within one extent, before
    /// applying that write (see the type's documentation).
    pub fn commit(&mut self) {
        self.gen += 1;
        self.dirty = false;
        self.committed = self.luns.clone();
        self.committed_hosts = self.hosts.clone();
        self.committed_security = self.security;
        self.committed_gen = self.gen;
        self.since.clear();
        self.exact = true;
    }

    /// Records `count` commits the array made on its own at unknown points of the last
    /// write (one spanning several extents). A crash is then checked per sector: its
    /// committed content or any value written to it since.
    pub fn note_early_commits(&mut self, count: u64) {
        if count > 0 {
            self.gen += count;
            self.exact = false;
        }
    }

    /// As [`write`](Self::write), for a write during which the array's generation
    /// advanced by `commits`: commits it made on its own (see the type's
    /// documentation). Within one extent they came before any of the write, so the
    /// model commits, then writes, and stays exact; across extents they came at unknown
    /// points, and the model notes them with
    /// [`note_early_commits`](Self::note_early_commits).
    pub fn write_with_commits(
        &mut self,
        n: u32,
        offset: u64,
        data: &[u8],
        commits: u64,
    ) -> Result<()> {
        self.io_check(n, offset, data.len() as u64)?;
        let end = offset + data.len() as u64;
        if data.is_empty() || offset / self.es == (end - 1) / self.es {
            for _ in 0..commits {
                self.commit();
            }
            self.write(n, offset, data)
        } else {
            self.write(n, offset, data)?;
            self.note_early_commits(commits);
            Ok(())
        }
    }

    /// As [`discard`](Self::discard), for a discard during which the array's
    /// generation advanced by `commits`: by two when it first committed the writes
    /// made before it (too few extents were free to zero those it covers in part), by
    /// one otherwise.
    pub fn discard_with_commits(
        &mut self,
        n: u32,
        offset: u64,
        len: u64,
        commits: u64,
    ) -> Result<()> {
        self.io_check(n, offset, len)?;
        if commits > 1 {
            self.commit();
        }
        self.discard(n, offset, len)
    }

    // -----------------------------------------------------------------------------
    // Helpers
    // -----------------------------------------------------------------------------

    pub(crate) fn extents(&self, size: u64) -> u64 {
        size.div_ceil(self.es)
    }

    /// Extents LUN `l` keeps reserved: ⌈size / extent⌉, none while it is a detached
    /// copy (docs/DESIGN.md §2 Space).
    fn reservation(&self, l: &MLun) -> u64 {
        if l.attached {
            self.extents(l.size)
        } else {
            0
        }
    }

    /// Extents reserved by all the LUNs.
    fn reserved_extents(&self) -> u64 {
        self.luns.values().map(|l| self.reservation(l)).sum()
    }

    /// Whether `extra` more extents may be reserved: the reservations never add up to
    /// more than the capacity, so beyond what is left the answer is `NoSpace` (what
    /// was asked for and what is left, in bytes).
    fn reserve(&self, extra: u64) -> Result<()> {
        let left = self.cap.saturating_sub(self.reserved_extents());
        let (needed, available) = (extra.saturating_mul(self.es), left * self.es);
        if needed <= available {
            Ok(())
        } else {
            Err(Error::NoSpace { needed, available })
        }
    }

    /// LUN numbers run from 0 to `max_luns - 1`.
    fn in_range(&self, n: u32) -> Result<()> {
        (n < self.max_luns)
            .then_some(())
            .ok_or(Error::LunOutOfRange {
                lun: n,
                max_luns: self.max_luns,
            })
    }

    /// A number a new LUN or copy may take: in range and not in use.
    fn unused(&self, n: u32) -> Result<()> {
        self.in_range(n)?;
        if self.luns.contains_key(&n) {
            Err(Error::LunExists(n))
        } else {
            Ok(())
        }
    }

    /// "The LUN must exist" (docs/DESIGN.md §2): out of range, or in range and missing.
    pub(crate) fn get(&self, n: u32) -> Result<&MLun> {
        self.in_range(n)?;
        self.luns.get(&n).ok_or(Error::NoSuchLun(n))
    }

    /// What creating copy `c` of `p` is refused with, before its reservation (docs/DESIGN.md
    /// §2 `create_copy`; in a consistency group whose copies are `group`, the parent
    /// must not be one of them); else the extents it reserves.
    fn copy_needs(&self, p: u32, c: u32, attached: bool) -> Result<u64> {
        self.in_range(c)?;
        let parent = self.get(p)?;
        self.unused(c)?;
        first_refusal([(attached && !parent.attached, Error::ParentDetached(c))])?;
        Ok(if attached {
            self.extents(parent.size)
        } else {
            0
        })
    }

    /// The LUNs that name `n` as their parent.
    fn copies_of(&self, n: u32) -> Vec<u32> {
        self.luns
            .iter()
            .filter(|(_, l)| l.parent == Some(n))
            .map(|(&c, _)| c)
            .collect()
    }

    /// The parent whose image copy `n` takes (attach, restore).
    fn image_parent(&self, n: u32, c: &MLun) -> Result<u32> {
        if c.kind != LunKind::Copy {
            return Err(Error::NotACopy(n));
        }
        let pn = c.parent.ok_or(Error::ParentGone(n))?;
        let p = self.luns.get(&pn).ok_or(Error::ParentGone(n))?;
        if !p.attached {
            return Err(Error::ParentDetached(n));
        }
        Ok(pn)
    }

    /// The error [`Array::write`](crate::Array::write) or
    /// [`Array::read`](crate::Array::read) of `len` bytes at `offset` of LUN `n` must
    /// return, if any (device errors and a poisoned handle aside).
    pub fn io_check(&self, n: u32, offset: u64, len: u64) -> Result<()> {
        self.range_check(n, offset, len, true)
    }

    /// The refusals of [`io_check`](Self::io_check), without `Offline` unless `online`:
    /// [`Array::diff`](crate::Array::diff) compares offline LUNs too.
    pub(crate) fn range_check(&self, n: u32, offset: u64, len: u64, online: bool) -> Result<()> {
        let l = self.get(n)?;
        let whole_sectors = offset % SECTOR == 0 && len % SECTOR == 0;
        let inside = offset.checked_add(len).is_some_and(|end| end <= l.size);
        first_refusal([
            (!l.attached, Error::Detached(n)),
            (online && !l.online, Error::Offline(n)),
            (!whole_sectors, Error::Misaligned { offset, len }),
            (
                !inside,
                Error::OutOfRange {
                    offset,
                    len,
                    size: l.size,
                },
            ),
        ])
    }

    /// Adds (or removes) one reference to each token of `map`.
    fn count_map(&mut self, map: &BTreeMap<u64, u64>, add: bool) {
        for &t in map.values() {
            if add {
                *self.counts.entry(t).or_insert(0) += 1;
            } else {
                self.uncount(t);
            }
        }
    }

    fn uncount(&mut self, t: u64) {
        if let Some(c) = self.counts.get_mut(&t) {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&t);
            }
        }
    }

    /// Logical extent `le` of LUN `n` is written: it keeps its lineage only if it is
    /// mapped and no other LUN maps it; else it takes a fresh one (copy-on-write).
    fn touch(&mut self, n: u32, le: u64) {
        let Some(l) = self.luns.get(&n) else {
            return;
        };
        let old = l.map.get(&le).copied();
        if old.is_some_and(|t| self.counts.get(&t).copied() == Some(1)) {
            return;
        }
        self.next_token += 1;
        let t = self.next_token;
        if let Some(l) = self.luns.get_mut(&n) {
            l.map.insert(le, t);
        }
        self.counts.insert(t, 1);
        if let Some(o) = old {
            self.uncount(o);
        }
    }

    /// LUN `n`'s sectors, lineage map and lost ranges: what a copy of it takes.
    fn image_of(&self, n: u32) -> Option<Image> {
        self.luns
            .get(&n)
            .map(|l| (l.data.clone(), l.map.clone(), l.lost.clone()))
    }

    /// Adds copy `c` of LUN `p`, created at generation `g` (holding `p`'s image if
    /// `attached`).
    fn add_copy(&mut self, p: u32, c: u32, attached: bool, g: u64) {
        let Some(pl) = self.luns.get(&p) else {
            return;
        };
        let size = pl.size;
        let (data, map, lost) = match attached {
            true => (pl.data.clone(), pl.map.clone(), pl.lost.clone()),
            false => (BTreeMap::new(), BTreeMap::new(), Vec::new()),
        };
        self.count_map(&map, true);
        self.luns.insert(
            c,
            MLun {
                size,
                kind: LunKind::Copy,
                parent: Some(p),
                attached,
                online: true,
                grants: BTreeMap::new(),
                created_gen: g,
                attached_gen: if attached { g } else { 0 },
                data,
                map,
                lost,
            },
        );
    }

    /// Copy `c` takes `image` at generation `g` (attach, refresh).
    fn take_image(&mut self, c: u32, (data, map, lost): Image, g: u64) {
        self.count_map(&map, true);
        let old = match self.luns.get_mut(&c) {
            Some(l) => {
                l.data = data;
                l.lost = lost;
                l.attached = true;
                l.attached_gen = g;
                core::mem::replace(&mut l.map, map)
            }
            None => return,
        };
        self.count_map(&old, false);
    }

    /// Recomputes the token counts from the LUNs' maps.
    pub(crate) fn recount(&mut self) {
        self.counts.clear();
        for l in self.luns.values() {
            for &t in l.map.values() {
                *self.counts.entry(t).or_insert(0) += 1;
            }
        }
    }
}

/// The error of the first rule that refuses (its condition holds), in the order given:
/// the order in which docs/DESIGN.md §2 lists an operation's refusals.
fn first_refusal<const N: usize>(rules: [(bool, Error); N]) -> Result<()> {
    match rules.into_iter().find(|(refused, _)| *refused) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// A consistency group names each LUN once.
fn each_once(ns: &[u32]) -> Result<()> {
    let mut seen = BTreeSet::new();
    if ns.iter().all(|&n| seen.insert(n)) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "a LUN number appears twice in the group",
        ))
    }
}

/// Stores sector `s` (all zeros: removed).
pub(crate) fn set_sector(data: &mut BTreeMap<u64, Sector>, s: u64, c: &[u8]) {
    if c.iter().all(|&b| b == 0) {
        data.remove(&s);
    } else {
        data.insert(s, sector_of(c));
    }
}

/// The refusal of a read of `len` bytes at `offset` of LUN `n` whose lost ranges are
/// `lost`, as the array gives it: the first lost range the read touches, clipped to
/// the read. A read of 0 bytes touches nothing.
pub(crate) fn lost_check(lost: &[(u64, u64)], n: u32, offset: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let end = offset.saturating_add(len);
    match lost.iter().find(|&&(s, e)| s < end && offset < e) {
        Some(&(s, e)) => {
            let from = s.max(offset);
            Err(Error::LostData {
                lun: n,
                offset: from,
                len: e.min(end) - from,
            })
        }
        None => Ok(()),
    }
}

/// Removes `[offset, offset + len)` from the sorted, apart ranges `lost`; true if it
/// covered any of them. Clearing 0 bytes changes nothing (it does not split a range).
pub(crate) fn lost_clear(lost: &mut Vec<(u64, u64)>, offset: u64, len: u64) -> bool {
    let end = offset.saturating_add(len);
    if len == 0 || !lost.iter().any(|&(s, e)| s < end && offset < e) {
        return false;
    }
    let mut out = Vec::with_capacity(lost.len() + 1);
    for &(s, e) in lost.iter() {
        if e <= offset || end <= s {
            out.push((s, e));
            continue;
        }
        if s < offset {
            out.push((s, offset));
        }
        if end < e {
            out.push((end, e));
        }
    }
    *lost = out;
    true
}

/// Adds `[from, to)` to the sorted, apart ranges `lost`, merging what overlaps or
/// touches it.
pub(crate) fn lost_add(lost: &mut Vec<(u64, u64)>, from: u64, to: u64) {
    if from >= to {
        return;
    }
    let (mut a, mut b) = (from, to);
    let mut out = Vec::with_capacity(lost.len() + 1);
    for &(s, e) in lost.iter() {
        if e < a || b < s {
            out.push((s, e));
        } else {
            a = a.min(s);
            b = b.max(e);
        }
    }
    let at = out.partition_point(|&(s, _)| s < a);
    out.insert(at, (a, b));
    *lost = out;
}
