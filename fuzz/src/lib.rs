//! The fuzz targets of lunsnap as plain functions, so that the same code runs under
//! libFuzzer (`fuzz/fuzz_targets/*.rs`, nightly or `RUSTC_BOOTSTRAP=1`) and in the
//! replay test of the core crate (`tests/fuzz_replay.rs`, stable), which includes
//! this file with `#[path]`. Hence no crate-level attributes here.
//!
//! * [`open_check`]: an arbitrary device image (raw, or patches to a populated
//!   array) through `Array::open`, `check()`, the info calls, reads and a few
//!   changes. Never a panic, a hang or unbounded allocation (docs/DESIGN.md §2, "Bad
//!   input"); and when `check()` finds nothing wrong, the array must behave.
//! * [`ops_powercut`]: an operation sequence on a `PowerCutDevice<MemDevice>` with a
//!   power-cut countdown and outcome, and damage to one copy of pages, checked
//!   against a model: after the cut the array opens, `check()` is empty and the
//!   state obeys docs/DESIGN.md §2 Durability.
//!
//! The input encodings are described at each function.

use std::sync::OnceLock;

use lunsnap::engine::{Geometry, ScrubReport, SUPERBLOCK_PAGES};
use lunsnap::testing::layout::{self, PAGE_SIZE};
use lunsnap::testing::{mix, CutOutcome, Model, PowerCutDevice};
use lunsnap::{
    Access, Array, ArrayViolation, BlockDevice, Error, FormatOptions, LunKind, MemDevice,
    OpenOptions, RepairOptions, SECTOR,
};

/// Reads the input from the front; past its end every read gives zeros.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

const PAGE: usize = PAGE_SIZE;
const SECTOR_BYTES: usize = SECTOR as usize;

/// Errors that reject an argument or a state: what a correct array may answer to
/// any request on a consistent image.
fn benign(e: &Error) -> bool {
    matches!(
        e,
        Error::LunOutOfRange { .. }
            | Error::NoSuchLun(_)
            | Error::LunExists(_)
            | Error::InvalidLunSize { .. }
            | Error::NoSpace { .. }
            | Error::NotACopy(_)
            | Error::Detached(_)
            | Error::ParentGone(_)
            | Error::ParentDetached(_)
            | Error::HasCopies { .. }
            | Error::OutOfRange { .. }
            | Error::Offline(_)
            | Error::InvalidArgument(_)
            | Error::Misaligned { .. }
            | Error::NoSuchHost(_)
            | Error::HostExists(_)
            | Error::TooManyHosts { .. }
            | Error::NotGranted { .. }
            | Error::ReadOnlyAccess { .. }
    )
}

// ---------------------------------------------------------------------------------
// open_check
// ---------------------------------------------------------------------------------

/// Page `page` (4 KiB, whatever the device's block size) of `dev`.
fn read_page(dev: &mut MemDevice, page: u64) -> Option<Vec<u8>> {
    let per = (PAGE / dev.block_size() as usize) as u64;
    let mut buf = vec![0u8; PAGE];
    dev.read(page * per, &mut buf).ok()?;
    Some(buf)
}

fn write_page(dev: &mut MemDevice, page: u64, buf: &[u8]) {
    let per = (PAGE / dev.block_size() as usize) as u64;
    // Out of range pages are simply not written.
    let _ = dev.write(page * per, buf);
}

fn has_magic(b: &[u8]) -> bool {
    b.len() >= 4 && b[..4] == layout::PAGE_MAGIC.to_le_bytes()
}

/// A populated array image to patch: its device, its layout, and the superblock
/// slots and metadata pages in use (their first copies; not those of older commits).
struct Base {
    dev: MemDevice,
    geo: Geometry,
    meta_pages: Vec<u64>,
}

impl Base {
    /// The copies of page `page`: itself, and where its second copy lives, if it has
    /// one (superblock slots always; metadata pages with two metadata copies).
    fn copies(&self, page: u64) -> (u64, Option<u64>) {
        let geo = &self.geo;
        let meta = geo.meta_start..geo.meta_start + geo.meta_pages;
        let second = if page < SUPERBLOCK_PAGES {
            Some(geo.superblock_copy(page))
        } else if meta.contains(&page) {
            geo.mirror_offset().map(|off| page + off)
        } else {
            None
        };
        (page, second)
    }
}

/// Base 0: 512-byte blocks, 16 KiB extents, 16 LUNs at most, on 2 MiB (one metadata
/// copy) or 3 MiB (two). Base 1: 16 MiB of 4 KiB blocks, 4 KiB extents, 64 LUNs at
/// most, with mapping trees and space maps of more than one level. Each with one or
/// two metadata copies; built on first use.
fn base(kind: u8, copies: u32) -> &'static Base {
    static BASES: [OnceLock<Base>; 4] = [const { OnceLock::new() }; 4];
    let i = usize::from(kind & 1) * 2 + usize::from(copies == 2);
    BASES[i].get_or_init(|| build_base(kind & 1, copies))
}

fn build_base(kind: u8, copies: u32) -> Base {
    let (bs, bytes, extent_size, max_luns) = match (kind, copies) {
        (0, 1) => (512u32, 2u64 << 20, 16 << 10, 16),
        (0, _) => (512, 3 << 20, 16 << 10, 16),
        _ => (4096, 16 << 20, 4096, 64),
    };
    let dev = MemDevice::new(bs, bytes / u64::from(bs)).expect("base device");
    let opts = FormatOptions {
        extent_size,
        max_luns,
        cache_bytes: 1 << 20,
        array_id: *b"lunsnap-fuzzbase",
        metadata_copies: copies,
    };
    let mut a = Array::format(dev, &opts).expect("format the base image");
    populate(&mut a).expect("populate the base image");
    assert!(a.check().expect("check the base image").is_empty());
    assert!(a.reclaim_pending(), "the base image has a free queue");
    let dev = a.close().expect("close the base image");
    // The superblocks and the metadata pages in use (not those of older commits).
    let mut a = Array::open(dev.clone(), &OpenOptions::default()).expect("open the base image");
    let geo = a.engine().geometry();
    assert_eq!(geo.metadata_copies, copies);
    let meta_pages = (0..geo.meta_start + geo.meta_pages)
        .filter(|&p| p < SUPERBLOCK_PAGES || a.engine().meta_refcount(p).is_ok_and(|c| c > 0))
        .collect();
    Base {
        dev,
        geo,
        meta_pages,
    }
}

