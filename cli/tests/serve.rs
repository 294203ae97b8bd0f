//! Management while serving: every command on an image that `lunsnap serve` holds runs
//! on the live array through the control socket, with the output and exit status it
//! gives on a cold image; changes under connected NBD clients are refused, or end
//! their connections with `--force`.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A `lunsnap serve` child process.
struct Server {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Serves `image` (relative to `dir`, where the server runs) with `extra` options;
    /// returns once its control socket `ctl` and NBD socket exist.
    fn start(dir: &Path, image: &str, extra: &[&str], ctl: &str) -> Server {
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
            dir: dir.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let nbd = dir.join(format!("{image}.nbd"));
        while !(dir.join(ctl).exists() && nbd.exists()) {
            assert!(
                Instant::now() < deadline,
                "the server never came up: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn nbd(&self, image: &str) -> PathBuf {
        self.dir.join(format!("{image}.nbd"))
    }

    /// SIGTERM; the server must exit 0.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
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

/// A minimal NBD client: the fixed-newstyle handshake with `NBD_OPT_GO`, then simple
/// replies to `READ` and `WRITE`.
struct Nbd(UnixStream);

const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;

impl Nbd {
    /// Opens export `name` on the server at `sock`.
    fn open(sock: &Path, name: &str) -> Nbd {
        let mut s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
        s.write_all(&3u32.to_be_bytes()).unwrap(); // FIXED_NEWSTYLE | NO_ZEROES
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes()); // no information requests
        let mut opt = b"IHAVEOPT".to_vec();
        opt.extend_from_slice(&7u32.to_be_bytes()); // NBD_OPT_GO
        opt.extend_from_slice(&(data.len() as u32).to_be_bytes());
        opt.extend_from_slice(&data);
        s.write_all(&opt).unwrap();
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).unwrap();
            assert_eq!(u64::from_be_bytes(h[..8].try_into().unwrap()), REP_MAGIC);
            let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
            let mut p = vec![0u8; len as usize];
            s.read_exact(&mut p).unwrap();
            match kind {
                1 => break,    // NBD_REP_ACK
                3 => continue, // NBD_REP_INFO
                _ => panic!(
                    "export {name} refused ({kind:#x}): {}",
                    String::from_utf8_lossy(&p)
                ),
            }
        }
        let mut n = Nbd(s);
        // One request answered: the server has registered the connection with its LUN.
        n.read(0, 512).unwrap();
        n
    }

    fn request(&mut self, kind: u16, offset: u64, len: u32, payload: &[u8]) -> std::io::Result<()> {
        let mut r = REQUEST_MAGIC.to_be_bytes().to_vec();
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&7u64.to_be_bytes()); // handle
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(payload);
        self.0.write_all(&r)?;
        let mut h = [0u8; 16];
        self.0.read_exact(&mut h)?;
        assert_eq!(
            u32::from_be_bytes(h[..4].try_into().unwrap()),
            SIMPLE_REPLY_MAGIC
        );
        match u32::from_be_bytes(h[4..8].try_into().unwrap()) {
            0 => Ok(()),
            e => Err(std::io::Error::other(format!("NBD error {e}"))),
        }
    }

    fn read(&mut self, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        self.request(0, offset, len, &[])?;
        let mut data = vec![0u8; len as usize];
        self.0.read_exact(&mut data)?;
        Ok(data)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.request(1, offset, data.len() as u32, data)
    }

    /// True once the server has ended the connection.
    fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.0.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
            }
        }
    }
}

