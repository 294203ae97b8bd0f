//! The fixed-newstyle handshake: option haggling until the client picks an export
//! (`NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME`), aborts, or breaks the protocol.

use std::io::{self, Read, Write};

use crate::exports::{self, Export, Identity, Refusal};
use crate::proto::{self, info, opt, rep, tflag};
use crate::shared::Shared;

/// What the haggling settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The export chosen.
    pub export: Export,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected for this export (`NBD_CMD_BLOCK_STATUS` allowed).
    pub base_allocation: bool,
    /// The transmission flags sent.
    pub flags: u16,
}

/// How the haggling ended.
#[derive(Debug)]
pub enum Outcome {
    /// Transmission begins.
    Go(Negotiated),
    /// The client asked for TLS and was told yes: upgrade the stream, then haggle on.
    StartTls,
    /// The client aborted, or must be disconnected (the reason is for the log).
    End(String),
}

/// The haggling state that survives a TLS upgrade.
pub struct State {
    /// Whom the connection acts for (may be set by the TLS upgrade).
    pub who: Identity,
    /// The listener requires TLS (FORCEDTLS mode) and offers it.
    pub tls_offered: bool,
    /// TLS is running.
    pub tls_active: bool,
    /// The client asked for no trailing zeroes after `EXPORT_NAME`.
    pub no_zeroes: bool,
    structured: bool,
    /// The export `SET_META_CONTEXT` selected `base:allocation` for, if any.
    meta_for: Option<String>,
}

