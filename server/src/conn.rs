//! One client connection: the handshake, then the transmission phase.
//!
//! On a plain socket the transmission is pipelined: this thread reads requests
//! (with their write payloads) and queues them; an executor thread runs each under
//! the array lock and sends its reply, so that reading the next request, running
//! this one and sending the last reply overlap, and a client at queue depth 32 has
//! its replies as they complete. Socket I/O never happens under the array lock. The
//! bytes queued per connection are bounded ([`QUEUE_BYTES`]). After a TLS upgrade
//! the connection is served one request at a time on the one TLS stream.

use std::io::{self, BufWriter, Read, Write};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::exports::{self, Identity};
use crate::handshake::{self, Negotiated, Outcome, State};
use crate::log;
use crate::ops::{self, Session};
use crate::proto::{self, cmd, Request};
use crate::shared::{Registration, Shared};
use crate::sock::Sock;
use crate::tls::Tls;

/// Bytes of requests (write payloads) queued per connection at most.
pub const QUEUE_BYTES: u64 = 64 << 20;
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
            pipelined(sock, &s, ctx, reg)
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
                    serial(&mut stream, &s, ctx, reg)
                }
                Outcome::End(why) => Ok(format!("ended in the handshake: {why}")),
                Outcome::StartTls => Ok("asked for TLS twice".into()),
            }
        }
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
fn next_job<S: Read>(s: &mut S, budget: Option<&Budget>) -> Result<Job, Stop> {
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
            if let Some(b) = budget {
                if !b.acquire(n) {
                    return Err(Stop::Broken(io::Error::other("connection closing")));
                }
            }
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

/// One request at a time (TLS connections).
fn serial<S: Read + Write>(
    s: &mut S,
    ses: &Session,
    ctx: &Context,
    reg: &Registration,
) -> io::Result<String> {
    let mut out = Vec::new();
    let mut served = 0u64;
    loop {
        let job = match next_job(s, None) {
            Ok(j) => j,
            Err(stop) => return Ok(ending(stop, served)),
        };
        if !run(ctx, reg, ses, &job, &mut out) {
            return Ok("ended by a management command or the shutdown".into());
        }
        s.write_all(&out)?;
        s.flush()?;
        out.clear();
        served += 1;
    }
}

/// Reader here, executor on a second thread (plain sockets).
fn pipelined(
    mut sock: Sock,
    ses: &Session,
    ctx: &Context,
    reg: &Registration,
) -> io::Result<String> {
    let writer = sock.try_clone()?;
    let killer = sock.try_clone()?;
    let budget = &Budget::new(QUEUE_BYTES);
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::scope(|scope| {
        let exec = scope.spawn(move || {
            let r = executor(rx, writer, ses, ctx, reg, budget);
            // However the executor ends, the reader must not wait on it any more.
            budget.close();
            if r.is_err() {
                killer.shutdown();
            }
            r
        });
        let mut read = 0u64;
        let stop = loop {
            match next_job(&mut sock, Some(budget)) {
                Ok(job) => {
                    read += 1;
                    if tx.send(job).is_err() {
                        break Stop::Broken(io::Error::other("the executor stopped"));
                    }
                }
                Err(stop) => break stop,
            }
        };
        drop(tx);
        let executed = exec
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the executor panicked")));
        sock.shutdown();
        Ok(match executed {
            Ok(served) => ending(stop, served),
            Err(e) => format!("ended after {read} requests read: {e}"),
        })
    })
}

/// Runs queued requests in order and writes their replies, flushing whenever the
/// queue is empty. Returns how many ran.
fn executor(
    rx: Receiver<Job>,
    writer: Sock,
    ses: &Session,
    ctx: &Context,
    reg: &Registration,
    budget: &Budget,
) -> io::Result<u64> {
    let mut w = BufWriter::with_capacity(256 << 10, writer);
    let mut out = Vec::new();
    let mut served = 0u64;
    let mut next = rx.recv().ok();
    while let Some(job) = next.take() {
        let alive = run(ctx, reg, ses, &job, &mut out);
        budget.release(job.payload.len() as u64);
        if !alive {
            return Err(io::Error::other(
                "ended by a management command or the shutdown",
            ));
        }
        w.write_all(&out)?;
        out.clear();
        served += 1;
        next = match rx.try_recv() {
            Ok(j) => Some(j),
            Err(TryRecvError::Empty) => {
                w.flush()?;
                rx.recv().ok()
            }
            Err(TryRecvError::Disconnected) => None,
        };
    }
    w.flush()?;
    Ok(served)
}

/// Bytes of write payloads queued for the executor, bounded.
struct Budget {
    state: Mutex<(u64, bool)>,
    cv: Condvar,
    cap: u64,
}

impl Budget {
    fn new(cap: u64) -> Budget {
        Budget {
            state: Mutex::new((0, false)),
            cv: Condvar::new(),
            cap,
        }
    }

    /// Waits until `n` more bytes fit (one request always fits when nothing else is
    /// queued); false once the budget is closed.
    fn acquire(&self, n: u64) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !g.1 && g.0 > 0 && g.0 + n > self.cap {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        if g.1 {
            return false;
        }
        g.0 += n;
        true
    }

    fn release(&self, n: u64) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(n);
        self.cv.notify_all();
    }

    fn close(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = true;
        self.cv.notify_all();
    }
}
