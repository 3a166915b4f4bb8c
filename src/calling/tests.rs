//! Calling hours at their edges, table-driven: each rule set, DST, zones without DST, a
//! prefix in two zones, a ZIP that disagrees with its area code, Canada, a holiday on a
//! Sunday, numbers without a zone, and a policy's own window.
use super::*;
use crate::model::{Channel, Millis, Purpose};

fn ms(rfc3339: &str) -> Millis {
    rfc3339
        .parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .as_millisecond()
}

fn hours(sets: &[&str], own: &str) -> CallingHours {
    let own: Vec<RuleConfig> = if own.is_empty() {
        Vec::new()
    } else {
        #[derive(serde::Deserialize)]
        struct W {
            calling_windows: Vec<RuleConfig>,
        }
        toml::from_str::<W>(own).unwrap().calling_windows
    };
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    CallingContext::built_in()
        .compile(&sets, &own, own_src(), "test", &["policies", "t"])
        .unwrap()
}

fn own_src() -> &'static str {
    ""
}

const ALL: &[&str] = &["federal", "states", "canada"];

struct Case {
    what: &'static str,
    number: u64,
    postal: &'static str,
    at: &'static str,
    outside: bool,
    /// Expected next_allowed_at when outside.
    next: Option<&'static str>,
}

