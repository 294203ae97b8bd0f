//! `lunsnap serve` as a child process of a test.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::bin;

/// A `lunsnap serve` child, in `dir`.
pub struct Server {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Server {
    /// Serves `image` (in `dir`) with `extra` options; returns once its control socket
    /// answers.
    pub fn start(dir: &Path, image: &str, extra: &[&str]) -> Server {
        let log = dir.join(format!("{image}.serve.log"));
        let child = Command::new(bin())
            .current_dir(dir)
            .args(["serve", image])
            .args(extra)
            .env_remove("LUNSNAP_CONTROL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Server {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let ctl = dir.join(format!("{image}.ctl"));
        while !(ctl.exists() && dir.join(format!("{image}.nbd")).exists()) {
            assert!(Instant::now() < deadline, "no server: {}", s.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM: the server commits and must exit 0.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "serve exited with {status}: {}",
            self.log()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
