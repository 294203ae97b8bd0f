//! One client connection: the handshake, then the transmission phase.
//!
//! The transmission phase runs on the connection's own thread: requests (with their
//! write payloads) are read through a buffer, each is run under the array lock, and
//! replies are collected and sent whenever no further request has already arrived. A
//! client at queue depth 32 thus has its requests read back to back and its replies
//! sent in batches as they complete, while a client at depth 1 gets each reply at
//! once; socket I/O never happens under the array lock, and connections run in
//! parallel with each other. (Measured against a reader and an executor thread per
//! connection: the same at depth 32, and 55 % more requests per second at depth 1,
//! which the thread hand-off slowed down; BENCHMARKS.md, "NBD".)

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use crate::exports::{self, Identity};
use crate::handshake::{self, Negotiated, Outcome, State};
use crate::log;
use crate::ops::{self, Session};
use crate::proto::{self, cmd, Request};
use crate::shared::{Registration, Shared};
use crate::sock::Sock;
use crate::tls::Tls;

/// Replies collected before they are sent even if more requests are waiting.
const REPLY_BATCH: usize = 256 << 10;
/// A client has this long to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a connection needs from the listener that accepted it.
pub struct Context {
    /// The server's shared state.
    pub shared: Arc<Shared>,
    /// Whom the listener's clients act for (a TLS client certificate may name a host
    /// on a listener bound to none).
    pub who: Identity,
    /// The listener, for log lines ("unix:/run/db.sock").
    pub listener: String,
    /// The TLS configuration of a listener that requires TLS.
    pub tls: Option<Arc<Tls>>,
}

/// Serves one accepted socket until the client leaves or is disconnected.
pub fn serve(sock: Sock, ctx: Context) {
    let closer = match sock.try_clone() {
        Ok(c) => c,
        Err(e) => return log::line(&format!("{}: cannot use the socket: {e}", ctx.listener)),
    };
    let reg = ctx.shared.register(
        format!("a client of {}", ctx.listener),
        Box::new(move || closer.shutdown()),
    );
    let name = format!("connection {} on {}", reg.id(), ctx.listener);
    log::line(&format!("{name}: opened"));
    let end = match negotiate(sock, &ctx, &reg, &name) {
        Ok(end) => end,
        Err(e) => format!("ended: {e}"),
    };
    log::line(&format!("{name}: {end}"));
}

/// Handshake and transmission; returns how the connection ended, for the log.
fn negotiate(mut sock: Sock, ctx: &Context, reg: &Registration, name: &str) -> io::Result<String> {
    sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    sock.set_nodelay();
    let mut st = State::new(ctx.who, ctx.tls.is_some());
    handshake::greet(&mut sock, &mut st)?;
    match handshake::haggle(&mut sock, &mut st, &ctx.shared)? {
        Outcome::End(why) => Ok(format!("ended in the handshake: {why}")),
        Outcome::Go(n) => {
            let s = start(ctx, reg, &n, st.who, name)?;
            sock.set_read_timeout(None)?;
            transmit(sock, &s, ctx, reg)
        }
        Outcome::StartTls => {
            let Some(tls) = &ctx.tls else {
                return Ok("asked for TLS that is not offered".into());
            };
            let (mut stream, cn) = tls.accept(sock)?;
            st.tls_active = true;
            if st.who == Identity::Admin {
                // A listener bound to no host: the certificate names the host.
                match cn.as_deref().and_then(|cn| host_named(&ctx.shared, cn)) {
                    Some(h) => st.who = Identity::Host(h),
                    None => {
                        return Ok(format!(
                            "refused: the client certificate (CN {cn:?}) names no registered host"
                        ))
                    }
                }
            }
            match handshake::haggle(&mut stream, &mut st, &ctx.shared)? {
                Outcome::Go(n) => {
                    let s = start(ctx, reg, &n, st.who, name)?;
                    stream.get_ref().set_read_timeout(None)?;
                    transmit(stream, &s, ctx, reg)
                }
                Outcome::End(why) => Ok(format!("ended in the handshake: {why}")),
                Outcome::StartTls => Ok("asked for TLS twice".into()),
            }
        }
    }
}

/// Serves one client session given as the bytes the client sends, with no socket:
/// the real handshake and transmission code on an in-memory stream (no TLS; the
/// session ends where the bytes do). Returns how many bytes the server sent. For the
/// protocol fuzz target and its replay test.
pub fn session_from_bytes(shared: &Arc<Shared>, who: Identity, client: &[u8]) -> u64 {
    let mut s = Replay {
        input: client,
        sent: 0,
    };
    let reg = shared.register("a replayed session".into(), Box::new(|| ()));
    let ctx = Context {
        shared: shared.clone(),
        who,
        listener: "replay".into(),
        tls: None,
    };
    let mut st = State::new(who, false);
    let r =
        handshake::greet(&mut s, &mut st).and_then(|()| handshake::haggle(&mut s, &mut st, shared));
    if let Ok(Outcome::Go(n)) = r {
        if let Ok(ses) = start(&ctx, &reg, &n, st.who, "replay") {
            let _ = transmit(&mut s, &ses, &ctx, &reg);
        }
    }
    s.sent
}