/// Every kind of LUN record, shared and diverged mappings, hosts and grants.
fn populate(a: &mut Array<MemDevice>) -> Result<(), Error> {
    let es = u64::from(a.extent_size());
    let cap = a.pool_info().capacity_bytes;
    let big = cap / 4 / es * es;
    let extents = big / es;
    a.create_lun(1, big)?;
    // One sector in (almost) every group of 16 extents: one mapping entry each.
    let groups = extents.div_ceil(16);
    for g in 0..groups {
        let e = (16 * g + g % 16).min(extents - 1);
        a.write(1, e * es + (g % 8) * SECTOR, &sectors(1, g as u32 + 1, 1))?;
    }
    a.create_copy(1, 2, true)?;
    for g in (0..groups).step_by(2) {
        a.write(1, 16 * g * es, &sectors(2, 1, 2))?;
    }
    a.write(2, 0, &sectors(3, 0, 4))?;
    a.create_copy(1, 3, false)?;
    a.create_lun(4, 20 * SECTOR)?;
    a.write(4, 0, &sectors(4, 0, 20))?;
    a.create_copy(2, 5, true)?;
    a.write(5, es, &sectors(5, 7, 3))?;
    a.restore(5)?;
    a.discard(1, 0, es)?;
    a.create_lun(7, 2 * es + 4 * SECTOR)?;
    a.write(7, 0, &sectors(7, 0, 8))?;
    a.create_copy(7, 8, false)?;
    a.create_copy(7, 9, true)?;
    a.create_lun(6, es)?;
    a.delete(6, false)?;
    a.delete(7, true)?;
    a.add_host(0xAA, "backup")?;
    a.add_host(0xBB, "db")?;
    a.grant(2, 0xAA, Access::Read)?;
    a.grant(1, 0xBB, Access::ReadWrite)?;
    a.grant(4, 0xAA, Access::ReadWrite)?;
    a.set_online(9, false)?;
    a.set_security(true)?;
    a.write(4, 0, &sectors(4, 9, 1))?;
    a.flush()?;
    // A LUN with a copy, diverged in a few places and deleted after the last flush
    // (the copy orphaned): its mapping waits in the free queue (its root and the
    // diverged nodes its own, the rest shared with the copy), for patches to damage
    // and the operations to reclaim.
    let half = a.pool_info().unreserved_bytes / 2 / es * es;
    a.create_lun(11, half)?;
    for e in 0..half / es {
        a.write(11, e * es, &sectors(11, e as u32, 1))?;
    }
    a.create_copy(11, 12, true)?;
    for e in (0..half / es).step_by(3) {
        a.write(11, e * es + SECTOR, &sectors(12, e as u32, 1))?;
    }
    a.delete(11, true)
}

/// `n` sectors of the recognisable pattern of write `id`, from sector `first`.
fn sectors(id: u32, first: u32, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n * SECTOR_BYTES];
    for (i, s) in v.chunks_exact_mut(SECTOR_BYTES).enumerate() {
        fill_sector(s, id, u64::from(first) + i as u64);
    }
    v
}

/// Fuzz target `open_check`: an arbitrary image through `Array::open` and, if it
/// opens, `check()`, the info calls, reads, writes and management operations, a
/// scrub, a close and a reopen. Nothing may panic, hang or allocate without bound.
/// When `check()` reports nothing (or only the notice of a past rollback), the array
/// must also behave: reads and writes of accessible LUNs succeed, a write reads back
/// and changes no other LUN, no operation reports corruption, the scrub finds a good
/// copy of every page, `check()` stays clean and the array reopens. When open
/// refuses with `CommitLost`, it is retried with `allow_rollback`, which must then
/// report that rollback. Damage confined to one copy of each page (see
/// [`patched_image`]) must not show at all: the image opens and checks clean.
///
/// Input: a mode byte, then
/// * mode bit 0 clear — a raw image: the bytes are the start of the device (the
///   rest reads as zeros). Bit 1: reseal (recompute the checksum of) every 4 KiB
///   page that starts with the metadata magic, so that the fuzzer can reach beyond
///   the checksums; bit 2: small cache; bit 3: 4 KiB device blocks (else 512 B);
///   bit 4: a 4 MiB device (else 1 MiB); bit 5: the last 8 KiB of the bytes (all of
///   them if fewer) are the device's last two pages instead, where the second
///   copies of the superblock slots live.
/// * mode bit 0 set — patches to a populated base image (bit 1 picks one of two,
///   see [`base`]; bit 3: the base with one metadata copy, else two; bit 2: small
///   cache; bits 4-5: which copy of the named page each patch goes to: 0 the
///   first, 1 the second, 2 both (the same patch to each), 3 the first for even
///   patches and the second for odd ones; a page without a second copy takes the
///   patch itself), each `[sel][at: u16][len][len bytes]`:
///   the bytes are written at `at` (see [`patch_offset`]: a byte offset, or a
///   field of a B-tree node) of a page, clipped to the page (a `len` from 0xE0
///   takes no bytes and writes value `len & 15` of [`INTERESTING`]: 8 bytes, or
///   their low 4 if `len & 16`). The page is, if
///   `sel & 0x40`, page `sel & 0x3f` of the device, else the `(sel & 0x3f)`-th of
///   the superblocks and the metadata pages in use (modulo their number). Unless
///   `sel & 0x80`, a
///   page that starts with the magic is resealed afterwards. At most 64 patches;
///   no patch at all must give a clean array, and so must patches that leave every
///   page with an intact copy (see [`patched_image`]).
pub fn open_check(data: &[u8]) {
    let mut b = Bytes(data);
    let mode = b.u8();
    let cache_bytes = if mode & 4 != 0 { 16 * PAGE } else { 256 * PAGE };
    let input = b.0;
    if mode & 1 == 0 {
        let remake = || raw_image(mode, input);
        exercise(remake(), remake, cache_bytes, false);
        repaired(remake(), cache_bytes);
    } else {
        let (dev, sound) = patched_image(mode, &mut Bytes(input));
        let remake = || patched_image(mode, &mut Bytes(input)).0;
        exercise(dev, remake, cache_bytes, sound);
        repaired(remake(), cache_bytes);
    }
}

/// `Array::repair` of the image as it came (a rollback allowed): it may refuse (an
/// image with no array header, say), never panic; when it completes, the repaired
/// image opens; every LUN reads its first and last sector unless they are lost;
/// `check()` finds no damage but what repair leaves to the administrator (LUNs that
/// together reserve more than the pool); and a second repair finds nothing more to
/// lose and keeps the first one's lost ranges lost.
fn repaired(dev: MemDevice, cache_bytes: usize) {
    let opts = RepairOptions {
        open: OpenOptions {
            cache_bytes,
            allow_rollback: true,
        },
        dry_run: false,
    };
    let Ok((dev, first)) = Array::repair(dev, &opts) else {
        return;
    };
    let mut a = Array::open(dev, &opts.open)
        .unwrap_or_else(|e| panic!("a repaired image does not open: {e:?} after {first:?}"));
    for n in a.lun_numbers() {
        let Ok(l) = a.lun_status(n) else { continue };
        if !l.attached {
            continue;
        }
        let lost = a.lost_ranges(n).expect("a LUN listed");
        let mut buf = [0u8; 512];
        for off in [0, l.size - 512] {
            let is_lost = lost.iter().any(|&(o, len)| o <= off && off < o + len);
            match a.read(n, off, &mut buf) {
                Ok(()) => assert!(!is_lost, "LUN {n} at {off}: a lost sector read"),
                Err(Error::LostData { .. }) => assert!(is_lost, "LUN {n} at {off}"),
                Err(Error::Offline(_)) => {}
                Err(e) => panic!("LUN {n} at {off} after repair: {e:?} ({first:?})"),
            }
        }
    }
    let found = a.check().expect("check after repair");
    for v in &found {
        assert!(
            v.severity() != lunsnap::Severity::Damage
                || matches!(v, ArrayViolation::OverReserved { .. }),
            "damage after repair: {v} ({first:?})"
        );
    }
    let dev = a.close().expect("close");
    let (_, second) = Array::repair(dev, &opts).expect("repair of a repaired image");
    assert!(
        second.unreadable_count == 0
            && second.lost_records.is_empty()
            && second.bad_records.is_empty()
            && !second.hosts_lost
            && second.lost == first.lost,
        "a second repair: {second:?} after {first:?}"
    );
}