/// One command of a script, with its standard input.
struct Step(Vec<&'static str>, Vec<u8>);

fn step(args: &[&'static str]) -> Step {
    Step(args.to_vec(), Vec::new())
}

/// The same files in `dir`: an image with LUN 1 (4 MiB), and inputs.
fn prepare(dir: &Path) {
    let r = run_in(
        dir,
        &["format", "va.img", "--size", "64M", "--max-luns", "64"],
        &[],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = run_in(
        dir,
        &["lun", "create", "va.img", "1", "--size", "4M"],
        &[],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    std::fs::write(dir.join("d.bin"), pattern(1, 1 << 20)).unwrap();
    std::fs::write(dir.join("odd.bin"), pattern(2, 1000)).unwrap();
    std::fs::write(dir.join("big.bin"), pattern(3, 5 << 20)).unwrap();
    std::fs::write(dir.join("zeros.bin"), vec![0u8; 256 << 10]).unwrap();
    std::fs::write(dir.join("bad.ranges"), "[1, 2]").unwrap();
}

const HOST_B: &str = "50060b0000c26204";
const HOST_D: &str = "50060b0000c26201";

/// Every command, its successes and its refusals.
fn script() -> Vec<Step> {
    let mut s: Vec<Step> = [
        &["info", "va.img"][..],
        &["info", "va.img", "--json"],
        &["lun", "list", "va.img"],
        &["lun", "create", "va.img", "2", "--size", "2M"],
        &["lun", "create", "va.img", "2", "--size", "2M"],
        &["lun", "create", "va.img", "99", "--size", "1M"],
        &["lun", "create", "va.img", "3", "--size", "1000"],
        &["lun", "create", "va.img", "3"],
        &["lun", "create", "va.img", "-1", "--size", "1M"],
        &["lun", "create", "va.img", "3", "--size", "1G"],
        &["lun", "create", "va.img", "3", "--size", "60M"],
        &["lun", "create", "va.img", "5", "--size", "1M", "--json"],
        &["lun", "list", "va.img", "--wait", "30"],
        &["write", "va.img", "2", "d.bin", "--progress"],
        &[
            "write",
            "va.img",
            "2",
            "d.bin",
            "--offset",
            "1M",
            "--json",
            "--no-progress",
        ],
        &["write", "va.img", "1", "d.bin", "--offset", "512K"],
        &["write", "va.img", "1", "odd.bin"],
        &["write", "va.img", "1", "big.bin"],
        &["write", "va.img", "1", "missing.bin"],
        &["write", "va.img", "9", "missing.bin"],
        &["write", "va.img", "1", "d.bin", "--offset", "100"],
        &[
            "read", "va.img", "1", "out1.bin", "--offset", "512K", "--length", "1M",
        ],
        &[
            "read", "va.img", "1", "-", "--offset", "512K", "--length", "64K",
        ],
        &["read", "va.img", "1", "out2.bin"],
        &["read", "va.img", "1", "out3.bin", "--progress"],
        &["--progress", "read", "va.img", "1", "-", "--length", "1M"],
        &[
            "read",
            "va.img",
            "1",
            "out4.bin",
            "--progress",
            "--no-progress",
        ],
        &["read", "va.img", "-1", "-"],
        &["read", "va.img", "1", "va.img"],
        &["read", "va.img", "9", "new.bin"],
        &["read", "va.img", "1", "new.bin", "--offset", "100"],
        &["read", "va.img", "1", "new.bin", "--length", "8M"],
        &[
            "copy",
            "create",
            "va.img",
            "--parent",
            "1",
            "--copy",
            "11",
            "--attached",
        ],
        &[
            "copy",
            "create",
            "va.img",
            "--parent",
            "1",
            "--copy",
            "12",
            "--detached",
        ],
        &[
            "copy",
            "create",
            "va.img",
            "--parent",
            "1",
            "--copy",
            "13",
            "--parent",
            "2",
            "--copy",
            "14",
            "--attached",
        ],
        &[
            "copy",
            "create",
            "va.img",
            "--parent",
            "1",
            "--copy",
            "11",
            "--attached",
        ],
        &["copy", "create", "va.img", "--parent", "1", "--attached"],
        &["copy", "attach", "va.img", "12"],
        &["copy", "attach", "va.img", "13", "14"],
        &["copy", "attach", "va.img", "1"],
        &["copy", "detach", "va.img", "12"],
        &["copy", "restore", "va.img", "11"],
        &["copy", "restore", "va.img", "12"],
        &["copy", "restore", "va.img", "13", "--force"],
        &[
            "copy",
            "create",
            "va.img",
            "--parent",
            "11",
            "--copy",
            "21",
            "--parent",
            "5",
            "--copy",
            "15",
            "--attached",
            "--json",
        ],
        &[
            "copy",
            "create",
            "va.img",
            "--parent",
            "5",
            "--copy",
            "16",
            "--parent",
            "2",
            "--copy",
            "16",
            "--attached",
        ],
        &["copy", "attach", "va.img", "15", "21", "--json"],
        &["copy", "attach", "va.img", "15", "15"],
        &["copy", "detach", "va.img", "21", "--json"],
        &["copy", "restore", "va.img", "15", "--json"],
        &["lun", "list", "va.img", "--tree"],
        &["lun", "list", "va.img", "--tree", "--json"],
        &["lun", "list", "va.img", "--copies-of", "1"],
        &[
            "lun",
            "list",
            "va.img",
            "--copies-of",
            "11",
            "--tree",
            "--json",
        ],
        &["lun", "list", "va.img", "--copies-of", "9"],
        &["lun", "delete", "va.img", "5"],
        &["lun", "delete", "va.img", "5", "--orphan-copies", "--json"],
        // Map, diff, discard, zeros and incremental backups.
        &["map", "va.img", "1"],
        &["map", "va.img", "1", "--json"],
        &[
            "map", "va.img", "11", "--offset", "512K", "--length", "1M", "--json",
        ],
        &["map", "va.img", "12"],
        &["map", "va.img", "1", "--offset", "100"],
        &["map", "va.img", "-1"],
        &["write", "va.img", "1", "d.bin", "--offset", "2M"],
        &["diff", "va.img", "1", "11"],
        &["diff", "va.img", "11", "1", "--json"],
        &["diff", "va.img", "1", "2"],
        &["diff", "va.img", "1", "2", "--length", "2M", "--json"],
        &["read", "va.img", "1", "inc.bin", "--changed-since", "11"],
        &["read", "va.img", "1", "-", "--changed-since", "11"],
        &["read", "va.img", "1", "new.bin", "--changed-since", "2"],
        &["read", "va.img", "1", "new.bin", "--changed-since", "12"],
        &["read", "va.img", "1", "va.img", "--changed-since", "11"],
        &[
            "write",
            "va.img",
            "11",
            "inc.bin",
            "--ranges",
            "inc.bin.ranges",
        ],
        &["diff", "va.img", "1", "11", "--json"],
        &[
            "write",
            "va.img",
            "2",
            "inc.bin",
            "--ranges",
            "inc.bin.ranges",
        ],
        &["write", "va.img", "11", "inc.bin", "--ranges", "bad.ranges"],
        &[
            "write",
            "va.img",
            "11",
            "inc.bin",
            "--ranges",
            "missing.ranges",
        ],
        &["write", "va.img", "13", "zeros.bin"],
        &[
            "write",
            "va.img",
            "13",
            "zeros.bin",
            "--offset",
            "1M",
            "--allocate",
        ],
        &["map", "va.img", "13", "--json"],
        &[
            "discard", "va.img", "1", "--offset", "2M", "--length", "64K",
        ],
        &[
            "discard", "va.img", "1", "--offset", "3M", "--length", "64K", "--json",
        ],
        &[
            "discard", "va.img", "1", "--offset", "100", "--length", "512",
        ],
        &["discard", "va.img", "1", "--offset", "0"],
        &["map", "va.img", "1"],
        &["info", "va.img", "--json"],
        &["host", "add", "va.img", HOST_B, "--name", "backup-host"],
        &["host", "add", "va.img", HOST_D],
        &["host", "add", "va.img", HOST_D],
        &[
            "host",
            "add",
            "va.img",
            "0000000000000007",
            "--name",
            "x",
            "--json",
        ],
        &[
            "host",
            "add",
            "va.img",
            "0000000000000008",
            "--name",
            "a-name-that-is-longer-than-fifty-six-bytes-which-is-the-limit",
        ],
        &["host", "remove", "va.img", "0000000000000007", "--json"],
        &["host", "list", "va.img"],
        &["host", "list", "va.img", "--json"],
        &["grant", "va.img", "11", HOST_B, "--access", "read"],
        &["grant", "va.img", "1", HOST_D, "--access", "write"],
        &["grant", "va.img", "1", HOST_D, "--access", "everything"],
        &["grant", "va.img", "2", HOST_D, "--access", "read", "--json"],
        &["revoke", "va.img", "2", HOST_D, "--json"],
        &["security", "enable", "va.img", "--json"],
        &["lun", "list", "va.img", "--as", HOST_B],
        &[
            "read", "va.img", "11", "-", "--as", HOST_B, "--length", "4K",
        ],
        &["write", "va.img", "11", "d.bin", "--as", HOST_B],
        &["read", "va.img", "1", "-", "--as", HOST_B],
        &["map", "va.img", "11", "--as", HOST_B, "--length", "64K"],
        &["map", "va.img", "1", "--as", HOST_B],
        &["diff", "va.img", "11", "1", "--as", HOST_B],
        &[
            "read",
            "va.img",
            "11",
            "new.bin",
            "--changed-since",
            "1",
            "--as",
            HOST_B,
        ],
        &[
            "discard", "va.img", "11", "--offset", "0", "--length", "4K", "--as", HOST_B,
        ],
        &["revoke", "va.img", "11", HOST_B],
        &["revoke", "va.img", "11", HOST_B],
        &["security", "disable", "va.img"],
        &["lun", "offline", "va.img", "2", "--json"],
        &["read", "va.img", "2", "-"],
        &["lun", "online", "va.img", "2", "--json"],
        &["lun", "delete", "va.img", "1"],
        &["lun", "delete", "va.img", "14", "--force"],
        &["lun", "delete", "va.img", "1", "--orphan-copies"],
        &["lun", "offline", "va.img", "2", "--force"],
        &["copy", "detach", "va.img", "12", "--force"],
        &["copy", "attach", "va.img", "12", "--force"],
        &["host", "remove", "va.img", HOST_D],
        &["host", "remove", "va.img", HOST_D],
        &["lun", "list", "va.img"],
        &["lun", "list", "va.img", "--json"],
        &["check", "va.img"],
        &["check", "va.img", "--json"],
        &["scrub", "va.img"],
        &["scrub", "va.img", "--json", "--progress"],
        &["scrub", "va.img", "--allow-rollback"],
        &["scrub", "va.img", "--metadata-copies", "1"],
        &["--allow-rollback", "check", "va.img"],
        &["info", "va.img"],
        &["info", "va.img", "--json"],
    ]
    .iter()
    .map(|a| step(a))
    .collect();
    // Standard input: whole sectors, then a length that is not.
    s.insert(
        14,
        Step(
            vec!["write", "va.img", "2", "-", "--offset", "4K"],
            pattern(4, 8192),
        ),
    );
    s.insert(
        15,
        Step(vec!["write", "va.img", "2", "-"], pattern(5, 1000)),
    );
    s.insert(
        16,
        Step(
            vec!["write", "va.img", "2", "-", "--progress", "--json"],
            pattern(5, 4096),
        ),
    );
    s.insert(
        17,
        Step(
            vec!["read", "va.img", "2", "-", "--length", "16K"],
            Vec::new(),
        ),
    );
    // The ranges of an incremental applied from stdin: whole, then cut short.
    let at = s
        .iter()
        .position(|Step(a, _)| a[..] == ["diff", "va.img", "1", "11", "--json"])
        .expect("the script has the diff");
    s.insert(
        at + 1,
        Step(
            vec!["write", "va.img", "13", "-", "--ranges", "inc.bin.ranges"],
            pattern(6, 4 << 20),
        ),
    );
    s.insert(
        at + 2,
        Step(
            vec!["write", "va.img", "13", "-", "--ranges", "inc.bin.ranges"],
            pattern(6, 2 << 20),
        ),
    );
    s
}

/// The image file's disk usage may differ (where pages land), the rest may not.
fn masked(args: &[&str], out: &str) -> String {
    if args[0] != "info" {
        return out.to_string();
    }
    out.lines()
        .map(|l| {
            if l.contains("image_allocated_bytes") {
                "  \"image_allocated_bytes\": _,".to_string()
            } else if l.starts_with("image:") {
                l.split(", ").next().unwrap_or(l).to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_command_prints_and_exits_the_same_on_a_served_image() {
    let d = Dir::new("serve-same");
    let (cold, live) = (d.0.join("cold"), d.0.join("live"));
    for dir in [&cold, &live] {
        std::fs::create_dir_all(dir).unwrap();
        prepare(dir);
    }
    let server = Server::start(&live, "va.img", &[], "va.img.ctl");
    let mut forwarded = 0;
    for Step(args, stdin) in script() {
        let c = run_in(&cold, &args, &stdin, &[]);
        let l = run_in(&live, &args, &stdin, &[]);
        assert_eq!(
            (c.code, masked(&args, &c.out()), &c.stderr),
            (l.code, masked(&args, &l.out()), &l.stderr),
            "lunsnap {args:?}: cold (left) and served (right) differ"
        );
        assert!(!c.stderr.contains("image in use"), "{args:?}: {c:?}");
        if c.code != 2 {
            forwarded += 1;
        }
    }
    // Each command that got past clap ran in the server (its log has one line each).
    let log = server.log();
    assert_eq!(log.matches("control: lunsnap").count(), forwarded, "{log}");
    server.stop();
    // Files read through the server are the cold command's, and failures left none.
    for f in [
        "out1.bin",
        "out2.bin",
        "out3.bin",
        "out4.bin",
        "inc.bin",
        "inc.bin.ranges",
    ] {
        assert_eq!(
            read(&cold.join(f).to_string_lossy()),
            read(&live.join(f).to_string_lossy()),
            "{f}"
        );
    }
    assert!(!live.join("new.bin").exists() && !cold.join("new.bin").exists());
    // Written sparse where the LUN reads zeros: 1 MiB of data in a 4 MiB file.
    let used =
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(live.join("out2.bin")).unwrap())
            * 512;
    assert!(used <= 1 << 20, "out2.bin occupies {used} bytes");
    // An incremental holds only its ranges.
    let used =
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(live.join("inc.bin")).unwrap())
            * 512;
    assert!(used <= 1 << 20, "inc.bin occupies {used} bytes");
    // The images hold the same thing, and both are clean.
    for args in [
        &["lun", "list", "va.img", "--json"][..],
        &["check", "va.img"],
    ] {
        let (c, l) = (run_in(&cold, args, &[], &[]), run_in(&live, args, &[], &[]));
        assert_eq!((c.code, c.out()), (l.code, l.out()), "{args:?}");
        assert_eq!(c.code, 0, "{c:?}");
    }
    let lun = |dir: &Path, n: &str| run_in(dir, &["read", "va.img", n, "-"], &[], &[]).stdout;
    for n in ["2", "11", "12", "13"] {
        assert_eq!(lun(&cold, n), lun(&live, n), "LUN {n}");
    }
}

/// `lun list --json` of the served image.
fn luns(dir: &Path) -> String {
    let r = run_in(dir, &["lun", "list", "va.img", "--json"], &[], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    r.out()
}

/// `args` is refused while `client` has a LUN open, changing nothing; with `--force`
/// it succeeds and ends the client's connection.
fn refused_then_forced(dir: &Path, client: &mut Nbd, args: &[&str], lun: &str) {
    let before = luns(dir);
    let r = run_in(dir, args, &[], &[]);
    assert_fails(
        &r,
        args,
        &format!("LUN {lun} is open over NBD by connection"),
    );
    assert!(r.stderr.contains("--force"), "{r:?}");
    assert_eq!(luns(dir), before, "{args:?} changed the image");
    assert!(client.read(0, 512).is_ok(), "{args:?} ended the client");
    let mut forced = args.to_vec();
    forced.push("--force");
    let r = run_in(dir, &forced, &[], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.is_empty(), "{r:?}");
    let ended: Vec<&str> = r
        .stdout
        .split(|&b| b == b'\n')
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    assert_eq!(ended.len(), 1, "{r:?}");
    assert!(
        ended[0].starts_with("ended connection") && ended[0].contains(&format!("LUN {lun})")),
        "{r:?}"
    );
    assert!(
        client.is_closed(),
        "{forced:?}: the client's connection is still open"
    );
}

#[test]
fn changes_under_connected_clients_are_refused_or_forced() {
    let d = Dir::new("serve-force");
    let dir = &d.0;
    prepare(dir);
    for args in [
        &["lun", "create", "va.img", "3", "--size", "1M"][..],
        &[
            "copy",
            "create",
            "va.img",
            "--parent",
            "1",
            "--copy",
            "11",
            "--parent",
            "1",
            "--copy",
            "12",
            "--parent",
            "1",
            "--copy",
            "13",
            "--attached",
        ],
    ] {
        assert_eq!(run_in(dir, args, &[], &[]).code, 0);
    }
    let server = Server::start(dir, "va.img", &[], "va.img.ctl");
    let sock = server.nbd("va.img");

    let mut c = Nbd::open(&sock, "1");
    refused_then_forced(dir, &mut c, &["copy", "restore", "va.img", "11"], "1");
    let mut c = Nbd::open(&sock, "12");
    refused_then_forced(dir, &mut c, &["copy", "detach", "va.img", "12"], "12");
    let mut c = Nbd::open(&sock, "13");
    refused_then_forced(dir, &mut c, &["copy", "attach", "va.img", "11", "13"], "13");
    let mut c = Nbd::open(&sock, "3");
    refused_then_forced(dir, &mut c, &["lun", "delete", "va.img", "3"], "3");
    // A client of another LUN is not concerned: LUN 11 goes offline under LUN 1's client.
    let mut other = Nbd::open(&sock, "1");
    let mut c = Nbd::open(&sock, "11");
    refused_then_forced(dir, &mut c, &["lun", "offline", "va.img", "11"], "11");
    assert!(other.read(0, 512).is_ok());
    // Two clients of one LUN are both named, and both ended; an acknowledged write
    // stays.
    let mut second = Nbd::open(&sock, "1");
    second.write(8192, &pattern(9, 4096)).unwrap();
    let r = run_in(dir, &["lun", "offline", "va.img", "1"], &[], &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr.matches("(admin, LUN 1)").count(), 2, "{r:?}");
    let r = run_in(dir, &["lun", "offline", "va.img", "1", "--force"], &[], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.out().matches("ended connection").count(), 2, "{r:?}");
    assert!(other.is_closed() && second.is_closed());
    let r = run_in(dir, &["lun", "online", "va.img", "1"], &[], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    server.stop();

    let r = run_in(
        dir,
        &[
            "read", "va.img", "1", "-", "--offset", "8192", "--length", "4096",
        ],
        &[],
        &[],
    );
    assert!(
        r.stdout == pattern(9, 4096),
        "the client's acknowledged write was lost"
    );
    let v = json(&luns(dir));
    let find = |n: u64| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|l| l["lun"] == n)
            .cloned()
    };
    assert!(find(3).is_none());
    assert_eq!(find(12).unwrap()["attached"], false);
    assert_eq!(find(11).unwrap()["online"], false);
    // On a cold image --force changes nothing.
    for args in [
        &["copy", "restore", "va.img", "13", "--force"][..],
        &["copy", "attach", "va.img", "12", "--force"],
        &["copy", "detach", "va.img", "12", "--force"],
        &["lun", "offline", "va.img", "13", "--force"],
        &["lun", "delete", "va.img", "13", "--force"],
    ] {
        let r = run_in(dir, args, &[], &[]);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        assert!(
            r.stderr.is_empty() && !r.out().contains("ended"),
            "{args:?}: {r:?}"
        );
    }
}

#[test]
fn the_control_socket_is_found_refuses_what_cannot_run_and_says_what_was_tried() {
    let d = Dir::new("serve-ctl");
    let dir = &d.0;
    prepare(dir);
    std::fs::create_dir_all(dir.join("run")).unwrap();
    let server = Server::start(dir, "va.img", &["--control", "run/va.ctl"], "run/va.ctl");
    // The default socket is not there: the lock holder is named, and the socket tried.
    let r = run_in(dir, &["info", "va.img"], &[], &[]);
    assert_fails(&r, &["info"], "image in use");
    assert!(r.stderr.contains("va.img.ctl"), "{r:?}");
    // --control, before or after the command, and $LUNSNAP_CONTROL find it.
    for (args, env) in [
        (&["--control", "run/va.ctl", "info", "va.img"][..], &[][..]),
        (&["info", "va.img", "--control", "run/va.ctl"], &[]),
        (&["info", "va.img"], &[("LUNSNAP_CONTROL", "run/va.ctl")]),
    ] {
        let r = run_in(dir, args, &[], env);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        assert!(r.out().contains("generation:"), "{r:?}");
    }
    let env = [("LUNSNAP_CONTROL", "run/va.ctl")];
    // Format, serve and another image are refused by the server, with exit status 1.
    let r = run_in(
        dir,
        &["format", "va.img", "--size", "16M", "--force"],
        &[],
        &env,
    );
    assert_fails(&r, &["format"], "format cannot run on a served image");
    let r = run_in(dir, &["serve", "va.img"], &[], &env);
    assert_fails(&r, &["serve"], "is already served");
    let r = run_in(dir, &["info", "other.img"], &[], &env);
    assert_fails(&r, &["info other"], "cannot open other.img"); // cold: not locked
    std::fs::copy(dir.join("va.img"), dir.join("other.img")).unwrap();
    let holder = std::fs::File::open(dir.join("other.img")).unwrap();
    holder.try_lock().unwrap();
    let r = run_in(dir, &["info", "other.img"], &[], &env);
    assert_fails(&r, &["info other"], "is not the image this server serves");
    drop(holder);
    // Usage errors stay local (exit 2), and the served image is intact.
    let r = run_in(dir, &["lun", "create", "va.img", "5"], &[], &env);
    assert_eq!(r.code, 2, "{r:?}");
    // Standard input streams through; a write through a relative path from elsewhere.
    let r = run_in(
        &dir.join("run"),
        &["write", "../va.img", "1", "-", "--control", "va.ctl"],
        &pattern(7, 64 << 10),
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = run_in(
        dir,
        &["read", "va.img", "1", "-", "--length", "64K"],
        &[],
        &env,
    );
    assert_eq!(r.stdout, pattern(7, 64 << 10));
    server.stop();
    // Once the server is gone, the cold image has it all.
    assert!(!dir.join("run/va.ctl").exists());
    let r = run_in(
        dir,
        &["read", "va.img", "1", "-", "--length", "64K"],
        &[],
        &[],
    );
    assert_eq!(r.stdout, pattern(7, 64 << 10));
    ok(&["check", &dir.join("va.img").to_string_lossy()]);
}

#[test]
fn a_served_image_keeps_the_shell_conventions() {
    let d = Dir::new("serve-shell");
    let dir = &d.0;
    prepare(dir);
    let r = run_in(
        dir,
        &["write", "va.img", "1", "big.bin", "--offset", "0"],
        &[],
        &[],
    );
    assert_eq!(r.code, 1, "{r:?}"); // 5 MiB does not fit in LUN 1
    let r = run_in(dir, &["write", "va.img", "1", "d.bin"], &[], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let server = Server::start(dir, "va.img", &[], "va.img.ctl");
    // A closed pipe ends a forwarded read quietly: `lunsnap read va.img 1 - | head -c 100`.
    let mut child = Command::new(bin())
        .current_dir(dir)
        .args(["read", "va.img", "1", "-"])
        .env_remove("LUNSNAP_CONTROL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(&head[..], &pattern(1, 100)[..]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    // --wait does not wait for a served image: the server runs the command at once.
    let t = Instant::now();
    let r = run_in(
        dir,
        &[
            "lun", "create", "va.img", "2", "--size", "1M", "--wait", "60",
        ],
        &[],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // For a user on a terminal, the server draws the progress on one line, redrawn.
    let r = run_in(
        dir,
        &[
            "read",
            "va.img",
            "1",
            "out.bin",
            "--progress",
            "--progress-tty",
        ],
        &[],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.starts_with('\r') && r.stderr.ends_with('\n') && r.stderr.lines().count() == 1,
        "{r:?}"
    );
    assert!(
        r.stderr.contains("lunsnap: read 4 MiB of 4 MiB (100%)"),
        "{r:?}"
    );
    // Short transfers draw nothing unless --progress.
    let r = run_in(
        dir,
        &["read", "va.img", "1", "out.bin", "--progress-tty"],
        &[],
        &[],
    );
    assert!(r.code == 0 && r.stderr.is_empty(), "{r:?}");
    // A usage error exits 2 without reaching the server.
    let r = run_in(dir, &["copy", "attach", "va.img", "1", "1"], &[], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    server.stop();
}
