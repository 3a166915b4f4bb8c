//! Load run for the Redis store: two replicas on one `redis-server`, all started here.
//!
//! 1. Write-to-visible: RecordConsent on replica A at a fixed rate (open loop), each
//!    event's arrival timed on replica B's Watch stream; percentiles of the gap.
//! 2. Write throughput: RecordConsent through one replica with many calls in flight.
//! 3. Cold start: N overlay records (DNC entries, 10,000 per AddEntries call) written,
//!    then a fresh replica started, from the newest index image and with it set aside;
//!    time until its health says SERVING, and its memory.
//! 4. Memory side by side: the same N entries in an embedded server and in a replica of a
//!    Redis of its own, each started cold; RSS growth over an empty one.
//!
//! `cargo bench --bench replica_load` runs the documented sizes; without `--bench` (as
//! `cargo test --benches` runs it) a small smoke run. Knobs: PREFLIGHT_REPLICA_RATE
//! (5000 writes/s), PREFLIGHT_REPLICA_SECS (10), PREFLIGHT_REPLICA_CONCURRENCY (128),
//! PREFLIGHT_REPLICA_RECORDS (1,000,000), PREFLIGHT_REPLICA_ACKS (0: with N, N Redis
//! replicas of the master are started and every commit waits for them, `min_replicas_ack`),
//! PREFLIGHT_REPLICA_MEMORY (1; 0 skips the side-by-side memory phase).
use preflight::proto as pb;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[path = "procs.rs"]
mod procs;

use procs::env_or;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