fn raw_image(mode: u8, image: &[u8]) -> MemDevice {
    let bs: u32 = if mode & 8 != 0 { 4096 } else { 512 };
    let bytes: u64 = if mode & 16 != 0 { 4 << 20 } else { 1 << 20 };
    let pages = bytes / PAGE as u64;
    let mut dev = MemDevice::new(bs, bytes / u64::from(bs)).expect("device");
    let (head, tail) = if mode & 32 != 0 {
        image.split_at(image.len().saturating_sub(2 * PAGE))
    } else {
        (image, &[][..])
    };
    let head = &head[..head.len().min(bytes as usize)];
    for (first, bytes) in [(0, head), (pages - 2, tail)] {
        for (page, chunk) in (first..).zip(bytes.chunks(PAGE)) {
            let mut buf = vec![0u8; PAGE];
            buf[..chunk.len()].copy_from_slice(chunk);
            if mode & 2 != 0 && has_magic(&buf) {
                layout::seal(&mut buf);
            }
            write_page(&mut dev, page, &buf);
        }
    }
    dev
}

/// Values a patch can write by number (little-endian, 8 bytes or their low 4): the
/// edges of the fields' ranges, which byte mutations rarely hit.
const INTERESTING: [u64; 16] = [
    0,
    1,
    0x1ff,
    0x200,
    0xfff,
    0x1000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 52,
    0x7fff_ffff_ffff_fe00,
    1 << 63,
    0xffff_ffff_ffff_f000,
    0xffff_ffff_ffff_fe00,
    u64::MAX,
];

/// Where in `page` a patch goes. Below 0x8000, `at` is the byte offset (modulo the
/// page). From 0x8000 it names a field: in a B-tree node, bit 14 chooses a key (0)
/// or a value (1), bits 0-7 the entry (modulo the entries in use) and bits 8-13
/// the 4-byte word within the value (modulo the value size); in any other page,
/// the 8-byte word `at & 0x1ff`.
fn patch_offset(page: &[u8], at: u16) -> usize {
    let at = usize::from(at);
    if at < 0x8000 {
        return at % PAGE;
    }
    const NODE: u8 = 4;
    let get16 = |o: usize| usize::from(u16::from_le_bytes([page[o], page[o + 1]]));
    let (nr, vs) = (get16(32), get16(34));
    if page[4] != NODE || vs == 0 || vs > 256 {
        return (at & 0x1ff) * 8;
    }
    let max = (PAGE - 40) / (8 + vs);
    let entry = (at & 0xff) % nr.clamp(1, max);
    let o = if at & 0x4000 == 0 {
        40 + 8 * entry
    } else {
        40 + 8 * max + vs * entry + ((at >> 8 & 0x3f) * 4) % vs
    };
    o.min(PAGE - 1)
}

/// The patched base image, and whether it is *sound*: no patch at all, or every
/// page a patch changed still has an intact twin — the page has a second copy
/// (every superblock slot; every metadata page of a base with two copies), the
/// patches changed only one of the two, and left that one with a wrong checksum,
/// so that it is certainly detected. A sound image must open and check clean: the
/// damage must be read around and healed, never seen.
fn patched_image(mode: u8, b: &mut Bytes<'_>) -> (MemDevice, bool) {
    let base = base(mode >> 1 & 1, if mode & 8 != 0 { 1 } else { 2 });
    let target = mode >> 4 & 3;
    let mut dev = base.dev.clone();
    // The pages the patches name, and the first content of every copy they wrote.
    let mut named: Vec<u64> = Vec::new();
    let mut before: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut patches = 0;
    while !b.is_empty() && patches < 64 {
        let sel = b.u8();
        let at = b.u16();
        let len = b.u8();
        let value;
        let bytes = if len >= 0xE0 {
            let k = usize::from(len - 0xE0);
            value = INTERESTING[k % 16].to_le_bytes();
            &value[..if k >= 16 { 4 } else { 8 }]
        } else {
            b.take(usize::from(len))
        };
        let page = if sel & 0x40 != 0 {
            u64::from(sel & 0x3f)
        } else {
            base.meta_pages[usize::from(sel & 0x3f) % base.meta_pages.len()]
        };
        let (first, second) = base.copies(page);
        let second = second.unwrap_or(first);
        let mut to = match target {
            0 => vec![first],
            1 => vec![second],
            2 => vec![first, second],
            _ if patches % 2 == 0 => vec![first],
            _ => vec![second],
        };
        to.dedup();
        patches += 1;
        named.push(page);
        for p in to {
            let Some(mut buf) = read_page(&mut dev, p) else {
                continue;
            };
            if !before.iter().any(|(q, _)| *q == p) {
                before.push((p, buf.clone()));
            }
            let offset = patch_offset(&buf, at);
            let n = bytes.len().min(PAGE - offset);
            buf[offset..offset + n].copy_from_slice(&bytes[..n]);
            if sel & 0x80 == 0 && has_magic(&buf) {
                layout::seal(&mut buf);
            }
            write_page(&mut dev, p, &buf);
        }
    }
    let sound = named.iter().all(|&page| {
        let (first, second) = base.copies(page);
        let mut bad = [Some(first), second]
            .into_iter()
            .flatten()
            .filter_map(|p| changed(&mut dev, &before, p));
        match (bad.next(), bad.next()) {
            (None, _) => true,
            (Some(one), None) if second.is_some() => {
                let mut resealed = one.clone();
                layout::seal(&mut resealed);
                resealed != one
            }
            _ => false,
        }
    });
    (dev, sound)
}

/// Page `p` of `dev` if it differs from what it held before the patches.
fn changed(dev: &mut MemDevice, before: &[(u64, Vec<u8>)], p: u64) -> Option<Vec<u8>> {
    let was = &before.iter().find(|(q, _)| *q == p)?.1;
    read_page(dev, p).filter(|now| now != was)
}

/// Collects the results of the operations run on an image: on a clean one, only
/// [`benign`] errors are allowed.
struct Outcomes {
    clean: bool,
    log: Vec<(&'static str, Error)>,
}

impl Outcomes {
    fn note<T>(&mut self, what: &'static str, r: Result<T, Error>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                assert!(
                    !self.clean || benign(&e),
                    "{what} failed with {e:?} on an image check() found clean"
                );
                self.log.push((what, e));
                None
            }
        }
    }
}

/// What `check()` found is no damage: nothing, or the notice of a past rollback (an
/// array rolled back is whole; other notices may come with reads that fail).
fn rolled_back_only(found: &[ArrayViolation]) -> bool {
    found
        .iter()
        .all(|v| matches!(v, ArrayViolation::RolledBack { .. }))
}

