//! Listeners: `unix:PATH` and `tcp:HOST:PORT`, each optionally bound to a host
//! (`,host=HOSTID`), and the accept loops that hand each client to its own thread.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::conn::{self, Context};
use crate::exports::Identity;
use crate::log;
use crate::shared::Shared;
use crate::sock::Sock;
use crate::tls::Tls;

/// Where a listener listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// A Unix socket at this path (created with mode 0600).
    Unix(PathBuf),
    /// A TCP address, `HOST:PORT` (`[::1]:10809` for IPv6).
    Tcp(String),
}

/// A listener as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// Where.
    pub addr: Addr,
    /// The host its clients act for; `None`: the array's administrator (or, with
    /// TLS, the host their certificate names).
    pub host: Option<u64>,
}

impl std::fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.addr {
            Addr::Unix(p) => write!(f, "unix:{}", p.display())?,
            Addr::Tcp(a) => write!(f, "tcp:{a}")?,
        }
        if let Some(h) = self.host {
            write!(f, ",host={h:016x}")?;
        }
        Ok(())
    }
}

/// A host id: exactly 16 hex digits (as the CLI takes them).
pub fn parse_host_id(s: &str) -> Result<u64, String> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not a host id: give exactly 16 hex digits"
        ));
    }
    u64::from_str_radix(s, 16).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses `unix:PATH[,host=HOSTID]` or `tcp:HOST:PORT[,host=HOSTID]`.
pub fn parse_listen(s: &str) -> Result<ListenSpec, String> {
    let (body, host) = match s.rsplit_once(",host=") {
        Some((b, h)) => (b, Some(parse_host_id(h)?)),
        None => (s, None),
    };
    let addr = if let Some(p) = body.strip_prefix("unix:") {
        if p.is_empty() {
            return Err(format!("{s:?}: give a path after unix:"));
        }
        Addr::Unix(PathBuf::from(p))
    } else if let Some(a) = body.strip_prefix("tcp:") {
        if !a.contains(':') {
            return Err(format!("{s:?}: give tcp:HOST:PORT"));
        }
        Addr::Tcp(a.to_owned())
    } else {
        return Err(format!(
            "{s:?}: a listener is unix:PATH or tcp:HOST:PORT, optionally followed by ,host=HOSTID"
        ));
    };
    Ok(ListenSpec { addr, host })
}

/// A bound listener.
pub enum Bound {
    /// A Unix socket and its path (removed when the server stops).
    Unix(UnixListener, PathBuf),
    /// A TCP socket and its local address.
    Tcp(TcpListener, SocketAddr),
}

impl Bound {
    /// What the log calls it.
    pub fn describe(&self) -> String {
        match self {
            Bound::Unix(_, p) => format!("unix:{}", p.display()),
            Bound::Tcp(_, a) => format!("tcp:{a}"),
        }
    }

    /// Wakes a thread blocked in `accept` by connecting to the listener.
    pub fn wake(&self) {
        match self {
            Bound::Unix(_, p) => drop(UnixStream::connect(p)),
            Bound::Tcp(_, a) => {
                let mut to = *a;
                if to.ip().is_unspecified() {
                    to.set_ip(if to.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                drop(TcpStream::connect(to));
            }
        }
    }

    /// Removes the socket file of a Unix listener.
    pub fn remove(&self) {
        if let Bound::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }

    fn accept(&self) -> std::io::Result<Sock> {
        match self {
            Bound::Unix(l, _) => l.accept().map(|(s, _)| Sock::Unix(s)),
            Bound::Tcp(l, _) => l.accept().map(|(s, _)| Sock::Tcp(s)),
        }
    }
}

/// Binds a Unix socket at `path` with mode 0600: bound under a temporary name in
/// the same directory, restricted, then renamed into place, so that nobody else can
/// connect in between. A stale socket (nothing listening) is replaced; a live one,
/// or any other file, is refused.
pub fn bind_unix(path: &Path) -> Result<UnixListener, String> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(format!("{} exists and is not a socket", path.display()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{} is in use: another server listens on it",
                path.display()
            ));
        }
    }
    let name = path
        .file_name()
        .map_or_else(|| "socket".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l = UnixListener::bind(&tmp)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let r = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot listen on {}: {e}", path.display()));
    }
    Ok(l)
}

/// Binds `spec`; TCP on an address other than loopback needs TLS.
pub fn bind(spec: &ListenSpec, tls: bool) -> Result<Bound, String> {
    match &spec.addr {
        Addr::Unix(p) => Ok(Bound::Unix(bind_unix(p)?, p.clone())),
        Addr::Tcp(a) => {
            let addrs: Vec<SocketAddr> = a
                .to_socket_addrs()
                .map_err(|e| format!("tcp:{a}: {e}"))?
                .collect();
            if !tls && addrs.iter().any(|x| !x.ip().is_loopback()) {
                return Err(format!(
                    "tcp:{a} is not a loopback address: serving LUNs over the network needs TLS \
                     (--tls-cert, --tls-key, --tls-ca)"
                ));
            }
            let l = TcpListener::bind(&addrs[..])
                .map_err(|e| format!("cannot listen on tcp:{a}: {e}"))?;
            let local = l.local_addr().map_err(|e| format!("tcp:{a}: {e}"))?;
            Ok(Bound::Tcp(l, local))
        }
    }
}

/// Accepts clients of `bound` until the shutdown, each served on its own thread;
/// clients beyond `max` connections are closed at once.
pub fn accept_loop(
    bound: Arc<Bound>,
    spec: ListenSpec,
    shared: Arc<Shared>,
    tls: Option<Arc<Tls>>,
    max: usize,
) {
    let name = bound.describe();
    let who = spec.host.map_or(Identity::Admin, Identity::Host);
    loop {
        let sock = match bound.accept() {
            Ok(s) => s,
            Err(e) if shared.is_shutting_down() => {
                let _ = e;
                break;
            }
            Err(e) => {
                log::line(&format!("{name}: accept failed: {e}"));
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        if shared.is_shutting_down() {
            break;
        }
        let Some(admission) = shared.admit(max) else {
            log::line(&format!(
                "{name}: refused a client: {max} connections are open"
            ));
            sock.shutdown();
            continue;
        };
        let ctx = Context {
            shared: shared.clone(),
            who,
            listener: name.clone(),
            tls: tls.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("nbd {name}"))
            .spawn(move || {
                conn::serve(sock, ctx);
                drop(admission);
            });
        if let Err(e) = spawned {
            log::line(&format!("{name}: cannot start a thread for a client: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse() {
        assert_eq!(
            parse_listen("unix:/run/db.sock,host=50060b0000c26201"),
            Ok(ListenSpec {
                addr: Addr::Unix("/run/db.sock".into()),
                host: Some(0x5006_0b00_00c2_6201)
            })
        );
        assert_eq!(
            parse_listen("tcp:[::1]:10809").map(|l| l.addr),
            Ok(Addr::Tcp("[::1]:10809".into()))
        );
        for bad in [
            "",
            "unix:",
            "tcp:localhost",
            "udp:x:1",
            "unix:/x,host=12",
            "unix:/x,host=zz060b0000c26201",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad:?}");
        }
    }
}