impl State {
    /// A new connection's state.
    pub fn new(who: Identity, tls_offered: bool) -> State {
        State {
            who,
            tls_offered,
            tls_active: false,
            no_zeroes: false,
            structured: false,
            meta_for: None,
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Sends the greeting and reads the client's flags.
pub fn greet<S: Read + Write>(s: &mut S, st: &mut State) -> io::Result<()> {
    let mut g = Vec::with_capacity(18);
    g.extend_from_slice(&proto::NBDMAGIC.to_be_bytes());
    g.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
    g.extend_from_slice(&(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&g)?;
    s.flush()?;
    let mut f = [0u8; 4];
    s.read_exact(&mut f)?;
    let flags = u32::from_be_bytes(f);
    let known = proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES;
    if flags & !known != 0 {
        return Err(bad("client flags include unknown bits"));
    }
    st.no_zeroes = flags & proto::FLAG_C_NO_ZEROES != 0;
    Ok(())
}

/// The transmission flags of `e` for a client that did (or not) negotiate
/// structured replies.
pub fn transmission_flags(e: &Export, structured: bool) -> u16 {
    let mut f = tflag::HAS_FLAGS
        | tflag::SEND_FLUSH
        | tflag::SEND_FUA
        | tflag::SEND_TRIM
        | tflag::SEND_WRITE_ZEROES
        | tflag::CAN_MULTI_CONN;
    if structured {
        f |= tflag::SEND_DF;
    }
    if e.read_only {
        f |= tflag::READ_ONLY;
    }
    f
}

fn reply<S: Write>(s: &mut S, option: u32, kind: u32, payload: &[u8]) -> io::Result<()> {
    s.write_all(&proto::option_reply(option, kind, payload))?;
    s.flush()
}

fn error<S: Write>(s: &mut S, option: u32, kind: u32, msg: &str) -> io::Result<()> {
    reply(s, option, kind, msg.as_bytes())
}

/// Reads and drops `n` bytes.
fn skip<S: Read>(s: &mut S, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut s.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Haggles until the client chooses an export, aborts, or asks for TLS.
pub fn haggle<S: Read + Write>(s: &mut S, st: &mut State, shared: &Shared) -> io::Result<Outcome> {
    loop {
        let mut h = [0u8; 16];
        s.read_exact(&mut h)?;
        let mut c = proto::Cursor::new(&h, "option header");
        let (magic, option, len) = (c.u64(), c.u32(), c.u32());
        let (Ok(magic), Ok(option), Ok(len)) = (magic, option, len) else {
            return Err(bad("short option header"));
        };
        if magic != proto::IHAVEOPT {
            return Ok(Outcome::End("bad option magic".into()));
        }
        if len > proto::MAX_OPTION {
            if option == opt::EXPORT_NAME || len > 16 * proto::MAX_OPTION {
                return Ok(Outcome::End(format!("option {option} of {len} bytes")));
            }
            skip(s, u64::from(len))?;
            error(s, option, rep::ERR_TOO_BIG, "option data too long")?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;
        if let Some(out) = one_option(s, st, shared, option, &data)? {
            return Ok(out);
        }
    }
}

/// Answers one option; `Some` when the haggling ends with it.
fn one_option<S: Read + Write>(
    s: &mut S,
    st: &mut State,
    shared: &Shared,
    option: u32,
    data: &[u8],
) -> io::Result<Option<Outcome>> {
    let tls_missing = st.tls_offered && !st.tls_active;
    if shared.is_shutting_down() && option != opt::ABORT {
        if option == opt::EXPORT_NAME {
            return Ok(Some(Outcome::End("shutting down".into())));
        }
        error(s, option, rep::ERR_SHUTDOWN, "the server is shutting down")?;
        return Ok(None);
    }
    if tls_missing && !matches!(option, opt::STARTTLS | opt::ABORT) {
        if option == opt::EXPORT_NAME {
            return Ok(Some(Outcome::End("EXPORT_NAME before TLS".into())));
        }
        error(
            s,
            option,
            rep::ERR_TLS_REQD,
            "this listener requires TLS: send NBD_OPT_STARTTLS",
        )?;
        return Ok(None);
    }
    match option {
        opt::ABORT => {
            // The client may already have closed: a failed ACK does not matter.
            let _ = reply(s, option, rep::ACK, &[]);
            Ok(Some(Outcome::End("client aborted".into())))
        }
        opt::STARTTLS => starttls(s, st, data),
        opt::STRUCTURED_REPLY => {
            if !data.is_empty() {
                error(
                    s,
                    option,
                    rep::ERR_INVALID,
                    "NBD_OPT_STRUCTURED_REPLY takes no data",
                )?;
            } else {
                st.structured = true;
                reply(s, option, rep::ACK, &[])?;
            }
            Ok(None)
        }
        opt::LIST => list(s, st, shared, data).map(|()| None),
        opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => {
            meta(s, st, shared, option, data).map(|()| None)
        }
        opt::INFO | opt::GO => info_or_go(s, st, shared, option, data),
        opt::EXPORT_NAME => export_name(s, st, shared, data),
        _ => {
            error(
                s,
                option,
                rep::ERR_UNSUP,
                "option not supported by lunsnap serve",
            )?;
            Ok(None)
        }
    }
}

fn starttls<S: Write>(s: &mut S, st: &mut State, data: &[u8]) -> io::Result<Option<Outcome>> {
    let option = opt::STARTTLS;
    if !st.tls_offered {
        error(
            s,
            option,
            rep::ERR_POLICY,
            "TLS is not configured on this listener",
        )?;
        Ok(None)
    } else if st.tls_active {
        error(s, option, rep::ERR_INVALID, "TLS is already running")?;
        Ok(None)
    } else if !data.is_empty() {
        error(
            s,
            option,
            rep::ERR_INVALID,
            "NBD_OPT_STARTTLS takes no data",
        )?;
        Ok(None)
    } else {
        reply(s, option, rep::ACK, &[])?;
        Ok(Some(Outcome::StartTls))
    }
}

fn list<S: Write>(s: &mut S, st: &State, shared: &Shared, data: &[u8]) -> io::Result<()> {
    if !data.is_empty() {
        return error(s, opt::LIST, rep::ERR_INVALID, "NBD_OPT_LIST takes no data");
    }
    let exports = exports::list(&mut shared.lock(), st.who);
    for e in exports {
        let name = e.lun.to_string();
        let mut p = Vec::with_capacity(4 + name.len() + e.description.len());
        p.extend_from_slice(&(name.len() as u32).to_be_bytes());
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(e.description.as_bytes());
        s.write_all(&proto::option_reply(opt::LIST, rep::SERVER, &p))?;
    }
    reply(s, opt::LIST, rep::ACK, &[])
}

fn meta<S: Write>(
    s: &mut S,
    st: &mut State,
    shared: &Shared,
    option: u32,
    data: &[u8],
) -> io::Result<()> {
    if !st.structured {
        return error(
            s,
            option,
            rep::ERR_INVALID,
            "negotiate structured replies first",
        );
    }
    let m = match proto::parse_meta(data) {
        Ok(m) => m,
        Err(e) => return error(s, option, rep::ERR_INVALID, &e.to_string()),
    };
    if let Err(r) = exports::open(&mut shared.lock(), st.who, &m.name) {
        return refuse(s, option, r);
    }
    let set = option == opt::SET_META_CONTEXT;
    if set {
        st.meta_for = None;
    }
    if proto::select_contexts(&m.queries, !set) {
        let id = if set { proto::BASE_ALLOCATION_ID } else { 0 };
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(proto::BASE_ALLOCATION.as_bytes());
        s.write_all(&proto::option_reply(option, rep::META_CONTEXT, &p))?;
        if set {
            st.meta_for = Some(m.name);
        }
    }
    reply(s, option, rep::ACK, &[])
}

fn refuse<S: Write>(s: &mut S, option: u32, r: Refusal) -> io::Result<()> {
    match r {
        Refusal::Unknown(m) => error(s, option, rep::ERR_UNKNOWN, &m),
        Refusal::Unavailable(m) => error(s, option, rep::ERR_POLICY, &m),
    }
}

fn info_or_go<S: Write>(
    s: &mut S,
    st: &mut State,
    shared: &Shared,
    option: u32,
    data: &[u8],
) -> io::Result<Option<Outcome>> {
    let req = match proto::parse_info(data) {
        Ok(r) => r,
        Err(e) => {
            error(s, option, rep::ERR_INVALID, &e.to_string())?;
            return Ok(None);
        }
    };
    let export = match exports::open(&mut shared.lock(), st.who, &req.name) {
        Ok(e) => e,
        Err(r) => {
            refuse(s, option, r)?;
            return Ok(None);
        }
    };
    let flags = transmission_flags(&export, st.structured);
    let mut p = info::EXPORT.to_be_bytes().to_vec();
    p.extend_from_slice(&export.size.to_be_bytes());
    p.extend_from_slice(&flags.to_be_bytes());
    s.write_all(&proto::option_reply(option, rep::INFO, &p))?;
    for &r in &req.requests {
        let mut p = r.to_be_bytes().to_vec();
        match r {
            info::NAME => p.extend_from_slice(req.name.as_bytes()),
            info::DESCRIPTION => p.extend_from_slice(export.description.as_bytes()),
            _ => continue,
        }
        s.write_all(&proto::option_reply(option, rep::INFO, &p))?;
    }
    // Any alignment is served (sub-sector requests are read-modify-written), so the
    // block sizes are sent whether asked for or not: 1 byte, 4 KiB, 32 MiB.
    let mut p = info::BLOCK_SIZE.to_be_bytes().to_vec();
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&4096u32.to_be_bytes());
    p.extend_from_slice(&proto::MAX_REQUEST.to_be_bytes());
    s.write_all(&proto::option_reply(option, rep::INFO, &p))?;
    reply(s, option, rep::ACK, &[])?;
    if option == opt::INFO {
        return Ok(None);
    }
    let base_allocation = st.meta_for.as_deref() == Some(req.name.as_str());
    Ok(Some(Outcome::Go(Negotiated {
        export,
        structured: st.structured,
        base_allocation,
        flags,
    })))
}

fn export_name<S: Write>(
    s: &mut S,
    st: &mut State,
    shared: &Shared,
    data: &[u8],
) -> io::Result<Option<Outcome>> {
    let name = match std::str::from_utf8(data) {
        Ok(n) if n.len() <= proto::MAX_STRING => n,
        _ => return Ok(Some(Outcome::End("EXPORT_NAME with a bad name".into()))),
    };
    let export = match exports::open(&mut shared.lock(), st.who, name) {
        Ok(e) => e,
        Err(Refusal::Unknown(m) | Refusal::Unavailable(m)) => {
            // EXPORT_NAME cannot be answered with an error: the session ends.
            return Ok(Some(Outcome::End(m)));
        }
    };
    let flags = transmission_flags(&export, st.structured);
    let mut p = export.size.to_be_bytes().to_vec();
    p.extend_from_slice(&flags.to_be_bytes());
    if !st.no_zeroes {
        p.extend_from_slice(&[0u8; 124]);
    }
    s.write_all(&p)?;
    s.flush()?;
    let base_allocation = st.meta_for.as_deref() == Some(name);
    Ok(Some(Outcome::Go(Negotiated {
        export,
        structured: st.structured,
        base_allocation,
        flags,
    })))
}
