//! evaluate() through Engine::check (normalize, look up, decide) on a large overlay.
//!
//!     PREFLIGHT_BENCH_CONTACTS=1000000 cargo bench --bench evaluate
use criterion::{Criterion, criterion_group, criterion_main};
use preflight::engine::{Arg, CheckRequest, When};
use preflight::model::{
    AttemptEvent, AttemptOutcome, Channel, ContactKey, Event, Purpose, StoredEvent,
};
use std::hint::black_box;

// Checks run on the service's allocator and its page settings (huge pages for the index's
// tables), as in `preflight serve`.
preflight::service_allocator!();

#[path = "support.rs"]
mod support;

fn bench(c: &mut Criterion) {
    let n = support::contact_count();
    let (engine, _dir) = support::engine_with(n);
    let inputs: Vec<String> = (0..4096u64)
        .map(|i| format!("+{}", support::phone((i * 7919) % n)))
        .collect();
    let misses: Vec<String> = (0..4096u64)
        .map(|i| format!("+{}", support::phone(n + i)))
        .collect();
    let nanp10: Vec<String> = inputs.iter().map(|s| s[2..].to_string()).collect();
    let formatted: Vec<String> = nanp10
        .iter()
        .map(|s| format!("({}) {}-{}", &s[..3], &s[3..6], &s[6..]))
        .collect();
    // Uniformly random over every contact: each lookup misses the CPU caches, as a
    // dialer scrubbing a large list does.
    let all: Vec<String> = (0..n)
        .map(|i| format!("+{}", support::phone((i * 7_919 + 13) % n)))
        .collect();
    // Two calls an hour ago for every contact of the hot set, so that the cases with limits
    // count attempts (below every limit: the whole decision is still worked out).
    let index = engine.index();
    let day = support::daytime_ms();
    let mut seq = index.seq();
    let bytes_before = index.bytes();
    for i in 0..4096u64 {
        for k in 0..2 {
            seq += 1;
            index.apply(&StoredEvent {
                seq,
                recorded_at: day,
                event: Event::AttemptRecorded(AttemptEvent {
                    contact: ContactKey::Phone(support::phone((i * 7919) % n)),
                    channel: Channel::Voice,
                    purpose: Purpose::Marketing,
                    subject: "spring".into(),
                    at: day - 3_600_000 + k * 60_000,
                    outcome: AttemptOutcome::NoAnswer,
                    campaign_id: String::new(),
                }),
            });
        }
    }
    println!(
        "attempts: {} held, index accounting {:.1} bytes an attempt (16 a record, the rest the \
         map's entry for each identifier with two)",
        index.attempts_held(),
        (index.bytes() - bytes_before) as f64 / index.attempts_held() as f64
    );
    let mut g = c.benchmark_group(format!("check/{n}_contacts"));
    // Calling hours are judged on every check; inside them by default, and at 00:00 in New
    // York (every check blocked, `next_allowed_at` worked out) for the last case.
    let night = day + 10 * 3_600_000;
    // The first four cycle through 4,096 contacts spread over the overlay (a hot working set).
    // The last two call (VOICE) with frequency limits on: the default policy's state limits
    // (a sixteenth of the contacts are Florida numbers) and Regulation F's (every contact),
    // each counting the contact's attempts.
    for (name, set, at, channel, policy) in [
        ("e164_hit", &inputs, day, Channel::Sms, ""),
        ("e164_miss", &misses, day, Channel::Sms, ""),
        ("nanp10", &nanp10, day, Channel::Sms, ""),
        ("formatted", &formatted, day, Channel::Sms, ""),
        ("e164_random_all", &all, day, Channel::Sms, ""),
        ("e164_hit_outside_hours", &inputs, night, Channel::Sms, ""),
        (
            "e164_hit_voice_state_limits",
            &inputs,
            day,
            Channel::Voice,
            "",
        ),
        (
            "e164_hit_voice_regulation_f",
            &inputs,
            day,
            Channel::Voice,
            "regulation_f",
        ),
    ] {
        let reqs: Vec<CheckRequest<'_>> = set
            .iter()
            .map(|s| CheckRequest {
                contact: s,
                channel: Arg::Set(channel),
                purpose: Arg::Set(Purpose::Marketing),
                at: When::Millis(at),
                subject: "spring",
                policy,
                ..Default::default()
            })
            .collect();
        for r in &reqs {
            engine.check(r).unwrap();
        }
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % reqs.len();
                black_box(engine.check(black_box(&reqs[i])).unwrap().decision)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
