//! The seed's backup and restore scenario, end to end, on a sparse image file.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --features std --example backup_cycle [IMAGE]
//! ```
//!
//! HP's *Business Copy VA integration guide* partitions its procedures into four
//! processes: configuration (steps 1c, 2c, 4c, 5c, 6c, 7c, 8c, run once), backup
//! (1c, 3c, 4c, 6c, 7c, 9c, run on a schedule), restore (1r to 4r, on demand) and
//! maintenance (10c, by hand). This example runs all four against a lunsnap array on a
//! 128 MiB sparse image file, with a simulated database standing in for the
//! application: three parent LUNs forming the volume group `vg_db` and three business
//! copies of them. Each step prints the seed's step number, what it means, and the
//! lunsnap call it maps to; the key steps print the pool's and the LUNs' figures.
//!
//! Everything the example claims it checks: the copies stay frozen while the parents
//! change, the backup (an FNV-1a checksum of each copy, read whole) matches the
//! database as it was when the copy was made, the restore brings that content back, a
//! power cut loses nothing that was committed, a clean close and reopen keeps it all,
//! and `check()` finds no violation. Any mismatch stops the program with a message and
//! a non-zero exit status.
//!
//! The image goes in a new temporary directory that is removed at the end, or at the
//! path given as the first argument (created or overwritten, and kept).

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lunsnap::{Array, Error, FileDevice, FormatOptions, LunKind, OpenOptions, PoolInfo};

type Result<T> = std::result::Result<T, Box<dyn StdError>>;
type Va = Array<FileDevice>;

const MIB: u64 = 1 << 20;
/// The image: 128 MiB of 4 KiB device blocks.
const DEVICE_BLOCK: u32 = 4096;
const IMAGE_BYTES: u64 = 128 * MIB;
/// Copy-on-write unit: the first write into an extent shared with a copy moves it.
const EXTENT: u32 = lunsnap::DEFAULT_EXTENT_SIZE;
const MAX_LUNS: u32 = 64;
/// The seed's `<array-id>`, stored in the superblock.
const ARRAY_ID: [u8; 16] = *b"VA7100-demo-0001";
/// The database's block: the unit it writes and the unit the checks compare.
const BLOCK: u64 = 4096;
/// Read size for whole-LUN scans.
const CHUNK: u64 = MIB;

/// One LUN of the volume group `vg_db` and the business copy that backs it up.
struct Volume {
    name: &'static str,
    lun: u32,
    copy: u32,
    size: u64,
    /// Blocks the initial load writes (from block 0, the volume-group header).
    loaded: u64,
}

const VG: [Volume; 3] = [
    Volume {
        name: "data",
        lun: 1,
        copy: 11,
        size: 32 * MIB,
        loaded: 768,
    },
    Volume {
        name: "index",
        lun: 2,
        copy: 12,
        size: 16 * MIB,
        loaded: 256,
    },
    Volume {
        name: "redo",
        lun: 3,
        copy: 13,
        size: 8 * MIB,
        loaded: 64,
    },
];

/// What the database believes one LUN holds: the version of each block it wrote
/// (blocks never written read as zeros).
type Image = BTreeMap<u64, u32>;

/// Deletes the temporary directory however the program ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() {
    let started = Instant::now();
    if let Err(e) = run(started) {
        eprintln!("backup_cycle: FAILED: {e}");
        std::process::exit(1);
    }
}

