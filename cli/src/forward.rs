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
//! length or range before it writes anything; `write --ranges` reads its ranges file
//! here too, and sends the ranges, then only their data (`--records`). `read` asks for
//! records (`--records`): the server sends the data ranges only, never the holes, and
//! the ranges of an incremental read; they are written into FILE at their offsets
//! (sparse where it is zeros, FILE.ranges beside it for `--changed-since`), created
//! only once the server has checked the read and removed again if the command fails,
//! and the line the cold command prints is printed here.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

use lunsnap_server::control::{encode_args, frame, read_frame, write_frame};

use crate::args::{Cli, Cmd, ReadArgs, WriteArgs};
use crate::fail::{Fail, Result};
use crate::json::{host_id, Span};
use crate::ranges::{self, Source};
use crate::readout;
use crate::serve::control_path;
use crate::sink::{Decoder, Local, Sink as _};
use crate::transfer::{self, is_std, CHUNK};

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
            return fail(&Fail::new(format!(
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
    ExitCode::from(e.report(&mut std::io::stderr()))
}

/// What the client sends.
enum Input {
    /// Nothing (standard input ends at once).
    Nothing,
    /// This process's standard input.
    Stdin,
    /// A file, named for messages.
    File(File, PathBuf),
    /// The ranges of a `write --ranges`, then their data out of FILE (`None`: stdin),
    /// named for messages.
    Records(Vec<Span>, Option<File>, PathBuf),
}

/// Where the server's standard output goes.
enum Sink {
    /// This process's standard output.
    Stdout,
    /// `read`'s FILE.
    File(Box<FileSink>),
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
        Cmd::Write(w) if !is_std(&w.file) || w.ranges.is_some() => write_request(w)?,
        cmd => {
            let raw = std::env::args_os().skip(1);
            let rest = raw.map(|a| utf8(&a)).collect::<Result<Vec<_>>>()?;
            let input = match cmd {
                Cmd::Write(_) => Input::Stdin,
                _ => Input::Nothing,
            };
            // As typed, with its --progress or --no-progress.
            args.extend(rest);
            return Ok(Request {
                args: with_progress(args, cli, false),
                input,
                sink: Sink::Stdout,
            });
        }
    };
    args.extend(rest);
    Ok(Request {
        args: with_progress(args, cli, true),
        input,
        sink,
    })
}

/// `args` with the progress options the server needs: those given (when the command
/// line was rebuilt), and `--progress-tty` if the progress is for this terminal (the
/// server then draws it as one line, sent back as stderr).
fn with_progress(mut args: Vec<String>, cli: &Cli, rebuilt: bool) -> Vec<String> {
    if rebuilt && cli.progress {
        args.push("--progress".into());
    }
    if rebuilt && cli.no_progress {
        args.push("--no-progress".into());
    }
    let tty = cli.progress_tty || (!cli.no_progress && std::io::stderr().is_terminal());
    // (Typed, it is in the command line as sent already.)
    if tty && (rebuilt || !cli.progress_tty) {
        args.push("--progress-tty".into());
    }
    args
}

fn utf8(s: &std::ffi::OsStr) -> Result<String> {
    s.to_str().map(String::from).ok_or_else(|| {
        Fail::new(format!(
            "{s:?} is not UTF-8: it cannot be sent over the control socket"
        ))
    })
}

/// `read IMAGE LUN FILE ...` as `read IMAGE LUN - --records ...`, FILE written here.
fn read_request(r: &ReadArgs) -> Result<(Vec<String>, Input, Sink)> {
    let mut args = vec![
        "read".into(),
        utf8(r.image.as_os_str())?,
        r.lun.to_string(),
        "-".into(),
        "--records".into(),
        "--offset".into(),
        r.offset.to_string(),
    ];
    if let Some(l) = r.length {
        args.extend(["--length".into(), l.to_string()]);
    }
    if let Some(h) = r.as_host {
        args.extend(["--as".into(), host_id(h)]);
    }
    if let Some(b) = r.changed_since {
        args.extend(["--changed-since".into(), b.to_string()]);
    }
    // Refused where the cold command refuses it: after the LUN and range checks.
    let sidecar = r.changed_since.map(|_| ranges::sidecar(&r.file));
    for f in std::iter::once(r.file.as_path()).chain(sidecar.as_deref()) {
        if transfer::same_file(&r.image, f) {
            args.extend(["--file-error".into(), transfer::same_file_refusal(f)]);
            break;
        }
    }
    let sink = FileSink {
        dec: Decoder::default(),
        state: FileState {
            spec: r.clone(),
            local: None,
            existed: true,
            len: 0,
        },
    };
    Ok((args, Input::Nothing, Sink::File(Box::new(sink))))
}

/// `write IMAGE LUN FILE ...` as `write IMAGE LUN - --input-length N ...`, FILE sent;
/// with `--ranges`, the ranges and their data (`--records`).
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
    if w.allocate {
        args.push("--allocate".into());
    }
    if w.json {
        args.push("--json".into());
    }
    let opened = if is_std(&w.file) {
        Ok((None, None))
    } else {
        File::open(&w.file)
            .map_err(|e| Fail::io("open", &w.file, &e))
            .and_then(|f| {
                let m = f.metadata().map_err(|e| Fail::io("inspect", &w.file, &e))?;
                Ok((Some(f), m.is_file().then_some(m.len())))
            })
    };
    let spans = match (&opened, &w.ranges) {
        (Ok(_), Some(r)) => Some(ranges::load(r)),
        _ => None,
    };
    let input = match (opened, spans) {
        (Ok((f, len)), spans) => {
            if let Some(len) = len {
                args.extend(["--input-length".into(), len.to_string()]);
            }
            match (f, spans) {
                (f, Some(Ok(spans))) => {
                    args.push("--records".into());
                    Input::Records(spans, f, w.file.clone())
                }
                (_, Some(Err(e))) => file_error(&mut args, e),
                (Some(f), None) => Input::File(f, w.file.clone()),
                (None, None) => Input::Stdin,
            }
        }
        // The server fails with it where the cold command opens FILE.
        (Err(e), _) => file_error(&mut args, e),
    };
    Ok((args, input, Sink::Stdout))
}

