//! Redis over TLS, as managed offerings serve it: a real `redis-server --tls-port` with a
//! private CA the test generates, mutual TLS and an ACL user; a server certificate the
//! replica cannot verify keeps it NOT_SERVING with the reason (never plain text); bad TLS
//! settings stop the start naming the key or file.
mod common;

use common::*;
use preflight::proto as pb;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
fn pki(dir: &Path, name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let write = |file: &str, text: String| {
        let p = dir.join(format!("{name}-{file}"));
        std::fs::write(&p, text).unwrap();
        p
    };
    let leaf = |sans: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (sc, sk) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (cc, ck) = leaf(vec!["preflight-replica".into()]);
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", sc),
        server_key: write("server.key", sk),
        client_cert: write("client.pem", cc),
        client_key: write("client.key", ck),
    }
}

/// `redis-server` serving only TLS, requiring client certificates, with an ACL user.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(dir: &Path, pki: &Pki) -> TlsRedis {
        let port = free_port();
        let log = dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(&pki.server_cert)
            .arg("--tls-key-file")
            .arg(&pki.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .args(["--tls-auth-clients", "yes"])
            .args(["--user", "default", "off"])
            .args([
                "--user",
                "replica",
                "on",
                ">s3cret-pass",
                "~*",
                "&*",
                "+@all",
            ])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is needed (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Ready to accept connections")
        {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, body: &str) -> PathBuf {
    let key = dir.join("privacy.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let p = dir.join(format!("preflight-{}.toml", free_port()));
    std::fs::write(
        &p,
        format!(
            "[privacy]\nkey_file = {:?}\n\n[redis]\ntimeout_ms = 1000\nheartbeat_ms = 100\n{body}\n",
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    p
}

fn check_config(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_over_mutual_tls_with_an_acl_user_serves_and_a_wrong_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = pki(dir.path(), "good");
    let other = pki(dir.path(), "other");
    let redis = TlsRedis::start(dir.path(), &good);
    let url = format!("rediss://replica:s3cret-pass@127.0.0.1:{}", redis.port);
    let tls = |p: &Pki| {
        format!(
            "url = {url:?}\nca_file = {:?}\nclient_cert_file = {:?}\nclient_key_file = {:?}\n",
            p.ca.to_str().unwrap(),
            good.client_cert.to_str().unwrap(),
            good.client_key.to_str().unwrap()
        )
    };
    let good_config = config(dir.path(), &tls(&good));
    let mut a = Server::start_with(
        &dir.path().join("a"),
        &["--config", good_config.to_str().unwrap()],
    );
    let ch = a.ready().await;
    consent(&ch)
        .record_consent(withdraw("+12025550142"))
        .await
        .unwrap();
    let r = check(
        &ch,
        "+12025550142",
        pb::Channel::Sms,
        pb::Purpose::Marketing,
    )
    .await;
    assert_eq!(reasons(&r), [pb::Reason::ConsentWithdrawn]);
    let (code, body) = readyz(&a);
    assert_eq!(code, 200, "{body}");
    assert!(
        !body.to_string().contains("s3cret-pass"),
        "the password is never shown: {body}"
    );

    // A CA that did not sign the server's certificate: NOT_SERVING, the reason in /readyz
    // and the log, and no fallback to plain text (the server has no plain port anyway).
    let bad_config = config(dir.path(), &tls(&other));
    let log = dir.path().join("b.log");
    let b = Server::start_full(
        &dir.path().join("b"),
        &["--config", bad_config.to_str().unwrap()],
        &[],
        Some(&log),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (code, body) = readyz(&b);
        if code == 503 && body["store"]["last_error"].is_string() {
            break body;
        }
        assert!(Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["status"], "NOT_SERVING");
    let why = body["store"]["last_error"].as_str().unwrap().to_lowercase();
    assert!(
        why.contains("certificate") || why.contains("issuer"),
        "{body}"
    );
    drop(b);
    let logged = std::fs::read_to_string(&log).unwrap().to_lowercase();
    assert!(
        logged.contains("certificate") || logged.contains("issuer"),
        "{logged}"
    );

    // Without the client certificate the server refuses the handshake.
    let no_client = config(
        dir.path(),
        &format!("url = {url:?}\nca_file = {:?}\n", good.ca.to_str().unwrap()),
    );
    let c = Server::start_with(
        &dir.path().join("c"),
        &["--config", no_client.to_str().unwrap()],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(readyz(&c).0, 503);
}

#[test]
fn bad_tls_and_sentinel_settings_stop_the_start_naming_the_key_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), "x");
    let fault = |body: &str| {
        let (ok, err) = check_config(&config(dir.path(), body));
        assert!(!ok, "{body}");
        err
    };
    let e = fault("url = \"rediss://127.0.0.1:6380/#insecure\"\n");
    assert!(
        e.contains("redis.url") && e.contains("allow_insecure_tls"),
        "{e}"
    );
    let e = fault(&format!(
        "url = \"rediss://127.0.0.1:6380\"\nca_file = {:?}\n",
        dir.path().join("missing-ca.pem").to_str().unwrap()
    ));
    assert!(
        e.contains("redis.ca_file") && e.contains("missing-ca.pem"),
        "{e}"
    );
    let e = fault(&format!(
        "url = \"rediss://127.0.0.1:6380\"\nca_file = {:?}\n",
        p.server_key.to_str().unwrap()
    ));
    assert!(
        e.contains("redis.ca_file") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = fault(&format!(
        "url = \"rediss://127.0.0.1:6380\"\nclient_cert_file = {:?}\n",
        p.client_cert.to_str().unwrap()
    ));
    assert!(e.contains("client_key_file"), "{e}");
    let e = fault(
        "url = \"redis://127.0.0.1:6379\"\nsentinels = [\"127.0.0.1:26379\"]\nsentinel_master = \"m\"\n",
    );
    assert!(
        e.contains("redis.url") && e.contains("redis.sentinels"),
        "{e}"
    );
    let e = fault("sentinels = [\"127.0.0.1:26379\"]\n");
    assert!(e.contains("redis.sentinel_master"), "{e}");
    let e = fault("sentinels = [\"nowhere\"]\nsentinel_master = \"m\"\n");
    assert!(e.contains("redis.sentinels.0"), "{e}");
    // Allowed on purpose: starts (check-config does not dial).
    let (ok, e) = check_config(&config(
        dir.path(),
        "url = \"rediss://127.0.0.1:6380/#insecure\"\nallow_insecure_tls = true\n",
    ));
    assert!(ok, "{e}");
}