/// Opens `dev` and runs the operations; `remake` builds the same image again, for a
/// second open that allows the rollback `CommitLost` refused. `sound`: the image
/// must open and check clean.
fn exercise(dev: MemDevice, remake: impl Fn() -> MemDevice, cache_bytes: usize, sound: bool) {
    let mut opts = OpenOptions {
        cache_bytes,
        ..OpenOptions::default()
    };
    let mut rollback = None;
    let mut a = match Array::open(dev, &opts) {
        Ok(a) => a,
        Err(Error::CommitLost { lost, kept, .. }) => {
            assert!(!sound, "a sound image loses commit {lost} (keeps {kept})");
            opts.allow_rollback = true;
            match Array::open(remake(), &opts) {
                Ok(a) => {
                    rollback = Some((lost, kept));
                    a
                }
                Err(e) => {
                    assert!(
                        !matches!(e, Error::CommitLost { .. }),
                        "open allowing the rollback still refuses: {e:?}"
                    );
                    return;
                }
            }
        }
        Err(e) => {
            assert!(!sound, "a sound image does not open: {e:?}");
            return;
        }
    };
    if let Some(r) = rollback {
        let got = a.pool_info().rollback;
        assert_eq!(got, Some(r), "pool_info() after an allowed rollback");
    }
    let first = a.check();
    assert!(
        matches!(&first, Ok(v) if v.is_empty()) || !sound,
        "a sound image is not clean: {first:?}"
    );
    if let (Some((lost, kept)), Ok(v)) = (rollback, &first) {
        assert!(
            v.contains(&ArrayViolation::RolledBack { lost, kept }),
            "check() does not report the rollback: {v:?}"
        );
    }
    let clean = matches!(&first, Ok(v) if rolled_back_only(v));
    let mut o = Outcomes {
        clean,
        log: Vec::new(),
    };
    o.note("luns", a.luns());
    let _ = a.pool_info();
    let hosts = a.hosts();
    let nums = a.lun_numbers();
    for &n in nums.iter().take(16) {
        o.note("grants", a.grants(n));
    }
    for h in hosts.iter().take(4) {
        for n in a.as_host(h.id).visible_luns().into_iter().take(4) {
            o.note("lun_info_as", a.as_host(h.id).lun_info(n));
            let mut s = [0u8; SECTOR_BYTES];
            let _ = a.as_host(h.id).read(n, 0, &mut s);
        }
    }

    // Reads: the head, the middle and the last sector of every LUN.
    let mut heads: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut sizes: Vec<(u32, u64)> = Vec::new();
    for &n in nums.iter().take(16) {
        let Some(info) = o.note("lun_info", a.lun_info(n)) else {
            continue;
        };
        sizes.push((n, info.size));
        if !(info.attached && info.online) {
            continue;
        }
        let mut head = vec![0u8; info.size.min(4096) as usize];
        if o.note("read head", a.read(n, 0, &mut head)).is_some() {
            heads.push((n, head));
        }
        let mut s = [0u8; SECTOR_BYTES];
        let mid = info.size / 2 / SECTOR * SECTOR;
        o.note("read middle", a.read(n, mid, &mut s));
        let last = info.size.saturating_sub(SECTOR);
        o.note("read last", a.read(n, last, &mut s));
    }

    // A write reads back and changes no other LUN.
    if let Some((n, head)) = heads.first() {
        let data = sectors(0xF0F0, 0, head.len() / SECTOR_BYTES);
        if o.note("write", a.write(*n, 0, &data)).is_some() && clean {
            let mut back = vec![0u8; data.len()];
            a.read(*n, 0, &mut back).expect("read back");
            assert!(back == data, "LUN {n} does not read back a write");
            for (m, h) in &heads[1..] {
                let mut now = vec![0u8; h.len()];
                a.read(*m, 0, &mut now).expect("read back");
                assert!(now == *h, "a write to LUN {n} changed LUN {m}");
            }
        }
    }

    // Management operations; their errors are expected on a damaged image.
    let target = heads.first().map(|h| h.0).or(nums.first().copied());
    let free: Vec<u32> = (0..a.max_luns().min(1 << 12))
        .filter(|x| !nums.contains(x))
        .take(3)
        .collect();
    let es = u64::from(a.extent_size());
    if let Some(&f) = free.first() {
        o.note("create_lun", a.create_lun(f, 8 * SECTOR));
        o.note("write new", a.write(f, 0, &sectors(0xF1, 0, 1)));
    }
    if let (Some(t), Some(&c)) = (target, free.get(1)) {
        if o.note("create_copy", a.create_copy(t, c, true)).is_some() {
            o.note("write copy", a.write(c, 0, &sectors(0xF2, 0, 1)));
            o.note("restore", a.restore(c));
            o.note("detach", a.detach(c));
            o.note("attach", a.attach(c));
            o.note("delete copy", a.delete(c, false));
        }
    }
    if let (Some(t), Some(&c)) = (target, free.get(2)) {
        if o.note("create_copies", a.create_copies(&[(t, c)], false))
            .is_some()
        {
            o.note("attach_many", a.attach_many(&[c]));
            o.note("delete group copy", a.delete(c, true));
        }
    }
    for &(n, size) in sizes.iter().take(4) {
        let _ = a.discard(n, 0, size.min(es));
    }
    if let Some(t) = target {
        o.note("add_host", a.add_host(0xF022, "fuzz"));
        o.note("grant", a.grant(t, 0xF022, Access::ReadWrite));
        let _ = a.as_host(0xF022).write(t, 0, &sectors(0xF3, 0, 1));
        let _ = a.revoke(t, 0xF022);
        o.note("remove_host", a.remove_host(0xF022));
        o.note("offline", a.set_online(t, false));
        o.note("online", a.set_online(t, true));
    }
    // Existing copies: refresh one, restore another, detach a third.
    let copies: Vec<u32> = sizes
        .iter()
        .map(|&(n, _)| n)
        .filter(|&n| a.lun_info(n).is_ok_and(|i| i.kind == LunKind::Copy))
        .take(3)
        .collect();
    for (i, &c) in copies.iter().enumerate() {
        let _ = match i {
            0 => a.attach(c),
            1 => a.restore(c),
            _ => a.detach(c),
        };
    }
    if let Some(&last) = nums.last() {
        let _ = a.delete(last, true);
    }
    // What those dropped waits in the free queue (with whatever a forged queue
    // held): the figures while it waits, one small step, then all of it.
    o.note("pending", a.pending_bytes());
    o.note("reclaim step", a.reclaim(3));
    o.note("luns while reclaiming", a.luns());
    o.note("reclaim", a.reclaim(u64::MAX));
    o.note("flush", a.flush());
    if a.is_poisoned() {
        assert!(!clean, "a clean array was poisoned: {:?}", o.log);
        return;
    }
    // Every page the array uses has a good copy on a clean image (bad copies are
    // rewritten); a scrub stops at damage and may be poisoned by it otherwise.
    if let Some(r) = o.note("scrub", a.scrub(|_, _| {})) {
        assert!(!clean || r.is_healthy(), "scrub of a clean array: {r:?}");
    }
    if a.is_poisoned() {
        assert!(!clean, "a clean array was poisoned by a scrub: {:?}", o.log);
        return;
    }
    let after = a.check();
    assert!(
        !clean || matches!(&after, Ok(v) if rolled_back_only(v)),
        "a clean array has violations after operations: {after:?} ({:?})",
        o.log
    );
    let Some(dev) = o.note("close", a.close().map_err(Error::from)) else {
        return;
    };
    match Array::open(dev, &opts) {
        Ok(mut a) => {
            let again = a.check();
            assert!(
                !clean || matches!(&again, Ok(v) if rolled_back_only(v)),
                "a clean array has violations after a reopen: {again:?}"
            );
            if clean && rollback.is_some() {
                let got = a.pool_info().rollback;
                assert_eq!(got, rollback, "the rollback is not kept across a reopen");
            }
            let _ = a.luns();
        }
        Err(e) => assert!(!clean, "a clean array does not reopen: {e:?}"),
    }
}

