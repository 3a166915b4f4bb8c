//! CheckBatch of 10,000 E.164 contacts over loopback gRPC, against an in-process server.
//!
//!     PREFLIGHT_BENCH_CONTACTS=1000000 cargo bench --bench grpc_batch
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use preflight::proto as pb;

#[path = "support.rs"]
mod support;

fn bench(c: &mut Criterion) {
    let n = support::contact_count();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (engine, _dir) = support::engine_with(n);
    let listener = rt.block_on(preflight::server::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(preflight::server::serve_grpc(
        engine,
        listener,
        Default::default(),
        std::future::pending(),
    ));
    let client = rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .initial_stream_window_size(preflight::server::STREAM_WINDOW)
            .initial_connection_window_size(preflight::server::CONNECTION_WINDOW)
            .connect()
            .await
            .unwrap();
        pb::decision_service_client::DecisionServiceClient::new(ch)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    });
    let batch = |k: u64| pb::CheckBatchRequest {
        checks: (0..10_000u64)
            .map(|i| pb::CheckRequest {
                contact: format!("+{}", support::phone((k * 10_000 + i * 7919) % n)),
                channel: pb::Channel::Sms as i32,
                purpose: pb::Purpose::Marketing as i32,
                ..Default::default()
            })
            .collect(),
    };
    let batches: Vec<pb::CheckBatchRequest> = (0..8).map(batch).collect();
    // Warm the NANP table and the connection.
    for b in &batches {
        rt.block_on(client.clone().check_batch(b.clone())).unwrap();
    }
    let mut g = c.benchmark_group("grpc");
    g.sample_size(30);
    for inflight in [1usize, 2, 4] {
        g.throughput(Throughput::Elements(10_000 * inflight as u64));
        g.bench_function(format!("check_batch_10k_x{inflight}_inflight"), |b| {
            b.to_async(&rt).iter_batched(
                || {
                    (0..inflight)
                        .map(|k| batches[k % batches.len()].clone())
                        .collect::<Vec<_>>()
                },
                |reqs| {
                    let calls = reqs.into_iter().map(|req| {
                        let mut c = client.clone();
                        async move { c.check_batch(req).await.unwrap().into_inner().results.len() }
                    });
                    futures::future::join_all(calls)
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
