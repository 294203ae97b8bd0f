//! The control socket: `lunsnap` commands run on the live array.
//!
//! A client (the `lunsnap` tool, finding its image served) connects to the control
//! socket (mode 0600) and sends its command line; the server runs it with the
//! [`ControlHandler`] the tool supplied when it started the server, streaming the
//! command's standard input, output and error over the socket, and ends with the exit
//! status. So a command prints the same, and exits the same, served or not.
//!
//! Frames, both ways: one byte of type, a big-endian u32 length, the payload.
//! - client → server: `A` the arguments (each a u32 length and UTF-8 bytes; the first
//!   frame, exactly once), `I` standard input bytes, `E` end of standard input;
//! - server → client: `O` standard output bytes, `R` standard error bytes, `X` the
//!   exit status (one byte; the last frame).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::listen::Bound;
use crate::log;
use crate::shared::Shared;

/// Most commands running at once over the control socket.
pub const MAX_CONTROL_CLIENTS: usize = 16;

/// Largest frame accepted.
pub const MAX_FRAME: u32 = 4 << 20;

/// Frame types.
pub mod frame {
    /// Arguments.
    pub const ARGS: u8 = b'A';
    /// Standard input data.
    pub const STDIN: u8 = b'I';
    /// End of standard input.
    pub const STDIN_END: u8 = b'E';
    /// Standard output data.
    pub const STDOUT: u8 = b'O';
    /// Standard error data.
    pub const STDERR: u8 = b'R';
    /// Exit status.
    pub const EXIT: u8 = b'X';
}

/// Runs one command line on the live array.
pub trait ControlHandler: Send + Sync + 'static {
    /// Runs `args` (the command line without the program name) with `io` as its
    /// standard streams, on the array in `shared`; returns the exit status.
    fn run(&self, args: Vec<String>, shared: &Arc<Shared>, io: &mut ControlIo) -> u8;
}

/// Writes one frame.
pub fn write_frame<W: Write>(w: &mut W, kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut h = [0u8; 5];
    h[0] = kind;
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("frame too large"))?;
    h[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&h)?;
    w.write_all(payload)
}

/// Reads one frame: its type and payload.
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 5];
    r.read_exact(&mut h)?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control frame too large",
        ));
    }
    let mut p = vec![0u8; len as usize];
    r.read_exact(&mut p)?;
    Ok((h[0], p))
}

/// Encodes a command line as an `A` payload.
pub fn encode_args(args: &[String]) -> Vec<u8> {
    let mut p = Vec::new();
    for a in args {
        p.extend_from_slice(&(a.len() as u32).to_be_bytes());
        p.extend_from_slice(a.as_bytes());
    }
    p
}

/// Decodes an `A` payload.
pub fn decode_args(mut p: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !p.is_empty() {
        let (l, rest) = p.split_at_checked(4)?;
        let n = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
        let (s, rest) = rest.split_at_checked(n)?;
        out.push(String::from_utf8(s.to_vec()).ok()?);
        p = rest;
    }
    Some(out)
}

/// A command's standard streams over the control socket.
pub struct ControlIo {
    sock: UnixStream,
    /// Standard input received but not yet read.
    pending: Vec<u8>,
    at: usize,
    ended: bool,
}

impl ControlIo {
    /// The streams of the command whose client is at the other end of `sock` (the
    /// server makes one per control connection; public for handlers' own tests).
    pub fn new(sock: UnixStream) -> ControlIo {
        ControlIo {
            sock,
            pending: Vec::new(),
            at: 0,
            ended: false,
        }
    }

    /// Standard output.
    pub fn stdout(&mut self) -> Stream<'_> {
        Stream {
            io: self,
            kind: frame::STDOUT,
        }
    }

    /// Standard error.
    pub fn stderr(&mut self) -> Stream<'_> {
        Stream {
            io: self,
            kind: frame::STDERR,
        }
    }
}

/// Standard input: the `I` frames until `E`.
impl Read for ControlIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.pending.len() && !self.ended {
            let (kind, p) = read_frame(&mut self.sock)?;
            match kind {
                frame::STDIN => {
                    self.pending = p;
                    self.at = 0;
                }
                frame::STDIN_END => self.ended = true,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected control frame",
                    ))
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Standard output or error of a command run over the control socket.
pub struct Stream<'a> {
    io: &'a mut ControlIo,
    kind: u8,
}

impl Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(1 << 20);
        write_frame(&mut self.io.sock, self.kind, &buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Accepts control clients until the shutdown, each on its own thread.
pub fn accept_loop(bound: Arc<Bound>, shared: Arc<Shared>, handler: Arc<dyn ControlHandler>) {
    let Bound::Unix(listener, _) = &*bound else {
        return;
    };
    loop {
        let sock = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if shared.is_shutting_down() => break,
            Err(e) => {
                log::line(&format!("control: accept failed: {e}"));
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        if shared.is_shutting_down() {
            break;
        }
        let Some(admission) = shared.admit_control(MAX_CONTROL_CLIENTS) else {
            log::line("control: refused a client: too many commands are running");
            drop(sock);
            continue;
        };
        let (sh, h) = (shared.clone(), handler.clone());
        let spawned = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                serve(sock, &sh, &*h);
                drop(admission);
            });
        if let Err(e) = spawned {
            log::line(&format!("control: cannot start a thread: {e}"));
        }
    }
}

/// Runs the one command a control client sends.
fn serve(mut sock: UnixStream, shared: &Arc<Shared>, handler: &dyn ControlHandler) {
    let args = match read_frame(&mut sock) {
        Ok((frame::ARGS, p)) => decode_args(&p),
        _ => None,
    };
    let Some(args) = args else {
        return log::line("control: a client sent no valid command line");
    };
    let shown = args.join(" ");
    let Ok(reply) = sock.try_clone() else {
        return log::line("control: cannot use the socket");
    };
    let mut io = ControlIo::new(sock);
    // A command that panics still answers: exit status 1, like any failure.
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handler.run(args, shared, &mut io)
    }))
    .unwrap_or_else(|_| {
        let _ = io
            .stderr()
            .write_all(b"lunsnap: internal error (the command panicked)\n");
        1
    });
    // A command may have dropped mappings (delete, detach, attach, restore): the
    // background reclaimer frees their space now rather than at its next poll.
    shared.wake_reclaimer();
    // Logged before the client learns the exit status, so that whoever waits for
    // the command finds its line in the log.
    log::line(&format!("control: lunsnap {shown}: exit {code}"));
    let mut reply = reply;
    if write_frame(&mut reply, frame::EXIT, &[code]).is_err() {
        log::line(&format!(
            "control: lunsnap {shown}: the client left before its exit status"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip_and_lies_are_refused() {
        let a = vec!["copy".to_string(), "create".into(), "".into(), "é".into()];
        assert_eq!(decode_args(&encode_args(&a)), Some(a));
        assert_eq!(decode_args(&[0, 0, 0, 9, b'x']), None);
        assert_eq!(decode_args(&[0, 0]), None);
        assert_eq!(decode_args(&[0, 0, 0, 1, 0xff]), None);
    }
}
