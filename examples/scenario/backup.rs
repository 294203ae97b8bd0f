//! The backup process: steps 1c 3c 4c 6c 7c 9c, repeated on a schedule, then an
//! incremental backup (`incremental.rs`).

use std::time::Instant;

use super::checks::{checksum, ensure, image_checksum, import_vg, verify, Exported};
use super::configure::{attach_group, import_how};
use super::db::{Image, VG};
use super::tell::{detail, host, ms, section, size, step};
use super::{Cycle, Result, Va, BACKUP_HOST};

/// What a backup leaves: its catalog, and the database as it was backed up.
pub(super) struct Backup {
    /// FNV-1a 64 of each copy, in `VG`'s order.
    pub catalog: Vec<u64>,
    /// The database's images at 1c.
    pub images: [Image; 3],
    /// The redo log's head at 1c.
    pub redo_head: u64,
}

/// One round of the backup process.
pub(super) fn backup(c: &mut Cycle, va: &mut Va, export: &[Exported]) -> Result<Backup> {
    section("backup process (repeated, on a schedule): steps 1c 3c 4c 6c 7c 9c");
    va.flush()?;
    step("1c.", "quiesce the database, deactivate vg_db");
    c.how("", "flush()");
    step(
        "3c.",
        "prepare the copies: the backup host deactivates vg_db_bc (nothing in the array)",
    );
    refresh(c, va)?;
    let images = c.db.images.clone();
    let redo_head = c.db.redo_head;
    let n = c.db.transactions(va, 150, 3)?.len();
    va.flush()?;
    step(
        "6c.",
        &format!("release the parents: the database resumes: 150 transactions, {n} blocks"),
    );
    c.how("", "write() of each block, flush()");
    verify(va, &images, |v| v.copy, "the image at 1c", &mut c.db.stats)?;
    detail("verified: the copies still read the database as it was at 1c");
    import_vg(va, BACKUP_HOST, export)?;
    step(
        "7c.",
        "import vg_db_bc on the backup host: it matches the export",
    );
    import_how(c);
    let catalog = to_tape(c, va, &images)?;
    super::incremental::incremental(c, va, &images)?;
    Ok(Backup {
        catalog,
        images,
        redo_head,
    })
}

/// Step 4c: the attached copies are made again, as one consistency group; the old
/// copies' own extents are freed.
fn refresh(c: &mut Cycle, va: &mut Va) -> Result<()> {
    let old = va.lun_info(11)?;
    let before = va.pool_info();
    attach_group(
        c,
        va,
        "make the copy: refresh the attached copies as one consistency group",
    )?;
    ensure(
        va.as_host(BACKUP_HOST).visible_luns() == VG.map(|v| v.copy),
        "the refresh lost the backup host's grants",
    )?;
    let fresh = va.lun_info(11)?;
    ensure(
        fresh.exclusive_bytes == 0 && fresh.attached_generation > old.attached_generation,
        "the refreshed copy still holds space of its own",
    )?;
    let after = va.pool_info();
    ensure(
        after.allocated_bytes < before.allocated_bytes,
        "refreshing the copies freed nothing",
    )?;
    detail(&format!(
        "LUN 11: exclusive {} -> 0; pool allocated {} -> {}: the old copies' own extents \
         were freed, the cycle starts over",
        size(old.exclusive_bytes),
        size(before.allocated_bytes),
        size(after.allocated_bytes)
    ));
    Ok(())
}

/// Step 9c: the backup host reads each copy whole; its checksums make the catalog,
/// which must match the database at 1c (`images`).
fn to_tape(c: &mut Cycle, va: &mut Va, images: &[Image; 3]) -> Result<Vec<u64>> {
    let t = Instant::now();
    let mut catalog = Vec::new();
    for v in &VG {
        let sum = checksum(va, Some(BACKUP_HOST), v.copy, v.size, &mut c.db.stats)?;
        catalog.push(sum);
    }
    let took = t.elapsed();
    step(
        "9c.",
        "use the copy: the backup host backs it up to \"tape\" (each copy read whole, \
         FNV-1a 64)",
    );
    c.how(
        &format!(
            "read $IMG 11 - --as {} | backup-tool   (and 12, 13)",
            host(BACKUP_HOST)
        ),
        "as_host(backup).read(11..=13, ..) of each copy whole",
    );
    for ((v, sum), image) in VG.iter().zip(&catalog).zip(images) {
        let want = image_checksum(v, image);
        ensure(
            *sum == want,
            &format!(
                "backup of LUN {}: checksum {sum:#018x}, the database at 1c gives {want:#018x}",
                v.copy
            ),
        )?;
        detail(&format!(
            "backup catalog: LUN {} ({:>5}, {:>6}) fnv1a64 {sum:#018x}",
            v.copy,
            v.name,
            size(v.size)
        ));
    }
    let total: u64 = VG.iter().map(|v| v.size).sum();
    detail(&format!(
        "verified: {} read in {}; every checksum equals the database's image at 1c",
        size(total),
        ms(took)
    ));
    Ok(catalog)
}
