//! Registry scale run, printed as figures: text import, snapshot load, resident memory,
//! membership, a full check with a registry hit, and a version swap under concurrent checks.
//!
//!     PREFLIGHT_REGISTRY_NUMBERS=258000000 cargo bench --bench registry_scale
//!
//! Default 10,000,000 numbers; `cargo test` runs it with 200,000 as a smoke test.
#[path = "procs.rs"]
mod procs;

use preflight::clock::SystemClock;
use preflight::config::Config;
use preflight::engine::{Arg, CheckRequest};
use preflight::model::{Channel, Purpose, Reason};
use preflight::registry::generate::{Generator, SplitMix};
use preflight::registry::{ImportMode, ImportOptions, ImportReport, Registries};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn rss_bytes() -> u64 {
    procs::rss_kb(std::process::id()).map_or(0, |kb| kb * 1024)
}

/// The process's peak resident memory so far.
fn peak_rss_bytes() -> u64 {
    procs::status_kb(std::process::id(), "VmHWM:").map_or(0, |kb| kb * 1024)
}

/// Imports one file into FEDERAL, failing the run on any error.
fn import(reg: &Registries, mode: ImportMode, name: &str, file: &Path, now: i64) -> ImportReport {
    let opts = ImportOptions {
        max_reject_fraction: 0.001,
        now,
    };
    reg.import(
        "FEDERAL",
        mode,
        &[(name.into(), file.to_path_buf())],
        &opts,
        &|_| {},
    )
    .unwrap()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn mb(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not: then a quick smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n: u64 = if smoke {
        200_000
    } else {
        std::env::var("PREFLIGHT_REGISTRY_NUMBERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000_000)
    };
    let work = tempfile::tempdir().unwrap();
    let text = work.path().join("federal.txt");
    let t = Instant::now();
    {
        let mut w =
            std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&text).unwrap());
        Generator::new(2026).write(n, false, &mut w).unwrap();
        std::io::Write::flush(&mut w).unwrap();
    }
    let bytes = std::fs::metadata(&text).unwrap().len();
    println!(
        "generated {n} numbers ({:.0} MB of text) in {:.1} s",
        mb(bytes),
        t.elapsed().as_secs_f64()
    );

    // Text import: parse, checksum, sort, build, write the snapshot.
    let data = work.path().join("data");
    let registries_dir = data.join("registries");
    let t = Instant::now();
    {
        let reg = Registries::open(&registries_dir).unwrap();
        let r = import(&reg, ImportMode::Full, "federal.txt", &text, 0);
        assert_eq!(r.info.count, n);
    }
    println!(
        "text import: {:.1} s ({:.0} MB/s)",
        t.elapsed().as_secs_f64(),
        mb(bytes) / t.elapsed().as_secs_f64()
    );
    println!(
        "peak resident memory through the import: {:.0} MB",
        mb(peak_rss_bytes())
    );

    // Snapshot load, through the same start-up path the service uses.
    let before = rss_bytes();
    let t = Instant::now();
    let config = Config {
        data_dir: data.clone(),
        ..Config::default()
    };
    let engine = preflight::server::open_embedded(&config, "bench", Arc::new(SystemClock)).unwrap();
    let load = t.elapsed();
    let set = engine.registries().get("FEDERAL").unwrap();
    println!(
        "snapshot load (service start): {:.2} s; set holds {:.1} MB ({:.2} bits/number); resident growth {:.1} MB",
        load.as_secs_f64(),
        mb(set.heap_bytes() as u64),
        set.heap_bytes() as f64 * 8.0 / n as f64,
        mb(rss_bytes().saturating_sub(before))
    );

    let huge = std::fs::read_to_string("/proc/self/smaps_rollup")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        .unwrap_or_default();
    println!("transparent huge pages backing the process: {huge} kB");

    // Probes: half listed numbers (read back from the file), half random NANP numbers.
    let listed: Vec<u64> = std::fs::read_to_string(&text)
        .unwrap()
        .lines()
        .step_by((n / 100_000).max(1) as usize)
        .map(|l| 10_000_000_000 + l.parse::<u64>().unwrap())
        .collect();
    let mut rng = SplitMix(7);
    let probes: Vec<u64> = (0..200_000)
        .map(|i| {
            if i % 2 == 0 {
                listed[i / 2 % listed.len()]
            } else {
                12_000_000_000 + rng.next_u64() % 7_000_000_000
            }
        })
        .collect();
    // Three rounds: memory latency on a shared machine drifts, and the spread says by how much.
    let rounds: Vec<Duration> = (0..3)
        .map(|_| {
            let mut batches = Vec::new();
            let mut hits = 0;
            for chunk in probes.chunks(1000) {
                let t = Instant::now();
                for p in chunk {
                    hits += set.contains(std::hint::black_box(*p)) as usize;
                }
                batches.push(t.elapsed() / chunk.len() as u32);
            }
            batches.sort();
            assert!(hits >= probes.len() / 2);
            pct(&batches, 0.5)
        })
        .collect();
    println!(
        "membership: median {:?} per query (batches of 1,000, half hits; rounds {:?})",
        rounds[1], rounds
    );
    let mut batched = Vec::new();
    let mut answers = vec![false; 1000];
    for chunk in probes.chunks(1000) {
        let t = Instant::now();
        set.contains_many(chunk, &mut answers[..chunk.len()]);
        batched.push(t.elapsed() / chunk.len() as u32);
        std::hint::black_box(&answers);
    }
    batched.sort();
    println!(
        "membership, batched lookups (contains_many): median {:?} per query",
        pct(&batched, 0.5)
    );

    // A full check that hits the registry.
    // The request texts sit in one buffer, in the order they are checked, as a decoded
    // batch does; the numbers themselves are spread over the whole list.
    let text_buf: String = listed
        .iter()
        .take(100_000)
        .map(|p| format!("+{p}"))
        .collect();
    let contacts: Vec<&str> = (0..text_buf.len() / 12)
        .map(|i| &text_buf[i * 12..(i + 1) * 12])
        .collect();
    let reqs: Vec<CheckRequest<'_>> = contacts
        .iter()
        .map(|c| CheckRequest {
            contact: c,
            channel: Arg::Set(Channel::Voice),
            purpose: Arg::Set(Purpose::Marketing),
            ..Default::default()
        })
        .collect();
    // Warm-up: the first number of each (area code, exchange) block asks libphonenumber
    // (~15 us); later ones use the cached answer.
    for r in &reqs {
        engine.check(r).unwrap();
    }
    let mut batches = Vec::new();
    for chunk in reqs.chunks(1000) {
        let t = Instant::now();
        for r in chunk {
            let d = engine.check(r).unwrap();
            assert!(d.decision.reasons.contains(Reason::DncFederal));
        }
        batches.push(t.elapsed() / chunk.len() as u32);
    }
    batches.sort();
    println!(
        "check with a registry hit: median {:?} per check",
        pct(&batches, 0.5)
    );
    let mut batches = Vec::new();
    for chunk in reqs.chunks(1000) {
        let t = Instant::now();
        let outs = engine.check_batch(chunk).unwrap();
        batches.push(t.elapsed() / chunk.len() as u32);
        assert!(
            outs.iter()
                .all(|o| o.decision.reasons.contains(Reason::DncFederal))
        );
    }
    batches.sort();
    println!(
        "check_batch with registry hits (loads of 16 checks overlapped): median {:?} per check",
        pct(&batches, 0.5)
    );

    // A swap under concurrent checks: steady state, then while a change file is imported.
    let changes = work.path().join("changes.txt");
    std::fs::write(&changes, "2025550197,A\n2025550198,A\n").unwrap();
    let measure = |stop: &AtomicBool| -> (Vec<Duration>, usize) {
        let mut lat = Vec::new();
        let mut failures = 0;
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            match engine.check(&reqs[i % reqs.len()]) {
                Ok(d) if d.decision.reasons.contains(Reason::DncFederal) => {}
                _ => failures += 1,
            }
            lat.push(t.elapsed());
            i += 1;
        }
        lat.sort();
        (lat, failures)
    };
    let stop = AtomicBool::new(false);
    let (steady, steady_fail) = std::thread::scope(|s| {
        let h = s.spawn(|| measure(&stop));
        std::thread::sleep(Duration::from_secs(if smoke { 1 } else { 3 }));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap()
    });
    let stop = AtomicBool::new(false);
    let (swap, swap_fail, import_time) = std::thread::scope(|s| {
        let h = s.spawn(|| measure(&stop));
        let t = Instant::now();
        let r = import(
            engine.registries(),
            ImportMode::Changes,
            "changes.txt",
            &changes,
            1,
        );
        assert_eq!(r.info.version, 2);
        let took = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (lat, fail) = h.join().unwrap();
        (lat, fail, took)
    });
    println!(
        "steady: {} checks, p50 {:?} p99 {:?}; during a {:.1} s change import and swap: {} checks, p50 {:?} p99 {:?}; failed checks {}",
        steady.len(),
        pct(&steady, 0.5),
        pct(&steady, 0.99),
        import_time.as_secs_f64(),
        swap.len(),
        pct(&swap, 0.5),
        pct(&swap, 0.99),
        steady_fail + swap_fail
    );
    assert_eq!(steady_fail + swap_fail, 0, "a check failed during the swap");

    // The monthly case: the whole file again, as a new version, against the current one.
    let t = Instant::now();
    let r = import(
        engine.registries(),
        ImportMode::Full,
        "federal.txt",
        &text,
        2,
    );
    // The change file's two additions are the only numbers it lacks.
    assert_eq!((r.info.count, r.info.added), (n, 0));
    assert!(r.info.removed <= 2);
    println!(
        "full re-import of the same file as version {}: {:.1} s ({} added, {} removed)",
        r.info.version,
        t.elapsed().as_secs_f64(),
        r.info.added,
        r.info.removed
    );
}
