//! Load generator: Check, CheckBatch and CheckStream against a running `preflight` process
//! over loopback, and, in the same run on the same machine, Redis's own pipelined
//! SISMEMBER and GET round trip as the baseline. Both hold the same N registry numbers
//! (preflight as its FEDERAL list, Redis as one set), and both are asked the same numbers,
//! half of them members.
//!
//!     cargo bench --bench loadgen                                  # N = 1,000,000, 10 s a phase
//!     PREFLIGHT_LOADGEN_NUMBERS=258000000 PREFLIGHT_LOADGEN_SECS=20 cargo bench --bench loadgen
//!
//! Knobs: PREFLIGHT_LOADGEN_CONCURRENCY (16), PREFLIGHT_LOADGEN_THREADS (the generator's
//! workers, 2), PREFLIGHT_SERVER_THREADS (the service's, default one per core),
//! PREFLIGHT_LOADGEN_ONLY (pipe, get, unary, batch or stream: one phase, for profiling).
//! Needs `redis-server` on PATH (scripts/test.sh installs it from Debian's packages).
use preflight::proto as pb;
use preflight::registry::generate::Generator;
use redis::AsyncCommands;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "procs.rs"]
mod procs;

use procs::env_or;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[derive(Clone)]
struct Latency {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

/// Runs `concurrency` tasks issuing `op` back to back for `secs`; latency of each call.
async fn closed_loop<F, Fut>(concurrency: usize, secs: f64, op: F) -> Latency
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = op.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut i = t as u64 * 1_000_003;
                while !stop.load(Ordering::Relaxed) {
                    let s = Instant::now();
                    op(i).await;
                    lat.push(s.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Latency {
        ops_per_sec: all.len() as f64 / elapsed,
        p50: pct(&all, 0.5),
        p99: pct(&all, 0.99),
        p999: pct(&all, 0.999),
    }
}

/// Items per second when `concurrency` tasks each run `op` (which handles `items` items).
async fn throughput<F, Fut>(concurrency: usize, secs: f64, items: u64, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = closed_loop(concurrency, secs, op).await;
    l.ops_per_sec * items as f64
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = if smoke {
        20_000
    } else {
        env_or("PREFLIGHT_LOADGEN_NUMBERS", 1_000_000)
    };
    let secs = if smoke {
        0.3
    } else {
        env_or("PREFLIGHT_LOADGEN_SECS", 10) as f64
    };
    let concurrency = env_or("PREFLIGHT_LOADGEN_CONCURRENCY", 16) as usize;
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_preflight");

    // The same numbers for both: a registry-format file.
    let file = dir.path().join("federal.txt");
    Generator::new(7)
        .write(
            n,
            false,
            &mut std::io::BufWriter::new(std::fs::File::create(&file).unwrap()),
        )
        .unwrap();
    let numbers: Vec<u64> = std::io::BufReader::new(std::fs::File::open(&file).unwrap())
        .lines()
        .step_by((n / 100_000).max(1) as usize)
        .map(|l| l.unwrap().trim().parse::<u64>().unwrap())
        .collect();
    // Half members, half numbers one past a member (almost never members themselves).
    let queries: Arc<Vec<u64>> = Arc::new(
        numbers
            .iter()
            .enumerate()
            .map(|(i, x)| if i % 2 == 0 { *x } else { x + 1 })
            .collect(),
    );

    // The generator's own workers (PREFLIGHT_LOADGEN_THREADS, default 2): one is too few
    // to build and decode batches fast enough; on a 2-core machine more only fight the
    // service and Redis for the cores being measured.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_or("PREFLIGHT_LOADGEN_THREADS", 2) as usize)
        .enable_all()
        .build()
        .unwrap();

    // Redis, started here on a free port, nothing persisted.
    let (_redis, rport) = procs::start_redis();
    let redis_url = format!("redis://127.0.0.1:{rport}/");
    let rconn = rt.block_on(async {
        let client = redis::Client::open(redis_url.as_str()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(c) = client.get_multiplexed_async_connection().await {
                break c;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let t = Instant::now();
    rt.block_on(async {
        let mut c = rconn.clone();
        let lines = std::io::BufReader::new(std::fs::File::open(&file).unwrap()).lines();
        let mut chunk = Vec::with_capacity(10_000);
        for l in lines {
            chunk.push(l.unwrap());
            if chunk.len() == 10_000 {
                let _: () = c.sadd("dnc:federal", &chunk).await.unwrap();
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            let _: () = c.sadd("dnc:federal", &chunk).await.unwrap();
        }
        let _: () = c.set("contact:probe", "1").await.unwrap();
    });
    let redis_load = t.elapsed();

    // preflight, as its own process on the embedded store, with the same list imported.
    let (_server, gport) = procs::start_preflight(
        &dir.path().join("data"),
        &[(
            "PREFLIGHT_WORKER_THREADS",
            std::env::var("PREFLIGHT_SERVER_THREADS").unwrap_or_default(),
        )],
    );
    let url = format!("http://127.0.0.1:{gport}");
    let channel = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ch) = tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .tcp_nodelay(true)
                .initial_stream_window_size(preflight::server::STREAM_WINDOW)
                .initial_connection_window_size(preflight::server::CONNECTION_WINDOW)
                .connect()
                .await
            {
                break ch;
            }
            assert!(Instant::now() < deadline, "preflight did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let t = Instant::now();
    let import = Command::new(bin)
        .args(["dnc", "import", "--list", "FEDERAL", "--full"])
        .arg(&file)
        .args(["--server", &url])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(import.status.success(), "{:?}", import);
    let preflight_load = t.elapsed();

    let client = pb::decision_service_client::DecisionServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let req = |q: u64| pb::CheckRequest {
        contact: format!("+1{q}"),
        channel: pb::Channel::Voice as i32,
        purpose: pb::Purpose::Marketing as i32,
        ..Default::default()
    };
    // Correctness before speed: a member is a FEDERAL block, both sides agree.
    rt.block_on(async {
        let mut c = client.clone();
        let mut r = rconn.clone();
        for q in queries.iter().take(200) {
            let resp = c.check(req(*q)).await.unwrap().into_inner();
            let member: bool = r.sismember("dnc:federal", q.to_string()).await.unwrap();
            let hit = resp.reasons.contains(&(pb::Reason::DncFederal as i32));
            assert_eq!(hit, member, "preflight and Redis disagree on {q}");
        }
    });

    const BATCH: u64 = 1_000;
    const PIPE: u64 = 1_000;
    let hits = Arc::new(AtomicU64::new(0));

    // PREFLIGHT_LOADGEN_ONLY=unary (or pipe, get, batch, stream) runs one phase, for profiling.
    let only = std::env::var("PREFLIGHT_LOADGEN_ONLY").unwrap_or_default();
    let run = |phase: &str| only.is_empty() || only == phase;
    let skipped = Latency {
        ops_per_sec: 0.0,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        p999: Duration::ZERO,
    };
    let (redis_pipe, redis_get, grpc_unary, grpc_batch, grpc_stream) = rt.block_on(async {
        // Redis pipelined SISMEMBER: PIPE commands per round trip, `concurrency` pipelines.
        let (c, q) = (rconn.clone(), queries.clone());
        let redis_pipe = if !run("pipe") {
            0.0
        } else {
            throughput(concurrency, secs, PIPE, move |i| {
                let (mut c, q) = (c.clone(), q.clone());
                async move {
                    let mut p = redis::pipe();
                    for k in 0..PIPE {
                        p.sismember("dnc:federal", q[((i * PIPE + k) % q.len() as u64) as usize]);
                    }
                    let _: Vec<bool> = p.query_async(&mut c).await.unwrap();
                }
            })
            .await
        };
        // Redis GET round trip at the same concurrency as unary Check.
        let c = rconn.clone();
        let redis_get = if !run("get") {
            skipped.clone()
        } else {
            closed_loop(concurrency, secs, move |_| {
                let mut c = c.clone();
                async move {
                    let _: Option<String> = c.get("contact:probe").await.unwrap();
                }
            })
            .await
        };
        let (cl, q, h) = (client.clone(), queries.clone(), hits.clone());
        let grpc_unary = if !run("unary") {
            skipped.clone()
        } else {
            closed_loop(concurrency, secs, move |i| {
                let (mut cl, q, h) = (cl.clone(), q.clone(), h.clone());
                async move {
                    let r = cl
                        .check(req(q[(i % q.len() as u64) as usize]))
                        .await
                        .unwrap()
                        .into_inner();
                    if r.verdict == pb::Verdict::Block as i32 {
                        h.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .await
        };
        let (cl, q) = (client.clone(), queries.clone());
        let grpc_batch = if !run("batch") {
            0.0
        } else {
            throughput(concurrency.min(4), secs, BATCH, move |i| {
                let (mut cl, q) = (cl.clone(), q.clone());
                async move {
                    let checks = (0..BATCH)
                        .map(|k| req(q[((i * BATCH + k) % q.len() as u64) as usize]))
                        .collect();
                    let r = cl
                        .check_batch(pb::CheckBatchRequest { checks })
                        .await
                        .unwrap();
                    assert_eq!(r.into_inner().results.len() as u64, BATCH);
                }
            })
            .await
        };
        // CheckStream with as many batches in flight as Redis had pipelines: up to two
        // streams sharing `concurrency` between them.
        let streams = if run("stream") { concurrency.min(2) } else { 0 };
        let per_stream = (concurrency / streams.max(1)).max(1);
        let stop_at = Instant::now() + Duration::from_secs_f64(secs);
        let started = Instant::now();
        let tasks: Vec<_> = (0..streams)
            .map(|s| {
                let (mut cl, q) = (client.clone(), queries.clone());
                tokio::spawn(async move {
                    let (tx, rx) = tokio::sync::mpsc::channel::<pb::CheckBatchRequest>(per_stream);
                    let feeder = tokio::spawn(async move {
                        let mut i = s as u64 * 7_919;
                        while Instant::now() < stop_at {
                            let checks = (0..BATCH)
                                .map(|k| req(q[((i * BATCH + k) % q.len() as u64) as usize]))
                                .collect();
                            if tx.send(pb::CheckBatchRequest { checks }).await.is_err() {
                                break;
                            }
                            i += 1;
                        }
                    });
                    let mut out = cl
                        .check_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                        .await
                        .unwrap()
                        .into_inner();
                    let mut n = 0u64;
                    while let Some(r) = out.message().await.unwrap() {
                        n += r.results.len() as u64;
                    }
                    feeder.await.unwrap();
                    n
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        let grpc_stream = total as f64 / started.elapsed().as_secs_f64();
        (redis_pipe, redis_get, grpc_unary, grpc_batch, grpc_stream)
    });

    println!(
        "loadgen: N = {n} registry numbers, {secs} s a phase, concurrency {concurrency}{}",
        if smoke { " (smoke run)" } else { "" }
    );
    println!(
        "load:  redis SADD {:.1} s   preflight `dnc import` {:.1} s",
        redis_load.as_secs_f64(),
        preflight_load.as_secs_f64()
    );
    println!(
        "redis  SISMEMBER pipelined x{PIPE}        {:>12.0} lookups/s",
        redis_pipe
    );
    println!(
        "redis  GET                    {:>10.0} ops/s   p50 {:>7.1} us  p99 {:>7.1} us  p99.9 {:>7.1} us",
        redis_get.ops_per_sec,
        us(redis_get.p50),
        us(redis_get.p99),
        us(redis_get.p999)
    );
    println!(
        "grpc   Check (unary)          {:>10.0} ops/s   p50 {:>7.1} us  p99 {:>7.1} us  p99.9 {:>7.1} us",
        grpc_unary.ops_per_sec,
        us(grpc_unary.p50),
        us(grpc_unary.p99),
        us(grpc_unary.p999)
    );
    println!(
        "grpc   CheckBatch x{BATCH}         {:>12.0} checks/s",
        grpc_batch
    );
    println!(
        "grpc   CheckStream x{BATCH}        {:>12.0} checks/s",
        grpc_stream
    );
    println!(
        "targets: CheckStream / Redis pipelined SISMEMBER = {:.2}x (>= 2x); unary p99 / Redis GET p99 = {:.2}x (<= 2x)",
        grpc_stream / redis_pipe,
        grpc_unary.p99.as_secs_f64() / redis_get.p99.as_secs_f64().max(1e-9)
    );
    if run("unary") {
        assert!(
            hits.load(Ordering::Relaxed) > 0,
            "no check was a registry hit"
        );
    }
}
