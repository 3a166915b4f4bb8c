//! The service as an attacker or a careless client finds it: times outside the calendar or
//! the supported range, oversized and control-character input, credentials in odd shapes,
//! and logs that must not give numbers away.
mod common;

use common::*;
use pb::{Channel as Ch, Purpose as P};
use preflight::proto as pb;
use prost_types::Timestamp;
use serde_json::{Value, json};
use std::io::{Read, Write};
use tonic::Code;

/// One HTTP/1.1 exchange written by hand, so a test can send what a client library would
/// not (two authorization headers, a body past the limit). Returns the status and body.
fn raw_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading the whole body; a failed write is fine.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn json_body(body: &str) -> Value {
    // Chunked bodies carry size lines around the JSON.
    let start = body
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in {body:?}"));
    let end = body.rfind('}').unwrap();
    serde_json::from_str(&body[start..=end]).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

fn post_json(port: u16, path: &str, v: &Value) -> (u16, Value) {
    let (code, body) = raw_http(
        port,
        "POST",
        path,
        &[("content-type", "application/json")],
        v.to_string().as_bytes(),
    );
    (code, json_body(&body))
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn assert_invalid(e: &tonic::Status, field: &str) {
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains(field),
        "`{}` does not name {field}",
        e.message()
    );
    assert!(
        e.message().len() < 400,
        "message too long: {} bytes",
        e.message().len()
    );
}

#[tokio::test]
async fn times_outside_the_calendar_or_the_range_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path());
    let ch = srv.ready().await;
    let mut c = consent(&ch);

    // gRPC: the extreme effective_at that used to grant consent forever.
    let mut g = grant("2025550101", &[Ch::Sms], &[P::Marketing]);
    g.effective_at = ts(i64::MIN);
    assert_invalid(&c.record_consent(g).await.unwrap_err(), "effective_at");
    let mut g = grant("2025550101", &[Ch::Sms], &[P::Marketing]);
    g.expires_at = ts(i64::MAX);
    assert_invalid(&c.record_consent(g).await.unwrap_err(), "expires_at");
    let mut g = grant("2025550101", &[Ch::Sms], &[P::Marketing]);
    g.effective_at = ts(1_800_000_000);
    g.expires_at = ts(1_700_000_000);
    assert_invalid(&c.record_consent(g).await.unwrap_err(), "expires_at");
    let mut w = withdraw("2025550101");
    w.effective_at = ts(-1);
    assert_invalid(&c.record_consent(w).await.unwrap_err(), "effective_at");
    // Nothing of those was recorded: the number has no consent at all.
    let r = check(&ch, "2025550101", Ch::Sms, P::Marketing).await;
    assert_eq!(reasons(&r), vec![pb::Reason::NoConsent]);

    let mut req = check_req("2025550101", Ch::Sms, P::Marketing);
    req.at = ts(i64::MIN);
    assert_invalid(&decision(&ch).check(req.clone()).await.unwrap_err(), "at");
    let batch = decision(&ch)
        .check_batch(pb::CheckBatchRequest {
            checks: vec![check_req("2025550101", Ch::Sms, P::Marketing), req],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.results[0].reasons, vec![pb::Reason::NoConsent as i32]);
    assert_eq!(batch.results[1].verdict, pb::Verdict::Block as i32);
    assert_eq!(
        batch.results[1].reasons,
        vec![pb::Reason::InvalidRequest as i32]
    );
    assert!(
        batch.results[1].detail.contains("checks[1].at"),
        "{}",
        batch.results[1].detail
    );

    let mut d = pb::AddEntriesRequest {
        entries: vec![entry("2025550102", pb::DncType::Corporate)],
        ..Default::default()
    };
    d.entries[0].expires_at = ts(i64::MAX / 1000);
    let out = dnc(&ch).add_entries(d).await.unwrap().into_inner();
    assert_eq!(out.results[0].status, pb::EntryStatus::Invalid as i32);
    assert!(
        out.results[0].error.contains("expires_at"),
        "{}",
        out.results[0].error
    );

    // REST: the same limits, and a real calendar.
    let port = srv.http_port;
    for (value, field) in [
        (json!(i64::MIN), "effective_at"),
        (json!("2026-02-30"), "effective_at"),
        (json!("2026-11-22T10:00:00+25:00"), "effective_at"),
        (json!("2026-11-22T10:00:00"), "effective_at"),
    ] {
        let body = json!({"contact": "2025550103", "status": "GRANTED", "channels": ["SMS"],
            "purposes": ["MARKETING"], "effective_at": value});
        let (code, v) = post_json(port, "/v1/consent", &body);
        assert_eq!(code, 400, "{value}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field), "{value}: {msg}");
        if let Some(s) = value.as_str() {
            assert!(msg.contains(s), "the message should quote {s}: {msg}");
        }
    }
    let (code, v) = post_json(
        port,
        "/v1/check/batch",
        &json!({"checks": [
            {"contact": "2025550103", "channel": "SMS", "at": "2026-02-30T10:00:00Z"},
            {"contact": "2025550103", "channel": "SMS"},
        ]}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["results"][0]["reasons"], json!(["INVALID_REQUEST"]));
    assert!(
        v["results"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("checks[0].at")
    );
    assert_eq!(v["results"][1]["reasons"], json!(["NO_CONSENT"]));
    srv.stop();
}

#[tokio::test]
async fn oversized_and_control_character_input_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path());
    let ch = srv.ready().await;
    let huge = "1".repeat(1 << 20);

    // A 1 MiB contact is not parsed or echoed.
    let e = decision(&ch)
        .check(check_req(&huge, Ch::Sms, P::Marketing))
        .await
        .unwrap_err();
    assert_invalid(&e, "contact");
    assert!(e.message().contains("320"), "{}", e.message());
    let mut req = check_req("2025550104", Ch::Sms, P::Marketing);
    req.correlation_id = "c".repeat(300);
    let e = decision(&ch).check(req.clone()).await.unwrap_err();
    assert_invalid(&e, "correlation_id");
    assert!(e.message().contains("256"), "{}", e.message());
    let mut cat = check_req("2025550104", Ch::Sms, P::Marketing);
    cat.category = "b".repeat(257);
    assert_invalid(&decision(&ch).check(cat).await.unwrap_err(), "category");

    // Inside a batch: that item only, with nothing of it echoed.
    let mut fine = check_req("2025550104", Ch::Sms, P::Marketing);
    fine.correlation_id = "row-2".into();
    let batch = decision(&ch)
        .check_batch(pb::CheckBatchRequest {
            checks: vec![
                check_req(&"9".repeat(400), Ch::Sms, P::Marketing),
                req,
                fine,
            ],
        })
        .await
        .unwrap()
        .into_inner();
    for (i, field) in [(0, "checks[0].contact"), (1, "checks[1].correlation_id")] {
        let r = &batch.results[i];
        assert_eq!(r.reasons, vec![pb::Reason::InvalidRequest as i32]);
        assert!(r.detail.contains(field), "{}", r.detail);
        assert!(r.correlation_id.is_empty() && r.detail.len() < 200, "{r:?}");
    }
    assert_eq!(batch.results[2].correlation_id, "row-2");
    assert_eq!(batch.results[2].reasons, vec![pb::Reason::NoConsent as i32]);

    // A message past what 10,000 maximal checks need is refused by the decoder.
    let e = decision(&ch)
        .check_batch(pb::CheckBatchRequest {
            checks: vec![pb::CheckRequest {
                correlation_id: "x".repeat(32 << 20),
                ..check_req("2025550104", Ch::Sms, P::Marketing)
            }],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{e:?}"
    );

    // Writes: limits named with the field, control characters refused, errors short.
    let mut c = consent(&ch);
    let mut g = grant("2025550104", &[Ch::Sms], &[P::Marketing]);
    g.campaign_id = "k".repeat(257);
    assert_invalid(&c.record_consent(g).await.unwrap_err(), "campaign_id");
    let mut g = grant("2025550104", &[Ch::Sms], &[P::Marketing]);
    g.source = "s".repeat(257);
    assert_invalid(&c.record_consent(g).await.unwrap_err(), "source");
    let e = c
        .record_consent(withdraw("2025550104\0"))
        .await
        .unwrap_err();
    assert_invalid(&e, "contact");
    assert!(!e.message().contains('\0'), "{:?}", e.message());
    let mut w = withdraw("2025550104");
    w.idempotency_key = "key\u{7}1".into();
    assert_invalid(&c.record_consent(w).await.unwrap_err(), "idempotency_key");
    let e = c
        .link_identifiers(pb::LinkIdentifiersRequest {
            external_id: "e".repeat(300),
            contacts: vec!["2025550104".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "external_id");
    assert!(e.message().contains("256"), "{}", e.message());
    let e = c
        .record_consent(withdraw(&format!("{}@example.com", "a".repeat(400))))
        .await
        .unwrap_err();
    assert_invalid(&e, "contact");

    // REST: a body past the limit gets the same JSON error shape as every other error.
    let big = vec![b'x'; 17 << 20];
    let (code, body) = raw_http(
        srv.http_port,
        "POST",
        "/v1/check/batch",
        &[("content-type", "application/json")],
        &big,
    );
    assert_eq!(code, 413);
    let v = json_body(&body);
    assert_eq!(v["error"]["code"], "RESOURCE_EXHAUSTED", "{v}");
    srv.stop();
}

#[tokio::test]
async fn basic_credentials_only_on_webhook_routes_and_never_two_authorization_headers() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let token = "wrt-7d1e0c9a4b2f8e36";
    std::fs::write(
        dir.path().join("preflight.toml"),
        "[[tokens]]\nname = \"sms-provider\"\nrole = \"write\"\ntoken_env = \"T_WRITE\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("preflight.toml");
    let log = dir.path().join("server.log");
    let mut srv = Server::start_full(
        dir.path(),
        &["--config", cfg.to_str().unwrap()],
        &[("T_WRITE", token)],
        Some(&log),
    );
    srv.ready().await;
    let port = srv.http_port;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("twilio:{token}"))
    );
    let bearer = format!("bEaReR  {token}");
    let check = "/v1/check?contact=2025550105&channel=SMS";
    let form = "From=%2B12025550105&To=12345&Body=STOP&MessageSid=SM1";
    let form_ct = ("content-type", "application/x-www-form-urlencoded");

    // Bearer in any case, with more than one space (RFC 7235), anywhere.
    assert_eq!(
        raw_http(port, "GET", check, &[("authorization", &bearer)], b"").0,
        200
    );
    // Basic: the SMS webhook takes it, other routes refuse it.
    let (code, _) = raw_http(
        port,
        "POST",
        "/v1/webhooks/sms",
        &[("authorization", &basic), form_ct],
        form.as_bytes(),
    );
    assert_eq!(code, 200);
    let (code, body) = raw_http(port, "GET", check, &[("authorization", &basic)], b"");
    assert_eq!(code, 401, "{body}");
    assert!(
        json_body(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Basic")
    );
    // Two authorization headers: refused, whichever one is good.
    let (code, _) = raw_http(
        port,
        "GET",
        check,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("authorization", "Bearer nope-nope-nope-nope"),
        ],
        b"",
    );
    assert_eq!(code, 401);

    // A burst of refusals from one address: a line or two in the log, every one counted.
    for _ in 0..200 {
        assert_eq!(
            raw_http(
                port,
                "GET",
                check,
                &[("authorization", "Bearer wrong-wrong-wrong")],
                b""
            )
            .0,
            401
        );
    }
    let (_, metrics) = raw_http(port, "GET", "/metrics", &[], b"");
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("preflight_auth_failures_total") && l.contains("rest"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(counted >= 202.0, "counted {counted}:\n{metrics}");
    srv.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text
        .lines()
        .filter(|l| l.contains("request refused"))
        .count();
    assert!(
        (1..=20).contains(&lines),
        "{lines} refusal lines for 202 refusals:\n{text}"
    );
}

/// Runs of more than six digits of `number` (any 7-digit window of it) in `log`.
fn leaks<'a>(log: &'a str, numbers: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    for line in log.lines() {
        for run in line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|r| r.len() > 6)
        {
            for n in numbers {
                let digits: String = n.chars().filter(char::is_ascii_digit).collect();
                if (0..=digits.len().saturating_sub(7))
                    .any(|i| digits.len() >= 7 && run.contains(&digits[i..i + 7]))
                {
                    out.push(line);
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn trace_logs_never_hold_more_than_six_digits_of_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut srv = Server::start_full(dir.path(), &[], &[("RUST_LOG", "trace")], Some(&log));
    let ch = srv.ready().await;
    let numbers = [
        "2025550143",
        "(415) 867-0001",
        "1-212-555-0188",
        "+44 20 7946 0958",
        "3125550199",
        "617555014",
        "2025550143999",
    ];
    let mut c = consent(&ch);
    c.record_consent(grant(numbers[0], &[Ch::Sms], &[P::Marketing]))
        .await
        .unwrap();
    c.record_consent(withdraw(numbers[1])).await.unwrap();
    c.process_inbound(inbound(numbers[2], "STOP", "m-1", Ch::Sms))
        .await
        .unwrap();
    c.link_identifiers(pb::LinkIdentifiersRequest {
        external_id: "crm-77".into(),
        contacts: vec![numbers[3].into(), numbers[4].into()],
        ..Default::default()
    })
    .await
    .unwrap();
    c.unlink_identifier(pb::UnlinkIdentifierRequest {
        contact: numbers[4].into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Inputs that do not parse: only their length and kind may be logged.
    let _ = c.record_consent(withdraw(numbers[5])).await;
    let _ = c.record_consent(withdraw(numbers[6])).await;
    let _ = c
        .process_inbound(inbound(numbers[6], "STOP", "m-2", Ch::Sms))
        .await;
    dnc(&ch)
        .add_entries(pb::AddEntriesRequest {
            entries: vec![
                entry(numbers[4], pb::DncType::Corporate),
                entry(numbers[5], pb::DncType::Corporate),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    for n in numbers {
        let _ = check(&ch, n, Ch::Sms, P::Marketing).await;
        let path = format!(
            "/v1/check?contact={}&channel=SMS",
            n.replace(' ', "%20").replace('+', "%2B")
        );
        let _ = raw_http(srv.http_port, "GET", &path, &[], b"");
    }
    let _ = post_json(
        srv.http_port,
        "/v1/consent",
        &json!({"contact": numbers[5], "status": "WITHDRAWN"}),
    );
    srv.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.len() > 10_000,
        "the trace log is suspiciously short ({} bytes)",
        text.len()
    );
    let found = leaks(&text, &numbers);
    assert!(
        found.is_empty(),
        "digits of test numbers in the log:\n{}",
        found.join("\n")
    );
    // The raw input masked (`20255***0143`: nine of ten digits) never appears; only the
    // normalized form masked (`+1202***0143`) may.
    for n in numbers {
        let raw = preflight::model::mask(n);
        if !raw.starts_with('+') {
            assert!(!text.contains(&raw), "raw input masked as {raw} in the log");
        }
    }
    assert!(
        text.contains("+1202***0143"),
        "the normalized mask should be logged"
    );
}
