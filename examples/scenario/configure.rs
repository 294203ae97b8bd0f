//! The setup (the guide's starting assumption: the parent LUNs exist and are in use)
//! and the configuration process: steps 1c 2c 4c 5c 6c 7c 8c, once, by hand.

use std::time::Instant;

use lunsnap::{Access, Error, FormatOptions};

use super::checks::{
    detached_read, ensure, export_vg, import_vg, reclaim, refused, verify, Exported,
};
use super::db::{Image, Volume, BLOCK, MIB, VG};
use super::tell::{array_id, detail, guide, host, lun, ms, pool, section, size, step};
use super::{
    Cycle, Result, Va, ARRAY_ID, BACKUP_HOST, DB_HOST, DEVICE_BLOCK, IMAGE_BYTES, MAX_LUNS,
};

/// Formats the array, creates the parent LUNs and loads the database.
pub(super) fn setup(c: &mut Cycle) -> Result<Va> {
    section("setup: the parent LUNs exist and are in use (the guide's starting assumption)");
    let opts = FormatOptions {
        max_luns: MAX_LUNS,
        array_id: ARRAY_ID,
        ..FormatOptions::default()
    };
    let mut va = c.n.format(c.path, IMAGE_BYTES, &opts)?;
    step(
        "setup",
        &format!(
            "format the virtual array (array-id {}): extent size {}, LUNs 0 to {}",
            array_id(),
            size(u64::from(va.extent_size())),
            MAX_LUNS - 1
        ),
    );
    c.how(
        &format!(
            "format $IMG --size {}M --max-luns {MAX_LUNS}",
            IMAGE_BYTES / MIB
        ),
        &format!(
            "Array::format(FileDevice::create(IMG, {DEVICE_BLOCK}, {})?, &FormatOptions {{ \
             max_luns: {MAX_LUNS}, array_id: *b\"{}\", .. }})",
            IMAGE_BYTES / u64::from(DEVICE_BLOCK),
            array_id()
        ),
    );
    pool(&va.pool_info(), "");
    for v in &VG {
        va.create_lun(v.lun, v.size)?;
    }
    step("setup", "create the parent LUNs of volume group vg_db");
    let each = |f: fn(&Volume) -> String| VG.iter().map(f).collect::<Vec<_>>().join("; ");
    c.how(
        &each(|v| format!("lun create $IMG {} --size {}M", v.lun, v.size / MIB)),
        &each(|v| format!("create_lun({}, {} << 20)", v.lun, v.size / MIB)),
    );
    pool(&va.pool_info(), "each LUN reserves its full size");
    let n = c.db.load(&mut va)?;
    va.flush()?;
    step(
        "setup",
        &format!(
            "the database loads its tables: {n} blocks ({})",
            size(n * BLOCK)
        ),
    );
    c.how(
        "write $IMG 1 data.bin; write $IMG 2 index.bin; write $IMG 3 redo.bin",
        "write(1..=3, offset, block) of each block, flush()",
    );
    pool(&va.pool_info(), "");
    Ok(va)
}

/// The configuration process; returns the export of 2c.
pub(super) fn configuration(c: &mut Cycle, va: &mut Va) -> Result<Vec<Exported>> {
    section("configuration process (once, by hand): steps 1c 2c 4c 5c 6c 7c 8c");
    va.flush()?;
    step(
        "1c.",
        "prepare the parent LUNs: quiesce the database, deactivate vg_db (mounting is the \
         host's business; the array makes every write durable)",
    );
    c.how(
        "nothing: `lunsnap write` flushes before it exits",
        "flush()",
    );
    let export = export_vg(va)?;
    step(
        "2c.",
        "capture the configuration: export vg_db (LUN numbers, sizes, volume-group headers)",
    );
    c.how(
        "lun list $IMG --json; read $IMG 1 hdr.bin --length 4K   (and 2, 3)",
        "lun_info(1..=3), read(n, 0, header)",
    );
    let listed: Vec<String> = export
        .iter()
        .map(|e| format!("{} = LUN {} ({})", e.name, e.lun, size(e.size)))
        .collect();
    detail(&format!("exported vg_db: {}", listed.join(", ")));
    define_copies(c, va)?;
    let at_copy = make_copies(c, va)?;
    permissions(c, va)?;
    release(c, va, &at_copy)?;
    import_vg(va, BACKUP_HOST, &export)?;
    step(
        "7c.",
        "configure the copies for the software: import vg_db as vg_db_bc on the backup host",
    );
    import_how(c);
    detail("verified: kinds, parents, sizes and volume-group headers match the export of 2c");
    step(
        "8c.",
        "update the copies for consistency, if needed: not needed (they were copied from \
         quiesced parents at 1c, and 6c verified them block by block)",
    );
    Ok(export)
}

