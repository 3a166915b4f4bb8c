//! evaluate() through Engine::check (normalize, look up, decide) on a large overlay.
//!
//!     PREFLIGHT_BENCH_CONTACTS=1000000 cargo bench --bench evaluate
use criterion::{Criterion, criterion_group, criterion_main};
use preflight::engine::{Arg, CheckRequest, When};
use preflight::model::{Channel, Purpose};
use std::hint::black_box;

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
    let mut g = c.benchmark_group(format!("check/{n}_contacts"));
    // Calling hours are judged on every check; inside them by default, and at 00:00 in New
    // York (every check blocked, `next_allowed_at` worked out) for the last case.
    let day = support::daytime_ms();
    let night = day + 10 * 3_600_000;
    // The first four cycle through 4,096 contacts spread over the overlay (a hot working set).
    for (name, set, at) in [
        ("e164_hit", &inputs, day),
        ("e164_miss", &misses, day),
        ("nanp10", &nanp10, day),
        ("formatted", &formatted, day),
        ("e164_random_all", &all, day),
        ("e164_hit_outside_hours", &inputs, night),
    ] {
        let reqs: Vec<CheckRequest<'_>> = set
            .iter()
            .map(|s| CheckRequest {
                contact: s,
                channel: Arg::Set(Channel::Sms),
                purpose: Arg::Set(Purpose::Marketing),
                at: When::Millis(at),
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
