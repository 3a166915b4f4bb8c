//! Contact attempts through a running service, as dialers and platforms send them: gRPC
//! RecordAttempts, POST /v1/attempts and `preflight attempt`, seen on Watch, counted by checks
//! over gRPC and REST, and still there after a SIGKILL.
mod common;

use common::*;
use preflight::proto as pb;
use serde_json::{Value, json};
use std::process::Command;

fn attempts(
    ch: &tonic::transport::Channel,
) -> pb::attempt_service_client::AttemptServiceClient<tonic::transport::Channel> {
    pb::attempt_service_client::AttemptServiceClient::new(ch.clone())
}

fn call(contact: &str, subject: &str) -> pb::Attempt {
    pb::Attempt {
        contact: contact.into(),
        channel: pb::Channel::Voice as i32,
        purpose: pb::Purpose::Marketing as i32,
        subject: subject.into(),
        outcome: pb::AttemptOutcome::NoAnswer as i32,
        campaign_id: "spring".into(),
        at: None,
    }
}

fn roof_check() -> pb::CheckRequest {
    pb::CheckRequest {
        subject: "ROOF".into(),
        ..check_req("+13055550170", pb::Channel::Voice, pb::Purpose::Marketing)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attempts_from_every_transport_are_counted_watched_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path());
    let ch = srv.ready().await;
    consent(&ch)
        .record_consent(grant(
            "+13055550170",
            &[pb::Channel::Voice],
            &[pb::Purpose::Marketing],
        ))
        .await
        .unwrap();
    let first = decision(&ch)
        .check(roof_check())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.verdict, pb::Verdict::Allow as i32, "{first:?}");

    // gRPC: two calls (at the server's time) and one without an outcome.
    let r = attempts(&ch)
        .record_attempts(pb::RecordAttemptsRequest {
            attempts: vec![
                call("(305) 555-0170", "roof"),
                call("+13055550170", "Roof"),
                pb::Attempt {
                    outcome: 0,
                    ..call("+13055550170", "roof")
                },
            ],
            idempotency_key: "dialer-a-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status: Vec<i32> = r.results.iter().map(|x| x.status).collect();
    assert_eq!(
        status,
        [
            pb::EntryStatus::Accepted as i32,
            pb::EntryStatus::Accepted as i32,
            pb::EntryStatus::Invalid as i32
        ]
    );
    assert_eq!(r.results[0].normalized_contact, "+13055550170");
    assert!(
        r.results[2].error.contains("attempts[2].outcome"),
        "{:?}",
        r.results[2]
    );
    let ids: Vec<String> = r.results[..2]
        .iter()
        .map(|x| x.attempt_id.clone())
        .collect();

    // Watch sees them as CONTACT_ATTEMPT events.
    let mut watch = events(&ch)
        .watch(pb::WatchRequest {
            after_seq: 0,
            kinds: vec![pb::EventKind::ContactAttempt as i32],
        })
        .await
        .unwrap()
        .into_inner();
    for id in &ids {
        let ev = watch.message().await.unwrap().unwrap();
        assert_eq!(format!("at-{}", ev.seq), *id);
        assert_eq!(ev.kind, pb::EventKind::ContactAttempt as i32);
        let a = ev.attempt.expect("the attempt");
        assert_eq!(a.contact, "+13055550170");
        assert_eq!(a.outcome, pb::AttemptOutcome::NoAnswer as i32);
        assert_eq!(a.campaign_id, "spring");
        assert!(a.at.is_some(), "recorded at the server's time");
    }

    // REST: a third call, from another platform and campaign.
    let (code, body) = post_json(
        &format!("{}/v1/attempts", srv.http_url()),
        &json!({"attempts": [
            {"contact": "+13055550170", "channel": "voice", "subject": "roof",
             "outcome": "busy", "campaign_id": "summer"},
            {"contact": "+13055550170", "channel": "voice", "outcome": "busy",
             "at": "2999-01-01T00:00:00Z"},
        ]}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "ACCEPTED", "{body}");
    assert_eq!(body["results"][1]["status"], "INVALID", "{body}");
    assert!(
        body["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("attempts[1].at"),
        "{body}"
    );

    // Three calls on the subject: the person is at Florida's limit, on gRPC and REST.
    let r = decision(&ch)
        .check(roof_check())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&r), [pb::Reason::FrequencyLimit], "{r:?}");
    assert!(r.next_allowed_at.is_some(), "{r:?}");
    assert!(ids.iter().all(|id| r.matched_ids.contains(id)), "{r:?}");
    let text = ureq::get(&format!(
        "{}/v1/check?contact=%2B13055550170&channel=VOICE&subject=roof",
        srv.http_url()
    ))
    .call()
    .unwrap()
    .body_mut()
    .read_to_string()
    .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["reason"], "FREQUENCY_LIMIT", "{v}");
    assert!(v["next_allowed_at"].is_string(), "{v}");
    let other = decision(&ch)
        .check(pb::CheckRequest {
            subject: "solar".into(),
            ..roof_check()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.verdict, pb::Verdict::Allow as i32, "{other:?}");

    // The CLI, as an operator records one by hand.
    let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args([
            "attempt",
            "+13055550171",
            "--channel",
            "voice",
            "--outcome",
            "conversation",
        ])
        .args(["--subject", "roof", "--server", &srv.url()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("recorded at-"), "{stdout}");

    // Acknowledged attempts survive a SIGKILL.
    srv.kill();
    let mut srv = Server::start(dir.path());
    let ch = srv.ready().await;
    let r = decision(&ch)
        .check(roof_check())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&r), [pb::Reason::FrequencyLimit], "{r:?}");
    srv.stop();
}
