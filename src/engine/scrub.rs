//! Scrub: read every copy of every metadata page the last commit reaches, and
//! rewrite the bad ones from the good.
//!
//! Memory: one bit per metadata page (pages reached through several trees are
//! scrubbed once), the stack of nodes still to visit, and up to [`MAX_PROBLEMS`]
//! problems listed one by one (the rest counted).

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::btree::node::{self, Ref};
use crate::device::BlockDevice;
use crate::engine::audit::error_addr;
use crate::engine::superblock::SUPERBLOCK_PAGES;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::page::{self, PageKind, PAGE_SIZE};
use crate::store::page_store::ScrubOutcome;
use crate::store::space_map::MapId;

/// Problems listed one by one in a [`ScrubReport`]; more are only counted.
pub const MAX_PROBLEMS: usize = 1000;

/// A metadata page no copy of which could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrubProblem {
    /// Page address (in 4 KiB pages from the device start).
    pub addr: u64,
    /// Why its first copy is bad.
    pub error: Error,
}

impl fmt::Display for ScrubProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "metadata page {}: no good copy left: {}",
            self.addr, self.error
        )
    }
}

/// What [`Engine::scrub`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Metadata pages whose copies were read (superblock copies included).
    pub pages: u64,
    /// Copies rewritten from a good copy (durable when `scrub` returns).
    pub healed: u64,
    /// Pages with no good copy (the first [`MAX_PROBLEMS`]).
    pub lost: Vec<ScrubProblem>,
    /// Pages with no good copy, in all.
    pub lost_count: u64,
}

impl ScrubReport {
    fn lose(&mut self, addr: u64, error: Error) {
        self.lost_count += 1;
        if self.lost.len() < MAX_PROBLEMS {
            self.lost.push(ScrubProblem { addr, error });
        }
    }

    /// True when every page has a good copy now.
    pub fn is_healthy(&self) -> bool {
        self.lost_count == 0
    }
}

impl<D: BlockDevice> Engine<D> {
    /// Commits when there is anything to commit (changes, or bad copies that reads
    /// found), then reads both copies of every metadata page the last commit
    /// reaches (superblocks, space maps, every tree node), rewrites each bad or
    /// stale copy from the good one, flushes, and commits again when it healed
    /// anything (so the healed count is kept). Pages with no good copy are listed;
    /// `scrub` does not descend below them. `progress(done, total)` is called as
    /// pages are scrubbed (`total` is the number of metadata pages in use). The
    /// report's `healed` counts every copy rewritten, by the first commit too.
    ///
    /// Errors: a device error (the engine is then poisoned, as for any commit).
    pub fn scrub(&mut self, mut progress: impl FnMut(u64, u64)) -> Result<ScrubReport> {
        self.live()?;
        let before = self.healed();
        if self.has_changes() || self.pending_heals() > 0 {
            self.commit()?;
        }
        let r = self.scrub_committed(&mut progress);
        if r.is_err() {
            self.poison();
        }
        let mut report = r?;
        self.commit_healed(report.healed)?;
        report.healed = self.healed() - before;
        report.pages += SUPERBLOCK_PAGES * 2;
        Ok(report)
    }

