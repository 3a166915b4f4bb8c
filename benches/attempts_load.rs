//! Load run for RecordAttempts, printed as figures rather than timed by criterion: batches
//! of 1,000 attempts over loopback gRPC on the embedded store (every attempt durable, with
//! its audit record, before the answer) to a `preflight serve` process, a few calls in
//! flight as a dialer fleet sends them; the service's CPU and disk an attempt.
//!
//!     cargo bench --bench attempts_load              # 500,000 attempts, 1,000 a call
//!     PREFLIGHT_ATTEMPTS=2000000 cargo bench --bench attempts_load
use futures::StreamExt;
use preflight::proto as pb;
use std::time::Instant;

#[path = "procs.rs"]
mod procs;

const BATCH: usize = 1_000;

fn batch(b: usize, now_s: i64) -> pb::RecordAttemptsRequest {
    let outcomes = [
        pb::AttemptOutcome::NoAnswer,
        pb::AttemptOutcome::Busy,
        pb::AttemptOutcome::Voicemail,
        pb::AttemptOutcome::Connected,
        pb::AttemptOutcome::Conversation,
    ];
    pb::RecordAttemptsRequest {
        attempts: (0..BATCH)
            .map(|j| {
                let i = b * BATCH + j;
                pb::Attempt {
                    // 10 million numbers, each attempted now and then.
                    contact: format!("+1305{:03}{:04}", 200 + (i / 10_000) % 700, i % 10_000),
                    channel: pb::Channel::Voice as i32,
                    purpose: pb::Purpose::Marketing as i32,
                    subject: format!("campaign-{}", i % 7),
                    at: Some(prost_types::Timestamp {
                        seconds: now_s - (i % 3_600) as i64,
                        nanos: 0,
                    }),
                    outcome: outcomes[i % outcomes.len()] as i32,
                    campaign_id: format!("c-{}", i % 13),
                }
            })
            .collect(),
        idempotency_key: format!("bench-{b}"),
        default_region: String::new(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not: then a quick smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let attempts = if smoke {
        5_000
    } else {
        procs::env_or("PREFLIGHT_ATTEMPTS", 500_000) as usize
    };
    let batches = attempts.div_ceil(BATCH);
    let inflight = procs::env_or("PREFLIGHT_ATTEMPTS_IN_FLIGHT", 8) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (proc, port) = procs::start_preflight(dir.path(), &[]);
    let pid = proc.0.id();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Requests are built before the clock starts.
    let requests: Vec<pb::RecordAttemptsRequest> = (0..batches).map(|b| batch(b, now_s)).collect();
    let disk_before = procs::dir_bytes(dir.path());
    let (elapsed, recorded, cpu) = rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..inflight {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            clients.push(
                pb::attempt_service_client::AttemptServiceClient::new(ch)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            );
        }
        let cpu0 = procs::cpu_secs(pid);
        let start = Instant::now();
        let counts: Vec<usize> = futures::stream::iter(requests.into_iter().enumerate())
            .map(|(b, req)| {
                let mut c = clients[b % clients.len()].clone();
                async move {
                    let r = c.record_attempts(req).await.unwrap().into_inner();
                    r.results
                        .iter()
                        .filter(|x| x.status == pb::EntryStatus::Accepted as i32)
                        .count()
                }
            })
            .buffer_unordered(inflight)
            .collect()
            .await;
        let elapsed = start.elapsed();
        (
            elapsed,
            counts.iter().sum::<usize>(),
            procs::cpu_secs(pid) - cpu0,
        )
    });
    assert_eq!(recorded, batches * BATCH, "every attempt recorded");
    println!(
        "record_attempts: {recorded} attempts in calls of {BATCH}, {inflight} calls in flight: \
         {:.2} s, {:.0} attempts/s (durable, audited); service CPU {:.2} us an attempt",
        elapsed.as_secs_f64(),
        recorded as f64 / elapsed.as_secs_f64(),
        cpu * 1e6 / recorded as f64,
    );
    println!(
        "store: {:.1} bytes an attempt on disk (change log, audit trail, idempotency answers)",
        (procs::dir_bytes(dir.path()) - disk_before) as f64 / recorded as f64
    );
    drop(proc);
}
