//! A DELETE request keeps the whole person suppressed: every identifier that a withdrawal,
//! a refusal or a company DNC entry of any one identifier blocked stays blocked, live and
//! after a restart, on the embedded store and on Redis (on another replica too), and so
//! does an identifier linked to the same external id after the erasure.
mod common;

use common::redis_server::RedisServer;
use common::*;
use pb::{Channel as Ch, Purpose as P, Reason as R};
use preflight::proto as pb;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Clone, Copy, Debug)]
enum Fact {
    Withdrawal,
    Refusal,
    Corporate,
    Personal,
}

impl Fact {
    const ALL: [Fact; 4] = [
        Fact::Withdrawal,
        Fact::Refusal,
        Fact::Corporate,
        Fact::Personal,
    ];

    fn reason(self) -> R {
        match self {
            Fact::Withdrawal => R::ConsentWithdrawn,
            Fact::Refusal => R::ConsentDenied,
            Fact::Corporate => R::DncCorporate,
            Fact::Personal => R::DncPersonal,
        }
    }
}

/// One person per fact: three identifiers linked to one external id, the fact recorded
/// against the first phone only, and a fourth phone linked after the DELETE.
struct Person {
    fact: Fact,
    external_id: String,
    phone: String,
    email: String,
    phone2: String,
    later: String,
}

impl Person {
    fn new(i: usize, fact: Fact) -> Person {
        Person {
            fact,
            external_id: format!("crm-10{i:02}"),
            phone: format!("41586700{i:02}"),
            email: format!("c10{i:02}@example.com"),
            phone2: format!("41586701{i:02}"),
            later: format!("41586702{i:02}"),
        }
    }

    /// Each identifier on a channel and purpose the fact covers.
    fn probes(&self, with_later: bool) -> Vec<(String, Ch, P)> {
        let mut v = vec![
            (self.phone.clone(), Ch::Sms, P::Marketing),
            (self.email.clone(), Ch::Email, P::Marketing),
            (self.phone2.clone(), Ch::Voice, P::Service),
        ];
        if with_later {
            v.push((self.later.clone(), Ch::Voice, P::Service));
        }
        v
    }
}

