//! Webhooks out, end to end: the real server delivering to a real HTTP receiver that fails
//! on purpose (500s, a timeout, 429 with Retry-After, 410), two endpoints one of them down,
//! a SIGKILL with deliveries pending, the admin controls, and signatures checked here with
//! the `hmac` crate, not the service's code.
mod common;

use base64::Engine as _;
use common::receiver::{Receiver, Reply, signature_valid};
use common::{Server, consent, dnc, entry, withdraw};
use preflight::proto as pb;
use std::path::Path;
use std::time::Duration;

const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET_B64: &str = "c2VjcmV0LWJlaW5nLXJvdGF0ZWQtb3V0LW5vdw==";

fn secret() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(SECRET_B64)
        .unwrap()
}

/// One `[[webhooks]]` table.
fn endpoint(name: &str, url: &str, schedule: &str, extra: &str) -> String {
    format!(
        "[[webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret_env = \"HOOK_SECRET\"\ntimeout_ms = 400\nretry_schedule_ms = {schedule}\n{extra}\n"
    )
}

fn start(dir: &Path, config: &str, log: Option<&Path>) -> Server {
    let path = dir.join("preflight.toml");
    std::fs::write(&path, config).unwrap();
    let data = dir.join("data");
    Server::start_full(
        &data,
        &["--config", path.to_str().unwrap()],
        &[
            ("HOOK_SECRET", &format!("whsec_{SECRET_B64}")),
            ("OLD_SECRET", &format!("whsec_{OLD_SECRET_B64}")),
        ],
        log,
    )
}

