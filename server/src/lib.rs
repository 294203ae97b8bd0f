//! `lunsnap serve`: a lunsnap array's LUNs over NBD, to real clients (qemu, nbdcopy,
//! nbdfuse, fio, the Linux kernel's nbd-client), while management goes on.
//!
//! The server opens the array once and shares it, behind one lock, between:
//! - listeners (`unix:PATH`, `tcp:HOST:PORT`, optionally bound to a host, TLS for
//!   TCP beyond loopback), each client on its own thread; every LUN and attached copy
//!   is an export named by its number, and the array's host security decides what a
//!   client may list, open and write;
//! - the control socket, over which `lunsnap` commands run on the live array (the
//!   command-line tool supplies the [`ControlHandler`]);
//! - the background reclaimer ([`reclaim`]), which frees the space of the mappings
//!   those commands drop a step at a time, between requests.
//!
//! The protocol (NetworkBlockDevice/nbd, doc/proto.md): fixed-newstyle handshake with
//! `NBD_OPT_GO`, `INFO`, `LIST`, `EXPORT_NAME`, `STRUCTURED_REPLY`,
//! `SET_META_CONTEXT`/`LIST_META_CONTEXT` (`base:allocation`), `STARTTLS` and `ABORT`;
//! commands `READ`, `WRITE` (with `FUA`), `FLUSH`, `TRIM`, `WRITE_ZEROES` (with
//! `NO_HOLE`), `BLOCK_STATUS` and `DISC`, with structured replies that report holes.
//! Durability: `FLUSH` commits the array (every acknowledged write becomes durable),
//! and a `FUA` request is committed before its reply. One array and one commit serve
//! every connection, so `CAN_MULTI_CONN` is set.

pub mod conn;
pub mod control;
pub mod exports;
pub mod handshake;
#[cfg(test)]
mod hostile_tests;
pub mod listen;
pub mod log;
#[cfg(test)]
mod lost_tests;
pub mod ops;
pub mod proto;
pub mod reclaim;
#[cfg(test)]
mod reclaim_tests;
pub mod shared;
pub mod sock;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use control::{ControlHandler, ControlIo};
pub use listen::{parse_listen, Addr, ListenSpec};
pub use shared::{ServedArray, Shared};
pub use tls::TlsFiles;

/// How the server is set up.
#[derive(Clone)]
pub struct Config {
    /// The listeners (at least one).
    pub listen: Vec<ListenSpec>,
    /// The control socket and what runs the commands that arrive on it.
    pub control: Option<(PathBuf, Arc<dyn ControlHandler>)>,
    /// TLS for the TCP listeners; with it, every TCP listener requires TLS.
    pub tls: Option<TlsFiles>,
    /// Most clients served at once (default 64).
    pub max_connections: usize,
}

/// Default limit on clients served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    bound: Vec<Arc<listen::Bound>>,
    threads: Vec<JoinHandle<()>>,
    /// The background reclaimer ([`reclaim`]).
    reclaimer: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds every listener (and the control socket) and starts serving `array`.
    /// Nothing is left listening if any of them fails (the array, unchanged, is
    /// dropped with its image's lock).
    pub fn start(array: ServedArray, config: Config) -> Result<Server, String> {
        let (bound, tls, control) = Self::bind_all(&config)?;
        Ok(Self::spawn(array, config, bound, tls, control))
    }

    #[allow(clippy::type_complexity)]
    fn bind_all(
        config: &Config,
    ) -> Result<
        (
            Vec<Arc<listen::Bound>>,
            Option<Arc<tls::Tls>>,
            Option<Arc<listen::Bound>>,
        ),
        String,
    > {
        if config.listen.is_empty() {
            return Err("no listener: give at least one --listen".into());
        }
        let tls = match &config.tls {
            Some(f) => Some(Arc::new(tls::Tls::load(f)?)),
            None => None,
        };
        let mut bound: Vec<Arc<listen::Bound>> = Vec::new();
        let cleanup = |bound: &[Arc<listen::Bound>]| bound.iter().for_each(|b| b.remove());
        for spec in &config.listen {
            match listen::bind(spec, tls.is_some()) {
                Ok(b) => bound.push(Arc::new(b)),
                Err(e) => {
                    cleanup(&bound);
                    return Err(e);
                }
            }
        }
        let control = match &config.control {
            Some((path, _)) => match listen::bind_unix(path) {
                Ok(l) => Some(Arc::new(listen::Bound::Unix(l, path.clone()))),
                Err(e) => {
                    cleanup(&bound);
                    return Err(e);
                }
            },
            None => None,
        };
        Ok((bound, tls, control))
    }

    fn spawn(
        array: ServedArray,
        config: Config,
        bound: Vec<Arc<listen::Bound>>,
        tls: Option<Arc<tls::Tls>>,
        control: Option<Arc<listen::Bound>>,
    ) -> Server {
        let shared = Shared::new(array);
        let mut threads = Vec::new();
        for (b, spec) in bound.iter().zip(&config.listen) {
            let (b2, spec, sh) = (b.clone(), spec.clone(), shared.clone());
            // TLS applies to TCP listeners; Unix sockets are protected by their mode.
            let tls = match spec.addr {
                Addr::Tcp(_) => tls.clone(),
                Addr::Unix(_) => None,
            };
            let max = config.max_connections;
            log::line(&format!("listening on {}", b.describe()));
            threads.push(std::thread::spawn(move || {
                listen::accept_loop(b2, spec, sh, tls, max)
            }));
        }
        let mut all = bound;
        if let (Some(c), Some((_, handler))) = (control, config.control) {
            log::line(&format!("control socket {}", c.describe()));
            let (c2, sh) = (c.clone(), shared.clone());
            threads.push(std::thread::spawn(move || {
                control::accept_loop(c2, sh, handler)
            }));
            all.push(c);
        }
        let reclaimer = reclaim::spawn(shared.clone());
        Server {
            shared,
            bound: all,
            threads,
            reclaimer,
        }
    }

    /// The shared state (the array and the connections).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops: no new clients; every connection ends (acknowledged writes stay); waits
    /// up to 10 s for their threads; the background reclaimer stops after the step it
    /// is in (what still waits stays queued in the image, for the next server or
    /// command); then commits and closes the array.
    pub fn shutdown(self) -> Result<(), String> {
        self.shared.shut_down();
        for b in &self.bound {
            b.wake();
        }
        // A listener is woken by connecting to it; one whose socket file was removed
        // behind the server's back cannot be, and its thread is left blocked in accept
        // (it ends with the process) rather than waited for.
        let deadline = Instant::now() + Duration::from_secs(2);
        for t in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                log::line("a listener did not stop (was its socket file removed?): left behind");
            }
        }
        for b in &self.bound {
            b.remove();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shared.clients() > 0 && Instant::now() < deadline {
            self.shared.shut_down();
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(r) = self.reclaimer {
            // Woken by shut_down, it ends after the step it is in (it holds the array
            // lock for no longer than that).
            let _ = r.join();
        }
        let mut a = self.shared.lock();
        a.flush()
            .map_err(|e| format!("the final commit failed: {e}"))
    }
}