/// Step 4c: attaches the copies of `vg_db` as one consistency group; `what` says why,
/// and the time it took follows.
pub(super) fn attach_group(c: &mut Cycle, va: &mut Va, what: &str) -> Result<()> {
    let t = Instant::now();
    va.attach_many(&VG.map(|v| v.copy))?;
    let took = t.elapsed();
    reclaim(va)?;
    step("4c.", &format!("{what} in {}", ms(took)));
    guide(&format!(
        "armcopy -s 11 -a true {}   (and 12, 13)",
        array_id()
    ));
    c.how(
        "copy attach $IMG 11 12 13",
        "attach_many(&[11, 12, 13]), reclaim(u64::MAX)",
    );
    Ok(())
}

/// Step 7c's commands: the backup host discovers the copies and reads their headers.
pub(super) fn import_how(c: &Cycle) {
    c.how(
        &format!(
            "lun list $IMG --json --as {0}; read $IMG 11 hdr.bin --length 4K --as {0}   \
             (and 12, 13)",
            host(BACKUP_HOST)
        ),
        "as_host(backup).lun_info(11..=13), as_host(backup).read(n, 0, header)",
    );
}

/// Step 4c, first half: the copies are defined detached, holding nothing.
fn define_copies(c: &mut Cycle, va: &mut Va) -> Result<()> {
    for v in &VG {
        va.create_copy(v.lun, v.copy, false)?;
    }
    step("4c.", "define the business copies, detached");
    guide(&format!("armcopy -p 1 -s 11 -a false {}", array_id()));
    c.how(
        "copy create $IMG --parent 1 --copy 11 --detached   (and 2 -> 12, 3 -> 13)",
        "create_copy(1, 11, false), create_copy(2, 12, false), create_copy(3, 13, false)",
    );
    lun(va, 11, "no data, no reservation")?;
    let e = detached_read(va, 11)?;
    detail(&format!("a read of LUN 11 is refused: \"{e}\""));
    pool(&va.pool_info(), "nothing reserved for the copies yet");
    Ok(())
}

/// Step 4c, second half: the copies are made as one consistency group. Returns what
/// they hold: the database at that point.
fn make_copies(c: &mut Cycle, va: &mut Va) -> Result<[Image; 3]> {
    let before = va.pool_info();
    attach_group(
        c,
        va,
        "make the copies of vg_db as one consistency group: one attach, one point in time \
         for all 3,",
    )?;
    let after = va.pool_info();
    let parents_size: u64 = VG.iter().map(|v| v.size).sum();
    ensure(
        after.allocated_bytes == before.allocated_bytes,
        "attaching the copies moved data",
    )?;
    ensure(
        after.reserved_bytes == before.reserved_bytes + parents_size,
        "the copies did not reserve their parents' sizes",
    )?;
    pool(
        &after,
        "no data moved; each copy reserves its parent's size",
    );
    lun(va, 11, "all of it shared with LUN 1")?;
    let e = refused(
        va.create_copy(1, 21, true),
        "another attached copy of LUN 1",
        |e| match e {
            Error::NoSpace { needed, available } => {
                *needed == VG[0].size && *available == after.unreserved_bytes
            }
            _ => false,
        },
    )?;
    detail(&format!(
        "full-size reservation: another attached copy of LUN 1 is refused: \"{e}\"; \
         nothing changed"
    ));
    c.how(
        "copy create $IMG --parent 1 --copy 21 --attached   -> exit 1",
        "create_copy(1, 21, true) -> Err(NoSpace { .. })",
    );
    ensure(
        va.pool_info() == after,
        "a refused copy create changed the pool",
    )?;
    Ok(c.db.images.clone())
}

