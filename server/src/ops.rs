//! Executing one transmission request on the array, and encoding its reply. No
//! sockets here: the caller holds the array locked, passes the request and its
//! payload, and sends the bytes this module appends to `out`.

use lunsnap::{Error, MapRange, SECTOR};

use crate::exports::Identity;
use crate::proto::{self, cflag, cmd, errno, reply, Request};
use crate::shared::ServedArray;

/// What a connection negotiated for its export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The LUN served.
    pub lun: u32,
    /// Its size when the export was opened.
    pub size: u64,
    /// Whom the connection acts for.
    pub who: Identity,
    /// Structured replies negotiated.
    pub structured: bool,
    /// `base:allocation` selected.
    pub base_allocation: bool,
    /// Writes refused.
    pub read_only: bool,
}

/// A failed request: the error value and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// `NBD_E*`.
    pub errno: u32,
    /// Why.
    pub message: String,
}

fn fail(errno: u32, message: impl Into<String>) -> Failure {
    Failure {
        errno,
        message: message.into(),
    }
}

/// The NBD error for an array error.
pub fn errno_of(e: &Error) -> u32 {
    match e {
        Error::ReadOnlyAccess { .. } => errno::EPERM,
        Error::NoSpace { .. } => errno::ENOSPC,
        Error::OutOfRange { .. } | Error::Misaligned { .. } => errno::EINVAL,
        // Data lost to metadata damage (`repair` could not read its mapping back):
        // an I/O error, as a bad sector's, until it is written or trimmed.
        Error::LostData { .. } => errno::EIO,
        _ => errno::EIO,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        fail(errno_of(&e), e.to_string())
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// The command flags each command accepts (FUA is valid on all of them).
fn allowed_flags(kind: u16, s: &Session) -> u16 {
    match kind {
        cmd::READ if s.structured => cflag::FUA | cflag::DF,
        cmd::WRITE_ZEROES => cflag::FUA | cflag::NO_HOLE,
        cmd::BLOCK_STATUS => cflag::FUA | cflag::REQ_ONE,
        _ => cflag::FUA,
    }
}

/// `[start, end)` rounded out to whole sectors.
fn sectors(offset: u64, len: u64) -> (u64, u64) {
    let start = offset / SECTOR * SECTOR;
    let end = (offset + len).div_ceil(SECTOR) * SECTOR;
    (start, end)
}

fn read_at(a: &mut ServedArray, s: &Session, offset: u64, buf: &mut [u8]) -> Result<()> {
    match s.who {
        Identity::Admin => a.read(s.lun, offset, buf)?,
        Identity::Host(h) => a.as_host(h).read(s.lun, offset, buf)?,
    }
    Ok(())
}

fn write_at(a: &mut ServedArray, s: &Session, offset: u64, buf: &[u8]) -> Result<()> {
    match s.who {
        Identity::Admin => a.write(s.lun, offset, buf)?,
        Identity::Host(h) => a.as_host(h).write(s.lun, offset, buf)?,
    }
    Ok(())
}

/// A range of the LUN as the server reports it: data, or a hole (reads as zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    offset: u64,
    length: u64,
    data: bool,
}

/// The LUN's ranges in `[offset, offset + len)`, with the ranges lost to metadata
/// damage (`repair` could not read their mapping back) as data: the array usually
/// maps nothing there, but they are not holes (a read of them fails with EIO until
/// they are written), so a structured read must read them, and a client's block
/// status must not skip them as zeros.
fn map(a: &mut ServedArray, s: &Session, offset: u64, len: u64) -> Result<Vec<Span>> {
    let ranges: Vec<MapRange> = match s.who {
        Identity::Admin => a.map_allocation(s.lun, offset, len)?,
        Identity::Host(h) => a.as_host(h).map_allocation(s.lun, offset, len)?,
    };
    Ok(spans(
        ranges
            .iter()
            .map(|r| (r.offset, r.length, r.data || r.lost)),
    ))
}

/// `(offset, length, data)` ranges, in order, as spans, adjacent spans of one kind
/// merged.
fn spans(ranges: impl Iterator<Item = (u64, u64, bool)>) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for (offset, length, data) in ranges {
        match out.last_mut() {
            Some(l) if l.data == data && l.offset + l.length == offset => l.length += length,
            _ => out.push(Span {
                offset,
                length,
                data,
            }),
        }
    }
    out
}

