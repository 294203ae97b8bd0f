//! `lunsnap demo [DIR]`: the seed's backup and restore processes, end to end.
//!
//! HP's *Business Copy VA integration guide* partitions its procedures into four
//! processes: configuration (steps 1c 2c 4c 5c 6c 7c 8c, once), backup (1c 3c 4c 6c
//! 7c 9c, on a schedule), restore (1r to 4r, on demand) and maintenance (10c, by
//! hand). The demo runs them on a sparse 64 MiB image with a toy database standing in
//! for the application (volume group `vg_db`: LUNs 1 to 3; their copies 11 to 13,
//! made as one consistency group; the database host may reach only the parents, the
//! backup host only reads the copies).
//! Each step prints the seed's step number, the seed's command where it has one, and
//! the `lunsnap` command that does the same; the array itself is driven through the
//! library. Every claim is verified: any mismatch stops the demo with exit status 1.
//! (`examples/backup_cycle.rs` is the longer library-level version.)

mod db;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lunsnap::{Access, Error, FormatOptions, LunKind, PoolInfo};

use crate::fail::{Fail, Result};
use crate::image::{self, Va};
use crate::size::human;
use db::{diff, ensure, verify, Database, Volume, BLOCK, MIB, VG};

const IMAGE_BYTES: u64 = 64 * MIB;
const MAX_LUNS: u32 = 64;
/// The seed's `<array-id>`, stored in the superblock.
const ARRAY_ID: [u8; 16] = *b"VA7100-demo-0001";
const IMAGE_NAME: &str = "lunsnap-demo.img";
/// The host the database runs on (a WWN-like id).
const DB_HOST: u64 = 0x5006_0b00_00c2_6201;
/// The backup host, which imports the copies and backs them up.
const BACKUP_HOST: u64 = 0x5006_0b00_00c2_6204;

/// Removes the temporary directory however the demo ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

macro_rules! say {
    ($($t:tt)*) => {{
        // The narration is best effort: a closed stdout must not stop (or panic) the demo.
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn section(title: &str) {
    say!();
    say!("== {title}");
}

fn step(label: &str, text: &str) {
    say!("{label:>5} {text}");
}

/// The seed's command line for a step.
fn seed(text: &str) {
    say!("        seed:    {text}");
}

/// The `lunsnap` command line that does what the step does.
fn cli(text: &str) {
    say!("        lunsnap: {text}");
}

fn detail(text: &str) {
    say!("        {text}");
}

fn pool(p: &PoolInfo, note: &str) {
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(" ({note})")
    };
    detail(&format!(
        "pool: capacity {}, reserved {}, unreserved {}, allocated {}, free {}{note}",
        human(p.capacity_bytes),
        human(p.reserved_bytes),
        human(p.unreserved_bytes),
        human(p.allocated_bytes),
        human(p.free_bytes)
    ));
}

fn lun(va: &mut Va, n: u32, note: &str) -> Result<()> {
    let l = va.lun_info(n)?;
    let what = match (l.kind, l.parent, l.attached) {
        (LunKind::Copy, Some(p), true) => format!("copy of {p}, attached"),
        (LunKind::Copy, Some(p), false) => format!("copy of {p}, detached"),
        (LunKind::Copy, None, _) => String::from("orphaned copy"),
        (LunKind::Lun, _, _) => String::from("plain LUN"),
    };
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(" ({note})")
    };
    detail(&format!(
        "LUN {n}: {what}, reserved {}, exclusive {}, shared {}{note}",
        human(l.reserved_bytes),
        human(l.exclusive_bytes),
        human(l.shared_bytes)
    ));
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn array_id() -> String {
    String::from_utf8_lossy(&ARRAY_ID).into_owned()
}

/// Runs the demo in `dir` (kept) or in a new temporary directory (removed).
pub fn run(dir: Option<&Path>) -> Result<u8> {
    let started = Instant::now();
    let (dir, _temp) = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| Fail::io("create directory", d, &e))?;
            (d.to_path_buf(), None)
        }
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let d =
                std::env::temp_dir().join(format!("lunsnap-demo-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&d).map_err(|e| Fail::io("create directory", &d, &e))?;
            (d.clone(), Some(TempDir(d)))
        }
    };
    let path = dir.join(IMAGE_NAME);
    say!("lunsnap demo: HP Business Copy VA's backup and restore processes, end to end");
    say!(
        "IMG={} ({} sparse image; {})",
        path.display(),
        human(IMAGE_BYTES),
        if _temp.is_none() {
            "kept: inspect it with `lunsnap info $IMG`, `lunsnap lun list $IMG`"
        } else {
            "removed at the end"
        }
    );
    let mut va = setup(&path)?;
    let mut db = Database::new();
    let n = db.load(&mut va)?;
    va.flush()?;
    step(
        "setup",
        &format!("the database loads its tables: {n} blocks"),
    );
    cli("write $IMG 1 data.bin; write $IMG 2 index.bin; write $IMG 3 redo.bin");
    pool(&va.pool_info(), "");

    let export = configuration(&mut va, &mut db)?;
    let (catalog, at_backup, redo_at_backup) = backup(&mut va, &mut db, &export)?;
    restore(&mut va, &mut db, &catalog, &at_backup, redo_at_backup)?;
    let mut va = power_cut(va, &path, &mut db, &at_backup)?;
    let at_refresh = maintenance(&mut va, &mut db)?;
    finish(va, &path, &mut db, &at_refresh, started)?;
    Ok(0)
}

