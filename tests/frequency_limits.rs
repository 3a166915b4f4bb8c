//! Contact-frequency limits, in process with an injected clock: the state limits the default
//! policy ships (Florida, Oklahoma, Maryland: 3 in 24 hours per person and subject), Regulation
//! F's 7 in 7 days and its week after a conversation, limits per contact, across identifiers of
//! one person, subjects and campaigns, at the window's edges, combined with calling hours in
//! `next_allowed_at`, through a restart and an index image; and RecordAttempts' bad input.
mod common;

use preflight::audit::Caller;
use preflight::clock::{ManualClock, SharedClock};
use preflight::config::Config;
use preflight::engine::{
    Arg, AttemptRequest, CheckRequest, ConsentRequest, Engine, EntryStatus, LinkRequest,
    RecordAttemptsRequest, When,
};
use preflight::model::{AttemptOutcome, Channel, ConsentStatus, Millis, Purpose, Reason};
use std::path::Path;
use std::sync::Arc;

const H: Millis = 3_600_000;

/// An instant given as local civil time in a zone.
fn local(zone: &str, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Millis {
    jiff::civil::date(y, mo, d)
        .at(h, mi, 0, 0)
        .to_zoned(jiff::tz::TimeZone::get(zone).unwrap())
        .unwrap()
        .timestamp()
        .as_millisecond()
}

fn miami(d: i8, h: i8, mi: i8) -> Millis {
    // December 2026: the 8th is a Tuesday.
    local("America/New_York", 2026, 12, d, h, mi)
}

fn caller() -> Caller {
    Caller::system("test")
}

/// Policies for the tests: the defaults (with the state limits) without consent rules, so that
/// only the limits and the calling hours speak; one limit per contact; one on SMS only.
const POLICIES: &str = r#"
[policies.default]
require_consent = {}

[policies.regulation_f]
require_consent = {}
[[policies.regulation_f.frequency_limits]]
name = "Regulation F: 7 calls in 7 days about a debt"
channels = ["VOICE"]
window_hours = 168
max_attempts = 7
by_subject = true
[[policies.regulation_f.frequency_limits]]
name = "Regulation F: none within 7 days after a conversation"
channels = ["VOICE"]
window_hours = 168
max_attempts = 1
by_subject = true
outcomes = ["CONVERSATION"]

[policies.per_number]
require_consent = {}
calling_hours = []
[[policies.per_number.frequency_limits]]
name = "two texts a day to a number"
channels = ["SMS"]
window_hours = 24
max_attempts = 2
per = "contact"
"#;

async fn open(dir: &Path, clock: &Arc<ManualClock>, policies: &str) -> Arc<Engine> {
    let mut config = Config::parse(policies, "test.toml").unwrap();
    config.data_dir = dir.to_path_buf();
    common::open_embedded(&config, clock.clone() as SharedClock).await
}

struct Attempt<'a> {
    contact: &'a str,
    channel: Channel,
    subject: &'a str,
    at: Millis,
    outcome: AttemptOutcome,
    campaign: &'a str,
}

fn call<'a>(contact: &'a str, subject: &'a str, at: Millis, campaign: &'a str) -> Attempt<'a> {
    Attempt {
        contact,
        channel: Channel::Voice,
        subject,
        at,
        outcome: AttemptOutcome::NoAnswer,
        campaign,
    }
}

