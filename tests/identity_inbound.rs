//! Identity graph, inbound STOP/START/HELP, the WhatsApp window and Watch, end to end over gRPC.
mod common;

use common::*;
use pb::{Channel as Ch, DncType, Purpose as P, Reason as R};
use preflight::proto as pb;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn a_stop_on_any_identifier_blocks_every_identifier_of_the_person() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let mut c = consent(&ch);
    let link = c
        .link_identifiers(pb::LinkIdentifiersRequest {
            external_id: "crm-1".into(),
            contacts: vec![
                "(202) 555-0101".into(),
                "Ann@Example.com".into(),
                "202-555-0102".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(link.external_id, "ext:crm-1");
    assert_eq!(
        link.contacts,
        vec!["+12025550101", "ann@example.com", "+12025550102"]
    );
    // Both phones have express consent for SMS marketing.
    for p in ["2025550101", "2025550102", "2025550103"] {
        c.record_consent(grant(p, &[Ch::Sms, Ch::Voice], &[P::Marketing]))
            .await
            .unwrap();
    }
    assert_eq!(
        check(&ch, "2025550102", Ch::Sms, P::Marketing)
            .await
            .verdict,
        pb::Verdict::Allow as i32
    );

    // STOP by SMS from the first phone.
    let r = c
        .process_inbound(inbound("+12025550101", "Stop please", "SM1", Ch::Sms))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.action, pb::InboundAction::OptOut as i32);
    assert!(
        r.reply_text.contains("Reply START to resubscribe"),
        "{}",
        r.reply_text
    );
    for (contact, channel) in [
        ("2025550101", Ch::Voice),
        ("2025550102", Ch::Sms),
        ("ann@example.com", Ch::Email),
        ("ext:crm-1", Ch::Email),
    ] {
        let d = check(&ch, contact, channel, P::Marketing).await;
        assert!(
            reasons(&d).contains(&R::ConsentWithdrawn),
            "{contact}: {d:?}"
        );
        assert_eq!(d.matched_ids, vec![r.consent_id.clone()], "{contact}");
    }
    // SECURITY alerts are outside the default opt-out scope.
    assert_eq!(
        check(&ch, "2025550102", Ch::Sms, P::Security).await.verdict,
        pb::Verdict::Allow as i32
    );
    // An identifier linked later is covered too.
    c.link_identifiers(pb::LinkIdentifiersRequest {
        external_id: "ext:crm-1".into(),
        contacts: vec!["2025550103".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        reasons(&check(&ch, "2025550103", Ch::Sms, P::Marketing).await)
            .contains(&R::ConsentWithdrawn)
    );

    // A company DNC entry on the email blocks the phones; a FEDERAL entry on one phone does not spread.
    let n = dnc(&ch)
        .add_entries(pb::AddEntriesRequest {
            entries: vec![
                entry("ann@example.com", DncType::Corporate),
                entry("2025550103", DncType::Federal),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let d = check(&ch, "2025550102", Ch::Voice, P::Service).await;
    assert_eq!(reasons(&d), vec![R::DncCorporate, R::ConsentWithdrawn]);
    assert!(d.matched_ids.contains(&n.results[0].entry_id));
    assert!(
        !reasons(&check(&ch, "2025550102", Ch::Voice, P::Marketing).await).contains(&R::DncFederal)
    );

    // GetContact on any identifier shows the person's identifiers and history across them.
    let v = c
        .get_contact(pb::GetContactRequest {
            contact: "2025550102".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.person_id, "ext:crm-1");
    assert_eq!(v.identifiers.len(), 4);
    assert!(v.consents.iter().any(|x| x.consent_id == r.consent_id));
    assert_eq!(v.dnc_entries.len(), 2);

    // Unlinking: the number keeps the records made against it; the person keeps theirs.
    let u = c
        .unlink_identifier(pb::UnlinkIdentifierRequest {
            contact: "+12025550101".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.external_id, "ext:crm-1");
    let d = check(&ch, "2025550101", Ch::Sms, P::Marketing).await;
    assert_eq!(
        reasons(&d),
        vec![R::ConsentWithdrawn],
        "the number's own opt-out stays; the email's DNC entry no longer applies"
    );
    assert!(
        reasons(&check(&ch, "ann@example.com", Ch::Email, P::Marketing).await)
            .contains(&R::ConsentWithdrawn)
    );
    let e = c
        .unlink_identifier(pb::UnlinkIdentifierRequest {
            contact: "+12025550101".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // A link naming an external id as a contact is refused, naming the field.
    let e = c
        .link_identifiers(pb::LinkIdentifiersRequest {
            external_id: "crm-2".into(),
            contacts: vec!["ext:crm-1".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument && e.message().starts_with("contacts[0]"),
        "{}",
        e.message()
    );
    server.kill();
}

#[tokio::test]
async fn inbound_keywords_change_consent_once_and_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let mut c = consent(&ch);
    let phone = "+12025550111";

    let r = c
        .process_inbound(inbound(phone, "ＳＴＯＰ 🛑", "SM-a", Ch::Sms))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.action, r.matched_keyword.as_str(), r.duplicate),
        (pb::InboundAction::OptOut as i32, "STOP", false)
    );
    let again = c
        .process_inbound(inbound(phone, "ＳＴＯＰ 🛑", "SM-a", Ch::Sms))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(
        (again.seq, again.consent_id.clone()),
        (r.seq, r.consent_id.clone())
    );
    let v = c
        .get_contact(pb::GetContactRequest {
            contact: phone.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.consents.len(), 1, "the retry changed nothing");
    assert!(
        reasons(&check(&ch, phone, Ch::Sms, P::Marketing).await).contains(&R::ConsentWithdrawn)
    );

    let h = c
        .process_inbound(inbound(phone, "help", "SM-b", Ch::Sms))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.action, pb::InboundAction::Help as i32);
    assert!(
        h.reply_text.contains("Msg & data rates may apply")
            && h.reply_text.contains("Reply STOP to cancel"),
        "{}",
        h.reply_text
    );
    assert!(h.consent_id.is_empty());

    let none = c
        .process_inbound(inbound(phone, "can you stop by tomorrow?", "SM-c", Ch::Sms))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.action, pb::InboundAction::None as i32);
    assert!(none.reply_text.is_empty());

    let s = c
        .process_inbound(inbound(phone, "START", "SM-d", Ch::Sms))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.action, pb::InboundAction::OptIn as i32);
    assert_eq!(
        check(&ch, phone, Ch::Sms, P::Marketing).await.verdict,
        pb::Verdict::Allow as i32,
        "START restores SMS"
    );
    assert!(
        reasons(&check(&ch, phone, Ch::Voice, P::Marketing).await).contains(&R::ConsentWithdrawn),
        "but not voice"
    );

    let e = c
        .process_inbound(inbound("garbage", "STOP", "SM-e", Ch::Sms))
        .await
        .unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().starts_with("from"));
    let e = c
        .process_inbound(inbound(phone, "STOP", "SM-f", Ch::Unspecified))
        .await
        .unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().starts_with("channel"));
    server.kill();
}

#[tokio::test]
async fn programs_spanish_and_scope_come_from_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("preflight.toml");
    std::fs::write(
        &cfg,
        r#"
[inbound]
languages = ["en", "es"]
opt_out_channels = ["SMS"]

[programs.default]
brand = "Acme"
help_contact = "help@acme.example"

[programs.alerts]
brand = "Acme Alerts"
help_contact = "1-800-555-0100"
frequency = "Up to 4 msgs/month"
numbers = ["55500"]

[policies.default.require_consent]
MARKETING = ["SMS"]
SERVICE = ["WHATSAPP"]
"#,
    )
    .unwrap();
    let mut server = Server::start_with(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let ch = server.ready().await;
    let mut c = consent(&ch);
    let mut req = inbound("2025550121", "AYUDA", "m1", Ch::Sms);
    req.to = "55500".into();
    let r = c.process_inbound(req).await.unwrap().into_inner();
    assert_eq!(r.action, pb::InboundAction::Help as i32);
    assert!(
        r.reply_text
            .starts_with("Acme Alerts: Help at 1-800-555-0100. Up to 4 msgs/month."),
        "{}",
        r.reply_text
    );
    let r = c
        .process_inbound(inbound("2025550121", "Baja por favor", "m2", Ch::Sms))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.action, pb::InboundAction::OptOut as i32);
    assert!(r.reply_text.starts_with("Acme:"));
    // The configured scope: SMS only.
    assert!(
        reasons(&check(&ch, "2025550121", Ch::Sms, P::Marketing).await)
            .contains(&R::ConsentWithdrawn)
    );
    assert!(
        !reasons(&check(&ch, "2025550121", Ch::Voice, P::Service).await)
            .contains(&R::ConsentWithdrawn)
    );

    // WhatsApp's 24-hour window: a SERVICE message needs no template opt-in right after an inbound one.
    assert_eq!(
        reasons(&check(&ch, "2025550122", Ch::Whatsapp, P::Service).await),
        vec![R::NoConsent]
    );
    c.process_inbound(inbound(
        "2025550122",
        "where is my order?",
        "wa1",
        Ch::Whatsapp,
    ))
    .await
    .unwrap();
    assert_eq!(
        check(&ch, "2025550122", Ch::Whatsapp, P::Service)
            .await
            .verdict,
        pb::Verdict::Allow as i32
    );
    let mut later = check_req("2025550122", Ch::Whatsapp, P::Service);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    later.at = Some(prost_types::Timestamp {
        seconds: now + 25 * 3600,
        nanos: 0,
    });
    assert_eq!(
        reasons(&decision(&ch).check(later).await.unwrap().into_inner()),
        vec![R::NoConsent]
    );
    server.kill();
}

#[tokio::test]
async fn watch_replays_history_then_streams_live_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let mut c = consent(&ch);
    c.record_consent(grant("2025550131", &[Ch::Sms], &[P::Marketing]))
        .await
        .unwrap();
    let mut w = events(&ch)
        .watch(pb::WatchRequest {
            after_seq: 0,
            kinds: vec![
                pb::EventKind::ConsentChanged as i32,
                pb::EventKind::InboundAction as i32,
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let first = w.message().await.unwrap().unwrap();
    assert_eq!(
        (first.seq, first.kind),
        (1, pb::EventKind::ConsentChanged as i32)
    );
    dnc(&ch)
        .add_entries(pb::AddEntriesRequest {
            entries: vec![entry("2025550131", DncType::Corporate)],
            ..Default::default()
        })
        .await
        .unwrap();
    let r = c
        .process_inbound(inbound("2025550131", "STOP", "x1", Ch::Sms))
        .await
        .unwrap()
        .into_inner();
    let withdrawn = tokio::time::timeout(Duration::from_secs(5), w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        withdrawn.kind,
        pb::EventKind::ConsentChanged as i32,
        "the DNC event was filtered out"
    );
    assert_eq!(withdrawn.contact, "+12025550131");
    let consent = withdrawn.consent.unwrap();
    assert_eq!(
        (consent.status, consent.consent_id),
        (pb::ConsentStatus::Withdrawn as i32, r.consent_id)
    );
    let action = tokio::time::timeout(Duration::from_secs(5), w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (action.kind, action.inbound_action, action.seq),
        (
            pb::EventKind::InboundAction as i32,
            pb::InboundAction::OptOut as i32,
            r.seq
        )
    );

    // Resuming from a position replays from there.
    let mut again = events(&ch)
        .watch(pb::WatchRequest {
            after_seq: 2,
            kinds: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.message().await.unwrap().unwrap().seq, 3);
    let e = events(&ch)
        .watch(pb::WatchRequest {
            after_seq: 0,
            kinds: vec![99],
        })
        .await
        .unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().starts_with("kinds[0]"));
    server.kill();
}

#[tokio::test]
async fn a_slow_watcher_is_cut_off_with_a_resume_position_and_never_slows_writers() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    // A consumer with a small receive window, so the backlog stays on the server.
    let small = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .initial_connection_window_size(16 * 1024)
        .connect()
        .await
        .unwrap();
    let mut slow = events(&small)
        .watch(pb::WatchRequest {
            after_seq: 0,
            kinds: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = dnc(&ch);
    let started = std::time::Instant::now();
    // 90,000 events while the watcher reads nothing: more than the server buffers for it.
    for b in 0..9u64 {
        let entries = (0..10_000u64)
            .map(|i| entry(&format!("+1202{:03}{:04}", 200 + b, i), DncType::Corporate))
            .collect();
        n.add_entries(pb::AddEntriesRequest {
            entries,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "writers were not held up"
    );
    let mut last = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.message())
            .await
            .unwrap()
        {
            Ok(Some(ev)) => {
                assert_eq!(ev.seq, last + 1, "events arrive in order, without gaps");
                last = ev.seq;
            }
            Ok(None) => panic!("stream ended without an error after seq {last}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted);
    assert!(
        status.message().contains(&format!("after_seq = {last}")),
        "{} (last {last})",
        status.message()
    );
    assert!(last < 90_000);
    // Resuming from there delivers the rest.
    let mut resumed = events(&ch)
        .watch(pb::WatchRequest {
            after_seq: last,
            kinds: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.message().await.unwrap().unwrap().seq, last + 1);
    server.kill();
}