/// Step 5c: the backup host may read the copies and nothing else; the database host
/// keeps the parents and cannot see the copies (the guide's reason: a host that
/// discovers a copy may write a signature on it).
fn permissions(c: &mut Cycle, va: &mut Va) -> Result<()> {
    va.add_host(DB_HOST, "db-host")?;
    va.add_host(BACKUP_HOST, "backup-host")?;
    for v in &VG {
        va.grant(v.lun, DB_HOST, Access::ReadWrite)?;
        va.grant(v.copy, BACKUP_HOST, Access::Read)?;
    }
    va.set_security(true)?;
    step(
        "5c.",
        "set permissions on the copies: the backup host may read them, the database host \
         keeps the parents; security on",
    );
    guide("armsecure ...   (Secure Manager VA)");
    let (db, backup) = (host(DB_HOST), host(BACKUP_HOST));
    c.how(
        &format!("host add $IMG {db} --name db-host; host add $IMG {backup} --name backup-host"),
        &format!(
            "add_host({DB_HOST:#x}, \"db-host\"), add_host({BACKUP_HOST:#x}, \"backup-host\")"
        ),
    );
    c.how(
        &format!("grant $IMG 1 {db} --access write   (and 2, 3)"),
        "grant(1..=3, db, Access::ReadWrite)",
    );
    c.how(
        &format!("grant $IMG 11 {backup} --access read   (and 12, 13); security enable $IMG"),
        "grant(11..=13, backup, Access::Read), set_security(true)",
    );
    reach(c, va)
}

/// Step 5c's checks: each host discovers exactly its own LUNs, and the backup host only
/// reads.
fn reach(c: &mut Cycle, va: &mut Va) -> Result<()> {
    ensure(
        va.as_host(DB_HOST).visible_luns() == VG.map(|v| v.lun)
            && va.as_host(BACKUP_HOST).visible_luns() == VG.map(|v| v.copy),
        "each host should discover exactly its own LUNs",
    )?;
    let mut probe = vec![0u8; BLOCK as usize];
    let e = refused(
        va.as_host(DB_HOST).read(11, 0, &mut probe),
        "the database host reading copy 11",
        |e| matches!(e, Error::NoSuchLun(11)),
    )?;
    detail(&format!(
        "the database host cannot discover copy 11: \"{e}\""
    ));
    va.as_host(BACKUP_HOST).read(11, 0, &mut probe)?;
    let e = refused(
        va.as_host(BACKUP_HOST).write(11, 0, &probe),
        "the backup host writing copy 11",
        |e| matches!(e, Error::ReadOnlyAccess { .. }),
    )?;
    detail(&format!(
        "the backup host reads copy 11, but cannot write it: \"{e}\""
    ));
    c.how(
        &format!(
            "lun list $IMG --as {}   -> LUNs 11, 12, 13 only",
            host(BACKUP_HOST)
        ),
        "as_host(backup).visible_luns() -> [11, 12, 13]",
    );
    Ok(())
}

/// Step 6c: the database resumes; the copies keep the point in time of 4c.
fn release(c: &mut Cycle, va: &mut Va, at_copy: &[Image; 3]) -> Result<()> {
    let n = c.db.transactions(va, 100, 2)?.len();
    va.flush()?;
    step(
        "6c.",
        &format!(
            "release the parents: activate vg_db, the database resumes: 100 transactions, \
             {n} blocks"
        ),
    );
    c.how("", "write() of each block, flush()");
    lun(va, 11, "the copy's own space grows as the parent moves on")?;
    pool(
        &va.pool_info(),
        "the parents' changes went to fresh extents",
    );
    let s = &mut c.db.stats;
    verify(va, at_copy, |v| v.copy, "the point-in-time image", s)?;
    verify(va, &c.db.images, |v| v.lun, "what the database wrote", s)?;
    detail("verified: the copies still read the point-in-time image; the parents the new data");
    Ok(())
}