async fn record(engine: &Engine, purpose: Purpose, attempts: &[Attempt<'_>]) -> Vec<String> {
    let out = engine
        .record_attempts(
            RecordAttemptsRequest {
                attempts: attempts
                    .iter()
                    .map(|a| AttemptRequest {
                        contact: a.contact.into(),
                        channel: Arg::Set(a.channel),
                        purpose: Arg::Set(purpose),
                        subject: a.subject.into(),
                        at: Some(a.at),
                        outcome: Arg::Set(a.outcome),
                        campaign_id: a.campaign.into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            &caller(),
        )
        .await
        .unwrap();
    for r in &out.results {
        assert_eq!(r.status, EntryStatus::Accepted, "{r:?}");
    }
    out.results.into_iter().map(|r| r.attempt_id).collect()
}

struct Ask<'a> {
    contact: &'a str,
    channel: Channel,
    purpose: Purpose,
    subject: &'a str,
    policy: &'a str,
    at: Millis,
}

fn ask<'a>(contact: &'a str, subject: &'a str, at: Millis) -> Ask<'a> {
    Ask {
        contact,
        channel: Channel::Voice,
        purpose: Purpose::Marketing,
        subject,
        policy: "",
        at,
    }
}

/// The reasons, the records behind them and next_allowed_at.
fn check(engine: &Engine, a: &Ask<'_>) -> (Vec<Reason>, Vec<String>, Option<Millis>) {
    let o = engine
        .check(&CheckRequest {
            contact: a.contact,
            channel: Arg::Set(a.channel),
            purpose: Arg::Set(a.purpose),
            subject: a.subject,
            policy: a.policy,
            at: When::Millis(a.at),
            ..Default::default()
        })
        .unwrap();
    let d = o.decision;
    (
        d.reasons.iter().collect(),
        d.matched.as_slice().iter().map(|r| r.text()).collect(),
        d.next_allowed_at,
    )
}

async fn link(engine: &Engine, person: &str, contacts: &[&str]) {
    engine
        .link_identifiers(
            LinkRequest {
                external_id: person.into(),
                contacts: contacts.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            },
            &caller(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn florida_counts_per_person_and_subject_across_numbers_and_campaigns() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(miami(8, 10, 30));
    let engine = open(dir.path(), &clock, POLICIES).await;
    // Two Miami numbers of one person, an email of theirs, and a Washington number.
    link(
        &engine,
        "cust-1",
        &["+13055550101", "+17865550102", "ann@example.com"],
    )
    .await;
    let ids = record(
        &engine,
        Purpose::Marketing,
        &[
            call("+13055550101", "Pool service", miami(8, 9, 0), "spring-a"),
            call(
                "(786) 555-0102",
                "pool service ",
                miami(8, 10, 0),
                "spring-b",
            ),
            call("+12025550103", "Pool service", miami(8, 9, 0), "spring-a"),
            call("+12025550103", "Pool service", miami(8, 9, 5), "spring-a"),
            call("+12025550103", "Pool service", miami(8, 9, 10), "spring-a"),
        ],
    )
    .await;
    clock.set(miami(8, 11, 0));
    let noon = miami(8, 12, 0);
    // Two attempts so far for the person on that subject: one more is allowed.
    assert_eq!(
        check(&engine, &ask("+13055550101", "Pool service", noon)).0,
        []
    );
    record(
        &engine,
        Purpose::Marketing,
        &[call(
            "+13055550101",
            "POOL SERVICE",
            miami(8, 11, 0),
            "summer",
        )],
    )
    .await;

    let cases: &[(&str, Ask<'_>, &[Reason])] = &[
        (
            "third call to the person, through the other number",
            ask("+17865550102", "Pool service", noon),
            &[Reason::FrequencyLimit],
        ),
        (
            "a state's limit follows where the checked number places the person: an email \
             places no one",
            ask("ann@example.com", "Pool service", miami(8, 15, 0)),
            &[],
        ),
        (
            "another subject has its own count",
            ask("+13055550101", "Solar panels", noon),
            &[],
        ),
        (
            "no subject counts every attempt (fail closed)",
            ask("+13055550101", "", noon),
            &[Reason::FrequencyLimit],
        ),
        (
            "SMS is not counted by Florida's call limit",
            Ask {
                channel: Channel::Sms,
                ..ask("+13055550101", "Pool service", noon)
            },
            &[],
        ),
        (
            "a SERVICE call is not a solicitation",
            Ask {
                purpose: Purpose::Service,
                ..ask("+13055550101", "Pool service", noon)
            },
            &[],
        ),
        (
            "Washington has no such limit",
            ask("+12025550103", "Pool service", noon),
            &[],
        ),
        (
            "one second before the first call leaves the window",
            ask("+13055550101", "Pool service", miami(9, 9, 0) - 1000),
            &[Reason::FrequencyLimit],
        ),
        (
            "when the first call has left the window",
            ask("+13055550101", "Pool service", miami(9, 9, 0)),
            &[],
        ),
    ];
    for (name, a, want) in cases {
        assert_eq!(check(&engine, a).0, *want, "{name}");
    }
    let (_, matched, next) = check(&engine, &ask("+17865550102", "Pool service", noon));
    assert_eq!(
        next,
        Some(miami(9, 9, 0)),
        "the oldest counted call plus 24 hours"
    );
    let at = |s: &str| s.to_string();
    assert_eq!(matched.len(), 3, "{matched:?}");
    assert!(
        matched.contains(&ids[0]) && matched.contains(&ids[1]),
        "{matched:?}"
    );
    assert!(matched.iter().all(|m| m.starts_with("at-")), "{matched:?}");
    assert!(!matched.contains(&at(&ids[2])));
}

#[tokio::test(flavor = "multi_thread")]
async fn maryland_counts_texts_and_calls_together() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(miami(8, 12, 0));
    let engine = open(dir.path(), &clock, POLICIES).await;
    let text = |at| Attempt {
        channel: Channel::Sms,
        outcome: AttemptOutcome::Delivered,
        ..call("+14105550104", "offer", at, "c")
    };
    record(
        &engine,
        Purpose::Marketing,
        &[
            text(miami(8, 9, 0)),
            call("+14105550104", "offer", miami(8, 10, 0), "c"),
        ],
    )
    .await;
    let now = miami(8, 12, 0);
    assert_eq!(check(&engine, &ask("+14105550104", "offer", now)).0, []);
    record(&engine, Purpose::Marketing, &[text(miami(8, 11, 0))]).await;
    for channel in [Channel::Voice, Channel::Sms] {
        let a = Ask {
            channel,
            ..ask("+14105550104", "offer", now)
        };
        assert_eq!(check(&engine, &a).0, [Reason::FrequencyLimit], "{channel}");
    }
    // Oklahoma (405) counts calls only.
    record(
        &engine,
        Purpose::Marketing,
        &[
            call("+14055550105", "offer", miami(8, 9, 0), "c"),
            call("+14055550105", "offer", miami(8, 10, 0), "c"),
            call("+14055550105", "offer", miami(8, 11, 0), "c"),
        ],
    )
    .await;
    assert_eq!(
        check(&engine, &ask("+14055550105", "offer", now)).0,
        [Reason::FrequencyLimit]
    );
    let sms = Ask {
        channel: Channel::Sms,
        ..ask("+14055550105", "offer", now)
    };
    assert_eq!(check(&engine, &sms).0, []);
}

#[tokio::test(flavor = "multi_thread")]
async fn next_allowed_at_waits_for_the_limit_and_the_calling_hours() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(miami(9, 8, 0));
    let engine = open(dir.path(), &clock, POLICIES).await;
    // Three late calls on the 8th (an attempt is counted whenever it was made).
    record(
        &engine,
        Purpose::Marketing,
        &[
            call("+13055550106", "s", miami(8, 20, 30), "c"),
            call("+13055550106", "s", miami(8, 20, 40), "c"),
            call("+13055550106", "s", miami(8, 20, 50), "c"),
        ],
    )
    .await;
    // In the morning of the 9th the limit holds until 20:30, when Florida's 20:00 has
    // passed: the next time both allow is 08:00 on the 10th.
    let (r, _, next) = check(&engine, &ask("+13055550106", "s", miami(9, 8, 30)));
    assert_eq!(r, [Reason::FrequencyLimit]);
    assert_eq!(next, Some(miami(10, 8, 0)));
    // At 07:00 both reasons stand; the answer is still the time both have lapsed.
    let (r, _, next) = check(&engine, &ask("+13055550106", "s", miami(9, 7, 0)));
    assert_eq!(r, [Reason::OutsideCallingHours, Reason::FrequencyLimit]);
    assert_eq!(next, Some(miami(10, 8, 0)));
    // A limit that lapses inside the window answers its own lapse.
    record(
        &engine,
        Purpose::Marketing,
        &[
            call("+13055550107", "s", miami(8, 10, 0), "c"),
            call("+13055550107", "s", miami(8, 11, 0), "c"),
            call("+13055550107", "s", miami(8, 12, 0), "c"),
        ],
    )
    .await;
    let (r, _, next) = check(&engine, &ask("+13055550107", "s", miami(9, 8, 30)));
    assert_eq!(r, [Reason::FrequencyLimit]);
    assert_eq!(next, Some(miami(9, 10, 0)));
    // Outside the hours with no limit reached: the calling hours alone.
    let (r, _, next) = check(&engine, &ask("+13055550107", "other", miami(9, 21, 0)));
    assert_eq!(r, [Reason::OutsideCallingHours]);
    assert_eq!(next, Some(miami(10, 8, 0)));
}

#[tokio::test(flavor = "multi_thread")]
async fn regulation_f_seven_in_seven_days_and_a_week_after_a_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let start = miami(1, 10, 0);
    let clock = ManualClock::new(start);
    let engine = open(dir.path(), &clock, POLICIES).await;
    link(&engine, "debtor-9", &["+12025550110", "+12025550111"]).await;
    let service = |contact: &'static str, subject: &'static str, at: Millis| Ask {
        purpose: Purpose::Service,
        policy: "regulation_f",
        ..ask(contact, subject, at)
    };
    // Seven calls about account 1 over six days, from two numbers and two campaigns.
    let numbers = ["+12025550110", "+12025550111"];
    let campaigns = ["early", "late"];
    let calls: Vec<Attempt<'_>> = (0..7)
        .map(|i| {
            call(
                numbers[i % 2],
                "acct-1",
                start + i as Millis * 20 * H,
                campaigns[i / 4],
            )
        })
        .collect();
    clock.set(start + 6 * 20 * H);
    record(&engine, Purpose::Service, &calls).await;
    let now = start + 6 * 20 * H + H;
    let (r, matched, next) = check(&engine, &service("+12025550110", "acct-1", now));
    assert_eq!(r, [Reason::FrequencyLimit]);
    assert_eq!(
        next,
        Some(start + 7 * 24 * H),
        "a week after the first call"
    );
    assert_eq!(
        matched.len(),
        4,
        "the newest four of the seven: {matched:?}"
    );
    assert_eq!(
        check(&engine, &service("+12025550110", "acct-2", now)).0,
        []
    );
    // The default policy has no such limit (and a SERVICE call is not a solicitation).
    assert_eq!(
        check(
            &engine,
            &Ask {
                policy: "",
                ..service("+12025550110", "acct-1", now)
            }
        )
        .0,
        []
    );
    // A conversation about account 2: no call about it for seven days after.
    let talk = Attempt {
        outcome: AttemptOutcome::Conversation,
        ..call("+12025550111", "acct-2", now, "late")
    };
    clock.set(now);
    record(&engine, Purpose::Service, &[talk]).await;
    let (r, _, next) = check(&engine, &service("+12025550110", "acct-2", now + H));
    assert_eq!(r, [Reason::FrequencyLimit]);
    assert_eq!(next, Some(now + 7 * 24 * H));
    assert_eq!(
        check(
            &engine,
            &service("+12025550110", "acct-2", now + 7 * 24 * H)
        )
        .0,
        []
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_per_contact_does_not_count_the_persons_other_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(miami(8, 12, 0));
    let engine = open(dir.path(), &clock, POLICIES).await;
    link(&engine, "cust-2", &["+12025550120", "+12025550121"]).await;
    let text = |c, at| Attempt {
        channel: Channel::Sms,
        outcome: AttemptOutcome::Delivered,
        ..call(c, "", at, "c")
    };
    record(
        &engine,
        Purpose::Marketing,
        &[
            text("+12025550120", miami(8, 9, 0)),
            text("+12025550121", miami(8, 10, 0)),
        ],
    )
    .await;
    let sms = |c| Ask {
        channel: Channel::Sms,
        policy: "per_number",
        ..ask(c, "", miami(8, 12, 0))
    };
    assert_eq!(check(&engine, &sms("+12025550120")).0, []);
    record(
        &engine,
        Purpose::Marketing,
        &[text("+12025550120", miami(8, 11, 0))],
    )
    .await;
    assert_eq!(
        check(&engine, &sms("+12025550120")).0,
        [Reason::FrequencyLimit]
    );
    assert_eq!(check(&engine, &sms("+12025550121")).0, []);
}

#[tokio::test(flavor = "multi_thread")]
async fn attempts_survive_a_restart_and_an_index_image() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(miami(8, 12, 0));
    let engine = open(dir.path(), &clock, POLICIES).await;
    record(
        &engine,
        Purpose::Marketing,
        &[
            call("+13055550130", "s", miami(8, 9, 0), "c"),
            call("+13055550130", "s", miami(8, 10, 0), "c"),
            call("+13055550130", "s", miami(8, 11, 0), "c"),
        ],
    )
    .await;
    let a = ask("+13055550130", "s", miami(8, 12, 0));
    let before = check(&engine, &a);
    assert_eq!(before.0, [Reason::FrequencyLimit]);
    assert_eq!(engine.index().attempts_held(), 3);
    let digest = engine.index().digest();
    drop(engine);
    // Replayed from the log.
    let engine = open(dir.path(), &clock, POLICIES).await;
    assert_eq!(check(&engine, &a), before);
    assert_eq!(engine.index().digest(), digest);
    // Loaded from an image.
    engine.write_image().unwrap().expect("an image");
    drop(engine);
    let engine = open(dir.path(), &clock, POLICIES).await;
    assert_eq!(check(&engine, &a), before);
    assert_eq!(engine.index().digest(), digest);
    // Once they have left every window, the sweep lets them go.
    clock.set(miami(15, 12, 0));
    assert_eq!(engine.prune_attempts(), 3);
    assert_eq!(engine.index().attempts_held(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn record_attempts_reports_each_bad_attempt_and_records_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let now = miami(8, 12, 0);
    let clock = ManualClock::new(now);
    let engine = open(dir.path(), &clock, POLICIES).await;
    let good = || AttemptRequest {
        contact: "+13055550140".into(),
        channel: Arg::Set(Channel::Voice),
        outcome: Arg::Set(AttemptOutcome::Busy),
        ..Default::default()
    };
    let req = RecordAttemptsRequest {
        attempts: vec![
            good(),
            AttemptRequest {
                at: Some(now + 5 * 60_000 + 1000),
                ..good()
            },
            AttemptRequest {
                outcome: Arg::Unset,
                ..good()
            },
            AttemptRequest {
                contact: "not a number".into(),
                ..good()
            },
            AttemptRequest {
                channel: Arg::Unknown("FAX".into()),
                ..good()
            },
            AttemptRequest {
                at_text: Some("yesterday".into()),
                ..good()
            },
            AttemptRequest {
                at: Some(now + 60_000),
                ..good()
            },
        ],
        idempotency_key: "batch-1".into(),
        ..Default::default()
    };
    let out = engine
        .record_attempts(req.clone(), &caller())
        .await
        .unwrap();
    let status: Vec<EntryStatus> = out.results.iter().map(|r| r.status).collect();
    use EntryStatus::{Accepted, Invalid};
    assert_eq!(
        status,
        [
            Accepted, Invalid, Invalid, Invalid, Invalid, Invalid, Accepted
        ]
    );
    let errors: Vec<&str> = out.results.iter().map(|r| r.error.as_str()).collect();
    for (i, field) in [
        (1, "attempts[1].at"),
        (2, "attempts[2].outcome"),
        (3, "attempts[3].contact"),
        (4, "attempts[4].channel"),
        (5, "attempts[5].at"),
    ] {
        assert!(errors[i].contains(field), "{i}: {}", errors[i]);
    }
    assert_eq!(out.results[0].normalized_contact, "+13055550140");
    assert_eq!(out.results[0].attempt_id, format!("at-{}", out.seq - 1));
    assert_eq!(out.results[6].attempt_id, format!("at-{}", out.seq));
    // No `at`: the server's time, and so counted now.
    let mut held = Vec::new();
    engine.index().each_attempt(
        &preflight::model::ContactRef::Phone(13055550140),
        false,
        &mut |a, _| held.push(a.at()),
    );
    assert_eq!(held, [now, now + 60_000]);
    // A retry gets the first answer and writes nothing.
    let again = engine.record_attempts(req, &caller()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.results, out.results);
    assert_eq!(engine.index().attempts_held(), 2);
    // Too many in one call.
    let many = RecordAttemptsRequest {
        attempts: vec![good(); 10_001],
        ..Default::default()
    };
    let e = engine.record_attempts(many, &caller()).await.unwrap_err();
    assert!(e.to_string().contains("attempts"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_with_a_bad_subject_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(miami(8, 12, 0));
    let engine = open(dir.path(), &clock, POLICIES).await;
    let long = "x".repeat(10_000);
    let reqs = [
        CheckRequest {
            contact: "+13055550150",
            channel: Arg::Set(Channel::Voice),
            subject: &long,
            ..Default::default()
        },
        CheckRequest {
            contact: "+13055550150",
            channel: Arg::Set(Channel::Voice),
            subject: "fine",
            ..Default::default()
        },
    ];
    let b = engine.check_batch(&reqs).unwrap();
    assert_eq!(
        b[0].decision.reasons.iter().collect::<Vec<_>>(),
        [Reason::InvalidRequest]
    );
    assert!(
        b[0].problem
            .as_deref()
            .unwrap_or("")
            .contains("checks[0].subject"),
        "{:?}",
        b[0].problem
    );
    assert!(b[1].decision.allowed(), "{:?}", b[1].decision);
}

/// The consent record the default policy needs does not change what the limits count.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_default_policy_limits_florida_calls() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(miami(8, 9, 0));
    let engine = open(dir.path(), &clock, "").await;
    engine
        .record_consent(
            ConsentRequest {
                contact: "+13055550160".into(),
                status: Arg::Set(ConsentStatus::Granted),
                channels: vec![Arg::Set(Channel::Voice)],
                purposes: vec![Arg::Set(Purpose::Marketing)],
                ..Default::default()
            },
            &caller(),
        )
        .await
        .unwrap();
    let a = ask("+13055550160", "roof", miami(8, 12, 0));
    assert_eq!(check(&engine, &a).0, []);
    clock.set(miami(8, 11, 0));
    record(
        &engine,
        Purpose::Marketing,
        &[
            call("+13055550160", "roof", miami(8, 9, 0), "a"),
            call("+13055550160", "roof", miami(8, 10, 0), "b"),
            call("+13055550160", "roof", miami(8, 11, 0), "c"),
        ],
    )
    .await;
    assert_eq!(check(&engine, &a).0, [Reason::FrequencyLimit]);
    assert_eq!(
        engine
            .policies()
            .get("regulation_f")
            .unwrap()
            .frequency
            .len(),
        2,
        "the built-in regulation_f policy"
    );
}
