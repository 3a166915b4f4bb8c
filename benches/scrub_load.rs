//! End-to-end `preflight scrub`: a CSV of N rows (default 10,000,000) through a running
//! `preflight serve` with a 1,000,000-number FEDERAL list and 100,000 consents, both as
//! their own processes on this machine. Reports rows/s and the scrub's peak resident memory.
//!
//!     cargo bench --bench scrub_load
//!     PREFLIGHT_SCRUB_ROWS=1000000 cargo bench --bench scrub_load
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "procs.rs"]
mod procs;

/// The i-th lead's number: NANP area codes the generator also uses, so some are on the list.
fn phone(i: u64) -> String {
    const AREAS: [u64; 8] = [202, 212, 305, 415, 512, 617, 713, 917];
    let area = AREAS[(i % 8) as usize];
    let rest = i / 8;
    format!(
        "({area}) {}-{:04}",
        200 + (rest / 10_000) % 700,
        rest % 10_000
    )
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rows: u64 = if smoke {
        20_000
    } else {
        std::env::var("PREFLIGHT_SCRUB_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000_000)
    };
    let bin = env!("CARGO_BIN_EXE_preflight");
    let dir = tempfile::tempdir().unwrap();

    let csv = dir.path().join("leads.csv");
    let t = Instant::now();
    {
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&csv).unwrap());
        writeln!(w, "lead_id,first_name,last_name,phone,campaign").unwrap();
        for i in 0..rows {
            writeln!(w, "{i},Jane,\"Doe, Jr.\",{},spring-promo", phone(i)).unwrap();
        }
    }
    let csv_bytes = std::fs::metadata(&csv).unwrap().len();
    eprintln!(
        "wrote {rows} rows ({:.0} MB) in {:.1} s",
        csv_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let (_server, port) = procs::start_preflight(&dir.path().join("data"), &[]);
    let url = format!("http://127.0.0.1:{port}");
    // A FEDERAL list and some consents, so decisions are a realistic mix.
    let registry = dir.path().join("federal.txt");
    let ok = |o: std::process::Output| assert!(o.status.success(), "{o:?}");
    ok(Command::new(bin)
        .args(["dnc", "generate", "--count", "1000000", "--out"])
        .arg(&registry)
        .output()
        .unwrap());
    ok(Command::new(bin)
        .args(["dnc", "import", "--list", "FEDERAL", "--full"])
        .arg(&registry)
        .args(["--server", &url])
        .output()
        .unwrap());
    let consents = if smoke { 20 } else { 100 };
    for i in 0..consents {
        ok(Command::new(bin)
            .args(["consent", "grant", &phone(i * 97)])
            .args([
                "--channel",
                "voice",
                "--purpose",
                "marketing",
                "--server",
                &url,
            ])
            .output()
            .unwrap());
    }

    let out = dir.path().join("scrubbed.csv");
    let started = Instant::now();
    let mut scrub = Command::new(bin)
        .args(["scrub", "--in"])
        .arg(&csv)
        .arg("--out")
        .arg(&out)
        .args([
            "--channel",
            "voice",
            "--purpose",
            "marketing",
            "--server",
            &url,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = scrub.id();
    let mut peak = 0;
    while scrub.try_wait().unwrap().is_none() {
        peak = peak.max(procs::rss_kb(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let output = scrub.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{summary}");
    assert!(
        summary.contains(&format!("scrubbed {rows} rows")),
        "{summary}"
    );
    let out_bytes = std::fs::metadata(&out).unwrap().len();
    println!(
        "scrub: {rows} rows ({:.0} MB in, {:.0} MB out) in {secs:.2} s = {:.0} rows/s end to end; scrub peak RSS {:.1} MB{}",
        csv_bytes as f64 / 1e6,
        out_bytes as f64 / 1e6,
        rows as f64 / secs,
        peak as f64 / 1024.0,
        if smoke { " (smoke run)" } else { "" }
    );
    print!("{summary}");
}
