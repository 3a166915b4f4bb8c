//! End to end over gRPC against the real binary: checks, writes, batches, errors, idempotency.
mod common;

use common::*;
use pb::{Channel as Ch, DncType, Purpose as P, Reason as R};
use preflight::proto as pb;
use tonic::Code;

#[tokio::test]
async fn decisions_follow_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let (mut d, mut c, mut n) = (decision(&ch), consent(&ch), dnc(&ch));

    // Nothing known: SMS marketing needs express consent under the default policy.
    let r = d
        .check(check_req("(202) 555-1234", Ch::Sms, P::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.verdict, pb::Verdict::Block as i32);
    assert_eq!(reasons(&r), vec![R::NoConsent]);
    assert_eq!(r.normalized_contact, "+12025551234");
    assert_eq!(r.policy, "default");

    let g = c
        .record_consent(grant("+1 202 555 1234", &[Ch::Sms], &[P::Marketing]))
        .await
        .unwrap()
        .into_inner();
    assert!(g.consent_id.starts_with("cn-"));
    let r = d
        .check(check_req("202.555.1234", Ch::Sms, P::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.verdict, pb::Verdict::Allow as i32, "{r:?}");
    assert!(r.index_seq >= g.seq);

    // A company DNC entry blocks, whatever the consent; the reason names the record.
    let a = n
        .add_entries(pb::AddEntriesRequest {
            entries: vec![entry("2025551234", DncType::Corporate)],
            actor: "ops".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let id = a.results[0].entry_id.clone();
    let r = d
        .check(check_req("2025551234", Ch::Sms, P::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&r), vec![R::DncCorporate]);
    assert_eq!(r.matched_ids, vec![id.clone()]);

    // Withdrawal collects alongside the DNC entry.
    c.record_consent(withdraw("2025551234")).await.unwrap();
    let r = d
        .check(check_req("2025551234", Ch::Sms, P::Marketing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&r), vec![R::DncCorporate, R::ConsentWithdrawn]);
    assert_eq!(r.matched_ids.len(), 2);
    // SECURITY alerts survive an unscoped withdrawal, but not the company DNC entry.
    let r = d
        .check(check_req("2025551234", Ch::Sms, P::Security))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&r), vec![R::DncCorporate]);

    // Soft delete: archived with who and why, no longer blocking.
    let rm = n
        .remove_entries(pb::RemoveEntriesRequest {
            entries: vec![pb::RemoveEntry {
                contact: "+12025551234".into(),
                ..Default::default()
            }],
            actor: "alice".into(),
            reason: "added in error".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rm.results[0].status, pb::EntryStatus::Accepted as i32);
    assert_eq!(rm.results[0].entry_ids, vec![id.clone()]);
    let r = d
        .check(check_req("2025551234", Ch::Sms, P::Security))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.verdict, pb::Verdict::Allow as i32);
    let active = n
        .get_entries(pb::GetEntriesRequest {
            contact: "2025551234".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(active.entries.is_empty());
    let all = n
        .get_entries(pb::GetEntriesRequest {
            contact: "2025551234".into(),
            include_archived: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.entries.len(), 1);
    let e = &all.entries[0];
    assert!(!e.active);
    assert_eq!(
        (e.removed_by.as_str(), e.removal_reason.as_str()),
        ("alice", "added in error")
    );
    assert!(
        e.retain_until.as_ref().unwrap().seconds
            > e.removed_at.as_ref().unwrap().seconds + 5 * 365 * 86_400 - 1
    );

    // GetContact shows the history.
    let v = c
        .get_contact(pb::GetContactRequest {
            contact: "+12025551234".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.consents.len(), 2);
    assert_eq!(v.dnc_entries.len(), 1);
    server.kill();
}

#[tokio::test]
async fn bad_input_fails_closed_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let (mut d, mut c, mut n) = (decision(&ch), consent(&ch), dnc(&ch));

    let e = d
        .check(check_req("2025551234", Ch::Unspecified, P::Marketing))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("channel"), "{}", e.message());

    let mut bad_policy = check_req("2025551234", Ch::Sms, P::Marketing);
    bad_policy.policy = "nope".into();
    let e = d.check(bad_policy).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("nope"));

    // An unparseable contact is a BLOCK, not an error.
    let r = d
        .check(check_req("not a number", Ch::Voice, P::Service))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&r), vec![R::InvalidContact]);
    assert!(r.detail.contains("not a number"));
    let r = d
        .check(check_req("+1 123 555 1234", Ch::Voice, P::Service))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&r), vec![R::InvalidContact]);

    // Unspecified purpose means MARKETING.
    let r = d
        .check(check_req("jo@example.com", Ch::Sms, P::Unspecified))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reasons(&r), vec![R::NoConsent]);

    // Batch: faulty items are reported, the rest unharmed.
    let b = d
        .check_batch(pb::CheckBatchRequest {
            checks: vec![
                check_req("2025551234", Ch::Email, P::Service),
                check_req("garbage", Ch::Email, P::Service),
                check_req("2025551234", Ch::Unspecified, P::Service),
                check_req("JO@Example.com", Ch::Email, P::Service),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.results.len(), 4);
    assert_eq!(b.results[0].verdict, pb::Verdict::Allow as i32);
    assert_eq!(reasons(&b.results[1]), vec![R::InvalidContact]);
    assert_eq!(reasons(&b.results[2]), vec![R::InvalidRequest]);
    assert!(
        b.results[2].detail.contains("checks[2].channel"),
        "{}",
        b.results[2].detail
    );
    assert_eq!(b.results[3].normalized_contact, "jo@example.com");

    let too_many = pb::CheckBatchRequest {
        checks: vec![check_req("2025551234", Ch::Sms, P::Service); 10_001],
    };
    assert_eq!(
        d.check_batch(too_many).await.unwrap_err().code(),
        Code::ResourceExhausted
    );

    // Consent: a grant needs a scope; the error names the field.
    let mut g = grant("2025551234", &[], &[P::Marketing]);
    g.channels.clear();
    let e = c.record_consent(g).await.unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument && e.message().starts_with("channels"),
        "{}",
        e.message()
    );
    let e = c
        .record_consent(grant("12345", &[Ch::Sms], &[P::Marketing]))
        .await
        .unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument
            && e.message().contains("contact")
            && e.message().contains("12345")
    );

    // AddEntries: one result per entry, invalid ones named, valid ones written.
    let a = n
        .add_entries(pb::AddEntriesRequest {
            entries: vec![
                entry("2025550100", DncType::Corporate),
                entry("bogus", DncType::Corporate),
                entry("2025550101", DncType::Unspecified),
                entry("2025550100", DncType::Corporate),
                pb::DncEntryInput {
                    contact: "2025550102".into(),
                    r#type: DncType::State as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let st: Vec<i32> = a.results.iter().map(|r| r.status).collect();
    use pb::EntryStatus as S;
    assert_eq!(
        st,
        vec![
            S::Accepted as i32,
            S::Invalid as i32,
            S::Invalid as i32,
            S::Duplicate as i32,
            S::Invalid as i32
        ]
    );
    assert!(
        a.results[1].error.contains("entries[1].contact") && a.results[1].error.contains("bogus")
    );
    assert!(a.results[2].error.contains("entries[2].type"));
    assert!(a.results[4].error.contains("entries[4].list"));
    assert_eq!(a.results[3].entry_id, a.results[0].entry_id);
    // Adding again is a DUPLICATE naming the existing entry.
    let again = n
        .add_entries(pb::AddEntriesRequest {
            entries: vec![entry("+12025550100", DncType::Corporate)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.results[0].status, S::Duplicate as i32);
    assert_eq!(again.results[0].entry_id, a.results[0].entry_id);

    let over = pb::AddEntriesRequest {
        entries: vec![entry("2025550100", DncType::Corporate); 10_001],
        ..Default::default()
    };
    assert_eq!(
        n.add_entries(over).await.unwrap_err().code(),
        Code::ResourceExhausted
    );

    // Removal needs who and why.
    let e = n
        .remove_entries(pb::RemoveEntriesRequest {
            entries: vec![pb::RemoveEntry {
                contact: "2025550100".into(),
                ..Default::default()
            }],
            reason: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().starts_with("actor"));
    server.kill();
}

#[tokio::test]
async fn idempotency_keys_replay_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let (mut c, mut n) = (consent(&ch), dnc(&ch));

    let mut w = withdraw("jo@example.com");
    w.idempotency_key = "crm-77".into();
    let first = c.record_consent(w.clone()).await.unwrap().into_inner();
    let second = c.record_consent(w.clone()).await.unwrap().into_inner();
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(
        (first.consent_id.clone(), first.seq),
        (second.consent_id, second.seq)
    );
    let v = c
        .get_contact(pb::GetContactRequest {
            contact: "jo@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.consents.len(), 1, "the retry wrote nothing");

    // The same key for a different request is refused.
    let mut other = withdraw("other@example.com");
    other.idempotency_key = "crm-77".into();
    let e = c.record_consent(other).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("idempotency_key"));

    let req = pb::AddEntriesRequest {
        entries: vec![
            entry("2025550111", DncType::Litigator),
            entry("x", DncType::Corporate),
        ],
        idempotency_key: "import-1".into(),
        ..Default::default()
    };
    let a1 = n.add_entries(req.clone()).await.unwrap().into_inner();
    let a2 = n.add_entries(req).await.unwrap().into_inner();
    assert!(a2.duplicate);
    assert_eq!(
        a1.results, a2.results,
        "the retry sees ACCEPTED, not DUPLICATE"
    );
    server.kill();
}

#[tokio::test]
async fn check_stream_answers_each_batch_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    dnc(&ch)
        .add_entries(pb::AddEntriesRequest {
            entries: vec![entry("2025550199", DncType::Federal)],
            ..Default::default()
        })
        .await
        .unwrap();
    let batches: Vec<pb::CheckBatchRequest> = (0..20)
        .map(|b| pb::CheckBatchRequest {
            checks: (0..500)
                .map(|i| {
                    let mut r = check_req(
                        &format!("202555{:04}", 100 + (b * 500 + i) % 200),
                        Ch::Voice,
                        P::Marketing,
                    );
                    r.correlation_id = format!("{b}-{i}");
                    r
                })
                .collect(),
        })
        .collect();
    let mut out = decision(&ch)
        .check_stream(futures::stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    let mut federal = 0;
    while let Some(resp) = out.message().await.unwrap() {
        assert_eq!(resp.results.len(), 500);
        for (i, r) in resp.results.iter().enumerate() {
            assert_eq!(r.correlation_id, format!("{seen}-{i}"));
            if r.normalized_contact == "+12025550199" {
                assert!(reasons(r).contains(&R::DncFederal));
                federal += 1;
            }
        }
        seen += 1;
    }
    assert_eq!(seen, 20);
    assert_eq!(federal, 50);
    server.kill();
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: "preflight.v1.DecisionService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    // A service this listener does not have: UNIMPLEMENTED, not a hang or a reset.
    let mut raw = tonic::client::Grpc::new(ch.clone());
    raw.ready().await.unwrap();
    let err = raw
        .unary::<pb::CheckRequest, pb::CheckResponse, _>(
            tonic::Request::new(pb::CheckRequest::default()),
            http::uri::PathAndQuery::from_static("/nope.v1.Nothing/Call"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");

    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("{msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "preflight.v1.DecisionService",
        "preflight.v1.ConsentService",
        "preflight.v1.DncService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    server.kill();
}

/// Reflection answers in both versions clients speak (v1alpha: Evans, older grpcurl and
/// Postman, Python's grpcio-reflection), listing every service the server routes.
#[tokio::test]
async fn reflection_lists_every_service_through_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path());
    let ch = srv.ready().await;
    let mut expected: Vec<String> = preflight::api::grpc::services::SERVICES
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    expected.sort();

    let mut c = v1::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = c
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let mut got: Vec<String> = match answers.message().await.unwrap().unwrap().message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{other:?}"),
    };
    got.sort();
    assert_eq!(got, expected, "v1");

    let mut c = v1alpha::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = c
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let mut got: Vec<String> = match answers.message().await.unwrap().unwrap().message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{other:?}"),
    };
    got.sort();
    assert_eq!(got, expected, "v1alpha");
    srv.stop();
}
