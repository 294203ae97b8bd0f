//! Helpers for the tests that prove `lunsnap serve` with real NBD clients (issue 12):
//! temporary directories, the `lunsnap` binary, the server as a child process, client
//! tools run with a time limit, background clients that die with the test, and the
//! rule for a missing tool.
//!
//! These tests live in cli/tests/ (not server/tests/) because cargo builds the
//! `lunsnap` binary before them and names it in `CARGO_BIN_EXE_lunsnap` only for the
//! cli package's own tests: they always run the binary of the tree under test, with
//! no nested `cargo build` (which would wait on the build directory lock that the
//! running `cargo test` holds).
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Set to 1 (the Makefile does) to make a missing client tool fail the test instead
/// of skipping it.
pub const REQUIRE_VAR: &str = "LUNSNAP_REQUIRE_CLIENTS";

/// Time limit of one client command (a hung client fails the test, it never hangs CI).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// The `lunsnap` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lunsnap")
}

// ---------------------------------------------------------------------------------
// Tools

/// Where `tool` is: on PATH, else in /usr/sbin or /sbin (mkfs.ext4, e2fsck and
/// debugfs live there, and a PATH without them is common).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A `Command` for `tool`, found with [`which`].
pub fn tool(name: &str) -> Command {
    Command::new(which(name).unwrap_or_else(|| PathBuf::from(name)))
}

/// A Python 3 that has libnbd's binding (`python3-libnbd`, the module behind
/// nbdsh): the first `python3` on PATH may be another installation without it.
pub fn python_with_nbd() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = which("python3").into_iter().collect();
    candidates.push(PathBuf::from("/usr/bin/python3"));
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import nbd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Is `what` there? A tool name, or one of the special requirements `fio-nbd` (fio
/// with its nbd engine), `python3-libnbd` and `/dev/fuse`.
fn present(what: &str) -> bool {
    match what {
        "fio-nbd" => {
            which("fio").is_some()
                && tool("fio")
                    .arg("--enghelp=nbd")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        }
        "python3-libnbd" => python_with_nbd().is_some(),
        "/dev/fuse" => Path::new("/dev/fuse").exists(),
        t => which(t).is_some(),
    }
}

/// True when every tool `test` needs is there. A missing one fails the test when
/// `LUNSNAP_REQUIRE_CLIENTS=1` (CI); otherwise the test prints a skip line and the
/// caller returns, so that a bare `cargo test` without the tools still passes.
pub fn need(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !present(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let what = missing
        .iter()
        .map(|m| match *m {
            "fio-nbd" => "fio (with its nbd engine)",
            "python3-libnbd" => "python3-libnbd (libnbd's Python binding)",
            "/dev/fuse" => "/dev/fuse (FUSE)",
            t => t,
        })
        .collect::<Vec<_>>()
        .join(", ");
    if std::env::var(REQUIRE_VAR).as_deref() == Ok("1") {
        panic!("{what} not installed: run .ci/install-tools");
    }
    eprintln!("skipped {test}: {what} not installed (run .ci/install-tools; {REQUIRE_VAR}=1 makes this a failure)");
    false
}

// ---------------------------------------------------------------------------------
// Running commands

/// What a finished command did.
#[derive(Debug)]
pub struct Out {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    /// Standard output as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard output and error together, for messages.
    pub fn all(&self) -> String {
        format!("{}{}", self.text(), self.stderr)
    }

    /// Asserts exit status 0; returns stdout as text.
    #[track_caller]
    pub fn ok(&self, what: &str) -> String {
        assert_eq!(
            self.code,
            Some(0),
            "{what} failed:\n--- stdout\n{}\n--- stderr\n{}",
            self.text(),
            self.stderr
        );
        self.text()
    }

    /// Asserts a non-zero exit status (not a crash by signal).
    #[track_caller]
    pub fn failed(&self, what: &str) -> &Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "{what} should have failed: {self:?}"
        );
        self
    }
}

fn reader<R: Read + Send + 'static>(r: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        v
    })
}

