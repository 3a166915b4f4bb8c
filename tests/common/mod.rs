//! Test harness: runs the real `preflight` binary on a free loopback port and speaks gRPC to it.
#![allow(dead_code)]

pub mod failover;
pub mod receiver;
pub mod redis_server;

use preflight::proto as pb;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A loopback port nobody listens on, never the same one twice in this process: the OS may
/// hand a just-released port to the next bind(0), and tests start servers in parallel.
/// A rules file with no calling-hours rules.
pub const NO_CALLING_RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/no_calling_rules.toml"
);

pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_full(data_dir, extra, &[], None)
    }

    /// With extra environment variables, and stderr captured to `log` when given.
    pub fn start_full(
        data_dir: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Server {
        let port = free_port();
        let http_port = free_port();
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
            None => Stdio::inherit(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_preflight"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
            .args(extra)
            .env("RUST_LOG", "warn")
            // Answers that do not depend on the time of day the suite runs at; a test about
            // calling hours sets this to "" (the built-in rules) and asks with a fixed `at`.
            .env("PREFLIGHT_CALLING_RULES_FILE", NO_CALLING_RULES)
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start preflight");
        Server {
            child,
            port,
            http_port,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until the health service says SERVING.
    pub async fn ready(&mut self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("preflight exited early: {status}");
            }
            if let Ok(ch) = Channel::from_shared(self.url()).unwrap().connect().await {
                let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
                if let Ok(r) = h
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    && r.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return ch;
                }
            }
            assert!(Instant::now() < deadline, "preflight not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) {
        unsafe_kill(self.child.id(), "TERM");
        let _ = self.child.wait();
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

pub fn decision(ch: &Channel) -> pb::decision_service_client::DecisionServiceClient<Channel> {
    pb::decision_service_client::DecisionServiceClient::new(ch.clone())
}
pub fn consent(ch: &Channel) -> pb::consent_service_client::ConsentServiceClient<Channel> {
    pb::consent_service_client::ConsentServiceClient::new(ch.clone())
}
pub fn dnc(ch: &Channel) -> pb::dnc_service_client::DncServiceClient<Channel> {
    pb::dnc_service_client::DncServiceClient::new(ch.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// One unary Check that must succeed.
pub async fn check(
    ch: &Channel,
    contact: &str,
    channel: pb::Channel,
    purpose: pb::Purpose,
) -> pb::CheckResponse {
    decision(ch)
        .check(check_req(contact, channel, purpose))
        .await
        .unwrap()
        .into_inner()
}

pub fn check_req(contact: &str, channel: pb::Channel, purpose: pb::Purpose) -> pb::CheckRequest {
    pb::CheckRequest {
        contact: contact.into(),
        channel: channel as i32,
        purpose: purpose as i32,
        ..Default::default()
    }
}

pub fn reasons(r: &pb::CheckResponse) -> Vec<pb::Reason> {
    r.reasons
        .iter()
        .map(|x| pb::Reason::try_from(*x).unwrap())
        .collect()
}

pub fn grant(
    contact: &str,
    channels: &[pb::Channel],
    purposes: &[pb::Purpose],
) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        contact: contact.into(),
        status: pb::ConsentStatus::Granted as i32,
        channels: channels.iter().map(|c| *c as i32).collect(),
        purposes: purposes.iter().map(|p| *p as i32).collect(),
        source: "web-form".into(),
        proof: "https://example.com/form/1".into(),
        ..Default::default()
    }
}

pub fn withdraw(contact: &str) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        contact: contact.into(),
        status: pb::ConsentStatus::Withdrawn as i32,
        source: "sms-stop".into(),
        ..Default::default()
    }
}

/// What the service holds for `contact` (GetContact), failing the test on an error.
pub async fn get_contact(ch: &Channel, contact: &str) -> pb::GetContactResponse {
    consent(ch)
        .get_contact(pb::GetContactRequest {
            contact: contact.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

pub fn entry(contact: &str, t: pb::DncType) -> pb::DncEntryInput {
    pb::DncEntryInput {
        contact: contact.into(),
        r#type: t as i32,
        ..Default::default()
    }
}

pub fn inbound(
    from: &str,
    text: &str,
    message_id: &str,
    channel: pb::Channel,
) -> pb::ProcessInboundRequest {
    pb::ProcessInboundRequest {
        from: from.into(),
        to: "12345".into(),
        channel: channel as i32,
        text: text.into(),
        message_id: message_id.into(),
        ..Default::default()
    }
}

pub fn events(ch: &Channel) -> pb::event_service_client::EventServiceClient<Channel> {
    pb::event_service_client::EventServiceClient::new(ch.clone())
}

pub fn privacy(ch: &Channel) -> pb::privacy_service_client::PrivacyServiceClient<Channel> {
    pb::privacy_service_client::PrivacyServiceClient::new(ch.clone())
}

/// The request once it has left PENDING and IN_PROGRESS (the test fails after 20 s).
pub async fn finished(
    c: &mut pb::privacy_service_client::PrivacyServiceClient<Channel>,
    id: &str,
) -> pb::PrivacyRequest {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .get_request(pb::GetRequestRequest {
                request_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        if !matches!(
            pb::PrivacyRequestStatus::try_from(r.status).unwrap(),
            pb::PrivacyRequestStatus::Pending | pb::PrivacyRequestStatus::InProgress
        ) {
            return r;
        }
        assert!(Instant::now() < deadline, "request {id} did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Submits a CCPA request of `kind` for `consumer_id` and returns it once it has finished.
pub async fn run_request(
    c: &mut pb::privacy_service_client::PrivacyServiceClient<Channel>,
    consumer_id: &str,
    kind: pb::PrivacyRequestType,
) -> pb::PrivacyRequest {
    let req = c
        .submit_request(pb::SubmitRequestRequest {
            consumer_id: consumer_id.into(),
            r#type: kind as i32,
            jurisdiction: pb::Jurisdiction::Ccpa as i32,
            received_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    finished(c, &req.request_id).await
}

/// Registers a consumer for `identifiers`; returns its id.
pub async fn register_consumer(ch: &Channel, identifiers: &[&str]) -> String {
    privacy(ch)
        .register_consumer(pb::RegisterConsumerRequest {
            identifiers: identifiers.iter().map(|i| i.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .consumer
        .unwrap()
        .consumer_id
}

/// Registers a consumer for `identifiers` and runs a request of `kind` for them to its end.
pub async fn privacy_request(
    ch: &Channel,
    identifiers: &[&str],
    kind: pb::PrivacyRequestType,
) -> pb::PrivacyRequest {
    let consumer = register_consumer(ch, identifiers).await;
    run_request(&mut privacy(ch), &consumer, kind).await
}

/// A server's /readyz: its status code and body, or (0, null) while its HTTP listener is
/// not up yet.
pub fn readyz(s: &Server) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(&format!("{}/readyz", s.http_url())).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap_or_default(),
        ),
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// POSTs JSON to the REST facade: the status and the JSON answer (errors are answers too).
pub fn post_json(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .expect("POST");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

/// The engine on the embedded store in `config.data_dir`, in process, waiting for a previous
/// engine's writer to let go of the data file.
pub async fn open_embedded(
    config: &preflight::config::Config,
    clock: preflight::clock::SharedClock,
) -> std::sync::Arc<preflight::engine::Engine> {
    for _ in 0..200 {
        match preflight::server::open_embedded(config, "test", clock.clone()) {
            Ok(e) => return e,
            Err(e) if e.to_string().contains("already open") => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(e) => panic!("open: {e}"),
        }
    }
    panic!("the data file stayed open");
}
