//! The check path for E.164 input allocates nothing: a counting global allocator proves it.
use preflight::audit::Caller;
use preflight::clock::ManualClock;
use preflight::config::Config;
use preflight::engine::{AddEntriesRequest, Arg, CheckRequest, ConsentRequest, DncEntryRequest};
use preflight::model::{Channel, ConsentStatus, DncType, Purpose, Reason};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(|c| c.get());
    f();
    ALLOCS.with(|c| c.get()) - before
}

#[tokio::test]
async fn e164_checks_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    // Noon in Washington, inside the calling hours of the numbers below.
    let clock = ManualClock::new(ms("2026-12-02T17:00:00Z"));
    let engine = preflight::server::open_embedded(&config, "test", clock.clone()).unwrap();
    engine
        .record_consent(
            ConsentRequest {
                contact: "+12025550001".into(),
                status: Arg::Set(ConsentStatus::Granted),
                channels: vec![Arg::Set(Channel::Sms)],
                purposes: vec![Arg::Set(Purpose::Marketing)],
                ..Default::default()
            },
            &Caller::system("test"),
        )
        .await
        .unwrap();
    engine
        .add_entries(
            AddEntriesRequest {
                entries: vec![DncEntryRequest {
                    contact: "+12025550002".into(),
                    dnc_type: Arg::Set(DncType::Federal),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &Caller::system("test"),
        )
        .await
        .unwrap();

    let contacts = [
        "+12025550001",
        "+12025550002",
        "+12025550003",
        "2025550001",
        "12025550002",
    ];
    let reqs: Vec<CheckRequest<'_>> = contacts
        .iter()
        .map(|c| CheckRequest {
            contact: c,
            channel: Arg::Set(Channel::Sms),
            ..Default::default()
        })
        .collect();
    // Warm-up fills the NANP validity table for these exchanges.
    for r in &reqs {
        engine.check(r).unwrap();
    }
    let mut verdicts = Vec::new();
    let n = allocations_during(|| {
        for _ in 0..1000 {
            for r in &reqs {
                let o = engine.check(r).unwrap();
                verdicts.push(o.decision.allowed());
            }
        }
        verdicts.clear();
    });
    // `verdicts` grew once; everything else must be allocation-free.
    assert!(n <= 20, "{n} allocations in 5,000 checks");
    let n = allocations_during(|| {
        for r in &reqs {
            std::hint::black_box(engine.check(r).unwrap());
        }
    });
    assert_eq!(n, 0, "check() allocated");
    let outcomes: Vec<bool> = reqs
        .iter()
        .map(|r| engine.check(r).unwrap().decision.allowed())
        .collect();
    assert_eq!(
        outcomes,
        vec![true, false, false, true, false],
        "the checks really decided"
    );

    // At 22:00 in Washington every check is outside the calling hours, and working out when
    // they open again allocates nothing either.
    clock.set(ms("2026-12-03T03:00:00Z"));
    let n = allocations_during(|| {
        for r in &reqs {
            let o = engine.check(r).unwrap();
            assert!(
                o.decision.reasons.contains(Reason::OutsideCallingHours),
                "{:?}",
                o.decision
            );
            assert_eq!(o.decision.next_allowed_at, Some(ms("2026-12-03T13:00:00Z")));
        }
    });
    assert_eq!(n, 0, "check() allocated outside the calling hours");
}

fn ms(t: &str) -> i64 {
    t.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}
