//! Load run for inbound handling, printed as figures rather than timed by criterion:
//! ProcessInbound over loopback gRPC on the embedded store (every change durable before
//! its answer), and the time from a withdrawal's ack to its delivery on Watch (in-process).
//!
//!     cargo bench --bench inbound_load               # 200,000 messages, 512 in flight
//!     PREFLIGHT_INBOUND_MESSAGES=50000 cargo bench --bench inbound_load
use futures::StreamExt;
use preflight::clock::SystemClock;
use preflight::config::Config;
use preflight::engine::{Arg, CheckRequest, ConsentRequest};
use preflight::model::{Channel, ConsentStatus, Reason};
use preflight::proto as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not: then a quick smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let messages: usize = if smoke {
        2_000
    } else {
        std::env::var("PREFLIGHT_INBOUND_MESSAGES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000)
    };
    let inflight = 512usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let engine = preflight::server::open_embedded(&config, "bench", Arc::new(SystemClock)).unwrap();

    // 1. ProcessInbound over gRPC.
    let listener = rt.block_on(preflight::server::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(preflight::server::serve_grpc(
        engine.clone(),
        listener,
        Default::default(),
        std::future::pending(),
    ));
    let texts = [
        "STOP",
        "help",
        "where is my order?",
        "START",
        "stop please",
        "thanks!",
    ];
    let elapsed = rt.block_on(async {
        // A messaging platform's workers: a few connections, many requests in flight on each.
        let mut clients = Vec::new();
        for _ in 0..4 {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            clients.push(pb::consent_service_client::ConsentServiceClient::new(ch));
        }
        let start = Instant::now();
        futures::stream::iter(0..messages)
            .map(|i| {
                let mut c = clients[i % clients.len()].clone();
                async move {
                    let req = pb::ProcessInboundRequest {
                        from: format!("+1202{:03}{:04}", 200 + (i / 10_000) % 700, i % 10_000),
                        to: "12345".into(),
                        channel: if i % 3 == 0 {
                            pb::Channel::Whatsapp
                        } else {
                            pb::Channel::Sms
                        } as i32,
                        text: texts[i % texts.len()].into(),
                        message_id: format!("m-{i}"),
                        ..Default::default()
                    };
                    c.process_inbound(req).await.unwrap();
                }
            })
            .buffer_unordered(inflight)
            .collect::<Vec<()>>()
            .await;
        start.elapsed()
    });
    println!(
        "process_inbound: {messages} messages, {inflight} in flight, {:.2} s, {:.0} messages/s (durable, group commit)",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64()
    );

    // 2. Withdrawal: visible to Check at its ack, and on Watch how soon after.
    let rounds = if smoke { 200 } else { 5_000 };
    let (visible, delivered) = rt.block_on(async {
        let mut watch = Box::pin(engine.watch(
            engine.index().seq(),
            vec![preflight::model::EventKind::ConsentChanged],
        ));
        let mut delivered = Vec::with_capacity(rounds);
        let mut visible = 0;
        for i in 0..rounds {
            let contact = format!("+1303555{:04}", i % 10_000);
            let out = engine
                .record_consent(
                    ConsentRequest {
                        contact: contact.clone(),
                        status: Arg::Set(ConsentStatus::Withdrawn),
                        ..Default::default()
                    },
                    &preflight::audit::Caller::system("bench"),
                )
                .await
                .unwrap();
            let acked = Instant::now();
            let d = engine
                .check(&CheckRequest {
                    contact: &contact,
                    channel: Arg::Set(Channel::Email),
                    ..Default::default()
                })
                .unwrap();
            if d.decision.reasons.contains(Reason::ConsentWithdrawn)
                && d.decision.index_seq >= out.seq
            {
                visible += 1;
            }
            loop {
                let ev = watch.next().await.unwrap().unwrap();
                if ev.seq == out.seq {
                    break;
                }
            }
            delivered.push(acked.elapsed());
        }
        delivered.sort();
        (visible, delivered)
    });
    println!(
        "withdrawal: visible to Check at ack in {visible}/{rounds}; ack to Watch delivery p50 {:?}, p99 {:?}, max {:?}",
        percentile(&delivered, 0.50),
        percentile(&delivered, 0.99),
        delivered.last().unwrap()
    );
    assert_eq!(visible, rounds, "a withdrawal was not visible at its ack");
}
