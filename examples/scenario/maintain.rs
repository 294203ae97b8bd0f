//! The maintenance process (step 10c, by hand: the guide's three ways to discard a
//! copy), then a close and a reopen that keep everything.

use std::time::Instant;

use lunsnap::{Error, LunKind, PoolInfo};

use super::checks::{clean, detached_read, diff, ensure, reclaim, refused, verify};
use super::db::{Image, VG};
use super::tell::{array_id, detail, disk_usage, guide, lun_row, ms, pool, section, size, step};
use super::{Cycle, Result, Va};

/// The maintenance process. Returns what copy 12 holds after its refresh.
pub(super) fn maintenance(c: &mut Cycle, va: &mut Va) -> Result<Image> {
    section("maintenance process (by hand, as needed): step 10c");
    let n = c.db.transactions(va, 100, 6)?.len();
    va.flush()?;
    detail(&format!(
        "(the database ran 100 more transactions, {n} blocks: the copies have aged)"
    ));
    step(
        "3c.",
        "prepare the copies to discard: the backup host deactivates vg_db_bc (nothing in \
         the array)",
    );
    let e = refused(
        va.delete(1, false),
        "deleting LUN 1, which has copies",
        |e| matches!(e, Error::HasCopies { lun: 1, copies: 1 }),
    )?;
    step("10c.", "a parent with copies is not deleted by accident");
    c.how(
        &format!("lun delete $IMG 1   -> exit 1: \"{e}\""),
        &format!("delete(1, false) -> Err({e:?})"),
    );
    let at_refresh = reattach(c, va)?;
    detach(c, va)?;
    let before = va.pool_info();
    va.delete(13, false)?;
    reclaim(va)?;
    step("10c.", "option 1, create/delete: discard copy 13 for good");
    guide(&format!("armcfg -L 13 -d {}", array_id()));
    c.how("lun delete $IMG 13", "delete(13, false), reclaim(u64::MAX)");
    let e = refused(va.lun_info(13), "LUN 13 after its delete", |e| {
        matches!(e, Error::NoSuchLun(13))
    })?;
    let after = va.pool_info();
    ensure(
        after.reserved_bytes + VG[2].size == before.reserved_bytes,
        "delete did not release the copy's reservation",
    )?;
    detail(&format!(
        "LUN 13 is gone: \"{e}\"; pool: reserved {} -> {}",
        size(before.reserved_bytes),
        size(after.reserved_bytes)
    ));
    Ok(at_refresh)
}

/// Option 2, attach/attach: copy 12 is made again, dropping what it had of its own.
/// Returns what it holds now.
fn reattach(c: &mut Cycle, va: &mut Va) -> Result<Image> {
    let aged = va.lun_info(12)?;
    va.attach(12)?;
    reclaim(va)?;
    step(
        "10c.",
        "option 2, attach/attach: discard copy 12 by making it again",
    );
    guide(&format!("armcopy -s 12 -a true {}", array_id()));
    c.how("copy attach $IMG 12", "attach(12), reclaim(u64::MAX)");
    let now = va.lun_info(12)?;
    ensure(
        aged.exclusive_bytes > 0 && now.exclusive_bytes == 0,
        "copy 12 had not aged, or still holds space of its own",
    )?;
    detail(&format!(
        "LUN 12: exclusive {} -> 0: the resource consumption cycle starts over",
        size(aged.exclusive_bytes)
    ));
    Ok(c.db.images[1].clone())
}

/// Option 3, attach/detach: copy 11 gives back its space and reservation but keeps its
/// number.
fn detach(c: &mut Cycle, va: &mut Va) -> Result<()> {
    let before = va.pool_info();
    let own = va.lun_info(11)?.exclusive_bytes;
    ensure(own > 0, "copy 11 had not aged")?;
    va.detach(11)?;
    reclaim(va)?;
    step(
        "10c.",
        "option 3, attach/detach: discard copy 11, keeping its number",
    );
    guide(&format!("armcopy -s 11 -a false {}", array_id()));
    c.how("copy detach $IMG 11", "detach(11), reclaim(u64::MAX)");
    let after = va.pool_info();
    ensure(
        after.reserved_bytes + VG[0].size == before.reserved_bytes
            && after.allocated_bytes + own == before.allocated_bytes,
        "detach did not release the copy's reservation and space",
    )?;
    detail(&format!(
        "pool: reserved {} -> {}, allocated {} -> {} (the copy's own {} freed)",
        size(before.reserved_bytes),
        size(after.reserved_bytes),
        size(before.allocated_bytes),
        size(after.allocated_bytes),
        size(own)
    ));
    let e = detached_read(va, 11)?;
    detail(&format!(
        "a read of LUN 11 is refused until it is attached: \"{e}\""
    ));
    Ok(())
}

/// The image is closed and opened again: the LUNs, the database and copy 12's refresh
/// (`at_refresh`) must all be there. Prints the summary.
pub(super) fn finish(c: &mut Cycle, va: Va, at_refresh: &Image, started: Instant) -> Result<()> {
    section("close and reopen: everything survives");
    let file = va.close()?.into_file();
    let mut va = c.n.reopen(file, c.path)?;
    step("end", "the image is closed and opened again; its LUNs:");
    c.how(
        "lun list $IMG",
        "close() commits; Array::open(FileDevice::open(IMG, 4096)?, ..), luns()",
    );
    let luns = va.luns()?;
    let layout: Vec<(u32, LunKind, Option<u32>, bool)> = luns
        .iter()
        .map(|l| (l.lun, l.kind, l.parent, l.attached))
        .collect();
    let expected = vec![
        (1, LunKind::Lun, None, true),
        (2, LunKind::Lun, None, true),
        (3, LunKind::Lun, None, true),
        (11, LunKind::Copy, Some(1), false),
        (12, LunKind::Copy, Some(2), true),
    ];
    ensure(
        layout == expected,
        &format!("LUNs after reopen: {layout:?}, expected {expected:?}"),
    )?;
    luns.iter().for_each(lun_row);
    verify(
        &mut va,
        &c.db.images,
        |v| v.lun,
        "the database",
        &mut c.db.stats,
    )?;
    let refreshed = diff(&mut va, 12, &VG[1], at_refresh, &mut c.db.stats)?;
    ensure(
        refreshed == 0,
        &format!("copy 12: {refreshed} blocks differ from its refresh"),
    )?;
    clean(&mut va)?;
    detail("verified: the parents read the database, copy 12 its refresh of 10c; check: clean");
    let p = va.pool_info();
    pool(&p, "");
    summary(c, &p, started);
    Ok(())
}

/// The last lines: what was verified, and the figures of the whole run.
fn summary(c: &Cycle, p: &PoolInfo, started: Instant) {
    say!();
    say!(
        "summary: configuration, backup (full and incremental), restore, power cut and \
         maintenance all verified; \
         the database wrote {} and {} were read back to check and back up; 0 mismatches",
        size(c.db.stats.written),
        size(c.db.stats.read)
    );
    say!(
        "         {} LUNs left, generation {}, the image occupies {} on disk; finished in {}",
        p.luns,
        p.generation,
        disk_usage(c.path),
        ms(started.elapsed())
    );
}
