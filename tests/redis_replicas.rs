//! Many replicas on one shared Redis, each a real `preflight serve` process, against real
//! `redis-server` processes on free loopback ports: writes seen everywhere, Redis killed
//! and restarted with and without persistence, pub/sub connections killed mid-burst, a
//! replica that starts after the stream was trimmed, erasures and registry versions.
mod common;

use common::redis_server::RedisServer;
use common::*;
use pb::{Channel as Ch, Purpose as P, Reason as R};
use preflight::proto as pb;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Cluster {
    dir: tempfile::TempDir,
    redis: RedisServer,
    config: PathBuf,
    key: PathBuf,
}

impl Cluster {
    /// A Redis (started unless `start_redis` is false) and a config every replica shares.
    fn new(persistent: bool, start_redis: bool, extra_redis: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let redis = if start_redis {
            RedisServer::start(&dir.path().join("redis"), persistent)
        } else {
            RedisServer::unstarted(&dir.path().join("redis"), persistent)
        };
        let key = dir.path().join("privacy.key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        let config = dir.path().join("preflight.toml");
        std::fs::write(
            &config,
            format!(
                "[privacy]\nkey_file = {:?}\n\n[policies.default]\nmax_staleness_ms = 1500\n\n\
                 [redis]\nurl = {:?}\nheartbeat_ms = 100\ntimeout_ms = 500\n{extra_redis}\n",
                key.to_str().unwrap(),
                redis.url()
            ),
        )
        .unwrap();
        Cluster {
            dir,
            redis,
            config,
            key,
        }
    }

    fn replica(&self, name: &str) -> Server {
        Server::start_with(
            &self.dir.path().join(name),
            &["--config", self.config.to_str().unwrap()],
        )
    }

    /// The digest of an index built from Redis alone: what every replica must equal.
    async fn source(&self) -> (u64, String) {
        let opts = preflight::store::redis::RedisOptions::new(&self.redis.url());
        let tokenizer = preflight::audit::Tokenizer::load_or_create(&self.key).unwrap();
        let p = preflight::store::redis::load_projection(
            &opts,
            preflight::engine::Projection::new(tokenizer),
        )
        .await
        .unwrap();
        (p.index.seq(), p.index.digest())
    }
}

fn get_json(url: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut r) => {
            let code = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap();
            (code, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn index_state(s: &Server) -> Value {
    get_json(&format!("{}/v1/admin/index?digest=true", s.http_url())).1
}

fn readyz(s: &Server) -> (u16, Value) {
    get_json(&format!("{}/readyz", s.http_url()))
}

/// Waits until every replica is ready at the source's seq with the source's digest.
async fn converged(c: &Cluster, replicas: &[&Server]) -> (u64, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let source = c.source().await;
        let states: Vec<Value> = replicas.iter().map(|s| index_state(s)).collect();
        let all = states.iter().all(|v| {
            v["ready"] == true
                && v["store"]["connected"] == true
                && v["index_age_ms"].as_u64().is_some_and(|a| a < 1_000)
                && v["index_seq"].as_u64() == Some(source.0)
                && v["digest"].as_str() == Some(source.1.as_str())
        });
        if all {
            return source;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not converge on {source:?}: {states:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lines of `preflight audit export` through a replica.
fn audit_lines(s: &Server) -> usize {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(["audit", "export", "--server", &s.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// `preflight audit verify` through a replica must pass.
fn verify_audit(s: &Server) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(["audit", "verify", "--server", &s.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn phone(i: u64) -> String {
    format!("+1202555{:04}", i % 10_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_wait_for_redis_then_share_every_write() {
    let mut c = Cluster::new(false, false, "");
    // Redis is not there yet: the replica starts, answers, and refuses to decide.
    let mut a = c.replica("a");
    let a_ch = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(ch) = tonic::transport::Channel::from_shared(a.url())
                .unwrap()
                .connect()
                .await
            {
                break ch;
            }
            assert!(Instant::now() < deadline, "replica a never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (code, body) = readyz(&a);
    assert_eq!(code, 503, "{body}");
    let d = check(&a_ch, "2025550100", Ch::Voice, P::Security).await;
    assert_eq!(d.verdict, pb::Verdict::Block as i32);
    assert!(reasons(&d).contains(&R::IndexStale), "{d:?}");
    assert_eq!(d.index_age_ms, u64::MAX, "not loaded yet: {d:?}");
    let err = consent(&a_ch)
        .record_consent(withdraw("2025550100"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    c.redis.spawn();
    let a_ch = a.ready().await;
    let mut b = c.replica("b");
    let b_ch = b.ready().await;
    let mut r3 = c.replica("c");
    let c_ch = r3.ready().await;

    // A write on one replica is what the others decide by.
    consent(&a_ch)
        .record_consent(withdraw("2025550101"))
        .await
        .unwrap();
    for ch in [&b_ch, &c_ch] {
        let ch = ch.clone();
        until("the withdrawal on b and c", || {
            let ch = ch.clone();
            async move {
                let d = check(&ch, "2025550101", Ch::Sms, P::Marketing).await;
                reasons(&d).contains(&R::ConsentWithdrawn)
            }
        })
        .await;
    }
    dnc(&b_ch)
        .add_entries(pb::AddEntriesRequest {
            entries: vec![entry("2025550102", pb::DncType::Corporate)],
            actor: "ops".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Read-your-writes on the writer; the others follow.
    let d = check(&b_ch, "2025550102", Ch::Voice, P::Marketing).await;
    assert!(reasons(&d).contains(&R::DncCorporate), "{d:?}");
    assert!(
        d.index_age_ms < 1_000,
        "heartbeats keep the index fresh: {d:?}"
    );

    // One idempotency key across replicas: the retry on another replica gets the first answer.
    let mut req = grant("2025550103", &[Ch::Sms], &[P::Marketing]);
    req.idempotency_key = "form-77".into();
    let first = consent(&a_ch)
        .record_consent(req.clone())
        .await
        .unwrap()
        .into_inner();
    let again = consent(&c_ch)
        .record_consent(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.consent_id, first.consent_id);
    assert!(again.duplicate && !first.duplicate);
    req.source = "another form".into();
    let err = consent(&b_ch).record_consent(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let (seq, _) = converged(&c, &[&a, &b, &r3]).await;
    assert_eq!(seq, 3);

    // Attempts recorded through one replica count on every other: Florida's 3 a day.
    let call = pb::Attempt {
        contact: "3055550104".into(),
        channel: Ch::Voice as i32,
        purpose: P::Marketing as i32,
        subject: "roof".into(),
        outcome: pb::AttemptOutcome::NoAnswer as i32,
        ..Default::default()
    };
    pb::attempt_service_client::AttemptServiceClient::new(b_ch.clone())
        .record_attempts(pb::RecordAttemptsRequest {
            attempts: vec![call.clone(), call.clone(), call],
            ..Default::default()
        })
        .await
        .unwrap();
    let ch = c_ch.clone();
    until("the attempts on c", || {
        let ch = ch.clone();
        async move {
            let d = check(&ch, "3055550104", Ch::Voice, P::Marketing).await;
            reasons(&d).contains(&R::FrequencyLimit)
        }
    })
    .await;
    let (seq, _) = converged(&c, &[&a, &b, &r3]).await;
    assert_eq!(seq, 6);
    let (_, body) = readyz(&b);
    assert_eq!(body["store"]["kind"], "redis");
    assert_eq!(body["store"]["connected"], true);
}

/// A VOICE marketing consent for `number`, then its withdrawal.
async fn granted_then_withdrawn(ch: &tonic::transport::Channel, number: &str) {
    consent(ch)
        .record_consent(grant(number, &[Ch::Voice], &[P::Marketing]))
        .await
        .unwrap();
    consent(ch).record_consent(withdraw(number)).await.unwrap();
}

/// `n` company DNC entries in one call, numbers +1312555 `from`...
async fn corporate_entries(ch: &tonic::transport::Channel, from: u32, n: u32) {
    dnc(ch)
        .add_entries(pb::AddEntriesRequest {
            entries: (from..from + n)
                .map(|i| entry(&format!("+1312555{i:04}"), pb::DncType::Corporate))
                .collect(),
            actor: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn some_writes(ch: &tonic::transport::Channel, from: u64, n: u64) {
    for i in from..from + n {
        consent(ch)
            .record_consent(withdraw(&phone(i)))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_persistence_loses_nothing() {
    let mut c = Cluster::new(true, true, "");
    let mut a = c.replica("a");
    let mut b = c.replica("b");
    let (a_ch, b_ch) = (a.ready().await, b.ready().await);
    some_writes(&a_ch, 0, 20).await;
    some_writes(&b_ch, 20, 20).await;
    let before = converged(&c, &[&a, &b]).await;

    c.redis.kill();
    // Writes fail whole; checks answer from memory until the staleness bound, then block.
    let err = consent(&a_ch)
        .record_consent(withdraw(&phone(99)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let d = check(&b_ch, &phone(5), Ch::Sms, P::Marketing).await;
    assert!(reasons(&d).contains(&R::ConsentWithdrawn), "{d:?}");
    until("checks to go stale", || {
        let ch = b_ch.clone();
        async move {
            let d = check(&ch, "2025550777", Ch::Voice, P::Security).await;
            d.verdict == pb::Verdict::Block as i32
                && reasons(&d).contains(&R::IndexStale)
                && d.index_age_ms > 1_500
        }
    })
    .await;
    let (_, body) = readyz(&a);
    assert_eq!(body["store"]["connected"], false, "{body}");
    // Past the policy's staleness bound the replica also leaves the load balancer.
    let (code, body) = readyz(&b);
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "NOT_SERVING", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("max_staleness_ms is 1500"),
        "{body}"
    );

    c.redis.restart();
    let after = converged(&c, &[&a, &b]).await;
    assert_eq!(
        after, before,
        "the restarted redis holds every acknowledged write"
    );
    until("the replica to take traffic again", || {
        let code = readyz(&b).0;
        async move { code == 200 }
    })
    .await;
    let d = check(&b_ch, "2025550777", Ch::Voice, P::Security).await;
    assert_eq!(d.verdict, pb::Verdict::Allow as i32, "{d:?}");
    // Both replicas write again, the one whose write failed during the outage too.
    some_writes(&a_ch, 40, 5).await;
    some_writes(&b_ch, 45, 5).await;
    let (seq, _) = converged(&c, &[&a, &b]).await;
    assert_eq!(seq, before.0 + 10);
    for s in [&a, &b] {
        assert_eq!(readyz(s).1["store"]["reseeds"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_is_reseeded_from_a_replica() {
    let mut c = Cluster::new(false, true, "");
    let mut a = c.replica("a");
    let mut b = c.replica("b");
    let (a_ch, b_ch) = (a.ready().await, b.ready().await);
    some_writes(&a_ch, 0, 30).await;
    // Writes with idempotency keys, through both replicas.
    let keyed = |i: u64| {
        let mut w = withdraw(&phone(500 + i));
        w.idempotency_key = format!("crm-{i}");
        w
    };
    let mut answers = Vec::new();
    for i in 0..6 {
        let ch = if i % 2 == 0 { &a_ch } else { &b_ch };
        answers.push(
            consent(ch)
                .record_consent(keyed(i))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let before = converged(&c, &[&a, &b]).await;
    let audit_before = audit_lines(&a);
    // The 36 writes' records, and the export's own when it lands before the read.
    assert!(audit_before >= 36, "{audit_before}");
    // Both replicas' copies catch up with the trail and the keys (a few heartbeats).
    tokio::time::sleep(Duration::from_millis(1000)).await;

    c.redis.restart(); // no persistence: it comes back empty
    let after = converged(&c, &[&a, &b]).await;
    assert_eq!(after, before, "the opt-outs are back in redis");
    // The audit trail came back whole and goes on from where it was.
    for s in [&a, &b] {
        verify_audit(s);
    }
    assert!(audit_lines(&b) >= audit_before, "records lost in the reset");
    // A retry of a write made before the reset gets its first answer.
    for (i, first) in answers.iter().enumerate() {
        let ch = if i % 2 == 0 { &b_ch } else { &a_ch };
        let again = consent(ch)
            .record_consent(keyed(i as u64))
            .await
            .unwrap()
            .into_inner();
        assert!(again.duplicate, "crm-{i} was forgotten in the reset");
        assert_eq!(again.consent_id, first.consent_id);
    }
    let reseeds: u64 = [&a, &b]
        .iter()
        .map(|s| readyz(s).1["store"]["reseeds"].as_u64().unwrap())
        .sum();
    assert_eq!(reseeds, 1, "exactly one replica put the log back");
    // Writes carry on from the same seq, and a new replica loads the re-seeded store.
    some_writes(&b_ch, 30, 3).await;
    let mut late = c.replica("late");
    late.ready().await;
    let (seq, _) = converged(&c, &[&a, &b, &late]).await;
    assert_eq!(seq, before.0 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_connections_killed_during_a_write_burst() {
    let c = Cluster::new(false, true, "");
    let mut a = c.replica("a");
    let mut b = c.replica("b");
    let mut r3 = c.replica("c");
    let (a_ch, b_ch) = (a.ready().await, b.ready().await);
    r3.ready().await;
    let writers: Vec<_> = [a_ch.clone(), b_ch.clone(), a_ch.clone(), b_ch.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, ch)| tokio::spawn(async move { some_writes(&ch, w as u64 * 1000, 150).await }))
        .collect();
    let mut killed = 0u64;
    let mut conn = c.redis.conn();
    while !writers.iter().all(|w| w.is_finished()) {
        let n: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut conn)
            .unwrap();
        killed += n;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(killed > 0, "no pub/sub connection was killed");
    let (seq, _) = converged(&c, &[&a, &b, &r3]).await;
    assert_eq!(seq, 600);
}

/// Reads the stream and the snapshot chunks as stored: what an attacker with Redis would see.
fn raw_store_text(conn: &mut redis::Connection) -> String {
    let mut text = String::new();
    let stream: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg("{preflight}:log")
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap();
    for (_, fields) in stream {
        for f in fields {
            text.push_str(&String::from_utf8_lossy(&f));
        }
    }
    // Every block Redis holds, named by the snapshot's directory or not.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("{preflight}:blk:*")
        .query(conn)
        .unwrap();
    for k in keys {
        let gz: Vec<u8> = redis::cmd("GET").arg(&k).query(conn).unwrap();
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut plain)
            .unwrap();
        text.push_str(&plain);
    }
    text
}

/// The index image Redis holds, decoded: its seq and the index (None when there is none).
fn stored_image(conn: &mut redis::Connection) -> Option<(u64, preflight::index::Index)> {
    let (id, seq, n): (Option<String>, Option<u64>, Option<usize>) = redis::cmd("HMGET")
        .arg("{preflight}:snap")
        .arg("img")
        .arg("img_seq")
        .arg("img_chunks")
        .query(conn)
        .unwrap();
    let (id, seq, n) = (id?, seq?, n?);
    let mut bytes = Vec::new();
    for i in 0..n {
        let part: Vec<u8> = redis::cmd("GET")
            .arg(format!("{{preflight}}:img:{id}:{i}"))
            .query(conn)
            .unwrap();
        bytes.extend(part);
    }
    let len = bytes.len() as u64;
    let (index, _) = preflight::index::Index::read_image(&mut bytes.as_slice(), len).unwrap();
    assert_eq!(index.seq(), seq);
    Some((seq, index))
}

fn metric(s: &Server, name: &str) -> f64 {
    let text = ureq::get(&format!("{}/metrics", s.http_url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The snapshot directory's lines: (first, last, key).
fn snapshot_directory(conn: &mut redis::Connection) -> Vec<(u64, u64, String)> {
    let dir: Option<String> = redis::cmd("HGET")
        .arg("{preflight}:snap")
        .arg("blocks")
        .query(conn)
        .unwrap();
    dir.unwrap_or_default()
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            (
                w[0].parse().unwrap(),
                w[1].parse().unwrap(),
                w[2].to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_upload_each_sealed_block_of_the_log_once() {
    let c = Cluster::new(false, true, "snapshot_every = 25\nstream_keep = 0");
    let mut a = c.replica("a");
    let a_ch = a.ready().await;
    // 4,500 entries in one call: a sealed block of the log (4,096 entries) and a tail.
    corporate_entries(&a_ch, 0, 4_500).await;
    let mut conn = c.redis.conn();
    until("a snapshot at 4,500", || {
        let dir = snapshot_directory(&mut conn);
        async move { dir.last().is_some_and(|b| b.1 >= 4_500) }
    })
    .await;
    let before = snapshot_directory(&mut conn);
    assert_eq!((before[0].0, before[0].1), (1, 4_096), "{before:?}");
    let before_last = before.last().unwrap().1;
    some_writes(&a_ch, 0, 30).await;
    // Any later snapshot: one taken while the writes were still arriving (a loaded machine
    // spreads them over several heartbeats) is not followed by another until 25 more.
    until("the next snapshot", || {
        let dir = snapshot_directory(&mut conn);
        async move { dir.last().is_some_and(|b| b.1 > before_last) }
    })
    .await;
    let after = snapshot_directory(&mut conn);
    // The sealed block is named again, not uploaded again; the old tail is gone.
    assert_eq!(after[0], before[0]);
    assert_ne!(after.last().unwrap().2, before.last().unwrap().2);
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("{preflight}:blk:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(stored.len(), after.len(), "{stored:?} vs {after:?}");
    // A replica started now loads the log from those blocks.
    let mut late = c.replica("late");
    late.ready().await;
    converged(&c, &[&a, &late]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_from_an_image_serves_before_it_holds_the_log_before_the_image() {
    let c = Cluster::new(
        false,
        true,
        "snapshot_every = 25\nstream_keep = 0\nimage_every = 25",
    );
    let mut a = c.replica("a");
    let a_ch = a.ready().await;
    // A person's history in the log's first sealed block (4,096 entries), a privacy request
    // in the second, and an index image after both.
    let secret = "2025550177";
    granted_then_withdrawn(&a_ch, secret).await;
    corporate_entries(&a_ch, 0, 4_500).await;
    let access = privacy_request(&a_ch, &[secret], pb::PrivacyRequestType::Access).await;
    corporate_entries(&a_ch, 4_500, 4_500).await;
    let mut conn = c.redis.conn();
    until("an index image past the first block", || {
        let img = stored_image(&mut conn).map(|(s, _)| s);
        async move { img.is_some_and(|s| s > 8_192) }
    })
    .await;
    assert!(snapshot_directory(&mut conn)[1].1 <= 8_192);

    // The late replica starts from the image and the blocks after it; it fetches the block
    // with the privacy events the image names before it serves, the other after.
    let mut late = c.replica("late");
    let late_ch = late.ready().await;
    let store = &index_state(&late)["store"];
    assert!(
        store["started_from_image_seq"]
            .as_u64()
            .is_some_and(|s| s > 8_192),
        "{store}"
    );
    converged(&c, &[&a, &late]).await;
    let d = check(&late_ch, secret, Ch::Voice, P::Marketing).await;
    assert!(reasons(&d).contains(&R::ConsentWithdrawn), "{d:?}");
    until("the log before the image fetched", || {
        let left = index_state(&late)["store"]["log_blocks_to_fetch"].as_u64();
        async move { left == Some(0) }
    })
    .await;
    // Fetched after it served: the first block and the one ending at the image's seq (the
    // image holds it); the second came before, for the privacy request.
    let late_blocks = index_state(&late)["store"]["log_blocks_fetched_late"].as_u64();
    assert_eq!(late_blocks, Some(2), "{}", index_state(&late));
    // Its records and its history reach back to seq 1, and the privacy request is known.
    let view = get_contact(&late_ch, secret).await;
    assert_eq!(view.consents.len(), 2, "{view:?}");
    let mut w = events(&late_ch)
        .watch(pb::WatchRequest {
            after_seq: 0,
            kinds: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    for want in 1..=3 {
        assert_eq!(w.message().await.unwrap().unwrap().seq, want);
    }
    drop(w);
    let got = privacy(&late_ch)
        .get_request(pb::GetRequestRequest {
            request_id: access.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.request_id, access.request_id);

    // An erasure reaches the late replica's copy of the old block too: the snapshot that
    // scrubs it holds no copy of the number, and the late replica answers without it.
    let r = privacy_request(&a_ch, &[secret], pb::PrivacyRequestType::Delete).await;
    assert_eq!(
        r.status,
        pb::PrivacyRequestStatus::Completed as i32,
        "{r:?}"
    );
    converged(&c, &[&a, &late]).await;
    let d = check(&late_ch, secret, Ch::Voice, P::Marketing).await;
    assert_eq!(d.verdict, pb::Verdict::Block as i32, "{d:?}");
    until("the stream and snapshot to be scrubbed", || {
        let text = raw_store_text(&mut conn);
        async move { !text.contains(secret) && !text.is_empty() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_replica_loads_the_snapshot_and_erasures_leave_no_copy_in_redis() {
    let mut c = Cluster::new(false, true, "snapshot_every = 25\nstream_keep = 0");
    let mut a = c.replica("a");
    let mut b = c.replica("b");
    let (a_ch, b_ch) = (a.ready().await, b.ready().await);
    some_writes(&a_ch, 0, 60).await;
    let secret = "2025550143";
    granted_then_withdrawn(&b_ch, secret).await;
    let mut conn = c.redis.conn();
    until("a snapshot and a trimmed stream", || {
        let snap: Option<u64> = redis::cmd("HGET")
            .arg("{preflight}:snap")
            .arg("seq")
            .query(&mut conn)
            .unwrap();
        let first: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg("{preflight}:log")
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query(&mut conn)
            .unwrap();
        let trimmed = first.first().is_none_or(|(id, _)| id != "1-0");
        async move { snap.unwrap_or(0) >= 25 && trimmed }
    })
    .await;
    until("an index image in redis", || {
        let img = stored_image(&mut conn).map(|(s, _)| s);
        async move { img.is_some_and(|s| s >= 25) }
    })
    .await;

    // The stream no longer reaches back to seq 1: a new replica starts from the index
    // image and replays only the log after it, and decides as the others do.
    let mut late = c.replica("late");
    let late_ch = late.ready().await;
    converged(&c, &[&a, &b, &late]).await;
    let store = &index_state(&late)["store"];
    let from = store["started_from_image_seq"].as_u64();
    assert!(from.is_some_and(|s| s >= 25), "{store}");
    assert!(
        store["replayed_at_start"]
            .as_u64()
            .is_some_and(|n| n < 62 - 24),
        "{store}"
    );
    let d = check(&late_ch, secret, Ch::Voice, P::Marketing).await;
    assert!(reasons(&d).contains(&R::ConsentWithdrawn), "{d:?}");
    // Its history for watchers reaches back to seq 1 (from the snapshot it loaded).
    let mut w = events(&late_ch)
        .watch(pb::WatchRequest {
            after_seq: 0,
            kinds: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    for want in 1..=62 {
        let ev = w.message().await.unwrap().unwrap();
        assert_eq!(ev.seq, want);
    }
    drop(w);

    // A DELETE on one replica: every replica moves the person's records under tokens, keeps
    // the opt-out enforced, and Redis keeps no copy of the number in clear.
    let r = privacy_request(&a_ch, &[secret], pb::PrivacyRequestType::Delete).await;
    assert_eq!(
        r.status,
        pb::PrivacyRequestStatus::Completed as i32,
        "{r:?}"
    );
    converged(&c, &[&a, &b, &late]).await;
    for ch in [&a_ch, &b_ch, &late_ch] {
        let d = check(ch, secret, Ch::Voice, P::Marketing).await;
        assert_eq!(d.verdict, pb::Verdict::Block as i32, "{d:?}");
        let view = get_contact(ch, secret).await;
        let shown = format!("{view:?}").replace(&view.normalized_contact, "");
        assert!(!shown.contains(secret), "{shown}");
    }
    // The audit trail, read from Redis by another replica: intact, and the person's personal
    // parts gone.
    let mut audit = pb::audit_service_client::AuditServiceClient::new(late_ch.clone());
    let v = audit
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok && v.erased > 0, "{v:?}");
    let mut records = audit
        .export_audit(pb::ExportAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(r) = records.message().await.unwrap() {
        assert!(
            !format!("{r:?}").contains(secret),
            "audit record {} names the person",
            r.seq
        );
        n += 1;
    }
    assert!(n > 60, "{n} audit records");
    let mut conn = c.redis.conn();
    until("the stream and snapshot to be scrubbed", || {
        let text = raw_store_text(&mut conn);
        async move { !text.contains(secret) && !text.is_empty() }
    })
    .await;
    // The index image is made again from the rewritten log: the number is not in it, the
    // person's opt-out is, under their token.
    let phone_key = preflight::model::ContactKey::Phone(format!("1{secret}").parse().unwrap());
    let token = preflight::audit::Tokenizer::load_or_create(&c.key)
        .unwrap()
        .token_of(&phone_key);
    until("an index image made after the erasure", || {
        let clean = stored_image(&mut conn).is_some_and(|(_, index)| {
            index.fact_seqs(std::slice::from_ref(&phone_key)).is_empty()
                && !index
                    .fact_seqs(&[preflight::model::ContactKey::Erased(token)])
                    .is_empty()
        });
        async move { clean }
    })
    .await;
    // A replica starting from it keeps the erased person's opt-out enforced.
    let mut after = c.replica("after-erasure");
    let after_ch = after.ready().await;
    converged(&c, &[&a, &b, &late, &after]).await;
    assert!(index_state(&after)["store"]["started_from_image_seq"].is_u64());
    let d = check(&after_ch, secret, Ch::Voice, P::Marketing).await;
    assert_eq!(d.verdict, pb::Verdict::Block as i32, "{d:?}");
    drop(after);
    // An image that fails its checks is refused with an error and a metric, and the
    // replica loads the whole log instead.
    let (id, n): (String, usize) = redis::cmd("HMGET")
        .arg("{preflight}:snap")
        .arg("img")
        .arg("img_chunks")
        .query(&mut conn)
        .map(|(i, n): (Option<String>, Option<usize>)| (i.unwrap(), n.unwrap()))
        .unwrap();
    let last = format!("{{preflight}}:img:{id}:{}", n - 1);
    let mut chunk: Vec<u8> = redis::cmd("GET").arg(&last).query(&mut conn).unwrap();
    let at = chunk.len() / 2;
    chunk[at] ^= 0x55;
    let _: () = redis::cmd("SET")
        .arg(&last)
        .arg(chunk)
        .query(&mut conn)
        .unwrap();
    let mut torn = c.replica("torn-image");
    let torn_ch = torn.ready().await;
    converged(&c, &[&a, &b, &late, &torn]).await;
    assert!(index_state(&torn)["store"]["started_from_image_seq"].is_null());
    assert_eq!(metric(&torn, "preflight_index_image_rejected_total"), 1.0);
    let d = check(&torn_ch, secret, Ch::Voice, P::Marketing).await;
    assert_eq!(d.verdict, pb::Verdict::Block as i32, "{d:?}");
    drop(torn);

    // Redis comes back empty: the trail written back from a replica's copy is whole and
    // verifies, and the erased person's personal parts do not come back with it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(conn);
    c.redis.restart();
    converged(&c, &[&a, &b, &late]).await;
    let v = audit
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok && v.erased > 0 && v.records >= n as u64, "{v:?}");
    let mut conn = c.redis.conn();
    let personal: Vec<Vec<u8>> = redis::cmd("HVALS")
        .arg("{preflight}:audit:personal")
        .query(&mut conn)
        .unwrap();
    assert!(!personal.is_empty(), "personal parts of others came back");
    assert!(
        personal
            .iter()
            .all(|p| !String::from_utf8_lossy(p).contains(secret)),
        "an erased personal part came back"
    );
    let text = raw_store_text(&mut conn);
    assert!(!text.contains(secret));
    // Nor do the replicas' copies on disk, free pages included.
    for name in ["a", "b", "late"] {
        let file = c.dir.path().join(name).join("redis-copy.redb");
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the erased number",
            file.display()
        );
    }
}

fn registry_file(dir: &Path) -> (PathBuf, Vec<String>) {
    let f = dir.join("federal.txt");
    preflight::registry::generate::Generator::new(5)
        .write(5_000, false, &mut std::fs::File::create(&f).unwrap())
        .unwrap();
    let numbers = std::fs::read_to_string(&f)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    (f, numbers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_versions_travel_through_redis() {
    let c = Cluster::new(false, true, "");
    let mut a = c.replica("a");
    let mut b = c.replica("b");
    let (a_ch, b_ch) = (a.ready().await, b.ready().await);
    let (file, numbers) = registry_file(c.dir.path());
    let chunks: Vec<pb::ImportRegistryChunk> = std::fs::read(&file)
        .unwrap()
        .chunks(64 * 1024)
        .map(|part| pb::ImportRegistryChunk {
            list: "FEDERAL".into(),
            mode: pb::ImportMode::Full as i32,
            file_name: "federal.txt".into(),
            data: part.to_vec(),
            max_reject_fraction: 0.0,
        })
        .collect();
    dnc(&a_ch)
        .import_registry(futures::stream::iter(chunks))
        .await
        .unwrap();
    until("b to serve the federal list", || {
        let ch = b_ch.clone();
        let n = numbers[17].clone();
        async move {
            let d = check(&ch, &n, Ch::Voice, P::Marketing).await;
            reasons(&d).contains(&R::DncFederal)
        }
    })
    .await;
    let lists = dnc(&b_ch)
        .list_registries(pb::ListRegistriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let fed = &lists.registries[0];
    assert_eq!(
        (fed.name.as_str(), fed.version, fed.count),
        ("FEDERAL", 1, 5_000)
    );
    // A replica started later takes it from Redis too.
    let mut late = c.replica("late");
    let late_ch = late.ready().await;
    let d = check(&late_ch, &numbers[4_000], Ch::Sms, P::Marketing).await;
    assert!(reasons(&d).contains(&R::DncFederal), "{d:?}");
}
