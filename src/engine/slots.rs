//! Layer 5a: choosing the superblock at open, from the four copies on the device.
//!
//! Slot `g % 2` holds generation `g`, in two copies: pages 0 and 1 at the start of
//! the device, and the last two pages at its end. A commit writes the first copy,
//! flushes, then the second, so a power cut leaves at least one copy of every slot
//! valid, holding either the new generation or the one before it. The newest valid
//! copy wins; a copy of its slot that is bad or older is rewritten by the next commit.
//!
//! Format first replaces every copy with a *wiped* page: a sealed superblock page
//! of generation 0, which says "no commit here" as surely as a checksum can.
//!
//! Damage is never a silent rollback. When both copies of the other slot are bad,
//! that slot may have held the newest commit (generation `g + 1`): open refuses
//! with [`Error::CommitLost`] unless the caller allows the rollback, except where
//! a copy is wiped or a damaged copy still names an older generation of the slot.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use super::superblock::{second_superblock, Superblock, SUPERBLOCK_PAGES};
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::store::page::{self, PageKind, PAGE_SIZE};
use crate::store::page_store::PageStore;

/// One copy of one slot, as read.
struct Copy {
    /// Where it was read.
    page: u64,
    /// The slot it belongs to.
    slot: u64,
    /// The decoded superblock, or why it is not one.
    parsed: Result<Superblock>,
    /// A wiped page (format's "no commit here").
    wiped: bool,
    bytes: Box<[u8]>,
}

/// Writes a wiped page for slot `slot` into `b`: sealed, generation 0.
pub(crate) fn wiped_page(b: &mut [u8], slot: u64) {
    page::init(b, PageKind::Superblock, slot, 0);
    page::seal(b);
}

/// The superblock open uses, and what it found on the way.
pub(crate) struct Chosen {
    /// The newest valid superblock.
    pub sb: Superblock,
    /// Copies of its slot that are bad or older: (page, bytes to write there).
    pub heal: Vec<(u64, Box<[u8]>)>,
    /// A rollback the caller allowed: (generation lost, generation kept).
    pub rollback: Option<(u64, u64)>,
}

fn read_copy<D: BlockDevice>(st: &mut PageStore<D>, page: u64, slot: u64) -> Result<Copy> {
    let mut bytes = vec![0u8; PAGE_SIZE].into_boxed_slice();
    st.read_page(page, &mut bytes)?;
    let verified = page::verify(&bytes, slot, PageKind::Superblock, u64::MAX - 1);
    let wiped = verified.is_ok() && page::txid(&bytes) == 0;
    let parsed = verified
        .and_then(|()| {
            if wiped {
                Err(Error::NotFormatted)
            } else {
                Superblock::decode(&bytes)
            }
        })
        .and_then(|sb| {
            // Generation g lives in slot g % 2; anything else was misdirected.
            if sb.generation == 0 || sb.generation % 2 != slot {
                Err(Error::Misplaced {
                    addr: slot,
                    what: "superblock generation does not belong in this slot",
                })
            } else {
                Ok(sb)
            }
        });
    Ok(Copy {
        page,
        slot,
        parsed,
        wiped,
        bytes,
    })
}

fn generation(c: &Copy) -> Option<u64> {
    c.parsed.as_ref().ok().map(|sb| sb.generation)
}

/// The copy with the newest valid generation.
fn newest(copies: &[Copy]) -> Option<&Copy> {
    newest_of(copies.iter())
}

/// The first of `copies` with the highest valid generation (first copies come
/// before second ones, so a first copy wins a tie).
fn newest_of<'a>(copies: impl Iterator<Item = &'a Copy>) -> Option<&'a Copy> {
    copies
        .filter(|c| c.parsed.is_ok())
        .fold(None, |best, c| match best {
            Some(b) if generation(b) >= generation(c) => Some(b),
            _ => Some(c),
        })
}

