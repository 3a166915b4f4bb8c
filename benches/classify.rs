//! Keyword classification of inbound messages.
//!
//!     cargo bench --bench classify
use criterion::{Criterion, criterion_group, criterion_main};
use preflight::keywords::{KeywordConfig, Keywords};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let en = Keywords::new(&KeywordConfig::default()).unwrap();
    let en_es = Keywords::new(&KeywordConfig {
        languages: vec!["en".into(), "es".into()],
        ..Default::default()
    })
    .unwrap();
    let mut g = c.benchmark_group("classify");
    for (name, text) in [
        ("stop", "STOP"),
        ("stop_please_emoji", "Stop please 🛑🛑"),
        ("fullwidth", "ＳＴＯＰ"),
        (
            "sentence",
            "can you stop by tomorrow? I will be at the office around noon",
        ),
        ("signature", "unsubscribe me\nSent from my iPhone"),
    ] {
        g.bench_function(name, |b| b.iter(|| black_box(en.classify(black_box(text)))));
    }
    g.bench_function("spanish", |b| {
        b.iter(|| black_box(en_es.classify(black_box("No más mensajes por favor"))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
