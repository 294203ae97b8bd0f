//! The restore process (steps 1r 2r 3r 4r, on demand) after a runaway batch job, and
//! a power cut after it.

use std::time::Instant;

use super::backup::Backup;
use super::checks::{checksum, clean, diff, ensure, read_header, reclaim, verify};
use super::db::{BLOCK, MIB, VG};
use super::tell::{array_id, detail, guide, lun, ms, section, step};
use super::{Cycle, Result, Va};

/// The restore process: the damaged parents get the backup's contents back.
pub(super) fn restore(c: &mut Cycle, va: &mut Va, b: &Backup) -> Result<()> {
    section("restore process (on demand): steps 1r 2r 3r 4r");
    damage(c, va)?;
    for (v, sum) in VG.iter().zip(&b.catalog) {
        let now = checksum(va, None, v.copy, v.size, &mut c.db.stats)?;
        ensure(
            now == *sum,
            &format!("copy {} no longer matches the backup catalog", v.copy),
        )?;
    }
    step(
        "1r.",
        "prepare the copies: released by the backup software, they hold the backup \
         (checksums match the catalog)",
    );
    va.flush()?;
    step(
        "2r.",
        "prepare the parents: stop the database, deactivate vg_db",
    );
    c.how("", "flush()");
    let t = Instant::now();
    for v in &VG {
        va.restore(v.copy)?;
    }
    let took = t.elapsed();
    reclaim(va)?;
    step(
        "3r.",
        &format!("copy to parent: 3 restores in {}", ms(took)),
    );
    guide(&format!("armcopy -r 1 {}", array_id()));
    c.how(
        "copy restore $IMG 11   (and 12, 13: lunsnap names the copy)",
        "restore(11), restore(12), restore(13), reclaim(u64::MAX)",
    );
    restarted(c, va, b)
}

/// A runaway batch job overwrites part of LUN 1 and trims the start of LUN 2.
fn damage(c: &mut Cycle, va: &mut Va) -> Result<()> {
    let garbage = b"** a runaway batch job was here **".repeat(4096 / 32);
    for b in 50..150u64 {
        va.write(1, b * BLOCK, &garbage[..BLOCK as usize])?;
    }
    va.discard(2, 0, MIB)?;
    step(
        "!!",
        "the data is damaged: a runaway batch job overwrites 100 blocks of LUN 1 and trims \
         the first MiB of LUN 2 (its volume-group header included)",
    );
    c.how("", "write(1, ..) of 100 blocks, discard(2, 0, 1 << 20)");
    let bad1 = diff(va, 1, &VG[0], &c.db.images[0], &mut c.db.stats)?;
    let bad2 = diff(va, 2, &VG[1], &c.db.images[1], &mut c.db.stats)?;
    ensure(
        bad1 == 100 && bad2 == VG[1].loaded,
        &format!("damage: {bad1} and {bad2} bad blocks"),
    )?;
    detail(&format!(
        "damage found: LUN 1 has {bad1} bad blocks, LUN 2 {bad2} (its header now reads {:?})",
        read_header(va, None, 2)?
    ));
    Ok(())
}

/// Step 4r: the database restarts on the restored parents, which must read the backup;
/// the copies are left as they were.
fn restarted(c: &mut Cycle, va: &mut Va, b: &Backup) -> Result<()> {
    for (v, sum) in VG.iter().zip(&b.catalog) {
        let now = checksum(va, None, v.lun, v.size, &mut c.db.stats)?;
        ensure(
            now == *sum,
            &format!(
                "restored LUN {}: checksum {now:#018x}, the backup has {sum:#018x}",
                v.lun
            ),
        )?;
    }
    // The database restarts from the restored image, its redo log included.
    c.db.images = b.images.clone();
    c.db.redo_head = b.redo_head;
    verify(va, &b.images, |v| v.lun, "the backup", &mut c.db.stats)?;
    step(
        "4r.",
        "release the parents: the database restarts on the restored data",
    );
    detail(
        "verified: each parent's checksum equals the catalog, and every block is the \
         database's at 1c",
    );
    lun(va, 1, "parent and copy share every extent again")?;
    for v in &VG {
        let info = va.lun_info(v.copy)?;
        ensure(
            info.attached && info.exclusive_bytes == 0,
            &format!("copy {} changed by the restore", v.copy),
        )?;
    }
    Ok(())
}

/// The database writes, flushes, writes more, and the power fails before the next
/// flush: the reopened array must be at the last commit, with each later write either
/// there or not. Returns the reopened array.
pub(super) fn power_cut(c: &mut Cycle, va: Va, b: &Backup) -> Result<Va> {
    let mut va = va;
    section("crash safety: a power cut after the restore");
    let n = c.db.transactions(&mut va, 50, 4)?.len();
    va.flush()?;
    let generation = va.pool_info().generation;
    let committed = c.db.images.clone();
    let pending = c.db.transactions(&mut va, 20, 5)?;
    step(
        "app",
        &format!(
            "the database runs 50 transactions ({n} blocks) and flushes, then 20 more ({} \
             blocks) that are never flushed",
            pending.len()
        ),
    );
    // No commit: what a power cut leaves. The file is opened again as it is.
    let file = va.into_device().into_file();
    let mut va = c.n.reopen(file, c.path)?;
    step(
        "cut",
        "power cut before the next flush, then the image is opened again",
    );
    c.how(
        "",
        "into_device() (no commit), then Array::open(FileDevice::open(IMG, 4096)?, ..)",
    );
    ensure(
        va.pool_info().generation == generation,
        "reopen did not come back at the last commit",
    )?;
    let (newer, touched) = c.db.settle(&mut va, &committed, &pending)?;
    let s = &mut c.db.stats;
    verify(&mut va, &c.db.images, |v| v.lun, "the database", s)?;
    verify(&mut va, &b.images, |v| v.copy, "the backup", s)?;
    clean(&mut va)?;
    detail(&format!(
        "reopened at generation {generation}, the last commit: every flushed write is \
         there; of the {touched} blocks written since, {newer} read their new content, the \
         others their committed one (either is allowed); the copies still hold the backup"
    ));
    c.how("check $IMG   -> clean", "check() -> no violations");
    Ok(va)
}