/// Has the server fail with `e` where the cold command opens its files.
fn file_error(args: &mut Vec<String>, e: Fail) -> Input {
    args.extend(["--file-error".into(), e.msg]);
    Input::Nothing
}

/// Sends the request, streams its input, prints its output; returns the exit status.
fn session(req: Request, mut sock: UnixStream) -> Result<u8> {
    let lost = |e: std::io::Error| Fail::new(format!("lost the control socket: {e}"));
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
        Input::Records(spans, f, name) => return send_records(&spans, f, &name, sock),
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

/// Streams the ranges of a `write --ranges`, then their data read out of `file`
/// (`None`: stdin), then `E`. An input that ends too soon ends the data there (the
/// server reports it); one that cannot be read ends the socket's sending side instead
/// (the server's command fails) and is reported.
fn send_records(
    spans: &[Span],
    file: Option<File>,
    name: &Path,
    mut sock: UnixStream,
) -> Result<()> {
    let mut source = match file {
        Some(f) => Source::File(f),
        None => Source::Stream(Box::new(std::io::stdin().lock()), 0),
    };
    let head = ranges::encode_head(spans);
    // A server that stopped reading has its answer on the way: stop quietly.
    if write_frame(&mut sock, frame::STDIN, &head).is_err() {
        return Ok(());
    }
    let mut buf = vec![0u8; CHUNK];
    for s in spans {
        let mut done = 0;
        while done < s.length {
            let n = (s.length - done).min(CHUNK as u64) as usize;
            match source.fetch(s.start + done, &mut buf[..n]) {
                Ok(()) => {}
                // The server finds the data short, and says so as the cold command does.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    let _ = write_frame(&mut sock, frame::STDIN_END, &[]);
                    return Ok(());
                }
                Err(e) => {
                    let _ = sock.shutdown(Shutdown::Write);
                    return Err(ranges::fetch_error(name, s.start + done, &e));
                }
            }
            if write_frame(&mut sock, frame::STDIN, &buf[..n]).is_err() {
                return Ok(());
            }
            done += n as u64;
        }
    }
    let _ = write_frame(&mut sock, frame::STDIN_END, &[]);
    Ok(())
}

