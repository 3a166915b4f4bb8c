//! Shared set-up for the benches: an engine over an index filled with synthetic contacts.
#![allow(dead_code)]

use preflight::clock::SystemClock;
use preflight::config::Config;
use preflight::engine::Engine;
use preflight::model::{
    ChannelSet, ConsentEvent, ConsentStatus, ContactKey, DncAddEvent, DncType, Event, Purpose,
    PurposeSet, StoredEvent,
};
use std::sync::Arc;

/// Contacts in the overlay: `PREFLIGHT_BENCH_CONTACTS`, default 1,000,000.
pub fn contact_count() -> u64 {
    std::env::var("PREFLIGHT_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The next weekday (after today, UTC) at 19:00Z: inside the calling hours of every US zone
/// (09:00 in Honolulu, 14:00 in New York), so that a bench measures the same path whatever
/// the time it runs at; and after any consent the overlay records now.
pub fn daytime_ms() -> i64 {
    let mut day = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .tomorrow()
        .unwrap();
    while matches!(
        day.weekday(),
        jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
    ) {
        day = day.tomorrow().unwrap();
    }
    day.at(19, 0, 0, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_millisecond()
}

/// The i-th synthetic number: spread over real NANP area codes, valid exchanges.
pub fn phone(i: u64) -> u64 {
    const AREAS: [u64; 16] = [
        201, 202, 212, 213, 305, 310, 312, 404, 415, 503, 512, 617, 702, 713, 718, 917,
    ];
    let area = AREAS[(i % 16) as usize];
    let rest = i / 16;
    let exchange = 200 + (rest / 10_000) % 700;
    let sub = rest % 10_000;
    10_000_000_000 + area * 10_000_000 + exchange * 10_000 + sub
}

/// An engine on a temp embedded store whose index holds `n` contacts: each with an SMS
/// marketing consent, every 10th with a FEDERAL entry, every 50th with a withdrawal.
pub fn engine_with(n: u64) -> (Arc<Engine>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let engine = preflight::server::open_embedded(&config, "bench", Arc::new(SystemClock)).unwrap();
    let index = engine.index();
    let now = engine.now();
    let mut seq = index.seq();
    let mut push = |event: Event| {
        seq += 1;
        index.apply(&StoredEvent {
            seq,
            recorded_at: now,
            event,
        });
    };
    for i in 0..n {
        let contact = ContactKey::Phone(phone(i));
        push(Event::ConsentRecorded(ConsentEvent {
            contact: contact.clone(),
            status: ConsentStatus::Granted,
            channels: ChannelSet::of(&[
                preflight::model::Channel::Sms,
                preflight::model::Channel::Voice,
            ]),
            purposes: PurposeSet::of(&[Purpose::Marketing]),
            category: None,
            source: "bench".into(),
            proof: String::new(),
            effective_at: now - 1000,
            expires_at: None,
            campaign_id: String::new(),
        }));
        if i % 10 == 0 {
            push(Event::DncAdded(DncAddEvent {
                contact: contact.clone(),
                dnc_type: DncType::Federal,
                list: None,
                expires_at: None,
                source: "bench".into(),
                note: String::new(),
                actor: String::new(),
            }));
        }
        if i % 50 == 0 {
            push(Event::ConsentRecorded(ConsentEvent {
                contact,
                status: ConsentStatus::Withdrawn,
                channels: ChannelSet::all(),
                purposes: PurposeSet::of(&[Purpose::Marketing, Purpose::Service]),
                category: None,
                source: "bench".into(),
                proof: String::new(),
                effective_at: now - 500,
                expires_at: None,
                campaign_id: String::new(),
            }));
        }
    }
    (engine, dir)
}