fn setup(path: &Path) -> Result<Va> {
    section("setup: the parent LUNs exist and are in use (the seed's starting assumption)");
    // The demo's own image: replaced if an earlier run left it (unless it is in use).
    if path.exists() {
        let f = std::fs::File::open(path).map_err(|e| Fail::io("open", path, &e))?;
        image::lock(&f, path, image::Access::Write)?;
        std::fs::remove_file(path).map_err(|e| Fail::io("remove", path, &e))?;
    }
    let opts = FormatOptions {
        max_luns: MAX_LUNS,
        array_id: ARRAY_ID,
        ..FormatOptions::default()
    };
    let mut va = image::create_new(path, path, IMAGE_BYTES, &opts)?;
    step(
        "setup",
        &format!(
            "format the virtual array (array-id {}): extent size {}, LUNs 0 to {}",
            array_id(),
            human(u64::from(va.extent_size())),
            MAX_LUNS - 1
        ),
    );
    cli("format $IMG --size 64M --max-luns 64");
    pool(&va.pool_info(), "");
    for v in &VG {
        va.create_lun(v.lun, v.size)?;
    }
    step("setup", "create the parent LUNs of volume group vg_db");
    cli("lun create $IMG 1 --size 16M; lun create $IMG 2 --size 8M; lun create $IMG 3 --size 4M");
    pool(&va.pool_info(), "each LUN reserves its full size");
    Ok(va)
}

/// What 2c captures of one LUN of the volume group.
struct Exported {
    lun: u32,
    size: u64,
    header: String,
}

fn export_vg(va: &mut Va) -> Result<Vec<Exported>> {
    let mut out = Vec::new();
    for v in &VG {
        let info = va.lun_info(v.lun)?;
        let header = db::read_header(va, v.lun)?;
        ensure(
            header.starts_with(&format!("vg_db/{} lun {} block 0 ", v.name, v.lun)),
            &format!("LUN {} holds no vg_db header: {header:?}", v.lun),
        )?;
        out.push(Exported {
            lun: v.lun,
            size: info.size,
            header,
        });
    }
    Ok(out)
}

