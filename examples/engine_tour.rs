//! A guided tour of the lunsnap storage engine on a sparse image file.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --features std --example engine_tour
//! ```
//!
//! It formats a 16 GiB sparse image in a temporary directory, maps 200,000 keys to
//! data extents in a copy-on-write B-tree, takes an O(1) clone, changes the clone
//! (shadowing only the nodes on the changed paths), drops it again, simulates a crash
//! and finally audits the metadata. Every step prints one narrated line. The image is
//! deleted at the end.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lunsnap::engine::{Engine, SpaceStats, Tree, ValueKind};
use lunsnap::engine::{FormatOptions, OpenOptions};
use lunsnap::FileDevice;

type Result<T> = std::result::Result<T, Box<dyn StdError>>;

/// Image geometry: 4 KiB blocks, 16 GiB (262,144 data extents of the default 64 KiB).
const BLOCK_SIZE: u32 = 4096;
const IMAGE_BYTES: u64 = 16 << 30;
/// Keys in the tree: think "virtual extent number of a LUN" → "physical extent".
const KEYS: u64 = 200_000;
/// The clone rewrites key 0, then this many keys from REGION (a burst of writes to one
/// area of a LUN, the common case after a copy is made).
const REWRITES: u64 = 1000;
const REGION: u64 = 100_000;
/// Root slots the trees are kept in (a tree must be reachable to survive a reopen).
const ORIGINAL: usize = 0;
const CLONE: usize = 1;

/// Deletes the temporary directory however the tour ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("lunsnap-tour-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() {
    if let Err(e) = tour() {
        eprintln!("engine_tour: error: {e}");
        std::process::exit(1);
    }
}