    fn scrub_committed(&mut self, progress: &mut impl FnMut(u64, u64)) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        report.healed += self.scrub_superblocks(&mut report)?;
        let total = self.sm.meta.allocated;
        let mut done = 0u64;
        for map in [MapId::Meta, MapId::Data] {
            let mut nodes = Vec::new();
            // The map's nodes are read through the cache, which falls back to the
            // second copy; one with no good copy stops the listing there.
            if let Err(e) = self
                .sm
                .for_each_node(&mut self.st, map, |a, k| nodes.push((a, k)))
            {
                report.lose(error_addr(&e), e);
            }
            for (addr, kind) in nodes {
                self.scrub_one(addr, kind, &mut report)?;
                done += 1;
                progress(done, total);
            }
        }
        let meta = self.geo.meta_start..self.geo.meta_start + self.geo.meta_pages;
        let mut seen = vec![0u64; (self.geo.meta_pages as usize).div_ceil(64)];
        let mut stack: Vec<u64> = self.trees().map(|t| t.root()).collect();
        while let Some(addr) = stack.pop() {
            if addr == 0 {
                continue;
            }
            if !meta.contains(&addr) {
                report.lose(
                    addr,
                    Error::corrupt(addr, "pointer outside the metadata area"),
                );
                continue;
            }
            let i = (addr - meta.start) as usize;
            if seen[i / 64] & (1 << (i % 64)) != 0 {
                continue;
            }
            seen[i / 64] |= 1 << (i % 64);
            if !self.scrub_one(addr, PageKind::BtreeNode, &mut report)? {
                continue;
            }
            done += 1;
            progress(done, total);
            let b = match self.st.read(addr, PageKind::BtreeNode) {
                Ok(b) => b,
                Err(e) => {
                    report.lose(addr, e);
                    continue;
                }
            };
            let h = match node::header(b, addr) {
                Ok(h) => h,
                Err(e) => {
                    report.lose(addr, e);
                    continue;
                }
            };
            for j in 0..h.nr {
                if h.is_leaf() {
                    for r in node::value_refs(h.kind, node::value(b, &h, j)) {
                        if let Ref::Tree(t) = r {
                            stack.push(t);
                        }
                    }
                } else {
                    stack.push(node::child(b, &h, j));
                }
            }
        }
        self.st.flush_device()?;
        Ok(report)
    }

    /// Scrubs one page; false (and the page listed) when no copy is good.
    fn scrub_one(&mut self, addr: u64, kind: PageKind, report: &mut ScrubReport) -> Result<bool> {
        report.pages += 1;
        match self.st.scrub_page(addr, kind) {
            Ok(ScrubOutcome::Healthy) => Ok(true),
            Ok(ScrubOutcome::Healed) => {
                report.healed += 1;
                Ok(true)
            }
            Ok(ScrubOutcome::Lost(e)) => {
                report.lose(addr, e);
                Ok(false)
            }
            Err(e) if e.is_corruption() => {
                report.lose(addr, e);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Both copies of both superblock slots: a copy that is bad or older than its
    /// twin is rewritten from the twin; a slot with no good copy is listed (the
    /// older slot, after a rollback: the next commit rewrites it).
    fn scrub_superblocks(&mut self, report: &mut ScrubReport) -> Result<u64> {
        let mut healed = 0;
        for slot in 0..SUPERBLOCK_PAGES {
            let pages = [slot, self.geo.superblock_copy(slot)];
            let mut bufs = [vec![0u8; PAGE_SIZE], vec![0u8; PAGE_SIZE]];
            let mut gen = [None; 2];
            for c in 0..2 {
                self.st.read_page(pages[c], &mut bufs[c])?;
                let ok = page::verify(&bufs[c], slot, PageKind::Superblock, self.generation);
                gen[c] = ok.ok().map(|()| page::txid(&bufs[c]));
            }
            let (good, bad) = match gen {
                [Some(a), Some(b)] if a == b => continue,
                [Some(a), Some(b)] if a > b => (0, 1),
                [Some(_), None] => (0, 1),
                [_, Some(_)] => (1, 0),
                [None, None] => {
                    let e = page::verify(&bufs[0], slot, PageKind::Superblock, self.generation);
                    report.lose(slot, e.err().unwrap_or(Error::NotFormatted));
                    continue;
                }
            };
            self.st.write_page(pages[bad], &bufs[good])?;
            healed += 1;
        }
        Ok(healed)
    }

    /// Commits after a scrub that healed something, so the count is kept.
    fn commit_healed(&mut self, healed: u64) -> Result<()> {
        if healed > 0 {
            self.add_healed(healed);
            self.commit()?;
        }
        Ok(())
    }
}
