//! The audit trail and CCPA/GDPR requests end to end: the real binary, gRPC, the CLI, and the
//! store file altered behind the service's back.
mod common;

use common::*;
use pb::{Channel as Ch, Purpose as P, Reason as R};
use preflight::proto as pb;
use redb::ReadableTable;
use std::process::Command;
use tonic::Code;
use tonic::transport::Channel;

fn audit(ch: &Channel) -> pb::audit_service_client::AuditServiceClient<Channel> {
    pb::audit_service_client::AuditServiceClient::new(ch.clone())
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args(args)
        .output()
        .expect("run preflight")
}

async fn export(ch: &Channel) -> Vec<pb::AuditRecord> {
    let mut s = audit(ch)
        .export_audit(pb::ExportAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        out.push(r);
    }
    out
}

async fn verify(ch: &Channel) -> pb::VerifyAuditResponse {
    audit(ch)
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn every_change_is_chained_and_verify_names_the_altered_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let mut c = consent(&ch);
    let mut req = tonic::Request::new(grant("2025550140", &[Ch::Sms], &[P::Marketing]));
    req.metadata_mut()
        .insert("x-actor", "agent:jo".parse().unwrap());
    req.metadata_mut()
        .insert("x-request-id", "req-77".parse().unwrap());
    c.record_consent(req).await.unwrap();
    c.process_inbound(inbound("2025550140", "STOP", "m-1", Ch::Sms))
        .await
        .unwrap();
    c.link_identifiers(pb::LinkIdentifiersRequest {
        external_id: "crm-9".into(),
        contacts: vec!["2025550140".into(), "jo@example.com".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let added = dnc(&ch)
        .add_entries(pb::AddEntriesRequest {
            entries: vec![entry("jo@example.com", pb::DncType::Corporate)],
            actor: "ops".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.results[0].status, pb::EntryStatus::Accepted as i32);
    dnc(&ch)
        .remove_entries(pb::RemoveEntriesRequest {
            entries: vec![pb::RemoveEntry {
                contact: "jo@example.com".into(),
                ..Default::default()
            }],
            actor: "ops".into(),
            reason: "added in error".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let file = dir.path().join("federal.txt");
    std::fs::write(&file, "2025550177\n2025550178\n").unwrap();
    let out = cli(&[
        "dnc",
        "import",
        "--list",
        "FEDERAL",
        "--full",
        file.to_str().unwrap(),
        "--server",
        &server.url(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let records = export(&ch).await;
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    for k in [
        "policy_loaded",
        "consent_recorded",
        "inbound_received",
        "identity_linked",
        "dnc_added",
        "dnc_removed",
        "registry_imported",
    ] {
        assert!(kinds.contains(&k), "no {k} record in {kinds:?}");
    }
    // Gap-free seqs, each chained to the one before.
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        if i > 0 {
            assert_eq!(r.prev_hash, records[i - 1].hash);
        }
    }
    let first = records
        .iter()
        .find(|r| r.kind == "consent_recorded")
        .unwrap();
    assert_eq!(first.actor, "agent:jo");
    assert_eq!(first.metadata.get("request_id").unwrap(), "req-77");
    assert_eq!(first.metadata.get("transport").unwrap(), "grpc");
    assert!(first.identifiers.values().any(|v| v == "+12025550140"));
    assert!(first.after_json.contains("https://example.com/form/1"));
    assert!(first.summary_json.contains("GRANTED"));
    // The STOP's withdrawal saw the grant as its before.
    let withdrawal = records
        .iter()
        .filter(|r| r.kind == "consent_recorded")
        .nth(1)
        .unwrap();
    assert!(withdrawal.summary_json.contains("WITHDRAWN"));
    assert!(
        withdrawal.before_json.contains("GRANTED"),
        "{}",
        withdrawal.before_json
    );
    let removal = records.iter().find(|r| r.kind == "dnc_removed").unwrap();
    assert!(removal.before_json.contains("CORPORATE"));
    assert_eq!(removal.subjects.len(), 1, "the removed entry's identifier");
    let v = verify(&ch).await;
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, records.len() as u64);
    server.stop();

    // Offline: the CLI reads the store itself.
    let data = dir.path().to_str().unwrap();
    let out = cli(&["audit", "verify", "--data-dir", data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));
    let lines = cli(&[
        "audit",
        "export",
        "--data-dir",
        data,
        "--since",
        "2000-01-01",
    ]);
    let text = String::from_utf8(lines.stdout).unwrap();
    assert_eq!(text.lines().count(), records.len());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["hash"].is_string());
    }
    let none = cli(&[
        "audit",
        "export",
        "--data-dir",
        data,
        "--until",
        "2000-01-01",
    ]);
    assert!(none.stdout.is_empty());

    // Alter one stored record behind the service's back: verify names it.
    let target = records.iter().find(|r| r.kind == "dnc_added").unwrap().seq;
    {
        let db = redb::Database::create(dir.path().join("preflight.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(preflight::store::embedded::AUDIT).unwrap();
            let old = t.get(target).unwrap().unwrap().value().to_vec();
            let text = String::from_utf8(old).unwrap();
            assert!(text.contains("CORPORATE"), "{text}");
            let new = text.replace("CORPORATE", "PERSONAL");
            t.insert(target, new.as_bytes()).unwrap();
        }
        txn.commit().unwrap();
    }
    let out = cli(&["audit", "verify", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("BROKEN at record {target}")),
        "{said}"
    );

    // The running service finds it too, and refuses nothing else.
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let v = verify(&ch).await;
    assert!(!v.ok);
    assert_eq!(v.first_broken_seq, target);
    server.stop();
}

fn submit(
    consumer: &str,
    t: pb::PrivacyRequestType,
    j: pb::Jurisdiction,
) -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        consumer_id: consumer.into(),
        r#type: t as i32,
        jurisdiction: j as i32,
        received_at: None,
    }
}

#[tokio::test]
async fn access_bundles_and_deletes_that_keep_the_person_suppressed() {
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    let config = dir.path().join("preflight.toml");
    std::fs::write(
        &config,
        format!("[privacy]\nexport_dir = {:?}\n", exports.to_str().unwrap()),
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_string();
    let mut server = Server::start_with(dir.path(), &["--config", &cfg]);
    let ch = server.ready().await;
    let mut c = consent(&ch);
    let phone = "2025550143";
    let email = "dana@example.com";
    let mut g = grant(phone, &[Ch::Sms, Ch::Voice], &[P::Marketing]);
    g.proof = "ip 203.0.113.7 at checkout".into();
    c.record_consent(g).await.unwrap();
    let mut g = grant(email, &[Ch::Email], &[P::Marketing]);
    g.proof = "double opt-in QZ-4411".into();
    c.record_consent(g).await.unwrap();
    c.link_identifiers(pb::LinkIdentifiersRequest {
        external_id: "crm-dana".into(),
        contacts: vec![phone.into(), email.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    c.process_inbound(inbound(phone, "STOP", "m-9", Ch::Sms))
        .await
        .unwrap();
    dnc(&ch)
        .add_entries(pb::AddEntriesRequest {
            entries: vec![pb::DncEntryInput {
                note: "asked on a call, ticket TK-5531".into(),
                ..entry(email, pb::DncType::Corporate)
            }],
            actor: "ops".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Registration deduplicates by any identifier.
    let mut p = privacy(&ch);
    let first = p
        .register_consumer(pb::RegisterConsumerRequest {
            identifiers: vec!["(202) 555-0143".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let id = first.consumer.unwrap().consumer_id;
    let again = p
        .register_consumer(pb::RegisterConsumerRequest {
            identifiers: vec!["Dana@Example.com".into(), "+1 202 555 0143".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    let consumer = again.consumer.unwrap();
    assert_eq!(consumer.consumer_id, id);
    assert_eq!(
        consumer.identifiers,
        vec!["+12025550143", "dana@example.com"]
    );
    assert_eq!(again.added_identifiers, vec!["dana@example.com"]);
    let other = p
        .register_consumer(pb::RegisterConsumerRequest {
            identifiers: vec!["2025550199".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let err = p
        .register_consumer(pb::RegisterConsumerRequest {
            identifiers: vec![phone.into(), "2025550199".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("identifiers"), "{}", err.message());
    let err = p
        .register_consumer(pb::RegisterConsumerRequest {
            identifiers: vec!["not a contact".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("identifiers[0]"),
        "{}",
        err.message()
    );

    // ACCESS: a bundle of everything held, owner-only, with its digest.
    let access = p
        .submit_request(submit(
            &id,
            pb::PrivacyRequestType::Access,
            pb::Jurisdiction::Ccpa,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(access.status, pb::PrivacyRequestStatus::Pending as i32);
    let received = access.received_at.unwrap().seconds;
    assert_eq!(access.respond_by.unwrap().seconds, received + 45 * 86_400);
    let done = finished(&mut privacy(&ch), &access.request_id).await;
    assert_eq!(
        done.status,
        pb::PrivacyRequestStatus::Completed as i32,
        "{done:?}"
    );
    let bytes = std::fs::read(&done.bundle_path).unwrap();
    assert_eq!(bytes.len() as u64, done.bundle_size);
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        done.bundle_sha256
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&done.bundle_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let bundle: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let text = bundle.to_string();
    for needle in [
        "+12025550143",
        "dana@example.com",
        "ext:crm-dana",
        "ip 203.0.113.7 at checkout",
        "ticket TK-5531",
    ] {
        assert!(text.contains(needle), "bundle lacks {needle}");
    }
    assert_eq!(bundle["consent_history"].as_array().unwrap().len(), 3);
    assert_eq!(bundle["inbound_actions"].as_array().unwrap().len(), 1);
    assert_eq!(bundle["dnc_entries"].as_array().unwrap().len(), 1);
    assert!(!bundle["audit_records"].as_array().unwrap().is_empty());

    // A second consumer under legal hold: the DELETE keeps their records and ends PARTIAL.
    let held = "2025550199";
    c.record_consent(withdraw(held)).await.unwrap();
    p.place_legal_hold(pb::LegalHoldRequest {
        contact: held.into(),
        reason: "Smith v. Acme, case 24-cv-118".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let other_id = other.consumer.unwrap().consumer_id;
    let partial = p
        .submit_request(submit(
            &other_id,
            pb::PrivacyRequestType::Delete,
            pb::Jurisdiction::Gdpr,
        ))
        .await
        .unwrap()
        .into_inner();
    let partial = finished(&mut privacy(&ch), &partial.request_id).await;
    assert_eq!(
        partial.status,
        pb::PrivacyRequestStatus::Partial as i32,
        "{partial:?}"
    );
    assert_eq!(partial.retained.len(), 1, "{:?}", partial.retained);
    assert!(partial.retained[0].reason.contains("24-cv-118"));
    assert!(partial.retained[0].record_id.starts_with("cn-"));

    // DELETE: nothing readable is left, and every identifier is still blocked.
    let del = p
        .submit_request(submit(
            &id,
            pb::PrivacyRequestType::Delete,
            pb::Jurisdiction::Ccpa,
        ))
        .await
        .unwrap()
        .into_inner();
    let del = finished(&mut privacy(&ch), &del.request_id).await;
    assert_eq!(
        del.status,
        pb::PrivacyRequestStatus::Completed as i32,
        "{del:?}"
    );
    assert_eq!(
        del.erased_identifiers, 3,
        "phone, email and the person's ext: id"
    );

    let assert_erased = |ch: Channel| async move {
        for contact in [phone, email] {
            let view = consent(&ch)
                .get_contact(pb::GetContactRequest {
                    contact: contact.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let shown = format!("{view:?}");
            for secret in [
                "2025550143",
                "dana@",
                "crm-dana",
                "203.0.113.7",
                "QZ-4411",
                "TK-5531",
            ] {
                assert!(
                    !shown.replace(&view.normalized_contact, "").contains(secret),
                    "GetContact({contact}) still shows {secret}: {shown}"
                );
            }
        }
        let sms = check(&ch, phone, Ch::Sms, P::Marketing).await;
        assert_eq!(sms.verdict, pb::Verdict::Block as i32);
        assert!(reasons(&sms).contains(&R::ConsentWithdrawn), "{sms:?}");
        let mail = check(&ch, email, Ch::Email, P::Marketing).await;
        assert_eq!(mail.verdict, pb::Verdict::Block as i32);
        assert!(reasons(&mail).contains(&R::DncCorporate), "{mail:?}");
        // The grant was erased with the rest: voice marketing has no consent left.
        let voice = check(&ch, phone, Ch::Voice, P::Marketing).await;
        assert_eq!(voice.verdict, pb::Verdict::Block as i32);
        let v = verify(&ch).await;
        assert!(v.ok, "{v:?}");
        assert!(v.erased > 0);
        for r in export(&ch).await {
            let all = format!("{r:?}");
            for secret in [
                "2025550143",
                "dana@example.com",
                "crm-dana",
                "203.0.113.7",
                "QZ-4411",
                "TK-5531",
            ] {
                assert!(
                    !all.contains(secret),
                    "audit record {} still holds {secret}",
                    r.seq
                );
            }
        }
    };
    assert_erased(ch.clone()).await;
    // The held consumer's records are still readable.
    let held_view = consent(&ch)
        .get_contact(pb::GetContactRequest {
            contact: held.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held_view.consents.len(), 1);
    let err = p
        .submit_request(submit(
            &id,
            pb::PrivacyRequestType::Access,
            pb::Jurisdiction::Ccpa,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // After a restart (a replay of the rewritten log) the same holds.
    server.stop();
    let mut server = Server::start_with(dir.path(), &["--config", &cfg]);
    let ch = server.ready().await;
    assert_erased(ch.clone()).await;
    let out = cli(&["privacy", "list", "--server", &server.url()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("3 requests"), "{said}");
    server.stop();
}

#[tokio::test]
async fn a_request_that_fails_is_an_error_and_overdue_once_past_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    // The export directory cannot be created: ACCESS requests fail.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let config = dir.path().join("preflight.toml");
    std::fs::write(
        &config,
        format!(
            "[privacy]\nexport_dir = {:?}\n",
            blocker.join("exports").to_str().unwrap()
        ),
    )
    .unwrap();
    let mut server = Server::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let ch = server.ready().await;
    let mut p = privacy(&ch);
    let id = register_consumer(&ch, &["lee@example.com"]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut old = submit(&id, pb::PrivacyRequestType::Access, pb::Jurisdiction::Gdpr);
    old.received_at = Some(prost_types::Timestamp {
        seconds: now - 40 * 86_400,
        nanos: 0,
    });
    let old = p.submit_request(old).await.unwrap().into_inner();
    let fresh = p
        .submit_request(submit(
            &id,
            pb::PrivacyRequestType::Access,
            pb::Jurisdiction::Gdpr,
        ))
        .await
        .unwrap()
        .into_inner();
    let failed = finished(&mut privacy(&ch), &old.request_id).await;
    assert_eq!(failed.status, pb::PrivacyRequestStatus::Error as i32);
    assert!(
        failed.error.contains("export directory"),
        "{}",
        failed.error
    );
    assert!(failed.overdue);
    finished(&mut privacy(&ch), &fresh.request_id).await;
    let overdue = p
        .list_requests(pb::ListRequestsRequest {
            overdue_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    let ids: Vec<&str> = overdue.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, vec![old.request_id.as_str()]);

    // The one extension moves the deadline to three months after receipt; no second one.
    let ext = p
        .extend_request(pb::ExtendRequestRequest {
            request_id: old.request_id.clone(),
            notice: "complex request, notice sent by email".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ext.extended);
    assert!(!ext.overdue);
    let err = p
        .extend_request(pb::ExtendRequestRequest {
            request_id: old.request_id.clone(),
            notice: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = p
        .submit_request(submit(
            "cu-999",
            pb::PrivacyRequestType::Delete,
            pb::Jurisdiction::Ccpa,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = p
        .submit_request(pb::SubmitRequestRequest {
            consumer_id: id.clone(),
            r#type: pb::PrivacyRequestType::Delete as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("jurisdiction"), "{}", err.message());
    server.stop();
}