// ---------------------------------------------------------------------------------
// ops_powercut
// ---------------------------------------------------------------------------------

/// LUN numbers the sequences use: 0..8 exist, 8 and 9 are out of range.
const MAX_LUNS: u32 = 8;
const MAX_OPS: usize = 64;

/// Fills a sector with the pattern of write `id` at LUN sector `sector`: every
/// byte depends on both, so a read tells which write (if any) it comes from.
fn fill_sector(buf: &mut [u8], id: u32, sector: u64) {
    buf[..4].copy_from_slice(&id.to_le_bytes());
    buf[4..12].copy_from_slice(&sector.to_le_bytes());
    let seed = (u64::from(id) << 40) ^ sector;
    for (i, c) in (1u64..).zip(buf[12..].chunks_mut(8)) {
        c.copy_from_slice(&mix(seed.wrapping_add(i)).to_le_bytes()[..c.len()]);
    }
}

/// The write id a sector holds (0 for zeros), or `None` for anything else.
fn sector_id(buf: &[u8], sector: u64) -> Option<u32> {
    if buf.iter().all(|&b| b == 0) {
        return Some(0);
    }
    let id = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let mut want = [0u8; SECTOR_BYTES];
    fill_sector(&mut want, id, sector);
    (id != 0 && want[..] == buf[..]).then_some(id)
}

/// One operation. Sector numbers and counts are raw input, fitted to the LUN when
/// run ([`Op::fit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `create_lun(lun, sectors * 512)`.
    CreateLun { lun: u32, sectors: u64 },
    /// `create_copy`.
    CreateCopy {
        parent: u32,
        lun: u32,
        attached: bool,
    },
    /// `create_copies` of two pairs.
    CreateCopies {
        pairs: [(u32, u32); 2],
        attached: bool,
    },
    /// `attach`.
    Attach(u32),
    /// `attach_many` of two copies.
    AttachMany([u32; 2]),
    /// `detach`.
    Detach(u32),
    /// `delete`.
    Delete { lun: u32, orphan: bool },
    /// `restore`.
    Restore(u32),
    /// `set_online`.
    SetOnline { lun: u32, online: bool },
    /// `write` of `sectors` sectors at sector `sector`, with the pattern of a new id.
    Write { lun: u32, sector: u64, sectors: u64 },
    /// `discard`.
    Discard { lun: u32, sector: u64, sectors: u64 },
    /// `read`, compared with the model.
    Read { lun: u32, sector: u64, sectors: u64 },
    /// `flush`.
    Flush,
    /// `flush`, drop the handle, open again: exactly the model.
    Reopen,
    /// Drop the handle without a flush and open again: the last commit, each sector
    /// written since reading old or one of the values written.
    ReopenDirty,
    /// `check()` must be empty.
    Check,
    /// `reclaim(budget)`: frees dropped mappings (commits when anything waited).
    Reclaim(u64),
    /// `scrub`: every page has a good copy; what was written is committed.
    Scrub,
    /// Damage on the medium, under the array: a byte of one copy of a page flipped
    /// (`xor`, made odd, at byte `16 * at`). The page is the `page`-th (modulo their
    /// number) of the superblock slots' first copies and, with two metadata copies,
    /// the metadata pages that hold metadata on the medium, in the copy
    /// [`Setup::damage_second`] names. Every page thus keeps one intact copy:
    /// nothing may show, and reads heal the damaged copy.
    Damage { page: u64, at: u8, xor: u8 },
}

impl Op {
    fn decode(b: &mut Bytes<'_>) -> Op {
        let code = b.u8();
        let mut lun = || u32::from(b.u8() % 10);
        let (l0, l1) = (lun(), lun());
        let (l2, l3) = (lun(), lun());
        let x = b.u8();
        let (s, n) = (u64::from(b.u16()), u64::from(b.u8()));
        match code % 23 {
            0 | 1 => Op::CreateLun {
                lun: l0,
                sectors: if x == 255 { 1 << 31 } else { 1 + u64::from(x) },
            },
            2 | 3 => Op::CreateCopy {
                parent: l0,
                lun: l1,
                attached: x & 1 == 0,
            },
            4 => Op::CreateCopies {
                pairs: [(l0, l1), (l2, l3)],
                attached: x & 1 == 0,
            },
            5 => Op::Attach(l0),
            6 => Op::AttachMany([l0, l1]),
            7 => Op::Detach(l0),
            8 => Op::Delete {
                lun: l0,
                orphan: x & 1 == 1,
            },
            9 => Op::Restore(l0),
            10 => Op::SetOnline {
                lun: l0,
                online: x & 1 == 1,
            },
            11..=13 => Op::Write {
                lun: l0,
                sector: s,
                sectors: n,
            },
            15 => Op::Discard {
                lun: l0,
                sector: s,
                sectors: n,
            },
            14 => Op::Damage {
                page: s,
                at: x,
                xor: n as u8,
            },
            16 => Op::Read {
                lun: l0,
                sector: s,
                sectors: n,
            },
            17 => Op::Scrub,
            18 => Op::Flush,
            19 => Op::Reopen,
            20 => Op::ReopenDirty,
            22 => Op::Reclaim([1, 4, 64, u64::MAX][usize::from(x % 4)]),
            _ => Op::Check,
        }
    }

    /// Fits the raw range of an I/O operation to the LUN's size in the model: a
    /// start inside the LUN or at its end, 1 to 64 sectors (which may run past the
    /// end: `OutOfRange`).
    fn fit(self, m: &Model) -> Op {
        let fit = |lun: u32, s: u64, n: u64| {
            let size = m.lun_info(lun).map_or(64, |i| i.size / SECTOR);
            (s % (size + 1), 1 + n % 64)
        };
        match self {
            Op::Write {
                lun,
                sector,
                sectors,
            } => {
                let (sector, sectors) = fit(lun, sector, sectors);
                Op::Write {
                    lun,
                    sector,
                    sectors,
                }
            }
            Op::Discard {
                lun,
                sector,
                sectors,
            } => {
                let (sector, sectors) = fit(lun, sector, sectors);
                Op::Discard {
                    lun,
                    sector,
                    sectors,
                }
            }
            Op::Read {
                lun,
                sector,
                sectors,
            } => {
                let (sector, sectors) = fit(lun, sector, sectors);
                Op::Read {
                    lun,
                    sector,
                    sectors,
                }
            }
            op => op,
        }
    }