/// 7c: the copies must look like the exported volume group.
fn import_vg(va: &mut Va, export: &[Exported]) -> Result<()> {
    for (v, e) in VG.iter().zip(export) {
        let info = va.lun_info(v.copy)?;
        ensure(
            info.kind == LunKind::Copy
                && info.parent == Some(e.lun)
                && info.attached
                && info.size == e.size,
            &format!("LUN {} does not match the export: {info:?}", v.copy),
        )?;
        let header = db::read_header(va, v.copy)?;
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

fn copies(v: &Volume) -> u32 {
    v.copy
}

fn parents(v: &Volume) -> u32 {
    v.lun
}

fn configuration(va: &mut Va, db: &mut Database) -> Result<Vec<Exported>> {
    section("configuration process (once, by hand): steps 1c 2c 4c 5c 6c 7c 8c");
    va.flush()?;
    step(
        "1c.",
        "prepare the parent LUNs: quiesce the database, deactivate vg_db (every write is \
         flushed; `lunsnap write` flushes before it exits)",
    );
    let export = export_vg(va)?;
    step(
        "2c.",
        "capture the configuration: export vg_db (LUN numbers, sizes, headers)",
    );
    cli("lun list $IMG --json; read $IMG 1 hdr.bin --length 4K");

    for v in &VG {
        va.create_copy(v.lun, v.copy, false)?;
    }
    step("4c.", "define the business copies, detached");
    seed(&format!("armcopy -p 1 -s 11 -a false {}", array_id()));
    cli("copy create $IMG --parent 1 --copy 11 --detached   (and 2 -> 12, 3 -> 13)");
    lun(va, 11, "no data, no reservation")?;
    let mut probe = vec![0u8; BLOCK as usize];
    match va.read(11, 0, &mut probe) {
        Err(Error::Detached(11)) => detail(&format!(
            "a read of LUN 11 is refused: {}",
            Error::Detached(11)
        )),
        other => return Err(Fail(format!("demo: read of detached copy 11: {other:?}"))),
    }

    let before = va.pool_info();
    let t = Instant::now();
    va.attach_many(&VG.map(|v| v.copy))?;
    let took = t.elapsed();
    step(
        "4c.",
        &format!(
            "make the copies of vg_db as one consistency group: one attach, one point in \
             time for all 3, in {}",
            ms(took)
        ),
    );
    seed(&format!(
        "armcopy -s 11 -a true {}   (and 12, 13)",
        array_id()
    ));
    cli("copy attach $IMG 11 12 13");
    let after = va.pool_info();
    let parents_size: u64 = VG.iter().map(|v| v.size).sum();
    ensure(
        after.reserved_bytes == before.reserved_bytes + parents_size,
        "the copies did not reserve their parents' sizes",
    )?;
    pool(
        &after,
        "no data moved; each copy reserves its parent's size",
    );
    lun(va, 11, "all of it shared with LUN 1")?;
    let at_copy = db.images.clone();
    let p = va.pool_info();
    match va.create_copy(1, 21, true) {
        Err(e @ Error::NoSpace { .. }) => detail(&format!(
            "full-size reservation: another attached copy of LUN 1 is refused: \"{e}\"; \
             nothing changed"
        )),
        other => {
            return Err(Fail(format!(
                "demo: create_copy(1, 21, true) should not fit: {other:?}"
            )))
        }
    }
    ensure(
        va.pool_info() == p,
        "a refused copy create changed the pool",
    )?;

    permissions(va)?;

    let n = db.transactions(va, 100, 2)?.len();
    va.flush()?;
    step(
        "6c.",
        &format!("release the parents: the database resumes: 100 transactions, {n} blocks"),
    );
    lun(va, 11, "the copy's own space grows as the parent moves on")?;
    verify(
        va,
        &at_copy,
        copies,
        "the point-in-time image",
        &mut db.stats,
    )?;
    verify(
        va,
        &db.images.clone(),
        parents,
        "what the database wrote",
        &mut db.stats,
    )?;
    detail("verified: the copies read the point-in-time image, the parents the new data");

    import_vg(va, &export)?;
    step(
        "7c.",
        "configure the copies for the software: import vg_db as vg_db_bc on the backup host",
    );
    detail("verified: kinds, parents, sizes and volume-group headers match the export of 2c");
    step(
        "8c.",
        "update the copies for consistency, if needed: not needed (copied from quiesced \
         parents)",
    );
    Ok(export)
}

/// 5c: the backup host may read the copies and nothing else; the database host keeps
/// the parents and cannot see the copies (the seed's reason: a host that discovers a
/// copy may write a signature on it).
fn permissions(va: &mut Va) -> Result<()> {
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
    seed("armsecure ...   (Secure Manager VA)");
    cli(&format!(
        "host add $IMG {DB_HOST:016x} --name db-host; host add $IMG {BACKUP_HOST:016x} \
         --name backup-host"
    ));
    cli(&format!(
        "grant $IMG 1 {DB_HOST:016x} --access write   (and 2, 3)"
    ));
    cli(&format!(
        "grant $IMG 11 {BACKUP_HOST:016x} --access read   (and 12, 13); security enable $IMG"
    ));
    let parents: Vec<u32> = VG.iter().map(|v| v.lun).collect();
    let copies: Vec<u32> = VG.iter().map(|v| v.copy).collect();
    ensure(
        va.as_host(DB_HOST).visible_luns() == parents
            && va.as_host(BACKUP_HOST).visible_luns() == copies,
        "each host should discover exactly its own LUNs",
    )?;
    let mut probe = vec![0u8; BLOCK as usize];
    match va.as_host(DB_HOST).read(11, 0, &mut probe) {
        Err(e @ Error::NoSuchLun(11)) => detail(&format!(
            "the database host cannot discover copy 11: \"{e}\""
        )),
        other => return Err(Fail(format!("demo: db host reading copy 11: {other:?}"))),
    }
    match va.as_host(BACKUP_HOST).write(11, 0, &probe) {
        Err(e @ Error::ReadOnlyAccess { .. }) => {
            detail(&format!("nor can the backup host write it: \"{e}\""));
        }
        other => {
            return Err(Fail(format!(
                "demo: backup host writing copy 11: {other:?}"
            )))
        }
    }
    cli(&format!(
        "lun list $IMG --as {BACKUP_HOST:016x}   -> LUNs 11, 12, 13 only"
    ));
    Ok(())
}

type Backup = (Vec<u64>, [db::Image; 3], u64);

fn backup(va: &mut Va, db: &mut Database, export: &[Exported]) -> Result<Backup> {
    section("backup process (repeated, on a schedule): steps 1c 3c 4c 6c 7c 9c");
    va.flush()?;
    step("1c.", "quiesce the database, deactivate vg_db");
    step(
        "3c.",
        "prepare the copies: the backup host deactivates vg_db_bc (nothing in the array)",
    );
    let old = va.lun_info(11)?;
    let before = va.pool_info();
    let t = Instant::now();
    va.attach_many(&VG.map(|v| v.copy))?;
    let took = t.elapsed();
    step(
        "4c.",
        &format!(
            "make the copy: refresh the attached copies as one consistency group in {}",
            ms(took)
        ),
    );
    seed(&format!(
        "armcopy -s 11 -a true {}   (and 12, 13)",
        array_id()
    ));
    cli("copy attach $IMG 11 12 13");
    ensure(
        va.as_host(BACKUP_HOST).visible_luns() == VG.map(|v| v.copy),
        "the refresh lost the backup host's grants",
    )?;
    let at_backup = db.images.clone();
    let redo_at_backup = db.redo_head;
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
         were freed",
        human(old.exclusive_bytes),
        human(before.allocated_bytes),
        human(after.allocated_bytes)
    ));

    let n = db.transactions(va, 150, 3)?.len();
    va.flush()?;
    step(
        "6c.",
        &format!("release the parents: the database resumes: 150 transactions, {n} blocks"),
    );
    verify(va, &at_backup, copies, "the image at 1c", &mut db.stats)?;
    detail("verified: the copies still read the database as it was at 1c");
    import_vg(va, export)?;
    step(
        "7c.",
        "import vg_db_bc on the backup host: matches the export",
    );

    let mut catalog = Vec::new();
    for v in &VG {
        catalog.push(db::checksum_as(
            va,
            Some(BACKUP_HOST),
            v.copy,
            v.size,
            &mut db.stats,
        )?);
    }
    step(
        "9c.",
        "use the copy: the backup host backs it up to \"tape\" (each copy read whole)",
    );
    cli(&format!(
        "read $IMG 11 - --as {BACKUP_HOST:016x} | backup-tool   (and 12, 13)"
    ));
    for (v, sum) in VG.iter().zip(&catalog) {
        let want = db::image_checksum(v, &at_backup[lun_index(v)]);
        ensure(
            *sum == want,
            &format!(
                "backup of LUN {}: checksum {sum:#018x}, expected {want:#018x}",
                v.copy
            ),
        )?;
        detail(&format!(
            "backup catalog: LUN {} ({}, {}) fnv1a64 {sum:#018x}",
            v.copy,
            v.name,
            human(v.size)
        ));
    }
    detail("verified: every checksum equals the database's image at 1c");
    Ok((catalog, at_backup, redo_at_backup))
}