fn cli(server: &Server, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(args)
        .args(["--server", &server.url()])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn metrics(server: &Server) -> String {
    ureq::get(&format!("{}/metrics", server.http_url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// Seqs of the first acknowledgement of each event, in the order they were acknowledged.
fn acked_seqs(r: &Receiver) -> Vec<u64> {
    let mut seen = Vec::new();
    for d in r.acked() {
        if !seen.contains(&d.seq()) {
            seen.push(d.seq());
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_retried_on_schedule_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(Reply::Status(204)).await;
    // First event: a timeout, a 500, then a 429 asking for 1 s, then accepted.
    rx.script(&[
        Reply::Hang(Duration::from_millis(1500)),
        Reply::Status(500),
        Reply::RetryAfter(429, 1),
    ]);
    let config = endpoint(
        "crm",
        &rx.url(),
        "[0, 50, 50, 50, 50, 50]",
        "previous_secret_env = \"OLD_SECRET\"",
    );
    let mut server = start(dir.path(), &config, None);
    let ch = server.ready().await;
    let mut c = consent(&ch);
    for n in 0..3 {
        c.record_consent(withdraw(&format!("+1202555{:04}", 100 + n)))
            .await
            .unwrap();
    }
    dnc(&ch)
        .add_entries(pb::AddEntriesRequest {
            entries: vec![entry("+12025550199", pb::DncType::Corporate)],
            ..Default::default()
        })
        .await
        .unwrap();
    rx.wait_for(20, "four events acknowledged", |g| {
        g.iter().filter(|d| d.answered == 204).count() >= 4
    })
    .await;
    let got = rx.got();
    // The first event's four attempts, one webhook-id, then the rest once each.
    let first: Vec<_> = got.iter().filter(|d| d.seq() == got[0].seq()).collect();
    assert_eq!(first.len(), 4, "{got:?}");
    assert!(first.iter().all(|d| d.id == first[0].id));
    assert_eq!(first[0].id, format!("msg_crm_{}", got[0].seq()));
    let after_429 = first[3].at.duration_since(first[2].at);
    assert!(
        after_429 >= Duration::from_millis(900),
        "Retry-After: 1 not honoured ({after_429:?})"
    );
    let seqs = acked_seqs(&rx);
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(seqs, sorted, "acknowledged out of seq order");
    assert_eq!(seqs.len(), 4);
    let kinds: Vec<String> = rx.acked().iter().map(|d| d.kind().to_string()).collect();
    assert_eq!(
        kinds,
        [
            "consent.withdrawn",
            "consent.withdrawn",
            "consent.withdrawn",
            "dnc.added"
        ]
    );
    let old = base64::engine::general_purpose::STANDARD
        .decode(OLD_SECRET_B64)
        .unwrap();
    for d in &got {
        assert!(signature_valid(&secret(), d), "current secret: {d:?}");
        assert!(signature_valid(&old, d), "rotated-out secret: {d:?}");
        assert_eq!(d.signature.split(' ').count(), 2);
        assert!(!signature_valid(b"another secret of 24 bytes", d));
        let ts: i64 = d.timestamp.parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - ts).abs() < 120, "webhook-timestamp {ts}");
    }
    // An empty or truncated signature never verifies.
    let mut forged = got[0].clone();
    forged.signature = "v1,".into();
    assert!(!signature_valid(&secret(), &forged));
    let w = &rx.acked()[0].body;
    assert_eq!(w["data"]["contact"], "+12025550100");
    assert_eq!(w["data"]["status"], "WITHDRAWN");
    assert!(w["data"]["channels"].as_array().unwrap().len() >= 3);
    assert!(w["timestamp"].as_str().unwrap().ends_with('Z'));
    let m = metrics(&server);
    for code in ["timeout", "500", "429"] {
        assert!(
            m.contains(&format!(
                "preflight_webhook_failures_total{{endpoint=\"crm\",code=\"{code}\"}} 1"
            )),
            "{code} not counted:\n{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_is_paused_without_holding_up_the_other_then_resumed_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let up = Receiver::start(Reply::Status(200)).await;
    let down = Receiver::start(Reply::Status(500)).await;
    let log = dir.path().join("server.log");
    let config = format!(
        "{}{}",
        endpoint("up", &up.url(), "[0, 50]", ""),
        endpoint("down", &down.url(), "[0, 50, 50]", "kinds = [\"consent\"]"),
    );
    let mut server = start(dir.path(), &config, Some(&log));
    let ch = server.ready().await;
    let mut c = consent(&ch);
    for n in 0..10 {
        c.record_consent(withdraw(&format!("+1202555{:04}", 200 + n)))
            .await
            .unwrap();
    }
    // The healthy endpoint gets all ten while the other fails.
    up.wait_for(20, "ten events to the healthy endpoint", |g| g.len() >= 10)
        .await;
    assert_eq!(acked_seqs(&up), (1..=10).collect::<Vec<_>>());
    down.wait_for(20, "three attempts at the down endpoint", |g| g.len() >= 3)
        .await;
    let (ok, out) = cli(&server, &["webhooks", "list"]);
    assert!(ok, "{out}");
    let line = out.lines().find(|l| l.starts_with("down\t")).unwrap();
    assert!(line.contains("PAUSED"), "{out}");
    assert!(
        line.contains("acked_seq 0") && line.contains("backlog 10"),
        "{out}"
    );
    assert!(
        out.contains("all 3 attempts failed, the last with HTTP 500"),
        "{out}"
    );
    // Paused, not skipped: no further attempts, the cursor stays.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(down.got().len(), 3);
    let m = metrics(&server);
    assert!(
        m.contains("preflight_webhook_backlog{endpoint=\"down\"} 10"),
        "{m}"
    );
    assert!(
        m.contains("preflight_webhook_paused{endpoint=\"down\"} 1"),
        "{m}"
    );

    // The receiver is back: resume delivers every event, in order, from where it stopped.
    down.set_default(Reply::Status(200));
    let (ok, out) = cli(&server, &["webhooks", "resume", "down"]);
    assert!(ok && out.contains("ACTIVE"), "{out}");
    down.wait_for(20, "all ten after resume", |g| {
        g.iter().filter(|d| d.answered == 200).count() >= 10
    })
    .await;
    assert_eq!(acked_seqs(&down), (1..=10).collect::<Vec<_>>());

    // Replay through REST: from seq 8 on again, after the events already delivered.
    let (status, body) = common::post_json(
        &format!("{}/v1/admin/webhooks/down/replay", server.http_url()),
        &serde_json::json!({ "from_seq": 8 }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["acked_seq"], 7);
    down.wait_for(20, "three replayed", |g| {
        g.iter().filter(|d| d.answered == 200).count() >= 13
    })
    .await;
    let tail: Vec<u64> = down.acked()[10..].iter().map(|d| d.seq()).collect();
    assert_eq!(tail, [8, 9, 10]);

    // Bad admin input names the field or the endpoint.
    let (status, body) = common::post_json(
        &format!("{}/v1/admin/webhooks/down/replay", server.http_url()),
        &serde_json::json!({ "from_seq": 0 }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("from_seq"), "{body}");
    let (ok, out) = cli(&server, &["webhooks", "resume", "nowhere"]);
    assert!(
        !ok && out.contains("no webhook endpoint named `nowhere`"),
        "{out}"
    );
    // A receiver's body is never logged.
    server.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("must not log"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_endpoint_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(Reply::Status(200)).await;
    rx.script(&[Reply::Status(410)]);
    let config = endpoint("gone", &rx.url(), "[0, 50, 50, 50]", "");
    let mut server = start(dir.path(), &config, None);
    let ch = server.ready().await;
    let mut c = consent(&ch);
    c.record_consent(withdraw("+12025550300")).await.unwrap();
    c.record_consent(withdraw("+12025550301")).await.unwrap();
    rx.wait_for(10, "the 410", |g| !g.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.got().len(), 1, "no retry after a 410");
    let (_, out) = cli(&server, &["webhooks", "list"]);
    assert!(
        out.contains("DISABLED") && out.contains("410 Gone"),
        "{out}"
    );
    cli(&server, &["webhooks", "resume", "gone"]);
    rx.wait_for(10, "both after resume", |g| g.len() >= 3).await;
    assert_eq!(acked_seqs(&rx), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_pending_at_a_sigkill_resume_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(Reply::Status(503)).await;
    let config = endpoint(
        "crm",
        &rx.url(),
        "[0, 100, 100, 100, 100, 100, 100, 100]",
        "",
    );
    let mut server = start(dir.path(), &config, None);
    let ch = server.ready().await;
    let mut c = consent(&ch);
    for n in 0..20 {
        c.record_consent(withdraw(&format!("+1202555{:04}", 400 + n)))
            .await
            .unwrap();
    }
    rx.wait_for(10, "a failed attempt", |g| g.len() >= 2).await;
    server.kill();
    rx.set_default(Reply::Status(200));
    let mut server = start(dir.path(), &config, None);
    server.ready().await;
    rx.wait_for(20, "every event after the restart", |_| {
        acked_seqs(&rx).len() >= 20
    })
    .await;
    assert_eq!(acked_seqs(&rx), (1..=20).collect::<Vec<_>>());
    // Redelivered ones carry the same id as before the kill.
    let first: Vec<String> = rx
        .got()
        .iter()
        .filter(|d| d.seq() == 1)
        .map(|d| d.id.clone())
        .collect();
    assert!(first.len() >= 2 && first.iter().all(|i| i == "msg_crm_1"));
}

#[test]
fn bad_webhook_config_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
            .args(["check-config", "--config", path.to_str().unwrap()])
            .env("HOOK_SECRET", format!("whsec_{SECRET_B64}"))
            .env("SHORT_SECRET", "whsec_c2hvcnQ=")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = check(&endpoint("a", "ftp://example.com/", "[0]", ""));
    assert!(e.contains("line 3, key `webhooks.0.url`"), "{e}");
    let e = check(
        &endpoint("a", "https://example.com/", "[0]", "").replace("HOOK_SECRET", "SHORT_SECRET"),
    );
    assert!(
        e.contains("webhooks.0.secret_env") && e.contains("24 to 64"),
        "{e}"
    );
    let twice = format!(
        "{}{}",
        endpoint("a", "https://example.com/1", "[0]", ""),
        endpoint("a", "https://example.com/2", "[0]", "")
    );
    let e = check(&twice);
    assert!(e.contains("webhooks.1.name"), "{e}");
}

/// Twilio's signature, computed here: Base64(HMAC-SHA1(token, url + sorted name+value)).
fn twilio_signature(token: &str, url: &str, form: &[(&str, &str)]) -> String {
    use hmac::{KeyInit, Mac};
    let mut sorted = form.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn post(url: &str, content_type: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.post(url).header("content-type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.send(body.as_bytes()).unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_inbound_webhooks_are_checked_and_forgeries_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let token = "twilio-auth-token-0123456789abcdef";
    let inbound_secret = "provider-shared-secret";
    let public_url = "https://sms.example.com/v1/webhooks/sms";
    let config = format!(
        "[[tokens]]\nname = \"crm\"\nrole = \"write\"\ntoken_env = \"T_WRITE\"\n\n[sms_webhook]\ntwilio_auth_token_env = \"TWILIO_TOKEN\"\npublic_url = \"{public_url}\"\n\n[inbound_signature]\nsecret_env = \"INBOUND_SECRET\"\n"
    );
    let path = dir.path().join("preflight.toml");
    std::fs::write(&path, config).unwrap();
    let log = dir.path().join("server.log");
    let mut server = Server::start_full(
        &dir.path().join("data"),
        &["--config", path.to_str().unwrap()],
        &[
            ("TWILIO_TOKEN", token),
            ("INBOUND_SECRET", inbound_secret),
            ("T_WRITE", "write-token-0123456789"),
        ],
        Some(&log),
    );
    server.ready().await;
    let sms = format!("{}/v1/webhooks/sms", server.http_url());
    let seq = || -> u64 {
        let mut r = ureq::get(&format!("{}/readyz", server.http_url()))
            .call()
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        v["index_seq"].as_u64().unwrap()
    };
    let form = [
        ("From", "+12025550142"),
        ("To", "+18005550100"),
        ("Body", "START"),
        ("MessageSid", "SM0001"),
        ("AccountSid", "AC1"),
    ];
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let form_type = "application/x-www-form-urlencoded";

    // A forged START: no signature, a wrong one, one for another URL, one over other fields.
    let before = seq();
    let wrong_url = twilio_signature(token, "https://evil.example.com/", &form);
    let mut other = form;
    other[2] = ("Body", "STOP");
    let other_body = twilio_signature(token, public_url, &other);
    for sig in [
        None,
        Some("bm90IGEgc2lnbmF0dXJl"),
        Some(""),
        Some(wrong_url.as_str()),
        Some(other_body.as_str()),
    ] {
        let headers: Vec<(&str, &str)> =
            sig.map(|s| ("x-twilio-signature", s)).into_iter().collect();
        let (code, text) = post(&sms, form_type, &headers, &body);
        assert_eq!(code, 403, "{sig:?}: {text}");
    }
    assert_eq!(seq(), before, "a refused webhook changed something");
    // The refusals were counted.
    let m = metrics(&server);
    assert!(
        m.contains("preflight_auth_failures_total{transport=\"rest\",kind=\"bad_signature\"} 5"),
        "{m}"
    );

    // Signed as Twilio signs it: accepted without the API token.
    let sig = twilio_signature(token, public_url, &form);
    let (code, text) = post(&sms, form_type, &[("x-twilio-signature", &sig)], &body);
    assert_eq!(code, 200, "{text}");
    assert_eq!(seq(), before + 2, "inbound event and its consent");

    // The generic HMAC-SHA256 header on /v1/inbound.
    let inbound = format!("{}/v1/inbound", server.http_url());
    let json_body = r#"{"channel":"sms","from":"+12025550142","to":"+18005550100","text":"STOP","message_id":"SM0002"}"#;
    let hmac_hex = {
        use hmac::{KeyInit, Mac};
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(inbound_secret.as_bytes()).unwrap();
        mac.update(json_body.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let before = seq();
    for bad in [
        "",
        "sha256=",
        "sha256=00",
        &format!("sha256={}", &hmac_hex[..62]),
    ] {
        let (code, _) = post(
            &inbound,
            "application/json",
            &[("x-preflight-signature", bad)],
            json_body,
        );
        assert_eq!(code, 403, "{bad:?}");
    }
    let (code, _) = post(
        &inbound,
        "application/json",
        &[("authorization", "Bearer write-token-0123456789")],
        json_body,
    );
    assert_eq!(
        code, 403,
        "with a signature configured, a token alone is not enough"
    );
    assert_eq!(seq(), before);
    let (code, text) = post(
        &inbound,
        "application/json",
        &[("x-preflight-signature", &format!("sha256={hmac_hex}"))],
        json_body,
    );
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("OPT_OUT"), "{text}");
    server.stop();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("signed webhook refused"), "{logged}");
    assert!(
        !logged.contains("SM0001") && !logged.contains("2025550142"),
        "{logged}"
    );
}

fn get_json(url: &str) -> serde_json::Value {
    let mut r = ureq::get(url).call().unwrap();
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

fn endpoint_view(server: &Server) -> serde_json::Value {
    get_json(&format!("{}/v1/admin/webhooks", server.http_url()))["webhooks"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_one_replica_delivers_the_cursor_is_shared_and_another_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let redis = common::redis_server::RedisServer::start(&dir.path().join("redis"), false);
    let rx = Receiver::start(Reply::Status(200)).await;
    let key = dir.path().join("privacy.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let config = format!(
        "[privacy]\nkey_file = {:?}\n\n[redis]\nurl = {:?}\nheartbeat_ms = 100\ntimeout_ms = 500\n\n{}",
        key.to_str().unwrap(),
        redis.url(),
        endpoint("crm", &rx.url(), "[0, 50]", "")
    );
    let path = dir.path().join("preflight.toml");
    std::fs::write(&path, config).unwrap();
    let replica = |name: &str| {
        Server::start_full(
            &dir.path().join(name),
            &["--config", path.to_str().unwrap()],
            &[("HOOK_SECRET", &format!("whsec_{SECRET_B64}"))],
            None,
        )
    };
    let (mut a, mut b) = (replica("a"), replica("b"));
    let (ca, cb) = (a.ready().await, b.ready().await);
    for n in 0..10 {
        let ch = if n % 2 == 0 { &ca } else { &cb };
        consent(ch)
            .record_consent(withdraw(&format!("+1202555{:04}", 500 + n)))
            .await
            .unwrap();
    }
    rx.wait_for(20, "ten events", |_| acked_seqs(&rx).len() >= 10)
        .await;
    assert_eq!(acked_seqs(&rx), (1..=10).collect::<Vec<_>>());
    assert_eq!(rx.acked().len(), 10, "each event once while nothing failed");
    // One replica holds the endpoint; both read the same cursor from Redis.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (va, vb) = loop {
        let (va, vb) = (endpoint_view(&a), endpoint_view(&b));
        if va["acked_seq"] == 10 && vb["acked_seq"] == 10 {
            break (va, vb);
        }
        assert!(std::time::Instant::now() < deadline, "{va} {vb}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let holders = [&va, &vb]
        .iter()
        .filter(|v| v["delivering_here"] == true)
        .count();
    assert_eq!(holders, 1, "{va} {vb}");
    let (holder, other, other_ch) = if va["delivering_here"] == true {
        (a, b, cb)
    } else {
        (b, a, ca)
    };
    // The holder dies: the other replica takes the lease over and carries on from the
    // shared cursor.
    holder.kill();
    for n in 0..3 {
        consent(&other_ch)
            .record_consent(withdraw(&format!("+1202555{:04}", 600 + n)))
            .await
            .unwrap();
    }
    rx.wait_for(40, "the events after the holder died", |_| {
        acked_seqs(&rx).len() >= 13
    })
    .await;
    assert_eq!(acked_seqs(&rx), (1..=13).collect::<Vec<_>>());
    // An operator's change made on a replica that does not deliver reaches the one that does.
    let mut c = replica("c");
    c.ready().await;
    let (status, body) = common::post_json(
        &format!("{}/v1/admin/webhooks/crm/replay", c.http_url()),
        &serde_json::json!({ "from_seq": 12 }),
    );
    assert_eq!(status, 200, "{body}");
    rx.wait_for(20, "the replay", |g| {
        g.iter().filter(|d| d.answered == 200).count() >= 15
    })
    .await;
    let tail: Vec<u64> = rx.acked()[13..].iter().map(|d| d.seq()).collect();
    assert_eq!(tail, [12, 13]);
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_contact_names_its_person_and_only_subscribed_types_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(Reply::Status(200)).await;
    let config = endpoint(
        "crm",
        &rx.url(),
        "[0]",
        "kinds = [\"consent.withdrawn\", \"inbound\"]",
    );
    let mut server = start(dir.path(), &config, None);
    let ch = server.ready().await;
    let mut c = consent(&ch);
    c.link_identifiers(pb::LinkIdentifiersRequest {
        external_id: "cust-42".into(),
        contacts: vec!["+12025550177".into(), "jo@example.com".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    c.record_consent(common::grant(
        "+12025550177",
        &[pb::Channel::Sms],
        &[pb::Purpose::Marketing],
    ))
    .await
    .unwrap();
    c.record_consent(withdraw("jo@example.com")).await.unwrap();
    rx.wait_for(10, "the withdrawal", |g| !g.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.got();
    assert_eq!(got.len(), 1, "links and grants are not subscribed: {got:?}");
    assert_eq!(got[0].kind(), "consent.withdrawn");
    assert_eq!(got[0].body["data"]["contact"], "jo@example.com");
    assert_eq!(got[0].body["data"]["person_id"], "ext:cust-42");
}
