//! Index scale run, printed as figures: the change log for N contacts written to an
//! embedded store, the service started on it without an image (full replay), an index image
//! written (size, build and write time), checks in process on the store opened from that
//! image (median and p99, hot working set and uniform over every contact), then the service
//! started from the image (cold start to SERVING, resident memory growth over the same
//! service on an empty store, bytes a contact, the index's own accounting) and disk bytes a
//! record.
//!
//!     PREFLIGHT_BENCH_CONTACTS=10000000 cargo bench --bench index_scale
//!     PREFLIGHT_BENCH_MIX=single PREFLIGHT_BENCH_CONTACTS=10000000 cargo bench --bench index_scale
//!
//! Mixes (`PREFLIGHT_BENCH_MIX`): `mixed` (default: 60% one consent, 30% one DNC entry, 10%
//! people with three identifiers and four facts), `single` (half one consent, half one DNC
//! entry: the 64-byte target) and `people` (every contact a person: the 256-byte target).
//! `PREFLIGHT_BENCH_DIR` keeps the data directory somewhere with room (tens of GB at 10^8).
//! `PREFLIGHT_BENCH_SKIP_REPLAY_START=1` skips the start without an image (minutes at 10^8).
//! `PREFLIGHT_BENCH_KEEP=1` leaves the data directory behind, to profile a start on it.
//! `cargo test` runs it with 20,000 contacts as a smoke test.
#[path = "procs.rs"]
mod procs;

// Checks in process run on the service's allocator and its page settings.
preflight::service_allocator!();
#[path = "support.rs"]
mod support;

use preflight::audit::Tokenizer;
use preflight::clock::SystemClock;
use preflight::config::Config;
use preflight::engine::images::Images;
use preflight::engine::{Arg, CheckRequest, Projection};
use preflight::model::{
    Channel, ChannelSet, ConsentEvent, ConsentStatus, ContactKey, DncAddEvent, DncType, Event,
    LinkEvent, Purpose, PurposeSet,
};
use preflight::store::embedded::{EmbeddedOptions, EmbeddedStore};
use preflight::store::{Append, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mix {
    Mixed,
    Single,
    People,
}

/// What contact `i` is under `mix`.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Consent,
    Dnc,
    Person,
}

fn shape(mix: Mix, i: u64) -> Shape {
    match mix {
        Mix::Single if i.is_multiple_of(2) => Shape::Consent,
        Mix::Single => Shape::Dnc,
        Mix::People => Shape::Person,
        Mix::Mixed => match i % 10 {
            0..=5 => Shape::Consent,
            6..=8 => Shape::Dnc,
            _ => Shape::Person,
        },
    }
}

fn consent(contact: ContactKey, status: ConsentStatus, channels: &[Channel], now: i64) -> Event {
    Event::ConsentRecorded(ConsentEvent {
        contact,
        status,
        channels: ChannelSet::of(channels),
        purposes: PurposeSet::of(&[Purpose::Marketing]),
        category: None,
        source: "crm-import".into(),
        proof: "web form 2026-03".into(),
        effective_at: now - 86_400_000,
        expires_at: None,
        campaign_id: String::new(),
    })
}

fn dnc(contact: ContactKey) -> Event {
    Event::DncAdded(DncAddEvent {
        contact,
        dnc_type: DncType::Corporate,
        list: None,
        expires_at: None,
        source: "company-list".into(),
        note: String::new(),
        actor: "import".into(),
    })
}

