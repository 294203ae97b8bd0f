//! The NBD protocol's numbers and wire formats (NetworkBlockDevice/nbd, doc/proto.md),
//! with no I/O: every decoder takes bytes and returns a value or says why the bytes
//! are not acceptable, so the parser can be fuzzed on its own.
//!
//! All integers on the wire are big-endian.

/// `NBDMAGIC`, the first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle handshake magic, and the magic of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of the server's option replies.
pub const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server): fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flags (server): the 124 zero bytes after `EXPORT_NAME` may be left out.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags: fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flags: no zeroes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags.
pub mod tflag {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// The export refuses writes.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `CMD_FLUSH` is supported.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `CMD_FLAG_FUA` is supported.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `CMD_TRIM` is supported.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `CMD_WRITE_ZEROES` is supported.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `CMD_FLAG_DF` is supported (structured replies only).
    pub const SEND_DF: u16 = 1 << 7;
    /// Flushes and FUA are visible across all connections.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
}

/// Option numbers.
pub mod opt {
    pub const EXPORT_NAME: u32 = 1;
    pub const ABORT: u32 = 2;
    pub const LIST: u32 = 3;
    pub const STARTTLS: u32 = 5;
    pub const INFO: u32 = 6;
    pub const GO: u32 = 7;
    pub const STRUCTURED_REPLY: u32 = 8;
    pub const LIST_META_CONTEXT: u32 = 9;
    pub const SET_META_CONTEXT: u32 = 10;
}

/// Option reply types.
pub mod rep {
    pub const ACK: u32 = 1;
    pub const SERVER: u32 = 2;
    pub const INFO: u32 = 3;
    pub const META_CONTEXT: u32 = 4;
    pub const ERR_UNSUP: u32 = 0x8000_0001;
    pub const ERR_POLICY: u32 = 0x8000_0002;
    pub const ERR_INVALID: u32 = 0x8000_0003;
    pub const ERR_TLS_REQD: u32 = 0x8000_0005;
    pub const ERR_UNKNOWN: u32 = 0x8000_0006;
    pub const ERR_SHUTDOWN: u32 = 0x8000_0007;
    pub const ERR_TOO_BIG: u32 = 0x8000_0009;
}

/// `NBD_REP_INFO` types.
pub mod info {
    pub const EXPORT: u16 = 0;
    pub const NAME: u16 = 1;
    pub const DESCRIPTION: u16 = 2;
    pub const BLOCK_SIZE: u16 = 3;
}

/// Commands.
pub mod cmd {
    pub const READ: u16 = 0;
    pub const WRITE: u16 = 1;
    pub const DISC: u16 = 2;
    pub const FLUSH: u16 = 3;
    pub const TRIM: u16 = 4;
    pub const CACHE: u16 = 5;
    pub const WRITE_ZEROES: u16 = 6;
    pub const BLOCK_STATUS: u16 = 7;
}

/// Command flags.
pub mod cflag {
    pub const FUA: u16 = 1 << 0;
    pub const NO_HOLE: u16 = 1 << 1;
    pub const DF: u16 = 1 << 2;
    pub const REQ_ONE: u16 = 1 << 3;
    pub const FAST_ZERO: u16 = 1 << 4;
}

/// Structured reply chunk types and flags.
pub mod reply {
    pub const FLAG_DONE: u16 = 1 << 0;
    pub const NONE: u16 = 0;
    pub const OFFSET_DATA: u16 = 1;
    pub const OFFSET_HOLE: u16 = 2;
    pub const BLOCK_STATUS: u16 = 5;
    pub const ERROR: u16 = 0x8001;
}

/// Error values of replies.
pub mod errno {
    pub const EPERM: u32 = 1;
    pub const EIO: u32 = 5;
    pub const ENOMEM: u32 = 12;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
    pub const EOVERFLOW: u32 = 75;
    pub const ENOTSUP: u32 = 95;
    pub const ESHUTDOWN: u32 = 108;
}