fn lun_index(v: &Volume) -> usize {
    VG.iter().position(|w| w.lun == v.lun).unwrap_or(0)
}

fn restore(
    va: &mut Va,
    db: &mut Database,
    catalog: &[u64],
    at_backup: &[db::Image; 3],
    redo_at_backup: u64,
) -> Result<()> {
    section("restore process (on demand): steps 1r 2r 3r 4r");
    let garbage = b"** a runaway batch job was here **".repeat(4096 / 32);
    for b in 50..150u64 {
        va.write(1, b * BLOCK, &garbage[..BLOCK as usize])?;
    }
    va.discard(2, 0, MIB)?;
    step(
        "!!",
        "the data is damaged: a runaway batch job overwrites 100 blocks of LUN 1 and trims \
         the first MiB of LUN 2 (its header included)",
    );
    let bad1 = diff(va, 1, &VG[0], &db.images[0], &mut db.stats)?;
    let bad2 = diff(va, 2, &VG[1], &db.images[1], &mut db.stats)?;
    ensure(
        bad1 == 100 && bad2 == 128,
        &format!("damage: {bad1} and {bad2} bad blocks"),
    )?;
    detail(&format!(
        "damage found: LUN 1 has {bad1} bad blocks, LUN 2 {bad2} (its header now reads {:?})",
        db::read_header(va, 2)?
    ));
    for (v, sum) in VG.iter().zip(catalog) {
        let now = db::checksum(va, v.copy, v.size, &mut db.stats)?;
        ensure(
            now == *sum,
            &format!("copy {} no longer matches the catalog", v.copy),
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
    let t = Instant::now();
    for v in &VG {
        va.restore(v.copy)?;
    }
    step(
        "3r.",
        &format!("copy to parent: 3 restores in {}", ms(t.elapsed())),
    );
    seed(&format!("armcopy -r 1 {}", array_id()));
    cli("copy restore $IMG 11   (and 12, 13: lunsnap names the copy)");
    for (v, sum) in VG.iter().zip(catalog) {
        let now = db::checksum(va, v.lun, v.size, &mut db.stats)?;
        ensure(
            now == *sum,
            &format!("restored LUN {} differs from the backup", v.lun),
        )?;
    }
    db.images = at_backup.clone();
    db.redo_head = redo_at_backup;
    verify(va, &db.images.clone(), parents, "the backup", &mut db.stats)?;
    step(
        "4r.",
        "release the parents: the database restarts on the restored data",
    );
    detail("verified: each parent's checksum equals the catalog, and every block is the database's at 1c");
    lun(va, 1, "parent and copy share every extent again")?;
    Ok(())
}

fn power_cut(va: Va, path: &Path, db: &mut Database, at_backup: &[db::Image; 3]) -> Result<Va> {
    let mut va = va;
    section("crash safety: a power cut after the restore");
    let n = db.transactions(&mut va, 50, 4)?.len();
    va.flush()?;
    let generation = va.pool_info().generation;
    let committed = db.images.clone();
    let pending = db.transactions(&mut va, 20, 5)?;
    step(
        "app",
        &format!(
            "the database runs 50 transactions ({n} blocks) and flushes, then 20 more ({} \
             blocks) that are never flushed",
            pending.len()
        ),
    );
    // No commit: what a power cut leaves. The file (and its lock) is reopened as is.
    let file = va.into_device().into_file();
    let mut va = image::reopen(file, path)?;
    step(
        "cut",
        "power cut before the next flush, then the image is opened again",
    );
    ensure(
        va.pool_info().generation == generation,
        "reopen did not come back at the last commit",
    )?;
    let (newer, touched) = db.settle(&mut va, &committed, &pending)?;
    verify(
        &mut va,
        &db.images.clone(),
        parents,
        "the database",
        &mut db.stats,
    )?;
    verify(&mut va, at_backup, copies, "the backup", &mut db.stats)?;
    ensure(va.check()?.is_empty(), "check() found violations")?;
    detail(&format!(
        "reopened at generation {generation}, the last commit: every flushed write is \
         there; of the {touched} blocks written since, {newer} read their new content, the \
         others their committed one (either is allowed); the copies still hold the backup"
    ));
    cli("check $IMG   -> clean");
    Ok(va)
}

fn maintenance(va: &mut Va, db: &mut Database) -> Result<db::Image> {
    section("maintenance process (by hand, as needed): step 10c");
    let n = db.transactions(va, 100, 6)?.len();
    va.flush()?;
    detail(&format!(
        "(the database ran 100 more transactions, {n} blocks: the copies have aged)"
    ));
    match va.delete(1, false) {
        Err(e @ Error::HasCopies { .. }) => {
            step("10c.", "a parent with copies is not deleted by accident");
            cli(&format!("lun delete $IMG 1   -> exit 1: \"{e}\""));
        }
        other => return Err(Fail(format!("demo: delete(1) with copies: {other:?}"))),
    }

    let aged = va.lun_info(12)?;
    va.attach(12)?;
    let at_refresh = db.images[1].clone();
    step(
        "10c.",
        "option 2, attach/attach: discard copy 12 by making it again",
    );
    seed(&format!("armcopy -s 12 -a true {}", array_id()));
    cli("copy attach $IMG 12");
    let now = va.lun_info(12)?;
    ensure(
        aged.exclusive_bytes > 0 && now.exclusive_bytes == 0,
        "copy 12 had not aged, or still holds space of its own",
    )?;
    detail(&format!(
        "LUN 12: exclusive {} -> 0: the resource consumption cycle starts over",
        human(aged.exclusive_bytes)
    ));

    let before = va.pool_info();
    let own = va.lun_info(11)?.exclusive_bytes;
    va.detach(11)?;
    step(
        "10c.",
        "option 3, attach/detach: discard copy 11, keeping its number",
    );
    seed(&format!("armcopy -s 11 -a false {}", array_id()));
    cli("copy detach $IMG 11");
    let after = va.pool_info();
    ensure(
        after.reserved_bytes + VG[0].size == before.reserved_bytes
            && after.allocated_bytes + own == before.allocated_bytes,
        "detach did not release the copy's reservation and space",
    )?;
    detail(&format!(
        "pool: reserved {} -> {}, allocated {} -> {} (the copy's own {} freed)",
        human(before.reserved_bytes),
        human(after.reserved_bytes),
        human(before.allocated_bytes),
        human(after.allocated_bytes),
        human(own)
    ));

    va.delete(13, false)?;
    step("10c.", "option 1, create/delete: discard copy 13 for good");
    seed(&format!("armcfg -L 13 -d {}", array_id()));
    cli("lun delete $IMG 13");
    match va.lun_info(13) {
        Err(e @ Error::NoSuchLun(13)) => detail(&format!("LUN 13 is gone: \"{e}\"")),
        other => return Err(Fail(format!("demo: LUN 13 after delete: {other:?}"))),
    }
    Ok(at_refresh)
}

fn finish(
    va: Va,
    path: &Path,
    db: &mut Database,
    at_refresh: &db::Image,
    started: Instant,
) -> Result<()> {
    section("close and reopen: everything survives");
    let file = va.close()?.into_file();
    let mut va = image::reopen(file, path)?;
    step("end", "the image is closed and opened again; its LUNs:");
    cli("lun list $IMG");
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
        &format!("LUNs after reopen: {layout:?}"),
    )?;
    for l in &luns {
        detail(&format!(
            "LUN {:>2}  {:<4} {:>6}  {:<16} reserved {:>7}  exclusive {:>9}  shared {:>7}",
            l.lun,
            crate::json::kind(l.kind),
            human(l.size),
            match (l.parent, l.attached) {
                (Some(p), true) => format!("of {p}, attached"),
                (Some(p), false) => format!("of {p}, detached"),
                (None, _) => String::from("-"),
            },
            human(l.reserved_bytes),
            human(l.exclusive_bytes),
            human(l.shared_bytes)
        ));
    }
    verify(
        &mut va,
        &db.images.clone(),
        parents,
        "the database",
        &mut db.stats,
    )?;
    let refreshed = diff(&mut va, 12, &VG[1], at_refresh, &mut db.stats)?;
    ensure(
        refreshed == 0,
        &format!("copy 12: {refreshed} blocks differ from its refresh"),
    )?;
    ensure(va.check()?.is_empty(), "check() found violations")?;
    detail("verified: the parents read the database, copy 12 its refresh of 10c; check: clean");
    let p = va.pool_info();
    pool(&p, "");
    say!();
    say!(
        "summary: configuration, backup, restore, power cut and maintenance all verified; \
         the database wrote {} and {} were read back; 0 mismatches",
        human(db.stats.written),
        human(db.stats.read)
    );
    say!(
        "         {} LUNs left, generation {}, the image occupies {} on disk; finished in {}",
        p.luns,
        p.generation,
        image::disk_usage(path).map_or_else(|| String::from("?"), human),
        ms(started.elapsed())
    );
    Ok(())
}
