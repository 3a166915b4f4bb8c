//! Durability against the real binary: a restart answers exactly as before, and a SIGKILL
//! during a burst of concurrent writes loses no acknowledged write.
mod common;

use common::*;
use pb::{Channel as Ch, DncType, Purpose as P};
use preflight::proto as pb;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn probe_batch() -> pb::CheckBatchRequest {
    let mut checks = Vec::new();
    for i in 0..60 {
        for (ch, p) in [
            (Ch::Sms, P::Marketing),
            (Ch::Voice, P::Marketing),
            (Ch::Email, P::Service),
            (Ch::Sms, P::Security),
        ] {
            checks.push(check_req(&format!("202555{:04}", 1000 + i), ch, p));
        }
    }
    checks.push(check_req("ann@example.com", Ch::Email, P::Marketing));
    pb::CheckBatchRequest { checks }
}

#[tokio::test]
async fn restart_rebuilds_the_index_and_answers_exactly_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let (mut c, mut n) = (consent(&ch), dnc(&ch));
    for i in 0..60u32 {
        let contact = format!("202555{:04}", 1000 + i);
        match i % 4 {
            0 => drop(
                c.record_consent(grant(&contact, &[Ch::Sms, Ch::Voice], &[P::Marketing]))
                    .await
                    .unwrap(),
            ),
            1 => drop(c.record_consent(withdraw(&contact)).await.unwrap()),
            2 => drop(
                n.add_entries(pb::AddEntriesRequest {
                    entries: vec![entry(&contact, DncType::Federal)],
                    ..Default::default()
                })
                .await
                .unwrap(),
            ),
            _ => {}
        }
    }
    n.add_entries(pb::AddEntriesRequest {
        entries: vec![entry("2025551008", DncType::Corporate)],
        ..Default::default()
    })
    .await
    .unwrap();
    n.remove_entries(pb::RemoveEntriesRequest {
        entries: vec![pb::RemoveEntry {
            contact: "2025551008".into(),
            ..Default::default()
        }],
        actor: "ops".into(),
        reason: "test".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.record_consent(withdraw("Ann@Example.com")).await.unwrap();
    let before = decision(&ch)
        .check_batch(probe_batch())
        .await
        .unwrap()
        .into_inner();
    let blocked = before
        .results
        .iter()
        .filter(|r| r.verdict == pb::Verdict::Block as i32)
        .count();
    assert!(
        blocked > 50 && blocked < before.results.len(),
        "a mix of verdicts: {blocked}"
    );
    drop((c, n, ch));
    server.stop();

    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let after = decision(&ch)
        .check_batch(probe_batch())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before, after);
    let entries = dnc(&ch)
        .get_entries(pb::GetEntriesRequest {
            contact: "2025551008".into(),
            include_archived: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        entries.entries.len(),
        1,
        "archived entry kept across restart"
    );
    assert!(!entries.entries[0].active);
    assert_eq!(entries.entries[0].removed_by, "ops");
    server.kill();
}

#[derive(Debug, Clone)]
enum Acked {
    Consent {
        contact: String,
        id: String,
        seq: u64,
    },
    Dnc {
        contact: String,
        id: String,
        seq: u64,
    },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_write_burst_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let mut tasks = Vec::new();
    for w in 0..24u32 {
        let ch = ch.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let (mut c, mut n) = (consent(&ch), dnc(&ch));
            for i in 0..100_000u32 {
                let contact = format!("+1202{:03}{:04}", 200 + w, i % 10_000);
                if i % 3 == 0 {
                    let req = pb::AddEntriesRequest {
                        entries: vec![entry(&contact, DncType::Corporate)],
                        ..Default::default()
                    };
                    match n.add_entries(req).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            acked.lock().unwrap().push(Acked::Dnc {
                                contact,
                                id: r.results[0].entry_id.clone(),
                                seq: r.seq,
                            });
                        }
                        Err(_) => return,
                    }
                } else {
                    match c.record_consent(withdraw(&contact)).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            acked.lock().unwrap().push(Acked::Consent {
                                contact,
                                id: r.consent_id,
                                seq: r.seq,
                            });
                        }
                        Err(_) => return,
                    }
                }
            }
        }));
    }
    // Let the burst build, then kill without warning.
    while acked.lock().unwrap().len() < 1500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1500);
    let max_seq = acked
        .iter()
        .map(|a| match a {
            Acked::Consent { seq, .. } | Acked::Dnc { seq, .. } => *seq,
        })
        .max()
        .unwrap();

    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let mut c = consent(&ch);
    let mut missing = Vec::new();
    let mut index_seq = 0;
    for a in &acked {
        let (contact, id) = match a {
            Acked::Consent { contact, id, .. } | Acked::Dnc { contact, id, .. } => (contact, id),
        };
        let v = c
            .get_contact(pb::GetContactRequest {
                contact: contact.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        index_seq = v.index_seq;
        let found = match a {
            Acked::Consent { .. } => v.consents.iter().any(|x| &x.consent_id == id),
            Acked::Dnc { .. } => v.dnc_entries.iter().any(|x| &x.entry_id == id),
        };
        if !found {
            missing.push(a.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    assert!(
        index_seq >= max_seq,
        "index seq {index_seq} below acknowledged {max_seq}"
    );
    server.kill();
}