/// Reads `buf.len()` bytes at any byte `offset` (whole sectors are read around it).
fn read_bytes(a: &mut ServedArray, s: &Session, offset: u64, buf: &mut [u8]) -> Result<()> {
    let (start, end) = sectors(offset, buf.len() as u64);
    if start == offset && end == offset + buf.len() as u64 {
        return read_at(a, s, offset, buf);
    }
    let mut whole = vec![0u8; (end - start) as usize];
    read_at(a, s, start, &mut whole)?;
    let at = (offset - start) as usize;
    buf.copy_from_slice(&whole[at..at + buf.len()]);
    Ok(())
}

/// Writes `data` at any byte `offset` (partial sectors are read, patched, written).
fn write_bytes(a: &mut ServedArray, s: &Session, offset: u64, data: &[u8]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let (start, end) = sectors(offset, data.len() as u64);
    if start == offset && end == offset + data.len() as u64 {
        return write_at(a, s, offset, data);
    }
    let mut whole = vec![0u8; (end - start) as usize];
    read_at(a, s, start, &mut whole)?;
    let at = (offset - start) as usize;
    whole[at..at + data.len()].copy_from_slice(data);
    write_at(a, s, start, &whole)
}

fn flush(a: &mut ServedArray) -> Result<()> {
    a.flush()?;
    Ok(())
}

/// Checks a request's flags and range before it touches the array.
fn validate(req: &Request, s: &Session) -> Result<()> {
    if req.flags & !allowed_flags(req.kind, s) != 0 {
        return Err(fail(
            errno::EINVAL,
            "command flags not valid for this command",
        ));
    }
    let writes = matches!(req.kind, cmd::WRITE | cmd::WRITE_ZEROES | cmd::TRIM);
    if writes && s.read_only {
        return Err(fail(
            errno::EPERM,
            format!("LUN {} is read-only to this host", s.lun),
        ));
    }
    if matches!(req.kind, cmd::READ | cmd::WRITE) && req.length > proto::MAX_REQUEST {
        return Err(fail(errno::EOVERFLOW, "request larger than 32 MiB"));
    }
    let ranged = matches!(
        req.kind,
        cmd::READ | cmd::WRITE | cmd::WRITE_ZEROES | cmd::TRIM | cmd::BLOCK_STATUS
    );
    let end = req.offset.checked_add(u64::from(req.length));
    if ranged && end.is_none_or(|e| e > s.size) {
        let errno = if matches!(req.kind, cmd::WRITE | cmd::WRITE_ZEROES) {
            errno::ENOSPC
        } else {
            errno::EINVAL
        };
        return Err(fail(
            errno,
            format!("request beyond the end of LUN {} ({} bytes)", s.lun, s.size),
        ));
    }
    Ok(())
}

/// Executes `req` (with its write payload) and appends the reply to `out`.
pub fn execute(a: &mut ServedArray, s: &Session, req: &Request, payload: &[u8], out: &mut Vec<u8>) {
    if let Err(f) = validate(req, s) {
        return failure(s, req.handle, &f, out);
    }
    let r = match req.kind {
        // These two append their own replies.
        cmd::READ => return read(a, s, req, out),
        cmd::BLOCK_STATUS => match block_status(a, s, req, out) {
            Ok(()) => return,
            Err(f) => Err(f),
        },
        cmd::WRITE => write_bytes(a, s, req.offset, payload),
        cmd::WRITE_ZEROES => write_zeroes(a, s, req),
        cmd::TRIM => trim(a, s, req),
        cmd::FLUSH => flush(a),
        _ => Err(fail(
            errno::EINVAL,
            format!("command {} not supported", req.kind),
        )),
    };
    let r = r.and_then(|()| {
        let durable = matches!(req.kind, cmd::WRITE | cmd::WRITE_ZEROES | cmd::TRIM);
        if durable && req.flags & cflag::FUA != 0 {
            flush(a)
        } else {
            Ok(())
        }
    });
    match r {
        Ok(()) => ok(s, req.handle, out),
        Err(f) => failure(s, req.handle, &f, out),
    }
}

