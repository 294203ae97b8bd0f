//! The commands that arrive on the control socket of `lunsnap serve`, run on the live
//! array: the server's [`ControlHandler`].
//!
//! A command line is parsed with the same [`Cli`] as in the shell and run by the same
//! [`run`](crate::run), on the served array ([`Place::Live`]), with the socket as its
//! standard streams; its output, its `lunsnap: ...` error line and its exit status
//! are the ones the command gives on a cold image. Refused here: `format`, `repair`,
//! `serve` and `demo` (they need the image to themselves, or no image), an IMAGE that
//! is not the served image, and a FILE other than `-` for `read` and `write`, or a
//! ranges file for `write --ranges` (the `lunsnap` client opens its files itself,
//! where it runs and as whom it runs, and streams them).

use std::cell::RefCell;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use clap::Parser;
use lunsnap_server::{ControlHandler, ControlIo, Shared};

use crate::args::{self, Cli, Cmd};
use crate::fail::{Fail, Result};
use crate::progress::Show;
use crate::target::{Place, Socket};
use crate::transfer::is_std;

/// Runs command lines on the served array of the image at one path.
pub struct Handler {
    /// The served image (canonical path).
    image: PathBuf,
}

impl Handler {
    /// The handler of the server of the image at `image` (its canonical path).
    pub fn new(image: PathBuf) -> Handler {
        Handler { image }
    }

    /// Refuses a command that names another image, or a FILE the server would open.
    fn admit(&self, cli: &Cli) -> Result<()> {
        let Some(given) = cli.cmd.image() else {
            return Ok(());
        };
        // The client resolved IMAGE where it was typed; without that, resolve it here.
        let resolved = match &cli.resolved_image {
            Some(p) => p.clone(),
            None => std::fs::canonicalize(given).map_err(|e| Fail::io("resolve", given, &e))?,
        };
        if resolved != self.image {
            return Err(Fail::new(format!(
                "{} is not the image this server serves ({}): check --control or ${}",
                given.display(),
                self.image.display(),
                crate::serve::CONTROL_ENV
            )));
        }
        if let Cmd::Write(w) = &cli.cmd {
            if let (Some(r), false) = (&w.ranges, w.records) {
                return Err(Fail::new(format!(
                    "{}: over the control socket, write --ranges takes the ranges on \
                     stdin (the lunsnap command reads its ranges file itself and sends them)",
                    r.display()
                )));
            }
        }
        let file = match &cli.cmd {
            Cmd::Read(r) => Some(&r.file),
            Cmd::Write(w) => Some(&w.file),
            _ => None,
        };
        match file {
            Some(f) if !is_std(f) => Err(Fail::new(format!(
                "{}: over the control socket, read and write take `-` for FILE (the \
                 lunsnap command opens its file itself and streams it)",
                f.display()
            ))),
            _ => Ok(()),
        }
    }
}

/// Parses `args` as the shell's `lunsnap` would; on a usage error (or `--help`),
/// writes what clap says where it says it and returns the exit status.
fn parse(args: Vec<String>, io: &mut ControlIo) -> std::result::Result<Cli, u8> {
    let argv = std::iter::once(String::from("lunsnap")).chain(args);
    let e = match Cli::try_parse_from(argv) {
        Ok(cli) => match args::validate(&cli) {
            Ok(()) => return Ok(cli),
            Err(e) => e,
        },
        Err(e) => e,
    };
    let text = e.to_string();
    let _ = if e.use_stderr() {
        io.stderr().write_all(text.as_bytes())
    } else {
        io.stdout().write_all(text.as_bytes())
    };
    Err(u8::try_from(e.exit_code()).unwrap_or(2))
}