async fn add_dnc(ch: &Channel, numbers: &[String]) {
    let mut d = pb::dnc_service_client::DncServiceClient::new(ch.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    for batch in numbers.chunks(10_000) {
        d.add_entries(pb::AddEntriesRequest {
            entries: batch
                .iter()
                .map(|n| pb::DncEntryInput {
                    contact: n.clone(),
                    r#type: pb::DncType::Corporate as i32,
                    ..Default::default()
                })
                .collect(),
            actor: "load".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

/// RSS of a server started on `data_dir`, once serving, in MB; the process is returned to
/// keep it alive.
async fn started_rss(
    data_dir: &std::path::Path,
    config: &std::path::Path,
) -> (procs::Proc, Channel, f64) {
    let envs = [("PREFLIGHT_CONFIG", config.to_str().unwrap().to_string())];
    let (p, port) = procs::start_preflight(data_dir, &envs);
    let ch = serving(port).await;
    // Let the allocator hand back what loading used and freed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mb = procs::rss_kb(p.0.id()).unwrap_or(0) as f64 / 1024.0;
    (p, ch, mb)
}

async fn memory_side_by_side(
    dir: &std::path::Path,
    key: &std::path::Path,
    numbers: &[String],
    smoke: bool,
) {
    std::fs::create_dir_all(dir).unwrap();
    let (_redis, rport) = procs::start_redis();
    let embedded = dir.join("embedded.toml");
    std::fs::write(
        &embedded,
        format!("[privacy]\nkey_file = {:?}\n", key.to_str().unwrap()),
    )
    .unwrap();
    let shared = dir.join("redis.toml");
    std::fs::write(
        &shared,
        format!(
            "[privacy]\nkey_file = {:?}\n[redis]\nurl = \"redis://127.0.0.1:{rport}\"\n",
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    let (e0, e_ch, e_empty) = started_rss(&dir.join("e"), &embedded).await;
    let (_r0, r_ch, r_empty) = started_rss(&dir.join("r0"), &shared).await;
    add_dnc(&e_ch, numbers).await;
    add_dnc(&r_ch, numbers).await;
    drop(e0);
    // The snapshot and image holders catch up, as a running system would have.
    tokio::time::sleep(Duration::from_secs(if smoke { 1 } else { 10 })).await;
    let (_e, _, e_full) = started_rss(&dir.join("e"), &embedded).await;
    let (_r1, _, r_full) = started_rss(&dir.join("r1"), &shared).await;
    let n = numbers.len() as f64;
    let (e_grow, r_grow) = (e_full - e_empty, r_full - r_empty);
    println!(
        "memory, {} DNC entries, each started cold: embedded {e_full:.0} MB ({:.1} bytes an entry over an empty one, {e_empty:.0} MB), \
         redis replica {r_full:.0} MB ({:.1} bytes an entry over an empty one, {r_empty:.0} MB): replica / embedded growth {:.2}x",
        numbers.len(),
        e_grow * 1048576.0 / n,
        r_grow * 1048576.0 / n,
        r_grow / e_grow
    );
}

async fn serving(port: u16) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
            if let Ok(r) = h
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                && r.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                return ch;
            }
        }
        assert!(Instant::now() < deadline, "replica not serving in 120 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `n` replicas of the Redis on `port` are connected and in sync.
fn replicas_online(port: u16, n: u64) -> bool {
    let info: String = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("INFO").arg("replication").query(&mut c))
        .unwrap_or_default();
    info.matches("state=online").count() as u64 >= n
}

fn withdraw(i: u64) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        contact: format!("user{i}@example.com"),
        status: pb::ConsentStatus::Withdrawn as i32,
        source: "load".into(),
        ..Default::default()
    }
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rate = env_or("PREFLIGHT_REPLICA_RATE", if smoke { 500 } else { 5_000 });
    let secs = env_or("PREFLIGHT_REPLICA_SECS", if smoke { 1 } else { 10 });
    let conc = env_or("PREFLIGHT_REPLICA_CONCURRENCY", 128);
    let records = env_or(
        "PREFLIGHT_REPLICA_RECORDS",
        if smoke { 20_000 } else { 1_000_000 },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acks = env_or("PREFLIGHT_REPLICA_ACKS", 0);
    let dir = tempfile::tempdir().unwrap();
    let (_redis, rport) = procs::start_redis();
    let _redis_replicas: Vec<_> = (0..acks)
        .map(|_| procs::start_redis_replica(rport))
        .collect();
    // Every replica in sync before the first commit waits for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks > 0 && !replicas_online(rport, acks) {
        assert!(Instant::now() < deadline, "redis replicas not in sync");
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = dir.path().join("privacy.key");
    std::fs::write(&key, [9u8; 32]).unwrap();
    let config = dir.path().join("preflight.toml");
    std::fs::write(
        &config,
        format!(
            "[privacy]\nkey_file = {:?}\n[redis]\nurl = \"redis://127.0.0.1:{rport}\"\nmin_replicas_ack = {acks}\n",
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    let envs = [("PREFLIGHT_CONFIG", config.to_str().unwrap().to_string())];
    let (_a, a_port) = procs::start_preflight(&dir.path().join("a"), &envs);
    let (b_proc, b_port) = procs::start_preflight(&dir.path().join("b"), &envs);
    let (a_pid, b_pid, r_pid) = (_a.0.id(), b_proc.0.id(), _redis.0.id());
    let cpu = move || [a_pid, b_pid, r_pid, std::process::id()].map(procs::cpu_secs);
    let report_cpu = move |what: &str, before: [f64; 4], secs: f64| {
        let after = cpu();
        let share = |i: usize| (after[i] - before[i]) / secs * 100.0;
        println!(
            "  cpu during {what}: replica A {:.0}%, replica B {:.0}%, redis {:.0}%, load generator {:.0}% (of one core)",
            share(0),
            share(1),
            share(2),
            share(3)
        );
    };
    rt.block_on(async {
        let a = serving(a_port).await;
        let b = serving(b_port).await;
        let next = Arc::new(AtomicU64::new(0));

        // 1. Write-to-visible at a fixed rate.
        let start_seq = pb::decision_service_client::DecisionServiceClient::new(b.clone())
            .check(pb::CheckRequest {
                contact: "+12025550100".into(),
                channel: pb::Channel::Voice as i32,
                purpose: pb::Purpose::Security as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .index_seq;
        let mut watch = pb::event_service_client::EventServiceClient::new(b.clone())
            .watch(pb::WatchRequest {
                after_seq: start_seq,
                kinds: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        let total = rate * secs;
        let seen = tokio::spawn(async move {
            let mut at: HashMap<u64, Instant> = HashMap::new();
            while at.len() < total as usize {
                match watch.message().await {
                    Ok(Some(ev)) => {
                        at.insert(ev.seq, Instant::now());
                    }
                    _ => break,
                }
            }
            at
        });
        let cpu0 = cpu();
        let began = Instant::now();
        let mut sends = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = began + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            let mut c = pb::consent_service_client::ConsentServiceClient::new(a.clone());
            let n = next.fetch_add(1, Ordering::Relaxed);
            sends.push(tokio::spawn(async move {
                let sent = Instant::now();
                let r = c.record_consent(withdraw(n)).await.unwrap().into_inner();
                (r.seq, sent, sent.elapsed())
            }));
        }
        let mut acks = Vec::new();
        let mut sent_at = HashMap::new();
        for s in sends {
            let (seq, sent, ack) = s.await.unwrap();
            sent_at.insert(seq, sent);
            acks.push(ack);
        }
        let offered = total as f64 / began.elapsed().as_secs_f64();
        let seen = tokio::time::timeout(Duration::from_secs(30), seen)
            .await
            .expect("every write seen on B")
            .unwrap();
        let mut visible: Vec<Duration> = sent_at
            .iter()
            .filter_map(|(seq, sent)| seen.get(seq).map(|t| t.duration_since(*sent)))
            .collect();
        visible.sort();
        acks.sort();
        println!(
            "write-to-visible on B at {rate}/s offered ({offered:.0}/s achieved), {} writes: \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (ack on A: p50 {:.2} ms, p99 {:.2} ms)",
            visible.len(),
            pct(&visible, 0.50),
            pct(&visible, 0.99),
            pct(&visible, 1.0),
            pct(&acks, 0.50),
            pct(&acks, 0.99),
        );
        report_cpu("the fixed-rate run", cpu0, began.elapsed().as_secs_f64());
        // The same figures over each second, to tell warm-up from steady state.
        let mut by_second: std::collections::BTreeMap<u64, Vec<Duration>> = Default::default();
        for (seq, sent) in &sent_at {
            if let Some(t) = seen.get(seq) {
                by_second
                    .entry(sent.duration_since(began).as_secs())
                    .or_default()
                    .push(t.duration_since(*sent));
            }
        }
        for (s, mut v) in by_second {
            v.sort();
            println!(
                "  second {s}: {} writes, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                v.len(),
                pct(&v, 0.5),
                pct(&v, 0.99),
                pct(&v, 1.0)
            );
        }
        assert_eq!(visible.len(), total as usize, "every write reached B");

        // 2. Throughput through one replica.
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let t = Instant::now();
        let cpu0 = cpu();
        let workers: Vec<_> = (0..conc)
            .map(|_| {
                let mut c = pb::consent_service_client::ConsentServiceClient::new(a.clone());
                let (next, done) = (next.clone(), done.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        c.record_consent(withdraw(n)).await.unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let n = done.load(Ordering::Relaxed);
        println!(
            "consent writes through one replica, {conc} in flight: {n} in {:.1} s = {:.0} writes/s",
            t.elapsed().as_secs_f64(),
            n as f64 / t.elapsed().as_secs_f64()
        );
        report_cpu("the throughput run", cpu0, t.elapsed().as_secs_f64());

        // 3. Cold start with `records` overlay records.
        let mut text = Vec::new();
        preflight::registry::generate::Generator::new(3)
            .write(records, false, &mut text)
            .unwrap();
        let numbers: Vec<String> = String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| format!("+1{l}"))
            .collect();
        let t = Instant::now();
        add_dnc(&a, &numbers).await;
        println!(
            "{records} DNC entries written in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // Let the snapshot and image lease holders catch up, as a running system would have.
        tokio::time::sleep(Duration::from_secs(if smoke { 1 } else { 10 })).await;
        let mut rc = redis::Client::open(format!("redis://127.0.0.1:{rport}"))
            .unwrap()
            .get_connection()
            .unwrap();
        // Then once from the newest index image, once with it set aside (the whole log).
        for (name, from_image) in [("late", true), ("late-log", false)] {
            let (img_seq, img_chunks): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
                .arg("{preflight}:snap")
                .arg("img_seq")
                .arg("img_chunks")
                .query(&mut rc)
                .unwrap();
            if !from_image {
                let _: () = redis::cmd("HDEL")
                    .arg("{preflight}:snap")
                    .arg("img")
                    .arg("img_seq")
                    .arg("img_chunks")
                    .query(&mut rc)
                    .unwrap();
            }
            let t = Instant::now();
            let (late, late_port) = procs::start_preflight(&dir.path().join(name), &envs);
            let late_ch = serving(late_port).await;
            let cold = t.elapsed();
            let seq = pb::decision_service_client::DecisionServiceClient::new(late_ch)
                .check(pb::CheckRequest {
                    contact: numbers[0].clone(),
                    channel: pb::Channel::Voice as i32,
                    purpose: pb::Purpose::Marketing as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .index_seq;
            let source = match (from_image, img_seq) {
                (true, Some(s)) => format!(
                    "from the index image at seq {s} ({} chunks) and the log after it",
                    img_chunks.unwrap_or(0)
                ),
                _ => "from the whole log (no index image)".to_string(),
            };
            println!(
                "cold start of a replica at seq {seq} ({records} DNC entries + earlier writes), \
                 {source}: serving after {:.2} s, RSS {} MB",
                cold.as_secs_f64(),
                procs::rss_kb(late.0.id()).unwrap_or(0) / 1024
            );
        }

        // 4. Memory side by side: the same DNC entries in an embedded server and in a Redis
        // replica (on a Redis of its own), each started cold; growth over an empty one.
        // PREFLIGHT_REPLICA_MEMORY=0 skips it (it writes the entries twice more).
        if env_or("PREFLIGHT_REPLICA_MEMORY", 1) != 0 {
            memory_side_by_side(&dir.path().join("memory"), &key, &numbers, smoke).await;
        }
    });
}
