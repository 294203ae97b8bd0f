//! `lunsnap`: LUNs and business copies in array image files, from the command line.
//!
//! Exit status: 0 success, 1 the operation failed (one line on stderr says why; the
//! image is unchanged), 2 usage error. README.md documents every command.

mod access;
mod cmd;
mod demo;
mod fail;
mod image;
mod json;
mod progress;
mod serve;
mod size;
mod transfer;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, CommandFactory, Parser, Subcommand};

use crate::access::{parse_host, Level};
use crate::image::FormatSpec;
use crate::transfer::ReadSpec;

/// LUNs and point-in-time business copies in a sparse array image file.
#[derive(Parser, Debug)]
#[command(name = "lunsnap", version, about, long_about = None)]
#[command(after_help = "\
SIZE: bytes, or a number with a K, M, G or T suffix (powers of 1024), e.g. 64M.
HOST: a host id, exactly 16 hex digits (64 bits, like a WWN), e.g. 50060b0000c26204.
Exit status: 0 success, 1 the operation failed (the image is unchanged), 2 usage error.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a sparse image file and format an empty array in it
    Format {
        /// The image file to create
        image: PathBuf,
        /// Image size (a multiple of 4K)
        #[arg(long, value_name = "SIZE", value_parser = size::image_size)]
        size: u64,
        /// Data extent size, the unit of copy-on-write: a power of two from 4K to 1M
        /// [default: 16K]
        #[arg(long, value_name = "SIZE", value_parser = size::extent_size)]
        extent_size: Option<u32>,
        /// LUN numbers run from 0 to N-1 (1 to 1048576) [default: 1024]
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=i64::from(lunsnap::MAX_LUNS_LIMIT)))]
        max_luns: Option<u32>,
        /// Replace IMAGE if it exists (only once the new image is complete)
        #[arg(long)]
        force: bool,
    },
    /// Show the pool's figures: capacity, reserved, allocated, free, metadata
    Info {
        image: PathBuf,
        /// Print a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Create, delete and list LUNs; take them offline and online
    #[command(subcommand)]
    Lun(LunCmd),
    /// Create, attach, detach and restore business copies
    #[command(subcommand)]
    Copy(CopyCmd),
    /// Write FILE (`-`: stdin) to a LUN; its length must be a multiple of 512
    Write {
        image: PathBuf,
        lun: u32,
        /// The data to write; `-` reads stdin
        file: PathBuf,
        /// Byte offset in the LUN (a multiple of 512)
        #[arg(long, value_name = "BYTES", value_parser = size::parse, default_value = "0")]
        offset: u64,
        /// Write as this host: with security enabled it needs a write grant on the LUN
        #[arg(long = "as", value_name = "HOST", value_parser = parse_host)]
        as_host: Option<u64>,
    },
    /// Read a LUN (by default all of it from the offset) into FILE (`-`: stdout)
    Read {
        image: PathBuf,
        lun: u32,
        /// Where the data goes (created or truncated); `-` writes stdout
        file: PathBuf,
        /// Byte offset in the LUN (a multiple of 512)
        #[arg(long, value_name = "BYTES", value_parser = size::parse, default_value = "0")]
        offset: u64,
        /// Bytes to read (a multiple of 512) [default: to the end of the LUN]
        #[arg(long, value_name = "BYTES", value_parser = size::parse)]
        length: Option<u64>,
        /// Read as this host: with security enabled it needs a grant on the LUN
        #[arg(long = "as", value_name = "HOST", value_parser = parse_host)]
        as_host: Option<u64>,
    },
    /// Register, unregister and list the hosts that access control knows
    #[command(subcommand)]
    Host(HostCmd),
    /// Let a host discover and read (read) or also write (write) a LUN
    Grant {
        image: PathBuf,
        lun: u32,
        #[arg(value_parser = parse_host)]
        host: u64,
        /// What the host may do: read, or write (read and write)
        #[arg(long, value_enum)]
        access: Level,
    },
    /// Remove a host's grant on a LUN
    Revoke {
        image: PathBuf,
        lun: u32,
        #[arg(value_parser = parse_host)]
        host: u64,
    },
    /// Turn host access control on (hosts see only granted LUNs) or off
    #[command(subcommand)]
    Security(SecurityCmd),
    /// Verify every invariant of the image's metadata (an fsck; exit 1 if any is broken)
    Check {
        image: PathBuf,
        /// Print a JSON object
        #[arg(long)]
        json: bool,
    },
    /// Serve the image's LUNs over NBD (each LUN and attached copy is the export
    /// named by its number) until SIGINT or SIGTERM; other lunsnap commands on the
    /// image run on the live array through the control socket
    Serve {
        image: PathBuf,
        /// unix:PATH or tcp:HOST:PORT, optionally with ,host=HOST (its clients act for
        /// that host); repeatable [default: unix:IMAGE.nbd]
        #[arg(long, value_name = "ADDR", value_parser = lunsnap_server::parse_listen)]
        listen: Vec<lunsnap_server::ListenSpec>,
        /// The control socket [default: IMAGE.ctl]
        #[arg(long, value_name = "PATH")]
        control: Option<PathBuf>,
        /// Most clients served at once
        #[arg(long, value_name = "N", default_value_t = lunsnap_server::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// TLS for TCP listeners: the server's certificate (PEM)
        #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
        tls_cert: Option<PathBuf>,
        /// TLS: the server's private key (PEM)
        #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
        tls_key: Option<PathBuf>,
        /// TLS: the CA that signs clients' certificates (PEM); a client certificate's
        /// common name is the host it acts for (its id or registered name)
        #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
        tls_ca: Option<PathBuf>,
    },
    /// Run the backup and restore cycle of HP's Business Copy VA guide end to end, narrating each step
    Demo {
        /// Keep the image in this directory (default: a temporary directory, removed)
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum LunCmd {
    /// Create a LUN reading as zeros; it reserves its full size in the pool
    Create {
        image: PathBuf,
        lun: u32,
        /// LUN size (a multiple of 512)
        #[arg(long, value_name = "SIZE", value_parser = size::parse)]
        size: u64,
    },
    /// Delete a LUN (or a copy), freeing what only it used
    Delete {
        image: PathBuf,
        lun: u32,
        /// Delete a LUN that has copies: attached copies stand alone as plain LUNs,
        /// detached ones stay without a parent
        #[arg(long)]
        orphan_copies: bool,
    },
    /// List the LUNs and copies with their space figures, state and grants
    List {
        image: PathBuf,
        /// Print a JSON array
        #[arg(long)]
        json: bool,
        /// Only the LUNs this host may discover
        #[arg(long = "as", value_name = "HOST", value_parser = parse_host)]
        as_host: Option<u64>,
    },
    /// Take a LUN offline: its I/O is refused, management operations still work
    Offline { image: PathBuf, lun: u32 },
    /// Bring an offline LUN back online
    Online { image: PathBuf, lun: u32 },
}

#[derive(Subcommand, Debug)]
enum HostCmd {
    /// Register a host by its id, with an optional label
    Add {
        image: PathBuf,
        #[arg(value_parser = parse_host)]
        host: u64,
        /// A label for people (at most 56 bytes)
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Unregister a host, removing its grants
    Remove {
        image: PathBuf,
        #[arg(value_parser = parse_host)]
        host: u64,
    },
    /// List the registered hosts
    List {
        image: PathBuf,
        /// Print a JSON array
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum SecurityCmd {
    /// Each host sees, reads and writes only the LUNs it is granted
    Enable { image: PathBuf },
    /// Every host sees every LUN (grants are kept for the next `enable`)
    Disable { image: PathBuf },
}

#[derive(Subcommand, Debug)]
#[allow(clippy::enum_variant_names)]
enum CopyCmd {
    /// Define copy C of LUN P: attached (P's image now) or detached (no data yet).
    /// Several --parent/--copy pairs make a consistency group: every copy at one
    /// point in time, all or nothing
    #[command(group(ArgGroup::new("state").required(true).args(["attached", "detached"])))]
    Create {
        image: PathBuf,
        /// The parent LUN (repeat with --copy for a group: the Nth --parent goes with
        /// the Nth --copy)
        #[arg(long, value_name = "P", required = true)]
        parent: Vec<u32>,
        /// The copy's LUN number
        #[arg(long, value_name = "C", required = true)]
        copy: Vec<u32>,
        /// Make the copy now (it reserves the parent's size)
        #[arg(long)]
        attached: bool,
        /// Only define it (no data, no reservation, I/O refused until attached)
        #[arg(long)]
        detached: bool,
    },
    /// Make (or refresh) copy C: it becomes its parent's image now. Several copies
    /// are attached as a consistency group: one point in time, all or nothing
    Attach {
        image: PathBuf,
        #[arg(value_name = "COPY", required = true)]
        copies: Vec<u32>,
    },
    /// Discard copy C's data and reservation, keeping its number
    Detach { image: PathBuf, copy: u32 },
    /// Copy to parent: the parent's contents become copy C's (the copy is unchanged)
    Restore { image: PathBuf, copy: u32 },
}

fn run(cmd: Cmd, out: &mut String) -> fail::Result<u8> {
    match cmd {
        Cmd::Format {
            image,
            size,
            extent_size,
            max_luns,
            force,
        } => {
            let spec = FormatSpec {
                size,
                extent_size,
                max_luns,
                force,
            };
            cmd::format(&image, &spec, out)
        }
        Cmd::Info { image, json } => cmd::info(&image, json, out),
        Cmd::Lun(LunCmd::Create { image, lun, size }) => cmd::lun_create(&image, lun, size, out),
        Cmd::Lun(LunCmd::Delete {
            image,
            lun,
            orphan_copies,
        }) => cmd::lun_delete(&image, lun, orphan_copies, out),
        Cmd::Lun(LunCmd::List {
            image,
            json,
            as_host,
        }) => cmd::lun_list(&image, json, as_host, out),
        Cmd::Lun(LunCmd::Offline { image, lun }) => access::lun_online(&image, lun, false, out),
        Cmd::Lun(LunCmd::Online { image, lun }) => access::lun_online(&image, lun, true, out),
        Cmd::Copy(CopyCmd::Create {
            image,
            parent,
            copy,
            attached,
            detached: _,
        }) => {
            let pairs: Vec<(u32, u32)> = parent.into_iter().zip(copy).collect();
            cmd::copy_create(&image, &pairs, attached, out)
        }
        Cmd::Copy(CopyCmd::Attach { image, copies }) => cmd::copy_attach(&image, &copies, out),
        Cmd::Copy(CopyCmd::Detach { image, copy }) => cmd::copy_detach(&image, copy, out),
        Cmd::Copy(CopyCmd::Restore { image, copy }) => cmd::copy_restore(&image, copy, out),
        Cmd::Write {
            image,
            lun,
            file,
            offset,
            as_host,
        } => transfer::write(&image, lun, &file, offset, as_host, out),
        Cmd::Read {
            image,
            lun,
            file,
            offset,
            length,
            as_host,
        } => {
            let spec = ReadSpec {
                lun,
                offset,
                length,
                host: as_host,
            };
            transfer::read(&image, &spec, &file, out)
        }
        Cmd::Host(HostCmd::Add { image, host, name }) => access::host_add(&image, host, &name, out),
        Cmd::Host(HostCmd::Remove { image, host }) => access::host_remove(&image, host, out),
        Cmd::Host(HostCmd::List { image, json }) => access::host_list(&image, json, out),
        Cmd::Grant {
            image,
            lun,
            host,
            access,
        } => access::grant(&image, lun, host, access, out),
        Cmd::Revoke { image, lun, host } => access::revoke(&image, lun, host, out),
        Cmd::Security(SecurityCmd::Enable { image }) => access::security(&image, true, out),
        Cmd::Security(SecurityCmd::Disable { image }) => access::security(&image, false, out),
        Cmd::Check { image, json } => cmd::check(&image, json, out),
        Cmd::Demo { dir } => demo::run(dir.as_deref()),
        Cmd::Serve {
            image,
            listen,
            control,
            max_connections,
            tls_cert,
            tls_key,
            tls_ca,
        } => {
            let tls = match (tls_cert, tls_key, tls_ca) {
                (Some(cert), Some(key), Some(ca)) => {
                    Some(lunsnap_server::TlsFiles { cert, key, ca })
                }
                _ => None,
            };
            let spec = serve::ServeSpec {
                listen,
                control,
                max_connections,
                tls,
            };
            serve::serve(&image, spec, std::sync::Arc::new(NoControl))
        }
    }
}

/// Until the commands run on a live array: the control socket answers every command
/// with exit status 1.
struct NoControl;

impl lunsnap_server::ControlHandler for NoControl {
    fn run(
        &self,
        _args: Vec<String>,
        _shared: &std::sync::Arc<lunsnap_server::Shared>,
        io: &mut lunsnap_server::ControlIo,
    ) -> u8 {
        let _ = io
            .stderr()
            .write_all(b"lunsnap: this server does not run commands yet\n");
        1
    }
}

/// What clap cannot check: `copy create` pairs each --parent with a --copy.
fn validate(cli: &Cli) -> Result<(), clap::Error> {
    if let Cmd::Copy(CopyCmd::Create { parent, copy, .. }) = &cli.cmd {
        if parent.len() != copy.len() {
            let mut c = Cli::command();
            c.build();
            let sub = c
                .find_subcommand_mut("copy")
                .and_then(|c| c.find_subcommand_mut("create"));
            let msg = format!(
                "{} --parent and {} --copy: give one --copy for each --parent",
                parent.len(),
                copy.len()
            );
            return Err(match sub {
                Some(s) => s.error(clap::error::ErrorKind::WrongNumberOfValues, msg),
                None => c.error(clap::error::ErrorKind::WrongNumberOfValues, msg),
            });
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's default); --help and --version with 0.
    let cli = Cli::parse();
    if let Err(e) = validate(&cli) {
        e.exit();
    }
    let mut out = String::new();
    let result = run(cli.cmd, &mut out);
    // (The demo and `read` to stdout print as they go, and leave `out` empty.)
    let printed = if out.is_empty() {
        Ok(())
    } else {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
    };
    match (result, printed) {
        (Ok(code), Ok(())) => ExitCode::from(code),
        (Err(e), _) => {
            let _ = writeln!(std::io::stderr(), "lunsnap: {e}");
            ExitCode::from(1)
        }
        (Ok(_), Err(e)) => {
            let _ = writeln!(std::io::stderr(), "lunsnap: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