/// Reads the second copies of both slots for a device of `device_pages` pages.
fn read_second<D: BlockDevice>(st: &mut PageStore<D>, device_pages: u64) -> Result<Vec<Copy>> {
    let mut v = Vec::new();
    if device_pages >= 2 * SUPERBLOCK_PAGES && device_pages <= st.device_pages() {
        for slot in 0..SUPERBLOCK_PAGES {
            v.push(read_copy(st, second_superblock(device_pages, slot), slot)?);
        }
    }
    Ok(v)
}

/// Reads every superblock copy and picks the one to open; see the module docs.
pub(crate) fn choose<D: BlockDevice>(
    st: &mut PageStore<D>,
    allow_rollback: bool,
) -> Result<Chosen> {
    let actual = st.device_pages();
    let mut copies = Vec::new();
    for slot in 0..SUPERBLOCK_PAGES.min(actual) {
        copies.push(read_copy(st, slot, slot)?);
    }
    copies.extend(read_second(st, actual)?);
    // The image may have grown since format: its second copies are where the
    // geometry says.
    if let Some(formatted) = newest(&copies).and_then(|c| c.parsed.as_ref().ok()) {
        let pages = formatted.geo.device_pages;
        if pages != actual {
            copies.truncate(2);
            copies.extend(read_second(st, pages)?);
        }
    }
    // A slot of a newer version must not silently lose to an older one.
    for c in &copies {
        if let Err(e @ (Error::UnsupportedVersion(_) | Error::IncompatibleFeatures(_))) = &c.parsed
        {
            return Err(e.clone());
        }
    }
    let Some(best) = newest(&copies) else {
        let any_magic = copies
            .iter()
            .any(|c| !c.wiped && page::get_u32(&c.bytes, 0) == page::MAGIC);
        return Err(match copies.into_iter().find_map(|c| c.parsed.err()) {
            Some(e) if any_magic => e,
            _ => Error::NotFormatted,
        });
    };
    let g = generation(best).unwrap_or(0);
    // In each slot, a copy that is bad or older than its twin is rewritten from the
    // twin: the older slot is what open falls back to, so it must stay whole too.
    let mut heal: Vec<(u64, Box<[u8]>)> = Vec::new();
    for slot in 0..SUPERBLOCK_PAGES {
        let newest_here = newest_of(copies.iter().filter(|c| c.slot == slot));
        if let Some(good) = newest_here {
            let want = generation(good);
            for c in copies.iter().filter(|c| c.slot == slot) {
                // Two valid copies of one generation that differ: only a forged or
                // buggy image has them; the one open uses is written over the other.
                if generation(c) != want || c.bytes != good.bytes {
                    heal.push((c.page, good.bytes.clone()));
                }
            }
        }
    }
    let mut rollback = None;
    if let Some(lost) = lost_generation(&copies, g) {
        if !allow_rollback {
            return Err(Error::CommitLost {
                lost: lost.0,
                kept: g,
                certain: lost.1,
            });
        }
        rollback = Some((lost.0, g));
    }
    let best_page = best.page;
    let sb = match copies.into_iter().find(|c| c.page == best_page) {
        Some(Copy { parsed: Ok(sb), .. }) => sb,
        _ => return Err(Error::NotFormatted),
    };
    Ok(Chosen { sb, heal, rollback })
}

/// When both copies of the slot other than the newest generation `g`'s are bad,
/// the generation that may have been lost (`g + 1`) and whether it certainly was
/// (a damaged copy still names it); `None` when nothing can have been lost.
fn lost_generation(copies: &[Copy], g: u64) -> Option<(u64, bool)> {
    let other: Vec<&Copy> = copies.iter().filter(|c| c.slot != g % 2).collect();
    // Claim a loss only from copies actually read (a device too small to hold
    // them fails its geometry check instead).
    if other.len() < 2 || other.iter().any(|c| c.parsed.is_ok() || c.wiped) {
        return None;
    }
    let raw = |c: &&Copy| page::txid(&c.bytes);
    if other.iter().any(|c| raw(c) == g + 1) {
        return Some((g + 1, true));
    }
    // A damaged page that still names an older generation of its slot held that.
    if other
        .iter()
        .any(|c| raw(c) < g && raw(c) > 0 && (g - raw(c)) % 2 == 1)
    {
        return None;
    }
    Some((g + 1, false))
}
