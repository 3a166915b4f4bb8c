//! Shared by the benches that run real processes: the `preflight` service on a free port,
//! killed when dropped.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `preflight serve` on a fresh data directory and a free port (no HTTP listener), with
/// `envs`; returns once the gRPC port accepts connections.
pub fn start_preflight(data_dir: &std::path::Path, envs: &[(&str, String)]) -> (Proc, u16) {
    let port = free_port();
    // PREFLIGHT_BENCH_WRAP runs the service under another program, for profiling:
    // PREFLIGHT_BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out".
    let wrap = std::env::var("PREFLIGHT_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(env!("CARGO_BIN_EXE_preflight"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_preflight")),
    };
    let child = cmd
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--http-listen",
            "",
        ])
        .env("RUST_LOG", "error")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .spawn()
        .expect("start preflight");
    let proc = Proc(child);
    // The listener opens once the index is loaded: minutes for a full replay at 10^8.
    let deadline = Instant::now() + Duration::from_secs(1800);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "preflight did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (proc, port)
}

/// A `redis-server` on a free loopback port, nothing persisted; returns once it answers.
pub fn start_redis() -> (Proc, u16) {
    start_redis_with(&[])
}

/// A Redis replica of the one on `master`.
pub fn start_redis_replica(master: u16) -> (Proc, u16) {
    start_redis_with(&["--replicaof", "127.0.0.1", &master.to_string()])
}

fn start_redis_with(extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (scripts/test.sh installs it)");
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (proc, port)
}

/// Resident memory of a process, from /proc.
pub fn rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

/// A kB figure of /proc/<pid>/status, such as `VmRSS:` or `VmHWM:` (the peak).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds (user + system) a process has used, from /proc.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A numeric knob from the environment.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes of every file under `dir`.
/// Disk a directory takes: blocks allocated, as `du` counts them. redb extends its file
/// ahead of use and leaves the extension sparse, so file lengths overstate it.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
