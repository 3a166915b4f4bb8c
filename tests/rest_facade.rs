//! The REST/JSON facade of a running service, as a Genesys Data Action, a NICE Studio
//! snippet or an SMS provider would call it; and the same state seen through gRPC.
mod common;

use common::*;
use preflight::proto as pb;
use serde_json::{Value, json};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().expect("GET");
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn post_form(url: &str, form: &str) -> (u16, String, String) {
    let mut r = agent()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .send(form.as_bytes())
        .expect("POST form");
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        r.status().as_u16(),
        ct,
        r.body_mut().read_to_string().unwrap(),
    )
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_checks_writes_webhook_and_grpc_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path());
    let ch = srv.ready().await;
    let base = srv.http_url();

    // A Genesys Data Action: GET with query parameters, flat JSON back.
    let (code, body) = get(&format!(
        "{base}/v1/check?contact=(202)%20555-0142&channel=sms&purpose=marketing&correlation_id=flow-7"
    ));
    assert_eq!(code, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["verdict"], "BLOCK");
    assert_eq!(v["allowed"], false);
    assert_eq!(v["reason"], "NO_CONSENT");
    assert_eq!(v["normalized_contact"], "+12025550142");
    assert_eq!(v["correlation_id"], "flow-7");
    assert_eq!(v["policy"], "default");

    // Bad input names the field and the value; the HTTP code comes from the gRPC mapping.
    let (code, body) = get(&format!("{base}/v1/check?contact=2025550142&channel=fax"));
    assert_eq!(code, 400);
    let e = json_of(&body);
    assert_eq!(e["error"]["code"], "INVALID_ARGUMENT");
    assert_eq!(e["error"]["message"], "channel: unknown value `fax`");
    let (code, body) = get(&format!("{base}/v1/check?contact=2025550142&chanel=sms"));
    assert_eq!(code, 400);
    assert!(
        json_of(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("chanel: unknown field")
    );
    let (code, body) = get(&format!(
        "{base}/v1/check?contact=2025550142&channel=sms&policy=nope"
    ));
    assert_eq!(code, 400);
    assert!(
        json_of(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`nope`")
    );

    // Consent through REST, with an idempotency key given as a header.
    let grant = json!({
        "contact": "+1 202 555 0142", "status": "granted", "channels": ["sms", "voice"],
        "purposes": ["marketing"], "source": "web-form", "proof": "https://example.com/f/1",
        "effective_at": "2026-01-01T00:00:00Z",
    });
    let mut r = agent()
        .post(&format!("{base}/v1/consent"))
        .header("content-type", "application/json")
        .header("idempotency-key", "grant-0142")
        .send(grant.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let first = json_of(&r.body_mut().read_to_string().unwrap());
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["normalized_contact"], "+12025550142");
    let (_, retry) = post_json(
        &format!("{base}/v1/consent"),
        &json!({
            "contact": "+1 202 555 0142", "status": "granted", "channels": ["sms", "voice"],
            "purposes": ["marketing"], "source": "web-form", "proof": "https://example.com/f/1",
            "effective_at": "2026-01-01T00:00:00Z", "idempotency_key": "grant-0142",
        }),
    );
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["seq"], first["seq"]);

    let (code, bad) = post_json(
        &format!("{base}/v1/consent"),
        &json!({"contact": "2025550142", "status": "granted", "channels": ["smss"]}),
    );
    assert_eq!(code, 400);
    assert_eq!(bad["error"]["message"], "channels[0]: unknown value `smss`");
    let (code, bad) = post_json(
        &format!("{base}/v1/consent"),
        &json!({"contact": "2025550142", "status": "granted", "channels": ["sms"],
                "purposes": ["marketing"], "expires_at": "next week"}),
    );
    assert_eq!(code, 400);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("expires_at: `next week`")
    );

    // gRPC sees the REST write.
    let r = check(&ch, "2025550142", pb::Channel::Sms, pb::Purpose::Marketing).await;
    assert_eq!(r.verdict, pb::Verdict::Allow as i32);

    // A batch with a faulty item in the middle: that item reports its own index, the
    // others are answered normally.
    let (code, b) = post_json(
        &format!("{base}/v1/check/batch"),
        &json!({"checks": [
            {"contact": "2025550142", "channel": "sms", "correlation_id": "a"},
            {"contact": "2025550142", "channel": "sms", "at": "soon", "correlation_id": "b"},
            {"contact": "2025550199", "correlation_id": "c"},
            {"contact": "not a number", "channel": "voice", "correlation_id": "d"},
        ]}),
    );
    assert_eq!(code, 200, "{b}");
    let results = b["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["verdict"], "ALLOW");
    assert_eq!(results[1]["reason"], "INVALID_REQUEST");
    assert!(
        results[1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("checks[1].at: `soon`")
    );
    assert_eq!(results[2]["reason"], "INVALID_REQUEST");
    assert_eq!(
        results[2]["detail"],
        "checks[2].channel: is required (got unspecified)"
    );
    assert_eq!(results[3]["reason"], "INVALID_CONTACT");
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["correlation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);

    // Over the batch limit: 429, from RESOURCE_EXHAUSTED.
    let many: Vec<Value> = (0..10_001)
        .map(|_| json!({"contact": "2025550142", "channel": "sms"}))
        .collect();
    let (code, e) = post_json(
        &format!("{base}/v1/check/batch"),
        &json!({ "checks": many }),
    );
    assert_eq!(code, 429);
    assert_eq!(e["error"]["code"], "RESOURCE_EXHAUSTED");

    // The SMS provider's webhook: STOP answers TwiML with the opt-out confirmation.
    let form = "From=%2B12025550142&To=%2B18005550100&Body=Stop&MessageSid=SM0001&AccountSid=AC1&NumMedia=0";
    let (code, ct, reply) = post_form(&format!("{base}/v1/webhooks/sms"), form);
    assert_eq!(code, 200);
    assert!(ct.starts_with("application/xml"), "{ct}");
    assert!(
        reply.contains("<Response><Message>") && reply.contains("unsubscribed"),
        "{reply}"
    );
    let (_, body) = get(&format!("{base}/v1/check?contact=2025550142&channel=sms"));
    assert_eq!(json_of(&body)["reason"], "CONSENT_WITHDRAWN");
    let r = check(
        &ch,
        "2025550142",
        pb::Channel::Voice,
        pb::Purpose::Marketing,
    )
    .await;
    assert_eq!(
        r.verdict,
        pb::Verdict::Block as i32,
        "opt-out covers voice too"
    );

    // The provider retrying the same message changes nothing twice.
    let seq_before = json_of(&get(&format!("{base}/readyz")).1)["index_seq"].clone();
    let (code, _, again) = post_form(&format!("{base}/v1/webhooks/sms"), form);
    assert_eq!(code, 200);
    assert_eq!(again, reply);
    assert_eq!(
        json_of(&get(&format!("{base}/readyz")).1)["index_seq"],
        seq_before
    );

    // Inbound as JSON, and a plain-text webhook answer for providers that want it.
    let (code, inb) = post_json(
        &format!("{base}/v1/inbound"),
        &json!({"channel": "sms", "from": "2025550142", "to": "+18005550100",
                "text": "START", "message_id": "SM0002"}),
    );
    assert_eq!(code, 200, "{inb}");
    assert_eq!(inb["action"], "OPT_IN");
    let mut r = agent()
        .post(&format!("{base}/v1/webhooks/sms"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/plain")
        .send("From=%2B12025550142&To=%2B18005550100&Body=HELP&MessageSid=SM0003".as_bytes())
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    assert!(!text.contains('<') && !text.is_empty(), "{text}");
    let (code, e) = post_json(
        &format!("{base}/v1/inbound"),
        &json!({"from": "2025550142", "text": "STOP", "channel": "pigeon"}),
    );
    assert_eq!(code, 400);
    assert_eq!(e["error"]["message"], "channel: unknown value `pigeon`");

    // Probes, the committed OpenAPI document, and metrics without personal data.
    assert_eq!(get(&format!("{base}/healthz")), (200, "ok".to_string()));
    let (code, ready) = get(&format!("{base}/readyz"));
    assert_eq!(code, 200);
    assert_eq!(json_of(&ready)["status"], "SERVING");
    let (code, doc) = get(&format!("{base}/openapi.json"));
    assert_eq!(code, 200);
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"),
    )
    .unwrap();
    assert_eq!(doc, committed);
    let (code, metrics) = get(&format!("{base}/metrics"));
    assert_eq!(code, 200);
    for needle in [
        r#"preflight_checks_total{verdict="BLOCK",reason="CONSENT_WITHDRAWN"}"#,
        r#"preflight_checks_total{verdict="ALLOW",reason="NONE"}"#,
        r#"preflight_checks_total{verdict="BLOCK",reason="INVALID_REQUEST"}"#,
        r#"preflight_request_duration_seconds_bucket{transport="grpc",method="DecisionService/Check",code="OK""#,
        r#"preflight_request_duration_seconds_bucket{transport="rest",method="/v1/check",code="400""#,
        "preflight_index_seq ",
        "preflight_index_age_seconds ",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from /metrics");
    }
    assert!(
        !metrics.contains("2025550142") && !metrics.contains("202***0142"),
        "a phone number leaked into metrics"
    );
    srv.stop();
}
