//! An incremental backup, the day after a full one: only the ranges where today's copy
//! differs from yesterday's are read, and the full backup plus that incremental give
//! today's copy back exactly.
//!
//! The redo log (LUN 3) is the volume backed up so: a second copy of it is what the
//! pool has room for (every copy reserves its parent's size). Yesterday's copy is 13,
//! backed up in full at 9c; today's is 23, taken after the day's transactions.

use std::collections::BTreeSet;
use std::time::Instant;

use lunsnap::{Access, DiffRange};

use super::checks::{ensure, reclaim};
use super::db::{expected, Image, VG};
use super::tell::{detail, host, size, step};
use super::{Cycle, Result, Va, BACKUP_HOST};

/// Yesterday's copy of the redo log: 9c backed it up in full.
const YESTERDAY: u32 = 13;
/// Today's copy of the redo log.
const TODAY: u32 = 23;

/// The incremental backup of the redo log; `at_1c` is what the database held when
/// yesterday's copy was made.
pub(super) fn incremental(c: &mut Cycle, va: &mut Va, at_1c: &[Image; 3]) -> Result<()> {
    let v = &VG[2];
    let backup = host(BACKUP_HOST);
    va.create_copy(v.lun, TODAY, true)?;
    va.grant(TODAY, BACKUP_HOST, Access::Read)?;
    step(
        "9c+",
        "the next backup is incremental: today's copy 23 of the redo log against \
         yesterday's copy 13, which 9c backed up in full",
    );
    c.how(
        &format!(
            "copy create $IMG --parent 3 --copy 23 --attached; grant $IMG 23 {backup} \
             --access read"
        ),
        "create_copy(3, 23, true), grant(23, backup, Access::Read)",
    );
    let t = Instant::now();
    let changed = va.as_host(BACKUP_HOST).diff(YESTERDAY, TODAY, 0, v.size)?;
    let took = t.elapsed();
    let es = u64::from(va.extent_size());
    ensure(
        extents(&changed, es) == written_since(&at_1c[2], &c.db.images[2], es),
        "the diff is not the extents the database wrote since yesterday's copy",
    )?;
    let bytes: u64 = changed.iter().map(|r| r.length).sum();
    c.how(
        &format!("diff $IMG 13 23 --as {backup}"),
        "as_host(backup).diff(13, 23, 0, 4 << 20)",
    );
    detail(&format!(
        "{} range{}, {} of {}, may differ, found in {} µs: exactly the extents the \
         database wrote since yesterday's copy",
        changed.len(),
        if changed.len() == 1 { "" } else { "s" },
        size(bytes),
        size(v.size),
        took.as_micros()
    ));
    let full = read_all(c, va, YESTERDAY, v.size)?;
    let (pieces, read) = take(c, va, &changed)?;
    c.how(
        &format!(
            "read $IMG 23 redo-inc.raw --changed-since 13 --as {backup}   (the ranges in \
             redo-inc.raw.ranges)"
        ),
        "as_host(backup).map(23, ..) of each range, read() of its data (holes skipped)",
    );
    restores(c, va, full, &pieces)?;
    detail(&format!(
        "verified: yesterday's full backup with the incremental over it is today's copy, \
         byte for byte; the incremental read {} of today's {}",
        size(read),
        size(v.size)
    ));
    va.delete(TODAY, false)?;
    reclaim(va)?;
    c.how("lun delete $IMG 23", "delete(23, false), reclaim(u64::MAX)");
    Ok(())
}

/// The logical extents `ranges` cover.
fn extents(ranges: &[DiffRange], es: u64) -> BTreeSet<u64> {
    ranges
        .iter()
        .flat_map(|r| r.offset / es..(r.offset + r.length).div_ceil(es))
        .collect()
}

/// The logical extents holding a block whose version differs between `old` and `now`.
fn written_since(old: &Image, now: &Image, es: u64) -> BTreeSet<u64> {
    let block = super::db::BLOCK;
    now.iter()
        .filter(|(b, v)| old.get(b) != Some(v))
        .map(|(b, _)| b * block / es)
        .collect()
}

/// LUN `lun` (`len` bytes) read whole as the backup host: a full backup.
fn read_all(c: &mut Cycle, va: &mut Va, lun: u32, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    va.as_host(BACKUP_HOST).read(lun, 0, &mut buf)?;
    c.db.stats.read += len;
    Ok(buf)
}

/// Pieces of a LUN's contents, each with its offset.
type Pieces = Vec<(u64, Vec<u8>)>;

/// The incremental backup: today's contents of the `changed` ranges; holes are not
/// read (they are zeros). Returns the pieces and the bytes read.
fn take(c: &mut Cycle, va: &mut Va, changed: &[DiffRange]) -> Result<(Pieces, u64)> {
    let (mut pieces, mut read) = (Vec::new(), 0);
    for r in changed {
        for m in va.as_host(BACKUP_HOST).map(TODAY, r.offset, r.length)? {
            let mut data = vec![0u8; m.length as usize];
            if m.data {
                va.as_host(BACKUP_HOST).read(TODAY, m.offset, &mut data)?;
                c.db.stats.read += m.length;
                read += m.length;
            }
            pieces.push((m.offset, data));
        }
    }
    Ok((pieces, read))
}

/// Fails unless yesterday's full backup with today's incremental over it reads as
/// today's copy, and as the database.
fn restores(c: &mut Cycle, va: &mut Va, full: Vec<u8>, pieces: &Pieces) -> Result<()> {
    let v = &VG[2];
    let mut restored = full;
    for (at, data) in pieces {
        let at = *at as usize;
        restored[at..at + data.len()].copy_from_slice(data);
    }
    let today = read_all(c, va, TODAY, v.size)?;
    let mut want = vec![0u8; v.size as usize];
    expected(v, &c.db.images[2], 0, &mut want);
    ensure(
        restored == today && today == want,
        "yesterday's full backup with today's incremental over it is not today's copy",
    )?;
    c.how(
        "restore: write $IMG 3 redo-full.raw (9c's backup of 13); write $IMG 3 \
         redo-inc.raw --ranges redo-inc.raw.ranges",
        "full backup, then each incremental piece written at its offset",
    );
    Ok(())
}
