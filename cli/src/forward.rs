//! The forwarding client: a command whose image is locked by `lunsnap serve` runs in
//! the server, over its control socket, and prints and exits as it would have here.
//!
//! The socket is `--control`, else `$LUNSNAP_CONTROL`, else `IMAGE.ctl`. The command
//! line goes as typed, with the image resolved here (`--resolved-image`) so that the
//! server can check it serves that image; stdin follows for `write ... -`; the
//! server's stdout and stderr are printed as they come, and its exit status is this
//! process's. `read` and `write` with a FILE open it here (the server may run
//! elsewhere, or as another user) and go as `-`: `write` sends the file and, for a
//! regular file, its length first (`--input-length`), so that the server refuses a bad
//! length or range before it writes anything; `read` writes what arrives into FILE,
//! sparse where it is zeros, created only once data (or success) arrives and removed
//! again if the command fails, and prints the line the cold command prints.

use std::fs::File;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

use lunsnap_server::control::{encode_args, frame, read_frame, write_frame};

use crate::args::{Cli, Cmd, ReadArgs, WriteArgs};
use crate::fail::{Fail, Result};
use crate::json::host_id;
use crate::serve::control_path;
use crate::transfer::{self, is_std, Output, CHUNK};

/// True for the commands that may run in a server: those that take an image.
pub fn forwardable(cmd: &Cmd) -> bool {
    cmd.image().is_some()
}

/// Runs `cli` in the server that holds its image (the cold attempt was `refused`
/// with "image in use"); without one answering, reports `refused` and the socket tried.
pub fn run(cli: &Cli, refused: &Fail) -> ExitCode {
    let Some(image) = cli.cmd.image() else {
        return fail(refused);
    };
    let ctl = control_path(image, cli.control.as_deref());
    let sock = match UnixStream::connect(&ctl) {
        Ok(s) => s,
        Err(e) => {
            return fail(&Fail(format!(
                "{refused} (and no lunsnap serve answers on the control socket {}: {e})",
                ctl.display()
            )))
        }
    };
    match request(cli, image).and_then(|req| session(req, sock)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e),
    }
}

fn fail(e: &Fail) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "lunsnap: {e}");
    ExitCode::from(1)
}

/// What the client sends.
enum Input {
    /// Nothing (standard input ends at once).
    Nothing,
    /// This process's standard input.
    Stdin,
    /// A file, named for messages.
    File(File, PathBuf),
}

/// Where the server's standard output goes.
enum Sink {
    /// This process's standard output.
    Stdout,
    /// `read`'s FILE.
    File(FileSink),
}

/// One command to forward.
struct Request {
    args: Vec<String>,
    input: Input,
    sink: Sink,
}

/// The command line to send, and the streams to connect, for `cli`.
fn request(cli: &Cli, image: &Path) -> Result<Request> {
    let resolved = std::fs::canonicalize(image).map_err(|e| Fail::io("resolve", image, &e))?;
    let mut args = vec!["--resolved-image".to_string(), utf8(resolved.as_os_str())?];
    let (rest, input, sink) = match &cli.cmd {
        Cmd::Read(r) if !is_std(&r.file) => read_request(r)?,
        Cmd::Write(w) if !is_std(&w.file) => write_request(w)?,
        cmd => {
            let raw = std::env::args_os().skip(1);
            let rest = raw.map(|a| utf8(&a)).collect::<Result<Vec<_>>>()?;
            let input = match cmd {
                Cmd::Write(_) => Input::Stdin,
                _ => Input::Nothing,
            };
            (rest, input, Sink::Stdout)
        }
    };
    args.extend(rest);
    Ok(Request { args, input, sink })
}

fn utf8(s: &std::ffi::OsStr) -> Result<String> {
    s.to_str().map(String::from).ok_or_else(|| {
        Fail(format!(
            "{s:?} is not UTF-8: it cannot be sent over the control socket"
        ))
    })
}

/// `read IMAGE LUN FILE ...` as `read IMAGE LUN - ...`, FILE written here.
fn read_request(r: &ReadArgs) -> Result<(Vec<String>, Input, Sink)> {
    let mut args = vec![
        "read".into(),
        utf8(r.image.as_os_str())?,
        r.lun.to_string(),
        "-".into(),
        "--offset".into(),
        r.offset.to_string(),
    ];
    if let Some(l) = r.length {
        args.extend(["--length".into(), l.to_string()]);
    }
    if let Some(h) = r.as_host {
        args.extend(["--as".into(), host_id(h)]);
    }
    // Refused where the cold command refuses it: after the LUN and range checks.
    if transfer::same_file(&r.image, &r.file) {
        args.extend(["--file-error".into(), transfer::same_file_refusal(&r.file)]);
    }
    let sink = FileSink {
        spec: r.clone(),
        out: None,
        existed: true,
        len: 0,
    };
    Ok((args, Input::Nothing, Sink::File(sink)))
}

