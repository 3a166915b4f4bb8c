//! Load generator: Check, CheckBatch and CheckStream against a running `preflight` process
//! over loopback, and, in the same run on the same machine, Redis's own pipelined
//! SISMEMBER and GET round trip as the baseline. Both hold the same N registry numbers
//! (preflight as its FEDERAL list, Redis as one set), and both are asked the same numbers,
//! half of them members.
//!
//!     cargo bench --bench loadgen                                  # N = 1,000,000, 10 s a phase
//!     PREFLIGHT_LOADGEN_NUMBERS=258000000 PREFLIGHT_LOADGEN_SECS=20 cargo bench --bench loadgen
//!
//! Knobs: PREFLIGHT_LOADGEN_CONCURRENCY (unary calls and GETs in flight, a list: 1,4,16,64),
//! PREFLIGHT_LOADGEN_INFLIGHT (pipelines and stream messages in flight, 16),
//! PREFLIGHT_LOADGEN_THREADS (the generator's workers, 1), PREFLIGHT_SERVER_THREADS (the
//! service's, default one per core), PREFLIGHT_LOADGEN_ONLY (pipe, get, unary, batch,
//! stream; comma-separated: only those phases, for profiling), PREFLIGHT_BENCH_WRAP (run
//! the service under a profiler).
//! Needs `redis-server` on PATH (scripts/test.sh installs it from Debian's packages).
use preflight::proto as pb;
use preflight::registry::generate::Generator;
use redis::AsyncCommands;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "h2grpc.rs"]
mod h2grpc;
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

struct Latency {
    ops: u64,
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

/// Runs `concurrency` tasks issuing `op` back to back for `secs`; latency of each call.
async fn closed_loop<F, Fut>(concurrency: usize, secs: f64, op: F) -> Latency
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
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
                    op(t, i).await;
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
        ops: all.len() as u64,
        ops_per_sec: all.len() as f64 / elapsed,
        p50: pct(&all, 0.5),
        p99: pct(&all, 0.99),
        p999: pct(&all, 0.999),
    }
}

/// CPU microseconds per operation of each process since `before` (their CPU seconds then).
fn per_op(pids: [u32; 3], before: [f64; 3], ops: u64) -> [f64; 3] {
    let after = pids.map(procs::cpu_secs);
    [0, 1, 2].map(|k| (after[k] - before[k]) / ops.max(1) as f64 * 1e6)
}

