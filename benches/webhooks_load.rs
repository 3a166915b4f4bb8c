//! Webhook delivery speed against a receiver in this process: withdrawals written through
//! gRPC at a steady rate to a real `preflight serve` (embedded store), each timed from the
//! write call to its arrival at the receiver (p50, p99, max); then a backlog of events
//! built while the endpoint was paused, drained after `resume`, in events a second.
//!
//! `cargo bench --bench webhooks_load` runs the documented sizes; without `--bench` (as
//! `cargo test --benches` runs it) a small smoke run. PREFLIGHT_WEBHOOK_RATE (writes/s,
//! 1000), PREFLIGHT_WEBHOOK_SECONDS (10) and PREFLIGHT_WEBHOOK_BACKLOG (10000).
mod procs;
#[path = "../tests/common/receiver.rs"]
#[allow(dead_code)]
mod receiver;

use preflight::proto as pb;
use receiver::{Receiver, Reply};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn withdraw(n: u64) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        contact: format!("+1202{:03}{:04}", 200 + (n / 10_000) % 800, n % 10_000),
        status: pb::ConsentStatus::Withdrawn as i32,
        source: "bench".into(),
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Writes `total` withdrawals at `rate` a second; the send time of each, by seq.
async fn write_paced(ch: &Channel, rate: u64, total: u64, first: u64) -> HashMap<u64, Instant> {
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for n in 0..total {
        tick.tick().await;
        let (ch, sent) = (ch.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = pb::consent_service_client::ConsentServiceClient::new(ch);
            let t = Instant::now();
            let seq = c
                .record_consent(withdraw(first + n))
                .await
                .unwrap()
                .into_inner()
                .seq;
            sent.lock().unwrap().insert(seq, t);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(sent).unwrap().into_inner().unwrap()
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rate = procs::env_or("PREFLIGHT_WEBHOOK_RATE", 1_000);
    let seconds = procs::env_or("PREFLIGHT_WEBHOOK_SECONDS", if smoke { 1 } else { 10 });
    let backlog = procs::env_or(
        "PREFLIGHT_WEBHOOK_BACKLOG",
        if smoke { 1_000 } else { 10_000 },
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let rx = Receiver::start(Reply::Status(200)).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("preflight.toml");
        // One attempt: a failure pauses the endpoint at once (the backlog phase).
        std::fs::write(
            &config,
            format!(
                "[[webhooks]]\nname = \"bench\"\nurl = \"{}\"\nsecret_env = \"HOOK_SECRET\"\nretry_schedule_ms = [0]\n",
                rx.url()
            ),
        )
        .unwrap();
        let (proc, port) = procs::start_preflight(
            &dir.path().join("data"),
            &[
                ("PREFLIGHT_CONFIG", config.display().to_string()),
                ("HOOK_SECRET", SECRET.to_string()),
            ],
        );
        let ch = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();

        // Phase 1: a steady rate of withdrawals, each timed to its arrival.
        let total = rate * seconds;
        let sent = write_paced(&ch, rate, total, 0).await;
        rx.wait_for(60, "every live event", |g| g.len() as u64 >= total)
            .await;
        let got = rx.got();
        let mut lat: Vec<Duration> = got
            .iter()
            .filter_map(|d| sent.get(&d.seq()).map(|t| d.at.duration_since(*t)))
            .collect();
        lat.sort();
        println!(
            "webhooks live: {total} withdrawals at {rate}/s, write call to receiver: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} delivered)",
            percentile(&lat, 0.50).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat.last().unwrap().as_secs_f64() * 1e3,
            lat.len()
        );

        // Phase 2: the receiver fails once, the endpoint pauses, a backlog builds.
        rx.set_default(Reply::Status(500));
        let mut c = pb::consent_service_client::ConsentServiceClient::new(ch.clone());
        c.record_consent(withdraw(total)).await.unwrap();
        let mut hooks = pb::webhook_service_client::WebhookServiceClient::new(ch.clone());
        loop {
            let w = hooks
                .list_webhooks(pb::ListWebhooksRequest {})
                .await
                .unwrap()
                .into_inner()
                .webhooks
                .remove(0);
            if w.state == pb::WebhookState::Paused as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Written as batches of concurrent calls: only the backlog's size matters here.
        let mut n = 1;
        while n < backlog {
            let chunk: Vec<_> = (0..200.min(backlog - n))
                .map(|i| {
                    let mut c = c.clone();
                    let req = withdraw(total + n + i);
                    tokio::spawn(async move { c.record_consent(req).await.unwrap() })
                })
                .collect();
            n += chunk.len() as u64;
            for t in chunk {
                t.await.unwrap();
            }
        }
        let before = rx.got().len();
        rx.set_default(Reply::Status(200));
        let started = Instant::now();
        hooks
            .resume_webhook(pb::ResumeWebhookRequest {
                name: "bench".into(),
            })
            .await
            .unwrap();
        rx.wait_for(120, "the backlog drained", |g| {
            g.iter().skip(before).filter(|d| d.answered == 200).count() as u64 >= backlog
        })
        .await;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "webhooks backlog: {backlog} events drained in {:.2} s after resume: {:.0} events/s",
            secs,
            backlog as f64 / secs
        );
        drop(proc);
    });
}
