//! Property: however link, unlink, withdraw, grant, DNC writes, attempts and DELETE requests
//! interleave, the decisions equal those of applying the committed events in sequence
//! order, both by a fresh index replaying the (rewritten) log and by a naive model of the
//! rules written separately here.
use preflight::audit::Caller;
use preflight::audit::Tokenizer;
use preflight::clock::SystemClock;
use preflight::config::Config;
use preflight::engine::{
    AddEntriesRequest, Arg, AttemptRequest, CheckRequest, ConsentRequest, DncEntryRequest, Engine,
    LinkRequest, RecordAttemptsRequest, SubmitRequest,
};
use preflight::index::Index;
use preflight::model::Token;
use preflight::model::privacy::{Jurisdiction, RequestStatus, RequestType};
use preflight::model::{
    AttemptOutcome, Channel, ConsentStatus, ContactKey, DncType, Event, Purpose, Reason,
    StoredEvent,
};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

const CONTACTS: [&str; 5] = [
    "+12025550161",
    "+12025550162",
    "+12025550163",
    "a@example.com",
    "b@example.com",
];
const CHANNELS: [Channel; 3] = [Channel::Sms, Channel::Voice, Channel::Email];

#[derive(Debug, Clone)]
enum Op {
    Link(u8, usize),
    Unlink(usize),
    Withdraw(usize, Option<Channel>),
    Grant(usize, Channel),
    Corporate(usize),
    /// A consumer registered with this identifier asks to be deleted.
    Delete(usize),
    /// A call attempt on the identifier.
    Attempt(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CONTACTS.len();
    let ch = prop::sample::select(CHANNELS.to_vec());
    prop_oneof![
        (0..2u8, c.clone()).prop_map(|(p, c)| Op::Link(p, c)),
        c.clone().prop_map(Op::Unlink),
        (c.clone(), prop::option::of(ch.clone())).prop_map(|(c, ch)| Op::Withdraw(c, ch)),
        (c.clone(), ch).prop_map(|(c, ch)| Op::Grant(c, ch)),
        c.clone().prop_map(Op::Corporate),
        c.clone().prop_map(Op::Attempt),
        c.prop_map(Op::Delete),
    ]
}

async fn run(engine: &Arc<Engine>, op: Op) {
    match op {
        Op::Link(p, c) => {
            engine
                .link_identifiers(
                    LinkRequest {
                        external_id: format!("p{p}"),
                        contacts: vec![CONTACTS[c].into()],
                        ..Default::default()
                    },
                    &Caller::system("test"),
                )
                .await
                .unwrap();
        }
        // Not linked is a NotFound answer, which is fine here.
        Op::Unlink(c) => drop(
            engine
                .unlink_identifier(CONTACTS[c], "", &Caller::system("test"))
                .await,
        ),
        Op::Withdraw(c, ch) => {
            engine
                .record_consent(
                    ConsentRequest {
                        contact: CONTACTS[c].into(),
                        status: Arg::Set(ConsentStatus::Withdrawn),
                        channels: ch.into_iter().map(Arg::Set).collect(),
                        ..Default::default()
                    },
                    &Caller::system("test"),
                )
                .await
                .unwrap();
        }
        Op::Grant(c, ch) => {
            engine
                .record_consent(
                    ConsentRequest {
                        contact: CONTACTS[c].into(),
                        status: Arg::Set(ConsentStatus::Granted),
                        channels: vec![Arg::Set(ch)],
                        purposes: vec![Arg::Set(Purpose::Marketing)],
                        ..Default::default()
                    },
                    &Caller::system("test"),
                )
                .await
                .unwrap();
        }
        Op::Attempt(c) => {
            let out = engine
                .record_attempts(
                    RecordAttemptsRequest {
                        attempts: vec![AttemptRequest {
                            contact: CONTACTS[c].into(),
                            channel: Arg::Set(Channel::Voice),
                            outcome: Arg::Set(AttemptOutcome::NoAnswer),
                            subject: "s".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    &Caller::system("test"),
                )
                .await
                .unwrap();
            assert!(out.results[0].error.is_empty(), "{out:?}");
        }
        Op::Delete(c) => {
            let caller = Caller::system("test");
            // A registration that names two known consumers, or one already erased, is a
            // refusal, which is fine here.
            let Ok(reg) = engine
                .register_consumer(&[CONTACTS[c].to_string()], "", &caller)
                .await
            else {
                return;
            };
            let Ok(req) = engine
                .submit_request(
                    SubmitRequest {
                        consumer_id: preflight::model::event::consumer_id(reg.consumer.seq),
                        request_type: Arg::Set(RequestType::Delete),
                        jurisdiction: Arg::Set(Jurisdiction::Ccpa),
                        received_at: None,
                    },
                    &caller,
                )
                .await
            else {
                return;
            };
            let id = preflight::model::event::request_id(req.seq);
            loop {
                let r = engine.get_request(&id).unwrap();
                if !matches!(r.status, RequestStatus::Pending | RequestStatus::InProgress) {
                    assert_eq!(r.status, RequestStatus::Completed, "{r:?}");
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
        Op::Corporate(c) => {
            engine
                .add_entries(
                    AddEntriesRequest {
                        entries: vec![DncEntryRequest {
                            contact: CONTACTS[c].into(),
                            dnc_type: Arg::Set(DncType::Corporate),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    &Caller::system("test"),
                )
                .await
                .unwrap();
        }
    }
}

/// The tokens of each erased person: every token in one DELETE's group (or its tokens, for
/// an erasure that names no group) belongs with all the others, transitively.
fn erased_people(events: &[StoredEvent]) -> Vec<BTreeSet<Token>> {
    let mut groups: Vec<BTreeSet<Token>> = Vec::new();
    for ev in events {
        if let Event::SubjectsErased(e) = &ev.event {
            let named = if e.group.is_empty() {
                &e.tokens
            } else {
                &e.group
            };
            let mut g: BTreeSet<Token> = named
                .iter()
                .filter_map(|k| match k {
                    ContactKey::Erased(t) => Some(*t),
                    _ => None,
                })
                .collect();
            groups.retain(|old| {
                if old.is_disjoint(&g) {
                    true
                } else {
                    g.extend(old.iter().copied());
                    false
                }
            });
            groups.push(g);
        }
    }
    groups
}

/// The rules as stated in docs/rules.md (identity links, erasure keeps the person suppressed),
/// computed by scanning the event list.
fn model(
    events: &[StoredEvent],
    tokens: &Tokenizer,
    contact: &ContactKey,
    channel: Channel,
    purpose: Purpose,
) -> BTreeSet<Reason> {
    let mut person: HashMap<ContactKey, String> = HashMap::new();
    // (seq, owner identifier, person of the owner when recorded, event)
    let mut records: Vec<(u64, ContactKey, Option<String>, &Event)> = Vec::new();
    for ev in events {
        match &ev.event {
            Event::IdentityLinked(l) => drop(person.insert(l.contact.clone(), l.person.clone())),
            Event::IdentityUnlinked(u) => drop(person.remove(&u.contact)),
            Event::ConsentRecorded(c) => records.push((
                ev.seq,
                c.contact.clone(),
                person.get(&c.contact).cloned(),
                &ev.event,
            )),
            Event::DncAdded(d) => records.push((
                ev.seq,
                d.contact.clone(),
                person.get(&d.contact).cloned(),
                &ev.event,
            )),
            _ => {}
        }
    }
    let me = person.get(contact).cloned();
    let my_token = ContactKey::Erased(tokens.token_of(contact));
    // Tokens of erased people this contact belongs with: through its own token, or through
    // the external id it is linked to now.
    let mut erased_kin: BTreeSet<Token> = BTreeSet::new();
    let roots: Vec<Token> = std::iter::once(tokens.token_of(contact))
        .chain(
            me.iter()
                .map(|p| tokens.token_of(&ContactKey::External(p.as_str().into()))),
        )
        .collect();
    for g in erased_people(events) {
        if roots.iter().any(|r| g.contains(r)) {
            erased_kin.extend(g);
        }
    }
    let relevant = |owner: &ContactKey, then: &Option<String>, ev: &Event| -> bool {
        if owner == contact || *owner == my_token {
            return true;
        }
        let spreads = match ev {
            Event::ConsentRecorded(c) => c.status != ConsentStatus::Granted,
            Event::DncAdded(d) => d.dnc_type == DncType::Corporate,
            _ => false,
        };
        if let ContactKey::Erased(t) = owner
            && erased_kin.contains(t)
        {
            return spreads;
        }
        let Some(p) = &me else { return false };
        spreads && (then.as_ref() == Some(p) || person.get(owner) == Some(p))
    };
    let mut reasons = BTreeSet::new();
    let mut latest: Option<(i64, u64, ConsentStatus)> = None;
    for (seq, owner, then, ev) in &records {
        if !relevant(owner, then, ev) {
            continue;
        }
        match ev {
            Event::DncAdded(_) => {
                reasons.insert(Reason::DncCorporate);
            }
            Event::ConsentRecorded(c)
                if c.channels.contains(channel)
                    && c.purposes.contains(purpose)
                    && latest.is_none_or(|(t, s, _)| (c.effective_at, *seq) > (t, s)) =>
            {
                latest = Some((c.effective_at, *seq, c.status));
            }
            _ => {}
        }
    }
    match latest {
        Some((_, _, ConsentStatus::Withdrawn)) => {
            reasons.insert(Reason::ConsentWithdrawn);
        }
        None if purpose == Purpose::Marketing
            && matches!(channel, Channel::Sms | Channel::Voice) =>
        {
            reasons.insert(Reason::NoConsent);
        }
        _ => {}
    }
    reasons
}

fn decide(
    engine: &Engine,
    index: &Index,
    contact: &ContactKey,
    channel: Channel,
    purpose: Purpose,
) -> BTreeSet<Reason> {
    let policy = engine.policies().get("").unwrap();
    let input = preflight::policy::CheckInput {
        channel,
        purpose,
        category: None,
        direction: preflight::model::Direction::Outbound,
        at: engine.now(),
        // Calling hours depend on the clock, not on the facts this test compares.
        hours: Default::default(),
        frequency: Default::default(),
    };
    index
        .with_facts(&contact.as_ref(), |f, seq| {
            preflight::policy::evaluate(policy, &input, f, &[], 0, seq)
        })
        .reasons
        .iter()
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_decides_as_the_sequence(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        // The comparison is of facts; calling hours would make it depend on the time of day.
        config.calling_hours.rules_file = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/no_calling_rules.toml").into());
        let engine = preflight::server::open_embedded(&config, "test", Arc::new(SystemClock)).unwrap();
        rt.block_on(async {
            let tasks: Vec<_> = ops.iter().cloned().map(|op| {
                let engine = engine.clone();
                tokio::spawn(async move { run(&engine, op).await })
            }).collect();
            for t in tasks { t.await.unwrap(); }
        });
        let events = engine.read_events(0, usize::MAX).unwrap();
        prop_assert_eq!(events.len() as u64, engine.index().seq());
        let tokens = Tokenizer::load_or_create(&config.key_file()).unwrap();
        let replayed = Index::new();
        replayed.set_tokenizer(tokens.clone());
        for ev in &events { replayed.apply(ev); }
        for c in CONTACTS {
            let key = ContactKey::from_canonical(c).unwrap();
            // The attempts a limit per person counts: the same live and replayed (an erased
            // identifier's are gone from both).
            let attempts = |index: &Index| {
                let mut seqs = BTreeSet::new();
                index.each_attempt(&key.as_ref(), true, &mut |a, _| { seqs.insert(a.seq()); });
                seqs
            };
            prop_assert_eq!(attempts(engine.index()), attempts(&replayed), "attempts differ for {}", c);
            for channel in CHANNELS {
                for purpose in [Purpose::Marketing, Purpose::Service] {
                    let live = decide(&engine, engine.index(), &key, channel, purpose);
                    prop_assert_eq!(&live, &decide(&engine, &replayed, &key, channel, purpose), "replay differs for {} {:?} {:?}", c, channel, purpose);
                    prop_assert_eq!(&live, &model(&events, &tokens, &key, channel, purpose), "model differs for {} {:?} {:?}", c, channel, purpose);
                    let check = engine.check(&CheckRequest { contact: c, channel: Arg::Set(channel), purpose: Arg::Set(purpose), ..Default::default() }).unwrap();
                    prop_assert_eq!(&live, &check.decision.reasons.iter().collect::<BTreeSet<_>>());
                }
            }
        }
    }
}
