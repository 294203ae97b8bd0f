//! The ranges of an incremental backup: FILE.ranges (the JSON of `diff --json`, with
//! starts in FILE), checked before anything is written, and the bytes of those ranges
//! read out of FILE, out of a stream, or out of the records a forwarded `write
//! --ranges` sends (the ranges first, then their data, gaps left out).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use lunsnap::SECTOR;

use crate::fail::{Fail, Result};
use crate::json::{Ranges, Span};

/// The ranges file of an incremental read into `file`: `FILE.ranges`.
pub fn sidecar(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_os_string();
    s.push(".ranges");
    PathBuf::from(s)
}

/// Reads and checks the ranges file at `path`.
pub fn load(path: &Path) -> Result<Vec<Span>> {
    let text = std::fs::read_to_string(path).map_err(|e| Fail::io("read", path, &e))?;
    let r: Ranges = serde_json::from_str(&text).map_err(|e| {
        Fail::new(format!(
            "{} is not a ranges file (the JSON that `read --changed-since` writes and \
             `diff --json` prints): {e}",
            path.display()
        ))
    })?;
    check(&r.ranges, &path.display().to_string())?;
    let sum: u64 = r.ranges.iter().map(|s| s.length).sum();
    if sum != r.total_bytes {
        return Err(Fail::new(format!(
            "{}: total_bytes is {}, but its ranges add up to {sum}",
            path.display(),
            r.total_bytes
        )));
    }
    Ok(r.ranges)
}

/// Checks that `spans` (from `name`) are whole sectors, not empty, in order and apart.
pub fn check(spans: &[Span], name: &str) -> Result<()> {
    let mut end = 0u64;
    for (i, s) in spans.iter().enumerate() {
        if s.length == 0 || !s.start.is_multiple_of(SECTOR) || !s.length.is_multiple_of(SECTOR) {
            return Err(Fail::new(format!(
                "{name}: range {i} (start {}, length {}) is not whole 512-byte sectors",
                s.start, s.length
            )));
        }
        if s.start < end || s.start.checked_add(s.length).is_none() {
            return Err(Fail::new(format!(
                "{name}: range {i} (start {}) overlaps the one before, or is out of order",
                s.start
            )));
        }
        end = s.end();
    }
    Ok(())
}

/// Where the bytes of the ranges come from.
pub enum Source<'a> {
    /// A file: each range is read at its offset.
    File(File),
    /// A stream holding the whole of FILE: the gaps are read and dropped.
    Stream(Box<dyn Read + 'a>, u64),
    /// The data of the ranges only, one after the other (a forwarded `write --ranges`).
    Packed(Box<dyn Read + 'a>),
}

impl Source<'_> {
    /// Fills `buf` with the bytes at `start` in FILE (never before earlier ones).
    pub fn fetch(&mut self, start: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match self {
            Source::File(f) => {
                f.seek(SeekFrom::Start(start))?;
                f.read_exact(buf)
            }
            Source::Stream(r, at) => {
                let gap = start.saturating_sub(*at);
                let dropped = std::io::copy(&mut r.by_ref().take(gap), &mut std::io::sink())?;
                if dropped < gap {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                r.read_exact(buf)?;
                *at = start + buf.len() as u64;
                Ok(())
            }
            Source::Packed(r) => r.read_exact(buf),
        }
    }
}

/// The failure of reading range data at `start` out of `file` (`-`: stdin).
pub fn fetch_error(file: &Path, start: u64, e: &std::io::Error) -> Fail {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        let name = if file.as_os_str() == "-" {
            String::from("the input")
        } else {
            file.display().to_string()
        };
        Fail::new(format!(
            "{name} ends before the ranges do (at byte {start}); the ranges written so far \
             are not committed"
        ))
    } else {
        Fail::io("read", file, e)
    }
}

/// The head of a forwarded `write --ranges`'s stdin: the number of ranges, then each
/// one's start and length (little-endian u64s).
pub fn encode_head(spans: &[Span]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + 16 * spans.len());
    v.extend_from_slice(&(spans.len() as u64).to_le_bytes());
    for s in spans {
        v.extend_from_slice(&s.start.to_le_bytes());
        v.extend_from_slice(&s.length.to_le_bytes());
    }
    v
}

/// Reads the head [`encode_head`] wrote (memory grows with what arrives, whatever
/// count it claims).
pub fn decode_head(input: &mut dyn Read) -> Result<Vec<Span>> {
    let broken = |e: std::io::Error| Fail::new(format!("the ranges did not arrive whole: {e}"));
    let mut word = [0u8; 8];
    let mut next = |input: &mut dyn Read| -> Result<u64> {
        input.read_exact(&mut word).map_err(broken)?;
        Ok(u64::from_le_bytes(word))
    };
    let count = next(input)?;
    let mut spans = Vec::new();
    for _ in 0..count {
        let start = next(input)?;
        let length = next(input)?;
        spans.push(Span { start, length });
    }
    check(&spans, "the ranges sent")?;
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: u64, length: u64) -> Span {
        Span { start, length }
    }

    #[test]
    fn ranges_are_checked() {
        assert!(check(&[span(0, 512), span(1024, 4096)], "r").is_ok());
        assert!(check(&[span(0, 512), span(0, 512)], "r").is_err());
        assert!(check(&[span(1024, 512), span(0, 512)], "r").is_err());
        assert!(check(&[span(0, 0)], "r").is_err());
        assert!(check(&[span(1, 512)], "r").is_err());
        assert!(check(&[span(u64::MAX - 511, 512)], "r").is_err());
    }

    #[test]
    fn heads_round_trip() {
        let spans = vec![span(0, 512), span(4096, 8192)];
        let head = encode_head(&spans);
        assert_eq!(decode_head(&mut &head[..]).unwrap(), spans);
        assert!(decode_head(&mut &head[..head.len() - 1]).is_err());
    }

    #[test]
    fn a_stream_source_skips_gaps() {
        let data: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let mut s = Source::Stream(Box::new(&data[..]), 0);
        let mut buf = [0u8; 512];
        s.fetch(1024, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[1024..1536]);
        s.fetch(3584, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[3584..]);
        assert!(s.fetch(4096, &mut buf).is_err());
    }
}
