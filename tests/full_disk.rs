//! A full disk under the embedded store: writes fail UNAVAILABLE and readiness says why
//! while checks keep answering; once space returns the store reopens itself and writes
//! succeed again; every acknowledged write survives a restart.
mod common;

use common::*;
use pb::{Channel as Ch, Purpose as P};
use preflight::proto as pb;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A small tmpfs mounted for the test and unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `path` until it refuses another byte.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

fn readyz(port: u16) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .call()
        .unwrap();
    let code = r.status().as_u16();
    (
        code,
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap(),
    )
}

async fn grpc_health(ch: &tonic::transport::Channel) -> i32 {
    tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

fn number(i: usize) -> String {
    format!("+1312555{:04}", i % 10_000)
}

#[tokio::test]
async fn a_full_disk_heals_and_loses_no_acknowledged_write() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("disk");
    let _fs = match Tmpfs::mount(&mnt, "24m") {
        Ok(m) => m,
        Err(e) => {
            println!("SKIPPED: cannot mount a tmpfs here ({e}); run as root to test a full disk");
            return;
        }
    };
    let data = mnt.join("data");
    let log = base.path().join("server.log");
    let mut srv = Server::start_full(&data, &[], &[], Some(&log));
    let ch = srv.ready().await;
    let mut c = consent(&ch);
    let mut acked: Vec<String> = Vec::new();
    let mut i = 0;
    for _ in 0..20 {
        c.record_consent(withdraw(&number(i))).await.unwrap();
        acked.push(number(i));
        i += 1;
    }

    let filler = mnt.join("filler");
    fill(&filler);
    // redb may still have free pages inside its file for a while; write until it has none
    // and refuses several writes in a row.
    let mut refused = 0;
    let mut in_a_row = 0;
    while in_a_row < 3 {
        assert!(
            i < 9_000,
            "the store kept acknowledging writes on a full disk"
        );
        match c.record_consent(withdraw(&number(i))).await {
            Ok(_) => {
                acked.push(number(i));
                in_a_row = 0;
            }
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                refused += 1;
                in_a_row += 1;
            }
        }
        i += 1;
    }
    // Readiness says why, checks keep answering.
    let (code, body) = readyz(srv.http_port);
    assert_eq!(
        code,
        503,
        "{body}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(body["status"], "NOT_SERVING");
    assert!(
        body["reason"].as_str().unwrap().contains("durable"),
        "{body}"
    );
    // gRPC health follows within its polling interval.
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    while grpc_health(&ch).await != not_serving {
        assert!(Instant::now() < deadline, "gRPC health still SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = check(&ch, &acked[0], Ch::Sms, P::Marketing).await;
    assert!(reasons(&r).contains(&pb::Reason::ConsentWithdrawn), "{r:?}");

    // Space returns: the store reopens itself and takes writes again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(srv.http_port).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the store did not heal once space returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..20 {
        c.record_consent(withdraw(&number(i))).await.unwrap();
        acked.push(number(i));
        i += 1;
    }
    srv.stop();

    let mut srv = Server::start_full(&data, &[], &[], Some(&log));
    let ch = srv.ready().await;
    for chunk in acked.chunks(1000) {
        let out = decision(&ch)
            .check_batch(pb::CheckBatchRequest {
                checks: chunk
                    .iter()
                    .map(|n| check_req(n, Ch::Sms, P::Marketing))
                    .collect(),
            })
            .await
            .unwrap()
            .into_inner();
        for (n, r) in chunk.iter().zip(&out.results) {
            assert!(
                r.reasons.contains(&(pb::Reason::ConsentWithdrawn as i32)),
                "acknowledged withdrawal of {n} lost: {r:?}"
            );
        }
    }
    println!(
        "{} acknowledged writes survived; {} refused while full",
        acked.len(),
        refused
    );
    srv.stop();
}
