//! API tokens with roles, over TLS on both listeners: who may check, who may write, what a
//! wrong token gets, and that the audit trail names the token rather than a claim.
mod common;

use common::*;
use preflight::proto as pb;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const CHECK_TOKEN: &str = "chk-4fd1c0a7e2b94d1f";
const WRITE_TOKEN: &str = "wrt-9b3e51c8d7a04e26";
const ADMIN_TOKEN: &str = "adm-1c7f0e9a2b5d4c83";
const WRONG_TOKEN: &str = "wrt-ZZZZ-not-a-real-one";

struct Tls {
    ca_pem: String,
}

fn write_config(dir: &std::path::Path) -> Tls {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let admin_file = dir.join("admin.token");
    std::fs::write(&admin_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let config = format!(
        r#"
[tls]
cert_file = "{}"
key_file = "{}"

[[tokens]]
name = "genesys-flows"
role = "check"
token_env = "T_CHECK"

[[tokens]]
name = "crm-sync"
role = "write"
token_env = "T_WRITE"

[[tokens]]
name = "compliance-officer"
role = "admin"
token_file = "{}"
"#,
        cert.display(),
        key.display(),
        admin_file.display()
    );
    std::fs::write(dir.join("preflight.toml"), config).unwrap();
    Tls {
        ca_pem: ck.cert.pem(),
    }
}

async fn tls_channel(port: u16, tls: &Tls) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                .domain_name("localhost"),
        )?
        .connect()
        .await
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn https_agent(tls: &Tls) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let ca = Certificate::from_pem(tls.ca_pem.as_bytes())
        .unwrap()
        .to_owned();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(std::sync::Arc::new(vec![ca])))
                .build(),
        )
        .build()
        .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_roles_and_tls_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let tls = write_config(dir.path());
    let log = dir.path().join("server.log");
    let config = dir.path().join("preflight.toml");
    let srv = Server::start_full(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[("T_CHECK", CHECK_TOKEN), ("T_WRITE", WRITE_TOKEN)],
        Some(&log),
    );

    // Health needs no token; it is how Kubernetes probes the pod.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ch = loop {
        if let Ok(ch) = tls_channel(srv.port, &tls).await {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
            if h.check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_ok()
            {
                break ch;
            }
        }
        assert!(Instant::now() < deadline, "TLS server not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Plain text against the TLS port gets nothing.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{}", srv.port))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        let r = decision(&plain)
            .check(with_token(
                check_req("2025550142", pb::Channel::Sms, pb::Purpose::Marketing),
                CHECK_TOKEN,
            ))
            .await;
        assert!(r.is_err(), "plain-text call answered on a TLS listener");
    }

    let req = || check_req("2025550142", pb::Channel::Sms, pb::Purpose::Marketing);
    // No token, a wrong token: UNAUTHENTICATED.
    let e = decision(&ch).check(req()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = decision(&ch)
        .check(with_token(req(), WRONG_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(!e.message().contains(WRONG_TOKEN));

    // The check token checks, but cannot write or read personal data.
    let r = decision(&ch)
        .check(with_token(req(), CHECK_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.verdict, pb::Verdict::Block as i32);
    let e = consent(&ch)
        .record_consent(with_token(
            grant("2025550142", &[pb::Channel::Sms], &[pb::Purpose::Marketing]),
            CHECK_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("genesys-flows") && e.message().contains("write"));
    let e = consent(&ch)
        .get_contact(with_token(
            pb::GetContactRequest {
                contact: "2025550142".into(),
                ..Default::default()
            },
            CHECK_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);

    // The write token writes (and claims to act for someone, which goes on record as such).
    let mut w = with_token(
        grant("2025550142", &[pb::Channel::Sms], &[pb::Purpose::Marketing]),
        WRITE_TOKEN,
    );
    w.metadata_mut()
        .insert("x-actor", "agent-jane".parse().unwrap());
    let written = consent(&ch).record_consent(w).await.unwrap().into_inner();
    let r = decision(&ch)
        .check(with_token(req(), CHECK_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.verdict, pb::Verdict::Allow as i32);

    // Admin calls: write is not enough, admin is.
    let mut audit = pb::audit_service_client::AuditServiceClient::new(ch.clone());
    let e = audit
        .export_audit(with_token(pb::ExportAuditRequest::default(), WRITE_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let mut stream = audit
        .export_audit(with_token(pb::ExportAuditRequest::default(), ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let mut found = None;
    while let Some(rec) = stream.message().await.unwrap() {
        if rec.event_seq == written.seq {
            found = Some(rec);
        }
    }
    let rec = found.expect("audit record of the consent write");
    assert_eq!(rec.actor, "crm-sync", "the token's name, not the claim");
    assert_eq!(
        rec.metadata.get("on_behalf_of").map(String::as_str),
        Some("agent-jane")
    );

    // REST over TLS: the same tokens and roles, Bearer or Basic.
    let agent = https_agent(&tls);
    let base = format!("https://localhost:{}", srv.http_port);
    let url = format!("{base}/v1/check?contact=2025550142&channel=sms");
    let status = |r: Result<ureq::http::Response<ureq::Body>, ureq::Error>| {
        r.expect("HTTPS request").status().as_u16()
    };
    assert_eq!(status(agent.get(&url).call()), 401);
    assert_eq!(
        status(
            agent
                .get(&url)
                .header("authorization", format!("Bearer {WRONG_TOKEN}"))
                .call()
        ),
        401
    );
    let mut ok = agent
        .get(&url)
        .header("authorization", format!("Bearer {CHECK_TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert!(ok.body_mut().read_to_string().unwrap().contains("ALLOW"));
    let form = "From=%2B12025550142&To=%2B18005550100&Body=STOP&MessageSid=SM9";
    let post_form = |auth: &str| {
        agent
            .post(&format!("{base}/v1/webhooks/sms"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", auth)
            .send(form.as_bytes())
    };
    assert_eq!(status(post_form(&format!("Bearer {CHECK_TOKEN}"))), 403);
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("twilio:{WRITE_TOKEN}"));
    assert_eq!(status(post_form(&format!("Basic {basic}"))), 200);
    // Probes and metrics stay open for the kubelet and Prometheus.
    assert_eq!(status(agent.get(&format!("{base}/healthz")).call()), 200);
    assert_eq!(status(agent.get(&format!("{base}/metrics")).call()), 200);
    // Plain HTTP against the TLS listener is not served.
    let plain = ureq::get(&format!("http://127.0.0.1:{}/healthz", srv.http_port)).call();
    assert!(plain.is_err(), "plain HTTP answered on a TLS listener");

    // The CLI over TLS with a CA file, with and without its token.
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let cli = |token: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"));
        c.args(["check", "2025550142", "--channel", "sms"])
            .args(["--server", &format!("https://localhost:{}", srv.port)])
            .arg("--ca-cert")
            .arg(&ca)
            .env_remove("PREFLIGHT_TOKEN");
        if let Some(t) = token {
            c.args(["--token", t]);
        }
        c.output().unwrap()
    };
    let o = cli(Some(CHECK_TOKEN));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The STOP webhook above opted the number out.
    assert!(String::from_utf8_lossy(&o.stdout).contains("CONSENT_WITHDRAWN"));
    let o = cli(None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Unauthenticated"));

    srv.stop();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("call refused"), "refusals are logged:\n{log}");
    assert!(
        log.contains("request refused"),
        "REST refusals are logged:\n{log}"
    );
    for secret in [CHECK_TOKEN, WRITE_TOKEN, ADMIN_TOKEN, WRONG_TOKEN] {
        assert!(!log.contains(secret), "a token reached the log");
    }
}

#[test]
fn a_token_that_is_not_set_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(["serve", "--config"])
        .arg(dir.path().join("preflight.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .env("T_CHECK", CHECK_TOKEN)
        .env_remove("T_WRITE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tokens[1] (crm-sync)") && err.contains("T_WRITE is not set"),
        "{err}"
    );
}