fn tour() -> Result<()> {
    let dir = TempDir::new()?;
    let path = dir.0.join("pool.img");
    let started = Instant::now();

    // 1. Format.
    let dev = FileDevice::create(&path, BLOCK_SIZE, IMAGE_BYTES / u64::from(BLOCK_SIZE))?;
    let mut e = Engine::format(dev, &FormatOptions::default())?;
    let s = e.space();
    step(format!(
        "formatted a {} GiB sparse image: {} data extents of {} KiB, {} metadata pages \
         provisioned; {} on disk",
        IMAGE_BYTES >> 30,
        s.data_extents,
        e.geometry().extent_size / 1024,
        s.meta_pages,
        disk_usage(&path)
    ));

    // 2. Build and commit a big tree.
    let t0 = Instant::now();
    let mut original = e.create_tree(8, ValueKind::Data)?;
    for k in 0..KEYS {
        let extent = e.alloc_data()?;
        e.insert(&mut original, k, &extent.to_le_bytes())?;
    }
    e.set_root(ORIGINAL, Some(original))?;
    e.commit()?;
    let s = e.space();
    step(format!(
        "mapped {KEYS} keys to data extents and committed in {}: {} metadata pages, \
         {} extents in use; {} on disk",
        ms(t0.elapsed()),
        s.meta_allocated,
        s.data_allocated,
        disk_usage(&path)
    ));

    // 3. O(1) clone: one reference count, whatever the size of the tree.
    let before = e.space();
    let t0 = Instant::now();
    let clone = e.clone_tree(&original)?;
    e.set_root(CLONE, Some(clone))?;
    let t_clone = t0.elapsed();
    e.commit()?;
    let t_total = t0.elapsed();
    step(format!(
        "cloned the tree in {} µs (clone + commit, with its two device flushes: {} µs); \
         metadata pages allocated: {}",
        t_clone.as_micros(),
        t_total.as_micros(),
        e.space().meta_allocated - before.meta_allocated
    ));

    // 4. Modify the clone: only the nodes on the changed paths are shadowed.
    let mut clone = clone;
    let rewritten: Vec<u64> = std::iter::once(0)
        .chain(REGION..REGION + REWRITES)
        .collect();
    let mut old_values = Vec::with_capacity(rewritten.len());
    let mut v = [0u8; 8];
    for &k in &rewritten {
        if !e.lookup(&original, k, &mut v)? {
            return Err(format!("key {k} missing").into());
        }
        old_values.push(v);
    }
    let before = e.space();
    let new_extent = e.alloc_data()?;
    e.insert(&mut clone, 0, &new_extent.to_le_bytes())?;
    let one = e.space().meta_allocated - before.meta_allocated;
    for &k in &rewritten[1..] {
        let extent = e.alloc_data()?;
        e.insert(&mut clone, k, &extent.to_le_bytes())?;
    }
    e.set_root(CLONE, Some(clone))?;
    e.commit()?;
    let after = e.space();
    step(format!(
        "rewrote 1 key of the clone: {one} metadata pages allocated (the shadowed \
         root-to-leaf path and space-map blocks); after {} more in one region: {} in all, \
         the rest of the original's {} blocks stay shared",
        REWRITES,
        after.meta_allocated - before.meta_allocated,
        before.meta_allocated
    ));

    // 5. The original still maps every key to its old extent.
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    for (&k, old) in rewritten.iter().zip(&old_values) {
        if !e.lookup(&original, k, &mut a)? || !e.lookup(&clone, k, &mut b)? {
            return Err(format!("key {k} missing").into());
        }
        if a != *old || a == b {
            return Err(format!("key {k}: the original changed along with the clone").into());
        }
        if e.data_refcount(u64::from_le_bytes(a))? != 1 {
            return Err(format!("extent of original key {k} is still shared").into());
        }
    }
    if count(&mut e, &original)? != KEYS {
        return Err("the original lost keys".into());
    }
    step(format!(
        "original unchanged: {KEYS} keys, and each of the {} keys rewritten in the clone \
         still maps to its old extent (now referenced by the original only)",
        rewritten.len()
    ));

    // 6. Drop the clone: only what it alone owned is freed.
    let before = e.space();
    let clone = e
        .set_root(CLONE, None)?
        .ok_or("the clone's root slot is empty")?;
    e.drop_tree(clone)?;
    e.commit()?;
    let after = e.space();
    step(format!(
        "dropped the clone: {} metadata pages and {} data extents returned to the pool \
         (its own changes); the original keeps its {}",
        before.meta_allocated - after.meta_allocated,
        before.data_allocated - after.data_allocated,
        after.data_allocated
    ));

    // 7. Crash: change a lot, then lose the engine without committing.
    let committed = e.generation();
    let committed_space = e.space();
    let mut doomed = original;
    for k in 0..KEYS / 2 {
        e.remove(&mut doomed, k)?;
    }
    for k in KEYS..KEYS + 10_000 {
        let extent = e.alloc_data()?;
        e.insert(&mut doomed, k, &extent.to_le_bytes())?;
    }
    let uncommitted = count(&mut e, &doomed)?;
    drop(e.into_device()); // "power cut": the file is closed, nothing is committed
    let dev = FileDevice::open(&path, BLOCK_SIZE)?;
    let mut e = Engine::open(dev, &OpenOptions::default())?;
    let original = e
        .root(ORIGINAL)?
        .ok_or("the original's root slot is empty after reopen")?;
    let keys = count(&mut e, &original)?;
    if e.generation() != committed || keys != KEYS || !same_usage(e.space(), committed_space) {
        return Err("reopen did not recover the last commit".into());
    }
    step(format!(
        "crash with {uncommitted} keys in an uncommitted tree; reopened at generation \
         {committed}, the last commit: {keys} keys, space accounting as committed"
    ));

    // 8. Audit every invariant.
    let violations = e.audit();
    if !violations.is_empty() {
        for v in violations.iter().take(10) {
            eprintln!("  {v}");
        }
        return Err(format!("audit found {} violations", violations.len()).into());
    }
    step("audit: clean".to_string());
    println!(
        "tour finished in {}; the image used {} on disk",
        ms(started.elapsed()),
        disk_usage(&path)
    );
    Ok(())
}

/// Prints one narrated step.
fn step(line: String) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    println!("[{}] {line}", N.fetch_add(1, Ordering::Relaxed) + 1);
}

/// Number of entries in `t`.
fn count(e: &mut Engine<FileDevice>, t: &Tree) -> Result<u64> {
    let mut n = 0;
    e.range(t, 0, u64::MAX, |_, _| {
        n += 1;
        true
    })?;
    Ok(n)
}

/// Same blocks and extents in use (pinned counters reset at open).
fn same_usage(a: SpaceStats, b: SpaceStats) -> bool {
    a.meta_allocated == b.meta_allocated && a.data_allocated == b.data_allocated
}

fn bytes(n: u64) -> String {
    if n < 1 << 20 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Bytes the image really occupies (it is sparse), as text.
fn disk_usage(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(path) {
            return bytes(m.blocks() * 512);
        }
    }
    let _ = path;
    "unknown".to_string()
}