    /// The operation on the model (which changes nothing when it refuses), with `id`
    /// for a write; the array's generation advanced by `commits` during it.
    fn model(self, m: &mut Model, id: u32, commits: u64) -> Result<(), Error> {
        match self {
            Op::CreateLun { lun, sectors } => m.create_lun(lun, sectors * SECTOR),
            Op::CreateCopy {
                parent,
                lun,
                attached,
            } => m.create_copy(parent, lun, attached),
            Op::CreateCopies { pairs, attached } => m.create_copies(&pairs, attached),
            Op::Attach(n) => m.attach(n),
            Op::AttachMany(ns) => m.attach_many(&ns),
            Op::Detach(n) => m.detach(n),
            Op::Delete { lun, orphan } => m.delete(lun, orphan),
            Op::Restore(n) => m.restore(n),
            Op::SetOnline { lun, online } => m.set_online(lun, online),
            Op::Write {
                lun,
                sector,
                sectors,
            } => {
                let data = write_data(id, sector, sectors);
                m.write_with_commits(lun, sector * SECTOR, &data, commits)
            }
            Op::Discard {
                lun,
                sector,
                sectors,
            } => m.discard_with_commits(lun, sector * SECTOR, sectors * SECTOR, commits),
            Op::Flush => m.flush(),
            Op::Scrub | Op::Reclaim(_) => {
                for _ in 0..commits {
                    m.commit();
                }
                Ok(())
            }
            Op::Read { .. } | Op::Reopen | Op::ReopenDirty | Op::Check | Op::Damage { .. } => {
                Ok(())
            }
        }
    }
}

/// The data of write `id`: `n` sectors from LUN sector `sector`.
fn write_data(id: u32, sector: u64, n: u64) -> Vec<u8> {
    let mut buf = vec![0u8; n as usize * SECTOR_BYTES];
    for (s, c) in (sector..).zip(buf.chunks_exact_mut(SECTOR_BYTES)) {
        fill_sector(c, id, s);
    }
    buf
}

type Dev = PowerCutDevice<MemDevice>;

/// The parameters of a sequence.
#[derive(Clone, Copy, Debug)]
struct Setup {
    block_size: u32,
    extent_size: u32,
    /// Copies of every metadata page: 1 (on 1 MiB, where the pool soon fills up)
    /// or 2 (on 2 MiB).
    metadata_copies: u32,
    /// [`Op::Damage`] hits the second copies of metadata pages (else the first).
    /// Superblock slots are damaged in their first copies only: a commit writes
    /// the first copy of a slot before its second, so a power cut tearing that
    /// write after damage to the second would leave no intact copy (two faults).
    damage_second: bool,
    /// Device writes after format before every write and flush fails.
    countdown: Option<u64>,
    outcome: CutOutcome,
}

impl Setup {
    /// `[geometry][countdown: u16][outcome]`. Geometry bit 0: 4 KiB blocks (else
    /// 512 B); bits 1-2: extent of 4, 8, 16 or 4 KiB; bit 3: two metadata copies on
    /// 2 MiB (else one on 1 MiB); bit 4: [`Setup::damage_second`]. Countdown: none
    /// if bit 15, else its low 10 bits. Outcome modulo 3: drop all, keep all,
    /// random (seeded by a `u32` that follows).
    fn decode(b: &mut Bytes<'_>) -> Setup {
        let g = b.u8();
        let c = b.u16();
        let o = b.u8();
        Setup {
            block_size: if g & 1 != 0 { 4096 } else { 512 },
            extent_size: [4096, 8192, 16384, 4096][usize::from(g >> 1 & 3)],
            metadata_copies: if g & 8 != 0 { 2 } else { 1 },
            damage_second: g & 16 != 0,
            countdown: (c & 0x8000 == 0).then_some(u64::from(c & 0x03ff)),
            outcome: match o % 3 {
                0 => CutOutcome::DropAll,
                1 => CutOutcome::KeepAll,
                _ => CutOutcome::Random {
                    seed: u64::from(b.u32()).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                },
            },
        }
    }

    fn device_bytes(&self) -> u64 {
        u64::from(self.metadata_copies) << 20
    }
}

struct Run {
    setup: Setup,
    array: Option<Array<Dev>>,
    /// The reference model of the array (`lunsnap::testing::Model`): the state now,
    /// the last commit and the values written since.
    m: Model,
    next_id: u32,
    /// Device writes when the countdown was armed.
    armed_at: u64,
    /// The first operation that failed because the device failed. After it the
    /// operations run blind: any result but a panic is fine.
    failed: Option<(usize, Op)>,
    /// Then: the models of the states a power cut may leave, oldest first (before that
    /// operation, after each commit it may have made, after it).
    candidates: Vec<Model>,
    /// The operations run so far, for messages.
    trail: Vec<Op>,
    /// What the last scrub reported.
    scrubbed: Option<ScrubReport>,
}

fn open(dev: Dev) -> Result<Array<Dev>, Error> {
    Array::open(
        dev,
        &OpenOptions {
            cache_bytes: 32 * PAGE,
            ..OpenOptions::default()
        },
    )
}

/// Fuzz target `ops_powercut`: a sequence of operations on a
/// `PowerCutDevice<MemDevice>`, checked as it runs against the reference model,
/// `lunsnap::testing::Model` (every result and error, `NoSpace` included, every read,
/// the generation after each operation; after each reopen the model's `recover`), with
/// a power-cut countdown: after `countdown` device writes every write and flush fails;
/// the first operation that fails that way is the crash point, later ones run blind.
/// At the end the power is cut with the chosen outcome, the array reopened: it must
/// open and `Model::recover` must accept it (the LUN records, accounting and generation
/// of the last commit, every sector its committed content or, after commits the array
/// made on its own during a write, one of the values written since, an empty
/// `check()`) — or, when the failed operation was cut short, the state of one of its
/// commits. Then it must still take a write and a flush, and a scrub must find a good
/// copy of every page in use.
///
/// The array has one metadata copy (on 1 MiB) or two (on 2 MiB). [`Op::Damage`]
/// flips a byte of one copy of a page on the medium: of the first copy of a
/// superblock slot or, with two copies, of a metadata page (always the same copy in
/// a sequence), so that every page keeps an intact copy and nothing may show: the
/// model knows nothing of it, except that a flush commits to heal a bad copy reads
/// found even with nothing written.
///
/// Input: `[geometry][countdown: u16][outcome]` (+ a `u32` seed for a random
/// outcome; see [`Setup::decode`]), then up to 64 operations of 9 bytes each
/// ([`Op::decode`]).
pub fn ops_powercut(data: &[u8]) {
    let mut b = Bytes(data);
    let setup = Setup::decode(&mut b);
    let mut ops = Vec::new();
    while !b.is_empty() && ops.len() < MAX_OPS {
        ops.push(Op::decode(&mut b));
    }
    let mut run = Run::new(setup);
    for op in ops {
        run.step(op);
    }
    run.finish();
}