/// A client given as bytes: reads take them in order, writes are counted and dropped.
struct Replay<'a> {
    input: &'a [u8],
    sent: u64,
}

impl Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Replay<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sent += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The host a certificate's common name names: its 16-hex-digit id, or the name it
/// was registered with.
fn host_named(shared: &Shared, cn: &str) -> Option<u64> {
    let hosts = shared.lock().hosts();
    let by_id = (cn.len() == 16)
        .then(|| u64::from_str_radix(cn, 16).ok())
        .flatten();
    hosts
        .iter()
        .find(|h| Some(h.id) == by_id || (!h.name.is_empty() && h.name == cn))
        .map(|h| h.id)
}

/// Registers the connection with its export, checked again under the array lock
/// (a management command may have changed the LUN since the haggling looked).
fn start(
    ctx: &Context,
    reg: &Registration,
    n: &Negotiated,
    who: Identity,
    name: &str,
) -> io::Result<Session> {
    let a = &mut ctx.shared.lock();
    let now = exports::open(a, who, &n.export.lun.to_string());
    if now.as_ref() != Ok(&n.export) {
        return Err(io::Error::other("the export changed during the handshake"));
    }
    let label = format!("{name} ({who}, LUN {})", n.export.lun);
    reg.opened(a, n.export.lun, label);
    log::line(&format!(
        "{name}: {who} opened LUN {} ({} bytes{}{})",
        n.export.lun,
        n.export.size,
        if n.export.read_only {
            ", read-only"
        } else {
            ""
        },
        if n.structured {
            ", structured replies"
        } else {
            ""
        },
    ));
    Ok(Session {
        lun: n.export.lun,
        size: n.export.size,
        who,
        structured: n.structured,
        base_allocation: n.base_allocation,
        read_only: n.export.read_only,
    })
}

/// A request read from the client, with its payload.
struct Job {
    req: Request,
    payload: Vec<u8>,
}

/// What ended the reading of requests.
enum Stop {
    /// `NBD_CMD_DISC`: a soft disconnect.
    Disc,
    /// The socket closed or failed, or the client broke the protocol.
    Broken(io::Error),
}

/// Reads the next request. Write payloads larger than the server accepts are read
/// and dropped (the request then fails with `EOVERFLOW`).
fn next_job<S: Read>(s: &mut S) -> Result<Job, Stop> {
    let mut h = [0u8; proto::REQUEST_SIZE];
    s.read_exact(&mut h).map_err(Stop::Broken)?;
    let req = proto::parse_request(&h)
        .map_err(|e| Stop::Broken(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
    if req.kind == cmd::DISC {
        return Err(Stop::Disc);
    }
    let mut payload = Vec::new();
    if req.kind == cmd::WRITE {
        let n = u64::from(req.length);
        if req.length > proto::MAX_REQUEST {
            let skipped = io::copy(&mut s.take(n), &mut io::sink()).map_err(Stop::Broken)?;
            if skipped < n {
                return Err(Stop::Broken(io::ErrorKind::UnexpectedEof.into()));
            }
        } else {
            payload = vec![0u8; req.length as usize];
            s.read_exact(&mut payload).map_err(Stop::Broken)?;
        }
    }
    Ok(Job { req, payload })
}

/// Runs `job` under the array lock and appends its reply to `out`; false when the
/// connection was ended by a management command or the shutdown.
fn run(ctx: &Context, reg: &Registration, s: &Session, job: &Job, out: &mut Vec<u8>) -> bool {
    let mut a = ctx.shared.lock();
    if reg.is_kicked() {
        return false;
    }
    ops::execute(&mut a, s, &job.req, &job.payload, out);
    true
}

fn ending(stop: Stop, served: u64) -> String {
    match stop {
        Stop::Disc => format!("closed by the client after {served} requests"),
        Stop::Broken(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            format!("closed after {served} requests (the client went away)")
        }
        Stop::Broken(e) => format!("ended after {served} requests: {e}"),
    }
}

/// Reads, runs and answers requests until the client leaves or is disconnected.
fn transmit<S: Read + Write>(
    s: S,
    ses: &Session,
    ctx: &Context,
    reg: &Registration,
) -> io::Result<String> {
    let mut r = BufReader::with_capacity(256 << 10, s);
    let mut replies = Vec::new();
    let mut served = 0u64;
    loop {
        let job = match next_job(&mut r) {
            Ok(j) => j,
            Err(stop) => {
                send(r.get_mut(), &mut replies)?;
                return Ok(ending(stop, served));
            }
        };
        if !run(ctx, reg, ses, &job, &mut replies) {
            return Ok("ended by a management command or the shutdown".into());
        }
        served += 1;
        if r.buffer().is_empty() || replies.len() >= REPLY_BATCH {
            send(r.get_mut(), &mut replies)?;
        }
    }
}

/// Sends the collected replies.
fn send<S: Write>(s: &mut S, replies: &mut Vec<u8>) -> io::Result<()> {
    if !replies.is_empty() {
        s.write_all(replies)?;
        replies.clear();
    }
    s.flush()
}