/// Waits for `child` up to `timeout`; kills it and panics past that.
fn wait_for(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` (no stdin) to the end within `timeout`, capturing its output.
pub fn run_for(cmd: &mut Command, timeout: Duration) -> Out {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let st = wait_for(&mut child, timeout, &what);
    Out {
        code: st.code(),
        stdout: out.join().unwrap(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    }
}

/// Runs `cmd` within [`CLIENT_TIMEOUT`].
pub fn run(cmd: &mut Command) -> Out {
    run_for(cmd, CLIENT_TIMEOUT)
}

/// Runs `lunsnap args`.
pub fn lunsnap(args: &[&str]) -> Out {
    run(Command::new(bin()).args(args))
}

/// Runs `lunsnap args`, which must succeed; returns stdout.
#[track_caller]
pub fn lunsnap_ok(args: &[&str]) -> String {
    lunsnap(args).ok(&format!("lunsnap {}", args.join(" ")))
}

/// A process running in the background for the test (a client, nbdfuse, fuse2fs),
/// killed if the test ends without waiting for it. Its output goes to a file.
pub struct Bg {
    child: Option<Child>,
    what: String,
    /// Its standard output and error.
    pub log: PathBuf,
}

impl Bg {
    /// Starts `cmd` with stdout and stderr to `log`.
    pub fn start(mut cmd: Command, log: PathBuf) -> Bg {
        let what = format!("{cmd:?}");
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        Bg {
            child: Some(child),
            what,
            log,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for it to end (killing it and panicking past `timeout`).
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let st = wait_for(&mut child, timeout, &self.what);
        (st, self.output())
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.output()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("--- {} (killed):\n{}", self.what, self.output());
            }
        }
    }
}

/// Sends `sig` (a `kill` signal name) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// Polls `cond` every 20 ms for up to `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------
// Images and the server

/// A unique directory under the system's temp dir, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        // Short: Unix socket paths are limited to 107 bytes.
        let p = std::env::temp_dir().join(format!("lunsnap-nbd-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    /// A path in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A path in the directory, as a string.
    pub fn file(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An array image in its own temporary directory.
pub struct Image {
    pub dir: Dir,
    /// The image file.
    pub img: String,
}

impl Image {
    /// Formats a `size` image (16 KiB extents: the tests' maps depend on it).
    pub fn new(tag: &str, size: &str) -> Image {
        let dir = Dir::new(tag);
        let img = dir.file("img");
        lunsnap_ok(&["format", &img, "--size", size, "--extent-size", "16K"]);
        Image { dir, img }
    }

    /// Runs `lunsnap WORDS...` where the word `IMG` stands for the image; must succeed.
    #[track_caller]
    pub fn ok(&self, words: &[&str]) -> String {
        let args: Vec<&str> = words
            .iter()
            .map(|w| if *w == "IMG" { self.img.as_str() } else { w })
            .collect();
        lunsnap_ok(&args)
    }

    /// Creates LUN `lun` of `size`.
    pub fn lun(&self, lun: u32, size: &str) {
        self.ok(&["lun", "create", "IMG", &lun.to_string(), "--size", size]);
    }

    /// `lunsnap check IMG` must report the image clean.
    #[track_caller]
    pub fn assert_clean(&self) {
        let out = lunsnap(&["check", &self.img]);
        let text = out.ok("lunsnap check");
        assert!(text.contains(": clean"), "lunsnap check: {text}");
    }

    /// The whole of LUN `lun`, read with `lunsnap read` (the server must be stopped).
    #[track_caller]
    pub fn read_lun(&self, lun: u32) -> Vec<u8> {
        let out = lunsnap(&["read", &self.img, &lun.to_string(), "-"]);
        out.ok("lunsnap read");
        out.stdout
    }

    /// The default listener's socket (`IMG.nbd`).
    pub fn sock(&self) -> String {
        format!("{}.nbd", self.img)
    }
}

/// The NBD URI of export `lun` on the Unix socket `sock`.
pub fn unix_uri(sock: &str, lun: u32) -> String {
    format!("nbd+unix:///{lun}?socket={sock}")
}

/// `lunsnap serve` running as a child; killed (and its log printed) if the test
/// panics.
pub struct Server {
    child: Option<Child>,
    /// Its standard error (the server's log).
    pub log: PathBuf,
    /// The default listener's socket.
    pub sock: String,
}

impl Server {
    /// Serves `image` with extra arguments (listeners, TLS); waits until it serves.
    #[track_caller]
    pub fn start(image: &Image, args: &[&str]) -> Server {
        Server::try_start(image, args)
            .unwrap_or_else(|log| panic!("lunsnap serve did not start:\n{log}"))
    }

    /// As [`Server::start`]; `Err(log)` if the server exits instead of serving.
    pub fn try_start(image: &Image, args: &[&str]) -> Result<Server, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let log = image
            .dir
            .path(&format!("serve-{}.log", N.fetch_add(1, Ordering::Relaxed)));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin())
            .arg("serve")
            .arg(&image.img)
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn lunsnap serve");
        let mut s = Server {
            child: Some(child),
            log,
            sock: image.sock(),
        };
        // "serving IMG" is logged once every listener and the control socket are bound.
        let mut exited = false;
        let up = wait_until(Duration::from_secs(30), || {
            if s.log_text().contains("] serving ") {
                return true;
            }
            exited = !s.running();
            exited
        });
        if !up || exited {
            let log = s.log_text();
            if let Some(mut c) = s.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            return Err(log);
        }
        Ok(s)
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The URI of export `lun` on the default listener.
    pub fn uri(&self, lun: u32) -> String {
        unix_uri(&self.sock, lun)
    }

    /// SIGTERM: the server must commit, close and exit 0. Returns its log.
    #[track_caller]
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        let st = wait_for(
            &mut child,
            Duration::from_secs(30),
            "lunsnap serve after SIGTERM",
        );
        let log = self.log_text();
        assert_eq!(
            st.code(),
            Some(0),
            "lunsnap serve exited with {st} after SIGTERM:\n{log}"
        );
        assert!(
            log.contains("stopped: every acknowledged write is committed"),
            "{log}"
        );
        log
    }

    /// SIGKILL: the server dies at once, committing nothing. Returns its log.
    pub fn kill9(mut self) -> String {
        let mut child = self.child.take().unwrap();
        child.kill().expect("kill -9 lunsnap serve");
        let st = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
        self.log_text()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("--- lunsnap serve log (killed):\n{}", self.log_text());
            }
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A FUSE mount made by a foreground process (nbdfuse, `fuse2fs -f`): unmounted and
/// its process ended if the test ends without [`Mount::unmount`].
pub struct Mount {
    pub dir: PathBuf,
    proc: Option<Bg>,
}

/// Is `dir` a mount point (per /proc/self/mountinfo)?
pub fn is_mounted(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(d))
}

impl Mount {
    /// Starts `cmd`, which mounts `dir` and stays in the foreground; waits until
    /// `ready` holds (at most 30 s).
    #[track_caller]
    pub fn start(cmd: Command, dir: &Path, log: PathBuf, ready: impl Fn() -> bool) -> Mount {
        let mut proc = Bg::start(cmd, log);
        let up = wait_until(Duration::from_secs(30), || {
            (is_mounted(dir) && ready()) || !proc.running()
        });
        let m = Mount {
            dir: dir.to_owned(),
            proc: Some(proc),
        };
        assert!(
            up && is_mounted(dir) && ready(),
            "mount on {} did not come up:\n{}",
            dir.display(),
            m.proc.as_ref().unwrap().output()
        );
        m
    }

    /// Unmounts and waits for the FUSE process to finish writing back and exit;
    /// asserts it exited 0. Returns its output.
    #[track_caller]
    pub fn unmount(mut self) -> String {
        let out = run(tool("fusermount3").arg("-u").arg(&self.dir));
        out.ok(&format!("fusermount3 -u {}", self.dir.display()));
        let (st, log) = self.proc.take().unwrap().wait(Duration::from_secs(60));
        assert!(st.success(), "the FUSE process exited with {st}:\n{log}");
        assert!(!is_mounted(&self.dir));
        log
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.proc.is_some() {
            let _ = Command::new(which("fusermount3").unwrap_or_else(|| "fusermount3".into()))
                .args(["-u", "-z"])
                .arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------------
// Data

/// Deterministic pseudo-random bytes (xorshift64).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The first offset where `a` and `b` differ (or where one ends), for messages.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        return Some(i);
    }
    (a.len() != b.len()).then(|| a.len().min(b.len()))
}

/// Asserts that `got` equals `want`, naming the first differing offset.
#[track_caller]
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if let Some(i) = first_difference(got, want) {
        panic!(
            "{what}: differs at byte {i} (lengths {} and {}): got {:?}, want {:?}",
            got.len(),
            want.len(),
            got.get(i),
            want.get(i)
        );
    }
}

/// Parses JSON printed by a tool (fio prints "fio: connected…" lines before it).
pub fn json_in(text: &str, what: &str) -> serde_json::Value {
    let start = text
        .find(['{', '['])
        .unwrap_or_else(|| panic!("{what}: no JSON in {text:?}"));
    serde_json::from_str(&text[start..])
        .unwrap_or_else(|e| panic!("{what}: bad JSON ({e}): {text}"))
}

// ---------------------------------------------------------------------------------
// A raw NBD client

/// A minimal NBD client over a Unix socket, for tests that must know exactly when
/// each request was sent and its reply arrived: the fixed-newstyle handshake with
/// `NBD_OPT_GO`, then one request at a time with simple replies.
pub struct NbdClient {
    sock: std::os::unix::net::UnixStream,
    handle: u64,
    /// The export's size, from the server's `NBD_INFO_EXPORT`.
    pub size: u64,
}

const NBD_REQUEST_MAGIC: u32 = 0x2560_9513;
const NBD_SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const NBD_OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

impl NbdClient {
    /// Opens export `name` on the server listening on the Unix socket `sock`.
    #[track_caller]
    pub fn connect(sock: &str, name: &str) -> NbdClient {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(sock)
            .unwrap_or_else(|e| panic!("cannot connect to {sock}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).expect("NBD greeting");
        assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT", "not an NBD server");
        s.write_all(&3u32.to_be_bytes()).unwrap(); // FIXED_NEWSTYLE | NO_ZEROES
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes()); // no information requests
        let mut opt = b"IHAVEOPT".to_vec();
        opt.extend_from_slice(&7u32.to_be_bytes()); // NBD_OPT_GO
        opt.extend_from_slice(&(data.len() as u32).to_be_bytes());
        opt.extend_from_slice(&data);
        s.write_all(&opt).unwrap();
        let mut size = None;
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).expect("NBD option reply");
            assert_eq!(
                u64::from_be_bytes(h[..8].try_into().unwrap()),
                NBD_OPT_REPLY_MAGIC
            );
            let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
            let mut p = vec![0u8; len as usize];
            s.read_exact(&mut p).expect("NBD option reply payload");
            match kind {
                1 => break, // NBD_REP_ACK
                // NBD_REP_INFO; NBD_INFO_EXPORT: the size and transmission flags.
                3 if p.len() >= 10 && p[..2] == [0, 0] => {
                    size = Some(u64::from_be_bytes(p[2..10].try_into().unwrap()));
                }
                3 => {}
                _ => panic!(
                    "export {name} refused ({kind:#x}): {}",
                    String::from_utf8_lossy(&p)
                ),
            }
        }
        NbdClient {
            sock: s,
            handle: 0,
            size: size.expect("no NBD_INFO_EXPORT before NBD_REP_ACK"),
        }
    }

    /// Sends one request and waits for its simple reply; `Err` carries a non-zero
    /// NBD error.
    fn request(&mut self, kind: u16, offset: u64, len: u32, payload: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.handle += 1;
        let mut r = Vec::with_capacity(28 + payload.len());
        r.extend_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
        r.extend_from_slice(&0u16.to_be_bytes()); // no command flags
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&self.handle.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(payload);
        self.sock.write_all(&r)?;
        let mut h = [0u8; 16];
        self.sock.read_exact(&mut h)?;
        let magic = u32::from_be_bytes(h[..4].try_into().unwrap());
        let handle = u64::from_be_bytes(h[8..16].try_into().unwrap());
        if magic != NBD_SIMPLE_REPLY_MAGIC || handle != self.handle {
            return Err(std::io::Error::other(format!(
                "bad reply: magic {magic:#x}, handle {handle} (sent {})",
                self.handle
            )));
        }
        match u32::from_be_bytes(h[4..8].try_into().unwrap()) {
            0 => Ok(()),
            e => Err(std::io::Error::other(format!("NBD error {e}"))),
        }
    }

    /// `NBD_CMD_WRITE` of `data` at `offset`; returns once the reply arrived.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.request(1, offset, data.len() as u32, data)
    }

    /// `NBD_CMD_READ` of `len` bytes at `offset`.
    pub fn read(&mut self, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        self.request(0, offset, len, &[])?;
        let mut data = vec![0u8; len as usize];
        self.sock.read_exact(&mut data)?;
        Ok(data)
    }

    /// `NBD_CMD_FLUSH`.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.request(3, 0, 0, &[])
    }

    /// `NBD_CMD_DISC` (no reply), then the socket is closed.
    pub fn disconnect(mut self) {
        use std::io::Write;
        let mut r = Vec::with_capacity(28);
        r.extend_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&2u16.to_be_bytes()); // NBD_CMD_DISC
        r.extend_from_slice(&(self.handle + 1).to_be_bytes());
        r.extend_from_slice(&[0u8; 12]);
        let _ = self.sock.write_all(&r);
    }
}