/// Appends a success reply without data.
fn ok(s: &Session, handle: u64, out: &mut Vec<u8>) {
    if s.structured {
        out.extend_from_slice(&proto::chunk_header(
            reply::FLAG_DONE,
            reply::NONE,
            handle,
            0,
        ));
    } else {
        out.extend_from_slice(&proto::simple_reply(0, handle));
    }
}

/// Appends an error reply.
pub fn failure(s: &Session, handle: u64, f: &Failure, out: &mut Vec<u8>) {
    if s.structured {
        out.extend_from_slice(&proto::error_chunk(handle, f.errno, &f.message));
    } else {
        out.extend_from_slice(&proto::simple_reply(f.errno, handle));
    }
}

/// Appends the reply to a read: simple, or structured chunks that report holes
/// (never-written extents) without their zeros unless the client said "don't
/// fragment". A range lost to metadata damage is no hole ([`map`]): a read that
/// touches one gets EIO.
fn read(a: &mut ServedArray, s: &Session, req: &Request, out: &mut Vec<u8>) {
    let len = req.length as usize;
    let at = out.len();
    if !s.structured {
        out.extend_from_slice(&proto::simple_reply(0, req.handle));
        out.resize(at + 16 + len, 0);
        if let Err(f) = read_bytes(a, s, req.offset, &mut out[at + 16..]) {
            out.truncate(at);
            failure(s, req.handle, &f, out);
        }
        return;
    }
    if len == 0 {
        return ok(s, req.handle, out);
    }
    let ranges = if req.flags & cflag::DF != 0 {
        Vec::new()
    } else {
        // Without the map the reply is one data chunk, which is always correct.
        let (start, end) = sectors(req.offset, len as u64);
        map(a, s, start, end - start).unwrap_or_default()
    };
    if !ranges.is_empty() && ranges.iter().all(|r| !r.data) {
        return hole_chunk(req.handle, req.offset, req.length, true, out);
    }
    let mut data = vec![0u8; len];
    if let Err(f) = read_bytes(a, s, req.offset, &mut data) {
        return failure(s, req.handle, &f, out);
    }
    let end = req.offset + len as u64;
    let pieces: Vec<(u64, u64, bool)> = ranges
        .iter()
        .map(|r| {
            (
                r.offset.max(req.offset),
                (r.offset + r.length).min(end),
                r.data,
            )
        })
        .filter(|(a, b, _)| a < b)
        .collect();
    if pieces.is_empty() {
        return data_chunk(req.handle, req.offset, &data, true, out);
    }
    for (i, &(from, to, is_data)) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        if is_data {
            let o = (from - req.offset) as usize;
            data_chunk(
                req.handle,
                from,
                &data[o..o + (to - from) as usize],
                last,
                out,
            );
        } else {
            hole_chunk(req.handle, from, (to - from) as u32, last, out);
        }
    }
}

fn done_flag(last: bool) -> u16 {
    if last {
        reply::FLAG_DONE
    } else {
        0
    }
}

fn data_chunk(handle: u64, offset: u64, data: &[u8], last: bool, out: &mut Vec<u8>) {
    let len = 8 + data.len() as u32;
    out.extend_from_slice(&proto::chunk_header(
        done_flag(last),
        reply::OFFSET_DATA,
        handle,
        len,
    ));
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(data);
}

fn hole_chunk(handle: u64, offset: u64, len: u32, last: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(&proto::chunk_header(
        done_flag(last),
        reply::OFFSET_HOLE,
        handle,
        12,
    ));
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
}

