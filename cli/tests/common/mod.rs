//! Helpers for the integration tests: run the built `lunsnap` binary, temp dirs.
#![allow(dead_code)]

mod image;
mod served;

#[allow(unused_imports)]
pub use image::*;
#[allow(unused_imports)]
pub use served::Server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A unique directory under the system's temp dir, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("lunsnap-cli-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    /// A path in the directory, as a string argument.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lunsnap")
}

/// Runs `lunsnap args` with `stdin` as its standard input.
pub fn run_with(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Feed stdin from a thread so a child that stops reading cannot block the test.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    Run {
        // A signal (no code) counts as a crash.
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `lunsnap args` with an empty standard input.
pub fn run(args: &[&str]) -> Run {
    run_with(args, &[])
}

/// Runs `lunsnap args`, which must succeed with nothing on stderr; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let r = run(args);
    assert_eq!(r.code, 0, "lunsnap {args:?} failed: {r:?}");
    assert!(
        r.stderr.is_empty(),
        "lunsnap {args:?} wrote to stderr: {r:?}"
    );
    r.out()
}

/// Runs `lunsnap args`, which must fail with exit status 1 and a single stderr line
/// `lunsnap: ...` that contains `needle`; returns the run.
pub fn fails(args: &[&str], needle: &str) -> Run {
    let r = run(args);
    assert_fails(&r, args, needle);
    r
}

pub fn assert_fails(r: &Run, args: &[&str], needle: &str) {
    assert_eq!(r.code, 1, "lunsnap {args:?}: expected exit 1: {r:?}");
    assert!(
        r.stderr.starts_with("lunsnap: ")
            && r.stderr.ends_with('\n')
            && r.stderr.lines().count() == 1,
        "lunsnap {args:?}: stderr is not one line: {:?}",
        r.stderr
    );
    assert!(
        r.stderr.contains(needle),
        "lunsnap {args:?}: stderr {:?} lacks {needle:?}",
        r.stderr
    );
}

/// Runs `lunsnap args`, which must be refused as a usage error (exit status 2).
pub fn usage_error(args: &[&str]) -> Run {
    let r = run(args);
    assert_eq!(r.code, 2, "lunsnap {args:?}: expected exit 2: {r:?}");
    assert!(!r.stderr.is_empty(), "lunsnap {args:?}: no message");
    r
}

/// Runs `lunsnap args`, which must be refused as a usage error (exit status 2) whose
/// message contains `needle`.
pub fn usage_says(args: &[&str], needle: &str) -> Run {
    let r = usage_error(args);
    assert!(
        r.stderr.contains(needle),
        "lunsnap {args:?}: stderr {:?} lacks {needle:?}",
        r.stderr
    );
    r
}

/// A small image with LUN 1 (4 MiB): 16 MiB, 16 LUN numbers.
pub fn small_image(dir: &Dir) -> String {
    let img = dir.file("small.img");
    ok(&["format", &img, "--size", "16M", "--max-luns", "16"]);
    ok(&["lun", "create", &img, "1", "--size", "4M"]);
    img
}

/// Deterministic non-zero bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
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

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(Path::new(path)).unwrap()
}

/// Runs `lunsnap args` in directory `dir`, with `stdin` as its standard input and the
/// extra environment `env`.
pub fn run_in(dir: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .args(args)
        .env_remove("LUNSNAP_CONTROL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