/// Prints the server's frames until its exit status.
fn receive(sock: &mut UnixStream, sink: &mut Sink) -> Result<u8> {
    let mut stdout = std::io::stdout().lock();
    loop {
        let (kind, p) = read_frame(sock).map_err(|e| {
            Fail::new(format!(
                "the server ended the command without its exit status: {e}"
            ))
        })?;
        match kind {
            frame::STDOUT => match sink {
                Sink::Stdout => stdout.write_all(&p).map_err(|e| Fail::stdout(&e))?,
                Sink::File(f) => f.put(&p)?,
            },
            frame::STDERR => {
                let _ = std::io::stderr().write_all(&p);
            }
            frame::EXIT => {
                stdout.flush().map_err(|e| Fail::stdout(&e))?;
                return Ok(p.first().copied().unwrap_or(1));
            }
            _ => return Err(Fail::new("the server sent an unknown control frame")),
        }
    }
}

/// `read`'s FILE: the server's records decoded into it.
struct FileSink {
    dec: Decoder,
    state: FileState,
}

/// `read`'s FILE, created when the server has checked the read (its first record).
struct FileState {
    spec: ReadArgs,
    local: Option<Local<'static>>,
    /// The file existed before (it is kept if the command fails).
    existed: bool,
    len: u64,
}

impl FileState {
    fn local(&mut self) -> Result<&mut Local<'static>> {
        self.local
            .as_mut()
            .ok_or_else(|| Fail::new("the server sent data before the read's length"))
    }
}

impl crate::sink::Sink for FileState {
    fn begin(&mut self, len: u64) -> Result<()> {
        if self.local.is_some() {
            return Err(Fail::new("the server sent the read's length twice"));
        }
        let sidecar = self
            .spec
            .changed_since
            .map(|_| ranges::sidecar(&self.spec.file));
        let (mut local, existed) = readout::create(&self.spec.file, sidecar)?;
        self.existed = existed;
        self.len = len;
        local.begin(len)?;
        self.local = Some(local);
        Ok(())
    }

    fn range(&mut self, start: u64, len: u64) -> Result<()> {
        self.local()?.range(start, len)
    }

    fn data(&mut self, start: u64, data: &[u8]) -> Result<()> {
        self.local()?.data(start, data)
    }

    fn end(&mut self) -> Result<()> {
        self.local()?.end()
    }
}

impl FileSink {
    fn put(&mut self, data: &[u8]) -> Result<()> {
        let r = self.dec.feed(data, &mut self.state);
        if r.is_err() {
            self.discard();
        }
        r
    }

    /// Removes the file if this command created it.
    fn discard(&mut self) {
        if self.state.local.take().is_some() && !self.state.existed {
            let _ = std::fs::remove_file(&self.state.spec.file);
        }
    }

    /// Ends the file after the server's exit status `code`; prints the cold command's
    /// line on success.
    fn end(mut self, code: u8) -> Result<u8> {
        if code != 0 {
            self.discard();
            return Ok(code);
        }
        let r = self.dec.finish().and_then(|()| self.state.end());
        if let Err(e) = r {
            self.discard();
            return Err(e);
        }
        let st = &self.state;
        let listed = st.local.as_ref().and_then(Local::listed);
        let line = readout::read_done(&st.spec, st.len, &st.spec.file, listed);
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| Fail::stdout(&e))?;
        Ok(0)
    }
}
