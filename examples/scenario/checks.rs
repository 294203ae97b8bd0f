//! The checks: what the array reads against what the database wrote, the backup's
//! checksums, the volume group's export and import, and the errors the array must
//! give.

use std::fmt::Debug;

use lunsnap::{Error, LunKind};

use super::db::{expected, fnv1a, Image, Stats, Volume, BLOCK, FNV_OFFSET, MIB, VG};
use super::{Result, Va};

/// Read size for whole-LUN scans.
const CHUNK: u64 = MIB;

/// Fails with `what` unless `ok`.
pub(super) fn ensure(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

/// Frees what the operation just before dropped (a deleted LUN's mapping, a refreshed
/// or detached copy's, a restored parent's), as the `lunsnap` command that does the
/// operation does before it exits: the library queues a dropped mapping and returns,
/// and its space stays allocated until [`Va::reclaim`] frees it.
pub(super) fn reclaim(va: &mut Va) -> Result<()> {
    while va.reclaim(u64::MAX)?.remaining > 0 {}
    Ok(())
}

/// Fails unless `r` is an error that `expected` accepts; returns that error. `what`
/// names the operation in the failure.
pub(super) fn refused<T: Debug>(
    r: lunsnap::Result<T>,
    what: &str,
    expected: impl Fn(&Error) -> bool,
) -> Result<Error> {
    match r {
        Err(e) if expected(&e) => Ok(e),
        other => Err(format!("check failed: {what} should be refused: {other:?}").into()),
    }
}

/// Fails unless a read of `copy` is refused because it is detached; returns the error.
pub(super) fn detached_read(va: &mut Va, copy: u32) -> Result<Error> {
    let mut probe = vec![0u8; BLOCK as usize];
    refused(
        va.read(copy, 0, &mut probe),
        &format!("a read of detached copy {copy}"),
        |e| matches!(e, Error::Detached(n) if *n == copy),
    )
}

/// Fails unless `check()` finds no violation of the array's invariants.
pub(super) fn clean(va: &mut Va) -> Result<()> {
    let violations = va.check()?;
    for v in violations.iter().take(10) {
        eprintln!("  violation: {v}");
    }
    ensure(
        violations.is_empty(),
        &format!("check() found {} violations", violations.len()),
    )
}

/// Reads as `host` (`None`: the array's own access, as the administrator).
fn read(va: &mut Va, host: Option<u64>, lun: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
    match host {
        Some(host) => va.as_host(host).read(lun, offset, buf)?,
        None => va.read(lun, offset, buf)?,
    }
    Ok(())
}

/// Number of blocks of LUN `lun` (holding volume `v`) that differ from `image`.
pub(super) fn diff(va: &mut Va, lun: u32, v: &Volume, image: &Image, s: &mut Stats) -> Result<u64> {
    let mut got = vec![0u8; CHUNK as usize];
    let mut want = vec![0u8; CHUNK as usize];
    let mut bad = 0;
    let mut off = 0;
    while off < v.size {
        va.read(lun, off, &mut got)?;
        s.read += CHUNK;
        expected(v, image, off, &mut want);
        bad += got
            .chunks(BLOCK as usize)
            .zip(want.chunks(BLOCK as usize))
            .filter(|(g, w)| g != w)
            .count() as u64;
        off += CHUNK;
    }
    Ok(bad)
}

/// Fails unless the LUN `lun_of` names of each volume (its parent or its copy) reads
/// `images`; `what` names them in the failure.
pub(super) fn verify(
    va: &mut Va,
    images: &[Image; 3],
    lun_of: fn(&Volume) -> u32,
    what: &str,
    s: &mut Stats,
) -> Result<()> {
    for (v, image) in VG.iter().zip(images) {
        let lun = lun_of(v);
        let bad = diff(va, lun, v, image, s)?;
        ensure(
            bad == 0,
            &format!("LUN {lun}: {bad} blocks differ from {what}"),
        )?;
    }
    Ok(())
}

/// FNV-1a 64 of LUN `lun` (of `size` bytes), read whole as `host`: the backup.
pub(super) fn checksum(
    va: &mut Va,
    host: Option<u64>,
    lun: u32,
    size: u64,
    s: &mut Stats,
) -> Result<u64> {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut h = FNV_OFFSET;
    let mut off = 0;
    while off < size {
        read(va, host, lun, off, &mut buf)?;
        s.read += CHUNK;
        h = fnv1a(h, &buf);
        off += CHUNK;
    }
    Ok(h)
}

/// FNV-1a 64 of what `image` says volume `v` holds.
pub(super) fn image_checksum(v: &Volume, image: &Image) -> u64 {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut h = FNV_OFFSET;
    let mut off = 0;
    while off < v.size {
        expected(v, image, off, &mut buf);
        h = fnv1a(h, &buf);
        off += CHUNK;
    }
    h
}

/// The first line of block 0, read as `host`: the volume-group header (or `zeros`,
/// or `garbage`).
pub(super) fn read_header(va: &mut Va, host: Option<u64>, lun: u32) -> Result<String> {
    let mut buf = vec![0u8; BLOCK as usize];
    read(va, host, lun, 0, &mut buf)?;
    Ok(match buf.iter().take(128).position(|&c| c == b'\n') {
        Some(end) if end > 0 => String::from_utf8_lossy(&buf[..end]).into_owned(),
        _ if buf.iter().all(|&c| c == 0) => String::from("zeros"),
        _ => String::from("garbage"),
    })
}

/// What step 2c captures of one LUN of the volume group.
pub(super) struct Exported {
    /// The volume's name in `vg_db`.
    pub name: &'static str,
    /// Its LUN.
    pub lun: u32,
    /// The LUN's size.
    pub size: u64,
    /// Its volume-group header.
    pub header: String,
}

/// Step 2c: exports the volume group from the parents.
pub(super) fn export_vg(va: &mut Va) -> Result<Vec<Exported>> {
    let mut out = Vec::new();
    for v in &VG {
        let info = va.lun_info(v.lun)?;
        let header = read_header(va, None, v.lun)?;
        ensure(
            header.starts_with(&format!("vg_db/{} lun {} block 0 ", v.name, v.lun)),
            &format!("LUN {} holds no vg_db header: {header:?}", v.lun),
        )?;
        out.push(Exported {
            name: v.name,
            lun: v.lun,
            size: info.size,
            header,
        });
    }
    Ok(out)
}

/// Step 7c: `host` imports the copies, which must look like the exported volume group.
pub(super) fn import_vg(va: &mut Va, host: u64, export: &[Exported]) -> Result<()> {
    for (v, e) in VG.iter().zip(export) {
        let info = va.as_host(host).lun_info(v.copy)?;
        ensure(
            info.kind == LunKind::Copy
                && info.parent == Some(e.lun)
                && info.attached
                && info.size == e.size,
            &format!("LUN {} does not match the export: {info:?}", v.copy),
        )?;
        let header = read_header(va, Some(host), v.copy)?;
        ensure(
            header == e.header,
            &format!(
                "LUN {}: header {header:?}, the export has {:?}",
                v.copy, e.header
            ),
        )?;
    }
    Ok(())
}