impl Run {
    fn new(setup: Setup) -> Run {
        let bs = setup.block_size;
        let mem = MemDevice::new(bs, setup.device_bytes() / u64::from(bs)).expect("device");
        let opts = FormatOptions {
            extent_size: setup.extent_size,
            max_luns: MAX_LUNS,
            cache_bytes: 32 * PAGE,
            array_id: *b"lunsnap-fuzz-ops",
            metadata_copies: setup.metadata_copies,
        };
        let mut a = Array::format(PowerCutDevice::new(mem), &opts).expect("format");
        let m = Model::new(&a.pool_info());
        let armed_at = a.device_mut().writes();
        a.device_mut().fail_after_writes(setup.countdown);
        Run {
            setup,
            array: Some(a),
            m,
            next_id: 1,
            armed_at,
            failed: None,
            candidates: Vec::new(),
            trail: Vec::new(),
            scrubbed: None,
        }
    }

    fn a(&mut self) -> &mut Array<Dev> {
        self.array.as_mut().expect("an open array")
    }

    fn generation(&mut self) -> u64 {
        self.a().pool_info().generation
    }

    /// Reads found bad copies (after [`Op::Damage`]) that the next commit rewrites:
    /// a flush then commits even with nothing written.
    fn heals_pending(&mut self) -> bool {
        self.a().pool_info().pending_heals > 0
    }

    /// The device has reached the countdown: writes and flushes fail.
    fn failing(&mut self) -> bool {
        let Some(n) = self.setup.countdown else {
            return false;
        };
        let armed_at = self.armed_at;
        self.a().device_mut().writes() - armed_at >= n
    }

    fn context(&self) -> String {
        format!("setup {:?}, operations {:?}", self.setup, self.trail)
    }

    /// The last operation failed because the device failed: a power cut may leave the
    /// state of one of `candidates`.
    fn fail(&mut self, candidates: Vec<Model>) {
        let i = self.trail.len() - 1;
        self.failed = Some((i, self.trail[i]));
        self.candidates = candidates;
    }

    fn step(&mut self, op: Op) {
        let op = op.fit(&self.m);
        self.trail.push(op);
        if self.failed.is_some() {
            self.blind(op);
            return;
        }
        let id = self.next_id;
        match op {
            Op::Read {
                lun,
                sector,
                sectors,
            } => return self.read(lun, sector, sectors),
            Op::Reopen => return self.reopen(true),
            Op::ReopenDirty => return self.reopen(false),
            Op::Check => return self.check(),
            Op::Damage { page, at, xor } => return self.damage(page, at, xor),
            Op::Write { .. } => self.next_id += 1,
            _ => {}
        }
        let pre = self.m.clone();
        let g = self.generation();
        let heals = op == Op::Flush && self.heals_pending();
        let r = self.run(op, id);
        let commits = self.generation() - g;
        let want = op.model(&mut self.m, id, commits);
        // A flush with nothing written commits all the same to heal.
        if heals && !pre.is_dirty() {
            self.m.commit();
        }
        match (&r, &want) {
            (Ok(()), Ok(())) => {
                let (g, w) = (self.generation(), self.m.generation());
                assert_eq!(g, w, "generation after {op:?}; {}", self.context());
                // A scrub commits what was written (and again if it healed), and
                // finds a good copy of every page in use.
                if op == Op::Scrub {
                    let r = self.scrubbed.take();
                    assert!(
                        r.as_ref().is_some_and(|r| r.is_healthy())
                            && commits <= 3
                            && (commits > 0 || !pre.is_dirty()),
                        "scrub: {r:?} in {commits} commits; {}",
                        self.context()
                    );
                }
            }
            (Err(a), Err(b)) if a == b => {}
            (Err(e), _) if !benign(e) && self.failing() => {
                let mut candidates = cut_short(&pre, op, id, commits, want.is_ok());
                if heals {
                    let mut m = pre.clone();
                    flush_model(&mut m, true);
                    candidates.push(m);
                }
                self.fail(candidates);
            }
            _ => panic!(
                "{op:?}: the array returned {r:?}, the model {want:?}; {}",
                self.context()
            ),
        }
    }

    /// Runs a changing operation on the array.
    fn run(&mut self, op: Op, id: u32) -> Result<(), Error> {
        let a = self.a();
        match op {
            Op::CreateLun { lun, sectors } => a.create_lun(lun, sectors * SECTOR),
            Op::CreateCopy {
                parent,
                lun,
                attached,
            } => a.create_copy(parent, lun, attached),
            Op::CreateCopies { pairs, attached } => a.create_copies(&pairs, attached),
            Op::Attach(n) => a.attach(n),
            Op::AttachMany(ns) => a.attach_many(&ns),
            Op::Detach(n) => a.detach(n),
            Op::Delete { lun, orphan } => a.delete(lun, orphan),
            Op::Restore(n) => a.restore(n),
            Op::SetOnline { lun, online } => a.set_online(lun, online),
            Op::Write {
                lun,
                sector,
                sectors,
            } => a.write(lun, sector * SECTOR, &write_data(id, sector, sectors)),
            Op::Discard {
                lun,
                sector,
                sectors,
            } => a.discard(lun, sector * SECTOR, sectors * SECTOR),
            Op::Flush => a.flush(),
            Op::Reclaim(budget) => a.reclaim(budget).map(drop),
            Op::Scrub => {
                let r = a.scrub(|_, _| {});
                self.scrubbed = r.as_ref().ok().cloned();
                r.map(drop)
            }
            Op::Read { .. } | Op::Reopen | Op::ReopenDirty | Op::Check | Op::Damage { .. } => {
                Ok(())
            }
        }
    }

    /// Runs [`Op::Damage`]: flips a byte of one copy of a page on the medium, under
    /// the array and past the device's volatile cache (an unflushed write to that
    /// page, if any, still lands over it, or is lost at the cut).
    fn damage(&mut self, page: u64, at: u8, xor: u8) {
        let second = self.setup.damage_second;
        let a = self.a();
        let geo = a.engine().geometry();
        let mem = a.device_mut().inner_mut();
        let per = PAGE as u64 / u64::from(mem.block_size());
        let mut head = vec![0u8; mem.block_size() as usize];
        let mut pages: Vec<u64> = (0..SUPERBLOCK_PAGES).collect();
        if let Some(off) = geo.mirror_offset() {
            for p in geo.meta_start..geo.meta_start + geo.meta_pages {
                if mem.read(p * per, &mut head).is_ok() && has_magic(&head) {
                    pages.push(if second { p + off } else { p });
                }
            }
        }
        let p = pages[(page % pages.len() as u64) as usize];
        let mut buf = vec![0u8; PAGE];
        mem.read(p * per, &mut buf).expect("read the medium");
        buf[usize::from(at) * 16] ^= xor | 1;
        mem.write(p * per, &buf).expect("write the medium");
    }

