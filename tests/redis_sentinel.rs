//! Redis behind Sentinel: a real master, two Redis replicas and a `redis-server --sentinel`
//! on free loopback ports. Eight writers record withdrawals through one preflight replica
//! while the Redis master is SIGKILLed; Sentinel promotes a Redis replica; every
//! acknowledged withdrawal must then be on that preflight replica and on one started
//! afresh, and writes must succeed again. With `min_replicas_ack = 0` the same run prints
//! what was lost instead of asserting it.
mod common;

use common::failover::{missing, wait_until_async, withdrawals_while};
use common::redis_server::{Proc, query, redis, wait_until};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A master, two replicas of it and one sentinel watching them as `mymaster`.
struct Topology {
    master: Option<Proc>,
    _replicas: Vec<Proc>,
    _sentinel: Proc,
    sentinel_port: u16,
    master_port: u16,
    replica_ports: Vec<u16>,
}

fn topology(dir: &Path) -> Topology {
    let (mp, r1, r2, sp) = (free_port(), free_port(), free_port(), free_port());
    let master = redis(dir, mp, &[]);
    let of = |_: u16| {
        vec![
            "--replicaof".to_string(),
            "127.0.0.1".into(),
            mp.to_string(),
        ]
    };
    let replicas = vec![redis(dir, r1, &of(r1)), redis(dir, r2, &of(r2))];
    wait_until(20, "both replicas in sync", || {
        query::<String>(mp, redis::cmd("INFO").arg("replication"))
            .map(|i| i.contains("connected_slaves:2") && i.matches("state=online").count() == 2)
            .unwrap_or(false)
    });
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sp}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
             sentinel monitor mymaster 127.0.0.1 {mp} 1\n\
             sentinel down-after-milliseconds mymaster 500\n\
             sentinel failover-timeout mymaster 5000\n\
             sentinel parallel-syncs mymaster 2\n",
            dir.display()
        ),
    )
    .unwrap();
    let sentinel = Proc(
        Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .arg("--logfile")
            .arg(dir.join("sentinel.log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel"),
    );
    wait_until(20, "the sentinel sees both replicas", || {
        query::<Vec<redis::Value>>(sp, redis::cmd("SENTINEL").arg("replicas").arg("mymaster"))
            .map(|r| r.len() == 2)
            .unwrap_or(false)
    });
    Topology {
        master: Some(master),
        _replicas: replicas,
        _sentinel: sentinel,
        sentinel_port: sp,
        master_port: mp,
        replica_ports: vec![r1, r2],
    }
}

fn config(dir: &Path, sentinel_port: u16, min_acks: u32) -> PathBuf {
    let key = dir.join("privacy.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let p = dir.join(format!("preflight-{min_acks}.toml"));
    std::fs::write(
        &p,
        format!(
            "[privacy]\nkey_file = {:?}\n\n[redis]\nsentinels = [\"127.0.0.1:{sentinel_port}\"]\n\
             sentinel_master = \"mymaster\"\ntimeout_ms = 1000\nheartbeat_ms = 100\n\
             min_replicas_ack = {min_acks}\nreplica_ack_timeout_ms = 500\n",
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    p
}

/// Eight writers through a preflight replica, the Redis master killed under them.
async fn withdrawals_across_a_failover(
    dir: &Path,
    t: &mut Topology,
    min_acks: u32,
) -> (Vec<String>, usize, Server) {
    let cfg = config(dir, t.sentinel_port, min_acks);
    let mut p = Server::start_with(&dir.join("p"), &["--config", cfg.to_str().unwrap()]);
    let ch = p.ready().await;
    let master = t.master.take();
    let (acked, after) = withdrawals_while(&ch, move || drop(master)).await;
    (acked, after, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_replica_acks_no_acknowledged_withdrawal_is_lost_on_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = topology(dir.path());
    let (acked, after, mut p) = withdrawals_across_a_failover(dir.path(), &mut t, 1).await;
    assert!(after > 0, "no write succeeded after the failover");
    let ready = readyz(&p).1;
    let master = ready["store"]["master"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        t.replica_ports
            .iter()
            .any(|r| master.ends_with(&format!(":{r}"))),
        "the promoted replica is the master now: {ready}"
    );
    assert_ne!(master, format!("127.0.0.1:{}", t.master_port));
    assert!(
        ready["store"]["failovers"].as_u64().unwrap() >= 1,
        "{ready}"
    );
    // On the replica that wrote them, once it has caught up, and on one started afresh.
    let ch = p.ready().await;
    wait_until_async(20, || async { missing(&ch, &acked).await == 0 }).await;
    let cfg = config(dir.path(), t.sentinel_port, 1);
    let mut fresh = Server::start_with(
        &dir.path().join("fresh"),
        &["--config", cfg.to_str().unwrap()],
    );
    let fch = fresh.ready().await;
    assert_eq!(
        missing(&fch, &acked).await,
        0,
        "of {} acknowledged",
        acked.len()
    );
    println!(
        "min_replicas_ack = 1: {} withdrawals acknowledged ({after} after the kill), none lost",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_replica_acks_a_failover_may_lose_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = topology(dir.path());
    let (acked, after, _p) = withdrawals_across_a_failover(dir.path(), &mut t, 0).await;
    let cfg = config(dir.path(), t.sentinel_port, 0);
    let mut fresh = Server::start_with(
        &dir.path().join("fresh"),
        &["--config", cfg.to_str().unwrap()],
    );
    let fch = fresh.ready().await;
    let lost = missing(&fch, &acked).await;
    // Documented, not asserted: Redis replication is asynchronous.
    println!(
        "min_replicas_ack = 0: {} withdrawals acknowledged ({after} after the kill), {lost} missing after the failover",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_knows_no_such_master_keeps_the_replica_not_serving() {
    let dir = tempfile::tempdir().unwrap();
    let t = topology(dir.path());
    let cfg = config(dir.path(), t.sentinel_port, 0);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"mymaster\"", "\"no-such-master\"");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("p.log");
    let p = Server::start_full(
        &dir.path().join("p"),
        &["--config", cfg.to_str().unwrap()],
        &[],
        Some(&log),
    );
    let mut body = serde_json::Value::Null;
    wait_until_async(20, || {
        body = readyz(&p).1;
        let why = body["store"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        async move { why.contains("knows no master named `no-such-master`") }
    })
    .await;
    assert_eq!(body["status"], "NOT_SERVING", "{body}");
    let mut c = consent(
        &tonic::transport::Channel::from_shared(p.url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let e = c
        .record_consent(withdraw("+12025550142"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    drop(p);
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("no-such-master")
    );
}
