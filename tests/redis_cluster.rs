//! Redis Cluster: three masters with two replicas each (one left for WAIT after a failover), made by `redis-cli --cluster create`
//! from real `redis-server --cluster-enabled` processes on free loopback ports. Replicas
//! commit through the cluster client (every key carries one hash tag, so the Lua commit
//! runs on one shard), follow each other through pub/sub across nodes, and carry on through
//! a failover of the master that holds the slot without losing an acknowledged withdrawal.
mod common;

use common::failover::{missing, wait_until_async, withdrawals_while};
use common::redis_server::{Proc, query, redis, wait_until};
use common::*;
use preflight::proto as pb;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Cluster {
    nodes: Vec<(u16, Option<Proc>)>,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let ports: Vec<u16> = (0..9).map(|_| free_port()).collect();
        let nodes: Vec<(u16, Option<Proc>)> = ports
            .iter()
            .map(|p| {
                let extra: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{p}.conf"),
                    "--cluster-node-timeout",
                    "1000",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                (*p, Some(redis(dir, *p, &extra)))
            })
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "2", "--cluster-yes"])
            .output()
            .expect("redis-cli is needed (scripts/test.sh installs redis-server, which brings it)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for p in &ports {
            wait_until(30, "cluster_state:ok", || {
                query::<String>(*p, redis::cmd("CLUSTER").arg("INFO"))
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            });
        }
        // Each master's replica in sync (WAIT counts only those).
        wait_until(30, "every master's replica in sync", || {
            ports
                .iter()
                .filter_map(|p| query::<String>(*p, redis::cmd("INFO").arg("replication")).ok())
                .filter(|i| i.contains("role:master"))
                .all(|i| i.matches("state=online").count() == 2)
        });
        Cluster { nodes }
    }

    /// The port of the master serving `slot`, from CLUSTER NODES.
    fn master_of(&self, slot: u16) -> u16 {
        let alive = self.nodes.iter().find(|(_, p)| p.is_some()).unwrap().0;
        let text: String = query(alive, redis::cmd("CLUSTER").arg("NODES")).unwrap();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            for range in &f[8..] {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>())
                    && (a..=b).contains(&slot)
                {
                    let addr = f[1].split('@').next().unwrap();
                    return addr.rsplit_once(':').unwrap().1.parse().unwrap();
                }
            }
        }
        panic!("no master serves slot {slot}:\n{text}");
    }

    fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|(p, _)| *p == port).unwrap();
        drop(node.1.take());
    }

    fn config(&self, dir: &Path) -> PathBuf {
        let key = dir.join("privacy.key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(p, _)| format!("\"127.0.0.1:{p}\""))
            .collect();
        let p = dir.join("preflight.toml");
        std::fs::write(
            &p,
            format!(
                "[privacy]\nkey_file = {:?}\n\n[redis]\ncluster_nodes = [{}]\ntimeout_ms = 1500\n\
                 heartbeat_ms = 100\nmin_replicas_ack = 1\nreplica_ack_timeout_ms = 500\n",
                key.to_str().unwrap(),
                nodes.join(", ")
            ),
        )
        .unwrap();
        p
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_cluster_slot_and_survive_a_failover_of_its_master() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let cfg = cluster.config(dir.path());
    let args = ["--config", cfg.to_str().unwrap()];
    let (mut a, mut b) = (
        Server::start_with(&dir.path().join("a"), &args),
        Server::start_with(&dir.path().join("b"), &args),
    );
    let (ca, cb) = (a.ready().await, b.ready().await);
    // Written on A, seen on B through pub/sub and the stream, whichever node B listens on.
    consent(&ca)
        .record_consent(withdraw("+12025550142"))
        .await
        .unwrap();
    wait_until_async(10, || async {
        missing(&cb, &["+12025550142".to_string()]).await == 0
    })
    .await;
    // Every key of the store is in the slot of its hash tag.
    let slot = preflight::store::redis::conn::key_slot("{preflight}:seq");
    let holder = cluster.master_of(slot);
    let keys: Vec<String> = query(holder, redis::cmd("KEYS").arg("*")).unwrap();
    assert!(
        keys.iter().all(|k| k.starts_with("{preflight}:")),
        "{keys:?}"
    );
    assert!(keys.len() > 3, "{keys:?}");

    // An erasure on a cluster: the remembered answer that names the person goes too (its
    // SCAN must walk the node holding the slot, not a random one).
    let mut g = grant(
        "+12025550143",
        &[pb::Channel::Sms],
        &[pb::Purpose::Marketing],
    );
    g.idempotency_key = "crm-grant-143".into();
    consent(&ca).record_consent(g).await.unwrap();
    let naming = || -> usize {
        let keys: Vec<String> = query(holder, redis::cmd("KEYS").arg("*idem:*")).unwrap();
        keys.iter()
            .filter(|k| {
                query::<Vec<u8>>(holder, redis::cmd("GET").arg(*k))
                    .unwrap_or_default()
                    .windows(12)
                    .any(|w| w == b"+12025550143")
            })
            .count()
    };
    assert_eq!(naming(), 1);
    let r = privacy_request(&ca, &["+12025550143"], pb::PrivacyRequestType::Delete).await;
    assert_eq!(
        r.status,
        pb::PrivacyRequestStatus::Completed as i32,
        "{r:?}"
    );
    assert_eq!(
        naming(),
        0,
        "an idempotency answer still names the erased person"
    );

    // The master holding the slot dies; its replica is promoted; writes carry on.
    let (acked, after) = withdrawals_while(&ca, || cluster.kill(holder)).await;
    assert!(after > 0, "no write succeeded after the failover");
    assert_ne!(cluster.master_of(slot), holder);
    for ch in [&ca, &cb] {
        wait_until_async(20, || async { missing(ch, &acked).await == 0 }).await;
    }
    let mut fresh = Server::start_with(&dir.path().join("fresh"), &args);
    let fch = fresh.ready().await;
    assert_eq!(
        missing(&fch, &acked).await,
        0,
        "of {} acknowledged",
        acked.len()
    );
    println!(
        "cluster: {} withdrawals acknowledged ({after} after the slot's master died), none lost",
        acked.len()
    );
}