fn run(h: &CallingHours, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let postal = (!c.postal.is_empty()).then(|| parse_postal(c.postal).unwrap());
        let loc = places().locate(Some(c.number), postal);
        let j = h.judge(&loc, Channel::Voice, Purpose::Marketing, ms(c.at));
        let want_next = c.next.map(ms);
        if j.outside != c.outside || (c.outside && j.next_allowed_at != want_next) {
            failures.push(format!(
                "{}: {} at {}: want outside={} next={:?}, got outside={} next={:?}",
                c.what,
                c.number,
                c.at,
                c.outside,
                c.next,
                j.outside,
                j.next_allowed_at
                    .map(|t| jiff::Timestamp::from_millisecond(t).unwrap().to_string())
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

macro_rules! case {
    ($what:literal, $n:literal, $p:literal, $at:literal, inside) => {
        Case {
            what: $what,
            number: $n,
            postal: $p,
            at: $at,
            outside: false,
            next: None,
        }
    };
    ($what:literal, $n:literal, $p:literal, $at:literal, outside, $next:literal) => {
        Case {
            what: $what,
            number: $n,
            postal: $p,
            at: $at,
            outside: true,
            next: Some($next),
        }
    };
}

#[test]
fn federal_window_edges() {
    run(
        &hours(ALL, ""),
        &[
            case!(
                "DC 07:59",
                12025550100,
                "",
                "2026-12-02T07:59:00-05:00",
                outside,
                "2026-12-02T08:00:00-05:00"
            ),
            case!(
                "DC 08:00",
                12025550100,
                "",
                "2026-12-02T08:00:00-05:00",
                inside
            ),
            case!(
                "DC 20:59",
                12025550100,
                "",
                "2026-12-02T20:59:59-05:00",
                inside
            ),
            case!(
                "DC 21:00",
                12025550100,
                "",
                "2026-12-02T21:00:00-05:00",
                outside,
                "2026-12-03T08:00:00-05:00"
            ),
            case!(
                "Chicago 07:59",
                13125550100,
                "",
                "2026-12-02T07:59:00-06:00",
                outside,
                "2026-12-02T08:00:00-06:00"
            ),
        ],
    );
}

#[test]
fn state_windows_and_their_effective_dates() {
    let all = hours(ALL, "");
    run(
        &all,
        &[
            case!(
                "Florida 19:59",
                13055550100,
                "",
                "2026-12-02T19:59:00-05:00",
                inside
            ),
            case!(
                "Florida 20:00",
                13055550100,
                "",
                "2026-12-02T20:00:00-05:00",
                outside,
                "2026-12-03T08:00:00-05:00"
            ),
            case!(
                "Oklahoma 20:00",
                14055550100,
                "",
                "2026-12-02T20:00:00-06:00",
                outside,
                "2026-12-03T08:00:00-06:00"
            ),
            case!(
                "Maryland before the act",
                14105550100,
                "",
                "2023-12-29T20:30:00-05:00",
                inside
            ),
            case!(
                "Maryland under the act",
                14105550100,
                "",
                "2024-01-02T20:30:00-05:00",
                outside,
                "2024-01-03T08:00:00-05:00"
            ),
            case!(
                "Texas Sunday 11:00",
                15125550100,
                "",
                "2026-12-06T11:00:00-06:00",
                outside,
                "2026-12-06T12:00:00-06:00"
            ),
        ],
    );
    // Without the state set, Florida's 20:00 is the federal window's inside.
    run(
        &hours(&["federal"], ""),
        &[case!(
            "Florida, federal only",
            13055550100,
            "",
            "2026-12-02T20:00:00-05:00",
            inside
        )],
    );
}

#[test]
fn both_dst_transitions_of_2026() {
    run(
        &hours(ALL, ""),
        &[
            // Spring forward on Sunday 8 March: 08:00 EDT is 12:00Z, not 13:00Z.
            case!(
                "Sat 21:00 EST",
                12025550100,
                "",
                "2026-03-07T21:00:00-05:00",
                outside,
                "2026-03-08T08:00:00-04:00"
            ),
            case!(
                "Sun 07:59 EDT",
                12025550100,
                "",
                "2026-03-08T07:59:00-04:00",
                outside,
                "2026-03-08T08:00:00-04:00"
            ),
            case!(
                "Sun 08:00 EDT",
                12025550100,
                "",
                "2026-03-08T12:00:00Z",
                inside
            ),
            // Fall back on Sunday 1 November: 08:00 EST is 13:00Z.
            case!(
                "Sat 21:30 EDT",
                12025550100,
                "",
                "2026-10-31T21:30:00-04:00",
                outside,
                "2026-11-01T08:00:00-05:00"
            ),
            case!(
                "Sun 07:30 EST",
                12025550100,
                "",
                "2026-11-01T12:30:00Z",
                outside,
                "2026-11-01T13:00:00Z"
            ),
            case!(
                "Sun 20:59 EST",
                12025550100,
                "",
                "2026-11-02T01:59:00Z",
                inside
            ),
        ],
    );
}

#[test]
fn arizona_and_hawaii_keep_standard_time() {
    run(
        &hours(ALL, ""),
        &[
            // Phoenix is UTC-7 all year: 08:00 is 15:00Z in January and in July.
            case!(
                "Phoenix Jan 07:59",
                16025550100,
                "",
                "2026-01-15T14:59:00Z",
                outside,
                "2026-01-15T15:00:00Z"
            ),
            case!(
                "Phoenix Jul 07:59",
                16025550100,
                "",
                "2026-07-15T14:59:00Z",
                outside,
                "2026-07-15T15:00:00Z"
            ),
            case!(
                "Phoenix Jul 08:00",
                16025550100,
                "",
                "2026-07-15T15:00:00Z",
                inside
            ),
            case!(
                "Honolulu 07:59",
                18085550100,
                "",
                "2026-07-01T07:59:00-10:00",
                outside,
                "2026-07-01T08:00:00-10:00"
            ),
            case!(
                "Honolulu 20:59",
                18085550100,
                "",
                "2026-07-01T20:59:00-10:00",
                inside
            ),
        ],
    );
}

#[test]
fn a_prefix_in_two_zones_gets_the_intersection() {
    run(
        &hours(ALL, ""),
        &[
            // +1 208 555: Boise (Mountain) and Los Angeles (Pacific).
            case!(
                "08:30 Mountain is 07:30 Pacific",
                12085550100,
                "",
                "2026-12-02T08:30:00-07:00",
                outside,
                "2026-12-02T08:00:00-08:00"
            ),
            case!(
                "09:00 Mountain",
                12085550100,
                "",
                "2026-12-02T09:00:00-07:00",
                inside
            ),
            case!(
                "20:59 Mountain",
                12085550100,
                "",
                "2026-12-02T20:59:00-07:00",
                inside
            ),
            case!(
                "21:00 Mountain",
                12085550100,
                "",
                "2026-12-02T21:00:00-07:00",
                outside,
                "2026-12-03T08:00:00-08:00"
            ),
            // +1 709: Halifax and St. John's (half an hour ahead).
            case!(
                "St. John's 07:59",
                17095550100,
                "",
                "2026-12-02T07:59:00-03:30",
                outside,
                "2026-12-02T09:00:00-04:00"
            ),
        ],
    );
}

#[test]
fn a_zip_that_disagrees_with_the_area_code() {
    run(
        &hours(ALL, ""),
        &[
            // A DC number at a Miami ZIP: Florida's 20:00 applies.
            case!(
                "DC number, Florida ZIP",
                12025550100,
                "33101",
                "2026-12-02T20:30:00-05:00",
                outside,
                "2026-12-03T08:00:00-05:00"
            ),
            // A DC number at a Beverly Hills ZIP: Pacific time applies too.
            case!(
                "DC number, California ZIP",
                12025550100,
                "90210",
                "2026-12-02T08:30:00-05:00",
                outside,
                "2026-12-02T08:00:00-08:00"
            ),
            case!(
                "DC number, DC ZIP",
                12025550100,
                "20500",
                "2026-12-02T20:30:00-05:00",
                inside
            ),
        ],
    );
}

#[test]
fn canada_weekday_and_saturday() {
    run(
        &hours(ALL, ""),
        &[
            case!(
                "Toronto Fri 21:29",
                14165550100,
                "",
                "2026-12-04T21:29:00-05:00",
                inside
            ),
            case!(
                "Toronto Fri 21:30",
                14165550100,
                "",
                "2026-12-04T21:30:00-05:00",
                outside,
                "2026-12-05T10:00:00-05:00"
            ),
            case!(
                "Toronto Sat 09:59",
                14165550100,
                "",
                "2026-12-05T09:59:00-05:00",
                outside,
                "2026-12-05T10:00:00-05:00"
            ),
            case!(
                "Toronto Sat 17:59",
                14165550100,
                "",
                "2026-12-05T17:59:00-05:00",
                inside
            ),
            case!(
                "Toronto Sat 18:00",
                14165550100,
                "",
                "2026-12-05T18:00:00-05:00",
                outside,
                "2026-12-06T10:00:00-05:00"
            ),
            case!(
                "Toronto Mon 08:59",
                14165550100,
                "",
                "2026-12-07T08:59:00-05:00",
                outside,
                "2026-12-07T09:00:00-05:00"
            ),
        ],
    );
}

#[test]
fn a_state_holiday_on_a_sunday() {
    run(
        &hours(ALL, ""),
        &[
            // Alabama: 4 July 2027 is a Sunday, observed Monday the 5th; no calls either day.
            case!(
                "Alabama Sat 3 July",
                12055550100,
                "",
                "2027-07-03T12:00:00-05:00",
                inside
            ),
            case!(
                "Alabama Sun 4 July",
                12055550100,
                "",
                "2027-07-04T12:00:00-05:00",
                outside,
                "2027-07-06T08:00:00-05:00"
            ),
            case!(
                "Alabama Mon 5 July",
                12055550100,
                "",
                "2027-07-05T12:00:00-05:00",
                outside,
                "2027-07-06T08:00:00-05:00"
            ),
            case!(
                "Alabama Tue 6 July",
                12055550100,
                "",
                "2027-07-06T12:00:00-05:00",
                inside
            ),
            // Louisiana: Mardi Gras 2027 is 9 February.
            case!(
                "Louisiana Mardi Gras",
                15045550100,
                "",
                "2027-02-09T12:00:00-06:00",
                outside,
                "2027-02-10T08:00:00-06:00"
            ),
        ],
    );
}

#[test]
fn numbers_without_a_zone_get_the_safe_window() {
    run(
        &hours(ALL, ""),
        &[
            // Toll-free: every US zone, so 08:00 in Honolulu (18:00Z) to 21:00 in New York.
            case!(
                "toll-free 12:00 ET",
                18005550100,
                "",
                "2026-12-02T12:00:00-05:00",
                outside,
                "2026-12-02T18:00:00Z"
            ),
            case!(
                "toll-free 13:00 ET",
                18005550100,
                "",
                "2026-12-02T18:00:00Z",
                inside
            ),
            case!(
                "toll-free 21:00 ET",
                18005550100,
                "",
                "2026-12-03T02:00:00Z",
                outside,
                "2026-12-03T18:00:00Z"
            ),
        ],
    );
    let h = hours(ALL, "");
    let j = h.judge(
        &Location::unknown(),
        Channel::Sms,
        Purpose::Marketing,
        ms("2026-12-03T02:00:00Z"),
    );
    assert!(j.outside && j.safe_zones, "{j:?}");
}

#[test]
fn only_marketing_voice_and_sms_by_default() {
    let h = hours(ALL, "");
    let loc = places().locate(Some(12025550100), None);
    let night = ms("2026-12-02T23:00:00-05:00");
    assert!(
        h.judge(&loc, Channel::Voice, Purpose::Marketing, night)
            .outside
    );
    assert!(
        h.judge(&loc, Channel::Sms, Purpose::Marketing, night)
            .outside
    );
    for (ch, p) in [
        (Channel::Email, Purpose::Marketing),
        (Channel::Voice, Purpose::Service),
        (Channel::Sms, Purpose::Security),
    ] {
        let j = h.judge(&loc, ch, p, night);
        assert!(!j.outside && !j.applied, "{ch:?} {p:?}: {j:?}");
    }
    // No rule sets: nothing applies.
    assert!(
        !hours(&[], "")
            .judge(&loc, Channel::Voice, Purpose::Marketing, night)
            .applied
    );
}

#[test]
fn a_policys_own_window_applies_everywhere() {
    let h = hours(
        &["federal"],
        r#"[[calling_windows]]
name = "never after 20:00 anywhere"
hours = "08:00-20:00"
"#,
    );
    run(
        &h,
        &[
            case!(
                "DC 20:30",
                12025550100,
                "",
                "2026-12-02T20:30:00-05:00",
                outside,
                "2026-12-03T08:00:00-05:00"
            ),
            case!(
                "London 19:30",
                442079460958,
                "",
                "2026-12-02T19:30:00Z",
                inside
            ),
            case!(
                "London 20:30",
                442079460958,
                "",
                "2026-12-02T20:30:00Z",
                outside,
                "2026-12-03T08:00:00Z"
            ),
        ],
    );
}

#[test]
fn policy_faults_name_their_key() {
    let ctx = CallingContext::built_in();
    let src = "[policies.t]\ncalling_hours = [\"federal\", \"provincial\"]\n";
    let e = ctx
        .compile(
            &["federal".into(), "provincial".into()],
            &[],
            src,
            "p.toml",
            &["policies", "t"],
        )
        .unwrap_err();
    assert_eq!(
        (e.line, e.key.as_str()),
        (2, "policies.t.calling_hours.1"),
        "{e}"
    );
    assert!(e.message.contains("provincial"), "{e}");
}

/// The per-thread answers never outlive their minute, and one policy's never answer another's.
#[test]
fn remembered_answers_keep_to_their_minute_and_their_policy() {
    let federal = hours(&["federal"], "");
    let company = hours(
        &["federal"],
        "[[calling_windows]]\nname = \"never after 20:00\"\nhours = \"08:00-20:00\"\n",
    );
    let loc = places().locate(Some(12025550100), None);
    let judge =
        |h: &CallingHours, at: &str| h.judge(&loc, Channel::Voice, Purpose::Marketing, ms(at));
    // Washington, EST: 20:30 is inside the federal hours, outside the company's.
    for _ in 0..2 {
        assert!(!judge(&federal, "2026-12-08T01:30:00Z").outside);
        assert!(judge(&company, "2026-12-08T01:30:00Z").outside);
    }
    // The last millisecond of 20:59 is inside; the next one is 21:00, outside, even right
    // after the minute before was remembered.
    assert!(!judge(&federal, "2026-12-08T01:59:59.999Z").outside);
    let j = judge(&federal, "2026-12-08T02:00:00Z");
    assert!(j.outside);
    assert_eq!(j.next_allowed_at, Some(ms("2026-12-08T13:00:00Z")));
    // Clones share the rules, and so their answers.
    assert_eq!(
        federal.clone().judge(
            &loc,
            Channel::Voice,
            Purpose::Marketing,
            ms("2026-12-08T01:30:00Z")
        ),
        judge(&federal, "2026-12-08T01:30:00Z")
    );
}

/// Whatever was remembered, every answer equals one worked out afresh: every 7 seconds across
/// both DST changes of 2026, the edges of the federal, Florida and Canadian windows, several
/// zones and a place with none.
#[test]
fn remembered_answers_equal_fresh_ones_across_minutes_and_dst() {
    let h = hours(
        ALL,
        "[[calling_windows]]\nname = \"company\"\nhours = \"08:30-20:45\"\n",
    );
    let places_of: Vec<Location> = [
        Some(12025550100u64), // Washington
        Some(13055550100),    // Miami: Florida's hours
        Some(12085550100),    // Boise and Los Angeles
        Some(17095550100),    // Halifax and St. John's
        Some(18005550100),    // toll-free: the safe zones
    ]
    .iter()
    .map(|n| places().locate(*n, None))
    .collect();
    let spans = [
        ("2026-03-08T05:00:00Z", 5),
        ("2026-11-01T04:30:00Z", 5),
        ("2026-12-08T00:30:00Z", 3),
        ("2026-12-12T12:30:00Z", 2),
    ];
    let mut n = 0;
    for (start, hours_long) in spans {
        let from = ms(start);
        for loc in &places_of {
            let mut t = from;
            while t < from + hours_long * 3_600_000 {
                for (channel, purpose) in [
                    (Channel::Voice, Purpose::Marketing),
                    (Channel::Email, Purpose::Service),
                ] {
                    let fresh = h.judge_afresh(loc, channel, purpose, t).0;
                    assert_eq!(h.judge(loc, channel, purpose, t), fresh, "{loc:?} at {t}");
                    n += 1;
                }
                t += 7_000;
            }
        }
    }
    assert!(n > 10_000);
}