/// Zeroes the range: whole extents become holes (they read as zeros and occupy no
/// space) unless the client asked for allocation (`NO_HOLE`), in which case zeros are
/// written. Partial sectors at the ends are read, patched and written.
fn write_zeroes(a: &mut ServedArray, s: &Session, req: &Request) -> Result<()> {
    let punch = req.flags & cflag::NO_HOLE == 0;
    zero_range(a, s, req.offset, u64::from(req.length), punch)
}

/// Zeroes `len` bytes at any byte `offset`: the whole sectors inside through the
/// array's `write_zeroes`, the partial sectors at the ends by read-modify-write.
fn zero_range(a: &mut ServedArray, s: &Session, offset: u64, len: u64, punch: bool) -> Result<()> {
    let end = offset + len;
    let start = offset.div_ceil(SECTOR) * SECTOR;
    let stop = end / SECTOR * SECTOR;
    if stop <= start {
        return write_bytes(a, s, offset, &vec![0u8; len as usize]);
    }
    write_bytes(a, s, offset, &vec![0u8; (start - offset) as usize])?;
    match s.who {
        Identity::Admin => a.write_zeroes(s.lun, start, stop - start, punch)?,
        Identity::Host(h) => a
            .as_host(h)
            .write_zeroes(s.lun, start, stop - start, punch)?,
    }
    write_bytes(a, s, stop, &vec![0u8; (end - stop) as usize])
}

/// Discards the whole sectors inside the range (a hint: partial sectors at its ends
/// are left as they are). Like a write, it becomes durable at the next flush.
fn trim(a: &mut ServedArray, s: &Session, req: &Request) -> Result<()> {
    let start = req.offset.div_ceil(SECTOR) * SECTOR;
    let end = (req.offset + u64::from(req.length)) / SECTOR * SECTOR;
    if end <= start {
        return Ok(());
    }
    zero_range(a, s, start, end - start, true)
}

fn block_status(a: &mut ServedArray, s: &Session, req: &Request, out: &mut Vec<u8>) -> Result<()> {
    if !s.base_allocation {
        return Err(fail(errno::EINVAL, "no metadata context was selected"));
    }
    if req.length == 0 {
        return Err(fail(errno::EINVAL, "a block status request of length 0"));
    }
    let end = req.offset + u64::from(req.length);
    let (start, aligned_end) = sectors(req.offset, u64::from(req.length));
    let ranges = map(a, s, start, aligned_end - start)?;
    let mut descs: Vec<(u32, u32)> = Vec::new();
    for r in &ranges {
        let (from, to) = (r.offset.max(req.offset), (r.offset + r.length).min(end));
        if from >= to {
            continue;
        }
        let flags = if r.data {
            0
        } else {
            proto::STATE_HOLE | proto::STATE_ZERO
        };
        descs.push(((to - from) as u32, flags));
        if req.flags & cflag::REQ_ONE != 0 {
            break;
        }
    }
    let len = 4 + 8 * descs.len() as u32;
    out.extend_from_slice(&proto::chunk_header(
        reply::FLAG_DONE,
        reply::BLOCK_STATUS,
        req.handle,
        len,
    ));
    out.extend_from_slice(&proto::BASE_ALLOCATION_ID.to_be_bytes());
    for (l, f) in descs {
        out.extend_from_slice(&l.to_be_bytes());
        out.extend_from_slice(&f.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(offset: u64, length: u64, data: bool) -> Span {
        Span {
            offset,
            length,
            data,
        }
    }

    #[test]
    fn alike_spans_merge() {
        // As map gives them with lost ranges marked: a hole, a lost part of it (data
        // to a client), data, the rest of the hole.
        let got = spans(
            [
                (0, 100, false),
                (100, 50, true),
                (150, 50, true),
                (200, 100, false),
                (300, 100, false),
            ]
            .into_iter(),
        );
        assert_eq!(
            got,
            vec![
                span(0, 100, false),
                span(100, 100, true),
                span(200, 200, false)
            ]
        );
        assert_eq!(spans([(8, 8, true)].into_iter()), vec![span(8, 8, true)]);
        assert!(spans(core::iter::empty()).is_empty());
    }
}
