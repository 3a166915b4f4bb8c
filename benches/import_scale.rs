//! Bulk import end to end, as an operator runs it: a CSV of N consent rows (and one of N
//! company DNC rows) written to disk, `preflight consent import` / `preflight dnc add --in`
//! against a `preflight serve` on a fresh embedded store (fsync on every chunk commit),
//! printed as rows a second, service and CLI CPU, and disk bytes a record (change log,
//! audit trail and idempotency records: the whole data directory).
//!
//!     PREFLIGHT_BENCH_ROWS=10000000 cargo bench --bench import_scale
//!
//! `PREFLIGHT_BENCH_DIR` puts the files and the data directory somewhere with room.
//! `cargo test` runs it with 20,000 rows as a smoke test.
#[path = "procs.rs"]
mod procs;
#[path = "support.rs"]
mod support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn write_file(path: &Path, header: &str, n: u64, row: impl Fn(u64) -> String) {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(w, "{header}").unwrap();
    for i in 0..n {
        writeln!(w, "{}", row(i)).unwrap();
    }
    w.flush().unwrap();
}

fn run(label: &str, n: u64, data: &Path, args: &[&str]) {
    let (proc, port) = procs::start_preflight(data, &[]);
    let pid = proc.0.id();
    let before = procs::dir_bytes(data);
    let cpu0 = procs::cpu_secs(pid);
    let server = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(args)
        .args(["--server", &server])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let cpu = procs::cpu_secs(pid) - cpu0;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(proc);
    let disk = procs::dir_bytes(data) - before;
    println!(
        "{label}: {n} rows in {secs:.1} s = {:.0} rows/s end to end; service CPU {:.2} µs a row; \
         disk {:.0} bytes a record (log, audit, idempotency)",
        n as f64 / secs,
        cpu * 1e6 / n as f64,
        disk as f64 / n as f64
    );
    for l in stdout.lines() {
        println!("  {l}");
    }
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = if smoke {
        20_000
    } else {
        procs::env_or("PREFLIGHT_BENCH_ROWS", 10_000_000)
    };
    let work = match std::env::var("PREFLIGHT_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let consents = work.path().join("consents.csv");
    write_file(
        &consents,
        "contact,status,channels,purposes,source,proof,effective_at,campaign_id",
        n,
        |i| {
            format!(
                "+{},granted,sms;voice,marketing,crm-export,https://forms.example.com/{i},2026-03-01T12:00:00Z,spring",
                support::phone(i)
            )
        },
    );
    let dnc = work.path().join("dnc.csv");
    write_file(&dnc, "contact,type,list,expires_at,reason", n, |i| {
        format!(
            "+{},corporate,,,asked not to be called",
            support::phone(n + i)
        )
    });
    println!(
        "import_scale: {n} rows; consent file {:.0} MB, DNC file {:.0} MB",
        std::fs::metadata(&consents).unwrap().len() as f64 / 1_048_576.0,
        std::fs::metadata(&dnc).unwrap().len() as f64 / 1_048_576.0
    );
    let c = consents.to_str().unwrap();
    run(
        "consent import",
        n,
        &work.path().join("data-consent"),
        &["consent", "import", "--in", c, "--import-id", "bench"],
    );
    let d = dnc.to_str().unwrap();
    run(
        "dnc add --in",
        n,
        &work.path().join("data-dnc"),
        &["dnc", "add", "--in", d, "--import-id", "bench"],
    );
}