fn run(started: Instant) -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let given = args.next().map(PathBuf::from);
    if args.next().is_some() {
        return Err("usage: backup_cycle [IMAGE]".into());
    }
    let (path, temp) = match given {
        Some(p) => {
            if p.exists() && !p.is_file() {
                return Err(format!("{} exists and is not a regular file", p.display()).into());
            }
            (p, None)
        }
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = std::env::temp_dir().join(format!(
                "lunsnap-backup-cycle-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir(&dir)?;
            (dir.join("va7100.img"), Some(TempDir(dir)))
        }
    };
    let keep = temp.is_none();
    println!(
        "lunsnap backup_cycle: HP Business Copy VA's backup and restore processes, end to end"
    );
    println!(
        "image: {} ({} sparse file, 4 KiB blocks; {})",
        path.display(),
        size(IMAGE_BYTES),
        if keep {
            "kept at the end"
        } else {
            "removed at the end"
        }
    );
    let mut s = Stats::default();

    // ---------------------------------------------------------------- setup
    section("setup: the parent LUNs exist and are in use (the seed's starting assumption)");
    let dev = FileDevice::create(&path, DEVICE_BLOCK, IMAGE_BYTES / u64::from(DEVICE_BLOCK))?;
    let opts = FormatOptions {
        extent_size: EXTENT,
        max_luns: MAX_LUNS,
        array_id: ARRAY_ID,
        ..FormatOptions::default()
    };
    let mut va = Array::format(dev, &opts)?;
    step(
        "setup",
        &format!(
            "format the virtual array, array-id {} -> Array::format(FileDevice::create(..), \
             extent_size {}, max_luns {MAX_LUNS})",
            array_id(),
            size(u64::from(EXTENT))
        ),
    );
    pool(&va.pool_info(), "");
    for v in &VG {
        va.create_lun(v.lun, v.size)?;
    }
    step(
        "setup",
        "create the parent LUNs of volume group vg_db -> create_lun(1, 32 MiB), \
         create_lun(2, 16 MiB), create_lun(3, 8 MiB)",
    );
    pool(&va.pool_info(), "each LUN reserves its full size");
    let mut db = Database::new();
    let n = db.load(&mut va, &mut s)?;
    va.flush()?;
    step(
        "setup",
        &format!(
            "the database loads its tables -> write() of {n} blocks ({}), flush()",
            size(n * BLOCK)
        ),
    );
    pool(&va.pool_info(), "");

    // ---------------------------------------------------- configuration
    section("configuration process (once, by hand): steps 1c 2c 4c 5c 6c 7c 8c");
    va.flush()?;
    step(
        "1c.",
        "prepare the parent LUNs: quiesce the database, deactivate vg_db -> flush() \
         (mounting is the host's business; flush makes every write durable)",
    );
    let export = export_vg(&mut va)?;
    step(
        "2c.",
        "capture the configuration: export vg_db -> lun_info(1..=3), read(n, 0, header)",
    );
    detail(&format!(
        "exported vg_db: {}",
        export
            .iter()
            .map(|e| format!("{} = LUN {} ({})", e.name, e.lun, size(e.size)))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    for v in &VG {
        va.create_copy(v.lun, v.copy, false)?;
    }
    step(
        "4c.",
        &format!(
            "define the business copies detached (armcopy -p 1 -s 11 -a false {}) \
             -> create_copy(1, 11, false), create_copy(2, 12, false), create_copy(3, 13, false)",
            array_id()
        ),
    );
    let before = va.pool_info();
    lun(&mut va, 11, "no data, no reservation")?;
    let mut probe = vec![0u8; BLOCK as usize];
    match va.read(11, 0, &mut probe) {
        Err(Error::Detached(11)) => detail("read(11, ..) refused: Detached(11)"),
        other => return Err(format!("read of detached copy 11: {other:?}").into()),
    }
    pool(&before, "nothing reserved for the copies yet");

    let t = Instant::now();
    for v in &VG {
        va.attach(v.copy)?;
    }
    let took = t.elapsed();
    step(
        "4c.",
        &format!(
            "make the copy (armcopy -s 11 -a true {}) -> attach(11), attach(12), attach(13): \
             3 commits in {}",
            array_id(),
            ms(took)
        ),
    );
    let after = va.pool_info();
    ensure(
        after.allocated_bytes == before.allocated_bytes,
        "attaching a copy moved data",
    )?;
    ensure(
        after.reserved_bytes == before.reserved_bytes + 56 * MIB,
        "the copies did not reserve their parents' sizes",
    )?;
    pool(
        &after,
        "no data moved; each copy reserves its parent's size",
    );
    lun(&mut va, 11, "all of it shared with LUN 1")?;
    let at_copy = db.images.clone();
    let want = va.pool_info().unreserved_bytes;
    match va.create_copy(1, 21, true) {
        Err(Error::NoSpace { needed, available }) if needed == 32 * MIB && available == want => {
            detail(&format!(
                "full-size reservation: a further attached copy of LUN 1 is refused, \
                 create_copy(1, 21, true) -> NoSpace {{ needed: {}, available: {} }}; \
                 nothing changed",
                size(needed),
                size(available)
            ))
        }
        other => return Err(format!("create_copy(1, 21, true) should not fit: {other:?}").into()),
    }
    ensure(
        va.pool_info() == after,
        "a refused create_copy changed the pool",
    )?;

    // The backup server may read the copies and nothing else.
    const BACKUP_HOST: u64 = 0x5000_1fe1_5000_0b0b;
    va.add_host(BACKUP_HOST, "backup server")?;
    for c in [11, 12, 13] {
        va.grant(c, BACKUP_HOST, lunsnap::Access::Read)?;
    }
    va.set_security(true)?;
    step(
        "5c.",
        &format!(
            "set permissions on the copies (armsecure) -> add_host({BACKUP_HOST:#018x}, \
             \"backup server\"), grant(11..=13, read), set_security(true)"
        ),
    );
    ensure(
        va.as_host(BACKUP_HOST).visible_luns() == [11, 12, 13],
        "the backup server should discover exactly the copies",
    )?;
    let mut probe = [0u8; 512];
    va.as_host(BACKUP_HOST).read(11, 0, &mut probe)?;
    match va.as_host(BACKUP_HOST).read(1, 0, &mut probe) {
        Err(lunsnap::Error::NoSuchLun(1)) => {}
        other => return Err(format!("the backup server read LUN 1: {other:?}").into()),
    }
    match va.as_host(BACKUP_HOST).write(11, 0, &probe) {
        Err(lunsnap::Error::ReadOnlyAccess { .. }) => {}
        other => return Err(format!("the backup server wrote copy 11: {other:?}").into()),
    }
    detail("verified: the backup server sees only LUNs 11-13, reads them, cannot write them");

    let n = db.transactions(&mut va, 100, 2, &mut s)?;
    va.flush()?;
    step(
        "6c.",
        &format!(
            "release the parents: activate vg_db, the database resumes -> 100 transactions, \
             write() of {n} blocks, flush()"
        ),
    );
    lun(
        &mut va,
        11,
        "the copy's own space grows as the parent moves on",
    )?;
    pool(
        &va.pool_info(),
        "the parents' changes went to fresh extents",
    );
    verify_copies(&mut va, &at_copy, &mut s)?;
    verify_parents(&mut va, &db.images, &mut s)?;
    detail(
        "verified: the copies still read the point-in-time image; the parents read the new data",
    );

    import_vg(&mut va, &export)?;
    step(
        "7c.",
        "configure the copies for the software: import vg_db as vg_db_bc -> \
         lun_info(11..=13), read(n, 0, header)",
    );
    detail("imported: kinds, parents, sizes and volume-group headers match the export of 2c");
    step(
        "8c.",
        "update the copies for consistency, if needed -> not needed: they were copied \
         from quiesced parents (1c), and 6c verified them block by block",
    );

    // ------------------------------------------------------------ backup
    section("backup process (repeated, on a schedule): steps 1c 3c 4c 6c 7c 9c");
    va.flush()?;
    step("1c.", "quiesce the database, deactivate vg_db -> flush()");
    step(
        "3c.",
        "prepare the copies: the backup host deactivates vg_db_bc -> nothing in the array",
    );
    let old = va.lun_info(11)?;
    let before = va.pool_info();
    let t = Instant::now();
    for v in &VG {
        va.attach(v.copy)?;
    }
    let took = t.elapsed();
    step(
        "4c.",
        &format!(
            "make the copy: refresh the attached copies (armcopy -s 11 -a true {}) -> \
             attach(11), attach(12), attach(13): 3 commits in {}",
            array_id(),
            ms(took)
        ),
    );
    let at_backup = db.images.clone();
    let redo_at_backup = db.redo_head;
    let fresh = va.lun_info(11)?;
    ensure(
        fresh.exclusive_bytes == 0 && fresh.attached_generation > old.attached_generation,
        "the refreshed copy still holds space of its own",
    )?;
    lun(
        &mut va,
        11,
        "the old copy's contents are gone: the cycle starts over",
    )?;
    let after = va.pool_info();
    ensure(
        after.allocated_bytes < before.allocated_bytes,
        "refreshing the copies freed nothing",
    )?;
    detail(&format!(
        "pool: allocated {} -> {}: the old copies' own extents were freed",
        size(before.allocated_bytes),
        size(after.allocated_bytes)
    ));

    let n = db.transactions(&mut va, 150, 3, &mut s)?;
    va.flush()?;
    step(
        "6c.",
        &format!(
            "release the parents: the database resumes -> 150 transactions, write() of {n} \
             blocks, flush()"
        ),
    );
    lun(&mut va, 11, "")?;
    verify_copies(&mut va, &at_backup, &mut s)?;
    detail("verified: the copies still read the database as it was at 1c");
    import_vg(&mut va, &export)?;
    step(
        "7c.",
        "import vg_db_bc on the backup host -> lun_info(11..=13), read(n, 0, header): match",
    );
    let t = Instant::now();
    let mut catalog = Vec::new();
    for v in &VG {
        catalog.push(checksum(&mut va, v.copy, v.size, &mut s)?);
    }
    let took = t.elapsed();
    step(
        "9c.",
        "use the copy: back it up to \"tape\" -> read(11..=13) whole, FNV-1a 64 of each",
    );
    for (v, sum) in VG.iter().zip(&catalog) {
        let want = image_checksum(v, &at_backup[index(v)]);
        ensure(
            *sum == want,
            &format!(
                "backup of LUN {}: checksum {sum:#018x}, the database at 1c gives {want:#018x}",
                v.copy
            ),
        )?;
        detail(&format!(
            "backup catalog: LUN {:>2} ({:>5}, {}) fnv1a64 {sum:#018x}",
            v.copy,
            v.name,
            size(v.size)
        ));
    }
    detail(&format!(
        "verified: {} read in {}; every checksum equals the database's image at 1c",
        size(56 * MIB),
        ms(took)
    ));

    // ----------------------------------------------------------- restore
    section("restore process (on demand): steps 1r 2r 3r 4r");
    let garbage = b"** a runaway batch job was here **".repeat(4096 / 32);
    for b in 100..300u64 {
        va.write(1, b * BLOCK, &garbage[..BLOCK as usize])?;
        s.written += BLOCK;
    }
    va.discard(2, 0, MIB)?;
    step(
        "!!",
        "the application's data is damaged: a runaway batch job overwrites 200 blocks of \
         LUN 1 and trims the first MiB of LUN 2 (header included) -> write(1, ..), \
         discard(2, 0, 1 MiB)",
    );
    let bad1 = diff(&mut va, 1, &VG[0], &db.images[0], &mut s)?;
    let bad2 = diff(&mut va, 2, &VG[1], &db.images[1], &mut s)?;
    ensure(
        bad1 == 200,
        &format!("LUN 1: {bad1} damaged blocks, 200 expected"),
    )?;
    ensure(
        bad2 == 256,
        &format!("LUN 2: {bad2} damaged blocks, 256 expected"),
    )?;
    let header = read_header(&mut va, 2)?;
    detail(&format!(
        "damage found: LUN 1 has {bad1} bad blocks, LUN 2 {bad2} (its volume-group header \
         now reads {header:?})"
    ));
    for (v, sum) in VG.iter().zip(&catalog) {
        let now = checksum(&mut va, v.copy, v.size, &mut s)?;
        ensure(
            now == *sum,
            &format!("copy {} no longer matches the backup catalog", v.copy),
        )?;
    }
    step(
        "1r.",
        "prepare the copies: the backup software has released them, and they hold the \
         backup -> read(11..=13) whole: checksums match the catalog",
    );
    va.flush()?;
    step(
        "2r.",
        "prepare the parents: stop the database, deactivate vg_db -> flush()",
    );
    let t = Instant::now();
    for v in &VG {
        va.restore(v.copy)?;
    }
    let took = t.elapsed();
    step(
        "3r.",
        &format!(
            "copy to parent (armcopy -r 1 {}) -> restore(11), restore(12), restore(13): \
             3 commits in {}",
            array_id(),
            ms(took)
        ),
    );
    for (v, sum) in VG.iter().zip(&catalog) {
        let now = checksum(&mut va, v.lun, v.size, &mut s)?;
        ensure(
            now == *sum,
            &format!(
                "restored LUN {}: checksum {now:#018x}, the backup has {sum:#018x}",
                v.lun
            ),
        )?;
    }
    // The database restarts from the restored image, its redo log included.
    db.images = at_backup.clone();
    db.redo_head = redo_at_backup;
    verify_parents(&mut va, &db.images, &mut s)?;
    step(
        "4r.",
        "release the parents: the database restarts on the restored data -> read(1..=3)",
    );
    detail("verified: each parent's checksum equals the backup catalog, and every block is the database's at 1c");
    lun(&mut va, 1, "parent and copy share every extent again")?;
    for v in &VG {
        let info = va.lun_info(v.copy)?;
        ensure(
            info.attached && info.exclusive_bytes == 0,
            &format!("copy {} changed by the restore", v.copy),
        )?;
    }

    // ------------------------------------------------------ power cut
    section("crash safety: a power cut after the restore");
    let n = db.transactions(&mut va, 50, 4, &mut s)?;
    va.flush()?;
    let generation = va.pool_info().generation;
    let committed = db.images.clone();
    let pending = db.transactions_logged(&mut va, 20, 5, &mut s)?;
    step(
        "app",
        &format!(
            "the database runs 50 transactions ({n} blocks) and flush()es, then 20 more \
             ({} blocks) that are never flushed",
            pending.len()
        ),
    );
    drop(va.into_device()); // no commit: what a power cut leaves
    let dev = FileDevice::open(&path, DEVICE_BLOCK)?;
    let mut va = Array::open(dev, &OpenOptions::default())?;
    step(
        "cut",
        "power cut before the next flush -> into_device() (no commit), then \
         Array::open(FileDevice::open(..))",
    );
    ensure(
        va.pool_info().generation == generation,
        "reopen did not come back at the last commit",
    )?;
    let (survived, touched) = db.settle(&mut va, &committed, &pending)?;
    verify_parents(&mut va, &db.images, &mut s)?;
    verify_copies(&mut va, &at_backup, &mut s)?;
    clean(&mut va)?;
    detail(&format!(
        "reopened at generation {generation}, the last commit: the flushed transactions \
         are all there; of the {touched} blocks written since, {survived} read their new \
         content and the others their committed one (either is allowed); the copies \
         still hold the backup; check(): clean"
    ));

    // ------------------------------------------------------ maintenance
    section("maintenance process (by hand, as needed): step 10c");
    let n = db.transactions(&mut va, 100, 6, &mut s)?;
    va.flush()?;
    detail(&format!(
        "(the database ran 100 more transactions, {n} blocks: the copies have aged)"
    ));
    step(
        "3c.",
        "prepare the copies to discard: the backup host deactivates vg_db_bc -> nothing \
         in the array",
    );
    match va.delete(1, false) {
        Err(Error::HasCopies { lun: 1, copies: 1 }) => {}
        other => return Err(format!("delete(1, false) with a copy: {other:?}").into()),
    }
    step(
        "10c.",
        "a parent with copies is not deleted by accident -> delete(1, false) refused: \
         HasCopies { lun: 1, copies: 1 }",
    );
    let aged = va.lun_info(12)?;
    va.attach(12)?;
    let at_refresh = db.images[1].clone();
    step(
        "10c.",
        &format!(
            "option 2, attach/attach: discard copy 12 by making it again (armcopy -s 12 -a \
             true {}) -> attach(12)",
            array_id()
        ),
    );
    let now = va.lun_info(12)?;
    ensure(
        aged.exclusive_bytes > 0 && now.exclusive_bytes == 0,
        "copy 12 had not aged, or still holds space of its own after attach",
    )?;
    detail(&format!(
        "LUN 12: exclusive {} -> {}: the resource consumption cycle starts over",
        size(aged.exclusive_bytes),
        size(now.exclusive_bytes)
    ));

    let before = va.pool_info();
    let own = va.lun_info(11)?.exclusive_bytes;
    ensure(own > 0, "copy 11 had not aged")?;
    va.detach(11)?;
    step(
        "10c.",
        &format!(
            "option 3, attach/detach: discard copy 11, keep its number (armcopy -s 11 -a \
             false {}) -> detach(11)",
            array_id()
        ),
    );
    let after = va.pool_info();
    ensure(
        after.reserved_bytes + 32 * MIB == before.reserved_bytes
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
    match va.read(11, 0, &mut probe) {
        Err(Error::Detached(11)) => detail("read(11, ..) refused: Detached(11), until attach(11)"),
        other => return Err(format!("read of detached copy 11: {other:?}").into()),
    }

    let before = va.pool_info();
    va.delete(13, false)?;
    step(
        "10c.",
        &format!(
            "option 1, create/delete: discard copy 13 for good (armcfg -L 13 -d {}) -> \
             delete(13, false)",
            array_id()
        ),
    );
    match va.lun_info(13) {
        Err(Error::NoSuchLun(13)) => {}
        other => return Err(format!("lun_info(13) after delete: {other:?}").into()),
    }
    let after = va.pool_info();
    detail(&format!(
        "lun_info(13) -> NoSuchLun(13); pool: reserved {} -> {}, allocated {} -> {}",
        size(before.reserved_bytes),
        size(after.reserved_bytes),
        size(before.allocated_bytes),
        size(after.allocated_bytes)
    ));

    // ------------------------------------------------- close and reopen
    section("close and reopen: everything survives");
    let dev = va.close()?;
    drop(dev);
    let dev = FileDevice::open(&path, DEVICE_BLOCK)?;
    let mut va = Array::open(dev, &OpenOptions::default())?;
    step(
        "end",
        "close() commits; Array::open(FileDevice::open(..)) -> the array as it was left:",
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
    for l in &luns {
        detail(&format!(
            "LUN {:>2}  {:<4} {:>6}  {:<16} reserved {:>8}  exclusive {:>8}  shared {:>8}",
            l.lun,
            match l.kind {
                LunKind::Lun => "lun",
                LunKind::Copy => "copy",
            },
            size(l.size),
            match (l.parent, l.attached) {
                (Some(p), true) => format!("of {p}, attached"),
                (Some(p), false) => format!("of {p}, detached"),
                (None, _) => String::from("-"),
            },
            size(l.reserved_bytes),
            size(l.exclusive_bytes),
            size(l.shared_bytes)
        ));
    }
    verify_parents(&mut va, &db.images, &mut s)?;
    let refreshed = diff(&mut va, 12, &VG[1], &at_refresh, &mut s)?;
    ensure(
        refreshed == 0,
        &format!("copy 12: {refreshed} blocks differ from its refresh"),
    )?;
    clean(&mut va)?;
    detail("verified: the parents read the database, copy 12 its refresh of 10c; check(): clean");
    let p = va.pool_info();
    pool(&p, "");

    println!();
    println!(
        "summary: configuration, backup, restore, power cut and maintenance all verified; \
         the database wrote {} and {} were read back to check and back up; 0 mismatches",
        size(s.written),
        size(s.read)
    );
    println!(
        "         {} LUNs left, generation {}, the image occupies {} on disk; finished in {}",
        p.luns,
        p.generation,
        disk_usage(&path),
        ms(started.elapsed())
    );
    Ok(())
}

// ------------------------------------------------------------ the database

/// A toy database on the three LUNs of `vg_db`: every block it writes is
/// recognisable (a text header naming volume, LUN, block and version, then
/// deterministic noise), and it remembers the version of every block it wrote.
struct Database {
    images: [Image; 3],
    rng: u64,
    /// Next block of the redo log (a ring after the header block).
    redo_head: u64,
}

impl Database {
    fn new() -> Self {
        Database {
            images: [Image::new(), Image::new(), Image::new()],
            rng: 0x2001_0701_7100_0001,
            redo_head: VG[2].loaded,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn write(
        &mut self,
        va: &mut Va,
        vi: usize,
        block: u64,
        version: u32,
        s: &mut Stats,
    ) -> Result<()> {
        let mut buf = vec![0u8; BLOCK as usize];
        fill_block(&VG[vi], block, version, &mut buf);
        va.write(VG[vi].lun, block * BLOCK, &buf)?;
        self.images[vi].insert(block, version);
        s.written += BLOCK;
        Ok(())
    }

    /// Writes every volume's first `loaded` blocks at version 1.
    fn load(&mut self, va: &mut Va, s: &mut Stats) -> Result<u64> {
        let mut n = 0;
        for (vi, v) in VG.iter().enumerate() {
            for b in 0..v.loaded {
                self.write(va, vi, b, 1, s)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// `count` transactions: each updates a data block and an index block, and
    /// appends a redo record. Returns the blocks written.
    fn transactions(
        &mut self,
        va: &mut Va,
        count: u32,
        version: u32,
        s: &mut Stats,
    ) -> Result<u64> {
        Ok(self.transactions_logged(va, count, version, s)?.len() as u64)
    }

    /// As `transactions`, returning each write as (volume, block, version).
    fn transactions_logged(
        &mut self,
        va: &mut Va,
        count: u32,
        version: u32,
        s: &mut Stats,
    ) -> Result<Vec<(usize, u64, u32)>> {
        let mut log = Vec::new();
        for _ in 0..count {
            // An update of the data and the index volumes. Block 0 is the
            // volume-group header: the database leaves it alone.
            for (vi, v) in VG.iter().enumerate().take(2) {
                let b = 1 + self.next() % (v.loaded - 1);
                self.write(va, vi, b, version, s)?;
                log.push((vi, b, version));
            }
            let b = self.redo_head;
            self.write(va, 2, b, version, s)?;
            log.push((2, b, version));
            self.redo_head = if b + 1 == VG[2].size / BLOCK {
                1
            } else {
                b + 1
            };
        }
        Ok(log)
    }

    /// After a power cut: each block written since the last commit must read its
    /// committed content or one of the versions written to it since. Adopts what
    /// the array reads; returns how many of those blocks read a newer version, and
    /// how many blocks were written.
    fn settle(
        &mut self,
        va: &mut Va,
        committed: &[Image; 3],
        pending: &[(usize, u64, u32)],
    ) -> Result<(usize, usize)> {
        self.images = committed.clone();
        let mut candidates: BTreeMap<(usize, u64), Vec<Option<u32>>> = BTreeMap::new();
        for &(vi, b, version) in pending {
            candidates
                .entry((vi, b))
                .or_insert_with(|| vec![committed[vi].get(&b).copied()])
                .push(Some(version));
        }
        let mut got = vec![0u8; BLOCK as usize];
        let mut want = vec![0u8; BLOCK as usize];
        let mut newer = 0;
        let touched = candidates.len();
        for ((vi, b), versions) in candidates {
            va.read(VG[vi].lun, b * BLOCK, &mut got)?;
            let found = versions.iter().position(|ver| {
                match ver {
                    Some(ver) => fill_block(&VG[vi], b, *ver, &mut want),
                    None => want.fill(0),
                }
                got == want
            });
            match found {
                Some(0) => {}
                Some(i) => {
                    newer += 1;
                    if let Some(ver) = versions[i] {
                        self.images[vi].insert(b, ver);
                    }
                }
                None => {
                    return Err(format!(
                        "after the power cut LUN {} block {b} reads neither its committed \
                         content nor anything written since",
                        VG[vi].lun
                    )
                    .into())
                }
            }
        }
        Ok((newer, touched))
    }
}

/// Deterministic content of one block: a header line, then noise seeded by it.
fn fill_block(v: &Volume, block: u64, version: u32, out: &mut [u8]) {
    let header = format!(
        "vg_db/{} lun {} block {block} version {version}\n",
        v.name, v.lun
    );
    let mut x = fnv1a(FNV_OFFSET, header.as_bytes()) | 1;
    for word in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
    out[..header.len()].copy_from_slice(header.as_bytes());
}

/// What `image` says LUN-relative bytes `offset..offset + out.len()` hold.
fn expected(v: &Volume, image: &Image, offset: u64, out: &mut [u8]) {
    out.fill(0);
    let first = offset / BLOCK;
    let end = (offset + out.len() as u64) / BLOCK;
    for (&b, &ver) in image.range(first..end) {
        let o = ((b - first) * BLOCK) as usize;
        fill_block(v, b, ver, &mut out[o..o + BLOCK as usize]);
    }
}

// ------------------------------------------------------- checks and figures

#[derive(Default)]
struct Stats {
    written: u64,
    read: u64,
}

fn index(v: &Volume) -> usize {
    VG.iter().position(|w| w.lun == v.lun).unwrap_or(0)
}

/// Number of blocks of LUN `lun` (holding volume `v`) that differ from `image`.
fn diff(va: &mut Va, lun: u32, v: &Volume, image: &Image, s: &mut Stats) -> Result<u64> {
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

fn verify(
    va: &mut Va,
    lun: u32,
    v: &Volume,
    image: &Image,
    what: &str,
    s: &mut Stats,
) -> Result<()> {
    let bad = diff(va, lun, v, image, s)?;
    ensure(
        bad == 0,
        &format!("LUN {lun}: {bad} blocks differ from {what}"),
    )
}

fn verify_copies(va: &mut Va, images: &[Image; 3], s: &mut Stats) -> Result<()> {
    for (v, image) in VG.iter().zip(images) {
        verify(va, v.copy, v, image, "the point-in-time image", s)?;
    }
    Ok(())
}

fn verify_parents(va: &mut Va, images: &[Image; 3], s: &mut Stats) -> Result<()> {
    for (v, image) in VG.iter().zip(images) {
        verify(va, v.lun, v, image, "what the database wrote", s)?;
    }
    Ok(())
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a 64 of LUN `lun`, read whole.
fn checksum(va: &mut Va, lun: u32, size: u64, s: &mut Stats) -> Result<u64> {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut h = FNV_OFFSET;
    let mut off = 0;
    while off < size {
        va.read(lun, off, &mut buf)?;
        s.read += CHUNK;
        h = fnv1a(h, &buf);
        off += CHUNK;
    }
    Ok(h)
}

/// FNV-1a 64 of what `image` says volume `v` holds.
fn image_checksum(v: &Volume, image: &Image) -> u64 {
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

/// The first line of block 0: the volume-group header.
fn read_header(va: &mut Va, lun: u32) -> Result<String> {
    let mut buf = vec![0u8; BLOCK as usize];
    va.read(lun, 0, &mut buf)?;
    let end = buf.iter().take(128).position(|&c| c == b'\n').unwrap_or(0);
    if end == 0 {
        return Ok(if buf.iter().all(|&c| c == 0) {
            String::from("zeros")
        } else {
            String::from("garbage")
        });
    }
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// What 2c captures of one LUN of the volume group.
struct Exported {
    name: &'static str,
    lun: u32,
    size: u64,
    header: String,
}

fn export_vg(va: &mut Va) -> Result<Vec<Exported>> {
    let mut out = Vec::new();
    for v in &VG {
        let info = va.lun_info(v.lun)?;
        let header = read_header(va, v.lun)?;
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
        let header = read_header(va, v.copy)?;
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

fn clean(va: &mut Va) -> Result<()> {
    let violations = va.check()?;
    for v in violations.iter().take(10) {
        eprintln!("  violation: {v}");
    }
    ensure(
        violations.is_empty(),
        &format!("check() found {} violations", violations.len()),
    )
}

fn ensure(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(what.into())
    }
}

// --------------------------------------------------------------- printing

fn section(title: &str) {
    println!();
    println!("== {title}");
}

fn step(label: &str, text: &str) {
    println!("{label:>5} {text}");
}

fn detail(text: &str) {
    println!("        {text}");
}

fn pool(p: &PoolInfo, note: &str) {
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(" ({note})")
    };
    detail(&format!(
        "pool: capacity {}, allocated {}, reserved {}, unreserved {}, free {}, \
         metadata {} used of {}{note}",
        size(p.capacity_bytes),
        size(p.allocated_bytes),
        size(p.reserved_bytes),
        size(p.unreserved_bytes),
        size(p.free_bytes),
        size(p.metadata_used_bytes),
        size(p.metadata_provisioned_bytes)
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
        size(l.reserved_bytes),
        size(l.exclusive_bytes),
        size(l.shared_bytes)
    ));
    Ok(())
}

fn array_id() -> String {
    String::from_utf8_lossy(&ARRAY_ID).into_owned()
}

fn size(n: u64) -> String {
    if n == 0 {
        String::from("0 B")
    } else if n % MIB == 0 {
        format!("{} MiB", n / MIB)
    } else if n < MIB {
        format!("{} KiB", n >> 10)
    } else {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Bytes the sparse image really occupies, as text.
fn disk_usage(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(path) {
            return size(m.blocks() * 512);
        }
    }
    let _ = path;
    String::from("unknown")
}