    fn read(&mut self, lun: u32, sector: u64, sectors: u64) {
        let mut got = vec![0u8; sectors as usize * SECTOR_BYTES];
        let r = self.a().read(lun, sector * SECTOR, &mut got);
        let mut want = vec![0u8; got.len()];
        let w = self.m.read(lun, sector * SECTOR, &mut want);
        match (r, w) {
            (Ok(()), Ok(())) => {
                let pairs = got
                    .chunks_exact(SECTOR_BYTES)
                    .zip(want.chunks(SECTOR_BYTES));
                for (at, (g, w)) in (sector..).zip(pairs) {
                    assert!(
                        g == w,
                        "LUN {lun} sector {at} reads write {:?}, the model holds {:?}; {}",
                        sector_id(g, at),
                        sector_id(w, at),
                        self.context()
                    );
                }
            }
            (Err(a), Err(b)) if a == b => {}
            // A read may write changed metadata pages back to make room in the cache.
            (Err(e), _) if !benign(&e) && self.failing() => self.fail(vec![self.m.clone()]),
            (r, w) => panic!(
                "read of LUN {lun} sectors {sector}+{sectors}: {r:?}, the model says {w:?}; {}",
                self.context()
            ),
        }
    }

    fn check(&mut self) {
        match self.a().check() {
            Ok(v) => assert!(v.is_empty(), "check(): {v:?}; {}", self.context()),
            // Checking writes changed records back through the cache, which may write
            // to the device.
            Err(e) if self.failing() => {
                assert!(!benign(&e), "check(): {e:?}; {}", self.context());
                self.fail(vec![self.m.clone()]);
            }
            Err(e) => panic!("check(): {e:?}; {}", self.context()),
        }
    }

    /// Reopens: after a flush (`flush`: exactly the model) or without (the last
    /// commit, with what was written since); the model becomes what survived.
    fn reopen(&mut self, flush: bool) {
        if flush {
            let heals = self.heals_pending();
            if let Err(e) = self.a().flush() {
                assert!(
                    self.failing(),
                    "flush failed with {e:?} while the device works; {}",
                    self.context()
                );
                let mut after = self.m.clone();
                flush_model(&mut after, heals);
                self.fail(vec![self.m.clone(), after]);
                self.blind_reopen();
                return;
            }
            flush_model(&mut self.m, heals);
        }
        let dev = self.array.take().expect("an open array").into_device();
        let mut a = open(dev).unwrap_or_else(|e| panic!("reopen: {e:?}; {}", self.context()));
        self.m = self
            .m
            .recover(&mut a, false)
            .unwrap_or_else(|e| panic!("after a reopen: {e}; {}", self.context()));
        self.array = Some(a);
    }

    fn blind_reopen(&mut self) {
        let dev = self.array.take().expect("an open array").into_device();
        // The device as it is now is what a power cut keeping every write leaves.
        let a = open(dev).unwrap_or_else(|e| panic!("reopen: {e:?}; {}", self.context()));
        self.array = Some(a);
    }

    /// Runs `op` after the device failed: any result but a panic is fine.
    fn blind(&mut self, op: Op) {
        match op {
            Op::Read {
                lun,
                sector,
                sectors,
            } => {
                let mut buf = vec![0u8; sectors as usize * SECTOR_BYTES];
                let _ = self.a().read(lun, sector * SECTOR, &mut buf);
            }
            Op::Reopen => {
                let _ = self.a().flush();
                self.blind_reopen();
            }
            Op::ReopenDirty => self.blind_reopen(),
            Op::Check => {
                let _ = self.a().check();
            }
            Op::Damage { page, at, xor } => self.damage(page, at, xor),
            op => {
                let _ = self.run(op, 0);
            }
        }
    }

    fn finish(mut self) {
        if self.failed.is_none() && !self.failing() {
            let v = self.a().check();
            assert!(
                matches!(&v, Ok(v) if v.is_empty()),
                "check() before the cut: {v:?}; {}",
                self.context()
            );
        }
        let mut dev = self.array.take().expect("an open array").into_device();
        dev.power_cut(self.setup.outcome).expect("power cut");
        let mut a =
            open(dev).unwrap_or_else(|e| panic!("open after the cut: {e:?}; {}", self.context()));
        let v = a.check();
        assert!(
            matches!(&v, Ok(v) if v.is_empty()),
            "check() after the cut: {v:?}; {}, failed at {:?}",
            self.context(),
            self.failed
        );
        let seen = match self.failed {
            None => self.m.recover(&mut a, false),
            Some(_) => Model::recover_one_of(&self.candidates, &mut a, false),
        }
        .unwrap_or_else(|e| {
            panic!(
                "after the cut: {e}; {}, failed at {:?}",
                self.context(),
                self.failed
            )
        });
        // Still usable: a write to every accessible LUN, a flush, a clean check.
        for l in seen.luns() {
            if l.attached && l.online {
                a.write(l.lun, 0, &sectors(u32::MAX, 0, 1))
                    .unwrap_or_else(|e| panic!("write after the cut: {e:?}; {}", self.context()));
            }
        }
        a.flush()
            .unwrap_or_else(|e| panic!("flush after the cut: {e:?}; {}", self.context()));
        let v = a.check();
        assert!(
            matches!(&v, Ok(v) if v.is_empty()),
            "check() after writes after the cut: {v:?}; {}",
            self.context()
        );
        // Every page in use has a good copy: a cut tears only pages no commit uses
        // yet, and damage hits one copy.
        let r = a.scrub(|_, _| {});
        assert!(
            matches!(&r, Ok(r) if r.is_healthy()),
            "scrub after the cut: {r:?}; {}",
            self.context()
        );
    }
}

/// `Array::flush` on the model: it commits when anything was written, or when bad
/// copies are to be rewritten (`heals`).
fn flush_model(m: &mut Model, heals: bool) {
    if m.is_dirty() || heals {
        m.commit();
    }
}

/// The models of the states a power cut may leave when `op`, run on the array whose
/// model was `pre` (with `id` for a write), failed because the device failed, after
/// `commits` commits of its own; `done` if the model accepts the operation.
fn cut_short(pre: &Model, op: Op, id: u32, commits: u64, done: bool) -> Vec<Model> {
    let mut v = vec![pre.clone()];
    if !done {
        return v;
    }
    match op {
        // Part of it may have landed, and an early commit it tried (after those it
        // made) may have reached the medium: each sector committed or a value written.
        Op::Write {
            lun,
            sector,
            sectors,
        } => {
            let mut m = pre.clone();
            let _ = m.write(lun, sector * SECTOR, &write_data(id, sector, sectors));
            m.note_early_commits(commits + 1);
            v.push(m);
        }
        // Each of its commits may have reached the medium (one for what was written,
        // one to record what it healed; up to three are allowed).
        // Its one commit may have reached the medium.
        Op::Reclaim(_) => {
            let mut m = pre.clone();
            m.commit();
            v.push(m);
        }
        Op::Scrub => {
            let mut m = pre.clone();
            for _ in 0..3 {
                m.commit();
                v.push(m.clone());
            }
        }
        // Its commit may have reached the medium; a discard may first commit the
        // writes before it.
        op => {
            if matches!(op, Op::Discard { .. }) && pre.is_dirty() {
                let mut m = pre.clone();
                m.commit();
                v.push(m.clone());
                let _ = op.model(&mut m, id, 1);
                v.push(m);
            }
            let mut m = pre.clone();
            let _ = op.model(&mut m, id, 1);
            v.push(m);
        }
    }
    v
}
