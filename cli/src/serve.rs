//! `serve IMAGE`: the array's LUNs over NBD until SIGINT or SIGTERM (lunsnap-server),
//! with the other commands running on it through the control socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lunsnap_server::{Addr, Config, ListenSpec, Server, TlsFiles};

use crate::args::Cmd;
use crate::fail::{Fail, Result};
use crate::image::{self, Access};
use crate::live::Handler;
use crate::target::Place;

/// The environment variable that names the control socket (below `--control`).
pub const CONTROL_ENV: &str = "LUNSNAP_CONTROL";

/// What `serve` was asked for.
pub struct ServeSpec {
    /// Listeners; none: `unix:IMAGE.nbd`.
    pub listen: Vec<ListenSpec>,
    /// The control socket.
    pub control: PathBuf,
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

/// The control socket of the image at `image`: `--control` (`given`), else
/// `$LUNSNAP_CONTROL`, else `IMAGE.ctl`.
pub fn control_path(image: &Path, given: Option<&Path>) -> PathBuf {
    match (given, std::env::var_os(CONTROL_ENV)) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(p)) if !p.is_empty() => PathBuf::from(p),
        _ => beside(image, ".ctl"),
    }
}

/// Runs `cmd`, a `serve` command, with the control socket `control` (`--control`).
pub fn run(cmd: &Cmd, control: Option<&Path>, place: &Place) -> Result<u8> {
    let Cmd::Serve {
        image,
        listen,
        max_connections,
        tls_cert,
        tls_key,
        tls_ca,
    } = cmd
    else {
        return Err(Fail::new("not a serve command"));
    };
    let wait = place.cold_only(&format!(
        "{} is already served, by the server this control socket belongs to",
        image.display()
    ))?;
    let tls = match (tls_cert, tls_key, tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        }),
        _ => None,
    };
    let spec = ServeSpec {
        listen: listen.clone(),
        control: control_path(image, control),
        max_connections: *max_connections,
        tls,
    };
    serve(image, spec, &wait)
}

/// `serve IMAGE ...`: serves until a signal, then commits and closes (exit 0).
pub fn serve(path: &Path, spec: ServeSpec, wait: &image::Opening) -> Result<u8> {
    let va = image::open(path, Access::Write, wait)?;
    let served = std::fs::canonicalize(path).map_err(|e| Fail::io("resolve", path, &e))?;
    let handler = Arc::new(Handler::new(served));
    let listen = if spec.listen.is_empty() {
        vec![ListenSpec {
            addr: Addr::Unix(beside(path, ".nbd")),
            host: None,
        }]
    } else {
        spec.listen
    };
    let config = Config {
        listen,
        control: Some((spec.control, handler)),
        tls: spec.tls,
        max_connections: spec.max_connections,
    };
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| Fail::new(format!("cannot handle signals: {e}")))?;
    let server = Server::start(va, config).map_err(Fail::new)?;
    lunsnap_server::log::line(&format!(
        "serving {} (stop with SIGINT or SIGTERM)",
        path.display()
    ));
    let mut signals = signals;
    if let Some(sig) = signals.forever().next() {
        lunsnap_server::log::line(&format!("signal {sig}: stopping"));
    }
    server.shutdown().map_err(Fail::new)?;
    lunsnap_server::log::line("stopped: every acknowledged write is committed");
    Ok(0)
}
