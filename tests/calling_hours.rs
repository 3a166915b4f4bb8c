//! Calling hours through a running service, as a dialer asks: gRPC, REST and `preflight
//! scrub`, with the built-in rules and a fixed `at` (so the answers do not depend on when the
//! suite runs), a postal code, a faulty postal code inside a batch, and start-up refusals.
mod common;

use common::*;
use preflight::proto as pb;
use std::process::Command;

fn ts(rfc3339: &str) -> prost_types::Timestamp {
    let t: jiff::Timestamp = rfc3339.parse().unwrap();
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

/// Tomorrow at `hh:mm` in Washington's time, as RFC 3339: after any consent recorded now.
fn tomorrow_at(hh: i8, mm: i8) -> String {
    let tz = jiff::tz::TimeZone::get("America/New_York").unwrap();
    let day = jiff::Timestamp::now()
        .to_zoned(tz.clone())
        .date()
        .tomorrow()
        .unwrap();
    day.at(hh, mm, 0, 0)
        .to_zoned(tz)
        .unwrap()
        .timestamp()
        .to_string()
}

fn get_json(url: &str) -> serde_json::Value {
    let text = ureq::get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

fn start(dir: &std::path::Path) -> Server {
    // The built-in rules, not the harness's empty file.
    Server::start_full(dir, &[], &[("PREFLIGHT_CALLING_RULES_FILE", "")], None)
}

#[tokio::test(flavor = "multi_thread")]
async fn checks_answer_with_calling_hours_zones_and_next_allowed_at() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = start(dir.path());
    let ch = srv.ready().await;
    for n in ["+12025550100", "+13055550100"] {
        consent(&ch)
            .record_consent(grant(n, &[pb::Channel::Sms], &[pb::Purpose::Marketing]))
            .await
            .unwrap();
    }
    let at = |contact: &str, when: &str, postal: &str| pb::CheckRequest {
        at: Some(ts(when)),
        postal_code: postal.into(),
        ..check_req(contact, pb::Channel::Sms, pb::Purpose::Marketing)
    };
    let noon = tomorrow_at(12, 0);
    let r = decision(&ch)
        .check(at("+12025550100", &noon, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.verdict, pb::Verdict::Allow as i32, "{r:?}");
    assert_eq!(r.time_zones, ["America/New_York"]);
    assert_eq!(r.subdivision, "US-DC");
    assert!(r.next_allowed_at.is_none());

    // 22:00 in Washington: outside, until 08:00 local.
    let night = tomorrow_at(22, 0);
    let r = decision(&ch)
        .check(at("+12025550100", &night, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&r), [pb::Reason::OutsideCallingHours], "{r:?}");
    let next = r.next_allowed_at.expect("next_allowed_at");
    let local = jiff::Timestamp::from_second(next.seconds)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::get("America/New_York").unwrap());
    assert_eq!((local.hour(), local.minute()), (8, 0), "{local}");
    assert!(next.seconds > ts(&night).seconds);

    // A Washington number at a Miami ZIP: Florida's 20:00 applies.
    let late = tomorrow_at(20, 30);
    let r = decision(&ch)
        .check(at("+12025550100", &late, "33101"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&r), [pb::Reason::OutsideCallingHours], "{r:?}");
    assert_eq!(r.subdivision, "US-FL");
    assert_eq!(r.subdivisions, ["US-DC", "US-FL"]);
    let r = decision(&ch)
        .check(at("+12025550100", &late, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.verdict,
        pb::Verdict::Allow as i32,
        "without the ZIP: {r:?}"
    );

    // In a batch, a malformed postal code is that item's INVALID_REQUEST, naming it.
    let b = decision(&ch)
        .check_batch(pb::CheckBatchRequest {
            checks: vec![
                at("+12025550100", &noon, ""),
                at("+12025550100", &noon, "3310"),
                at("+13055550100", &noon, "33101"),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.results[0].verdict, pb::Verdict::Allow as i32);
    assert_eq!(reasons(&b.results[1]), [pb::Reason::InvalidRequest]);
    assert!(
        b.results[1].detail.contains("checks[1].postal_code")
            && b.results[1].detail.contains("3310"),
        "{}",
        b.results[1].detail
    );
    assert_eq!(
        b.results[2].verdict,
        pb::Verdict::Allow as i32,
        "{:?}",
        b.results[2]
    );

    // Service messages are not telephone solicitations: no calling hours.
    let mut svc = at("+12025550100", &night, "");
    svc.purpose = pb::Purpose::Service as i32;
    let r = decision(&ch).check(svc).await.unwrap().into_inner();
    assert!(
        !reasons(&r).contains(&pb::Reason::OutsideCallingHours),
        "{r:?}"
    );

    // The REST facade says the same.
    let url = format!(
        "{}/v1/check?contact=%2B12025550100&channel=sms&purpose=marketing&at={night}",
        srv.http_url()
    );
    let body = get_json(&url);
    assert_eq!(body["reason"], "OUTSIDE_CALLING_HOURS", "{body}");
    assert_eq!(body["time_zones"][0], "America/New_York");
    let rest_next: jiff::Timestamp = body["next_allowed_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(rest_next.as_second(), next.seconds);
    let url = format!(
        "{}/v1/check?contact=%2B12025550100&channel=sms&at={late}&zip=33101",
        srv.http_url()
    );
    let body = get_json(&url);
    assert_eq!(body["subdivision"], "US-FL", "{body}");

    // `preflight scrub --at`, with a ZIP column.
    let input = dir.path().join("leads.csv");
    std::fs::write(&input, "phone,zip\n2025550100,\n2025550100,33101\n").unwrap();
    let out = dir.path().join("out.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_preflight"))
        .arg("scrub")
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .args(["--channel", "sms", "--server", &srv.url(), "--at", &late])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "phone,zip,verdict,reasons,normalized_contact,next_allowed_at"
    );
    assert!(
        lines[1].starts_with("2025550100,,ALLOW,,+12025550100,"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("2025550100,33101,BLOCK,OUTSIDE_CALLING_HOURS,+12025550100,20"),
        "{text}"
    );
    srv.stop();
}

#[test]
fn faulty_calling_rules_stop_the_start_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[policies.default]\ncalling_hours = [\"federal\", \"provincial\"]\n",
            "line 2, key `policies.default.calling_hours.1`",
        ),
        (
            "[policies.default]\n\n[[policies.default.calling_windows]]\nname = \"late\"\nhours = \"21:00-08:00\"\n",
            "line 5, key `policies.default.calling_windows.0.hours`",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = dir.path().join(format!("p{i}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_preflight"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.path().join(format!("data{i}")))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&cfg.display().to_string()) && err.contains(want),
            "{err}"
        );
    }
}