/// `write IMAGE LUN FILE ...` as `write IMAGE LUN - --input-length N ...`, FILE sent.
fn write_request(w: &WriteArgs) -> Result<(Vec<String>, Input, Sink)> {
    let mut args = vec![
        "write".into(),
        utf8(w.image.as_os_str())?,
        w.lun.to_string(),
        "-".into(),
        "--offset".into(),
        w.offset.to_string(),
    ];
    if let Some(h) = w.as_host {
        args.extend(["--as".into(), host_id(h)]);
    }
    let opened = File::open(&w.file)
        .map_err(|e| Fail::io("open", &w.file, &e))
        .and_then(|f| {
            let m = f.metadata().map_err(|e| Fail::io("inspect", &w.file, &e))?;
            Ok((f, m.is_file().then_some(m.len())))
        });
    let input = match opened {
        Ok((f, len)) => {
            if let Some(len) = len {
                args.extend(["--input-length".into(), len.to_string()]);
            }
            Input::File(f, w.file.clone())
        }
        // The server fails with it where the cold command opens FILE.
        Err(e) => {
            args.extend(["--file-error".into(), e.0]);
            Input::Nothing
        }
    };
    Ok((args, input, Sink::Stdout))
}

/// Sends the request, streams its input, prints its output; returns the exit status.
fn session(req: Request, mut sock: UnixStream) -> Result<u8> {
    let lost = |e: std::io::Error| Fail(format!("lost the control socket: {e}"));
    write_frame(&mut sock, frame::ARGS, &encode_args(&req.args)).map_err(lost)?;
    let feed = sock.try_clone().map_err(lost)?;
    let (tx, feeder) = mpsc::channel();
    let input = req.input;
    // Not joined: once the exit status is in, a feeder still blocked on stdin may go.
    std::thread::spawn(move || {
        if let Err(e) = send_input(input, feed) {
            let _ = tx.send(e);
        }
    });
    let mut sink = req.sink;
    let code = receive(&mut sock, &mut sink)?;
    if let Ok(e) = feeder.try_recv() {
        return Err(e);
    }
    match sink {
        Sink::Stdout => Ok(code),
        Sink::File(f) => f.end(code),
    }
}

/// Streams `input` as `I` frames, then `E`. An input that cannot be read ends the
/// socket's sending side instead (the server's command fails) and is reported.
fn send_input(input: Input, mut sock: UnixStream) -> Result<()> {
    let (mut source, name): (Box<dyn Read>, PathBuf) = match input {
        Input::Nothing => {
            let _ = write_frame(&mut sock, frame::STDIN_END, &[]);
            return Ok(());
        }
        Input::Stdin => (Box::new(std::io::stdin().lock()), PathBuf::from("-")),
        Input::File(f, name) => (Box::new(f), name),
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match source.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = sock.shutdown(Shutdown::Write);
                return Err(Fail::io("read", &name, &e));
            }
        };
        let kind = if n == 0 {
            frame::STDIN_END
        } else {
            frame::STDIN
        };
        // A server that stopped reading has its answer on the way: stop quietly.
        if write_frame(&mut sock, kind, &buf[..n]).is_err() || n == 0 {
            return Ok(());
        }
    }
}

/// Prints the server's frames until its exit status.
fn receive(sock: &mut UnixStream, sink: &mut Sink) -> Result<u8> {
    let mut stdout = std::io::stdout().lock();
    loop {
        let (kind, p) = read_frame(sock).map_err(|e| {
            Fail(format!(
                "the server ended the command without its exit status: {e}"
            ))
        })?;
        match kind {
            frame::STDOUT => match sink {
                Sink::Stdout => stdout
                    .write_all(&p)
                    .map_err(|e| Fail::io("write", Path::new("stdout"), &e))?,
                Sink::File(f) => f.put(&p)?,
            },
            frame::STDERR => {
                let _ = std::io::stderr().write_all(&p);
            }
            frame::EXIT => {
                stdout
                    .flush()
                    .map_err(|e| Fail::io("write", Path::new("stdout"), &e))?;
                return Ok(p.first().copied().unwrap_or(1));
            }
            _ => return Err(Fail("the server sent an unknown control frame".into())),
        }
    }
}

/// `read`'s FILE, created when the first data (or the success) arrives.
struct FileSink {
    spec: ReadArgs,
    out: Option<Output<'static>>,
    /// The file existed before (it is kept if the command fails).
    existed: bool,
    len: u64,
}

impl FileSink {
    fn file(&self) -> &Path {
        &self.spec.file
    }

    fn open(&mut self) -> Result<&mut Output<'static>> {
        if self.out.is_none() {
            let (out, existed) = Output::create(self.file())?;
            self.existed = existed;
            self.out = Some(out);
        }
        self.out
            .as_mut()
            .ok_or_else(|| Fail("the output file is not open".into()))
    }

    fn put(&mut self, data: &[u8]) -> Result<()> {
        let name = self.spec.file.clone();
        let r = self
            .open()
            .and_then(|o| o.put(data).map_err(|e| Fail::io("write", &name, &e)));
        if r.is_err() {
            self.discard();
        }
        self.len += data.len() as u64;
        r
    }

    /// Removes the file if this command created it.
    fn discard(&mut self) {
        if self.out.take().is_some() && !self.existed {
            let _ = std::fs::remove_file(self.file());
        }
    }

    /// Ends the file after the server's exit status `code`; prints the cold command's
    /// line on success.
    fn end(mut self, code: u8) -> Result<u8> {
        if code != 0 {
            self.discard();
            return Ok(code);
        }
        let (len, name) = (self.len, self.spec.file.clone());
        let r = self
            .open()
            .and_then(|o| o.finish(len).map_err(|e| Fail::io("write", &name, &e)));
        if let Err(e) = r {
            self.discard();
            return Err(e);
        }
        let line = transfer::read_done(&self.spec, len, self.file());
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| Fail(format!("cannot write to stdout: {e}")))?;
        Ok(0)
    }
}