async fn link(ch: &Channel, external_id: &str, contacts: &[&str]) {
    consent(ch)
        .link_identifiers(pb::LinkIdentifiersRequest {
            external_id: external_id.into(),
            contacts: contacts.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn record(ch: &Channel, p: &Person) {
    match p.fact {
        Fact::Withdrawal => {
            let r = consent(ch)
                .process_inbound(inbound(
                    &p.phone,
                    "STOP",
                    &format!("m-{}", p.phone),
                    Ch::Sms,
                ))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.action, pb::InboundAction::OptOut as i32);
        }
        Fact::Refusal => {
            consent(ch)
                .record_consent(pb::RecordConsentRequest {
                    status: pb::ConsentStatus::Denied as i32,
                    ..withdraw(&p.phone)
                })
                .await
                .unwrap();
        }
        Fact::Corporate | Fact::Personal => {
            let t = match p.fact {
                Fact::Corporate => pb::DncType::Corporate,
                _ => pb::DncType::Personal,
            };
            let r = dnc(ch)
                .add_entries(pb::AddEntriesRequest {
                    entries: vec![entry(&p.phone, t)],
                    actor: "ops".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.results[0].status, pb::EntryStatus::Accepted as i32);
        }
    }
}

/// Asserts that every probe of every person is blocked by that person's fact; `at_least`
/// makes the check wait until this server's index has caught up with that seq.
async fn assert_blocked(
    ch: &Channel,
    people: &[Person],
    with_later: bool,
    at_least: u64,
    when: &str,
) {
    for p in people {
        for (contact, channel, purpose) in p.probes(with_later) {
            let deadline = Instant::now() + Duration::from_secs(20);
            let r = loop {
                let r = check(ch, &contact, channel, purpose).await;
                if r.index_seq >= at_least {
                    break r;
                }
                assert!(
                    Instant::now() < deadline,
                    "index stuck below seq {at_least}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(
                r.verdict,
                pb::Verdict::Block as i32,
                "{when}: {contact} {r:?}"
            );
            assert!(
                reasons(&r).contains(&p.fact.reason()),
                "{when}: {:?} on {contact} ({channel:?}/{purpose:?}) no longer blocks: {:?}",
                p.fact,
                reasons(&r)
            );
        }
    }
}

async fn delete(ch: &Channel, p: &Person) {
    let r = privacy_request(ch, &[&p.phone], pb::PrivacyRequestType::Delete).await;
    assert_eq!(
        r.status,
        pb::PrivacyRequestStatus::Completed as i32,
        "{r:?}"
    );
    // The phone, the email, the second phone and the external id.
    assert_eq!(r.erased_identifiers, 4, "{r:?}");
}

/// Writes through `writer`, checks on every server of `readers`; returns the seq reached.
async fn scenario(writer: &Channel, readers: &[&Channel]) -> (Vec<Person>, u64) {
    let people: Vec<Person> = Fact::ALL
        .iter()
        .enumerate()
        .map(|(i, f)| Person::new(i + 1, *f))
        .collect();
    for p in &people {
        link(writer, &p.external_id, &[&p.phone, &p.email, &p.phone2]).await;
        record(writer, p).await;
    }
    let seq = check(writer, &people[0].phone, Ch::Sms, P::Marketing)
        .await
        .index_seq;
    for r in readers {
        assert_blocked(r, &people, false, seq, "before the DELETE").await;
    }
    for p in &people {
        delete(writer, p).await;
    }
    let seq = check(writer, &people[0].phone, Ch::Sms, P::Marketing)
        .await
        .index_seq;
    for r in readers {
        assert_blocked(r, &people, false, seq, "after the DELETE").await;
    }
    for p in &people {
        link(writer, &p.external_id, &[&p.later]).await;
    }
    let seq = check(writer, &people[0].phone, Ch::Sms, P::Marketing)
        .await
        .index_seq;
    for r in readers {
        assert_blocked(r, &people, true, seq, "linked after the DELETE").await;
    }
    (people, seq)
}

#[tokio::test]
async fn embedded_store_keeps_an_erased_person_suppressed_on_every_identifier() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    let (people, seq) = scenario(&ch, &[&ch]).await;
    server.stop();
    let mut server = Server::start(dir.path());
    let ch = server.ready().await;
    assert_blocked(&ch, &people, true, seq, "after a restart").await;
    server.stop();
}

#[tokio::test]
async fn redis_replicas_keep_an_erased_person_suppressed_on_every_identifier() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(&dir.path().join("redis"), false);
    let key = dir.path().join("privacy.key");
    std::fs::write(&key, [9u8; 32]).unwrap();
    let config = dir.path().join("preflight.toml");
    std::fs::write(
        &config,
        format!(
            "[privacy]\nkey_file = {:?}\n\n[redis]\nurl = {:?}\nheartbeat_ms = 100\n",
            key.to_str().unwrap(),
            redis.url()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_string();
    let replica = |name: &str| Server::start_with(&dir.path().join(name), &["--config", &cfg]);
    let mut a = replica("a");
    let mut b = replica("b");
    let ca = a.ready().await;
    let cb = b.ready().await;
    // A remembered answer that names the person (its normalized contact).
    let first = Person::new(1, Fact::Withdrawal);
    let mut g = grant(&first.phone2, &[Ch::Voice], &[P::Marketing]);
    g.idempotency_key = "crm-grant-1".into();
    consent(&ca).record_consent(g).await.unwrap();
    let idem_naming = |redis: &RedisServer, needle: &str| -> usize {
        let mut conn = redis.conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*idem:*").query(&mut conn).unwrap();
        keys.iter()
            .filter(|k| {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(*k)
                    .query(&mut conn)
                    .unwrap_or_default();
                v.windows(needle.len()).any(|w| w == needle.as_bytes())
            })
            .count()
    };
    let e164 = format!("+1{}", first.phone2);
    assert_eq!(
        idem_naming(&redis, &e164),
        1,
        "the test should see the answer first"
    );
    let (people, seq) = scenario(&ca, &[&ca, &cb]).await;
    assert_eq!(
        idem_naming(&redis, &e164),
        0,
        "an idempotency answer names the erased person"
    );
    // Redis comes back empty and is put back from a replica's copy: the answer naming the
    // person does not come back with the others.
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis::cmd("GET")
        .arg("{preflight}:seq")
        .query::<Option<u64>>(&mut redis.conn())
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "redis was not re-seeded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        idem_naming(&redis, &e164),
        0,
        "a re-seed brought back an answer naming the erased person"
    );
    b.kill();
    let mut b = replica("b");
    let cb = b.ready().await;
    assert_blocked(&cb, &people, true, seq, "on a restarted replica").await;
    let mut c = replica("c");
    let cc = c.ready().await;
    assert_blocked(&cc, &people, true, seq, "on a new replica").await;
    a.stop();
    b.stop();
    c.stop();
}

/// CORPORATE entries for numbers of another area code, in one call: 150, then 1,500 (more
/// than the largest block, so the records between them are folded into one).
async fn filler(ch: &Channel, round: u32) {
    let n = if round == 0 { 150 } else { 1_500 };
    let entries = (0..n)
        .map(|i| {
            entry(
                &format!("+1{}555{i:04}", if round == 0 { 303 } else { 720 }),
                pb::DncType::Corporate,
            )
        })
        .collect();
    dnc(ch)
        .add_entries(pb::AddEntriesRequest {
            entries,
            idempotency_key: format!("filler-{round}"),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Every stored event and audit record (decompressed, as the store reads them) that holds
/// one of `needles`, as (where, needle). The service must be stopped.
fn stored_traces(dir: &std::path::Path, needles: &[&str]) -> Vec<(String, String)> {
    use preflight::store::embedded::{
        EmbeddedStore, block_span, read_audit_from, read_events_from,
    };
    let db = EmbeddedStore::open(dir).unwrap();
    let (events_in_blocks, audit_in_blocks) = block_span(&db).unwrap();
    let place = |seq: u64, below: u64| {
        if seq < below {
            "in a block"
        } else {
            "in the tail"
        }
    };
    let mut out = Vec::new();
    let mut hunt = |at: String, bytes: &[u8]| {
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                out.push((at.clone(), n.to_string()));
            }
        }
    };
    for ev in read_events_from(&db, 0, usize::MAX).unwrap() {
        let at = format!("event {} {}", ev.seq, place(ev.seq, events_in_blocks));
        hunt(at, &serde_json::to_vec(&ev).unwrap());
    }
    for a in read_audit_from(&db, 0, usize::MAX).unwrap() {
        let at = format!("audit record {} {}", a.seq, place(a.seq, audit_in_blocks));
        hunt(at.clone(), &a.record);
        hunt(at, a.personal.as_deref().unwrap_or_default());
    }
    out
}

/// Every byte run under `dir` that holds one of `needles`, as (file, needle).
fn traces(dir: &std::path::Path, needles: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap_or_default();
            for n in needles {
                if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                    out.push((p.display().to_string(), n.to_string()));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn a_delete_leaves_no_identifier_proof_or_note_in_the_data_directory() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    let dir = &data;
    let mut server = Server::start(dir);
    let ch = server.ready().await;
    // Personal data rests owner-only: the data directory 0700, the store file 0600.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700);
    assert_eq!(mode(&dir.join("preflight.redb")), 0o600);
    let phone = "2025550177";
    let email = "zoe.erasable@example.com";
    let proof = "proof-QX-8812 ip 203.0.113.77";
    let note = "ticket TK-99817 called in";
    // Other people's entries before and after, so that the erased person's events and audit
    // records end up inside a compressed block of the store, not in its uncompressed tail.
    filler(&ch, 0).await;
    let mut c = consent(&ch);
    let mut g = grant(phone, &[Ch::Sms], &[P::Marketing]);
    g.proof = proof.into();
    g.idempotency_key = "crm-sync-grant-1".into();
    c.record_consent(g).await.unwrap();
    let mut w = withdraw(email);
    w.idempotency_key = "crm-sync-withdraw-1".into();
    c.record_consent(w).await.unwrap();
    link(&ch, "crm-7733", &[phone, email]).await;
    dnc(&ch)
        .add_entries(pb::AddEntriesRequest {
            entries: vec![pb::DncEntryInput {
                note: note.into(),
                ..entry(phone, pb::DncType::Corporate)
            }],
            idempotency_key: "dnc-batch-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Contact attempts name who was called about what.
    let attempt = |contact: &str, channel: Ch, outcome: pb::AttemptOutcome| pb::Attempt {
        contact: contact.into(),
        channel: channel as i32,
        subject: "debt AC-55120".into(),
        outcome: outcome as i32,
        campaign_id: "collections".into(),
        ..Default::default()
    };
    let r = pb::attempt_service_client::AttemptServiceClient::new(ch.clone())
        .record_attempts(pb::RecordAttemptsRequest {
            attempts: vec![
                attempt(phone, Ch::Voice, pb::AttemptOutcome::Voicemail),
                attempt(email, Ch::Email, pb::AttemptOutcome::Delivered),
            ],
            idempotency_key: "dialer-batch-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.results.iter().all(|x| x.error.is_empty()), "{r:?}");
    // One consumer for the ACCESS now and the DELETE after the restart.
    let consumer = register_consumer(&ch, &[phone]).await;
    let r = run_request(&mut privacy(&ch), &consumer, pb::PrivacyRequestType::Access).await;
    assert_eq!(
        r.status,
        pb::PrivacyRequestStatus::Completed as i32,
        "{r:?}"
    );
    let bundle = r.bundle_path;
    assert!(std::path::Path::new(&bundle).exists());
    filler(&ch, 1).await;
    let needles = [
        "+12025550177",
        phone,
        email,
        "crm-7733",
        "QX-8812",
        "TK-99817",
        "AC-55120",
    ];
    server.stop();
    let held = stored_traces(dir, &needles);
    for n in &needles[2..] {
        assert!(
            held.iter().any(|(_, m)| m == n),
            "the test should see {n} in the store before the DELETE: {held:?}"
        );
    }
    assert!(
        held.iter().all(|(at, _)| at.contains("in a block")),
        "the person's records should sit in compressed blocks: {held:?}"
    );
    let mut server = Server::start(dir);
    let ch = server.ready().await;
    let mut p = privacy(&ch);

    // erased: the phone, the email and the external id.
    let r = run_request(&mut p, &consumer, pb::PrivacyRequestType::Delete).await;
    assert_eq!(
        r.status,
        pb::PrivacyRequestStatus::Completed as i32,
        "{r:?}"
    );
    assert_eq!(r.erased_identifiers, 3, "{r:?}");
    assert!(
        !std::path::Path::new(&bundle).exists(),
        "the earlier ACCESS bundle outlived the DELETE"
    );
    // Still suppressed, on both identifiers.
    for (contact, channel) in [(phone, Ch::Sms), (email, Ch::Email)] {
        let r = check(&ch, contact, channel, P::Marketing).await;
        assert_eq!(r.verdict, pb::Verdict::Block as i32, "{contact}: {r:?}");
    }
    server.stop();
    let found = traces(dir, &needles);
    assert!(
        found.is_empty(),
        "the erased person is still in the data directory: {found:?}"
    );
    let found = stored_traces(dir, &needles);
    assert!(
        found.is_empty(),
        "the erased person is still in the store's records: {found:?}"
    );
    // And a restart still blocks them.
    let mut server = Server::start(dir);
    let ch = server.ready().await;
    for (contact, channel) in [(phone, Ch::Sms), (email, Ch::Email)] {
        let r = check(&ch, contact, channel, P::Marketing).await;
        assert_eq!(r.verdict, pb::Verdict::Block as i32, "{contact}: {r:?}");
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_bundles_expire_after_the_export_time_to_live() {
    use preflight::audit::Caller;
    use preflight::engine::SubmitRequest;
    use preflight::model::privacy::{Jurisdiction, RequestStatus, RequestType};
    let dir = tempfile::tempdir().unwrap();
    let config = preflight::config::Config {
        data_dir: dir.path().to_path_buf(),
        ..preflight::config::Config::default()
    };
    let start = 1_800_000_000_000;
    let clock = preflight::clock::ManualClock::new(start);
    let engine = preflight::server::open_embedded(&config, "test", clock.clone()).unwrap();
    let caller = Caller::system("test");
    let reg = engine
        .register_consumer(&["2025550188".to_string()], "", &caller)
        .await
        .unwrap();
    let req = engine
        .submit_request(
            SubmitRequest {
                consumer_id: preflight::model::event::consumer_id(reg.consumer.seq),
                request_type: preflight::engine::Arg::Set(RequestType::Access),
                jurisdiction: preflight::engine::Arg::Set(Jurisdiction::Gdpr),
                received_at: None,
            },
            &caller,
        )
        .await
        .unwrap();
    let id = preflight::model::event::request_id(req.seq);
    let path = loop {
        let r = engine.get_request(&id).unwrap();
        if r.status == RequestStatus::Completed {
            break r.request.result.unwrap().bundle_path;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(std::path::Path::new(&path).exists());
    clock.advance(72 * 3_600_000 - 1);
    assert_eq!(engine.expire_bundles(), 0);
    assert!(std::path::Path::new(&path).exists());
    clock.advance(1);
    assert_eq!(engine.expire_bundles(), 1);
    assert!(!std::path::Path::new(&path).exists());
}