/// A tonic channel (one HTTP/2 connection) to the service, waiting up to 30 s for it.
async fn channel(url: &str) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(url.to_string())
            .unwrap()
            .tcp_nodelay(true)
            .initial_stream_window_size(preflight::server::STREAM_WINDOW)
            .initial_connection_window_size(preflight::server::CONNECTION_WINDOW)
            .connect()
            .await
        {
            return ch;
        }
        assert!(Instant::now() < deadline, "preflight did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn decision_client(
    ch: tonic::transport::Channel,
) -> pb::decision_service_client::DecisionServiceClient<tonic::transport::Channel> {
    pb::decision_service_client::DecisionServiceClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

fn main() {
    // With no subscriber, every span h2 opens is offered to the `log` crate: a fifth of
    // the client's CPU a call. A subscriber that wants only warnings turns them off.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .init();
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
    // Unary calls and GETs run at each of these concurrencies.
    let sweep: Vec<usize> = std::env::var("PREFLIGHT_LOADGEN_CONCURRENCY")
        .unwrap_or_else(|_| "1,4,16,64".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("PREFLIGHT_LOADGEN_CONCURRENCY: numbers")
        })
        .collect();
    // Pipelines, and stream messages, in flight.
    let concurrency = env_or("PREFLIGHT_LOADGEN_INFLIGHT", 16).max(1) as usize;
    let gen_threads = env_or("PREFLIGHT_LOADGEN_THREADS", 1) as usize;
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

    // The generator's own workers (PREFLIGHT_LOADGEN_THREADS, default 1): Redis answers
    // from one thread and preflight serves one connection on one core, so on two cores the
    // generator gets the other one; a second worker only takes turns with the server.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(gen_threads)
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
    let ch = rt.block_on(channel(&url));
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

    let client = decision_client(ch);
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

    let lean = rt
        .block_on(h2grpc::H2Grpc::connect(
            &format!("127.0.0.1:{gport}"),
            preflight::server::STREAM_WINDOW,
        ))
        .unwrap();

    const BATCH: usize = 1_000;
    const PIPE: usize = 1_000;
    let hits = Arc::new(AtomicU64::new(0));
    // Both sides send requests built before the clock starts (the same numbers, in the
    // same groups of 1,000) and decode every answer: what is timed is the servers.
    let groups: Vec<&[u64]> = queries.chunks(BATCH).collect();
    let pipes: Arc<Vec<redis::Pipeline>> = Arc::new(
        groups
            .iter()
            .map(|g| {
                let mut p = redis::pipe();
                for q in *g {
                    p.sismember("dnc:federal", q);
                }
                p
            })
            .collect(),
    );
    let batches: Vec<pb::CheckBatchRequest> = groups
        .iter()
        .map(|g| pb::CheckBatchRequest {
            checks: g.iter().map(|q| req(*q)).collect(),
        })
        .collect();
    let encoded: Arc<Vec<bytes::Bytes>> = Arc::new(
        batches
            .iter()
            .map(|b| prost::Message::encode_to_vec(b).into())
            .collect(),
    );
    // Answers read in place unless PREFLIGHT_LOADGEN_DECODE=prost.
    let decode = h2grpc::Decode::from_env();
    let singles: Arc<Vec<pb::CheckRequest>> = Arc::new(queries.iter().map(|q| req(*q)).collect());
    // Each CheckBatch and CheckStream caller on its own connection: the service serves a
    // connection on one core, and a dialer that wants more opens more.
    let callers = concurrency.clamp(1, 4);
    let channels: Vec<_> = (0..callers).map(|_| rt.block_on(channel(&url))).collect();

    // PREFLIGHT_LOADGEN_ONLY=unary (or pipe, get, batch, stream; comma-separated) runs
    // only those phases, for profiling.
    let only = std::env::var("PREFLIGHT_LOADGEN_ONLY").unwrap_or_default();
    let run = |phase: &str| only.is_empty() || only.split(',').any(|p| p == phase);
    let pids = [_redis.0.id(), _server.0.id(), std::process::id()];
    let mut cpu = Vec::new();

    // Redis pipelined SISMEMBER: `concurrency` pipelines of PIPE in flight.
    let mut redis_pipe = 0.0;
    if run("pipe") {
        let (c, p) = (rconn.clone(), pipes.clone());
        let before = pids.map(procs::cpu_secs);
        let l = rt.block_on(closed_loop(concurrency, secs, move |_, i| {
            let (mut c, p) = (c.clone(), p.clone());
            async move {
                let _: Vec<bool> = p[i as usize % p.len()].query_async(&mut c).await.unwrap();
            }
        }));
        redis_pipe = l.ops_per_sec * PIPE as f64;
        cpu.push((
            "pipe".to_string(),
            per_op(pids, before, l.ops * PIPE as u64),
        ));
    }

    // Redis GET and unary Check, one call per task, at each concurrency.
    let mut rows = Vec::new();
    for &c in &sweep {
        let mut get = None;
        if run("get") {
            let r = rconn.clone();
            let before = pids.map(procs::cpu_secs);
            let l = rt.block_on(closed_loop(c, secs, move |_, _| {
                let mut r = r.clone();
                async move {
                    let _: Option<String> = r.get("contact:probe").await.unwrap();
                }
            }));
            cpu.push((format!("get c={c}"), per_op(pids, before, l.ops)));
            get = Some(l);
        }
        let mut unary = None;
        if run("unary") {
            let uri = lean.uri("/preflight.v1.DecisionService/Check");
            let (cl, one, h) = (lean.clone(), singles.clone(), hits.clone());
            let before = pids.map(procs::cpu_secs);
            let l = rt.block_on(closed_loop(c, secs, move |_, i| {
                let (cl, one, h, uri) = (cl.clone(), one.clone(), h.clone(), uri.clone());
                async move {
                    let r: pb::CheckResponse =
                        cl.unary(&uri, &one[i as usize % one.len()]).await.unwrap();
                    if r.verdict == pb::Verdict::Block as i32 {
                        h.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
            cpu.push((format!("unary c={c}"), per_op(pids, before, l.ops)));
            unary = Some(l);
        }
        rows.push((c, get, unary));
    }

    // CheckBatch: up to four callers, each on its own connection, one call at a time.
    let mut grpc_batch = 0.0;
    if run("batch") {
        let (chs, b) = (Arc::new(channels.clone()), encoded.clone());
        let before = pids.map(procs::cpu_secs);
        let l = rt.block_on(closed_loop(callers, secs, move |t, i| {
            let (ch, b) = (chs[t].clone(), b.clone());
            async move {
                let sent = b[i as usize % b.len()].clone();
                let mut grpc = tonic::client::Grpc::new(ch).max_decoding_message_size(64 << 20);
                grpc.ready().await.unwrap();
                let r = grpc
                    .unary(
                        tonic::Request::new(sent),
                        http::uri::PathAndQuery::from_static(
                            "/preflight.v1.DecisionService/CheckBatch",
                        ),
                        h2grpc::PreEncodedChecks(decode),
                    )
                    .await
                    .unwrap();
                assert_eq!(r.into_inner().results, BATCH as u64);
            }
        }));
        grpc_batch = l.ops_per_sec * BATCH as f64;
        cpu.push((
            "batch".to_string(),
            per_op(pids, before, l.ops * BATCH as u64),
        ));
    }

    // CheckStream with as many messages in flight as Redis had pipelines: up to two
    // streams, each on its own connection, sharing `concurrency` between them.
    let mut grpc_stream = 0.0;
    if run("stream") {
        let streams = concurrency.min(2);
        let per_stream = (concurrency / streams).max(1);
        let before = pids.map(procs::cpu_secs);
        let stop_at = Instant::now() + Duration::from_secs_f64(secs);
        let started = Instant::now();
        let total: u64 = rt.block_on(async {
            let tasks: Vec<_> = (0..streams)
                .map(|s| {
                    let (ch, b) = (channels[s % channels.len()].clone(), encoded.clone());
                    tokio::spawn(async move {
                        let (tx, rx) = tokio::sync::mpsc::channel(per_stream);
                        let feeder = tokio::spawn(async move {
                            let mut i = s * 7_919;
                            while Instant::now() < stop_at {
                                if tx.send(b[i % b.len()].clone()).await.is_err() {
                                    break;
                                }
                                i += 1;
                            }
                        });
                        let mut grpc =
                            tonic::client::Grpc::new(ch).max_decoding_message_size(64 << 20);
                        grpc.ready().await.unwrap();
                        let mut out = grpc
                            .streaming(
                                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(
                                    rx,
                                )),
                                http::uri::PathAndQuery::from_static(
                                    "/preflight.v1.DecisionService/CheckStream",
                                ),
                                h2grpc::PreEncodedChecks(decode),
                            )
                            .await
                            .unwrap()
                            .into_inner();
                        let mut n = 0u64;
                        while let Some(r) = out.message().await.unwrap() {
                            assert_eq!(r.results, BATCH as u64);
                            n += r.results;
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
            total
        });
        grpc_stream = total as f64 / started.elapsed().as_secs_f64();
        cpu.push(("stream".to_string(), per_op(pids, before, total)));
    }

    println!(
        "loadgen: N = {n} registry numbers, {secs} s a phase, {} generator thread(s), answers read {}, service threads {}{}",
        gen_threads,
        match decode {
            h2grpc::Decode::View => "in place",
            h2grpc::Decode::Prost => "into prost structs",
        },
        std::env::var("PREFLIGHT_SERVER_THREADS")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "default (one per core)".into()),
        if smoke { " (smoke run)" } else { "" }
    );
    println!(
        "load:  redis SADD {:.1} s   preflight `dnc import` {:.1} s",
        redis_load.as_secs_f64(),
        preflight_load.as_secs_f64()
    );
    println!(
        "redis  SISMEMBER pipelined x{PIPE}, {concurrency} in flight     {redis_pipe:>10.0} lookups/s"
    );
    println!(
        "grpc   CheckBatch x{BATCH}, {callers} callers              {grpc_batch:>10.0} checks/s"
    );
    println!(
        "grpc   CheckStream x{BATCH}, {concurrency} in flight          {grpc_stream:>10.0} checks/s"
    );
    println!(
        "target: CheckStream / Redis pipelined SISMEMBER = {:.2}x (>= 2x)",
        grpc_stream / redis_pipe
    );
    println!(
        "target: CheckBatch / Redis pipelined SISMEMBER = {:.2}x (>= 1.5x)",
        grpc_batch / redis_pipe
    );
    let line = |name: &str, c: usize, l: &Latency| {
        println!(
            "{name:<22} c={c:<3} {:>8.0} ops/s   p50 {:>7.1} us  p99 {:>7.1} us  p99.9 {:>7.1} us",
            l.ops_per_sec,
            us(l.p50),
            us(l.p99),
            us(l.p999)
        )
    };
    for (c, get, unary) in &rows {
        if let Some(g) = get {
            line("redis  GET", *c, g);
        }
        if let Some(u) = unary {
            line("grpc   Check (unary)", *c, u);
        }
        if let (Some(g), Some(u)) = (get, unary) {
            println!(
                "target: c={c}: unary p99 / Redis GET p99 = {:.2}x (<= 2x)",
                u.p99.as_secs_f64() / g.p99.as_secs_f64().max(1e-9)
            );
        }
    }
    println!("cpu per lookup/call (us):  redis-server  preflight  generator");
    for (phase, [r, p, g]) in &cpu {
        println!("  {phase:<12} {r:>18.2} {p:>10.2} {g:>10.2}");
    }
    // One line to compare runs by: the ratios and the service's CPU a check.
    let service_cpu = |phase: &str| {
        cpu.iter()
            .find(|(p, _)| p == phase)
            .map_or("-".to_string(), |(_, [_, p, _])| format!("{p:.2} us"))
    };
    let mut summary = format!(
        "summary: stream/SISMEMBER {:.2}x (>= 2), batch/SISMEMBER {:.2}x (>= 1.5), service CPU a check: stream {}, batch {} (<= 0.5 us)",
        grpc_stream / redis_pipe,
        grpc_batch / redis_pipe,
        service_cpu("stream"),
        service_cpu("batch"),
    );
    for (c, get, unary) in &rows {
        if let (Some(g), Some(u)) = (get, unary) {
            summary.push_str(&format!(
                "; c={c}: unary p99/GET p99 {:.2}x, unary CPU {}",
                u.p99.as_secs_f64() / g.p99.as_secs_f64().max(1e-9),
                service_cpu(&format!("unary c={c}"))
            ));
        }
    }
    println!("{summary}");
    if run("unary") {
        assert!(
            hits.load(Ordering::Relaxed) > 0,
            "no check was a registry hit"
        );
    }
}
