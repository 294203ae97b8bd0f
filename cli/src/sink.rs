//! Where `read` puts what it reads: a [`Sink`] takes the output's length, the ranges
//! an incremental read covers, and the data at its positions; whatever it is not
//! given reads as zeros. The same events go to a local file or stdout ([`Local`]), or
//! over the control socket as records ([`Encoder`], decoded by the forwarding client
//! with [`Decoder`] into its own [`Local`]), so that holes never travel and a served
//! `read` into a file writes it exactly as the cold one does.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fail::{Fail, Result};
use crate::json::{self, Ranges, Span};
use crate::transfer::CHUNK;

/// What `read` produces, in order: the length first, then ranges and data at
/// increasing positions (relative to the read's offset), then the end.
pub trait Sink {
    /// The output is `len` bytes long (the first event).
    fn begin(&mut self, len: u64) -> Result<()>;
    /// `[start, start + len)` is a range of an incremental read (FILE.ranges lists it).
    fn range(&mut self, start: u64, len: u64) -> Result<()>;
    /// `data` goes at `start` (never before the end of earlier data).
    fn data(&mut self, start: u64, data: &[u8]) -> Result<()>;
    /// Everything has been given.
    fn end(&mut self) -> Result<()>;
}

/// A destination of bytes: a stream (zeros written out) or a file (sparse if regular).
pub enum Out<'a> {
    /// Standard output, or the control socket's.
    Stream(Box<dyn Write + 'a>),
    /// A file; `sparse` for a regular file (zeros are skipped, not written).
    File {
        /// The file.
        f: File,
        /// Skip zeros.
        sparse: bool,
    },
}

/// Zeros to write where a stream has a hole.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl Out<'_> {
    /// Creates (or truncates) `file` (the caller made sure it is not the image).
    /// Returns it and whether it existed before.
    pub fn create(file: &Path) -> Result<(Out<'static>, bool)> {
        let existed = file.exists();
        let f = File::create(file).map_err(|e| Fail::io("create", file, &e))?;
        let sparse = f.metadata().map(|m| m.is_file()).unwrap_or(false);
        Ok((Out::File { f, sparse }, existed))
    }

    /// Moves on `n` bytes that read as zeros.
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        match self {
            Out::File { f, sparse: true } => {
                let by = i64::try_from(n).map_err(std::io::Error::other)?;
                f.seek(SeekFrom::Current(by)).map(drop)
            }
            Out::Stream(s) => zeros(s.as_mut(), n),
            Out::File { f, .. } => zeros(f, n),
        }
    }

    /// Writes `data` (a sparse file skips its zeros).
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Stream(s) => s.write_all(data),
            Out::File { f, sparse: false } => f.write_all(data),
            Out::File { f, sparse: true } => {
                for piece in data.chunks(64 << 10) {
                    if piece.iter().all(|&b| b == 0) {
                        f.seek(SeekFrom::Current(piece.len() as i64))?;
                    } else {
                        f.write_all(piece)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Ends the output at `len` bytes, `at` of them given so far.
    fn finish(&mut self, at: u64, len: u64) -> std::io::Result<()> {
        match self {
            // Skipped zeros at the end still count: give the file its full length.
            Out::File { f, sparse: true } => {
                f.set_len(len)?;
                f.flush()
            }
            _ => {
                self.skip(len.saturating_sub(at))?;
                match self {
                    Out::Stream(s) => s.flush(),
                    Out::File { f, .. } => f.flush(),
                }
            }
        }
    }
}

/// Writes `n` zeros to `w`.
fn zeros(w: &mut dyn Write, mut n: u64) -> std::io::Result<()> {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// The output of a read where the command runs: a file (with FILE.ranges beside it
/// for an incremental read) or stdout.
pub struct Local<'a> {
    out: Out<'a>,
    /// The output, for messages.
    name: PathBuf,
    len: u64,
    /// Bytes given so far (written or skipped).
    at: u64,
    /// An incremental read: its ranges, and where they are listed.
    listed: Option<(Vec<Span>, PathBuf)>,
}

impl<'a> Local<'a> {
    /// Output to `out`, called `name` in messages; `sidecar` is the FILE.ranges of an
    /// incremental read.
    pub fn new(out: Out<'a>, name: &Path, sidecar: Option<PathBuf>) -> Local<'a> {
        Local {
            out,
            name: name.to_path_buf(),
            len: 0,
            at: 0,
            listed: sidecar.map(|p| (Vec::new(), p)),
        }
    }

    /// The ranges of an incremental read so far: how many, and their bytes.
    pub fn listed(&self) -> Option<(usize, u64)> {
        self.listed
            .as_ref()
            .map(|(v, _)| (v.len(), v.iter().map(|s| s.length).sum()))
    }

    /// A failed write: a closed pipe (`| head`) ends the command quietly.
    fn io(&self, e: &std::io::Error) -> Fail {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Fail::closed()
        } else {
            Fail::io("write", &self.name, e)
        }
    }
}

impl Sink for Local<'_> {
    fn begin(&mut self, len: u64) -> Result<()> {
        self.len = len;
        Ok(())
    }

    fn range(&mut self, start: u64, len: u64) -> Result<()> {
        if let Some((v, _)) = &mut self.listed {
            match v.last_mut() {
                Some(last) if last.end() == start => last.length += len,
                _ => v.push(Span { start, length: len }),
            }
        }
        Ok(())
    }

    fn data(&mut self, start: u64, data: &[u8]) -> Result<()> {
        let end = start.saturating_add(data.len() as u64);
        if start < self.at || end > self.len {
            return Err(Fail::new(format!(
                "{}: data for bytes {start} to {end} arrived out of order",
                self.name.display()
            )));
        }
        let r = self
            .out
            .skip(start - self.at)
            .and_then(|()| self.out.put(data));
        r.map_err(|e| self.io(&e))?;
        self.at = end;
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        let (at, len) = (self.at, self.len);
        self.out.finish(at, len).map_err(|e| self.io(&e))?;
        self.at = len;
        if let Some((v, path)) = &self.listed {
            let text = json::render(&Ranges::new(v.clone()));
            std::fs::write(path, text).map_err(|e| Fail::io("write", path, &e))?;
        }
        Ok(())
    }
}

/// Record tags of a served `read --records` (all numbers little-endian u64).
mod tag {
    /// `L len`: the output's length.
    pub const LEN: u8 = b'L';
    /// `R start len`: a range of an incremental read.
    pub const RANGE: u8 = b'R';
    /// `D start len` and `len` bytes: data.
    pub const DATA: u8 = b'D';
}

/// The events of a read as records on a stream (the control socket's stdout).
pub struct Encoder<'a>(pub Box<dyn Write + 'a>);