/// `base:allocation` flags.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation`: the range reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;
/// The one metadata context this server offers.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The id it is given when a client selects it.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// Longest string the protocol allows (export names, queries).
pub const MAX_STRING: usize = 4096;
/// Longest option payload accepted; longer ones are refused with `ERR_TOO_BIG`
/// (their bytes are read and dropped).
pub const MAX_OPTION: u32 = 64 << 10;
/// Largest read or write request served (NBD_INFO_BLOCK_SIZE maximum).
pub const MAX_REQUEST: u32 = 32 << 20;

/// Why option or request bytes are not acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Fewer bytes than the structure needs.
    Short(&'static str),
    /// Bytes left over after the structure.
    Trailing(&'static str),
    /// A string is not UTF-8, holds a NUL, or is too long.
    BadString(&'static str),
    /// The magic number is wrong.
    Magic,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Short(w) => write!(f, "{w}: too short"),
            Malformed::Trailing(w) => write!(f, "{w}: unexpected trailing bytes"),
            Malformed::BadString(w) => write!(f, "{w}: not a valid string"),
            Malformed::Magic => write!(f, "bad magic number"),
        }
    }
}

/// A reader over option or request bytes that never reads past the end.
pub struct Cursor<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor over `b`; `what` names the structure in errors.
    pub fn new(b: &'a [u8], what: &'static str) -> Self {
        Cursor { b, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.b.len() < n {
            return Err(Malformed::Short(self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, Malformed> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }

    /// A string of `len` bytes: UTF-8, no NUL, at most [`MAX_STRING`].
    pub fn string(&mut self, len: usize) -> Result<&'a str, Malformed> {
        if len > MAX_STRING {
            return Err(Malformed::BadString(self.what));
        }
        let s = self.take(len)?;
        let s = std::str::from_utf8(s).map_err(|_| Malformed::BadString(self.what))?;
        if s.contains('\0') {
            return Err(Malformed::BadString(self.what));
        }
        Ok(s)
    }

    /// A string prefixed by its u32 length.
    pub fn string32(&mut self) -> Result<&'a str, Malformed> {
        let n = self.u32()?;
        self.string(n as usize)
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.b)
    }

    /// Fails unless every byte was consumed.
    pub fn end(&self) -> Result<(), Malformed> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(Malformed::Trailing(self.what))
        }
    }
}

/// The payload of `NBD_OPT_INFO` and `NBD_OPT_GO`: an export name and the
/// information types asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoRequest {
    /// The export.
    pub name: String,
    /// `NBD_INFO_*` types requested (unknown ones are ignored).
    pub requests: Vec<u16>,
}

/// Decodes an `INFO`/`GO` payload.
pub fn parse_info(data: &[u8]) -> Result<InfoRequest, Malformed> {
    let mut c = Cursor::new(data, "NBD_OPT_GO/INFO");
    let name = c.string32()?.to_owned();
    let n = c.u16()?;
    let mut requests = Vec::with_capacity(usize::from(n).min(64));
    for _ in 0..n {
        requests.push(c.u16()?);
    }
    c.end()?;
    Ok(InfoRequest { name, requests })
}

/// The payload of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaRequest {
    /// The export the contexts are for.
    pub name: String,
    /// The queries (an empty list asks, for LIST, for every context).
    pub queries: Vec<String>,
}

/// Decodes a meta-context payload.
pub fn parse_meta(data: &[u8]) -> Result<MetaRequest, Malformed> {
    let mut c = Cursor::new(data, "NBD_OPT_*_META_CONTEXT");
    let name = c.string32()?.to_owned();
    let n = c.u32()?;
    // Each query takes at least 4 bytes: a count larger than the data allows is a lie.
    if n as usize > data.len() / 4 {
        return Err(Malformed::Short("NBD_OPT_*_META_CONTEXT"));
    }
    let mut queries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        queries.push(c.string32()?.to_owned());
    }
    c.end()?;
    Ok(MetaRequest { name, queries })
}

/// The contexts among ours that `queries` select: `base:allocation` is selected by
/// itself, by the namespace `base:`, and (for LIST only, `list`) by no query at all.
pub fn select_contexts(queries: &[String], list: bool) -> bool {
    if queries.is_empty() {
        return list;
    }
    queries
        .iter()
        .any(|q| q == BASE_ALLOCATION || (list && q == "base:"))
}

