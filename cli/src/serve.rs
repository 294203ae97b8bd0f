//! `serve IMAGE`: the array's LUNs over NBD until SIGINT or SIGTERM (lunsnap-server),
//! with the other commands running on it through the control socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lunsnap_server::{Addr, Config, ControlHandler, ListenSpec, Server, TlsFiles};

use crate::fail::{Fail, Result};
use crate::image::{self, Access};

/// What `serve` was asked for.
pub struct ServeSpec {
    /// Listeners; none: `unix:IMAGE.nbd`.
    pub listen: Vec<ListenSpec>,
    /// The control socket; default `IMAGE.ctl`.
    pub control: Option<PathBuf>,
    /// Most clients at once.
    pub max_connections: usize,
    /// TLS files (all three or none).
    pub tls: Option<TlsFiles>,
}

/// `IMAGE` + `suffix` (`disk.img` → `disk.img.nbd`).
pub fn beside(image: &Path, suffix: &str) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `serve IMAGE ...`: serves until a signal, then commits and closes (exit 0).
pub fn serve(path: &Path, spec: ServeSpec, handler: Arc<dyn ControlHandler>) -> Result<u8> {
    let va = image::open(path, Access::Write)?;
    let listen = if spec.listen.is_empty() {
        vec![ListenSpec {
            addr: Addr::Unix(beside(path, ".nbd")),
            host: None,
        }]
    } else {
        spec.listen
    };
    let control = spec.control.unwrap_or_else(|| beside(path, ".ctl"));
    let config = Config {
        listen,
        control: Some((control, handler)),
        tls: spec.tls,
        max_connections: spec.max_connections,
    };
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| Fail(format!("cannot handle signals: {e}")))?;
    let server = Server::start(va, config).map_err(Fail)?;
    lunsnap_server::log::line(&format!(
        "serving {} (stop with SIGINT or SIGTERM)",
        path.display()
    ));
    let mut signals = signals;
    if let Some(sig) = signals.forever().next() {
        lunsnap_server::log::line(&format!("signal {sig}: stopping"));
    }
    server.shutdown().map_err(Fail)?;
    lunsnap_server::log::line("stopped: every acknowledged write is committed");
    Ok(0)
}