impl Encoder<'_> {
    fn record(&mut self, t: u8, a: u64, b: Option<u64>, data: &[u8]) -> Result<()> {
        let mut head = Vec::with_capacity(17);
        head.push(t);
        head.extend_from_slice(&a.to_le_bytes());
        if let Some(b) = b {
            head.extend_from_slice(&b.to_le_bytes());
        }
        self.0
            .write_all(&head)
            .and_then(|()| self.0.write_all(data))
            .map_err(|e| Fail::new(format!("cannot write to the control socket: {e}")))
    }
}

impl Sink for Encoder<'_> {
    fn begin(&mut self, len: u64) -> Result<()> {
        self.record(tag::LEN, len, None, &[])
    }

    fn range(&mut self, start: u64, len: u64) -> Result<()> {
        self.record(tag::RANGE, start, Some(len), &[])
    }

    fn data(&mut self, start: u64, data: &[u8]) -> Result<()> {
        // Pieces of at most CHUNK bytes: the decoder holds one record at a time.
        for (i, piece) in data.chunks(CHUNK).enumerate() {
            let at = start + (i * CHUNK) as u64;
            self.record(tag::DATA, at, Some(piece.len() as u64), piece)?;
        }
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        self.0
            .flush()
            .map_err(|e| Fail::new(format!("cannot write to the control socket: {e}")))
    }
}

/// Turns the records of a served read back into [`Sink`] events, as they arrive in
/// pieces of any size.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Decodes what `bytes` completes, passing each record to `sink`.
    pub fn feed(&mut self, bytes: &[u8], sink: &mut dyn Sink) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        let mut used = 0;
        while let Some(n) = self.one(&self.buf[used..], sink)? {
            used += n;
        }
        self.buf.drain(..used);
        Ok(())
    }

    /// Fails if a record was cut short.
    pub fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(bad("the server's data ended inside a record"))
        }
    }

    /// Decodes the record at the start of `b`, if whole; returns its length.
    fn one(&self, b: &[u8], sink: &mut dyn Sink) -> Result<Option<usize>> {
        let num = |i: usize| -> Option<u64> {
            let s = b.get(1 + 8 * i..9 + 8 * i)?;
            Some(u64::from_le_bytes(s.try_into().ok()?))
        };
        let Some(&t) = b.first() else {
            return Ok(None);
        };
        match t {
            tag::LEN => Ok(num(0).map(|len| sink.begin(len).map(|()| 9)).transpose()?),
            tag::RANGE => match (num(0), num(1)) {
                (Some(s), Some(l)) => sink.range(s, l).map(|()| Some(17)),
                _ => Ok(None),
            },
            tag::DATA => match (num(0), num(1)) {
                (Some(_), Some(l)) if l > CHUNK as u64 => Err(bad("a data record is too long")),
                (Some(s), Some(l)) => match b.get(17..17 + l as usize) {
                    Some(data) => sink.data(s, data).map(|()| Some(17 + l as usize)),
                    None => Ok(None),
                },
                _ => Ok(None),
            },
            _ => Err(bad("an unknown record")),
        }
    }
}

fn bad(what: &str) -> Fail {
    Fail::new(format!("the server sent a broken read: {what}"))
}