/// A transmission request header (28 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// `NBD_CMD_FLAG_*`.
    pub flags: u16,
    /// `NBD_CMD_*`.
    pub kind: u16,
    /// The client's handle, echoed in the reply.
    pub handle: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub length: u32,
}

/// Size of a request header.
pub const REQUEST_SIZE: usize = 28;

/// Decodes a request header.
pub fn parse_request(b: &[u8; REQUEST_SIZE]) -> Result<Request, Malformed> {
    let mut c = Cursor::new(b, "request");
    if c.u32()? != REQUEST_MAGIC {
        return Err(Malformed::Magic);
    }
    Ok(Request {
        flags: c.u16()?,
        kind: c.u16()?,
        handle: c.u64()?,
        offset: c.u64()?,
        length: c.u32()?,
    })
}

/// An option reply header followed by its payload.
pub fn option_reply(option: u32, kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + payload.len());
    v.extend_from_slice(&REP_MAGIC.to_be_bytes());
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A simple reply header.
pub fn simple_reply(error: u32, handle: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..].copy_from_slice(&handle.to_be_bytes());
    b
}

/// A structured reply chunk header for a payload of `len` bytes.
pub fn chunk_header(flags: u16, kind: u16, handle: u64, len: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b[16..].copy_from_slice(&len.to_be_bytes());
    b
}

/// A whole `NBD_REPLY_TYPE_ERROR` chunk (final) with a message for people.
pub fn error_chunk(handle: u64, error: u32, message: &str) -> Vec<u8> {
    let msg = &message.as_bytes()[..message.len().min(MAX_STRING)];
    let len = 6 + msg.len() as u32;
    let mut v = Vec::with_capacity(20 + len as usize);
    v.extend_from_slice(&chunk_header(reply::FLAG_DONE, reply::ERROR, handle, len));
    v.extend_from_slice(&error.to_be_bytes());
    v.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_requests_decode_and_refuse_lies() {
        let mut d = Vec::new();
        d.extend_from_slice(&2u32.to_be_bytes());
        d.extend_from_slice(b"11");
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&info::NAME.to_be_bytes());
        d.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
        assert_eq!(
            parse_info(&d),
            Ok(InfoRequest {
                name: "11".into(),
                requests: vec![1, 3]
            })
        );
        assert!(parse_info(&d[..d.len() - 1]).is_err());
        let mut long = d.clone();
        long.push(0);
        assert_eq!(
            parse_info(&long),
            Err(Malformed::Trailing("NBD_OPT_GO/INFO"))
        );
        let mut lie = 9999u32.to_be_bytes().to_vec();
        lie.extend_from_slice(b"x");
        assert!(parse_info(&lie).is_err());
        assert!(
            parse_info(&[0, 0, 0, 1, 0, 0, 0]).is_err(),
            "NUL in the name"
        );
    }

    #[test]
    fn meta_queries_select_base_allocation() {
        let mut d = Vec::new();
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(b"1");
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&(BASE_ALLOCATION.len() as u32).to_be_bytes());
        d.extend_from_slice(BASE_ALLOCATION.as_bytes());
        let m = parse_meta(&d).unwrap();
        assert!(select_contexts(&m.queries, false));
        assert!(select_contexts(&[], true));
        assert!(!select_contexts(&[], false));
        assert!(select_contexts(&["base:".into()], true));
        assert!(!select_contexts(&["qemu:dirty-bitmap:x".into()], true));
        // A count of queries the data cannot hold.
        let mut lie = d[..9].to_vec();
        lie.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_meta(&lie).is_err());
    }

    #[test]
    fn requests_round_trip() {
        let mut b = [0u8; REQUEST_SIZE];
        b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&cflag::FUA.to_be_bytes());
        b[6..8].copy_from_slice(&cmd::WRITE.to_be_bytes());
        b[8..16].copy_from_slice(&7u64.to_be_bytes());
        b[16..24].copy_from_slice(&4096u64.to_be_bytes());
        b[24..].copy_from_slice(&512u32.to_be_bytes());
        let r = parse_request(&b).unwrap();
        assert_eq!(
            (r.flags, r.kind, r.handle, r.offset, r.length),
            (1, 1, 7, 4096, 512)
        );
        b[0] = 0;
        assert_eq!(parse_request(&b), Err(Malformed::Magic));
    }
}