impl ControlHandler for Handler {
    fn run(&self, args: Vec<String>, shared: &Arc<Shared>, io: &mut ControlIo) -> u8 {
        let cli = match parse(args, io) {
            Ok(cli) => cli,
            Err(code) => return code,
        };
        let place = Place::Live {
            shared: shared.clone(),
            image: self.image.clone(),
        };
        let mut out = String::new();
        let pending = Rc::new(RefCell::new(Vec::new()));
        let mut streams = Socket {
            io,
            // The server's stderr is not a terminal; the client says if the user's is.
            show: Show::new(cli.progress, cli.no_progress, cli.progress_tty, false),
            pending: pending.clone(),
        };
        let result = self.admit(&cli).and_then(|()| {
            crate::run(
                &cli.cmd,
                cli.control.as_deref(),
                &place,
                &mut streams,
                &mut out,
            )
        });
        // As `main` does: its progress, what the command said, then its error line.
        let _ = Socket::send_pending(io, &pending);
        let printed = if out.is_empty() {
            Ok(())
        } else {
            io.stdout().write_all(out.as_bytes())
        };
        match (result, printed) {
            (Ok(code), Ok(())) => code,
            (Err(e), _) => e.report(&mut io.stderr()),
            (Ok(_), Err(e)) => Fail::stdout(&e).report(&mut io.stderr()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lunsnap::FormatOptions;
    use lunsnap_server::control::{frame, read_frame};
    use std::os::unix::net::UnixStream;
    use std::path::Path;

    /// A served array in a fresh image, and the handler of its server.
    fn setup(dir: &Path) -> (Arc<Shared>, Handler) {
        let img = dir.join("live.img");
        let opts = FormatOptions {
            max_luns: 16,
            ..FormatOptions::default()
        };
        let va = crate::image::create_new(&img, &img, 16 << 20, &opts).expect("format");
        let h = Handler::new(std::fs::canonicalize(&img).expect("canonical"));
        (Shared::new(va), h)
    }

    /// Runs `args` through the handler: (status, stdout, stderr).
    fn call(h: &Handler, shared: &Arc<Shared>, args: &[&str]) -> (u8, String, String) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let mut io = ControlIo::new(ours);
        let code = h.run(
            args.iter().map(|s| s.to_string()).collect(),
            shared,
            &mut io,
        );
        drop(io);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut theirs = theirs;
        while let Ok((kind, p)) = read_frame(&mut theirs) {
            match kind {
                frame::STDOUT => out.extend(p),
                frame::STDERR => err.extend(p),
                _ => {}
            }
        }
        let s = |v: Vec<u8>| String::from_utf8(v).expect("utf-8");
        (code, s(out), s(err))
    }

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lunsnap-live-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn commands_run_on_the_served_array() {
        let d = temp("run");
        let (shared, h) = setup(&d);
        let img = h.image.to_str().expect("utf-8").to_string();
        let (code, out, err) = call(&h, &shared, &["lun", "create", &img, "3", "--size", "1M"]);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, "created LUN 3 (1 MiB)\n", "")
        );
        let (code, _, err) = call(&h, &shared, &["lun", "create", &img, "3", "--size", "1M"]);
        assert_eq!(code, 1);
        assert!(
            err.starts_with("lunsnap: ") && err.contains("already in use"),
            "{err}"
        );
        assert!(shared.lock().lun_status(3).is_ok());
        // Usage errors are clap's, with exit status 2; --help goes to stdout.
        let (code, _, err) = call(&h, &shared, &["lun", "create", &img]);
        assert_eq!(code, 2, "{err}");
        let (code, out, _) = call(&h, &shared, &["--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("Usage"), "{out}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn reclaim_and_info_run_on_the_served_array() {
        let d = temp("reclaim");
        let img = d.join("live.img");
        let opts = FormatOptions {
            extent_size: 4096,
            max_luns: 16,
            ..FormatOptions::default()
        };
        let va = crate::image::create_new(&img, &img, 32 << 20, &opts).expect("format");
        let h = Handler::new(std::fs::canonicalize(&img).expect("canonical"));
        let shared = Shared::new(va);
        let img = h.image.to_str().expect("utf-8").to_string();
        {
            // A deleted LUN waits in the free queue (nothing flushed after it).
            let mut a = shared.lock();
            // 2,048 extents: more than one leaf of its mapping.
            a.create_lun(5, 8 << 20).expect("create");
            a.write(5, 0, &vec![5u8; 8 << 20]).expect("write");
            a.flush().expect("flush");
            a.delete(5, false).expect("delete");
        }
        let (code, out, err) = call(&h, &shared, &["info", &img]);
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(
            out.contains(
                "pending free:    8 MiB (1 queue entry) of dropped mappings, counted as \
                 allocated until the server frees it in the background\n"
            ),
            "{out}"
        );
        let (code, out, _) = call(&h, &shared, &["reclaim", &img, "--budget", "1"]);
        assert_eq!(code, 0);
        assert!(
            out.contains(" and 1 metadata page, in 1 unit of work; ")
                && out.ends_with("(8 MiB): the server frees it in the background\n"),
            "{out}"
        );
        let (code, out, _) = call(&h, &shared, &["reclaim", &img, "--json"]);
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["reclaimed"]["bytes_freed"], 8 << 20);
        assert_eq!(v["reclaimed"]["remaining"], 0);
        let (_, out, _) = call(&h, &shared, &["info", &img, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(
            (v["pending_bytes"].as_u64(), v["reclaim_queue"].as_u64()),
            (Some(0), Some(0))
        );
        assert!(!shared.lock().reclaim_pending());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn format_demo_serve_and_foreign_images_are_refused() {
        let d = temp("refuse");
        let (shared, h) = setup(&d);
        let img = h.image.to_str().expect("utf-8").to_string();
        let refused = |args: &[&str], needle: &str| {
            let (code, out, err) = call(&h, &shared, args);
            assert_eq!(code, 1, "{args:?}: {out} {err}");
            assert!(out.is_empty(), "{args:?}: {out}");
            assert!(
                err.starts_with("lunsnap: ") && err.lines().count() == 1 && err.contains(needle),
                "{args:?}: {err}"
            );
        };
        refused(
            &["format", &img, "--size", "16M", "--force"],
            "format cannot run on a served image",
        );
        refused(&["demo"], "demo cannot run over the control socket");
        refused(&["repair", &img], "repair cannot run on a served image");
        refused(
            &["repair", &img, "--dry-run", "--json"],
            "stop its `lunsnap serve` first",
        );
        refused(&["serve", &img], "is already served");
        let other = d.join("other.img");
        std::fs::write(&other, b"").expect("other");
        let other = other.to_str().expect("utf-8");
        refused(&["info", other], "is not the image this server serves");
        refused(
            &["--resolved-image", other, "info", &img],
            "is not the image this server serves",
        );
        refused(
            &["info", &d.join("missing.img").to_string_lossy()],
            "cannot resolve",
        );
        refused(&["read", &img, "0", "/tmp/x"], "take `-` for FILE");
        refused(&["write", &img, "0", "/etc/passwd"], "take `-` for FILE");
        refused(
            &["write", &img, "0", "-", "--ranges", "/etc/passwd"],
            "takes the ranges on stdin",
        );
        let (code, out, _) = call(&h, &shared, &["info", &img]);
        assert_eq!(code, 0);
        assert!(out.contains("generation"), "{out}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
