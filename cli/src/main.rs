//! `lunsnap`: LUNs and business copies in array image files, from the command line.
//!
//! Exit status: 0 success (also when the reader of stdout goes away: `| head`), 1 the
//! operation failed (one line on stderr says why; the image is unchanged), 2 usage
//! error; `check` exits 2 on damage and 3 on leaks only, `scrub` 2 when a metadata
//! page has no good copy left, `repair` as `check` when the check after it finds
//! damage or leaks. README.md documents every command.
//!
//! Every command runs the same code on a cold image and on the array `lunsnap serve`
//! holds open ([`target`]): a command that finds its image locked by a server sends
//! itself over the server's control socket ([`forward`]), where the server runs it
//! ([`live`]) and streams its output back.

mod access;
mod args;
mod cmd;
mod demo;
mod fail;
mod forward;
mod image;
mod integrity;
mod json;
mod list;
mod live;
mod progress;
mod ranges;
mod readout;
mod reclaim;
mod repair;
mod serve;
mod signature;
mod sink;
mod size;
mod survey;
mod target;
mod transfer;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Cmd, CopyCmd, HostCmd, LunCmd, SecurityCmd};
use crate::fail::Fail;
use crate::image::{FormatSpec, Opening};
use crate::progress::Show;
use crate::target::{Place, Std, Streams};

/// Runs `cmd` on its image at `place`, with `io` as its standard streams; what it has
/// to say goes into `out` (printed on stdout), and it returns the exit status.
pub fn run(
    cmd: &Cmd,
    control: Option<&std::path::Path>,
    place: &Place,
    io: &mut dyn Streams,
    out: &mut String,
) -> fail::Result<u8> {
    match cmd {
        Cmd::Format {
            image,
            size,
            extent_size,
            max_luns,
            metadata_copies,
            force,
            json,
        } => {
            let spec = FormatSpec {
                size: *size,
                extent_size: *extent_size,
                max_luns: *max_luns,
                metadata_copies: *metadata_copies,
                force: *force,
            };
            cmd::format(place, image, &spec, *json, out)
        }
        Cmd::Info { image, json } => cmd::info(place, image, *json, out),
        Cmd::Lun(c) => run_lun(c, place, out),
        Cmd::Copy(c) => run_copy(c, place, out),
        Cmd::Write(w) => transfer::write(place, io, w, out),
        Cmd::Read(r) => readout::read(place, io, r, out),
        Cmd::Map(m) => survey::map(place, m, out),
        Cmd::Diff(d) => survey::diff(place, d, out),
        Cmd::Discard(d) => survey::discard(place, d, out),
        Cmd::Reclaim {
            image,
            budget,
            json,
        } => reclaim::reclaim(place, image, *budget, *json, out),
        Cmd::Host(c) => run_host(c, place, out),
        Cmd::Grant {
            image,
            lun,
            host,
            access,
            json,
        } => access::grant(place, (image, *json), (*lun, *host), *access, out),
        Cmd::Revoke {
            image,
            lun,
            host,
            json,
        } => access::revoke(place, (image, *json), (*lun, *host), out),
        Cmd::Security(SecurityCmd::Enable { image, json }) => {
            access::security(place, (image, *json), true, out)
        }
        Cmd::Security(SecurityCmd::Disable { image, json }) => {
            access::security(place, (image, *json), false, out)
        }
        Cmd::Check { image, json } => integrity::check(place, image, *json, out),
        Cmd::Scrub { image, json } => integrity::scrub(place, io, image, *json, out),
        Cmd::Repair {
            image,
            dry_run,
            json,
        } => repair::repair(place, image, *dry_run, *json, out),
        Cmd::Demo { dir } => {
            place.cold_only(
                "demo cannot run over the control socket: it makes an image of its own; run \
                 `lunsnap demo` without a server",
            )?;
            demo::run(dir.as_deref())
        }
        Cmd::Serve { .. } => serve::run(cmd, control, place),
    }
}

fn run_lun(c: &LunCmd, place: &Place, out: &mut String) -> fail::Result<u8> {
    match c {
        LunCmd::Create {
            image,
            lun,
            size,
            json,
        } => cmd::lun_create(place, (image, *json), *lun, *size, out),
        LunCmd::Delete {
            image,
            lun,
            orphan_copies,
            force,
            json,
        } => {
            let d = cmd::Delete {
                lun: *lun,
                orphan: *orphan_copies,
                force: *force,
                json: *json,
            };
            cmd::lun_delete(place, image, &d, out)
        }
        LunCmd::List {
            image,
            json,
            as_host,
            copies_of,
            tree,
        } => {
            let spec = list::ListSpec {
                json: *json,
                host: *as_host,
                copies_of: *copies_of,
                tree: *tree,
            };
            list::lun_list(place, image, &spec, out)
        }
        LunCmd::Offline {
            image,
            lun,
            force,
            json,
        } => access::lun_online(place, (image, *json, *force), *lun, false, out),
        LunCmd::Online { image, lun, json } => {
            access::lun_online(place, (image, *json, false), *lun, true, out)
        }
    }
}

fn run_copy(c: &CopyCmd, place: &Place, out: &mut String) -> fail::Result<u8> {
    match c {
        CopyCmd::Create {
            image,
            parent,
            copy,
            attached,
            detached: _,
            json,
        } => {
            let pairs: Vec<(u32, u32)> = parent.iter().copied().zip(copy.iter().copied()).collect();
            cmd::copy_create(place, (image, *json), &pairs, *attached, out)
        }
        CopyCmd::Attach {
            image,
            copies,
            force,
            json,
        } => cmd::copy_attach(place, (image, *json, *force), copies, out),
        CopyCmd::Detach {
            image,
            copy,
            force,
            json,
        } => cmd::copy_detach(place, (image, *json, *force), *copy, out),
        CopyCmd::Restore {
            image,
            copy,
            force,
            json,
        } => cmd::copy_restore(place, (image, *json, *force), *copy, out),
    }
}

fn run_host(c: &HostCmd, place: &Place, out: &mut String) -> fail::Result<u8> {
    match c {
        HostCmd::Add {
            image,
            host,
            name,
            json,
        } => access::host_add(place, (image, *json), *host, name, out),
        HostCmd::Remove { image, host, json } => {
            access::host_remove(place, (image, *json), *host, out)
        }
        HostCmd::List { image, json } => access::host_list(place, image, *json, out),
    }
}

fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's default); --help and --version with 0.
    let cli = Cli::parse();
    if let Err(e) = args::validate(&cli) {
        e.exit();
    }
    let mut out = String::new();
    let place = Place::Cold(Opening {
        limit: cli.wait,
        control: cli.control.clone(),
        allow_rollback: cli.allow_rollback,
    });
    let mut io = Std {
        show: Show::new(
            cli.progress,
            cli.no_progress,
            false,
            std::io::stderr().is_terminal(),
        ),
    };
    let result = run(&cli.cmd, cli.control.as_deref(), &place, &mut io, &mut out);
    // The image is served: the server runs the command (nothing was touched here).
    if let Err(e) = &result {
        if e.is_in_use() && forward::forwardable(&cli.cmd) {
            return forward::run(&cli, e);
        }
    }
    // (The demo and `read` to stdout print as they go, and leave `out` empty.)
    let printed = if out.is_empty() {
        Ok(())
    } else {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
    };
    let code = match (result, printed) {
        (Ok(code), Ok(())) => code,
        (Err(e), _) => e.report(&mut std::io::stderr()),
        (Ok(_), Err(e)) => Fail::stdout(&e).report(&mut std::io::stderr()),
    };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