/// The events that make contact `i`; `people` numbers the people so far (for their second
/// phones).
fn events_of(mix: Mix, n: u64, i: u64, people: &mut u64, now: i64, out: &mut Vec<Event>) {
    let phone = ContactKey::Phone(support::phone(i));
    match shape(mix, i) {
        Shape::Consent => out.push(consent(phone, ConsentStatus::Granted, &[Channel::Sms], now)),
        Shape::Dnc => out.push(dnc(phone)),
        Shape::Person => {
            let k = *people;
            *people += 1;
            let person = format!("crm-{i:010}");
            let second = ContactKey::Phone(support::phone(n + k));
            let email = ContactKey::Email(format!("person{i}@example.com").into());
            for c in [&phone, &second, &email] {
                out.push(Event::IdentityLinked(LinkEvent {
                    contact: c.clone(),
                    person: person.clone(),
                }));
            }
            out.push(consent(
                phone.clone(),
                ConsentStatus::Granted,
                &[Channel::Sms, Channel::Voice],
                now,
            ));
            out.push(consent(
                email,
                ConsentStatus::Granted,
                &[Channel::Email],
                now,
            ));
            out.push(dnc(second));
            out.push(consent(
                phone,
                ConsentStatus::Withdrawn,
                &[Channel::Voice],
                now,
            ));
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn mb(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}

/// Starts the service on `dir`: the time until it serves and its resident memory then.
fn serve(dir: &Path) -> (Duration, u64) {
    let t = Instant::now();
    let (proc, _port) = procs::start_preflight(dir, &[]);
    let ready = t.elapsed();
    // Let the allocator settle what start-up freed.
    std::thread::sleep(Duration::from_millis(500));
    let rss = procs::rss_kb(proc.0.id()).unwrap_or(0) * 1024;
    (ready, rss)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not: then a smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = if smoke {
        20_000
    } else {
        support::contact_count()
    };
    let mix = match std::env::var("PREFLIGHT_BENCH_MIX").as_deref() {
        Ok("single") => Mix::Single,
        Ok("people") => Mix::People,
        _ => Mix::Mixed,
    };
    let work = match std::env::var("PREFLIGHT_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    // PREFLIGHT_BENCH_KEEP=1 leaves the data directory behind (to profile a start on it).
    let (root, _work) = match std::env::var("PREFLIGHT_BENCH_KEEP") {
        Ok(_) => (work.keep(), None),
        Err(_) => (work.path().to_path_buf(), Some(work)),
    };
    let empty = root.join("empty");
    let data = root.join("data");
    std::fs::create_dir_all(&empty).unwrap();
    println!("index_scale: {n} contacts, mix {mix:?}");

    // The change log, written through the store in commits of 10,000 events (each fsynced),
    // applied to an index in this process as the service would.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let projection = Projection::new(Tokenizer::from_key(&[7; 32]));
    let index = projection.index.clone();
    let db = EmbeddedStore::open(&data).unwrap();
    let store = EmbeddedStore::start(
        db,
        &data,
        Arc::new(projection),
        Arc::new(SystemClock),
        EmbeddedOptions::default(),
    )
    .unwrap();
    index.set_authoritative(true);
    let now = preflight::clock::Clock::now_ms(&SystemClock);
    let t = Instant::now();
    let mut events = Vec::with_capacity(10_100);
    let mut people = 0u64;
    let mut records = 0u64;
    let mut last_report = Instant::now();
    for i in 0..n {
        events_of(mix, n, i, &mut people, now, &mut events);
        if events.len() >= 10_000 || i + 1 == n {
            records += events.len() as u64;
            let req = Append {
                events: std::mem::take(&mut events),
                ..Default::default()
            };
            rt.block_on(store.append(req)).unwrap();
            if last_report.elapsed() > Duration::from_secs(30) {
                println!(
                    "  {} of {n} contacts written, {:.0} records/s",
                    i + 1,
                    records as f64 / t.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
        }
    }
    let write_secs = t.elapsed().as_secs_f64();
    let identifiers = index.len() as u64;
    println!(
        "wrote {records} events ({identifiers} identifiers, {people} people) in {write_secs:.1} s: \
         {:.0} events/s",
        records as f64 / write_secs
    );
    let accounted = index.bytes() as u64;
    drop(store);
    drop(index);
    let disk = procs::dir_bytes(&data);
    println!(
        "disk: {:.0} MB, {:.0} bytes an event (change log only: no audit records, which the \
         import path writes)",
        mb(disk),
        disk as f64 / records as f64
    );

    // A restart without an image: the whole log replayed (PREFLIGHT_BENCH_SKIP_REPLAY_START=1
    // skips it, minutes at 10^8).
    let (_, base_rss) = serve(&empty);
    if std::env::var("PREFLIGHT_BENCH_SKIP_REPLAY_START").is_err() {
        let (cold_replay, replay_rss) = serve(&data);
        println!(
            "cold start to SERVING without an image: {:.2} s (full replay of {records} events, \
             RSS growth {:.1} bytes a contact)",
            cold_replay.as_secs_f64(),
            replay_rss.saturating_sub(base_rss) as f64 / n as f64
        );
    }

    // The index image the builder would write, made before the service's index is opened
    // in this process, so that the builder's index and the service's are never in memory
    // together (at 10^8 contacts with people, both would not fit).
    let mut cfg = Config {
        data_dir: data.clone(),
        ..Config::default()
    };
    // Only the image made here, none from the background builder.
    cfg.index_images.every_events = u64::MAX;
    let image = {
        let db = EmbeddedStore::open(&data).unwrap();
        let images = Images::open(&data, (&cfg.index_images).into()).unwrap();
        let last = preflight::store::embedded::last_seq_of(&db).unwrap();
        let read = |after, limit| preflight::store::embedded::read_events_from(&db, after, limit);
        let tokenizer = Tokenizer::from_key(&[7; 32]);
        images
            .build_from(&read, &tokenizer, last)
            .unwrap()
            .expect("no erasure meanwhile")
    };
    println!(
        "index image at seq {}: {:.0} MB = {:.1} bytes a contact; built in {:.2} s (replay \
         of the log into the builder's own index, then the write), written in {:.2} s",
        image.seq,
        mb(image.bytes),
        image.bytes as f64 / n as f64,
        image.build_ms as f64 / 1e3,
        image.write_ms as f64 / 1e3
    );
    // The same data directory in process, opened from that image, for the checks.
    let engine = {
        let t = Instant::now();
        let e = preflight::server::open_embedded(&cfg, "bench", Arc::new(SystemClock)).unwrap();
        println!(
            "in-process open from the image: {:.2} s",
            t.elapsed().as_secs_f64()
        );
        e
    };
    let samples = if smoke { 20_000 } else { 1_000_000 };
    // What the two clock reads around each check cost by themselves, timed the same way
    // around nothing: part of every figure below, reported rather than subtracted.
    let mut empty: Vec<Duration> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(());
            t.elapsed()
        })
        .collect();
    empty.sort_unstable();
    println!(
        "timer alone (Instant::now and elapsed around nothing): median {} ns",
        pct(&empty, 0.5).as_nanos()
    );
    for (name, span) in [("hot (4,096 contacts)", 4_096u64.min(n)), ("uniform", n)] {
        let inputs: Vec<String> = (0..samples as u64)
            .map(|j| {
                let i = if span == n {
                    let mut x = (j + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    x ^= x >> 31;
                    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) % n
                } else {
                    // An odd stride, so the hot set holds every shape of the mix in its
                    // share (an even one picks only consents from the single mix).
                    ((j % span) * ((n / span) | 1)) % n
                };
                format!("+{}", support::phone(i))
            })
            .collect();
        let mut times = Vec::with_capacity(inputs.len());
        for s in &inputs {
            let req = CheckRequest {
                contact: s,
                channel: Arg::Set(Channel::Sms),
                purpose: Arg::Set(Purpose::Marketing),
                ..Default::default()
            };
            let t = Instant::now();
            std::hint::black_box(engine.check(&req).unwrap());
            times.push(t.elapsed());
        }
        times.sort_unstable();
        println!(
            "check {name}: median {} ns, p99 {} ns",
            pct(&times, 0.5).as_nanos(),
            pct(&times, 0.99).as_nanos()
        );
    }
    drop(engine);

    // A restart from the image: what every start after the first does.
    let (cold, rss) = serve(&data);
    let growth = rss.saturating_sub(base_rss);
    println!(
        "cold start to SERVING from the image: {:.2} s",
        cold.as_secs_f64()
    );
    println!(
        "RSS growth after restart: {:.0} MB = {:.1} bytes a contact, {:.1} bytes an identifier \
         (empty service {:.0} MB, loaded {:.0} MB)",
        mb(growth),
        growth as f64 / n as f64,
        growth as f64 / identifiers as f64,
        mb(base_rss),
        mb(rss)
    );
    println!(
        "index accounting: {:.0} MB = {:.1} bytes a contact ({:+.1}% of the RSS growth)",
        mb(accounted),
        accounted as f64 / n as f64,
        (accounted as f64 / growth.max(1) as f64 - 1.0) * 100.0
    );
}
